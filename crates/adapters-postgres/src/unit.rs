//! The unit of work: one pooled connection inside one transaction.
//!
//! Postgres aborts a transaction at its first failed statement, so a unit is poisoned by any
//! error: later calls fail without reaching the server and `commit` rolls back. A unit dropped
//! without `commit` or `rollback` hands its connection to a spawned task that rolls back before
//! the connection goes back to the pool; an idle connection must never hold a transaction open,
//! since its locks would stall every other unit touching the same rows.
//!
//! Revocations and status changes are collected as the unit goes and published with
//! `pg_notify` just before COMMIT, inside the transaction: PostgreSQL delivers them to listeners
//! when it commits and discards them if it rolls back, so the feed never announces a change that
//! did not happen, and no change is committed unannounced.

use async_trait::async_trait;
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};
use iam_domain::claims::{ClaimDefinition, ClaimName};
use iam_domain::{AuditEvent, AuditId, PermissionDef, Role, RoleId, RoleName};
use iam_domain::{
    Email, LinkKind, LinkToken, MailMessage, Membership, MfaChallenge, MfaEnrolment, PasswordHash,
    RefreshTokenHash, Session, SessionId, StoredRecoveryCode, Tenant, TenantId, TenantStatus,
    Timestamp, User, UserId,
};
use iam_ports::{AuditRepo, ClaimRepo, RbacRepo};
use iam_ports::{
    MailRepo, MfaRepo, Move, NewRefreshToken, RevocationEvent, Rotation, SessionRepo, StoreError,
    TenantRepo, UnitOfWork, UserFilter, UserRecord, UserRepo,
};

use crate::error::{UnitError, from_diesel};
use crate::pool::{Detaching, PooledConn};
use crate::{mail, payload, queries};

/// A transaction on a connection checked out for it alone.
pub(crate) struct PgUnit {
    /// `None` once the unit has ended and given its connection back.
    conn: Option<PooledConn>,
    /// Set while a statement is in flight and kept if it fails, so that a statement whose
    /// future was dropped midway also counts as failed.
    poisoned: bool,
    /// What to announce on the revocation feed at commit, in the order it happened.
    events: Vec<RevocationEvent>,
    /// The tenant `iam.tenant_id` names in this transaction (row-level security), once set.
    scope: Option<TenantId>,
}

impl PgUnit {
    /// Opens a transaction on `conn`.
    pub(crate) async fn begin(conn: PooledConn) -> Result<Self, StoreError> {
        let mut guard = Detaching::new(conn);
        AnsiTransactionManager::begin_transaction(guard.conn())
            .await
            .map_err(from_diesel)?;
        Ok(Self {
            conn: Some(guard.release()),
            poisoned: false,
            events: Vec::new(),
            scope: None,
        })
    }

    /// The connection for the next statement, unless an earlier one failed.
    pub(crate) fn enter(&mut self) -> Result<&mut AsyncPgConnection, StoreError> {
        if self.poisoned {
            return Err(StoreError::Unexpected(Box::new(UnitError::Poisoned)));
        }
        self.poisoned = true;
        self.conn
            .as_deref_mut()
            .ok_or_else(|| StoreError::Unexpected(Box::new(UnitError::Ended)))
    }

    /// The connection for a statement on rows of `tenant`: row-level security shows a
    /// transaction only the rows of the tenant its `iam.tenant_id` names, so that is set first
    /// (once per tenant in a row; most units touch one tenant only).
    pub(crate) async fn enter_in(
        &mut self,
        tenant: TenantId,
    ) -> Result<&mut AsyncPgConnection, StoreError> {
        if self.scope != Some(tenant) {
            let conn = self.enter()?;
            let result = queries::act_in(conn, tenant).await;
            self.leave(result)?;
            self.scope = Some(tenant);
        }
        self.enter()
    }

    /// Records how the statement begun with [`enter`](Self::enter) ended.
    pub(crate) fn leave<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.poisoned = result.is_err();
        result
    }

    /// Takes the connection out, so that `Drop` leaves it alone.
    fn finish(&mut self) -> Result<Detaching, StoreError> {
        self.conn
            .take()
            .map(Detaching::new)
            .ok_or_else(|| StoreError::Unexpected(Box::new(UnitError::Ended)))
    }
}

