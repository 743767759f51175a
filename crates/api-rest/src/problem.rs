//! RFC 9457 problem details, and the one place where application errors become HTTP answers.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use iam_application::{AdminError, AuthError, MfaError, Unauthenticated};
use serde::Serialize;
use tracing::error;
use utoipa::ToSchema;

/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type; stable across releases.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// This occurrence, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A stable machine-readable code (`invalid_credentials`, `invalid_grant`, …).
    pub code: String,
    /// Per-field validation errors, for `validation_failed`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One invalid field of a request body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// The field's name in the request body.
    pub field: String,
    /// Why it was refused (never echoes secret input).
    pub message: String,
}

/// An HTTP error answer: a problem plus any headers it needs.
#[derive(Debug)]
pub struct ApiError {
    problem: Box<Problem>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// A problem with the given status, code and title.
    pub fn new(status: StatusCode, code: &str, title: &str) -> Self {
        Self {
            problem: Box::new(Problem {
                kind: format!("urn:iam:problem:{code}"),
                title: title.to_owned(),
                status: status.as_u16(),
                detail: None,
                code: code.to_owned(),
                errors: Vec::new(),
            }),
            headers: Vec::new(),
        }
    }

    /// Adds a human-readable detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.problem.detail = Some(detail.into());
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: header::HeaderName, value: &'static str) -> Self {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    /// Adds `Retry-After` with a computed number of seconds.
    pub fn retry_after(mut self, secs: i64) -> Self {
        self.headers
            .push((header::RETRY_AFTER, HeaderValue::from(secs.max(1))));
        self
    }

    /// 422 with per-field errors.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "The request has invalid fields",
        );
        e.problem.errors = errors;
        e
    }

    /// 401 for a missing or unusable bearer token (RFC 6750).
    pub fn unauthenticated(reason: Option<Unauthenticated>) -> Self {
        let e = Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "The access token is missing or cannot be used",
        );
        match reason {
            Some(r) => e
                .detail(format!("token rejected: {r}"))
                .header(header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#),
            None => e.header(header::WWW_AUTHENTICATE, "Bearer"),
        }
    }

    fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Something went wrong on our side",
        )
    }

    fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The service is temporarily unavailable",
        )
        .header(header::RETRY_AFTER, "5")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(*self.problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

/// Logs a server-side failure once, with its cause chain; the client sees a generic body.
fn log_chain(what: &str, err: &(dyn std::error::Error + 'static)) {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    error!(error = %chain, "{what}");
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidCredentials => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "Invalid email or password",
            ),
            AuthError::NotAMember => Self::new(
                StatusCode::FORBIDDEN,
                "not_a_member",
                "You are not a member of the requested tenant",
            ),
            AuthError::TenantBlocked => Self::new(
                StatusCode::FORBIDDEN,
                "tenant_blocked",
                "The tenant is blocked",
            ),
            AuthError::WeakPassword(weakness) => Self::validation(vec![FieldError {
                field: "password".into(),
                message: weakness.to_string(),
            }]),
            AuthError::Throttled(secs) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "Too many failed attempts; retry later",
            )
            .retry_after(secs),
            AuthError::InvalidMfaToken => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_mfa_token",
                "The sign-in challenge is unknown, expired or out of attempts; sign in again",
            ),
            AuthError::InvalidMfaCode => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_mfa_code",
                "The code is wrong or was used already",
            ),
            AuthError::InvalidSelection => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_selection_token",
                "The tenant-selection token is unknown, spent or expired; sign in again",
            ),
            AuthError::InvalidGrant => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "The refresh token is invalid, expired or revoked",
            ),
            AuthError::Unauthenticated(reason) => Self::unauthenticated(Some(reason)),
            AuthError::Overloaded => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Too many sign-ins at once; retry shortly",
            )
            .header(header::RETRY_AFTER, "1"),
            AuthError::ClaimsUnavailable(e) => {
                tracing::warn!(claim = %e.claim, reason = %e.reason, "no token: a required custom claim is unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "claims_unavailable",
                    "A custom claim the token needs is unavailable; retry shortly",
                )
                .detail(format!("claim {}", e.claim))
                .header(header::RETRY_AFTER, "5")
            }
            AuthError::Unavailable(ref source) => {
                log_chain("store unavailable", source);
                Self::unavailable()
            }
            AuthError::Internal(ref source) => {
                log_chain("internal error", source.as_ref());
                Self::internal()
            }
        }
    }
}

