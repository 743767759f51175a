//! Tenants: standing and hierarchy questions (gRPC TenantHierarchyService) and their
//! administration (REST `/tenants`): the B2B2B tree, blocking, ownership and members. Every
//! administrative use case authorises its caller first ([`crate::authz::authorize`], which
//! lets an ancestor's administrator act below) and audits what it changes.

use std::sync::Arc;

use iam_domain::rbac::covers;
use iam_domain::{
    Grants, Membership, Metadata, RoleName, SessionId, Tenant, TenantId, TenantName, TenantStatus,
    User, UserId, UserStatus,
};
use iam_ports::{BoxError, Move, RevocationEvent, StoreError, UnitOfWork, random};
use tracing::info;

use crate::authz::{
    Actor, AdminError, Auditor, Caller, MANAGE_DESCENDANTS, Operation, authorize, grants_for,
    live_tenant, split_page, tenant_roles,
};
use crate::{Ports, RevocationView};

/// Most tenants or members one page may hold.
pub const MAX_TENANT_PAGE: usize = 200;

/// A tenant to create below another.
#[derive(Debug)]
pub struct NewTenant {
    pub name: TenantName,
    /// The parent; the caller's own tenant when `None` (a service must name one).
    pub parent: Option<TenantId>,
    /// The owner: an active member of the parent; the parent's owner when `None`. Only a
    /// caller holding every permission may name one.
    pub owner: Option<UserId>,
    pub metadata: Metadata,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct TenantChanges {
    pub name: Option<TenantName>,
    /// An RFC 7386 merge patch over the tenant's metadata.
    pub metadata: Option<serde_json::Value>,
}

/// One page of tenants and where the next one starts.
#[derive(Debug)]
pub struct TenantPage {
    pub tenants: Vec<Tenant>,
    /// Pass back as `after` for the next page; `None` on the last page.
    pub next: Option<TenantId>,
}

/// A member of a tenant with the roles held there.
#[derive(Debug, Clone)]
pub struct Member {
    pub user: User,
    pub roles: Vec<RoleName>,
}

/// One page of members and where the next one starts.
#[derive(Debug)]
pub struct MemberPage {
    pub members: Vec<Member>,
    pub next: Option<UserId>,
}

fn target(id: TenantId) -> String {
    format!("tenants/{id}")
}

/// Why a tenant use case failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("tenant not found")]
    NotFound,
    #[error("service unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl From<StoreError> for TenantError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self::Unavailable(e),
            StoreError::Conflict(_) | StoreError::Unexpected(_) => Self::Internal(Box::new(e)),
        }
    }
}

/// A tenant's own status and the status in force through its ancestors.
#[derive(Debug, Clone)]
pub struct TenantStanding {
    pub tenant: Tenant,
    /// Blocked if the tenant or any ancestor is blocked.
    pub effective: TenantStatus,
    /// The nearest blocked tenant (itself or an ancestor) when effectively blocked.
    pub blocked_by: Option<TenantId>,
}

/// Tenant standing, ancestry and administration.
pub struct TenantService {
    ports: Ports,
    view: Arc<RevocationView>,
    audit: Auditor,
}

impl TenantService {
    /// Builds the service.
    pub fn new(ports: Ports, view: Arc<RevocationView>) -> Self {
        Self {
            audit: Auditor::new(ports.clone()),
            ports,
            view,
        }
    }

    /// Whether `descendant` lies strictly below `ancestor` (a tenant is not its own descendant).
    /// One indexed lookup.
    pub async fn is_descendant(
        &self,
        ancestor: TenantId,
        descendant: TenantId,
    ) -> Result<bool, TenantError> {
        Ok(self.ports.store.is_descendant(ancestor, descendant).await?)
    }

