//! Signing keys: persisted sealed, shared by instances, rotated without breaking tokens.

use std::sync::Arc;

use iam_adapters_crypto::EcdsaSigner;
use iam_domain::KeyId;
use iam_ports::TokenSigner as _;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Backend, new_master_key, spawn, spawn_second, spawn_with, test_settings};

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid")
}

async fn jwks_kids(app: &crate::support::TestApp) -> Vec<String> {
    let jwks: Value = app
        .get("/.well-known/jwks.json", None)
        .await
        .json()
        .await
        .expect("jwks");
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

#[tokio::test]
async fn instances_share_persisted_keys_and_survive_rotation() {
    let a = spawn(Backend::Postgres).await;
    let db = a.db.clone().expect("db");
    let b = spawn_second(&a).await;
    assert_eq!(
        jwks_kids(&a).await,
        jwks_kids(&b).await,
        "one key ring for both"
    );

    a.register("ada@example.com").await;
    let old = a.login("ada@example.com").await;
    let old_access = old["access_token"].as_str().expect("access");
    assert_eq!(
        b.get("/auth/me", Some(old_access)).await.status(),
        StatusCode::OK
    );

    // `iam keys rotate`, as the CLI runs it.
    let new_kid = iam_app::wiring::rotate_keys(&test_settings(Some(&db), &a.master_key))
        .await
        .expect("rotate");
    // b has not reloaded yet, but a token signed with the new key makes it look.
    a.app.keys.reload().await.expect("periodic reload");
    let new = a.login("ada@example.com").await;
    let new_access = new["access_token"].as_str().expect("access");
    assert_eq!(kid_of(new_access), new_kid.as_str());
    assert_eq!(
        b.get("/auth/me", Some(new_access)).await.status(),
        StatusCode::OK
    );
    // The old token still works everywhere, and both keys are published.
    assert_eq!(
        a.get("/auth/me", Some(old_access)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        b.get("/auth/me", Some(old_access)).await.status(),
        StatusCode::OK
    );
    let kids = jwks_kids(&b).await;
    assert_eq!(kids.len(), 2);
    assert!(kids.contains(&new_kid.as_str().to_owned()) && kids.contains(&kid_of(old_access)));
}

#[tokio::test]
async fn start_up_refuses_a_wrong_master_key() {
    let a = spawn(Backend::Postgres).await;
    let db = a.db.clone().expect("db");
    let wrong = test_settings(Some(&db), &new_master_key());
    let err = iam_app::build(&wrong, Arc::new(iam_adapters_crypto::SystemClock))
        .await
        .err()
        .expect("refused");
    let chain = format!("{err:#}");
    assert!(chain.contains("wrong master key"), "{chain}");
}

#[tokio::test]
async fn the_in_memory_store_can_sign_with_a_key_from_a_pem_file() {
    let dir = std::env::temp_dir().join(format!("iam-pem-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let pem = EcdsaSigner::new()
        .generate(KeyId::parse("x").expect("kid"))
        .expect("key")
        .private_pem;
    let path = dir.join("signing.pem");
    std::fs::write(&path, &pem).expect("write");

    let start = |key: String| {
        let mut s = test_settings(None, &key);
        s.keys.pem_file = Some(path.clone());
        spawn_with(s, None, key)
    };
    let one = start(new_master_key()).await;
    let two = start(new_master_key()).await;
    assert_eq!(
        jwks_kids(&one).await,
        jwks_kids(&two).await,
        "same file, same kid"
    );
    one.register("ada@example.com").await;
    let token = one.login("ada@example.com").await;
    let claims = two
        .app
        .auth
        .authenticate(token["access_token"].as_str().expect("access"))
        .await
        .expect("the other instance verifies with the same key");
    assert_eq!(claims.roles, vec!["owner"]);

    std::fs::write(&path, b"not a key").expect("write");
    let mut s = test_settings(None, &new_master_key());
    s.keys.pem_file = Some(path.clone());
    let err = iam_app::build(&s, Arc::new(iam_adapters_crypto::SystemClock))
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("keys.pem_file"));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[tokio::test]
async fn start_up_refuses_an_unmigrated_database_until_migrated() {
    use iam_adapters_postgres::testing::TestDatabase;
    let db = TestDatabase::empty().await;
    let settings = test_settings(Some(&db), &new_master_key());
    let err = iam_app::build(&settings, Arc::new(iam_adapters_crypto::SystemClock))
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("run `iam migrate`"), "{err:#}");
    let applied = iam_adapters_postgres::migrate(&db.url)
        .await
        .expect("migrate");
    assert!(!applied.is_empty());
    assert!(
        iam_adapters_postgres::pending_migrations(&db.url)
            .await
            .expect("pending")
            .is_empty()
    );
    iam_app::build(&settings, Arc::new(iam_adapters_crypto::SystemClock))
        .await
        .expect("starts once migrated");
}
