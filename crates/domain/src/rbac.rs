//! Roles and permissions: the catalogue, the system roles every tenant has, and custom roles.
//!
//! System roles (`owner`, `admin`, `member`) are defined here, not stored: every tenant has them,
//! with ids derived from the tenant's id, so they can be neither deleted nor edited and need no
//! rows. Custom roles are the tenant's own and hold any permissions of the catalogue.

use std::collections::BTreeSet;
use std::fmt;

use crate::{RoleId, RoleName, TenantId, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A namespaced permission: two or more dot-separated segments of lower-case ASCII letters,
/// digits, `-` and `_`, starting with a letter (`iam.users.read`, `billing.invoices.write`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Permission(String);

/// Why a permission name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    #[error(
        "a permission is 3 to 128 characters: dot-separated segments of a-z, 0-9, - and _, starting with a letter (e.g. `billing.invoices.read`)"
    )]
    Malformed,
    #[error("the `iam.` namespace is reserved for the IAM service's own permissions")]
    Reserved,
}

impl Permission {
    /// Parses a permission name.
    pub fn parse(s: &str) -> Result<Self, PermissionError> {
        let segment_ok = |seg: &str| {
            seg.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                && seg.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_')
                })
        };
        let ok = (3..=128).contains(&s.len())
            && s.split('.').count() >= 2
            && s.split('.').all(segment_ok);
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(PermissionError::Malformed)
        }
    }

    /// Parses a permission another module registers: well-formed and outside `iam.`.
    pub fn parse_external(s: &str) -> Result<Self, PermissionError> {
        let p = Self::parse(s)?;
        if p.namespace() == IAM_NAMESPACE {
            return Err(PermissionError::Reserved);
        }
        Ok(p)
    }

    /// The first segment: the module that owns the permission.
    pub fn namespace(&self) -> &str {
        self.0.split('.').next().unwrap_or_default()
    }

    /// The permission as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The IAM service's own namespace.
pub const IAM_NAMESPACE: &str = "iam";

/// The IAM service's own permissions and what each allows; fixed in code.
pub const IAM_PERMISSIONS: &[(&str, &str)] = &[
    ("iam.users.read", "List and read the tenant's users"),
    (
        "iam.users.write",
        "Create users and change their name, status and metadata",
    ),
    ("iam.users.delete", "Soft-delete and restore users"),
    ("iam.roles.read", "List and read the tenant's roles"),
    ("iam.roles.write", "Create, change and delete custom roles"),
    (
        "iam.roles.assign",
        "Grant roles to users and take them away",
    ),
    ("iam.permissions.read", "Read the permission catalogue"),
    (
        "iam.permissions.write",
        "Register other modules' permissions (platform root tenant only)",
    ),
    ("iam.invitations.write", "Invite people to the tenant"),
    ("iam.audit.read", "Read the tenant's audit events"),
    ("iam.tenants.read", "Read the tenant and its hierarchy"),
    ("iam.tenants.write", "Change, block and restructure tenants"),
    (
        "iam.tenants.manage-descendants",
        "Administer the tenants below this one",
    ),
    ("iam.claims.read", "Read registered custom claims"),
    ("iam.claims.write", "Register and delete custom claims"),
];

/// Permissions of the system role `admin`: everything of the IAM's but platform-wide changes
/// and the hierarchy above the tenant's own administration.
pub const ADMIN_PERMISSIONS: &[&str] = &[
    "iam.users.read",
    "iam.users.write",
    "iam.users.delete",
    "iam.roles.read",
    "iam.roles.write",
    "iam.roles.assign",
    "iam.permissions.read",
    "iam.invitations.write",
    "iam.audit.read",
    "iam.tenants.read",
    "iam.claims.read",
];

/// An entry of the permission catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionDef {
    pub name: Permission,
    pub description: String,
    /// Defined by the IAM itself (not registered by a module).
    pub builtin: bool,
}

/// Why a description is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("description is longer than 500 characters or contains control characters")]
pub struct DescriptionError;

