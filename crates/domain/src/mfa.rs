//! Second factors: TOTP (RFC 6238) enrolment state, recovery codes, and the short-lived challenge
//! that sits between the first and second factor of a sign-in.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::{PasswordHash, TenantId, Timestamp, UserId};

/// RFC 6238 time step, in seconds.
pub const TOTP_STEP_SECS: i64 = 30;
/// Steps accepted either side of now (clock skew between phone and server).
pub const TOTP_SKEW_STEPS: i64 = 1;
/// Digits per TOTP code.
pub const TOTP_DIGITS: usize = 6;
/// Bytes of a TOTP secret (160 bits, as RFC 4226 recommends for HMAC-SHA-1).
pub const TOTP_SECRET_BYTES: usize = 20;
/// Recovery codes per set.
pub const RECOVERY_CODES: usize = 10;
/// How long a sign-in may wait for its second factor.
pub const MFA_CHALLENGE_SECS: i64 = 5 * 60;
/// Codes a challenge accepts in all before it dies.
pub const MFA_MAX_ATTEMPTS: u32 = 5;

/// The RFC 6238 time step containing `at`.
pub fn totp_step(at: Timestamp) -> i64 {
    at.timestamp().div_euclid(TOTP_STEP_SECS)
}

/// A TOTP shared secret. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

impl TotpSecret {
    /// Wraps random bytes (or bytes opened from storage).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The raw secret, for the HMAC and for sealing.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Reads RFC 4648 base32 (padding and case ignored), as shown by [`TotpSecret::base32`].
    pub fn from_base32(input: &str) -> Option<Self> {
        let mut out = Vec::with_capacity(input.len() * 5 / 8);
        let (mut buffer, mut bits) = (0u32, 0u32);
        for c in input.trim_end_matches('=').chars() {
            let v = match c.to_ascii_uppercase() {
                c @ 'A'..='Z' => c as u32 - 'A' as u32,
                c @ '2'..='7' => c as u32 - '2' as u32 + 26,
                _ => return None,
            };
            buffer = (buffer << 5) | v;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                out.push(((buffer >> bits) & 0xff) as u8);
            }
        }
        Some(Self(out))
    }

    /// RFC 4648 base32 without padding: what authenticator apps accept typed in.
    pub fn base32(&self) -> String {
        base32_encode(&self.0)
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

fn base32_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// A user's TOTP enrolment. `confirmed_at` is `None` until a first code proves the app has the
/// secret; only a confirmed enrolment guards sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaEnrolment {
    pub user: UserId,
    /// The secret, sealed under the master key with the user id as context.
    pub sealed_secret: Vec<u8>,
    pub created_at: Timestamp,
    pub confirmed_at: Option<Timestamp>,
    /// The last time step whose code was accepted: a code is accepted at most once.
    pub last_used_step: Option<i64>,
}

impl MfaEnrolment {
    /// Whether sign-in requires the second factor.
    pub fn is_active(&self) -> bool {
        self.confirmed_at.is_some()
    }
}

/// Crockford's base32 alphabet: no I, L, O or U, so codes survive being read aloud or retyped.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A recovery code: `LLLL-SSSS-SSSS-SSSS`, 16 Crockford base32 characters (80 bits). The first
/// group is a non-secret lookup key, so checking a code costs one Argon2 verification, not ten;
/// the other 60 bits are the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryCode(String);

impl RecoveryCode {
    /// Builds a code from 10 random bytes.
    pub fn from_random(bytes: [u8; 10]) -> Self {
        let mut value = u128::from_be_bytes({
            let mut b = [0u8; 16];
            b[6..].copy_from_slice(&bytes);
            b
        });
        let mut chars = [0u8; 16];
        for c in chars.iter_mut().rev() {
            *c = CROCKFORD[(value & 31) as usize];
            value >>= 5;
        }
        Self(String::from_utf8_lossy(&chars).into_owned())
    }

    /// Accepts a code as people type it: any case, spaces or dashes, and the usual confusions
    /// (O for 0, I or L for 1).
    pub fn parse(input: &str) -> Option<Self> {
        let mut out = String::with_capacity(16);
        for c in input.chars() {
            let c = match c.to_ascii_uppercase() {
                ' ' | '-' => continue,
                'O' => '0',
                'I' | 'L' => '1',
                c => c,
            };
            if !c.is_ascii() || !CROCKFORD.contains(&(c as u8)) {
                return None;
            }
            out.push(c);
        }
        (out.len() == 16).then_some(Self(out))
    }

