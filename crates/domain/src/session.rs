//! Sessions and the opaque refresh tokens that keep them alive.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::{SessionId, TenantId, Timestamp, UserId};

/// A session: one refresh-token family, scoped to one user in one tenant. Every refresh rotates
/// the family's live token; presenting a rotated one revokes the whole family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub user: UserId,
    pub tenant: TenantId,
    /// Authentication methods used at sign-in (RFC 8176 values such as `pwd`).
    pub amr: Vec<String>,
    pub auth_time: Timestamp,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl Session {
    /// Whether the family has been revoked (logout, reuse, reset, disablement).
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// An opaque refresh token: 256 random bits, base64url without padding. Only its hash is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    /// Encodes 32 random bytes from the caller's randomness source.
    pub fn from_random(bytes: [u8; 32]) -> Self {
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Accepts a token from a client if it has the right shape; anything else cannot be ours.
    pub fn parse(input: &str) -> Option<Self> {
        let decoded = URL_SAFE_NO_PAD.decode(input).ok()?;
        (decoded.len() == 32).then(|| Self(input.to_owned()))
    }

    /// The token to hand to the client, once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 under which it is stored and looked up.
    pub fn hash(&self) -> RefreshTokenHash {
        RefreshTokenHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

/// The stored form of a refresh token. A full-entropy token needs no salt or slow hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RefreshTokenHash([u8; 32]);

impl RefreshTokenHash {
    /// Wraps bytes read back from storage.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for RefreshTokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RefreshTokenHash({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_hash_stably() {
        let t = RefreshToken::from_random([7; 32]);
        assert_eq!(t.expose().len(), 43);
        let parsed = RefreshToken::parse(t.expose()).unwrap();
        assert_eq!(parsed.hash(), t.hash());
        assert_ne!(RefreshToken::from_random([8; 32]).hash(), t.hash());
    }

    #[test]
    fn rejects_malformed_tokens() {
        for bad in ["", "abc", "!!!!", &"A".repeat(44), &"A".repeat(42)] {
            assert!(RefreshToken::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn never_prints_its_value() {
        let t = RefreshToken::from_random([1; 32]);
        assert!(!format!("{t:?}").contains(t.expose()));
    }
}