/// Rolls back on `guard`'s connection and returns it to the pool; on failure the guard closes it.
pub(crate) async fn roll_back(mut guard: Detaching) -> Result<(), StoreError> {
    AnsiTransactionManager::rollback_transaction(guard.conn())
        .await
        .map_err(from_diesel)?;
    drop(guard.release());
    Ok(())
}

impl PgUnit {
    /// Acts in the tenant of the session a refresh token belongs to; `false` if the token is
    /// unknown.
    async fn enter_refresh_tenant(&mut self, token: &RefreshTokenHash) -> Result<bool, StoreError> {
        let conn = self.enter()?;
        let result = queries::act_in_refresh_tenant(conn, token).await;
        self.scoped(result)
    }

    /// Acts in the tenant of a session; `false` if there is no such session.
    async fn enter_session_tenant(&mut self, id: SessionId) -> Result<bool, StoreError> {
        let conn = self.enter()?;
        let result = queries::act_in_session_tenant(conn, id).await;
        self.scoped(result)
    }

    /// Records the tenant a lookup-and-scope statement set, if it found one.
    fn scoped(&mut self, result: Result<Option<TenantId>, StoreError>) -> Result<bool, StoreError> {
        let tenant = self.leave(result)?;
        if tenant.is_some() {
            self.scope = tenant;
        }
        Ok(tenant.is_some())
    }
}

impl Drop for PgUnit {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let guard = Detaching::new(conn);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = roll_back(guard).await {
                        tracing::warn!(error = %e, "rollback of a dropped unit of work failed; connection closed");
                    }
                });
            }
            // No runtime to roll back on: closing the connection makes the server roll back.
            Err(_) => drop(guard),
        }
    }
}

#[async_trait]
impl UserRepo for PgUnit {
    async fn insert_user(
        &mut self,
        user: &User,
        password: Option<&PasswordHash>,
    ) -> Result<(), StoreError> {
        let conn = self.enter()?;
        let result = queries::insert_user(conn, user, password).await;
        self.leave(result)
    }

    async fn user_by_email(&mut self, email: &Email) -> Result<Option<UserRecord>, StoreError> {
        let conn = self.enter()?;
        let result = queries::user_by_email(conn, email).await;
        self.leave(result)
    }

    async fn user_by_id(&mut self, id: UserId) -> Result<Option<User>, StoreError> {
        let conn = self.enter()?;
        let result = queries::user_by_id(conn, id).await;
        self.leave(result)
    }

    async fn update_user(&mut self, user: &User) -> Result<bool, StoreError> {
        let conn = self.enter()?;
        let result = queries::update_user(conn, user).await;
        let Some(status_changed) = self.leave(result)? else {
            return Ok(false);
        };
        if status_changed {
            self.events
                .push(RevocationEvent::UserStatus(user.id, user.status));
        }
        Ok(true)
    }

    async fn list_members(
        &mut self,
        tenant: TenantId,
        filter: &UserFilter,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        let conn = self.enter_in(tenant).await?;
        let result = queries::list_members(conn, tenant, filter, after, limit).await;
        self.leave(result)
    }
}

#[async_trait]
impl TenantRepo for PgUnit {
    async fn insert_tenant(&mut self, tenant: &Tenant) -> Result<(), StoreError> {
        let conn = self.enter()?;
        let result = queries::insert_tenant(conn, tenant).await;
        self.leave(result)
    }

    async fn tenant(&mut self, id: TenantId) -> Result<Option<Tenant>, StoreError> {
        let conn = self.enter()?;
        let result = queries::tenant(conn, id).await;
        self.leave(result)
    }

    async fn insert_membership(&mut self, membership: &Membership) -> Result<(), StoreError> {
        let conn = self.enter_in(membership.tenant).await?;
        let result = queries::insert_membership(conn, membership).await;
        self.leave(result)
    }

    async fn memberships_of(&mut self, user: UserId) -> Result<Vec<Membership>, StoreError> {
        let conn = self.enter()?;
        let result = queries::memberships_of(conn, user).await;
        self.leave(result)
    }

    async fn memberships_in(
        &mut self,
        tenant: TenantId,
        users: &[UserId],
    ) -> Result<Vec<Membership>, StoreError> {
        let conn = self.enter_in(tenant).await?;
        let result = queries::memberships_in(conn, tenant, users).await;
        self.leave(result)
    }

