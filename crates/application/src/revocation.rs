//! The in-process view of revocations that ValidateToken consults instead of the store.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use chrono::Duration;
use futures::StreamExt as _;
use iam_domain::rbac::ADMIN_PERMISSIONS;
use iam_domain::{PermissionDef, SessionId, TenantId, Timestamp, UserId, UserStatus};
use iam_ports::{
    Clock, FeedMessage, RevocationEvent, RevocationFeed, RevocationSnapshot, StoreError,
};
use tracing::{debug, warn};

use crate::Unauthenticated;

#[derive(Default)]
struct State {
    /// Revoked sessions and when we learnt of it (for pruning).
    sessions: HashMap<SessionId, Timestamp>,
    inactive_users: HashMap<UserId, UserStatus>,
    blocked_tenants: HashSet<TenantId>,
    inserts_since_prune: usize,
    /// Each tenant's custom roles and what they grant, for ValidateToken's permissions.
    custom_roles: HashMap<TenantId, HashMap<String, NamedGrant>>,
    /// Every permission of the catalogue, sorted: what `owner` grants.
    catalogue: Arc<[String]>,
    /// Registered custom claims.
    claims: Arc<[iam_domain::claims::ClaimDefinition]>,
}

/// What a custom role of this name grants, and since when it has the name (unix seconds).
#[derive(Debug, Clone)]
struct NamedGrant {
    named_at: i64,
    permissions: Arc<[String]>,
}

/// The catalogue from the built-in permissions and the registered ones, sorted.
fn catalogue(registered: &[PermissionDef]) -> Arc<[String]> {
    let mut all: Vec<String> = PermissionDef::builtin()
        .into_iter()
        .chain(registered.iter().cloned())
        .map(|d| d.name.as_str().to_owned())
        .collect();
    all.sort();
    all.dedup();
    all.into()
}

/// Revoked sessions, inactive users, effectively blocked tenants and what role names grant, kept
/// current from the
/// store's revocation feed (every instance's commits) and from this instance's own commits
/// (applied at once, so a logout is honoured by the very next request).
pub struct RevocationView {
    state: RwLock<State>,
    feed: Arc<dyn RevocationFeed>,
    clock: Arc<dyn Clock>,
    /// How long a revoked session must be remembered: its access tokens' lifetime plus leeway.
    horizon: Duration,
}

/// How many revocations may accumulate before expired ones are pruned.
const PRUNE_EVERY: usize = 1024;

