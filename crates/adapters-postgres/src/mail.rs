//! Emailed link tokens and the mail outbox (`link_tokens`, `mail_outbox`).
//!
//! The unit-of-work side (`MailRepo`) is the free functions here, called by `unit` inside its
//! transaction, so that a message commits or rolls back with the change it announces.
//! The delivery worker's side (`MailQueue`) is [`PostgresMailQueue`]: each call one
//! auto-committed statement on a pooled connection, outside any unit of work.
//!
//! Message bodies hold secret links: nothing here puts them (or a token hash) in an error.

use async_trait::async_trait;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use iam_domain::{
    Email, LinkKind, LinkToken, MailId, MailMessage, PasswordHash, QueuedMail, Timestamp, UserId,
};
use iam_ports::{MailQueue, StoreError};

use crate::error::from_diesel;
use crate::pool::Db;
use crate::rows::{LinkTokenRow, MailRow};
use crate::schema::{link_tokens, mail_outbox, users};

type Conn = AsyncPgConnection;

/// The longest failure reason kept, in characters; the rest is cut off.
pub(crate) const MAX_ERROR_CHARS: usize = 500;

/// Two round trips: the live tokens of the same kind for the same address are spent (at the new
/// token's `created_at`), then the token is inserted; a duplicate hash is `Conflict("link
/// token")` (and, like any failure, leaves the unit only fit for rollback).
pub(crate) async fn insert_link_token(
    conn: &mut Conn,
    token: &LinkToken,
) -> Result<(), StoreError> {
    spend_link_tokens(conn, &token.email, token.kind, token.created_at).await?;
    let roles: Vec<&str> = token.roles.iter().map(|r| r.as_str()).collect();
    diesel::insert_into(link_tokens::table)
        .values((
            link_tokens::hash.eq(token.hash.as_slice()),
            link_tokens::kind.eq(token.kind.as_str()),
            link_tokens::email.eq(token.email.as_str()),
            link_tokens::user_id.eq(token.user.map(|u| u.as_uuid())),
            link_tokens::tenant_id.eq(token.tenant.map(|t| t.as_uuid())),
            link_tokens::roles.eq(roles),
            link_tokens::invited_by.eq(token.invited_by.map(|u| u.as_uuid())),
            link_tokens::created_at.eq(token.created_at),
            link_tokens::expires_at.eq(token.expires_at),
            link_tokens::used_at.eq(token.used_at),
        ))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(())
}

/// One conditional update: spends the token if it is of `kind`, unused and unexpired at `now`,
/// and returns it as it now stands. Concurrent takes queue on the row lock; under READ COMMITTED
/// each waiter re-checks `used_at IS NULL` against the row the winner committed, so exactly one
/// of them gets the token.
pub(crate) async fn take_link_token(
    conn: &mut Conn,
    hash: &[u8; 32],
    kind: LinkKind,
    now: Timestamp,
) -> Result<Option<LinkToken>, StoreError> {
    diesel::update(
        link_tokens::table
            .find(hash.as_slice())
            .filter(link_tokens::kind.eq(kind.as_str()))
            .filter(link_tokens::used_at.is_null())
            .filter(link_tokens::expires_at.gt(now)),
    )
    .set(link_tokens::used_at.eq(now))
    .returning(LinkTokenRow::as_returning())
    .get_result(conn)
    .await
    .optional()
    .map_err(from_diesel)?
    .map(LinkToken::try_from)
    .transpose()
}

/// Spends every unused token of `kind` for `email` (expired or not, as the in-memory store
/// does); how many.
pub(crate) async fn spend_link_tokens(
    conn: &mut Conn,
    email: &Email,
    kind: LinkKind,
    at: Timestamp,
) -> Result<u64, StoreError> {
    let spent = diesel::update(
        link_tokens::table
            .filter(link_tokens::email.eq(email.as_str()))
            .filter(link_tokens::kind.eq(kind.as_str()))
            .filter(link_tokens::used_at.is_null()),
    )
    .set(link_tokens::used_at.eq(at))
    .execute(conn)
    .await
    .map_err(from_diesel)?;
    Ok(u64::try_from(spent).unwrap_or(0))
}

/// Replaces the password hash (nothing else: `updated_at` stays, as in the in-memory store);
/// `false` if no such user.
pub(crate) async fn set_password(
    conn: &mut Conn,
    user: UserId,
    hash: &PasswordHash,
) -> Result<bool, StoreError> {
    let updated = diesel::update(users::table.find(user.as_uuid()))
        .set(users::password_hash.eq(hash.as_str()))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(updated > 0)
}

/// Queues a message, due at its `created_at`, no attempt made.
pub(crate) async fn enqueue_mail(conn: &mut Conn, message: &MailMessage) -> Result<(), StoreError> {
    diesel::insert_into(mail_outbox::table)
        .values((
            mail_outbox::id.eq(message.id.0),
            mail_outbox::recipient.eq(message.to.as_str()),
            mail_outbox::subject.eq(message.subject.as_str()),
            mail_outbox::body_text.eq(message.text.as_str()),
            mail_outbox::body_html.eq(message.html.as_str()),
            mail_outbox::created_at.eq(message.created_at),
            mail_outbox::due_at.eq(message.created_at),
            mail_outbox::attempts.eq(0),
        ))
        .execute(conn)
        .await
        .map_err(from_diesel)?;
    Ok(())
}

