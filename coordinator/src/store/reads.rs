//! Reading jobs, written once for both backends: one job, its predictions, a filtered page,
//! counts by state. What differs is the backend's: its job columns and row decoding (`rows`)
//! and how a filter binds lists (`admin::push_filter`: arrays on PostgreSQL, JSON on SQLite).

macro_rules! for_backend {
    ($backend:ident) => {
        use sqlx::{QueryBuilder, Row as _};

        use crate::domain::model::*;
        use crate::error::{Error, Result};
        use crate::store::$backend::admin::push_filter;
        use crate::store::$backend::dialect::Pool;
        use crate::store::$backend::rows::{self, JOB_COLUMNS};
        use crate::store::{decode_f32s, decode_u32s};

        pub async fn get_job(pool: &Pool, id: JobId) -> Result<Job> {
            let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
                .ok_or_else(|| Error::NotFound(format!("job {id} does not exist")))?;
            rows::job(&row)
        }

        pub async fn get_predictions(pool: &Pool, id: JobId) -> Result<Option<Predictions>> {
            let row = sqlx::query(
                "SELECT j.id, p.oof_rows, p.oof, p.test FROM jobs j
                 LEFT JOIN predictions p ON p.job_id = j.id WHERE j.id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("job {id} does not exist")))?;
            let Some(oof_rows) = row.try_get::<Option<Vec<u8>>, _>("oof_rows")? else {
                return Ok(None);
            };
            Ok(Some(Predictions {
                oof_rows: decode_u32s(&oof_rows),
                oof: decode_f32s(&row.try_get::<Vec<u8>, _>("oof")?),
                test: decode_f32s(&row.try_get::<Vec<u8>, _>("test")?),
            }))
        }

        pub async fn list_jobs(pool: &Pool, f: &JobFilter) -> Result<Vec<Job>> {
            let mut qb = QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM jobs j"));
            push_filter(&mut qb, f, true);
            qb.push(" ORDER BY j.id");
            if f.limit > 0 {
                qb.push(" LIMIT ").push_bind(i64::from(f.limit));
            }
            let rows = qb.build().fetch_all(pool).await?;
            rows.iter().map(rows::job).collect()
        }

        pub async fn count_states(pool: &Pool, f: &JobFilter) -> Result<StateCounts> {
            let mut qb = QueryBuilder::new("SELECT j.state, count(*) AS n FROM jobs j");
            push_filter(&mut qb, f, false);
            qb.push(" GROUP BY j.state");
            let mut c = StateCounts::default();
            for r in qb.build().fetch_all(pool).await? {
                c.add(
                    rows::state(r.try_get("state")?)?,
                    r.try_get::<i64, _>("n")? as u64,
                );
            }
            Ok(c)
        }
    };
}

pub(crate) mod postgres {
    for_backend!(postgres);
}

pub(crate) mod sqlite {
    for_backend!(sqlite);
}
