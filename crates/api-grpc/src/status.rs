//! The one place where application errors become gRPC status codes.

use iam_application::{AdminError, AuthError, TenantError};
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
        AuthError::InvalidSelection => Status::unauthenticated(
            "invalid_selection_token: the tenant-selection token is unknown, spent or expired",
        ),
        AuthError::InvalidGrant => Status::unauthenticated(
            "invalid_grant: the refresh token is invalid, expired or revoked",
        ),
        AuthError::Unauthenticated(reason) => {
            Status::unauthenticated(format!("token rejected: {reason}"))
        }
        AuthError::Overloaded => {
            Status::resource_exhausted("too many sign-ins at once; retry shortly")
        }
        AuthError::ClaimsUnavailable(e) => Status::unavailable(format!(
            "claims_unavailable: custom claim {} is unavailable; retry shortly",
            e.claim
        )),
        AuthError::Unavailable(ref source) => unavailable(source),
        AuthError::Internal(ref source) => internal("internal error", source.as_ref()),
    }
}

/// Maps an administrative (users, roles, audit) error.
pub fn admin(e: AdminError) -> Status {
    match e {
        AdminError::NotFound => Status::not_found("user not found"),
        AdminError::RoleNotFound => Status::not_found("role not found"),
        AdminError::TenantNotFound => Status::not_found("tenant not found"),
        AdminError::Forbidden(p) => Status::permission_denied(format!("requires {p}")),
        AdminError::Escalation => Status::permission_denied(
            "a role may only be granted or shaped by someone holding all of its permissions",
        ),
        AdminError::NotRoot => {
            Status::permission_denied("only the platform's root tenant may register permissions")
        }
        AdminError::EmailTaken => Status::already_exists("a user with this email exists"),
        AdminError::RoleTaken => Status::already_exists("the tenant has a role of this name"),
        AdminError::SystemRole => {
            Status::failed_precondition("system roles cannot be changed or deleted")
        }
        AdminError::LastOwner => {
            Status::failed_precondition("the tenant's last active owner cannot lose the owner role")
        }
        AdminError::NotDeleted => Status::failed_precondition("the user is not deleted"),
        AdminError::ClaimNotFound => Status::not_found("claim not found"),
        AdminError::HooksPlatformOnly => {
            Status::permission_denied("only the platform may register hook claims")
        }
        AdminError::ClaimTaken => Status::already_exists("a claim of this name is registered"),
        AdminError::InvalidClaim(e) => invalid("claim", e),
        AdminError::SharedUser => Status::failed_precondition(
            "the user belongs to other tenants too; their account is not this tenant's to change",
        ),
        AdminError::UserDeleted => {
            Status::failed_precondition("the user is deleted; restore them first")
        }
        AdminError::UnknownPermission(p) => {
            invalid("permissions", format!("`{p}` is not in the catalogue"))
        }
        AdminError::InvalidMetadata(m) => invalid("metadata", m),
        AdminError::HasChildren => {
            Status::failed_precondition("the tenant has child tenants; delete or move them first")
        }
        AdminError::Cycle => {
            Status::failed_precondition("a tenant cannot move under itself or its descendants")
        }
        AdminError::RootTenant => Status::failed_precondition(
            "the platform's root tenant cannot be blocked, moved or deleted",
        ),
        AdminError::FromAbove => {
            Status::permission_denied("only an administrator of an ancestor tenant may do this")
        }
        AdminError::OwnerMembership => Status::failed_precondition(
            "the tenant's owner cannot be removed; transfer ownership first",
        ),
        AdminError::NotAMember => invalid("user_id", "must be an active member of the tenant"),
        AdminError::WeakPassword(weakness) => invalid("password", weakness),
        AdminError::Overloaded => {
            Status::resource_exhausted("password hashing is at capacity; retry shortly")
        }
        AdminError::Unavailable(ref source) => unavailable(source),
        AdminError::Internal(ref source) => internal("internal error", source.as_ref()),
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
