//! The store ports held in process memory: the embedded default (nothing persists) and the
//! double the application's tests run on. Behaves like the PostgreSQL adapter; the shared
//! contract suite in `iam-store-contract` proves it.
//!
//! A unit of work holds the store's single lock until it commits or is dropped and keeps an undo
//! log, so a dropped unit rolls back and concurrent units are serialised.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use iam_domain::claims::{ClaimDefinition, ClaimName};
use iam_domain::throttle::Counter;
use iam_domain::{AuditEvent, AuditId, Permission, PermissionDef, Role, RoleId, RoleName};
use iam_domain::{
    Email, LinkKind, LinkToken, MailId, MailMessage, Membership, MfaChallenge, MfaEnrolment,
    PasswordHash, QueuedMail, RefreshTokenHash, Session, SessionId, StoredRecoveryCode, Tenant,
    TenantId, TenantStatus, Timestamp, User, UserId, UserStatus,
};
use iam_ports::{AuditRepo, ClaimRepo, Move, RbacRepo};
use iam_ports::{
    FeedMessage, KeyStore, MailQueue, MailRepo, MfaRepo, NewRefreshToken, Refreshed,
    RevocationEvent, RevocationFeed, RevocationSnapshot, Rotation, SessionRepo, Standing, Store,
    StoreError, StoredKey, TenantRepo, ThrottleStore, UnitOfWork, UserFilter, UserRecord, UserRepo,
};
use tokio::sync::{Mutex, OwnedMutexGuard, broadcast};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefreshStatus {
    Live,
    Rotated,
    Revoked,
}

#[derive(Debug, Clone)]
struct RefreshRecord {
    session: SessionId,
    status: RefreshStatus,
    expires_at: Timestamp,
}

#[derive(Default)]
struct State {
    users: HashMap<UserId, UserRecord>,
    user_ids_by_email: HashMap<Email, UserId>,
    tenants: HashMap<TenantId, Tenant>,
    memberships: HashMap<(UserId, TenantId), Membership>,
    sessions: HashMap<SessionId, Session>,
    refresh: HashMap<RefreshTokenHash, RefreshRecord>,
    mfa: HashMap<UserId, MfaEnrolment>,
    link_tokens: HashMap<[u8; 32], LinkToken>,
    outbox: std::collections::BTreeMap<(Timestamp, MailId), Outgoing>,
    recovery_codes: HashMap<UserId, Vec<StoredRecoveryCode>>,
    challenges: HashMap<[u8; 32], MfaChallenge>,
    roles: HashMap<RoleId, Role>,
    permissions: std::collections::BTreeMap<Permission, PermissionDef>,
    root_tenant: Option<TenantId>,
    /// Append-only, in the order appended.
    audit: Vec<AuditEvent>,
    claims: std::collections::BTreeMap<ClaimName, ClaimDefinition>,
    selections: HashMap<[u8; 32], iam_domain::TenantSelection>,
}

/// A queued, unsent message and its delivery state (sent ones are dropped: nothing persists in
/// memory anyway, and keeping them would make every claim scan them).
#[derive(Debug, Clone)]
struct Outgoing {
    message: MailMessage,
    attempts: u32,
    due_at: Timestamp,
}

type Undo = Box<dyn FnOnce(&mut State) + Send>;

/// Revocation events buffered for slow subscribers before they must resync.
const FEED_CAPACITY: usize = 4096;

/// The in-memory store.
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<RevocationEvent>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            events: broadcast::channel(FEED_CAPACITY).0,
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn begin(&self) -> Result<Box<dyn UnitOfWork>, StoreError> {
        Ok(Box::new(MemoryUnit {
            state: self.state.clone().lock_owned().await,
            undo: Vec::new(),
            events: Vec::new(),
            feed: self.events.clone(),
        }))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn refresh_session(
        &self,
        presented: &RefreshTokenHash,
        next: &NewRefreshToken,
    ) -> Result<Refreshed, StoreError> {
        let mut uow = self.begin().await?;
        let outcome = match uow.rotate_refresh(presented, next).await? {
            Rotation::Rotated(session) => {
                // Like the PostgreSQL function: a live token of a blocked tenant is refused
                // with nothing spent (so it works again after an unblock).
                let lineage = uow.lineage(session.tenant).await?;
                if lineage.iter().any(|t| t.status != TenantStatus::Active) {
                    uow.rollback().await?;
                    return Ok(Refreshed::Blocked);
                }
                let user = uow.user_by_id(session.user).await?;
                let membership = uow.membership(session.user, session.tenant).await?;
                let tenant = lineage.into_iter().next();
                Refreshed::Rotated(Box::new(Standing {
                    session,
                    user,
                    membership,
                    tenant,
                }))
            }
            Rotation::Reused(id) => Refreshed::Reused(id),
            Rotation::Expired => Refreshed::Expired,
            Rotation::Unknown => Refreshed::Unknown,
        };
        uow.commit().await?;
        Ok(outcome)
    }
}

struct MemoryUnit {
    state: OwnedMutexGuard<State>,
    undo: Vec<Undo>,
    /// Published at commit, dropped with the unit otherwise.
    events: Vec<RevocationEvent>,
    feed: broadcast::Sender<RevocationEvent>,
}

impl Drop for MemoryUnit {
    fn drop(&mut self) {
        while let Some(undo) = self.undo.pop() {
            undo(&mut self.state);
        }
    }
}

fn missing(what: &str) -> StoreError {
    StoreError::Unexpected(format!("{what} does not exist").into())
}

