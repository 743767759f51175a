//! ES256 (ECDSA P-256 with SHA-256) access-token signing and verification with josekit.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use iam_domain::{AccessClaims, KeyId};
use iam_ports::{KeyMaterial, SignError, TokenRejection, TokenSigner};
use josekit::JoseError;
use josekit::jwk::KeyPair as _;
use josekit::jws::alg::ecdsa::{EcdsaJwsAlgorithm, EcdsaJwsSigner, EcdsaJwsVerifier};
use josekit::jws::{self, JwsHeader, JwsVerifier};

/// The only algorithm this service signs or accepts.
const ALG: EcdsaJwsAlgorithm = EcdsaJwsAlgorithm::Es256;
/// RFC 9068 access-token type.
const TYP: &str = "at+jwt";
/// Tokens longer than this are refused before any parsing (ours are well under 2 KiB).
const MAX_TOKEN_LEN: usize = 16 * 1024;

struct Ring {
    active: Option<(KeyId, EcdsaJwsSigner)>,
    verifiers: HashMap<String, EcdsaJwsVerifier>,
    jwks: serde_json::Value,
}

/// A ring of ES256 keys: the active one signs, all of them verify.
pub struct EcdsaSigner {
    ring: RwLock<Arc<Ring>>,
}

impl Default for EcdsaSigner {
    fn default() -> Self {
        Self::new()
    }
}

impl EcdsaSigner {
    /// An empty ring: nothing signs or verifies until keys are installed.
    pub fn new() -> Self {
        Self {
            ring: RwLock::new(Arc::new(Ring {
                active: None,
                verifiers: HashMap::new(),
                jwks: serde_json::json!({ "keys": [] }),
            })),
        }
    }

    fn ring(&self) -> Arc<Ring> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn unexpected(e: JoseError) -> SignError {
    SignError::Unexpected(Box::new(e))
}

impl TokenSigner for EcdsaSigner {
    fn generate(&self, kid: KeyId) -> Result<KeyMaterial, SignError> {
        let pair = ALG.generate_key_pair().map_err(unexpected)?;
        Ok(KeyMaterial {
            kid,
            private_pem: pair.to_pem_private_key(),
        })
    }

    fn install(&self, keys: &[KeyMaterial], active: &KeyId) -> Result<(), SignError> {
        let mut verifiers = HashMap::new();
        let mut jwks = Vec::new();
        let mut signer = None;
        for key in keys {
            let pair = ALG
                .key_pair_from_pem(&key.private_pem)
                .map_err(unexpected)?;
            let mut jwk = pair.to_jwk_public_key();
            jwk.set_key_id(key.kid.as_str());
            jwk.set_key_use("sig");
            jwk.set_algorithm(ALG.to_string());
            verifiers.insert(
                key.kid.as_str().to_owned(),
                ALG.verifier_from_jwk(&jwk).map_err(unexpected)?,
            );
            jwks.push(serde_json::Value::Object(jwk.as_ref().clone()));
            if &key.kid == active {
                signer = Some((
                    key.kid.clone(),
                    ALG.signer_from_pem(&key.private_pem).map_err(unexpected)?,
                ));
            }
        }
        let Some(active) = signer else {
            return Err(SignError::NoActiveKey);
        };
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Ring {
            active: Some(active),
            verifiers,
            jwks: serde_json::json!({ "keys": jwks }),
        });
        Ok(())
    }

    fn sign(&self, claims: &AccessClaims) -> Result<String, SignError> {
        let ring = self.ring();
        let (kid, signer) = ring.active.as_ref().ok_or(SignError::NoActiveKey)?;
        let mut header = JwsHeader::new();
        header.set_token_type(TYP);
        header.set_key_id(kid.as_str());
        let payload = serde_json::to_vec(claims).map_err(|e| SignError::Unexpected(Box::new(e)))?;
        jws::serialize_compact(&payload, &header, signer).map_err(unexpected)
    }

