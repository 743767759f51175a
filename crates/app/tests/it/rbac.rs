//! Users and RBAC end to end: the permission matrix over every administrative endpoint, tenant
//! isolation, permissions in ValidateToken, the user token over gRPC, and `iam bootstrap`.

use iam_application::{BootstrapCommand, Bootstrapped};
use iam_domain::{DisplayName, Email, Password, TenantName};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use tonic::Code;

use crate::support::{Backend, PASSWORD, TestApp, problem, rpc, rpc::pb, spawn};

pub(crate) async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Response {
    build(app, method, path, token, body)
        .send()
        .await
        .expect("request")
}

pub(crate) fn build(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::RequestBuilder {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(token)
        .header("x-request-id", "matrix-1");
    if let Some(body) = body {
        req = req.json(&body);
    }
    req
}

/// A request acting in `tenant` through `X-Tenant-Id`.
pub(crate) async fn call_in(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    tenant: &str,
    body: Option<Value>,
) -> Response {
    build(app, method, path, token, body)
        .header("x-tenant-id", tenant)
        .send()
        .await
        .expect("request")
}

pub(crate) async fn ok_json(r: Response, status: StatusCode) -> Value {
    assert_eq!(r.status(), status, "{:?}", r.text().await);
    r.json().await.expect("json")
}

/// Makes the root tenant (so permission registration is in reach) and signs its owner in.
pub(crate) async fn root_owner(app: &TestApp) -> (String, String) {
    let done = app
        .app
        .rbac
        .bootstrap(BootstrapCommand {
            email: Email::parse("root@example.com").expect("email"),
            password: Password::new(PASSWORD).expect("password"),
            name: DisplayName::parse("Root").expect("name"),
            tenant_name: TenantName::parse("Platform").expect("name"),
        })
        .await
        .expect("bootstrap");
    assert!(matches!(done, Bootstrapped::Created { .. }));
    let login = app.login("root@example.com").await;
    (
        login["access_token"].as_str().expect("token").to_owned(),
        login["tenant_id"].as_str().expect("tenant").to_owned(),
    )
}

pub(crate) async fn create_user(app: &TestApp, token: &str, email: &str, roles: &[&str]) -> String {
    let body = ok_json(
        call(
            app,
            Method::POST,
            "/users",
            token,
            Some(
                json!({ "email": email, "name": "Someone", "password": PASSWORD, "roles": roles }),
            ),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    body["id"].as_str().expect("id").to_owned()
}

pub(crate) const MANAGE: &str = "iam.tenants.manage-descendants";

/// Creates a tenant below the caller's (or below `parent`) and returns its id.
pub(crate) async fn create_tenant(
    app: &TestApp,
    token: &str,
    name: &str,
    parent: Option<&str>,
) -> String {
    let mut body = json!({ "name": name });
    if let Some(p) = parent {
        body["parent_id"] = json!(p);
    }
    let created = ok_json(
        call(app, Method::POST, "/tenants", token, Some(body)).await,
        StatusCode::CREATED,
    )
    .await;
    created["id"].as_str().expect("id").to_owned()
}

/// Creates a member of `tenant` (a descendant of the caller's) through `X-Tenant-Id`.
pub(crate) async fn create_user_in(
    app: &TestApp,
    token: &str,
    tenant: &str,
    email: &str,
) -> String {
    let body = ok_json(
        call_in(
            app,
            Method::POST,
            "/users",
            token,
            tenant,
            Some(json!({ "email": email, "name": "Member", "password": PASSWORD })),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    body["id"].as_str().expect("id").to_owned()
}

pub(crate) async fn create_role(
    app: &TestApp,
    token: &str,
    name: &str,
    permissions: &[&str],
) -> String {
    let body = ok_json(
        call(
            app,
            Method::POST,
            "/roles",
            token,
            Some(json!({ "name": name, "permissions": permissions })),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    body["id"].as_str().expect("id").to_owned()
}

async fn set_permissions(app: &TestApp, token: &str, role: &str, permissions: &[&str]) {
    ok_json(
        call(
            app,
            Method::PATCH,
            &format!("/roles/{role}"),
            token,
            Some(json!({ "permissions": permissions })),
        )
        .await,
        StatusCode::OK,
    )
    .await;
}

/// One endpoint of the matrix: the permission it needs, and how to make one call of it (which
/// may first set the scene as the owner) that succeeds with `expected`.
struct Case {
    /// What it needs; the first is checked first.
    permission: &'static [&'static str],
    expected: StatusCode,
}

async fn matrix(backend: Backend) {
    let app = spawn(backend).await;
    let (owner, _tenant) = root_owner(&app).await;
    let target = create_user(&app, &owner, "target@example.com", &[]).await;
    let spare = create_role(&app, &owner, "spare", &[]).await;
    let probe_role = create_role(&app, &owner, "probe", &[]).await;
    create_user(&app, &owner, "probe@example.com", &["probe"]).await;
    let probe = app.login("probe@example.com").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();

    let cases = [
        (
            "POST /users",
            Case {
                permission: &["iam.users.write"],
                expected: StatusCode::CREATED,
            },
        ),
        (
            "GET /users",
            Case {
                permission: &["iam.users.read"],
                expected: StatusCode::OK,
            },
        ),
        (
            "GET /users/{id}",
            Case {
                permission: &["iam.users.read"],
                expected: StatusCode::OK,
            },
        ),
        (
            "PATCH /users/{id}",
            Case {
                permission: &["iam.users.write"],
                expected: StatusCode::OK,
            },
        ),
        (
            "DELETE /users/{id}",
            Case {
                permission: &["iam.users.delete"],
                expected: StatusCode::NO_CONTENT,
            },
        ),
        (
            "PATCH /users/{id}/restore",
            Case {
                permission: &["iam.users.delete", "iam.users.write"],
                expected: StatusCode::OK,
            },
        ),
        (
            "POST /roles",
            Case {
                permission: &["iam.roles.write"],
                expected: StatusCode::CREATED,
            },
        ),
        (
            "GET /roles",
            Case {
                permission: &["iam.roles.read"],
                expected: StatusCode::OK,
            },
        ),
        (
            "GET /roles/{id}",
            Case {
                permission: &["iam.roles.read"],
                expected: StatusCode::OK,
            },
        ),
        (
            "PATCH /roles/{id}",
            Case {
                permission: &["iam.roles.write"],
                expected: StatusCode::OK,
            },
        ),
        (
            "DELETE /roles/{id}",
            Case {
                permission: &["iam.roles.write"],
                expected: StatusCode::NO_CONTENT,
            },
        ),
        (
            "POST /users/{id}/roles",
            Case {
                permission: &["iam.roles.assign"],
                expected: StatusCode::OK,
            },
        ),
        (
            "DELETE /users/{id}/roles/{roleId}",
            Case {
                permission: &["iam.roles.assign"],
                expected: StatusCode::NO_CONTENT,
            },
        ),
        (
            "GET /permissions",
            Case {
                permission: &["iam.permissions.read"],
                expected: StatusCode::OK,
            },
        ),
        (
            "POST /permissions",
            Case {
                permission: &["iam.permissions.write"],
                expected: StatusCode::CREATED,
            },
        ),
        (
            "GET /audit-events",
            Case {
                permission: &["iam.audit.read"],
                expected: StatusCode::OK,
            },
        ),
        (
            "POST /auth/invite",
            Case {
                permission: &["iam.invitations.write"],
                expected: StatusCode::ACCEPTED,
            },
        ),
        (
            "GET /auth/claims",
            Case {
                permission: &["iam.claims.read"],
                expected: StatusCode::OK,
            },
        ),
        (
            "POST /auth/claims",
            Case {
                permission: &["iam.claims.write"],
                expected: StatusCode::CREATED,
            },
        ),
        (
            "DELETE /auth/claims/{name}",
            Case {
                permission: &["iam.claims.write"],
                expected: StatusCode::NO_CONTENT,
            },
        ),
        (
            "POST /tenants",
            Case {
                permission: &["iam.tenants.write"],
                expected: StatusCode::CREATED,
            },
        ),
        (
            "GET /tenants",
            Case {
                permission: &["iam.tenants.read", MANAGE],
                expected: StatusCode::OK,
            },
        ),
        (
            "GET /tenants/{id}",
            Case {
                permission: &[MANAGE, "iam.tenants.read"],
                expected: StatusCode::OK,
            },
        ),
        (
            "PATCH /tenants/{id}",
            Case {
                permission: &[MANAGE, "iam.tenants.write"],
                expected: StatusCode::OK,
            },
        ),
        (
            "DELETE /tenants/{id}",
            Case {
                permission: &[MANAGE, "iam.tenants.write"],
                expected: StatusCode::NO_CONTENT,
            },
        ),
        (
            "POST /tenants/{id}/block",
            Case {
                permission: &[MANAGE, "iam.tenants.write"],
                expected: StatusCode::OK,
            },
        ),
        (
            "POST /tenants/{id}/unblock",
            Case {
                permission: &[MANAGE, "iam.tenants.write"],
                expected: StatusCode::OK,
            },
        ),
        (
            "POST /tenants/{id}/transfer-ownership",
            Case {
                permission: &[MANAGE, "iam.tenants.write"],
                // Only holders of every permission make owners or restructure the tree
                // (tenants.rs); the owner's success is in tenants::delegation.
                expected: StatusCode::FORBIDDEN,
            },
        ),
        (
            "POST /tenants/{id}/move",
            Case {
                permission: &[MANAGE, "iam.tenants.write"],
                expected: StatusCode::FORBIDDEN,
            },
        ),
        (
            "GET /tenants/{id}/children",
            Case {
                permission: &[MANAGE, "iam.tenants.read"],
                expected: StatusCode::OK,
            },
        ),
        (
            "GET /tenants/{id}/ancestors",
            Case {
                permission: &[MANAGE, "iam.tenants.read"],
                expected: StatusCode::OK,
            },
        ),
        (
            "GET /tenants/{id}/members",
            Case {
                permission: &[MANAGE, "iam.users.read"],
                expected: StatusCode::OK,
            },
        ),
        (
            "DELETE /tenants/{id}/members/{userId}",
            Case {
                permission: &[MANAGE, "iam.users.delete"],
                expected: StatusCode::NO_CONTENT,
            },
        ),
    ];
    // A child of the root tenant, and below the root one tenant per round with a member.
    let kid = create_tenant(&app, &owner, "Kid", None).await;
    for (n, (endpoint, case)) in cases.iter().enumerate() {
        // Each round gets its own objects, set up by the owner.
        let victim = create_user(&app, &owner, &format!("victim{n}@example.com"), &[]).await;
        let doomed = create_role(&app, &owner, &format!("doomed{n}"), &[]).await;
        let (sub, sub_member) =
            if endpoint.contains("/tenants/{id}/") || endpoint.starts_with("DELETE /tenants") {
                let sub = create_tenant(&app, &owner, &format!("Sub {n}"), None).await;
                let member = create_user_in(&app, &owner, &sub, &format!("m{n}@example.com")).await;
                (sub, member)
            } else {
                (String::new(), String::new())
            };
        if endpoint.ends_with("/restore") {
            let r = call(
                &app,
                Method::DELETE,
                &format!("/users/{victim}"),
                &owner,
                None,
            )
            .await;
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
        }
        if endpoint.starts_with("DELETE /auth/claims") {
            let r = call(
                &app,
                Method::POST,
                "/auth/claims",
                &owner,
                Some(json!({ "name": format!("acme.d{n}"), "scope": "tenant",
                             "source": { "type": "constant", "value": n } })),
            )
            .await;
            assert_eq!(r.status(), StatusCode::CREATED);
        }
        if endpoint.starts_with("DELETE /users/{id}/roles") {
            let r = call(
                &app,
                Method::POST,
                &format!("/users/{target}/roles"),
                &owner,
                Some(json!({ "role_id": spare })),
            )
            .await;
            assert_eq!(r.status(), StatusCode::OK);
        }
        let request = |token: String| {
            let (method, path, body): (Method, String, Option<Value>) = match *endpoint {
                "POST /users" => (
                    Method::POST,
                    "/users".into(),
                    Some(
                        json!({ "email": format!("new{n}-{}@example.com", token.len()), "name": "New" }),
                    ),
                ),
                "GET /users" => (Method::GET, "/users?limit=5".into(), None),
                "GET /users/{id}" => (Method::GET, format!("/users/{target}"), None),
                "PATCH /users/{id}" => (
                    Method::PATCH,
                    format!("/users/{target}"),
                    Some(json!({ "name": "Renamed", "metadata": { "round": n } })),
                ),
                "DELETE /users/{id}" => (Method::DELETE, format!("/users/{victim}"), None),
                "PATCH /users/{id}/restore" => {
                    (Method::PATCH, format!("/users/{victim}/restore"), None)
                }
                "POST /roles" => (
                    Method::POST,
                    "/roles".into(),
                    Some(json!({ "name": format!("made{n}-{}", token.len()) })),
                ),
                "GET /roles" => (Method::GET, "/roles".into(), None),
                "GET /roles/{id}" => (Method::GET, format!("/roles/{spare}"), None),
                "PATCH /roles/{id}" => (
                    Method::PATCH,
                    format!("/roles/{spare}"),
                    Some(json!({ "description": format!("round {n}") })),
                ),
                "DELETE /roles/{id}" => (Method::DELETE, format!("/roles/{doomed}"), None),
                "POST /users/{id}/roles" => (
                    Method::POST,
                    format!("/users/{target}/roles"),
                    Some(json!({ "role_id": spare })),
                ),
                "DELETE /users/{id}/roles/{roleId}" => (
                    Method::DELETE,
                    format!("/users/{target}/roles/{spare}"),
                    None,
                ),
                "GET /permissions" => (Method::GET, "/permissions".into(), None),
                "POST /permissions" => (
                    Method::POST,
                    "/permissions".into(),
                    Some(
                        json!({ "name": "billing.invoices.read", "description": "Read invoices" }),
                    ),
                ),
                "GET /audit-events" => (Method::GET, "/audit-events?limit=3".into(), None),
                "POST /auth/invite" => (
                    Method::POST,
                    "/auth/invite".into(),
                    Some(json!({ "email": format!("invitee{n}@example.com") })),
                ),
                "GET /auth/claims" => (Method::GET, "/auth/claims".into(), None),
                "POST /auth/claims" => (
                    Method::POST,
                    "/auth/claims".into(),
                    Some(json!({ "name": format!("acme.m{n}"), "scope": "tenant",
                                 "source": { "type": "constant", "value": n } })),
                ),
                "DELETE /auth/claims/{name}" => {
                    (Method::DELETE, format!("/auth/claims/acme.d{n}"), None)
                }
                "POST /tenants" => (
                    Method::POST,
                    "/tenants".into(),
                    Some(json!({ "name": format!("Made {n}-{}", token.len()) })),
                ),
                "GET /tenants" => (Method::GET, "/tenants?limit=5".into(), None),
                "GET /tenants/{id}" => (Method::GET, format!("/tenants/{kid}"), None),
                "PATCH /tenants/{id}" => (
                    Method::PATCH,
                    format!("/tenants/{kid}"),
                    Some(json!({ "name": format!("Kid {n}"), "metadata": { "round": n } })),
                ),
                "DELETE /tenants/{id}" => (Method::DELETE, format!("/tenants/{sub}"), None),
                "POST /tenants/{id}/block" => (Method::POST, format!("/tenants/{kid}/block"), None),
                "POST /tenants/{id}/unblock" => {
                    (Method::POST, format!("/tenants/{kid}/unblock"), None)
                }
                "POST /tenants/{id}/transfer-ownership" => (
                    Method::POST,
                    format!("/tenants/{sub}/transfer-ownership"),
                    Some(json!({ "user_id": sub_member })),
                ),
                "POST /tenants/{id}/move" => (
                    Method::POST,
                    format!("/tenants/{sub}/move"),
                    Some(json!({ "parent_id": kid })),
                ),
                "GET /tenants/{id}/children" => {
                    (Method::GET, format!("/tenants/{kid}/children"), None)
                }
                "GET /tenants/{id}/ancestors" => {
                    (Method::GET, format!("/tenants/{kid}/ancestors"), None)
                }
                "GET /tenants/{id}/members" => {
                    (Method::GET, format!("/tenants/{kid}/members"), None)
                }
                "DELETE /tenants/{id}/members/{userId}" => (
                    Method::DELETE,
                    format!("/tenants/{sub}/members/{sub_member}"),
                    None,
                ),
                other => panic!("no request for {other}"),
            };
            build(&app, method, &path, &token, body).send()
        };

        // Without a token: 401.
        let r = request(String::from("not-a-token")).await.expect("request");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{endpoint}");
        // Without the permission: 403, and nothing changes.
        set_permissions(&app, &owner, &probe_role, &[]).await;
        let (status, body) = problem(request(probe.clone()).await.expect("request")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{endpoint}: {body}");
        assert_eq!(body["code"], "forbidden", "{endpoint}");
        assert_eq!(
            body["detail"],
            format!("requires {}", case.permission[0]),
            "{endpoint}"
        );
        // With exactly that permission: done.
        set_permissions(&app, &owner, &probe_role, case.permission).await;
        let r = request(probe.clone()).await.expect("request");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, case.expected, "{endpoint}: {text}");
        if status == StatusCode::FORBIDDEN {
            assert!(text.contains("privilege_escalation"), "{endpoint}: {text}");
        }
    }

    // Every refusal and change left its trace, with the request id.
    let events = ok_json(
        call(&app, Method::GET, "/audit-events?limit=200", &owner, None).await,
        StatusCode::OK,
    )
    .await;
    let items = events["items"].as_array().expect("items");
    let denied = items.iter().filter(|e| e["outcome"] == "denied").count();
    // One refusal per mutating endpoint (reads are not audited): 14 acting in the root tenant,
    // and 7 refused delegation below it, which are kept in the caller's own (root) trail.
    assert_eq!(denied, 21, "denied events in the root trail");
    let kid_events = ok_json(
        call_in(
            &app,
            Method::GET,
            "/audit-events?limit=200",
            &owner,
            &kid,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let kid_items = kid_events["items"].as_array().expect("items");
    let denied = kid_items
        .iter()
        .filter(|e| e["outcome"] == "denied")
        .count();
    assert_eq!(
        denied, 0,
        "refused delegation leaves no trace below: {kid_events}"
    );
    assert!(
        kid_items
            .iter()
            .any(|e| e["action"] == "tenants.block" && e["outcome"] == "success"),
        "{kid_events}"
    );
    assert!(
        items
            .iter()
            .filter(|e| e["action"] != "platform.bootstrap")
            .all(|e| e["request_id"] == "matrix-1"),
        "{events}"
    );
}

#[tokio::test]
async fn permission_matrix_on_memory() {
    matrix(Backend::Memory).await;
}

#[tokio::test]
async fn permission_matrix_on_postgres() {
    matrix(Backend::Postgres).await;
}

#[tokio::test]
async fn other_tenants_resources_are_not_found() {
    let app = spawn(Backend::Memory).await;
    app.register("ada@example.com").await;
    app.register("bob@example.com").await;
    let ada = app.login("ada@example.com").await["access_token"]
        .as_str()
        .expect("t")
        .to_owned();
    let bob = app.login("bob@example.com").await["access_token"]
        .as_str()
        .expect("t")
        .to_owned();
    let target = create_user(&app, &ada, "target@example.com", &[]).await;
    let role = create_role(&app, &ada, "spare", &[]).await;
    for (method, path, body) in [
        (Method::GET, format!("/users/{target}"), None),
        (
            Method::PATCH,
            format!("/users/{target}"),
            Some(json!({ "name": "X" })),
        ),
        (Method::DELETE, format!("/users/{target}"), None),
        (Method::PATCH, format!("/users/{target}/restore"), None),
        (Method::GET, format!("/roles/{role}"), None),
        (
            Method::PATCH,
            format!("/roles/{role}"),
            Some(json!({ "description": "x" })),
        ),
        (Method::DELETE, format!("/roles/{role}"), None),
        (
            Method::POST,
            format!("/users/{target}/roles"),
            Some(json!({ "role_id": role })),
        ),
        (
            Method::DELETE,
            format!("/users/{target}/roles/{role}"),
            None,
        ),
        (Method::GET, "/users/not-a-uuid".to_owned(), None),
    ] {
        let (status, body) = problem(call(&app, method.clone(), &path, &bob, body).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert!(!body.to_string().contains("target@example.com"));
    }
    let list = ok_json(
        call(&app, Method::GET, "/users", &bob, None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        list["items"].as_array().expect("items").len(),
        1,
        "only Bob"
    );
    // Ada's user is untouched.
    let got = ok_json(
        call(&app, Method::GET, &format!("/users/{target}"), &ada, None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["name"], "Someone");
    assert_eq!(got["status"], "active");
}

#[tokio::test]
async fn users_endpoints_validate_and_page() {
    let app = spawn(Backend::Postgres).await;
    app.register("ada@example.com").await;
    let ada = app.login("ada@example.com").await["access_token"]
        .as_str()
        .expect("t")
        .to_owned();
    for n in 0..5 {
        create_user(&app, &ada, &format!("u{n}@example.com"), &[]).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/users?limit=2&email_prefix=U&cursor={c}"),
            None => "/users?limit=2&email_prefix=U".to_owned(),
        };
        let page = ok_json(
            call(&app, Method::GET, &path, &ada, None).await,
            StatusCode::OK,
        )
        .await;
        for u in page["items"].as_array().expect("items") {
            seen.push(u["email"].as_str().expect("email").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen.len(), 5);
    assert_eq!(
        sorted,
        (0..5)
            .map(|n| format!("u{n}@example.com"))
            .collect::<Vec<_>>()
    );

    for (method, path, body, status, code) in [
        (
            Method::GET,
            "/users?limit=0",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::GET,
            "/users?status=gone",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::GET,
            "/users?bogus=1",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Method::POST,
            "/users",
            Some(json!({ "email": "x", "name": "" })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::POST,
            "/users",
            Some(json!({ "email": "u0@example.com", "name": "Dup" })),
            StatusCode::CONFLICT,
            "email_taken",
        ),
        (
            Method::POST,
            "/users",
            Some(json!({ "email": "m@example.com", "name": "M", "metadata": [1] })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::POST,
            "/users",
            Some(json!({ "email": "r@example.com", "name": "R", "roles": ["nope"] })),
            StatusCode::NOT_FOUND,
            "role_not_found",
        ),
        (
            Method::POST,
            "/roles",
            Some(json!({ "name": "owner" })),
            StatusCode::CONFLICT,
            "role_taken",
        ),
        (
            Method::POST,
            "/roles",
            Some(json!({ "name": "x", "permissions": ["no.such.thing"] })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::POST,
            "/roles",
            Some(json!({ "name": "Bad Name" })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            Method::POST,
            "/permissions",
            Some(json!({ "name": "billing.x" })),
            StatusCode::FORBIDDEN,
            "not_platform_root",
        ),
        (
            Method::POST,
            "/permissions",
            Some(json!({ "name": "iam.users.read" })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
    ] {
        let (got, body) = problem(call(&app, method.clone(), path, &ada, body).await).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {body}"
        );
    }
    // System roles refuse changes.
    let roles = ok_json(
        call(&app, Method::GET, "/roles", &ada, None).await,
        StatusCode::OK,
    )
    .await;
    let owner_id = roles["items"][0]["id"].as_str().expect("id");
    assert_eq!(roles["items"][0]["name"], "owner");
    assert_eq!(roles["items"][0]["system"], true);
    let (status, body) = problem(
        call(
            &app,
            Method::DELETE,
            &format!("/roles/{owner_id}"),
            &ada,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("system_role"))
    );
    // The last owner keeps the role.
    let me = ok_json(app.get("/auth/me", Some(&ada)).await, StatusCode::OK).await;
    let ada_id = me["user"]["id"].as_str().expect("id");
    let (status, body) = problem(
        call(
            &app,
            Method::DELETE,
            &format!("/users/{ada_id}/roles/{owner_id}"),
            &ada,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("last_owner"))
    );
}

#[tokio::test]
async fn validate_token_reports_permissions_and_grpc_honours_the_user_token() {
    let app = spawn(Backend::Memory).await;
    app.register("ada@example.com").await;
    let ada = app.login("ada@example.com").await;
    let owner = ada["access_token"].as_str().expect("t").to_owned();
    let tenant = ada["tenant_id"].as_str().expect("t").to_owned();
    let role = create_role(&app, &owner, "support", &["iam.users.read"]).await;
    create_user(&app, &owner, "sam@example.com", &["support"]).await;
    let sam = app.login("sam@example.com").await["access_token"]
        .as_str()
        .expect("t")
        .to_owned();
    let claims = rpc::validate(&app, &sam).await.claims.expect("claims");
    assert_eq!(claims.roles, vec!["support".to_owned()]);
    assert_eq!(claims.permissions, vec!["iam.users.read".to_owned()]);
    set_permissions(&app, &owner, &role, &["iam.users.read", "iam.roles.read"]).await;
    let claims = rpc::validate(&app, &sam).await.claims.expect("claims");
    assert_eq!(
        claims.permissions,
        vec!["iam.roles.read".to_owned(), "iam.users.read".to_owned()]
    );
    let owners = rpc::validate(&app, &owner).await.claims.expect("claims");
    assert!(
        owners
            .permissions
            .contains(&"iam.tenants.manage-descendants".to_owned())
    );

    // Over gRPC, the forwarded user token makes the call the user's.
    let as_sam = |mut req: tonic::Request<pb::ListRolesRequest>| {
        req.metadata_mut()
            .insert("x-iam-user-token", sam.parse().expect("ascii"));
        req
    };
    let mut iam = rpc::iam(&app).await;
    let roles = iam
        .list_roles(as_sam(tonic::Request::new(pb::ListRolesRequest {
            tenant_id: tenant.clone(),
        })))
        .await
        .expect("sam may read roles")
        .into_inner();
    assert_eq!(roles.roles.len(), 4);
    let mut req = tonic::Request::new(pb::CreateRoleRequest {
        tenant_id: tenant.clone(),
        name: "sneaky".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("x-iam-user-token", sam.parse().expect("ascii"));
    let denied = iam.create_role(req).await.expect_err("no iam.roles.write");
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Without a user token the service acts itself.
    let made = iam
        .create_role(pb::CreateRoleRequest {
            tenant_id: tenant.clone(),
            name: "ops".into(),
            permissions: vec!["iam.audit.read".into()],
            ..Default::default()
        })
        .await
        .expect("service")
        .into_inner();
    assert!(!made.system);
    let events = iam
        .list_audit_events(pb::ListAuditEventsRequest {
            tenant_id: tenant.clone(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner();
    assert_eq!(events.events[0].action, "roles.create");
    assert_eq!(events.events[0].actor_user_id, "", "the service acted");
    assert_eq!(events.events[1].outcome(), pb::AuditOutcome::Denied);
}

#[tokio::test]
async fn bootstrap_command_is_idempotent() {
    let db = iam_adapters_postgres::testing::TestDatabase::new().await;
    let key = crate::support::new_master_key();
    let dir = std::env::temp_dir().join(format!("iam-bootstrap-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let password = dir.join("password");
    std::fs::write(&password, format!("{PASSWORD}\n")).expect("write");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_iam"))
            .args([
                "bootstrap",
                "--email",
                "root@example.com",
                "--password-file",
            ])
            .arg(&password)
            .env("IAM_DATABASE__URL", &db.url)
            .env("IAM_MASTER_KEY", &key)
            .env("IAM_PASSWORD_HASHING__MEMORY_KIB", "256")
            .env("IAM_PASSWORD_HASHING__PARALLELISM", "1")
            .env("IAM_MAIL__DIRECTORY", dir.join("mail"))
            .env("IAM_LOG__FILTER", "warn")
            .output()
            .expect("run iam")
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("created the root tenant"));
    let second = run();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(String::from_utf8_lossy(&second.stdout).contains("already bootstrapped"));
    // The owner can sign in on a service over that database.
    let app = crate::support::spawn_with(
        crate::support::test_settings(Some(&db), &key),
        None,
        key.clone(),
    )
    .await;
    let login = app.login("root@example.com").await;
    let perms = rpc::validate(&app, login["access_token"].as_str().expect("t"))
        .await
        .claims
        .expect("claims")
        .permissions;
    assert!(perms.contains(&"iam.permissions.write".to_owned()));
    let _ = std::fs::remove_dir_all(&dir);
}