#[async_trait]
impl UserRepo for MemoryUnit {
    async fn insert_user(
        &mut self,
        user: &User,
        password: Option<&PasswordHash>,
    ) -> Result<(), StoreError> {
        if self.state.user_ids_by_email.contains_key(&user.email) {
            return Err(StoreError::Conflict("email"));
        }
        if self.state.users.contains_key(&user.id) {
            return Err(StoreError::Conflict("user"));
        }
        self.state
            .user_ids_by_email
            .insert(user.email.clone(), user.id);
        self.state.users.insert(
            user.id,
            UserRecord {
                user: user.clone(),
                password_hash: password.cloned(),
            },
        );
        let (id, email) = (user.id, user.email.clone());
        self.undo.push(Box::new(move |s| {
            s.users.remove(&id);
            s.user_ids_by_email.remove(&email);
        }));
        Ok(())
    }

    async fn user_by_email(&mut self, email: &Email) -> Result<Option<UserRecord>, StoreError> {
        Ok(self
            .state
            .user_ids_by_email
            .get(email)
            .and_then(|id| self.state.users.get(id))
            .cloned())
    }

    async fn user_by_id(&mut self, id: UserId) -> Result<Option<User>, StoreError> {
        Ok(self.state.users.get(&id).map(|r| r.user.clone()))
    }

    async fn update_user(&mut self, user: &User) -> Result<bool, StoreError> {
        let Some(record) = self.state.users.get_mut(&user.id) else {
            return Ok(false);
        };
        let old = record.user.clone();
        record.user = User {
            email: old.email.clone(),
            created_at: old.created_at,
            ..user.clone()
        };
        if old.status != user.status {
            self.events
                .push(RevocationEvent::UserStatus(user.id, user.status));
        }
        self.undo.push(Box::new(move |s| {
            if let Some(r) = s.users.get_mut(&old.id) {
                r.user = old;
            }
        }));
        Ok(true)
    }

    async fn list_members(
        &mut self,
        tenant: TenantId,
        filter: &UserFilter,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        let mut users: Vec<User> = self
            .state
            .memberships
            .values()
            .filter(|m| m.tenant == tenant && after.is_none_or(|a| m.user > a))
            .filter_map(|m| self.state.users.get(&m.user))
            .map(|r| &r.user)
            .filter(|u| {
                filter
                    .email_prefix
                    .as_deref()
                    .is_none_or(|p| u.email.as_str().starts_with(p))
                    && filter.status.is_none_or(|s| u.status == s)
            })
            .cloned()
            .collect();
        users.sort_by_key(|u| u.id);
        users.truncate(limit);
        Ok(users)
    }
}

#[async_trait]
impl TenantRepo for MemoryUnit {
    async fn insert_tenant(&mut self, tenant: &Tenant) -> Result<(), StoreError> {
        if self.state.tenants.contains_key(&tenant.id) {
            return Err(StoreError::Conflict("tenant"));
        }
        if !self.state.users.contains_key(&tenant.owner) {
            return Err(missing("tenant owner"));
        }
        if tenant
            .parent
            .is_some_and(|p| !self.state.tenants.contains_key(&p))
        {
            return Err(missing("parent tenant"));
        }
        self.state.tenants.insert(tenant.id, tenant.clone());
        let id = tenant.id;
        self.undo.push(Box::new(move |s| {
            s.tenants.remove(&id);
        }));
        Ok(())
    }

    async fn tenant(&mut self, id: TenantId) -> Result<Option<Tenant>, StoreError> {
        Ok(self.state.tenants.get(&id).cloned())
    }

    async fn insert_membership(&mut self, m: &Membership) -> Result<(), StoreError> {
        let key = (m.user, m.tenant);
        if self.state.memberships.contains_key(&key) {
            return Err(StoreError::Conflict("membership"));
        }
        if !self.state.users.contains_key(&m.user) {
            return Err(missing("user"));
        }
        if !self.state.tenants.contains_key(&m.tenant) {
            return Err(missing("tenant"));
        }
        self.state.memberships.insert(key, m.clone());
        self.undo.push(Box::new(move |s| {
            s.memberships.remove(&key);
        }));
        Ok(())
    }

    async fn memberships_of(&mut self, user: UserId) -> Result<Vec<Membership>, StoreError> {
        let mut all: Vec<_> = self
            .state
            .memberships
            .values()
            .filter(|m| m.user == user)
            .cloned()
            .collect();
        all.sort_by_key(|m| (m.created_at, m.tenant));
        Ok(all)
    }

    async fn memberships_in(
        &mut self,
        tenant: TenantId,
        users: &[UserId],
    ) -> Result<Vec<Membership>, StoreError> {
        Ok(users
            .iter()
            .filter_map(|u| self.state.memberships.get(&(*u, tenant)).cloned())
            .collect())
    }

    async fn membership(
        &mut self,
        user: UserId,
        tenant: TenantId,
    ) -> Result<Option<Membership>, StoreError> {
        Ok(self.state.memberships.get(&(user, tenant)).cloned())
    }

    async fn set_tenant_status(
        &mut self,
        id: TenantId,
        status: TenantStatus,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let Some(tenant) = self.state.tenants.get_mut(&id) else {
            return Ok(false);
        };
        let old = tenant.clone();
        tenant.status = status;
        tenant.updated_at = at;
        if old.status != status {
            self.events.push(RevocationEvent::TenantStatus(id));
        }
        self.undo.push(Box::new(move |s| {
            s.tenants.insert(old.id, old);
        }));
        Ok(true)
    }

    async fn ancestors(&mut self, id: TenantId) -> Result<Vec<TenantId>, StoreError> {
        Ok(ancestors_in(&self.state, id))
    }

    async fn lineage(&mut self, id: TenantId) -> Result<Vec<Tenant>, StoreError> {
        let Some(tenant) = self.state.tenants.get(&id) else {
            return Ok(Vec::new());
        };
        let mut out = vec![tenant.clone()];
        out.extend(
            ancestors_in(&self.state, id)
                .into_iter()
                .filter_map(|a| self.state.tenants.get(&a).cloned()),
        );
        Ok(out)
    }

