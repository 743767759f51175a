//! IamService: user management within a tenant.

use std::sync::Arc;

use iam_application::{NewUser, UserChanges, UserService};
use iam_domain::{DisplayName, Email, Password, RoleName};
use iam_ports::UserFilter;
use tonic::{Request, Response, Status};

use crate::convert::{status_from_pb, tenant_id, user, user_id};
use crate::pb::{self, iam_service_server};
use crate::status::{self, invalid};

/// Users per page when the caller does not say.
const DEFAULT_PAGE: usize = 50;

/// The IamService implementation.
pub struct Users {
    users: Arc<UserService>,
}

impl Users {
    pub fn new(users: Arc<UserService>) -> Self {
        Self { users }
    }
}

#[tonic::async_trait]
impl iam_service_server::IamService for Users {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let req = request.into_inner();
        let tenant = tenant_id("tenant_id", &req.tenant_id)?;
        let email = Email::parse(&req.email).map_err(|e| invalid("email", e))?;
        let name = DisplayName::parse(&req.name).map_err(|e| invalid("name", e))?;
        let password = if req.password.is_empty() {
            None
        } else {
            Some(Password::new(&req.password).map_err(|e| invalid("password", e))?)
        };
        let roles = req
            .roles
            .iter()
            .map(|r| {
                RoleName::parse(r)
                    .ok_or_else(|| invalid("roles", format!("`{r}` is not a role name")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let created = self
            .users
            .create(
                tenant,
                NewUser {
                    email,
                    name,
                    password,
                    roles,
                },
            )
            .await
            .map_err(status::user)?;
        Ok(Response::new(user(&created)))
    }

    async fn retrieve_user(
        &self,
        request: Request<pb::RetrieveUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let req = request.into_inner();
        let found = self
            .users
            .get(
                tenant_id("tenant_id", &req.tenant_id)?,
                user_id("user_id", &req.user_id)?,
            )
            .await
            .map_err(status::user)?;
        Ok(Response::new(user(&found)))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let req = request.into_inner();
        let tenant = tenant_id("tenant_id", &req.tenant_id)?;
        let limit = match req.page_size {
            0 => DEFAULT_PAGE,
            n @ 1..=200 => usize::try_from(n).unwrap_or(DEFAULT_PAGE),
            _ => return Err(invalid("page_size", "must be between 1 and 200")),
        };
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
            .list(tenant, &filter, after, limit)
            .await
            .map_err(status::user)?;
        Ok(Response::new(pb::ListUsersResponse {
            users: page.users.iter().map(user).collect(),
            next_page_token: page.next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
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
                tenant_id("tenant_id", &req.tenant_id)?,
                user_id("user_id", &req.user_id)?,
                UserChanges { name, status },
            )
            .await
            .map_err(status::user)?;
        Ok(Response::new(user(&updated)))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let req = request.into_inner();
        self.users
            .delete(
                tenant_id("tenant_id", &req.tenant_id)?,
                user_id("user_id", &req.user_id)?,
            )
            .await
            .map_err(status::user)?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }
}
