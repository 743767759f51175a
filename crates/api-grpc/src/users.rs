//! IamService: user and role management within a tenant.

use std::collections::BTreeSet;
use std::sync::Arc;

use iam_application::{
    Actor, AuthService, NewRole, NewUser, RbacService, RoleChanges, UserChanges, UserService,
};
use iam_domain::rbac::parse_description;
use iam_domain::{
    AuditActor, AuditId, AuditOutcome, DisplayName, Email, Metadata, Password, Permission,
    PermissionDef, RoleName,
};
use iam_ports::UserFilter;
use tonic::{Request, Response, Status};

use crate::convert::{role, role_id, status_from_pb, struct_to_json, tenant_id, ts, user, user_id};
use crate::pb::{self, iam_service_server};
use crate::status::{self, invalid};

/// Users per page when the caller does not say.
const DEFAULT_PAGE: usize = 50;

/// The IamService implementation.
pub struct Users {
    users: Arc<UserService>,
    rbac: Arc<RbacService>,
    auth: Arc<AuthService>,
}

impl Users {
    pub fn new(users: Arc<UserService>, rbac: Arc<RbacService>, auth: Arc<AuthService>) -> Self {
        Self { users, rbac, auth }
    }

    /// The calling service, or the end user whose access token it forwards.
    async fn actor<T>(&self, request: &Request<T>) -> Result<Actor, Status> {
        let meta = request.metadata();
        let request_id = meta
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 128)
            .map(str::to_owned);
        match meta.get("x-iam-user-token") {
            None => Ok(Actor::service(request_id)),
            Some(token) => {
                let token = token
                    .to_str()
                    .map_err(|_| Status::unauthenticated("x-iam-user-token is not valid"))?;
                let principal = self
                    .auth
                    .authenticate(token.trim())
                    .await
                    .map_err(status::auth)?;
                Ok(Actor::user(principal, request_id))
            }
        }
    }
}

fn role_names(raw: &[String]) -> Result<Vec<RoleName>, Status> {
    raw.iter()
        .map(|r| {
            RoleName::parse(r).ok_or_else(|| invalid("roles", format!("`{r}` is not a role name")))
        })
        .collect()
}

fn permission_set(raw: &[String]) -> Result<BTreeSet<Permission>, Status> {
    raw.iter()
        .map(|p| Permission::parse(p).map_err(|e| invalid("permissions", e)))
        .collect()
}

fn page_size(raw: i32) -> Result<usize, Status> {
    match raw {
        0 => Ok(DEFAULT_PAGE),
        n @ 1..=200 => Ok(usize::try_from(n).unwrap_or(DEFAULT_PAGE)),
        _ => Err(invalid("page_size", "must be between 1 and 200")),
    }
}

fn user_roles(user: iam_domain::UserId, roles: &[RoleName]) -> pb::UserRoles {
    pb::UserRoles {
        user_id: user.to_string(),
        roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
    }
}

