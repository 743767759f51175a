//! Row-level security, proved with raw SQL as the service's database role: another tenant's
//! rows can be neither read nor written, whatever `iam.tenant_id` says, and the role has no way
//! around the policies.

use chrono::Duration;
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use iam_adapters_postgres::testing::TestDatabase;
use iam_adapters_postgres::{PostgresStore, SERVICE_ROLE};
use iam_domain::{AuditActor, AuditEvent, AuditId, Membership, RoleName, SessionId, Tenant};
use iam_ports::Store;
use iam_store_contract::fixtures::{custom_role, new_session, refresh, t0, tenant, user};

use crate::config;

/// Tables whose rows belong to one tenant, with how a row names its tenant.
const TENANT_OWNED: [(&str, &str); 5] = [
    ("memberships", "tenant_id"),
    ("roles", "tenant_id"),
    ("sessions", "tenant_id"),
    ("audit_events", "tenant_id"),
    (
        "refresh_tokens",
        "(SELECT s.tenant_id FROM sessions s WHERE s.id = refresh_tokens.session_id)",
    ),
];

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// The `n` of a `SELECT count(*) AS n …` on `conn`.
pub(crate) async fn count(
    conn: &mut AsyncPgConnection,
    sql: &str,
) -> Result<i64, diesel::result::Error> {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .await
        .map(|c| c.n)
}

/// Two tenants, each with a member, a session with a refresh token, a custom role and an audit
/// event, written through the store (which scopes each write to its tenant).
async fn seed(store: &PostgresStore) -> [Tenant; 2] {
    let (a_owner, b_owner) = (user(1), user(2));
    let (a, b) = (tenant(1, &a_owner), tenant(2, &b_owner));
    let mut uow = store.begin().await.expect("begin");
    for (n, (u, t)) in [(&a_owner, &a), (&b_owner, &b)].into_iter().enumerate() {
        let n = u8::try_from(n).expect("small");
        uow.insert_user(u, None).await.expect("user");
        uow.insert_tenant(t).await.expect("tenant");
        uow.insert_membership(&Membership {
            tenant: t.id,
            user: u.id,
            roles: vec![RoleName::owner()],
            created_at: t0(),
        })
        .await
        .expect("membership");
        let session = new_session(n, u, t);
        uow.insert_session(&session, &refresh(n, t0()).1)
            .await
            .expect("session");
        uow.insert_role(&custom_role(t, n, "billing", &[]))
            .await
            .expect("role");
        uow.append_audit(&AuditEvent {
            id: AuditId::new_v7(t0() + Duration::milliseconds(i64::from(n)), [n; 10]),
            at: t0(),
            actor: AuditActor::Service,
            tenant: t.id,
            action: "users.update".into(),
            target: "users/x".into(),
            request_id: None,
            outcome: iam_domain::AuditOutcome::Success,
        })
        .await
        .expect("audit");
    }
    uow.commit().await.expect("commit");
    [a, b]
}

