//! The revocation feed's wire format on the `iam_revocations` channel, and the statement that
//! publishes it.
//!
//! A payload is JSON, one per `pg_notify` call, carrying up to [`MAX_EVENTS`] events in the
//! order the unit of work recorded them:
//!
//! ```json
//! {"v":1,"n":0,"e":[["s","<session id>"],["u","<user id>","disabled"],["t","<tenant id>"]]}
//! ```
//!
//! `v` is the format version; `n` numbers the payloads of one transaction, because PostgreSQL
//! delivers identical payloads of one transaction only once; `e` holds the events: `s` a revoked
//! session, `u` a user's new status, `t` a tenant whose status changed. Readers ignore unknown
//! keys, so one may be added without a new version; anything else they cannot read (a newer
//! version, a malformed event) becomes [`FeedMessage::Resync`], never a silent drop.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::{QueryResult, sql_types};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use iam_domain::{UserId, UserStatus};
use iam_ports::{FeedMessage, RevocationEvent, StoreError};
use serde::Deserialize;

use crate::error::from_diesel;

/// The notification channel every instance listens on.
pub(crate) const CHANNEL: &str = "iam_revocations";

/// The payload format this build writes and the only one it reads.
const VERSION: u32 = 1;

/// Events per payload. PostgreSQL caps a payload at 8000 bytes; the longest event (a user
/// status) takes 56, so 100 of them stay well inside it.
pub(crate) const MAX_EVENTS: usize = 100;

#[derive(Deserialize)]
struct Incoming {
    v: u32,
    e: Vec<Vec<String>>,
}

