//! Stores and the unit of work through which a use case reads and writes them.
//!
//! A use case opens a unit of work with [`Store::begin`], does all of its reads and writes through
//! it, and ends it with [`UnitOfWork::commit`]; a unit of work dropped without commit rolls back.
//! Never hold one across slow work (password hashing, HTTP calls): an adapter may serialise them.
//! After any error from a unit, it can only be rolled back or dropped (a database transaction is
//! aborted by a failed statement), so a use case that expects a `Conflict` ends the unit there.

use async_trait::async_trait;
use iam_domain::claims::{ClaimDefinition, ClaimName};
use iam_domain::{AuditEvent, AuditId, PermissionDef, Role, RoleId, RoleName};
use iam_domain::{
    Email, LinkKind, LinkToken, MailMessage, Membership, MfaChallenge, MfaEnrolment, PasswordHash,
    RefreshTokenHash, Session, SessionId, StoredRecoveryCode, Tenant, TenantId, TenantSelection,
    TenantStatus, Timestamp, User, UserId, UserStatus,
};

use crate::BoxError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken; the payload names what was duplicated (`email`, …).
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The store cannot be reached now; worth retrying later (503).
    #[error("store is unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else: a bug or corrupt data (500).
    #[error("store failure")]
    Unexpected(#[source] BoxError),
}

/// A user together with their password hash, for sign-in.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub user: User,
    pub password_hash: Option<PasswordHash>,
}

/// Which members [`UserRepo::list_members`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    /// Only emails starting with this (already normalised, lower case).
    pub email_prefix: Option<String>,
    /// Only users in this status.
    pub status: Option<UserStatus>,
}

/// A refresh token about to be stored.
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub hash: RefreshTokenHash,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

/// The outcome of presenting a refresh token for rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live: it is now spent and the new one is the family's live token.
    Rotated(Session),
    /// The token had been spent already (or its family revoked): the whole family is now revoked.
    /// The caller must commit so the revocation sticks, and answer `invalid_grant`.
    Reused(SessionId),
    /// The token was live but past its expiry.
    Expired,
    /// No such token.
    Unknown,
}

/// A rotated session with everything that decides whether it may issue tokens now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub session: Session,
    /// `None` if the user is gone.
    pub user: Option<User>,
    /// `None` if the user is no longer a member of the session's tenant.
    pub membership: Option<Membership>,
    /// `None` if the tenant is gone.
    pub tenant: Option<Tenant>,
}

/// The outcome of [`Store::refresh_session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// Rotated: the presented token is spent and the new one is live.
    Rotated(Box<Standing>),
    /// A spent token came back: the family is revoked (and that is published).
    Reused(SessionId),
    Expired,
    /// A live token of a session whose tenant is blocked (itself or above): nothing was spent,
    /// so the token works again once the block is lifted.
    Blocked,
    Unknown,
}

/// The outcome of [`TenantRepo::move_tenant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Moved,
    /// The new parent is the tenant itself or lies below it: refused, nothing changed.
    Cycle,
    /// No such tenant, or no such parent.
    NotFound,
}

/// Users.
#[async_trait]
pub trait UserRepo: Send {
    /// Inserts a user; `Conflict("email")` if the normalised email is taken.
    async fn insert_user(
        &mut self,
        user: &User,
        password: Option<&PasswordHash>,
    ) -> Result<(), StoreError>;

    /// Looks a user up by normalised email.
    async fn user_by_email(&mut self, email: &Email) -> Result<Option<UserRecord>, StoreError>;

    /// Looks a user up by id.
    async fn user_by_id(&mut self, id: UserId) -> Result<Option<User>, StoreError>;

    /// Stores a user's mutable fields (name, status, email_verified, metadata, updated_at); `false` if no
    /// such user. A status change is published on the revocation feed at commit.
    async fn update_user(&mut self, user: &User) -> Result<bool, StoreError>;

