//! Predictions made elsewhere (issue 12, item 4), written once for both backends: a finished
//! job of kind `imported` with its predictions, in one transaction, so an imported model is
//! read by feature sets and ensembles exactly as a trained one is. Explicit casts (`CAST($n AS
//! SMALLINT)`) let one statement bind the same Rust types on PostgreSQL and SQLite.

macro_rules! for_backend {
    ($db:ty, $membership:expr) => {
        use crate::error::Result;
        use crate::domain::model::{JobId, JobState, Millis, Predictions};
        use crate::store::{encode_f32s, encode_u32s};

        type Conn = <$db as sqlx::Database>::Connection;

        /// Stores a succeeded job of kind `imported` in `experiment`, named `name`, with
        /// `result` and `p`; returns its id.
        pub async fn import(
            conn: &mut Conn,
            experiment: &str,
            name: &str,
            result: &str,
            p: &Predictions,
            now: Millis,
        ) -> Result<JobId> {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO jobs (kind, name, experiment, payload, sort_key, state, max_attempts,
                    crash_limit, result, created_at, updated_at, started_at, finished_at)
                 VALUES ('imported', $1, $2, '{}', $3, CAST($4 AS SMALLINT), 1, 1, $5, $3, $3, $3, $3)
                 RETURNING id",
            )
            .bind(name)
            .bind(experiment)
            .bind(now)
            .bind(i64::from(JobState::Succeeded.code()))
            .bind(result)
            .fetch_one(&mut *conn)
            .await?;
            if let Some(sql) = $membership {
                sqlx::query(sql).bind(experiment).bind(id).execute(&mut *conn).await?;
            }
            sqlx::query(
                "INSERT INTO predictions (job_id, attempt, oof_rows, oof, test)
                 VALUES ($1, CAST($2 AS INT), $3, $4, $5)",
            )
            .bind(id)
            .bind(0i64)
            .bind(encode_u32s(&p.oof_rows))
            .bind(encode_f32s(&p.oof))
            .bind(encode_f32s(&p.test))
            .execute(&mut *conn)
            .await?;
            Ok(id)
        }
    };
}

// PostgreSQL keeps experiment membership in a table of its own (written once, at submit);
// SQLite reads it from the jobs table.
pub(crate) mod postgres {
    for_backend!(
        sqlx::Postgres,
        Some("INSERT INTO experiment_jobs (experiment, job_id) VALUES ($1, $2)")
    );
}

pub(crate) mod sqlite {
    for_backend!(sqlx::Sqlite, None::<&str>);
}
