//! The tenant tree: `/tenants`. Every tenant named in a path must be the caller's own or one
//! below it that the caller manages (`iam.tenants.manage-descendants`); any other is 404.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use iam_application::{NewTenant, TenantChanges, TenantPage};
use iam_domain::{Tenant, TenantId, TenantName, Timestamp, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::users::{UserBody, body as user_body};
use super::{Fields, PageQuery, paging};
use crate::AppState;
use crate::extract::{AdminActor, ApiJson, ApiQuery, path_id};
use crate::problem::{ApiError, Problem};

const PROBLEM: &str = "application/problem+json";

/// A tenant as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct TenantBody {
    id: Uuid,
    name: String,
    /// The tenant above; absent for a top-level tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<Uuid>,
    owner_id: Uuid,
    /// The tenant's own status, `active` or `blocked` (a blocked ancestor blocks it too).
    status: &'static str,
    /// Free-form JSON object.
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
}

fn body(t: &Tenant) -> TenantBody {
    TenantBody {
        id: t.id.as_uuid(),
        name: t.name.as_str().to_owned(),
        parent_id: t.parent.map(|p| p.as_uuid()),
        owner_id: t.owner.as_uuid(),
        status: t.status.as_str(),
        metadata: t.metadata.to_value(),
        created_at: t.created_at,
        updated_at: t.updated_at,
    }
}

