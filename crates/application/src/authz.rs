//! Authorisation of administrative use cases: who the caller is, which permission each operation
//! needs, the one check every use case makes first, and the audit trail of what came of it.

use iam_domain::rbac::grants_of;
use iam_domain::{
    AuditActor, AuditEvent, AuditId, AuditOutcome, Grants, Role, RoleName, TenantId, UserId,
    Weakness,
};
use iam_ports::{BoxError, HashError, StoreError, UnitOfWork, random};
use tracing::warn;

use crate::{Ports, Principal};

/// Who is calling an administrative use case.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A signed-in user, limited to what their roles in their token's tenant grant.
    User(Box<Principal>),
    /// A platform service presenting a service credential (gRPC) or the operator's CLI: trusted
    /// with every operation in the tenant it names.
    Service,
}

/// A caller and the request it came with.
#[derive(Debug, Clone)]
pub struct Actor {
    pub caller: Caller,
    /// The request's `x-request-id`, carried into audit events.
    pub request_id: Option<String>,
}

impl Actor {
    /// A signed-in user.
    pub fn user(principal: Principal, request_id: Option<String>) -> Self {
        Self {
            caller: Caller::User(Box::new(principal)),
            request_id,
        }
    }

    /// A trusted service.
    pub fn service(request_id: Option<String>) -> Self {
        Self {
            caller: Caller::Service,
            request_id,
        }
    }

    /// The signed-in user, if a user is calling.
    pub fn user_id(&self) -> Option<UserId> {
        match &self.caller {
            Caller::User(p) => Some(p.user),
            Caller::Service => None,
        }
    }

    fn audit_actor(&self) -> AuditActor {
        match &self.caller {
            Caller::User(p) => AuditActor::User(p.user),
            Caller::Service => AuditActor::Service,
        }
    }
}

/// Every administrative operation, with the permission it needs. Transports name one per
/// endpoint; the check itself is [`authorize`], so the whole policy is this table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    CreateUser,
    ListUsers,
    GetUser,
    UpdateUser,
    DeleteUser,
    RestoreUser,
    CreateRole,
    ListRoles,
    GetRole,
    UpdateRole,
    DeleteRole,
    AssignRole,
    UnassignRole,
    ListPermissions,
    RegisterPermission,
    ListAuditEvents,
    Invite,
    ListClaims,
    RegisterClaim,
    DeleteClaim,
    CreateTenant,
    ListTenants,
    GetTenant,
    UpdateTenant,
    DeleteTenant,
    BlockTenant,
    UnblockTenant,
    TransferOwnership,
    MoveTenant,
    ListMembers,
    RemoveMember,
}

/// What acting in a descendant of one's own tenant needs, beside the operation's permission.
pub const MANAGE_DESCENDANTS: &str = "iam.tenants.manage-descendants";

impl Operation {
    /// Every operation, for matrix tests and documentation.
    pub const ALL: [Self; 31] = [
        Self::CreateUser,
        Self::ListUsers,
        Self::GetUser,
        Self::UpdateUser,
        Self::DeleteUser,
        Self::RestoreUser,
        Self::CreateRole,
        Self::ListRoles,
        Self::GetRole,
        Self::UpdateRole,
        Self::DeleteRole,
        Self::AssignRole,
        Self::UnassignRole,
        Self::ListPermissions,
        Self::RegisterPermission,
        Self::ListAuditEvents,
        Self::Invite,
        Self::ListClaims,
        Self::RegisterClaim,
        Self::DeleteClaim,
        Self::CreateTenant,
        Self::ListTenants,
        Self::GetTenant,
        Self::UpdateTenant,
        Self::DeleteTenant,
        Self::BlockTenant,
        Self::UnblockTenant,
        Self::TransferOwnership,
        Self::MoveTenant,
        Self::ListMembers,
        Self::RemoveMember,
    ];

