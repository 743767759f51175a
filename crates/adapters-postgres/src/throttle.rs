//! Brute-force throttling counters in the `throttle_counters` table, shared by every instance.
//!
//! Each call is one auto-committed statement on a pooled connection, outside any unit of work:
//! a failure must count even when the request's own work rolls back.

use async_trait::async_trait;
use diesel::dsl::AsExprOf;
use diesel::prelude::*;
use diesel::sql_types::{Double, Interval, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use iam_domain::Timestamp;
use iam_domain::throttle::Counter;
use iam_ports::{StoreError, ThrottleStore};

use crate::error::{from_diesel, invalid};
use crate::pool::Db;
use crate::schema::throttle_counters;

// `timestamptz - timestamptz` (diesel only knows `timestamptz - interval`).
diesel::infix_operator!(Elapsed, " - ", Interval, backend: diesel::pg::Pg);

diesel::define_sql_function! {
    /// `date_part(field, interval)`: with `'epoch'`, the interval's length in seconds.
    fn date_part(field: Text, source: Interval) -> Double;
}

diesel::define_sql_function! {
    #[sql_name = "GREATEST"]
    fn greatest_f64(a: Double, b: Double) -> Double;
}

diesel::define_sql_function! {
    #[sql_name = "GREATEST"]
    fn greatest_ts(a: Timestamptz, b: Timestamptz) -> Timestamptz;
}

/// The failure counters of every instance, over the store's pool.
#[derive(Clone)]
pub struct PostgresThrottleStore {
    db: Db,
}

impl PostgresThrottleStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }
}

fn counter((score, updated_at): (f64, Timestamp)) -> Result<Counter, StoreError> {
    if score.is_finite() && score >= 0.0 {
        Ok(Counter { score, updated_at })
    } else {
        Err(invalid("throttle_counters", "score"))
    }
}

#[async_trait]
impl ThrottleStore for PostgresThrottleStore {
    async fn counters(&self, keys: &[String]) -> Result<Vec<Option<Counter>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.db.checkout().await?;
        let rows: Vec<(String, f64, Timestamp)> = throttle_counters::table
            .filter(throttle_counters::key.eq_any(keys))
            .select((
                throttle_counters::key,
                throttle_counters::score,
                throttle_counters::updated_at,
            ))
            .load(&mut conn)
            .await
            .map_err(from_diesel)?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for (key, score, updated_at) in rows {
            found.insert(key, counter((score, updated_at))?);
        }
        Ok(keys.iter().map(|k| found.get(k).copied()).collect())
    }

    async fn add_failure(
        &self,
        key: &str,
        now: Timestamp,
        leak_per_sec: f64,
    ) -> Result<Counter, StoreError> {
        use throttle_counters::{score, table, updated_at};

        let now_sql = || -> AsExprOf<Timestamp, Timestamptz> { now.into_sql::<Timestamptz>() };
        let zero = || 0.0_f64.into_sql::<Double>();
        // One statement: the row lock that ON CONFLICT DO UPDATE takes serialises concurrent
        // failures on a key, and each sees the score the one before it stored. A clock behind
        // the stored one drains nothing and leaves `updated_at` where it was.
        let elapsed = greatest_f64(
            zero(),
            date_part("epoch", Elapsed::new(now_sql(), updated_at)),
        );
        let drained = greatest_f64(zero(), score - elapsed * leak_per_sec.into_sql::<Double>());
        let mut conn = self.db.checkout().await?;
        let stored = diesel::insert_into(table)
            .values((
                throttle_counters::key.eq(key),
                score.eq(1.0),
                updated_at.eq(now),
            ))
            .on_conflict(throttle_counters::key)
            .do_update()
            .set((
                score.eq(drained + 1.0_f64.into_sql::<Double>()),
                updated_at.eq(greatest_ts(updated_at, now_sql())),
            ))
            .returning((score, updated_at))
            .get_result::<(f64, Timestamp)>(&mut conn)
            .await
            .map_err(from_diesel)?;
        counter(stored)
    }

    async fn forget(&self, key: &str) -> Result<(), StoreError> {
        let mut conn = self.db.checkout().await?;
        diesel::delete(throttle_counters::table.filter(throttle_counters::key.eq(key)))
            .execute(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(())
    }

    async fn purge(&self, before: Timestamp) -> Result<u64, StoreError> {
        let mut conn = self.db.checkout().await?;
        let purged = diesel::delete(
            throttle_counters::table.filter(throttle_counters::updated_at.lt(before)),
        )
        .execute(&mut conn)
        .await
        .map_err(from_diesel)?;
        Ok(purged as u64)
    }
}
