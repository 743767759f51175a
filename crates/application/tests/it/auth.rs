use chrono::Duration;
use iam_application::{AuthError, SignIn, Unauthenticated};
use iam_domain::{
    DisplayName, Email, Membership, Password, RefreshToken, RoleName, Session, SessionId, Tenant,
    TenantId, TenantName, TenantStatus, User, UserId, UserStatus,
};
use iam_ports::{NewRefreshToken, PasswordHasher as _, Store as _, UnitOfWork};

use crate::support::{CLIENT, Harness, PASSWORD, start};

#[tokio::test]
async fn register_then_login_as_owner_of_a_new_tenant() {
    let h = Harness::new().await;
    h.register("ada@example.com").await;
    let pair = h.login("ADA@example.com", PASSWORD).await.expect("login");
    let principal = h
        .auth
        .authenticate(&pair.access_token)
        .await
        .expect("authenticate");
    assert_eq!(principal.roles, vec!["owner"]);
    assert_eq!(principal.tenant, pair.tenant);
    assert_eq!(principal.claims.amr, vec!["pwd"]);
    assert_eq!(pair.expires_in, 900);
    assert_eq!(pair.refresh_expires_in, 7 * 24 * 3600);
    let me = h.auth.me(&principal).await.expect("me");
    assert_eq!(me.user.email.as_str(), "ada@example.com");
    assert_eq!(me.tenant.owner, me.user.id);
    assert_eq!(me.tenant.name.as_str(), "Ada Lovelace");
}

#[tokio::test]
async fn registering_a_taken_email_changes_nothing_and_costs_the_same() {
    let h = Harness::new().await;
    h.register("ada@example.com").await;
    let before = h.stats.hashes();
    h.register("ada@example.com").await;
    assert_eq!(
        h.stats.hashes(),
        before + 1,
        "the existing-email path hashes too"
    );
    let mut uow = h.store.begin().await.expect("begin");
    let user = uow
        .user_by_email(&Email::parse("ada@example.com").expect("email"))
        .await
        .expect("lookup")
        .expect("user");
    assert_eq!(
        uow.memberships_of(user.user.id)
            .await
            .expect("memberships")
            .len(),
        1
    );
}

#[tokio::test]
async fn every_failed_login_path_costs_one_verification() {
    let h = Harness::new().await;
    h.register("ada@example.com").await;
    disabled_user(&h, "eve@example.com").await;
    let cases = [
        ("nobody@example.com", PASSWORD),
        ("ada@example.com", "wrong password entirely"),
        ("eve@example.com", PASSWORD),
    ];
    for (email, password) in cases {
        let before = h.stats.verifications();
        let r = h.login(email, password).await;
        assert!(
            matches!(r, Err(AuthError::InvalidCredentials)),
            "{email}: {r:?}"
        );
        assert_eq!(h.stats.verifications(), before + 1, "{email}");
    }
    let before = h.stats.verifications();
    h.login("ada@example.com", PASSWORD).await.expect("login");
    assert_eq!(h.stats.verifications(), before + 1);
}

/// An account whose password is right but which is disabled.
async fn disabled_user(h: &Harness, email: &str) {
    let hash = h
        .hasher
        .hash(&Password::new(PASSWORD).expect("password"))
        .await
        .expect("hash");
    let user = User {
        status: UserStatus::Disabled,
        ..User::new(
            UserId::new_v7(start(), [0xee; 10]),
            Email::parse(email).expect("email"),
            DisplayName::parse("Eve").expect("name"),
            start(),
        )
    };
    let tenant = Tenant::new_top_level(
        TenantId::new_v7(start(), [0xee; 10]),
        TenantName::parse("Eve's").expect("name"),
        user.id,
        start(),
    );
    let mut uow = h.store.begin().await.expect("begin");
    uow.insert_user(&user, Some(&hash)).await.expect("user");
    uow.insert_tenant(&tenant).await.expect("tenant");
    uow.insert_membership(&Membership {
        tenant: tenant.id,
        user: user.id,
        roles: vec![RoleName::owner()],
        created_at: start(),
    })
    .await
    .expect("membership");
    uow.commit().await.expect("commit");
}