    /// The permission the caller needs in the target tenant.
    pub fn permission(self) -> &'static str {
        match self {
            Self::CreateUser | Self::UpdateUser => "iam.users.write",
            Self::ListUsers | Self::GetUser => "iam.users.read",
            Self::DeleteUser | Self::RestoreUser => "iam.users.delete",
            Self::CreateRole | Self::UpdateRole | Self::DeleteRole => "iam.roles.write",
            Self::ListRoles | Self::GetRole => "iam.roles.read",
            Self::AssignRole | Self::UnassignRole => "iam.roles.assign",
            Self::ListPermissions => "iam.permissions.read",
            Self::RegisterPermission => "iam.permissions.write",
            Self::ListAuditEvents => "iam.audit.read",
            Self::Invite => "iam.invitations.write",
            Self::ListClaims => "iam.claims.read",
            Self::RegisterClaim | Self::DeleteClaim => "iam.claims.write",
            Self::CreateTenant
            | Self::UpdateTenant
            | Self::DeleteTenant
            | Self::BlockTenant
            | Self::UnblockTenant
            | Self::TransferOwnership
            | Self::MoveTenant => "iam.tenants.write",
            Self::ListTenants | Self::GetTenant => "iam.tenants.read",
            Self::ListMembers => "iam.users.read",
            Self::RemoveMember => "iam.users.delete",
        }
    }

    /// The audit action for a mutating operation; `None` for reads, which are not audited.
    pub fn audit_action(self) -> Option<&'static str> {
        Some(match self {
            Self::CreateUser => "users.create",
            Self::UpdateUser => "users.update",
            Self::DeleteUser => "users.delete",
            Self::RestoreUser => "users.restore",
            Self::CreateRole => "roles.create",
            Self::UpdateRole => "roles.update",
            Self::DeleteRole => "roles.delete",
            Self::AssignRole => "roles.assign",
            Self::UnassignRole => "roles.unassign",
            Self::RegisterPermission => "permissions.register",
            Self::Invite => "invitations.create",
            Self::RegisterClaim => "claims.register",
            Self::DeleteClaim => "claims.delete",
            Self::CreateTenant => "tenants.create",
            Self::UpdateTenant => "tenants.update",
            Self::DeleteTenant => "tenants.delete",
            Self::BlockTenant => "tenants.block",
            Self::UnblockTenant => "tenants.unblock",
            Self::TransferOwnership => "tenants.transfer-ownership",
            Self::MoveTenant => "tenants.move",
            Self::RemoveMember => "tenants.remove-member",
            Self::ListTenants | Self::GetTenant | Self::ListMembers => return None,
            Self::ListUsers
            | Self::GetUser
            | Self::ListRoles
            | Self::GetRole
            | Self::ListPermissions
            | Self::ListAuditEvents
            | Self::ListClaims => return None,
        })
    }
}

