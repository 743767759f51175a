//! Every RPC through a real tonic client against the running server.

use std::time::{Duration, Instant};

use iam_domain::{Tenant, TenantId, TenantName, TenantStatus};
use reqwest::StatusCode;
use tonic::Code;

use crate::support::rpc::{self, pb};
use crate::support::{
    Backend, PASSWORD, TestApp, new_master_key, spawn, spawn_second, spawn_with, test_settings,
};

/// Another owner for the tenant, so that its first one may be disabled or deleted.
async fn add_owner(app: &TestApp, tenant_id: &str) {
    rpc::iam(app)
        .await
        .create_user(pb::CreateUserRequest {
            tenant_id: tenant_id.to_owned(),
            email: format!("co-owner-{}@example.com", uuid::Uuid::new_v4()),
            name: "Co-owner".into(),
            roles: vec!["owner".into()],
            ..Default::default()
        })
        .await
        .expect("second owner");
}

pub async fn grpc_login(app: &TestApp, email: &str) -> pb::TokenResponse {
    match rpc::auth(app)
        .await
        .login(pb::LoginRequest {
            email: email.into(),
            password: PASSWORD.into(),
            tenant_id: String::new(),
        })
        .await
        .expect("login")
        .into_inner()
        .outcome
    {
        Some(pb::login_response::Outcome::Tokens(tokens)) => tokens,
        other => panic!("expected tokens, got {other:?}"),
    }
}

fn reason(r: &pb::ValidateTokenResponse) -> (bool, pb::RejectionReason, &str) {
    (r.valid, r.reason(), r.reason_code.as_str())
}

