//! Mail delivery: the outbox queue the worker drains, and the mailer it delivers through.

use async_trait::async_trait;
use iam_domain::{MailId, MailMessage, QueuedMail, Timestamp};

use crate::{BoxError, StoreError};

/// The outbox, as the delivery worker sees it (outside any unit of work).
#[async_trait]
pub trait MailQueue: Send + Sync {
    /// Claims up to `limit` unsent messages due at `now`, oldest first: each becomes due again
    /// only at `lease_until` (so a crashed worker's claim is retried, and two workers never take
    /// the same message at once) and its attempt count goes up by one.
    async fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<QueuedMail>, StoreError>;

    /// Records a delivery.
    async fn mark_sent(&self, id: MailId, at: Timestamp) -> Result<(), StoreError>;

    /// Records a failed attempt and when to try again. `error` must hold no secret.
    async fn mark_failed(
        &self,
        id: MailId,
        retry_at: Timestamp,
        error: &str,
    ) -> Result<(), StoreError>;

    /// Unsent messages (for readiness and tests).
    async fn pending(&self) -> Result<u64, StoreError>;
}

/// Why a message was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// Worth retrying: the server is down, busy, or answered 4xx.
    #[error("mail delivery failed for now")]
    Transient(#[source] BoxError),
    /// Retrying will not help: a 5xx for this recipient, or a malformed message.
    #[error("mail delivery refused")]
    Permanent(#[source] BoxError),
}

/// Delivers one message (SMTP in production; a directory for local development).
#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, message: &MailMessage) -> Result<(), MailError>;
}
