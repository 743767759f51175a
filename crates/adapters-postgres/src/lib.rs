//! The IAM store ports on PostgreSQL: [`PostgresStore`] (units of work over users, tenants,
//! memberships, sessions and second factors, and the revocation feed: `RevocationFeed` is
//! implemented on the store itself), [`PostgresKeyStore`] (signing keys),
//! [`PostgresThrottleStore`] (brute-force throttling counters), [`PostgresMailQueue`] (the mail
//! outbox as the delivery worker sees it; units of work write link tokens and queue mail), and
//! [`migrate`], which applies the schema in `migrations/` (embedded at build time).
//!
//! Invariant: this is the only crate that knows diesel, diesel-async and deadpool. Nothing of
//! theirs appears in its public API; rows and connections stay inside, and every failure leaves
//! as an `iam_ports::StoreError` whose sources hold the server's primary message at most: never
//! the SQL text, the bound values or the connection URL.
//!
//! Connections come from a deadpool pool of `diesel_async::AsyncPgConnection` (tokio-postgres,
//! no libpq). A unit of work is one connection in one READ COMMITTED transaction; see `unit`.
//! The refresh hot path (`Store::refresh_session`) is one call of a PL/pgSQL function instead,
//! auto-committed on a pooled connection; see `queries::refresh_session`.
//! The feed's subscribers each hold one more connection, outside the pool; see `feed`.

mod error;
mod feed;
mod keys;
mod mail;
mod payload;
mod pool;
mod queries;
mod rows;
mod schema;
#[cfg(feature = "testing")]
pub mod testing;
mod throttle;
mod unit;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use diesel::IntoSql;
use diesel::sql_types::Integer;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use iam_domain::{RefreshTokenHash, Tenant, TenantId};
use iam_ports::{NewRefreshToken, Refreshed, Store, StoreError, UnitOfWork};

use crate::error::{from_diesel, unavailable};
pub use crate::feed::LISTENER_APPLICATION_NAME;
use crate::feed::ListenTarget;
pub use crate::keys::PostgresKeyStore;
pub use crate::mail::PostgresMailQueue;
use crate::pool::Db;
pub use crate::throttle::PostgresThrottleStore;
use crate::unit::PgUnit;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Held while migrating, so that instances starting together apply each migration once.
const MIGRATION_LOCK: i64 = 0x1a_4d16_0001;

/// How to reach the database.
#[derive(Clone)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/database`; may hold a password, so never logged.
    pub url: String,
    /// Most connections the pool opens.
    pub max_connections: usize,
    /// Longest a checkout may wait for a free connection or a new one, all told; also how long
    /// the revocation feed's listener may take to connect or to answer a health check.
    pub acquire_timeout: Duration,
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("max_connections must be at least 1")]
struct NoConnections;

/// The store on PostgreSQL: opens units of work on pooled connections, and is the revocation
/// feed of every instance on the same database.
#[derive(Clone)]
pub struct PostgresStore {
    db: Db,
    listen: Arc<ListenTarget>,
}

