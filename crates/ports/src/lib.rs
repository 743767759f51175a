//! The ports: traits through which the application reaches stores, cryptography, the clock and
//! randomness. Each names what the core needs, not a technology, and documents its error contract.
//!
//! Invariant: depends on `iam-domain` only (plus `async-trait` and `futures` for streams); never on
//! a framework, database driver or SDK.

pub mod claims;
pub mod crypto;
pub mod keys;
pub mod mail;
pub mod revocation;
pub mod store;
pub mod system;
pub mod throttle;

pub use claims::{ClaimFetcher, HookError, HookRequest};
pub use crypto::{
    HashError, KeyMaterial, PasswordHasher, PasswordScreen, SealError, SecretSealer, SignError,
    TokenRejection, TokenSigner, Totp,
};
pub use keys::{KeyStore, StoredKey};
pub use mail::{MailError, MailQueue, Mailer};
pub use revocation::{FeedMessage, RevocationEvent, RevocationFeed, RevocationSnapshot};
pub use store::{
    AuditRepo, ClaimRepo, MailRepo, MfaRepo, Move, NewRefreshToken, RbacRepo, Refreshed, Rotation,
    SessionRepo, Standing, Store, StoreError, TenantRepo, UnitOfWork, UserFilter, UserRecord,
    UserRepo,
};
pub use system::{Clock, Rng, random};
pub use throttle::ThrottleStore;

/// A boxed error from inside an adapter, kept as a `source` for logs, never shown to clients.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
