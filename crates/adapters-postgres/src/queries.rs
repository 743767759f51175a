//! The statements behind the repositories, as free functions over one connection. Each is one
//! round trip unless its doc says otherwise. Everything is diesel's DSL, which caches its
//! prepared statements per connection, except what the DSL cannot express (the rotation, the call
//! of the refresh function and the recursive queries), which are hand-written fragments with
//! static query ids, cached alike.
//! The one statement that is not cached is the multi-row insert of recovery codes; see
//! [`replace_recovery_codes`].

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use iam_domain::{AuditActor, AuditEvent, AuditId, PermissionDef, Role, RoleId, RoleName};
use iam_domain::{
    Email, Membership, MfaChallenge, MfaEnrolment, PasswordHash, RefreshTokenHash, Session,
    SessionId, StoredRecoveryCode, Tenant, TenantId, TenantStatus, Timestamp, User, UserId,
    UserStatus,
};
use iam_ports::{
    NewRefreshToken, Refreshed, RevocationSnapshot, Rotation, Standing, StoreError, UserFilter,
    UserRecord,
};
use uuid::Uuid;

use crate::error::{Missing, OutOfRange, from_diesel, invalid};
use crate::rows::{AuditRow, ClaimRow, PermissionRow, RoleRow};
use crate::rows::{
    MembershipRow, MfaChallengeRow, MfaEnrolmentRow, RecoveryCodeRow, RefreshStateRow,
    RefreshStatus, SessionRow, TenantRow, UserRow,
};
use crate::schema::{
    audit_events, claim_definitions, permissions, platform, roles, tenant_selections,
};
use crate::schema::{
    memberships, mfa_challenges, mfa_enrolments, recovery_codes, refresh_tokens, sessions,
    tenant_closure, tenants, users,
};

type Conn = AsyncPgConnection;

pub(crate) async fn insert_user(
    conn: &mut Conn,
    user: &User,
    password: Option<&PasswordHash>,
) -> Result<(), StoreError> {
    diesel::insert_into(users::table)
        .values((
            users::id.eq(user.id.as_uuid()),
            users::email.eq(user.email.as_str()),
            users::display_name.eq(user.name.as_str()),
            users::password_hash.eq(password.map(PasswordHash::as_str)),
            users::status.eq(user.status.as_str()),
            users::email_verified.eq(user.email_verified),
            users::created_at.eq(user.created_at),
            users::updated_at.eq(user.updated_at),
            users::metadata.eq(user.metadata.to_value()),
        ))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(())
}

pub(crate) async fn user_by_email(
    conn: &mut Conn,
    email: &Email,
) -> Result<Option<UserRecord>, StoreError> {
    users::table
        .filter(users::email.eq(email.as_str()))
        .select(UserRow::as_select())
        .get_result(conn)
        .await
        .optional()
        .map_err(from_diesel)?
        .map(UserRecord::try_from)
        .transpose()
}

pub(crate) async fn user_by_id(conn: &mut Conn, id: UserId) -> Result<Option<User>, StoreError> {
    users::table
        .find(id.as_uuid())
        .select(UserRow::as_select())
        .get_result(conn)
        .await
        .optional()
        .map_err(from_diesel)?
        .map(User::try_from)
        .transpose()
}

/// Two round trips: the current status, locked, then the update. Reading the old status under
/// the row lock is what makes "did the status change" right when two updates race; a subquery in
/// the update itself would read its statement's snapshot, which may predate the row it updates.
/// `None` if no such user, else whether the status changed.
pub(crate) async fn update_user(conn: &mut Conn, user: &User) -> Result<Option<bool>, StoreError> {
    let Some(old) = users::table
        .find(user.id.as_uuid())
        .select(users::status)
        .for_update()
        .get_result::<String>(conn)
        .await
        .optional()
        .map_err(from_diesel)?
    else {
        return Ok(None);
    };
    // Email and created_at are not the caller's to change here.
    diesel::update(users::table.find(user.id.as_uuid()))
        .set((
            users::display_name.eq(user.name.as_str()),
            users::status.eq(user.status.as_str()),
            users::email_verified.eq(user.email_verified),
            users::metadata.eq(user.metadata.to_value()),
            users::updated_at.eq(user.updated_at),
        ))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(Some(old != user.status.as_str()))
}

/// Walks the membership primary key (tenant, user) in user order, joining each member's row.
/// The query is boxed because the filters are optional; diesel caches a boxed query's prepared
/// statement by its SQL text, so each of the few shapes is prepared once per connection.
pub(crate) async fn list_members(
    conn: &mut Conn,
    tenant: TenantId,
    filter: &UserFilter,
    after: Option<UserId>,
    limit: usize,
) -> Result<Vec<User>, StoreError> {
    let mut query = memberships::table
        .inner_join(users::table.on(users::id.eq(memberships::user_id)))
        .filter(memberships::tenant_id.eq(tenant.as_uuid()))
        .select(UserRow::as_select())
        .order(memberships::user_id)
        .limit(page_limit(limit))
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(memberships::user_id.gt(after.as_uuid()));
    }
    if let Some(prefix) = &filter.email_prefix {
        query = query.filter(users::email.like(like_prefix(prefix)));
    }
    if let Some(status) = filter.status {
        query = query.filter(users::status.eq(status.as_str()));
    }
    query
        .load(conn)
        .await
        .map_err(from_diesel)?
        .into_iter()
        .map(User::try_from)
        .collect()
}

/// A LIKE pattern matching strings that start with `prefix` literally: the pattern characters
/// `%` and `_`, and the escape character `\` itself (LIKE's default escape), are escaped.
fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

pub(crate) async fn insert_tenant(conn: &mut Conn, tenant: &Tenant) -> Result<(), StoreError> {
    diesel::insert_into(tenants::table)
        .values((
            tenants::id.eq(tenant.id.as_uuid()),
            tenants::name.eq(tenant.name.as_str()),
            tenants::parent_id.eq(tenant.parent.map(|p| p.as_uuid())),
            tenants::owner_id.eq(tenant.owner.as_uuid()),
            tenants::status.eq(tenant.status.as_str()),
            tenants::created_at.eq(tenant.created_at),
            tenants::updated_at.eq(tenant.updated_at),
            tenants::metadata.eq(tenant.metadata.to_value()),
        ))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(())
}

pub(crate) async fn tenant(conn: &mut Conn, id: TenantId) -> Result<Option<Tenant>, StoreError> {
    tenants::table
        .find(id.as_uuid())
        .select(TenantRow::as_select())
        .get_result(conn)
        .await
        .optional()
        .map_err(from_diesel)?
        .map(Tenant::try_from)
        .transpose()
}

pub(crate) async fn insert_membership(conn: &mut Conn, m: &Membership) -> Result<(), StoreError> {
    let roles: Vec<&str> = m.roles.iter().map(|r| r.as_str()).collect();
    diesel::insert_into(memberships::table)
        .values((
            memberships::tenant_id.eq(m.tenant.as_uuid()),
            memberships::user_id.eq(m.user.as_uuid()),
            memberships::roles.eq(roles),
            memberships::created_at.eq(m.created_at),
        ))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(())
}

/// Across tenants, so through `iam_memberships_of` (migration 10): row-level security shows a
/// transaction one tenant's memberships only.
pub(crate) async fn memberships_of(
    conn: &mut Conn,
    user: UserId,
) -> Result<Vec<Membership>, StoreError> {
    MembershipsOf {
        user: user.as_uuid(),
    }
    .load::<MembershipRow>(conn)
    .await
    .map_err(from_diesel)?
    .into_iter()
    .map(Membership::try_from)
    .collect()
}

diesel::define_sql_function! {
    /// Sets `iam.tenant_id` for the rest of the transaction (`is_local`).
    fn set_config(name: sql_types::Text, value: sql_types::Text, is_local: sql_types::Bool) -> sql_types::Text;
}