impl RevocationView {
    /// An empty view; call [`RevocationView::refresh`] (or run [`RevocationView::follow`]) to fill it.
    pub fn new(feed: Arc<dyn RevocationFeed>, clock: Arc<dyn Clock>, horizon: Duration) -> Self {
        let state = State {
            // Known before the first snapshot: the built-in permissions never change.
            catalogue: catalogue(&[]),
            ..State::default()
        };
        Self {
            state: RwLock::new(state),
            feed,
            clock,
            horizon,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Why a token of this session, user and tenant may not be used, if it may not.
    pub fn check(
        &self,
        session: SessionId,
        user: UserId,
        tenant: TenantId,
    ) -> Result<(), Unauthenticated> {
        // The most lasting cause first: disabling a user also revokes their sessions.
        let state = self.read();
        if state.inactive_users.contains_key(&user) {
            return Err(Unauthenticated::UserDisabled);
        }
        if state.blocked_tenants.contains(&tenant) {
            return Err(Unauthenticated::TenantBlocked);
        }
        if state.sessions.contains_key(&session) {
            return Err(Unauthenticated::Revoked);
        }
        Ok(())
    }

    /// The effective permissions of a token's role names in its tenant: what the system roles
    /// grant, and the custom roles as they stand now (so a role's change reaches tokens issued
    /// before it), except a role named after the token was issued (`issued_at`, unix seconds):
    /// the token meant another role of that name. Sorted, without duplicates.
    pub fn permissions(&self, tenant: TenantId, roles: &[String], issued_at: i64) -> Vec<String> {
        let state = self.read();
        if roles.iter().any(|r| r == "owner") {
            return state.catalogue.to_vec();
        }
        let custom = state.custom_roles.get(&tenant);
        let mut out: Vec<String> = Vec::new();
        for role in roles {
            match role.as_str() {
                "admin" => out.extend(ADMIN_PERMISSIONS.iter().map(|p| (*p).to_owned())),
                "member" => {}
                name => {
                    if let Some(granted) = custom
                        .and_then(|c| c.get(name))
                        .filter(|g| g.named_at <= issued_at)
                    {
                        out.extend(granted.permissions.iter().cloned());
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The registered custom claims, as of the last snapshot.
    pub fn claims(&self) -> Arc<[iam_domain::claims::ClaimDefinition]> {
        self.read().claims.clone()
    }

    /// Whether the tenant is blocked, itself or through an ancestor.
    pub fn tenant_blocked(&self, tenant: TenantId) -> bool {
        self.read().blocked_tenants.contains(&tenant)
    }

    /// Applies an event this instance committed, or one heard on the feed. A tenant change needs
    /// the subtree's effective statuses, so it is answered with a fresh snapshot.
    pub async fn apply(&self, event: RevocationEvent) -> Result<(), StoreError> {
        match event {
            RevocationEvent::SessionRevoked(id) => {
                let now = self.clock.now();
                let mut state = self.write();
                state.sessions.insert(id, now);
                state.inserts_since_prune += 1;
                if state.inserts_since_prune >= PRUNE_EVERY {
                    let cutoff = now - self.horizon;
                    state.sessions.retain(|_, at| *at >= cutoff);
                    state.inserts_since_prune = 0;
                }
                Ok(())
            }
            RevocationEvent::UserStatus(id, UserStatus::Active) => {
                self.write().inactive_users.remove(&id);
                Ok(())
            }
            RevocationEvent::UserStatus(id, status) => {
                self.write().inactive_users.insert(id, status);
                Ok(())
            }
            RevocationEvent::TenantStatus(_)
            | RevocationEvent::RolesChanged(_)
            | RevocationEvent::CatalogueChanged
            | RevocationEvent::ClaimsChanged => self.refresh().await,
        }
    }

    /// Replaces the view with a snapshot of the store.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let now = self.clock.now();
        let RevocationSnapshot {
            revoked_sessions,
            inactive_users,
            blocked_tenants,
            custom_roles,
            permissions,
            claims,
        } = self.feed.snapshot(now - self.horizon).await?;
        let mut roles: HashMap<TenantId, HashMap<String, NamedGrant>> = HashMap::new();
        for role in custom_roles {
            let granted: Vec<String> = role
                .permissions
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect();
            roles.entry(role.tenant).or_default().insert(
                role.name.as_str().to_owned(),
                NamedGrant {
                    named_at: role.named_at.timestamp(),
                    permissions: granted.into(),
                },
            );
        }
        let catalogue = catalogue(&permissions);
        let mut state = self.write();
        // Merged, not replaced: a revoked session never comes back, and a logout applied here
        // after this snapshot was taken must not be lost to it.
        for id in revoked_sessions {
            state.sessions.entry(id).or_insert(now);
        }
        state.inactive_users = inactive_users.into_iter().collect();
        state.blocked_tenants = blocked_tenants.into_iter().collect();
        state.custom_roles = roles;
        state.catalogue = catalogue;
        state.claims = claims.into();
        state.inserts_since_prune = 0;
        Ok(())
    }

    /// Subscribes to the feed, takes a snapshot, then applies events until the store fails.
    /// Returns only on error; the caller retries after a pause.
    pub async fn follow(&self) -> Result<(), StoreError> {
        let mut messages = self.feed.subscribe().await?;
        self.refresh().await?;
        debug!("following the revocation feed");
        while let Some(message) = messages.next().await {
            let applied = match message {
                FeedMessage::Event(event) => self.apply(event).await,
                FeedMessage::Resync => self.refresh().await,
            };
            if let Err(e) = applied {
                warn!(error = %e, "revocation view could not apply the feed; resubscribing");
                return Err(e);
            }
        }
        Ok(())
    }
}
