//! Custom claims: values other modules have injected into every user access token.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{TenantId, Timestamp};

/// A registered claim's name: namespaced like a permission (`billing.plan`), so it can never be
/// one of the token's own claims, all of which are single words.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClaimName(String);

/// Claims the IAM itself puts in tokens (RFC 7519, RFC 9068, OpenID Connect Core §5.1 and §2,
/// RFC 8693), which no registered claim may shadow.
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "typ",
    "tenantId",
    "roles",
    "permissions",
    "sid",
    "amr",
    "acr",
    "azp",
    "auth_time",
    "nonce",
    "at_hash",
    "c_hash",
    "scope",
    "client_id",
    "cnf",
    "act",
    "may_act",
    "name",
    "given_name",
    "family_name",
    "middle_name",
    "nickname",
    "preferred_username",
    "profile",
    "picture",
    "website",
    "email",
    "email_verified",
    "gender",
    "birthdate",
    "zoneinfo",
    "locale",
    "phone_number",
    "phone_number_verified",
    "address",
    "updated_at",
];

/// Why a claim definition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "a claim name is 3 to 128 characters: dot-separated segments of a-z, 0-9, - and _, starting with a letter, at least two (e.g. `billing.plan`)"
    )]
    Malformed,
    #[error("`{0}` is reserved: registered claims may not shadow the token's own")]
    Reserved(String),
    #[error("the value is {size} bytes; a claim may hold at most {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("a hook URL must be an absolute http:// or https:// URL without credentials")]
    HookUrl,
    #[error("a hook timeout is 1 to 10000 ms")]
    HookTimeout,
    #[error("a metadata field name is 1 to 128 characters")]
    Field,
    #[error(
        "claims of a tenant are named `tenant.…`; other namespaces belong to the platform's modules"
    )]
    TenantNamespace,
}

impl ClaimName {
    /// Parses a claim name.
    pub fn parse(s: &str) -> Result<Self, ClaimError> {
        if RESERVED_CLAIMS.contains(&s) {
            return Err(ClaimError::Reserved(s.to_owned()));
        }
        let p = crate::Permission::parse(s).map_err(|_| ClaimError::Malformed)?;
        if p.namespace() == crate::rbac::IAM_NAMESPACE {
            return Err(ClaimError::Reserved(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the name is in the namespace every tenant may use (`tenant.…`); the others are
    /// the platform's modules', so a tenant cannot forge, say, `billing.plan`.
    pub fn is_tenant_namespace(&self) -> bool {
        self.0.starts_with("tenant.")
    }
}

impl fmt::Display for ClaimName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which tokens a claim goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimScope {
    /// Every user token.
    Platform,
    /// Tokens for this tenant, and with `descendants` for every tenant below it too.
    Tenant { tenant: TenantId, descendants: bool },
}

impl ClaimScope {
    /// Whether a token for `tenant`, whose ancestors are `ancestors`, gets the claim.
    pub fn covers(&self, tenant: TenantId, ancestors: &[TenantId]) -> bool {
        match *self {
            Self::Platform => true,
            Self::Tenant {
                tenant: scope,
                descendants,
            } => scope == tenant || (descendants && ancestors.contains(&scope)),
        }
    }

    /// Whether the scope reaches below its tenant (ancestry must be known to apply it).
    pub fn needs_ancestry(&self) -> bool {
        matches!(
            self,
            Self::Tenant {
                descendants: true,
                ..
            }
        )
    }
}

/// What happens when a hook fails, times out or answers an unusable value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// The token is issued without the claim.
    Omit,
    /// No token is issued: the sign-in (or refresh) fails, to be retried.
    Refuse,
}

impl FailurePolicy {
    /// The stable storage and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Omit => "omit",
            Self::Refuse => "refuse",
        }
    }

    /// Parses the storage name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "omit" => Some(Self::Omit),
            "refuse" => Some(Self::Refuse),
            _ => None,
        }
    }
}

/// An HTTP endpoint asked for the claim's value at each issuance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHook {
    /// Absolute http(s) URL; the IAM POSTs `{claim, user_id, tenant_id}` and expects
    /// `{"value": …}` back.
    pub url: String,
    pub timeout: Duration,
    pub on_failure: FailurePolicy,
}