    /// The tenant's own and effective status (blocked if it or any ancestor is), from one
    /// lookup of its lineage. A deleted tenant is not found.
    pub async fn standing(&self, id: TenantId) -> Result<TenantStanding, TenantError> {
        let lineage = self.ports.store.lineage(id).await?;
        let Some(tenant) = lineage.first().filter(|t| t.is_live()).cloned() else {
            return Err(TenantError::NotFound);
        };
        let blocked_by = lineage
            .iter()
            .find(|t| t.status != TenantStatus::Active)
            .map(|t| t.id);
        Ok(TenantStanding {
            tenant,
            effective: if blocked_by.is_some() {
                TenantStatus::Blocked
            } else {
                TenantStatus::Active
            },
            blocked_by,
        })
    }

    /// Blocks or unblocks a tenant (and so, effectively, its subtree).
    pub async fn set_status(&self, id: TenantId, status: TenantStatus) -> Result<(), TenantError> {
        let mut uow = self.ports.store.begin().await?;
        if !uow
            .set_tenant_status(id, status, self.ports.clock.now())
            .await?
        {
            return Err(TenantError::NotFound);
        }
        uow.commit().await?;
        info!(tenant.id = %id, status = status.as_str(), "tenant status changed");
        // The subtree's effective statuses come from a fresh snapshot.
        self.refresh_view(id, &[]).await;
        Ok(())
    }
}

impl TenantService {
    /// Creates a tenant below a tenant the caller manages; its owner becomes its first member.
    pub async fn create(&self, actor: &Actor, new: NewTenant) -> Result<Tenant, AdminError> {
        let parent = match (new.parent, &actor.caller) {
            (Some(p), _) => p,
            (None, Caller::User(p)) => p.tenant,
            (None, Caller::Service) => return Err(AdminError::TenantNotFound),
        };
        let now = self.ports.clock.now();
        let id = TenantId::new_v7(now, random(&*self.ports.rng));
        let result = async {
            let mut uow = self.ports.store.begin().await?;
            let held = authorize(&mut *uow, actor, Operation::CreateTenant, parent).await?;
            // Only owners make owners: someone holding less gets a tenant owned by the
            // parent's owner, and may not name another.
            let owner = match new.owner {
                Some(_) if !covers(&held, &Grants::All) => return Err(AdminError::Escalation),
                Some(o) => o,
                None => live_tenant(&mut *uow, parent).await?.owner,
            };
            // The owner is someone the parent's administrators already see: one of its members.
            active_member(&mut *uow, parent, owner).await?;
            let tenant = Tenant {
                parent: Some(parent),
                metadata: new.metadata,
                ..Tenant::new_top_level(id, new.name, owner, now)
            };
            uow.insert_tenant(&tenant).await?;
            // Read again once the insert holds the parent (its foreign key locks the row): a
            // deletion that committed meanwhile must not get a child.
            live_tenant(&mut *uow, parent).await?;
            uow.insert_membership(&Membership {
                tenant: id,
                user: owner,
                roles: vec![RoleName::owner()],
                created_at: now,
            })
            .await?;
            self.audit
                .success(
                    &mut *uow,
                    actor,
                    Operation::CreateTenant,
                    parent,
                    &target(id),
                )
                .await?;
            uow.commit().await?;
            info!(tenant.id = %id, parent.id = %parent, "tenant created");
            Ok(tenant)
        }
        .await;
        self.audit
            .finish(actor, Operation::CreateTenant, parent, &target(id), result)
            .await
    }

    /// The tenants below `root` (the caller's tenant, or one it manages), by id.
    pub async fn descendants(
        &self,
        actor: &Actor,
        root: TenantId,
        after: Option<TenantId>,
        limit: usize,
    ) -> Result<TenantPage, AdminError> {
        let limit = limit.clamp(1, MAX_TENANT_PAGE);
        let mut uow = self.ports.store.begin().await?;
        below(&mut *uow, actor, root).await?;
        let tenants = uow.descendants(root, after, limit + 1).await?;
        uow.commit().await?;
        Ok(tenant_page(tenants, limit))
    }