    fn verify(&self, token: &str) -> Result<AccessClaims, TokenRejection> {
        if token.len() > MAX_TOKEN_LEN || token.bytes().filter(|&b| b == b'.').count() != 2 {
            return Err(TokenRejection::Malformed);
        }
        let ring = self.ring();
        // The selector can only fail with a JoseError; this records which rejection it meant.
        let refused = Cell::new(None);
        let selected = Cell::new(false);
        let decoded = jws::deserialize_compact_with_selector(token, |header| {
            let refuse = |why| {
                refused.set(Some(why));
                Err(JoseError::InvalidJwsFormat(anyhow::anyhow!("{why}")))
            };
            if header.algorithm() != Some("ES256") {
                return refuse(TokenRejection::Malformed);
            }
            if !header.token_type().is_some_and(|t| {
                t.eq_ignore_ascii_case(TYP) || t.eq_ignore_ascii_case("application/at+jwt")
            }) {
                return refuse(TokenRejection::Malformed);
            }
            match header.key_id().and_then(|kid| ring.verifiers.get(kid)) {
                Some(v) => {
                    selected.set(true);
                    Ok(Some(v as &dyn JwsVerifier))
                }
                None => refuse(TokenRejection::UnknownKey),
            }
        });
        let payload = match decoded {
            Ok((payload, _header)) => payload,
            Err(_) if refused.get().is_some() => {
                return Err(refused.get().unwrap_or(TokenRejection::Malformed));
            }
            Err(JoseError::InvalidSignature(_)) if selected.get() => {
                return Err(TokenRejection::BadSignature);
            }
            Err(_) => return Err(TokenRejection::Malformed),
        };
        serde_json::from_slice(&payload).map_err(|_| TokenRejection::Malformed)
    }

    fn jwks(&self) -> serde_json::Value {
        self.ring().jwks.clone()
    }

