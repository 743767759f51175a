//! AES-256-GCM sealing of secrets at rest under the master key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use iam_ports::{SealError, SecretSealer};
use rand::RngCore as _;
use zeroize::Zeroizing;

/// Layout version of sealed blobs: `[VERSION | nonce (12) | ciphertext + tag (16)]`.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// Why a configured master key is not usable.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("master key must be base64 (standard alphabet)")]
    Encoding,
    #[error("master key must be exactly 32 bytes (it decodes to {0})")]
    Length(usize),
}

/// Seals with AES-256-GCM, a random 96-bit nonce per message, and the caller's context as AAD.
pub struct AesGcmSealer {
    cipher: Aes256Gcm,
}

impl AesGcmSealer {
    /// Builds a sealer from a base64-encoded 32-byte master key.
    pub fn from_base64(master_key: &str) -> Result<Self, MasterKeyError> {
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(master_key.trim())
                .map_err(|_| MasterKeyError::Encoding)?,
        );
        Self::from_bytes(&bytes)
    }

    /// Builds a sealer from 32 raw key bytes.
    pub fn from_bytes(key: &[u8]) -> Result<Self, MasterKeyError> {
        let cipher =
            Aes256Gcm::new_from_slice(key).map_err(|_| MasterKeyError::Length(key.len()))?;
        Ok(Self { cipher })
    }
}

impl SecretSealer for AesGcmSealer {
    fn seal(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            // AES-GCM encryption fails only for messages over 64 GiB.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, SealError> {
        let (&version, rest) = sealed.split_first().ok_or(SealError::Corrupt)?;
        if version != VERSION || rest.len() < NONCE_LEN + 16 {
            return Err(SealError::Corrupt);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .map_err(|_| SealError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(byte: u8) -> AesGcmSealer {
        AesGcmSealer::from_bytes(&[byte; 32]).unwrap()
    }

    #[test]
    fn round_trip_with_context() {
        let s = sealer(1);
        let sealed = s.seal(b"secret", b"row-1");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(s.open(&sealed, b"row-1").unwrap(), b"secret");
        assert_ne!(s.seal(b"secret", b"row-1"), sealed, "nonces must differ");
    }

    #[test]
    fn refuses_wrong_key_context_or_tampering() {
        let sealed = sealer(1).seal(b"secret", b"row-1");
        assert!(sealer(2).open(&sealed, b"row-1").is_err());
        assert!(sealer(1).open(&sealed, b"row-2").is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(sealer(1).open(&tampered, b"row-1").is_err());
        assert!(sealer(1).open(&sealed[..10], b"row-1").is_err());
        assert!(sealer(1).open(&[], b"row-1").is_err());
    }

    #[test]
    fn master_key_parsing() {
        use base64::engine::general_purpose::STANDARD;
        assert!(AesGcmSealer::from_base64(&STANDARD.encode([7u8; 32])).is_ok());
        assert!(matches!(
            AesGcmSealer::from_base64(&STANDARD.encode([7u8; 16])),
            Err(MasterKeyError::Length(16))
        ));
        assert!(matches!(
            AesGcmSealer::from_base64("not base64!"),
            Err(MasterKeyError::Encoding)
        ));
    }
}