impl From<MfaError> for ApiError {
    fn from(e: MfaError) -> Self {
        match e {
            MfaError::AlreadyEnabled => Self::new(
                StatusCode::CONFLICT,
                "mfa_already_enabled",
                "Multi-factor authentication is already enabled",
            ),
            MfaError::NotEnabled => Self::new(
                StatusCode::CONFLICT,
                "mfa_not_enabled",
                "Multi-factor authentication is not enabled",
            ),
            MfaError::NoPendingEnrolment => Self::new(
                StatusCode::CONFLICT,
                "mfa_not_pending",
                "Start enrolment with POST /auth/mfa/enable first",
            ),
            MfaError::InvalidCode => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_mfa_code",
                "The code is wrong or was used already",
            ),
            MfaError::StepUpFailed => Self::new(
                StatusCode::FORBIDDEN,
                "step_up_failed",
                "Confirm with a current code or your password",
            ),
            MfaError::Throttled(secs) => Self::from(AuthError::Throttled(secs)),
            MfaError::Overloaded => Self::from(AuthError::Overloaded),
            MfaError::Unavailable(source) => Self::from(AuthError::Unavailable(source)),
            MfaError::Internal(source) => Self::from(AuthError::Internal(source)),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        let conflict = |code: &str, title: &str| Self::new(StatusCode::CONFLICT, code, title);
        match e {
            AdminError::NotFound => Self::new(
                StatusCode::NOT_FOUND,
                "user_not_found",
                "No such user in this tenant",
            ),
            AdminError::RoleNotFound => Self::new(
                StatusCode::NOT_FOUND,
                "role_not_found",
                "No such role in this tenant",
            ),
            AdminError::TenantNotFound => {
                Self::new(StatusCode::NOT_FOUND, "tenant_not_found", "No such tenant")
            }
            AdminError::Forbidden(permission) => Self::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "You lack the permission this needs",
            )
            .detail(format!("requires {permission}")),
            AdminError::Escalation => Self::new(
                StatusCode::FORBIDDEN,
                "privilege_escalation",
                "You may only grant or shape roles whose permissions you hold yourself",
            ),
            AdminError::EmailTaken => conflict("email_taken", "A user with this email exists"),
            AdminError::RoleTaken => conflict(
                "role_taken",
                "The tenant has a role of this name (owner, admin and member are reserved)",
            ),
            AdminError::SystemRole => conflict(
                "system_role",
                "System roles (owner, admin, member) cannot be changed or deleted",
            ),
            AdminError::LastOwner => conflict(
                "last_owner",
                "The tenant's last active owner cannot lose the owner role",
            ),
            AdminError::NotDeleted => conflict("not_deleted", "The user is not deleted"),
            AdminError::HooksPlatformOnly => Self::new(
                StatusCode::FORBIDDEN,
                "hooks_platform_only",
                "Only the platform's root tenant may register claims whose values come from a hook",
            ),
            AdminError::ClaimNotFound => {
                Self::new(StatusCode::NOT_FOUND, "claim_not_found", "No such claim")
            }
            AdminError::ClaimTaken => conflict("claim_taken", "A claim of this name is registered"),
            AdminError::InvalidClaim(e) => Self::validation(vec![FieldError {
                field: match e {
                    iam_domain::claims::ClaimError::TenantNamespace => "name",
                    _ => "source",
                }
                .into(),
                message: e.to_string(),
            }]),
            AdminError::SharedUser => conflict(
                "user_in_other_tenants",
                "The user belongs to other tenants too; their account is not this tenant's to change",
            ),
            AdminError::UserDeleted => {
                conflict("user_deleted", "The user is deleted; restore them first")
            }
            AdminError::NotRoot => Self::new(
                StatusCode::FORBIDDEN,
                "not_platform_root",
                "Only the platform's root tenant may register permissions",
            ),
            AdminError::UnknownPermission(p) => Self::validation(vec![FieldError {
                field: "permissions".into(),
                message: format!("`{p}` is not in the permission catalogue"),
            }]),
            AdminError::InvalidMetadata(m) => Self::validation(vec![FieldError {
                field: "metadata".into(),
                message: m.to_string(),
            }]),
            AdminError::HasChildren => conflict(
                "tenant_has_children",
                "The tenant has child tenants; delete or move them first",
            ),
            AdminError::Cycle => conflict(
                "tenant_cycle",
                "A tenant cannot move under itself or one of its descendants",
            ),
            AdminError::RootTenant => conflict(
                "platform_root",
                "The platform's root tenant cannot be blocked, moved or deleted",
            ),
            AdminError::FromAbove => Self::new(
                StatusCode::FORBIDDEN,
                "ancestor_required",
                "Only an administrator of an ancestor tenant may block, move or delete a tenant",
            ),
            AdminError::OwnerMembership => conflict(
                "tenant_owner",
                "The tenant's owner cannot be removed; transfer ownership first",
            ),
            AdminError::NotAMember => Self::validation(vec![FieldError {
                field: "user_id".into(),
                message: "must be an active member of the tenant".into(),
            }]),
            AdminError::WeakPassword(w) => Self::from(AuthError::WeakPassword(w)),
            AdminError::Overloaded => Self::from(AuthError::Overloaded),
            AdminError::Unavailable(source) => Self::from(AuthError::Unavailable(source)),
            AdminError::Internal(source) => Self::from(AuthError::Internal(source)),
        }
    }
}

/// 404 for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such resource")
}

/// 405 for a known route with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This method is not allowed on this resource",
    )
}

/// 500 for a handler that panicked; the panic message is not shown to the client.
pub fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    error!("handler panicked");
    ApiError::internal().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_auth_error_has_a_stable_status_and_code() {
        let cases = [
            (AuthError::InvalidCredentials, 401, "invalid_credentials"),
            (AuthError::NotAMember, 403, "not_a_member"),
            (AuthError::TenantBlocked, 403, "tenant_blocked"),
            (AuthError::InvalidGrant, 400, "invalid_grant"),
            (
                AuthError::Unauthenticated(Unauthenticated::Expired),
                401,
                "invalid_token",
            ),
            (AuthError::Overloaded, 503, "overloaded"),
            (
                AuthError::Internal("boom: secret detail".into()),
                500,
                "internal",
            ),
        ];
        for (err, status, code) in cases {
            let e = ApiError::from(err);
            assert_eq!((e.problem.status, e.problem.code.as_str()), (status, code));
            assert!(!format!("{:?}", e.problem).contains("secret detail"));
        }
    }
}
