//! Use cases of the IAM service: one service per capability, over the domain and the ports.
//!
//! Invariant: no transport, database or cryptography library types. Everything from the outside
//! arrives through `iam-ports` traits held as `Arc<dyn Port>`.

pub mod auth;
pub mod authz;
pub mod claims;
pub mod client;
pub mod flows;
pub mod keys;
pub mod mfa;
pub mod outbox;
pub mod rbac;
pub mod revocation;
pub mod tenants;
pub mod throttle;
pub mod users;
pub mod validate;

use std::sync::Arc;

use iam_ports::{
    Clock, PasswordHasher, PasswordScreen, Rng, SecretSealer, Store, TokenSigner, Totp,
};

pub use auth::{
    AuthError, AuthService, Me, Principal, RegisterCommand, SecondFactor, SignIn, TenantChoice,
    TokenPair, Unauthenticated,
};
pub use authz::{Actor, AdminError, Caller, Operation};
pub use claims::{
    ClaimService, ClaimsUnavailable, NewClaim, ResolveError, ResolvedClaims, TenantScope,
};
pub use client::TrustedProxies;
pub use flows::{Composer, FlowError, FlowPolicy, Flows, Joined};
pub use keys::{KeyError, KeyService};
pub use mfa::{Enrolment, MfaError, MfaService, RecoverySummary, StepUp};
pub use outbox::{OutboxPolicy, OutboxWorker};
pub use rbac::{AuditPage, BootstrapCommand, Bootstrapped, NewRole, RbacService, RoleChanges};
pub use revocation::RevocationView;
pub use tenants::{
    MAX_TENANT_PAGE, Member, MemberPage, NewTenant, TenantChanges, TenantError, TenantPage,
    TenantService, TenantStanding,
};
pub use throttle::{Scope, Throttle, ThrottleError, ThrottlePolicy};
pub use users::{NewUser, UserChanges, UserPage, UserService};
pub use validate::TokenValidator;

/// The ports every use case may need, shared by the services.
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn Store>,
    pub hasher: Arc<dyn PasswordHasher>,
    pub signer: Arc<dyn TokenSigner>,
    pub clock: Arc<dyn Clock>,
    pub rng: Arc<dyn Rng>,
    pub totp: Arc<dyn Totp>,
    /// Seals secrets at rest (TOTP seeds) under the master key.
    pub sealer: Arc<dyn SecretSealer>,
    /// Refuses common, predictable and personal passwords.
    pub screen: Arc<dyn PasswordScreen>,
}
