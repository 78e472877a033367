//! Throw-away databases for a bench run: a fresh PostgreSQL database (dropped afterwards) or a
//! SQLite file in a temp dir.

use anyhow::Context;
use sqlx::Connection;

use super::Backend;

pub struct BenchDb {
    pub url: String,
    admin: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl BenchDb {
    pub async fn create(backend: Backend, pg_admin: &str) -> anyhow::Result<Self> {
        match backend {
            Backend::Postgres => {
                let name = format!("stackhive_bench_{}", uuid::Uuid::new_v4().simple());
                let mut c = sqlx::PgConnection::connect(pg_admin)
                    .await
                    .with_context(|| format!("cannot reach PostgreSQL at {pg_admin}"))?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut c)
                    .await?;
                let base = pg_admin
                    .rsplit_once('/')
                    .map(|(b, _)| b)
                    .unwrap_or(pg_admin);
                Ok(Self {
                    url: format!("{base}/{name}"),
                    admin: Some((pg_admin.to_string(), name)),
                    _dir: None,
                })
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("bench.db").display());
                Ok(Self {
                    url,
                    admin: None,
                    _dir: Some(dir),
                })
            }
        }
    }

    pub async fn drop_db(&self) -> anyhow::Result<()> {
        if let Some((admin, name)) = &self.admin {
            let mut c = sqlx::PgConnection::connect(admin).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut c)
                .await?;
        }
        Ok(())
    }
}
