//! Registration, sign-in, refresh, sign-out and the current user.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use iam_application::{Me, RegisterCommand, SignIn, TokenPair};
use iam_domain::{DisplayName, Email, Password, TenantId, TenantName, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Fields;
use crate::AppState;
use crate::extract::{ApiJson, Authenticated, ClientIp};
use crate::problem::{ApiError, Problem};

/// A new account.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The account's email address.
    #[schema(example = "ada@example.com")]
    email: String,
    /// At least 12 characters; any Unicode.
    #[schema(format = Password, min_length = 12)]
    password: String,
    /// The person's display name.
    name: String,
    /// Name of the tenant the new user will own (defaults to the user's name).
    #[serde(default)]
    tenant_name: Option<String>,
}

/// The answer to a request whose outcome is not disclosed.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    /// Always `accepted`.
    status: &'static str,
    /// What happens next.
    message: &'static str,
}

const REGISTER_ACCEPTED: Accepted = Accepted {
    status: "accepted",
    message: "If this email can be registered, the account has been created; sign in to continue.",
};

/// Registers an account and a tenant it owns. Answers alike whether or not the email exists.
#[utoipa::path(
    post, path = "/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 202, description = "Accepted (also for an email that exists)", body = Accepted),
        (status = 422, description = "Invalid fields, or a common or personal password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many registrations from this address", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "At capacity; retry after the given seconds", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let mut fields = Fields::default();
    let email = fields.check("email", Email::parse(&body.email));
    let password = fields.check("password", Password::new(&body.password));
    let name = fields.check("name", DisplayName::parse(&body.name));
    let tenant_name = body
        .tenant_name
        .as_deref()
        .map(|n| fields.check("tenant_name", TenantName::parse(n)));
    fields.finish()?;
    let (Some(email), Some(password), Some(name)) = (email, password, name) else {
        return Err(ApiError::validation(Vec::new()));
    };
    state
        .auth
        .register(
            RegisterCommand {
                email,
                password,
                name,
                tenant_name: tenant_name.flatten(),
            },
            client,
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(REGISTER_ACCEPTED)))
}

/// Email and password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(example = "ada@example.com")]
    email: String,
    #[schema(format = Password)]
    password: String,
    /// The tenant to sign in to; defaults to the user's oldest membership.
    #[serde(default)]
    tenant_id: Option<Uuid>,
}

/// A new access token and refresh token.
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// ES256-signed JWT (`typ: at+jwt`).
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: i64,
    /// Opaque, single-use refresh token.
    refresh_token: String,
    /// Seconds until the refresh token expires.
    refresh_expires_in: i64,
    /// The tenant the tokens are scoped to.
    tenant_id: Uuid,
}

/// The first factor passed; the second is due.
#[derive(Serialize, ToSchema)]
pub struct MfaRequired {
    /// Always `true`.
    mfa_required: bool,
    /// Present it with a code to `POST /auth/mfa/verify` or `POST /auth/recovery`.
    mfa_token: String,
    /// Seconds the token stays usable.
    expires_in: i64,
}

/// The user belongs to several tenants and named none.
#[derive(Serialize, ToSchema)]
pub struct SelectionRequired {
    /// Always `true`.
    tenant_selection_required: bool,
    /// The user's tenants.
    tenants: Vec<TenantChoiceBody>,
    /// Present it with a `tenant_id` to `POST /auth/select-tenant`.
    selection_token: String,
    /// Seconds the token stays usable.
    expires_in: i64,
}

/// One of the caller's tenants.
#[derive(Serialize, ToSchema)]
pub struct TenantChoiceBody {
    tenant_id: Uuid,
    name: String,
    /// In force: `blocked` if the tenant or an ancestor is blocked.
    status: &'static str,
    roles: Vec<String>,
}

fn choice_body(c: &iam_application::TenantChoice) -> TenantChoiceBody {
    TenantChoiceBody {
        tenant_id: c.tenant.id.as_uuid(),
        name: c.tenant.name.as_str().to_owned(),
        status: if c.blocked { "blocked" } else { "active" },
        roles: c.roles.iter().map(|r| r.as_str().to_owned()).collect(),
    }
}

/// Tokens, a second-factor challenge, or a tenant to choose.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginResponse {
    Tokens(TokenResponse),
    Mfa(MfaRequired),
    TenantSelection(SelectionRequired),
}

fn login_body(outcome: SignIn) -> LoginResponse {
    match outcome {
        SignIn::Tokens(pair) => LoginResponse::Tokens(token_body(pair)),
        SignIn::MfaRequired {
            mfa_token,
            expires_in,
        } => LoginResponse::Mfa(MfaRequired {
            mfa_required: true,
            mfa_token: mfa_token.expose().to_owned(),
            expires_in,
        }),
        SignIn::TenantSelection {
            selection_token,
            tenants,
            expires_in,
        } => LoginResponse::TenantSelection(SelectionRequired {
            tenant_selection_required: true,
            tenants: tenants.iter().map(choice_body).collect(),
            selection_token: selection_token.expose().to_owned(),
            expires_in,
        }),
    }
}

pub(crate) fn token_body(pair: TokenPair) -> TokenResponse {
    TokenResponse {
        access_token: pair.access_token,
        token_type: "Bearer",
        expires_in: pair.expires_in,
        refresh_token: pair.refresh_token.expose().to_owned(),
        refresh_expires_in: pair.refresh_expires_in,
        tenant_id: pair.tenant.as_uuid(),
    }
}

/// Token responses must not be cached (RFC 6749 §5.1).
pub(crate) fn no_store<T: Serialize>(body: T) -> impl IntoResponse {
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    (headers, Json(body))
}

