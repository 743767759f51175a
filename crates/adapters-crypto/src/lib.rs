//! Cryptographic and system adapters: Argon2id password hashing on a bounded pool, ES256 token
//! signing with josekit, AES-256-GCM sealing of secrets at rest, RFC 6238 TOTP (totp-rs), OS
//! randomness, and clocks.
//!
//! Invariant: the only crate that names `argon2`, `josekit` or `aes-gcm`. No primitive is written
//! here by hand; each comes from its crate.

pub mod clock;
pub mod hasher;
pub mod screen;
pub mod sealer;
pub mod signer;
pub mod totp;

pub use clock::{ManualClock, OsRandom, SystemClock};
pub use hasher::{Argon2Config, Argon2Hasher, HasherStats};
pub use screen::ZxcvbnScreen;
pub use sealer::{AesGcmSealer, MasterKeyError};
pub use signer::EcdsaSigner;
pub use totp::RfcTotp;
