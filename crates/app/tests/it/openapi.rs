//! The committed OpenAPI document is the one the handlers generate.

#[test]
fn committed_openapi_document_is_current() {
    let committed: serde_json::Value =
        serde_json::from_str(include_str!("../../../../openapi.json"))
            .expect("openapi.json is JSON");
    let generated = serde_json::to_value(iam_api_rest::openapi()).expect("serialises");
    assert!(
        committed == generated,
        "openapi.json is stale: run `cargo run -q -p iam-app -- openapi > openapi.json`"
    );
    assert_eq!(generated["openapi"], "3.1.0");
    for path in [
        "/auth/register",
        "/auth/login",
        "/auth/refresh",
        "/auth/logout",
        "/auth/me",
        "/.well-known/jwks.json",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            generated["paths"].get(path).is_some(),
            "{path} is documented"
        );
    }
}