    async fn is_descendant(
        &mut self,
        ancestor: TenantId,
        descendant: TenantId,
    ) -> Result<bool, StoreError> {
        Ok(self
            .state
            .tenants
            .get(&descendant)
            .is_some_and(Tenant::is_live)
            && ancestors_in(&self.state, descendant).contains(&ancestor))
    }

    async fn children(
        &mut self,
        parent: TenantId,
        after: Option<TenantId>,
        limit: usize,
    ) -> Result<Vec<Tenant>, StoreError> {
        Ok(page_of_tenants(&self.state, after, limit, |t| {
            t.parent == Some(parent)
        }))
    }

    async fn descendants(
        &mut self,
        root: TenantId,
        after: Option<TenantId>,
        limit: usize,
    ) -> Result<Vec<Tenant>, StoreError> {
        let state = &self.state;
        Ok(page_of_tenants(state, after, limit, |t| {
            ancestors_in(state, t.id).contains(&root)
        }))
    }

    async fn update_tenant(&mut self, tenant: &Tenant) -> Result<bool, StoreError> {
        if !self.state.users.contains_key(&tenant.owner) {
            return Err(missing("tenant owner"));
        }
        let Some(stored) = self.state.tenants.get_mut(&tenant.id) else {
            return Ok(false);
        };
        let old = stored.clone();
        stored.name = tenant.name.clone();
        stored.owner = tenant.owner;
        stored.metadata = tenant.metadata.clone();
        stored.updated_at = tenant.updated_at;
        self.undo.push(Box::new(move |s| {
            s.tenants.insert(old.id, old);
        }));
        Ok(true)
    }

    async fn move_tenant(
        &mut self,
        id: TenantId,
        parent: Option<TenantId>,
        at: Timestamp,
    ) -> Result<Move, StoreError> {
        if parent.is_some_and(|p| !self.state.tenants.contains_key(&p)) {
            return Ok(Move::NotFound);
        }
        // The unit holds the store's only lock, so no other move can interleave.
        if let Some(p) = parent
            && (p == id || ancestors_in(&self.state, p).contains(&id))
        {
            return Ok(Move::Cycle);
        }
        let Some(tenant) = self.state.tenants.get_mut(&id) else {
            return Ok(Move::NotFound);
        };
        let old = tenant.clone();
        if tenant.parent != parent {
            tenant.parent = parent;
            tenant.updated_at = at;
            self.events.push(RevocationEvent::TenantStatus(id));
        }
        self.undo.push(Box::new(move |s| {
            s.tenants.insert(old.id, old);
        }));
        Ok(Move::Moved)
    }

    async fn lock_tree(&mut self) -> Result<(), StoreError> {
        // A unit holds the whole store's lock already.
        Ok(())
    }

    async fn delete_tenant_memberships(&mut self, tenant: TenantId) -> Result<u64, StoreError> {
        let keys: Vec<(UserId, TenantId)> = self
            .state
            .memberships
            .keys()
            .filter(|(_, t)| *t == tenant)
            .copied()
            .collect();
        for key in &keys {
            if let Some(old) = self.state.memberships.remove(key) {
                let key = *key;
                self.undo.push(Box::new(move |s| {
                    s.memberships.insert(key, old);
                }));
            }
        }
        Ok(keys.len() as u64)
    }