/// Makes the user a member of a new, blocked tenant (joined after their first tenant).
async fn join_blocked_tenant(uow: &mut dyn UnitOfWork, email: &str) -> (User, Tenant) {
    let user = uow
        .user_by_email(&Email::parse(email).expect("email"))
        .await
        .expect("lookup")
        .expect("user")
        .user;
    let blocked = Tenant {
        status: TenantStatus::Blocked,
        ..Tenant::new_top_level(
            TenantId::new_v7(start(), [5; 10]),
            TenantName::parse("Blocked Ltd").expect("name"),
            user.id,
            start(),
        )
    };
    uow.insert_tenant(&blocked).await.expect("tenant");
    uow.insert_membership(&Membership {
        tenant: blocked.id,
        user: user.id,
        roles: vec![RoleName::parse("member").expect("role")],
        created_at: start() + Duration::seconds(1),
    })
    .await
    .expect("membership");
    (user, blocked)
}

#[tokio::test]
async fn tenant_choice_membership_and_blocking() {
    let h = Harness::new().await;
    h.register("ada@example.com").await;
    let mut uow = h.store.begin().await.expect("begin");
    let (_, blocked) = join_blocked_tenant(&mut *uow, "ada@example.com").await;
    uow.commit().await.expect("commit");

    let email = Email::parse("ada@example.com").expect("email");
    let password = iam_domain::Password::presented(PASSWORD).expect("password");
    let r = h
        .auth
        .login(&email, &password, Some(blocked.id), CLIENT)
        .await;
    assert!(matches!(r, Err(AuthError::TenantBlocked)), "{r:?}");
    let stranger = TenantId::new_v7(start(), [6; 10]);
    let r = h
        .auth
        .login(&email, &password, Some(stranger), CLIENT)
        .await;
    assert!(matches!(r, Err(AuthError::NotAMember)), "{r:?}");
    // Without a choice, a user of several tenants is asked to pick one, and nothing is issued.
    let pick = || async {
        match h
            .auth
            .login(&email, &password, None, CLIENT)
            .await
            .expect("first factor")
        {
            SignIn::TenantSelection {
                selection_token,
                tenants,
                expires_in,
            } => {
                assert_eq!(expires_in, 300);
                (selection_token.expose().to_owned(), tenants)
            }
            other => panic!("expected a tenant selection, got {other:?}"),
        }
    };
    let (token, tenants) = pick().await;
    assert_eq!(tenants.len(), 2);
    assert!(!tenants[0].blocked, "the registration tenant first");
    assert!(tenants[1].blocked && tenants[1].tenant.id == blocked.id);
    let own = tenants[0].tenant.id;
    let pair = crate::support::tokens(h.auth.select_tenant(&token, own).await.expect("select"));
    assert_eq!(pair.tenant, own);
    // Single use, and blocked tenants stay closed.
    let r = h.auth.select_tenant(&token, own).await;
    assert!(matches!(r, Err(AuthError::InvalidSelection)), "{r:?}");
    let (token, _) = pick().await;
    let r = h.auth.select_tenant(&token, blocked.id).await;
    assert!(matches!(r, Err(AuthError::TenantBlocked)), "{r:?}");
    let r = h.auth.select_tenant("not-a-token", own).await;
    assert!(matches!(r, Err(AuthError::InvalidSelection)), "{r:?}");
    let (token, _) = pick().await;
    h.clock.advance(Duration::seconds(301));
    let r = h.auth.select_tenant(&token, own).await;
    assert!(
        matches!(r, Err(AuthError::InvalidSelection)),
        "expired: {r:?}"
    );
}