    fn knows(&self, kid: &KeyId) -> bool {
        self.ring().verifiers.contains_key(kid.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use chrono::TimeZone;
    use iam_domain::token::Grant;
    use iam_domain::{RoleName, SessionId, TenantId, TokenPolicy, UserId};

    fn kid(s: &str) -> KeyId {
        KeyId::parse(s).unwrap()
    }

    fn claims() -> AccessClaims {
        let policy = TokenPolicy {
            issuer: "https://iam.test".into(),
            audience: "platform".into(),
            access_ttl: chrono::Duration::minutes(15),
            refresh_ttl: chrono::Duration::days(7),
            leeway: chrono::Duration::seconds(30),
        };
        let grant = Grant {
            user: UserId::from_uuid(uuid_of(1)),
            tenant: TenantId::from_uuid(uuid_of(2)),
            roles: vec![RoleName::owner()],
            session: SessionId::from_uuid(uuid_of(3)),
            amr: vec!["pwd".into()],
        };
        let now = chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        policy.access_claims(&grant, now, uuid_of(4))
    }

    fn uuid_of(n: u8) -> uuid::Uuid {
        uuid::Uuid::from_bytes([n; 16])
    }

    fn ring_with(kids: &[&str], active: &str) -> EcdsaSigner {
        let s = EcdsaSigner::new();
        let keys: Vec<_> = kids.iter().map(|k| s.generate(kid(k)).unwrap()).collect();
        s.install(&keys, &kid(active)).unwrap();
        s
    }

    /// Re-encodes a token's header with changes, keeping payload and signature.
    fn with_header(token: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut parts = token.split('.');
        let mut header: serde_json::Value =
            serde_json::from_slice(&B64.decode(parts.next().unwrap()).unwrap()).unwrap();
        edit(&mut header);
        let rest: Vec<_> = parts.collect();
        format!(
            "{}.{}",
            B64.encode(serde_json::to_vec(&header).unwrap()),
            rest.join(".")
        )
    }

    #[test]
    fn signs_and_verifies() {
        let s = ring_with(&["k1"], "k1");
        let token = s.sign(&claims()).unwrap();
        assert_eq!(s.verify(&token).unwrap(), claims());
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(header["kid"], "k1");
    }

    #[test]
    fn rejection_table() {
        let s = ring_with(&["k1"], "k1");
        let good = s.sign(&claims()).unwrap();
        let other = ring_with(&["k1"], "k1").sign(&claims()).unwrap();
        let (h, p, sig) = {
            let v: Vec<_> = good.split('.').collect();
            (v[0].to_owned(), v[1].to_owned(), v[2].to_owned())
        };
        let forged_payload = {
            let mut c = claims();
            c.roles = vec!["admin".into()];
            B64.encode(serde_json::to_vec(&c).unwrap())
        };
        let cases = [
            ("empty", String::new(), TokenRejection::Malformed),
            ("two parts", format!("{h}.{p}"), TokenRejection::Malformed),
            (
                "bad base64 header",
                format!("!!.{p}.{sig}"),
                TokenRejection::Malformed,
            ),
            (
                "header not json",
                format!("{}.{p}.{sig}", B64.encode("nope")),
                TokenRejection::Malformed,
            ),
            (
                "alg none",
                with_header(&good, |h| h["alg"] = "none".into()),
                TokenRejection::Malformed,
            ),
            (
                "alg HS256",
                with_header(&good, |h| h["alg"] = "HS256".into()),
                TokenRejection::Malformed,
            ),
            (
                "alg ES384",
                with_header(&good, |h| h["alg"] = "ES384".into()),
                TokenRejection::Malformed,
            ),
            (
                "no typ",
                with_header(&good, |h| {
                    h.as_object_mut().unwrap().remove("typ");
                }),
                TokenRejection::Malformed,
            ),
            (
                "typ JWT",
                with_header(&good, |h| h["typ"] = "JWT".into()),
                TokenRejection::Malformed,
            ),
            (
                "unknown kid",
                with_header(&good, |h| h["kid"] = "k9".into()),
                TokenRejection::UnknownKey,
            ),
            (
                "no kid",
                with_header(&good, |h| {
                    h.as_object_mut().unwrap().remove("kid");
                }),
                TokenRejection::UnknownKey,
            ),
            ("other key, same kid", other, TokenRejection::BadSignature),
            (
                "payload swapped",
                format!("{h}.{forged_payload}.{sig}"),
                TokenRejection::BadSignature,
            ),
            (
                "signature truncated",
                format!("{h}.{p}.{}", &sig[..20]),
                TokenRejection::BadSignature,
            ),
            (
                "oversized",
                "a.b.".to_owned() + &"c".repeat(MAX_TOKEN_LEN),
                TokenRejection::Malformed,
            ),
        ];
        for (name, token, expected) in cases {
            assert_eq!(s.verify(&token).err(), Some(expected), "{name}");
        }
    }

    #[test]
    fn payload_that_is_not_our_claims_is_malformed() {
        let s = ring_with(&["k1"], "k1");
        let ring = s.ring();
        let (_, signer) = ring.active.as_ref().unwrap();
        let mut header = JwsHeader::new();
        header.set_token_type(TYP);
        header.set_key_id("k1");
        let token = jws::serialize_compact(br#"{"sub":"x"}"#, &header, signer).unwrap();
        assert_eq!(s.verify(&token), Err(TokenRejection::Malformed));
    }

    #[test]
    fn retired_keys_keep_verifying_and_jwks_lists_all() {
        let s = EcdsaSigner::new();
        let k1 = s.generate(kid("k1")).unwrap();
        s.install(std::slice::from_ref(&k1), &kid("k1")).unwrap();
        let old = s.sign(&claims()).unwrap();
        let k2 = s.generate(kid("k2")).unwrap();
        s.install(&[k1, k2], &kid("k2")).unwrap();
        assert!(s.verify(&old).is_ok());
        let new = s.sign(&claims()).unwrap();
        assert!(new.starts_with(&with_header(&new, |h| h["kid"] = "k2".into())[..10]));
        let jwks = s.jwks();
        let kids: Vec<_> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, ["k1", "k2"]);
        for k in jwks["keys"].as_array().unwrap() {
            assert_eq!(k["kty"], "EC");
            assert_eq!(k["crv"], "P-256");
            assert!(k.get("d").is_none(), "private part must never be published");
        }
        assert!(s.knows(&kid("k1")) && !s.knows(&kid("k3")));
    }

    #[test]
    fn install_requires_the_active_key() {
        let s = EcdsaSigner::new();
        let k1 = s.generate(kid("k1")).unwrap();
        assert!(matches!(
            s.install(&[k1], &kid("k2")),
            Err(SignError::NoActiveKey)
        ));
        assert!(matches!(s.sign(&claims()), Err(SignError::NoActiveKey)));
    }
}
