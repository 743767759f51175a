//! The shared store contract, run against the in-memory adapter.

use std::sync::Arc;

use iam_adapters_memory::{MemoryKeyStore, MemoryStore, MemoryThrottleStore};
use iam_store_contract::Fixture;

async fn fixture() -> Fixture {
    let store = MemoryStore::new();
    Fixture {
        feed: Arc::new(store.clone()),
        store: Arc::new(store.clone()),
        keys: Arc::new(MemoryKeyStore::new()),
        throttle: Arc::new(MemoryThrottleStore::new()),
        mail: Arc::new(store.clone()),
        guard: Box::new(()),
    }
}

iam_store_contract::store_contract_tests!(fixture);