    async fn delete_membership(
        &mut self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<bool, StoreError> {
        let key = (user, tenant);
        let Some(old) = self.state.memberships.remove(&key) else {
            return Ok(false);
        };
        self.undo.push(Box::new(move |s| {
            s.memberships.insert(key, old);
        }));
        Ok(true)
    }

    async fn insert_selection(
        &mut self,
        selection: &iam_domain::TenantSelection,
    ) -> Result<(), StoreError> {
        if self.state.selections.contains_key(&selection.token_hash) {
            return Err(StoreError::Conflict("tenant selection"));
        }
        if !self.state.users.contains_key(&selection.user) {
            return Err(missing("user"));
        }
        self.state
            .selections
            .insert(selection.token_hash, selection.clone());
        let hash = selection.token_hash;
        self.undo.push(Box::new(move |s| {
            s.selections.remove(&hash);
        }));
        Ok(())
    }

    async fn take_selection(
        &mut self,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<iam_domain::TenantSelection>, StoreError> {
        let live = self
            .state
            .selections
            .get(token_hash)
            .is_some_and(|s| s.expires_at > now);
        if !live {
            return Ok(None);
        }
        let Some(taken) = self.state.selections.remove(token_hash) else {
            return Ok(None);
        };
        let back = taken.clone();
        self.undo.push(Box::new(move |s| {
            s.selections.insert(back.token_hash, back);
        }));
        Ok(Some(taken))
    }
}

/// Live tenants matching `keep`, in ascending id order after `after`, at most `limit`.
fn page_of_tenants(
    state: &State,
    after: Option<TenantId>,
    limit: usize,
    keep: impl Fn(&Tenant) -> bool,
) -> Vec<Tenant> {
    let mut page: Vec<Tenant> = state
        .tenants
        .values()
        .filter(|t| t.is_live() && after.is_none_or(|a| t.id > a) && keep(t))
        .cloned()
        .collect();
    page.sort_by_key(|t| t.id);
    page.truncate(limit);
    page
}

/// Walks parent links; a cycle (which the stores never allow) ends the walk rather than looping.
fn ancestors_in(state: &State, id: TenantId) -> Vec<TenantId> {
    let mut out = Vec::new();
    let mut current = state.tenants.get(&id).and_then(|t| t.parent);
    while let Some(parent) = current {
        if parent == id || out.contains(&parent) {
            break;
        }
        out.push(parent);
        current = state.tenants.get(&parent).and_then(|t| t.parent);
    }
    out
}

impl MemoryUnit {
    /// Revokes a session and its live tokens, recording how to undo it.
    fn revoke(&mut self, id: SessionId, at: Timestamp) -> bool {
        let Some(session) = self.state.sessions.get_mut(&id) else {
            return false;
        };
        if session.revoked_at.is_some() {
            return false;
        }
        session.revoked_at = Some(at);
        self.events.push(RevocationEvent::SessionRevoked(id));
        let live: Vec<RefreshTokenHash> = self
            .state
            .refresh
            .iter()
            .filter(|(_, r)| r.session == id && r.status == RefreshStatus::Live)
            .map(|(h, _)| *h)
            .collect();
        for hash in &live {
            if let Some(r) = self.state.refresh.get_mut(hash) {
                r.status = RefreshStatus::Revoked;
            }
        }
        self.undo.push(Box::new(move |s| {
            if let Some(session) = s.sessions.get_mut(&id) {
                session.revoked_at = None;
            }
            for hash in live {
                if let Some(r) = s.refresh.get_mut(&hash) {
                    r.status = RefreshStatus::Live;
                }
            }
        }));
        true
    }
}

#[async_trait]
impl SessionRepo for MemoryUnit {
    async fn session_of_refresh(
        &mut self,
        token: &RefreshTokenHash,
    ) -> Result<Option<Session>, StoreError> {
        Ok(self
            .state
            .refresh
            .get(token)
            .filter(|r| r.status == RefreshStatus::Live)
            .and_then(|r| self.state.sessions.get(&r.session))
            .filter(|s| s.revoked_at.is_none())
            .cloned())
    }

    async fn insert_session(
        &mut self,
        session: &Session,
        first: &NewRefreshToken,
    ) -> Result<(), StoreError> {
        if self.state.sessions.contains_key(&session.id) {
            return Err(StoreError::Conflict("session"));
        }
        if self.state.refresh.contains_key(&first.hash) {
            return Err(StoreError::Conflict("refresh token"));
        }
        if !self.state.users.contains_key(&session.user) {
            return Err(missing("user"));
        }
        if !self.state.tenants.contains_key(&session.tenant) {
            return Err(missing("tenant"));
        }
        self.state.sessions.insert(session.id, session.clone());
        self.state.refresh.insert(
            first.hash,
            RefreshRecord {
                session: session.id,
                status: RefreshStatus::Live,
                expires_at: first.expires_at,
            },
        );
        let (id, hash) = (session.id, first.hash);
        self.undo.push(Box::new(move |s| {
            s.sessions.remove(&id);
            s.refresh.remove(&hash);
        }));
        Ok(())
    }

    async fn rotate_refresh(
        &mut self,
        presented: &RefreshTokenHash,
        next: &NewRefreshToken,
    ) -> Result<Rotation, StoreError> {
        let now = next.issued_at;
        let Some(record) = self.state.refresh.get(presented).cloned() else {
            return Ok(Rotation::Unknown);
        };
        match record.status {
            RefreshStatus::Rotated | RefreshStatus::Revoked => {
                self.revoke(record.session, now);
                return Ok(Rotation::Reused(record.session));
            }
            RefreshStatus::Live if record.expires_at <= now => return Ok(Rotation::Expired),
            RefreshStatus::Live => {}
        }
        let session = self
            .state
            .sessions
            .get(&record.session)
            .cloned()
            .ok_or_else(|| missing("session"))?;
        if self.state.refresh.contains_key(&next.hash) {
            return Err(StoreError::Conflict("refresh token"));
        }
        if let Some(r) = self.state.refresh.get_mut(presented) {
            r.status = RefreshStatus::Rotated;
        }
        self.state.refresh.insert(
            next.hash,
            RefreshRecord {
                session: record.session,
                status: RefreshStatus::Live,
                expires_at: next.expires_at,
            },
        );
        let (old, new) = (*presented, next.hash);
        self.undo.push(Box::new(move |s| {
            s.refresh.remove(&new);
            if let Some(r) = s.refresh.get_mut(&old) {
                r.status = RefreshStatus::Live;
            }
        }));
        Ok(Rotation::Rotated(session))
    }

    async fn session(&mut self, id: SessionId) -> Result<Option<Session>, StoreError> {
        Ok(self.state.sessions.get(&id).cloned())
    }

    async fn revoke_session(&mut self, id: SessionId, at: Timestamp) -> Result<bool, StoreError> {
        Ok(self.revoke(id, at))
    }

    async fn revoke_tenant_sessions(
        &mut self,
        tenant: TenantId,
        user: Option<UserId>,
        at: Timestamp,
    ) -> Result<Vec<SessionId>, StoreError> {
        let mut ids: Vec<SessionId> = self
            .state
            .sessions
            .values()
            .filter(|s| {
                s.tenant == tenant && s.revoked_at.is_none() && user.is_none_or(|u| s.user == u)
            })
            .map(|s| s.id)
            .collect();
        ids.sort();
        for id in &ids {
            self.revoke(*id, at);
        }
        Ok(ids)
    }

    async fn revoke_user_sessions(
        &mut self,
        user: UserId,
        except: Option<SessionId>,
        at: Timestamp,
    ) -> Result<Vec<SessionId>, StoreError> {
        let ids: Vec<SessionId> = self
            .state
            .sessions
            .values()
            .filter(|s| s.user == user && s.revoked_at.is_none() && Some(s.id) != except)
            .map(|s| s.id)
            .collect();
        for id in &ids {
            self.revoke(*id, at);
        }
        Ok(ids)
    }
}

impl MemoryUnit {
    /// Runs `change` on the state, recording the previous value of one map entry for undo.
    fn keep<K, V>(
        &mut self,
        map: fn(&mut State) -> &mut HashMap<K, V>,
        key: K,
        change: impl FnOnce(&mut HashMap<K, V>),
    ) where
        K: std::hash::Hash + Eq + Clone + Send + 'static,
        V: Clone + Send + 'static,
    {
        let before = map(&mut self.state).get(&key).cloned();
        change(map(&mut self.state));
        self.undo.push(Box::new(move |s| {
            let m = map(s);
            match before {
                Some(v) => {
                    m.insert(key, v);
                }
                None => {
                    m.remove(&key);
                }
            }
        }));
    }
}

#[async_trait]
impl MfaRepo for MemoryUnit {
    async fn mfa(&mut self, user: UserId) -> Result<Option<MfaEnrolment>, StoreError> {
        Ok(self.state.mfa.get(&user).cloned())
    }

    async fn put_mfa(&mut self, enrolment: &MfaEnrolment) -> Result<(), StoreError> {
        if !self.state.users.contains_key(&enrolment.user) {
            return Err(missing("user"));
        }
        let e = enrolment.clone();
        self.keep(
            |s| &mut s.mfa,
            e.user,
            move |m| {
                m.insert(e.user, e);
            },
        );
        Ok(())
    }

    async fn delete_mfa(&mut self, user: UserId) -> Result<bool, StoreError> {
        let existed = self.state.mfa.contains_key(&user);
        self.keep(
            |s| &mut s.mfa,
            user,
            |m| {
                m.remove(&user);
            },
        );
        self.keep(
            |s| &mut s.recovery_codes,
            user,
            |m| {
                m.remove(&user);
            },
        );
        Ok(existed)
    }

    async fn advance_totp_step(&mut self, user: UserId, step: i64) -> Result<bool, StoreError> {
        let later = self
            .state
            .mfa
            .get(&user)
            .is_some_and(|e| e.last_used_step.is_none_or(|last| step > last));
        if later {
            self.keep(
                |s| &mut s.mfa,
                user,
                |m| {
                    if let Some(e) = m.get_mut(&user) {
                        e.last_used_step = Some(step);
                    }
                },
            );
        }
        Ok(later)
    }

    async fn replace_recovery_codes(
        &mut self,
        user: UserId,
        codes: &[StoredRecoveryCode],
    ) -> Result<(), StoreError> {
        if !self.state.users.contains_key(&user) {
            return Err(missing("user"));
        }
        let codes = codes.to_vec();
        self.keep(
            |s| &mut s.recovery_codes,
            user,
            move |m| {
                m.insert(user, codes);
            },
        );
        Ok(())
    }

    async fn recovery_codes(
        &mut self,
        user: UserId,
    ) -> Result<Vec<StoredRecoveryCode>, StoreError> {
        Ok(self
            .state
            .recovery_codes
            .get(&user)
            .cloned()
            .unwrap_or_default())
    }

    async fn use_recovery_code(
        &mut self,
        user: UserId,
        lookup: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let unused = self.state.recovery_codes.get(&user).is_some_and(|codes| {
            codes
                .iter()
                .any(|c| c.lookup == lookup && c.used_at.is_none())
        });
        if unused {
            let lookup = lookup.to_owned();
            self.keep(
                |s| &mut s.recovery_codes,
                user,
                move |m| {
                    if let Some(c) = m
                        .get_mut(&user)
                        .and_then(|codes| codes.iter_mut().find(|c| c.lookup == lookup))
                    {
                        c.used_at = Some(at);
                    }
                },
            );
        }
        Ok(unused)
    }

    async fn insert_mfa_challenge(&mut self, challenge: &MfaChallenge) -> Result<(), StoreError> {
        if self.state.challenges.contains_key(&challenge.token_hash) {
            return Err(StoreError::Conflict("mfa challenge"));
        }
        let c = challenge.clone();
        self.keep(
            |s| &mut s.challenges,
            c.token_hash,
            move |m| {
                m.insert(c.token_hash, c);
            },
        );
        Ok(())
    }

    async fn take_mfa_attempt(
        &mut self,
        token_hash: &[u8; 32],
        now: Timestamp,
        max_attempts: u32,
    ) -> Result<Option<MfaChallenge>, StoreError> {
        let live = self
            .state
            .challenges
            .get(token_hash)
            .is_some_and(|c| c.expires_at > now && c.attempts < max_attempts);
        if !live {
            return Ok(None);
        }
        let key = *token_hash;
        self.keep(
            |s| &mut s.challenges,
            key,
            |m| {
                if let Some(c) = m.get_mut(&key) {
                    c.attempts += 1;
                }
            },
        );
        Ok(self.state.challenges.get(token_hash).cloned())
    }

    async fn consume_mfa_challenge(&mut self, token_hash: &[u8; 32]) -> Result<bool, StoreError> {
        let existed = self.state.challenges.contains_key(token_hash);
        let key = *token_hash;
        self.keep(
            |s| &mut s.challenges,
            key,
            |m| {
                m.remove(&key);
            },
        );
        Ok(existed)
    }

    async fn purge_mfa_challenges(&mut self, before: Timestamp) -> Result<u64, StoreError> {
        let expired: Vec<[u8; 32]> = self
            .state
            .challenges
            .values()
            .filter(|c| c.expires_at <= before)
            .map(|c| c.token_hash)
            .collect();
        for key in expired.iter().copied() {
            self.keep(
                |s| &mut s.challenges,
                key,
                |m| {
                    m.remove(&key);
                },
            );
        }
        let stale: Vec<iam_domain::TenantSelection> = self
            .state
            .selections
            .values()
            .filter(|s| s.expires_at <= before)
            .cloned()
            .collect();
        for s in &stale {
            self.state.selections.remove(&s.token_hash);
        }
        let count = expired.len() + stale.len();
        self.undo.push(Box::new(move |st| {
            for s in stale {
                st.selections.insert(s.token_hash, s);
            }
        }));
        Ok(count as u64)
    }
}

#[async_trait]
impl MailRepo for MemoryUnit {
    async fn insert_link_token(&mut self, token: &LinkToken) -> Result<(), StoreError> {
        if self.state.link_tokens.contains_key(&token.hash) {
            return Err(StoreError::Conflict("link token"));
        }
        self.spend_links(&token.email, token.kind, token.created_at);
        let t = token.clone();
        self.keep(
            |s| &mut s.link_tokens,
            t.hash,
            move |m| {
                m.insert(t.hash, t);
            },
        );
        Ok(())
    }

    async fn take_link_token(
        &mut self,
        hash: &[u8; 32],
        kind: LinkKind,
        now: Timestamp,
    ) -> Result<Option<LinkToken>, StoreError> {
        let live = self
            .state
            .link_tokens
            .get(hash)
            .is_some_and(|t| t.kind == kind && t.used_at.is_none() && t.expires_at > now);
        if !live {
            return Ok(None);
        }
        let key = *hash;
        self.keep(
            |s| &mut s.link_tokens,
            key,
            move |m| {
                if let Some(t) = m.get_mut(&key) {
                    t.used_at = Some(now);
                }
            },
        );
        Ok(self.state.link_tokens.get(hash).cloned())
    }

    async fn spend_link_tokens(
        &mut self,
        email: &Email,
        kind: LinkKind,
        at: Timestamp,
    ) -> Result<u64, StoreError> {
        Ok(self.spend_links(email, kind, at))
    }

    async fn set_password(
        &mut self,
        user: UserId,
        hash: &PasswordHash,
    ) -> Result<bool, StoreError> {
        let Some(record) = self.state.users.get_mut(&user) else {
            return Ok(false);
        };
        let old = record.password_hash.replace(hash.clone());
        self.undo.push(Box::new(move |s| {
            if let Some(r) = s.users.get_mut(&user) {
                r.password_hash = old;
            }
        }));
        Ok(true)
    }

    async fn enqueue_mail(&mut self, message: &MailMessage) -> Result<(), StoreError> {
        let key = (message.created_at, message.id);
        let entry = Outgoing {
            message: message.clone(),
            attempts: 0,
            due_at: message.created_at,
        };
        self.state.outbox.insert(key, entry);
        self.undo.push(Box::new(move |s| {
            s.outbox.remove(&key);
        }));
        Ok(())
    }
}

impl MemoryUnit {
    /// Spends the live tokens of `kind` for `email`, recording how to undo it.
    fn spend_links(&mut self, email: &Email, kind: LinkKind, at: Timestamp) -> u64 {
        let live: Vec<[u8; 32]> = self
            .state
            .link_tokens
            .values()
            .filter(|t| &t.email == email && t.kind == kind && t.used_at.is_none())
            .map(|t| t.hash)
            .collect();
        for key in live.iter().copied() {
            self.keep(
                |s| &mut s.link_tokens,
                key,
                move |m| {
                    if let Some(t) = m.get_mut(&key) {
                        t.used_at = Some(at);
                    }
                },
            );
        }
        live.len() as u64
    }
}

#[async_trait]
impl RbacRepo for MemoryUnit {
    async fn insert_role(&mut self, role: &Role) -> Result<(), StoreError> {
        if self
            .state
            .roles
            .values()
            .any(|r| r.id == role.id || (r.tenant == role.tenant && r.name == role.name))
        {
            return Err(StoreError::Conflict("role"));
        }
        if !self.state.tenants.contains_key(&role.tenant) {
            return Err(missing("tenant"));
        }
        self.state.roles.insert(role.id, role.clone());
        self.events.push(RevocationEvent::RolesChanged(role.tenant));
        let id = role.id;
        self.undo.push(Box::new(move |s| {
            s.roles.remove(&id);
        }));
        Ok(())
    }

    async fn custom_roles(&mut self, tenant: TenantId) -> Result<Vec<Role>, StoreError> {
        let mut roles: Vec<Role> = self
            .state
            .roles
            .values()
            .filter(|r| r.tenant == tenant)
            .cloned()
            .collect();
        roles.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(roles)
    }

    async fn custom_role(
        &mut self,
        tenant: TenantId,
        id: RoleId,
    ) -> Result<Option<Role>, StoreError> {
        Ok(self
            .state
            .roles
            .get(&id)
            .filter(|r| r.tenant == tenant)
            .cloned())
    }

    async fn update_role(&mut self, role: &Role, old_name: &RoleName) -> Result<bool, StoreError> {
        let Some(old) = self
            .state
            .roles
            .get(&role.id)
            .filter(|r| r.tenant == role.tenant)
            .cloned()
        else {
            return Ok(false);
        };
        if self
            .state
            .roles
            .values()
            .any(|r| r.id != role.id && r.tenant == role.tenant && r.name == role.name)
        {
            return Err(StoreError::Conflict("role"));
        }
        self.state.roles.insert(
            role.id,
            Role {
                created_at: old.created_at,
                ..role.clone()
            },
        );
        let renamed = self.rename_in_memberships(role.tenant, old_name, Some(&role.name));
        self.events.push(RevocationEvent::RolesChanged(role.tenant));
        self.undo.push(Box::new(move |s| {
            s.roles.insert(old.id, old);
            for (key, roles) in renamed {
                if let Some(m) = s.memberships.get_mut(&key) {
                    m.roles = roles;
                }
            }
        }));
        Ok(true)
    }

    async fn delete_role(&mut self, tenant: TenantId, role: &Role) -> Result<bool, StoreError> {
        let Some(old) = self
            .state
            .roles
            .get(&role.id)
            .filter(|r| r.tenant == tenant)
            .cloned()
        else {
            return Ok(false);
        };
        self.state.roles.remove(&role.id);
        let changed = self.rename_in_memberships(tenant, &old.name, None);
        self.events.push(RevocationEvent::RolesChanged(tenant));
        self.undo.push(Box::new(move |s| {
            s.roles.insert(old.id, old);
            for (key, roles) in changed {
                if let Some(m) = s.memberships.get_mut(&key) {
                    m.roles = roles;
                }
            }
        }));
        Ok(true)
    }

    async fn set_membership_roles(
        &mut self,
        tenant: TenantId,
        user: UserId,
        roles: &[RoleName],
    ) -> Result<bool, StoreError> {
        let key = (user, tenant);
        let Some(m) = self.state.memberships.get_mut(&key) else {
            return Ok(false);
        };
        let old = std::mem::replace(&mut m.roles, roles.to_vec());
        self.undo.push(Box::new(move |s| {
            if let Some(m) = s.memberships.get_mut(&key) {
                m.roles = old;
            }
        }));
        Ok(true)
    }

    async fn count_active_holders(
        &mut self,
        tenant: TenantId,
        role: &RoleName,
    ) -> Result<u64, StoreError> {
        Ok(self
            .state
            .memberships
            .values()
            .filter(|m| m.tenant == tenant && m.roles.contains(role))
            .filter(|m| {
                self.state
                    .users
                    .get(&m.user)
                    .is_some_and(|r| r.user.status == UserStatus::Active)
            })
            .count() as u64)
    }

    async fn lock_tenant(&mut self, tenant: TenantId) -> Result<bool, StoreError> {
        // A unit holds the whole store's lock already.
        Ok(self.state.tenants.contains_key(&tenant))
    }

    async fn register_permission(&mut self, def: &PermissionDef) -> Result<(), StoreError> {
        let old = self.state.permissions.insert(def.name.clone(), def.clone());
        self.events.push(RevocationEvent::CatalogueChanged);
        let name = def.name.clone();
        self.undo.push(Box::new(move |s| match old {
            Some(old) => {
                s.permissions.insert(name, old);
            }
            None => {
                s.permissions.remove(&name);
            }
        }));
        Ok(())
    }

    async fn registered_permissions(&mut self) -> Result<Vec<PermissionDef>, StoreError> {
        Ok(self.state.permissions.values().cloned().collect())
    }

    async fn root_tenant(&mut self) -> Result<Option<TenantId>, StoreError> {
        Ok(self.state.root_tenant)
    }

    async fn set_root_tenant(&mut self, tenant: TenantId) -> Result<bool, StoreError> {
        if self.state.root_tenant.is_some() {
            return Ok(false);
        }
        if !self.state.tenants.contains_key(&tenant) {
            return Err(missing("tenant"));
        }
        self.state.root_tenant = Some(tenant);
        self.undo.push(Box::new(|s| s.root_tenant = None));
        Ok(true)
    }
}

impl MemoryUnit {
    /// Replaces `old` by `new` (or removes it) in the roles of the tenant's memberships and
    /// returns the memberships' previous roles, for the undo log.
    fn rename_in_memberships(
        &mut self,
        tenant: TenantId,
        old: &RoleName,
        new: Option<&RoleName>,
    ) -> Vec<((UserId, TenantId), Vec<RoleName>)> {
        let mut changed = Vec::new();
        for (key, m) in self.state.memberships.iter_mut() {
            if m.tenant != tenant || !m.roles.contains(old) {
                continue;
            }
            changed.push((*key, m.roles.clone()));
            let mut roles: Vec<RoleName> = m.roles.iter().filter(|r| *r != old).cloned().collect();
            if let Some(new) = new
                && !roles.contains(new)
            {
                roles.push(new.clone());
            }
            m.roles = roles;
        }
        changed
    }
}

#[async_trait]
impl ClaimRepo for MemoryUnit {
    async fn insert_claim(&mut self, claim: &ClaimDefinition) -> Result<(), StoreError> {
        if self.state.claims.contains_key(&claim.name) {
            return Err(StoreError::Conflict("claim"));
        }
        if let iam_domain::claims::ClaimScope::Tenant { tenant, .. } = claim.scope
            && !self.state.tenants.contains_key(&tenant)
        {
            return Err(missing("tenant"));
        }
        self.state.claims.insert(claim.name.clone(), claim.clone());
        self.events.push(RevocationEvent::ClaimsChanged);
        let name = claim.name.clone();
        self.undo.push(Box::new(move |s| {
            s.claims.remove(&name);
        }));
        Ok(())
    }

    async fn claims(&mut self) -> Result<Vec<ClaimDefinition>, StoreError> {
        Ok(self.state.claims.values().cloned().collect())
    }

    async fn delete_claim(&mut self, name: &ClaimName) -> Result<bool, StoreError> {
        let Some(old) = self.state.claims.remove(name) else {
            return Ok(false);
        };
        self.events.push(RevocationEvent::ClaimsChanged);
        self.undo.push(Box::new(move |s| {
            s.claims.insert(old.name.clone(), old);
        }));
        Ok(true)
    }
}

#[async_trait]
impl AuditRepo for MemoryUnit {
    async fn append_audit(&mut self, event: &AuditEvent) -> Result<(), StoreError> {
        if self.state.audit.iter().any(|e| e.id == event.id) {
            return Err(StoreError::Conflict("audit event"));
        }
        self.state.audit.push(event.clone());
        let id = event.id;
        self.undo.push(Box::new(move |s| {
            s.audit.retain(|e| e.id != id);
        }));
        Ok(())
    }

    async fn list_audit(
        &mut self,
        tenant: TenantId,
        before: Option<AuditId>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        // Newest first, in the order of appending; a cursor continues below its event.
        let end = match before {
            Some(b) => match self
                .state
                .audit
                .iter()
                .position(|e| e.id == b && e.tenant == tenant)
            {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            None => self.state.audit.len(),
        };
        let events: Vec<AuditEvent> = self.state.audit[..end]
            .iter()
            .rev()
            .filter(|e| e.tenant == tenant)
            .take(limit)
            .cloned()
            .collect();
        Ok(events)
    }
}

#[async_trait]
impl UnitOfWork for MemoryUnit {
    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.undo.clear();
        for event in self.events.drain(..) {
            // No subscriber is not an error: nobody needs to hear it.
            let _ = self.feed.send(event);
        }
        Ok(())
    }

    async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        // Dropping runs the undo log.
        Ok(())
    }
}

#[async_trait]
impl MailQueue for MemoryStore {
    async fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<QueuedMail>, StoreError> {
        let mut state = self.state.lock().await;
        let mut claimed = Vec::new();
        for entry in state.outbox.values_mut() {
            if claimed.len() >= limit {
                break;
            }
            if entry.due_at <= now {
                entry.due_at = lease_until;
                entry.attempts += 1;
                claimed.push(QueuedMail {
                    message: entry.message.clone(),
                    attempts: entry.attempts,
                });
            }
        }
        Ok(claimed)
    }

