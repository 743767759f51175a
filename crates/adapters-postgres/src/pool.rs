//! The connection pool and checkout with a deadline.

use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use iam_ports::StoreError;

use crate::error::unavailable;

pub(crate) type PooledConn = Object<AsyncPgConnection>;

/// No connection could be had in time: every one is busy, or the server does not answer.
#[derive(Debug, thiserror::Error)]
#[error("no database connection within {0:?}")]
pub(crate) struct CheckoutTimeout(Duration);

/// The pool and how long a checkout may wait, shared by the store and the key store.
#[derive(Clone)]
pub(crate) struct Db {
    pub pool: Pool<AsyncPgConnection>,
    pub acquire_timeout: Duration,
}

impl Db {
    /// A connection, within `acquire_timeout` all told: waiting for a free one and opening a
    /// new one share the deadline.
    pub async fn checkout(&self) -> Result<PooledConn, StoreError> {
        match tokio::time::timeout(self.acquire_timeout, self.pool.get()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(unavailable(CheckoutTimeout(self.acquire_timeout))),
        }
    }
}

/// Holds a connection through transaction control (BEGIN, COMMIT, ROLLBACK). If it is dropped
/// before [`release`](Self::release), because the statement failed or its future was dropped
/// midway, the connection's transaction state is unknown: it is closed instead of pooled, and the
/// server rolls back whatever was open.
pub(crate) struct Detaching(Option<PooledConn>);

impl Detaching {
    pub fn new(conn: PooledConn) -> Self {
        Self(Some(conn))
    }

    pub fn conn(&mut self) -> &mut AsyncPgConnection {
        self.0
            .as_deref_mut()
            .expect("a Detaching holds its connection until released or dropped")
    }

    /// The connection, in a known state again.
    pub fn release(mut self) -> PooledConn {
        self.0
            .take()
            .expect("a Detaching holds its connection until released or dropped")
    }
}

impl Drop for Detaching {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            // Taken out of the pool, the connection closes when dropped and frees its slot.
            drop(Object::take(conn));
        }
    }
}
