//! Access-token validation: the platform's hottest path (every gateway request).

use std::sync::Arc;

use iam_domain::{AccessClaims, ClaimsError, TokenPolicy};
use iam_ports::{Clock, TokenRejection, TokenSigner};
use moka::sync::Cache;
use sha2::{Digest as _, Sha256};

use crate::{KeyService, RevocationView, Unauthenticated};

/// The outcome of signature and recipient checks, which never change for a given token.
type Verified = Result<Arc<AccessClaims>, Unauthenticated>;

/// How long a refusal (bad signature, wrong audience) stays cached.
const REFUSAL_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Validates bearer access tokens: signature by `kid`, time window, issuer and audience, then
/// revocation, user and tenant status from the in-process [`RevocationView`].
///
/// Signature checks are cached by SHA-256 of the token, so a token seen before costs a hash and
/// a lookup instead of an ECDSA verification. Only facts that never change for a given token are
/// cached; time and revocation are checked on every call.
pub struct TokenValidator {
    signer: Arc<dyn TokenSigner>,
    keys: Arc<KeyService>,
    policy: TokenPolicy,
    clock: Arc<dyn Clock>,
    view: Arc<RevocationView>,
    cache: Cache<[u8; 32], Verified>,
}

impl TokenValidator {
    /// A validator whose cache holds at most `cache_capacity` tokens.
    pub fn new(
        signer: Arc<dyn TokenSigner>,
        keys: Arc<KeyService>,
        policy: TokenPolicy,
        clock: Arc<dyn Clock>,
        view: Arc<RevocationView>,
        cache_capacity: u64,
    ) -> Self {
        let lifetime = (policy.access_ttl + policy.leeway)
            .to_std()
            .unwrap_or(REFUSAL_TTL);
        let cache = Cache::builder()
            .max_capacity(cache_capacity)
            // A verified token is useless after it expires; refusals need not live as long.
            .expire_after(Lifetime {
                valid: lifetime,
                refused: REFUSAL_TTL.min(lifetime),
            })
            .build();
        Self {
            signer,
            keys,
            policy,
            clock,
            view,
            cache,
        }
    }

    /// The revocation view consulted after the signature.
    pub fn view(&self) -> &Arc<RevocationView> {
        &self.view
    }

    /// The token policy in force.
    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }

    /// Validates a token; on success returns its claims.
    pub async fn validate(&self, token: &str) -> Result<Arc<AccessClaims>, Unauthenticated> {
        let claims = self.verified(token).await?;
        self.policy
            .check_time(&claims, self.clock.now())
            .map_err(|e| match e {
                ClaimsError::Expired => Unauthenticated::Expired,
                ClaimsError::NotYetValid | ClaimsError::Issuer | ClaimsError::Audience => {
                    Unauthenticated::InvalidClaims
                }
            })?;
        self.view.check(claims.sid, claims.sub, claims.tenant_id)?;
        Ok(claims)
    }

    async fn verified(&self, token: &str) -> Verified {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.cache.get(&key) {
            return hit;
        }
        let outcome = match self.signer.verify(token) {
            // Another instance may have rotated the signing key: reload once, then retry.
            Err(TokenRejection::UnknownKey) if self.keys.reload_for_unknown_kid().await => {
                self.signer.verify(token)
            }
            other => other,
        };
        let verified = match outcome {
            Ok(claims) => match self.policy.check_recipient(&claims) {
                Ok(()) => Ok(Arc::new(claims)),
                Err(_) => Err(Unauthenticated::InvalidClaims),
            },
            Err(TokenRejection::Malformed) => return Err(Unauthenticated::Malformed),
            // Not cached: the key may yet appear (another instance rotating).
            Err(TokenRejection::UnknownKey) => return Err(Unauthenticated::BadSignature),
            Err(TokenRejection::BadSignature) => Err(Unauthenticated::BadSignature),
        };
        self.cache.insert(key, verified.clone());
        verified
    }
}

struct Lifetime {
    valid: std::time::Duration,
    refused: std::time::Duration,
}

impl moka::Expiry<[u8; 32], Verified> for Lifetime {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Verified,
        _created_at: std::time::Instant,
    ) -> Option<std::time::Duration> {
        Some(match value {
            Ok(_) => self.valid,
            Err(_) => self.refused,
        })
    }
}
