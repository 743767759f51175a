//! The contract's cases. Each starts from an empty store.

use chrono::Duration;
use iam_domain::{
    DisplayName, Email, KeyId, LinkKind, LinkToken, MailId, MailMessage, Membership, MfaChallenge,
    MfaEnrolment, PasswordHash, RefreshToken, RoleName, Session, SessionId, StoredRecoveryCode,
    Tenant, TenantStatus, Timestamp, User, UserId, UserStatus,
};
use iam_ports::{
    FeedMessage, NewRefreshToken, Refreshed, RevocationEvent, Rotation, StoreError, StoredKey,
    UserFilter,
};

use crate::Fixture;
use crate::fixtures::{
    add_member, child, custom_role, hash, new_session, refresh, t0, tenant, user,
};

/// A user, a tenant and a membership, committed.
async fn seed(f: &Fixture) -> (User, Tenant) {
    let (u, t) = (user(1), tenant(1, &user(1)));
    let mut uow = f.store.begin().await.expect("begin");
    uow.insert_user(&u, Some(&hash())).await.expect("user");
    uow.insert_tenant(&t).await.expect("tenant");
    uow.insert_membership(&Membership {
        tenant: t.id,
        user: u.id,
        roles: vec![RoleName::owner()],
        created_at: t0(),
    })
    .await
    .expect("membership");
    uow.commit().await.expect("commit");
    (u, t)
}

/// A committed session whose first refresh token is `first`.
async fn session(f: &Fixture, u: &User, t: &Tenant, first: &NewRefreshToken) -> Session {
    let s = new_session(9, u, t);
    let mut uow = f.store.begin().await.expect("begin");
    uow.insert_session(&s, first).await.expect("session");
    uow.commit().await.expect("commit");
    s
}

async fn rotate(f: &Fixture, presented: &RefreshToken, next: &NewRefreshToken) -> Rotation {
    let mut uow = f.store.begin().await.expect("begin");
    let r = uow
        .rotate_refresh(&presented.hash(), next)
        .await
        .expect("rotate");
    uow.commit().await.expect("commit");
    r
}

pub async fn users_round_trip(f: &Fixture) {
    let u = user(1);
    let mut uow = f.store.begin().await.expect("begin");
    uow.insert_user(&u, Some(&hash())).await.expect("insert");
    uow.commit().await.expect("commit");

    let mut uow = f.store.begin().await.expect("begin");
    let by_email = uow.user_by_email(&u.email).await.expect("by email");
    let by_email = by_email.expect("found by email");
    assert_eq!(by_email.user, u);
    assert_eq!(
        by_email.password_hash.as_ref().map(PasswordHash::as_str),
        Some(hash().as_str())
    );
    assert_eq!(uow.user_by_id(u.id).await.expect("by id"), Some(u.clone()));
    assert_eq!(uow.user_by_id(user(2).id).await.expect("by id"), None);
    let other = Email::parse("nobody@example.com").expect("email");
    assert!(uow.user_by_email(&other).await.expect("lookup").is_none());
    uow.commit().await.expect("commit");
}

pub async fn duplicate_email_conflicts(f: &Fixture) {
    let u = user(1);
    let mut uow = f.store.begin().await.expect("begin");
    uow.insert_user(&u, None).await.expect("insert");
    uow.commit().await.expect("commit");

    let mut twin = user(2);
    twin.email = Email::parse("USER1@example.com").expect("email");
    let mut uow = f.store.begin().await.expect("begin");
    let r = uow.insert_user(&twin, None).await;
    assert!(matches!(r, Err(StoreError::Conflict("email"))), "{r:?}");
    drop(uow);

    let mut uow = f.store.begin().await.expect("begin");
    assert!(uow.user_by_id(twin.id).await.expect("lookup").is_none());
    uow.commit().await.expect("commit");
}

pub async fn dropped_unit_rolls_back(f: &Fixture) {
    let (u, t) = (user(1), tenant(1, &user(1)));
    {
        let mut uow = f.store.begin().await.expect("begin");
        uow.insert_user(&u, None).await.expect("user");
        uow.insert_tenant(&t).await.expect("tenant");
        // Dropped without commit.
    }
    let mut uow = f.store.begin().await.expect("begin after drop");
    assert!(uow.user_by_email(&u.email).await.expect("lookup").is_none());
    assert!(uow.tenant(t.id).await.expect("lookup").is_none());
    uow.commit().await.expect("commit");
}

pub async fn explicit_rollback_discards(f: &Fixture) {
    let u = user(1);
    let mut uow = f.store.begin().await.expect("begin");
    uow.insert_user(&u, None).await.expect("user");
    uow.rollback().await.expect("rollback");
    let mut uow = f.store.begin().await.expect("begin");
    assert!(uow.user_by_id(u.id).await.expect("lookup").is_none());
    uow.commit().await.expect("commit");
}

pub async fn tenants_and_memberships(f: &Fixture) {
    let (u, t1) = seed(f).await;
    let t2 = Tenant {
        created_at: t0() + Duration::seconds(5),
        ..tenant(2, &u)
    };
    let mut uow = f.store.begin().await.expect("begin");
    uow.insert_tenant(&t2).await.expect("tenant 2");
    uow.insert_membership(&Membership {
        tenant: t2.id,
        user: u.id,
        roles: vec![RoleName::parse("member").expect("role")],
        created_at: t0() + Duration::seconds(5),
    })
    .await
    .expect("membership 2");
    let dup = uow
        .insert_membership(&Membership {
            tenant: t2.id,
            user: u.id,
            roles: vec![],
            created_at: t0(),
        })
        .await;
    assert!(
        matches!(dup, Err(StoreError::Conflict("membership"))),
        "{dup:?}"
    );
    drop(uow);

    // The duplicate poisoned that unit; it rolled back whole, so tenant 2 is gone too.
    let mut uow = f.store.begin().await.expect("begin");
    assert!(uow.tenant(t2.id).await.expect("lookup").is_none());
    uow.insert_tenant(&t2).await.expect("tenant 2");
    uow.insert_membership(&Membership {
        tenant: t2.id,
        user: u.id,
        roles: vec![RoleName::parse("member").expect("role")],
        created_at: t0() + Duration::seconds(5),
    })
    .await
    .expect("membership 2");
    uow.commit().await.expect("commit");

    let mut uow = f.store.begin().await.expect("begin");
    assert_eq!(uow.tenant(t1.id).await.expect("lookup"), Some(t1.clone()));
    let all = uow.memberships_of(u.id).await.expect("memberships");
    let tenants: Vec<_> = all.iter().map(|m| m.tenant).collect();
    assert_eq!(tenants, vec![t1.id, t2.id], "oldest first");
    assert_eq!(all[0].roles, vec![RoleName::owner()]);
    let one = uow.membership(u.id, t2.id).await.expect("membership");
    assert_eq!(
        one.map(|m| m.roles),
        Some(vec![RoleName::parse("member").expect("role")])
    );
    assert!(
        uow.membership(user(3).id, t1.id)
            .await
            .expect("lookup")
            .is_none()
    );
    uow.commit().await.expect("commit");
}

pub async fn rotation_spends_the_presented_token(f: &Fixture) {
    let (u, t) = seed(f).await;
    let (first, first_new) = refresh(1, t0());
    let s = session(f, &u, &t, &first_new).await;
    let (second, second_new) = refresh(2, t0() + Duration::minutes(1));
    assert_eq!(
        rotate(f, &first, &second_new).await,
        Rotation::Rotated(s.clone())
    );
    let (_, third_new) = refresh(3, t0() + Duration::minutes(2));
    assert_eq!(rotate(f, &second, &third_new).await, Rotation::Rotated(s));
}

pub async fn reuse_revokes_the_family(f: &Fixture) {
    let (u, t) = seed(f).await;
    let (first, first_new) = refresh(1, t0());
    let s = session(f, &u, &t, &first_new).await;
    let (second, second_new) = refresh(2, t0() + Duration::minutes(1));
    assert!(matches!(
        rotate(f, &first, &second_new).await,
        Rotation::Rotated(_)
    ));

    // The spent token comes back: the family dies, including the live second token.
    let (_, attacker_new) = refresh(3, t0() + Duration::minutes(2));
    assert_eq!(
        rotate(f, &first, &attacker_new).await,
        Rotation::Reused(s.id)
    );
    let (_, victim_new) = refresh(4, t0() + Duration::minutes(3));
    assert_eq!(
        rotate(f, &second, &victim_new).await,
        Rotation::Reused(s.id)
    );

    let mut uow = f.store.begin().await.expect("begin");
    let stored = uow.session(s.id).await.expect("session").expect("exists");
    assert_eq!(stored.revoked_at, Some(t0() + Duration::minutes(2)));
    uow.commit().await.expect("commit");
}

