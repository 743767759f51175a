//! Register and login answer alike, and cost alike, whether or not the account exists.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Backend, PASSWORD, spawn};

#[tokio::test]
async fn register_answers_identically_for_new_and_existing_emails() {
    let app = spawn(Backend::Postgres).await;
    let body = json!({ "email": "ada@example.com", "password": PASSWORD, "name": "Ada" });
    let stats = app.app.hasher_stats.clone();

    let before = stats.hashes();
    let new = app.post("/auth/register", body.clone()).await;
    assert_eq!(stats.hashes(), before + 1);
    let (new_status, new_type, new_body) = (
        new.status(),
        new.headers()["content-type"].clone(),
        new.bytes().await.expect("body"),
    );

    let before = stats.hashes();
    let again = app.post("/auth/register", body).await;
    assert_eq!(
        stats.hashes(),
        before + 1,
        "an existing email costs the same hash"
    );
    assert_eq!(again.status(), new_status);
    assert_eq!(again.headers()["content-type"], new_type);
    assert_eq!(
        again.bytes().await.expect("body"),
        new_body,
        "byte-identical"
    );
    assert_eq!(new_status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn login_failures_are_identical_and_cost_one_verification_each() {
    let app = spawn(Backend::Postgres).await;
    app.register("ada@example.com").await;
    let stats = app.app.hasher_stats.clone();

    let mut answers = Vec::new();
    for (email, password) in [
        ("nobody@example.com", PASSWORD),
        ("ada@example.com", "not the right password"),
    ] {
        let before = stats.verifications();
        let r = app
            .post(
                "/auth/login",
                json!({ "email": email, "password": password }),
            )
            .await;
        assert_eq!(
            stats.verifications(),
            before + 1,
            "{email}: one Argon2 verification"
        );
        answers.push((r.status(), r.bytes().await.expect("body")));
    }
    assert_eq!(
        answers[0], answers[1],
        "unknown email and wrong password answer alike"
    );
    assert_eq!(answers[0].0, StatusCode::UNAUTHORIZED);

    let before = stats.verifications();
    app.login("ada@example.com").await;
    assert_eq!(stats.verifications(), before + 1, "success costs the same");
}