diesel::define_sql_function! {
    /// Migration 10: the tenants a user has sessions in (a set-returning function).
    fn iam_user_session_tenants(member: sql_types::Uuid) -> sql_types::Uuid;
}

diesel::define_sql_function! {
    /// Migration 10: sessions revoked since (a set-returning function).
    fn iam_revoked_sessions_since(since: sql_types::Timestamptz) -> sql_types::Uuid;
}

/// Makes the rest of the transaction act in `tenant` (row-level security's `iam.tenant_id`).
pub(crate) async fn act_in(conn: &mut Conn, tenant: TenantId) -> Result<(), StoreError> {
    diesel::select(set_config(
        "iam.tenant_id",
        tenant.as_uuid().to_string(),
        true,
    ))
    .execute(conn)
    .await
    .map_err(from_diesel)?;
    Ok(())
}

/// Makes the rest of the transaction act in the tenant of a session, in one statement with
/// the lookup (migration 10's `iam_session_tenant`); `None`, and no change, if there is no such
/// session.
pub(crate) async fn act_in_session_tenant(
    conn: &mut Conn,
    id: SessionId,
) -> Result<Option<TenantId>, StoreError> {
    Ok(ActInSessionTenant { id: id.as_uuid() }
        .get_result::<(Uuid, String)>(conn)
        .await
        .optional()
        .map_err(from_diesel)?
        .map(|(t, _)| TenantId::from_uuid(t)))
}

/// [`act_in_session_tenant`] for the session a refresh token belongs to.
pub(crate) async fn act_in_refresh_tenant(
    conn: &mut Conn,
    token: &RefreshTokenHash,
) -> Result<Option<TenantId>, StoreError> {
    Ok(ActInRefreshTenant {
        token: *token.as_bytes(),
    }
    .get_result::<(Uuid, String)>(conn)
    .await
    .optional()
    .map_err(from_diesel)?
    .map(|(t, _)| TenantId::from_uuid(t)))
}

pub(crate) async fn user_session_tenants(
    conn: &mut Conn,
    user: UserId,
) -> Result<Vec<TenantId>, StoreError> {
    Ok(diesel::select(iam_user_session_tenants(user.as_uuid()))
        .load::<Uuid>(conn)
        .await
        .map_err(from_diesel)?
        .into_iter()
        .map(TenantId::from_uuid)
        .collect())
}

pub(crate) async fn memberships_in(
    conn: &mut Conn,
    tenant: TenantId,
    users: &[UserId],
) -> Result<Vec<Membership>, StoreError> {
    let users: Vec<Uuid> = users.iter().map(|u| u.as_uuid()).collect();
    memberships::table
        .filter(memberships::tenant_id.eq(tenant.as_uuid()))
        .filter(memberships::user_id.eq_any(users))
        .select(MembershipRow::as_select())
        .load(conn)
        .await
        .map_err(from_diesel)?
        .into_iter()
        .map(Membership::try_from)
        .collect()
}

pub(crate) async fn membership(
    conn: &mut Conn,
    user: UserId,
    tenant: TenantId,
) -> Result<Option<Membership>, StoreError> {
    memberships::table
        .find((tenant.as_uuid(), user.as_uuid()))
        .select(MembershipRow::as_select())
        .get_result(conn)
        .await
        .optional()
        .map_err(from_diesel)?
        .map(Membership::try_from)
        .transpose()
}

/// Two round trips, for the reason given at [`update_user`]. `None` if no such tenant, else
/// whether its status changed.
pub(crate) async fn set_tenant_status(
    conn: &mut Conn,
    id: TenantId,
    status: TenantStatus,
    at: Timestamp,
) -> Result<Option<bool>, StoreError> {
    let Some(old) = tenants::table
        .find(id.as_uuid())
        .select(tenants::status)
        .for_no_key_update()
        .get_result::<String>(conn)
        .await
        .optional()
        .map_err(from_diesel)?
    else {
        return Ok(None);
    };
    diesel::update(tenants::table.find(id.as_uuid()))
        .set((
            tenants::status.eq(status.as_str()),
            tenants::updated_at.eq(at),
        ))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(Some(old != status.as_str()))
}

pub(crate) async fn ancestors(conn: &mut Conn, id: TenantId) -> Result<Vec<TenantId>, StoreError> {
    Ok(tenant_closure::table
        .filter(tenant_closure::descendant_id.eq(id.as_uuid()))
        .filter(tenant_closure::depth.gt(0))
        .order(tenant_closure::depth)
        .select(tenant_closure::ancestor_id)
        .load::<Uuid>(conn)
        .await
        .map_err(from_diesel)?
        .into_iter()
        .map(TenantId::from_uuid)
        .collect())
}

/// One statement: the closure rows of `id` by the descendant index, then each tenant by its
/// key (see [`Lineage`]).
pub(crate) async fn lineage(conn: &mut Conn, id: TenantId) -> Result<Vec<Tenant>, StoreError> {
    Lineage { id: id.as_uuid() }
        .load::<TenantRow>(conn)
        .await
        .map_err(from_diesel)?
        .into_iter()
        .map(Tenant::try_from)
        .collect()
}

pub(crate) async fn is_descendant(
    conn: &mut Conn,
    ancestor: TenantId,
    descendant: TenantId,
) -> Result<bool, StoreError> {
    diesel::select(diesel::dsl::exists(
        tenant_closure::table
            .inner_join(tenants::table.on(tenants::id.eq(tenant_closure::descendant_id)))
            .filter(tenant_closure::ancestor_id.eq(ancestor.as_uuid()))
            .filter(tenant_closure::descendant_id.eq(descendant.as_uuid()))
            .filter(tenant_closure::depth.gt(0))
            .filter(tenants::status.ne(TenantStatus::Deleted.as_str())),
    ))
    .get_result(conn)
    .await
    .map_err(from_diesel)
}

/// A page bound: `after` or, for the first page, the nil id (below every UUIDv7), so that both
/// cases share one prepared statement.
fn after_id(after: Option<TenantId>) -> Uuid {
    after.map_or(Uuid::nil(), |a| a.as_uuid())
}

/// A page size as a `LIMIT`.
fn page_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(crate) async fn children(
    conn: &mut Conn,
    parent: TenantId,
    after: Option<TenantId>,
    limit: usize,
) -> Result<Vec<Tenant>, StoreError> {
    tenants::table
        .filter(tenants::parent_id.eq(parent.as_uuid()))
        .filter(tenants::status.ne(TenantStatus::Deleted.as_str()))
        .filter(tenants::id.gt(after_id(after)))
        .order(tenants::id)
        .limit(page_limit(limit))
        .select(TenantRow::as_select())
        .load(conn)
        .await
        .map_err(from_diesel)?
        .into_iter()
        .map(Tenant::try_from)
        .collect()
}

pub(crate) async fn descendants(
    conn: &mut Conn,
    root: TenantId,
    after: Option<TenantId>,
    limit: usize,
) -> Result<Vec<Tenant>, StoreError> {
    tenant_closure::table
        .inner_join(tenants::table.on(tenants::id.eq(tenant_closure::descendant_id)))
        .filter(tenant_closure::ancestor_id.eq(root.as_uuid()))
        .filter(tenant_closure::depth.gt(0))
        .filter(tenants::status.ne(TenantStatus::Deleted.as_str()))
        .filter(tenants::id.gt(after_id(after)))
        .order(tenants::id)
        .limit(page_limit(limit))
        .select(TenantRow::as_select())
        .load(conn)
        .await
        .map_err(from_diesel)?
        .into_iter()
        .map(Tenant::try_from)
        .collect()
}

