//! Failure counters shared by every instance, so throttling holds across a cluster.

use async_trait::async_trait;
use iam_domain::Timestamp;
use iam_domain::throttle::Counter;

use crate::StoreError;

/// Leaky-bucket failure counters by opaque key (the application hashes what it counts by).
#[async_trait]
pub trait ThrottleStore: Send + Sync {
    /// The counters of `keys` as last stored, in the same order; `None` for a key never seen.
    async fn counters(&self, keys: &[String]) -> Result<Vec<Option<Counter>>, StoreError>;

    /// Records one failure atomically: the stored score drains at `leak_per_sec` until `now`,
    /// then grows by one. Returns the counter as stored.
    async fn add_failure(
        &self,
        key: &str,
        now: Timestamp,
        leak_per_sec: f64,
    ) -> Result<Counter, StoreError>;

    /// Forgets a key (its owner just succeeded).
    async fn forget(&self, key: &str) -> Result<(), StoreError>;

    /// Deletes counters not touched since `before` (they have drained to nothing).
    async fn purge(&self, before: Timestamp) -> Result<u64, StoreError>;
}
