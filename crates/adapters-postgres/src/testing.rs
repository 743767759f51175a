//! Per-test databases, after crates.io's `TestDatabase`: each test gets a brand-new database,
//! cloned from a template that has every migration applied, and dropped when the test ends.
//!
//! The template's name carries a digest of the migrations, so changing one builds a new
//! template. It is built at most once per server even when many test processes start together:
//! builders queue on an advisory lock and look for a finished template before building one.
//! The server comes from `IAM_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432`);
//! the test role must be allowed to create databases.

use std::time::Duration;

use diesel::sql_types::{Bool, Text};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use uuid::Uuid;

const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// Held while a process checks for and builds the template; distinct from the migration lock.
const TEMPLATE_LOCK: i64 = 0x1a_4d16_0002;

/// `CREATE DATABASE … TEMPLATE` fails while anyone is still connected to the template (the
/// builder's migration connection lingers briefly after closing).
const CLONE_ATTEMPTS: u32 = 20;

/// A database of its own for one test, dropped with this value.
pub struct TestDatabase {
    /// Where the test's database is.
    pub url: String,
    name: String,
    maintenance_url: String,
}

impl TestDatabase {
    /// Creates a fresh database with the current schema. Panics if the server cannot be used:
    /// a test without its database cannot run.
    pub async fn new() -> Self {
        Self::create(true).await
    }

    /// Creates a fresh database with no schema at all, for tests of migration itself.
    pub async fn empty() -> Self {
        Self::create(false).await
    }

    async fn create(migrated: bool) -> Self {
        let server =
            std::env::var("IAM_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_SERVER.to_owned());
        let maintenance_url = database_url(&server, "postgres");
        let mut admin = AsyncPgConnection::establish(&maintenance_url)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot reach the test server (set IAM_TEST_DATABASE_URL): {e}")
            });
        let name = format!("iam_test_{}", Uuid::now_v7().simple());
        if migrated {
            let template = template_name();
            ensure_template(&mut admin, &server, &template).await;
            clone_template(&mut admin, &template, &name).await;
        } else {
            admin
                .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
                .await
                .expect("create an empty database");
        }
        Self {
            url: database_url(&server, &name),
            name,
            maintenance_url,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.maintenance_url.clone(), self.name.clone());
        // Drop cannot await, and the test's own runtime may be the current-thread kind that
        // this thread is blocking: drop from a thread with a runtime of its own.
        let dropped = std::thread::spawn(move || drop_database(&url, &name)).join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("dropping test database {} panicked", self.name),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn drop_database(maintenance_url: &str, name: &str) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut admin = AsyncPgConnection::establish(maintenance_url).await?;
        // FORCE ends the pool's connections and any rollback still in flight.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        Ok(())
    })
}

fn template_name() -> String {
    let digest = env!("IAM_MIGRATIONS_SHA256");
    format!("iam_template_{}", &digest[..16])
}

#[derive(QueryableByName)]
struct DatabaseRow {
    #[diesel(sql_type = Bool)]
    datistemplate: bool,
}

/// Makes sure a finished template exists. `datistemplate` marks it finished: it is set only
/// after the migrations succeed, so a builder that died midway leaves a database to rebuild.
async fn ensure_template(admin: &mut AsyncPgConnection, server: &str, template: &str) {
    admin
        .batch_execute(&format!("SELECT pg_advisory_lock({TEMPLATE_LOCK})"))
        .await
        .expect("lock the template");
    let found = diesel::sql_query("SELECT datistemplate FROM pg_database WHERE datname = $1")
        .bind::<Text, _>(template)
        .get_result::<DatabaseRow>(admin)
        .await
        .optional()
        .expect("look the template up");
    match found {
        Some(row) if row.datistemplate => {}
        unfinished => {
            if unfinished.is_some() {
                admin
                    .batch_execute(&format!("DROP DATABASE {template} WITH (FORCE)"))
                    .await
                    .expect("drop an unfinished template");
            }
            admin
                .batch_execute(&format!("CREATE DATABASE {template} TEMPLATE template0"))
                .await
                .expect("create the template");
            crate::migrate(&database_url(server, template))
                .await
                .expect("migrate the template");
            // No one may connect to it from now on, so cloning it never finds it busy.
            admin
                .batch_execute(&format!(
                    "ALTER DATABASE {template} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
                ))
                .await
                .expect("mark the template finished");
        }
    }
    admin
        .batch_execute(&format!("SELECT pg_advisory_unlock({TEMPLATE_LOCK})"))
        .await
        .expect("unlock the template");
}

async fn clone_template(admin: &mut AsyncPgConnection, template: &str, name: &str) {
    let sql = format!("CREATE DATABASE {name} TEMPLATE {template}");
    for attempt in 1..=CLONE_ATTEMPTS {
        match admin.batch_execute(&sql).await {
            Ok(()) => return,
            Err(e)
                if attempt < CLONE_ATTEMPTS
                    && e.to_string().contains("being accessed by other users") =>
            {
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Err(e) => panic!("create test database {name}: {e}"),
        }
    }
}

/// `server` with its path (if any) replaced by `/database`, keeping any query string.
fn database_url(server: &str, database: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let end = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut url = format!("{}/{database}", &base[..end]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        for (server, expected) in [
            (
                "postgres://postgres@127.0.0.1:5432",
                "postgres://postgres@127.0.0.1:5432/db",
            ),
            ("postgres://u:p@h:5432/", "postgres://u:p@h:5432/db"),
            ("postgres://u:p@h/other", "postgres://u:p@h/db"),
            (
                "postgres://u@h:1/other?sslmode=disable",
                "postgres://u@h:1/db?sslmode=disable",
            ),
            (
                "postgres://h?connect_timeout=2",
                "postgres://h/db?connect_timeout=2",
            ),
        ] {
            assert_eq!(database_url(server, "db"), expected, "{server}");
        }
    }

    #[test]
    fn template_names_fit_postgres_identifiers() {
        let name = template_name();
        assert!(name.len() <= 63);
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        );
    }
}
