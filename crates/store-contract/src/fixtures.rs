//! Values the contract's cases are built from, for adapters' own tests too.

use chrono::{Duration, TimeZone};
use iam_domain::{
    DisplayName, Email, PasswordHash, RefreshToken, Session, SessionId, Tenant, TenantId,
    TenantName, Timestamp, User, UserId,
};
use iam_ports::NewRefreshToken;

/// A fixed instant all fixtures are made at.
pub fn t0() -> Timestamp {
    chrono::Utc
        .timestamp_opt(1_800_000_000, 0)
        .single()
        .expect("valid time")
}

/// User number `n`, active, `user{n}@example.com`.
pub fn user(n: u8) -> User {
    User::new(
        UserId::new_v7(t0(), [n; 10]),
        Email::parse(&format!("user{n}@example.com")).expect("valid email"),
        DisplayName::parse(&format!("User {n}")).expect("valid name"),
        t0(),
    )
}

/// Tenant number `n`, top-level, owned by `owner`.
pub fn tenant(n: u8, owner: &User) -> Tenant {
    Tenant::new_top_level(
        TenantId::new_v7(t0(), [n; 10]),
        TenantName::parse(&format!("Tenant {n}")).expect("valid name"),
        owner.id,
        t0(),
    )
}

/// Tenant number `n`, a child of `parent`, owned by `owner`.
pub fn child(n: u8, parent: &Tenant, owner: &User) -> Tenant {
    Tenant {
        parent: Some(parent.id),
        ..tenant(n, owner)
    }
}

/// Session number `n` of `user` in `tenant`, by password, started at [`t0`].
pub fn new_session(n: u8, user: &User, tenant: &Tenant) -> Session {
    Session {
        id: SessionId::new_v7(t0(), [n; 10]),
        user: user.id,
        tenant: tenant.id,
        amr: vec!["pwd".into()],
        auth_time: t0(),
        created_at: t0(),
        revoked_at: None,
    }
}

/// Custom role number `n` of tenant `t`, named `name`, granting `perms`.
pub fn custom_role(t: &Tenant, n: u8, name: &str, perms: &[&str]) -> iam_domain::Role {
    iam_domain::Role {
        id: iam_domain::RoleId::new_v7(t0(), [n; 10]),
        tenant: t.id,
        name: iam_domain::RoleName::parse(name).expect("role name"),
        description: format!("role {n}"),
        system: None,
        permissions: perms
            .iter()
            .map(|p| iam_domain::Permission::parse(p).expect("permission"))
            .collect(),
        named_at: t0(),
        created_at: t0(),
        updated_at: t0(),
    }
}

/// A syntactically valid PHC string (no known password).
pub fn hash() -> PasswordHash {
    PasswordHash::from_phc("$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into())
}

/// Refresh token number `n`, to be stored as issued at `at`.
pub fn refresh(n: u8, at: Timestamp) -> (RefreshToken, NewRefreshToken) {
    let token = RefreshToken::from_random([n; 32]);
    let new = NewRefreshToken {
        hash: token.hash(),
        issued_at: at,
        expires_at: at + Duration::days(7),
    };
    (token, new)
}

/// Makes `user` (inserted here) a member of `tenant` with no roles, inside `uow`.
pub async fn add_member(uow: &mut dyn iam_ports::UnitOfWork, tenant: &Tenant, user: &User) {
    uow.insert_user(user, None).await.expect("user");
    uow.insert_membership(&iam_domain::Membership {
        tenant: tenant.id,
        user: user.id,
        roles: vec![],
        created_at: t0(),
    })
    .await
    .expect("membership");
}
