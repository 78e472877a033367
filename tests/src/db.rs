//! Fresh databases for tests: a new PostgreSQL database per test (dropped when its guard is
//! dropped) or a new SQLite file in a temp dir. The machine's PostgreSQL is the real thing;
//! `STACKHIVE_TEST_PG_URL` points elsewhere (an admin URL; databases are created beside it).

use std::sync::Arc;

use stackhive_coordinator::model::Policy;
use stackhive_coordinator::store::{self, Store};

pub fn pg_admin_url() -> String {
    std::env::var("STACKHIVE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database that lives as long as this value.
pub struct TestDb {
    pub url: String,
    guard: Guard,
}

enum Guard {
    Pg { admin: String, name: String },
    Sqlite(tempfile::TempDir),
}

impl TestDb {
    pub async fn postgres() -> Self {
        use sqlx::Connection;
        let admin = pg_admin_url();
        let name = format!("sh_test_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("tests need PostgreSQL at {admin}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap();
        Self {
            url: format!("{base}/{name}"),
            guard: Guard::Pg { admin, name },
        }
    }

    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("stackhive.db").display());
        Self {
            url,
            guard: Guard::Sqlite(dir),
        }
    }

    pub fn dir(&self) -> Option<&std::path::Path> {
        match &self.guard {
            Guard::Sqlite(d) => Some(d.path()),
            Guard::Pg { .. } => None,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Pg { admin, name } = self {
            let (admin, name) = (admin.clone(), name.clone());
            // Drop may run inside a test's runtime: use a thread with its own runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        let _ = sqlx::query(&sql).execute(&mut c).await;
                    }
                });
            })
            .join();
        }
    }
}

/// An open store over its own fresh database.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub db: TestDb,
}

pub async fn postgres(policy: Policy) -> TestStore {
    let db = TestDb::postgres().await;
    let store = store::open(&db.url, policy, 8)
        .await
        .expect("open postgres store");
    TestStore { store, db }
}

pub async fn sqlite(policy: Policy) -> TestStore {
    let db = TestDb::sqlite();
    let store = store::open(&db.url, policy, 8)
        .await
        .expect("open sqlite store");
    TestStore { store, db }
}

/// Short delays so retries and aging show within a test.
pub fn fast_policy() -> Policy {
    Policy {
        default_max_attempts: 3,
        default_crash_limit: 3,
        backoff_base_ms: 100,
        backoff_max_ms: 400,
        aging_ms_per_priority: 60_000,
        worker_dead_after_ms: 60_000,
    }
}
