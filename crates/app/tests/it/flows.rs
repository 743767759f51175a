//! Verification, reset and invitations end to end, with mail delivered to a real SMTP server on
//! loopback and its links followed.

use std::time::Duration;

use iam_adapters_mail::testing::SmtpTestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    Backend, PASSWORD, TestApp, new_master_key, problem, spawn_with, test_settings, with_smtp,
};

pub(crate) async fn spawn_mailing(backend: Backend, smtp: &SmtpTestServer) -> TestApp {
    let key = new_master_key();
    let db = match backend {
        Backend::Postgres => Some(std::sync::Arc::new(
            iam_adapters_postgres::testing::TestDatabase::new().await,
        )),
        Backend::Memory => None,
    };
    let settings = with_smtp(test_settings(db.as_deref(), &key), smtp.port());
    spawn_with(settings, db, key).await
}

/// The token of the `n`-th message's link, checking the link's base.
pub(crate) async fn link_token(smtp: &SmtpTestServer, n: usize, path: &str) -> String {
    let mail = smtp.wait_for(n, Duration::from_secs(10)).await;
    assert!(mail.len() >= n, "message {n} did not arrive");
    let text = mail[n - 1].text_body().expect("a text part");
    let prefix = format!("http://localhost:8080/{path}?token=");
    let start = text
        .find(&prefix)
        .unwrap_or_else(|| panic!("no {path} link in: {text}"))
        + prefix.len();
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[tokio::test]
async fn verify_reset_and_invite_through_real_mail() {
    let smtp = SmtpTestServer::start().await;
    let app = spawn_mailing(Backend::Postgres, &smtp).await;
    app.register("ada@example.com").await;
    let first = app.login("ada@example.com").await;
    let access = first["access_token"].as_str().expect("access").to_owned();

    // Verification.
    let r = app
        .post(
            "/auth/request-verify-email",
            json!({ "email": "ada@example.com" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let token = link_token(&smtp, 1, "verify-email").await;
    assert!(
        smtp.received().await[0]
            .to
            .iter()
            .any(|t| t.contains("ada@example.com"))
    );
    let r = app
        .post("/auth/verify-email", json!({ "token": token }))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let me: Value = app
        .get("/auth/me", Some(&access))
        .await
        .json()
        .await
        .expect("me");
    assert_eq!(me["user"]["email_verified"], true);
    let (status, body) = problem(
        app.post("/auth/verify-email", json!({ "token": token }))
            .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_link")),
        "single use"
    );

    // Reset: the new password works, the old one and every old session do not.
    let r = app
        .post("/auth/request-reset", json!({ "email": "ada@example.com" }))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let token = link_token(&smtp, 2, "reset-password").await;
    let (status, body) = problem(
        app.post(
            "/auth/reset-password",
            json!({ "token": token, "new_password": "password1234" }),
        )
        .await,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "screened like any new password: {body}"
    );
    let new_password = "a brand new passphrase, long";
    let r = app
        .post(
            "/auth/reset-password",
            json!({ "token": token, "new_password": new_password }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, _) = problem(
        app.post(
            "/auth/refresh",
            json!({ "refresh_token": first["refresh_token"] }),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a reset ends old sessions");
    assert_eq!(
        app.get("/auth/me", Some(&access)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .post(
            "/auth/login",
            json!({ "email": "ada@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the old password is gone"
    );
    let r = app
        .post(
            "/auth/login",
            json!({ "email": "ada@example.com", "password": new_password }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let owner: Value = r.json().await.expect("json");
    let owner_access = owner["access_token"].as_str().expect("access").to_owned();
    let (status, _) = problem(
        app.post(
            "/auth/reset-password",
            json!({ "token": token, "new_password": "yet another long passphrase" }),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a reset link works once");

    // An invitation to someone without an account.
    let r = app
        .http
        .post(format!("{}/auth/invite", app.base))
        .bearer_auth(&owner_access)
        .json(&json!({ "email": "grace@example.com" }))
        .send()
        .await
        .expect("invite");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let token = link_token(&smtp, 3, "accept-invite").await;
    let (status, _) = problem(
        app.post("/auth/accept-invite", json!({ "token": token }))
            .await,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a new account needs details"
    );
    let r = app
        .post(
            "/auth/accept-invite",
            json!({ "token": token, "name": "Grace", "password": "hopper's own passphrase" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let joined: Value = r.json().await.expect("json");
    assert_eq!(joined["created"], true);
    assert_eq!(joined["tenant_id"], owner["tenant_id"]);
    let grace = app
        .post(
            "/auth/login",
            json!({ "email": "grace@example.com", "password": "hopper's own passphrase" }),
        )
        .await;
    assert_eq!(grace.status(), StatusCode::OK);
    let grace: Value = grace.json().await.expect("json");
    let me: Value = app
        .get("/auth/me", grace["access_token"].as_str())
        .await
        .json()
        .await
        .expect("me");
    assert_eq!(me["roles"], json!(["member"]));
    assert_eq!(
        me["user"]["email_verified"], true,
        "the invitation proved the address"
    );
}

#[tokio::test]
async fn superseded_and_expired_links_fail() {
    let smtp = SmtpTestServer::start().await;
    let app = spawn_mailing(Backend::Memory, &smtp).await;
    app.register("ada@example.com").await;
    // One after the other: each request's work happens after its answer.
    let r = app
        .post("/auth/request-reset", json!({ "email": "ada@example.com" }))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let older = link_token(&smtp, 1, "reset-password").await;
    let r = app
        .post("/auth/request-reset", json!({ "email": "ada@example.com" }))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let newer = link_token(&smtp, 2, "reset-password").await;
    let reset =
        |token: &str| json!({ "token": token, "new_password": "a brand new passphrase, long" });
    let (status, _) = problem(app.post("/auth/reset-password", reset(&older)).await).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "superseded by the newer link"
    );
    app.clock.advance(chrono::Duration::minutes(61));
    let (status, _) = problem(app.post("/auth/reset-password", reset(&newer)).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "expired after an hour");
}

#[tokio::test]
async fn requests_answer_alike_whether_or_not_the_account_exists() {
    let smtp = SmtpTestServer::start().await;
    let app = spawn_mailing(Backend::Memory, &smtp).await;
    app.register("ada@example.com").await;
    let owner = app.login("ada@example.com").await;
    for path in ["/auth/request-reset", "/auth/request-verify-email"] {
        let mut answers = Vec::new();
        for email in ["ada@example.com", "nobody@example.com"] {
            let r = app.post(path, json!({ "email": email })).await;
            answers.push((
                r.status(),
                r.headers()["content-type"].clone(),
                r.bytes().await.expect("body"),
            ));
        }
        assert_eq!(answers[0], answers[1], "{path}");
        assert_eq!(answers[0].0, StatusCode::ACCEPTED);
    }
    let mut answers = Vec::new();
    for email in ["ada@example.com", "nobody@example.com"] {
        let r = app
            .http
            .post(format!("{}/auth/invite", app.base))
            .bearer_auth(owner["access_token"].as_str().expect("access"))
            .json(&json!({ "email": email }))
            .send()
            .await
            .expect("invite");
        answers.push((r.status(), r.bytes().await.expect("body")));
    }
    assert_eq!(answers[0], answers[1]);
    // Registering a taken address answers like a new one, and its owner hears of it.
    app.register("ada@example.com").await;
    let mail = smtp.wait_for(5, Duration::from_secs(10)).await;
    let notices = mail
        .iter()
        .filter(|m| {
            m.subject()
                .is_some_and(|s| s.starts_with("Someone tried to register"))
        })
        .count();
    assert_eq!(notices, 1);
}

#[tokio::test]
async fn links_ignore_the_request_host() {
    let smtp = SmtpTestServer::start().await;
    let app = spawn_mailing(Backend::Memory, &smtp).await;
    app.register("ada@example.com").await;
    let r = app
        .http
        .post(format!("{}/auth/request-reset", app.base))
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .json(&json!({ "email": "ada@example.com" }))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mail = smtp.wait_for(1, Duration::from_secs(10)).await;
    let text = mail[0].text_body().expect("text");
    assert!(
        text.contains("http://localhost:8080/reset-password?token="),
        "{text}"
    );
    assert!(!text.contains("evil.example"));
}

#[tokio::test]
async fn an_smtp_outage_loses_no_mail() {
    let smtp = SmtpTestServer::start().await;
    let port = smtp.port();
    smtp.stop();
    let app = spawn_mailing(Backend::Postgres, &smtp).await;
    app.register("ada@example.com").await;
    let r = app
        .post("/auth/request-reset", json!({ "email": "ada@example.com" }))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Queued, and failing while the server is down.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.app.mail.pending().await.expect("pending") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the request queued no mail"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.app.mail.pending().await.expect("pending"),
        1,
        "still queued"
    );
    let back = SmtpTestServer::start_on(port).await;
    let mail = back.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(mail.len(), 1, "delivered once the server is back");
    // Marked sent right after the server accepted it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.app.mail.pending().await.expect("pending") != 0 {
        assert!(std::time::Instant::now() < deadline, "not marked sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        mail[0]
            .text_body()
            .expect("text")
            .contains("reset-password?token=")
    );
}

#[tokio::test]
async fn temporary_refusals_are_retried_and_nothing_is_sent_twice() {
    let smtp = SmtpTestServer::start().await;
    smtp.fail_data(451, 2);
    let app = spawn_mailing(Backend::Memory, &smtp).await;
    app.register("ada@example.com").await;
    let r = app
        .post("/auth/request-reset", json!({ "email": "ada@example.com" }))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mail = smtp.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(mail.len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.received().await.len(), 1, "delivered exactly once");
}

#[tokio::test]
async fn unverified_addresses_may_be_refused_sign_in() {
    let smtp = SmtpTestServer::start().await;
    let key = new_master_key();
    let mut settings = with_smtp(test_settings(None, &key), smtp.port());
    settings.flows.require_verified_email = true;
    let app = spawn_with(settings, None, key).await;
    app.register("ada@example.com").await;
    let r = app
        .post(
            "/auth/login",
            json!({ "email": "ada@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "the generic answer");
    app.post(
        "/auth/request-verify-email",
        json!({ "email": "ada@example.com" }),
    )
    .await;
    let token = link_token(&smtp, 1, "verify-email").await;
    assert_eq!(
        app.post("/auth/verify-email", json!({ "token": token }))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    app.login("ada@example.com").await;
}

#[tokio::test]
async fn link_requests_are_rate_limited_per_address_alike_for_everyone() {
    let smtp = SmtpTestServer::start().await;
    let app = spawn_mailing(Backend::Memory, &smtp).await;
    app.register("ada@example.com").await;
    let mut last = Vec::new();
    for email in ["ada@example.com", "nobody@example.com"] {
        for _ in 0..3 {
            let r = app
                .post("/auth/request-reset", json!({ "email": email }))
                .await;
            assert_eq!(r.status(), StatusCode::ACCEPTED);
        }
        let r = app
            .post("/auth/request-reset", json!({ "email": email }))
            .await;
        assert!(r.headers().contains_key("retry-after"));
        let (status, body) = problem(r).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        last.push(body);
    }
    assert_eq!(
        last[0], last[1],
        "the same answer for an account and for nobody"
    );
}