pub async fn expired_and_unknown_tokens(f: &Fixture) {
    let (u, t) = seed(f).await;
    let (first, first_new) = refresh(1, t0());
    session(f, &u, &t, &first_new).await;
    let (_, late) = refresh(2, t0() + Duration::days(7));
    assert_eq!(rotate(f, &first, &late).await, Rotation::Expired);
    let (never, _) = refresh(5, t0());
    let (_, next) = refresh(6, t0());
    assert_eq!(rotate(f, &never, &next).await, Rotation::Unknown);
    // Expiry is not reuse: the session is not revoked by it.
    let (_, in_time) = refresh(7, t0() + Duration::days(7) - Duration::seconds(1));
    assert!(matches!(
        rotate(f, &first, &in_time).await,
        Rotation::Rotated(_)
    ));
}

pub async fn rolled_back_rotation_leaves_token_live(f: &Fixture) {
    let (u, t) = seed(f).await;
    let (first, first_new) = refresh(1, t0());
    session(f, &u, &t, &first_new).await;
    let (_, second_new) = refresh(2, t0());
    let mut uow = f.store.begin().await.expect("begin");
    let r = uow
        .rotate_refresh(&first.hash(), &second_new)
        .await
        .expect("rotate");
    assert!(matches!(r, Rotation::Rotated(_)));
    uow.rollback().await.expect("rollback");
    let (_, third_new) = refresh(3, t0());
    assert!(matches!(
        rotate(f, &first, &third_new).await,
        Rotation::Rotated(_)
    ));
}

pub async fn concurrent_rotations_have_one_winner(f: &Fixture) {
    let (u, t) = seed(f).await;
    let (first, first_new) = refresh(1, t0());
    let s = session(f, &u, &t, &first_new).await;
    let mut tasks = Vec::new();
    for n in 0..8u8 {
        let store = f.store.clone();
        let presented = first.hash();
        let (_, next) = refresh(10 + n, t0() + Duration::seconds(1));
        tasks.push(tokio::spawn(async move {
            let mut uow = store.begin().await.expect("begin");
            let r = uow.rotate_refresh(&presented, &next).await.expect("rotate");
            uow.commit().await.expect("commit");
            r
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task"));
    }
    let winners = outcomes
        .iter()
        .filter(|r| matches!(r, Rotation::Rotated(_)))
        .count();
    assert_eq!(winners, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|r| matches!(r, Rotation::Rotated(_)) || *r == Rotation::Reused(s.id))
    );
}

pub async fn revoking_a_session(f: &Fixture) {
    let (u, t) = seed(f).await;
    let (first, first_new) = refresh(1, t0());
    let s = session(f, &u, &t, &first_new).await;
    let mut uow = f.store.begin().await.expect("begin");
    assert!(uow.revoke_session(s.id, t0()).await.expect("revoke"));
    assert!(!uow.revoke_session(s.id, t0()).await.expect("revoke again"));
    assert!(
        !uow.revoke_session(SessionId::new_v7(t0(), [7; 10]), t0())
            .await
            .expect("unknown")
    );
    uow.commit().await.expect("commit");
    let (_, next) = refresh(2, t0());
    assert_eq!(rotate(f, &first, &next).await, Rotation::Reused(s.id));
}

pub async fn key_rotation_retires_and_purges(f: &Fixture) {
    let key = |kid: &str, at: Timestamp| StoredKey {
        kid: KeyId::parse(kid).expect("kid"),
        sealed_private_key: vec![1, 2, 3],
        created_at: at,
        retired_at: None,
    };
    assert!(f.keys.keys().await.expect("keys").is_empty());
    f.keys.activate(key("k1", t0())).await.expect("k1");
    f.keys
        .activate(key("k2", t0() + Duration::hours(1)))
        .await
        .expect("k2");
    let dup = f.keys.activate(key("k2", t0())).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))));
    let keys = f.keys.keys().await.expect("keys");
    let summary: Vec<_> = keys
        .iter()
        .map(|k| {
            (
                k.kid.as_str().to_owned(),
                k.retired_at,
                k.sealed_private_key.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "k1".to_owned(),
                Some(t0() + Duration::hours(1)),
                vec![1, 2, 3]
            ),
            ("k2".to_owned(), None, vec![1, 2, 3]),
        ]
    );
    assert_eq!(f.keys.purge_retired_before(t0()).await.expect("purge"), 0);
    assert_eq!(
        f.keys
            .purge_retired_before(t0() + Duration::hours(2))
            .await
            .expect("purge"),
        1
    );
    let left: Vec<_> = f
        .keys
        .keys()
        .await
        .expect("keys")
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(left, vec![KeyId::parse("k2").expect("kid")]);
}

/// Adds users `ns` (besides the seeded user 1) as members of `t`.
async fn add_members(f: &Fixture, t: &Tenant, ns: &[u8]) -> Vec<User> {
    let mut uow = f.store.begin().await.expect("begin");
    let mut out = Vec::new();
    for &n in ns {
        out.push(add_members_in(&mut *uow, t, n).await);
    }
    uow.commit().await.expect("commit");
    out
}

pub async fn users_update_and_list_by_tenant(f: &Fixture) {
    let (u1, t1) = seed(f).await;
    let mut members = vec![u1.clone()];
    members.extend(add_members(f, &t1, &[2, 3, 4, 5]).await);
    // A user outside the tenant is never listed.
    let outsider = user(9);
    let mut uow = f.store.begin().await.expect("begin");
    uow.insert_user(&outsider, None).await.expect("user");
    let mut disabled = members[2].clone();
    disabled.status = UserStatus::Disabled;
    disabled.name = DisplayName::parse("Renamed").expect("name");
    disabled.updated_at = t0() + Duration::minutes(1);
    assert!(uow.update_user(&disabled).await.expect("update"));
    assert!(!uow.update_user(&user(77)).await.expect("update unknown"));
    uow.commit().await.expect("commit");

    let mut uow = f.store.begin().await.expect("begin");
    assert_eq!(
        uow.user_by_id(disabled.id).await.expect("lookup"),
        Some(disabled.clone())
    );
    let all = UserFilter::default();
    let page1 = uow
        .list_members(t1.id, &all, None, 2)
        .await
        .expect("page 1");
    let page2 = uow
        .list_members(t1.id, &all, page1.last().map(|u| u.id), 2)
        .await
        .expect("page 2");
    let page3 = uow
        .list_members(t1.id, &all, page2.last().map(|u| u.id), 2)
        .await
        .expect("page 3");
    let listed: Vec<UserId> = [page1, page2, page3]
        .concat()
        .iter()
        .map(|u| u.id)
        .collect();
    let mut expected: Vec<UserId> = members.iter().map(|u| u.id).collect();
    expected.sort();
    assert_eq!(listed, expected, "every member once, in id order");

    let only_disabled = UserFilter {
        status: Some(UserStatus::Disabled),
        ..UserFilter::default()
    };
    let found = uow
        .list_members(t1.id, &only_disabled, None, 10)
        .await
        .expect("filter");
    assert_eq!(found, vec![disabled.clone()]);
    let prefix = UserFilter {
        email_prefix: Some("user4@".into()),
        ..UserFilter::default()
    };
    let found = uow
        .list_members(t1.id, &prefix, None, 10)
        .await
        .expect("prefix");
    assert_eq!(
        found.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![members[3].id]
    );
    uow.commit().await.expect("commit");
}

pub async fn tenant_status_and_ancestors(f: &Fixture) {
    let (u, root) = seed(f).await;
    let child = Tenant {
        parent: Some(root.id),
        ..tenant(2, &u)
    };
    let grandchild = Tenant {
        parent: Some(child.id),
        ..tenant(3, &u)
    };
    let mut uow = f.store.begin().await.expect("begin");
    uow.insert_tenant(&child).await.expect("child");
    uow.insert_tenant(&grandchild).await.expect("grandchild");
    uow.commit().await.expect("commit");

    let mut uow = f.store.begin().await.expect("begin");
    assert_eq!(
        uow.ancestors(grandchild.id).await.expect("a"),
        vec![child.id, root.id]
    );
    assert_eq!(uow.ancestors(child.id).await.expect("a"), vec![root.id]);
    assert!(uow.ancestors(root.id).await.expect("a").is_empty());
    assert!(uow.ancestors(tenant(8, &u).id).await.expect("a").is_empty());
    let at = t0() + Duration::hours(1);
    assert!(
        uow.set_tenant_status(child.id, TenantStatus::Blocked, at)
            .await
            .expect("block")
    );
    assert!(
        !uow.set_tenant_status(tenant(8, &u).id, TenantStatus::Blocked, at)
            .await
            .expect("unknown")
    );
    uow.commit().await.expect("commit");
    let mut uow = f.store.begin().await.expect("begin");
    let stored = uow.tenant(child.id).await.expect("lookup").expect("tenant");
    assert_eq!(
        (stored.status, stored.updated_at),
        (TenantStatus::Blocked, at)
    );
    uow.commit().await.expect("commit");
}

