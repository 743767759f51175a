//! The revocation feed: what makes an otherwise valid access token unusable, as seen by every
//! instance that shares the store, without a store round trip per validation.

use async_trait::async_trait;
use futures::stream::BoxStream;
use iam_domain::{PermissionDef, Role, SessionId, TenantId, Timestamp, UserId, UserStatus};

use crate::StoreError;

/// A committed change that affects token validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationEvent {
    /// The session (refresh family) was revoked: logout, reuse, or an administrative action.
    SessionRevoked(SessionId),
    /// The user's status changed (to or from active).
    UserStatus(UserId, UserStatus),
    /// A tenant's own status changed; effective statuses of its subtree may have changed too.
    TenantStatus(TenantId),
    /// A custom role of the tenant was created, changed or deleted: permissions that tokens'
    /// role names resolve to may have changed.
    RolesChanged(TenantId),
    /// A module registered a permission (owners hold every permission of the catalogue).
    CatalogueChanged,
    /// A custom claim was registered or deleted.
    ClaimsChanged,
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedMessage {
    Event(RevocationEvent),
    /// Events may have been missed (reconnect, lag): take a fresh snapshot.
    Resync,
}

/// The current state of everything that revokes tokens, and of what their role names grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationSnapshot {
    /// Sessions revoked at or after the requested cutoff.
    pub revoked_sessions: Vec<SessionId>,
    /// Every user whose status is not active, with that status.
    pub inactive_users: Vec<(UserId, UserStatus)>,
    /// Every tenant whose effective status is blocked: blocked itself or below a blocked one.
    pub blocked_tenants: Vec<TenantId>,
    /// Every tenant's custom roles (system roles are the domain's).
    pub custom_roles: Vec<Role>,
    /// Every permission registered by a module.
    pub permissions: Vec<PermissionDef>,
    /// Every registered custom claim.
    pub claims: Vec<iam_domain::claims::ClaimDefinition>,
}

/// Publishes committed revocations to every instance sharing the store. Events are emitted by the
/// store's units of work on commit (never on rollback).
#[async_trait]
pub trait RevocationFeed: Send + Sync {
    /// The state now; sessions revoked before `sessions_since` are left out (their access tokens
    /// have expired).
    async fn snapshot(&self, sessions_since: Timestamp) -> Result<RevocationSnapshot, StoreError>;

    /// Events committed from now on, by any instance. The stream never ends: after a lost
    /// connection it reconnects and yields [`FeedMessage::Resync`]. Subscribe before taking the
    /// snapshot so that nothing falls between the two.
    async fn subscribe(&self) -> Result<BoxStream<'static, FeedMessage>, StoreError>;
}
