//! The outbox worker: delivers queued mail with retries and exponential backoff.

use std::sync::Arc;

use chrono::Duration;
use iam_ports::{Clock, MailError, MailQueue, Mailer, StoreError};
use tracing::{info, warn};

/// How the worker paces itself.
#[derive(Debug, Clone, Copy)]
pub struct OutboxPolicy {
    /// Messages claimed at once.
    pub batch: usize,
    /// How long a claim holds before another worker may retry it (a crash mid-send).
    pub lease: Duration,
    /// The first retry's delay; each further one doubles, up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for OutboxPolicy {
    fn default() -> Self {
        Self {
            batch: 20,
            lease: Duration::minutes(5),
            base_backoff: Duration::seconds(5),
            max_backoff: Duration::hours(1),
        }
    }
}

/// Drains the outbox through a mailer.
pub struct OutboxWorker {
    queue: Arc<dyn MailQueue>,
    mailer: Arc<dyn Mailer>,
    clock: Arc<dyn Clock>,
    policy: OutboxPolicy,
}

impl OutboxWorker {
    /// Builds the worker.
    pub fn new(
        queue: Arc<dyn MailQueue>,
        mailer: Arc<dyn Mailer>,
        clock: Arc<dyn Clock>,
        policy: OutboxPolicy,
    ) -> Self {
        Self {
            queue,
            mailer,
            clock,
            policy,
        }
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(20);
        let delay = self.policy.base_backoff * 2i32.pow(doublings);
        delay.min(self.policy.max_backoff)
    }

    /// Claims due messages and tries each once; returns how many were claimed.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let claimed = self
            .queue
            .claim_due(now, now + self.policy.lease, self.policy.batch)
            .await?;
        for mail in &claimed {
            let id = mail.message.id;
            match self.mailer.send(&mail.message).await {
                Ok(()) => {
                    self.queue.mark_sent(id, self.clock.now()).await?;
                    info!(mail.id = %id, attempts = mail.attempts, "mail delivered");
                }
                Err(MailError::Transient(e)) => {
                    let retry = self.clock.now() + self.backoff(mail.attempts);
                    warn!(mail.id = %id, attempts = mail.attempts, error = %e, "mail delivery failed; will retry");
                    self.queue.mark_failed(id, retry, &e.to_string()).await?;
                }
                Err(MailError::Permanent(e)) => {
                    // Parked far ahead rather than deleted, so an operator can see and requeue it.
                    let parked = self.clock.now() + Duration::days(3650);
                    warn!(mail.id = %id, error = %e, "mail refused permanently; parked");
                    self.queue.mark_failed(id, parked, &e.to_string()).await?;
                }
            }
        }
        Ok(claimed.len())
    }
}
