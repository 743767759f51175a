//! Identifier newtypes, so that a user id can never be passed where a tenant id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps an existing UUID (from storage or the wire).
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// A time-ordered UUID v7 built from caller-supplied time and randomness.
            pub fn new_v7(now: crate::Timestamp, random: [u8; 10]) -> Self {
                let millis = u64::try_from(now.timestamp_millis()).unwrap_or(0);
                Self(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// Identifies a user across the whole service.
    UserId
);
uuid_id!(
    /// Identifies a tenant.
    TenantId
);
uuid_id!(
    /// Identifies a session: one refresh-token family and the access tokens issued from it (`sid`).
    SessionId
);
uuid_id!(
    /// Identifies a role. A system role's id is derived from its tenant's id and its name
    /// ([`RoleId::system`]).
    RoleId
);

/// Identifies a signing key (the JWT header's `kid`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// Accepts 1–64 characters of `[A-Za-z0-9_-]`, which keeps kids safe in headers and URLs.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(s.to_owned()))
    }

    /// The kid as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn v7_ids_are_time_ordered() {
        let t1 = chrono::Utc.timestamp_millis_opt(1_700_000_000_000).unwrap();
        let t2 = chrono::Utc.timestamp_millis_opt(1_700_000_000_001).unwrap();
        let a = UserId::new_v7(t1, [0xff; 10]);
        let b = UserId::new_v7(t2, [0x00; 10]);
        assert!(a < b);
        assert_eq!(a.as_uuid().get_version_num(), 7);
    }

    #[test]
    fn key_ids_are_restricted() {
        for (input, ok) in [
            ("k1", true),
            ("a-b_C9", true),
            ("", false),
            ("a b", false),
            ("é", false),
        ] {
            assert_eq!(KeyId::parse(input).is_some(), ok, "{input:?}");
        }
        assert!(KeyId::parse(&"x".repeat(65)).is_none());
    }
}