    /// Members of `tenant` that match `filter`, in ascending id order, starting after `after`,
    /// at most `limit` of them (keyset pagination: stable under inserts).
    async fn list_members(
        &mut self,
        tenant: TenantId,
        filter: &UserFilter,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<Vec<User>, StoreError>;
}

/// Tenants and memberships.
#[async_trait]
pub trait TenantRepo: Send {
    /// Inserts a tenant; its owner must exist.
    async fn insert_tenant(&mut self, tenant: &Tenant) -> Result<(), StoreError>;

    /// Looks a tenant up by id.
    async fn tenant(&mut self, id: TenantId) -> Result<Option<Tenant>, StoreError>;

    /// Adds a user to a tenant; `Conflict("membership")` if they are a member already.
    async fn insert_membership(&mut self, membership: &Membership) -> Result<(), StoreError>;

    /// A user's memberships, oldest first.
    async fn memberships_of(&mut self, user: UserId) -> Result<Vec<Membership>, StoreError>;

    /// The memberships of `tenant` held by any of `users` (one query, for a page of members).
    async fn memberships_in(
        &mut self,
        tenant: TenantId,
        users: &[UserId],
    ) -> Result<Vec<Membership>, StoreError>;

    /// One membership, if the user belongs to the tenant.
    async fn membership(
        &mut self,
        user: UserId,
        tenant: TenantId,
    ) -> Result<Option<Membership>, StoreError>;

