//! Rows as diesel reads them, and their conversion into domain values. A stored value that the
//! domain rejects becomes `StoreError::Unexpected`, naming the column but not the value.

use diesel::pg::Pg;
use diesel::prelude::*;
use iam_domain::{
    AuditActor, AuditEvent, AuditId, AuditOutcome, Metadata, Permission, PermissionDef, Role,
    RoleId,
};
use iam_domain::{
    DisplayName, Email, KeyId, LinkKind, LinkToken, MailId, MailMessage, Membership, MfaChallenge,
    MfaEnrolment, PasswordHash, QueuedMail, RoleName, Session, SessionId, StoredRecoveryCode,
    Tenant, TenantId, TenantName, TenantStatus, Timestamp, User, UserId, UserStatus,
};
use iam_ports::{StoreError, StoredKey, UserRecord};
use uuid::Uuid;

use crate::error::invalid;
use crate::schema::{audit_events, claim_definitions, permissions, roles};
use crate::schema::{
    link_tokens, mail_outbox, memberships, mfa_challenges, mfa_enrolments, recovery_codes,
    sessions, signing_keys, tenants, users,
};

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(Pg))]
pub(crate) struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub password_hash: Option<String>,
    pub status: String,
    pub email_verified: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub metadata: serde_json::Value,
}

impl TryFrom<UserRow> for UserRecord {
    type Error = StoreError;

    fn try_from(row: UserRow) -> Result<Self, StoreError> {
        let user = User {
            id: UserId::from_uuid(row.id),
            email: Email::parse(&row.email).map_err(|_| invalid("users", "email"))?,
            name: DisplayName::parse(&row.display_name)
                .map_err(|_| invalid("users", "display_name"))?,
            status: UserStatus::parse(&row.status).ok_or_else(|| invalid("users", "status"))?,
            email_verified: row.email_verified,
            metadata: Metadata::parse(row.metadata).map_err(|_| invalid("users", "metadata"))?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        };
        Ok(Self {
            user,
            password_hash: row.password_hash.map(PasswordHash::from_phc),
        })
    }
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;

    fn try_from(row: UserRow) -> Result<Self, StoreError> {
        UserRecord::try_from(row).map(|record| record.user)
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = tenants, check_for_backend(Pg))]
pub(crate) struct TenantRow {
    pub id: Uuid,
    pub name: String,
    pub parent_id: Option<Uuid>,
    pub owner_id: Uuid,
    pub status: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub metadata: serde_json::Value,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = StoreError;

    fn try_from(row: TenantRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: TenantId::from_uuid(row.id),
            name: TenantName::parse(&row.name).map_err(|_| invalid("tenants", "name"))?,
            parent: row.parent_id.map(TenantId::from_uuid),
            owner: UserId::from_uuid(row.owner_id),
            status: TenantStatus::parse(&row.status).ok_or_else(|| invalid("tenants", "status"))?,
            metadata: Metadata::parse(row.metadata).map_err(|_| invalid("tenants", "metadata"))?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = memberships, check_for_backend(Pg))]
pub(crate) struct MembershipRow {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub roles: Vec<String>,
    pub created_at: Timestamp,
}

impl TryFrom<MembershipRow> for Membership {
    type Error = StoreError;

    fn try_from(row: MembershipRow) -> Result<Self, StoreError> {
        let roles = row
            .roles
            .iter()
            .map(|r| RoleName::parse(r).ok_or_else(|| invalid("memberships", "roles")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            tenant: TenantId::from_uuid(row.tenant_id),
            user: UserId::from_uuid(row.user_id),
            roles,
            created_at: row.created_at,
        })
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = sessions, check_for_backend(Pg))]
pub(crate) struct SessionRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub amr: Vec<String>,
    pub auth_time: Timestamp,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl From<SessionRow> for Session {
    fn from(row: SessionRow) -> Self {
        Self {
            id: SessionId::from_uuid(row.id),
            user: UserId::from_uuid(row.user_id),
            tenant: TenantId::from_uuid(row.tenant_id),
            amr: row.amr,
            auth_time: row.auth_time,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        }
    }
}

