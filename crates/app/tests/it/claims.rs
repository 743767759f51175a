//! Custom claims end to end, with a real HTTP hook server on loopback: values in tokens at
//! login and refresh and in ValidateToken, timeouts and failures under both policies, size
//! limits, scoping by tenant and descendants, reserved names, and deletion.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use iam_domain::{Membership, Metadata, RoleName, Tenant, TenantId, TenantName};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::rbac::{call, root_owner};
use crate::support::{Backend, PASSWORD, TestApp, problem, rpc, spawn};

/// A module's claim endpoint: answers by path, and counts calls.
struct Hook {
    base: String,
    calls: Arc<AtomicUsize>,
    /// While set, `/flaky` fails.
    down: Arc<std::sync::atomic::AtomicBool>,
    _server: tokio::task::JoinHandle<()>,
}

async fn hook_server() -> Hook {
    let calls = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c1, c2, c3, c4, c5) = (
        calls.clone(),
        calls.clone(),
        calls.clone(),
        calls.clone(),
        calls.clone(),
    );
    let flaky_down = down.clone();
    let app = axum::Router::new()
        .route(
            "/plan",
            post(move |Json(req): Json<Value>| async move {
                c1.fetch_add(1, Ordering::SeqCst);
                // Echoes what the IAM said, so the test sees the request reached it intact.
                Json(json!({ "value": { "tier": "pro", "for": req["user_id"], "claim": req["claim"] } }))
            }),
        )
        .route(
            "/slow",
            post(move || async move {
                c2.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(3)).await;
                Json(json!({ "value": "late" }))
            }),
        )
        .route(
            "/fail",
            post(move || async move {
                c3.fetch_add(1, Ordering::SeqCst);
                (StatusCode::INTERNAL_SERVER_ERROR, "boom")
            }),
        )
        .route(
            "/big",
            post(move || async move {
                c4.fetch_add(1, Ordering::SeqCst);
                Json(json!({ "value": "x".repeat(3000) }))
            }),
        )
        .route(
            "/flaky",
            post(move || {
                let down = flaky_down.clone();
                let c = c5.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    if down.load(Ordering::SeqCst) {
                        Err(StatusCode::SERVICE_UNAVAILABLE)
                    } else {
                        Ok(Json(json!({ "value": 42 })))
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("hook serves");
    });
    Hook {
        base: format!("http://{addr}"),
        calls,
        down,
        _server: server,
    }
}

async fn register(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    call(app, Method::POST, "/auth/claims", token, Some(body)).await
}

async fn registered(app: &TestApp, token: &str, body: Value) {
    let r = register(app, token, body).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
}

async fn login_as(app: &TestApp, email: &str, tenant: Option<&str>) -> reqwest::Response {
    let mut body = json!({ "email": email, "password": PASSWORD });
    if let Some(t) = tenant {
        body["tenant_id"] = json!(t);
    }
    app.post("/auth/login", body).await
}

/// The custom claims ValidateToken reports for a token.
async fn custom(app: &TestApp, token: &str) -> Value {
    let claims = rpc::validate(app, token).await.claims.expect("valid token");
    match claims.custom {
        Some(s) => {
            let map: serde_json::Map<String, Value> = s
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), pb_value(v)))
                .collect();
            Value::Object(map)
        }
        None => json!({}),
    }
}

fn pb_value(v: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &v.kind {
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::StructValue(s)) => Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), pb_value(v)))
                .collect(),
        ),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(pb_value).collect()),
        _ => Value::Null,
    }
}