/// The token response for a token pair.
pub(crate) fn tokens(pair: TokenPair) -> impl IntoResponse {
    no_store(token_body(pair))
}

/// Signs in with email and password.
#[utoipa::path(
    post, path = "/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in, or the second factor is due", body = LoginResponse),
        (status = 401, description = "Unknown email, wrong password or disabled account (one answer for all)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member of the tenant, or tenant blocked", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failures from this address; retry after the given seconds", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "At capacity; retry after the given seconds", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let mut fields = Fields::default();
    let email = fields.check("email", Email::parse(&body.email));
    let password = fields.check("password", Password::presented(&body.password));
    fields.finish()?;
    let (Some(email), Some(password)) = (email, password) else {
        return Err(ApiError::validation(Vec::new()));
    };
    let outcome = state
        .auth
        .login(
            &email,
            &password,
            body.tenant_id.map(TenantId::from_uuid),
            client,
        )
        .await?;
    Ok(no_store(login_body(outcome)))
}

/// A tenant chosen for a pending sign-in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectTenantRequest {
    selection_token: String,
    tenant_id: Uuid,
}

/// Finishes a sign-in that answered `tenant_selection_required`: tokens for the chosen tenant, or
/// a second-factor challenge. The selection token is single use.
#[utoipa::path(
    post, path = "/auth/select-tenant", tag = "auth",
    request_body = SelectTenantRequest,
    responses(
        (status = 200, description = "Signed in, or the second factor is due", body = LoginResponse),
        (status = 401, description = "Unknown, spent or expired selection token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member of that tenant, or it is blocked", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn select_tenant(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SelectTenantRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let outcome = state
        .auth
        .select_tenant(&body.selection_token, TenantId::from_uuid(body.tenant_id))
        .await?;
    Ok(no_store(login_body(outcome)))
}

/// The caller's tenants.
#[derive(Serialize, ToSchema)]
pub struct MembershipList {
    items: Vec<TenantChoiceBody>,
}

/// The caller's memberships, with each tenant's status in force.
#[utoipa::path(
    get, path = "/auth/tenants", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's tenants", body = MembershipList),
        (status = 401, description = "Missing or unusable access token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn tenants(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<Json<MembershipList>, ApiError> {
    let choices = state.auth.tenants(&principal).await?;
    Ok(Json(MembershipList {
        items: choices.iter().map(choice_body).collect(),
    }))
}

/// The tenant to switch to.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchTenantRequest {
    tenant_id: Uuid,
}

/// New tokens, and a new refresh family, for another of the caller's tenants. The current
/// tokens stay valid for their own tenant; a refresh token never crosses tenants.
#[utoipa::path(
    post, path = "/auth/switch-tenant", tag = "auth",
    security(("bearer" = [])),
    request_body = SwitchTenantRequest,
    responses(
        (status = 200, description = "Tokens for the other tenant", body = TokenResponse),
        (status = 401, description = "Missing or unusable access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member of that tenant, or it is blocked", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A custom claim the token needs is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn switch_tenant(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    ApiJson(body): ApiJson<SwitchTenantRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let pair = state
        .auth
        .switch_tenant(&principal, TenantId::from_uuid(body.tenant_id))
        .await?;
    Ok(tokens(pair))
}

/// A refresh token to rotate.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: String,
}

/// Rotates a refresh token. Presenting a spent token revokes its whole session.
#[utoipa::path(
    post, path = "/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens; the presented refresh token is spent", body = TokenResponse),
        (status = 400, description = "invalid_grant: unknown, spent, expired or revoked", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many rejected tokens from this address", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let pair = state.auth.refresh(&body.refresh_token, client).await?;
    Ok(tokens(pair))
}

/// Signs out: revokes the caller's session (its refresh family and access tokens).
#[utoipa::path(
    post, path = "/auth/logout", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "Missing or unusable access token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<StatusCode, ApiError> {
    state.auth.logout(&principal).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user.
#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    user: UserView,
    tenant: TenantView,
    /// Roles held in the current tenant, as carried by the access token.
    roles: Vec<String>,
}

/// A user as shown to themselves.
#[derive(Serialize, ToSchema)]
pub struct UserView {
    id: Uuid,
    email: String,
    name: String,
    /// `active`, `disabled` or `deleted`.
    status: &'static str,
    email_verified: bool,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

/// A tenant, briefly.
#[derive(Serialize, ToSchema)]
pub struct TenantView {
    id: Uuid,
    name: String,
    /// `active` or `blocked`.
    status: &'static str,
    parent_id: Option<Uuid>,
}

impl From<Me> for MeResponse {
    fn from(me: Me) -> Self {
        Self {
            user: UserView {
                id: me.user.id.as_uuid(),
                email: me.user.email.as_str().to_owned(),
                name: me.user.name.as_str().to_owned(),
                status: me.user.status.as_str(),
                email_verified: me.user.email_verified,
                created_at: me.user.created_at,
            },
            tenant: TenantView {
                id: me.tenant.id.as_uuid(),
                name: me.tenant.name.as_str().to_owned(),
                status: me.tenant.status.as_str(),
                parent_id: me.tenant.parent.map(|p| p.as_uuid()),
            },
            roles: me.roles,
        }
    }
}

/// The signed-in user, their current tenant and roles.
#[utoipa::path(
    get, path = "/auth/me", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = MeResponse),
        (status = 401, description = "Missing or unusable access token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn me(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<Json<MeResponse>, ApiError> {
    Ok(Json(state.auth.me(&principal).await?.into()))
}
