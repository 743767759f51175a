//! Roles, role assignment, the permission catalogue, the audit log, and the bootstrap of an
//! empty installation.

use std::collections::BTreeSet;
use std::sync::Arc;

use iam_domain::rbac::covers;
use iam_domain::{
    AuditEvent, AuditId, DisplayName, Email, Grants, Membership, Password, Permission,
    PermissionDef, Role, RoleId, RoleName, Tenant, TenantId, TenantName, User, UserId, UserStatus,
};
use iam_ports::{RevocationEvent, UnitOfWork, random};
use tracing::{info, warn};

use crate::authz::{Actor, AdminError, Auditor, Operation, authorize, split_page, tenant_roles};
use crate::{Ports, RevocationView};

/// Most audit events one page may hold.
pub const MAX_AUDIT_PAGE: usize = 200;

/// A custom role to create.
#[derive(Debug, Clone)]
pub struct NewRole {
    pub name: RoleName,
    pub description: String,
    pub permissions: BTreeSet<Permission>,
}

/// Changes to a custom role; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct RoleChanges {
    pub name: Option<RoleName>,
    pub description: Option<String>,
    pub permissions: Option<BTreeSet<Permission>>,
}

/// One page of audit events, newest first.
#[derive(Debug)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Pass back as `before` for the next (older) page; `None` on the last page.
    pub next: Option<AuditId>,
}

/// The account and tenant `iam bootstrap` made, or found made already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrapped {
    /// The root tenant and its first owner were created now.
    Created { tenant: TenantId, owner: UserId },
    /// The installation had a root tenant already; nothing changed.
    AlreadyDone { tenant: TenantId },
}

/// What bootstrap needs.
#[derive(Debug)]
pub struct BootstrapCommand {
    pub email: Email,
    pub password: Password,
    pub name: DisplayName,
    pub tenant_name: TenantName,
}

/// Roles and their assignment, the permission catalogue and the audit log of a tenant.
pub struct RbacService {
    ports: Ports,
    view: Arc<RevocationView>,
    audit: Auditor,
}

fn role_target(id: RoleId) -> String {
    format!("roles/{id}")
}

impl RbacService {
    /// Builds the service.
    pub fn new(ports: Ports, view: Arc<RevocationView>) -> Self {
        Self {
            audit: Auditor::new(ports.clone()),
            ports,
            view,
        }
    }

    /// The tenant's roles: the system roles, then the custom ones by name.
    pub async fn list_roles(
        &self,
        actor: &Actor,
        tenant: TenantId,
    ) -> Result<Vec<Role>, AdminError> {
        let mut uow = self.ports.store.begin().await?;
        authorize(&mut *uow, actor, Operation::ListRoles, tenant).await?;
        let roles = tenant_roles(&mut *uow, tenant).await?;
        uow.commit().await?;
        Ok(roles)
    }

    /// One role of the tenant.
    pub async fn get_role(
        &self,
        actor: &Actor,
        tenant: TenantId,
        id: RoleId,
    ) -> Result<Role, AdminError> {
        let mut uow = self.ports.store.begin().await?;
        authorize(&mut *uow, actor, Operation::GetRole, tenant).await?;
        let role = find_role(&mut *uow, tenant, id).await?;
        uow.commit().await?;
        Ok(role)
    }

    /// Creates a custom role. Its permissions must be in the catalogue and held by the caller.
    pub async fn create_role(
        &self,
        actor: &Actor,
        tenant: TenantId,
        new: NewRole,
    ) -> Result<Role, AdminError> {
        let name = new.name.clone();
        let result = self.create_role_inner(actor, tenant, new).await;
        let target = match &result {
            Ok(r) => role_target(r.id),
            Err(_) => format!("roles?name={}", name.as_str()),
        };
        let result = self
            .audit
            .finish(actor, Operation::CreateRole, tenant, &target, result)
            .await;
        if result.is_ok() {
            self.roles_changed(tenant).await;
        }
        result
    }

    async fn create_role_inner(
        &self,
        actor: &Actor,
        tenant: TenantId,
        new: NewRole,
    ) -> Result<Role, AdminError> {
        if new.name.is_system() {
            return Err(AdminError::RoleTaken);
        }
        let now = self.ports.clock.now();
        let mut uow = self.ports.store.begin().await?;
        let held = authorize(&mut *uow, actor, Operation::CreateRole, tenant).await?;
        self.check_permissions(&mut *uow, &held, &new.permissions)
            .await?;
        let role = Role {
            id: RoleId::new_v7(now, random(&*self.ports.rng)),
            tenant,
            name: new.name,
            description: new.description,
            system: None,
            permissions: new.permissions,
            named_at: now,
            created_at: now,
            updated_at: now,
        };
        uow.insert_role(&role).await?;
        self.audit
            .success(
                &mut *uow,
                actor,
                Operation::CreateRole,
                tenant,
                &role_target(role.id),
            )
            .await?;
        uow.commit().await?;
        info!(tenant.id = %tenant, role = role.name.as_str(), "role created");
        Ok(role)
    }

