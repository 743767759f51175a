//! Argon2id password hashing on a bounded pool off the async runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;
use iam_domain::{Password, PasswordHash};
use iam_ports::{HashError, PasswordHasher};
use rand::RngCore as _;
use tokio::sync::Semaphore;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Config {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Argon2Config {
    /// The service's parameters: m = 64 MiB, t = 1, p = 4 (output is always 32 bytes).
    pub const PRODUCTION: Self = Self {
        memory_kib: 64 * 1024,
        iterations: 1,
        parallelism: 4,
    };
}

/// Counts of Argon2 runs, for metrics and for proving that every login path costs the same.
#[derive(Debug, Default)]
pub struct HasherStats {
    hashes: AtomicU64,
    verifications: AtomicU64,
    shed: AtomicU64,
}

impl HasherStats {
    /// New hashes computed.
    pub fn hashes(&self) -> u64 {
        self.hashes.load(Ordering::Relaxed)
    }
    /// Verifications computed.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }
    /// Requests refused because the queue was full.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}

/// Argon2id with a fixed number of workers and a bounded queue in front of them: each hash holds
/// `memory_kib` of RAM, so concurrency, not demand, must decide how much memory is in use.
pub struct Argon2Hasher {
    argon: Argon2<'static>,
    workers: Arc<Semaphore>,
    /// Hashes admitted (running or queued).
    admitted: AtomicUsize,
    capacity: usize,
    decoy: PasswordHash,
    stats: Arc<HasherStats>,
}

/// Why the hasher could not be built.
#[derive(Debug, thiserror::Error)]
#[error("invalid Argon2 parameters: {0}")]
pub struct InvalidParams(String);

impl Argon2Hasher {
    /// A hasher running at most `workers` hashes at once with at most `queue` more waiting.
    /// Computes the decoy hash once, synchronously.
    pub fn new(config: Argon2Config, workers: usize, queue: usize) -> Result<Self, InvalidParams> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            Some(32),
        )
        .map_err(|e| InvalidParams(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut decoy_password = [0u8; 32];
        rand::rng().fill_bytes(&mut decoy_password);
        let decoy = hash_with(&argon, &decoy_password).map_err(|e| InvalidParams(e.to_string()))?;
        let workers = workers.max(1);
        Ok(Self {
            argon,
            workers: Arc::new(Semaphore::new(workers)),
            admitted: AtomicUsize::new(0),
            capacity: workers + queue,
            decoy,
            stats: Arc::default(),
        })
    }

    /// Run counters.
    pub fn stats(&self) -> Arc<HasherStats> {
        self.stats.clone()
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            self.stats.shed.fetch_add(1, Ordering::Relaxed);
            return Err(HashError::Overloaded);
        }
        // Leaves the queue even if the caller's future is dropped while waiting.
        let _admission = Admission(&self.admitted);
        let permit = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| HashError::Unexpected(Box::new(e)))?;
        let argon = self.argon.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&argon)
        })
        .await
        .map_err(|e| HashError::Unexpected(Box::new(e)))
    }
}

struct Admission<'a>(&'a AtomicUsize);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn hash_with(
    argon: &Argon2<'_>,
    password: &[u8],
) -> Result<PasswordHash, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let phc = argon.hash_password_with_salt(password, &salt)?;
    Ok(PasswordHash::from_phc(phc.to_string()))
}

#[async_trait]
impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &Password) -> Result<PasswordHash, HashError> {
        let password = zeroize::Zeroizing::new(password.expose().to_vec());
        let stats = self.stats.clone();
        self.run(move |argon| {
            stats.hashes.fetch_add(1, Ordering::Relaxed);
            hash_with(argon, &password)
        })
        .await?
        .map_err(|e| HashError::Unexpected(e.to_string().into()))
    }

    async fn verify(&self, password: &Password, hash: &PasswordHash) -> Result<bool, HashError> {
        let password = zeroize::Zeroizing::new(password.expose().to_vec());
        let hash = hash.as_str().to_owned();
        let stats = self.stats.clone();
        self.run(move |argon| {
            stats.verifications.fetch_add(1, Ordering::Relaxed);
            match argon.verify_password(&password, hash.as_str()) {
                Ok(()) => Ok(true),
                Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
                Err(e) => Err(HashError::Unexpected(e.to_string().into())),
            }
        })
        .await?
    }

    fn decoy(&self) -> &PasswordHash {
        &self.decoy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Argon2Config = Argon2Config {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[tokio::test]
    async fn production_parameters_are_in_the_phc_string() {
        let h = Argon2Hasher::new(Argon2Config::PRODUCTION, 1, 0).unwrap();
        let hash = h
            .hash(&Password::new("correct horse battery").unwrap())
            .await
            .unwrap();
        assert!(
            hash.as_str().starts_with("$argon2id$v=19$m=65536,t=1,p=4$"),
            "{}",
            hash.as_str()
        );
        // 32-byte output is 43 base64 characters; the 16-byte salt is 22.
        let parts: Vec<_> = hash.as_str().split('$').collect();
        assert_eq!(parts[4].len(), 22);
        assert_eq!(parts[5].len(), 43);
    }

    #[tokio::test]
    async fn verifies_right_and_wrong_passwords() {
        let h = Argon2Hasher::new(FAST, 2, 4).unwrap();
        let p = Password::new("correct horse battery").unwrap();
        let hash = h.hash(&p).await.unwrap();
        assert!(h.verify(&p, &hash).await.unwrap());
        let wrong = Password::presented("correct horse batterz").unwrap();
        assert!(!h.verify(&wrong, &hash).await.unwrap());
        assert!(!h.verify(&p, h.decoy()).await.unwrap());
        assert_eq!(h.stats().verifications(), 3);
        assert_eq!(h.stats().hashes(), 1);
        let other = h.hash(&p).await.unwrap();
        assert_ne!(other, hash, "salts must differ");
    }

    #[tokio::test]
    async fn garbage_hashes_are_errors_not_mismatches() {
        let h = Argon2Hasher::new(FAST, 1, 0).unwrap();
        let p = Password::new("correct horse battery").unwrap();
        let r = h
            .verify(&p, &PasswordHash::from_phc("nonsense".into()))
            .await;
        assert!(matches!(r, Err(HashError::Unexpected(_))));
    }

    #[tokio::test]
    async fn sheds_beyond_workers_plus_queue() {
        let h = Arc::new(Argon2Hasher::new(FAST, 1, 1).unwrap());
        // Hold the only worker so that admitted hashes stay admitted.
        let held = h.workers.clone().acquire_owned().await.unwrap();
        let p = Password::new("correct horse battery").unwrap();
        let spawn =
            |h: Arc<Argon2Hasher>, p: Password| tokio::spawn(async move { h.hash(&p).await });
        let a = spawn(h.clone(), p.clone());
        let b = spawn(h.clone(), p.clone());
        while h.admitted.load(Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(h.hash(&p).await, Err(HashError::Overloaded)));
        assert_eq!(h.stats().shed(), 1);
        drop(held);
        assert!(a.await.unwrap().is_ok());
        assert!(b.await.unwrap().is_ok());
        assert_eq!(h.admitted.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_dropped_waiter_leaves_the_queue() {
        let h = Argon2Hasher::new(FAST, 1, 1).unwrap();
        let held = h.workers.clone().acquire_owned().await.unwrap();
        let p = Password::new("correct horse battery").unwrap();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), h.hash(&p)).await;
        assert!(waiting.is_err());
        assert_eq!(h.admitted.load(Ordering::Acquire), 0);
        drop(held);
        assert!(h.hash(&p).await.is_ok());
    }
}
