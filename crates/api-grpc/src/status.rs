//! The one place where application errors become gRPC status codes.

use iam_application::{AuthError, TenantError, UserError};
use tonic::{Code, Status};
use tracing::error;

fn internal(what: &str, err: &(dyn std::error::Error + 'static)) -> Status {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    error!(error = %chain, "{what}");
    Status::internal("internal error")
}

fn unavailable(err: &(dyn std::error::Error + 'static)) -> Status {
    error!(error = %err, "store unavailable");
    Status::unavailable("the service is temporarily unavailable")
}

/// Maps an authentication error.
pub fn auth(e: AuthError) -> Status {
    match e {
        AuthError::InvalidCredentials => Status::unauthenticated("invalid email or password"),
        AuthError::NotAMember => Status::permission_denied("not a member of the requested tenant"),
        AuthError::TenantBlocked => Status::permission_denied("the tenant is blocked"),
        AuthError::WeakPassword(weakness) => invalid("password", weakness),
        AuthError::Throttled(secs) => Status::resource_exhausted(format!(
            "too many failed attempts from this address; retry in {secs} s"
        )),
        AuthError::InvalidMfaToken => Status::unauthenticated(
            "invalid_mfa_token: the sign-in challenge is unknown, expired or out of attempts",
        ),
        AuthError::InvalidMfaCode => {
            Status::unauthenticated("invalid_mfa_code: the code is wrong or was used already")
        }
        AuthError::InvalidGrant => Status::unauthenticated(
            "invalid_grant: the refresh token is invalid, expired or revoked",
        ),
        AuthError::Unauthenticated(reason) => {
            Status::unauthenticated(format!("token rejected: {reason}"))
        }
        AuthError::Overloaded => {
            Status::resource_exhausted("too many sign-ins at once; retry shortly")
        }
        AuthError::Unavailable(ref source) => unavailable(source),
        AuthError::Internal(ref source) => internal("internal error", source.as_ref()),
    }
}

/// Maps a user-management error.
pub fn user(e: UserError) -> Status {
    match e {
        UserError::NotFound => Status::not_found("user not found"),
        UserError::TenantNotFound => Status::not_found("tenant not found"),
        UserError::EmailTaken => Status::already_exists("a user with this email exists"),
        UserError::WeakPassword(weakness) => invalid("password", weakness),
        UserError::Overloaded => {
            Status::resource_exhausted("password hashing is at capacity; retry shortly")
        }
        UserError::Unavailable(ref source) => unavailable(source),
        UserError::Internal(ref source) => internal("internal error", source.as_ref()),
    }
}

/// Maps a tenant error.
pub fn tenant(e: TenantError) -> Status {
    match e {
        TenantError::NotFound => Status::not_found("tenant not found"),
        TenantError::Unavailable(ref source) => unavailable(source),
        TenantError::Internal(ref source) => internal("internal error", source.as_ref()),
    }
}

/// INVALID_ARGUMENT naming the field.
pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    Status::new(Code::InvalidArgument, format!("{field}: {problem}"))
}
