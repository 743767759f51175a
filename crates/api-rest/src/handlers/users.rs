//! User management in the caller's tenant: `/users`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use iam_application::{NewUser, UserChanges};
use iam_domain::{
    DisplayName, Email, Password, RoleId, RoleName, Timestamp, User, UserId, UserStatus,
};
use iam_ports::UserFilter;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Fields;
use crate::AppState;
use crate::extract::{AdminActor, ApiJson, ApiQuery, path_id};
use crate::problem::{ApiError, Problem};

/// A user as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct UserBody {
    id: Uuid,
    email: String,
    name: String,
    /// `active`, `disabled` or `deleted`.
    status: &'static str,
    email_verified: bool,
    /// Free-form JSON object.
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
    /// The user's roles in this tenant (on single-user answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<Vec<String>>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
}

pub(crate) fn body(user: &User, roles: Option<Vec<RoleName>>) -> UserBody {
    UserBody {
        id: user.id.as_uuid(),
        email: user.email.as_str().to_owned(),
        name: user.name.as_str().to_owned(),
        status: user.status.as_str(),
        email_verified: user.email_verified,
        metadata: user.metadata.to_value(),
        roles: roles.map(|r| r.iter().map(|n| n.as_str().to_owned()).collect()),
        created_at: user.created_at,
        updated_at: user.updated_at,
    }
}

/// A user to create in the caller's tenant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    #[schema(example = "grace@example.com")]
    email: String,
    name: String,
    /// Optional; at least 12 characters. Without one the user sets it through a reset.
    #[serde(default)]
    #[schema(format = Password, min_length = 12)]
    password: Option<String>,
    /// Role names in the tenant; `member` when empty.
    #[serde(default)]
    roles: Vec<String>,
    /// A JSON object (at most 4 KiB).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

const PROBLEM: &str = "application/problem+json";