pub async fn revoking_all_sessions_of_a_user(f: &Fixture) {
    let (u, t) = seed(f).await;
    let mut sessions = Vec::new();
    let mut uow = f.store.begin().await.expect("begin");
    for n in 0..3u8 {
        let s = new_session(n, &u, &t);
        uow.insert_session(&s, &refresh(n, t0()).1)
            .await
            .expect("session");
        sessions.push(s);
    }
    assert!(
        uow.revoke_session(sessions[0].id, t0())
            .await
            .expect("revoke")
    );
    let kept = uow
        .revoke_user_sessions(u.id, Some(sessions[1].id), t0())
        .await
        .expect("revoke all but one");
    assert_eq!(
        kept,
        vec![sessions[2].id],
        "only live ones, and not the one kept"
    );
    let revoked = uow
        .revoke_user_sessions(u.id, None, t0())
        .await
        .expect("revoke all");
    assert_eq!(revoked, vec![sessions[1].id]);
    assert!(
        uow.revoke_user_sessions(u.id, None, t0())
            .await
            .expect("again")
            .is_empty()
    );
    uow.commit().await.expect("commit");
    let (_, next) = refresh(9, t0());
    assert_eq!(
        rotate(f, &refresh(2, t0()).0, &next).await,
        Rotation::Reused(sessions[2].id)
    );
}

async fn next_message(
    stream: &mut futures::stream::BoxStream<'static, FeedMessage>,
) -> FeedMessage {
    use futures::StreamExt as _;
    tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("an event within 5 s")
        .expect("the feed never ends")
}

pub async fn feed_publishes_committed_revocations_only(f: &Fixture) {
    let (u, t) = seed(f).await;
    let first = session(f, &u, &t, &refresh(1, t0()).1).await;
    let mut stream = f.feed.subscribe().await.expect("subscribe");

    // Rolled back: nothing is published.
    let mut uow = f.store.begin().await.expect("begin");
    assert!(uow.revoke_session(first.id, t0()).await.expect("revoke"));
    assert!(
        uow.set_tenant_status(t.id, TenantStatus::Blocked, t0())
            .await
            .expect("block")
    );
    uow.rollback().await.expect("rollback");

    // Committed: published, in order.
    let mut uow = f.store.begin().await.expect("begin");
    let mut disabled = u.clone();
    disabled.status = UserStatus::Disabled;
    assert!(uow.update_user(&disabled).await.expect("disable"));
    uow.commit().await.expect("commit");
    assert_eq!(
        next_message(&mut stream).await,
        FeedMessage::Event(RevocationEvent::UserStatus(u.id, UserStatus::Disabled))
    );
    let mut uow = f.store.begin().await.expect("begin");
    assert!(
        uow.set_tenant_status(t.id, TenantStatus::Blocked, t0())
            .await
            .expect("block")
    );
    uow.commit().await.expect("commit");
    assert_eq!(
        next_message(&mut stream).await,
        FeedMessage::Event(RevocationEvent::TenantStatus(t.id))
    );

    // A reuse revokes the family, which is published like a logout.
    let (_, next) = refresh(2, t0());
    assert!(matches!(
        rotate(f, &refresh(1, t0()).0, &next).await,
        Rotation::Rotated(_)
    ));
    let (_, again) = refresh(3, t0());
    assert_eq!(
        rotate(f, &refresh(1, t0()).0, &again).await,
        Rotation::Reused(first.id)
    );
    assert_eq!(
        next_message(&mut stream).await,
        FeedMessage::Event(RevocationEvent::SessionRevoked(first.id))
    );
}

pub async fn snapshot_reflects_revocations(f: &Fixture) {
    let (u, root) = seed(f).await;
    let child = Tenant {
        parent: Some(root.id),
        ..tenant(2, &u)
    };
    let other = tenant(3, &u);
    let s = session(f, &u, &root, &refresh(1, t0()).1).await;
    let mut uow = f.store.begin().await.expect("begin");
    uow.insert_tenant(&child).await.expect("child");
    uow.insert_tenant(&other).await.expect("other");
    assert!(
        uow.set_tenant_status(root.id, TenantStatus::Blocked, t0())
            .await
            .expect("block")
    );
    let revoked_at = t0() + Duration::minutes(5);
    assert!(uow.revoke_session(s.id, revoked_at).await.expect("revoke"));
    let mut deleted = add_members_in(&mut *uow, &root, 4).await;
    deleted.status = UserStatus::Deleted;
    assert!(uow.update_user(&deleted).await.expect("delete"));
    uow.commit().await.expect("commit");

    let snap = f.feed.snapshot(revoked_at).await.expect("snapshot");
    assert_eq!(snap.revoked_sessions, vec![s.id]);
    assert_eq!(snap.inactive_users, vec![(deleted.id, UserStatus::Deleted)]);
    let mut blocked = snap.blocked_tenants.clone();
    blocked.sort();
    let mut expected = vec![root.id, child.id];
    expected.sort();
    assert_eq!(
        blocked, expected,
        "a blocked tenant blocks its subtree, not its neighbours"
    );
    let later = f
        .feed
        .snapshot(revoked_at + Duration::seconds(1))
        .await
        .expect("snapshot");
    assert!(
        later.revoked_sessions.is_empty(),
        "older revocations are left out"
    );
}

async fn add_members_in(uow: &mut dyn iam_ports::UnitOfWork, t: &Tenant, n: u8) -> User {
    let u = user(n);
    add_member(uow, t, &u).await;
    u
}

pub async fn mfa_enrolment_and_replay_guard(f: &Fixture) {
    let (u, _) = seed(f).await;
    let pending = MfaEnrolment {
        user: u.id,
        sealed_secret: vec![1, 2, 3],
        created_at: t0(),
        confirmed_at: None,
        last_used_step: None,
    };
    let mut uow = f.store.begin().await.expect("begin");
    assert!(uow.mfa(u.id).await.expect("get").is_none());
    assert!(!uow.advance_totp_step(u.id, 1).await.expect("no enrolment"));
    uow.put_mfa(&pending).await.expect("put");
    let confirmed = MfaEnrolment {
        confirmed_at: Some(t0() + Duration::minutes(1)),
        ..pending.clone()
    };
    uow.put_mfa(&confirmed).await.expect("replace");
    uow.commit().await.expect("commit");

    let mut uow = f.store.begin().await.expect("begin");
    assert_eq!(uow.mfa(u.id).await.expect("get"), Some(confirmed.clone()));
    for (step, accepted) in [(10, true), (10, false), (9, false), (11, true)] {
        assert_eq!(
            uow.advance_totp_step(u.id, step).await.expect("advance"),
            accepted,
            "step {step}"
        );
    }
    uow.commit().await.expect("commit");
    let mut uow = f.store.begin().await.expect("begin");
    assert_eq!(
        uow.mfa(u.id)
            .await
            .expect("get")
            .and_then(|e| e.last_used_step),
        Some(11)
    );
    uow.replace_recovery_codes(u.id, &codes(&["AAAA"]))
        .await
        .expect("codes");
    assert!(uow.delete_mfa(u.id).await.expect("delete"));
    assert!(!uow.delete_mfa(u.id).await.expect("delete again"));
    assert!(
        uow.recovery_codes(u.id).await.expect("codes").is_empty(),
        "codes go with it"
    );
    uow.commit().await.expect("commit");
}

fn codes(lookups: &[&str]) -> Vec<StoredRecoveryCode> {
    lookups
        .iter()
        .map(|l| StoredRecoveryCode {
            lookup: (*l).to_owned(),
            hash: hash(),
            created_at: t0(),
            used_at: None,
        })
        .collect()
}

