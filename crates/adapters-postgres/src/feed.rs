//! The revocation feed on PostgreSQL: snapshots from the tables, events by LISTEN/NOTIFY.
//!
//! Units of work publish on the `iam_revocations` channel inside their transaction (see
//! `unit`); PostgreSQL delivers each notification to every listening session when, and only
//! if, the transaction commits, within milliseconds.
//!
//! A subscription owns one connection of its own, outside the pool: a pooled connection would
//! keep listening after being handed to someone else, and a listener must stay checked out for
//! as long as it listens anyway. A spawned task owns that connection, forwards its
//! notifications into a channel that the returned stream reads, and replaces the connection
//! when it fails: after capped exponential backoff, it listens again and then yields
//! [`FeedMessage::Resync`], since notifications sent in between are lost. Dropping the stream
//! aborts the task, which drops (and so closes) the connection.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use diesel::QueryResult;
use diesel::pg::PgNotification;
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncPgConnection, SimpleAsyncConnection,
    TransactionManager,
};
use futures::stream::{BoxStream, Stream, StreamExt};
use iam_domain::Timestamp;
use iam_ports::{BoxError, FeedMessage, RevocationFeed, RevocationSnapshot, StoreError};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;

use crate::error::{from_diesel, unavailable};
use crate::payload::{self, CHANNEL};
use crate::pool::Detaching;
use crate::unit::roll_back;
use crate::{PostgresStore, queries};

/// The `application_name` of every listener connection, to find them in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "iam-revocation-listener";

/// First wait before reconnecting a lost listener; doubled after each failed attempt.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts: short, since every instance is blind to
/// revocations while its listener is down.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A listener that has heard nothing for this long checks that its server still answers. A
/// peer that vanished without closing the connection (a dead host, a dropped NAT entry) is
/// only noticed by talking to it; TCP keepalives would take hours by default.
const IDLE_CHECK: Duration = Duration::from_secs(30);
/// Messages buffered for a subscriber that is slow to read; one that falls further behind gets
/// [`FeedMessage::Resync`] instead of the rest (as from the in-memory store, with the same
/// capacity).
const BUFFER: usize = 4096;

/// Where a listener connects, and how long connecting or a health check may take.
pub(crate) struct ListenTarget {
    /// Never logged: it may hold a password.
    pub url: String,
    pub timeout: Duration,
}

/// The connection took longer than the configured timeout to open or to answer.
#[derive(Debug, thiserror::Error)]
#[error("the revocation listener's connection did not answer within {0:?}")]
struct ListenTimeout(Duration);

/// The driver reported the connection closed without an error.
#[derive(Debug, thiserror::Error)]
#[error("the revocation listener's connection closed")]
struct ListenClosed;

#[async_trait]
impl RevocationFeed for PostgresStore {
    async fn snapshot(&self, sessions_since: Timestamp) -> Result<RevocationSnapshot, StoreError> {
        let mut guard = Detaching::new(self.db.checkout().await?);
        // One snapshot for all three reads, so that they describe a single moment.
        AnsiTransactionManager::begin_transaction_sql(
            guard.conn(),
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        )
        .await
        .map_err(from_diesel)?;
        match queries::revocation_snapshot(guard.conn(), sessions_since).await {
            Ok(snapshot) => {
                AnsiTransactionManager::commit_transaction(guard.conn())
                    .await
                    .map_err(from_diesel)?;
                drop(guard.release());
                Ok(snapshot)
            }
            Err(e) => {
                if let Err(rollback) = roll_back(guard).await {
                    tracing::warn!(error = %rollback, "rollback of a failed snapshot failed; connection closed");
                }
                Err(e)
            }
        }
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, FeedMessage>, StoreError> {
        let target = self.listen.clone();
        // Listening before returning is what lets a caller subscribe, then snapshot, and miss
        // nothing in between.
        let conn = listen(&target).await?;
        let (tx, rx) = mpsc::channel(BUFFER);
        let task = tokio::spawn(listen_forever(conn, tx, target));
        Ok(Subscription {
            rx,
            task,
            dead: false,
        }
        .boxed())
    }
}

/// The subscriber's end: messages from the listener task, which it stops when dropped.
struct Subscription {
    rx: mpsc::Receiver<FeedMessage>,
    task: JoinHandle<()>,
    /// The task is gone (only a panic ends it while this end is alive); said once.
    dead: bool,
}

impl Stream for Subscription {
    type Item = FeedMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FeedMessage>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(message)) => Poll::Ready(Some(message)),
            // The feed promises never to end; a stream that ended would read as "nothing more
            // will ever be revoked". Staying silent is the lesser lie, and it is logged.
            Poll::Ready(None) => {
                if !self.dead {
                    self.dead = true;
                    tracing::error!("the revocation listener stopped unexpectedly");
                }
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Aborting drops the task's future and with it the connection, which closes it.
        self.task.abort();
    }
}

