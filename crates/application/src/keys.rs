//! The signing-key ring: loading it, rotating it, and keeping every instance's copy current.

use std::sync::Arc;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration;
use iam_domain::{KeyId, Timestamp};
use iam_ports::{
    Clock, KeyMaterial, KeyStore, Rng, SealError, SecretSealer, SignError, StoreError, StoredKey,
    TokenSigner, random,
};
use tracing::{info, warn};

/// Why the key ring could not be loaded or changed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key store failed")]
    Store(#[from] StoreError),
    #[error("signing key unusable")]
    Sign(#[from] SignError),
    #[error("signing key {0} cannot be opened: wrong master key or corrupt row")]
    Seal(KeyId, #[source] SealError),
}

/// Minimum time between two reloads triggered by tokens with an unknown `kid`, so that a flood of
/// forged kids cannot turn into a flood of store reads.
const UNKNOWN_KID_RELOAD_INTERVAL: Duration = Duration::seconds(5);

/// Owns the lifecycle of signing keys: the store holds them sealed, the signer holds them open.
pub struct KeyService {
    store: Arc<dyn KeyStore>,
    sealer: Arc<dyn SecretSealer>,
    signer: Arc<dyn TokenSigner>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn Rng>,
    /// How long a retired key keeps verifying: the access-token lifetime plus leeway.
    retention: Duration,
    /// When a token with an unknown kid last caused a reload.
    last_unknown_kid_reload: Mutex<Option<Timestamp>>,
}

impl KeyService {
    /// Builds the service; nothing is loaded until [`KeyService::load_or_create`].
    pub fn new(
        store: Arc<dyn KeyStore>,
        sealer: Arc<dyn SecretSealer>,
        signer: Arc<dyn TokenSigner>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn Rng>,
        retention: Duration,
    ) -> Self {
        Self {
            store,
            sealer,
            signer,
            clock,
            rng,
            retention,
            last_unknown_kid_reload: Mutex::new(None),
        }
    }

    /// Loads the ring from the store, creating the first key on an empty store.
    pub async fn load_or_create(&self) -> Result<(), KeyError> {
        let keys = self.store.keys().await?;
        if !keys.iter().any(|k| k.retired_at.is_none()) {
            let kid = self.create().await?;
            info!(kid = %kid, "created the first signing key");
        }
        self.reload().await
    }

    /// Stores a key from outside (a PEM file) as the active key and loads the ring.
    pub async fn import(&self, kid: KeyId, private_pem: Vec<u8>) -> Result<(), KeyError> {
        let material = KeyMaterial { kid, private_pem };
        // Proves the PEM is a usable key before it is stored.
        self.signer
            .install(std::slice::from_ref(&material), &material.kid)?;
        self.activate(material).await?;
        self.reload().await
    }

    /// Makes a new active key; the previous one keeps verifying until its tokens have expired.
    pub async fn rotate(&self) -> Result<KeyId, KeyError> {
        let kid = self.create().await?;
        let cutoff = self.clock.now() - self.retention;
        let purged = self.store.purge_retired_before(cutoff).await?;
        info!(kid = %kid, purged, "rotated the signing key");
        self.reload().await?;
        Ok(kid)
    }

    async fn create(&self) -> Result<KeyId, KeyError> {
        let kid = KeyId::parse(&URL_SAFE_NO_PAD.encode(random::<12>(&*self.rng)))
            .ok_or_else(|| SignError::Unexpected("generated kid is not valid".into()))?;
        let material = self.signer.generate(kid.clone())?;
        self.activate(material).await?;
        Ok(kid)
    }

    async fn activate(&self, material: KeyMaterial) -> Result<(), KeyError> {
        let sealed = self
            .sealer
            .seal(&material.private_pem, material.kid.as_str().as_bytes());
        self.store
            .activate(StoredKey {
                kid: material.kid,
                sealed_private_key: sealed,
                created_at: self.clock.now(),
                retired_at: None,
            })
            .await?;
        Ok(())
    }

    /// Re-reads the store and replaces the signer's ring: the newest active key signs; it and
    /// every key retired less than `retention` ago verify.
    pub async fn reload(&self) -> Result<(), KeyError> {
        let now = self.clock.now();
        let stored = self.store.keys().await?;
        let active = stored
            .iter()
            .filter(|k| k.retired_at.is_none())
            .max_by_key(|k| k.created_at)
            .map(|k| k.kid.clone())
            .ok_or(SignError::NoActiveKey)?;
        let mut ring = Vec::new();
        for key in stored
            .into_iter()
            .filter(|k| k.retired_at.is_none_or(|at| at + self.retention > now))
        {
            let pem = self
                .sealer
                .open(&key.sealed_private_key, key.kid.as_str().as_bytes())
                .map_err(|e| KeyError::Seal(key.kid.clone(), e))?;
            ring.push(KeyMaterial {
                kid: key.kid,
                private_pem: pem,
            });
        }
        self.signer.install(&ring, &active)?;
        Ok(())
    }

    /// Reloads the ring because a token named a kid we do not know, at most once per interval.
    /// Returns whether a reload happened.
    pub async fn reload_for_unknown_kid(&self) -> bool {
        let now = self.clock.now();
        {
            let mut last = self
                .last_unknown_kid_reload
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| now - at < UNKNOWN_KID_RELOAD_INTERVAL) {
                return false;
            }
            *last = Some(now);
        }
        match self.reload().await {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "reloading signing keys failed");
                false
            }
        }
    }

    /// The public keys as a JWK Set.
    pub fn jwks(&self) -> serde_json::Value {
        self.signer.jwks()
    }
}