/// What rotation needs to know about a presented token that it could not spend: the token's
/// state and whether its family was revoked (`refresh_tokens` joined with `sessions`).
#[derive(Debug, Queryable)]
pub(crate) struct RefreshStateRow {
    pub session_id: Uuid,
    pub status: String,
    pub expires_at: Timestamp,
    pub session_revoked_at: Option<Timestamp>,
}

/// A refresh token's place in its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshStatus {
    /// The family's current token.
    Live,
    /// Spent by a rotation.
    Rotated,
    /// Ended with its family.
    Revoked,
}

impl RefreshStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Rotated => "rotated",
            Self::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(Self::Live),
            "rotated" => Some(Self::Rotated),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = signing_keys, check_for_backend(Pg))]
pub(crate) struct SigningKeyRow {
    pub kid: String,
    pub sealed_private_key: Vec<u8>,
    pub created_at: Timestamp,
    pub retired_at: Option<Timestamp>,
}

impl TryFrom<SigningKeyRow> for StoredKey {
    type Error = StoreError;

    fn try_from(row: SigningKeyRow) -> Result<Self, StoreError> {
        Ok(Self {
            kid: KeyId::parse(&row.kid).ok_or_else(|| invalid("signing_keys", "kid"))?,
            sealed_private_key: row.sealed_private_key,
            created_at: row.created_at,
            retired_at: row.retired_at,
        })
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = mfa_enrolments, check_for_backend(Pg))]
pub(crate) struct MfaEnrolmentRow {
    pub user_id: Uuid,
    pub sealed_secret: Vec<u8>,
    pub created_at: Timestamp,
    pub confirmed_at: Option<Timestamp>,
    pub last_used_step: Option<i64>,
}

impl From<MfaEnrolmentRow> for MfaEnrolment {
    fn from(row: MfaEnrolmentRow) -> Self {
        Self {
            user: UserId::from_uuid(row.user_id),
            sealed_secret: row.sealed_secret,
            created_at: row.created_at,
            confirmed_at: row.confirmed_at,
            last_used_step: row.last_used_step,
        }
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = recovery_codes, check_for_backend(Pg))]
pub(crate) struct RecoveryCodeRow {
    pub lookup: String,
    pub hash: String,
    pub created_at: Timestamp,
    pub used_at: Option<Timestamp>,
}

impl From<RecoveryCodeRow> for StoredRecoveryCode {
    fn from(row: RecoveryCodeRow) -> Self {
        Self {
            lookup: row.lookup,
            hash: PasswordHash::from_phc(row.hash),
            created_at: row.created_at,
            used_at: row.used_at,
        }
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = mfa_challenges, check_for_backend(Pg))]
pub(crate) struct MfaChallengeRow {
    pub token_hash: Vec<u8>,
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub amr: Vec<String>,
    pub expires_at: Timestamp,
    pub attempts: i32,
}

impl TryFrom<MfaChallengeRow> for MfaChallenge {
    type Error = StoreError;

    fn try_from(row: MfaChallengeRow) -> Result<Self, StoreError> {
        Ok(Self {
            token_hash: row
                .token_hash
                .try_into()
                .map_err(|_| invalid("mfa_challenges", "token_hash"))?,
            user: UserId::from_uuid(row.user_id),
            tenant: TenantId::from_uuid(row.tenant_id),
            amr: row.amr,
            expires_at: row.expires_at,
            attempts: u32::try_from(row.attempts)
                .map_err(|_| invalid("mfa_challenges", "attempts"))?,
        })
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = link_tokens, check_for_backend(Pg))]
pub(crate) struct LinkTokenRow {
    pub hash: Vec<u8>,
    pub kind: String,
    pub email: String,
    pub user_id: Option<Uuid>,
    pub tenant_id: Option<Uuid>,
    pub roles: Vec<String>,
    pub invited_by: Option<Uuid>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
}

