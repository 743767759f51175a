//! Roles, the permission catalogue and the audit log of the caller's tenant.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use iam_application::{NewRole, RoleChanges};
use iam_domain::rbac::parse_description;
use iam_domain::{
    AuditActor, AuditEvent, AuditId, Permission, PermissionDef, Role, RoleId, RoleName, Timestamp,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Fields, PageQuery, paging};
use crate::AppState;
use crate::extract::{AdminActor, ApiJson, ApiQuery, path_id};
use crate::problem::{ApiError, Problem};

const PROBLEM: &str = "application/problem+json";

/// A role of the tenant.
#[derive(Serialize, ToSchema)]
pub struct RoleBody {
    id: Uuid,
    name: String,
    description: String,
    /// `owner`, `admin` and `member` are system roles: they cannot be changed or deleted.
    system: bool,
    /// What the role grants (an owner holds every permission of the catalogue).
    permissions: Vec<String>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
}

fn role_body(r: &Role) -> RoleBody {
    RoleBody {
        id: r.id.as_uuid(),
        name: r.name.as_str().to_owned(),
        description: r.description.clone(),
        system: r.system.is_some(),
        permissions: r
            .permissions
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// The tenant's roles.
#[derive(Serialize, ToSchema)]
pub struct RoleList {
    items: Vec<RoleBody>,
}

/// A custom role.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoleRequest {
    /// 1–64 of a-z, 0-9, `-`, `_`, `.`; not `owner`, `admin` or `member`.
    #[schema(example = "billing-manager")]
    name: String,
    #[serde(default)]
    description: Option<String>,
    /// Permissions of the catalogue, each held by the caller.
    #[serde(default)]
    permissions: Vec<String>,
}

fn permission_set(fields: &mut Fields, raw: &[String]) -> BTreeSet<Permission> {
    raw.iter()
        .filter_map(|p| fields.check("permissions", Permission::parse(p)))
        .collect()
}

/// Creates a custom role.
#[utoipa::path(
    post, path = "/roles", tag = "rbac",
    security(("bearer" = [])),
    request_body = CreateRoleRequest,
    responses(
        (status = 201, description = "Created", body = RoleBody),
        (status = 403, description = "Requires iam.roles.write and every permission given", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The name is taken or reserved", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid fields or unknown permissions", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn create_role(
    State(state): State<AppState>,
    admin: AdminActor,
    ApiJson(req): ApiJson<CreateRoleRequest>,
) -> Result<(StatusCode, Json<RoleBody>), ApiError> {
    let mut fields = Fields::default();
    let name = fields.check(
        "name",
        RoleName::parse(&req.name).ok_or("1–64 of a-z, 0-9, -, _ and ."),
    );
    let description = fields.check(
        "description",
        parse_description(req.description.as_deref().unwrap_or_default()),
    );
    let permissions = permission_set(&mut fields, &req.permissions);
    fields.finish()?;
    let (Some(name), Some(description)) = (name, description) else {
        return Err(ApiError::validation(Vec::new()));
    };
    let role = state
        .rbac
        .create_role(
            &admin.actor,
            admin.tenant,
            NewRole {
                name,
                description,
                permissions,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(role_body(&role))))
}

/// Lists the tenant's roles: the system roles, then the custom ones by name.
#[utoipa::path(
    get, path = "/roles", tag = "rbac",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The roles", body = RoleList),
        (status = 403, description = "Requires iam.roles.read", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn list_roles(
    State(state): State<AppState>,
    admin: AdminActor,
) -> Result<Json<RoleList>, ApiError> {
    let roles = state.rbac.list_roles(&admin.actor, admin.tenant).await?;
    Ok(Json(RoleList {
        items: roles.iter().map(role_body).collect(),
    }))
}

/// One role of the tenant.
#[utoipa::path(
    get, path = "/roles/{id}", tag = "rbac",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Role id")),
    responses(
        (status = 200, description = "The role", body = RoleBody),
        (status = 403, description = "Requires iam.roles.read", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such role in this tenant", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn get_role(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
) -> Result<Json<RoleBody>, ApiError> {
    let id = path_id::<RoleId>(&id)?;
    let role = state.rbac.get_role(&admin.actor, admin.tenant, id).await?;
    Ok(Json(role_body(&role)))
}

/// Changes to a custom role.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRoleRequest {
    /// A new name, carried into every membership holding the role (and so into new tokens).
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    /// Replaces the role's permissions.
    #[serde(default)]
    permissions: Option<Vec<String>>,
}

/// Changes a custom role. Tokens naming it resolve to its new permissions in ValidateToken at
/// once.
#[utoipa::path(
    patch, path = "/roles/{id}", tag = "rbac",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Role id")),
    request_body = UpdateRoleRequest,
    responses(
        (status = 200, description = "The changed role", body = RoleBody),
        (status = 403, description = "Requires iam.roles.write and every permission of the role, before and after", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such role in this tenant", body = Problem, content_type = PROBLEM),
        (status = 409, description = "A system role, or the name is taken", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid fields or unknown permissions", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn update_role(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateRoleRequest>,
) -> Result<Json<RoleBody>, ApiError> {
    let id = path_id::<RoleId>(&id)?;
    let mut fields = Fields::default();
    let name = req.name.as_deref().map(|n| {
        fields.check(
            "name",
            RoleName::parse(n).ok_or("1–64 of a-z, 0-9, -, _ and ."),
        )
    });
    let description = req
        .description
        .as_deref()
        .map(|d| fields.check("description", parse_description(d)));
    let permissions = req
        .permissions
        .as_deref()
        .map(|p| permission_set(&mut fields, p));
    fields.finish()?;
    let role = state
        .rbac
        .update_role(
            &admin.actor,
            admin.tenant,
            id,
            RoleChanges {
                name: name.flatten(),
                description: description.flatten(),
                permissions,
            },
        )
        .await?;
    Ok(Json(role_body(&role)))
}

/// Deletes a custom role; members holding it lose it.
#[utoipa::path(
    delete, path = "/roles/{id}", tag = "rbac",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Role id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Requires iam.roles.write and every permission of the role", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such role in this tenant", body = Problem, content_type = PROBLEM),
        (status = 409, description = "A system role", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn delete_role(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_id::<RoleId>(&id)?;
    state
        .rbac
        .delete_role(&admin.actor, admin.tenant, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An entry of the permission catalogue.
#[derive(Serialize, ToSchema)]
pub struct PermissionBody {
    name: String,
    description: String,
    /// The IAM's own (fixed in code), or registered by another module.
    builtin: bool,
}

/// The permission catalogue.
#[derive(Serialize, ToSchema)]
pub struct PermissionList {
    items: Vec<PermissionBody>,
}

fn permission_body(d: &PermissionDef) -> PermissionBody {
    PermissionBody {
        name: d.name.as_str().to_owned(),
        description: d.description.clone(),
        builtin: d.builtin,
    }
}

/// The permission catalogue: the IAM's own permissions, then other modules'.
#[utoipa::path(
    get, path = "/permissions", tag = "rbac",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The catalogue", body = PermissionList),
        (status = 403, description = "Requires iam.permissions.read", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn list_permissions(
    State(state): State<AppState>,
    admin: AdminActor,
) -> Result<Json<PermissionList>, ApiError> {
    let all = state.rbac.permissions(&admin.actor, admin.tenant).await?;
    Ok(Json(PermissionList {
        items: all.iter().map(permission_body).collect(),
    }))
}

/// A module's permission.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterPermissionRequest {
    /// Namespaced, outside `iam.` (e.g. `billing.invoices.read`).
    #[schema(example = "billing.invoices.read")]
    name: String,
    #[serde(default)]
    description: Option<String>,
}

/// Registers (or re-describes) another module's permission. Callers in the platform's root
/// tenant only.
#[utoipa::path(
    post, path = "/permissions", tag = "rbac",
    security(("bearer" = [])),
    request_body = RegisterPermissionRequest,
    responses(
        (status = 201, description = "Registered", body = PermissionBody),
        (status = 403, description = "Requires iam.permissions.write in the platform's root tenant", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Malformed or reserved name", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn register_permission(
    State(state): State<AppState>,
    admin: AdminActor,
    ApiJson(req): ApiJson<RegisterPermissionRequest>,
) -> Result<(StatusCode, Json<PermissionBody>), ApiError> {
    let mut fields = Fields::default();
    let name = fields.check("name", Permission::parse_external(&req.name));
    let description = fields.check(
        "description",
        parse_description(req.description.as_deref().unwrap_or_default()),
    );
    fields.finish()?;
    let (Some(name), Some(description)) = (name, description) else {
        return Err(ApiError::validation(Vec::new()));
    };
    let def = state
        .rbac
        .register_permission(
            &admin.actor,
            admin.tenant,
            PermissionDef {
                name,
                description,
                builtin: false,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(permission_body(&def))))
}

/// One administrative action.
#[derive(Serialize, ToSchema)]
pub struct AuditBody {
    id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    at: Timestamp,
    /// `user` or `service`.
    actor_kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor_user_id: Option<Uuid>,
    tenant_id: Uuid,
    /// `users.create`, `roles.assign`, …
    action: String,
    /// The resource acted on, e.g. `users/<id>`.
    target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    /// `success`, `denied` or `failed`.
    outcome: &'static str,
}

fn audit_body(e: &AuditEvent) -> AuditBody {
    let (actor_kind, actor_user_id) = match e.actor {
        AuditActor::User(id) => ("user", Some(id.as_uuid())),
        AuditActor::Service => ("service", None),
    };
    AuditBody {
        id: e.id.0,
        at: e.at,
        actor_kind,
        actor_user_id,
        tenant_id: e.tenant.as_uuid(),
        action: e.action.clone(),
        target: e.target.clone(),
        request_id: e.request_id.clone(),
        outcome: e.outcome.as_str(),
    }
}

/// A page of audit events, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditList {
    items: Vec<AuditBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// The tenant's audit trail, newest first: every administrative change, and every refused one.
#[utoipa::path(
    get, path = "/audit-events", tag = "rbac",
    security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of events", body = AuditList),
        (status = 403, description = "Requires iam.audit.read", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid paging", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn list_audit_events(
    State(state): State<AppState>,
    admin: AdminActor,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<AuditList>, ApiError> {
    let (limit, before) = paging::<Uuid>(&q)?;
    let before = before.map(AuditId);
    let page = state
        .rbac
        .audit_events(&admin.actor, admin.tenant, before, limit)
        .await?;
    Ok(Json(AuditList {
        items: page.events.iter().map(audit_body).collect(),
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}
