//! Access tokens, written once for both backends: the statements use `$N` placeholders, which
//! PostgreSQL and SQLite both accept, and plain integer and text columns, so one body of code
//! is compiled for each backend's types (`for_backend!`). The backends add only what truly
//! differs (PostgreSQL's NOTIFY on revocation). Must not: store or log a token's secret; only
//! its hash reaches the database.

use crate::domain::model::*;

/// Access tokens.
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a new token (`AlreadyExists` when its id is taken).
    async fn create_token(&self, t: &TokenRecord) -> Result<()>;

    /// The token with this id, revoked or not.
    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>>;

    /// Tokens by creation time; revoked ones only with `include_revoked`.
    async fn list_tokens(&self, include_revoked: bool) -> Result<Vec<TokenRecord>>;

    /// Sets `revoked_at = now`; false when it was revoked already, `NotFound` when unknown. On
    /// PostgreSQL every coordinator hears of it at once (NOTIFY), see `token_epoch`.
    async fn revoke_token(&self, id: &str) -> Result<bool>;

    /// For caches of verified tokens: `Some(n)` where a store tells every coordinator about
    /// revocations (PostgreSQL), with `n` changing on each revocation or lost notification
    /// connection; `None` where tokens must be looked up on every call (SQLite, where that
    /// costs microseconds).
    fn token_epoch(&self) -> Option<u64>;
}

use crate::domain::model::Role;
use crate::error::{Error, Result};

const SELECT: &str = "SELECT id, name, role, secret_hash, created_at, revoked_at FROM tokens";

fn role(s: &str) -> Result<Role> {
    Role::parse(s)
        .ok_or_else(|| Error::Config(format!("token has unknown role {s:?} in the database")))
}

macro_rules! for_backend {
    ($db:ty, $row:ty) => {
        use sqlx::{Executor, Row};

        use super::{role, SELECT};
        use crate::error::{Error, Result};
        use crate::domain::model::{Millis, TokenRecord};

        fn record(r: &$row) -> Result<TokenRecord> {
            Ok(TokenRecord {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                role: role(r.try_get("role")?)?,
                secret_hash: r.try_get("secret_hash")?,
                created_at: r.try_get("created_at")?,
                revoked_at: r.try_get("revoked_at")?,
            })
        }

        pub async fn create<'e>(ex: impl Executor<'e, Database = $db>, t: &TokenRecord) -> Result<()> {
            sqlx::query(
                "INSERT INTO tokens (id, name, role, secret_hash, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&t.id)
            .bind(&t.name)
            .bind(t.role.as_str())
            .bind(&t.secret_hash)
            .bind(t.created_at)
            .execute(ex)
            .await
            .map_err(|e| crate::store::map_unique(e, || format!("token id {} is already taken", t.id)))?;
            Ok(())
        }

        pub async fn get<'e>(ex: impl Executor<'e, Database = $db>, id: &str) -> Result<Option<TokenRecord>> {
            let row = sqlx::query(&format!("{SELECT} WHERE id = $1"))
                .bind(id)
                .fetch_optional(ex)
                .await?;
            row.as_ref().map(record).transpose()
        }

        pub async fn list<'e>(
            ex: impl Executor<'e, Database = $db>,
            include_revoked: bool,
        ) -> Result<Vec<TokenRecord>> {
            let filter = if include_revoked { "" } else { "WHERE revoked_at IS NULL" };
            let rows = sqlx::query(&format!("{SELECT} {filter} ORDER BY created_at, id"))
                .fetch_all(ex)
                .await?;
            rows.iter().map(record).collect()
        }

        /// Whether this call revoked it (false: it was revoked already).
        pub async fn revoke(
            conn: &mut <$db as sqlx::Database>::Connection,
            id: &str,
            now: Millis,
        ) -> Result<bool> {
            let revoked = sqlx::query(
                "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING id",
            )
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?;
            if revoked.is_some() {
                return Ok(true);
            }
            match get(&mut *conn, id).await? {
                Some(_) => Ok(false),
                None => Err(Error::NotFound(format!("token {id} does not exist"))),
            }
        }
    };
}

pub(crate) mod postgres {
    for_backend!(sqlx::Postgres, sqlx::postgres::PgRow);
}

pub(crate) mod sqlite {
    for_backend!(sqlx::Sqlite, sqlx::sqlite::SqliteRow);
}
