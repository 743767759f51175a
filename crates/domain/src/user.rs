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
    /// Free-form attributes the platform keeps for the user (a JSON object).
    pub metadata: Metadata,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A user's (or tenant's) metadata: a JSON object of at most [`Metadata::MAX_BYTES`] serialised.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(serde_json::Map<String, serde_json::Value>);

/// Why metadata is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata must be a JSON object")]
    NotAnObject,
    #[error("metadata is larger than {0} bytes")]
    TooLarge(usize),
    #[error("metadata is nested deeper than {0} levels")]
    TooDeep(usize),
}

impl Metadata {
    /// Largest serialised size.
    pub const MAX_BYTES: usize = 4096;
    /// Deepest nesting of objects and arrays.
    pub const MAX_DEPTH: usize = 8;

    /// Checks a JSON value as metadata.
    pub fn parse(value: serde_json::Value) -> Result<Self, MetadataError> {
        let serde_json::Value::Object(map) = value else {
            return Err(MetadataError::NotAnObject);
        };
        Self::checked(map)
    }

    fn checked(map: serde_json::Map<String, serde_json::Value>) -> Result<Self, MetadataError> {
        fn depth(v: &serde_json::Value) -> usize {
            match v {
                serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
                serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
                _ => 0,
            }
        }
        let m = Self(map);
        if m.to_json_string().len() > Self::MAX_BYTES {
            return Err(MetadataError::TooLarge(Self::MAX_BYTES));
        }
        let d = m.0.values().map(depth).max().unwrap_or(0) + 1;
        if d > Self::MAX_DEPTH {
            return Err(MetadataError::TooDeep(Self::MAX_DEPTH));
        }
        Ok(m)
    }

    /// Applies an RFC 7386 JSON merge patch: `null` removes a key, objects merge, anything else
    /// replaces. The result is checked like new metadata.
    pub fn merge(&self, patch: &serde_json::Value) -> Result<Self, MetadataError> {
        fn merge_into(target: &mut serde_json::Value, patch: &serde_json::Value) {
            let serde_json::Value::Object(p) = patch else {
                *target = patch.clone();
                return;
            };
            if !target.is_object() {
                *target = serde_json::Value::Object(serde_json::Map::new());
            }
            if let serde_json::Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_into(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                    }
                }
            }
        }
        if !patch.is_object() {
            return Err(MetadataError::NotAnObject);
        }
        let mut value = self.to_value();
        merge_into(&mut value, patch);
        Self::parse(value)
    }

    /// The metadata as a JSON object.
    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }

    /// One top-level field.
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.get(key)
    }

    /// The metadata as a JSON value (an object).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::Value::Object(self.0.clone())
    }

    /// Compact JSON text.
    pub fn to_json_string(&self) -> String {
        self.to_value().to_string()
    }

    /// Parses stored JSON text (already checked when it was written).
    pub fn from_json_str(s: &str) -> Result<Self, MetadataError> {
        serde_json::from_str::<serde_json::Value>(s)
            .map_err(|_| MetadataError::NotAnObject)
            .and_then(Self::parse)
    }
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
            metadata: Metadata::default(),
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
    fn metadata_merge_patch() {
        let m = Metadata::parse(serde_json::json!({"a": 1, "b": {"c": 2, "d": 3}})).unwrap();
        let merged = m
            .merge(&serde_json::json!({"a": null, "b": {"c": 9}, "e": [1]}))
            .unwrap();
        assert_eq!(
            serde_json::Value::Object(merged.as_map().clone()),
            serde_json::json!({"b": {"c": 9, "d": 3}, "e": [1]})
        );
        assert_eq!(
            Metadata::parse(serde_json::json!([1])),
            Err(MetadataError::NotAnObject)
        );
        assert_eq!(
            Metadata::parse(serde_json::json!({"x": "y".repeat(5000)})),
            Err(MetadataError::TooLarge(4096))
        );
        let deep = (0..10).fold(serde_json::json!(1), |v, _| serde_json::json!({ "k": v }));
        assert_eq!(Metadata::parse(deep), Err(MetadataError::TooDeep(8)));
        assert!(m.merge(&serde_json::json!(3)).is_err());
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