    /// Sets a tenant's own status; `false` if no such tenant. Published on the revocation feed at
    /// commit.
    async fn set_tenant_status(
        &mut self,
        id: TenantId,
        status: TenantStatus,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// The tenant's ancestors, nearest first (parent, grandparent, …); empty for a top-level or
    /// unknown tenant. One indexed lookup, not a walk of round trips.
    async fn ancestors(&mut self, id: TenantId) -> Result<Vec<TenantId>, StoreError>;

    /// The tenant itself, then its ancestors nearest first; empty for an unknown tenant. One
    /// indexed lookup.
    async fn lineage(&mut self, id: TenantId) -> Result<Vec<Tenant>, StoreError>;

    /// Whether `descendant` lies strictly below `ancestor` (and is not deleted). One indexed
    /// lookup.
    async fn is_descendant(
        &mut self,
        ancestor: TenantId,
        descendant: TenantId,
    ) -> Result<bool, StoreError>;

    /// Live (not deleted) children of `parent` in ascending id order, after `after`, at most
    /// `limit`.
    async fn children(
        &mut self,
        parent: TenantId,
        after: Option<TenantId>,
        limit: usize,
    ) -> Result<Vec<Tenant>, StoreError>;

    /// Live tenants strictly below `root`, in ascending id order, after `after`, at most `limit`.
    async fn descendants(
        &mut self,
        root: TenantId,
        after: Option<TenantId>,
        limit: usize,
    ) -> Result<Vec<Tenant>, StoreError>;

    /// Stores a tenant's name, owner, metadata and updated_at; `false` if no such tenant.
    async fn update_tenant(&mut self, tenant: &Tenant) -> Result<bool, StoreError>;

    /// Re-parents a tenant (with its subtree) under `parent`, or to the top with `None`. Moves
    /// are serialised, so that two of them cannot together close a cycle. Published on the
    /// revocation feed at commit (effective statuses below may change).
    async fn move_tenant(
        &mut self,
        id: TenantId,
        parent: Option<TenantId>,
        at: Timestamp,
    ) -> Result<Move, StoreError>;

    /// Takes the tree's lock until the unit ends, exclusively: inserts of tenants and moves
    /// wait, so a check of the tree made under it (no children, say) stays true.
    async fn lock_tree(&mut self) -> Result<(), StoreError>;

    /// Ends every membership of a tenant (it is being deleted); returns how many.
    async fn delete_tenant_memberships(&mut self, tenant: TenantId) -> Result<u64, StoreError>;

    /// Ends a membership; `false` if the user was not a member.
    async fn delete_membership(
        &mut self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<bool, StoreError>;

    /// Stores a pending tenant selection.
    async fn insert_selection(&mut self, selection: &TenantSelection) -> Result<(), StoreError>;

    /// Spends a live selection (unexpired at `now`) and returns it; `None` for an unknown, spent
    /// or expired one.
    async fn take_selection(
        &mut self,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<TenantSelection>, StoreError>;
}

/// Sessions (refresh-token families).
#[async_trait]
pub trait SessionRepo: Send {
    /// Starts a session with its first refresh token.
    async fn insert_session(
        &mut self,
        session: &Session,
        first: &NewRefreshToken,
    ) -> Result<(), StoreError>;

    /// Spends `presented` and makes `next` the family's live token, atomically: of two concurrent
    /// rotations of one token exactly one sees `Rotated`. `next.issued_at` is taken as now.
    async fn rotate_refresh(
        &mut self,
        presented: &RefreshTokenHash,
        next: &NewRefreshToken,
    ) -> Result<Rotation, StoreError>;

    /// Looks a session up by id.
    async fn session(&mut self, id: SessionId) -> Result<Option<Session>, StoreError>;

    /// The session a live refresh token (not spent, of an unrevoked session) belongs to.
    async fn session_of_refresh(
        &mut self,
        token: &RefreshTokenHash,
    ) -> Result<Option<Session>, StoreError>;

    /// Revokes a session and its live refresh token; `false` if it was unknown or revoked already.
    /// A revocation is published on the revocation feed at commit (so is a reuse in
    /// [`SessionRepo::rotate_refresh`]).
    async fn revoke_session(&mut self, id: SessionId, at: Timestamp) -> Result<bool, StoreError>;

    /// Revokes every unrevoked session in `tenant` (of `user` only, if given) and returns their
    /// ids; each is published on the revocation feed at commit.
    async fn revoke_tenant_sessions(
        &mut self,
        tenant: TenantId,
        user: Option<UserId>,
        at: Timestamp,
    ) -> Result<Vec<SessionId>, StoreError>;

    /// Revokes every unrevoked session of a user but `except` and returns their ids; each is
    /// published on the revocation feed at commit.
    async fn revoke_user_sessions(
        &mut self,
        user: UserId,
        except: Option<SessionId>,
        at: Timestamp,
    ) -> Result<Vec<SessionId>, StoreError>;
}

/// Second factors: TOTP enrolments, recovery codes and pending sign-in challenges.
#[async_trait]
pub trait MfaRepo: Send {
    /// The user's TOTP enrolment, confirmed or pending.
    async fn mfa(&mut self, user: UserId) -> Result<Option<MfaEnrolment>, StoreError>;

    /// Creates or replaces the user's enrolment.
    async fn put_mfa(&mut self, enrolment: &MfaEnrolment) -> Result<(), StoreError>;

    /// Removes the enrolment and every recovery code; `false` if there was none.
    async fn delete_mfa(&mut self, user: UserId) -> Result<bool, StoreError>;

    /// Records `step` as the last accepted TOTP step if it is later than the one recorded;
    /// `false` means the code was used already (replay) or there is no enrolment.
    async fn advance_totp_step(&mut self, user: UserId, step: i64) -> Result<bool, StoreError>;

    /// Replaces the user's recovery codes with `codes`.
    async fn replace_recovery_codes(
        &mut self,
        user: UserId,
        codes: &[StoredRecoveryCode],
    ) -> Result<(), StoreError>;

    /// Every recovery code of the user, used or not.
    async fn recovery_codes(&mut self, user: UserId)
    -> Result<Vec<StoredRecoveryCode>, StoreError>;

    /// Marks an unused code as used; `false` if it is unknown or used already.
    async fn use_recovery_code(
        &mut self,
        user: UserId,
        lookup: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Stores a new challenge.
    async fn insert_mfa_challenge(&mut self, challenge: &MfaChallenge) -> Result<(), StoreError>;

    /// Spends one attempt of a live challenge (unexpired at `now`, fewer than `max_attempts`
    /// tried) and returns it as it now stands; `None` if there is no such live challenge.
    /// Spending before checking the code caps guesses even under concurrency.
    async fn take_mfa_attempt(
        &mut self,
        token_hash: &[u8; 32],
        now: Timestamp,
        max_attempts: u32,
    ) -> Result<Option<MfaChallenge>, StoreError>;

    /// Ends a challenge (it succeeded); `false` if it was gone already.
    async fn consume_mfa_challenge(&mut self, token_hash: &[u8; 32]) -> Result<bool, StoreError>;

    /// Deletes challenges and tenant selections that expired at or before `before`; returns how
    /// many.
    async fn purge_mfa_challenges(&mut self, before: Timestamp) -> Result<u64, StoreError>;
}

/// Emailed link tokens, password changes, and the mail outbox, written in the same unit as the
/// change they announce (so a crash between commit and send loses no mail).
#[async_trait]
pub trait MailRepo: Send {
    /// Stores a link token; earlier unused tokens of the same kind for the same address are
    /// spent first (a newer link supersedes older ones).
    async fn insert_link_token(&mut self, token: &LinkToken) -> Result<(), StoreError>;

    /// Spends a live token (unused, unexpired at `now`, of `kind`) and returns it; `None` for an
    /// unknown, used, expired or superseded one.
    async fn take_link_token(
        &mut self,
        hash: &[u8; 32],
        kind: LinkKind,
        now: Timestamp,
    ) -> Result<Option<LinkToken>, StoreError>;

    /// Spends every live token of `kind` for `email`; returns how many.
    async fn spend_link_tokens(
        &mut self,
        email: &Email,
        kind: LinkKind,
        at: Timestamp,
    ) -> Result<u64, StoreError>;

    /// Sets a user's password hash; `false` if no such user.
    async fn set_password(&mut self, user: UserId, hash: &PasswordHash)
    -> Result<bool, StoreError>;

    /// Queues a message, due at once.
    async fn enqueue_mail(&mut self, message: &MailMessage) -> Result<(), StoreError>;
}

/// Custom roles, role assignments, the permission catalogue and the platform's root tenant.
/// System roles are the domain's ([`Role::system_roles`]) and never stored.
#[async_trait]
pub trait RbacRepo: Send {
    /// Stores a custom role; `Conflict("role")` if the tenant has one of that name.
    async fn insert_role(&mut self, role: &Role) -> Result<(), StoreError>;

    /// The tenant's custom roles by name.
    async fn custom_roles(&mut self, tenant: TenantId) -> Result<Vec<Role>, StoreError>;

    /// One custom role of the tenant.
    async fn custom_role(
        &mut self,
        tenant: TenantId,
        id: RoleId,
    ) -> Result<Option<Role>, StoreError>;

    /// Stores a custom role's name, description, permissions and updated_at; a new name is
    /// carried into every membership of the tenant holding the old one. `Conflict("role")` if
    /// the new name is taken; `false` if no such role. Published on the feed at commit.
    async fn update_role(&mut self, role: &Role, old_name: &RoleName) -> Result<bool, StoreError>;

    /// Deletes a custom role and takes it from every member of the tenant; `false` if no such
    /// role. Published on the feed at commit.
    async fn delete_role(&mut self, tenant: TenantId, role: &Role) -> Result<bool, StoreError>;

    /// Replaces the roles of a membership; `false` if the user is not a member.
    async fn set_membership_roles(
        &mut self,
        tenant: TenantId,
        user: UserId,
        roles: &[RoleName],
    ) -> Result<bool, StoreError>;

    /// How many active users of the tenant hold the role.
    async fn count_active_holders(
        &mut self,
        tenant: TenantId,
        role: &RoleName,
    ) -> Result<u64, StoreError>;

    /// Locks the tenant's row until the unit ends, so that checks over its members (the last
    /// owner) cannot race; `false` if no such tenant.
    async fn lock_tenant(&mut self, tenant: TenantId) -> Result<bool, StoreError>;

    /// Registers a module's permission, or updates its description. Published at commit.
    async fn register_permission(&mut self, def: &PermissionDef) -> Result<(), StoreError>;

    /// Every permission registered by a module (the built-in ones are the domain's).
    async fn registered_permissions(&mut self) -> Result<Vec<PermissionDef>, StoreError>;

    /// The platform's root tenant, once bootstrapped.
    async fn root_tenant(&mut self) -> Result<Option<TenantId>, StoreError>;

    /// Records the root tenant; `false` (and no change) if one is recorded already.
    async fn set_root_tenant(&mut self, tenant: TenantId) -> Result<bool, StoreError>;
}

/// Custom claim definitions.
#[async_trait]
pub trait ClaimRepo: Send {
    /// Registers a claim; `Conflict("claim")` if the name is taken. Published at commit.
    async fn insert_claim(&mut self, claim: &ClaimDefinition) -> Result<(), StoreError>;

    /// Every registered claim, by name.
    async fn claims(&mut self) -> Result<Vec<ClaimDefinition>, StoreError>;

    /// Deletes a claim; `false` if there was none. Published at commit.
    async fn delete_claim(&mut self, name: &ClaimName) -> Result<bool, StoreError>;
}

/// The append-only audit log.
#[async_trait]
pub trait AuditRepo: Send {
    /// Appends an event.
    async fn append_audit(&mut self, event: &AuditEvent) -> Result<(), StoreError>;

    /// The tenant's events, newest first (in the order they were appended), continuing after the
    /// event `before` (none if it is not the tenant's), at most `limit`.
    async fn list_audit(
        &mut self,
        tenant: TenantId,
        before: Option<AuditId>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError>;
}

/// One atomic unit of work over every repository.
#[async_trait]
pub trait UnitOfWork:
    UserRepo + TenantRepo + SessionRepo + MfaRepo + MailRepo + RbacRepo + AuditRepo + ClaimRepo
{
    /// Makes every write of this unit visible at once.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;

    /// Discards every write of this unit (dropping it does the same, later).
    async fn rollback(self: Box<Self>) -> Result<(), StoreError>;
}

/// The store: opens units of work.
#[async_trait]
pub trait Store: Send + Sync {
    /// Opens a unit of work.
    async fn begin(&self) -> Result<Box<dyn UnitOfWork>, StoreError>;

    /// Checks that the store answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// The refresh hot path in one atomic call: what a unit of work doing
    /// [`SessionRepo::rotate_refresh`], then reading the session's user, membership and tenant,
    /// then committing would do — in one round trip where the store can manage it.
    async fn refresh_session(
        &self,
        presented: &RefreshTokenHash,
        next: &NewRefreshToken,
    ) -> Result<Refreshed, StoreError>;

    /// [`TenantRepo::is_descendant`] on its own, for the gRPC hot path: one statement where the
    /// store can manage it, with no transaction around it.
    async fn is_descendant(
        &self,
        ancestor: TenantId,
        descendant: TenantId,
    ) -> Result<bool, StoreError> {
        let mut uow = self.begin().await?;
        let below = uow.is_descendant(ancestor, descendant).await?;
        uow.commit().await?;
        Ok(below)
    }

    /// [`TenantRepo::lineage`] on its own, like [`Store::is_descendant`].
    async fn lineage(&self, id: TenantId) -> Result<Vec<Tenant>, StoreError> {
        let mut uow = self.begin().await?;
        let lineage = uow.lineage(id).await?;
        uow.commit().await?;
        Ok(lineage)
    }
}
