//! The IAM service's model and rules: identifiers, validated values, entities, token claims and
//! the policies over them.
//!
//! Invariant: synchronous and pure. No async, no I/O, no clock and no randomness of its own (the
//! current time and random values come in as arguments), and no framework, database or transport
//! types.

pub mod audit;
pub mod claims;
pub mod email;
pub mod ids;
pub mod mail;
pub mod mfa;
pub mod password;
pub mod rbac;
pub mod session;
pub mod tenant;
pub mod throttle;
pub mod token;
pub mod user;

pub use audit::{AuditActor, AuditEvent, AuditId, AuditOutcome};
pub use email::{Email, EmailError};
pub use ids::{KeyId, RoleId, SessionId, TenantId, UserId};
pub use mail::{LinkKind, LinkToken, MailId, MailMessage, QueuedMail};
pub use mfa::{MfaChallenge, MfaEnrolment, MfaToken, RecoveryCode, StoredRecoveryCode, TotpSecret};
pub use password::{Password, PasswordError, PasswordHash, Weakness};
pub use rbac::{Grants, Permission, PermissionDef, PermissionError, Role, SystemRole};
pub use session::{RefreshToken, RefreshTokenHash, Session};
pub use tenant::{Membership, RoleName, Tenant, TenantName, TenantSelection, TenantStatus};
pub use token::{AccessClaims, Audience, ClaimsError, Grant, TokenPolicy};
pub use user::{DisplayName, Metadata, MetadataError, NameError, User, UserStatus};

/// A point in time, always UTC.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