/// Why an administrative use case failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No such user in this tenant (a user of another tenant is "not found" too).
    #[error("user not found")]
    NotFound,
    /// No such role in this tenant.
    #[error("role not found")]
    RoleNotFound,
    /// No such tenant, or one the caller may not see.
    #[error("tenant not found")]
    TenantNotFound,
    /// The caller lacks the permission.
    #[error("missing permission {0}")]
    Forbidden(&'static str),
    /// The caller would grant more than they hold.
    #[error("a role may only be granted or shaped by someone holding all of its permissions")]
    Escalation,
    #[error("a user with this email exists")]
    EmailTaken,
    #[error("the tenant has a role of this name")]
    RoleTaken,
    /// System roles cannot be changed or deleted.
    #[error("system roles cannot be changed or deleted")]
    SystemRole,
    /// The operation would leave the tenant without an active owner.
    #[error("the tenant's last owner cannot lose the owner role")]
    LastOwner,
    /// The user is deleted: restore them before changing them.
    #[error("the user is deleted")]
    UserDeleted,
    #[error("invalid metadata: {0}")]
    InvalidMetadata(iam_domain::MetadataError),
    /// Registering permissions is for the platform's root tenant.
    #[error("only the platform's root tenant may register permissions")]
    NotRoot,
    /// The user belongs to other tenants too: their account is not this tenant's alone to
    /// change (a platform service may).
    #[error("the user belongs to other tenants too")]
    SharedUser,
    #[error("claim not found")]
    ClaimNotFound,
    /// Hook claims are registered by the platform (root tenant or a service) only.
    #[error("only the platform may register hook claims")]
    HooksPlatformOnly,
    #[error("a claim of this name is registered")]
    ClaimTaken,
    #[error("invalid claim: {0}")]
    InvalidClaim(iam_domain::claims::ClaimError),
    /// Restore of a user who is not deleted.
    #[error("the user is not deleted")]
    NotDeleted,
    /// A role names a permission that is not in the catalogue.
    #[error("unknown permission {0}")]
    UnknownPermission(String),
    /// The tenant still has live children: delete or move them first.
    #[error("the tenant has child tenants")]
    HasChildren,
    /// The new parent is the tenant itself or lies below it.
    #[error("a tenant cannot move under itself or its own descendants")]
    Cycle,
    /// The platform's root tenant is not blocked, moved or deleted.
    #[error("the platform's root tenant cannot be blocked, moved or deleted")]
    RootTenant,
    /// Blocking, moving and deleting a tenant is done from above it.
    #[error("only an administrator of an ancestor tenant may do this")]
    FromAbove,
    /// The tenant's owner leaves only after handing ownership over.
    #[error("the tenant's owner cannot be removed; transfer ownership first")]
    OwnerMembership,
    /// Ownership goes only to an active member of the tenant.
    #[error("the new owner must be an active member of the tenant")]
    NotAMember,
    #[error("weak password: {0}")]
    WeakPassword(Weakness),
    #[error("password hashing is at capacity")]
    Overloaded,
    #[error("service unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self::Unavailable(e),
            StoreError::Conflict("email") => Self::EmailTaken,
            StoreError::Conflict("role") => Self::RoleTaken,
            StoreError::Conflict("claim") => Self::ClaimTaken,
            StoreError::Conflict(_) | StoreError::Unexpected(_) => Self::Internal(Box::new(e)),
        }
    }
}

impl From<HashError> for AdminError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Overloaded => Self::Overloaded,
            HashError::Unexpected(source) => Self::Internal(source),
        }
    }
}

impl AdminError {
    /// How an audit event records this failure; `None` for faults (the store may be down, and
    /// nothing was decided).
    fn outcome(&self) -> Option<AuditOutcome> {
        match self {
            Self::Forbidden(_) | Self::Escalation => Some(AuditOutcome::Denied),
            // Naming a tenant one may not see leaves no trace in that tenant's trail (anyone
            // could otherwise write into any tenant's append-only log).
            Self::TenantNotFound => None,
            Self::Unavailable(_) | Self::Internal(_) | Self::Overloaded => None,
            _ => Some(AuditOutcome::Failed),
        }
    }
}

/// Every role of the tenant: the three system roles, then its custom roles by name.
pub(crate) async fn tenant_roles(
    uow: &mut dyn UnitOfWork,
    tenant: TenantId,
) -> Result<Vec<Role>, AdminError> {
    let t = uow
        .tenant(tenant)
        .await?
        .ok_or(AdminError::TenantNotFound)?;
    roles_of(uow, &t).await
}

/// [`tenant_roles`] of a tenant already read.
async fn roles_of(
    uow: &mut dyn UnitOfWork,
    tenant: &iam_domain::Tenant,
) -> Result<Vec<Role>, AdminError> {
    let mut roles = Role::system_roles(tenant.id, tenant.created_at);
    roles.extend(uow.custom_roles(tenant.id).await?);
    Ok(roles)
}