    async fn membership(
        &mut self,
        user: UserId,
        tenant: TenantId,
    ) -> Result<Option<Membership>, StoreError> {
        let conn = self.enter_in(tenant).await?;
        let result = queries::membership(conn, user, tenant).await;
        self.leave(result)
    }

    async fn set_tenant_status(
        &mut self,
        id: TenantId,
        status: TenantStatus,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let conn = self.enter()?;
        let result = queries::set_tenant_status(conn, id, status, at).await;
        let Some(status_changed) = self.leave(result)? else {
            return Ok(false);
        };
        if status_changed {
            self.events.push(RevocationEvent::TenantStatus(id));
        }
        Ok(true)
    }

    async fn ancestors(&mut self, id: TenantId) -> Result<Vec<TenantId>, StoreError> {
        let conn = self.enter()?;
        let result = queries::ancestors(conn, id).await;
        self.leave(result)
    }

    async fn lineage(&mut self, id: TenantId) -> Result<Vec<Tenant>, StoreError> {
        let conn = self.enter()?;
        let result = queries::lineage(conn, id).await;
        self.leave(result)
    }

    async fn is_descendant(
        &mut self,
        ancestor: TenantId,
        descendant: TenantId,
    ) -> Result<bool, StoreError> {
        let conn = self.enter()?;
        let result = queries::is_descendant(conn, ancestor, descendant).await;
        self.leave(result)
    }

    async fn children(
        &mut self,
        parent: TenantId,
        after: Option<TenantId>,
        limit: usize,
    ) -> Result<Vec<Tenant>, StoreError> {
        let conn = self.enter()?;
        let result = queries::children(conn, parent, after, limit).await;
        self.leave(result)
    }

    async fn descendants(
        &mut self,
        root: TenantId,
        after: Option<TenantId>,
        limit: usize,
    ) -> Result<Vec<Tenant>, StoreError> {
        let conn = self.enter()?;
        let result = queries::descendants(conn, root, after, limit).await;
        self.leave(result)
    }

    async fn update_tenant(&mut self, tenant: &Tenant) -> Result<bool, StoreError> {
        let conn = self.enter()?;
        let result = queries::update_tenant(conn, tenant).await;
        self.leave(result)
    }

    async fn move_tenant(
        &mut self,
        id: TenantId,
        parent: Option<TenantId>,
        at: Timestamp,
    ) -> Result<Move, StoreError> {
        let conn = self.enter()?;
        let result = queries::move_tenant(conn, id, parent, at).await;
        match self.leave(result)? {
            Ok(changed) => {
                if changed {
                    self.events.push(RevocationEvent::TenantStatus(id));
                }
                Ok(Move::Moved)
            }
            Err(refused) => Ok(refused),
        }
    }

    async fn lock_tree(&mut self) -> Result<(), StoreError> {
        let conn = self.enter()?;
        let result = queries::lock_tree(conn).await;
        self.leave(result)
    }

    async fn delete_tenant_memberships(&mut self, tenant: TenantId) -> Result<u64, StoreError> {
        let conn = self.enter_in(tenant).await?;
        let result = queries::delete_tenant_memberships(conn, tenant).await;
        self.leave(result)
    }