    async fn mark_sent(&self, id: MailId, _at: Timestamp) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        state.outbox.retain(|_, e| e.message.id != id);
        Ok(())
    }

    async fn mark_failed(
        &self,
        id: MailId,
        retry_at: Timestamp,
        _error: &str,
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        if let Some(e) = state.outbox.values_mut().find(|e| e.message.id == id) {
            e.due_at = retry_at;
        }
        Ok(())
    }

    async fn pending(&self) -> Result<u64, StoreError> {
        let state = self.state.lock().await;
        Ok(state.outbox.len() as u64)
    }
}

#[async_trait]
impl RevocationFeed for MemoryStore {
    async fn snapshot(&self, sessions_since: Timestamp) -> Result<RevocationSnapshot, StoreError> {
        let state = self.state.lock().await;
        let blocked = |id: TenantId| {
            std::iter::once(id)
                .chain(ancestors_in(&state, id))
                .any(|t| {
                    state
                        .tenants
                        .get(&t)
                        .is_some_and(|t| t.status != TenantStatus::Active)
                })
        };
        Ok(RevocationSnapshot {
            revoked_sessions: state
                .sessions
                .values()
                .filter(|s| s.revoked_at.is_some_and(|at| at >= sessions_since))
                .map(|s| s.id)
                .collect(),
            inactive_users: state
                .users
                .values()
                .filter(|r| r.user.status != UserStatus::Active)
                .map(|r| (r.user.id, r.user.status))
                .collect(),
            blocked_tenants: state
                .tenants
                .keys()
                .copied()
                .filter(|t| blocked(*t))
                .collect(),
            custom_roles: state.roles.values().cloned().collect(),
            claims: state.claims.values().cloned().collect(),
            permissions: state.permissions.values().cloned().collect(),
        })
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, FeedMessage>, StoreError> {
        let rx = self.events.subscribe();
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((FeedMessage::Event(event), rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        return Some((FeedMessage::Resync, rx));
                    }
                    // The store is gone; so is everything a subscriber could hear.
                    Err(broadcast::error::RecvError::Closed) => {
                        futures::future::pending::<()>().await;
                    }
                }
            }
        })))
    }
}

