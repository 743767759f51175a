//! TOTP MFA end to end: enrolment, two-step sign-in, recovery, step-up, over REST and gRPC.

use iam_adapters_crypto::RfcTotp;
use iam_domain::TotpSecret;
use iam_domain::mfa::totp_step;
use iam_ports::Clock as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::rpc::{self, pb};
use crate::support::{Backend, PASSWORD, TestApp, problem, spawn};

fn code(app: &TestApp, secret: &TotpSecret) -> String {
    RfcTotp::code(secret, totp_step(app.clock.now()))
}

async fn post_json_bearer(
    app: &TestApp,
    path: &str,
    token: &str,
    body: Value,
) -> reqwest::Response {
    app.http
        .post(format!("{}{path}", app.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request")
}

/// Registers, signs in, enrols and confirms; returns the access token, secret and codes.
async fn enrolled(app: &TestApp, email: &str) -> (String, TotpSecret, Vec<String>) {
    app.register(email).await;
    let access = app.login(email).await["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let r = app.post_bearer("/auth/mfa/enable", &access).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let enrolment: Value = r.json().await.expect("json");
    let secret =
        TotpSecret::from_base32(enrolment["secret"].as_str().expect("secret")).expect("base32");
    assert!(
        enrolment["otpauth_uri"]
            .as_str()
            .expect("uri")
            .starts_with("otpauth://totp/IAM:")
    );
    assert!(enrolment["qr_svg"].as_str().expect("svg").contains("<svg"));

    let (status, body) = problem(
        post_json_bearer(
            app,
            "/auth/mfa/verify",
            &access,
            json!({ "code": "000000" }),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_mfa_code"))
    );
    let r = post_json_bearer(
        app,
        "/auth/mfa/verify",
        &access,
        json!({ "code": code(app, &secret) }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let codes: Vec<String> = r.json::<Value>().await.expect("json")["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    // The confirming code's step is spent.
    app.clock.advance(chrono::Duration::seconds(30));
    (access, secret, codes)
}

async fn mfa_token(app: &TestApp, email: &str) -> String {
    let r = app
        .post(
            "/auth/login",
            json!({ "email": email, "password": PASSWORD }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["mfa_required"], true, "{body}");
    assert!(
        body.get("access_token").is_none(),
        "no tokens before the second factor"
    );
    body["mfa_token"].as_str().expect("mfa token").to_owned()
}

#[tokio::test]
async fn rest_enrolment_sign_in_recovery_step_up_and_disable() {
    let app = spawn(Backend::Postgres).await;
    let (access, secret, codes) = enrolled(&app, "ada@example.com").await;

    let token = mfa_token(&app, "ada@example.com").await;
    let (status, body) = problem(
        app.post(
            "/auth/mfa/verify",
            json!({ "mfa_token": token, "code": "000000" }),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_mfa_code"))
    );
    let r = app
        .post(
            "/auth/mfa/verify",
            json!({ "mfa_token": token, "code": code(&app, &secret) }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let signed_in: Value = r.json().await.expect("json");
    let second_access = signed_in["access_token"].as_str().expect("access");
    let claims = rpc::validate(&app, second_access)
        .await
        .claims
        .expect("claims");
    assert_eq!(claims.amr, vec!["pwd", "otp", "mfa"]);

    let token = mfa_token(&app, "ada@example.com").await;
    let r = app
        .post(
            "/auth/recovery",
            json!({ "mfa_token": token, "code": codes[0].to_lowercase() }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let summary: Value = app
        .get("/auth/recovery-codes", Some(&access))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (summary["remaining"].as_u64(), summary["total"].as_u64()),
        (Some(9), Some(10))
    );
    let token = mfa_token(&app, "ada@example.com").await;
    let (status, _) = problem(
        app.post(
            "/auth/recovery",
            json!({ "mfa_token": token, "code": codes[0] }),
        )
        .await,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a recovery code works once"
    );

    let (status, _) = problem(
        post_json_bearer(&app, "/auth/recovery-codes/regenerate", &access, json!({})).await,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "step-up proof required"
    );
    let (status, body) = problem(
        post_json_bearer(
            &app,
            "/auth/recovery-codes/regenerate",
            &access,
            json!({ "password": "wrong password!" }),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("step_up_failed"))
    );
    let r = post_json_bearer(
        &app,
        "/auth/recovery-codes/regenerate",
        &access,
        json!({ "password": PASSWORD }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let fresh: Value = r.json().await.expect("json");
    assert_eq!(fresh["recovery_codes"].as_array().expect("codes").len(), 10);
    let token = mfa_token(&app, "ada@example.com").await;
    let (status, _) = problem(
        app.post(
            "/auth/recovery",
            json!({ "mfa_token": token, "code": codes[1] }),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old set is gone");

    // The sign-in above spent this step's code; step-up needs the next one.
    app.clock.advance(chrono::Duration::seconds(30));
    let r = post_json_bearer(
        &app,
        "/auth/mfa/disable",
        &access,
        json!({ "code": code(&app, &secret) }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/auth/me", Some(&access)).await.status(),
        StatusCode::OK,
        "the caller's session goes on"
    );
    assert!(
        !rpc::validate(&app, second_access).await.valid,
        "other sessions end"
    );
    let tokens = app.login("ada@example.com").await;
    assert!(tokens["access_token"].is_string(), "one step again");
}

#[tokio::test]
async fn secrets_are_not_in_clear_in_the_database() {
    let app = spawn(Backend::Postgres).await;
    let (_, secret, codes) = enrolled(&app, "ada@example.com").await;
    let db = app.db.clone().expect("db");
    let psql = |sql: &str| {
        let out = std::process::Command::new("psql")
            .args([db.url.as_str(), "-AtX", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let sealed = psql("SELECT encode(sealed_secret, 'hex') FROM mfa_enrolments");
    let hex: String = secret.expose().iter().map(|b| format!("{b:02x}")).collect();
    assert!(!sealed.trim().is_empty());
    assert!(!sealed.contains(&hex), "the TOTP secret is sealed");
    let everything = psql(
        "SELECT row_to_json(m)::text FROM mfa_enrolments m UNION ALL SELECT row_to_json(r)::text FROM recovery_codes r",
    );
    assert!(!everything.contains(&secret.base32()));
    for c in &codes {
        assert!(
            !everything.contains(c) && !everything.contains(&c.replace('-', "")),
            "recovery codes are hashed"
        );
    }
    let hashes = psql("SELECT hash FROM recovery_codes");
    assert_eq!(hashes.lines().count(), 10);
    assert!(hashes.lines().all(|h| h.starts_with("$argon2id$v=19$")));
}

#[tokio::test]
async fn grpc_login_mirrors_the_second_step() {
    let app = spawn(Backend::Memory).await;
    let (_, secret, codes) = enrolled(&app, "ada@example.com").await;
    let mut auth = rpc::auth(&app).await;
    let login = || pb::LoginRequest {
        email: "ada@example.com".into(),
        password: PASSWORD.into(),
        tenant_id: String::new(),
    };
    let challenge = |r: pb::LoginResponse| match r.outcome {
        Some(pb::login_response::Outcome::Mfa(m)) => m.mfa_token,
        other => panic!("expected a challenge, got {other:?}"),
    };
    let token = challenge(auth.login(login()).await.expect("login").into_inner());
    let wrong = auth
        .verify_mfa(pb::VerifyMfaRequest {
            mfa_token: token.clone(),
            code: "000000".into(),
        })
        .await
        .expect_err("wrong code");
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    assert!(wrong.message().starts_with("invalid_mfa_code"));
    let tokens = auth
        .verify_mfa(pb::VerifyMfaRequest {
            mfa_token: token,
            code: code(&app, &secret),
        })
        .await
        .expect("right code")
        .into_inner();
    assert!(rpc::validate(&app, &tokens.access_token).await.valid);

    let token = challenge(auth.login(login()).await.expect("login").into_inner());
    let tokens = auth
        .recover(pb::RecoverRequest {
            mfa_token: token,
            recovery_code: codes[2].clone(),
        })
        .await
        .expect("recovery")
        .into_inner();
    let claims = rpc::validate(&app, &tokens.access_token)
        .await
        .claims
        .expect("claims");
    assert_eq!(claims.amr, vec!["pwd", "rcv", "mfa"]);
}
