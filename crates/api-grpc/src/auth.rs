//! AuthService: Login, Refresh, ValidateToken.

use std::net::IpAddr;
use std::sync::Arc;

use iam_application::{
    AuthService, SecondFactor, SignIn, TokenPair, TrustedProxies, Unauthenticated,
};
use iam_domain::{AccessClaims, Audience, Email, Password, RecoveryCode};
use tonic::{Request, Response, Status};

use crate::convert::{json_to_struct, tenant_id};
use crate::pb::{self, auth_service_server};
use crate::status::{self, invalid};

/// The AuthService implementation.
pub struct Auth {
    auth: Arc<AuthService>,
    trusted_proxies: Arc<TrustedProxies>,
}

impl Auth {
    pub fn new(auth: Arc<AuthService>, trusted_proxies: Arc<TrustedProxies>) -> Self {
        Self {
            auth,
            trusted_proxies,
        }
    }

    /// The caller's address: the peer, or what a trusted proxy forwarded.
    fn client<T>(&self, request: &Request<T>) -> Result<IpAddr, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.ip())
            .ok_or_else(|| Status::internal("the peer's address is unknown"))?;
        // Every value, in order (see the REST extractor).
        let forwarded = request
            .metadata()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let forwarded = (!forwarded.is_empty()).then_some(forwarded.as_str());
        Ok(self.trusted_proxies.client(peer, forwarded))
    }
}

fn tokens(pair: TokenPair) -> pb::TokenResponse {
    pb::TokenResponse {
        access_token: pair.access_token,
        token_type: "Bearer".into(),
        expires_in: pair.expires_in,
        refresh_token: pair.refresh_token.expose().to_owned(),
        refresh_expires_in: pair.refresh_expires_in,
        tenant_id: pair.tenant.to_string(),
    }
}

fn reason(r: Unauthenticated) -> pb::RejectionReason {
    match r {
        Unauthenticated::Malformed => pb::RejectionReason::Malformed,
        Unauthenticated::BadSignature => pb::RejectionReason::BadSignature,
        Unauthenticated::Expired => pb::RejectionReason::Expired,
        Unauthenticated::InvalidClaims => pb::RejectionReason::InvalidClaims,
        Unauthenticated::Revoked => pb::RejectionReason::Revoked,
        Unauthenticated::UserDisabled => pb::RejectionReason::UserDisabled,
        Unauthenticated::TenantBlocked => pb::RejectionReason::TenantBlocked,
    }
}

fn claims(c: &AccessClaims, permissions: Vec<String>) -> pb::Claims {
    pb::Claims {
        permissions,
        sub: c.sub.to_string(),
        tenant_id: c.tenant_id.to_string(),
        roles: c.roles.clone(),
        sid: c.sid.to_string(),
        exp: c.exp,
        iat: c.iat,
        iss: c.iss.clone(),
        aud: match &c.aud {
            Audience::One(a) => vec![a.clone()],
            Audience::Many(all) => all.clone(),
        },
        jti: c.jti.to_string(),
        amr: c.amr.clone(),
        custom: (!c.extra.is_empty()).then(|| json_to_struct(&c.extra)),
    }
}

#[tonic::async_trait]
impl auth_service_server::AuthService for Auth {
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let client = self.client(&request)?;
        let req = request.into_inner();
        let email = Email::parse(&req.email).map_err(|e| invalid("email", e))?;
        let password = Password::presented(&req.password).map_err(|e| invalid("password", e))?;
        let tenant = if req.tenant_id.is_empty() {
            None
        } else {
            Some(tenant_id("tenant_id", &req.tenant_id)?)
        };
        let outcome = match self
            .auth
            .login(&email, &password, tenant, client)
            .await
            .map_err(status::auth)?
        {
            SignIn::Tokens(pair) => pb::login_response::Outcome::Tokens(tokens(pair)),
            SignIn::TenantSelection {
                selection_token,
                tenants,
                expires_in,
            } => pb::login_response::Outcome::TenantSelection(pb::TenantSelectionRequired {
                tenants: tenants
                    .iter()
                    .map(|c| pb::TenantChoice {
                        tenant_id: c.tenant.id.to_string(),
                        name: c.tenant.name.as_str().to_owned(),
                        status: if c.blocked {
                            pb::TenantStatus::Blocked
                        } else {
                            pb::TenantStatus::Active
                        }
                        .into(),
                        roles: c.roles.iter().map(|r| r.as_str().to_owned()).collect(),
                    })
                    .collect(),
                selection_token: selection_token.expose().to_owned(),
                expires_in,
            }),
            SignIn::MfaRequired {
                mfa_token,
                expires_in,
            } => pb::login_response::Outcome::Mfa(pb::MfaRequired {
                mfa_token: mfa_token.expose().to_owned(),
                expires_in,
            }),
        };
        Ok(Response::new(pb::LoginResponse {
            outcome: Some(outcome),
        }))
    }

    async fn verify_mfa(
        &self,
        request: Request<pb::VerifyMfaRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        let client = self.client(&request)?;
        let req = request.into_inner();
        let pair = self
            .auth
            .complete_mfa(&req.mfa_token, SecondFactor::Totp(req.code), client)
            .await
            .map_err(status::auth)?;
        Ok(Response::new(tokens(pair)))
    }

    async fn recover(
        &self,
        request: Request<pb::RecoverRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        let client = self.client(&request)?;
        let req = request.into_inner();
        // A malformed code is just a wrong one: it spends an attempt like any other.
        let code = RecoveryCode::parse(&req.recovery_code)
            .unwrap_or_else(|| RecoveryCode::from_random([0; 10]));
        let pair = self
            .auth
            .complete_mfa(&req.mfa_token, SecondFactor::Recovery(code), client)
            .await
            .map_err(status::auth)?;
        Ok(Response::new(tokens(pair)))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        let client = self.client(&request)?;
        let pair = self
            .auth
            .refresh(&request.into_inner().refresh_token, client)
            .await
            .map_err(status::auth)?;
        Ok(Response::new(tokens(pair)))
    }

    async fn validate_token(
        &self,
        request: Request<pb::ValidateTokenRequest>,
    ) -> Result<Response<pb::ValidateTokenResponse>, Status> {
        let token = request.into_inner().token;
        let answer = match self.auth.validator().validate(&token).await {
            Ok(valid) => pb::ValidateTokenResponse {
                valid: true,
                reason: pb::RejectionReason::Unspecified.into(),
                reason_code: String::new(),
                claims: Some(claims(
                    &valid,
                    self.auth.validator().view().permissions(
                        valid.tenant_id,
                        &valid.roles,
                        valid.iat,
                    ),
                )),
            },
            Err(r) => pb::ValidateTokenResponse {
                valid: false,
                reason: reason(r).into(),
                reason_code: r.to_string(),
                claims: None,
            },
        };
        Ok(Response::new(answer))
    }
}