    /// Changes a custom role; a new name is carried into every membership holding it.
    pub async fn update_role(
        &self,
        actor: &Actor,
        tenant: TenantId,
        id: RoleId,
        changes: RoleChanges,
    ) -> Result<Role, AdminError> {
        let result = self.update_role_inner(actor, tenant, id, changes).await;
        let result = self
            .audit
            .finish(
                actor,
                Operation::UpdateRole,
                tenant,
                &role_target(id),
                result,
            )
            .await;
        if result.is_ok() {
            self.roles_changed(tenant).await;
        }
        result
    }

    async fn update_role_inner(
        &self,
        actor: &Actor,
        tenant: TenantId,
        id: RoleId,
        changes: RoleChanges,
    ) -> Result<Role, AdminError> {
        let mut uow = self.ports.store.begin().await?;
        let held = authorize(&mut *uow, actor, Operation::UpdateRole, tenant).await?;
        // Role and membership writes of a tenant queue here, so none undoes another.
        uow.lock_tenant(tenant).await?;
        let old = find_role(&mut *uow, tenant, id).await?;
        if old.system.is_some() {
            return Err(AdminError::SystemRole);
        }
        // Reshaping a role changes what its holders may do: the caller must hold all of it,
        // before and after.
        if !covers(&held, &old.grants()) {
            return Err(AdminError::Escalation);
        }
        let mut role = old.clone();
        let now = self.ports.clock.now();
        if let Some(name) = changes.name {
            if name.is_system() {
                return Err(AdminError::RoleTaken);
            }
            if name != role.name {
                role.named_at = now;
            }
            role.name = name;
        }
        if let Some(d) = changes.description {
            role.description = d;
        }
        if let Some(p) = changes.permissions {
            self.check_permissions(&mut *uow, &held, &p).await?;
            role.permissions = p;
        }
        role.updated_at = now;
        if !uow.update_role(&role, &old.name).await? {
            return Err(AdminError::RoleNotFound);
        }
        self.audit
            .success(
                &mut *uow,
                actor,
                Operation::UpdateRole,
                tenant,
                &role_target(id),
            )
            .await?;
        uow.commit().await?;
        info!(tenant.id = %tenant, role = role.name.as_str(), "role changed");
        Ok(role)
    }

    /// Deletes a custom role and takes it from every member holding it.
    pub async fn delete_role(
        &self,
        actor: &Actor,
        tenant: TenantId,
        id: RoleId,
    ) -> Result<(), AdminError> {
        let result = async {
            let mut uow = self.ports.store.begin().await?;
            let held = authorize(&mut *uow, actor, Operation::DeleteRole, tenant).await?;
            uow.lock_tenant(tenant).await?;
            let role = find_role(&mut *uow, tenant, id).await?;
            if role.system.is_some() {
                return Err(AdminError::SystemRole);
            }
            if !covers(&held, &role.grants()) {
                return Err(AdminError::Escalation);
            }
            if !uow.delete_role(tenant, &role).await? {
                return Err(AdminError::RoleNotFound);
            }
            self.audit
                .success(
                    &mut *uow,
                    actor,
                    Operation::DeleteRole,
                    tenant,
                    &role_target(id),
                )
                .await?;
            uow.commit().await?;
            info!(tenant.id = %tenant, role = role.name.as_str(), "role deleted");
            Ok(())
        }
        .await;
        let result = self
            .audit
            .finish(
                actor,
                Operation::DeleteRole,
                tenant,
                &role_target(id),
                result,
            )
            .await;
        if result.is_ok() {
            self.roles_changed(tenant).await;
        }
        result
    }

    /// Grants a role of the tenant to a member (idempotent). Only someone holding everything
    /// the role grants may grant it; so only owners make owners.
    pub async fn assign(
        &self,
        actor: &Actor,
        tenant: TenantId,
        user: UserId,
        role: RoleId,
    ) -> Result<Vec<RoleName>, AdminError> {
        let target = format!("users/{user}/roles/{role}");
        let result = self
            .change_assignment(actor, tenant, user, role, true)
            .await;
        self.audit
            .finish(actor, Operation::AssignRole, tenant, &target, result)
            .await
    }

    /// Takes a role from a member (idempotent). The tenant's last active owner keeps `owner`.
    pub async fn unassign(
        &self,
        actor: &Actor,
        tenant: TenantId,
        user: UserId,
        role: RoleId,
    ) -> Result<Vec<RoleName>, AdminError> {
        let target = format!("users/{user}/roles/{role}");
        let result = self
            .change_assignment(actor, tenant, user, role, false)
            .await;
        self.audit
            .finish(actor, Operation::UnassignRole, tenant, &target, result)
            .await
    }