pub(crate) async fn update_tenant(conn: &mut Conn, tenant: &Tenant) -> Result<bool, StoreError> {
    let n = diesel::update(tenants::table.find(tenant.id.as_uuid()))
        .set((
            tenants::name.eq(tenant.name.as_str()),
            tenants::owner_id.eq(tenant.owner.as_uuid()),
            tenants::metadata.eq(tenant.metadata.to_value()),
            tenants::updated_at.eq(tenant.updated_at),
        ))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(n == 1)
}

diesel::define_sql_function! {
    /// The closure table's lock (see migration 00000000000009): taken here before the cycle
    /// check, so that the check and the move see the same tree.
    fn pg_advisory_xact_lock(key: sql_types::BigInt);
}

diesel::define_sql_function! {
    fn iam_tenant_tree_lock_key() -> sql_types::BigInt;
}

/// Four round trips: the tree lock, the moved row, one closure lookup that says both whether the
/// new parent exists and whether it is the tenant or lies below it (a cycle), then the update
/// (whose trigger rewrites the subtree's closure rows). `Err` if refused, else whether the
/// parent changed.
pub(crate) async fn move_tenant(
    conn: &mut Conn,
    id: TenantId,
    parent: Option<TenantId>,
    at: Timestamp,
) -> Result<Result<bool, iam_ports::Move>, StoreError> {
    lock_tree(conn).await?;
    let Some(current) = tenants::table
        .find(id.as_uuid())
        .select(tenants::parent_id)
        .for_no_key_update()
        .get_result::<Option<Uuid>>(conn)
        .await
        .optional()
        .map_err(from_diesel)?
    else {
        return Ok(Err(iam_ports::Move::NotFound));
    };
    if let Some(p) = parent {
        // The parent's own row (depth 0) says it exists; a row from the moved tenant says the
        // parent lies in its subtree.
        let found: Vec<Uuid> = tenant_closure::table
            .filter(tenant_closure::descendant_id.eq(p.as_uuid()))
            .filter(tenant_closure::ancestor_id.eq_any([id.as_uuid(), p.as_uuid()]))
            .select(tenant_closure::ancestor_id)
            .load(conn)
            .await
            .map_err(from_diesel)?;
        if found.contains(&id.as_uuid()) {
            return Ok(Err(iam_ports::Move::Cycle));
        }
        if found.is_empty() {
            return Ok(Err(iam_ports::Move::NotFound));
        }
    }
    let target = parent.map(|p| p.as_uuid());
    if current == target {
        return Ok(Ok(false));
    }
    diesel::update(tenants::table.find(id.as_uuid()))
        .set((tenants::parent_id.eq(target), tenants::updated_at.eq(at)))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(Ok(true))
}

/// The tree lock, exclusively (see [`move_tenant`]).
pub(crate) async fn lock_tree(conn: &mut Conn) -> Result<(), StoreError> {
    diesel::select(pg_advisory_xact_lock(iam_tenant_tree_lock_key()))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(())
}

pub(crate) async fn delete_tenant_memberships(
    conn: &mut Conn,
    tenant: TenantId,
) -> Result<u64, StoreError> {
    let n = diesel::delete(memberships::table.filter(memberships::tenant_id.eq(tenant.as_uuid())))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(n as u64)
}

pub(crate) async fn delete_membership(
    conn: &mut Conn,
    tenant: TenantId,
    user: UserId,
) -> Result<bool, StoreError> {
    let n = diesel::delete(memberships::table.find((tenant.as_uuid(), user.as_uuid())))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(n == 1)
}

/// Two round trips, like [`revoke_user_sessions`]: the sessions, then the live tokens of every
/// revoked session in the tenant (of the user, if given).
pub(crate) async fn revoke_tenant_sessions(
    conn: &mut Conn,
    tenant: TenantId,
    user: Option<UserId>,
    at: Timestamp,
) -> Result<Vec<SessionId>, StoreError> {
    let user = user.map(|u| u.as_uuid());
    let revoked = diesel::update(
        sessions::table
            .filter(sessions::tenant_id.eq(tenant.as_uuid()))
            .filter(sessions::revoked_at.is_null())
            .filter(
                sessions::user_id
                    .nullable()
                    .eq(user)
                    .or(user.is_none().into_sql::<sql_types::Bool>()),
            ),
    )
    .set(sessions::revoked_at.eq(at))
    .returning(sessions::id)
    .get_results::<Uuid>(conn)
    .await
    .map_err(from_diesel)?;
    if !revoked.is_empty() {
        diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::session_id.eq_any(&revoked))
                .filter(refresh_tokens::status.eq(RefreshStatus::Live.as_str())),
        )
        .set(refresh_tokens::status.eq(RefreshStatus::Revoked.as_str()))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    }
    let mut ids: Vec<SessionId> = revoked.into_iter().map(SessionId::from_uuid).collect();
    ids.sort();
    Ok(ids)
}

/// Two round trips: the session, then its first token (the token's foreign key needs the
/// session, and sign-in already pays for a password hash that dwarfs either).
pub(crate) async fn insert_session(
    conn: &mut Conn,
    session: &Session,
    first: &NewRefreshToken,
) -> Result<(), StoreError> {
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(session.id.as_uuid()),
            sessions::user_id.eq(session.user.as_uuid()),
            sessions::tenant_id.eq(session.tenant.as_uuid()),
            sessions::amr.eq(&session.amr),
            sessions::auth_time.eq(session.auth_time),
            sessions::created_at.eq(session.created_at),
            sessions::revoked_at.eq(session.revoked_at),
        ))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::token_hash.eq(first.hash.as_bytes().as_slice()),
            refresh_tokens::session_id.eq(session.id.as_uuid()),
            refresh_tokens::status.eq(RefreshStatus::Live.as_str()),
            refresh_tokens::issued_at.eq(first.issued_at),
            refresh_tokens::expires_at.eq(first.expires_at),
        ))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(())
}

/// One round trip when the presented token is live: [`SpendAndReplace`]. Otherwise one more to
/// find out why, and two more to revoke the family on reuse. The flag says whether this call
/// revoked the session (a reuse of an already revoked family does not).
pub(crate) async fn rotate_refresh(
    conn: &mut Conn,
    presented: &RefreshTokenHash,
    next: &NewRefreshToken,
) -> Result<(Rotation, bool), StoreError> {
    let now = next.issued_at;
    // A second pass is only needed if the presented token was committed by another transaction
    // between the rotation statement's snapshot and the lookup's; see below.
    for _ in 0..2 {
        let spent = SpendAndReplace {
            presented: *presented.as_bytes(),
            next: *next.hash.as_bytes(),
            now,
            expires_at: next.expires_at,
        }
        .get_result::<SessionRow>(conn)
        .await
        .optional()
        .map_err(from_diesel)?;
        if let Some(row) = spent {
            return Ok((Rotation::Rotated(row.into()), false));
        }

        // The lookup runs under a fresh snapshot (READ COMMITTED), so it sees the outcome of any
        // rotation the statement above waited for: a concurrent winner's token is `rotated` now.
        let Some(state) = refresh_tokens::table
            .inner_join(sessions::table)
            .filter(refresh_tokens::token_hash.eq(presented.as_bytes().as_slice()))
            .select((
                refresh_tokens::session_id,
                refresh_tokens::status,
                refresh_tokens::expires_at,
                sessions::revoked_at,
            ))
            .get_result::<RefreshStateRow>(conn)
            .await
            .optional()
            .map_err(from_diesel)?
        else {
            return Ok((Rotation::Unknown, false));
        };
        let status = RefreshStatus::parse(&state.status)
            .ok_or_else(|| invalid("refresh_tokens", "status"))?;
        let session = SessionId::from_uuid(state.session_id);
        // A live token of a revoked family is a straggler: a rotation that committed while the
        // revocation's statement could not see its new token. The family is dead all the same.
        if status != RefreshStatus::Live || state.session_revoked_at.is_some() {
            let revoked = revoke_session(conn, session, now).await?;
            return Ok((Rotation::Reused(session), revoked.session));
        }
        if state.expires_at <= now {
            return Ok((Rotation::Expired, false));
        }
        // Live and unexpired: it appeared after the rotation's snapshot. Try once more.
    }
    Ok((Rotation::Unknown, false))
}