    /// The live children of a tenant, by id.
    pub async fn children(
        &self,
        actor: &Actor,
        id: TenantId,
        after: Option<TenantId>,
        limit: usize,
    ) -> Result<TenantPage, AdminError> {
        let limit = limit.clamp(1, MAX_TENANT_PAGE);
        let mut uow = self.ports.store.begin().await?;
        below(&mut *uow, actor, id).await?;
        let tenants = uow.children(id, after, limit + 1).await?;
        uow.commit().await?;
        Ok(tenant_page(tenants, limit))
    }

    /// The tenant's ancestors, nearest first. A user sees them up to their own tenant only:
    /// what lies above it is not theirs to see.
    pub async fn ancestors(&self, actor: &Actor, id: TenantId) -> Result<Vec<Tenant>, AdminError> {
        let mut uow = self.ports.store.begin().await?;
        authorize(&mut *uow, actor, Operation::GetTenant, id).await?;
        let lineage = uow.lineage(id).await?;
        uow.commit().await?;
        let mut lineage = lineage.get(1..).unwrap_or_default().to_vec();
        if let Caller::User(p) = &actor.caller {
            let end = lineage
                .iter()
                .position(|t| t.id == p.tenant)
                .map_or(0, |i| i + 1);
            lineage.truncate(end);
        }
        Ok(lineage)
    }

    /// One tenant.
    pub async fn get(&self, actor: &Actor, id: TenantId) -> Result<Tenant, AdminError> {
        let mut uow = self.ports.store.begin().await?;
        authorize(&mut *uow, actor, Operation::GetTenant, id).await?;
        let tenant = live_tenant(&mut *uow, id).await?;
        uow.commit().await?;
        Ok(tenant)
    }

    /// Renames a tenant or patches its metadata.
    pub async fn update(
        &self,
        actor: &Actor,
        id: TenantId,
        changes: TenantChanges,
    ) -> Result<Tenant, AdminError> {
        let result = async {
            let mut uow = self.ports.store.begin().await?;
            authorize(&mut *uow, actor, Operation::UpdateTenant, id).await?;
            let mut tenant = live_tenant(&mut *uow, id).await?;
            if let Some(name) = changes.name {
                tenant.name = name;
            }
            if let Some(patch) = &changes.metadata {
                tenant.metadata = tenant
                    .metadata
                    .merge(patch)
                    .map_err(AdminError::InvalidMetadata)?;
            }
            tenant.updated_at = self.ports.clock.now();
            uow.update_tenant(&tenant).await?;
            self.audit
                .success(&mut *uow, actor, Operation::UpdateTenant, id, &target(id))
                .await?;
            uow.commit().await?;
            Ok(tenant)
        }
        .await;
        self.audit
            .finish(actor, Operation::UpdateTenant, id, &target(id), result)
            .await
    }

    /// Blocks a tenant, and so its whole subtree: sign-ins, refreshes and ValidateToken fail
    /// there until it is unblocked.
    pub async fn block(&self, actor: &Actor, id: TenantId) -> Result<Tenant, AdminError> {
        self.change_status(actor, Operation::BlockTenant, id, TenantStatus::Blocked)
            .await
    }

    /// Lifts a block; tokens of the subtree that have not otherwise expired work again.
    pub async fn unblock(&self, actor: &Actor, id: TenantId) -> Result<Tenant, AdminError> {
        self.change_status(actor, Operation::UnblockTenant, id, TenantStatus::Active)
            .await
    }

