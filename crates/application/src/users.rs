//! User management within a tenant (REST `/users`, gRPC IamService). Every use case authorises
//! its caller first ([`crate::authz::authorize`]) and audits what it changes.

use std::sync::Arc;

use iam_domain::rbac::covers;
use iam_domain::{
    DisplayName, Email, Membership, Metadata, Password, RoleName, TenantId, User, UserId,
    UserStatus,
};
use iam_ports::{RevocationEvent, UnitOfWork, UserFilter, random};
use tracing::info;

use crate::authz::{
    Actor, AdminError, Auditor, Caller, Operation, authorize, grants_for, may_grant, split_page,
    tenant_roles,
};
use crate::{Ports, RevocationView};

/// Most users one page may hold.
pub const MAX_PAGE: usize = 200;

/// A user to create in a tenant.
#[derive(Debug)]
pub struct NewUser {
    pub email: Email,
    pub name: DisplayName,
    /// Without one, the user signs in through a provider or a later reset.
    pub password: Option<Password>,
    /// Roles in the tenant; `member` when empty.
    pub roles: Vec<RoleName>,
    pub metadata: Metadata,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub name: Option<DisplayName>,
    /// `active` or `disabled`; deletion is [`UserService::delete`].
    pub status: Option<UserStatus>,
    /// An RFC 7386 merge patch over the user's metadata.
    pub metadata: Option<serde_json::Value>,
}

/// One page of users and where the next one starts.
#[derive(Debug)]
pub struct UserPage {
    pub users: Vec<User>,
    /// Pass back as `after` for the next page; `None` on the last page.
    pub next: Option<UserId>,
}

/// Creates, reads, lists, changes, soft-deletes and restores the users of a tenant.
pub struct UserService {
    ports: Ports,
    view: Arc<RevocationView>,
    audit: Auditor,
    /// The product's name, which new passwords must not be built from.
    product: String,
}

fn target(id: UserId) -> String {
    format!("users/{id}")
}

impl UserService {
    /// Builds the service.
    pub fn new(ports: Ports, view: Arc<RevocationView>, product: String) -> Self {
        Self {
            audit: Auditor::new(ports.clone()),
            ports,
            view,
            product,
        }
    }

    /// Creates a user who is a member of `tenant` with the given roles.
    pub async fn create(
        &self,
        actor: &Actor,
        tenant: TenantId,
        new: NewUser,
    ) -> Result<User, AdminError> {
        let email = new.email.clone();
        let result = self.create_inner(actor, tenant, new).await;
        let target = match &result {
            Ok(u) => target(u.id),
            Err(_) => format!("users?email={}", email.as_str()),
        };
        self.audit
            .finish(actor, Operation::CreateUser, tenant, &target, result)
            .await
    }

    async fn create_inner(
        &self,
        actor: &Actor,
        tenant: TenantId,
        new: NewUser,
    ) -> Result<User, AdminError> {
        // Checked before the (slow) hash; checked again in the writing unit below.
        let mut uow = self.ports.store.begin().await?;
        authorize(&mut *uow, actor, Operation::CreateUser, tenant).await?;
        uow.rollback().await?;
        if let Some(p) = &new.password {
            let context = [
                new.email.local_part(),
                new.email.as_str(),
                new.name.as_str(),
                self.product.as_str(),
            ];
            if let Some(w) = self.ports.screen.weakness(p, &context) {
                return Err(AdminError::WeakPassword(w));
            }
        }
        let hash = match &new.password {
            Some(p) => Some(self.ports.hasher.hash(p).await?),
            None => None,
        };
        let now = self.ports.clock.now();
        let mut user = User::new(
            UserId::new_v7(now, random(&*self.ports.rng)),
            new.email,
            new.name,
            now,
        );
        user.metadata = new.metadata;
        let roles = if new.roles.is_empty() {
            vec![RoleName::member()]
        } else {
            new.roles
        };
        let mut uow = self.ports.store.begin().await?;
        let held = authorize(&mut *uow, actor, Operation::CreateUser, tenant).await?;
        may_grant(&held, &tenant_roles(&mut *uow, tenant).await?, &roles)?;
        uow.insert_user(&user, hash.as_ref()).await?;
        uow.insert_membership(&Membership {
            tenant,
            user: user.id,
            roles,
            created_at: now,
        })
        .await?;
        self.audit
            .success(
                &mut *uow,
                actor,
                Operation::CreateUser,
                tenant,
                &target(user.id),
            )
            .await?;
        uow.commit().await?;
        info!(user.id = %user.id, tenant.id = %tenant, "user created");
        Ok(user)
    }

    /// A member of the tenant (deleted ones included: they are kept for restore).
    pub async fn get(
        &self,
        actor: &Actor,
        tenant: TenantId,
        id: UserId,
    ) -> Result<User, AdminError> {
        let mut uow = self.ports.store.begin().await?;
        authorize(&mut *uow, actor, Operation::GetUser, tenant).await?;
        let user = member(&mut *uow, tenant, id).await?;
        uow.commit().await?;
        Ok(user)
    }

