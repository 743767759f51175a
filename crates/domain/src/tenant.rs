//! Tenants and memberships.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::user::{NameError, parse_name};
use crate::{TenantId, Timestamp, UserId};

/// A tenant's name: trimmed, 1–200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantName(String);

impl TenantName {
    /// Parses a tenant name.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        parse_name(input, 200).map(Self)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a tenant's members may obtain and use tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    Blocked,
    /// Soft-deleted: gone for every purpose, its rows kept for the audit trail.
    Deleted,
}

impl TenantStatus {
    /// The stable storage and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Blocked => "blocked",
            Self::Deleted => "deleted",
        }
    }

    /// Parses the storage name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "blocked" => Some(Self::Blocked),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// A tenant: an organisation whose members share roles and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: TenantName,
    /// The tenant above this one in the B2B2B tree; `None` for a top-level tenant.
    pub parent: Option<TenantId>,
    pub owner: UserId,
    pub status: TenantStatus,
    /// Free-form attributes (a JSON object); custom claims may read its fields.
    pub metadata: crate::Metadata,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Tenant {
    /// Whether the tenant exists for its users and administrators (not soft-deleted).
    pub fn is_live(&self) -> bool {
        self.status != TenantStatus::Deleted
    }

    /// A new active top-level tenant owned by `owner`.
    pub fn new_top_level(id: TenantId, name: TenantName, owner: UserId, now: Timestamp) -> Self {
        Self {
            id,
            name,
            parent: None,
            owner,
            status: TenantStatus::Active,
            metadata: crate::Metadata::default(),
            created_at: now,
            updated_at: now,
        }
    }
}

/// A role's name as carried in the access token's `roles` claim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoleName(pub(crate) String);

impl RoleName {
    /// The role every tenant's owner holds.
    pub fn owner() -> Self {
        Self("owner".into())
    }

    /// Accepts 1–64 characters of lower-case ASCII letters, digits, `-`, `_` and `.`.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            });
        ok.then(|| Self(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A passed first factor of a user with several memberships, waiting for the client to pick
/// the tenant (`POST /auth/select-tenant`); single use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSelection {
    pub token_hash: [u8; 32],
    pub user: UserId,
    /// Methods of the first factor, carried into the session.
    pub amr: Vec<String>,
    pub expires_at: Timestamp,
}

/// How long a tenant selection stays usable.
pub const SELECTION_SECS: i64 = 300;

/// A user's membership of a tenant, with the roles held there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub tenant: TenantId,
    pub user: UserId,
    pub roles: Vec<RoleName>,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names() {
        for (input, ok) in [
            ("owner", true),
            ("billing.admin", true),
            ("a-b_c9", true),
            ("Owner", false),
            ("", false),
            ("with space", false),
        ] {
            assert_eq!(RoleName::parse(input).is_some(), ok, "{input:?}");
        }
    }

    #[test]
    fn tenant_status_round_trips() {
        for s in [
            TenantStatus::Active,
            TenantStatus::Blocked,
            TenantStatus::Deleted,
        ] {
            assert_eq!(TenantStatus::parse(s.as_str()), Some(s));
        }
    }
}
