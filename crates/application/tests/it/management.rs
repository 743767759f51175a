//! Users, tenants and the revocation view behind token validation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::Duration;
use iam_application::{
    AdminError, AuthError, NewUser, RevocationView, TenantError, TokenValidator, Unauthenticated,
    UserChanges,
};
use iam_domain::{
    AccessClaims, DisplayName, Email, KeyId, Password, Tenant, TenantId, TenantName, TenantStatus,
    UserStatus,
};
use iam_ports::{KeyMaterial, SignError, Store as _, TokenRejection, TokenSigner, UserFilter};

fn svc() -> iam_application::Actor {
    iam_application::Actor::service(None)
}

use crate::support::{CLIENT, Harness, PASSWORD, policy, start};

async fn owner_tenant(h: &Harness, email: &str) -> TenantId {
    h.register(email).await;
    h.login(email, PASSWORD).await.expect("login").tenant
}

fn new_user(email: &str) -> NewUser {
    NewUser {
        email: Email::parse(email).expect("email"),
        name: DisplayName::parse("Grace").expect("name"),
        password: Some(Password::new(PASSWORD).expect("password")),
        roles: vec![],
        metadata: Default::default(),
    }
}

#[tokio::test]
async fn users_are_created_listed_and_scoped_to_their_tenant() {
    let h = Harness::new().await;
    let t = owner_tenant(&h, "ada@example.com").await;
    let other = owner_tenant(&h, "bob@example.com").await;
    let mut created = Vec::new();
    for n in 0..5 {
        created.push(
            h.users
                .create(&svc(), t, new_user(&format!("u{n}@example.com")))
                .await
                .expect("create"),
        );
    }
    let r = h.users.create(&svc(), t, new_user("u0@example.com")).await;
    assert!(matches!(r, Err(AdminError::EmailTaken)), "{r:?}");
    let r = h
        .users
        .create(
            &svc(),
            TenantId::new_v7(start(), [1; 10]),
            new_user("x@example.com"),
        )
        .await;
    assert!(matches!(r, Err(AdminError::TenantNotFound)), "{r:?}");

    // The new user can sign in, as a member.
    let pair = h.login("u3@example.com", PASSWORD).await.expect("login");
    assert_eq!(pair.tenant, t);
    let principal = h.auth.authenticate(&pair.access_token).await.expect("auth");
    assert_eq!(principal.roles, vec!["member"]);

    let got = h.users.get(&svc(), t, created[1].id).await.expect("get");
    assert_eq!(got.email.as_str(), "u1@example.com");
    let r = h.users.get(&svc(), other, created[1].id).await;
    assert!(
        matches!(r, Err(AdminError::NotFound)),
        "another tenant's user is not found"
    );

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = h
            .users
            .list(&svc(), t, &UserFilter::default(), after, 2)
            .await
            .expect("list");
        assert!(page.users.len() <= 2);
        seen.extend(page.users.iter().map(|u| u.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6, "owner and five members, each once");
}

#[tokio::test]
async fn disabling_deleting_and_restoring_users() {
    let h = Harness::new().await;
    let t = owner_tenant(&h, "ada@example.com").await;
    let grace = h
        .users
        .create(&svc(), t, new_user("grace@example.com"))
        .await
        .expect("create");
    let pair = h.login("grace@example.com", PASSWORD).await.expect("login");

    let renamed = h
        .users
        .update(
            &svc(),
            t,
            grace.id,
            UserChanges {
                metadata: None,
                name: Some(DisplayName::parse("G. Hopper").expect("name")),
                status: None,
            },
        )
        .await
        .expect("rename");
    assert_eq!(renamed.name.as_str(), "G. Hopper");
    h.auth
        .authenticate(&pair.access_token)
        .await
        .expect("a rename changes nothing else");

    h.users
        .update(
            &svc(),
            t,
            grace.id,
            UserChanges {
                metadata: None,
                name: None,
                status: Some(UserStatus::Disabled),
            },
        )
        .await
        .expect("disable");
    let r = h.auth.authenticate(&pair.access_token).await;
    assert!(
        matches!(
            r,
            Err(AuthError::Unauthenticated(Unauthenticated::UserDisabled))
        ),
        "{r:?}"
    );
    assert!(matches!(
        h.auth.refresh(pair.refresh_token.expose(), CLIENT).await,
        Err(AuthError::InvalidGrant)
    ));
    assert!(matches!(
        h.login("grace@example.com", PASSWORD).await,
        Err(AuthError::InvalidCredentials)
    ));

    h.users.delete(&svc(), t, grace.id).await.expect("delete");
    assert_eq!(
        h.users.get(&svc(), t, grace.id).await.expect("kept").status,
        UserStatus::Deleted
    );

    let r = h
        .users
        .update(
            &svc(),
            t,
            grace.id,
            UserChanges {
                metadata: None,
                name: None,
                status: Some(UserStatus::Active),
            },
        )
        .await;
    assert!(matches!(r, Err(AdminError::UserDeleted)), "{r:?}");
    h.users.restore(&svc(), t, grace.id).await.expect("restore");
    let again = h
        .login("grace@example.com", PASSWORD)
        .await
        .expect("signs in again");
    h.auth
        .authenticate(&again.access_token)
        .await
        .expect("new tokens work");
    let r = h.auth.authenticate(&pair.access_token).await;
    assert!(
        matches!(r, Err(AuthError::Unauthenticated(Unauthenticated::Revoked))),
        "sessions ended by the disablement stay ended: {r:?}"
    );
}

#[tokio::test]
async fn blocking_a_tenant_blocks_its_subtree() {
    let h = Harness::new().await;
    let root = owner_tenant(&h, "ada@example.com").await;
    let mut uow = h.store.begin().await.expect("begin");
    let owner = uow
        .tenant(root)
        .await
        .expect("lookup")
        .expect("tenant")
        .owner;
    let child = Tenant {
        parent: Some(root),
        ..Tenant::new_top_level(
            TenantId::new_v7(start(), [2; 10]),
            TenantName::parse("Child").expect("name"),
            owner,
            start(),
        )
    };
    let grandchild = Tenant {
        parent: Some(child.id),
        ..Tenant::new_top_level(
            TenantId::new_v7(start(), [3; 10]),
            TenantName::parse("Grandchild").expect("name"),
            owner,
            start(),
        )
    };
    uow.insert_tenant(&child).await.expect("child");
    uow.insert_tenant(&grandchild).await.expect("grandchild");
    uow.commit().await.expect("commit");

    assert!(
        h.tenants
            .is_descendant(root, grandchild.id)
            .await
            .expect("q")
    );
    assert!(
        h.tenants
            .is_descendant(child.id, grandchild.id)
            .await
            .expect("q")
    );
    assert!(
        !h.tenants
            .is_descendant(grandchild.id, root)
            .await
            .expect("q")
    );
    assert!(
        !h.tenants.is_descendant(root, root).await.expect("q"),
        "strictly below"
    );

    let pair = h.login("ada@example.com", PASSWORD).await.expect("login");
    h.tenants
        .set_status(child.id, TenantStatus::Blocked)
        .await
        .expect("block");
    let standing = h.tenants.standing(grandchild.id).await.expect("standing");
    assert_eq!(standing.tenant.status, TenantStatus::Active);
    assert_eq!(
        (standing.effective, standing.blocked_by),
        (TenantStatus::Blocked, Some(child.id))
    );
    assert_eq!(
        h.tenants.standing(root).await.expect("standing").effective,
        TenantStatus::Active
    );
    assert!(h.view.tenant_blocked(grandchild.id) && !h.view.tenant_blocked(root));
    h.auth
        .authenticate(&pair.access_token)
        .await
        .expect("the root is not blocked");

    h.tenants
        .set_status(root, TenantStatus::Blocked)
        .await
        .expect("block root");
    let r = h.auth.authenticate(&pair.access_token).await;
    assert!(
        matches!(
            r,
            Err(AuthError::Unauthenticated(Unauthenticated::TenantBlocked))
        ),
        "{r:?}"
    );
    h.tenants
        .set_status(root, TenantStatus::Active)
        .await
        .expect("unblock");
    h.auth
        .authenticate(&pair.access_token)
        .await
        .expect("unblocking restores access");

    let r = h
        .tenants
        .set_status(TenantId::new_v7(start(), [9; 10]), TenantStatus::Blocked)
        .await;
    assert!(matches!(r, Err(TenantError::NotFound)), "{r:?}");
}

/// The real signer, counting verifications: proves the cache spares them.
struct Counting<S>(S, AtomicUsize);

impl<S: TokenSigner> TokenSigner for Counting<S> {
    fn generate(&self, kid: KeyId) -> Result<KeyMaterial, SignError> {
        self.0.generate(kid)
    }
    fn install(&self, keys: &[KeyMaterial], active: &KeyId) -> Result<(), SignError> {
        self.0.install(keys, active)
    }
    fn sign(&self, claims: &AccessClaims) -> Result<String, SignError> {
        self.0.sign(claims)
    }
    fn verify(&self, token: &str) -> Result<AccessClaims, TokenRejection> {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0.verify(token)
    }
    fn jwks(&self) -> serde_json::Value {
        self.0.jwks()
    }
    fn knows(&self, kid: &KeyId) -> bool {
        self.0.knows(kid)
    }
}

#[tokio::test]
async fn the_cache_spares_signature_checks_but_never_revocation_checks() {
    let h = Harness::new().await;
    h.register("ada@example.com").await;
    let pair = h.login("ada@example.com", PASSWORD).await.expect("login");
    let signer = Arc::new(Counting(
        iam_adapters_crypto::EcdsaSigner::new(),
        AtomicUsize::new(0),
    ));
    let keys = Arc::new(iam_application::KeyService::new(
        h.key_store.clone(),
        Arc::new(iam_adapters_crypto::AesGcmSealer::from_bytes(&[42; 32]).expect("sealer")),
        signer.clone(),
        h.clock.clone(),
        Arc::new(iam_adapters_crypto::OsRandom),
        policy().access_ttl,
    ));
    keys.reload().await.expect("keys");
    let view = Arc::new(RevocationView::new(
        Arc::new(h.store.clone()),
        h.clock.clone(),
        policy().access_ttl,
    ));
    let validator = TokenValidator::new(
        signer.clone(),
        keys,
        policy(),
        h.clock.clone(),
        view.clone(),
        100,
    );

    for _ in 0..5 {
        validator.validate(&pair.access_token).await.expect("valid");
    }
    assert_eq!(
        signer.1.load(Ordering::Relaxed),
        1,
        "one ECDSA verification for five validations"
    );
    // Garbage is refused before any ECDSA work, and not worth a cache entry.
    for _ in 0..3 {
        assert_eq!(
            validator.validate("a.b.c").await.err(),
            Some(Unauthenticated::Malformed)
        );
    }
    assert_eq!(signer.1.load(Ordering::Relaxed), 4);

    // Revocation and expiry are checked on every hit.
    view.apply(iam_ports::RevocationEvent::SessionRevoked(
        h.auth
            .authenticate(&pair.access_token)
            .await
            .expect("auth")
            .session,
    ))
    .await
    .expect("apply");
    assert_eq!(
        validator.validate(&pair.access_token).await.err(),
        Some(Unauthenticated::Revoked)
    );
    let fresh = h.login("ada@example.com", PASSWORD).await.expect("login");
    validator
        .validate(&fresh.access_token)
        .await
        .expect("valid");
    h.clock.advance(Duration::minutes(16));
    assert_eq!(
        validator.validate(&fresh.access_token).await.err(),
        Some(Unauthenticated::Expired)
    );
    assert_eq!(
        signer.1.load(Ordering::Relaxed),
        5,
        "one more, for the fresh token"
    );
}

#[tokio::test]
async fn a_following_view_hears_other_units_commits() {
    let h = Harness::new().await;
    h.register("ada@example.com").await;
    let pair = h.login("ada@example.com", PASSWORD).await.expect("login");
    let principal = h.auth.authenticate(&pair.access_token).await.expect("auth");
    // A second view over the same store, as another instance would have.
    let other = Arc::new(RevocationView::new(
        Arc::new(h.store.clone()),
        h.clock.clone(),
        policy().access_ttl,
    ));
    let follower = tokio::spawn({
        let other = other.clone();
        async move { other.follow().await }
    });
    // The snapshot is taken after subscribing; wait until it has been (bounded).
    other.refresh().await.expect("refresh");
    h.auth.logout(&principal).await.expect("logout");
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while other
            .check(principal.session, principal.user, principal.tenant)
            .is_ok()
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the other view hears the logout");
    assert_eq!(
        other.check(principal.session, principal.user, principal.tenant),
        Err(Unauthenticated::Revoked)
    );
    follower.abort();
}