/// One round trip, whatever the outcome: the migration's `iam_refresh_session` function does
/// what [`rotate_refresh`] followed by reads of the session's user, membership and tenant does,
/// and publishes a reuse's revocation itself. Meant for a connection outside any transaction, so
/// that the statement commits on its own (it is correct inside one too, but then the revocation
/// is only heard when that transaction commits).
pub(crate) async fn refresh_session(
    conn: &mut Conn,
    presented: &RefreshTokenHash,
    next: &NewRefreshToken,
) -> Result<Refreshed, StoreError> {
    let (outcome, family, session, user, membership, tenant) = RefreshSession {
        presented: *presented.as_bytes(),
        next: *next.hash.as_bytes(),
        now: next.issued_at,
        expires_at: next.expires_at,
    }
    .get_result::<RefreshSessionRow>(conn)
    .await
    .map_err(from_diesel)?;
    let missing_session = || invalid("iam_refresh_session", "s_id");
    Ok(match outcome.as_str() {
        "rotated" => Refreshed::Rotated(Box::new(Standing {
            session: session.ok_or_else(missing_session)?.into(),
            user: user.map(User::try_from).transpose()?,
            membership: membership.map(Membership::try_from).transpose()?,
            tenant: tenant.map(Tenant::try_from).transpose()?,
        })),
        "reused" => Refreshed::Reused(SessionId::from_uuid(family.ok_or_else(missing_session)?)),
        "expired" => Refreshed::Expired,
        "blocked" => Refreshed::Blocked,
        "unknown" => Refreshed::Unknown,
        _ => return Err(invalid("iam_refresh_session", "outcome")),
    })
}

pub(crate) async fn session(conn: &mut Conn, id: SessionId) -> Result<Option<Session>, StoreError> {
    Ok(sessions::table
        .find(id.as_uuid())
        .select(SessionRow::as_select())
        .get_result(conn)
        .await
        .optional()
        .map_err(from_diesel)?
        .map(Session::from))
}

/// What a revocation changed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Revoked {
    /// The session was unrevoked and is revoked now: news for the revocation feed.
    pub session: bool,
    /// Anything changed, the session or a straggling live token.
    pub anything: bool,
}

/// Two round trips. Sets `revoked_at` if it is unset and revokes every live token of the
/// family. Tokens are revoked even when the session already was: a rotation racing an earlier
/// revocation can leave a live straggler behind.
pub(crate) async fn revoke_session(
    conn: &mut Conn,
    id: SessionId,
    at: Timestamp,
) -> Result<Revoked, StoreError> {
    // Session first, then tokens: every revocation takes the locks in this order.
    let session = diesel::update(
        sessions::table
            .find(id.as_uuid())
            .filter(sessions::revoked_at.is_null()),
    )
    .set(sessions::revoked_at.eq(at))
    .execute(conn)
    .await
    .map_err(from_diesel)?;
    let tokens = diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::session_id.eq(id.as_uuid()))
            .filter(refresh_tokens::status.eq(RefreshStatus::Live.as_str())),
    )
    .set(refresh_tokens::status.eq(RefreshStatus::Revoked.as_str()))
    .execute(conn)
    .await
    .map_err(from_diesel)?;
    Ok(Revoked {
        session: session > 0,
        anything: session + tokens > 0,
    })
}

/// Two round trips, sessions first like [`revoke_session`]. Returns the sessions this call
/// revoked: every unrevoked one of the user but `except`. Then the live tokens of all the
/// user's revoked sessions are swept, not only of those: any live token of a revoked family is
/// a straggler. The sweep goes by `revoked_at`, not by "all but `except`", so that it spares the
/// kept session's token and any session committed since the first statement's snapshot.
pub(crate) async fn revoke_user_sessions(
    conn: &mut Conn,
    user: UserId,
    except: Option<SessionId>,
    at: Timestamp,
) -> Result<Vec<SessionId>, StoreError> {
    // `IS DISTINCT FROM` a NULL keeps every row, so both cases share one prepared statement.
    let revoked = diesel::update(
        sessions::table
            .filter(sessions::user_id.eq(user.as_uuid()))
            .filter(sessions::revoked_at.is_null())
            .filter(
                sessions::id
                    .nullable()
                    .is_distinct_from(except.map(|id| id.as_uuid())),
            ),
    )
    .set(sessions::revoked_at.eq(at))
    .returning(sessions::id)
    .get_results::<Uuid>(conn)
    .await
    .map_err(from_diesel)?;
    diesel::update(
        refresh_tokens::table
            .filter(
                refresh_tokens::session_id.eq_any(
                    sessions::table
                        .filter(sessions::user_id.eq(user.as_uuid()))
                        .filter(sessions::revoked_at.is_not_null())
                        .select(sessions::id),
                ),
            )
            .filter(refresh_tokens::status.eq(RefreshStatus::Live.as_str())),
    )
    .set(refresh_tokens::status.eq(RefreshStatus::Revoked.as_str()))
    .execute(conn)
    .await
    .map_err(from_diesel)?;
    Ok(revoked.into_iter().map(SessionId::from_uuid).collect())
}

pub(crate) async fn mfa(conn: &mut Conn, user: UserId) -> Result<Option<MfaEnrolment>, StoreError> {
    Ok(mfa_enrolments::table
        .find(user.as_uuid())
        .select(MfaEnrolmentRow::as_select())
        .get_result(conn)
        .await
        .optional()
        .map_err(from_diesel)?
        .map(MfaEnrolment::from))
}

/// Creates or replaces the enrolment, every field from `enrolment`.
pub(crate) async fn put_mfa(conn: &mut Conn, enrolment: &MfaEnrolment) -> Result<(), StoreError> {
    use diesel::upsert::excluded;

    diesel::insert_into(mfa_enrolments::table)
        .values((
            mfa_enrolments::user_id.eq(enrolment.user.as_uuid()),
            mfa_enrolments::sealed_secret.eq(enrolment.sealed_secret.as_slice()),
            mfa_enrolments::created_at.eq(enrolment.created_at),
            mfa_enrolments::confirmed_at.eq(enrolment.confirmed_at),
            mfa_enrolments::last_used_step.eq(enrolment.last_used_step),
        ))
        .on_conflict(mfa_enrolments::user_id)
        .do_update()
        .set((
            mfa_enrolments::sealed_secret.eq(excluded(mfa_enrolments::sealed_secret)),
            mfa_enrolments::created_at.eq(excluded(mfa_enrolments::created_at)),
            mfa_enrolments::confirmed_at.eq(excluded(mfa_enrolments::confirmed_at)),
            mfa_enrolments::last_used_step.eq(excluded(mfa_enrolments::last_used_step)),
        ))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(())
}

/// Two round trips: the enrolment, then the codes (parent before child, as revocations take
/// sessions before tokens). Whether there was an enrolment.
pub(crate) async fn delete_mfa(conn: &mut Conn, user: UserId) -> Result<bool, StoreError> {
    let enrolments = diesel::delete(mfa_enrolments::table.find(user.as_uuid()))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user.as_uuid())))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(enrolments > 0)
}

