//! Throttling slows the attacker, not the victim; password screening.

use std::net::IpAddr;

use chrono::Duration;
use iam_application::{AdminError, AuthError, NewUser, RegisterCommand, SecondFactor};
use iam_domain::{DisplayName, Email, Password, Weakness};

fn svc() -> iam_application::Actor {
    iam_application::Actor::service(None)
}

use crate::support::{CLIENT, Harness, PASSWORD};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

async fn attempt(h: &Harness, email: &str, password: &str, from: &str) -> Result<(), AuthError> {
    h.auth
        .login(
            &Email::parse(email).expect("email"),
            &Password::presented(password).expect("password"),
            None,
            ip(from),
        )
        .await
        .map(|_| ())
}

#[tokio::test]
async fn the_attacker_is_slowed_without_argon2_work_and_recovers() {
    let h = Harness::new().await;
    h.register("ada@example.com").await;
    for _ in 0..5 {
        let r = attempt(&h, "ada@example.com", "wrong guess 1234", "198.51.100.1").await;
        assert!(matches!(r, Err(AuthError::InvalidCredentials)), "{r:?}");
    }
    let before = h.stats.verifications();
    let r = attempt(&h, "ada@example.com", PASSWORD, "198.51.100.1").await;
    assert!(matches!(r, Err(AuthError::Throttled(360))), "{r:?}");
    assert_eq!(
        h.stats.verifications(),
        before,
        "a throttled attempt costs no Argon2 work"
    );

    // The rightful user, from an address of their own, is not affected.
    attempt(&h, "ada@example.com", PASSWORD, "203.0.113.7")
        .await
        .expect("victim signs in");

    // Left alone, the bucket drains by itself within the announced wait.
    h.clock.advance(Duration::seconds(360));
    attempt(&h, "ada@example.com", PASSWORD, "198.51.100.1")
        .await
        .expect("recovered");
}

#[tokio::test]
async fn delays_grow_while_the_attacker_keeps_trying() {
    let h = Harness::new().await;
    for _ in 0..5 {
        let _ = attempt(&h, "nobody@example.com", "wrong guess 1234", "198.51.100.1").await;
    }
    let mut waits = Vec::new();
    for _ in 0..3 {
        match attempt(&h, "nobody@example.com", "wrong guess 1234", "198.51.100.1").await {
            Err(AuthError::Throttled(secs)) => waits.push(secs),
            other => panic!("expected throttling, got {other:?}"),
        }
    }
    assert_eq!(
        waits,
        vec![360, 540, 720],
        "each attempt while throttled adds to the wait"
    );
}

#[tokio::test]
async fn throttled_answers_do_not_reveal_whether_the_account_exists() {
    let h = Harness::new().await;
    h.register("ada@example.com").await;
    let mut answers = Vec::new();
    for email in ["ada@example.com", "nobody@example.com"] {
        for _ in 0..5 {
            let _ = attempt(&h, email, "wrong guess 1234", "198.51.100.1").await;
        }
        answers.push(format!(
            "{:?}",
            attempt(&h, email, "wrong guess 1234", "198.51.100.1").await
        ));
    }
    assert_eq!(answers[0], answers[1]);
    assert!(answers[0].contains("Throttled"));
}

#[tokio::test]
async fn one_address_spraying_many_accounts_is_slowed() {
    let h = Harness::new().await;
    h.register("ada@example.com").await;
    for n in 0..50 {
        let _ = attempt(
            &h,
            &format!("user{n}@example.com"),
            "wrong guess 1234",
            "198.51.100.9",
        )
        .await;
    }
    let r = attempt(&h, "ada@example.com", PASSWORD, "198.51.100.9").await;
    assert!(matches!(r, Err(AuthError::Throttled(_))), "{r:?}");
    attempt(&h, "ada@example.com", PASSWORD, "203.0.113.7")
        .await
        .expect("other addresses go on");
}

#[tokio::test]
async fn failures_from_many_addresses_never_lock_the_account() {
    let h = Harness::new().await;
    h.register("ada@example.com").await;
    for n in 0..120u8 {
        let _ = attempt(
            &h,
            "ada@example.com",
            "wrong guess 1234",
            &format!("198.51.{}.{}", n / 4, n),
        )
        .await;
    }
    attempt(&h, "ada@example.com", PASSWORD, "203.0.113.7")
        .await
        .expect("no lockout");
}

