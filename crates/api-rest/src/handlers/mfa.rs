//! TOTP enrolment, the second sign-in step, step-up, and recovery codes.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use iam_application::{SecondFactor, StepUp};
use iam_domain::{Password, RecoveryCode, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Fields;
use super::auth::{TokenResponse, no_store, token_body, tokens};
use crate::AppState;
use crate::extract::{ApiJson, Authenticated, ClientIp, principal};
use crate::problem::{ApiError, Problem};

/// A started enrolment. The secret is shown this once.
#[derive(Serialize, ToSchema)]
pub struct EnrolmentResponse {
    /// Base32 secret, for typing into an authenticator app.
    secret: String,
    /// `otpauth://totp/…` URI.
    otpauth_uri: String,
    /// The URI as a QR code, an SVG image.
    qr_svg: String,
}

/// Starts TOTP enrolment for the signed-in user; inactive until confirmed with a code.
#[utoipa::path(
    post, path = "/auth/mfa/enable", tag = "mfa",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Secret, URI and QR code", body = EnrolmentResponse),
        (status = 401, description = "Missing or unusable access token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already enabled", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn enable(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<impl IntoResponse, ApiError> {
    let e = state.mfa.enable(&principal).await?;
    Ok(no_store(EnrolmentResponse {
        secret: e.secret.base32(),
        otpauth_uri: e.otpauth_uri,
        qr_svg: e.qr_svg,
    }))
}

/// A code, and for the second sign-in step the challenge it answers.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The 6-digit code from the authenticator app.
    code: String,
    /// From a login answer with `mfa_required`; without it the call confirms enrolment and
    /// needs the bearer token.
    #[serde(default)]
    mfa_token: Option<String>,
}

/// Recovery codes, shown this once.
#[derive(Serialize, ToSchema)]
pub struct RecoveryCodes {
    recovery_codes: Vec<String>,
}

fn recovery_list(codes: &[RecoveryCode]) -> RecoveryCodes {
    RecoveryCodes {
        recovery_codes: codes.iter().map(RecoveryCode::display).collect(),
    }
}

/// Confirms enrolment (bearer, no `mfa_token`: returns 10 recovery codes), or completes a
/// sign-in (`mfa_token`: returns tokens).
#[utoipa::path(
    post, path = "/auth/mfa/verify", tag = "mfa",
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "Recovery codes (confirmation) or tokens (sign-in)", body = VerifyResponse),
        (status = 401, description = "Bad challenge or code, or missing access token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Nothing to confirm", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong code at confirmation", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn verify(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> Result<Response, ApiError> {
    match body.mfa_token {
        Some(token) => {
            let pair = state
                .auth
                .complete_mfa(&token, SecondFactor::Totp(body.code), client)
                .await?;
            Ok(no_store(VerifyResponse::Tokens(token_body(pair))).into_response())
        }
        None => {
            let principal = principal(&headers, &state).await?;
            let codes = state.mfa.confirm(&principal, &body.code).await?;
            Ok(no_store(VerifyResponse::Codes(recovery_list(&codes))).into_response())
        }
    }
}

/// What `/auth/mfa/verify` answers.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum VerifyResponse {
    Codes(RecoveryCodes),
    Tokens(TokenResponse),
}

/// A step-up proof: a current code or the password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpRequest {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    #[schema(format = Password)]
    password: Option<String>,
}

fn step_up(body: StepUpRequest) -> Result<StepUp, ApiError> {
    match (body.code, body.password) {
        (Some(code), None) => Ok(StepUp::Code(code)),
        (None, Some(password)) => {
            let mut fields = Fields::default();
            let password = fields.check("password", Password::presented(&password));
            fields.finish()?;
            password
                .map(StepUp::Password)
                .ok_or_else(|| ApiError::validation(Vec::new()))
        }
        _ => Err(ApiError::validation(vec![crate::problem::FieldError {
            field: "code".into(),
            message: "give exactly one of code and password".into(),
        }])),
    }
}

/// Turns MFA off (step-up required) and ends every other session of the user.
#[utoipa::path(
    post, path = "/auth/mfa/disable", tag = "mfa",
    security(("bearer" = [])),
    request_body = StepUpRequest,
    responses(
        (status = 204, description = "Disabled"),
        (status = 403, description = "Step-up failed", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enabled", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn disable(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    ApiJson(body): ApiJson<StepUpRequest>,
) -> Result<StatusCode, ApiError> {
    state.mfa.disable(&principal, step_up(body)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A recovery code for a sign-in challenge.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoveryRequest {
    mfa_token: String,
    /// `XXXX-XXXX-XXXX-XXXX`; case, spaces and dashes do not matter.
    code: String,
}

/// Completes a sign-in with a recovery code instead of a TOTP code; the code is spent.
#[utoipa::path(
    post, path = "/auth/recovery", tag = "mfa",
    request_body = RecoveryRequest,
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, description = "Bad challenge or code", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn recovery(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    ApiJson(body): ApiJson<RecoveryRequest>,
) -> Result<impl IntoResponse, ApiError> {
    // A malformed code is just a wrong one: it spends an attempt like any other.
    let code =
        RecoveryCode::parse(&body.code).unwrap_or_else(|| RecoveryCode::from_random([0; 10]));
    let pair = state
        .auth
        .complete_mfa(&body.mfa_token, SecondFactor::Recovery(code), client)
        .await?;
    Ok(tokens(pair))
}

/// The state of the recovery codes (never the codes).
#[derive(Serialize, ToSchema)]
pub struct RecoverySummary {
    remaining: usize,
    total: usize,
    #[schema(value_type = Option<String>, format = DateTime)]
    created_at: Option<Timestamp>,
}

/// How many recovery codes remain and when they were made.
#[utoipa::path(
    get, path = "/auth/recovery-codes", tag = "mfa",
    security(("bearer" = [])),
    responses((status = 200, description = "Summary", body = RecoverySummary))
)]
pub async fn recovery_codes(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<Json<RecoverySummary>, ApiError> {
    let s = state.mfa.recovery_summary(&principal).await?;
    Ok(Json(RecoverySummary {
        remaining: s.remaining,
        total: s.total,
        created_at: s.created_at,
    }))
}

/// Replaces the recovery codes (step-up required); the old set stops working.
#[utoipa::path(
    post, path = "/auth/recovery-codes/regenerate", tag = "mfa",
    security(("bearer" = [])),
    request_body = StepUpRequest,
    responses(
        (status = 200, description = "Ten new codes, shown once", body = RecoveryCodes),
        (status = 403, description = "Step-up failed", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enabled", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn regenerate(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    ApiJson(body): ApiJson<StepUpRequest>,
) -> Result<Response, ApiError> {
    let codes = state.mfa.regenerate(&principal, step_up(body)?).await?;
    Ok(no_store(recovery_list(&codes)).into_response())
}
