//! Emailed links (verification, reset, invitation) and the messages of the mail outbox.

use std::fmt;

use crate::{Email, RoleName, TenantId, Timestamp, UserId};

/// What an emailed link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// Confirms that the user receives mail at their address.
    Verify,
    /// Sets a new password.
    Reset,
    /// Joins a tenant.
    Invite,
}

impl LinkKind {
    /// The stable storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Reset => "reset",
            Self::Invite => "invite",
        }
    }

    /// Parses the storage name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "verify" => Some(Self::Verify),
            "reset" => Some(Self::Reset),
            "invite" => Some(Self::Invite),
            _ => None,
        }
    }
}

/// A stored link token: only its SHA-256 is kept. Single use, expiring, and superseded by a newer
/// one of the same kind for the same address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkToken {
    pub hash: [u8; 32],
    pub kind: LinkKind,
    /// The address the link was sent to.
    pub email: Email,
    /// The account it acts on (`None` for an invitation of someone without an account).
    pub user: Option<UserId>,
    /// For invitations: the tenant to join, the roles to hold there, and who invited.
    pub tenant: Option<TenantId>,
    pub roles: Vec<RoleName>,
    pub invited_by: Option<UserId>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
}

/// Identifies a queued message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailId(pub uuid::Uuid);

impl fmt::Display for MailId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A message to deliver. Its body holds a secret link, so it never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct MailMessage {
    pub id: MailId,
    pub to: Email,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub created_at: Timestamp,
}

impl fmt::Debug for MailMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailMessage")
            .field("id", &self.id)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// A message as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMail {
    pub message: MailMessage,
    /// Delivery attempts so far (including the one this claim is for).
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in [LinkKind::Verify, LinkKind::Reset, LinkKind::Invite] {
            assert_eq!(LinkKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(LinkKind::parse("other"), None);
    }
}