    /// A member's roles in the tenant.
    pub async fn roles_of(
        &self,
        actor: &Actor,
        tenant: TenantId,
        id: UserId,
    ) -> Result<Vec<RoleName>, AdminError> {
        let mut uow = self.ports.store.begin().await?;
        authorize(&mut *uow, actor, Operation::GetUser, tenant).await?;
        let m = uow
            .membership(id, tenant)
            .await?
            .ok_or(AdminError::NotFound)?;
        uow.commit().await?;
        Ok(m.roles)
    }

    /// Members of the tenant in a stable order (ascending id), `limit` (1–200) at a time.
    pub async fn list(
        &self,
        actor: &Actor,
        tenant: TenantId,
        filter: &UserFilter,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<UserPage, AdminError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut uow = self.ports.store.begin().await?;
        authorize(&mut *uow, actor, Operation::ListUsers, tenant).await?;
        let users = uow.list_members(tenant, filter, after, limit + 1).await?;
        uow.commit().await?;
        let (users, next) = split_page(users, limit, |u| u.id);
        Ok(UserPage { users, next })
    }

    /// Changes a member's name, status (active or disabled) or metadata. Leaving `active` ends
    /// every session of the user.
    pub async fn update(
        &self,
        actor: &Actor,
        tenant: TenantId,
        id: UserId,
        changes: UserChanges,
    ) -> Result<User, AdminError> {
        if changes.status == Some(UserStatus::Deleted) {
            // Authorised and audited as the delete it is.
            return self.soft_delete(actor, tenant, id).await;
        }
        let result = self.update_inner(actor, tenant, id, changes).await;
        self.audit
            .finish(actor, Operation::UpdateUser, tenant, &target(id), result)
            .await
    }

    async fn update_inner(
        &self,
        actor: &Actor,
        tenant: TenantId,
        id: UserId,
        changes: UserChanges,
    ) -> Result<User, AdminError> {
        let now = self.ports.clock.now();
        let mut uow = self.ports.store.begin().await?;
        let held = authorize(&mut *uow, actor, Operation::UpdateUser, tenant).await?;
        let mut user = member(&mut *uow, tenant, id).await?;
        if user.status == UserStatus::Deleted {
            return Err(AdminError::UserDeleted);
        }
        // Name, status and metadata belong to the account, not to this tenant.
        may_manage(&mut *uow, actor, &held, tenant, id).await?;
        let old_status = user.status;
        if let Some(name) = changes.name {
            user.name = name;
        }
        if let Some(patch) = &changes.metadata {
            user.metadata = user
                .metadata
                .merge(patch)
                .map_err(AdminError::InvalidMetadata)?;
        }
        if let Some(status) = changes.status {
            user.status = status;
        }
        user.updated_at = now;
        let revoked = self.store_status(&mut *uow, &user, old_status).await?;
        self.audit
            .success(&mut *uow, actor, Operation::UpdateUser, tenant, &target(id))
            .await?;
        uow.commit().await?;
        self.announce(&user, old_status, revoked).await;
        Ok(user)
    }

    /// Soft-deletes a member: kept for audit and restore, refused everywhere, sessions ended.
    pub async fn delete(
        &self,
        actor: &Actor,
        tenant: TenantId,
        id: UserId,
    ) -> Result<(), AdminError> {
        self.soft_delete(actor, tenant, id).await.map(|_| ())
    }

    async fn soft_delete(
        &self,
        actor: &Actor,
        tenant: TenantId,
        id: UserId,
    ) -> Result<User, AdminError> {
        let result = self
            .set_status(
                actor,
                Operation::DeleteUser,
                tenant,
                id,
                UserStatus::Deleted,
            )
            .await;
        self.audit
            .finish(actor, Operation::DeleteUser, tenant, &target(id), result)
            .await
    }

    /// Brings a soft-deleted member back, exactly as they were (name, metadata, memberships and
    /// roles, password); their old sessions stay ended.
    pub async fn restore(
        &self,
        actor: &Actor,
        tenant: TenantId,
        id: UserId,
    ) -> Result<User, AdminError> {
        let result = self
            .set_status(
                actor,
                Operation::RestoreUser,
                tenant,
                id,
                UserStatus::Active,
            )
            .await;
        self.audit
            .finish(actor, Operation::RestoreUser, tenant, &target(id), result)
            .await
    }