    async fn change_assignment(
        &self,
        actor: &Actor,
        tenant: TenantId,
        user: UserId,
        role: RoleId,
        grant: bool,
    ) -> Result<Vec<RoleName>, AdminError> {
        let op = if grant {
            Operation::AssignRole
        } else {
            Operation::UnassignRole
        };
        let mut uow = self.ports.store.begin().await?;
        let held = authorize(&mut *uow, actor, op, tenant).await?;
        // Assignments read the membership and write it back whole: serialised per tenant, so a
        // concurrent change cannot be lost (nor a stale role name written back).
        uow.lock_tenant(tenant).await?;
        let role = find_role(&mut *uow, tenant, role).await?;
        let membership = uow
            .membership(user, tenant)
            .await?
            .ok_or(AdminError::NotFound)?;
        if !covers(&held, &role.grants()) {
            return Err(AdminError::Escalation);
        }
        let holds = membership.roles.contains(&role.name);
        if grant == holds {
            uow.rollback().await?;
            return Ok(membership.roles);
        }
        let roles: Vec<RoleName> = if grant {
            let mut r = membership.roles.clone();
            r.push(role.name.clone());
            r
        } else {
            if role.name == RoleName::owner() {
                let active = uow
                    .user_by_id(user)
                    .await?
                    .is_some_and(|u| u.status == UserStatus::Active);
                if active && uow.count_active_holders(tenant, &role.name).await? <= 1 {
                    return Err(AdminError::LastOwner);
                }
            }
            membership
                .roles
                .iter()
                .filter(|r| **r != role.name)
                .cloned()
                .collect()
        };
        uow.set_membership_roles(tenant, user, &roles).await?;
        self.audit
            .success(
                &mut *uow,
                actor,
                op,
                tenant,
                &format!("users/{user}/roles/{}", role.id),
            )
            .await?;
        uow.commit().await?;
        info!(tenant.id = %tenant, user.id = %user, role = role.name.as_str(), grant, "role assignment changed");
        Ok(roles)
    }

    /// The permission catalogue: the IAM's own, then those other modules registered.
    pub async fn permissions(
        &self,
        actor: &Actor,
        tenant: TenantId,
    ) -> Result<Vec<PermissionDef>, AdminError> {
        let mut uow = self.ports.store.begin().await?;
        authorize(&mut *uow, actor, Operation::ListPermissions, tenant).await?;
        let mut all = PermissionDef::builtin();
        all.extend(uow.registered_permissions().await?);
        uow.commit().await?;
        Ok(all)
    }

    /// Registers (or re-describes) a module's permission. Platform-wide, so only callers in the
    /// platform's root tenant may.
    pub async fn register_permission(
        &self,
        actor: &Actor,
        tenant: TenantId,
        def: PermissionDef,
    ) -> Result<PermissionDef, AdminError> {
        let target = format!("permissions/{}", def.name);
        let result = async {
            let mut uow = self.ports.store.begin().await?;
            authorize(&mut *uow, actor, Operation::RegisterPermission, tenant).await?;
            if uow.root_tenant().await? != Some(tenant) {
                return Err(AdminError::NotRoot);
            }
            uow.register_permission(&def).await?;
            self.audit
                .success(
                    &mut *uow,
                    actor,
                    Operation::RegisterPermission,
                    tenant,
                    &target,
                )
                .await?;
            uow.commit().await?;
            info!(permission = def.name.as_str(), "permission registered");
            Ok(def)
        }
        .await;
        let result = self
            .audit
            .finish(
                actor,
                Operation::RegisterPermission,
                tenant,
                &target,
                result,
            )
            .await;
        if result.is_ok() {
            self.catalogue_changed().await;
        }
        result
    }

    /// Registers the permissions named in configuration at start-up (upserts of what changed;
    /// not audited: the configuration is the record).
    pub async fn register_configured(&self, defs: &[PermissionDef]) -> Result<(), AdminError> {
        if defs.is_empty() {
            return Ok(());
        }
        let mut uow = self.ports.store.begin().await?;
        let known = uow.registered_permissions().await?;
        // Every instance registers them at each start: only a change is written and announced,
        // so a restart does not make every other instance re-snapshot.
        let changed: Vec<&PermissionDef> = defs.iter().filter(|d| !known.contains(d)).collect();
        if changed.is_empty() {
            uow.rollback().await?;
            return Ok(());
        }
        for def in changed {
            uow.register_permission(def).await?;
        }
        uow.commit().await?;
        self.catalogue_changed().await;
        Ok(())
    }

