//! The shared store contract against PostgreSQL, each case on a database of its own, and the
//! behaviour only PostgreSQL can get wrong: connections, migrations, what is stored, and the
//! revocation feed across instances.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::BoxStream;
use iam_adapters_postgres::testing::TestDatabase;
use iam_adapters_postgres::{LISTENER_APPLICATION_NAME, PgConfig, PostgresStore, migrate};
use iam_domain::{
    LinkKind, LinkToken, MailId, MailMessage, Membership, MfaChallenge, MfaEnrolment, RecoveryCode,
    RefreshToken, Session, SessionId, StoredRecoveryCode, Tenant, TenantStatus, TotpSecret, User,
    UserStatus,
};
use iam_ports::{
    FeedMessage, MailQueue, NewRefreshToken, Refreshed, RevocationEvent, RevocationFeed, Rotation,
    Store, StoreError, ThrottleStore,
};
use iam_store_contract::Fixture;
use iam_store_contract::fixtures::{add_member, child, hash, t0, tenant, user};

mod rls;

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
        throttle: Arc::new(store.throttle_store()),
        mail: Arc::new(store.mail_queue()),
        feed: Arc::new(store.clone()),
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
        vec![
            "00000000000001".to_owned(),
            "00000000000002".to_owned(),
            "00000000000003".to_owned(),
            "00000000000004".to_owned(),
            "00000000000005".to_owned(),
            "00000000000006".to_owned(),
            "00000000000007".to_owned(),
            "00000000000008".to_owned(),
            "00000000000009".to_owned(),
            "00000000000010".to_owned()
        ]
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

// The revocation feed over LISTEN/NOTIFY, and what only PostgreSQL can get wrong in the queries
// behind it.

async fn next_message(stream: &mut BoxStream<'static, FeedMessage>) -> FeedMessage {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a message within 5 s")
        .expect("the feed never ends")
}

async fn raw_exec(url: &str, sql: &str) {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let mut conn = AsyncPgConnection::establish(url).await.expect("connect");
    conn.batch_execute(sql).await.expect("statement");
}

async fn raw_count(url: &str, sql: &str) -> i64 {
    use diesel_async::{AsyncConnection, AsyncPgConnection};
    let mut conn = AsyncPgConnection::establish(url).await.expect("connect");
    rls::count(&mut conn, sql).await.expect("count")
}

/// The listener connections on the test's own database.
async fn listeners(url: &str) -> i64 {
    raw_count(
        url,
        &format!(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = '{LISTENER_APPLICATION_NAME}'"
        ),
    )
    .await
}

/// User 1 with tenant 1 (a member), committed.
async fn seed(store: &PostgresStore) -> (User, Tenant) {
    let (u, t) = (user(1), tenant(1, &user(1)));
    let mut uow = store.begin().await.expect("begin");
    uow.insert_user(&u, None).await.expect("user");
    uow.insert_tenant(&t).await.expect("tenant");
    uow.insert_membership(&Membership {
        tenant: t.id,
        user: u.id,
        roles: vec![],
        created_at: t0(),
    })
    .await
    .expect("membership");
    uow.commit().await.expect("commit");
    (u, t)
}

fn session_of(u: &User, t: &Tenant, n: u16) -> Session {
    let [hi, lo] = n.to_be_bytes();
    Session {
        id: SessionId::new_v7(t0(), [hi, lo, 0, 0, 0, 0, 0, 0, 0, 1]),
        user: u.id,
        tenant: t.id,
        amr: vec!["pwd".into()],
        auth_time: t0(),
        created_at: t0(),
        revoked_at: None,
    }
}

fn first_token(n: u16) -> NewRefreshToken {
    let [hi, lo] = n.to_be_bytes();
    let mut random = [7; 32];
    random[..2].copy_from_slice(&[hi, lo]);
    NewRefreshToken {
        hash: RefreshToken::from_random(random).hash(),
        issued_at: t0(),
        expires_at: t0() + chrono::Duration::days(1),
    }
}