/// Checks a free-text description: at most 500 characters, no control characters but newlines.
pub fn parse_description(s: &str) -> Result<String, DescriptionError> {
    let s = s.trim();
    if s.chars().count() > 500 || s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(DescriptionError);
    }
    Ok(s.to_owned())
}

impl PermissionDef {
    /// The IAM's own permissions.
    pub fn builtin() -> Vec<Self> {
        IAM_PERMISSIONS
            .iter()
            .map(|(name, description)| Self {
                name: Permission((*name).to_owned()),
                description: (*description).to_owned(),
                builtin: true,
            })
            .collect()
    }
}

/// The system roles every tenant has, in listing order.
pub const SYSTEM_ROLES: [&str; 3] = ["owner", "admin", "member"];

/// What a system role holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemRole {
    /// Every permission of the catalogue, present and future.
    Owner,
    /// The IAM's administrative permissions.
    Admin,
    /// Nothing beyond signing in.
    Member,
}

impl SystemRole {
    /// The system role of that name, if it is one.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "owner" => Some(Self::Owner),
            "admin" => Some(Self::Admin),
            "member" => Some(Self::Member),
            _ => None,
        }
    }

    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Self::Owner => "Holds every permission; the last owner cannot be removed",
            Self::Admin => "Administers the tenant's users, roles and invitations",
            Self::Member => "A member of the tenant",
        }
    }
}

impl RoleId {
    /// The id of a tenant's system role: a UUID v8 from SHA-256 of the tenant and the name, the
    /// same on every instance and every run.
    pub fn system(tenant: TenantId, role: SystemRole) -> Self {
        let mut h = Sha256::new();
        h.update(b"iam-system-role\0");
        h.update(tenant.as_uuid().as_bytes());
        h.update(role.name().as_bytes());
        let digest = h.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self::from_uuid(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }
}

/// What a role grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grants {
    /// Every permission in the catalogue (the owner).
    All,
    /// Exactly these.
    Some(BTreeSet<Permission>),
}

impl Grants {
    /// Whether the permission of this name is granted.
    pub fn allows(&self, permission: &str) -> bool {
        match self {
            Self::All => true,
            Self::Some(set) => set.contains(permission),
        }
    }
}

// Lookups by name: a permission orders and compares exactly as its text.
impl std::borrow::Borrow<str> for Permission {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A role of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub id: RoleId,
    pub tenant: TenantId,
    pub name: RoleName,
    pub description: String,
    /// `Some` for the three system roles, which cannot be changed or deleted.
    pub system: Option<SystemRole>,
    /// For a custom role, the permissions it holds; for a system role, what the code grants.
    pub permissions: BTreeSet<Permission>,
    /// When the role got its current name. A token issued before then that carries the name
    /// meant another role (deleted, or renamed away) and is granted nothing by this one.
    pub named_at: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Role {
    /// The tenant's three system roles, dated with the tenant's creation.
    pub fn system_roles(tenant: TenantId, created_at: Timestamp) -> Vec<Self> {
        [SystemRole::Owner, SystemRole::Admin, SystemRole::Member]
            .into_iter()
            .map(|r| Self::system_role(tenant, r, created_at))
            .collect()
    }

    /// One system role of a tenant.
    pub fn system_role(tenant: TenantId, role: SystemRole, created_at: Timestamp) -> Self {
        let permissions = match role {
            // Listed as the IAM's set; `grants` widens it to the whole catalogue.
            SystemRole::Owner => IAM_PERMISSIONS
                .iter()
                .map(|(p, _)| Permission((*p).to_owned()))
                .collect(),
            SystemRole::Admin => ADMIN_PERMISSIONS
                .iter()
                .map(|p| Permission((*p).to_owned()))
                .collect(),
            SystemRole::Member => BTreeSet::new(),
        };
        Self {
            id: RoleId::system(tenant, role),
            tenant,
            name: RoleName(role.name().to_owned()),
            description: role.description().to_owned(),
            system: Some(role),
            permissions,
            named_at: created_at,
            created_at,
            updated_at: created_at,
        }
    }

    /// What holding this role grants.
    pub fn grants(&self) -> Grants {
        match self.system {
            Some(SystemRole::Owner) => Grants::All,
            _ => Grants::Some(self.permissions.clone()),
        }
    }
}

/// The union of what a set of held roles grants.
pub fn grants_of<'a>(roles: impl IntoIterator<Item = &'a Role>) -> Grants {
    let mut set = BTreeSet::new();
    for role in roles {
        match role.grants() {
            Grants::All => return Grants::All,
            Grants::Some(p) => set.extend(p),
        }
    }
    Grants::Some(set)
}