#[tokio::test]
async fn switching_tenant_opens_a_separate_family() {
    let h = Harness::new().await;
    h.register("ada@example.com").await;
    h.register("bob@example.com").await;
    let bob_tenant = h
        .login("bob@example.com", PASSWORD)
        .await
        .expect("bob")
        .tenant;
    let ada = h.login("ada@example.com", PASSWORD).await.expect("ada");
    let principal = h.auth.authenticate(&ada.access_token).await.expect("ada");
    // Not a member of Bob's tenant: refused.
    let r = h.auth.switch_tenant(&principal, bob_tenant).await;
    assert!(matches!(r, Err(AuthError::NotAMember)), "{r:?}");
    // Made one, she switches: new tokens there, in a session of their own.
    {
        let mut uow = h.store.begin().await.expect("begin");
        uow.insert_membership(&Membership {
            tenant: bob_tenant,
            user: principal.user,
            roles: vec![RoleName::parse("member").expect("role")],
            created_at: start() + Duration::seconds(5),
        })
        .await
        .expect("membership");
        uow.commit().await.expect("commit");
    }
    let there = h
        .auth
        .switch_tenant(&principal, bob_tenant)
        .await
        .expect("switch");
    assert_eq!(there.tenant, bob_tenant);
    let p2 = h
        .auth
        .authenticate(&there.access_token)
        .await
        .expect("valid");
    assert_eq!(p2.tenant, bob_tenant);
    assert_ne!(p2.session, principal.session);
    assert_eq!(p2.roles, vec!["member".to_owned()]);
    assert_eq!(p2.claims.amr, principal.claims.amr);
    // Each refresh token stays in its own tenant.
    let a = h
        .auth
        .refresh(ada.refresh_token.expose(), CLIENT)
        .await
        .expect("refresh A");
    assert_eq!(a.tenant, ada.tenant);
    let b = h
        .auth
        .refresh(there.refresh_token.expose(), CLIENT)
        .await
        .expect("refresh B");
    assert_eq!(b.tenant, bob_tenant);
    // The memberships are listed with their standing.
    let listed = h.auth.tenants(&p2).await.expect("tenants");
    assert_eq!(listed.len(), 2);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let h = Harness::new().await;
    h.register("ada@example.com").await;
    let first = h.login("ada@example.com", PASSWORD).await.expect("login");
    let second = h
        .auth
        .refresh(first.refresh_token.expose(), CLIENT)
        .await
        .expect("refresh");
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.tenant, first.tenant);
    h.auth
        .authenticate(&second.access_token)
        .await
        .expect("new access token works");

    let reuse = h.auth.refresh(first.refresh_token.expose(), CLIENT).await;
    assert!(matches!(reuse, Err(AuthError::InvalidGrant)), "{reuse:?}");
    let after = h.auth.refresh(second.refresh_token.expose(), CLIENT).await;
    assert!(
        matches!(after, Err(AuthError::InvalidGrant)),
        "family is revoked: {after:?}"
    );
    let r = h.auth.authenticate(&second.access_token).await;
    assert!(
        matches!(r, Err(AuthError::Unauthenticated(Unauthenticated::Revoked))),
        "{r:?}"
    );
}

#[tokio::test]
async fn malformed_and_unknown_refresh_tokens_are_invalid_grants() {
    let h = Harness::new().await;
    for presented in ["", "short", &"A".repeat(43)] {
        let r = h.auth.refresh(presented, CLIENT).await;
        assert!(
            matches!(r, Err(AuthError::InvalidGrant)),
            "{presented:?}: {r:?}"
        );
    }
}

#[tokio::test]
async fn logout_ends_the_session() {
    let h = Harness::new().await;
    h.register("ada@example.com").await;
    let pair = h.login("ada@example.com", PASSWORD).await.expect("login");
    let principal = h.auth.authenticate(&pair.access_token).await.expect("auth");
    h.auth.logout(&principal).await.expect("logout");
    assert!(matches!(
        h.auth.authenticate(&pair.access_token).await,
        Err(AuthError::Unauthenticated(Unauthenticated::Revoked))
    ));
    assert!(matches!(
        h.auth.refresh(pair.refresh_token.expose(), CLIENT).await,
        Err(AuthError::InvalidGrant)
    ));
}