/// Commits a tenant-status flip on `store`, for a recognisable event after quiet stretches.
async fn marker(store: &PostgresStore, t: &Tenant, status: TenantStatus) -> FeedMessage {
    let mut uow = store.begin().await.expect("begin");
    assert!(
        uow.set_tenant_status(t.id, status, t0())
            .await
            .expect("status")
    );
    uow.commit().await.expect("commit");
    FeedMessage::Event(RevocationEvent::TenantStatus(t.id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_hear_each_others_revocations_within_a_second() {
    let db = TestDatabase::new().await;
    let a = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect a");
    let b = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect b");
    let (u, t) = seed(&a).await;
    let s = session_of(&u, &t, 1);
    let mut uow = a.begin().await.expect("begin");
    uow.insert_session(&s, &first_token(1))
        .await
        .expect("session");
    uow.commit().await.expect("commit");

    let mut heard_by_a = a.subscribe().await.expect("subscribe a");
    let mut heard_by_b = b.subscribe().await.expect("subscribe b");

    // B revokes; A (and B itself) hear it.
    let started = Instant::now();
    let mut uow = b.begin().await.expect("begin");
    assert!(uow.revoke_session(s.id, t0()).await.expect("revoke"));
    uow.commit().await.expect("commit");
    let revoked = FeedMessage::Event(RevocationEvent::SessionRevoked(s.id));
    assert_eq!(next_message(&mut heard_by_a).await, revoked);
    let latency = started.elapsed();
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    assert_eq!(next_message(&mut heard_by_b).await, revoked);

    // A disables the user; B hears it.
    let started = Instant::now();
    let mut uow = a.begin().await.expect("begin");
    let disabled = User {
        status: UserStatus::Disabled,
        ..u.clone()
    };
    assert!(uow.update_user(&disabled).await.expect("disable"));
    uow.commit().await.expect("commit");
    let status = FeedMessage::Event(RevocationEvent::UserStatus(u.id, UserStatus::Disabled));
    assert_eq!(next_message(&mut heard_by_b).await, status);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(next_message(&mut heard_by_a).await, status);

    // Each instance's snapshot shows both changes, whoever made them.
    for store in [&a, &b] {
        let snap = store.snapshot(t0()).await.expect("snapshot");
        assert_eq!(snap.revoked_sessions, vec![s.id]);
        assert_eq!(snap.inactive_users, vec![(u.id, UserStatus::Disabled)]);
        assert!(snap.blocked_tenants.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_resyncs_then_hears_again() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let (u, t) = seed(&store).await;
    let mut stream = store.subscribe().await.expect("subscribe");
    assert_eq!(listeners(&db.url).await, 1);

    let killed = raw_count(
        &db.url,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = '{LISTENER_APPLICATION_NAME}'"
        ),
    )
    .await;
    assert_eq!(killed, 1);
    // Committed while the listener is (most likely) down: unheard, but the resync covers it.
    let blocked = marker(&store, &t, TenantStatus::Blocked).await;
    assert_eq!(next_message(&mut stream).await, FeedMessage::Resync);
    assert_eq!(listeners(&db.url).await, 1);

    let mut uow = store.begin().await.expect("begin");
    let disabled = User {
        status: UserStatus::Disabled,
        ..u.clone()
    };
    assert!(uow.update_user(&disabled).await.expect("disable"));
    uow.commit().await.expect("commit");
    let mut next = next_message(&mut stream).await;
    // The blocking is heard after all if the new listener was up before it committed.
    if next == blocked {
        next = next_message(&mut stream).await;
    }
    assert_eq!(
        next,
        FeedMessage::Event(RevocationEvent::UserStatus(u.id, UserStatus::Disabled))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_closes_its_connection() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let first = store.subscribe().await.expect("subscribe");
    let second = store.subscribe().await.expect("subscribe again");
    assert_eq!(listeners(&db.url).await, 2);
    drop(first);
    let mut left = listeners(&db.url).await;
    for _ in 0..100 {
        if left == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = listeners(&db.url).await;
    }
    assert_eq!(left, 1, "the dropped subscription's connection is closed");
    drop(second);
    for _ in 0..100 {
        left = listeners(&db.url).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_payload_is_a_resync_and_the_feed_goes_on() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let (_, t) = seed(&store).await;
    let mut stream = store.subscribe().await.expect("subscribe");
    raw_exec(&db.url, "SELECT pg_notify('iam_revocations', 'not json')").await;
    raw_exec(
        &db.url,
        r#"SELECT pg_notify('iam_revocations', '{"v":99,"n":0,"e":[]}')"#,
    )
    .await;
    assert_eq!(next_message(&mut stream).await, FeedMessage::Resync);
    assert_eq!(next_message(&mut stream).await, FeedMessage::Resync);
    let expected = marker(&store, &t, TenantStatus::Blocked).await;
    assert_eq!(next_message(&mut stream).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_changes_are_published() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let (u, t) = seed(&store).await;
    let s = session_of(&u, &t, 1);
    let mut uow = store.begin().await.expect("begin");
    uow.insert_session(&s, &first_token(1))
        .await
        .expect("session");
    assert!(uow.revoke_session(s.id, t0()).await.expect("revoke"));
    uow.commit().await.expect("commit");
    let mut stream = store.subscribe().await.expect("subscribe");

    let mut uow = store.begin().await.expect("begin");
    // Already revoked, same status, same status, no sessions left: nothing to announce.
    assert!(!uow.revoke_session(s.id, t0()).await.expect("revoke again"));
    assert!(
        uow.set_tenant_status(t.id, TenantStatus::Active, t0())
            .await
            .expect("status")
    );
    let renamed = User {
        name: iam_domain::DisplayName::parse("Renamed").expect("name"),
        ..u.clone()
    };
    assert!(uow.update_user(&renamed).await.expect("update"));
    assert!(
        uow.revoke_user_sessions(u.id, None, t0())
            .await
            .expect("revoke all")
            .is_empty()
    );
    uow.commit().await.expect("commit");
    let expected = marker(&store, &t, TenantStatus::Blocked).await;
    assert_eq!(next_message(&mut stream).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_revocation_arrives_whole_and_in_order() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let (u, t) = seed(&store).await;
    let mut uow = store.begin().await.expect("begin");
    // Two full payloads of sessions, so that the status events below start a payload of their own.
    for n in 0..200 {
        uow.insert_session(&session_of(&u, &t, n), &first_token(n))
            .await
            .expect("session");
    }
    uow.commit().await.expect("commit");
    let mut stream = store.subscribe().await.expect("subscribe");

    let mut uow = store.begin().await.expect("begin");
    let revoked = uow
        .revoke_user_sessions(u.id, None, t0())
        .await
        .expect("revoke");
    assert_eq!(revoked.len(), 200);
    // The same 100 status events twice over, so that two payloads of the transaction carry
    // identical events; PostgreSQL would deliver identical payloads only once.
    for _ in 0..100 {
        for status in [UserStatus::Disabled, UserStatus::Active] {
            let updated = User {
                status,
                ..u.clone()
            };
            assert!(uow.update_user(&updated).await.expect("update"));
        }
    }
    uow.commit().await.expect("commit");

    let mut expected: Vec<FeedMessage> = revoked
        .iter()
        .map(|id| FeedMessage::Event(RevocationEvent::SessionRevoked(*id)))
        .collect();
    for _ in 0..100 {
        for status in [UserStatus::Disabled, UserStatus::Active] {
            expected.push(FeedMessage::Event(RevocationEvent::UserStatus(
                u.id, status,
            )));
        }
    }
    let mut heard = Vec::new();
    while heard.len() < expected.len() {
        heard.push(next_message(&mut stream).await);
    }
    assert_eq!(heard, expected);

    // Every token of every session died with it.
    let live = raw_rows(
        &db.url,
        "SELECT token_hash AS value FROM refresh_tokens WHERE status = 'live'",
    )
    .await;
    assert!(live.is_empty(), "{} live tokens left", live.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_status_updates_each_announce_their_change() {
    let db = TestDatabase::new().await;
    let store = Arc::new(
        PostgresStore::connect(&config(&db.url, 4))
            .await
            .expect("connect"),
    );
    let (u, _) = seed(&store).await;
    let mut stream = store.subscribe().await.expect("subscribe");

    let mut first = store.begin().await.expect("begin");
    let disabled = User {
        status: UserStatus::Disabled,
        ..u.clone()
    };
    assert!(first.update_user(&disabled).await.expect("disable"));
    // The second update queues behind the first; it must compare against the status the first
    // commits, not the one its statement started with.
    let second = tokio::spawn({
        let store = store.clone();
        let active = u.clone();
        async move {
            let mut uow = store.begin().await.expect("begin");
            assert!(uow.update_user(&active).await.expect("enable"));
            uow.commit().await.expect("commit");
        }
    });
    until_a_statement_waits_on_a_lock(&db.url).await;
    first.commit().await.expect("commit");
    second.await.expect("task");

    assert_eq!(
        next_message(&mut stream).await,
        FeedMessage::Event(RevocationEvent::UserStatus(u.id, UserStatus::Disabled))
    );
    assert_eq!(
        next_message(&mut stream).await,
        FeedMessage::Event(RevocationEvent::UserStatus(u.id, UserStatus::Active))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_prefixes_are_literal() {
    use iam_domain::Email;
    use iam_ports::UserFilter;

    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let (_, t) = seed(&store).await;
    let mut uow = store.begin().await.expect("begin");
    let mut members = Vec::new();
    for (n, email) in [
        (2, "a_b@example.com"),
        (3, "axb@example.com"),
        (4, "a%c@example.com"),
        (5, "azc@example.com"),
        (6, r"a\d@example.com"),
        (7, r"a\\d@example.com"),
    ] {
        let u = User {
            email: Email::parse(email).expect("email"),
            ..user(n)
        };
        add_member(&mut *uow, &t, &u).await;
        members.push(u);
    }
    for (prefix, expected) in [
        ("a_", vec![0]),
        ("a%", vec![2]),
        (r"a\d", vec![4]),
        (r"a\\", vec![5]),
        ("a", vec![0, 1, 2, 3, 4, 5]),
    ] {
        let filter = UserFilter {
            email_prefix: Some(prefix.to_owned()),
            status: None,
        };
        let found: Vec<_> = uow
            .list_members(t.id, &filter, None, 100)
            .await
            .expect("list")
            .into_iter()
            .map(|u| u.id)
            .collect();
        let mut expected: Vec<_> = expected.into_iter().map(|i| members[i].id).collect();
        expected.sort();
        assert_eq!(found, expected, "{prefix}");
    }
    assert!(
        uow.list_members(t.id, &UserFilter::default(), None, 0)
            .await
            .expect("list")
            .is_empty()
    );
    uow.commit().await.expect("commit");
}

/// The closure table's trigger is the backstop behind the adapter's cycle check: even a hand
/// edit of `parent_id` cannot close a cycle, and a hand-made move keeps the closure true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_cannot_make_a_cycle_and_keep_the_closure() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let (u, root) = seed(&store).await;
    let child = Tenant {
        parent: Some(root.id),
        ..tenant(2, &u)
    };
    let grandchild = Tenant {
        parent: Some(child.id),
        ..tenant(3, &u)
    };
    let mut uow = store.begin().await.expect("begin");
    uow.insert_tenant(&child).await.expect("child");
    uow.insert_tenant(&grandchild).await.expect("grandchild");
    uow.commit().await.expect("commit");

    let mut conn = AsyncPgConnection::establish(&db.url)
        .await
        .expect("connect");
    for (id, parent) in [(root.id, grandchild.id), (child.id, child.id)] {
        let refused = conn
            .batch_execute(&format!(
                "UPDATE tenants SET parent_id = '{parent}' WHERE id = '{id}'"
            ))
            .await
            .expect_err("a cycle is refused");
        assert!(
            matches!(
                refused,
                diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::CheckViolation,
                    _
                )
            ),
            "{refused:?}"
        );
    }
    // Moving the grandchild to the top by hand.
    raw_exec(
        &db.url,
        &format!(
            "UPDATE tenants SET parent_id = NULL WHERE id = '{}'",
            grandchild.id
        ),
    )
    .await;
    let mut uow = store.begin().await.expect("begin");
    assert!(
        uow.ancestors(grandchild.id)
            .await
            .expect("ancestors")
            .is_empty()
    );
    assert!(
        !uow.is_descendant(root.id, grandchild.id)
            .await
            .expect("below")
    );
    assert_eq!(
        uow.ancestors(child.id).await.expect("ancestors"),
        vec![root.id]
    );
    uow.commit().await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_to_an_unreachable_database_is_unavailable() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 1))
        .await
        .expect("connect");
    drop(db);
    let result = store.subscribe().await;
    assert!(matches!(result, Err(StoreError::Unavailable(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_gets_a_resync_not_unbounded_buffering() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let (_, t) = seed(&store).await;
    let mut stream = store.subscribe().await.expect("subscribe");
    // Far more than the subscriber's buffer, each payload distinct, while nobody reads.
    let flood = uuid::Uuid::from_u128(42);
    raw_exec(
        &db.url,
        &format!(
            "SELECT pg_notify('iam_revocations', \
             '{{\"v\":1,\"n\":' || g || ',\"e\":[[\"t\",\"{flood}\"]]}}') \
             FROM generate_series(1, 10000) AS g"
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let flooded = FeedMessage::Event(RevocationEvent::TenantStatus(
        iam_domain::TenantId::from_uuid(flood),
    ));
    let mut before_resync = 0;
    loop {
        let message = next_message(&mut stream).await;
        if message == FeedMessage::Resync {
            break;
        }
        assert_eq!(message, flooded);
        before_resync += 1;
    }
    assert!(
        (1..10_000).contains(&before_resync),
        "{before_resync} events before the resync"
    );
    // The feed goes on after the gap.
    let expected = marker(&store, &t, TenantStatus::Blocked).await;
    loop {
        let message = next_message(&mut stream).await;
        if message == expected {
            break;
        }
        assert_eq!(message, flooded);
    }
}

// Second factors: what only PostgreSQL can get wrong, which is mostly concurrency.

fn enrolment(u: &User, sealed_secret: Vec<u8>) -> MfaEnrolment {
    MfaEnrolment {
        user: u.id,
        sealed_secret,
        created_at: t0(),
        confirmed_at: Some(t0()),
        last_used_step: None,
    }
}

fn challenge(u: &User, t: &Tenant, n: u8) -> MfaChallenge {
    MfaChallenge {
        token_hash: [n; 32],
        user: u.id,
        tenant: t.id,
        amr: vec!["pwd".into()],
        expires_at: t0() + chrono::Duration::minutes(5),
        attempts: 0,
    }
}

fn stored_code(lookup: &str) -> StoredRecoveryCode {
    StoredRecoveryCode {
        lookup: lookup.to_owned(),
        hash: hash(),
        created_at: t0(),
        used_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_totp_step_is_accepted_once_under_concurrency() {
    let db = TestDatabase::new().await;
    let store = Arc::new(
        PostgresStore::connect(&config(&db.url, 4))
            .await
            .expect("connect"),
    );
    let (u, _) = seed(&store).await;
    let mut uow = store.begin().await.expect("begin");
    uow.put_mfa(&enrolment(&u, vec![1; 48])).await.expect("put");
    uow.commit().await.expect("commit");

    // The first unit accepts step 100 but has not committed; the second presents the same code
    // and must queue behind it, then see the step as used.
    let mut first = store.begin().await.expect("begin");
    assert!(first.advance_totp_step(u.id, 100).await.expect("advance"));
    let second = tokio::spawn({
        let store = store.clone();
        async move {
            let mut uow = store.begin().await.expect("begin");
            let accepted = uow.advance_totp_step(u.id, 100).await.expect("advance");
            uow.commit().await.expect("commit");
            accepted
        }
    });
    until_a_statement_waits_on_a_lock(&db.url).await;
    first.commit().await.expect("commit");
    assert!(
        !second.await.expect("task"),
        "the replayed code was accepted"
    );

    // A free-for-all on the next step: exactly one winner.
    let mut racers = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        racers.push(tokio::spawn(async move {
            let mut uow = store.begin().await.expect("begin");
            let accepted = uow.advance_totp_step(u.id, 101).await.expect("advance");
            uow.commit().await.expect("commit");
            accepted
        }));
    }
    let mut winners = 0;
    for racer in racers {
        winners += usize::from(racer.await.expect("task"));
    }
    assert_eq!(winners, 1);
    let mut uow = store.begin().await.expect("begin");
    let stored = uow.mfa(u.id).await.expect("get").expect("enrolled");
    assert_eq!(stored.last_used_step, Some(101));
    uow.commit().await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_code_is_used_once_under_concurrency() {
    let db = TestDatabase::new().await;
    let store = Arc::new(
        PostgresStore::connect(&config(&db.url, 4))
            .await
            .expect("connect"),
    );
    let (u, _) = seed(&store).await;
    let mut uow = store.begin().await.expect("begin");
    uow.replace_recovery_codes(u.id, &[stored_code("AAAA"), stored_code("BBBB")])
        .await
        .expect("codes");
    uow.commit().await.expect("commit");

    let at = t0() + chrono::Duration::hours(1);
    let mut first = store.begin().await.expect("begin");
    assert!(
        first
            .use_recovery_code(u.id, "AAAA", at)
            .await
            .expect("use")
    );
    let second = tokio::spawn({
        let store = store.clone();
        async move {
            let mut uow = store.begin().await.expect("begin");
            let used = uow.use_recovery_code(u.id, "AAAA", at).await.expect("use");
            uow.commit().await.expect("commit");
            used
        }
    });
    until_a_statement_waits_on_a_lock(&db.url).await;
    first.commit().await.expect("commit");
    assert!(!second.await.expect("task"), "the code was used twice");

    let mut racers = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        racers.push(tokio::spawn(async move {
            let mut uow = store.begin().await.expect("begin");
            let used = uow.use_recovery_code(u.id, "BBBB", at).await.expect("use");
            uow.commit().await.expect("commit");
            used
        }));
    }
    let mut winners = 0;
    for racer in racers {
        winners += usize::from(racer.await.expect("task"));
    }
    assert_eq!(winners, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attempts_at_a_challenge_are_capped() {
    const TAKERS: usize = 10;
    const MAX: u32 = 5;
    let db = TestDatabase::new().await;
    let store = Arc::new(
        PostgresStore::connect(&config(&db.url, TAKERS))
            .await
            .expect("connect"),
    );
    let (u, t) = seed(&store).await;
    let mut uow = store.begin().await.expect("begin");
    uow.insert_mfa_challenge(&challenge(&u, &t, 7))
        .await
        .expect("challenge");
    uow.commit().await.expect("commit");

    // Every unit is open before any of them takes, so the takes overlap.
    let barrier = Arc::new(tokio::sync::Barrier::new(TAKERS));
    let mut takers = Vec::new();
    for _ in 0..TAKERS {
        let (store, barrier) = (store.clone(), barrier.clone());
        takers.push(tokio::spawn(async move {
            let mut uow = store.begin().await.expect("begin");
            barrier.wait().await;
            let taken = uow
                .take_mfa_attempt(&[7; 32], t0(), MAX)
                .await
                .expect("take");
            uow.commit().await.expect("commit");
            taken
        }));
    }
    let mut attempts = Vec::new();
    for taker in takers {
        if let Some(c) = taker.await.expect("task") {
            assert_eq!((c.user, c.tenant), (u.id, t.id));
            attempts.push(c.attempts);
        }
    }
    attempts.sort_unstable();
    assert_eq!(
        attempts,
        (1..=MAX).collect::<Vec<_>>(),
        "each attempt counted once"
    );
    let mut uow = store.begin().await.expect("begin");
    assert_eq!(
        uow.take_mfa_attempt(&[7; 32], t0(), MAX)
            .await
            .expect("take"),
        None
    );
    uow.commit().await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_mfa_rows_are_conflicts() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let (u, t) = seed(&store).await;
    let mut uow = store.begin().await.expect("begin");
    uow.insert_mfa_challenge(&challenge(&u, &t, 1))
        .await
        .expect("challenge");
    let dup = uow.insert_mfa_challenge(&challenge(&u, &t, 1)).await;
    assert!(
        matches!(dup, Err(StoreError::Conflict("mfa challenge"))),
        "{dup:?}"
    );
    uow.rollback().await.expect("rollback");

    let mut uow = store.begin().await.expect("begin");
    let dup = uow
        .replace_recovery_codes(u.id, &[stored_code("AAAA"), stored_code("AAAA")])
        .await;
    assert!(
        matches!(dup, Err(StoreError::Conflict("recovery code"))),
        "{dup:?}"
    );
    uow.rollback().await.expect("rollback");

    // Writes for a user who does not exist fail, as in the in-memory store.
    let nobody = user(9);
    let mut uow = store.begin().await.expect("begin");
    let orphan = uow.put_mfa(&enrolment(&nobody, vec![1])).await;
    assert!(
        matches!(orphan, Err(StoreError::Unexpected(_))),
        "{orphan:?}"
    );
    uow.rollback().await.expect("rollback");
    for codes in [vec![], vec![stored_code("AAAA")]] {
        let mut uow = store.begin().await.expect("begin");
        let orphan = uow.replace_recovery_codes(nobody.id, &codes).await;
        assert!(
            matches!(orphan, Err(StoreError::Unexpected(_))),
            "{orphan:?}"
        );
        uow.rollback().await.expect("rollback");
    }
}

/// A stand-in for the application's sealer: the adapter sees only its output.
fn seal(secret: &TotpSecret) -> Vec<u8> {
    let mut sealed = vec![1];
    sealed.extend(
        secret
            .expose()
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ 0x5c ^ (i as u8)),
    );
    sealed.extend([0xAA; 16]);
    sealed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_sealed_secrets_and_code_hashes_are_stored() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let (u, _) = seed(&store).await;
    let secret = TotpSecret::from_bytes((1..=20).collect());
    let sealed = seal(&secret);
    let code = RecoveryCode::from_random([0xA5; 10]);
    let mut uow = store.begin().await.expect("begin");
    uow.put_mfa(&enrolment(&u, sealed.clone()))
        .await
        .expect("put");
    uow.replace_recovery_codes(u.id, &[stored_code(code.lookup())])
        .await
        .expect("codes");
    uow.commit().await.expect("commit");

    let columns = raw_rows(
        &db.url,
        "SELECT convert_to(string_agg(column_name, ',' ORDER BY ordinal_position), 'UTF8') \
         AS value FROM information_schema.columns WHERE table_name = 'mfa_enrolments'",
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&columns[0]),
        "user_id,sealed_secret,created_at,confirmed_at,last_used_step"
    );
    let stored = raw_rows(&db.url, "SELECT sealed_secret AS value FROM mfa_enrolments").await;
    assert_eq!(stored, vec![sealed], "the sealed bytes, as given");

    let hex: String = secret.expose().iter().map(|b| format!("{b:02x}")).collect();
    for (table, what) in [
        ("mfa_enrolments", vec![hex.clone(), secret.base32()]),
        ("recovery_codes", vec![code.secret()[4..].to_owned()]),
    ] {
        let rows = raw_rows(
            &db.url,
            &format!("SELECT convert_to(t::text, 'UTF8') AS value FROM {table} AS t"),
        )
        .await;
        assert_eq!(rows.len(), 1, "{table}");
        let text = String::from_utf8_lossy(&rows[0]).to_lowercase();
        for secret in what {
            assert!(
                !text.contains(&secret.to_lowercase()),
                "{table} holds a secret"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_all_but_one_session_spares_its_refresh_token() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let (u, t) = seed(&store).await;
    let (kept, gone) = (session_of(&u, &t, 1), session_of(&u, &t, 2));
    let mut uow = store.begin().await.expect("begin");
    uow.insert_session(&kept, &first_token(1))
        .await
        .expect("session");
    uow.insert_session(&gone, &first_token(2))
        .await
        .expect("session");
    uow.commit().await.expect("commit");
    let mut stream = store.subscribe().await.expect("subscribe");

    let mut uow = store.begin().await.expect("begin");
    let revoked = uow
        .revoke_user_sessions(u.id, Some(kept.id), t0())
        .await
        .expect("revoke");
    assert_eq!(revoked, vec![gone.id]);
    uow.commit().await.expect("commit");
    assert_eq!(
        next_message(&mut stream).await,
        FeedMessage::Event(RevocationEvent::SessionRevoked(gone.id))
    );

    // The kept session's token still rotates; the other family is dead.
    let token = |n: u16| {
        let [hi, lo] = n.to_be_bytes();
        let mut random = [7; 32];
        random[..2].copy_from_slice(&[hi, lo]);
        RefreshToken::from_random(random)
    };
    let mut uow = store.begin().await.expect("begin");
    let rotated = uow.rotate_refresh(&token(1).hash(), &first_token(11)).await;
    assert!(
        matches!(&rotated, Ok(Rotation::Rotated(s)) if s.id == kept.id),
        "{rotated:?}"
    );
    let reused = uow.rotate_refresh(&token(2).hash(), &first_token(12)).await;
    assert_eq!(reused.expect("rotate"), Rotation::Reused(gone.id));
    uow.commit().await.expect("commit");
    let mut uow = store.begin().await.expect("begin");
    assert!(
        uow.session(kept.id)
            .await
            .expect("session")
            .expect("kept")
            .revoked_at
            .is_none()
    );
    uow.commit().await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_factors_go_with_their_user() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let (owner, t) = seed(&store).await;
    let u = user(2);
    let mut uow = store.begin().await.expect("begin");
    uow.insert_user(&u, None).await.expect("user");
    uow.put_mfa(&enrolment(&u, vec![1; 8])).await.expect("put");
    uow.replace_recovery_codes(u.id, &[stored_code("AAAA")])
        .await
        .expect("codes");
    uow.insert_mfa_challenge(&challenge(&u, &t, 1))
        .await
        .expect("challenge");
    uow.insert_mfa_challenge(&challenge(&owner, &t, 2))
        .await
        .expect("challenge");
    uow.commit().await.expect("commit");

    // Nothing in the store deletes users; an operator may.
    raw_exec(&db.url, &format!("DELETE FROM users WHERE id = '{}'", u.id)).await;
    let left = raw_count(
        &db.url,
        "SELECT (SELECT count(*) FROM mfa_enrolments) + (SELECT count(*) FROM recovery_codes) \
         + (SELECT count(*) FROM mfa_challenges) AS n",
    )
    .await;
    assert_eq!(left, 1, "only the owner's challenge is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_counters_are_shared_by_instances() {
    let db = TestDatabase::new().await;
    let one = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let two = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let (a, b) = (one.throttle_store(), two.throttle_store());
    let key = "login:ip:0123456789abcdef".to_owned();
    let leak = 1.0 / 180.0;
    a.add_failure(&key, t0(), leak).await.expect("add");
    let c = b.add_failure(&key, t0(), leak).await.expect("add");
    assert!((c.score - 2.0).abs() < 1e-9, "{c:?}");
    let seen = a
        .counters(std::slice::from_ref(&key))
        .await
        .expect("counters")[0];
    assert_eq!(seen, Some(c), "the other instance's failure counts here");
    b.forget(&key).await.expect("forget");
    assert!(a.counters(&[key]).await.expect("counters")[0].is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_counters_tolerate_clocks_behind_and_refuse_long_keys() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let throttle = store.throttle_store();
    let later = t0() + chrono::Duration::seconds(60);
    throttle.add_failure("k", later, 1.0).await.expect("add");
    // An instance whose clock is behind drains nothing and does not move the counter back.
    let c = throttle.add_failure("k", t0(), 1.0).await.expect("add");
    assert!((c.score - 2.0).abs() < 1e-9, "{c:?}");
    assert_eq!(c.updated_at, later);
    // Long drains floor at zero.
    let c = throttle
        .add_failure("k", later + chrono::Duration::hours(1), 1.0)
        .await
        .expect("add");
    assert!((c.score - 1.0).abs() < 1e-9, "{c:?}");
    // Keys are hashes; anything longer is a bug and is refused rather than stored.
    let long = "x".repeat(201);
    assert!(matches!(
        throttle.add_failure(&long, t0(), 1.0).await,
        Err(StoreError::Unexpected(_))
    ));
    assert_eq!(
        throttle.counters(&[]).await.expect("no keys"),
        Vec::<Option<iam_domain::throttle::Counter>>::new()
    );
}

// The refresh hot path: `Store::refresh_session`, one call of `iam_refresh_session`.

/// A TCP proxy in front of the test server that records the type of every message the client
/// sends after start-up. Each `S` (Sync) or `Q` (simple query) is one round trip; a `P` (Parse)
/// is a statement prepared anew; BEGIN and COMMIT would show as `Q`.
struct WireTap {
    url: String,
    sent: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl WireTap {
    async fn new(url: &str) -> Self {
        use tokio::net::{TcpListener, TcpStream};

        // postgres://user@host:port/database
        let (scheme, rest) = url.split_once("://").expect("scheme");
        let (authority, path) = rest.split_once('/').expect("database");
        let (user, host) = authority.rsplit_once('@').unwrap_or(("", authority));
        let upstream = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:5432")
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let at = if user.is_empty() { "" } else { "@" };
        let url = format!("{scheme}://{user}{at}127.0.0.1:{port}/{path}");
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = sent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(&upstream).await.expect("upstream");
                let (mut from_client, to_client) = client.into_split();
                let (from_server, to_server) = server.into_split();
                tokio::spawn(async move {
                    let (mut from_server, mut to_client) = (from_server, to_client);
                    let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                });
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = Self::relay(&mut from_client, to_server, &log).await;
                });
            }
        });
        Self { url, sent }
    }

    /// Forwards the client's messages one by one, logging the type of each after start-up.
    async fn relay(
        from: &mut tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        log: &std::sync::Mutex<Vec<u8>>,
    ) -> std::io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        // Start-up messages have no type byte; an SSL or GSS request is followed by another.
        loop {
            let len = from.read_u32().await?;
            let mut body = vec![0; len as usize - 4];
            from.read_exact(&mut body).await?;
            to.write_u32(len).await?;
            to.write_all(&body).await?;
            let code = u32::from_be_bytes(body[..4].try_into().expect("code"));
            if code != 80_877_103 && code != 80_877_104 {
                break;
            }
        }
        loop {
            let kind = from.read_u8().await?;
            let len = from.read_u32().await?;
            let mut body = vec![0; len as usize - 4];
            from.read_exact(&mut body).await?;
            log.lock().expect("log").push(kind);
            to.write_u8(kind).await?;
            to.write_u32(len).await?;
            to.write_all(&body).await?;
        }
    }

    /// The message types sent since the last call, as text.
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.sent.lock().expect("log"))).expect("ascii")
    }
}

/// A session of user 1 in tenant 1 whose first token is `RefreshToken::from_random([n; 32])`.
async fn refreshable(
    store: &PostgresStore,
    u: &User,
    t: &Tenant,
    n: u8,
) -> (Session, RefreshToken) {
    let s = session_of(u, t, n.into());
    let token = RefreshToken::from_random([n; 32]);
    let mut uow = store.begin().await.expect("begin");
    uow.insert_session(
        &s,
        &NewRefreshToken {
            hash: token.hash(),
            issued_at: t0(),
            expires_at: t0() + chrono::Duration::days(1),
        },
    )
    .await
    .expect("session");
    uow.commit().await.expect("commit");
    (s, token)
}

fn next_token(n: u8, at: iam_domain::Timestamp) -> (RefreshToken, NewRefreshToken) {
    let token = RefreshToken::from_random([n; 32]);
    let new = NewRefreshToken {
        hash: token.hash(),
        issued_at: at,
        expires_at: at + chrono::Duration::days(1),
    };
    (token, new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_session_is_one_round_trip_without_begin_on_every_outcome() {
    let db = TestDatabase::new().await;
    let tap = WireTap::new(&db.url).await;
    // One connection: every call below goes through it, and none may leave a transaction open.
    let store = PostgresStore::connect(&config(&tap.url, 1))
        .await
        .expect("connect");
    let (u, t) = seed(&store).await;
    let (s, first) = refreshable(&store, &u, &t, 1).await;
    let (_, warm) = refreshable(&store, &u, &t, 2).await;

    // The connection's first call prepares the statement as well.
    let (_, warm_next) = next_token(102, t0());
    let warmed = store
        .refresh_session(&warm.hash(), &warm_next)
        .await
        .expect("warm up");
    assert!(matches!(warmed, Refreshed::Rotated(_)), "{warmed:?}");
    tap.take();

    let one_round_trip = |what: &str, sent: String| {
        assert_eq!(
            sent.matches(['S', 'Q']).count(),
            1,
            "{what}: messages sent {sent:?}"
        );
        assert!(!sent.contains(['Q', 'P']), "{what}: messages sent {sent:?}");
    };
    let (second, second_new) = next_token(11, t0() + chrono::Duration::minutes(1));
    let rotated = store
        .refresh_session(&first.hash(), &second_new)
        .await
        .expect("rotate");
    one_round_trip("rotated", tap.take());
    let Refreshed::Rotated(standing) = rotated else {
        panic!("expected a rotation, got {rotated:?}");
    };
    assert_eq!(standing.session, s);
    assert_eq!(standing.user, Some(u.clone()));
    assert_eq!(standing.tenant, Some(t.clone()));
    assert!(standing.membership.is_some());

    let (_, unused) = next_token(12, t0() + chrono::Duration::minutes(2));
    let unknown = RefreshToken::from_random([99; 32]);
    assert_eq!(
        store
            .refresh_session(&unknown.hash(), &unused)
            .await
            .expect("unknown"),
        Refreshed::Unknown
    );
    one_round_trip("unknown", tap.take());

    let (_, late) = next_token(13, t0() + chrono::Duration::days(2));
    assert_eq!(
        store
            .refresh_session(&second.hash(), &late)
            .await
            .expect("expired"),
        Refreshed::Expired
    );
    one_round_trip("expired", tap.take());

    assert_eq!(
        store
            .refresh_session(&first.hash(), &unused)
            .await
            .expect("reuse"),
        Refreshed::Reused(s.id)
    );
    one_round_trip("reused", tap.take());

    // Each call committed on its own: the reuse's revocation is visible elsewhere at once.
    let mut uow = store.begin().await.expect("begin");
    let seen = uow.session(s.id).await.expect("session").expect("exists");
    uow.commit().await.expect("commit");
    assert_eq!(seen.revoked_at, Some(t0() + chrono::Duration::minutes(2)));
    assert_eq!(
        raw_count(
            &db.url,
            "SELECT count(*) AS n FROM refresh_tokens WHERE status = 'live'"
        )
        .await,
        1,
        "only the warm-up session's token is live"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reuse_through_refresh_session_is_heard_by_another_store() {
    let db = TestDatabase::new().await;
    let a = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect a");
    let b = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect b");
    let (u, t) = seed(&a).await;
    let (s, first) = refreshable(&a, &u, &t, 1).await;
    let mut heard_by_a = a.subscribe().await.expect("subscribe");

    let (_, second) = next_token(11, t0());
    let rotated = b.refresh_session(&first.hash(), &second).await;
    assert!(matches!(rotated, Ok(Refreshed::Rotated(_))), "{rotated:?}");
    let started = Instant::now();
    let (_, third) = next_token(12, t0());
    assert_eq!(
        b.refresh_session(&first.hash(), &third)
            .await
            .expect("reuse"),
        Refreshed::Reused(s.id)
    );
    // Readable (not a resync): the function writes payload.rs's format.
    assert_eq!(
        next_message(&mut heard_by_a).await,
        FeedMessage::Event(RevocationEvent::SessionRevoked(s.id))
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // A second reuse finds the family revoked already and announces nothing; neither does a
    // rotation, nor an unknown token.
    assert_eq!(
        b.refresh_session(&first.hash(), &third)
            .await
            .expect("reuse again"),
        Refreshed::Reused(s.id)
    );
    let (_, other) = refreshable(&a, &u, &t, 2).await;
    let (_, fourth) = next_token(13, t0());
    let rotated = a.refresh_session(&other.hash(), &fourth).await;
    assert!(matches!(rotated, Ok(Refreshed::Rotated(_))), "{rotated:?}");
    let expected = marker(&b, &t, TenantStatus::Blocked).await;
    assert_eq!(next_message(&mut heard_by_a).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_racing_a_reuse_cannot_keep_the_family_alive() {
    let db = TestDatabase::new().await;
    let store = Arc::new(
        PostgresStore::connect(&config(&db.url, 4))
            .await
            .expect("connect"),
    );
    let (u, t) = seed(&store).await;
    let (s, first) = refreshable(&store, &u, &t, 1).await;
    let (second, second_new) = next_token(11, t0());
    let rotated = store.refresh_session(&first.hash(), &second_new).await;
    assert!(matches!(rotated, Ok(Refreshed::Rotated(_))), "{rotated:?}");

    // The holder of the second token rotates it in a unit that has not committed yet.
    let mut winner = store.begin().await.expect("begin");
    let (third, third_new) = next_token(12, t0());
    let spent = winner.rotate_refresh(&second.hash(), &third_new).await;
    assert!(matches!(spent, Ok(Rotation::Rotated(_))), "{spent:?}");
    // Meanwhile the spent first token comes back; revoking the family queues on a row lock.
    let reuse = tokio::spawn({
        let store = store.clone();
        let presented = first.hash();
        async move {
            store
                .refresh_session(&presented, &next_token(13, t0()).1)
                .await
        }
    });
    until_a_statement_waits_on_a_lock(&db.url).await;
    winner.commit().await.expect("commit");
    assert_eq!(
        reuse.await.expect("task").expect("reuse"),
        Refreshed::Reused(s.id)
    );

    // The third token was committed where the revocation could not see it; it is dead all the
    // same, and refreshing with it finds the family revoked.
    assert_eq!(
        store
            .refresh_session(&third.hash(), &next_token(14, t0()).1)
            .await
            .expect("late"),
        Refreshed::Reused(s.id)
    );
    assert_eq!(
        raw_count(
            &db.url,
            "SELECT count(*) AS n FROM refresh_tokens WHERE status = 'live'"
        )
        .await,
        0
    );
}

fn reset_link(n: u8, u: &User) -> LinkToken {
    LinkToken {
        hash: [n; 32],
        kind: LinkKind::Reset,
        email: u.email.clone(),
        user: Some(u.id),
        tenant: None,
        roles: vec![],
        invited_by: None,
        created_at: t0(),
        expires_at: t0() + chrono::Duration::hours(1),
        used_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_token_is_taken_once_under_concurrency() {
    const TAKERS: usize = 8;
    let db = TestDatabase::new().await;
    let store = Arc::new(
        PostgresStore::connect(&config(&db.url, TAKERS))
            .await
            .expect("connect"),
    );
    let (u, _) = seed(&store).await;
    let mut uow = store.begin().await.expect("begin");
    uow.insert_link_token(&reset_link(1, &u))
        .await
        .expect("insert");
    uow.commit().await.expect("commit");

    let barrier = Arc::new(tokio::sync::Barrier::new(TAKERS));
    let mut takers = Vec::new();
    for _ in 0..TAKERS {
        let (store, barrier) = (store.clone(), barrier.clone());
        takers.push(tokio::spawn(async move {
            let mut uow = store.begin().await.expect("begin");
            barrier.wait().await;
            let taken = uow
                .take_link_token(&[1; 32], LinkKind::Reset, t0())
                .await
                .expect("take");
            uow.commit().await.expect("commit");
            taken
        }));
    }
    let mut winners = Vec::new();
    for taker in takers {
        if let Some(t) = taker.await.expect("task") {
            winners.push(t);
        }
    }
    assert_eq!(winners.len(), 1, "the link was taken more than once");
    assert_eq!(winners[0].used_at, Some(t0()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_tokens_store_only_the_hash_and_go_with_their_user() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let (u, _) = seed(&store).await;
    let mut uow = store.begin().await.expect("begin");
    uow.insert_link_token(&reset_link(1, &u))
        .await
        .expect("insert");
    uow.commit().await.expect("commit");
    assert_eq!(
        raw_rows(&db.url, "SELECT hash AS value FROM link_tokens").await,
        vec![vec![1; 32]]
    );

    let mut uow = store.begin().await.expect("begin");
    let dup = uow.insert_link_token(&reset_link(1, &u)).await;
    assert!(
        matches!(dup, Err(StoreError::Conflict("link token"))),
        "{dup:?}"
    );
    uow.rollback().await.expect("rollback");
    // The failed insert rolled back the supersession that came before it.
    let mut uow = store.begin().await.expect("begin");
    assert!(
        uow.take_link_token(&[1; 32], LinkKind::Reset, t0())
            .await
            .expect("take")
            .is_some()
    );
    uow.rollback().await.expect("rollback");

    // An operator deletes a user: their own links go, an invitation they sent stays.
    let (u2, t) = (user(2), tenant(1, &u));
    let mut uow = store.begin().await.expect("begin");
    uow.insert_user(&u2, None).await.expect("user");
    uow.insert_link_token(&reset_link(2, &u2))
        .await
        .expect("theirs");
    uow.insert_link_token(&LinkToken {
        kind: LinkKind::Invite,
        user: None,
        tenant: Some(t.id),
        invited_by: Some(u2.id),
        ..reset_link(3, &user(3))
    })
    .await
    .expect("invitation");
    uow.commit().await.expect("commit");
    raw_exec(
        &db.url,
        &format!("DELETE FROM users WHERE id = '{}'", u2.id),
    )
    .await;
    assert_eq!(
        raw_rows(
            &db.url,
            "SELECT hash AS value FROM link_tokens WHERE invited_by IS NULL ORDER BY hash"
        )
        .await,
        vec![vec![1; 32], vec![3; 32]]
    );
}

fn outgoing(n: u16, u: &User) -> MailMessage {
    MailMessage {
        id: MailId(uuid::Uuid::from_u128(u128::from(n) + 1)),
        to: u.email.clone(),
        subject: format!("message {n}"),
        text: "https://example.test/reset?token=secret".into(),
        html: "<a href=\"https://example.test/reset?token=secret\">reset</a>".into(),
        created_at: t0() + chrono::Duration::milliseconds(i64::from(n)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_never_share_a_message() {
    const MESSAGES: u16 = 50;
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 4))
        .await
        .expect("connect");
    let (u, _) = seed(&store).await;
    let mut uow = store.begin().await.expect("begin");
    for n in 0..MESSAGES {
        uow.enqueue_mail(&outgoing(n, &u)).await.expect("enqueue");
    }
    uow.commit().await.expect("commit");
    let queue = Arc::new(store.mail_queue());
    assert_eq!(queue.pending().await.expect("pending"), u64::from(MESSAGES));

    let now = t0() + chrono::Duration::minutes(1);
    let lease = now + chrono::Duration::minutes(5);
    let mut claimers = Vec::new();
    for _ in 0..2 {
        let queue = queue.clone();
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = queue.claim_due(now, lease, 5).await.expect("claim");
                if batch.is_empty() {
                    return mine;
                }
                assert!(batch.len() <= 5);
                assert!(batch.iter().all(|m| m.attempts == 1));
                // Each batch comes oldest first.
                assert!(
                    batch
                        .windows(2)
                        .all(|w| w[0].message.created_at < w[1].message.created_at)
                );
                mine.extend(batch.into_iter().map(|m| m.message.id));
            }
        }));
    }
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.expect("task"));
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        (total, all.len()),
        (usize::from(MESSAGES), usize::from(MESSAGES))
    );
    // Claimed is not sent.
    assert_eq!(queue.pending().await.expect("pending"), u64::from(MESSAGES));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_keep_a_truncated_reason_and_the_bodies_stay_out_of_errors() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let (u, _) = seed(&store).await;
    let m = outgoing(1, &u);
    let mut uow = store.begin().await.expect("begin");
    uow.enqueue_mail(&m).await.expect("enqueue");
    // A duplicate id is a conflict that names neither the message nor its bodies.
    let dup = uow.enqueue_mail(&m).await;
    let Err(err) = dup else {
        panic!("a duplicate message id was accepted");
    };
    assert!(matches!(err, StoreError::Conflict("mail")), "{err:?}");
    let chain = error_chain(&err);
    assert!(!chain.contains("secret"), "{chain}");
    uow.rollback().await.expect("rollback");

    let mut uow = store.begin().await.expect("begin");
    uow.enqueue_mail(&m).await.expect("enqueue");
    uow.commit().await.expect("commit");
    let queue = store.mail_queue();
    let claimed = queue
        .claim_due(m.created_at, m.created_at, 1)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].message, m);
    queue
        .mark_failed(m.id, t0(), &"x".repeat(2000))
        .await
        .expect("failed");
    assert_eq!(
        raw_count(
            &db.url,
            "SELECT length(last_error)::bigint AS n FROM mail_outbox"
        )
        .await,
        500
    );
    // Unknown ids are no error.
    queue
        .mark_sent(MailId(uuid::Uuid::nil()), t0())
        .await
        .expect("unknown");
    queue.mark_sent(m.id, t0()).await.expect("sent");
    assert_eq!(queue.pending().await.expect("pending"), 0);
    assert!(
        queue
            .claim_due(t0() + chrono::Duration::days(1), t0(), 10)
            .await
            .expect("claim")
            .is_empty()
    );
}

/// A fresh store with a root tenant and two children of it (numbers 2 and 3), all owned by
/// user 1; the database lives as long as the first value.
async fn two_children() -> (TestDatabase, PostgresStore, User, Tenant, Tenant, Tenant) {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 4))
        .await
        .expect("connect");
    let (u, root) = seed(&store).await;
    let (a, b) = (child(2, &root, &u), child(3, &root, &u));
    let mut uow = store.begin().await.expect("begin");
    uow.insert_tenant(&a).await.expect("a");
    uow.insert_tenant(&b).await.expect("b");
    uow.commit().await.expect("commit");
    (db, store, u, root, a, b)
}

/// Two moves that would each be fine alone but together close a cycle (A under B, B under A):
/// the tree lock makes the second wait for the first and then see it, so it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_moves_cannot_close_a_cycle() {
    let (_db, store, _, root, a, b) = two_children().await;

    let mut first = store.begin().await.expect("begin");
    assert_eq!(
        first
            .move_tenant(a.id, Some(b.id), t0())
            .await
            .expect("move"),
        iam_ports::Move::Moved
    );
    let second = {
        let store = store.clone();
        let (a, b) = (a.id, b.id);
        tokio::spawn(async move {
            let mut uow = store.begin().await.expect("begin");
            let outcome = uow.move_tenant(b, Some(a), t0()).await.expect("move");
            uow.commit().await.expect("commit");
            outcome
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "the second move waits for the first");
    first.commit().await.expect("commit");
    assert_eq!(second.await.expect("task"), iam_ports::Move::Cycle);
    let mut uow = store.begin().await.expect("begin");
    assert_eq!(uow.ancestors(a.id).await.expect("a"), vec![b.id, root.id]);
    assert_eq!(uow.ancestors(b.id).await.expect("b"), vec![root.id]);
    uow.commit().await.expect("commit");
}

/// A child inserted while its parent is being moved waits for the move and gets the new
/// ancestry: the closure rows it copies are the ones the move wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_inserted_during_a_move_gets_the_new_ancestors() {
    let (_db, store, u, root, a, b) = two_children().await;

    let mut moving = store.begin().await.expect("begin");
    assert_eq!(
        moving
            .move_tenant(a.id, Some(b.id), t0())
            .await
            .expect("move"),
        iam_ports::Move::Moved
    );
    let grandchild = child(4, &a, &u);
    let inserting = {
        let store = store.clone();
        let grandchild = grandchild.clone();
        tokio::spawn(async move {
            let mut uow = store.begin().await.expect("begin");
            uow.insert_tenant(&grandchild).await.expect("insert");
            uow.commit().await.expect("commit");
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!inserting.is_finished(), "the insert waits for the move");
    moving.commit().await.expect("commit");
    tokio::time::timeout(Duration::from_secs(5), inserting)
        .await
        .expect("no deadlock")
        .expect("task");
    let mut uow = store.begin().await.expect("begin");
    assert_eq!(
        uow.ancestors(grandchild.id).await.expect("ancestors"),
        vec![a.id, b.id, root.id]
    );
    uow.commit().await.expect("commit");
}

/// The owner-count checks lock tenant rows (`lock_tenant`); a move's closure rows take
/// key-share locks on the new ancestors. Those must not wait on each other, or a move and a
/// user's disable (which locks the tenants they own) would deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_row_locks_do_not_hold_up_a_move_beneath() {
    let (_db, store, _, _, a, x) = two_children().await;

    let mut checking = store.begin().await.expect("begin");
    assert!(checking.lock_tenant(a.id).await.expect("lock"));
    let mut moving = store.begin().await.expect("begin");
    let moved = tokio::time::timeout(
        Duration::from_secs(5),
        moving.move_tenant(x.id, Some(a.id), t0()),
    )
    .await
    .expect("the move does not wait for the row lock")
    .expect("move");
    assert_eq!(moved, iam_ports::Move::Moved);
    moving.commit().await.expect("commit");
    assert!(checking.lock_tenant(x.id).await.expect("lock"));
    checking.commit().await.expect("commit");
}
