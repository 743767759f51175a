//! Concurrency: one winner per refresh token, and sign-ins shed rather than queue without bound.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Backend, new_master_key, spawn, spawn_with, test_settings};

#[tokio::test]
async fn concurrent_refreshes_of_one_token_have_exactly_one_winner() {
    let app = spawn(Backend::Postgres).await;
    app.register("ada@example.com").await;
    let tokens = app.login("ada@example.com").await;
    let body = json!({ "refresh_token": tokens["refresh_token"] });
    let answers = join_all((0..8).map(|_| app.post("/auth/refresh", body.clone()))).await;
    let statuses: Vec<StatusCode> = answers.iter().map(reqwest::Response::status).collect();
    let winners = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(winners, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::BAD_REQUEST)
    );
}

#[tokio::test]
async fn a_sign_in_storm_is_shed_with_retry_after() {
    let key = new_master_key();
    let mut settings = test_settings(None, &key);
    // Production cost, one worker, no queue: every sign-in beyond the one hashing is refused.
    settings.password_hashing.memory_kib = 64 * 1024;
    settings.password_hashing.parallelism = 4;
    settings.password_hashing.workers = Some(1);
    settings.password_hashing.queue = 0;
    let app = spawn_with(settings, None, key).await;
    // Distinct accounts, so that the per-account throttle stays out of it and the pool sheds.
    let body = |n: usize| json!({ "email": format!("nobody{n}@example.com"), "password": "whatever password" });
    let answers = join_all((0..16).map(|n| app.post("/auth/login", body(n)))).await;
    let mut shed = 0;
    for r in answers {
        match r.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(r.headers()["retry-after"], "1");
                shed += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        shed > 0,
        "with one worker and no queue, a burst of 16 must be shed in part"
    );
    assert_eq!(app.app.hasher_stats.shed(), shed);
    // And the service is healthy afterwards.
    let r = app.post("/auth/login", body(99)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