/// The replay guard. Concurrent calls for one user queue on the enrolment's row lock; under
/// READ COMMITTED a waiter re-checks the condition against the row the winner committed, so of
/// two presentations of one code exactly one gets `true`.
pub(crate) async fn advance_totp_step(
    conn: &mut Conn,
    user: UserId,
    step: i64,
) -> Result<bool, StoreError> {
    let advanced = diesel::update(
        mfa_enrolments::table.find(user.as_uuid()).filter(
            mfa_enrolments::last_used_step
                .is_null()
                .or(mfa_enrolments::last_used_step.lt(step)),
        ),
    )
    .set(mfa_enrolments::last_used_step.eq(step))
    .execute(conn)
    .await
    .map_err(from_diesel)?;
    Ok(advanced > 0)
}

/// Two round trips: the old codes go, then the new ones arrive in one multi-row insert. A
/// multi-row insert is not a cached statement in diesel (its text depends on the row count);
/// codes are replaced rarely enough for the extra parse not to matter. An empty set costs a
/// lookup instead, so that an unknown user fails as the insert's foreign key would make it.
pub(crate) async fn replace_recovery_codes(
    conn: &mut Conn,
    user: UserId,
    codes: &[StoredRecoveryCode],
) -> Result<(), StoreError> {
    diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user.as_uuid())))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    if codes.is_empty() {
        let exists = diesel::select(diesel::dsl::exists(users::table.find(user.as_uuid())))
            .get_result::<bool>(conn)
            .await
            .map_err(from_diesel)?;
        return if exists {
            Ok(())
        } else {
            Err(StoreError::Unexpected(Box::new(Missing("user"))))
        };
    }
    let rows: Vec<_> = codes
        .iter()
        .map(|c| {
            (
                recovery_codes::user_id.eq(user.as_uuid()),
                recovery_codes::lookup.eq(c.lookup.as_str()),
                recovery_codes::hash.eq(c.hash.as_str()),
                recovery_codes::created_at.eq(c.created_at),
                recovery_codes::used_at.eq(c.used_at),
            )
        })
        .collect();
    diesel::insert_into(recovery_codes::table)
        .values(rows)
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(())
}

/// Every code of the user, in lookup order.
pub(crate) async fn recovery_codes(
    conn: &mut Conn,
    user: UserId,
) -> Result<Vec<StoredRecoveryCode>, StoreError> {
    Ok(recovery_codes::table
        .filter(recovery_codes::user_id.eq(user.as_uuid()))
        .order(recovery_codes::lookup)
        .select(RecoveryCodeRow::as_select())
        .load(conn)
        .await
        .map_err(from_diesel)?
        .into_iter()
        .map(StoredRecoveryCode::from)
        .collect())
}

/// Single use under concurrency for the reason given at [`advance_totp_step`].
pub(crate) async fn use_recovery_code(
    conn: &mut Conn,
    user: UserId,
    lookup: &str,
    at: Timestamp,
) -> Result<bool, StoreError> {
    let used = diesel::update(
        recovery_codes::table
            .find((user.as_uuid(), lookup))
            .filter(recovery_codes::used_at.is_null()),
    )
    .set(recovery_codes::used_at.eq(at))
    .execute(conn)
    .await
    .map_err(from_diesel)?;
    Ok(used > 0)
}

pub(crate) async fn insert_mfa_challenge(
    conn: &mut Conn,
    challenge: &MfaChallenge,
) -> Result<(), StoreError> {
    let attempts = i32::try_from(challenge.attempts).map_err(|_| {
        StoreError::Unexpected(Box::new(OutOfRange {
            table: "mfa_challenges",
            column: "attempts",
        }))
    })?;
    diesel::insert_into(mfa_challenges::table)
        .values((
            mfa_challenges::token_hash.eq(challenge.token_hash.as_slice()),
            mfa_challenges::user_id.eq(challenge.user.as_uuid()),
            mfa_challenges::tenant_id.eq(challenge.tenant.as_uuid()),
            mfa_challenges::amr.eq(&challenge.amr),
            mfa_challenges::expires_at.eq(challenge.expires_at),
            mfa_challenges::attempts.eq(attempts),
        ))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(())
}

/// One statement: spends an attempt of a live challenge and returns it as it now stands.
/// Concurrent takes queue on the row lock and each re-checks `attempts < max` against the row
/// the one before committed, so no more than `max_attempts` ever succeed.
pub(crate) async fn take_mfa_attempt(
    conn: &mut Conn,
    token_hash: &[u8; 32],
    now: Timestamp,
    max_attempts: u32,
) -> Result<Option<MfaChallenge>, StoreError> {
    // The column is an integer; a cap beyond it caps nothing the column can hold.
    let max = i32::try_from(max_attempts).unwrap_or(i32::MAX);
    diesel::update(
        mfa_challenges::table
            .find(token_hash.as_slice())
            .filter(mfa_challenges::expires_at.gt(now))
            .filter(mfa_challenges::attempts.lt(max)),
    )
    .set(mfa_challenges::attempts.eq(mfa_challenges::attempts + 1))
    .returning(MfaChallengeRow::as_returning())
    .get_result(conn)
    .await
    .optional()
    .map_err(from_diesel)?
    .map(MfaChallenge::try_from)
    .transpose()
}

/// Whether there was such a challenge, live or not.
pub(crate) async fn consume_mfa_challenge(
    conn: &mut Conn,
    token_hash: &[u8; 32],
) -> Result<bool, StoreError> {
    let deleted = diesel::delete(mfa_challenges::table.find(token_hash.as_slice()))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(deleted > 0)
}

/// Deletes challenges and tenant selections that expired before `before`; how many went.
/// Two statements.
pub(crate) async fn purge_mfa_challenges(
    conn: &mut Conn,
    before: Timestamp,
) -> Result<u64, StoreError> {
    let deleted =
        diesel::delete(mfa_challenges::table.filter(mfa_challenges::expires_at.le(before)))
            .execute(conn)
            .await
            .map_err(from_diesel)?;
    let selections =
        diesel::delete(tenant_selections::table.filter(tenant_selections::expires_at.le(before)))
            .execute(conn)
            .await
            .map_err(from_diesel)?;
    Ok(u64::try_from(deleted + selections).unwrap_or(0))
}

pub(crate) async fn insert_selection(
    conn: &mut Conn,
    s: &iam_domain::TenantSelection,
) -> Result<(), StoreError> {
    diesel::insert_into(tenant_selections::table)
        .values((
            tenant_selections::token_hash.eq(s.token_hash.as_slice()),
            tenant_selections::user_id.eq(s.user.as_uuid()),
            tenant_selections::amr.eq(&s.amr),
            tenant_selections::expires_at.eq(s.expires_at),
        ))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(())
}

/// One statement: deleting the live row is what spends it, so of two concurrent takes one wins.
pub(crate) async fn take_selection(
    conn: &mut Conn,
    token_hash: &[u8; 32],
    now: Timestamp,
) -> Result<Option<iam_domain::TenantSelection>, StoreError> {
    let row = diesel::delete(
        tenant_selections::table
            .filter(tenant_selections::token_hash.eq(token_hash.as_slice()))
            .filter(tenant_selections::expires_at.gt(now)),
    )
    .returning((
        tenant_selections::user_id,
        tenant_selections::amr,
        tenant_selections::expires_at,
    ))
    .get_result::<(Uuid, Vec<String>, Timestamp)>(conn)
    .await
    .optional()
    .map_err(from_diesel)?;
    Ok(
        row.map(|(user, amr, expires_at)| iam_domain::TenantSelection {
            token_hash: *token_hash,
            user: UserId::from_uuid(user),
            amr,
            expires_at,
        }),
    )
}