/// Throttling counters in memory (one instance's view; PostgreSQL shares them across instances).
#[derive(Default)]
pub struct MemoryThrottleStore {
    counters: std::sync::Mutex<HashMap<String, Counter>>,
}

impl MemoryThrottleStore {
    /// No counters yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Counter>> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl ThrottleStore for MemoryThrottleStore {
    async fn counters(&self, keys: &[String]) -> Result<Vec<Option<Counter>>, StoreError> {
        let counters = self.lock();
        Ok(keys.iter().map(|k| counters.get(k).copied()).collect())
    }

    async fn add_failure(
        &self,
        key: &str,
        now: Timestamp,
        leak_per_sec: f64,
    ) -> Result<Counter, StoreError> {
        let mut counters = self.lock();
        let drained = counters.get(key).map_or(0.0, |c| {
            let elapsed = (now - c.updated_at).num_milliseconds().max(0) as f64 / 1000.0;
            (c.score - elapsed * leak_per_sec).max(0.0)
        });
        let counter = Counter {
            score: drained + 1.0,
            updated_at: now,
        };
        counters.insert(key.to_owned(), counter);
        Ok(counter)
    }

    async fn forget(&self, key: &str) -> Result<(), StoreError> {
        self.lock().remove(key);
        Ok(())
    }