/// The check before granting `roles` of a tenant (`all`, its roles) to someone: each exists
/// there, anything beyond the default needs `iam.roles.assign`, and the caller holds everything
/// they grant.
pub(crate) fn may_grant(held: &Grants, all: &[Role], roles: &[RoleName]) -> Result<(), AdminError> {
    if let Some(missing) = roles.iter().find(|r| !all.iter().any(|t| &t.name == *r)) {
        tracing::debug!(role = missing.as_str(), "an unknown role was named");
        return Err(AdminError::RoleNotFound);
    }
    if !is_default_roles(roles) && !held.allows(Operation::AssignRole.permission()) {
        return Err(AdminError::Forbidden(Operation::AssignRole.permission()));
    }
    if !iam_domain::rbac::covers(held, &grants_for(all, roles)) {
        return Err(AdminError::Escalation);
    }
    Ok(())
}

/// A page of at most `limit` items out of the `limit + 1` fetched, and the key of its last item
/// when more follow (the cursor of the next page).
pub(crate) fn split_page<T, K>(
    mut items: Vec<T>,
    limit: usize,
    key: impl Fn(&T) -> K,
) -> (Vec<T>, Option<K>) {
    if items.len() > limit {
        items.truncate(limit);
        let next = items.last().map(&key);
        (items, next)
    } else {
        (items, None)
    }
}

/// Whether `roles` is what a new member gets anyway (nothing, or just `member`).
pub(crate) fn is_default_roles(roles: &[RoleName]) -> bool {
    roles.iter().all(|r| *r == RoleName::member())
}

/// What holding `names` in the tenant grants, given the tenant's roles.
pub(crate) fn grants_for(roles: &[Role], names: &[RoleName]) -> Grants {
    grants_of(roles.iter().filter(|r| names.contains(&r.name)))
}

/// The check every administrative use case makes first: the caller may perform `op` in
/// `tenant`. Returns what the caller holds there (for "no escalation" checks).
///
/// A user acts in the tenant of their token, with the permissions their current membership's
/// roles grant there (read now, not from the token, so a role taken away stops working at
/// once). By delegation they also act in any tenant below it, with those same grants, if they
/// include [`MANAGE_DESCENDANTS`]. Any other tenant (above, beside, unknown or deleted) is "not
/// found", never "forbidden", so its existence is not disclosed. A service credential may do
/// everything in the tenant it names.
pub(crate) async fn authorize(
    uow: &mut dyn UnitOfWork,
    actor: &Actor,
    op: Operation,
    tenant: TenantId,
) -> Result<Grants, AdminError> {
    let principal = match &actor.caller {
        Caller::Service => {
            live_tenant(uow, tenant).await?;
            return Ok(Grants::All);
        }
        Caller::User(p) => p,
    };
    let delegated = principal.tenant != tenant;
    if delegated && !uow.is_descendant(principal.tenant, tenant).await? {
        return Err(AdminError::TenantNotFound);
    }
    let target = live_tenant(uow, tenant).await?;
    let held = uow
        .membership(principal.user, principal.tenant)
        .await?
        .map(|m| m.roles)
        .unwrap_or_default();
    // The caller's grants come from their own tenant's roles: the target's, read already,
    // unless they act by delegation.
    let roles = if delegated {
        tenant_roles(uow, principal.tenant).await?
    } else {
        roles_of(uow, &target).await?
    };
    let grants = grants_for(&roles, &held);
    if delegated && !grants.allows(MANAGE_DESCENDANTS) {
        return Err(AdminError::Forbidden(MANAGE_DESCENDANTS));
    }
    if grants.allows(op.permission()) {
        Ok(grants)
    } else {
        Err(AdminError::Forbidden(op.permission()))
    }
}

