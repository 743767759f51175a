//! Bad input gets a clear, stable problem document, never a 500.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Backend, TestApp, problem, spawn};

async fn raw(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = app.http.post(format!("{}{path}", app.base)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.send().await.expect("request")
}

#[tokio::test]
async fn malformed_requests_table() {
    let app = spawn(Backend::Memory).await;
    let json = Some("application/json");
    let big = format!(
        r#"{{"email":"a@b.c","password":"{}"}}"#,
        "x".repeat(20 * 1024)
    );
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Vec<u8>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "truncated json",
            "/auth/login",
            json,
            b"{".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "not json",
            "/auth/login",
            json,
            b"email=a".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "unknown field",
            "/auth/login",
            json,
            br#"{"email":"a@b.c","password":"p","admin":true}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "missing field",
            "/auth/login",
            json,
            br#"{"email":"a@b.c"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "wrong type",
            "/auth/login",
            json,
            br#"{"email":1,"password":"p"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "tenant id not a uuid",
            "/auth/login",
            json,
            br#"{"email":"a@b.c","password":"p","tenant_id":"x"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "no content type",
            "/auth/login",
            None,
            br#"{"email":"a@b.c","password":"p"}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "too large",
            "/auth/login",
            json,
            big.into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "bad email",
            "/auth/login",
            json,
            br#"{"email":"not-an-email","password":"p"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "refresh garbage",
            "/auth/refresh",
            json,
            br#"{"refresh_token":"garbage"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
    ];
    for (name, path, ct, body, status, code) in cases {
        let (got, problem) = problem(raw(&app, path, ct, body).await).await;
        assert_eq!(
            (got, problem["code"].as_str()),
            (status, Some(code)),
            "{name}"
        );
    }
}

#[tokio::test]
async fn register_lists_every_invalid_field_without_echoing_secrets() {
    let app = spawn(Backend::Memory).await;
    let r = app
        .post(
            "/auth/register",
            json!({ "email": "nope", "password": "hunter2", "name": " ", "tenant_name": "" }),
        )
        .await;
    let (status, body) = problem(r).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    assert_eq!(fields, ["email", "password", "name", "tenant_name"]);
    assert!(!body.to_string().contains("hunter2"));
    assert!(body.to_string().contains("at least 12 characters"));
}

#[tokio::test]
async fn unknown_routes_methods_and_missing_credentials() {
    let app = spawn(Backend::Memory).await;
    let (status, body) = problem(app.get("/nope", None).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, _) = problem(app.get("/auth/login", None).await).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    let r = app.get("/auth/me", None).await;
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let (status, body) = problem(r).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );

    let r = app
        .http
        .get(format!("{}/auth/me", app.base))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (_, body) = problem(app.get("/auth/me", Some("a.b.c")).await).await;
    assert_eq!(body["detail"], "token rejected: malformed");
    let r = app.post_bearer("/auth/logout", "nonsense").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