/// Six statements, meant for one REPEATABLE READ transaction so that they agree.
pub(crate) async fn revocation_snapshot(
    conn: &mut Conn,
    sessions_since: Timestamp,
) -> Result<RevocationSnapshot, StoreError> {
    // Sessions and roles of every tenant: through migration 10's functions, past row-level
    // security.
    let revoked_sessions = diesel::select(iam_revoked_sessions_since(sessions_since))
        .load::<Uuid>(conn)
        .await
        .map_err(from_diesel)?
        .into_iter()
        .map(SessionId::from_uuid)
        .collect();
    let inactive_users = users::table
        .filter(users::status.ne(UserStatus::Active.as_str()))
        .select((users::id, users::status))
        .load::<(Uuid, String)>(conn)
        .await
        .map_err(from_diesel)?
        .into_iter()
        .map(|(id, status)| {
            let status = UserStatus::parse(&status).ok_or_else(|| invalid("users", "status"))?;
            Ok((UserId::from_uuid(id), status))
        })
        .collect::<Result<_, StoreError>>()?;
    let blocked_tenants = BlockedTenants
        .load::<Uuid>(conn)
        .await
        .map_err(from_diesel)?
        .into_iter()
        .map(TenantId::from_uuid)
        .collect();
    let custom_roles = AllCustomRoles
        .load::<RoleRow>(conn)
        .await
        .map_err(from_diesel)?
        .into_iter()
        .map(Role::try_from)
        .collect::<Result<_, _>>()?;
    let permissions = registered_permissions(conn).await?;
    let claims = claims(conn).await?;
    Ok(RevocationSnapshot {
        claims,
        revoked_sessions,
        inactive_users,
        blocked_tenants,
        custom_roles,
        permissions,
    })
}

fn role_texts(role: &Role) -> Vec<&str> {
    role.permissions.iter().map(|p| p.as_str()).collect()
}

pub(crate) async fn insert_role(conn: &mut Conn, role: &Role) -> Result<(), StoreError> {
    diesel::insert_into(roles::table)
        .values((
            roles::id.eq(role.id.as_uuid()),
            roles::tenant_id.eq(role.tenant.as_uuid()),
            roles::name.eq(role.name.as_str()),
            roles::description.eq(&role.description),
            roles::permissions.eq(role_texts(role)),
            roles::named_at.eq(role.named_at),
            roles::created_at.eq(role.created_at),
            roles::updated_at.eq(role.updated_at),
        ))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(())
}

pub(crate) async fn custom_roles(
    conn: &mut Conn,
    tenant: TenantId,
) -> Result<Vec<Role>, StoreError> {
    roles::table
        .filter(roles::tenant_id.eq(tenant.as_uuid()))
        .order(roles::name)
        .select(RoleRow::as_select())
        .load(conn)
        .await
        .map_err(from_diesel)?
        .into_iter()
        .map(Role::try_from)
        .collect()
}

pub(crate) async fn custom_role(
    conn: &mut Conn,
    tenant: TenantId,
    id: RoleId,
) -> Result<Option<Role>, StoreError> {
    roles::table
        .filter(roles::tenant_id.eq(tenant.as_uuid()))
        .filter(roles::id.eq(id.as_uuid()))
        .select(RoleRow::as_select())
        .get_result(conn)
        .await
        .optional()
        .map_err(from_diesel)?
        .map(Role::try_from)
        .transpose()
}

/// Two statements when the name changes: the role, then the memberships holding the old name.
pub(crate) async fn update_role(
    conn: &mut Conn,
    role: &Role,
    old_name: &RoleName,
) -> Result<bool, StoreError> {
    let updated = diesel::update(
        roles::table
            .filter(roles::tenant_id.eq(role.tenant.as_uuid()))
            .filter(roles::id.eq(role.id.as_uuid())),
    )
    .set((
        roles::name.eq(role.name.as_str()),
        roles::description.eq(&role.description),
        roles::permissions.eq(role_texts(role)),
        roles::named_at.eq(role.named_at),
        roles::updated_at.eq(role.updated_at),
    ))
    .execute(conn)
    .await
    .map_err(from_diesel)?;
    if updated == 0 {
        return Ok(false);
    }
    if &role.name != old_name {
        replace_role_name(conn, role.tenant, old_name, Some(&role.name)).await?;
    }
    Ok(true)
}

/// Two statements: the role, then the memberships holding it.
pub(crate) async fn delete_role(
    conn: &mut Conn,
    tenant: TenantId,
    role: &Role,
) -> Result<bool, StoreError> {
    let deleted = diesel::delete(
        roles::table
            .filter(roles::tenant_id.eq(tenant.as_uuid()))
            .filter(roles::id.eq(role.id.as_uuid())),
    )
    .execute(conn)
    .await
    .map_err(from_diesel)?;
    if deleted == 0 {
        return Ok(false);
    }
    replace_role_name(conn, tenant, &role.name, None).await?;
    Ok(true)
}

/// Rewrites one role name in the roles of every membership of the tenant that holds it. Rare
/// administrative writes, so `sql_query` (not prepared once) is good enough.
async fn replace_role_name(
    conn: &mut Conn,
    tenant: TenantId,
    old: &RoleName,
    new: Option<&RoleName>,
) -> Result<(), StoreError> {
    diesel::sql_query(
        "UPDATE memberships SET roles = CASE WHEN $3::text IS NULL OR $3 = ANY(roles) \
         THEN array_remove(roles, $2) ELSE array_replace(roles, $2, $3) END \
         WHERE tenant_id = $1 AND $2 = ANY(roles)",
    )
    .bind::<sql_types::Uuid, _>(tenant.as_uuid())
    .bind::<sql_types::Text, _>(old.as_str())
    .bind::<sql_types::Nullable<sql_types::Text>, _>(new.map(RoleName::as_str))
    .execute(conn)
    .await
    .map_err(from_diesel)?;
    Ok(())
}

pub(crate) async fn set_membership_roles(
    conn: &mut Conn,
    tenant: TenantId,
    user: UserId,
    names: &[RoleName],
) -> Result<bool, StoreError> {
    let names: Vec<&str> = names.iter().map(RoleName::as_str).collect();
    let updated = diesel::update(memberships::table.find((tenant.as_uuid(), user.as_uuid())))
        .set(memberships::roles.eq(names))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(updated > 0)
}