/// The tenant, unless it is unknown or deleted.
pub(crate) async fn live_tenant(
    uow: &mut dyn UnitOfWork,
    tenant: TenantId,
) -> Result<iam_domain::Tenant, AdminError> {
    uow.tenant(tenant)
        .await?
        .filter(iam_domain::Tenant::is_live)
        .ok_or(AdminError::TenantNotFound)
}

/// Writes audit events for administrative operations.
#[derive(Clone)]
pub(crate) struct Auditor {
    ports: Ports,
}

impl Auditor {
    pub(crate) fn new(ports: Ports) -> Self {
        Self { ports }
    }

    fn event(
        &self,
        actor: &Actor,
        action: &str,
        tenant: TenantId,
        target: &str,
        outcome: AuditOutcome,
    ) -> AuditEvent {
        let now = self.ports.clock.now();
        AuditEvent {
            id: AuditId::new_v7(now, random(&*self.ports.rng)),
            at: now,
            actor: actor.audit_actor(),
            tenant,
            action: action.to_owned(),
            target: target.to_owned(),
            request_id: actor.request_id.clone(),
            outcome,
        }
    }

    /// Appends the success of `op` inside the use case's own unit, so that the event commits
    /// with the change or not at all.
    pub(crate) async fn success(
        &self,
        uow: &mut dyn UnitOfWork,
        actor: &Actor,
        op: Operation,
        tenant: TenantId,
        target: &str,
    ) -> Result<(), AdminError> {
        match op.audit_action() {
            Some(action) => self.record(uow, actor, action, tenant, target).await,
            None => Ok(()),
        }
    }

    /// Appends the success of an action inside the caller's unit (for actions that are no
    /// [`Operation`], such as the bootstrap).
    pub(crate) async fn record(
        &self,
        uow: &mut dyn UnitOfWork,
        actor: &Actor,
        action: &str,
        tenant: TenantId,
        target: &str,
    ) -> Result<(), AdminError> {
        uow.append_audit(&self.event(actor, action, tenant, target, AuditOutcome::Success))
            .await?;
        Ok(())
    }

    /// Records how a mutating operation that failed ended (denied, or refused by a rule), in a
    /// unit of its own: the use case's unit has rolled back. Faults are not recorded.
    pub(crate) async fn failure(
        &self,
        actor: &Actor,
        op: Operation,
        tenant: TenantId,
        target: &str,
        error: &AdminError,
    ) {
        let (Some(action), Some(outcome)) = (op.audit_action(), error.outcome()) else {
            return;
        };
        // A user refused delegation to a tenant below their own has no standing there: the
        // refusal goes to their own tenant's trail, not into one they may not administer.
        let tenant = match (error, &actor.caller) {
            (AdminError::Forbidden(MANAGE_DESCENDANTS), Caller::User(p)) => p.tenant,
            _ => tenant,
        };
        let event = self.event(actor, action, tenant, target, outcome);
        let written = async {
            let mut uow = self.ports.store.begin().await?;
            // A tenant that does not exist has nowhere to keep its trail.
            if uow.tenant(tenant).await?.is_none() {
                return uow.rollback().await;
            }
            uow.append_audit(&event).await?;
            uow.commit().await
        }
        .await;
        if let Err(e) = written {
            warn!(error = %e, action, "audit event of a failed operation could not be written");
        }
    }

    /// Records the outcome of a finished operation that wrote nothing else (its success needs
    /// no unit of the use case's own).
    pub(crate) async fn finish<T>(
        &self,
        actor: &Actor,
        op: Operation,
        tenant: TenantId,
        target: &str,
        result: Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        if let Err(e) = &result {
            self.failure(actor, op, tenant, target, e).await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_needs_a_builtin_permission() {
        let builtin: Vec<&str> = iam_domain::rbac::IAM_PERMISSIONS
            .iter()
            .map(|(p, _)| *p)
            .collect();
        for op in Operation::ALL {
            assert!(builtin.contains(&op.permission()), "{op:?}");
        }
    }
}