#[tokio::test]
async fn login_refresh_and_validate() {
    let app = spawn(Backend::Postgres).await;
    app.register("ada@example.com").await;
    let tokens = grpc_login(&app, "ada@example.com").await;
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in, 900);

    let answer = rpc::validate(&app, &tokens.access_token).await;
    assert_eq!(
        reason(&answer),
        (true, pb::RejectionReason::Unspecified, "")
    );
    let claims = answer.claims.expect("claims");
    assert_eq!(claims.tenant_id, tokens.tenant_id);
    assert_eq!(claims.roles, vec!["owner"]);
    assert_eq!(claims.aud, vec!["platform"]);
    assert_eq!(claims.amr, vec!["pwd"]);
    assert_eq!(claims.exp - claims.iat, 900);
    assert!(!claims.sid.is_empty() && !claims.sub.is_empty());

    let mut auth = rpc::auth(&app).await;
    let next = auth
        .refresh(pb::RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .expect("refresh")
        .into_inner();
    assert_ne!(next.refresh_token, tokens.refresh_token);
    let reuse = auth
        .refresh(pb::RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .expect_err("reuse");
    assert_eq!(reuse.code(), Code::Unauthenticated);
    assert!(reuse.message().starts_with("invalid_grant"));
    let answer = rpc::validate(&app, &next.access_token).await;
    assert_eq!(
        reason(&answer),
        (false, pb::RejectionReason::Revoked, "revoked")
    );

    let wrong = auth
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: "not the password".into(),
            tenant_id: String::new(),
        })
        .await
        .expect_err("wrong password");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let bad = auth
        .login(pb::LoginRequest {
            email: "nope".into(),
            password: "x".into(),
            tenant_id: String::new(),
        })
        .await
        .expect_err("bad email");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("email:"));
    let bad = auth
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
            tenant_id: "x".into(),
        })
        .await
        .expect_err("bad tenant");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let stranger = auth
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
            tenant_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("not a member");
    assert_eq!(stranger.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn every_rejection_reason() {
    let app = spawn(Backend::Postgres).await;
    app.register("ada@example.com").await;
    let tokens = grpc_login(&app, "ada@example.com").await;
    let access = tokens.access_token.clone();

    let mut forged: Vec<char> = access.chars().collect();
    let at = forged.len() - 10;
    forged[at] = if forged[at] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let cases = [
        (
            "garbage",
            "garbage".to_owned(),
            pb::RejectionReason::Malformed,
            "malformed",
        ),
        (
            "empty",
            String::new(),
            pb::RejectionReason::Malformed,
            "malformed",
        ),
        (
            "three dots",
            "a.b.c".to_owned(),
            pb::RejectionReason::Malformed,
            "malformed",
        ),
        (
            "forged",
            forged,
            pb::RejectionReason::BadSignature,
            "bad_signature",
        ),
    ];
    for (name, token, expected, code) in cases {
        let answer = rpc::validate(&app, &token).await;
        assert_eq!(reason(&answer), (false, expected, code), "{name}");
        assert!(answer.claims.is_none());
    }

    // Expired, on the frozen clock.
    app.clock.advance(chrono::Duration::minutes(16));
    let answer = rpc::validate(&app, &access).await;
    assert_eq!(
        reason(&answer),
        (false, pb::RejectionReason::Expired, "expired")
    );
    app.clock.advance(chrono::Duration::minutes(-16));
    assert!(rpc::validate(&app, &access).await.valid);

    // Revoked by a REST logout.
    let r = app.post_bearer("/auth/logout", &access).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let answer = rpc::validate(&app, &access).await;
    assert_eq!(
        reason(&answer),
        (false, pb::RejectionReason::Revoked, "revoked")
    );

    // Tenant blocked, then unblocked.
    let fresh = grpc_login(&app, "ada@example.com").await;
    let tenant: TenantId = fresh.tenant_id.parse().expect("uuid");
    app.app
        .tenants
        .set_status(tenant, TenantStatus::Blocked)
        .await
        .expect("block");
    let answer = rpc::validate(&app, &fresh.access_token).await;
    assert_eq!(
        reason(&answer),
        (false, pb::RejectionReason::TenantBlocked, "tenant_blocked")
    );
    app.app
        .tenants
        .set_status(tenant, TenantStatus::Active)
        .await
        .expect("unblock");
    assert!(rpc::validate(&app, &fresh.access_token).await.valid);

    // User disabled through IamService (a second owner keeps the tenant administrable).
    add_owner(&app, &fresh.tenant_id).await;
    let user = rpc::validate(&app, &fresh.access_token)
        .await
        .claims
        .expect("claims")
        .sub;
    rpc::iam(&app)
        .await
        .update_user(pb::UpdateUserRequest {
            tenant_id: fresh.tenant_id.clone(),
            user_id: user,
            name: None,
            status: Some(pb::UserStatus::Disabled.into()),
            metadata: None,
        })
        .await
        .expect("disable");
    let answer = rpc::validate(&app, &fresh.access_token).await;
    assert_eq!(
        reason(&answer),
        (false, pb::RejectionReason::UserDisabled, "user_disabled")
    );
}

#[tokio::test]
async fn tokens_of_another_issuer_have_invalid_claims() {
    // Two in-memory instances signing with one key, but with different audiences.
    let dir = std::env::temp_dir().join(format!("iam-grpc-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let pem = {
        use iam_ports::TokenSigner as _;
        iam_adapters_crypto::EcdsaSigner::new()
            .generate(iam_domain::KeyId::parse("x").expect("kid"))
            .expect("key")
            .private_pem
    };
    let path = dir.join("signing.pem");
    std::fs::write(&path, pem).expect("write");
    let with_audience = |audience: &str| {
        let key = new_master_key();
        let mut s = test_settings(None, &key);
        s.keys.pem_file = Some(path.clone());
        s.tokens.audience = audience.to_owned();
        spawn_with(s, None, key)
    };
    let ours = with_audience("platform").await;
    let theirs = with_audience("elsewhere").await;
    theirs.register("ada@example.com").await;
    let token = grpc_login(&theirs, "ada@example.com").await.access_token;
    assert!(rpc::validate(&theirs, &token).await.valid);
    let answer = rpc::validate(&ours, &token).await;
    assert_eq!(
        reason(&answer),
        (false, pb::RejectionReason::InvalidClaims, "invalid_claims")
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[tokio::test]
async fn iam_service_needs_the_service_credential() {
    let app = spawn(Backend::Memory).await;
    app.register("ada@example.com").await;
    let tenant = grpc_login(&app, "ada@example.com").await.tenant_id;
    let request = || pb::ListUsersRequest {
        tenant_id: tenant.clone(),
        ..Default::default()
    };
    let none = rpc::iam_with(&app, None)
        .await
        .list_users(request())
        .await
        .expect_err("no credential");
    assert_eq!(none.code(), Code::Unauthenticated);
    let wrong = rpc::iam_with(&app, Some("not-the-credential-but-long-enough-to-pass"))
        .await
        .list_users(request())
        .await
        .expect_err("wrong credential");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let users = rpc::iam(&app)
        .await
        .list_users(request())
        .await
        .expect("right credential");
    assert_eq!(users.into_inner().users.len(), 1);
}

#[tokio::test]
async fn user_management_rpcs() {
    let app = spawn(Backend::Postgres).await;
    app.register("ada@example.com").await;
    app.register("bob@example.com").await;
    let tenant = grpc_login(&app, "ada@example.com").await.tenant_id;
    let other = grpc_login(&app, "bob@example.com").await.tenant_id;
    let mut iam = rpc::iam(&app).await;

    let mut created = Vec::new();
    for n in 0..4 {
        let user = iam
            .create_user(pb::CreateUserRequest {
                tenant_id: tenant.clone(),
                email: format!("User{n}@Example.com"),
                name: format!("User {n}"),
                password: PASSWORD.into(),
                roles: vec![],
                metadata: None,
            })
            .await
            .expect("create")
            .into_inner();
        assert_eq!(user.email, format!("user{n}@example.com"));
        assert_eq!(user.status(), pb::UserStatus::Active);
        assert!(user.created_at.is_some());
        created.push(user);
    }
    let dup = iam
        .create_user(pb::CreateUserRequest {
            tenant_id: tenant.clone(),
            email: "user0@example.com".into(),
            name: "Again".into(),
            ..Default::default()
        })
        .await
        .expect_err("duplicate");
    assert_eq!(dup.code(), Code::AlreadyExists);
    let weak = iam
        .create_user(pb::CreateUserRequest {
            tenant_id: tenant.clone(),
            email: "weak@example.com".into(),
            name: "Weak".into(),
            password: "short".into(),
            roles: vec![],
            metadata: None,
        })
        .await
        .expect_err("weak password");
    assert_eq!(weak.code(), Code::InvalidArgument);
    assert!(weak.message().starts_with("password:"));
    // The created user can sign in with the given password.
    grpc_login(&app, "user2@example.com").await;

    let got = iam
        .retrieve_user(pb::RetrieveUserRequest {
            tenant_id: tenant.clone(),
            user_id: created[1].id.clone(),
        })
        .await
        .expect("retrieve")
        .into_inner();
    assert_eq!(got, created[1]);
    let hidden = iam
        .retrieve_user(pb::RetrieveUserRequest {
            tenant_id: other.clone(),
            user_id: created[1].id.clone(),
        })
        .await
        .expect_err("another tenant's user");
    assert_eq!(hidden.code(), Code::NotFound);
    let bad = iam
        .retrieve_user(pb::RetrieveUserRequest {
            tenant_id: tenant.clone(),
            user_id: "x".into(),
        })
        .await
        .expect_err("bad id");
    assert_eq!(bad.code(), Code::InvalidArgument);

    // Pages of two: owner plus four users, each once.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = iam
            .list_users(pb::ListUsersRequest {
                tenant_id: tenant.clone(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        seen.extend(page.users.into_iter().map(|u| u.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5);
    let too_big = iam
        .list_users(pb::ListUsersRequest {
            tenant_id: tenant.clone(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect_err("page size");
    assert_eq!(too_big.code(), Code::InvalidArgument);
    let prefixed = iam
        .list_users(pb::ListUsersRequest {
            tenant_id: tenant.clone(),
            email_prefix: "USER3".into(),
            ..Default::default()
        })
        .await
        .expect("prefix")
        .into_inner();
    assert_eq!(prefixed.users.len(), 1);

    let renamed = iam
        .update_user(pb::UpdateUserRequest {
            tenant_id: tenant.clone(),
            user_id: created[0].id.clone(),
            name: Some("Renamed".into()),
            status: None,
            metadata: None,
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(
        (renamed.name.as_str(), renamed.status()),
        ("Renamed", pb::UserStatus::Active)
    );

    iam.delete_user(pb::DeleteUserRequest {
        tenant_id: tenant.clone(),
        user_id: created[2].id.clone(),
    })
    .await
    .expect("delete");
    let deleted = iam
        .list_users(pb::ListUsersRequest {
            tenant_id: tenant.clone(),
            status: pb::UserStatus::Deleted.into(),
            ..Default::default()
        })
        .await
        .expect("list deleted")
        .into_inner();
    assert_eq!(
        deleted
            .users
            .iter()
            .map(|u| u.id.clone())
            .collect::<Vec<_>>(),
        vec![created[2].id.clone()]
    );
    let refused = rpc::auth(&app)
        .await
        .login(pb::LoginRequest {
            email: "user2@example.com".into(),
            password: PASSWORD.into(),
            tenant_id: String::new(),
        })
        .await
        .expect_err("deleted users cannot sign in");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let missing = iam
        .delete_user(pb::DeleteUserRequest {
            tenant_id: other.clone(),
            user_id: created[3].id.clone(),
        })
        .await
        .expect_err("other tenant");
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn tenant_hierarchy_rpcs() {
    let app = spawn(Backend::Postgres).await;
    app.register("ada@example.com").await;
    let root: TenantId = grpc_login(&app, "ada@example.com")
        .await
        .tenant_id
        .parse()
        .expect("uuid");
    let mut uow = app.app.store.begin().await.expect("begin");
    let owner = uow
        .tenant(root)
        .await
        .expect("lookup")
        .expect("tenant")
        .owner;
    let mut chain = vec![root];
    for n in 0..3u8 {
        let t = Tenant {
            parent: chain.last().copied(),
            ..Tenant::new_top_level(
                TenantId::new_v7(chrono::Utc::now(), [n; 10]),
                TenantName::parse(&format!("Level {n}")).expect("name"),
                owner,
                chrono::Utc::now(),
            )
        };
        uow.insert_tenant(&t).await.expect("tenant");
        chain.push(t.id);
    }
    uow.commit().await.expect("commit");

    let mut tenants = rpc::tenants(&app).await;
    let is = |a: TenantId, d: TenantId| pb::IsDescendantRequest {
        ancestor_id: a.to_string(),
        descendant_id: d.to_string(),
    };
    let cases = [
        (chain[0], chain[3], true),
        (chain[1], chain[2], true),
        (chain[3], chain[0], false),
        (chain[2], chain[2], false),
    ];
    for (a, d, expected) in cases {
        let answer = tenants
            .is_descendant(is(a, d))
            .await
            .expect("is descendant")
            .into_inner();
        assert_eq!(answer.is_descendant, expected, "{a} above {d}");
    }

    app.app
        .tenants
        .set_status(chain[1], TenantStatus::Blocked)
        .await
        .expect("block");
    let status = |t: TenantId| pb::GetTenantStatusRequest {
        tenant_id: t.to_string(),
    };
    let leaf = tenants
        .get_tenant_status(status(chain[3]))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        (leaf.status(), leaf.own_status()),
        (pb::TenantStatus::Blocked, pb::TenantStatus::Active)
    );
    assert_eq!(leaf.blocked_by, chain[1].to_string());
    let top = tenants
        .get_tenant_status(status(chain[0]))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        (top.status(), top.blocked_by.as_str()),
        (pb::TenantStatus::Active, "")
    );
    let missing = tenants
        .get_tenant_status(status(TenantId::new_v7(chrono::Utc::now(), [9; 10])))
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);
    let refused = rpc::tenants_without_credential(&app)
        .await
        .get_tenant_status(status(chain[0]))
        .await
        .expect_err("no credential");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let bad = tenants
        .get_tenant_status(pb::GetTenantStatusRequest {
            tenant_id: "nope".into(),
        })
        .await
        .expect_err("bad id");
    assert_eq!(bad.code(), Code::InvalidArgument);
}

/// Polls `check` until it holds or `within` has passed; returns how long it took.
async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "not seen within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn a_second_instance_sees_revocations_within_a_second() {
    let a = spawn(Backend::Postgres).await;
    let b = spawn_second(&a).await;
    a.register("ada@example.com").await;
    let one = grpc_login(&a, "ada@example.com").await;
    let two = grpc_login(&a, "ada@example.com").await;
    assert!(rpc::validate(&b, &one.access_token).await.valid);

    let r = a.post_bearer("/auth/logout", &one.access_token).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    eventually(Duration::from_secs(1), async || {
        rpc::validate(&b, &one.access_token).await.reason() == pb::RejectionReason::Revoked
    })
    .await;
    assert!(
        rpc::validate(&b, &two.access_token).await.valid,
        "only that session"
    );

    let tenant: TenantId = two.tenant_id.parse().expect("uuid");
    a.app
        .tenants
        .set_status(tenant, TenantStatus::Blocked)
        .await
        .expect("block");
    eventually(Duration::from_secs(1), async || {
        rpc::validate(&b, &two.access_token).await.reason() == pb::RejectionReason::TenantBlocked
    })
    .await;
    a.app
        .tenants
        .set_status(tenant, TenantStatus::Active)
        .await
        .expect("unblock");
    eventually(Duration::from_secs(1), async || {
        rpc::validate(&b, &two.access_token).await.valid
    })
    .await;

    add_owner(&a, &two.tenant_id).await;
    let user = rpc::validate(&b, &two.access_token)
        .await
        .claims
        .expect("claims")
        .sub;
    rpc::iam(&a)
        .await
        .delete_user(pb::DeleteUserRequest {
            tenant_id: two.tenant_id.clone(),
            user_id: user,
        })
        .await
        .expect("delete");
    eventually(Duration::from_secs(1), async || {
        rpc::validate(&b, &two.access_token).await.reason() == pb::RejectionReason::UserDisabled
    })
    .await;
    // And a refresh on b fails too: the sessions are gone.
    let refused = rpc::auth(&b)
        .await
        .refresh(pb::RefreshRequest {
            refresh_token: two.refresh_token.clone(),
        })
        .await
        .expect_err("refresh after delete");
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn health_and_reflection() {
    let app = spawn(Backend::Memory).await;
    let channel = rpc::channel(&app).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in [
        "",
        "platform.iam.v1.AuthService",
        "platform.iam.v1.IamService",
        "platform.iam.v1.TenantHierarchyService",
    ] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(
            status.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service:?}"
        );
    }
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("message")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "platform.iam.v1.AuthService",
        "platform.iam.v1.IamService",
        "platform.iam.v1.TenantHierarchyService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let issue = |name: &str| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = issue("localhost");
    let (client_cert, client_key) = issue("gateway");
    let dir = std::env::temp_dir().join(format!("iam-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (name, body) in [
        ("server.pem", &server_cert),
        ("server.key", &server_key),
        ("ca.pem", &ca.pem()),
    ] {
        std::fs::write(dir.join(name), body).expect("write");
    }
    let key = new_master_key();
    let mut settings = test_settings(None, &key);
    settings.grpc.tls = Some(iam_app::settings::TlsSettings {
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server.key"),
        client_ca_file: Some(dir.join("ca.pem")),
    });
    let app = spawn_with(settings, None, key).await;
    let url = app.grpc.replace("http://", "https://");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");

    let with_cert = Channel::from_shared(url.clone())
        .expect("uri")
        .tls_config(
            tls.clone()
                .identity(Identity::from_pem(&client_cert, &client_key)),
        )
        .expect("tls")
        .connect()
        .await
        .expect("a client with a certificate connects");
    let answer = pb::auth_service_client::AuthServiceClient::new(with_cert)
        .validate_token(pb::ValidateTokenRequest { token: "x".into() })
        .await
        .expect("served over mutual TLS")
        .into_inner();
    assert_eq!(answer.reason(), pb::RejectionReason::Malformed);

    let without = async {
        let channel = Channel::from_shared(url.clone())
            .ok()?
            .tls_config(tls.clone())
            .ok()?
            .connect()
            .await
            .ok()?;
        pb::auth_service_client::AuthServiceClient::new(channel)
            .validate_token(pb::ValidateTokenRequest { token: "x".into() })
            .await
            .ok()
    };
    assert!(
        without.await.is_none(),
        "a client without a certificate is refused"
    );
    let plaintext = async {
        let channel = Channel::from_shared(app.grpc.clone())
            .ok()?
            .connect()
            .await
            .ok()?;
        pb::auth_service_client::AuthServiceClient::new(channel)
            .validate_token(pb::ValidateTokenRequest { token: "x".into() })
            .await
            .ok()
    };
    assert!(plaintext.await.is_none(), "plaintext is refused");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