    async fn change_status(
        &self,
        actor: &Actor,
        op: Operation,
        id: TenantId,
        status: TenantStatus,
    ) -> Result<Tenant, AdminError> {
        let result = async {
            let mut uow = self.ports.store.begin().await?;
            authorize(&mut *uow, actor, op, id).await?;
            from_above(&mut *uow, actor, id).await?;
            let mut tenant = live_tenant(&mut *uow, id).await?;
            tenant.status = status;
            tenant.updated_at = self.ports.clock.now();
            uow.set_tenant_status(id, status, tenant.updated_at).await?;
            self.audit
                .success(&mut *uow, actor, op, id, &target(id))
                .await?;
            uow.commit().await?;
            info!(tenant.id = %id, status = status.as_str(), "tenant status changed");
            self.refresh_view(id, &[]).await;
            Ok(tenant)
        }
        .await;
        self.audit.finish(actor, op, id, &target(id), result).await
    }

    /// Soft-deletes a tenant without live children: it leaves every listing, its sessions and
    /// memberships end, and its row and audit trail stay.
    pub async fn delete(&self, actor: &Actor, id: TenantId) -> Result<(), AdminError> {
        let result = async {
            let mut uow = self.ports.store.begin().await?;
            authorize(&mut *uow, actor, Operation::DeleteTenant, id).await?;
            from_above(&mut *uow, actor, id).await?;
            // The tree's lock: a child inserted or moved in meanwhile waits, then finds its
            // parent deleted (and is refused), so "no live children" stays true.
            uow.lock_tree().await?;
            uow.lock_tenant(id).await?;
            let tenant = live_tenant(&mut *uow, id).await?;
            if !uow.children(id, None, 1).await?.is_empty() {
                return Err(AdminError::HasChildren);
            }
            let now = self.ports.clock.now();
            uow.set_tenant_status(id, TenantStatus::Deleted, now)
                .await?;
            let revoked = uow.revoke_tenant_sessions(id, None, now).await?;
            // Its members no longer belong to it: it leaves their sign-in choices too.
            uow.delete_tenant_memberships(id).await?;
            self.audit
                .success(&mut *uow, actor, Operation::DeleteTenant, id, &target(id))
                .await?;
            // The deleted tenant's trail can no longer be read through the API; its parent's
            // administrators keep a record of it.
            if let Some(parent) = tenant.parent {
                self.audit
                    .success(
                        &mut *uow,
                        actor,
                        Operation::DeleteTenant,
                        parent,
                        &target(id),
                    )
                    .await?;
            }
            uow.commit().await?;
            info!(tenant.id = %id, "tenant deleted");
            self.refresh_view(id, &revoked).await;
            Ok(())
        }
        .await;
        self.audit
            .finish(actor, Operation::DeleteTenant, id, &target(id), result)
            .await
    }

    /// Re-parents a tenant (with its subtree) under another tenant the caller manages; for
    /// callers holding everything `owner` grants.
    pub async fn move_to(
        &self,
        actor: &Actor,
        id: TenantId,
        parent: TenantId,
    ) -> Result<Tenant, AdminError> {
        let result = async {
            let mut uow = self.ports.store.begin().await?;
            let held = authorize(&mut *uow, actor, Operation::MoveTenant, id).await?;
            from_above(&mut *uow, actor, id).await?;
            authorize(&mut *uow, actor, Operation::MoveTenant, parent).await?;
            // A subtree moved under a tenant where the caller holds more (one they own, say)
            // would put it in more of their power: restructuring is for those holding it all.
            if !covers(&held, &Grants::All) {
                return Err(AdminError::Escalation);
            }
            let now = self.ports.clock.now();
            match uow.move_tenant(id, Some(parent), now).await? {
                Move::Moved => {}
                Move::Cycle => return Err(AdminError::Cycle),
                Move::NotFound => return Err(AdminError::TenantNotFound),
            }
            // As at creation: a deletion of the new parent that committed meanwhile wins.
            live_tenant(&mut *uow, parent).await?;
            let tenant = live_tenant(&mut *uow, id).await?;
            self.audit
                .success(&mut *uow, actor, Operation::MoveTenant, id, &target(id))
                .await?;
            uow.commit().await?;
            info!(tenant.id = %id, parent.id = %parent, "tenant moved");
            self.refresh_view(id, &[]).await;
            Ok(tenant)
        }
        .await;
        self.audit
            .finish(actor, Operation::MoveTenant, id, &target(id), result)
            .await
    }