pub async fn recovery_codes_are_single_use(f: &Fixture) {
    let (u, _) = seed(f).await;
    let mut uow = f.store.begin().await.expect("begin");
    uow.replace_recovery_codes(u.id, &codes(&["AAAA", "BBBB", "CCCC"]))
        .await
        .expect("codes");
    uow.commit().await.expect("commit");

    let mut uow = f.store.begin().await.expect("begin");
    let at = t0() + Duration::hours(1);
    assert!(uow.use_recovery_code(u.id, "BBBB", at).await.expect("use"));
    assert!(
        !uow.use_recovery_code(u.id, "BBBB", at)
            .await
            .expect("reuse")
    );
    assert!(
        !uow.use_recovery_code(u.id, "ZZZZ", at)
            .await
            .expect("unknown")
    );
    uow.commit().await.expect("commit");
    let mut uow = f.store.begin().await.expect("begin");
    let mut stored = uow.recovery_codes(u.id).await.expect("codes");
    stored.sort_by(|a, b| a.lookup.cmp(&b.lookup));
    let used: Vec<_> = stored
        .iter()
        .map(|c| (c.lookup.as_str(), c.used_at))
        .collect();
    assert_eq!(
        used,
        vec![("AAAA", None), ("BBBB", Some(at)), ("CCCC", None)]
    );
    assert_eq!(stored[0].hash, hash());

    uow.replace_recovery_codes(u.id, &codes(&["DDDD"]))
        .await
        .expect("regenerate");
    assert!(
        !uow.use_recovery_code(u.id, "AAAA", at)
            .await
            .expect("old set")
    );
    assert_eq!(uow.recovery_codes(u.id).await.expect("codes").len(), 1);
    uow.commit().await.expect("commit");
}

pub async fn mfa_challenges_cap_attempts_and_expire(f: &Fixture) {
    let (u, t) = seed(f).await;
    let challenge = MfaChallenge {
        token_hash: [7; 32],
        user: u.id,
        tenant: t.id,
        amr: vec!["pwd".into()],
        expires_at: t0() + Duration::minutes(5),
        attempts: 0,
    };
    let mut uow = f.store.begin().await.expect("begin");
    uow.insert_mfa_challenge(&challenge).await.expect("insert");
    uow.insert_mfa_challenge(&MfaChallenge {
        token_hash: [8; 32],
        ..challenge.clone()
    })
    .await
    .expect("another");
    uow.commit().await.expect("commit");

    let mut uow = f.store.begin().await.expect("begin");
    for n in 1..=5u32 {
        let taken = uow.take_mfa_attempt(&[7; 32], t0(), 5).await.expect("take");
        assert_eq!(taken.map(|c| c.attempts), Some(n));
    }
    assert_eq!(
        uow.take_mfa_attempt(&[7; 32], t0(), 5).await.expect("take"),
        None,
        "spent"
    );
    assert_eq!(
        uow.take_mfa_attempt(&[8; 32], t0() + Duration::minutes(5), 5)
            .await
            .expect("take"),
        None,
        "expired"
    );
    assert_eq!(
        uow.take_mfa_attempt(&[9; 32], t0(), 5).await.expect("take"),
        None,
        "unknown"
    );
    let taken = uow
        .take_mfa_attempt(&[8; 32], t0(), 5)
        .await
        .expect("take")
        .expect("live");
    assert_eq!(
        (taken.user, taken.tenant, taken.amr),
        (u.id, t.id, vec!["pwd".to_owned()])
    );
    assert!(uow.consume_mfa_challenge(&[8; 32]).await.expect("consume"));
    assert!(
        !uow.consume_mfa_challenge(&[8; 32])
            .await
            .expect("consume again")
    );
    assert_eq!(
        uow.take_mfa_attempt(&[8; 32], t0(), 5).await.expect("take"),
        None
    );
    // Expired ones are swept; live ones stay.
    uow.insert_mfa_challenge(&MfaChallenge {
        token_hash: [10; 32],
        expires_at: t0() + Duration::minutes(10),
        ..challenge.clone()
    })
    .await
    .expect("a later one");
    let purged = uow
        .purge_mfa_challenges(t0() + Duration::minutes(5))
        .await
        .expect("purge");
    assert_eq!(
        purged, 1,
        "the challenge spent by attempts has expired by now"
    );
    assert!(
        uow.take_mfa_attempt(&[10; 32], t0(), 5)
            .await
            .expect("take")
            .is_some()
    );
    uow.commit().await.expect("commit");
}

pub async fn throttle_counters_drain_grow_and_forget(f: &Fixture) {
    let leak = 1.0 / 180.0;
    let key = "login:pair:abc".to_owned();
    for _ in 0..3 {
        f.throttle.add_failure(&key, t0(), leak).await.expect("add");
    }
    let got = f
        .throttle
        .counters(&[key.clone(), "never".to_owned()])
        .await
        .expect("counters");
    assert_eq!(got.len(), 2);
    let first = got[0].expect("counted");
    assert!((first.score - 3.0).abs() < 1e-9, "{first:?}");
    assert_eq!(first.updated_at, t0());
    assert!(got[1].is_none());
    // 180 s later one failure has drained; the new one brings it back to three.
    let later = f
        .throttle
        .add_failure(&key, t0() + Duration::seconds(180), leak)
        .await
        .expect("add");
    assert!((later.score - 3.0).abs() < 1e-6, "{later:?}");
    assert_eq!(later.updated_at, t0() + Duration::seconds(180));
    f.throttle.forget(&key).await.expect("forget");
    assert!(
        f.throttle
            .counters(std::slice::from_ref(&key))
            .await
            .expect("counters")[0]
            .is_none()
    );
    f.throttle
        .add_failure("old", t0(), leak)
        .await
        .expect("add");
    f.throttle
        .add_failure("new", t0() + Duration::hours(2), leak)
        .await
        .expect("add");
    assert_eq!(
        f.throttle
            .purge(t0() + Duration::hours(1))
            .await
            .expect("purge"),
        1
    );
    let left = f
        .throttle
        .counters(&["old".to_owned(), "new".to_owned()])
        .await
        .expect("counters");
    assert!(left[0].is_none() && left[1].is_some());
}