    async fn delete_membership(
        &mut self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<bool, StoreError> {
        let conn = self.enter_in(tenant).await?;
        let result = queries::delete_membership(conn, tenant, user).await;
        self.leave(result)
    }

    async fn insert_selection(
        &mut self,
        selection: &iam_domain::TenantSelection,
    ) -> Result<(), StoreError> {
        let conn = self.enter()?;
        let result = queries::insert_selection(conn, selection).await;
        self.leave(result)
    }

    async fn take_selection(
        &mut self,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<iam_domain::TenantSelection>, StoreError> {
        let conn = self.enter()?;
        let result = queries::take_selection(conn, token_hash, now).await;
        self.leave(result)
    }
}

#[async_trait]
impl SessionRepo for PgUnit {
    async fn session_of_refresh(
        &mut self,
        token: &RefreshTokenHash,
    ) -> Result<Option<Session>, StoreError> {
        if !self.enter_refresh_tenant(token).await? {
            return Ok(None);
        }
        let conn = self.enter()?;
        let result = queries::session_of_refresh(conn, token).await;
        self.leave(result)
    }

    async fn insert_session(
        &mut self,
        session: &Session,
        first: &NewRefreshToken,
    ) -> Result<(), StoreError> {
        let conn = self.enter_in(session.tenant).await?;
        let result = queries::insert_session(conn, session, first).await;
        self.leave(result)
    }

    async fn rotate_refresh(
        &mut self,
        presented: &RefreshTokenHash,
        next: &NewRefreshToken,
    ) -> Result<Rotation, StoreError> {
        if !self.enter_refresh_tenant(presented).await? {
            return Ok(Rotation::Unknown);
        }
        let conn = self.enter()?;
        let result = queries::rotate_refresh(conn, presented, next).await;
        let (rotation, revoked) = self.leave(result)?;
        if let (Rotation::Reused(id), true) = (&rotation, revoked) {
            self.events.push(RevocationEvent::SessionRevoked(*id));
        }
        Ok(rotation)
    }

    async fn session(&mut self, id: SessionId) -> Result<Option<Session>, StoreError> {
        if !self.enter_session_tenant(id).await? {
            return Ok(None);
        }
        let conn = self.enter()?;
        let result = queries::session(conn, id).await;
        self.leave(result)
    }

    async fn revoke_session(&mut self, id: SessionId, at: Timestamp) -> Result<bool, StoreError> {
        if !self.enter_session_tenant(id).await? {
            return Ok(false);
        }
        let conn = self.enter()?;
        let result = queries::revoke_session(conn, id, at).await;
        let revoked = self.leave(result)?;
        if revoked.session {
            self.events.push(RevocationEvent::SessionRevoked(id));
        }
        Ok(revoked.anything)
    }

    async fn revoke_tenant_sessions(
        &mut self,
        tenant: TenantId,
        user: Option<UserId>,
        at: Timestamp,
    ) -> Result<Vec<SessionId>, StoreError> {
        let conn = self.enter_in(tenant).await?;
        let result = queries::revoke_tenant_sessions(conn, tenant, user, at).await;
        let revoked = self.leave(result)?;
        self.events
            .extend(revoked.iter().copied().map(RevocationEvent::SessionRevoked));
        Ok(revoked)
    }

    async fn revoke_user_sessions(
        &mut self,
        user: UserId,
        except: Option<SessionId>,
        at: Timestamp,
    ) -> Result<Vec<SessionId>, StoreError> {
        // Tenant by tenant: each statement sees only the scoped tenant's sessions.
        let conn = self.enter()?;
        let result = queries::user_session_tenants(conn, user).await;
        let mut revoked = Vec::new();
        for tenant in self.leave(result)? {
            let conn = self.enter_in(tenant).await?;
            let result = queries::revoke_user_sessions(conn, user, except, at).await;
            revoked.extend(self.leave(result)?);
        }
        revoked.sort();
        self.events
            .extend(revoked.iter().copied().map(RevocationEvent::SessionRevoked));
        Ok(revoked)
    }
}

#[async_trait]
impl MfaRepo for PgUnit {
    async fn mfa(&mut self, user: UserId) -> Result<Option<MfaEnrolment>, StoreError> {
        let conn = self.enter()?;
        let result = queries::mfa(conn, user).await;
        self.leave(result)
    }

    async fn put_mfa(&mut self, enrolment: &MfaEnrolment) -> Result<(), StoreError> {
        let conn = self.enter()?;
        let result = queries::put_mfa(conn, enrolment).await;
        self.leave(result)
    }

    async fn delete_mfa(&mut self, user: UserId) -> Result<bool, StoreError> {
        let conn = self.enter()?;
        let result = queries::delete_mfa(conn, user).await;
        self.leave(result)
    }

    async fn advance_totp_step(&mut self, user: UserId, step: i64) -> Result<bool, StoreError> {
        let conn = self.enter()?;
        let result = queries::advance_totp_step(conn, user, step).await;
        self.leave(result)
    }

    async fn replace_recovery_codes(
        &mut self,
        user: UserId,
        codes: &[StoredRecoveryCode],
    ) -> Result<(), StoreError> {
        let conn = self.enter()?;
        let result = queries::replace_recovery_codes(conn, user, codes).await;
        self.leave(result)
    }

    async fn recovery_codes(
        &mut self,
        user: UserId,
    ) -> Result<Vec<StoredRecoveryCode>, StoreError> {
        let conn = self.enter()?;
        let result = queries::recovery_codes(conn, user).await;
        self.leave(result)
    }

    async fn use_recovery_code(
        &mut self,
        user: UserId,
        lookup: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let conn = self.enter()?;
        let result = queries::use_recovery_code(conn, user, lookup, at).await;
        self.leave(result)
    }

    async fn insert_mfa_challenge(&mut self, challenge: &MfaChallenge) -> Result<(), StoreError> {
        let conn = self.enter()?;
        let result = queries::insert_mfa_challenge(conn, challenge).await;
        self.leave(result)
    }

    async fn take_mfa_attempt(
        &mut self,
        token_hash: &[u8; 32],
        now: Timestamp,
        max_attempts: u32,
    ) -> Result<Option<MfaChallenge>, StoreError> {
        let conn = self.enter()?;
        let result = queries::take_mfa_attempt(conn, token_hash, now, max_attempts).await;
        self.leave(result)
    }

    async fn consume_mfa_challenge(&mut self, token_hash: &[u8; 32]) -> Result<bool, StoreError> {
        let conn = self.enter()?;
        let result = queries::consume_mfa_challenge(conn, token_hash).await;
        self.leave(result)
    }

    async fn purge_mfa_challenges(&mut self, before: Timestamp) -> Result<u64, StoreError> {
        let conn = self.enter()?;
        let result = queries::purge_mfa_challenges(conn, before).await;
        self.leave(result)
    }
}

#[async_trait]
impl MailRepo for PgUnit {
    async fn insert_link_token(&mut self, token: &LinkToken) -> Result<(), StoreError> {
        let conn = self.enter()?;
        let result = mail::insert_link_token(conn, token).await;
        self.leave(result)
    }

    async fn take_link_token(
        &mut self,
        hash: &[u8; 32],
        kind: LinkKind,
        now: Timestamp,
    ) -> Result<Option<LinkToken>, StoreError> {
        let conn = self.enter()?;
        let result = mail::take_link_token(conn, hash, kind, now).await;
        self.leave(result)
    }

    async fn spend_link_tokens(
        &mut self,
        email: &Email,
        kind: LinkKind,
        at: Timestamp,
    ) -> Result<u64, StoreError> {
        let conn = self.enter()?;
        let result = mail::spend_link_tokens(conn, email, kind, at).await;
        self.leave(result)
    }

    async fn set_password(
        &mut self,
        user: UserId,
        hash: &PasswordHash,
    ) -> Result<bool, StoreError> {
        let conn = self.enter()?;
        let result = mail::set_password(conn, user, hash).await;
        self.leave(result)
    }

    async fn enqueue_mail(&mut self, message: &MailMessage) -> Result<(), StoreError> {
        let conn = self.enter()?;
        let result = mail::enqueue_mail(conn, message).await;
        self.leave(result)
    }
}

#[async_trait]
impl RbacRepo for PgUnit {
    async fn insert_role(&mut self, role: &Role) -> Result<(), StoreError> {
        let conn = self.enter_in(role.tenant).await?;
        let result = queries::insert_role(conn, role).await;
        let result = self.leave(result);
        if result.is_ok() {
            self.events.push(RevocationEvent::RolesChanged(role.tenant));
        }
        result
    }
    async fn custom_roles(&mut self, tenant: TenantId) -> Result<Vec<Role>, StoreError> {
        let conn = self.enter_in(tenant).await?;
        let result = queries::custom_roles(conn, tenant).await;
        self.leave(result)
    }
    async fn custom_role(
        &mut self,
        tenant: TenantId,
        id: RoleId,
    ) -> Result<Option<Role>, StoreError> {
        let conn = self.enter_in(tenant).await?;
        let result = queries::custom_role(conn, tenant, id).await;
        self.leave(result)
    }
    async fn update_role(&mut self, role: &Role, old_name: &RoleName) -> Result<bool, StoreError> {
        let conn = self.enter_in(role.tenant).await?;
        let result = queries::update_role(conn, role, old_name).await;
        let result = self.leave(result);
        if result.is_ok() {
            self.events.push(RevocationEvent::RolesChanged(role.tenant));
        }
        result
    }
    async fn delete_role(&mut self, tenant: TenantId, role: &Role) -> Result<bool, StoreError> {
        let conn = self.enter_in(tenant).await?;
        let result = queries::delete_role(conn, tenant, role).await;
        let result = self.leave(result);
        if result.is_ok() {
            self.events.push(RevocationEvent::RolesChanged(tenant));
        }
        result
    }
    async fn set_membership_roles(
        &mut self,
        tenant: TenantId,
        user: UserId,
        roles: &[RoleName],
    ) -> Result<bool, StoreError> {
        let conn = self.enter_in(tenant).await?;
        let result = queries::set_membership_roles(conn, tenant, user, roles).await;
        self.leave(result)
    }
    async fn count_active_holders(
        &mut self,
        tenant: TenantId,
        role: &RoleName,
    ) -> Result<u64, StoreError> {
        let conn = self.enter_in(tenant).await?;
        let result = queries::count_active_holders(conn, tenant, role).await;
        self.leave(result)
    }
    async fn lock_tenant(&mut self, tenant: TenantId) -> Result<bool, StoreError> {
        let conn = self.enter()?;
        let result = queries::lock_tenant(conn, tenant).await;
        self.leave(result)
    }
    async fn register_permission(&mut self, def: &PermissionDef) -> Result<(), StoreError> {
        let conn = self.enter()?;
        let result = queries::register_permission(conn, def).await;
        let result = self.leave(result);
        if result.is_ok() {
            self.events.push(RevocationEvent::CatalogueChanged);
        }
        result
    }
    async fn registered_permissions(&mut self) -> Result<Vec<PermissionDef>, StoreError> {
        let conn = self.enter()?;
        let result = queries::registered_permissions(conn).await;
        self.leave(result)
    }
    async fn root_tenant(&mut self) -> Result<Option<TenantId>, StoreError> {
        let conn = self.enter()?;
        let result = queries::root_tenant(conn).await;
        self.leave(result)
    }
    async fn set_root_tenant(&mut self, tenant: TenantId) -> Result<bool, StoreError> {
        let conn = self.enter()?;
        let result = queries::set_root_tenant(conn, tenant).await;
        self.leave(result)
    }
}

#[async_trait]
impl ClaimRepo for PgUnit {
    async fn insert_claim(&mut self, claim: &ClaimDefinition) -> Result<(), StoreError> {
        let conn = self.enter()?;
        let result = queries::insert_claim(conn, claim).await;
        let result = self.leave(result);
        if result.is_ok() {
            self.events.push(RevocationEvent::ClaimsChanged);
        }
        result
    }

    async fn claims(&mut self) -> Result<Vec<ClaimDefinition>, StoreError> {
        let conn = self.enter()?;
        let result = queries::claims(conn).await;
        self.leave(result)
    }

    async fn delete_claim(&mut self, name: &ClaimName) -> Result<bool, StoreError> {
        let conn = self.enter()?;
        let result = queries::delete_claim(conn, name).await;
        let result = self.leave(result);
        if matches!(result, Ok(true)) {
            self.events.push(RevocationEvent::ClaimsChanged);
        }
        result
    }
}

#[async_trait]
impl AuditRepo for PgUnit {
    async fn append_audit(&mut self, event: &AuditEvent) -> Result<(), StoreError> {
        let conn = self.enter_in(event.tenant).await?;
        let result = queries::append_audit(conn, event).await;
        self.leave(result)
    }
    async fn list_audit(
        &mut self,
        tenant: TenantId,
        before: Option<AuditId>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let conn = self.enter_in(tenant).await?;
        let result = queries::list_audit(conn, tenant, before, limit).await;
        self.leave(result)
    }
}

#[async_trait]
impl UnitOfWork for PgUnit {
    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let poisoned = self.poisoned;
        let events = std::mem::take(&mut self.events);
        let mut guard = self.finish()?;
        if poisoned {
            // Postgres would answer COMMIT with a silent ROLLBACK; say so instead.
            roll_back(guard).await?;
            return Err(StoreError::Unexpected(Box::new(UnitError::RolledBack)));
        }
        if let Err(e) = payload::publish(guard.conn(), &events).await {
            // A change that other instances would not hear of must not be committed: their
            // caches would go on accepting tokens it revoked. The failed statement aborted the
            // transaction; roll it back so the connection can be pooled again.
            if let Err(rollback) = roll_back(guard).await {
                tracing::warn!(error = %rollback, "rollback after a failed publish failed; connection closed");
            }
            return Err(e);
        }
        AnsiTransactionManager::commit_transaction(guard.conn())
            .await
            .map_err(from_diesel)?;
        drop(guard.release());
        Ok(())
    }

    async fn rollback(mut self: Box<Self>) -> Result<(), StoreError> {
        roll_back(self.finish()?).await
    }
}
