//! Brute-force throttling and password screening over the real router.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{
    Backend, PASSWORD, TestApp, new_master_key, problem, spawn, spawn_second, spawn_with,
    test_settings,
};

async fn login_from(
    app: &TestApp,
    email: &str,
    password: &str,
    forwarded: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .http
        .post(format!("{}/auth/login", app.base))
        .json(&json!({ "email": email, "password": password }));
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    req.send().await.expect("request")
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_attacker_is_throttled_and_the_victim_is_not() {
    let key = new_master_key();
    let mut settings = test_settings(None, &key);
    settings.http.trusted_proxies = vec!["127.0.0.1".into()];
    let app = spawn_with(settings, None, key).await;
    app.register("ada@example.com").await;
    let attacker = Some("198.51.100.1");
    for _ in 0..5 {
        let r = login_from(&app, "ada@example.com", "wrong guess 1234", attacker).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let before = app.app.hasher_stats.verifications();
    let r = login_from(&app, "ada@example.com", PASSWORD, attacker).await;
    assert_eq!(r.headers()["retry-after"], "360");
    let (status, body) = problem(r).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("too_many_attempts"))
    );
    assert_eq!(
        app.app.hasher_stats.verifications(),
        before,
        "no Argon2 work when throttled"
    );

    let victim = login_from(&app, "ada@example.com", PASSWORD, Some("203.0.113.7")).await;
    assert_eq!(
        victim.status(),
        StatusCode::OK,
        "the rightful user signs in from a clean address"
    );

    app.clock.advance(chrono::Duration::seconds(360));
    let recovered = login_from(&app, "ada@example.com", PASSWORD, attacker).await;
    assert_eq!(
        recovered.status(),
        StatusCode::OK,
        "the throttle recovers by itself"
    );
}

#[tokio::test]
async fn forwarded_headers_from_untrusted_peers_are_ignored() {
    let app = spawn(Backend::Memory).await;
    app.register("ada@example.com").await;
    // Each failure claims a different address; none is believed, so all count against the peer.
    for n in 0..5 {
        let spoofed = format!("198.51.100.{n}");
        let r = login_from(&app, "ada@example.com", "wrong guess 1234", Some(&spoofed)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = login_from(&app, "ada@example.com", PASSWORD, Some("203.0.113.99")).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a fresh spoofed address does not escape"
    );
}

#[tokio::test]
async fn throttled_answers_are_identical_for_known_and_unknown_accounts() {
    let app = spawn(Backend::Memory).await;
    app.register("ada@example.com").await;
    let mut answers = Vec::new();
    for email in ["ada@example.com", "nobody@example.com"] {
        for _ in 0..5 {
            login_from(&app, email, "wrong guess 1234", None).await;
        }
        let r = login_from(&app, email, "wrong guess 1234", None).await;
        answers.push((
            r.status(),
            r.headers()["retry-after"].clone(),
            r.bytes().await.expect("body"),
        ));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].0, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn two_instances_share_the_counters() {
    let a = spawn(Backend::Postgres).await;
    let b = spawn_second(&a).await;
    a.register("ada@example.com").await;
    for app in [&a, &b, &a, &b, &a] {
        let r = login_from(app, "ada@example.com", "wrong guess 1234", None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = login_from(&b, "ada@example.com", PASSWORD, None).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "b counts a's failures"
    );
}

#[tokio::test]
async fn common_and_personal_passwords_are_refused_without_echoing_them() {
    let app = spawn(Backend::Memory).await;
    let cases = [
        ("password1234", "too common"),
        (
            "adalovelace1815",
            "built from your email address, your name or the product's name",
        ),
        ("aaaaaaaaaaaaaaaa", "repetitive or sequential"),
    ];
    for (password, reason) in cases {
        let r = app
            .post(
                "/auth/register",
                json!({ "email": "ada.lovelace@example.com", "password": password, "name": "Ada Lovelace" }),
            )
            .await;
        let (status, body) = problem(r).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{password}");
        assert_eq!(body["errors"][0]["field"], "password");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .expect("message")
                .contains(reason),
            "{body}"
        );
        assert!(!body.to_string().contains(password), "never echoed");
    }
}

#[tokio::test]
async fn grpc_sign_ins_are_throttled_the_same_way() {
    use crate::support::rpc::{self, pb};
    let app = spawn(Backend::Memory).await;
    app.register("ada@example.com").await;
    let mut auth = rpc::auth(&app).await;
    let wrong = || pb::LoginRequest {
        email: "ada@example.com".into(),
        password: "wrong guess 1234".into(),
        tenant_id: String::new(),
    };
    for _ in 0..5 {
        let e = auth.login(wrong()).await.expect_err("wrong password");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    }
    let e = auth.login(wrong()).await.expect_err("throttled");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(e.message().contains("retry in 360 s"), "{}", e.message());
}