impl ClaimHook {
    /// Checks a hook's URL and timeout.
    pub fn new(url: &str, timeout_ms: u64, on_failure: FailurePolicy) -> Result<Self, ClaimError> {
        // Parsed as every request will parse it, so a URL accepted here is one that can be asked.
        let parsed = url::Url::parse(url).map_err(|_| ClaimError::HookUrl)?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host_str().is_none_or(str::is_empty)
            || !parsed.username().is_empty()
            || parsed.password().is_some()
            || url.len() > 2048
            || url.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(ClaimError::HookUrl);
        }
        if !(1..=10_000).contains(&timeout_ms) {
            return Err(ClaimError::HookTimeout);
        }
        Ok(Self {
            url: url.to_owned(),
            timeout: Duration::from_millis(timeout_ms),
            on_failure,
        })
    }
}

/// Where a claim's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimSource {
    /// The same JSON value in every token.
    Constant(serde_json::Value),
    /// A top-level field of the user's metadata (absent: no claim).
    UserMetadata(String),
    /// A top-level field of the token's tenant's metadata (absent: no claim).
    TenantMetadata(String),
    /// The module's HTTP endpoint.
    Hook(ClaimHook),
}

/// Checks a metadata field name.
pub fn parse_field(s: &str) -> Result<String, ClaimError> {
    if s.is_empty() || s.chars().count() > 128 || s.chars().any(char::is_control) {
        return Err(ClaimError::Field);
    }
    Ok(s.to_owned())
}

/// A registered claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimDefinition {
    pub name: ClaimName,
    pub scope: ClaimScope,
    pub source: ClaimSource,
    pub created_at: Timestamp,
}

/// Size limits on injected claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimLimits {
    /// Largest serialised value of one claim.
    pub per_claim_bytes: usize,
    /// Largest signed access token, custom claims included.
    pub per_token_bytes: usize,
}

impl Default for ClaimLimits {
    fn default() -> Self {
        Self {
            per_claim_bytes: 1024,
            per_token_bytes: 4096,
        }
    }
}

impl ClaimLimits {
    /// Refuses a value larger than one claim may be.
    pub fn check_value(&self, value: &serde_json::Value) -> Result<(), ClaimError> {
        let size = value.to_string().len();
        if size > self.per_claim_bytes {
            return Err(ClaimError::TooLarge {
                size,
                limit: self.per_claim_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn names_are_namespaced_and_never_reserved() {
        assert!(ClaimName::parse("billing.plan").is_ok());
        for bad in ["plan", "Billing.plan", "billing..plan", ""] {
            assert_eq!(ClaimName::parse(bad), Err(ClaimError::Malformed), "{bad}");
        }
        for reserved in RESERVED_CLAIMS {
            assert!(ClaimName::parse(reserved).is_err(), "{reserved}");
        }
        assert!(matches!(
            ClaimName::parse("iam.anything"),
            Err(ClaimError::Reserved(_))
        ));
    }

    #[test]
    fn scopes_reach_descendants_only_when_asked() {
        let t = |n| TenantId::from_uuid(Uuid::from_u128(n));
        let tenant = ClaimScope::Tenant {
            tenant: t(1),
            descendants: false,
        };
        let tree = ClaimScope::Tenant {
            tenant: t(1),
            descendants: true,
        };
        assert!(ClaimScope::Platform.covers(t(9), &[]));
        assert!(tenant.covers(t(1), &[]));
        assert!(!tenant.covers(t(2), &[t(1)]));
        assert!(tree.covers(t(2), &[t(1)]));
        assert!(!tree.covers(t(3), &[t(4)]));
    }

    #[test]
    fn hooks_are_checked() {
        assert!(ClaimHook::new("http://127.0.0.1:9/claims", 200, FailurePolicy::Omit).is_ok());
        for bad in [
            "ftp://x/y",
            "http://",
            "http://user:pw@host/",
            "http://host/a b",
            "http://a:b:c/",
        ] {
            assert_eq!(
                ClaimHook::new(bad, 200, FailurePolicy::Omit),
                Err(ClaimError::HookUrl),
                "{bad}"
            );
        }
        assert_eq!(
            ClaimHook::new("https://h/", 0, FailurePolicy::Omit),
            Err(ClaimError::HookTimeout)
        );
    }

    #[test]
    fn values_are_limited() {
        let limits = ClaimLimits::default();
        assert!(limits.check_value(&serde_json::json!("pro")).is_ok());
        assert!(matches!(
            limits.check_value(&serde_json::json!("x".repeat(2000))),
            Err(ClaimError::TooLarge { limit: 1024, .. })
        ));
    }
}