impl PostgresStore {
    /// Builds the pool and opens one connection, so that an unreachable database fails here
    /// (`Unavailable`) rather than at the first request.
    pub async fn connect(config: &PgConfig) -> Result<Self, StoreError> {
        if config.max_connections == 0 {
            return Err(StoreError::Unexpected(Box::new(NoConnections)));
        }
        let mut manager_config = ManagerConfig::default();
        // The default (`Verified`) sends `SELECT 1` on every checkout; a dead connection shows
        // itself at its first statement anyway, and a closed one is discarded as broken.
        manager_config.recycling_method = RecyclingMethod::Fast;
        manager_config.custom_setup = Box::new(|url| Box::pin(connect_as_service(url.to_owned())));
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
            config.url.clone(),
            manager_config,
        );
        let pool = Pool::builder(manager)
            .max_size(config.max_connections)
            .build()
            .map_err(|e| StoreError::Unexpected(Box::new(e)))?;
        let db = Db {
            pool,
            acquire_timeout: config.acquire_timeout,
        };
        drop(db.checkout().await?);
        let listen = Arc::new(ListenTarget {
            url: config.url.clone(),
            timeout: config.acquire_timeout,
        });
        Ok(Self { db, listen })
    }

    /// The signing-key store over the same pool.
    pub fn key_store(&self) -> PostgresKeyStore {
        PostgresKeyStore::new(self.db.clone())
    }

    /// The throttling counters over the same pool; each call auto-commits on its own, outside
    /// any unit of work.
    pub fn throttle_store(&self) -> PostgresThrottleStore {
        PostgresThrottleStore::new(self.db.clone())
    }

    /// The mail outbox for the delivery worker, over the same pool; each call auto-commits on
    /// its own, outside any unit of work (messages are queued by units of work).
    pub fn mail_queue(&self) -> PostgresMailQueue {
        PostgresMailQueue::new(self.db.clone())
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn begin(&self) -> Result<Box<dyn UnitOfWork>, StoreError> {
        let conn = self.db.checkout().await?;
        Ok(Box::new(PgUnit::begin(conn).await?))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.db.checkout().await?;
        diesel::select(1.into_sql::<Integer>())
            .get_result::<i32>(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(())
    }

    /// One statement on a pooled connection, auto-committed: no BEGIN, no COMMIT, one round trip
    /// on every outcome (after the connection's first call, which also prepares it). A reuse's
    /// revocation is published by the statement's own transaction.
    async fn refresh_session(
        &self,
        presented: &RefreshTokenHash,
        next: &NewRefreshToken,
    ) -> Result<Refreshed, StoreError> {
        let mut conn = self.db.checkout().await?;
        queries::refresh_session(&mut conn, presented, next).await
    }

    async fn is_descendant(
        &self,
        ancestor: TenantId,
        descendant: TenantId,
    ) -> Result<bool, StoreError> {
        let mut conn = self.db.checkout().await?;
        queries::is_descendant(&mut conn, ancestor, descendant).await
    }

    async fn lineage(&self, id: TenantId) -> Result<Vec<Tenant>, StoreError> {
        let mut conn = self.db.checkout().await?;
        queries::lineage(&mut conn, id).await
    }
}

/// The role every connection of the service acts as (migration 10): not the tables' owner and
/// unable to bypass row-level security, whatever role the connection logged in as. Deployments
/// should log in as a member of it that is nothing more.
pub const SERVICE_ROLE: &str = "iam_service";

/// Opens a connection and makes it act as [`SERVICE_ROLE`] for its whole life.
async fn connect_as_service(url: String) -> diesel::ConnectionResult<AsyncPgConnection> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let mut conn = AsyncPgConnection::establish(&url).await?;
    conn.batch_execute(&format!("SET ROLE {SERVICE_ROLE}"))
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

/// Applies the pending migrations to the database at `url` and returns their versions, oldest
/// first; an up-to-date database gives an empty list.
pub async fn migrate(url: &str) -> Result<Vec<String>, StoreError> {
    let url = url.to_owned();
    // Diesel's migration harness is synchronous; its wrapper blocks on the runtime, which only
    // a blocking-pool thread may do.
    tokio::task::spawn_blocking(move || migrate_blocking(&url))
        .await
        .map_err(|e| StoreError::Unexpected(Box::new(e)))?
}

/// The versions of migrations not yet applied to the database at `url`.
pub async fn pending_migrations(url: &str) -> Result<Vec<String>, StoreError> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        use diesel::connection::Connection;
        let mut conn =
            AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).map_err(unavailable)?;
        let pending = conn
            .pending_migrations(MIGRATIONS)
            .map_err(StoreError::Unexpected)?;
        Ok(pending
            .iter()
            .map(|m| m.name().version().to_string())
            .collect())
    })
    .await
    .map_err(|e| StoreError::Unexpected(Box::new(e)))?
}

fn migrate_blocking(url: &str) -> Result<Vec<String>, StoreError> {
    use diesel::connection::{Connection, SimpleConnection};

    let mut conn =
        AsyncConnectionWrapper::<AsyncPgConnection>::establish(url).map_err(unavailable)?;
    // Released when the connection closes at the end of this function.
    conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .map_err(from_diesel)?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(StoreError::Unexpected)?;
    Ok(applied.iter().map(ToString::to_string).collect())
}