    async fn purge(&self, before: Timestamp) -> Result<u64, StoreError> {
        let mut counters = self.lock();
        let len = counters.len();
        counters.retain(|_, c| c.updated_at >= before);
        Ok((len - counters.len()) as u64)
    }
}

/// Signing keys in memory (sealed like everywhere else, though they die with the process).
#[derive(Default)]
pub struct MemoryKeyStore {
    keys: std::sync::Mutex<Vec<StoredKey>>,
}

impl MemoryKeyStore {
    /// An empty key store.
    pub fn new() -> Self {
        Self::default()
    }

    fn keys_mut(&self) -> std::sync::MutexGuard<'_, Vec<StoredKey>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl KeyStore for MemoryKeyStore {
    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        Ok(self.keys_mut().clone())
    }

    async fn activate(&self, key: StoredKey) -> Result<(), StoreError> {
        let mut keys = self.keys_mut();
        if keys.iter().any(|k| k.kid == key.kid) {
            return Err(StoreError::Conflict("key"));
        }
        for k in keys.iter_mut().filter(|k| k.retired_at.is_none()) {
            k.retired_at = Some(key.created_at);
        }
        keys.push(key);
        Ok(())
    }

    async fn purge_retired_before(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        let mut keys = self.keys_mut();
        let before = keys.len();
        keys.retain(|k| k.retired_at.is_none_or(|at| at >= cutoff));
        Ok((before - keys.len()) as u64)
    }
}
