//! End-to-end tests: the binary's router on a random port, against a fresh database (or the
//! in-memory store), driven over HTTP.

mod claims;
mod enumeration;
mod errors;
mod flow;
mod flows;
mod grpc;
mod keys;
mod load;
mod mfa;
mod openapi;
mod rbac;
mod support;
mod tenants;
mod throttle;