#[tokio::test]
async fn second_factors_and_refresh_tokens_are_throttled_too() {
    let h = Harness::new().await;
    for _ in 0..10 {
        let r = h
            .auth
            .complete_mfa(
                "not-a-token",
                SecondFactor::Totp("000000".into()),
                ip("198.51.100.3"),
            )
            .await;
        assert!(matches!(r, Err(AuthError::InvalidMfaToken)));
    }
    let r = h
        .auth
        .complete_mfa(
            "not-a-token",
            SecondFactor::Totp("000000".into()),
            ip("198.51.100.3"),
        )
        .await;
    assert!(matches!(r, Err(AuthError::Throttled(_))), "{r:?}");

    for _ in 0..30 {
        let r = h.auth.refresh("garbage", ip("198.51.100.4")).await;
        assert!(matches!(r, Err(AuthError::InvalidGrant)));
    }
    let r = h.auth.refresh("garbage", ip("198.51.100.4")).await;
    assert!(matches!(r, Err(AuthError::Throttled(_))), "{r:?}");
    assert!(matches!(
        h.auth.refresh("garbage", CLIENT).await,
        Err(AuthError::InvalidGrant)
    ));
}

#[tokio::test]
async fn common_and_personal_passwords_are_refused() {
    let h = Harness::new().await;
    let register = |email: &str, password: &str, name: &str| RegisterCommand {
        email: Email::parse(email).expect("email"),
        password: Password::new(password).expect("length is fine"),
        name: DisplayName::parse(name).expect("name"),
        tenant_name: None,
    };
    let cases = [
        ("a@example.com", "password1234", "Ann", Weakness::Common),
        (
            "grace.hopper@example.com",
            "gracehopper1906",
            "Someone",
            Weakness::Personal,
        ),
        (
            "b@example.com",
            "hopper-grace-1",
            "Grace Hopper",
            Weakness::Personal,
        ),
        (
            "c@example.com",
            "iam-test-2026!",
            "Carl",
            Weakness::Personal,
        ),
        (
            "d@example.com",
            "111111111111",
            "Dee",
            Weakness::Predictable,
        ),
    ];
    let before = h.stats.hashes();
    for (email, password, name, expected) in cases {
        let r = h
            .auth
            .register(register(email, password, name), CLIENT)
            .await;
        assert!(
            matches!(r, Err(AuthError::WeakPassword(w)) if w == expected),
            "{password}: {r:?}"
        );
    }
    assert_eq!(h.stats.hashes(), before, "refused before any hashing");

    let tenant = {
        h.register("owner@example.com").await;
        h.login("owner@example.com", PASSWORD)
            .await
            .expect("login")
            .tenant
    };
    let r = h
        .users
        .create(
            &svc(),
            tenant,
            NewUser {
                email: Email::parse("x@example.com").expect("email"),
                name: DisplayName::parse("X").expect("name"),
                password: Some(Password::new("qwertyuiop123").expect("length")),
                roles: vec![],
                metadata: Default::default(),
            },
        )
        .await;
    assert!(
        matches!(r, Err(AdminError::WeakPassword(Weakness::Common))),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_cannot_slip_past_the_limit() {
    let h = std::sync::Arc::new(Harness::new().await);
    h.register("ada@example.com").await;
    let before = h.stats.verifications();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            attempt(&h, "ada@example.com", "wrong guess 1234", "198.51.100.1").await
        }));
    }
    let mut throttled = 0;
    for t in tasks {
        if matches!(t.await.expect("task"), Err(AuthError::Throttled(_))) {
            throttled += 1;
        }
    }
    assert_eq!(throttled, 15, "exactly five guesses get through");
    assert_eq!(h.stats.verifications() - before, 5);
}

#[tokio::test]
async fn registrations_from_one_address_are_limited() {
    let h = Harness::new().await;
    let register = |n: usize| RegisterCommand {
        email: Email::parse(&format!("new{n}@example.com")).expect("email"),
        password: Password::new(PASSWORD).expect("password"),
        name: DisplayName::parse("New").expect("name"),
        tenant_name: None,
    };
    for n in 0..20 {
        h.auth
            .register(register(n), ip("198.51.100.20"))
            .await
            .expect("within the limit");
    }
    let before = h.stats.hashes();
    let r = h.auth.register(register(20), ip("198.51.100.20")).await;
    assert!(matches!(r, Err(AuthError::Throttled(_))), "{r:?}");
    assert_eq!(h.stats.hashes(), before, "refused before hashing");
    h.auth
        .register(register(21), ip("203.0.113.20"))
        .await
        .expect("other addresses go on");
}

#[tokio::test]
async fn ipv6_addresses_count_per_64() {
    let h = Harness::new().await;
    for n in 0..5 {
        let _ = attempt(
            &h,
            "nobody@example.com",
            "wrong guess 1234",
            &format!("2001:db8:1:2::{n:x}"),
        )
        .await;
    }
    let r = attempt(
        &h,
        "nobody@example.com",
        "wrong guess 1234",
        "2001:db8:1:2:ffff::1",
    )
    .await;
    assert!(
        matches!(r, Err(AuthError::Throttled(_))),
        "another address of the same /64: {r:?}"
    );
    let r = attempt(
        &h,
        "nobody@example.com",
        "wrong guess 1234",
        "2001:db8:1:3::1",
    )
    .await;
    assert!(
        matches!(r, Err(AuthError::InvalidCredentials)),
        "another /64: {r:?}"
    );
}
