//! The REST transport: axum handlers, request and response DTOs, bearer authentication, RFC 9457
//! problem details, and the OpenAPI 3.1 document generated from the handlers (utoipa).
//!
//! Invariant: wire types never leave this crate; handlers parse input into domain types, call one
//! application service, and map its errors exhaustively in [`problem`].

mod extract;
mod handlers;
pub mod problem;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use iam_application::{
    AuthService, ClaimService, Flows, KeyService, MfaService, RbacService, TenantService,
    TrustedProxies, UserService,
};
use iam_ports::Store;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

pub use problem::Problem;

/// Largest request body accepted; every request of this API is a small JSON object.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub auth: Arc<AuthService>,
    pub mfa: Arc<MfaService>,
    pub flows: Arc<Flows>,
    pub users: Arc<UserService>,
    pub tenants: Arc<TenantService>,
    pub rbac: Arc<RbacService>,
    pub claims: Arc<ClaimService>,
    pub keys: Arc<KeyService>,
    pub store: Arc<dyn Store>,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<TrustedProxies>,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "IAM service",
        description = "Identity and access management: accounts, sessions, tokens, users, roles and permissions.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Registration, sign-in and sessions"),
        (name = "mfa", description = "TOTP second factor and recovery codes"),
        (name = "flows", description = "Email verification, password reset and invitations"),
        (name = "users", description = "User management in the caller's tenant (or, with `X-Tenant-Id`, in a descendant the caller manages)"),
        (name = "tenants", description = "The B2B2B tenant tree: child tenants, blocking, moves, ownership and members"),
        (name = "rbac", description = "Roles, permissions, role assignment and the audit log"),
        (name = "claims", description = "Custom claims injected into user tokens"),
        (name = "keys", description = "Token signing keys"),
        (name = "health", description = "Liveness and readiness")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(handlers::routes())
}

/// The OpenAPI document of every route (also served at `/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api().into_openapi();
    // The crate version would churn the committed document on every release bump.
    doc.info.version = "1".into();
    doc
}

/// The complete REST router with its middleware.
pub fn router(state: AppState) -> Router {
    let (router, _) = api().with_state(state).split_for_parts();
    let doc = openapi();
    let request_id = HeaderName::from_static("x-request-id");
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || std::future::ready(axum::Json(doc.clone()))),
        )
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(problem::panicked))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<axum::body::Body>| {
                    // Method, path and request id only: headers and bodies may carry secrets.
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}
