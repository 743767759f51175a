//! The shared store contract against PostgreSQL, each case on a database of its own, and the
//! behaviour only PostgreSQL can get wrong: connections, migrations and what is stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iam_adapters_postgres::testing::TestDatabase;
use iam_adapters_postgres::{PgConfig, PostgresStore, migrate};
use iam_domain::{RefreshToken, Session, SessionId};
use iam_ports::{NewRefreshToken, Rotation, Store, StoreError};
use iam_store_contract::Fixture;
use iam_store_contract::fixtures::{t0, user};

fn config(url: &str, max_connections: usize) -> PgConfig {
    PgConfig {
        url: url.to_owned(),
        max_connections,
        acquire_timeout: Duration::from_secs(10),
    }
}

async fn fixture() -> Fixture {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 4))
        .await
        .expect("connect");
    Fixture {
        keys: Arc::new(store.key_store()),
        store: Arc::new(store),
        guard: Box::new(db),
    }
}

iam_store_contract::store_contract_tests!(fixture);

/// Runs one statement on a connection of its own, outside the store.
async fn raw_rows(url: &str, sql: &str) -> Vec<Vec<u8>> {
    use diesel::QueryableByName;
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

    #[derive(QueryableByName)]
    struct Bytes {
        #[diesel(sql_type = diesel::sql_types::Bytea)]
        value: Vec<u8>,
    }
    let mut conn = AsyncPgConnection::establish(url).await.expect("connect");
    diesel::sql_query(sql)
        .load::<Bytes>(&mut conn)
        .await
        .expect("query")
        .into_iter()
        .map(|r| r.value)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_unit_returns_a_clean_connection_to_a_pool_of_one() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&PgConfig {
        acquire_timeout: Duration::from_secs(5),
        ..config(&db.url, 1)
    })
    .await
    .expect("connect");
    for n in 1..=3 {
        let u = user(n);
        {
            let mut uow = store.begin().await.expect("begin");
            uow.insert_user(&u, None).await.expect("insert");
            // Dropped with its transaction open; the only connection must come back clean.
        }
        let mut uow = store.begin().await.expect("begin after drop");
        assert!(uow.user_by_id(u.id).await.expect("lookup").is_none());
        // A leftover transaction would make this a savepoint or fail outright.
        uow.insert_user(&u, None).await.expect("insert again");
        uow.rollback().await.expect("rollback");
    }
    store.ping().await.expect("ping");
}

