//! Access-token claims and the rules that decide whether a verified token may be used.

use chrono::Duration;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{RoleName, SessionId, TenantId, Timestamp, UserId};

/// The claim set of an access token (`typ: at+jwt`, RFC 9068 with the platform's `tenantId`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: UserId,
    pub aud: Audience,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub jti: Uuid,
    #[serde(rename = "tenantId")]
    pub tenant_id: TenantId,
    pub roles: Vec<String>,
    pub sid: SessionId,
    /// Authentication methods references (RFC 8176).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// Claims beyond the platform's own (custom claims registered by modules).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The `aud` claim: RFC 7519 allows one string or an array of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` names the given audience.
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(a) => a == audience,
            Self::Many(all) => all.iter().any(|a| a == audience),
        }
    }
}

/// Why a token whose signature is good may still not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued by another issuer")]
    Issuer,
    #[error("token is meant for another audience")]
    Audience,
}

/// What tokens this service issues and accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
}

/// The facts an access token states about its holder.
#[derive(Debug, Clone)]
pub struct Grant {
    pub user: UserId,
    pub tenant: TenantId,
    pub roles: Vec<RoleName>,
    pub session: SessionId,
    pub amr: Vec<String>,
}

impl TokenPolicy {
    /// Builds the claims of a new access token issued at `now`.
    pub fn access_claims(&self, grant: &Grant, now: Timestamp, jti: Uuid) -> AccessClaims {
        let iat = now.timestamp();
        AccessClaims {
            iss: self.issuer.clone(),
            sub: grant.user,
            aud: Audience::One(self.audience.clone()),
            iat,
            exp: iat + self.access_ttl.num_seconds(),
            nbf: None,
            jti,
            tenant_id: grant.tenant,
            roles: grant.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            sid: grant.session,
            amr: grant.amr.clone(),
            extra: serde_json::Map::new(),
        }
    }

    /// Checks the time window, issuer and audience of claims whose signature was verified.
    pub fn check(&self, claims: &AccessClaims, now: Timestamp) -> Result<(), ClaimsError> {
        self.check_time(claims, now)?;
        self.check_recipient(claims)
    }

    /// Checks `exp`, `nbf` and `iat` against `now`, with leeway.
    pub fn check_time(&self, claims: &AccessClaims, now: Timestamp) -> Result<(), ClaimsError> {
        let now = now.timestamp();
        let leeway = self.leeway.num_seconds();
        if claims.exp + leeway <= now {
            return Err(ClaimsError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf - leeway > now) || claims.iat - leeway > now {
            return Err(ClaimsError::NotYetValid);
        }
        Ok(())
    }

    /// Checks `iss` and `aud`: facts that never change for a given token.
    pub fn check_recipient(&self, claims: &AccessClaims) -> Result<(), ClaimsError> {
        if claims.iss != self.issuer {
            return Err(ClaimsError::Issuer);
        }
        if !claims.aud.contains(&self.audience) {
            return Err(ClaimsError::Audience);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn policy() -> TokenPolicy {
        TokenPolicy {
            issuer: "https://iam.test".into(),
            audience: "platform".into(),
            access_ttl: Duration::minutes(15),
            refresh_ttl: Duration::days(7),
            leeway: Duration::seconds(30),
        }
    }

    fn claims(now: Timestamp) -> AccessClaims {
        let grant = Grant {
            user: UserId::from_uuid(Uuid::nil()),
            tenant: TenantId::from_uuid(Uuid::nil()),
            roles: vec![RoleName::owner()],
            session: SessionId::from_uuid(Uuid::nil()),
            amr: vec!["pwd".into()],
        };
        policy().access_claims(&grant, now, Uuid::nil())
    }

    #[test]
    fn time_window_with_leeway() {
        let t0 = chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let c = claims(t0);
        assert_eq!(c.exp - c.iat, 900);
        let at = |secs: i64| t0 + Duration::seconds(secs);
        let p = policy();
        let cases = [
            (0, Ok(())),
            (899, Ok(())),
            (929, Ok(())),
            (930, Err(ClaimsError::Expired)),
            (-30, Ok(())),
            (-31, Err(ClaimsError::NotYetValid)),
        ];
        for (offset, expected) in cases {
            assert_eq!(p.check(&c, at(offset)), expected, "offset {offset}");
        }
    }

    #[test]
    fn issuer_and_audience() {
        let t0 = chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let p = policy();
        let mut c = claims(t0);
        c.iss = "https://evil.test".into();
        assert_eq!(p.check(&c, t0), Err(ClaimsError::Issuer));
        let mut c = claims(t0);
        c.aud = Audience::Many(vec!["other".into(), "platform".into()]);
        assert_eq!(p.check(&c, t0), Ok(()));
        c.aud = Audience::One("other".into());
        assert_eq!(p.check(&c, t0), Err(ClaimsError::Audience));
    }

    #[test]
    fn claims_use_the_platform_names_on_the_wire() {
        let t0 = chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let json = serde_json::to_value(claims(t0)).unwrap();
        assert!(json.get("tenantId").is_some());
        assert_eq!(json["roles"], serde_json::json!(["owner"]));
        assert_eq!(json["aud"], "platform");
        assert!(json.get("nbf").is_none());
        let back: AccessClaims = serde_json::from_value(json).unwrap();
        assert_eq!(back, claims(t0));
    }
}