/// A page of tenants.
#[derive(Serialize, ToSchema)]
pub struct TenantList {
    items: Vec<TenantBody>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

fn list(page: TenantPage) -> TenantList {
    TenantList {
        items: page.tenants.iter().map(body).collect(),
        next_cursor: page.next.map(|id| id.to_string()),
    }
}

/// A tenant to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    #[schema(example = "Acme Retail")]
    name: String,
    /// The parent: the caller's tenant or one it manages; the caller's tenant by default.
    #[serde(default)]
    parent_id: Option<String>,
    /// The owner: an active member of the parent; the caller by default.
    #[serde(default)]
    owner_id: Option<String>,
    /// A JSON object (at most 4 KiB).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

/// Creates a child tenant; its owner becomes its first member, as `owner`.
#[utoipa::path(
    post, path = "/tenants", tag = "tenants",
    security(("bearer" = [])),
    request_body = CreateTenantRequest,
    responses(
        (status = 201, description = "Created", body = TenantBody),
        (status = 401, description = "Missing or unusable access token", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Requires iam.tenants.write in the parent (and iam.tenants.manage-descendants below one's own tenant)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such parent the caller manages", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid fields, or an owner who is not an active member of the parent", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn create_tenant(
    State(state): State<AppState>,
    admin: AdminActor,
    ApiJson(req): ApiJson<CreateTenantRequest>,
) -> Result<(StatusCode, Json<TenantBody>), ApiError> {
    let mut fields = Fields::default();
    let name = fields.check("name", TenantName::parse(&req.name));
    let parent = req.parent_id.as_deref().map(|p| {
        fields.check(
            "parent_id",
            p.parse::<TenantId>().map_err(|_| "not a tenant id"),
        )
    });
    let owner = req
        .owner_id
        .as_deref()
        .map(|o| fields.check("owner_id", o.parse::<UserId>().map_err(|_| "not a user id")));
    let metadata = fields.metadata(req.metadata);
    fields.finish()?;
    let (Some(name), Some(metadata)) = (name, metadata) else {
        return Err(ApiError::validation(Vec::new()));
    };
    let tenant = state
        .tenants
        .create(
            &admin.actor,
            NewTenant {
                name,
                parent: Some(parent.flatten().unwrap_or(admin.tenant)),
                owner: owner.flatten(),
                metadata,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(body(&tenant))))
}

/// Lists every tenant below the caller's tenant (or below the one `X-Tenant-Id` names), by id.
#[utoipa::path(
    get, path = "/tenants", tag = "tenants",
    security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of descendants", body = TenantList),
        (status = 400, description = "Bad query parameters", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Requires iam.tenants.read", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid paging values", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn list_tenants(
    State(state): State<AppState>,
    admin: AdminActor,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<TenantList>, ApiError> {
    let (limit, after) = paging(&q)?;
    let page = state
        .tenants
        .descendants(&admin.actor, admin.tenant, after, limit)
        .await?;
    Ok(Json(list(page)))
}

/// One tenant.
#[utoipa::path(
    get, path = "/tenants/{id}", tag = "tenants",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The tenant", body = TenantBody),
        (status = 403, description = "Requires iam.tenants.read", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such tenant the caller manages", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn get_tenant(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
) -> Result<Json<TenantBody>, ApiError> {
    let id = path_id::<TenantId>(&id)?;
    Ok(Json(body(&state.tenants.get(&admin.actor, id).await?)))
}

/// Changes to a tenant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantRequest {
    #[serde(default)]
    name: Option<String>,
    /// An RFC 7386 merge patch over the metadata: `null` removes a key.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

/// Renames a tenant or patches its metadata.
#[utoipa::path(
    patch, path = "/tenants/{id}", tag = "tenants",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    request_body = UpdateTenantRequest,
    responses(
        (status = 200, description = "The changed tenant", body = TenantBody),
        (status = 403, description = "Requires iam.tenants.write", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such tenant the caller manages", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid fields", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn update_tenant(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateTenantRequest>,
) -> Result<Json<TenantBody>, ApiError> {
    let id = path_id::<TenantId>(&id)?;
    let mut fields = Fields::default();
    let name = req
        .name
        .as_deref()
        .map(|n| fields.check("name", TenantName::parse(n)));
    let metadata = fields.merge_patch(req.metadata);
    fields.finish()?;
    let tenant = state
        .tenants
        .update(
            &admin.actor,
            id,
            TenantChanges {
                name: name.flatten(),
                metadata,
            },
        )
        .await?;
    Ok(Json(body(&tenant)))
}

/// Soft-deletes a tenant with no live children: its sessions end, sign-in is refused, its
/// records stay for the audit trail.
#[utoipa::path(
    delete, path = "/tenants/{id}", tag = "tenants",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Requires iam.tenants.write in an ancestor", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such tenant the caller manages", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The tenant has live children, or is the platform's root", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn delete_tenant(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_id::<TenantId>(&id)?;
    state.tenants.delete(&admin.actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Blocks a tenant and so its whole subtree: sign-ins, refreshes and ValidateToken fail there,
/// on every instance within a second.
#[utoipa::path(
    post, path = "/tenants/{id}/block", tag = "tenants",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The blocked tenant", body = TenantBody),
        (status = 403, description = "Requires iam.tenants.write in an ancestor", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such tenant the caller manages", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The platform's root tenant", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn block_tenant(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
) -> Result<Json<TenantBody>, ApiError> {
    let id = path_id::<TenantId>(&id)?;
    Ok(Json(body(&state.tenants.block(&admin.actor, id).await?)))
}

/// Lifts a block: tokens of the subtree that have not otherwise expired work again.
#[utoipa::path(
    post, path = "/tenants/{id}/unblock", tag = "tenants",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The unblocked tenant", body = TenantBody),
        (status = 403, description = "Requires iam.tenants.write in an ancestor", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such tenant the caller manages", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The platform's root tenant", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn unblock_tenant(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
) -> Result<Json<TenantBody>, ApiError> {
    let id = path_id::<TenantId>(&id)?;
    Ok(Json(body(&state.tenants.unblock(&admin.actor, id).await?)))
}

/// The new owner.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferOwnershipRequest {
    /// An active member of the tenant.
    user_id: String,
}

/// Hands the tenant to another active member; the old owner stays a member as `admin`.
#[utoipa::path(
    post, path = "/tenants/{id}/transfer-ownership", tag = "tenants",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    request_body = TransferOwnershipRequest,
    responses(
        (status = 200, description = "The tenant with its new owner", body = TenantBody),
        (status = 403, description = "Requires iam.tenants.write, and being the owner or managing the tenant from above", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such tenant the caller manages", body = Problem, content_type = PROBLEM),
        (status = 422, description = "The user is not an active member", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn transfer_ownership(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<TransferOwnershipRequest>,
) -> Result<Json<TenantBody>, ApiError> {
    let id = path_id::<TenantId>(&id)?;
    let mut fields = Fields::default();
    let user = fields.check(
        "user_id",
        req.user_id.parse::<UserId>().map_err(|_| "not a user id"),
    );
    fields.finish()?;
    let Some(user) = user else {
        return Err(ApiError::validation(Vec::new()));
    };
    let tenant = state
        .tenants
        .transfer_ownership(&admin.actor, id, user)
        .await?;
    Ok(Json(body(&tenant)))
}

/// The new parent.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveTenantRequest {
    /// A tenant the caller manages, outside the moved subtree.
    parent_id: String,
}

/// Re-parents a tenant, with its whole subtree.
#[utoipa::path(
    post, path = "/tenants/{id}/move", tag = "tenants",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    request_body = MoveTenantRequest,
    responses(
        (status = 200, description = "The moved tenant", body = TenantBody),
        (status = 403, description = "Requires iam.tenants.write in an ancestor", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such tenant or parent the caller manages", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The move would make a cycle, or the tenant is the platform's root", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid fields", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn move_tenant(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<MoveTenantRequest>,
) -> Result<Json<TenantBody>, ApiError> {
    let id = path_id::<TenantId>(&id)?;
    let mut fields = Fields::default();
    let parent = fields.check(
        "parent_id",
        req.parent_id
            .parse::<TenantId>()
            .map_err(|_| "not a tenant id"),
    );
    fields.finish()?;
    let Some(parent) = parent else {
        return Err(ApiError::validation(Vec::new()));
    };
    let tenant = state.tenants.move_to(&admin.actor, id, parent).await?;
    Ok(Json(body(&tenant)))
}

/// The live children of a tenant, by id.
#[utoipa::path(
    get, path = "/tenants/{id}/children", tag = "tenants",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id"), PageQuery),
    responses(
        (status = 200, description = "A page of children", body = TenantList),
        (status = 403, description = "Requires iam.tenants.read", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such tenant the caller manages", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid paging values", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn list_children(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<TenantList>, ApiError> {
    let id = path_id::<TenantId>(&id)?;
    let (limit, after) = paging(&q)?;
    let page = state
        .tenants
        .children(&admin.actor, id, after, limit)
        .await?;
    Ok(Json(list(page)))
}

/// A tenant's ancestors.
#[derive(Serialize, ToSchema)]
pub struct AncestorList {
    /// Nearest first, up to the caller's own tenant.
    items: Vec<TenantBody>,
}

/// A tenant's ancestors, nearest first, up to the caller's own tenant.
#[utoipa::path(
    get, path = "/tenants/{id}/ancestors", tag = "tenants",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The ancestors", body = AncestorList),
        (status = 403, description = "Requires iam.tenants.read", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such tenant the caller manages", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn list_ancestors(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
) -> Result<Json<AncestorList>, ApiError> {
    let id = path_id::<TenantId>(&id)?;
    let ancestors = state.tenants.ancestors(&admin.actor, id).await?;
    Ok(Json(AncestorList {
        items: ancestors.iter().map(body).collect(),
    }))
}

/// A page of members.
#[derive(Serialize, ToSchema)]
pub struct MemberList {
    /// Users with their roles in the tenant.
    items: Vec<UserBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// The members of a tenant with their roles there, by user id.
#[utoipa::path(
    get, path = "/tenants/{id}/members", tag = "tenants",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id"), PageQuery),
    responses(
        (status = 200, description = "A page of members", body = MemberList),
        (status = 403, description = "Requires iam.users.read", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such tenant the caller manages", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid paging values", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn list_members(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<MemberList>, ApiError> {
    let id = path_id::<TenantId>(&id)?;
    let (limit, after) = paging(&q)?;
    let page = state
        .tenants
        .members(&admin.actor, id, after, limit)
        .await?;
    Ok(Json(MemberList {
        items: page
            .members
            .into_iter()
            .map(|m| user_body(&m.user, Some(m.roles)))
            .collect(),
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

/// Ends a user's membership of the tenant and their sessions there; the account stays.
#[utoipa::path(
    delete, path = "/tenants/{id}/members/{user_id}", tag = "tenants",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Tenant id"),
        ("user_id" = Uuid, Path, description = "User id"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Requires iam.users.delete, and holding every permission the member holds", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such tenant the caller manages, or no such member", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The tenant's owner or last owner", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn remove_member(
    State(state): State<AppState>,
    admin: AdminActor,
    Path((id, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = path_id::<TenantId>(&id)?;
    let user = path_id::<UserId>(&user)?;
    state.tenants.remove_member(&admin.actor, id, user).await?;
    Ok(StatusCode::NO_CONTENT)
}