    /// Hands a tenant to another active member, who gets the `owner` role; the old owner stays
    /// a member as `admin`. Only someone holding everything `owner` grants may (its owners, or
    /// an owner of a tenant above): nobody makes an owner who is not one.
    pub async fn transfer_ownership(
        &self,
        actor: &Actor,
        id: TenantId,
        new_owner: UserId,
    ) -> Result<Tenant, AdminError> {
        let result = async {
            let mut uow = self.ports.store.begin().await?;
            let held = authorize(&mut *uow, actor, Operation::TransferOwnership, id).await?;
            // Only owners make owners: the caller must hold everything `owner` grants.
            if !covers(&held, &Grants::All) {
                return Err(AdminError::Escalation);
            }
            uow.lock_tenant(id).await?;
            let mut tenant = live_tenant(&mut *uow, id).await?;
            let incoming = active_member(&mut *uow, id, new_owner).await?;
            if new_owner == tenant.owner {
                uow.rollback().await?;
                return Ok(tenant);
            }
            let owner = RoleName::owner();
            let mut roles = incoming.roles;
            if !roles.contains(&owner) {
                roles.insert(0, owner.clone());
            }
            uow.set_membership_roles(id, new_owner, &roles).await?;
            if let Some(old) = uow.membership(tenant.owner, id).await? {
                let mut roles: Vec<RoleName> =
                    old.roles.into_iter().filter(|r| *r != owner).collect();
                if !roles.contains(&RoleName::admin()) {
                    roles.insert(0, RoleName::admin());
                }
                uow.set_membership_roles(id, tenant.owner, &roles).await?;
            }
            tenant.owner = new_owner;
            tenant.updated_at = self.ports.clock.now();
            uow.update_tenant(&tenant).await?;
            self.audit
                .success(
                    &mut *uow,
                    actor,
                    Operation::TransferOwnership,
                    id,
                    &target(id),
                )
                .await?;
            uow.commit().await?;
            info!(tenant.id = %id, owner.id = %new_owner, "tenant ownership transferred");
            Ok(tenant)
        }
        .await;
        self.audit
            .finish(actor, Operation::TransferOwnership, id, &target(id), result)
            .await
    }