/// Creates a user in the caller's tenant.
#[utoipa::path(
    post, path = "/users", tag = "users",
    security(("bearer" = [])),
    request_body = CreateUserRequest,
    responses(
        (status = 201, description = "Created", body = UserBody),
        (status = 401, description = "Missing or unusable access token", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Requires iam.users.write (and every permission of the roles given)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "A role is not the tenant's", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The email is taken", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid fields", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn create_user(
    State(state): State<AppState>,
    admin: AdminActor,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<UserBody>), ApiError> {
    let mut fields = Fields::default();
    let email = fields.check("email", Email::parse(&req.email));
    let name = fields.check("name", DisplayName::parse(&req.name));
    let password = req
        .password
        .as_deref()
        .map(|p| fields.check("password", Password::new(p)));
    let roles = role_names(&mut fields, &req.roles);
    let metadata = fields.metadata(req.metadata);
    fields.finish()?;
    let (Some(email), Some(name), Some(metadata)) = (email, name, metadata) else {
        return Err(ApiError::validation(Vec::new()));
    };
    let user = state
        .users
        .create(
            &admin.actor,
            admin.tenant,
            NewUser {
                email,
                name,
                password: password.flatten(),
                roles: roles.clone(),
                metadata,
            },
        )
        .await?;
    let roles = if roles.is_empty() {
        vec![RoleName::member()]
    } else {
        roles
    };
    Ok((StatusCode::CREATED, Json(body(&user, Some(roles)))))
}

pub(crate) fn role_names(fields: &mut Fields, raw: &[String]) -> Vec<RoleName> {
    raw.iter()
        .filter_map(|r| {
            fields.check(
                "roles",
                RoleName::parse(r).ok_or_else(|| format!("`{r}` is not a role name")),
            )
        })
        .collect()
}

/// Paging and filters for the user list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListUsersQuery {
    /// 1 to 200; 50 by default.
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only emails starting with this (case-insensitive).
    email_prefix: Option<String>,
    /// `active`, `disabled` or `deleted`.
    status: Option<String>,
}

/// One page of users.
#[derive(Serialize, ToSchema)]
pub struct UserList {
    items: Vec<UserBody>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// Lists the tenant's users in a stable order (by id), a page at a time.
#[utoipa::path(
    get, path = "/users", tag = "users",
    security(("bearer" = [])),
    params(ListUsersQuery),
    responses(
        (status = 200, description = "A page of users", body = UserList),
        (status = 400, description = "Bad query parameters", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Requires iam.users.read", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid filter values", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn list_users(
    State(state): State<AppState>,
    admin: AdminActor,
    ApiQuery(q): ApiQuery<ListUsersQuery>,
) -> Result<Json<UserList>, ApiError> {
    let mut fields = Fields::default();
    let limit = fields.page_limit(q.limit);
    let after = fields.cursor::<UserId>(q.cursor.as_deref());
    let status = q.status.as_deref().map(|s| {
        fields.check(
            "status",
            UserStatus::parse(s).ok_or("must be active, disabled or deleted"),
        )
    });
    fields.finish()?;
    let filter = UserFilter {
        email_prefix: q
            .email_prefix
            .map(|p| p.trim().to_lowercase())
            .filter(|p| !p.is_empty()),
        status: status.flatten(),
    };
    let page = state
        .users
        .list(&admin.actor, admin.tenant, &filter, after, limit)
        .await?;
    Ok(Json(UserList {
        items: page.users.iter().map(|u| body(u, None)).collect(),
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

/// One user of the tenant, with their roles.
#[utoipa::path(
    get, path = "/users/{id}", tag = "users",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "The user", body = UserBody),
        (status = 403, description = "Requires iam.users.read", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such user in this tenant", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn get_user(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
) -> Result<Json<UserBody>, ApiError> {
    let id = path_id::<UserId>(&id)?;
    let user = state.users.get(&admin.actor, admin.tenant, id).await?;
    let roles = state.users.roles_of(&admin.actor, admin.tenant, id).await?;
    Ok(Json(body(&user, Some(roles))))
}

/// Changes to a user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    #[serde(default)]
    name: Option<String>,
    /// `active` or `disabled` (delete with `DELETE /users/{id}`). Leaving `active` ends every
    /// session of the user.
    #[serde(default)]
    status: Option<String>,
    /// An RFC 7386 merge patch over the metadata: `null` removes a key.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

/// Changes a user's name, status or metadata.
#[utoipa::path(
    patch, path = "/users/{id}", tag = "users",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "The changed user", body = UserBody),
        (status = 403, description = "Requires iam.users.write", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such user in this tenant", body = Problem, content_type = PROBLEM),
        (status = 409, description = "Deleted user, or the tenant's last owner", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid fields", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn update_user(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> Result<Json<UserBody>, ApiError> {
    let id = path_id::<UserId>(&id)?;
    let mut fields = Fields::default();
    let name = req
        .name
        .as_deref()
        .map(|n| fields.check("name", DisplayName::parse(n)));
    let status = req.status.as_deref().map(|s| {
        fields.check(
            "status",
            match UserStatus::parse(s) {
                Some(s @ (UserStatus::Active | UserStatus::Disabled)) => Ok(s),
                _ => Err("must be active or disabled"),
            },
        )
    });
    let metadata = fields.merge_patch(req.metadata);
    fields.finish()?;
    let user = state
        .users
        .update(
            &admin.actor,
            admin.tenant,
            id,
            UserChanges {
                name: name.flatten(),
                status: status.flatten(),
                metadata,
            },
        )
        .await?;
    Ok(Json(body(&user, None)))
}

/// Soft-deletes a user: sessions end, sign-in and refresh are refused, data is kept.
#[utoipa::path(
    delete, path = "/users/{id}", tag = "users",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 204, description = "Deleted (or deleted already)"),
        (status = 403, description = "Requires iam.users.delete", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such user in this tenant", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The tenant's last owner", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn delete_user(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_id::<UserId>(&id)?;
    state.users.delete(&admin.actor, admin.tenant, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Restores a soft-deleted user exactly as they were; old sessions stay ended.
#[utoipa::path(
    patch, path = "/users/{id}/restore", tag = "users",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "Restored", body = UserBody),
        (status = 403, description = "Requires iam.users.delete and iam.users.write", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such user in this tenant", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The user is not deleted, or belongs to other tenants too", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn restore_user(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
) -> Result<Json<UserBody>, ApiError> {
    let id = path_id::<UserId>(&id)?;
    let user = state.users.restore(&admin.actor, admin.tenant, id).await?;
    Ok(Json(body(&user, None)))
}

/// A role to grant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRoleRequest {
    role_id: Uuid,
}

/// A user's roles in the tenant.
#[derive(Serialize, ToSchema)]
pub struct UserRoles {
    user_id: Uuid,
    roles: Vec<String>,
}

/// Grants a role of the tenant to a user (idempotent).
#[utoipa::path(
    post, path = "/users/{id}/roles", tag = "rbac",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    request_body = AssignRoleRequest,
    responses(
        (status = 200, description = "The user's roles now", body = UserRoles),
        (status = 403, description = "Requires iam.roles.assign and every permission of the role", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such user or role in this tenant", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn assign_role(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AssignRoleRequest>,
) -> Result<Json<UserRoles>, ApiError> {
    let id = path_id::<UserId>(&id)?;
    let roles = state
        .rbac
        .assign(
            &admin.actor,
            admin.tenant,
            id,
            RoleId::from_uuid(req.role_id),
        )
        .await?;
    Ok(Json(UserRoles {
        user_id: id.as_uuid(),
        roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
    }))
}

/// Takes a role from a user (idempotent); the last active owner keeps `owner`.
#[utoipa::path(
    delete, path = "/users/{id}/roles/{role_id}", tag = "rbac",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "User id"),
        ("role_id" = Uuid, Path, description = "Role id"),
    ),
    responses(
        (status = 204, description = "The user does not hold the role now"),
        (status = 403, description = "Requires iam.roles.assign and every permission of the role", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such user or role in this tenant", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The tenant's last active owner", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn unassign_role(
    State(state): State<AppState>,
    admin: AdminActor,
    Path((id, role)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = path_id::<UserId>(&id)?;
    let role = path_id::<RoleId>(&role)?;
    state
        .rbac
        .unassign(&admin.actor, admin.tenant, id, role)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
