//! Signing keys in the `signing_keys` table.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use iam_domain::Timestamp;
use iam_ports::{KeyStore, StoreError, StoredKey, UnitOfWork};

use crate::error::from_diesel;
use crate::pool::Db;
use crate::rows::SigningKeyRow;
use crate::schema::signing_keys;
use crate::unit::PgUnit;

/// The signing keys of every instance, over the store's pool.
#[derive(Clone)]
pub struct PostgresKeyStore {
    db: Db,
}

impl PostgresKeyStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }
}

#[async_trait]
impl KeyStore for PostgresKeyStore {
    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let mut conn = self.db.checkout().await?;
        signing_keys::table
            .order((signing_keys::created_at, signing_keys::kid))
            .select(SigningKeyRow::as_select())
            .load(&mut conn)
            .await
            .map_err(from_diesel)?
            .into_iter()
            .map(StoredKey::try_from)
            .collect()
    }

    async fn activate(&self, key: StoredKey) -> Result<(), StoreError> {
        // A unit of work, so that a failure or a dropped future rolls back the retirement too.
        let mut unit = PgUnit::begin(self.db.checkout().await?).await?;
        let conn = unit.enter()?;
        let result = retire_and_insert(conn, &key).await;
        unit.leave(result)?;
        Box::new(unit).commit().await
    }

    async fn purge_retired_before(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        let mut conn = self.db.checkout().await?;
        let purged =
            diesel::delete(signing_keys::table.filter(signing_keys::retired_at.lt(cutoff)))
                .execute(&mut conn)
                .await
                .map_err(from_diesel)?;
        Ok(purged as u64)
    }
}

async fn retire_and_insert(
    conn: &mut AsyncPgConnection,
    key: &StoredKey,
) -> Result<(), StoreError> {
    // Two activations at once would each retire the same old key under READ COMMITTED, and the
    // second insert would then trip the one-active index instead of retiring the first's key.
    // The lock queues them; readers (`keys`) are not blocked by it.
    conn.batch_execute("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
        .await
        .map_err(from_diesel)?;
    diesel::update(signing_keys::table.filter(signing_keys::retired_at.is_null()))
        .set(signing_keys::retired_at.eq(key.created_at))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    diesel::insert_into(signing_keys::table)
        .values((
            signing_keys::kid.eq(key.kid.as_str()),
            signing_keys::sealed_private_key.eq(&key.sealed_private_key),
            signing_keys::created_at.eq(key.created_at),
            signing_keys::retired_at.eq(key.retired_at),
        ))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(())
}