#[tonic::async_trait]
impl iam_service_server::IamService for Users {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let tenant = tenant_id("tenant_id", &req.tenant_id)?;
        let email = Email::parse(&req.email).map_err(|e| invalid("email", e))?;
        let name = DisplayName::parse(&req.name).map_err(|e| invalid("name", e))?;
        let password = if req.password.is_empty() {
            None
        } else {
            Some(Password::new(&req.password).map_err(|e| invalid("password", e))?)
        };
        let roles = role_names(&req.roles)?;
        let metadata = match &req.metadata {
            Some(m) => Metadata::parse(struct_to_json(m)).map_err(|e| invalid("metadata", e))?,
            None => Metadata::default(),
        };
        let created = self
            .users
            .create(
                &actor,
                tenant,
                NewUser {
                    email,
                    name,
                    password,
                    roles,
                    metadata,
                },
            )
            .await
            .map_err(status::admin)?;
        Ok(Response::new(user(&created)))
    }

    async fn retrieve_user(
        &self,
        request: Request<pb::RetrieveUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let found = self
            .users
            .get(
                &actor,
                tenant_id("tenant_id", &req.tenant_id)?,
                user_id("user_id", &req.user_id)?,
            )
            .await
            .map_err(status::admin)?;
        Ok(Response::new(user(&found)))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let tenant = tenant_id("tenant_id", &req.tenant_id)?;
        let limit = page_size(req.page_size)?;
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(user_id("page_token", &req.page_token)?)
        };
        let filter = UserFilter {
            email_prefix: (!req.email_prefix.is_empty())
                .then(|| req.email_prefix.trim().to_lowercase()),
            status: status_from_pb("status", req.status)?,
        };
        let page = self
            .users
            .list(&actor, tenant, &filter, after, limit)
            .await
            .map_err(status::admin)?;
        Ok(Response::new(pb::ListUsersResponse {
            users: page.users.iter().map(user).collect(),
            next_page_token: page.next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let name = req
            .name
            .as_deref()
            .map(|n| DisplayName::parse(n).map_err(|e| invalid("name", e)))
            .transpose()?;
        let status = match req.status {
            Some(raw) => Some(
                status_from_pb("status", raw)?
                    .ok_or_else(|| invalid("status", "must not be unspecified"))?,
            ),
            None => None,
        };
        let updated = self
            .users
            .update(
                &actor,
                tenant_id("tenant_id", &req.tenant_id)?,
                user_id("user_id", &req.user_id)?,
                UserChanges {
                    name,
                    status,
                    metadata: req.metadata.as_ref().map(struct_to_json),
                },
            )
            .await
            .map_err(status::admin)?;
        Ok(Response::new(user(&updated)))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        self.users
            .delete(
                &actor,
                tenant_id("tenant_id", &req.tenant_id)?,
                user_id("user_id", &req.user_id)?,
            )
            .await
            .map_err(status::admin)?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn restore_user(
        &self,
        request: Request<pb::RestoreUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let restored = self
            .users
            .restore(
                &actor,
                tenant_id("tenant_id", &req.tenant_id)?,
                user_id("user_id", &req.user_id)?,
            )
            .await
            .map_err(status::admin)?;
        Ok(Response::new(user(&restored)))
    }

    async fn create_role(
        &self,
        request: Request<pb::CreateRoleRequest>,
    ) -> Result<Response<pb::Role>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let new = NewRole {
            name: RoleName::parse(&req.name)
                .ok_or_else(|| invalid("name", "1–64 of a-z, 0-9, -, _ and ."))?,
            description: parse_description(&req.description)
                .map_err(|e| invalid("description", e))?,
            permissions: permission_set(&req.permissions)?,
        };
        let created = self
            .rbac
            .create_role(&actor, tenant_id("tenant_id", &req.tenant_id)?, new)
            .await
            .map_err(status::admin)?;
        Ok(Response::new(role(&created)))
    }

    async fn list_roles(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let roles = self
            .rbac
            .list_roles(&actor, tenant_id("tenant_id", &req.tenant_id)?)
            .await
            .map_err(status::admin)?;
        Ok(Response::new(pb::ListRolesResponse {
            roles: roles.iter().map(role).collect(),
        }))
    }

    async fn get_role(
        &self,
        request: Request<pb::GetRoleRequest>,
    ) -> Result<Response<pb::Role>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let found = self
            .rbac
            .get_role(
                &actor,
                tenant_id("tenant_id", &req.tenant_id)?,
                role_id("role_id", &req.role_id)?,
            )
            .await
            .map_err(status::admin)?;
        Ok(Response::new(role(&found)))
    }

    async fn update_role(
        &self,
        request: Request<pb::UpdateRoleRequest>,
    ) -> Result<Response<pb::Role>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let changes = RoleChanges {
            name: req
                .name
                .as_deref()
                .map(|n| {
                    RoleName::parse(n)
                        .ok_or_else(|| invalid("name", "1–64 of a-z, 0-9, -, _ and ."))
                })
                .transpose()?,
            description: req
                .description
                .as_deref()
                .map(|d| parse_description(d).map_err(|e| invalid("description", e)))
                .transpose()?,
            permissions: req
                .permissions
                .as_ref()
                .map(|p| permission_set(&p.permissions))
                .transpose()?,
        };
        let updated = self
            .rbac
            .update_role(
                &actor,
                tenant_id("tenant_id", &req.tenant_id)?,
                role_id("role_id", &req.role_id)?,
                changes,
            )
            .await
            .map_err(status::admin)?;
        Ok(Response::new(role(&updated)))
    }

    async fn delete_role(
        &self,
        request: Request<pb::DeleteRoleRequest>,
    ) -> Result<Response<pb::DeleteRoleResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        self.rbac
            .delete_role(
                &actor,
                tenant_id("tenant_id", &req.tenant_id)?,
                role_id("role_id", &req.role_id)?,
            )
            .await
            .map_err(status::admin)?;
        Ok(Response::new(pb::DeleteRoleResponse {}))
    }

    async fn assign_role(
        &self,
        request: Request<pb::AssignRoleRequest>,
    ) -> Result<Response<pb::UserRoles>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let user = user_id("user_id", &req.user_id)?;
        let roles = self
            .rbac
            .assign(
                &actor,
                tenant_id("tenant_id", &req.tenant_id)?,
                user,
                role_id("role_id", &req.role_id)?,
            )
            .await
            .map_err(status::admin)?;
        Ok(Response::new(user_roles(user, &roles)))
    }

    async fn unassign_role(
        &self,
        request: Request<pb::UnassignRoleRequest>,
    ) -> Result<Response<pb::UserRoles>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let user = user_id("user_id", &req.user_id)?;
        let roles = self
            .rbac
            .unassign(
                &actor,
                tenant_id("tenant_id", &req.tenant_id)?,
                user,
                role_id("role_id", &req.role_id)?,
            )
            .await
            .map_err(status::admin)?;
        Ok(Response::new(user_roles(user, &roles)))
    }

    async fn list_permissions(
        &self,
        request: Request<pb::ListPermissionsRequest>,
    ) -> Result<Response<pb::ListPermissionsResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let all = self
            .rbac
            .permissions(&actor, tenant_id("tenant_id", &req.tenant_id)?)
            .await
            .map_err(status::admin)?;
        Ok(Response::new(pb::ListPermissionsResponse {
            permissions: all.iter().map(permission_info).collect(),
        }))
    }

    async fn register_permission(
        &self,
        request: Request<pb::RegisterPermissionRequest>,
    ) -> Result<Response<pb::PermissionInfo>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let def = PermissionDef {
            name: Permission::parse_external(&req.name).map_err(|e| invalid("name", e))?,
            description: parse_description(&req.description)
                .map_err(|e| invalid("description", e))?,
            builtin: false,
        };
        let def = self
            .rbac
            .register_permission(&actor, tenant_id("tenant_id", &req.tenant_id)?, def)
            .await
            .map_err(status::admin)?;
        Ok(Response::new(permission_info(&def)))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let actor = self.actor(&request).await?;
        let req = request.into_inner();
        let before = if req.page_token.is_empty() {
            None
        } else {
            Some(AuditId(req.page_token.parse().map_err(|_| {
                invalid("page_token", "not a token from this API")
            })?))
        };
        let page = self
            .rbac
            .audit_events(
                &actor,
                tenant_id("tenant_id", &req.tenant_id)?,
                before,
                page_size(req.page_size)?,
            )
            .await
            .map_err(status::admin)?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: page
                .events
                .iter()
                .map(|e| pb::AuditEvent {
                    id: e.id.to_string(),
                    at: Some(ts(e.at)),
                    actor_user_id: match e.actor {
                        AuditActor::User(id) => id.to_string(),
                        AuditActor::Service => String::new(),
                    },
                    tenant_id: e.tenant.to_string(),
                    action: e.action.clone(),
                    target: e.target.clone(),
                    request_id: e.request_id.clone().unwrap_or_default(),
                    outcome: match e.outcome {
                        AuditOutcome::Success => pb::AuditOutcome::Success,
                        AuditOutcome::Denied => pb::AuditOutcome::Denied,
                        AuditOutcome::Failed => pb::AuditOutcome::Failed,
                    }
                    .into(),
                })
                .collect(),
            next_page_token: page.next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }
}

fn permission_info(d: &PermissionDef) -> pb::PermissionInfo {
    pb::PermissionInfo {
        name: d.name.as_str().to_owned(),
        description: d.description.clone(),
        builtin: d.builtin,
    }
}
