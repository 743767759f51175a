//! Audit events: who did what to whom, in which tenant, and how it ended.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{TenantId, Timestamp, UserId};

/// Identifies an audit event; time-ordered (UUID v7), so ids sort as events happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AuditId(pub Uuid);

impl AuditId {
    /// A new event's id (time-ordered UUID v7) from caller-supplied time and randomness.
    pub fn new_v7(now: Timestamp, random: [u8; 10]) -> Self {
        let millis = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        Self(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
    }
}

impl fmt::Display for AuditId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditActor {
    /// A signed-in user.
    User(UserId),
    /// A platform service presenting a service credential (gRPC), or the operator's CLI.
    Service,
}

/// How the action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// Done.
    Success,
    /// The actor lacked the permission.
    Denied,
    /// Refused by a rule (not found, conflict, last owner…); nothing changed.
    Failed,
}

impl AuditOutcome {
    /// The stable storage and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Failed => "failed",
        }
    }

    /// Parses the storage name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Self::Success),
            "denied" => Some(Self::Denied),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One administrative action, appended and never changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: AuditId,
    pub at: Timestamp,
    pub actor: AuditActor,
    pub tenant: TenantId,
    /// What was done, as `resource.verb` (`users.create`, `roles.assign`, …).
    pub action: String,
    /// What it was done to: a resource path such as `users/<id>` (never a secret).
    pub target: String,
    /// The request's `x-request-id`, when it came with one.
    pub request_id: Option<String>,
    pub outcome: AuditOutcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip() {
        for o in [
            AuditOutcome::Success,
            AuditOutcome::Denied,
            AuditOutcome::Failed,
        ] {
            assert_eq!(AuditOutcome::parse(o.as_str()), Some(o));
        }
    }
}