impl TryFrom<LinkTokenRow> for LinkToken {
    type Error = StoreError;

    fn try_from(row: LinkTokenRow) -> Result<Self, StoreError> {
        let roles = row
            .roles
            .iter()
            .map(|r| RoleName::parse(r).ok_or_else(|| invalid("link_tokens", "roles")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            hash: row
                .hash
                .try_into()
                .map_err(|_| invalid("link_tokens", "hash"))?,
            kind: LinkKind::parse(&row.kind).ok_or_else(|| invalid("link_tokens", "kind"))?,
            email: Email::parse(&row.email).map_err(|_| invalid("link_tokens", "email"))?,
            user: row.user_id.map(UserId::from_uuid),
            tenant: row.tenant_id.map(TenantId::from_uuid),
            roles,
            invited_by: row.invited_by.map(UserId::from_uuid),
            created_at: row.created_at,
            expires_at: row.expires_at,
            used_at: row.used_at,
        })
    }
}

/// A queued message as a claim returns it. Its bodies hold secret links, so it never prints
/// them (no `Debug`).
#[derive(Queryable, Selectable)]
#[diesel(table_name = mail_outbox, check_for_backend(Pg))]
pub(crate) struct MailRow {
    pub id: Uuid,
    pub recipient: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
    pub created_at: Timestamp,
    pub attempts: i32,
}

impl TryFrom<MailRow> for QueuedMail {
    type Error = StoreError;