/// Whether `holder` grants at least everything `wanted` does (no escalation by delegation).
pub fn covers(holder: &Grants, wanted: &Grants) -> bool {
    match (holder, wanted) {
        (Grants::All, _) => true,
        (Grants::Some(_), Grants::All) => false,
        (Grants::Some(h), Grants::Some(w)) => w.is_subset(h),
    }
}

impl RoleName {
    /// The role every member holds by default.
    pub fn member() -> Self {
        Self("member".into())
    }

    /// The administrator's system role (what a former owner keeps after a transfer).
    pub fn admin() -> Self {
        Self("admin".into())
    }

    /// Whether the name is one of the system roles'.
    pub fn is_system(&self) -> bool {
        SystemRole::from_name(self.as_str()).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use uuid::Uuid;

    #[test]
    fn permission_names() {
        for (input, ok) in [
            ("iam.users.read", true),
            ("billing.invoices.write", true),
            ("a-b.c_d9", true),
            ("billing", false),
            ("Billing.read", false),
            ("billing..read", false),
            ("billing.read.", false),
            ("9lives.read", false),
            ("billing.read write", false),
        ] {
            assert_eq!(Permission::parse(input).is_ok(), ok, "{input:?}");
        }
        assert_eq!(
            Permission::parse_external("iam.users.read"),
            Err(PermissionError::Reserved)
        );
        assert!(Permission::parse(&format!("a.{}", "b".repeat(127))).is_err());
    }

    #[test]
    fn builtin_catalogue_is_well_formed_and_admin_is_inside_it() {
        let all: BTreeSet<_> = PermissionDef::builtin()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(all.len(), IAM_PERMISSIONS.len());
        for (p, _) in IAM_PERMISSIONS {
            assert!(Permission::parse(p).is_ok(), "{p}");
        }
        for p in ADMIN_PERMISSIONS {
            assert!(all.contains(&Permission::parse(p).unwrap()), "{p}");
        }
    }

    #[test]
    fn system_roles_have_stable_distinct_ids_and_grants() {
        let now = chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let t1 = TenantId::from_uuid(Uuid::from_u128(1));
        let t2 = TenantId::from_uuid(Uuid::from_u128(2));
        let a = Role::system_roles(t1, now);
        assert_eq!(a, Role::system_roles(t1, now));
        let ids: BTreeSet<_> = a
            .iter()
            .chain(&Role::system_roles(t2, now))
            .map(|r| r.id)
            .collect();
        assert_eq!(ids.len(), 6);
        assert_eq!(a[0].grants(), Grants::All);
        let write = Permission::parse("billing.invoices.write").unwrap();
        assert!(a[0].grants().allows(write.as_str()));
        assert!(!a[1].grants().allows(write.as_str()));
        assert!(a[1].grants().allows("iam.users.read"));
        assert_eq!(a[2].grants(), Grants::Some(BTreeSet::new()));
    }

    #[test]
    fn delegation_never_escalates() {
        let p = |s: &str| Permission::parse(s).unwrap();
        let some = |v: &[&str]| Grants::Some(v.iter().map(|s| p(s)).collect());
        assert!(covers(&Grants::All, &Grants::All));
        assert!(!covers(&some(&["a.b"]), &Grants::All));
        assert!(covers(&some(&["a.b", "a.c"]), &some(&["a.b"])));
        assert!(!covers(&some(&["a.b"]), &some(&["a.b", "a.c"])));
    }

    #[test]
    fn descriptions() {
        assert_eq!(parse_description("  hi \n there ").unwrap(), "hi \n there");
        assert!(parse_description("a\u{7}").is_err());
        assert!(parse_description(&"x".repeat(501)).is_err());
    }
}