pub(crate) async fn count_active_holders(
    conn: &mut Conn,
    tenant: TenantId,
    role: &RoleName,
) -> Result<u64, StoreError> {
    let n: i64 = memberships::table
        .inner_join(users::table.on(users::id.eq(memberships::user_id)))
        .filter(memberships::tenant_id.eq(tenant.as_uuid()))
        .filter(memberships::roles.contains(vec![role.as_str()]))
        .filter(users::status.eq(UserStatus::Active.as_str()))
        .count()
        .get_result(conn)
        .await
        .map_err(from_diesel)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// `FOR NO KEY UPDATE`: it serialises the checks made under it (owners, children) without
/// blocking the key-share locks that foreign keys to the tenant take (a child's insert, the
/// closure rows of a move), which would otherwise deadlock with a move holding the tree lock.
pub(crate) async fn lock_tenant(conn: &mut Conn, tenant: TenantId) -> Result<bool, StoreError> {
    Ok(tenants::table
        .find(tenant.as_uuid())
        .select(tenants::id)
        .for_no_key_update()
        .get_result::<Uuid>(conn)
        .await
        .optional()
        .map_err(from_diesel)?
        .is_some())
}

pub(crate) async fn register_permission(
    conn: &mut Conn,
    def: &PermissionDef,
) -> Result<(), StoreError> {
    diesel::insert_into(permissions::table)
        .values((
            permissions::name.eq(def.name.as_str()),
            permissions::description.eq(&def.description),
        ))
        .on_conflict(permissions::name)
        .do_update()
        .set(permissions::description.eq(&def.description))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(())
}

pub(crate) async fn registered_permissions(
    conn: &mut Conn,
) -> Result<Vec<PermissionDef>, StoreError> {
    permissions::table
        .order(permissions::name)
        .select(PermissionRow::as_select())
        .load(conn)
        .await
        .map_err(from_diesel)?
        .into_iter()
        .map(PermissionDef::try_from)
        .collect()
}

pub(crate) async fn root_tenant(conn: &mut Conn) -> Result<Option<TenantId>, StoreError> {
    Ok(platform::table
        .select(platform::root_tenant_id)
        .first::<Uuid>(conn)
        .await
        .optional()
        .map_err(from_diesel)?
        .map(TenantId::from_uuid))
}

pub(crate) async fn set_root_tenant(conn: &mut Conn, tenant: TenantId) -> Result<bool, StoreError> {
    let inserted = diesel::insert_into(platform::table)
        .values((
            platform::singleton.eq(true),
            platform::root_tenant_id.eq(tenant.as_uuid()),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(inserted > 0)
}

pub(crate) async fn append_audit(conn: &mut Conn, e: &AuditEvent) -> Result<(), StoreError> {
    let (kind, user) = match e.actor {
        AuditActor::User(id) => ("user", Some(id.as_uuid())),
        AuditActor::Service => ("service", None),
    };
    diesel::insert_into(audit_events::table)
        .values((
            audit_events::id.eq(e.id.0),
            audit_events::at.eq(e.at),
            audit_events::actor_user_id.eq(user),
            audit_events::actor_kind.eq(kind),
            audit_events::tenant_id.eq(e.tenant.as_uuid()),
            audit_events::action.eq(&e.action),
            audit_events::target.eq(&e.target),
            audit_events::request_id.eq(e.request_id.as_deref()),
            audit_events::outcome.eq(e.outcome.as_str()),
        ))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(())
}

pub(crate) async fn insert_claim(
    conn: &mut Conn,
    c: &iam_domain::claims::ClaimDefinition,
) -> Result<(), StoreError> {
    use iam_domain::claims::{ClaimScope, ClaimSource};
    let (tenant, descendants) = match c.scope {
        ClaimScope::Platform => (None, false),
        ClaimScope::Tenant {
            tenant,
            descendants,
        } => (Some(tenant.as_uuid()), descendants),
    };
    let (source, constant, field, hook) = match &c.source {
        ClaimSource::Constant(v) => ("constant", Some(v.clone()), None, None),
        ClaimSource::UserMetadata(f) => ("user_metadata", None, Some(f.as_str()), None),
        ClaimSource::TenantMetadata(f) => ("tenant_metadata", None, Some(f.as_str()), None),
        ClaimSource::Hook(h) => ("hook", None, None, Some(h)),
    };
    diesel::insert_into(claim_definitions::table)
        .values((
            claim_definitions::name.eq(c.name.as_str()),
            claim_definitions::scope_tenant_id.eq(tenant),
            claim_definitions::descendants.eq(descendants),
            claim_definitions::source.eq(source),
            claim_definitions::constant_value.eq(constant),
            claim_definitions::field.eq(field),
            claim_definitions::hook_url.eq(hook.map(|h| h.url.as_str())),
            claim_definitions::hook_timeout_ms
                .eq(hook.map(|h| i32::try_from(h.timeout.as_millis()).unwrap_or(i32::MAX))),
            claim_definitions::hook_on_failure.eq(hook.map(|h| h.on_failure.as_str())),
            claim_definitions::created_at.eq(c.created_at),
        ))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(())
}

pub(crate) async fn claims(
    conn: &mut Conn,
) -> Result<Vec<iam_domain::claims::ClaimDefinition>, StoreError> {
    let rows: Vec<ClaimRow> = claim_definitions::table
        .select(ClaimRow::as_select())
        .load(conn)
        .await
        .map_err(from_diesel)?;
    // A row the domain no longer accepts is skipped (and logged), not fatal: this feeds every
    // instance's revocation snapshot, which must not fail for one stale definition.
    let mut claims: Vec<_> = rows
        .into_iter()
        .filter_map(|row| {
            let name = row.name.clone();
            iam_domain::claims::ClaimDefinition::try_from(row)
                .map_err(|e| tracing::warn!(claim = %name, error = %e, "unusable claim definition skipped"))
                .ok()
        })
        .collect();
    // Byte order, as the in-memory store sorts, whatever the database's collation.
    claims.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(claims)
}

pub(crate) async fn delete_claim(
    conn: &mut Conn,
    name: &iam_domain::claims::ClaimName,
) -> Result<bool, StoreError> {
    let n = diesel::delete(claim_definitions::table.find(name.as_str()))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(n > 0)
}

pub(crate) async fn session_of_refresh(
    conn: &mut Conn,
    token: &RefreshTokenHash,
) -> Result<Option<Session>, StoreError> {
    Ok(refresh_tokens::table
        .inner_join(sessions::table)
        .filter(refresh_tokens::token_hash.eq(token.as_bytes().as_slice()))
        .filter(refresh_tokens::status.eq(RefreshStatus::Live.as_str()))
        .filter(sessions::revoked_at.is_null())
        .select(SessionRow::as_select())
        .get_result(conn)
        .await
        .optional()
        .map_err(from_diesel)?
        .map(Session::from))
}

/// Two round trips with a cursor: its place in the order, then the page.
pub(crate) async fn list_audit(
    conn: &mut Conn,
    tenant: TenantId,
    before: Option<AuditId>,
    limit: usize,
) -> Result<Vec<AuditEvent>, StoreError> {
    let mut query = audit_events::table
        .filter(audit_events::tenant_id.eq(tenant.as_uuid()))
        .order(audit_events::seq.desc())
        .limit(page_limit(limit))
        .select(AuditRow::as_select())
        .into_boxed();
    if let Some(before) = before {
        // The cursor names an event; the page continues below its place in the append order.
        let Some(seq) = audit_events::table
            .filter(audit_events::tenant_id.eq(tenant.as_uuid()))
            .filter(audit_events::id.eq(before.0))
            .select(audit_events::seq)
            .get_result::<i64>(conn)
            .await
            .optional()
            .map_err(from_diesel)?
        else {
            return Ok(Vec::new());
        };
        query = query.filter(audit_events::seq.lt(seq));
    }
    query
        .load(conn)
        .await
        .map_err(from_diesel)?
        .into_iter()
        .map(AuditEvent::try_from)
        .collect()
}

/// Spends a live, unexpired token of a family that is not revoked and inserts its successor in
/// one statement, returning the family's session; no row otherwise.
///
/// Diesel's DSL cannot express data-modifying CTEs, and `sql_query` is never cached as a
/// prepared statement (an extra Parse round trip each time). A hand-written fragment with a
/// static query id is cached like the DSL, which keeps the happy path at one round trip.
///
/// Concurrent rotations of one token queue on its row lock; under READ COMMITTED each waiter
/// re-checks `status = 'live'` after the winner commits and updates nothing.
#[derive(QueryId)]
struct SpendAndReplace {
    presented: [u8; 32],
    next: [u8; 32],
    now: Timestamp,
    expires_at: Timestamp,
}

impl Query for SpendAndReplace {
    type SqlType = (
        sql_types::Uuid,
        sql_types::Uuid,
        sql_types::Uuid,
        sql_types::Array<sql_types::Text>,
        sql_types::Timestamptz,
        sql_types::Timestamptz,
        sql_types::Nullable<sql_types::Timestamptz>,
    );
}

impl QueryFragment<Pg> for SpendAndReplace {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH spent AS (UPDATE refresh_tokens SET status = 'rotated', used_at = ");
        out.push_bind_param::<sql_types::Timestamptz, _>(&self.now)?;
        out.push_sql(" WHERE token_hash = ");
        out.push_bind_param::<sql_types::Bytea, [u8]>(self.presented.as_slice())?;
        out.push_sql(" AND status = 'live' AND expires_at > ");
        out.push_bind_param::<sql_types::Timestamptz, _>(&self.now)?;
        out.push_sql(
            " AND EXISTS (SELECT 1 FROM sessions WHERE sessions.id = refresh_tokens.session_id \
             AND sessions.revoked_at IS NULL) \
             RETURNING session_id), \
             fresh AS (INSERT INTO refresh_tokens \
             (token_hash, session_id, status, issued_at, expires_at) SELECT ",
        );
        out.push_bind_param::<sql_types::Bytea, [u8]>(self.next.as_slice())?;
        out.push_sql(", session_id, 'live', ");
        out.push_bind_param::<sql_types::Timestamptz, _>(&self.now)?;
        out.push_sql(", ");
        out.push_bind_param::<sql_types::Timestamptz, _>(&self.expires_at)?;
        out.push_sql(
            " FROM spent RETURNING session_id) \
             SELECT s.id, s.user_id, s.tenant_id, s.amr, s.auth_time, s.created_at, \
             s.revoked_at FROM sessions s JOIN fresh ON s.id = fresh.session_id",
        );
        Ok(())
    }
}

/// `iam_refresh_session`'s row: the outcome, then the session, user, membership and tenant,
/// each `None` when absent; before them the session's id alone, which is all a reuse fills.
type RefreshSessionRow = (
    String,
    Option<Uuid>,
    Option<SessionRow>,
    Option<UserRow>,
    Option<MembershipRow>,
    Option<TenantRow>,
);

/// `SELECT … FROM iam_refresh_session($1, $2, $3, $4)`, the function from migration
/// `00000000000005_refresh_function`; see [`refresh_session`].
///
/// A hand-written fragment with a static query id rather than `define_sql_function!`: the DSL
/// can only call the function as a scalar (`SELECT f(…)`, one composite value that diesel would
/// have to decode as a 26-field record), not select its columns as a row. Like the DSL's
/// statements it is prepared once per connection, so each call after the first is one Bind,
/// Execute and Sync. The user's password hash stays in the database (a NULL takes its place).
#[derive(QueryId)]
struct RefreshSession {
    presented: [u8; 32],
    next: [u8; 32],
    now: Timestamp,
    expires_at: Timestamp,
}

impl Query for RefreshSession {
    type SqlType = (
        sql_types::Text,
        sql_types::Nullable<sql_types::Uuid>,
        sql_types::Nullable<sessions::SqlType>,
        sql_types::Nullable<users::SqlType>,
        sql_types::Nullable<memberships::SqlType>,
        sql_types::Nullable<tenants::SqlType>,
    );
}

impl QueryFragment<Pg> for RefreshSession {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT outcome, s_id, s_id, s_user_id, s_tenant_id, s_amr, s_auth_time, s_created_at, \
             s_revoked_at, \
             u_id, u_email, u_display_name, NULL::text, u_status, u_email_verified, \
             u_created_at, u_updated_at, u_metadata, \
             m_tenant_id, m_user_id, m_roles, m_created_at, \
             t_id, t_name, t_parent_id, t_owner_id, t_status, t_created_at, t_updated_at, \
             t_metadata \
             FROM iam_refresh_session(",
        );
        out.push_bind_param::<sql_types::Bytea, [u8]>(self.presented.as_slice())?;
        out.push_sql(", ");
        out.push_bind_param::<sql_types::Bytea, [u8]>(self.next.as_slice())?;
        out.push_sql(", ");
        out.push_bind_param::<sql_types::Timestamptz, _>(&self.now)?;
        out.push_sql(", ");
        out.push_bind_param::<sql_types::Timestamptz, _>(&self.expires_at)?;
        out.push_sql(")");
        Ok(())
    }
}

/// A tenant and its ancestors, nearest first. The `OFFSET 0` keeps the lateral lookup a
/// separate step, so the plan stays a handful of index probes whatever the statistics say
/// (fresh from a bulk load, the planner guessed hundreds of ancestors and hashed the whole
/// tenants table, 6× slower).
#[derive(QueryId)]
struct Lineage {
    id: Uuid,
}

impl Query for Lineage {
    type SqlType = tenants::SqlType;
}

impl QueryFragment<Pg> for Lineage {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT t.id, t.name, t.parent_id, t.owner_id, t.status, t.created_at, t.updated_at, \
             t.metadata FROM tenant_closure c, LATERAL (SELECT * FROM tenants \
             WHERE tenants.id = c.ancestor_id OFFSET 0) t WHERE c.descendant_id = ",
        );
        out.push_bind_param::<sql_types::Uuid, _>(&self.id)?;
        out.push_sql(" ORDER BY c.depth");
        Ok(())
    }
}

