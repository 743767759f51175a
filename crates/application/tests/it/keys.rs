use chrono::Duration;
use iam_application::{AuthError, Unauthenticated};
use iam_ports::KeyStore as _;

use crate::support::{Harness, PASSWORD};

fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().expect("header");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    v["kid"].as_str().expect("kid").to_owned()
}

#[tokio::test]
async fn rotation_keeps_old_tokens_valid_until_they_expire() {
    let h = Harness::new().await;
    h.register("ada@example.com").await;
    let old = h.login("ada@example.com", PASSWORD).await.expect("login");
    let new_kid = h.keys.rotate().await.expect("rotate");
    assert_eq!(h.keys.jwks()["keys"].as_array().expect("keys").len(), 2);
    h.auth
        .authenticate(&old.access_token)
        .await
        .expect("old token still verifies");
    let new = h.login("ada@example.com", PASSWORD).await.expect("login");
    assert_eq!(kid_of(&new.access_token), new_kid.as_str());
    assert_ne!(kid_of(&old.access_token), new_kid.as_str());

    // Once every token of the old key has expired, the key leaves the ring and the JWKS.
    h.clock.advance(Duration::minutes(16));
    h.keys.reload().await.expect("reload");
    assert_eq!(h.keys.jwks()["keys"].as_array().expect("keys").len(), 1);
    h.keys.rotate().await.expect("rotate again purges");
    assert_eq!(h.key_store.keys().await.expect("keys").len(), 2);
}

#[tokio::test]
async fn a_key_made_by_another_instance_is_picked_up_on_first_sight() {
    let a = Harness::new().await;
    let b = Harness::sharing_keys(a.key_store.clone(), a.clock.clone()).await;
    b.keys.rotate().await.expect("b rotates");
    // b signs with a key a has not loaded yet; a user registered on b's store.
    b.register("ada@example.com").await;
    let pair = b
        .login("ada@example.com", PASSWORD)
        .await
        .expect("login on b");
    let claims = a
        .auth
        .authenticate(&pair.access_token)
        .await
        .expect("a reloads and verifies");
    assert_eq!(claims.roles, vec!["owner"]);
}

#[tokio::test]
async fn unknown_kid_reloads_are_rate_limited() {
    let a = Harness::new().await;
    let b = Harness::sharing_keys(a.key_store.clone(), a.clock.clone()).await;
    assert!(a.keys.reload_for_unknown_kid().await);
    assert!(
        !a.keys.reload_for_unknown_kid().await,
        "second reload within the interval"
    );
    b.keys.rotate().await.expect("rotate");
    b.register("ada@example.com").await;
    let pair = b.login("ada@example.com", PASSWORD).await.expect("login");
    let r = a.auth.authenticate(&pair.access_token).await;
    assert!(
        matches!(
            r,
            Err(AuthError::Unauthenticated(Unauthenticated::BadSignature))
        ),
        "{r:?}"
    );
    a.clock.advance(Duration::seconds(6));
    a.auth
        .authenticate(&pair.access_token)
        .await
        .expect("after the interval");
}