/// A new connection that listens on the channel.
async fn listen(target: &ListenTarget) -> Result<AsyncPgConnection, StoreError> {
    let connect = async {
        let mut conn = AsyncPgConnection::establish(&target.url)
            .await
            .map_err(unavailable)?;
        conn.batch_execute(&format!(
            "SET application_name = '{LISTENER_APPLICATION_NAME}'; LISTEN {CHANNEL}"
        ))
        .await
        .map_err(from_diesel)?;
        Ok(conn)
    };
    tokio::time::timeout(target.timeout, connect)
        .await
        .map_err(|_| unavailable(ListenTimeout(target.timeout)))?
}

/// Why [`pump`] returned.
enum End {
    /// The subscriber dropped its end.
    Unsubscribed,
    /// The connection failed; a new one is needed.
    Lost(BoxError),
}

/// What woke [`pump`] up.
enum Turn {
    Heard(Option<QueryResult<PgNotification>>),
    /// The owed resync was delivered.
    Resynced,
    Idle,
    Unsubscribed,
}

/// The listener task: forwards notifications until the subscriber goes away, replacing the
/// connection whenever it fails.
async fn listen_forever(
    mut conn: AsyncPgConnection,
    tx: mpsc::Sender<FeedMessage>,
    target: Arc<ListenTarget>,
) {
    let mut owe_resync = false;
    loop {
        match pump(&mut conn, &tx, &target, owe_resync).await {
            End::Unsubscribed => return,
            End::Lost(e) => {
                tracing::warn!(error = %e, "revocation listener lost its connection; reconnecting");
            }
        }
        drop(conn);
        conn = reconnect(&target).await;
        tracing::info!("revocation listener listening again; subscribers resync");
        owe_resync = true;
    }
}

/// Forwards the notifications of one connection until it fails or the subscriber leaves.
///
/// `owe_resync` starts true on a replacement connection. It is also set when the subscriber's
/// buffer is full: rather than buffer without bound (the driver queues whatever the server
/// sends, whether or not anyone reads it), later events are dropped until a
/// [`FeedMessage::Resync`] fits, which covers them. The subscriber never hears an event from
/// after a gap before hearing of the gap.
async fn pump(
    conn: &mut AsyncPgConnection,
    tx: &mpsc::Sender<FeedMessage>,
    target: &ListenTarget,
    mut owe_resync: bool,
) -> End {
    loop {
        let turn = {
            // The driver's own task reads the socket and queues notifications; this stream only
            // drains that queue, so recreating it each turn loses nothing.
            let mut notifications = std::pin::pin!(conn.notifications_stream());
            tokio::select! {
                next = notifications.next() => Turn::Heard(next),
                permit = tx.reserve(), if owe_resync => match permit {
                    Ok(permit) => {
                        permit.send(FeedMessage::Resync);
                        Turn::Resynced
                    }
                    Err(_) => Turn::Unsubscribed,
                },
                () = tokio::time::sleep(IDLE_CHECK) => Turn::Idle,
                () = tx.closed() => Turn::Unsubscribed,
            }
        };
        match turn {
            Turn::Heard(Some(Ok(notification))) => {
                if notification.channel != CHANNEL {
                    continue;
                }
                for message in payload::decode(&notification.payload) {
                    if message == FeedMessage::Resync {
                        tracing::warn!("unreadable revocation payload; subscribers resync");
                    }
                    if owe_resync {
                        match tx.try_send(FeedMessage::Resync) {
                            Ok(()) => owe_resync = false,
                            Err(TrySendError::Full(_)) => continue,
                            Err(TrySendError::Closed(_)) => return End::Unsubscribed,
                        }
                    }
                    match tx.try_send(message) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            tracing::warn!("revocation subscriber is behind; it will resync");
                            owe_resync = true;
                        }
                        Err(TrySendError::Closed(_)) => return End::Unsubscribed,
                    }
                }
            }
            Turn::Heard(Some(Err(e))) => return End::Lost(Box::new(e)),
            Turn::Heard(None) => return End::Lost(Box::new(ListenClosed)),
            Turn::Resynced => owe_resync = false,
            Turn::Idle => {
                let check = tokio::time::timeout(target.timeout, conn.batch_execute("SELECT 1"));
                match check.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return End::Lost(Box::new(e)),
                    Err(_) => return End::Lost(Box::new(ListenTimeout(target.timeout))),
                }
            }
            Turn::Unsubscribed => return End::Unsubscribed,
        }
    }
}

/// A listening connection, however long it takes; the task is aborted if nobody waits anymore.
async fn reconnect(target: &ListenTarget) -> AsyncPgConnection {
    let mut delay = BACKOFF_MIN;
    loop {
        // Waiting first also keeps a connection that fails right after opening from spinning.
        tokio::time::sleep(delay).await;
        match listen(target).await {
            Ok(conn) => return conn,
            Err(e) => {
                delay = (delay * 2).min(BACKOFF_MAX);
                tracing::debug!(error = %e, retry_in = ?delay, "revocation listener cannot reconnect yet");
            }
        }
    }
}