pub async fn throttle_failures_add_up_under_concurrency(f: &Fixture) {
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let throttle = f.throttle.clone();
        tasks.push(tokio::spawn(async move {
            throttle.add_failure("hot", t0(), 0.001).await.expect("add")
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let c = f
        .throttle
        .counters(&["hot".to_owned()])
        .await
        .expect("counters")[0]
        .expect("counted");
    assert!((c.score - 20.0).abs() < 1e-9, "every failure counts: {c:?}");
}

pub async fn refresh_session_in_one_call(f: &Fixture) {
    let (u, t) = seed(f).await;
    let (first, first_new) = refresh(1, t0());
    let s = session(f, &u, &t, &first_new).await;
    let (second, second_new) = refresh(2, t0() + Duration::minutes(1));
    match f
        .store
        .refresh_session(&first.hash(), &second_new)
        .await
        .expect("refresh")
    {
        Refreshed::Rotated(standing) => {
            assert_eq!(standing.session, s);
            assert_eq!(standing.user, Some(u.clone()));
            assert_eq!(
                standing.membership.map(|m| m.roles),
                Some(vec![RoleName::owner()])
            );
            assert_eq!(standing.tenant, Some(t.clone()));
        }
        other => panic!("expected a rotation, got {other:?}"),
    }
    // The old token is spent: presenting it again revokes the family, including `second`.
    let (_, third_new) = refresh(3, t0() + Duration::minutes(2));
    assert_eq!(
        f.store
            .refresh_session(&first.hash(), &third_new)
            .await
            .expect("reuse"),
        Refreshed::Reused(s.id)
    );
    let (_, fourth_new) = refresh(4, t0() + Duration::minutes(3));
    assert_eq!(
        f.store
            .refresh_session(&second.hash(), &fourth_new)
            .await
            .expect("after reuse"),
        Refreshed::Reused(s.id)
    );
    let (unknown, _) = refresh(9, t0());
    assert_eq!(
        f.store
            .refresh_session(&unknown.hash(), &fourth_new)
            .await
            .expect("unknown"),
        Refreshed::Unknown
    );

    // A user who left the tenant: rotation still happens, the standing says so.
    let (other_user, other_tenant) = (user(5), tenant(5, &u));
    let mut uow = f.store.begin().await.expect("begin");
    uow.insert_user(&other_user, None).await.expect("user");
    uow.insert_tenant(&other_tenant).await.expect("tenant");
    let lone = new_session(5, &other_user, &other_tenant);
    uow.insert_session(&lone, &refresh(5, t0()).1)
        .await
        .expect("session");
    uow.commit().await.expect("commit");
    let (_, next) = refresh(6, t0());
    match f
        .store
        .refresh_session(&refresh(5, t0()).0.hash(), &next)
        .await
        .expect("refresh")
    {
        Refreshed::Rotated(standing) => {
            assert!(standing.membership.is_none());
            assert_eq!(standing.user.map(|u| u.id), Some(other_user.id));
        }
        other => panic!("expected a rotation, got {other:?}"),
    }
    let (_, late) = refresh(7, t0() + Duration::days(8));
    assert_eq!(
        f.store
            .refresh_session(&refresh(6, t0()).0.hash(), &late)
            .await
            .expect("expired"),
        Refreshed::Expired
    );
}

pub async fn concurrent_refresh_sessions_have_one_winner(f: &Fixture) {
    let (u, t) = seed(f).await;
    let (first, first_new) = refresh(1, t0());
    let s = session(f, &u, &t, &first_new).await;
    let mut tasks = Vec::new();
    for n in 0..8u8 {
        let store = f.store.clone();
        let presented = first.hash();
        let (_, next) = refresh(20 + n, t0() + Duration::seconds(1));
        tasks.push(tokio::spawn(async move {
            store
                .refresh_session(&presented, &next)
                .await
                .expect("refresh")
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task"));
    }
    let winners = outcomes
        .iter()
        .filter(|r| matches!(r, Refreshed::Rotated(_)))
        .count();
    assert_eq!(winners, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|r| matches!(r, Refreshed::Rotated(_)) || *r == Refreshed::Reused(s.id))
    );
}

fn link(n: u8, kind: LinkKind, email: &Email, at: Timestamp) -> LinkToken {
    LinkToken {
        hash: [n; 32],
        kind,
        email: email.clone(),
        user: None,
        tenant: None,
        roles: vec![],
        invited_by: None,
        created_at: at,
        expires_at: at + Duration::hours(1),
        used_at: None,
    }
}

pub async fn link_tokens_are_single_use_and_superseded(f: &Fixture) {
    let (u, t) = seed(f).await;
    let invite = LinkToken {
        user: Some(u.id),
        tenant: Some(t.id),
        roles: vec![RoleName::owner()],
        invited_by: Some(u.id),
        ..link(1, LinkKind::Invite, &u.email, t0())
    };
    let mut uow = f.store.begin().await.expect("begin");
    uow.insert_link_token(&invite).await.expect("insert");
    uow.insert_link_token(&link(2, LinkKind::Reset, &u.email, t0()))
        .await
        .expect("reset");
    uow.commit().await.expect("commit");

    let mut uow = f.store.begin().await.expect("begin");
    assert_eq!(
        uow.take_link_token(&[1; 32], LinkKind::Reset, t0())
            .await
            .expect("take"),
        None,
        "the kind must match"
    );
    let taken = uow
        .take_link_token(&[1; 32], LinkKind::Invite, t0())
        .await
        .expect("take")
        .expect("live");
    assert_eq!(
        (
            taken.tenant,
            taken.roles.clone(),
            taken.invited_by,
            taken.used_at
        ),
        (Some(t.id), vec![RoleName::owner()], Some(u.id), Some(t0()))
    );
    assert_eq!(
        uow.take_link_token(&[1; 32], LinkKind::Invite, t0())
            .await
            .expect("again"),
        None
    );
    // A newer reset link supersedes the older one.
    uow.insert_link_token(&link(
        3,
        LinkKind::Reset,
        &u.email,
        t0() + Duration::minutes(1),
    ))
    .await
    .expect("newer");
    assert_eq!(
        uow.take_link_token(&[2; 32], LinkKind::Reset, t0())
            .await
            .expect("old"),
        None
    );
    // Expired.
    assert_eq!(
        uow.take_link_token(&[3; 32], LinkKind::Reset, t0() + Duration::hours(2))
            .await
            .expect("late"),
        None
    );
    assert!(
        uow.take_link_token(&[3; 32], LinkKind::Reset, t0())
            .await
            .expect("in time")
            .is_some()
    );
    uow.insert_link_token(&link(4, LinkKind::Verify, &u.email, t0()))
        .await
        .expect("verify");
    uow.insert_link_token(&link(5, LinkKind::Reset, &u.email, t0()))
        .await
        .expect("reset");
    assert_eq!(
        uow.spend_link_tokens(&u.email, LinkKind::Reset, t0())
            .await
            .expect("spend"),
        1
    );
    assert!(
        uow.take_link_token(&[4; 32], LinkKind::Verify, t0())
            .await
            .expect("other kind")
            .is_some()
    );
    uow.commit().await.expect("commit");
}

pub async fn passwords_are_replaced(f: &Fixture) {
    let (u, _) = seed(f).await;
    let new = PasswordHash::from_phc("$argon2id$v=19$m=64,t=1,p=1$bmV3c2FsdA$bmV3aGFzaA".into());
    let mut uow = f.store.begin().await.expect("begin");
    assert!(uow.set_password(u.id, &new).await.expect("set"));
    assert!(!uow.set_password(user(9).id, &new).await.expect("unknown"));
    uow.commit().await.expect("commit");
    let mut uow = f.store.begin().await.expect("begin");
    let rec = uow
        .user_by_email(&u.email)
        .await
        .expect("lookup")
        .expect("user");
    assert_eq!(rec.password_hash, Some(new));
    uow.commit().await.expect("commit");
}

fn message(n: u8, to: &Email, at: Timestamp) -> MailMessage {
    MailMessage {
        id: MailId(uuid::Uuid::from_bytes([n; 16])),
        to: to.clone(),
        subject: format!("subject {n}"),
        text: "text".into(),
        html: "<p>html</p>".into(),
        created_at: at,
    }
}

pub async fn the_outbox_commits_with_the_unit_and_leases_claims(f: &Fixture) {
    let (u, _) = seed(f).await;
    let mut uow = f.store.begin().await.expect("begin");
    uow.enqueue_mail(&message(1, &u.email, t0()))
        .await
        .expect("enqueue");
    uow.rollback().await.expect("rollback");
    assert_eq!(
        f.mail.pending().await.expect("pending"),
        0,
        "rolled back with its unit"
    );

    let mut uow = f.store.begin().await.expect("begin");
    uow.enqueue_mail(&message(2, &u.email, t0()))
        .await
        .expect("enqueue");
    uow.enqueue_mail(&message(3, &u.email, t0() + Duration::seconds(1)))
        .await
        .expect("enqueue");
    uow.commit().await.expect("commit");
    assert_eq!(f.mail.pending().await.expect("pending"), 2);

    let now = t0() + Duration::seconds(5);
    let lease = now + Duration::minutes(1);
    let first = f.mail.claim_due(now, lease, 1).await.expect("claim");
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].message.clone(), first[0].attempts),
        (message(2, &u.email, t0()), 1)
    );
    let second = f.mail.claim_due(now, lease, 10).await.expect("claim");
    assert_eq!(
        second.iter().map(|m| m.message.id).collect::<Vec<_>>(),
        vec![message(3, &u.email, t0()).id]
    );
    assert!(
        f.mail
            .claim_due(now, lease, 10)
            .await
            .expect("claim")
            .is_empty(),
        "both leased"
    );

    f.mail
        .mark_sent(first[0].message.id, now)
        .await
        .expect("sent");
    let retry = now + Duration::seconds(30);
    f.mail
        .mark_failed(second[0].message.id, retry, "connection refused")
        .await
        .expect("failed");
    assert!(
        f.mail
            .claim_due(retry - Duration::seconds(1), lease, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    let again = f.mail.claim_due(retry, lease, 10).await.expect("claim");
    assert_eq!(
        again.len(),
        1,
        "the failed one comes back, the sent one never"
    );
    assert_eq!(again[0].attempts, 2);
    assert_eq!(f.mail.pending().await.expect("pending"), 1);
}

/// Custom roles are stored per tenant, unique by name, and renaming or deleting one rewrites
/// the memberships of that tenant only; a rolled-back change leaves everything as it was.
pub async fn custom_roles_and_assignments(f: &Fixture) {
    let (owner, t) = seed(f).await;
    let other_owner = user(2);
    let other = tenant(2, &other_owner);
    let member = user(3);
    let mut uow = f.store.begin().await.expect("begin");
    uow.insert_user(&other_owner, None).await.expect("user");
    uow.insert_tenant(&other).await.expect("tenant");
    add_member(&mut *uow, &t, &member).await;
    let billing = custom_role(&t, 1, "billing", &["billing.invoices.read"]);
    uow.insert_role(&billing).await.expect("role");
    // The same name in another tenant is another role.
    uow.insert_role(&custom_role(&other, 2, "billing", &[]))
        .await
        .expect("other tenant's role");
    uow.commit().await.expect("commit");

    let mut uow = f.store.begin().await.expect("begin");
    let dup = uow.insert_role(&custom_role(&t, 3, "billing", &[])).await;
    assert!(matches!(dup, Err(StoreError::Conflict("role"))), "{dup:?}");
    drop(uow);

    let mut uow = f.store.begin().await.expect("begin");
    assert_eq!(
        uow.custom_roles(t.id).await.expect("roles"),
        vec![billing.clone()]
    );
    assert_eq!(
        uow.custom_role(t.id, billing.id).await.expect("role"),
        Some(billing.clone())
    );
    assert_eq!(
        uow.custom_role(other.id, billing.id).await.expect("role"),
        None
    );
    let roles = vec![
        RoleName::parse("member").expect("name"),
        billing.name.clone(),
    ];
    assert!(
        uow.set_membership_roles(t.id, member.id, &roles)
            .await
            .expect("set")
    );
    assert!(
        !uow.set_membership_roles(other.id, member.id, &roles)
            .await
            .expect("not a member")
    );
    uow.commit().await.expect("commit");

    // Rename: carried into memberships.
    let renamed = iam_domain::Role {
        name: RoleName::parse("finance").expect("name"),
        permissions: [iam_domain::Permission::parse("billing.invoices.write").expect("p")].into(),
        named_at: t0() + Duration::seconds(5),
        updated_at: t0() + Duration::seconds(5),
        ..billing.clone()
    };
    let mut uow = f.store.begin().await.expect("begin");
    assert!(
        uow.update_role(&renamed, &billing.name)
            .await
            .expect("update")
    );
    uow.commit().await.expect("commit");
    let mut uow = f.store.begin().await.expect("begin");
    let m = uow
        .membership(member.id, t.id)
        .await
        .expect("m")
        .expect("member");
    assert_eq!(
        m.roles,
        vec![RoleName::parse("member").expect("n"), renamed.name.clone()]
    );
    assert_eq!(
        uow.custom_role(t.id, billing.id).await.expect("r"),
        Some(renamed.clone())
    );

    // Delete, rolled back: nothing changes.
    assert!(uow.delete_role(t.id, &renamed).await.expect("delete"));
    uow.rollback().await.expect("rollback");
    let mut uow = f.store.begin().await.expect("begin");
    assert_eq!(uow.custom_roles(t.id).await.expect("roles").len(), 1);
    // Delete, committed: taken from the members.
    assert!(uow.delete_role(t.id, &renamed).await.expect("delete"));
    assert!(!uow.delete_role(t.id, &renamed).await.expect("gone"));
    uow.commit().await.expect("commit");
    let mut uow = f.store.begin().await.expect("begin");
    let m = uow
        .membership(member.id, t.id)
        .await
        .expect("m")
        .expect("member");
    assert_eq!(m.roles, vec![RoleName::parse("member").expect("n")]);
    assert!(uow.custom_roles(t.id).await.expect("roles").is_empty());
    assert_eq!(uow.custom_roles(other.id).await.expect("roles").len(), 1);

    // Holders of a role are counted among active users only.
    let owner_role = RoleName::owner();
    assert_eq!(
        uow.count_active_holders(t.id, &owner_role)
            .await
            .expect("n"),
        1
    );
    assert!(uow.lock_tenant(t.id).await.expect("lock"));
    let disabled = User {
        status: UserStatus::Disabled,
        ..owner.clone()
    };
    uow.update_user(&disabled).await.expect("disable");
    assert_eq!(
        uow.count_active_holders(t.id, &owner_role)
            .await
            .expect("n"),
        0
    );
    uow.rollback().await.expect("rollback");
}

/// The catalogue keeps one entry per name (a second registration re-describes it), the root
/// tenant is set once, and user metadata round-trips.
pub async fn catalogue_root_tenant_and_metadata(f: &Fixture) {
    let (u, t) = seed(f).await;
    let def = |d: &str| iam_domain::PermissionDef {
        name: iam_domain::Permission::parse_external("billing.invoices.read").expect("p"),
        description: d.into(),
        builtin: false,
    };
    let mut uow = f.store.begin().await.expect("begin");
    assert_eq!(uow.root_tenant().await.expect("root"), None);
    uow.register_permission(&def("Read invoices"))
        .await
        .expect("register");
    uow.register_permission(&def("Read all invoices"))
        .await
        .expect("again");
    assert!(uow.set_root_tenant(t.id).await.expect("root"));
    assert!(!uow.set_root_tenant(t.id).await.expect("once only"));
    let mut changed = u.clone();
    changed.metadata = iam_domain::Metadata::parse(serde_json::json!({
        "plan": "pro", "seats": 5, "tags": ["a", {"b": null}]
    }))
    .expect("metadata");
    uow.update_user(&changed).await.expect("update");
    uow.commit().await.expect("commit");

    let mut uow = f.store.begin().await.expect("begin");
    assert_eq!(
        uow.registered_permissions().await.expect("list"),
        vec![def("Read all invoices")]
    );
    assert_eq!(uow.root_tenant().await.expect("root"), Some(t.id));
    assert_eq!(
        uow.user_by_id(u.id)
            .await
            .expect("user")
            .expect("exists")
            .metadata,
        changed.metadata
    );
    uow.commit().await.expect("commit");
    let snapshot = f.feed.snapshot(t0()).await.expect("snapshot");
    assert_eq!(snapshot.permissions, vec![def("Read all invoices")]);
}

/// Audit events are appended, listed per tenant newest first with keyset paging, and a
/// rolled-back unit leaves none behind.
pub async fn audit_events_are_appended_and_paged(f: &Fixture) {
    let (u, t) = seed(f).await;
    let event = |n: u8, tenant: &Tenant| iam_domain::AuditEvent {
        id: iam_domain::AuditId(
            uuid::Builder::from_unix_timestamp_millis(1_800_000_000_000 + u64::from(n), &[n; 10])
                .into_uuid(),
        ),
        at: t0() + Duration::milliseconds(i64::from(n)),
        actor: if n.is_multiple_of(2) {
            iam_domain::AuditActor::User(u.id)
        } else {
            iam_domain::AuditActor::Service
        },
        tenant: tenant.id,
        action: "users.update".into(),
        target: format!("users/{n}"),
        request_id: (n == 1).then(|| "req-1".to_owned()),
        outcome: if n == 3 {
            iam_domain::AuditOutcome::Denied
        } else {
            iam_domain::AuditOutcome::Success
        },
    };
    let other_owner = user(2);
    let other = tenant(2, &other_owner);
    let mut uow = f.store.begin().await.expect("begin");
    uow.insert_user(&other_owner, None).await.expect("user");
    uow.insert_tenant(&other).await.expect("tenant");
    for n in 1..=5 {
        uow.append_audit(&event(n, &t)).await.expect("append");
    }
    uow.append_audit(&event(6, &other)).await.expect("append");
    uow.commit().await.expect("commit");
    let mut uow = f.store.begin().await.expect("begin");
    uow.append_audit(&event(7, &t)).await.expect("append");
    uow.rollback().await.expect("rollback");

    let mut uow = f.store.begin().await.expect("begin");
    let first = uow.list_audit(t.id, None, 3).await.expect("page");
    assert_eq!(first, vec![event(5, &t), event(4, &t), event(3, &t)]);
    let rest = uow
        .list_audit(t.id, Some(first[2].id), 3)
        .await
        .expect("page");
    assert_eq!(rest, vec![event(2, &t), event(1, &t)]);
    assert_eq!(
        uow.list_audit(other.id, None, 10).await.expect("other"),
        vec![event(6, &other)]
    );
}

/// The snapshot carries every tenant's custom roles, and role changes are published at commit.
pub async fn role_changes_reach_the_feed_and_snapshot(f: &Fixture) {
    let (_, t) = seed(f).await;
    let mut feed = f.feed.subscribe().await.expect("subscribe");
    let role = custom_role(&t, 1, "auditor", &["iam.audit.read"]);
    let mut uow = f.store.begin().await.expect("begin");
    uow.insert_role(&role).await.expect("role");
    uow.rollback().await.expect("rollback");
    let mut uow = f.store.begin().await.expect("begin");
    uow.insert_role(&role).await.expect("role");
    uow.commit().await.expect("commit");
    assert_eq!(
        next_message(&mut feed).await,
        FeedMessage::Event(RevocationEvent::RolesChanged(t.id))
    );
    let snapshot = f.feed.snapshot(t0()).await.expect("snapshot");
    assert_eq!(snapshot.custom_roles, vec![role]);
}

/// Claim definitions of every source and scope round-trip, names are unique, deletes publish,
/// and a live refresh token leads back to its session (a spent one does not).
pub async fn claims_and_sessions_of_refresh_tokens(f: &Fixture) {
    use iam_domain::claims::{
        ClaimDefinition, ClaimHook, ClaimName, ClaimScope, ClaimSource, FailurePolicy,
    };
    let (u, t) = seed(f).await;
    let def = |name: &str, scope, source| ClaimDefinition {
        name: ClaimName::parse(name).expect("name"),
        scope,
        source,
        created_at: t0(),
    };
    let all = vec![
        def(
            "billing.plan",
            ClaimScope::Platform,
            ClaimSource::Constant(serde_json::json!({"tier": "pro", "seats": [1, 2]})),
        ),
        def(
            "billing.seats",
            ClaimScope::Tenant {
                tenant: t.id,
                descendants: true,
            },
            ClaimSource::Hook(
                ClaimHook::new("http://127.0.0.1:9/hook", 250, FailurePolicy::Refuse)
                    .expect("hook"),
            ),
        ),
        def(
            "crm.segment",
            ClaimScope::Tenant {
                tenant: t.id,
                descendants: false,
            },
            ClaimSource::UserMetadata("segment".into()),
        ),
        def(
            "crm.region",
            ClaimScope::Platform,
            ClaimSource::TenantMetadata("region".into()),
        ),
    ];
    let mut feed = f.feed.subscribe().await.expect("subscribe");
    let mut uow = f.store.begin().await.expect("begin");
    for d in &all {
        uow.insert_claim(d).await.expect("insert");
    }
    uow.commit().await.expect("commit");
    assert_eq!(
        next_message(&mut feed).await,
        FeedMessage::Event(RevocationEvent::ClaimsChanged)
    );
    let mut uow = f.store.begin().await.expect("begin");
    let dup = uow.insert_claim(&all[0]).await;
    assert!(matches!(dup, Err(StoreError::Conflict("claim"))), "{dup:?}");
    drop(uow);

    let mut sorted = all.clone();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut uow = f.store.begin().await.expect("begin");
    assert_eq!(uow.claims().await.expect("claims"), sorted);
    assert!(uow.delete_claim(&all[0].name).await.expect("delete"));
    assert!(!uow.delete_claim(&all[0].name).await.expect("gone"));
    uow.commit().await.expect("commit");
    let snapshot = f.feed.snapshot(t0()).await.expect("snapshot");
    assert_eq!(snapshot.claims.len(), 3);

    // A refresh token names its session, live or spent.
    let (token, first) = refresh(1, t0());
    let s = session(f, &u, &t, &first).await;
    let mut uow = f.store.begin().await.expect("begin");
    assert_eq!(
        uow.session_of_refresh(&token.hash()).await.expect("lookup"),
        Some(s.clone())
    );
    assert_eq!(
        uow.session_of_refresh(&refresh(2, t0()).0.hash())
            .await
            .expect("unknown"),
        None
    );
    uow.commit().await.expect("commit");
    rotate(f, &token, &refresh(3, t0()).1).await;
    let mut uow = f.store.begin().await.expect("begin");
    assert_eq!(
        uow.session_of_refresh(&token.hash()).await.expect("spent"),
        None
    );
    assert_eq!(
        uow.session_of_refresh(&refresh(3, t0()).0.hash())
            .await
            .expect("successor")
            .map(|x| x.id),
        Some(s.id)
    );
}

/// The model's ancestors of `id`, nearest first, from parent links.
fn model_ancestors(tree: &[Tenant], id: iam_domain::TenantId) -> Vec<iam_domain::TenantId> {
    let parent = |id| tree.iter().find(|t| t.id == id).and_then(|t| t.parent);
    std::iter::successors(parent(id), |p| parent(*p)).collect()
}

/// Every tenant's ancestors, lineage and IsDescendant answer against the model `tree`.
async fn assert_tree(uow: &mut dyn iam_ports::UnitOfWork, tree: &[Tenant]) {
    for t in tree {
        let expected = model_ancestors(tree, t.id);
        assert_eq!(uow.ancestors(t.id).await.expect("ancestors"), expected);
        let lineage: Vec<_> = uow
            .lineage(t.id)
            .await
            .expect("lineage")
            .into_iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(lineage[0], t.id);
        assert_eq!(lineage[1..], expected[..]);
        for other in tree {
            assert_eq!(
                uow.is_descendant(other.id, t.id)
                    .await
                    .expect("is descendant"),
                expected.contains(&other.id),
                "is {} below {}",
                t.name,
                other.name
            );
        }
    }
}

pub async fn hierarchy_deep_and_wide(f: &Fixture) {
    let (u, root) = seed(f).await;
    let mut tree = vec![root.clone()];
    // Wide: twelve children of the root; deep: a chain of eight under the first of them.
    for n in 0..12u8 {
        tree.push(child(10 + n, &root, &u));
    }
    let mut below = tree[1].clone();
    for n in 0..8u8 {
        let next = child(40 + n, &below, &u);
        tree.push(next.clone());
        below = next;
    }
    let mut uow = f.store.begin().await.expect("begin");
    for t in &tree[1..] {
        uow.insert_tenant(t).await.expect("insert");
    }
    uow.commit().await.expect("commit");

    let mut uow = f.store.begin().await.expect("begin");
    assert_tree(&mut *uow, &tree).await;
    let unknown = tenant(99, &u).id;
    assert!(uow.lineage(unknown).await.expect("lineage").is_empty());
    assert!(!uow.is_descendant(root.id, unknown).await.expect("unknown"));
    assert!(!uow.is_descendant(root.id, root.id).await.expect("itself"));

    // Children and descendants page by id.
    let first = uow.children(root.id, None, 5).await.expect("children");
    let rest = uow
        .children(root.id, first.last().map(|t| t.id), 100)
        .await
        .expect("children");
    let mut paged: Vec<_> = first.iter().chain(&rest).map(|t| t.id).collect();
    assert_eq!(paged.len(), 12);
    let mut expected: Vec<_> = tree[1..13].iter().map(|t| t.id).collect();
    expected.sort();
    assert_eq!(paged, expected);
    paged.clear();
    let mut after = None;
    loop {
        let page = uow.descendants(root.id, after, 7).await.expect("page");
        if page.is_empty() {
            break;
        }
        after = page.last().map(|t| t.id);
        paged.extend(page.iter().map(|t| t.id));
    }
    let mut expected: Vec<_> = tree[1..].iter().map(|t| t.id).collect();
    expected.sort();
    assert_eq!(paged, expected, "every descendant once, in id order");
    let chain = uow.descendants(tree[1].id, None, 100).await.expect("chain");
    assert_eq!(chain.len(), 8);
    uow.commit().await.expect("commit");
}

pub async fn moves_keep_the_tree_and_refuse_cycles(f: &Fixture) {
    let (u, root) = seed(f).await;
    let a = child(2, &root, &u);
    let b = child(3, &a, &u);
    let c = child(4, &b, &u);
    let d = child(5, &root, &u);
    let mut uow = f.store.begin().await.expect("begin");
    for t in [&a, &b, &c, &d] {
        uow.insert_tenant(t).await.expect("insert");
    }
    uow.commit().await.expect("commit");

    let at = t0() + Duration::hours(1);
    let mut uow = f.store.begin().await.expect("begin");
    for cycle in [a.id, b.id, c.id] {
        assert_eq!(
            uow.move_tenant(a.id, Some(cycle), at).await.expect("move"),
            iam_ports::Move::Cycle
        );
    }
    let unknown = tenant(99, &u).id;
    assert_eq!(
        uow.move_tenant(unknown, Some(root.id), at)
            .await
            .expect("move"),
        iam_ports::Move::NotFound
    );
    assert_eq!(
        uow.move_tenant(b.id, Some(unknown), at)
            .await
            .expect("move"),
        iam_ports::Move::NotFound
    );
    // b (with c) goes under d; the refusals above left the unit usable.
    assert_eq!(
        uow.move_tenant(b.id, Some(d.id), at).await.expect("move"),
        iam_ports::Move::Moved
    );
    uow.commit().await.expect("commit");

    let b_moved = Tenant {
        parent: Some(d.id),
        ..b.clone()
    };
    let mut uow = f.store.begin().await.expect("begin");
    let tree = [
        root.clone(),
        a.clone(),
        b_moved.clone(),
        c.clone(),
        d.clone(),
    ];
    assert_tree(&mut *uow, &tree).await;
    let stored = uow.tenant(b.id).await.expect("lookup").expect("tenant");
    assert_eq!((stored.parent, stored.updated_at), (Some(d.id), at));
    // Now d lies above c, so d cannot go under c; a can go under c.
    assert_eq!(
        uow.move_tenant(d.id, Some(c.id), at).await.expect("move"),
        iam_ports::Move::Cycle
    );
    assert_eq!(
        uow.move_tenant(a.id, Some(c.id), at).await.expect("move"),
        iam_ports::Move::Moved
    );
    // And d to the top.
    assert_eq!(
        uow.move_tenant(d.id, None, at).await.expect("move"),
        iam_ports::Move::Moved
    );
    uow.commit().await.expect("commit");
    let mut uow = f.store.begin().await.expect("begin");
    let tree = [
        root.clone(),
        Tenant {
            parent: Some(c.id),
            ..a.clone()
        },
        b_moved,
        c.clone(),
        Tenant { parent: None, ..d },
    ];
    assert_tree(&mut *uow, &tree).await;
    uow.commit().await.expect("commit");

    // A rolled-back move leaves the tree as it was.
    let mut uow = f.store.begin().await.expect("begin");
    assert_eq!(
        uow.move_tenant(c.id, Some(root.id), at)
            .await
            .expect("move"),
        iam_ports::Move::Moved
    );
    uow.rollback().await.expect("rollback");
    let mut uow = f.store.begin().await.expect("begin");
    assert_tree(&mut *uow, &tree).await;
    uow.commit().await.expect("commit");
}

pub async fn moves_and_deletions_reach_the_snapshot(f: &Fixture) {
    let (u, root) = seed(f).await;
    let a = child(2, &root, &u);
    let b = child(3, &root, &u);
    let c = child(4, &b, &u);
    let mut uow = f.store.begin().await.expect("begin");
    for t in [&a, &b, &c] {
        uow.insert_tenant(t).await.expect("insert");
    }
    assert!(
        uow.set_tenant_status(a.id, TenantStatus::Blocked, t0())
            .await
            .expect("block")
    );
    uow.commit().await.expect("commit");
    let blocked = |mut ids: Vec<iam_domain::TenantId>| {
        ids.sort();
        ids
    };
    let snap = f.feed.snapshot(t0()).await.expect("snapshot");
    assert_eq!(blocked(snap.blocked_tenants), vec![a.id]);

    let mut stream = f.feed.subscribe().await.expect("subscribe");
    let mut uow = f.store.begin().await.expect("begin");
    assert_eq!(
        uow.move_tenant(b.id, Some(a.id), t0()).await.expect("move"),
        iam_ports::Move::Moved
    );
    uow.commit().await.expect("commit");
    assert_eq!(
        next_message(&mut stream).await,
        FeedMessage::Event(RevocationEvent::TenantStatus(b.id))
    );
    let snap = f.feed.snapshot(t0()).await.expect("snapshot");
    assert_eq!(
        blocked(snap.blocked_tenants),
        blocked(vec![a.id, b.id, c.id]),
        "the moved subtree is blocked under its new parent"
    );

    // A deleted tenant leaves the listings and counts as blocked.
    let mut uow = f.store.begin().await.expect("begin");
    assert_eq!(
        uow.move_tenant(b.id, Some(root.id), t0())
            .await
            .expect("move"),
        iam_ports::Move::Moved
    );
    assert!(
        uow.set_tenant_status(c.id, TenantStatus::Deleted, t0())
            .await
            .expect("delete")
    );
    assert!(
        uow.children(b.id, None, 10)
            .await
            .expect("children")
            .is_empty()
    );
    assert!(
        !uow.is_descendant(b.id, c.id).await.expect("below"),
        "a deleted tenant is nobody's descendant"
    );
    let below: Vec<_> = uow
        .descendants(root.id, None, 10)
        .await
        .expect("descendants")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(below, blocked(vec![a.id, b.id]));
    uow.commit().await.expect("commit");
    let snap = f.feed.snapshot(t0()).await.expect("snapshot");
    assert_eq!(blocked(snap.blocked_tenants), blocked(vec![a.id, c.id]));
}

pub async fn tenant_updates_memberships_and_tenant_sessions(f: &Fixture) {
    let (u, t) = seed(f).await;
    let other = tenant(2, &u);
    let v = user(2);
    let mut uow = f.store.begin().await.expect("begin");
    uow.insert_user(&v, None).await.expect("user");
    uow.insert_tenant(&other).await.expect("tenant");
    for (tenant, user) in [(&t, &v), (&other, &u)] {
        uow.insert_membership(&Membership {
            tenant: tenant.id,
            user: user.id,
            roles: vec![RoleName::member()],
            created_at: t0(),
        })
        .await
        .expect("membership");
    }
    let mut sessions = Vec::new();
    for (n, (tenant, user)) in [(&t, &u), (&t, &v), (&other, &u)].into_iter().enumerate() {
        let n = u8::try_from(n).expect("small");
        let s = new_session(n, user, tenant);
        uow.insert_session(&s, &refresh(n, t0()).1)
            .await
            .expect("session");
        sessions.push(s);
    }
    uow.commit().await.expect("commit");

    let at = t0() + Duration::hours(1);
    let mut uow = f.store.begin().await.expect("begin");
    // A page of members' roles in one call; strangers and other tenants' members are left out.
    let mut held: Vec<_> = uow
        .memberships_in(t.id, &[u.id, v.id, user(9).id])
        .await
        .expect("memberships")
        .into_iter()
        .map(|m| (m.user, m.roles))
        .collect();
    held.sort();
    let mut expected = vec![
        (u.id, vec![RoleName::owner()]),
        (v.id, vec![RoleName::member()]),
    ];
    expected.sort();
    assert_eq!(held, expected);
    assert!(
        uow.memberships_in(other.id, &[v.id])
            .await
            .expect("memberships")
            .is_empty()
    );
    let mut changed = t.clone();
    changed.name = iam_domain::TenantName::parse("Renamed").expect("name");
    changed.owner = v.id;
    changed.metadata =
        iam_domain::Metadata::parse(serde_json::json!({"plan": "gold"})).expect("metadata");
    changed.updated_at = at;
    assert!(uow.update_tenant(&changed).await.expect("update"));
    assert!(
        !uow.update_tenant(&tenant(9, &u)).await.expect("unknown"),
        "no such tenant"
    );
    // Only v's session in t, then the rest of t's; other's stays.
    assert_eq!(
        uow.revoke_tenant_sessions(t.id, Some(v.id), at)
            .await
            .expect("revoke"),
        vec![sessions[1].id]
    );
    assert_eq!(
        uow.revoke_tenant_sessions(t.id, None, at)
            .await
            .expect("revoke"),
        vec![sessions[0].id]
    );
    assert!(uow.delete_membership(t.id, v.id).await.expect("delete"));
    assert!(!uow.delete_membership(t.id, v.id).await.expect("again"));
    uow.commit().await.expect("commit");
    // Ending every membership of `other` leaves t's alone.
    let mut uow = f.store.begin().await.expect("begin");
    assert_eq!(
        uow.delete_tenant_memberships(other.id)
            .await
            .expect("delete all"),
        1
    );
    assert!(uow.membership(u.id, t.id).await.expect("m").is_some());
    uow.commit().await.expect("commit");

    let mut uow = f.store.begin().await.expect("begin");
    let stored = uow.tenant(t.id).await.expect("lookup").expect("tenant");
    assert_eq!(stored, changed);
    assert!(uow.membership(v.id, t.id).await.expect("m").is_none());
    assert!(uow.membership(u.id, other.id).await.expect("m").is_none());
    let live = |s: &Session| s.revoked_at.is_none();
    for (s, alive) in sessions.iter().zip([false, false, true]) {
        let stored = uow.session(s.id).await.expect("s").expect("session");
        assert_eq!(live(&stored), alive);
    }
    uow.commit().await.expect("commit");
    let (_, next) = refresh(9, t0());
    assert_eq!(
        rotate(f, &refresh(1, t0()).0, &next).await,
        Rotation::Reused(sessions[1].id),
        "a revoked session's token no longer rotates"
    );
}