#[tokio::test]
async fn access_tokens_expire_and_refresh_tokens_outlive_them() {
    let h = Harness::new().await;
    h.register("ada@example.com").await;
    let pair = h.login("ada@example.com", PASSWORD).await.expect("login");
    h.clock.advance(Duration::minutes(15));
    h.auth
        .authenticate(&pair.access_token)
        .await
        .expect("within leeway");
    h.clock.advance(Duration::seconds(31));
    assert!(matches!(
        h.auth.authenticate(&pair.access_token).await,
        Err(AuthError::Unauthenticated(Unauthenticated::Expired))
    ));
    let next = h
        .auth
        .refresh(pair.refresh_token.expose(), CLIENT)
        .await
        .expect("refresh");
    h.auth
        .authenticate(&next.access_token)
        .await
        .expect("fresh token");
    h.clock.advance(Duration::days(7));
    assert!(matches!(
        h.auth.refresh(next.refresh_token.expose(), CLIENT).await,
        Err(AuthError::InvalidGrant)
    ));
}

#[tokio::test]
async fn tampered_tokens_are_refused_with_a_reason() {
    let h = Harness::new().await;
    h.register("ada@example.com").await;
    let pair = h.login("ada@example.com", PASSWORD).await.expect("login");
    // Change one character in the middle of the signature (the last one carries padding bits).
    let mut forged: Vec<char> = pair.access_token.chars().collect();
    let at = forged.len() - 10;
    forged[at] = if forged[at] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let cases = [
        (
            "garbage",
            "not a token".to_owned(),
            Unauthenticated::Malformed,
        ),
        ("forged signature", forged, Unauthenticated::BadSignature),
    ];
    for (name, token, reason) in cases {
        let r = h.auth.authenticate(&token).await;
        assert!(
            matches!(r, Err(AuthError::Unauthenticated(got)) if got == reason),
            "{name}: {r:?}"
        );
    }
}

#[tokio::test]
async fn refresh_is_refused_while_the_tenant_is_blocked_and_spends_nothing() {
    let h = Harness::new().await;
    h.register("ada@example.com").await;
    let mut uow = h.store.begin().await.expect("begin");
    let (ada, blocked) = join_blocked_tenant(&mut *uow, "ada@example.com").await;
    // A session that was opened before the tenant was blocked.
    let token = RefreshToken::from_random([3; 32]);
    let session = Session {
        id: SessionId::new_v7(start(), [7; 10]),
        user: ada.id,
        tenant: blocked.id,
        amr: vec!["pwd".into()],
        auth_time: start(),
        created_at: start(),
        revoked_at: None,
    };
    uow.insert_session(
        &session,
        &NewRefreshToken {
            hash: token.hash(),
            issued_at: start(),
            expires_at: start() + Duration::days(7),
        },
    )
    .await
    .expect("session");
    uow.commit().await.expect("commit");

    let r = h.auth.refresh(token.expose(), CLIENT).await;
    assert!(matches!(r, Err(AuthError::TenantBlocked)), "{r:?}");
    let mut uow = h.store.begin().await.expect("begin");
    let stored = uow
        .session(session.id)
        .await
        .expect("lookup")
        .expect("session");
    assert!(!stored.is_revoked(), "a block ends no session");
    uow.commit().await.expect("commit");
    // Unblocked, the very same token rotates: the refused refresh spent nothing.
    h.tenants
        .set_status(blocked.id, TenantStatus::Active)
        .await
        .expect("unblock");
    h.auth
        .refresh(token.expose(), CLIENT)
        .await
        .expect("refresh after the unblock");
}