    /// The members of a tenant with their roles there, by user id.
    pub async fn members(
        &self,
        actor: &Actor,
        id: TenantId,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<MemberPage, AdminError> {
        let mut uow = self.ports.store.begin().await?;
        authorize(&mut *uow, actor, Operation::ListMembers, id).await?;
        let limit = limit.clamp(1, MAX_TENANT_PAGE);
        let users = uow
            .list_members(id, &iam_ports::UserFilter::default(), after, limit + 1)
            .await?;
        let (users, next) = split_page(users, limit, |u| u.id);
        let ids: Vec<UserId> = users.iter().map(|u| u.id).collect();
        let mut roles: std::collections::HashMap<UserId, Vec<RoleName>> = uow
            .memberships_in(id, &ids)
            .await?
            .into_iter()
            .map(|m| (m.user, m.roles))
            .collect();
        uow.commit().await?;
        let members = users
            .into_iter()
            .map(|user| Member {
                roles: roles.remove(&user.id).unwrap_or_default(),
                user,
            })
            .collect();
        Ok(MemberPage { members, next })
    }

    /// Ends a user's membership of a tenant and their sessions there; the account stays. The
    /// owner must hand ownership over first; nobody removes someone who outranks them.
    pub async fn remove_member(
        &self,
        actor: &Actor,
        id: TenantId,
        user: UserId,
    ) -> Result<(), AdminError> {
        let member_target = format!("tenants/{id}/members/{user}");
        let result = async {
            let mut uow = self.ports.store.begin().await?;
            let held = authorize(&mut *uow, actor, Operation::RemoveMember, id).await?;
            uow.lock_tenant(id).await?;
            let tenant = live_tenant(&mut *uow, id).await?;
            let membership = uow
                .membership(user, id)
                .await?
                .ok_or(AdminError::NotFound)?;
            if tenant.owner == user {
                return Err(AdminError::OwnerMembership);
            }
            let roles = tenant_roles(&mut *uow, id).await?;
            if !covers(&held, &grants_for(&roles, &membership.roles)) {
                return Err(AdminError::Escalation);
            }
            let owner = RoleName::owner();
            if membership.roles.contains(&owner) && uow.count_active_holders(id, &owner).await? <= 1
            {
                return Err(AdminError::LastOwner);
            }
            uow.delete_membership(id, user).await?;
            let now = self.ports.clock.now();
            let revoked = uow.revoke_tenant_sessions(id, Some(user), now).await?;
            self.audit
                .success(
                    &mut *uow,
                    actor,
                    Operation::RemoveMember,
                    id,
                    &member_target,
                )
                .await?;
            uow.commit().await?;
            info!(tenant.id = %id, user.id = %user, "member removed");
            self.revoked(&revoked).await;
            Ok(())
        }
        .await;
        self.audit
            .finish(actor, Operation::RemoveMember, id, &member_target, result)
            .await
    }

    /// Brings this instance's view up to date at once (others hear it on the feed); a failed
    /// refresh is repaired by the feed's next resync.
    async fn refresh_view(&self, id: TenantId, revoked: &[SessionId]) {
        self.revoked(revoked).await;
        if let Err(e) = self.view.apply(RevocationEvent::TenantStatus(id)).await {
            tracing::warn!(error = %e, "revocation view refresh after a tenant change failed");
        }
    }

    /// Ends the sessions in this instance's view at once (session events need no store).
    async fn revoked(&self, sessions: &[SessionId]) {
        for session in sessions {
            self.view
                .apply(RevocationEvent::SessionRevoked(*session))
                .await
                .ok();
        }
    }
}

/// What listing the tenants below `id` needs: reading tenants there, and — since everything
/// listed lies below the caller's tenant — managing descendants.
async fn below(uow: &mut dyn UnitOfWork, actor: &Actor, id: TenantId) -> Result<(), AdminError> {
    let held = authorize(uow, actor, Operation::ListTenants, id).await?;
    if held.allows(MANAGE_DESCENDANTS) {
        Ok(())
    } else {
        Err(AdminError::Forbidden(MANAGE_DESCENDANTS))
    }
}

/// A page of at most `limit` tenants out of `limit + 1` fetched.
fn tenant_page(tenants: Vec<Tenant>, limit: usize) -> TenantPage {
    let (tenants, next) = split_page(tenants, limit, |t| t.id);
    TenantPage { tenants, next }
}

/// Blocking, moving and deleting are done from above: never to one's own tenant (a user would
/// lock themselves and everyone beside them out), never to the platform's root.
async fn from_above(
    uow: &mut dyn UnitOfWork,
    actor: &Actor,
    id: TenantId,
) -> Result<(), AdminError> {
    if uow.root_tenant().await? == Some(id) {
        return Err(AdminError::RootTenant);
    }
    match &actor.caller {
        Caller::User(p) if p.tenant == id => Err(AdminError::FromAbove),
        _ => Ok(()),
    }
}

/// The user's membership, if they are an active member of the tenant.
async fn active_member(
    uow: &mut dyn UnitOfWork,
    tenant: TenantId,
    user: UserId,
) -> Result<Membership, AdminError> {
    let membership = uow
        .membership(user, tenant)
        .await?
        .ok_or(AdminError::NotAMember)?;
    match uow.user_by_id(user).await? {
        Some(u) if u.status == UserStatus::Active => Ok(membership),
        _ => Err(AdminError::NotAMember),
    }
}