#[tokio::test(flavor = "current_thread")]
async fn dropped_unit_rolls_back_on_a_current_thread_runtime() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 1))
        .await
        .expect("connect");
    let u = user(1);
    {
        let mut uow = store.begin().await.expect("begin");
        uow.insert_user(&u, None).await.expect("insert");
    }
    let mut uow = store.begin().await.expect("begin after drop");
    assert!(uow.user_by_id(u.id).await.expect("lookup").is_none());
    uow.commit().await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_statement_poisons_the_unit() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let (a, b) = (user(1), user(2));
    let mut uow = store.begin().await.expect("begin");
    uow.insert_user(&a, None).await.expect("insert");
    let dup = uow.insert_user(&a, None).await;
    assert!(matches!(dup, Err(StoreError::Conflict("user"))), "{dup:?}");
    // Later statements fail without reaching the server, and commit admits it rolled back.
    let later = uow.insert_user(&b, None).await;
    assert!(matches!(later, Err(StoreError::Unexpected(_))), "{later:?}");
    let commit = uow.commit().await;
    assert!(
        matches!(commit, Err(StoreError::Unexpected(_))),
        "{commit:?}"
    );

    let mut uow = store.begin().await.expect("begin");
    assert!(uow.user_by_id(a.id).await.expect("lookup").is_none());
    uow.commit().await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_closed_port_is_unavailable_at_once() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let started = Instant::now();
    let result = PostgresStore::connect(&PgConfig {
        url: format!("postgres://postgres:hunter2@127.0.0.1:{port}/iam"),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(30),
    })
    .await;
    let Err(err) = result else {
        panic!("connected to a closed port");
    };
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let chain = format!("{err:?} {}", error_chain(&err));
    assert!(!chain.contains("hunter2"), "{chain}");
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent() {
    let db = TestDatabase::new().await;
    // The template has every migration already.
    assert_eq!(
        migrate(&db.url).await.expect("migrate"),
        Vec::<String>::new()
    );
    assert_eq!(
        migrate(&db.url).await.expect("migrate again"),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_everything_to_an_empty_database() {
    let db = TestDatabase::new().await;
    raw_rows(
        &db.url,
        "SELECT ''::bytea AS value FROM (SELECT 1) AS one WHERE false",
    )
    .await;
    // Empty the schema, then migrate from scratch.
    {
        use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
        let mut conn = AsyncPgConnection::establish(&db.url)
            .await
            .expect("connect");
        conn.batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
            .await
            .expect("reset");
    }
    assert_eq!(
        migrate(&db.url).await.expect("migrate"),
        vec!["00000000000001".to_owned()]
    );
    assert!(migrate(&db.url).await.expect("migrate again").is_empty());
    let store = PostgresStore::connect(&config(&db.url, 1))
        .await
        .expect("connect");
    store.ping().await.expect("ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_token_hash_is_stored() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let u = user(1);
    let tenant = iam_domain::Tenant::new_top_level(
        iam_domain::TenantId::new_v7(t0(), [1; 10]),
        iam_domain::TenantName::parse("T").expect("name"),
        u.id,
        t0(),
    );
    let token = RefreshToken::from_random([42; 32]);
    let session = Session {
        id: SessionId::new_v7(t0(), [3; 10]),
        user: u.id,
        tenant: tenant.id,
        amr: vec!["pwd".into()],
        auth_time: t0(),
        created_at: t0(),
        revoked_at: None,
    };
    let mut uow = store.begin().await.expect("begin");
    uow.insert_user(&u, None).await.expect("user");
    uow.insert_tenant(&tenant).await.expect("tenant");
    uow.insert_session(
        &session,
        &NewRefreshToken {
            hash: token.hash(),
            issued_at: t0(),
            expires_at: t0() + chrono::Duration::days(1),
        },
    )
    .await
    .expect("session");
    uow.commit().await.expect("commit");

    let stored = raw_rows(&db.url, "SELECT token_hash AS value FROM refresh_tokens").await;
    assert_eq!(stored, vec![token.hash().as_bytes().to_vec()]);
    assert_eq!(stored[0].len(), 32);
    let anywhere = raw_rows(
        &db.url,
        "SELECT convert_to(t::text, 'UTF8') AS value FROM refresh_tokens AS t",
    )
    .await;
    assert!(
        !String::from_utf8_lossy(&anywhere[0]).contains(token.expose()),
        "the token itself must not be stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_timeouts_when_the_pool_is_exhausted() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&PgConfig {
        acquire_timeout: Duration::from_millis(200),
        ..config(&db.url, 1)
    })
    .await
    .expect("connect");
    store.ping().await.expect("ping");
    let held = store.begin().await.expect("begin");
    let started = Instant::now();
    let waited = store.begin().await;
    assert!(matches!(waited, Err(StoreError::Unavailable(_))));
    assert!(started.elapsed() < Duration::from_secs(5));
    held.rollback().await.expect("rollback");
    store.ping().await.expect("ping after release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_dropped_mid_statement_still_rolls_back() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let u = user(1);
    let mut holder = store.begin().await.expect("begin");
    holder.insert_user(&u, None).await.expect("insert");
    {
        let mut waiter = store.begin().await.expect("begin");
        // Queues on the holder's uncommitted row until the timeout drops the statement midway.
        let blocked =
            tokio::time::timeout(Duration::from_millis(200), waiter.insert_user(&u, None)).await;
        assert!(blocked.is_err(), "the insert should have been waiting");
    }
    holder.rollback().await.expect("rollback");

    // Both connections are usable and clean: no leftover transaction, nothing stored.
    let mut a = store.begin().await.expect("begin a");
    let mut b = store.begin().await.expect("begin b");
    assert!(a.user_by_id(u.id).await.expect("lookup").is_none());
    assert!(b.user_by_id(u.id).await.expect("lookup").is_none());
    a.insert_user(&u, None).await.expect("insert");
    a.commit().await.expect("commit");
    b.commit().await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_activations_leave_one_active_key() {
    use iam_domain::KeyId;
    use iam_ports::{KeyStore, StoredKey};

    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 4))
        .await
        .expect("connect");
    let keys = Arc::new(store.key_store());
    let mut tasks = Vec::new();
    for n in 0..4i64 {
        let keys = keys.clone();
        tasks.push(tokio::spawn(async move {
            keys.activate(StoredKey {
                kid: KeyId::parse(&format!("k{n}")).expect("kid"),
                sealed_private_key: vec![n as u8],
                created_at: t0() + chrono::Duration::seconds(n),
                retired_at: None,
            })
            .await
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("activate");
    }
    let all = keys.keys().await.expect("keys");
    assert_eq!(all.len(), 4);
    assert_eq!(all.iter().filter(|k| k.retired_at.is_none()).count(), 1);
}

/// Waits until some statement on the test database is queued on a row lock.
async fn until_a_statement_waits_on_a_lock(url: &str) {
    use diesel::QueryableByName;
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = AsyncPgConnection::establish(url).await.expect("connect");
    for _ in 0..1000 {
        let waiting = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .get_result::<Count>(&mut conn)
        .await
        .expect("pg_stat_activity");
        if waiting.n > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no statement ever waited on a lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_racing_a_reuse_cannot_keep_the_family_alive() {
    let db = TestDatabase::new().await;
    let store = Arc::new(
        PostgresStore::connect(&config(&db.url, 4))
            .await
            .expect("connect"),
    );
    let u = user(1);
    let tenant = iam_domain::Tenant::new_top_level(
        iam_domain::TenantId::new_v7(t0(), [1; 10]),
        iam_domain::TenantName::parse("T").expect("name"),
        u.id,
        t0(),
    );
    fn token(n: u8) -> RefreshToken {
        RefreshToken::from_random([n; 32])
    }
    let new = move |n: u8| NewRefreshToken {
        hash: token(n).hash(),
        issued_at: t0(),
        expires_at: t0() + chrono::Duration::days(1),
    };
    let session = Session {
        id: SessionId::new_v7(t0(), [3; 10]),
        user: u.id,
        tenant: tenant.id,
        amr: vec![],
        auth_time: t0(),
        created_at: t0(),
        revoked_at: None,
    };
    let mut uow = store.begin().await.expect("begin");
    uow.insert_user(&u, None).await.expect("user");
    uow.insert_tenant(&tenant).await.expect("tenant");
    uow.insert_session(&session, &new(0))
        .await
        .expect("session");
    let first = uow.rotate_refresh(&token(0).hash(), &new(1)).await;
    assert!(matches!(first, Ok(Rotation::Rotated(_))), "{first:?}");
    uow.commit().await.expect("commit");

    // The holder of token 1 rotates it but has not committed yet.
    let mut winner = store.begin().await.expect("begin");
    let rotated = winner.rotate_refresh(&token(1).hash(), &new(2)).await;
    assert!(matches!(rotated, Ok(Rotation::Rotated(_))), "{rotated:?}");
    // Meanwhile spent token 0 comes back; revoking the family queues on token 1's row.
    let reuse = tokio::spawn({
        let store = store.clone();
        async move {
            let mut uow = store.begin().await.expect("begin");
            let r = uow.rotate_refresh(&token(0).hash(), &new(3)).await;
            uow.commit().await.expect("commit");
            r
        }
    });
    until_a_statement_waits_on_a_lock(&db.url).await;
    winner.commit().await.expect("commit");
    assert_eq!(
        reuse.await.expect("task").expect("rotate"),
        Rotation::Reused(session.id)
    );

    // Token 2 was committed where the revocation could not see it; it must not revive the family.
    let mut uow = store.begin().await.expect("begin");
    let late = uow.rotate_refresh(&token(2).hash(), &new(4)).await;
    assert_eq!(late.expect("rotate"), Rotation::Reused(session.id));
    uow.commit().await.expect("commit");
    let live = raw_rows(
        &db.url,
        "SELECT token_hash AS value FROM refresh_tokens WHERE status = 'live'",
    )
    .await;
    assert!(live.is_empty(), "{} live tokens left", live.len());
}