async fn hooks_and_policies(backend: Backend) {
    let app = spawn(backend).await;
    let hook = hook_server().await;
    let (root_token, _) = root_owner(&app).await;
    app.register("ada@example.com").await;

    // A normal value, in the token at login, in ValidateToken, and again after refresh.
    registered(
        &app,
        &root_token,
        json!({ "name": "billing.plan", "scope": "platform",
                "source": { "type": "hook", "url": format!("{}/plan", hook.base), "timeout_ms": 2000, "on_failure": "refuse" } }),
    )
    .await;
    registered(
        &app,
        &root_token,
        json!({ "name": "billing.region", "scope": "platform",
                "source": { "type": "constant", "value": "eu" } }),
    )
    .await;
    let login = app.login("ada@example.com").await;
    let token = login["access_token"].as_str().expect("t");
    let claims = custom(&app, token).await;
    assert_eq!(claims["billing.plan"]["tier"], "pro");
    assert_eq!(claims["billing.plan"]["claim"], "billing.plan");
    assert_eq!(claims["billing.region"], "eu");
    let sub = rpc::validate(&app, token).await.claims.expect("claims").sub;
    assert_eq!(claims["billing.plan"]["for"], sub.as_str());
    let refreshed = app
        .post(
            "/auth/refresh",
            json!({ "refresh_token": login["refresh_token"] }),
        )
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.expect("json");
    let claims = custom(&app, refreshed["access_token"].as_str().expect("t")).await;
    assert_eq!(claims["billing.plan"]["tier"], "pro");

    // Other tenants see that platform claims exist, not where their values come from.
    let seen: Value = call(&app, Method::GET, "/auth/claims", token, None)
        .await
        .json()
        .await
        .expect("json");
    let items = seen["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{seen}");
    assert!(items.iter().all(|c| c.get("source").is_none()), "{seen}");
    let own: Value = call(&app, Method::GET, "/auth/claims", &root_token, None)
        .await
        .json()
        .await
        .expect("json");
    assert!(own["items"][0]["source"]["type"].is_string(), "{own}");

    // Deleting stops injection at once.
    let r = call(
        &app,
        Method::DELETE,
        "/auth/claims/billing.plan",
        &root_token,
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let login = app.login("ada@example.com").await;
    let claims = custom(&app, login["access_token"].as_str().expect("t")).await;
    assert!(claims.get("billing.plan").is_none(), "{claims}");
    assert_eq!(claims["billing.region"], "eu");

    // A slow hook under omit: the sign-in does not wait past its timeout, and has no claim.
    registered(
        &app,
        &root_token,
        json!({ "name": "crm.slow", "scope": "platform",
                "source": { "type": "hook", "url": format!("{}/slow", hook.base), "timeout_ms": 200, "on_failure": "omit" } }),
    )
    .await;
    // A failing hook and an oversize value, under omit.
    for (name, path) in [("crm.fail", "fail"), ("crm.big", "big")] {
        registered(
            &app,
            &root_token,
            json!({ "name": name, "scope": "platform",
                    "source": { "type": "hook", "url": format!("{}/{path}", hook.base), "timeout_ms": 1000, "on_failure": "omit" } }),
        )
        .await;
    }
    let started = std::time::Instant::now();
    let login = app.login("ada@example.com").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let claims = custom(&app, login["access_token"].as_str().expect("t")).await;
    for absent in ["crm.slow", "crm.fail", "crm.big"] {
        assert!(claims.get(absent).is_none(), "{absent}: {claims}");
    }
    assert_eq!(claims["billing.region"], "eu");
    for name in ["crm.slow", "crm.fail", "crm.big"] {
        let r = call(
            &app,
            Method::DELETE,
            &format!("/auth/claims/{name}"),
            &root_token,
            None,
        )
        .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }

    // The same failures under refuse: no token, a clear 503, and nothing half done.
    for (name, path, timeout) in [
        ("crm.slow", "slow", 200),
        ("crm.fail", "fail", 1000),
        ("crm.big", "big", 1000),
    ] {
        registered(
            &app,
            &root_token,
            json!({ "name": name, "scope": "platform",
                    "source": { "type": "hook", "url": format!("{}/{path}", hook.base), "timeout_ms": timeout, "on_failure": "refuse" } }),
        )
        .await;
        let (status, body) = problem(login_as(&app, "ada@example.com", None).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{name}: {body}");
        assert_eq!(body["code"], "claims_unavailable");
        assert_eq!(body["detail"], format!("claim {name}"));
        let r = call(
            &app,
            Method::DELETE,
            &format!("/auth/claims/{name}"),
            &root_token,
            None,
        )
        .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }

    // A refusing hook that fails at refresh leaves the refresh token good for a retry.
    registered(
        &app,
        &root_token,
        json!({ "name": "crm.flaky", "scope": "platform",
                "source": { "type": "hook", "url": format!("{}/flaky", hook.base), "timeout_ms": 1000, "on_failure": "refuse" } }),
    )
    .await;
    let login = app.login("ada@example.com").await;
    assert_eq!(
        custom(&app, login["access_token"].as_str().expect("t")).await["crm.flaky"],
        42.0
    );
    hook.down.store(true, Ordering::SeqCst);
    let (status, _) = problem(
        app.post(
            "/auth/refresh",
            json!({ "refresh_token": login["refresh_token"] }),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    hook.down.store(false, Ordering::SeqCst);
    let retried = app
        .post(
            "/auth/refresh",
            json!({ "refresh_token": login["refresh_token"] }),
        )
        .await;
    assert_eq!(retried.status(), StatusCode::OK, "the token was not spent");
    assert!(hook.calls.load(Ordering::SeqCst) > 0);
}

#[tokio::test]
async fn hooks_and_failure_policies_on_memory() {
    hooks_and_policies(Backend::Memory).await;
}

#[tokio::test]
async fn hooks_and_failure_policies_on_postgres() {
    hooks_and_policies(Backend::Postgres).await;
}

async fn scoping(backend: Backend) {
    let app = spawn(backend).await;
    app.register("ada@example.com").await;
    app.register("bob@example.com").await;
    let ada = app.login("ada@example.com").await;
    let ada_token = ada["access_token"].as_str().expect("t").to_owned();
    let parent: TenantId = ada["tenant_id"].as_str().expect("t").parse().expect("uuid");
    let bob = app.login("bob@example.com").await;

    // A child tenant of Ada's, with metadata, and Ada a member of it too, set up through the
    // store directly (POST /tenants is tested in tenants.rs).
    let me = app.get("/auth/me", Some(&ada_token)).await;
    let me: Value = me.json().await.expect("json");
    let ada_id = me["user"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let now = chrono::Utc::now();
    let child = Tenant {
        parent: Some(parent),
        metadata: Metadata::parse(json!({ "region": "eu-west" })).expect("metadata"),
        ..Tenant::new_top_level(
            TenantId::new_v7(now, [7; 10]),
            TenantName::parse("Child").expect("name"),
            ada_id,
            now,
        )
    };
    {
        let mut uow = app.app.store.begin().await.expect("begin");
        uow.insert_tenant(&child).await.expect("child");
        uow.insert_membership(&Membership {
            tenant: child.id,
            user: ada_id,
            roles: vec![RoleName::owner()],
            created_at: now + chrono::Duration::seconds(1),
        })
        .await
        .expect("membership");
        uow.commit().await.expect("commit");
    }

    // Ada's claims: one for her tenant alone, one for its subtree, one from tenant metadata.
    registered(
        &app,
        &ada_token,
        json!({ "name": "tenant.only", "scope": "tenant",
        "source": { "type": "constant", "value": true } }),
    )
    .await;
    registered(
        &app,
        &ada_token,
        json!({ "name": "tenant.tree", "scope": "tenant", "include_descendants": true,
        "source": { "type": "constant", "value": { "k": 1 } } }),
    )
    .await;
    registered(
        &app,
        &ada_token,
        json!({ "name": "tenant.region", "scope": "tenant", "include_descendants": true,
        "source": { "type": "tenant_metadata", "field": "region" } }),
    )
    .await;
    registered(
        &app,
        &ada_token,
        json!({ "name": "tenant.nick", "scope": "tenant",
        "source": { "type": "user_metadata", "field": "nick" } }),
    )
    .await;
    let r = call(
        &app,
        Method::PATCH,
        &format!("/users/{ada_id}"),
        &ada_token,
        Some(json!({ "metadata": { "nick": "countess" } })),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);

    let r = login_as(&app, "ada@example.com", Some(&parent.to_string())).await;
    assert_eq!(r.status(), StatusCode::OK);
    let at_parent: Value = r.json().await.expect("json");
    let claims = custom(&app, at_parent["access_token"].as_str().expect("t")).await;
    assert_eq!(claims["tenant.only"], true);
    assert_eq!(claims["tenant.tree"]["k"], 1.0);
    assert_eq!(claims["tenant.nick"], "countess");
    assert!(
        claims.get("tenant.region").is_none(),
        "the parent has no region: {claims}"
    );

    let r = login_as(&app, "ada@example.com", Some(&child.id.to_string())).await;
    assert_eq!(r.status(), StatusCode::OK);
    let at_child: Value = r.json().await.expect("json");
    let claims = custom(&app, at_child["access_token"].as_str().expect("t")).await;
    assert!(claims.get("tenant.only").is_none(), "{claims}");
    assert!(claims.get("tenant.nick").is_none(), "{claims}");
    assert_eq!(claims["tenant.tree"]["k"], 1.0);
    assert_eq!(claims["tenant.region"], "eu-west");

    // Without a tenant named, Ada is asked to choose; choosing the child gives its claims.
    let r = login_as(&app, "ada@example.com", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let pick: Value = r.json().await.expect("json");
    assert_eq!(pick["tenant_selection_required"], true);
    assert_eq!(pick["tenants"].as_array().expect("tenants").len(), 2);
    assert!(pick.get("access_token").is_none());
    let chosen = app
        .post(
            "/auth/select-tenant",
            json!({ "selection_token": pick["selection_token"], "tenant_id": child.id.to_string() }),
        )
        .await;
    assert_eq!(chosen.status(), StatusCode::OK);
    let chosen: Value = chosen.json().await.expect("json");
    assert_eq!(chosen["tenant_id"], child.id.to_string());
    let claims = custom(&app, chosen["access_token"].as_str().expect("t")).await;
    assert_eq!(claims["tenant.region"], "eu-west");
    let again = app
        .post(
            "/auth/select-tenant",
            json!({ "selection_token": pick["selection_token"], "tenant_id": child.id.to_string() }),
        )
        .await;
    let (status, body) = problem(again).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_selection_token"))
    );

    // Switching from the parent's session to the child: new tokens, with the child's claims;
    // a refresh there stays there.
    let switched = call(
        &app,
        Method::POST,
        "/auth/switch-tenant",
        at_parent["access_token"].as_str().expect("t"),
        Some(json!({ "tenant_id": child.id.to_string() })),
    )
    .await;
    assert_eq!(switched.status(), StatusCode::OK);
    let switched: Value = switched.json().await.expect("json");
    assert_eq!(switched["tenant_id"], child.id.to_string());
    let claims = custom(&app, switched["access_token"].as_str().expect("t")).await;
    assert_eq!(claims["tenant.region"], "eu-west");
    assert!(claims.get("tenant.only").is_none());
    let refreshed: Value = app
        .post(
            "/auth/refresh",
            json!({ "refresh_token": switched["refresh_token"] }),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(refreshed["tenant_id"], child.id.to_string());
    assert_eq!(
        custom(&app, refreshed["access_token"].as_str().expect("t")).await["tenant.region"],
        "eu-west"
    );
    let listed: Value = call(
        &app,
        Method::GET,
        "/auth/tenants",
        at_parent["access_token"].as_str().expect("t"),
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(listed["items"].as_array().expect("items").len(), 2);
    let (status, body) = problem(
        call(
            &app,
            Method::POST,
            "/auth/switch-tenant",
            bob["access_token"].as_str().expect("t"),
            Some(json!({ "tenant_id": child.id.to_string() })),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_a_member"))
    );

    // Bob's tenant gets none of them, and cannot see or delete them.
    let claims = custom(&app, bob["access_token"].as_str().expect("t")).await;
    assert_eq!(claims, json!({}));
    let bob_token = bob["access_token"].as_str().expect("t");
    let list: Value = call(&app, Method::GET, "/auth/claims", bob_token, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(list["items"], json!([]));
    let (status, _) = problem(
        call(
            &app,
            Method::DELETE,
            "/auth/claims/tenant.tree",
            bob_token,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let list: Value = call(&app, Method::GET, "/auth/claims", &ada_token, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(list["items"].as_array().expect("items").len(), 4);
}

#[tokio::test]
async fn scoping_by_tenant_and_descendants_on_memory() {
    scoping(Backend::Memory).await;
}

#[tokio::test]
async fn scoping_by_tenant_and_descendants_on_postgres() {
    scoping(Backend::Postgres).await;
}

#[tokio::test]
async fn registrations_are_validated() {
    let app = spawn(Backend::Memory).await;
    app.register("ada@example.com").await;
    let ada = app.login("ada@example.com").await;
    let token = ada["access_token"].as_str().expect("t");
    let constant = |name: &str| json!({ "name": name, "scope": "tenant", "source": { "type": "constant", "value": 1 } });
    for reserved in [
        "sub",
        "tenantId",
        "roles",
        "email",
        "scope",
        "iam.anything",
        "plan",
        "Billing.Plan",
    ] {
        let (status, body) = problem(register(&app, token, constant(reserved)).await).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{reserved}: {body}"
        );
        assert_eq!(body["errors"][0]["field"], "name");
    }
    let (status, body) = problem(
        register(
            &app,
            token,
            json!({ "name": "tenant.big", "scope": "tenant",
            "source": { "type": "constant", "value": "x".repeat(2000) } }),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .expect("m")
            .contains("at most 1024"),
        "{body}"
    );
    for (source, field) in [
        (
            json!({ "type": "hook", "url": "ftp://x/", "timeout_ms": 100, "on_failure": "omit" }),
            "source",
        ),
        (
            json!({ "type": "hook", "url": "http://h/", "timeout_ms": 0, "on_failure": "omit" }),
            "source",
        ),
        (
            json!({ "type": "user_metadata", "field": "" }),
            "source.field",
        ),
    ] {
        let (status, body) = problem(
            register(
                &app,
                token,
                json!({ "name": "tenant.x", "scope": "tenant", "source": source }),
            )
            .await,
        )
        .await;
        assert_eq!(
            (status, body["errors"][0]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{body}"
        );
    }
    let (status, body) = problem(register(&app, token, json!({ "name": "tenant.x", "scope": "tenant",
        "source": { "type": "hook", "url": "http://h/", "timeout_ms": 10, "on_failure": "sometimes" } })).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // Platform-wide claims are for the root tenant.
    let (status, body) = problem(
        register(
            &app,
            token,
            json!({ "name": "tenant.x", "scope": "platform",
        "source": { "type": "constant", "value": 1 } }),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_platform_root"))
    );
    registered(&app, token, constant("tenant.once")).await;
    let (status, body) = problem(register(&app, token, constant("tenant.once")).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("claim_taken"))
    );
    // A member may neither read nor write them.
    let r = call(
        &app,
        Method::POST,
        "/users",
        token,
        Some(json!({ "email": "mia@example.com", "name": "Mia", "password": PASSWORD })),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let mia = app.login("mia@example.com").await;
    let mia = mia["access_token"].as_str().expect("t");
    let (status, body) = problem(call(&app, Method::GET, "/auth/claims", mia, None).await).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (StatusCode::FORBIDDEN, Some("requires iam.claims.read"))
    );
    let (status, body) = problem(register(&app, mia, constant("tenant.mine")).await).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (StatusCode::FORBIDDEN, Some("requires iam.claims.write"))
    );
}

#[tokio::test]
async fn tokens_stay_within_the_size_limit() {
    let app = spawn(Backend::Memory).await;
    app.register("ada@example.com").await;
    let ada = app.login("ada@example.com").await;
    let token = ada["access_token"].as_str().expect("t");
    // Five claims of ~900 bytes each cannot all fit in a 4 KiB token: the largest are dropped.
    for n in 0..5 {
        registered(
            &app,
            token,
            json!({ "name": format!("tenant.c{n}"), "scope": "tenant",
            "source": { "type": "constant", "value": "y".repeat(880 + n) } }),
        )
        .await;
    }
    let login = app.login("ada@example.com").await;
    let access = login["access_token"].as_str().expect("t");
    assert!(access.len() <= 4096, "{}", access.len());
    let claims = custom(&app, access).await;
    let kept = claims.as_object().expect("object").len();
    assert!((1..5).contains(&kept), "{kept}");
    assert!(
        claims.get("tenant.c4").is_none(),
        "the largest goes first: {claims}"
    );
}
