//! Emailed flows: verification, reset, invitations. Requests that could reveal whether an
//! account exists answer 202 at once, the same for everyone; the work happens after the answer.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use iam_application::FlowError;
use iam_domain::{DisplayName, Email, Password, RoleName};
use serde::{Deserialize, Serialize};
use tracing::warn;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Fields;
use crate::AppState;
use crate::extract::{AdminActor, ApiJson, ClientIp};
use crate::problem::{ApiError, FieldError, Problem};

/// An address to send a link to.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailRequest {
    email: String,
}

/// The answer to every request that must not say whether an account exists.
#[derive(Serialize, ToSchema)]
pub struct Queued {
    /// Always `accepted`.
    status: &'static str,
    message: &'static str,
}

const QUEUED: Queued = Queued {
    status: "accepted",
    message: "If the address can receive this message, it is on its way.",
};

fn parse_email(raw: &str) -> Result<Email, ApiError> {
    let mut fields = Fields::default();
    let email = fields.check("email", Email::parse(raw));
    fields.finish()?;
    email.ok_or_else(|| ApiError::validation(Vec::new()))
}

/// Runs the differing work after the answer, so timing tells nothing.
fn after_answer<F>(what: &'static str, work: F)
where
    F: std::future::Future<Output = Result<(), FlowError>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = work.await {
            warn!(error = %e, "{what} failed after the answer");
        }
    });
}

/// Sends a verification link to an unverified account's address.
#[utoipa::path(
    post, path = "/auth/request-verify-email", tag = "flows",
    request_body = EmailRequest,
    responses(
        (status = 202, description = "Accepted, whether or not an account has the address", body = Queued),
        (status = 422, description = "Not an email address", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests for this address or from this client", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn request_verify_email(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    ApiJson(body): ApiJson<EmailRequest>,
) -> Result<(StatusCode, Json<Queued>), ApiError> {
    queue_link(&state, client, &body, LinkRequest::Verify).await
}

/// Which link a request asks for.
#[derive(Clone, Copy)]
enum LinkRequest {
    Verify,
    Reset,
}

/// Admits the request, answers 202, and does the work (if any account is concerned) afterwards.
async fn queue_link(
    state: &AppState,
    client: std::net::IpAddr,
    body: &EmailRequest,
    kind: LinkRequest,
) -> Result<(StatusCode, Json<Queued>), ApiError> {
    let email = parse_email(&body.email)?;
    state.flows.admit(&email, client).await?;
    let flows = state.flows.clone();
    match kind {
        LinkRequest::Verify => after_answer("verification request", async move {
            flows.request_verification(&email).await
        }),
        LinkRequest::Reset => {
            after_answer(
                "reset request",
                async move { flows.request_reset(&email).await },
            )
        }
    }
    Ok((StatusCode::ACCEPTED, Json(QUEUED)))
}

/// A link token from an email.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    token: String,
}

