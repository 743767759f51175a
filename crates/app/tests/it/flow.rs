//! The core flow: register → login → me → refresh → reuse revokes the family → logout.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestApp, problem, spawn};

async fn core_flow(app: &TestApp) {
    app.register("ada@example.com").await;
    let first = app.login("Ada@Example.com").await;
    assert_eq!(first["token_type"], "Bearer");
    assert_eq!(first["expires_in"], 900);
    assert_eq!(first["refresh_expires_in"], 604_800);
    let access = first["access_token"].as_str().expect("access");
    let refresh = first["refresh_token"].as_str().expect("refresh");

    let me: Value = app
        .get("/auth/me", Some(access))
        .await
        .json()
        .await
        .expect("me");
    assert_eq!(me["user"]["email"], "ada@example.com");
    assert_eq!(me["user"]["status"], "active");
    assert_eq!(me["roles"], json!(["owner"]));
    assert_eq!(me["tenant"]["id"], first["tenant_id"]);
    assert_eq!(me["tenant"]["name"], "Ada Lovelace");

    let r = app
        .post("/auth/refresh", json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let second: Value = r.json().await.expect("json");
    let second_access = second["access_token"].as_str().expect("access");
    let second_refresh = second["refresh_token"].as_str().expect("refresh");
    assert_ne!(second_refresh, refresh);
    assert_eq!(second["tenant_id"], first["tenant_id"]);
    assert_eq!(
        app.get("/auth/me", Some(second_access)).await.status(),
        StatusCode::OK
    );

    // The spent token comes back: invalid_grant, and the whole family dies with it.
    let (status, body) = problem(
        app.post("/auth/refresh", json!({ "refresh_token": refresh }))
            .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, _) = problem(
        app.post("/auth/refresh", json!({ "refresh_token": second_refresh }))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = problem(app.get("/auth/me", Some(second_access)).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "token rejected: revoked");

    // A new session, then logout ends it.
    let third = app.login("ada@example.com").await;
    let access = third["access_token"].as_str().expect("access");
    let r = app.post_bearer("/auth/logout", access).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/auth/me", Some(access)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = problem(
        app.post(
            "/auth/refresh",
            json!({ "refresh_token": third["refresh_token"] }),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn core_flow_on_postgres() {
    core_flow(&spawn(Backend::Postgres).await).await;
}

#[tokio::test]
async fn core_flow_in_memory() {
    core_flow(&spawn(Backend::Memory).await).await;
}

/// Verifies with `jsonwebtoken` (RustCrypto's p256), not josekit (OpenSSL) that signed it.
#[tokio::test]
async fn tokens_verify_against_the_jwks_with_an_independent_implementation() {
    let app = spawn(Backend::Postgres).await;
    app.register("ada@example.com").await;
    let tokens = app.login("ada@example.com").await;
    let access = tokens["access_token"].as_str().expect("access");

    let r = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let jwks: JwkSet = r.json().await.expect("jwks");
    let header = jsonwebtoken::decode_header(access).expect("header");
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let kid = header.kid.expect("kid");
    let jwk = jwks.find(&kid).expect("kid is published");
    let key = DecodingKey::from_jwk(jwk).expect("usable jwk");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["platform"]);
    validation.set_issuer(&["http://localhost:8080"]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Value>(access, &key, &validation).expect("verifies");
    let claims = data.claims;
    assert_eq!(claims["tenantId"], tokens["tenant_id"]);
    assert_eq!(claims["roles"], json!(["owner"]));
    assert!(claims["sid"].is_string() && claims["jti"].is_string());
    assert_eq!(claims["amr"], json!(["pwd"]));
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        900
    );

    // And a tampered payload does not verify there either.
    let mut parts: Vec<&str> = access.split('.').collect();
    let other = app.login("ada@example.com").await;
    let other_payload = other["access_token"]
        .as_str()
        .expect("access")
        .split('.')
        .nth(1)
        .expect("payload")
        .to_owned();
    parts[1] = &other_payload;
    assert!(jsonwebtoken::decode::<Value>(&parts.join("."), &key, &validation).is_err());
}

#[tokio::test]
async fn access_tokens_expire_on_a_frozen_clock() {
    let app = spawn(Backend::Postgres).await;
    app.register("ada@example.com").await;
    let tokens = app.login("ada@example.com").await;
    let access = tokens["access_token"].as_str().expect("access");
    app.clock.advance(chrono::Duration::minutes(14));
    assert_eq!(
        app.get("/auth/me", Some(access)).await.status(),
        StatusCode::OK
    );
    app.clock.advance(chrono::Duration::minutes(2));
    let r = app.get("/auth/me", Some(access)).await;
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    let (status, body) = problem(r).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "token rejected: expired");

    // The refresh token outlives the access token, until its own 7 days are up.
    let r = app
        .post(
            "/auth/refresh",
            json!({ "refresh_token": tokens["refresh_token"] }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let next: Value = r.json().await.expect("json");
    app.clock.advance(chrono::Duration::days(7));
    let (status, _) = problem(
        app.post(
            "/auth/refresh",
            json!({ "refresh_token": next["refresh_token"] }),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn(Backend::Postgres).await;
    let r = app.get("/healthz", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.get("/readyz", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("x-request-id"));
}
