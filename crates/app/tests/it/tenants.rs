//! The tenant tree end to end: delegation reaches descendants only, the tree's rules (cycles,
//! children, ownership, members), and a blocked subtree across sign-in, refresh and
//! ValidateToken on every instance.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::rbac::{
    MANAGE, build, call, call_in, create_tenant, create_user_in, ok_json, root_owner,
};
use crate::support::{Backend, PASSWORD, TestApp, problem, rpc, rpc::pb, spawn, spawn_second};

/// Makes a call that must be refused with `expected` (status and problem code).
async fn refused(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
    expected: (StatusCode, &str),
) {
    let (status, problem_body) = problem(call(app, method.clone(), path, token, body).await).await;
    assert_eq!(
        (status, problem_body["code"].as_str()),
        (expected.0, Some(expected.1)),
        "{method} {path}: {problem_body}"
    );
}

fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect()
}

async fn delegation(backend: Backend) {
    let app = spawn(backend).await;
    let (owner, root) = root_owner(&app).await;
    let a = create_tenant(&app, &owner, "Partner A", None).await;
    let b = create_tenant(&app, &owner, "Partner B", None).await;
    // Alice administers partner A with a role of A's that includes manage-descendants.
    let role = ok_json(
        call_in(
            &app,
            Method::POST,
            "/roles",
            &owner,
            &a,
            Some(json!({ "name": "partner-admin", "permissions": [
                MANAGE, "iam.tenants.read", "iam.tenants.write", "iam.users.read",
                "iam.users.write", "iam.users.delete", "iam.roles.read", "iam.invitations.write", "iam.roles.assign"] })),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let role = role["id"].as_str().expect("id").to_owned();
    ok_json(
        call_in(
            &app,
            Method::POST,
            "/users",
            &owner,
            &a,
            Some(
                json!({ "email": "alice@example.com", "name": "Alice", "password": PASSWORD,
                         "roles": ["partner-admin"] }),
            ),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let alice = app.token("alice@example.com").await;

    // Down the tree: a customer below A, and a sub-customer below that.
    let a1 = create_tenant(&app, &alice, "Customer A1", None).await;
    let a1a = create_tenant(&app, &alice, "Sub-customer A1a", Some(&a1)).await;
    let below = ok_json(
        call(&app, Method::GET, "/tenants", &alice, None).await,
        StatusCode::OK,
    )
    .await;
    let mut expected = vec![a1.clone(), a1a.clone()];
    expected.sort();
    assert_eq!(ids(&below), expected, "A's descendants, by id");
    let ancestors = ok_json(
        call(
            &app,
            Method::GET,
            &format!("/tenants/{a1a}/ancestors"),
            &alice,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        ids(&ancestors),
        vec![a1.clone(), a.clone()],
        "up to A, not the root"
    );
    // Every tenant below the root, a page of one at a time.
    let mut seen = Vec::new();
    let mut path = "/tenants?limit=1".to_owned();
    loop {
        let page = ok_json(
            call(&app, Method::GET, &path, &owner, None).await,
            StatusCode::OK,
        )
        .await;
        assert!(ids(&page).len() <= 1);
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/tenants?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    let mut expected = vec![a.clone(), b.clone(), a1.clone(), a1a.clone()];
    expected.sort();
    assert_eq!(seen, expected);

    // Users of a descendant, through X-Tenant-Id.
    let carol = create_user_in(&app, &alice, &a1, "carol@example.com").await;
    // Only owners make owners: Alice may not name a new tenant's owner (it is the parent's),
    // nor make anyone an owner of a descendant; and the one who may must name a member of the
    // parent (Carol is none of the root's).
    refused(
        &app,
        Method::POST,
        "/tenants",
        &alice,
        Some(json!({ "name": "Carol's own", "owner_id": carol })),
        (StatusCode::FORBIDDEN, "privilege_escalation"),
    )
    .await;
    refused(
        &app,
        Method::POST,
        "/tenants",
        &owner,
        Some(json!({ "name": "Carol's own", "owner_id": carol })),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
    )
    .await;
    let a1_owner = ok_json(
        call(&app, Method::GET, &format!("/tenants/{a1}"), &alice, None).await,
        StatusCode::OK,
    )
    .await;
    let root_owner_id = ok_json(
        call(&app, Method::GET, "/auth/me", &owner, None).await,
        StatusCode::OK,
    )
    .await["user"]["id"]
        .clone();
    assert_eq!(
        a1_owner["owner_id"], root_owner_id,
        "A1 belongs to A's owner"
    );
    for (path, body) in [
        (
            "/users",
            json!({ "email": "mallory@example.com", "name": "M", "roles": ["owner"] }),
        ),
        (
            "/auth/invite",
            json!({ "email": "mallory@example.com", "roles": ["owner"] }),
        ),
    ] {
        let (status, problem_body) =
            problem(call_in(&app, Method::POST, path, &alice, &a1, Some(body)).await).await;
        assert_eq!(
            (status, problem_body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("privilege_escalation")),
            "{path}"
        );
    }
    let members = ok_json(
        call(
            &app,
            Method::GET,
            &format!("/tenants/{a1}/members"),
            &alice,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids(&members).len(), 2, "alice (owner) and carol: {members}");

    // Nothing above or beside A.
    for (method, path, body) in [
        (Method::GET, format!("/tenants/{b}"), None),
        (Method::GET, format!("/tenants/{root}"), None),
        (Method::GET, format!("/tenants/{b}/members"), None),
        (Method::POST, format!("/tenants/{b}/block"), None),
        (
            Method::POST,
            "/tenants".to_owned(),
            Some(json!({ "name": "Sneaky", "parent_id": b })),
        ),
        (
            Method::POST,
            format!("/tenants/{a1a}/move"),
            Some(json!({ "parent_id": b })),
        ),
    ] {
        let (status, body) = problem(call(&app, method.clone(), &path, &alice, body).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert!(!body.to_string().contains("Partner B"));
    }
    for tenant in [&b, &root] {
        let (status, _) =
            problem(call_in(&app, Method::GET, "/users", &alice, tenant, None).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "users of {tenant}");
        let (status, _) = problem(
            call_in(
                &app,
                Method::POST,
                "/auth/invite",
                &alice,
                tenant,
                Some(json!({ "email": "eve@example.com" })),
            )
            .await,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "invitation into {tenant}");
    }
    let r = call_in(
        &app,
        Method::POST,
        "/auth/invite",
        &alice,
        &a1,
        Some(json!({ "email": "eve@example.com" })),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "invitation into a descendant"
    );
    // Roles of a descendant, through X-Tenant-Id too.
    let support = ok_json(
        call_in(
            &app,
            Method::POST,
            "/roles",
            &owner,
            &a1,
            Some(json!({ "name": "support", "permissions": ["iam.users.read"] })),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    ok_json(
        call_in(
            &app,
            Method::POST,
            &format!("/users/{carol}/roles"),
            &owner,
            &a1,
            Some(json!({ "role_id": support["id"] })),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let (status, body) = problem(
        build(&app, Method::GET, "/users", &alice, None)
            .header("x-tenant-id", "not-a-tenant")
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_tenant_header"))
    );

    // One's own tenant is blocked, moved and deleted from above only; the root never.
    refused(
        &app,
        Method::POST,
        &format!("/tenants/{a}/block"),
        &alice,
        None,
        (StatusCode::FORBIDDEN, "ancestor_required"),
    )
    .await;
    refused(
        &app,
        Method::POST,
        &format!("/tenants/{root}/block"),
        &owner,
        None,
        (StatusCode::CONFLICT, "platform_root"),
    )
    .await;

    // The tree's rules.
    refused(
        &app,
        Method::DELETE,
        &format!("/tenants/{a1}"),
        &alice,
        None,
        (StatusCode::CONFLICT, "tenant_has_children"),
    )
    .await;
    // Restructuring and making owners are for those holding every permission: not Alice.
    for (path, body) in [
        (format!("/tenants/{a1a}/move"), json!({ "parent_id": a })),
        (
            format!("/tenants/{a1}/transfer-ownership"),
            json!({ "user_id": carol }),
        ),
    ] {
        let (status, problem_body) =
            problem(call(&app, Method::POST, &path, &alice, Some(body)).await).await;
        assert_eq!(
            (status, problem_body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("privilege_escalation")),
            "{path}"
        );
    }
    for parent in [&a1, &a1a] {
        refused(
            &app,
            Method::POST,
            &format!("/tenants/{a1}/move"),
            &owner,
            Some(json!({ "parent_id": parent })),
            (StatusCode::CONFLICT, "tenant_cycle"),
        )
        .await;
    }
    let moved = ok_json(
        call(
            &app,
            Method::POST,
            &format!("/tenants/{a1a}/move"),
            &owner,
            Some(json!({ "parent_id": a })),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(moved["parent_id"], json!(a));
    let children = ok_json(
        call(
            &app,
            Method::GET,
            &format!("/tenants/{a}/children"),
            &alice,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let mut expected = vec![a1.clone(), a1a.clone()];
    expected.sort();
    assert_eq!(ids(&children), expected);
    let renamed = ok_json(
        call(
            &app,
            Method::PATCH,
            &format!("/tenants/{a1}"),
            &alice,
            Some(json!({ "name": "Customer One", "metadata": { "plan": "gold" } })),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (renamed["name"].as_str(), &renamed["metadata"]["plan"]),
        (Some("Customer One"), &json!("gold"))
    );

    // Ownership goes to a member only; the old owner stays, as admin.
    let (status, _) = problem(
        call(
            &app,
            Method::POST,
            &format!("/tenants/{a1}/transfer-ownership"),
            &owner,
            Some(json!({ "user_id": uuid::Uuid::now_v7() })),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let transferred = ok_json(
        call(
            &app,
            Method::POST,
            &format!("/tenants/{a1}/transfer-ownership"),
            &owner,
            Some(json!({ "user_id": carol })),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(transferred["owner_id"], json!(carol));
    let members = ok_json(
        call(
            &app,
            Method::GET,
            &format!("/tenants/{a1}/members"),
            &alice,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let roles_of = |email: &str| {
        members["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|m| m["email"] == email)
            .map(|m| m["roles"].clone())
            .expect("member")
    };
    assert!(
        roles_of("carol@example.com")
            .as_array()
            .expect("roles")
            .contains(&json!("owner"))
    );
    let old = roles_of("root@example.com");
    assert!(
        old.as_array().expect("roles").contains(&json!("admin")),
        "{old}"
    );
    assert!(
        !old.as_array().expect("roles").contains(&json!("owner")),
        "{old}"
    );

    // Members leave; the owner only after handing over.
    refused(
        &app,
        Method::DELETE,
        &format!("/tenants/{a1}/members/{carol}"),
        &alice,
        None,
        (StatusCode::CONFLICT, "tenant_owner"),
    )
    .await;
    let dave = create_user_in(&app, &alice, &a1, "dave@example.com").await;
    let r = call(
        &app,
        Method::DELETE,
        &format!("/tenants/{a1}/members/{dave}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = call(
        &app,
        Method::DELETE,
        &format!("/tenants/{a1}/members/{dave}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Without manage-descendants, the descendants are out of reach; A itself is not.
    ok_json(
        call_in(
            &app,
            Method::PATCH,
            &format!("/roles/{role}"),
            &owner,
            &a,
            Some(json!({ "permissions": ["iam.tenants.read", "iam.tenants.write"] })),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let (status, body) =
        problem(call(&app, Method::GET, &format!("/tenants/{a1}"), &alice, None).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["detail"], format!("requires {MANAGE}"));
    let (status, _) = problem(call(&app, Method::GET, "/tenants", &alice, None).await).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "listing below needs {MANAGE} too"
    );
    ok_json(
        call(&app, Method::GET, &format!("/tenants/{a}"), &alice, None).await,
        StatusCode::OK,
    )
    .await;

    // A deleted tenant is gone from every listing and answers 404, and its sessions end.
    create_user_in(&app, &owner, &a1a, "erin@example.com").await;
    let erin = app.token("erin@example.com").await;
    assert!(rpc::validate(&app, &erin).await.valid);
    let r = call(
        &app,
        Method::DELETE,
        &format!("/tenants/{a1a}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let answer = rpc::validate(&app, &erin).await;
    assert!(!answer.valid);
    let (status, _) =
        problem(call(&app, Method::GET, &format!("/tenants/{a1a}"), &owner, None).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let below = ok_json(
        call(
            &app,
            Method::GET,
            &format!("/tenants/{a}/children"),
            &owner,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids(&below), vec![a1.clone()]);
    // Its members no longer belong to it.
    let mine = ok_json(
        call(&app, Method::GET, "/auth/tenants", &owner, None).await,
        StatusCode::OK,
    )
    .await;
    let mine: Vec<_> = mine["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["tenant_id"].as_str().expect("id").to_owned())
        .collect();
    assert!(mine.contains(&a1) && !mine.contains(&a1a), "{mine:?}");
    // A tenant whose children are all deleted may go too; its parent's trail records both.
    let a1b = create_tenant(&app, &owner, "Sub-customer A1b", Some(&a1)).await;
    for id in [&a1b, &a1] {
        let r = call(
            &app,
            Method::DELETE,
            &format!("/tenants/{id}"),
            &owner,
            None,
        )
        .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    let trail = ok_json(
        call_in(
            &app,
            Method::GET,
            "/audit-events?limit=200",
            &owner,
            &a,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let deletions = trail["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == "tenants.delete" && e["outcome"] == "success")
        .count();
    assert_eq!(
        deletions, 2,
        "A1a and A1 were A's children when deleted: {trail}"
    );
}

#[tokio::test]
async fn delegation_reaches_descendants_only_on_memory() {
    delegation(Backend::Memory).await;
}

#[tokio::test]
async fn delegation_reaches_descendants_only_on_postgres() {
    delegation(Backend::Postgres).await;
}

/// Polls ValidateToken on `app` until its answer's validity is `valid`, for at most a second.
async fn validates_within_a_second(
    app: &TestApp,
    token: &str,
    valid: bool,
) -> pb::ValidateTokenResponse {
    let start = Instant::now();
    loop {
        let answer = rpc::validate(app, token).await;
        if answer.valid == valid {
            return answer;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "ValidateToken still says valid = {} after a second",
            answer.valid
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn blocked_subtree(backend: Backend) {
    let app = spawn(backend).await;
    // On PostgreSQL a second instance must hear of the block through the database.
    let second = match backend {
        Backend::Postgres => Some(spawn_second(&app).await),
        Backend::Memory => None,
    };
    let (owner, _) = root_owner(&app).await;
    let a = create_tenant(&app, &owner, "Partner A", None).await;
    let a1 = create_tenant(&app, &owner, "Customer A1", Some(&a)).await;
    create_user_in(&app, &owner, &a1, "carol@example.com").await;
    let carol = app.login("carol@example.com").await;
    let access = carol["access_token"].as_str().expect("token").to_owned();
    let refresh = carol["refresh_token"].clone();
    let instances: Vec<&TestApp> = std::iter::once(&app).chain(second.as_ref()).collect();
    for instance in &instances {
        assert!(rpc::validate(instance, &access).await.valid);
    }

    ok_json(
        call(
            &app,
            Method::POST,
            &format!("/tenants/{a}/block"),
            &owner,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    for instance in &instances {
        let answer = validates_within_a_second(instance, &access, false).await;
        assert_eq!(answer.reason_code, "tenant_blocked");
    }
    let mut status = rpc::tenants(&app).await;
    let standing = status
        .get_tenant_status(pb::GetTenantStatusRequest {
            tenant_id: a1.clone(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        (
            standing.status(),
            standing.own_status(),
            standing.blocked_by.as_str()
        ),
        (
            pb::TenantStatus::Blocked,
            pb::TenantStatus::Active,
            a.as_str()
        )
    );
    let (code, body) = problem(
        app.post(
            "/auth/login",
            json!({ "email": "carol@example.com", "password": PASSWORD }),
        )
        .await,
    )
    .await;
    assert_eq!(
        (code, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("tenant_blocked"))
    );
    let (code, _) = problem(app.get("/auth/me", Some(&access)).await).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "REST refuses the token too");
    let (code, body) = problem(
        app.post("/auth/refresh", json!({ "refresh_token": refresh }))
            .await,
    )
    .await;
    assert_eq!(
        (code, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("tenant_blocked"))
    );

    // Unblocked: the same, unexpired tokens work again everywhere, the refresh token included
    // (the refused refresh spent nothing).
    ok_json(
        call(
            &app,
            Method::POST,
            &format!("/tenants/{a}/unblock"),
            &owner,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    for instance in &instances {
        validates_within_a_second(instance, &access, true).await;
    }
    let refreshed = app
        .post("/auth/refresh", json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(
        refreshed.status(),
        StatusCode::OK,
        "{:?}",
        refreshed.text().await
    );
    app.login("carol@example.com").await;
}

#[tokio::test]
async fn a_blocked_subtree_stops_sign_in_refresh_and_validation_on_memory() {
    blocked_subtree(Backend::Memory).await;
}

#[tokio::test]
async fn a_blocked_subtree_stops_sign_in_refresh_and_validation_on_postgres() {
    blocked_subtree(Backend::Postgres).await;
}

/// IsDescendant and the effective status over gRPC for every tenant of a tree both wide (twelve
/// children of the root) and deep (a chain of eight below one of them), against a model, with
/// blocks at two depths.
async fn hierarchy_answers(backend: Backend) {
    let app = spawn(backend).await;
    let (owner, root) = root_owner(&app).await;
    let mut parent_of: Vec<(String, Option<String>)> = vec![(root.clone(), None)];
    for n in 0..12 {
        let id = create_tenant(&app, &owner, &format!("Wide {n}"), None).await;
        parent_of.push((id, Some(root.clone())));
    }
    let mut above = parent_of[1].0.clone();
    for n in 0..8 {
        let id = create_tenant(&app, &owner, &format!("Deep {n}"), Some(&above)).await;
        parent_of.push((id.clone(), Some(above.clone())));
        above = id;
    }
    let lineage = |id: &str| {
        let mut chain = vec![id.to_owned()];
        while let Some(Some(p)) = parent_of
            .iter()
            .find(|(t, _)| t == chain.last().expect("non-empty"))
            .map(|(_, p)| p.clone())
        {
            chain.push(p);
        }
        chain
    };
    let wide0 = parent_of[1].0.clone();
    let deep4 = parent_of[13 + 4].0.clone();
    let mut rpc = rpc::tenants(&app).await;
    for (blocked, step) in [
        (vec![wide0.clone(), deep4.clone()], "two blocks"),
        (vec![deep4.clone()], "the upper block lifted"),
    ] {
        for id in [&wide0, &deep4] {
            let action = if blocked.contains(id) {
                "block"
            } else {
                "unblock"
            };
            ok_json(
                call(
                    &app,
                    Method::POST,
                    &format!("/tenants/{id}/{action}"),
                    &owner,
                    None,
                )
                .await,
                StatusCode::OK,
            )
            .await;
        }
        for (id, _) in &parent_of {
            let chain = lineage(id);
            let nearest = chain.iter().find(|t| blocked.contains(t));
            let answer = rpc
                .get_tenant_status(pb::GetTenantStatusRequest {
                    tenant_id: id.clone(),
                })
                .await
                .expect("status")
                .into_inner();
            let expected = if nearest.is_some() {
                pb::TenantStatus::Blocked
            } else {
                pb::TenantStatus::Active
            };
            assert_eq!(answer.status(), expected, "{step}: {id}");
            assert_eq!(
                answer.blocked_by,
                nearest.cloned().unwrap_or_default(),
                "{step}: {id}"
            );
            let own = if blocked.contains(id) {
                pb::TenantStatus::Blocked
            } else {
                pb::TenantStatus::Active
            };
            assert_eq!(answer.own_status(), own, "{step}: {id}");
        }
    }
    for (descendant, _) in &parent_of {
        let chain = lineage(descendant);
        for (ancestor, _) in &parent_of {
            let answer = rpc
                .is_descendant(pb::IsDescendantRequest {
                    ancestor_id: ancestor.clone(),
                    descendant_id: descendant.clone(),
                })
                .await
                .expect("is descendant")
                .into_inner();
            assert_eq!(
                answer.is_descendant,
                ancestor != descendant && chain.contains(ancestor),
                "{ancestor} above {descendant}"
            );
        }
    }
}

#[tokio::test]
async fn is_descendant_and_effective_status_on_a_deep_and_wide_tree_on_memory() {
    hierarchy_answers(Backend::Memory).await;
}

#[tokio::test]
async fn is_descendant_and_effective_status_on_a_deep_and_wide_tree_on_postgres() {
    hierarchy_answers(Backend::Postgres).await;
}

/// An invitation into a descendant (through `X-Tenant-Id`) joins the invitee to that tenant,
/// and one into a tenant deleted since is void.
#[tokio::test]
async fn invitations_into_a_descendant_join_it_and_die_with_it() {
    let smtp = iam_adapters_mail::testing::SmtpTestServer::start().await;
    let app = crate::flows::spawn_mailing(Backend::Postgres, &smtp).await;
    let (owner, _) = root_owner(&app).await;
    let a = create_tenant(&app, &owner, "Partner A", None).await;
    let a2 = create_tenant(&app, &owner, "Customer A2", Some(&a)).await;
    let mut sent = 0;
    for (tenant, email) in [(&a, "grace@example.com"), (&a2, "heidi@example.com")] {
        let r = call_in(
            &app,
            Method::POST,
            "/auth/invite",
            &owner,
            tenant,
            Some(json!({ "email": email })),
        )
        .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        sent += 1;
        smtp.wait_for(sent, Duration::from_secs(10)).await;
    }
    let grace = crate::flows::link_token(&smtp, 1, "accept-invite").await;
    let heidi = crate::flows::link_token(&smtp, 2, "accept-invite").await;
    let joined = ok_json(
        app.post(
            "/auth/accept-invite",
            json!({ "token": grace, "name": "Grace", "password": PASSWORD }),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        joined["tenant_id"],
        json!(a),
        "the tenant named in X-Tenant-Id"
    );
    let r = call(
        &app,
        Method::DELETE,
        &format!("/tenants/{a2}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, _) = problem(
        app.post(
            "/auth/accept-invite",
            json!({ "token": heidi, "name": "Heidi", "password": PASSWORD }),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the tenant is gone");
}
