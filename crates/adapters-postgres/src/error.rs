//! Translation of diesel, pool and row errors into the ports' [`StoreError`].
//!
//! Diesel's errors show only the server's primary message, never the statement or its binds;
//! row errors name the column, never the value.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use iam_ports::StoreError;

/// A stored value that no longer satisfies the domain's rules (a bug or a hand edit).
#[derive(Debug, thiserror::Error)]
#[error("stored {table}.{column} is not valid")]
pub(crate) struct InvalidRow {
    pub table: &'static str,
    pub column: &'static str,
}

/// A row that a write needs is not there (the in-memory store's answer to the same call).
#[derive(Debug, thiserror::Error)]
#[error("{0} does not exist")]
pub(crate) struct Missing(pub &'static str);

/// A value the domain allows but a column cannot hold.
#[derive(Debug, thiserror::Error)]
#[error("{table}.{column} cannot hold the value")]
pub(crate) struct OutOfRange {
    pub table: &'static str,
    pub column: &'static str,
}

/// Why a unit of work refuses to go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UnitError {
    #[error("an earlier statement of this unit of work failed; it can only roll back")]
    Poisoned,
    #[error("the unit of work rolled back because an earlier statement failed")]
    RolledBack,
    #[error("the unit of work has ended")]
    Ended,
}

/// Maps a failed statement. Unique violations become conflicts by constraint name, so that a
/// renamed constraint shows up as a failing contract test rather than a wrong answer.
pub(crate) fn from_diesel(error: DieselError) -> StoreError {
    match &error {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
            match info.constraint_name().and_then(conflict_for) {
                Some(what) => StoreError::Conflict(what),
                None => StoreError::Unexpected(Box::new(error)),
            }
        }
        DieselError::DatabaseError(
            DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection,
            _,
        )
        | DieselError::BrokenTransactionManager => StoreError::Unavailable(Box::new(error)),
        _ => StoreError::Unexpected(Box::new(error)),
    }
}

/// What a unique constraint protects, in the ports' vocabulary.
fn conflict_for(constraint: &str) -> Option<&'static str> {
    Some(match constraint {
        "users_email_key" => "email",
        "users_pkey" => "user",
        "tenants_pkey" => "tenant",
        "memberships_pkey" => "membership",
        "sessions_pkey" => "session",
        "refresh_tokens_pkey" => "refresh token",
        "signing_keys_pkey" | "signing_keys_one_active" => "key",
        "mfa_enrolments_pkey" => "mfa enrolment",
        "recovery_codes_pkey" => "recovery code",
        "mfa_challenges_pkey" => "mfa challenge",
        "link_tokens_pkey" => "link token",
        "mail_outbox_pkey" => "mail",
        "roles_pkey" | "roles_tenant_name_key" => "role",
        "audit_events_pkey" => "audit event",
        "claim_definitions_pkey" => "claim",
        "tenant_selections_pkey" => "tenant selection",
        _ => return None,
    })
}

/// A pool checkout that failed or timed out: the database cannot be reached now.
pub(crate) fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

pub(crate) fn invalid(table: &'static str, column: &'static str) -> StoreError {
    StoreError::Unexpected(Box::new(InvalidRow { table, column }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_table() {
        for (constraint, expected) in [
            ("users_email_key", Some("email")),
            ("users_pkey", Some("user")),
            ("tenants_pkey", Some("tenant")),
            ("memberships_pkey", Some("membership")),
            ("sessions_pkey", Some("session")),
            ("refresh_tokens_pkey", Some("refresh token")),
            ("signing_keys_pkey", Some("key")),
            ("signing_keys_one_active", Some("key")),
            ("mfa_enrolments_pkey", Some("mfa enrolment")),
            ("recovery_codes_pkey", Some("recovery code")),
            ("mfa_challenges_pkey", Some("mfa challenge")),
            ("link_tokens_pkey", Some("link token")),
            ("mail_outbox_pkey", Some("mail")),
            ("something_else", None),
        ] {
            assert_eq!(conflict_for(constraint), expected, "{constraint}");
        }
    }

    #[test]
    fn lost_connections_are_unavailable() {
        let e = DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection,
            Box::new("connection closed".to_owned()),
        );
        assert!(matches!(from_diesel(e), StoreError::Unavailable(_)));
        assert!(matches!(
            from_diesel(DieselError::NotFound),
            StoreError::Unexpected(_)
        ));
    }
}