/// The payloads announcing `events`, in order, at most [`MAX_EVENTS`] events each.
///
/// Written by hand: every part is a UUID, a number or a fixed ASCII token, none of which JSON
/// needs to escape, so there is nothing for a serialiser to get wrong and no error to handle.
pub(crate) fn encode(events: &[RevocationEvent]) -> Vec<String> {
    events
        .chunks(MAX_EVENTS)
        .enumerate()
        .map(|(n, chunk)| {
            let mut json = format!(r#"{{"v":{VERSION},"n":{n},"e":["#);
            for (i, event) in chunk.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                json.push_str(&match event {
                    RevocationEvent::SessionRevoked(id) => format!(r#"["s","{id}"]"#),
                    RevocationEvent::UserStatus(id, status) => {
                        format!(r#"["u","{id}","{}"]"#, status.as_str())
                    }
                    RevocationEvent::TenantStatus(id) => format!(r#"["t","{id}"]"#),
                    RevocationEvent::RolesChanged(id) => format!(r#"["r","{id}"]"#),
                    RevocationEvent::CatalogueChanged => r#"["c"]"#.to_owned(),
                    RevocationEvent::ClaimsChanged => r#"["k"]"#.to_owned(),
                });
            }
            json.push_str("]}");
            json
        })
        .collect()
}

/// What a payload from the channel means to a subscriber: its events, or a single
/// [`FeedMessage::Resync`] if any part of it cannot be read.
pub(crate) fn decode(payload: &str) -> Vec<FeedMessage> {
    match parse(payload) {
        Some(events) => events.into_iter().map(FeedMessage::Event).collect(),
        None => vec![FeedMessage::Resync],
    }
}

fn parse(payload: &str) -> Option<Vec<RevocationEvent>> {
    let incoming: Incoming = serde_json::from_str(payload).ok()?;
    if incoming.v != VERSION {
        return None;
    }
    incoming
        .e
        .iter()
        .map(|event| match event.as_slice() {
            [k, id] if k == "s" => id.parse().ok().map(RevocationEvent::SessionRevoked),
            [k, id] if k == "t" => id.parse().ok().map(RevocationEvent::TenantStatus),
            [k, id] if k == "r" => id.parse().ok().map(RevocationEvent::RolesChanged),
            [k] if k == "c" => Some(RevocationEvent::CatalogueChanged),
            [k] if k == "k" => Some(RevocationEvent::ClaimsChanged),
            [k, id, status] if k == "u" => Some(RevocationEvent::UserStatus(
                id.parse::<UserId>().ok()?,
                UserStatus::parse(status)?,
            )),
            _ => None,
        })
        .collect()
}

/// Queues `events` for delivery when the connection's transaction commits (and discards them if
/// it rolls back): one `pg_notify` per payload, in order.
pub(crate) async fn publish(
    conn: &mut AsyncPgConnection,
    events: &[RevocationEvent],
) -> Result<(), StoreError> {
    for payload in encode(events) {
        Notify { payload }
            .execute(conn)
            .await
            .map_err(from_diesel)?;
    }
    Ok(())
}

/// `SELECT pg_notify('iam_revocations', $1)`, with a static query id so that it is prepared once
/// per connection like the DSL's statements (`sql_query` would be parsed every time).
#[derive(QueryId)]
struct Notify {
    payload: String,
}

impl QueryFragment<Pg> for Notify {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT pg_notify('");
        out.push_sql(CHANNEL);
        out.push_sql("', ");
        out.push_bind_param::<sql_types::Text, _>(&self.payload)?;
        out.push_sql(")");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use iam_domain::{SessionId, TenantId};
    use uuid::Uuid;

    use super::*;

    fn uuid(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn round_trips_every_kind_in_order() {
        let events = vec![
            RevocationEvent::SessionRevoked(SessionId::from_uuid(uuid(1))),
            RevocationEvent::UserStatus(UserId::from_uuid(uuid(2)), UserStatus::Disabled),
            RevocationEvent::TenantStatus(TenantId::from_uuid(uuid(3))),
            RevocationEvent::UserStatus(UserId::from_uuid(uuid(2)), UserStatus::Active),
            RevocationEvent::RolesChanged(TenantId::from_uuid(uuid(4))),
            RevocationEvent::CatalogueChanged,
        ];
        let payloads = encode(&events);
        assert_eq!(payloads.len(), 1);
        assert_eq!(
            payloads[0],
            format!(
                r#"{{"v":1,"n":0,"e":[["s","{}"],["u","{}","disabled"],["t","{}"],["u","{}","active"],["r","{}"],["c"]]}}"#,
                uuid(1),
                uuid(2),
                uuid(3),
                uuid(2),
                uuid(4)
            )
        );
        let decoded = decode(&payloads[0]);
        let expected: Vec<_> = events.into_iter().map(FeedMessage::Event).collect();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn large_batches_split_into_numbered_payloads_that_fit() {
        let events: Vec<_> = (0..(2 * MAX_EVENTS as u128 + 1))
            .map(|n| {
                RevocationEvent::UserStatus(
                    UserId::from_uuid(Uuid::from_u128(u128::MAX - n)),
                    UserStatus::Disabled,
                )
            })
            .collect();
        let payloads = encode(&events);
        assert_eq!(payloads.len(), 3);
        // PostgreSQL refuses payloads of 8000 bytes or more.
        assert!(
            payloads.iter().all(|p| p.len() < 8000),
            "{}",
            payloads[0].len()
        );
        // Distinct even when the events are not, so that none is collapsed by the server.
        assert!(payloads[0].contains(r#""n":0"#) && payloads[2].contains(r#""n":2"#));
        let decoded: Vec<_> = payloads.iter().flat_map(|p| decode(p)).collect();
        let expected: Vec<_> = events.into_iter().map(FeedMessage::Event).collect();
        assert_eq!(decoded, expected);
        assert!(encode(&[]).is_empty());
    }

    #[test]
    fn anything_unreadable_is_a_resync() {
        let id = uuid(7);
        for payload in [
            String::new(),
            "garbage".to_owned(),
            "{}".to_owned(),
            r#"{"v":1}"#.to_owned(),
            format!(r#"{{"v":2,"n":0,"e":[["s","{id}"]]}}"#),
            format!(r#"{{"v":1,"n":0,"e":[["x","{id}"]]}}"#),
            format!(r#"{{"v":1,"n":0,"e":[["s","{id}"],["s","not-a-uuid"]]}}"#),
            format!(r#"{{"v":1,"n":0,"e":[["u","{id}","frozen"]]}}"#),
            format!(r#"{{"v":1,"n":0,"e":[["u","{id}"]]}}"#),
            format!(r#"{{"v":1,"n":0,"e":[["t","{id}","extra"]]}}"#),
            r#"{"v":1,"n":0,"e":[["s",1]]}"#.to_owned(),
        ] {
            assert_eq!(decode(&payload), vec![FeedMessage::Resync], "{payload}");
        }
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let id = uuid(7);
        let payload = format!(r#"{{"v":1,"n":3,"later":true,"e":[["t","{id}"]]}}"#);
        assert_eq!(
            decode(&payload),
            vec![FeedMessage::Event(RevocationEvent::TenantStatus(
                TenantId::from_uuid(id)
            ))]
        );
    }
}