/// Confirms the address with the token from a verification link.
#[utoipa::path(
    post, path = "/auth/verify-email", tag = "flows",
    request_body = TokenRequest,
    responses(
        (status = 204, description = "Verified"),
        (status = 400, description = "Unknown, used, expired or superseded link", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn verify_email(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TokenRequest>,
) -> Result<StatusCode, ApiError> {
    state.flows.verify_email(&body.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a password-reset link if an account has the address.
#[utoipa::path(
    post, path = "/auth/request-reset", tag = "flows",
    request_body = EmailRequest,
    responses(
        (status = 202, description = "Accepted, whether or not an account has the address", body = Queued),
        (status = 422, description = "Not an email address", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests for this address or from this client", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn request_reset(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    ApiJson(body): ApiJson<EmailRequest>,
) -> Result<(StatusCode, Json<Queued>), ApiError> {
    queue_link(&state, client, &body, LinkRequest::Reset).await
}

/// A reset link's token and the new password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    token: String,
    #[schema(format = Password, min_length = 12)]
    new_password: String,
}

/// Sets a new password; every session of the account ends.
#[utoipa::path(
    post, path = "/auth/reset-password", tag = "flows",
    request_body = ResetRequest,
    responses(
        (status = 204, description = "Password changed; sessions ended"),
        (status = 400, description = "Unknown, used, expired or superseded link", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The new password is too short, common or personal", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn reset_password(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ResetRequest>,
) -> Result<StatusCode, ApiError> {
    let mut fields = Fields::default();
    let password = fields.check("new_password", Password::new(&body.new_password));
    fields.finish()?;
    let password = password.ok_or_else(|| ApiError::validation(Vec::new()))?;
    state.flows.reset_password(&body.token, password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whom to invite into the caller's tenant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    email: String,
    /// Role names in the tenant; `member` when empty.
    #[serde(default)]
    roles: Vec<String>,
}

/// Invites an address into the caller's current tenant (owners and admins).
#[utoipa::path(
    post, path = "/auth/invite", tag = "flows",
    security(("bearer" = [])),
    request_body = InviteRequest,
    responses(
        (status = 202, description = "Accepted, whether or not the address has an account", body = Queued),
        (status = 403, description = "Requires iam.invitations.write (and every permission of the roles given)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "A role is not the tenant's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests for this address or from this client", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn invite(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    admin: AdminActor,
    ApiJson(body): ApiJson<InviteRequest>,
) -> Result<(StatusCode, Json<Queued>), ApiError> {
    let mut fields = Fields::default();
    let email = fields.check("email", Email::parse(&body.email));
    let roles: Vec<RoleName> = body
        .roles
        .iter()
        .filter_map(|r| {
            fields.check(
                "roles",
                RoleName::parse(r).ok_or_else(|| format!("`{r}` is not a role name")),
            )
        })
        .collect();
    fields.finish()?;
    let email = email.ok_or_else(|| ApiError::validation(Vec::new()))?;
    state
        .flows
        .may_invite(&admin.actor, admin.tenant, &roles)
        .await?;
    state.flows.admit(&email, client).await?;
    let flows = state.flows.clone();
    after_answer("invitation", async move {
        flows
            .invite(&admin.actor, admin.tenant, &email, roles)
            .await
    });
    Ok((StatusCode::ACCEPTED, Json(QUEUED)))
}

/// An invitation's token, and for someone without an account, the new account's details.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptRequest {
    token: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    #[schema(format = Password, min_length = 12)]
    password: Option<String>,
}

/// The tenant joined.
#[derive(Serialize, ToSchema)]
pub struct Joined {
    user_id: Uuid,
    tenant_id: Uuid,
    /// Whether the invitation created the account.
    created: bool,
}

/// Accepts an invitation.
#[utoipa::path(
    post, path = "/auth/accept-invite", tag = "flows",
    request_body = AcceptRequest,
    responses(
        (status = 200, description = "Joined", body = Joined),
        (status = 400, description = "Unknown, used or expired invitation", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A new account needs a name and a valid password", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn accept_invite(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<AcceptRequest>,
) -> Result<Json<Joined>, ApiError> {
    let mut fields = Fields::default();
    let name = body
        .name
        .as_deref()
        .and_then(|n| fields.check("name", DisplayName::parse(n)));
    let password = body
        .password
        .as_deref()
        .and_then(|p| fields.check("password", Password::new(p)));
    fields.finish()?;
    let joined = state
        .flows
        .accept_invite(&body.token, name.zip(password))
        .await?;
    Ok(Json(Joined {
        user_id: joined.user.as_uuid(),
        tenant_id: joined.tenant.as_uuid(),
        created: joined.created,
    }))
}

impl From<FlowError> for ApiError {
    fn from(e: FlowError) -> Self {
        match e {
            FlowError::InvalidLink => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_link",
                "The link is invalid, used, expired or superseded; ask for a new one",
            ),
            FlowError::NotAllowed => Self::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Only owners and admins of the tenant may invite",
            ),
            FlowError::DetailsRequired => Self::validation(vec![
                FieldError {
                    field: "name".into(),
                    message: "needed to create the account".into(),
                },
                FieldError {
                    field: "password".into(),
                    message: "needed to create the account".into(),
                },
            ]),
            FlowError::Auth(e) => Self::from(e),
        }
    }
}