    async fn set_status(
        &self,
        actor: &Actor,
        op: Operation,
        tenant: TenantId,
        id: UserId,
        status: UserStatus,
    ) -> Result<User, AdminError> {
        let now = self.ports.clock.now();
        let mut uow = self.ports.store.begin().await?;
        let held = authorize(&mut *uow, actor, op, tenant).await?;
        let mut user = member(&mut *uow, tenant, id).await?;
        may_manage(&mut *uow, actor, &held, tenant, id).await?;
        // A restore makes the account active again, which is a write of its status too.
        if op == Operation::RestoreUser && !held.allows(Operation::UpdateUser.permission()) {
            return Err(AdminError::Forbidden(Operation::UpdateUser.permission()));
        }
        let old_status = user.status;
        match op {
            Operation::RestoreUser if old_status != UserStatus::Deleted => {
                return Err(AdminError::NotDeleted);
            }
            // Deleting twice changes nothing and says so alike.
            Operation::DeleteUser if old_status == UserStatus::Deleted => {
                uow.rollback().await?;
                return Ok(user);
            }
            _ => {}
        }
        user.status = status;
        user.updated_at = now;
        let revoked = self.store_status(&mut *uow, &user, old_status).await?;
        self.audit
            .success(&mut *uow, actor, op, tenant, &target(id))
            .await?;
        uow.commit().await?;
        self.announce(&user, old_status, revoked).await;
        Ok(user)
    }

    /// Writes the user; a user leaving `active` must not be any tenant's last active owner, and
    /// loses every session.
    async fn store_status(
        &self,
        uow: &mut dyn UnitOfWork,
        user: &User,
        old_status: UserStatus,
    ) -> Result<Vec<iam_domain::SessionId>, AdminError> {
        let leaving = old_status == UserStatus::Active && user.status != UserStatus::Active;
        if leaving {
            ensure_not_last_owner(uow, user.id).await?;
        }
        uow.update_user(user).await?;
        Ok(if leaving {
            uow.revoke_user_sessions(user.id, None, user.updated_at)
                .await?
        } else {
            Vec::new()
        })
    }

    async fn announce(
        &self,
        user: &User,
        old_status: UserStatus,
        revoked: Vec<iam_domain::SessionId>,
    ) {
        if user.status != old_status {
            info!(user.id = %user.id, status = user.status.as_str(), "user status changed");
            self.publish(RevocationEvent::UserStatus(user.id, user.status))
                .await;
        }
        for session in revoked {
            self.publish(RevocationEvent::SessionRevoked(session)).await;
        }
    }

    async fn publish(&self, event: RevocationEvent) {
        // User and session events never need the store, so this cannot fail.
        let _ = self.view.apply(event).await;
    }
}

/// Refuses if the (active) user is the only active owner of any tenant they own. Each such
/// tenant's row is locked first, so two owners leaving at once cannot both pass.
pub(crate) async fn ensure_not_last_owner(
    uow: &mut dyn UnitOfWork,
    user: UserId,
) -> Result<(), AdminError> {
    let owner = RoleName::owner();
    let mut memberships = uow.memberships_of(user).await?;
    // Tenants are locked in id order everywhere, so two such checks cannot deadlock.
    memberships.sort_by_key(|m| m.tenant);
    for m in memberships {
        if !m.roles.contains(&owner) {
            continue;
        }
        uow.lock_tenant(m.tenant).await?;
        if uow.count_active_holders(m.tenant, &owner).await? <= 1 {
            return Err(AdminError::LastOwner);
        }
    }
    Ok(())
}

/// Refuses a user caller the account of someone who holds more than the caller, in this tenant
/// (an admin may not lock an owner out) or in any other tenant the account belongs to (its
/// status, name and metadata are not this tenant's alone): the caller must be a member there too
/// and hold at least as much.
async fn may_manage(
    uow: &mut dyn UnitOfWork,
    actor: &Actor,
    held: &iam_domain::Grants,
    tenant: TenantId,
    target: UserId,
) -> Result<(), AdminError> {
    let Caller::User(caller) = &actor.caller else {
        return Ok(());
    };
    for theirs in uow.memberships_of(target).await? {
        let roles = tenant_roles(uow, theirs.tenant).await?;
        let mine = if theirs.tenant == tenant {
            held.clone()
        } else {
            match uow.membership(caller.user, theirs.tenant).await? {
                Some(m) => grants_for(&roles, &m.roles),
                None => return Err(AdminError::SharedUser),
            }
        };
        if !covers(&mine, &grants_for(&roles, &theirs.roles)) {
            return Err(if theirs.tenant == tenant {
                AdminError::Escalation
            } else {
                AdminError::SharedUser
            });
        }
    }
    Ok(())
}

/// The user, if they are a member of the tenant.
async fn member(
    uow: &mut dyn UnitOfWork,
    tenant: TenantId,
    id: UserId,
) -> Result<User, AdminError> {
    if uow.membership(id, tenant).await?.is_none() {
        return Err(AdminError::NotFound);
    }
    uow.user_by_id(id).await?.ok_or(AdminError::NotFound)
}
