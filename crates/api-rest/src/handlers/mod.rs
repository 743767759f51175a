//! Route handlers, grouped by capability.

mod auth;
mod claims;
mod flows;
mod meta;
mod mfa;
mod rbac;
mod tenants;
mod users;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::problem::{ApiError, FieldError};

/// Every documented route.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::me))
        .routes(routes!(auth::tenants))
        .routes(routes!(auth::select_tenant))
        .routes(routes!(auth::switch_tenant))
        .routes(routes!(flows::request_verify_email))
        .routes(routes!(flows::verify_email))
        .routes(routes!(flows::request_reset))
        .routes(routes!(flows::reset_password))
        .routes(routes!(flows::invite))
        .routes(routes!(flows::accept_invite))
        .routes(routes!(mfa::enable))
        .routes(routes!(mfa::verify))
        .routes(routes!(mfa::disable))
        .routes(routes!(mfa::recovery))
        .routes(routes!(mfa::recovery_codes))
        .routes(routes!(mfa::regenerate))
        .routes(routes!(users::create_user, users::list_users))
        .routes(routes!(
            users::get_user,
            users::update_user,
            users::delete_user
        ))
        .routes(routes!(users::restore_user))
        .routes(routes!(users::assign_role))
        .routes(routes!(users::unassign_role))
        .routes(routes!(rbac::create_role, rbac::list_roles))
        .routes(routes!(
            rbac::get_role,
            rbac::update_role,
            rbac::delete_role
        ))
        .routes(routes!(rbac::list_permissions, rbac::register_permission))
        .routes(routes!(rbac::list_audit_events))
        .routes(routes!(claims::list_claims, claims::register_claim))
        .routes(routes!(claims::delete_claim))
        .routes(routes!(tenants::create_tenant, tenants::list_tenants))
        .routes(routes!(
            tenants::get_tenant,
            tenants::update_tenant,
            tenants::delete_tenant
        ))
        .routes(routes!(tenants::block_tenant))
        .routes(routes!(tenants::unblock_tenant))
        .routes(routes!(tenants::transfer_ownership))
        .routes(routes!(tenants::move_tenant))
        .routes(routes!(tenants::list_children))
        .routes(routes!(tenants::list_ancestors))
        .routes(routes!(tenants::list_members))
        .routes(routes!(tenants::remove_member))
        .routes(routes!(meta::jwks))
        .routes(routes!(meta::healthz))
        .routes(routes!(meta::readyz))
}

/// Paging of a list.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 200; 50 by default.
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The page size and the cursor (`T`) of a list request.
pub(crate) fn paging<T: std::str::FromStr>(q: &PageQuery) -> Result<(usize, Option<T>), ApiError> {
    let mut fields = Fields::default();
    let limit = fields.page_limit(q.limit);
    let after = fields.cursor(q.cursor.as_deref());
    fields.finish()?;
    Ok((limit, after))
}

/// Collects field errors so that one answer lists every invalid field.
#[derive(Default)]
pub(crate) struct Fields(Vec<FieldError>);

impl Fields {
    fn check<T, E: std::fmt::Display>(&mut self, field: &str, parsed: Result<T, E>) -> Option<T> {
        match parsed {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(FieldError {
                    field: field.to_owned(),
                    message: e.to_string(),
                });
                None
            }
        }
    }

    /// A page size: 1 to 200, 50 when not given.
    fn page_limit(&mut self, limit: Option<usize>) -> usize {
        self.check(
            "limit",
            match limit {
                None => Ok(50),
                Some(n @ 1..=200) => Ok(n),
                Some(_) => Err("must be between 1 and 200"),
            },
        )
        .unwrap_or(50)
    }

    /// A page cursor: the `next_cursor` of an earlier page, if given.
    fn cursor<T: std::str::FromStr>(&mut self, raw: Option<&str>) -> Option<T> {
        raw.and_then(|c| {
            self.check(
                "cursor",
                c.parse::<T>().map_err(|_| "not a cursor from this API"),
            )
        })
    }

    /// New metadata: a JSON object (at most 4 KiB), or empty when not given.
    fn metadata(&mut self, raw: Option<serde_json::Value>) -> Option<iam_domain::Metadata> {
        match raw {
            Some(m) => self.check("metadata", iam_domain::Metadata::parse(m)),
            None => Some(iam_domain::Metadata::default()),
        }
    }

    /// An RFC 7386 merge patch over metadata, if given: its shape only (an object); the merged
    /// result is checked by the use case.
    fn merge_patch(&mut self, raw: Option<serde_json::Value>) -> Option<serde_json::Value> {
        raw.and_then(|m| {
            self.check(
                "metadata",
                if m.is_object() {
                    Ok(m)
                } else {
                    Err("must be a JSON object (a merge patch)")
                },
            )
        })
    }

    fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.0))
        }
    }
}
