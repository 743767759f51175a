//! Users.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Email, Timestamp, UserId};

/// A person's display name: trimmed, 1–200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DisplayName(String);

/// Why a display name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is longer than {0} characters")]
    TooLong(usize),
    #[error("name contains control characters")]
    Characters,
}

/// Trims and checks a human-readable name (shared by users and tenants).
pub(crate) fn parse_name(input: &str, max: usize) -> Result<String, NameError> {
    let name = input.trim();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().count() > max {
        return Err(NameError::TooLong(max));
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Characters);
    }
    Ok(name.to_owned())
}

impl DisplayName {
    /// Parses a display name.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        parse_name(input, 200).map(Self)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a user may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// May sign in.
    Active,
    /// Kept, but refused at sign-in and refresh.
    Disabled,
    /// Soft-deleted: kept for audit and restore, refused everywhere.
    Deleted,
}

impl UserStatus {
    /// The stable storage and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Deleted => "deleted",
        }
    }

    /// Parses the storage name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "disabled" => Some(Self::Disabled),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub name: DisplayName,
    pub status: UserStatus,
    pub email_verified: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl User {
    /// A new, active, unverified account.
    pub fn new(id: UserId, email: Email, name: DisplayName, now: Timestamp) -> Self {
        Self {
            id,
            email,
            name,
            status: UserStatus::Active,
            email_verified: false,
            created_at: now,
            updated_at: now,
        }
    }

    /// Whether the account may obtain or keep tokens.
    pub fn can_sign_in(&self) -> bool {
        self.status == UserStatus::Active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(DisplayName::parse("  Ada  ").unwrap().as_str(), "Ada");
        assert_eq!(DisplayName::parse(" "), Err(NameError::Empty));
        assert_eq!(DisplayName::parse("a\u{7}b"), Err(NameError::Characters));
        assert_eq!(
            DisplayName::parse(&"n".repeat(201)),
            Err(NameError::TooLong(200))
        );
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            UserStatus::Active,
            UserStatus::Disabled,
            UserStatus::Deleted,
        ] {
            assert_eq!(UserStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(UserStatus::parse("nope"), None);
    }
}
