//! Extractors that turn every rejection into a problem document.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use iam_application::Principal;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::problem::ApiError;

/// A JSON body whose rejections are problem documents: 400 malformed, 415 wrong content type,
/// 413 too large, 422 not matching the schema (unknown fields included).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonSyntaxError(_) => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_json",
                    "The request body is not valid JSON",
                ),
                JsonRejection::JsonDataError(e) => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    "The request body does not match the expected schema",
                )
                .detail(e.body_text()),
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "Send the request body as application/json",
                ),
                JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        "The request body is too large",
                    )
                }
                _ => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unreadable_body",
                    "The request body could not be read",
                ),
            }),
        }
    }
}

/// The caller behind a valid `Authorization: Bearer` access token.
pub struct Authenticated(pub Principal);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        principal(&parts.headers, state).await.map(Self)
    }
}

/// The caller behind the request's bearer token, for handlers where the token is optional.
pub async fn principal(
    headers: &axum::http::HeaderMap,
    state: &AppState,
) -> Result<Principal, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthenticated(None))?;
    Ok(state.auth.authenticate(token).await?)
}

/// The client's address: the socket peer, or what a trusted proxy forwarded. Requires the router
/// to be served with `into_make_service_with_connect_info::<SocketAddr>()`.
pub struct ClientIp(pub std::net::IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or_else(|| {
                tracing::error!("the router is served without connection info");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Something went wrong on our side",
                )
            })?;
        // Every header line, in order: a proxy may append a line rather than extend the first,
        // and reading only the first would believe what the client wrote.
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let forwarded = (!forwarded.is_empty()).then_some(forwarded.as_str());
        Ok(Self(state.trusted_proxies.client(peer, forwarded)))
    }
}

/// The caller of an administrative endpoint: the signed-in user behind the bearer token, with
/// the request's id for the audit trail.
pub struct AdminActor {
    pub actor: iam_application::Actor,
    /// The tenant the caller acts in: their token's, or the descendant of it named by the
    /// `X-Tenant-Id` header (delegation: the use case checks the caller may act there).
    pub tenant: iam_domain::TenantId,
}

/// The header naming the tenant an administrative request acts in, when not the token's own.
pub const TENANT_HEADER: &str = "x-tenant-id";

impl FromRequestParts<AppState> for AdminActor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = principal(&parts.headers, state).await?;
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 128)
            .map(str::to_owned);
        let tenant = match parts.headers.get(TENANT_HEADER) {
            None => principal.tenant,
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_tenant_header",
                        "X-Tenant-Id must be a tenant id",
                    )
                })?,
        };
        Ok(Self {
            tenant,
            actor: iam_application::Actor::user(principal, request_id),
        })
    }
}

/// Query parameters whose rejections are problem documents (400).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    "The query parameters are not valid",
                )
                .detail(e.body_text())
            })
    }
}

/// A path segment that must be a UUID; anything else names no resource (404).
pub fn path_id<T: std::str::FromStr>(raw: &str) -> Result<T, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such resource"))
}