/// The mail outbox as the delivery worker sees it, over the store's pool; each call
/// auto-commits on its own.
#[derive(Clone)]
pub struct PostgresMailQueue {
    db: Db,
}

impl PostgresMailQueue {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }
}

/// `error` cut to at most [`MAX_ERROR_CHARS`] characters (on a character boundary).
fn truncate_error(error: &str) -> &str {
    match error.char_indices().nth(MAX_ERROR_CHARS) {
        Some((end, _)) => &error[..end],
        None => error,
    }
}

#[async_trait]
impl MailQueue for PostgresMailQueue {
    /// One statement: [`ClaimDue`].
    async fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<QueuedMail>, StoreError> {
        let mut conn = self.db.checkout().await?;
        ClaimDue {
            now,
            lease_until,
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
        }
        .load::<MailRow>(&mut conn)
        .await
        .map_err(from_diesel)?
        .into_iter()
        .map(QueuedMail::try_from)
        .collect()
    }

    /// An unknown id is no error (nor in the in-memory store).
    async fn mark_sent(&self, id: MailId, at: Timestamp) -> Result<(), StoreError> {
        let mut conn = self.db.checkout().await?;
        diesel::update(mail_outbox::table.find(id.0))
            .set(mail_outbox::sent_at.eq(at))
            .execute(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(())
    }

    /// Keeps the reason, cut to [`MAX_ERROR_CHARS`] characters; the attempt was counted when
    /// the message was claimed.
    async fn mark_failed(
        &self,
        id: MailId,
        retry_at: Timestamp,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.db.checkout().await?;
        diesel::update(mail_outbox::table.find(id.0))
            .set((
                mail_outbox::due_at.eq(retry_at),
                mail_outbox::last_error.eq(truncate_error(error)),
            ))
            .execute(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(())
    }

    async fn pending(&self) -> Result<u64, StoreError> {
        let mut conn = self.db.checkout().await?;
        let n = mail_outbox::table
            .filter(mail_outbox::sent_at.is_null())
            .count()
            .get_result::<i64>(&mut conn)
            .await
            .map_err(from_diesel)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// Claims up to `limit` unsent messages due at `now`, oldest due first (then oldest created,
/// then by id): each becomes due again at `lease_until` and its attempts go up by one.
///
/// One statement. `FOR UPDATE SKIP LOCKED` makes concurrent claimers pass over each other's rows
/// instead of queueing on them; a row another claimer has just committed is re-checked against
/// its new `due_at` (the lease, later than `now`) and dropped, so no message is claimed twice.
/// `RETURNING` has no order, so the rows come back through an outer `SELECT` sorted by their
/// due time before the claim. Hand-written (the DSL has no data-modifying CTEs nor `SKIP
/// LOCKED` in a subquery of an update) with a static query id, so it is prepared once per
/// connection like the DSL's statements.
#[derive(QueryId)]
struct ClaimDue {
    now: Timestamp,
    lease_until: Timestamp,
    limit: i64,
}

impl Query for ClaimDue {
    type SqlType = (
        sql_types::Uuid,
        sql_types::Text,
        sql_types::Text,
        sql_types::Text,
        sql_types::Text,
        sql_types::Timestamptz,
        sql_types::Integer,
    );
}

impl QueryFragment<Pg> for ClaimDue {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "WITH due AS MATERIALIZED (SELECT id, due_at FROM mail_outbox \
             WHERE sent_at IS NULL AND due_at <= ",
        );
        out.push_bind_param::<sql_types::Timestamptz, _>(&self.now)?;
        out.push_sql(" ORDER BY due_at, created_at, id LIMIT ");
        out.push_bind_param::<sql_types::BigInt, _>(&self.limit)?;
        out.push_sql(
            " FOR UPDATE SKIP LOCKED), \
             claimed AS (UPDATE mail_outbox m SET due_at = ",
        );
        out.push_bind_param::<sql_types::Timestamptz, _>(&self.lease_until)?;
        out.push_sql(
            ", attempts = m.attempts + 1 FROM due WHERE m.id = due.id \
             RETURNING m.id, m.recipient, m.subject, m.body_text, m.body_html, m.created_at, \
             m.attempts, due.due_at AS was_due) \
             SELECT id, recipient, subject, body_text, body_html, created_at, attempts \
             FROM claimed ORDER BY was_due, created_at, id",
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_cut_on_character_boundaries() {
        assert_eq!(truncate_error("refused"), "refused");
        let long = "é".repeat(MAX_ERROR_CHARS + 10);
        let cut = truncate_error(&long);
        assert_eq!(cut.chars().count(), MAX_ERROR_CHARS);
        assert_eq!(
            truncate_error(&long[..2 * MAX_ERROR_CHARS]),
            &long[..2 * MAX_ERROR_CHARS]
        );
    }
}
