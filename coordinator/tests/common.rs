//! Fresh stores for tests: a new PostgreSQL database per test (dropped afterwards) or a new
//! SQLite file in a temp dir.

use std::sync::Arc;

use stackhive_coordinator::model::Policy;
use stackhive_coordinator::store::{self, Store};

/// Admin URL of the machine's PostgreSQL; tests create and drop their own databases there.
pub fn pg_admin_url() -> String {
    std::env::var("STACKHIVE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

pub struct TestStore {
    pub store: Arc<dyn Store>,
    _guard: Guard,
}

enum Guard {
    Pg { admin: String, name: String },
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Pg { admin, name } = self {
            let (admin, name) = (admin.clone(), name.clone());
            // Drop runs inside the test's runtime; use a separate thread and runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut c)
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

pub async fn fresh_pg_url() -> (String, String) {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let name = format!("sh_test_{}", uuid::Uuid::new_v4().simple());
    let mut c = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("tests need PostgreSQL at {admin}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut c).await.unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap();
    (format!("{base}/{name}"), name)
}

pub async fn postgres(policy: Policy) -> TestStore {
    let (url, name) = fresh_pg_url().await;
    let store = store::open(&url, policy, 8).await.expect("open postgres store");
    TestStore { store, _guard: Guard::Pg { admin: pg_admin_url(), name } }
}

pub async fn sqlite(policy: Policy) -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("stackhive.db").display());
    let store = store::open(&url, policy, 8).await.expect("open sqlite store");
    TestStore { store, _guard: Guard::Sqlite(dir) }
}

/// A policy with short delays so retries and aging show within a test.
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