    /// The tenant's audit events, newest first.
    pub async fn audit_events(
        &self,
        actor: &Actor,
        tenant: TenantId,
        before: Option<AuditId>,
        limit: usize,
    ) -> Result<AuditPage, AdminError> {
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        let mut uow = self.ports.store.begin().await?;
        authorize(&mut *uow, actor, Operation::ListAuditEvents, tenant).await?;
        let events = uow.list_audit(tenant, before, limit + 1).await?;
        uow.commit().await?;
        let (events, next) = split_page(events, limit, |e| e.id);
        Ok(AuditPage { events, next })
    }

    /// Makes an empty installation administrable: the platform's root tenant and its first
    /// owner. Idempotent: once a root tenant exists it changes nothing. An existing account with
    /// the email becomes the owner (its password is left alone).
    pub async fn bootstrap(&self, cmd: BootstrapCommand) -> Result<Bootstrapped, AdminError> {
        {
            let mut uow = self.ports.store.begin().await?;
            let root = uow.root_tenant().await?;
            uow.commit().await?;
            if let Some(tenant) = root {
                return Ok(Bootstrapped::AlreadyDone { tenant });
            }
        }
        let context = [
            cmd.email.local_part(),
            cmd.email.as_str(),
            cmd.name.as_str(),
        ];
        if let Some(w) = self.ports.screen.weakness(&cmd.password, &context) {
            return Err(AdminError::WeakPassword(w));
        }
        let hash = self.ports.hasher.hash(&cmd.password).await?;
        let now = self.ports.clock.now();
        let mut uow = self.ports.store.begin().await?;
        if let Some(tenant) = uow.root_tenant().await? {
            return Ok(Bootstrapped::AlreadyDone { tenant });
        }
        let owner = match uow.user_by_email(&cmd.email).await? {
            Some(record) => record.user.id,
            None => {
                let user = User::new(
                    UserId::new_v7(now, random(&*self.ports.rng)),
                    cmd.email,
                    cmd.name,
                    now,
                );
                uow.insert_user(&user, Some(&hash)).await?;
                user.id
            }
        };
        let tenant = Tenant::new_top_level(
            TenantId::new_v7(now, random(&*self.ports.rng)),
            cmd.tenant_name,
            owner,
            now,
        );
        uow.insert_tenant(&tenant).await?;
        uow.insert_membership(&Membership {
            tenant: tenant.id,
            user: owner,
            roles: vec![RoleName::owner()],
            created_at: now,
        })
        .await?;
        if !uow.set_root_tenant(tenant.id).await? {
            // Another bootstrap won meanwhile; ours rolls back whole.
            let root = uow.root_tenant().await?;
            uow.rollback().await?;
            return root
                .map(|tenant| Bootstrapped::AlreadyDone { tenant })
                .ok_or_else(|| AdminError::Internal("root tenant vanished".into()));
        }
        self.audit
            .record(
                &mut *uow,
                &Actor::service(None),
                "platform.bootstrap",
                tenant.id,
                &format!("users/{owner}"),
            )
            .await?;
        uow.commit().await?;
        info!(tenant.id = %tenant.id, user.id = %owner, "platform bootstrapped");
        Ok(Bootstrapped::Created {
            tenant: tenant.id,
            owner,
        })
    }

    /// Refuses permissions outside the catalogue, and any the caller does not hold.
    async fn check_permissions(
        &self,
        uow: &mut dyn UnitOfWork,
        held: &Grants,
        wanted: &BTreeSet<Permission>,
    ) -> Result<(), AdminError> {
        let mut known: BTreeSet<Permission> = PermissionDef::builtin()
            .into_iter()
            .map(|d| d.name)
            .collect();
        known.extend(
            uow.registered_permissions()
                .await?
                .into_iter()
                .map(|d| d.name),
        );
        if let Some(unknown) = wanted.iter().find(|p| !known.contains(*p)) {
            return Err(AdminError::UnknownPermission(unknown.to_string()));
        }
        if !covers(held, &Grants::Some(wanted.clone())) {
            return Err(AdminError::Escalation);
        }
        Ok(())
    }

    async fn roles_changed(&self, tenant: TenantId) {
        if let Err(e) = self.view.apply(RevocationEvent::RolesChanged(tenant)).await {
            warn!(error = %e, "permission view refresh after a role change failed");
        }
    }

    async fn catalogue_changed(&self) {
        if let Err(e) = self.view.apply(RevocationEvent::CatalogueChanged).await {
            warn!(error = %e, "permission view refresh after a registration failed");
        }
    }
}

/// A role of the tenant, system or custom.
async fn find_role(
    uow: &mut dyn UnitOfWork,
    tenant: TenantId,
    id: RoleId,
) -> Result<Role, AdminError> {
    if let Some(role) = uow.custom_role(tenant, id).await? {
        return Ok(role);
    }
    tenant_roles(uow, tenant)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or(AdminError::RoleNotFound)
}