/// Every statement that would read or change tenant `other`'s rows, as the service role with
/// `iam.tenant_id` as it is now: nothing read, nothing changed, inserts refused.
async fn cannot_touch(conn: &mut AsyncPgConnection, other: &Tenant, setting: &str) {
    for (table, tenant_of) in TENANT_OWNED {
        let seen = count(
            conn,
            &format!(
                "SELECT count(*) AS n FROM {table} WHERE {tenant_of} = '{}'",
                other.id
            ),
        )
        .await
        .expect("count");
        assert_eq!(
            seen, 0,
            "{table} with {setting}: another tenant's rows are invisible"
        );
        if table != "audit_events" {
            let column = if table == "refresh_tokens" {
                "status"
            } else {
                "created_at"
            };
            let changed = diesel::sql_query(format!(
                "UPDATE {table} SET {column} = {column} WHERE {tenant_of} = '{}'",
                other.id
            ))
            .execute(conn)
            .await
            .unwrap_or_else(|e| panic!("update {table}: {e}"));
            assert_eq!(changed, 0, "{table} with {setting}: no update reaches them");
            let deleted = diesel::sql_query(format!(
                "DELETE FROM {table} WHERE {tenant_of} = '{}'",
                other.id
            ))
            .execute(conn)
            .await
            .unwrap_or_else(|e| panic!("delete {table}: {e}"));
            assert_eq!(deleted, 0, "{table} with {setting}: no delete reaches them");
        }
    }
    // Writing a row into the other tenant is refused outright.
    for insert in [
        format!(
            "INSERT INTO memberships (tenant_id, user_id, roles, created_at) \
             SELECT '{}', id, ARRAY['owner'], now() FROM users LIMIT 1",
            other.id
        ),
        format!(
            "INSERT INTO roles (id, tenant_id, name, description, permissions, named_at, \
             created_at, updated_at) VALUES (gen_random_uuid(), '{}', 'sneaky', '', '{{}}', \
             now(), now(), now())",
            other.id
        ),
        format!(
            "INSERT INTO audit_events (id, at, actor_kind, actor_user_id, tenant_id, action, target, \
             outcome) VALUES (gen_random_uuid(), now(), 'service', NULL, '{}', 'x', 'y', \
             'success')",
            other.id
        ),
    ] {
        let refused = conn.batch_execute(&insert).await;
        assert!(refused.is_err(), "with {setting}: {insert}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_role_cannot_reach_another_tenants_rows() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let [a, b] = seed(&store).await;

    let mut conn = AsyncPgConnection::establish(&db.url)
        .await
        .expect("connect");
    conn.batch_execute(&format!("SET ROLE {SERVICE_ROLE}"))
        .await
        .expect("set role");

    // Not the owner, no superuser, no BYPASSRLS; every tenant-owned table forces its policies.
    let privileged = count(
        &mut conn,
        "SELECT count(*) AS n FROM pg_roles WHERE rolname = current_user \
         AND (rolsuper OR rolbypassrls)",
    )
    .await
    .expect("role");
    assert_eq!(privileged, 0);
    for (table, _) in TENANT_OWNED {
        let guarded = count(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM pg_class c WHERE c.relname = '{table}' \
                 AND c.relrowsecurity AND c.relforcerowsecurity \
                 AND NOT pg_has_role(current_user, c.relowner, 'USAGE')"
            ),
        )
        .await
        .expect("pg_class");
        assert_eq!(
            guarded, 1,
            "{table} has RLS enabled and forced, owned by another role"
        );
    }

    // No tenant set: nothing at all.
    for (table, _) in TENANT_OWNED {
        let n = count(&mut conn, &format!("SELECT count(*) AS n FROM {table}"))
            .await
            .expect("count");
        assert_eq!(n, 0, "{table} without a tenant");
    }
    cannot_touch(&mut conn, &b, "no setting").await;

    // Tenant A, set for the whole session (not only a transaction): A's rows, never B's.
    conn.batch_execute(&format!(
        "SELECT set_config('iam.tenant_id', '{}', false)",
        a.id
    ))
    .await
    .expect("set");
    for (table, tenant_of) in TENANT_OWNED {
        let mine = count(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM {table} WHERE {tenant_of} = '{}'",
                a.id
            ),
        )
        .await
        .expect("count");
        let all = count(&mut conn, &format!("SELECT count(*) AS n FROM {table}"))
            .await
            .expect("count");
        assert_eq!((mine, all), (1, 1), "{table} as tenant A");
    }
    cannot_touch(&mut conn, &b, "tenant A").await;
    // Moving A's row over to B is refused too (the policy checks the new row).
    let moved = conn
        .batch_execute(&format!(
            "UPDATE memberships SET tenant_id = '{}' WHERE tenant_id = '{}'",
            b.id, a.id
        ))
        .await;
    assert!(moved.is_err(), "a row cannot be moved into another tenant");

    // An empty or malformed setting matches nothing (the malformed one fails the statement).
    conn.batch_execute("SELECT set_config('iam.tenant_id', '', false)")
        .await
        .expect("set");
    cannot_touch(&mut conn, &b, "an empty setting").await;
    conn.batch_execute("SELECT set_config('iam.tenant_id', 'not-a-uuid', false)")
        .await
        .expect("set");
    assert!(
        count(&mut conn, "SELECT count(*) AS n FROM memberships")
            .await
            .is_err()
    );

    // No way around the policies for this role.
    conn.batch_execute(&format!(
        "SELECT set_config('iam.tenant_id', '{}', false)",
        a.id
    ))
    .await
    .expect("set");
    conn.batch_execute("SET row_security = off")
        .await
        .expect("set");
    assert!(
        count(&mut conn, "SELECT count(*) AS n FROM memberships")
            .await
            .is_err(),
        "row_security = off makes a policed query fail, not bypass"
    );
    conn.batch_execute("SET row_security = on")
        .await
        .expect("set");
    for bypass in [
        "ALTER TABLE memberships DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE memberships NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON memberships",
        "ALTER ROLE iam_service BYPASSRLS",
    ] {
        assert!(conn.batch_execute(bypass).await.is_err(), "{bypass}");
    }

    // B's rows are all still there, as the owner sees them.
    let mut owner = AsyncPgConnection::establish(&db.url)
        .await
        .expect("connect");
    for (table, tenant_of) in TENANT_OWNED {
        let n = count(
            &mut owner,
            &format!(
                "SELECT count(*) AS n FROM {table} WHERE {tenant_of} = '{}'",
                b.id
            ),
        )
        .await
        .expect("count");
        assert_eq!(n, 1, "{table}: B's row untouched");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_works_across_tenants_only_through_the_narrow_functions() {
    let db = TestDatabase::new().await;
    let store = PostgresStore::connect(&config(&db.url, 2))
        .await
        .expect("connect");
    let [a, b] = seed(&store).await;
    // A user in both tenants: sign-in lists both memberships (iam_memberships_of), and ending
    // all their sessions reaches both tenants (iam_user_session_tenants).
    let both = user(1);
    let mut uow = store.begin().await.expect("begin");
    uow.insert_membership(&Membership {
        tenant: b.id,
        user: both.id,
        roles: vec![RoleName::member()],
        created_at: t0() + Duration::seconds(1),
    })
    .await
    .expect("membership");
    let in_b = new_session(7, &both, &b);
    uow.insert_session(&in_b, &refresh(7, t0()).1)
        .await
        .expect("session");
    uow.commit().await.expect("commit");

    let mut uow = store.begin().await.expect("begin");
    let tenants: Vec<_> = uow
        .memberships_of(both.id)
        .await
        .expect("memberships")
        .into_iter()
        .map(|m| m.tenant)
        .collect();
    assert_eq!(tenants, vec![a.id, b.id]);
    let session = uow
        .session_of_refresh(&refresh(7, t0()).0.hash())
        .await
        .expect("by refresh")
        .expect("found");
    assert_eq!(session.tenant, b.id);
    let mut revoked = uow
        .revoke_user_sessions(both.id, None, t0())
        .await
        .expect("revoke");
    revoked.sort();
    let mut expected = vec![SessionId::new_v7(t0(), [0; 10]), in_b.id];
    expected.sort();
    assert_eq!(revoked, expected, "sessions in both tenants");
    uow.commit().await.expect("commit");
}