/// `SELECT t, set_config('iam.tenant_id', …) FROM iam_session_tenant($1) t`: the lookup and
/// the scoping in one round trip (the setting is made only for a row that exists).
#[derive(QueryId)]
struct ActInSessionTenant {
    id: Uuid,
}

impl Query for ActInSessionTenant {
    type SqlType = (sql_types::Uuid, sql_types::Text);
}

impl QueryFragment<Pg> for ActInSessionTenant {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT t, set_config('iam.tenant_id', t::text, true) FROM iam_session_tenant(",
        );
        out.push_bind_param::<sql_types::Uuid, _>(&self.id)?;
        out.push_sql(") AS t WHERE t IS NOT NULL");
        Ok(())
    }
}

/// [`ActInSessionTenant`] by refresh token (`iam_refresh_tenant`).
#[derive(QueryId)]
struct ActInRefreshTenant {
    token: [u8; 32],
}

impl Query for ActInRefreshTenant {
    type SqlType = (sql_types::Uuid, sql_types::Text);
}

impl QueryFragment<Pg> for ActInRefreshTenant {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT t, set_config('iam.tenant_id', t::text, true) FROM iam_refresh_tenant(",
        );
        out.push_bind_param::<sql_types::Bytea, [u8]>(self.token.as_slice())?;
        out.push_sql(") AS t WHERE t IS NOT NULL");
        Ok(())
    }
}

/// `SELECT … FROM iam_memberships_of($1)`: a user's memberships in every tenant.
#[derive(QueryId)]
struct MembershipsOf {
    user: Uuid,
}

impl Query for MembershipsOf {
    type SqlType = memberships::SqlType;
}

impl QueryFragment<Pg> for MembershipsOf {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT tenant_id, user_id, roles, created_at FROM iam_memberships_of(");
        out.push_bind_param::<sql_types::Uuid, _>(&self.user)?;
        out.push_sql(")");
        Ok(())
    }
}

/// `SELECT … FROM iam_custom_roles()`: every tenant's custom roles, for the snapshot.
#[derive(QueryId)]
struct AllCustomRoles;

impl Query for AllCustomRoles {
    type SqlType = roles::SqlType;
}

impl QueryFragment<Pg> for AllCustomRoles {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT id, tenant_id, name, description, permissions, named_at, created_at, \
             updated_at FROM iam_custom_roles()",
        );
        Ok(())
    }
}

/// Every tenant whose effective status is blocked: those not active (blocked or deleted) and
/// everything below them, from the closure table.
#[derive(QueryId)]
struct BlockedTenants;

impl Query for BlockedTenants {
    type SqlType = sql_types::Uuid;
}

impl QueryFragment<Pg> for BlockedTenants {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT DISTINCT c.descendant_id FROM tenant_closure c \
             JOIN tenants t ON t.id = c.ancestor_id WHERE t.status <> 'active'",
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_prefixes_match_literally() {
        assert_eq!(like_prefix("ada@"), "ada@%");
        assert_eq!(like_prefix("a_b%c\\d"), "a\\_b\\%c\\\\d%");
        assert_eq!(like_prefix(""), "%");
    }
}
