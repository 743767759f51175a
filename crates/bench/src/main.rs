//! `iam-bench`: load generators for the IAM service's hot paths. Each run measures its own
//! references on the same machine, in the same process, with the same client, so that figures
//! are comparable across machines.
//!
//! `iam-bench validate` drives gRPC ValidateToken over loopback; `iam-bench flood` floods
//! sign-in with wrong passwords from one address; `iam-bench tenants` drives gRPC
//! TenantHierarchyService on a seeded tenant tree.

mod flood;
mod harness;
mod suite;
mod tenants;
mod validate;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmarks for the IAM service's hot paths")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// ValidateToken over gRPC: references, then the service on several token mixes.
    Validate(validate::Options),
    /// A wrong-password flood from one address: Argon2 work spent once throttled.
    Flood(flood::Options),
    /// Load, scale-out and fault suite on the real binary and PostgreSQL.
    Suite(suite::Options),
    /// TenantHierarchyService (IsDescendant, GetTenantStatus) on a seeded tenant tree.
    Tenants(tenants::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Validate(options) => validate::run(&options),
        Command::Flood(options) => flood::run(&options),
        Command::Suite(options) => suite::run(&options),
        Command::Tenants(options) => tenants::run(&options),
    }
}
