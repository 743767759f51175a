//! Use cases of the IAM service: one service per capability, over the domain and the ports.
//!
//! Invariant: no transport, database or cryptography library types. Everything from the outside
//! arrives through `iam-ports` traits held as `Arc<dyn Port>`.

pub mod auth;
pub mod keys;

use std::sync::Arc;

use iam_ports::{Clock, PasswordHasher, Rng, Store, TokenSigner};

pub use auth::{
    AuthError, AuthService, Me, Principal, RegisterCommand, TokenPair, Unauthenticated,
};
pub use keys::{KeyError, KeyService};

/// The ports every use case may need, shared by the services.
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn Store>,
    pub hasher: Arc<dyn PasswordHasher>,
    pub signer: Arc<dyn TokenSigner>,
    pub clock: Arc<dyn Clock>,
    pub rng: Arc<dyn Rng>,
}
