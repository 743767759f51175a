//! User management within a tenant (backs gRPC IamService; REST and RBAC build on it).

use std::sync::Arc;

use iam_domain::{
    DisplayName, Email, Membership, Password, RoleName, TenantId, User, UserId, UserStatus,
};
use iam_ports::{BoxError, HashError, RevocationEvent, StoreError, UserFilter, random};
use tracing::info;

use crate::{Ports, RevocationView};

/// Most users one page may hold.
pub const MAX_PAGE: usize = 200;

/// Why a user-management use case failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// No such user in this tenant (a user of another tenant is "not found" too).
    #[error("user not found")]
    NotFound,
    #[error("tenant not found")]
    TenantNotFound,
    #[error("a user with this email exists")]
    EmailTaken,
    #[error("weak password: {0}")]
    WeakPassword(iam_domain::Weakness),
    #[error("password hashing is at capacity")]
    Overloaded,
    #[error("service unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl From<StoreError> for UserError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self::Unavailable(e),
            StoreError::Conflict("email") => Self::EmailTaken,
            StoreError::Conflict(_) | StoreError::Unexpected(_) => Self::Internal(Box::new(e)),
        }
    }
}

impl From<HashError> for UserError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Overloaded => Self::Overloaded,
            HashError::Unexpected(source) => Self::Internal(source),
        }
    }
}

/// A user to create in a tenant.
#[derive(Debug)]
pub struct NewUser {
    pub email: Email,
    pub name: DisplayName,
    /// Without one, the user signs in through a provider or a later reset.
    pub password: Option<Password>,
    /// Roles in the tenant; `member` when empty.
    pub roles: Vec<RoleName>,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub name: Option<DisplayName>,
    pub status: Option<UserStatus>,
}

/// One page of users and where the next one starts.
#[derive(Debug)]
pub struct UserPage {
    pub users: Vec<User>,
    /// Pass back as `after` for the next page; `None` on the last page.
    pub next: Option<UserId>,
}

/// Creates, reads, lists, changes and soft-deletes the users of a tenant.
pub struct UserService {
    ports: Ports,
    view: Arc<RevocationView>,
    /// The product's name, which new passwords must not be built from.
    product: String,
}

impl UserService {
    /// Builds the service.
    pub fn new(ports: Ports, view: Arc<RevocationView>, product: String) -> Self {
        Self {
            ports,
            view,
            product,
        }
    }

    /// Creates a user who is a member of `tenant`.
    pub async fn create(&self, tenant: TenantId, new: NewUser) -> Result<User, UserError> {
        if let Some(p) = &new.password {
            let context = [
                new.email.local_part(),
                new.email.as_str(),
                new.name.as_str(),
                self.product.as_str(),
            ];
            if let Some(w) = self.ports.screen.weakness(p, &context) {
                return Err(UserError::WeakPassword(w));
            }
        }
        let hash = match &new.password {
            Some(p) => Some(self.ports.hasher.hash(p).await?),
            None => None,
        };
        let now = self.ports.clock.now();
        let user = User::new(
            UserId::new_v7(now, random(&*self.ports.rng)),
            new.email,
            new.name,
            now,
        );
        let roles = if new.roles.is_empty() {
            vec![RoleName::parse("member").ok_or_else(|| UserError::Internal("role".into()))?]
        } else {
            new.roles
        };
        let mut uow = self.ports.store.begin().await?;
        if uow.tenant(tenant).await?.is_none() {
            return Err(UserError::TenantNotFound);
        }
        uow.insert_user(&user, hash.as_ref()).await?;
        uow.insert_membership(&Membership {
            tenant,
            user: user.id,
            roles,
            created_at: now,
        })
        .await?;
        uow.commit().await?;
        info!(user.id = %user.id, tenant.id = %tenant, "user created");
        Ok(user)
    }

    /// A member of the tenant.
    pub async fn get(&self, tenant: TenantId, id: UserId) -> Result<User, UserError> {
        let mut uow = self.ports.store.begin().await?;
        let user = member(&mut *uow, tenant, id).await?;
        uow.commit().await?;
        Ok(user)
    }

    /// Members of the tenant in a stable order, `limit` (1–200) at a time.
    pub async fn list(
        &self,
        tenant: TenantId,
        filter: &UserFilter,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<UserPage, UserError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut uow = self.ports.store.begin().await?;
        let mut users = uow.list_members(tenant, filter, after, limit + 1).await?;
        uow.commit().await?;
        let next = if users.len() > limit {
            users.truncate(limit);
            users.last().map(|u| u.id)
        } else {
            None
        };
        Ok(UserPage { users, next })
    }

    /// Changes a member's name or status. Leaving `active` ends every session of the user.
    pub async fn update(
        &self,
        tenant: TenantId,
        id: UserId,
        changes: UserChanges,
    ) -> Result<User, UserError> {
        let now = self.ports.clock.now();
        let mut uow = self.ports.store.begin().await?;
        let mut user = member(&mut *uow, tenant, id).await?;
        let old_status = user.status;
        if let Some(name) = changes.name {
            user.name = name;
        }
        if let Some(status) = changes.status {
            user.status = status;
        }
        user.updated_at = now;
        uow.update_user(&user).await?;
        let revoked = if user.status != UserStatus::Active && old_status == UserStatus::Active {
            uow.revoke_user_sessions(user.id, None, now).await?
        } else {
            Vec::new()
        };
        uow.commit().await?;
        if user.status != old_status {
            info!(user.id = %user.id, status = user.status.as_str(), "user status changed");
            self.publish(RevocationEvent::UserStatus(user.id, user.status))
                .await;
        }
        for session in revoked {
            self.publish(RevocationEvent::SessionRevoked(session)).await;
        }
        Ok(user)
    }

    /// Soft-deletes a member: kept for audit and restore, refused everywhere, sessions ended.
    pub async fn delete(&self, tenant: TenantId, id: UserId) -> Result<(), UserError> {
        self.update(
            tenant,
            id,
            UserChanges {
                status: Some(UserStatus::Deleted),
                ..UserChanges::default()
            },
        )
        .await
        .map(|_| ())
    }

    async fn publish(&self, event: RevocationEvent) {
        // User and session events never need the store, so this cannot fail.
        let _ = self.view.apply(event).await;
    }
}

/// The user, if they are a member of the tenant.
async fn member(
    uow: &mut dyn iam_ports::UnitOfWork,
    tenant: TenantId,
    id: UserId,
) -> Result<User, UserError> {
    if uow.membership(id, tenant).await?.is_none() {
        return Err(UserError::NotFound);
    }
    uow.user_by_id(id).await?.ok_or(UserError::NotFound)
}