    /// The non-secret lookup key (first group).
    pub fn lookup(&self) -> &str {
        &self.0[..4]
    }

    /// The whole code as the hash input.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// The code in groups of four, to show the user once.
    pub fn display(&self) -> String {
        self.0
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-")
    }
}

impl fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecoveryCode({}-<redacted>)", self.lookup())
    }
}

/// A stored recovery code: its lookup key and the Argon2id hash of the whole code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecoveryCode {
    pub lookup: String,
    pub hash: PasswordHash,
    pub created_at: Timestamp,
    pub used_at: Option<Timestamp>,
}

/// The opaque token a client holds between the first and second factor: 256 random bits,
/// stored as SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct MfaToken(String);

impl MfaToken {
    /// Encodes 32 random bytes.
    pub fn from_random(bytes: [u8; 32]) -> Self {
        use base64::Engine as _;
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Accepts a token of the right shape.
    pub fn parse(input: &str) -> Option<Self> {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(input)
            .ok()?;
        (decoded.len() == 32).then(|| Self(input.to_owned()))
    }

    /// The token to hand to the client, once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The digest it is stored under.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

impl fmt::Debug for MfaToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MfaToken(<redacted>)")
    }
}

/// A sign-in that passed its first factor and waits for the second, bound to one user and tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaChallenge {
    pub token_hash: [u8; 32],
    pub user: UserId,
    pub tenant: TenantId,
    /// Methods of the first factor (`pwd`, or a provider's).
    pub amr: Vec<String>,
    pub expires_at: Timestamp,
    /// Codes tried so far, right or wrong.
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn base32_matches_rfc_4648() {
        let cases: &[(&[u8], &str)] = &[
            (b"", ""),
            (b"f", "MY"),
            (b"fo", "MZXQ"),
            (b"foo", "MZXW6"),
            (b"foob", "MZXW6YQ"),
            (b"fooba", "MZXW6YTB"),
            (b"foobar", "MZXW6YTBOI"),
            (b"12345678901234567890", "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
        ];
        for (input, expected) in cases {
            assert_eq!(base32_encode(input), *expected);
            assert_eq!(
                TotpSecret::from_base32(expected).map(|s| s.0),
                Some(input.to_vec())
            );
        }
        assert!(TotpSecret::from_base32("not base32!").is_none());
    }

    #[test]
    fn time_steps() {
        let at = |s| chrono::Utc.timestamp_opt(s, 0).unwrap();
        assert_eq!(totp_step(at(59)), 1);
        assert_eq!(totp_step(at(60)), 2);
        assert_eq!(totp_step(at(1_111_111_109)), 37_037_036);
    }

    #[test]
    fn recovery_codes_round_trip_and_forgive_typing() {
        let code = RecoveryCode::from_random([0xA5; 10]);
        let shown = code.display();
        assert_eq!(shown.len(), 19);
        assert_eq!(shown.matches('-').count(), 3);
        assert_eq!(RecoveryCode::parse(&shown), Some(code.clone()));
        assert_eq!(
            RecoveryCode::parse(&shown.to_lowercase().replace('-', " ")),
            Some(code.clone())
        );
        assert_eq!(code.lookup(), &shown[..4]);
        let confusable = RecoveryCode::parse("0000-1111-0000-1111").unwrap();
        assert_eq!(RecoveryCode::parse("oooo-iiii-OOOO-LLLL"), Some(confusable));
        assert!(RecoveryCode::parse("too-short").is_none());
        assert!(
            RecoveryCode::parse("UUUU-0000-0000-0000").is_none(),
            "U is not Crockford"
        );
        assert_ne!(
            RecoveryCode::from_random([1; 10]),
            RecoveryCode::from_random([2; 10])
        );
        assert!(!format!("{code:?}").contains(&shown[5..]));
    }

    #[test]
    fn mfa_tokens() {
        let t = MfaToken::from_random([9; 32]);
        assert_eq!(MfaToken::parse(t.expose()), Some(t.clone()));
        assert!(MfaToken::parse("nope").is_none());
        assert_ne!(t.hash(), MfaToken::from_random([8; 32]).hash());
    }
}
