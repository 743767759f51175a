//! Persistence of signing keys.

use async_trait::async_trait;
use iam_domain::{KeyId, Timestamp};

use crate::StoreError;

/// A signing key as stored: the private key sealed under the master key.
#[derive(Clone)]
pub struct StoredKey {
    pub kid: KeyId,
    /// Output of `SecretSealer::seal` over the PKCS#8 PEM, with the kid as context.
    pub sealed_private_key: Vec<u8>,
    pub created_at: Timestamp,
    /// When a newer key took over signing; `None` for the active key.
    pub retired_at: Option<Timestamp>,
}

/// Where signing keys live, so that every instance signs with the same key and rotation survives
/// restarts.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every key not yet purged, oldest first.
    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Stores `key` as the active key and retires the previously active one at `key.created_at`,
    /// atomically.
    async fn activate(&self, key: StoredKey) -> Result<(), StoreError>;

    /// Deletes keys retired before `cutoff`: no unexpired token can carry their signature.
    async fn purge_retired_before(&self, cutoff: Timestamp) -> Result<u64, StoreError>;
}
