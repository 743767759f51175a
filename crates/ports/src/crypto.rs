//! Password hashing, token signing and sealing of secrets at rest.

use async_trait::async_trait;
use iam_domain::{AccessClaims, KeyId, Password, PasswordHash};

use crate::BoxError;

/// Why hashing or verification did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Too many hashes are waiting already; the caller should retry later (503 + Retry-After).
    #[error("password hashing is at capacity")]
    Overloaded,
    #[error("password hashing failed")]
    Unexpected(#[source] BoxError),
}

/// Slow, salted password hashing (Argon2id). Runs off the async runtime on a bounded pool.
#[async_trait]
pub trait PasswordHasher: Send + Sync {
    /// Hashes a new password with a fresh salt.
    async fn hash(&self, password: &Password) -> Result<PasswordHash, HashError>;

    /// Checks a password against a stored hash. `Ok(false)` for a wrong password.
    async fn verify(&self, password: &Password, hash: &PasswordHash) -> Result<bool, HashError>;

    /// A hash of a random password with the current parameters, verified against on paths where
    /// no account exists, so that those paths cost the same as the others.
    fn decoy(&self) -> &PasswordHash;
}

/// Why a token could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("no active signing key")]
    NoActiveKey,
    #[error("signing failed")]
    Unexpected(#[source] BoxError),
}

/// Why a presented token was rejected before its claims were looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    /// Not a compact JWS, bad base64 or JSON, wrong `alg` or `typ`, missing claims.
    #[error("token is malformed")]
    Malformed,
    /// The `kid` names no key of the ring (perhaps one another instance just created).
    #[error("token is signed by an unknown key")]
    UnknownKey,
    /// A signature that does not verify.
    #[error("token signature is not valid")]
    BadSignature,
}

/// Private signing key material handed to the signer: PKCS#8 PEM, never logged.
pub struct KeyMaterial {
    pub kid: KeyId,
    pub private_pem: Vec<u8>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyMaterial({}, <redacted>)", self.kid)
    }
}

/// Signs access tokens with the active key of a key ring and verifies them against every key in
/// it. Pure CPU work: synchronous, cheap enough (~30 µs sign, ~150 µs verify) for the runtime.
pub trait TokenSigner: Send + Sync {
    /// Creates new key material (an ES256 P-256 key pair) under `kid`.
    fn generate(&self, kid: KeyId) -> Result<KeyMaterial, SignError>;

    /// Replaces the key ring: `active` signs, every key in `keys` verifies. Fails if any key is
    /// unusable or `active` is not among them.
    fn install(&self, keys: &[KeyMaterial], active: &KeyId) -> Result<(), SignError>;

    /// Signs claims as a compact JWS with `typ: at+jwt` and the active key's `kid`.
    fn sign(&self, claims: &AccessClaims) -> Result<String, SignError>;

    /// Verifies header and signature and decodes the claims; time, issuer and audience are the
    /// caller's to check.
    fn verify(&self, token: &str) -> Result<AccessClaims, TokenRejection>;

    /// The public keys of the ring as a JWK Set (RFC 7517).
    fn jwks(&self) -> serde_json::Value;

    /// Whether the ring holds a key with this id.
    fn knows(&self, kid: &KeyId) -> bool;
}

/// Why sealing or opening a secret failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Tampered, truncated, or sealed under another key or context.
    #[error("sealed secret cannot be opened")]
    Corrupt,
}

/// Authenticated encryption of secrets at rest (signing keys, TOTP seeds) under the master key.
pub trait SecretSealer: Send + Sync {
    /// Encrypts `plaintext`, binding it to `context` (e.g. the row it belongs to).
    fn seal(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8>;
    /// Decrypts what `seal` produced with the same context.
    fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, SealError>;
}

/// RFC 6238 TOTP (HMAC-SHA-1, 6 digits, 30-second steps) and its enrolment artefacts.
pub trait Totp: Send + Sync {
    /// Whether `code` is the code of `secret` at time step `step`, compared in constant time.
    fn matches(&self, secret: &iam_domain::TotpSecret, step: i64, code: &str) -> bool;

    /// The `otpauth://totp/…` URI an authenticator app scans.
    fn provisioning_uri(
        &self,
        secret: &iam_domain::TotpSecret,
        issuer: &str,
        account: &str,
    ) -> String;

    /// `text` as a QR code, an SVG document.
    fn qr_svg(&self, text: &str) -> String;
}

/// Screens new passwords against common and breached passwords and the user's own context.
pub trait PasswordScreen: Send + Sync {
    /// Why `password` should be refused, if it should. `context` holds words the password must
    /// not be built from (email local part, name, product name).
    fn weakness(&self, password: &Password, context: &[&str]) -> Option<iam_domain::Weakness>;
}
