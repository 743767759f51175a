//! Custom claims: `/auth/claims`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use iam_application::{AdminError, NewClaim, TenantScope};
use iam_domain::Timestamp;
use iam_domain::claims::{
    ClaimDefinition, ClaimHook, ClaimName, ClaimScope, ClaimSource, FailurePolicy, parse_field,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Fields;
use crate::AppState;
use crate::extract::{AdminActor, ApiJson};
use crate::problem::{ApiError, Problem};

const PROBLEM: &str = "application/problem+json";

/// Where a claim's value comes from.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceBody {
    /// The same JSON value in every token.
    Constant {
        #[schema(value_type = Object)]
        value: serde_json::Value,
    },
    /// A top-level field of the user's metadata; no claim when absent.
    UserMetadata { field: String },
    /// A top-level field of the token's tenant's metadata; no claim when absent.
    TenantMetadata { field: String },
    /// The module's endpoint: POSTed `{claim, user_id, tenant_id}`, it answers `{"value": …}`.
    Hook {
        url: String,
        /// 1 to 10000.
        timeout_ms: u64,
        /// `omit`: issue the token without the claim; `refuse`: issue none.
        #[schema(value_type = String)]
        on_failure: FailurePolicy,
    },
}

/// A claim to register.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterClaimRequest {
    /// Namespaced (`billing.plan`); never one of the token's own claims.
    #[schema(example = "billing.plan")]
    name: String,
    /// `platform` (every token; root tenant only) or `tenant` (the caller's tenant).
    scope: String,
    /// With `tenant`: every tenant below it too.
    #[serde(default)]
    include_descendants: bool,
    source: SourceBody,
}

/// A registered claim.
#[derive(Serialize, ToSchema)]
pub struct ClaimBody {
    name: String,
    /// `platform` or `tenant`.
    scope: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_id: Option<Uuid>,
    include_descendants: bool,
    /// Shown to the tenant that registered the claim only.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<SourceBody>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

fn body(c: &ClaimDefinition, owned: bool) -> ClaimBody {
    let (scope, tenant_id, include_descendants) = match c.scope {
        ClaimScope::Platform => ("platform", None, false),
        ClaimScope::Tenant {
            tenant,
            descendants,
        } => ("tenant", Some(tenant.as_uuid()), descendants),
    };
    ClaimBody {
        name: c.name.as_str().to_owned(),
        scope,
        tenant_id,
        include_descendants,
        source: owned.then(|| match &c.source {
            ClaimSource::Constant(v) => SourceBody::Constant { value: v.clone() },
            ClaimSource::UserMetadata(f) => SourceBody::UserMetadata { field: f.clone() },
            ClaimSource::TenantMetadata(f) => SourceBody::TenantMetadata { field: f.clone() },
            ClaimSource::Hook(h) => SourceBody::Hook {
                url: h.url.clone(),
                timeout_ms: u64::try_from(h.timeout.as_millis()).unwrap_or(u64::MAX),
                on_failure: h.on_failure,
            },
        }),
        created_at: c.created_at,
    }
}

/// The tenant's claims.
#[derive(Serialize, ToSchema)]
pub struct ClaimList {
    items: Vec<ClaimBody>,
}

/// The claims that reach the caller's tenant's tokens.
#[utoipa::path(
    get, path = "/auth/claims", tag = "claims",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The claims", body = ClaimList),
        (status = 403, description = "Requires iam.claims.read", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn list_claims(
    State(state): State<AppState>,
    admin: AdminActor,
) -> Result<Json<ClaimList>, ApiError> {
    let claims = state.claims.list(&admin.actor, admin.tenant).await?;
    Ok(Json(ClaimList {
        items: claims.iter().map(|(c, owned)| body(c, *owned)).collect(),
    }))
}

/// Registers a claim, injected into every token it reaches from now on (login, refresh, MFA).
#[utoipa::path(
    post, path = "/auth/claims", tag = "claims",
    security(("bearer" = [])),
    request_body = RegisterClaimRequest,
    responses(
        (status = 201, description = "Registered", body = ClaimBody),
        (status = 403, description = "Requires iam.claims.write (platform scope: in the root tenant)", body = Problem, content_type = PROBLEM),
        (status = 409, description = "The name is registered", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid or reserved name, bad source, or a value over the size limit", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn register_claim(
    State(state): State<AppState>,
    admin: AdminActor,
    ApiJson(req): ApiJson<RegisterClaimRequest>,
) -> Result<(StatusCode, Json<ClaimBody>), ApiError> {
    let mut fields = Fields::default();
    let name = fields.check("name", ClaimName::parse(&req.name));
    let scope = fields.check(
        "scope",
        match (req.scope.as_str(), req.include_descendants) {
            ("platform", false) => Ok(None),
            ("platform", true) => Err("include_descendants is for the tenant scope"),
            ("tenant", descendants) => Ok(Some(TenantScope { descendants })),
            _ => Err("must be platform or tenant"),
        },
    );
    let source = match req.source {
        SourceBody::Constant { value } => Some(ClaimSource::Constant(value)),
        SourceBody::UserMetadata { field } => fields
            .check("source.field", parse_field(&field))
            .map(ClaimSource::UserMetadata),
        SourceBody::TenantMetadata { field } => fields
            .check("source.field", parse_field(&field))
            .map(ClaimSource::TenantMetadata),
        SourceBody::Hook {
            url,
            timeout_ms,
            on_failure,
        } => fields
            .check("source", ClaimHook::new(&url, timeout_ms, on_failure))
            .map(ClaimSource::Hook),
    };
    fields.finish()?;
    let (Some(name), Some(tenant_scope), Some(source)) = (name, scope, source) else {
        return Err(ApiError::validation(Vec::new()));
    };
    let def = state
        .claims
        .register(
            &admin.actor,
            admin.tenant,
            NewClaim {
                name,
                tenant_scope,
                source,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(body(&def, true))))
}

/// Deletes a claim: no token is issued with it from now on.
#[utoipa::path(
    delete, path = "/auth/claims/{name}", tag = "claims",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Claim name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Requires iam.claims.write", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such claim of this tenant", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn delete_claim(
    State(state): State<AppState>,
    admin: AdminActor,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    // A name that cannot be a claim's names none.
    let name = ClaimName::parse(&name).map_err(|_| AdminError::ClaimNotFound)?;
    state
        .claims
        .delete(&admin.actor, admin.tenant, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