    fn try_from(row: MailRow) -> Result<Self, StoreError> {
        Ok(Self {
            message: MailMessage {
                id: MailId(row.id),
                to: Email::parse(&row.recipient)
                    .map_err(|_| invalid("mail_outbox", "recipient"))?,
                subject: row.subject,
                text: row.body_text,
                html: row.body_html,
                created_at: row.created_at,
            },
            attempts: u32::try_from(row.attempts)
                .map_err(|_| invalid("mail_outbox", "attempts"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_row() -> UserRow {
        UserRow {
            id: Uuid::nil(),
            email: "ada@example.com".into(),
            display_name: "Ada".into(),
            password_hash: None,
            status: "active".into(),
            email_verified: true,
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
            metadata: serde_json::json!({}),
        }
    }

    #[test]
    fn bad_stored_values_are_unexpected_and_do_not_echo_the_value() {
        let cases = [
            (
                "email",
                UserRow {
                    email: "not-an-email".into(),
                    ..user_row()
                },
            ),
            (
                "display_name",
                UserRow {
                    display_name: " ".into(),
                    ..user_row()
                },
            ),
            (
                "status",
                UserRow {
                    status: "frozen".into(),
                    ..user_row()
                },
            ),
        ];
        for (column, row) in cases {
            let err = UserRecord::try_from(row).expect_err(column);
            let StoreError::Unexpected(source) = &err else {
                panic!("{column}: {err:?}");
            };
            assert_eq!(
                source.to_string(),
                format!("stored users.{column} is not valid")
            );
        }
        assert!(User::try_from(user_row()).is_ok());
    }

    #[test]
    fn refresh_status_round_trips() {
        for s in [
            RefreshStatus::Live,
            RefreshStatus::Rotated,
            RefreshStatus::Revoked,
        ] {
            assert_eq!(RefreshStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(RefreshStatus::parse("spent"), None);
    }

    #[test]
    fn bad_roles_and_kids_are_unexpected() {
        let m = MembershipRow {
            tenant_id: Uuid::nil(),
            user_id: Uuid::nil(),
            roles: vec!["owner".into(), "Not A Role".into()],
            created_at: Timestamp::UNIX_EPOCH,
        };
        assert!(matches!(
            Membership::try_from(m),
            Err(StoreError::Unexpected(_))
        ));
        let k = SigningKeyRow {
            kid: "bad kid".into(),
            sealed_private_key: vec![],
            created_at: Timestamp::UNIX_EPOCH,
            retired_at: None,
        };
        assert!(matches!(
            StoredKey::try_from(k),
            Err(StoreError::Unexpected(_))
        ));
    }

    #[test]
    fn bad_challenges_are_unexpected() {
        let row = || MfaChallengeRow {
            token_hash: vec![1; 32],
            user_id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            amr: vec!["pwd".into()],
            expires_at: Timestamp::UNIX_EPOCH,
            attempts: 2,
        };
        let good = MfaChallenge::try_from(row()).expect("valid");
        assert_eq!((good.token_hash, good.attempts), ([1; 32], 2));
        for (column, bad) in [
            (
                "token_hash",
                MfaChallengeRow {
                    token_hash: vec![1; 31],
                    ..row()
                },
            ),
            (
                "attempts",
                MfaChallengeRow {
                    attempts: -1,
                    ..row()
                },
            ),
        ] {
            let err = MfaChallenge::try_from(bad).expect_err(column);
            let StoreError::Unexpected(source) = &err else {
                panic!("{column}: {err:?}");
            };
            assert_eq!(
                source.to_string(),
                format!("stored mfa_challenges.{column} is not valid")
            );
        }
    }

    #[test]
    fn bad_link_tokens_and_mail_are_unexpected() {
        let row = || LinkTokenRow {
            hash: vec![7; 32],
            kind: "invite".into(),
            email: "ada@example.com".into(),
            user_id: None,
            tenant_id: Some(Uuid::nil()),
            roles: vec!["owner".into()],
            invited_by: None,
            created_at: Timestamp::UNIX_EPOCH,
            expires_at: Timestamp::UNIX_EPOCH,
            used_at: None,
        };
        let good = LinkToken::try_from(row()).expect("valid");
        assert_eq!((good.hash, good.kind), ([7; 32], LinkKind::Invite));
        for (column, bad) in [
            (
                "hash",
                LinkTokenRow {
                    hash: vec![7; 31],
                    ..row()
                },
            ),
            (
                "kind",
                LinkTokenRow {
                    kind: "other".into(),
                    ..row()
                },
            ),
            (
                "email",
                LinkTokenRow {
                    email: "nope".into(),
                    ..row()
                },
            ),
            (
                "roles",
                LinkTokenRow {
                    roles: vec!["Not A Role".into()],
                    ..row()
                },
            ),
        ] {
            let err = LinkToken::try_from(bad).expect_err(column);
            let StoreError::Unexpected(source) = &err else {
                panic!("{column}: {err:?}");
            };
            assert_eq!(
                source.to_string(),
                format!("stored link_tokens.{column} is not valid")
            );
        }
        let mail = MailRow {
            id: Uuid::nil(),
            recipient: "ada@example.com".into(),
            subject: "s".into(),
            body_text: "t".into(),
            body_html: "h".into(),
            created_at: Timestamp::UNIX_EPOCH,
            attempts: -1,
        };
        assert!(matches!(
            QueuedMail::try_from(mail),
            Err(StoreError::Unexpected(_))
        ));
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = roles, check_for_backend(Pg))]
pub(crate) struct RoleRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
    pub named_at: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl TryFrom<RoleRow> for Role {
    type Error = StoreError;

    fn try_from(row: RoleRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: RoleId::from_uuid(row.id),
            tenant: TenantId::from_uuid(row.tenant_id),
            name: RoleName::parse(&row.name).ok_or_else(|| invalid("roles", "name"))?,
            description: row.description,
            system: None,
            permissions: row
                .permissions
                .iter()
                .map(|p| Permission::parse(p).map_err(|_| invalid("roles", "permissions")))
                .collect::<Result<_, _>>()?,
            named_at: row.named_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = permissions, check_for_backend(Pg))]
pub(crate) struct PermissionRow {
    pub name: String,
    pub description: String,
}

impl TryFrom<PermissionRow> for PermissionDef {
    type Error = StoreError;

    fn try_from(row: PermissionRow) -> Result<Self, StoreError> {
        Ok(Self {
            name: Permission::parse_external(&row.name)
                .map_err(|_| invalid("permissions", "name"))?,
            description: row.description,
            builtin: false,
        })
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = audit_events, check_for_backend(Pg))]
pub(crate) struct AuditRow {
    pub id: Uuid,
    pub at: Timestamp,
    pub actor_user_id: Option<Uuid>,
    pub actor_kind: String,
    pub tenant_id: Uuid,
    pub action: String,
    pub target: String,
    pub request_id: Option<String>,
    pub outcome: String,
}

impl TryFrom<AuditRow> for AuditEvent {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> Result<Self, StoreError> {
        let actor = match (row.actor_kind.as_str(), row.actor_user_id) {
            ("user", Some(id)) => AuditActor::User(UserId::from_uuid(id)),
            ("service", None) => AuditActor::Service,
            _ => return Err(invalid("audit_events", "actor_kind")),
        };
        Ok(Self {
            id: AuditId(row.id),
            at: row.at,
            actor,
            tenant: TenantId::from_uuid(row.tenant_id),
            action: row.action,
            target: row.target,
            request_id: row.request_id,
            outcome: AuditOutcome::parse(&row.outcome)
                .ok_or_else(|| invalid("audit_events", "outcome"))?,
        })
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = claim_definitions, check_for_backend(Pg))]
pub(crate) struct ClaimRow {
    pub name: String,
    pub scope_tenant_id: Option<Uuid>,
    pub descendants: bool,
    pub source: String,
    pub constant_value: Option<serde_json::Value>,
    pub field: Option<String>,
    pub hook_url: Option<String>,
    pub hook_timeout_ms: Option<i32>,
    pub hook_on_failure: Option<String>,
    pub created_at: Timestamp,
}

impl TryFrom<ClaimRow> for iam_domain::claims::ClaimDefinition {
    type Error = StoreError;

    fn try_from(row: ClaimRow) -> Result<Self, StoreError> {
        use iam_domain::claims::{ClaimHook, ClaimName, ClaimScope, ClaimSource, FailurePolicy};
        let bad = |column| invalid("claim_definitions", column);
        let source = match row.source.as_str() {
            "constant" => {
                ClaimSource::Constant(row.constant_value.ok_or_else(|| bad("constant_value"))?)
            }
            "user_metadata" => ClaimSource::UserMetadata(row.field.ok_or_else(|| bad("field"))?),
            "tenant_metadata" => {
                ClaimSource::TenantMetadata(row.field.ok_or_else(|| bad("field"))?)
            }
            "hook" => ClaimSource::Hook(
                ClaimHook::new(
                    row.hook_url.as_deref().ok_or_else(|| bad("hook_url"))?,
                    row.hook_timeout_ms
                        .and_then(|t| u64::try_from(t).ok())
                        .ok_or_else(|| bad("hook_timeout_ms"))?,
                    row.hook_on_failure
                        .as_deref()
                        .and_then(FailurePolicy::parse)
                        .ok_or_else(|| bad("hook_on_failure"))?,
                )
                .map_err(|_| bad("hook_url"))?,
            ),
            _ => return Err(bad("source")),
        };
        Ok(Self {
            name: ClaimName::parse(&row.name).map_err(|_| bad("name"))?,
            scope: match row.scope_tenant_id {
                None => ClaimScope::Platform,
                Some(id) => ClaimScope::Tenant {
                    tenant: TenantId::from_uuid(id),
                    descendants: row.descendants,
                },
            },
            source,
            created_at: row.created_at,
        })
    }
}
