//! Many jobs' predictions in a few statements (issue 12, item 6), written once for both
//! backends: what a feature set or an ensemble reads by the thousand. Predictions are one row
//! per job in their own table (out of line, so the queue's tables and indexes never carry them);
//! this reads `CHUNK` jobs per statement.

use crate::domain::model::*;
use crate::error::Result;

/// Stored predictions: one job's, many jobs' at once, and imported ones.
#[async_trait::async_trait]
pub trait PredictionStore: Send + Sync {
    /// `None` when the job exists but has no stored predictions; `NotFound` when it does not exist.
    async fn get_predictions(&self, id: JobId) -> Result<Option<Predictions>>;

    /// The stored predictions of those of `ids` that have some, in ascending id order, read in
    /// a few statements (an ensemble reads thousands).
    async fn get_predictions_many(&self, ids: &[JobId]) -> Result<Vec<(JobId, Predictions)>>;

    /// Stores predictions made elsewhere as a succeeded job of kind `imported` in `experiment`,
    /// named `name`, with `result`; returns its id.
    async fn import_predictions(
        &self,
        experiment: &str,
        name: &str,
        result: &str,
        p: &Predictions,
    ) -> Result<JobId>;
}

/// Jobs per statement.
pub const CHUNK: usize = 256;

macro_rules! for_backend {
    ($db:ty) => {
        use sqlx::{QueryBuilder, Row};

        use crate::domain::model::{JobId, Predictions};
        use crate::error::Result;
        use crate::store::{decode_f32s, decode_u32s};

        /// The stored predictions of those of `ids` that have some, in ascending id order.
        pub async fn many(
            pool: &sqlx::Pool<$db>,
            ids: &[JobId],
        ) -> Result<Vec<(JobId, Predictions)>> {
            let mut ids = ids.to_vec();
            ids.sort_unstable();
            ids.dedup();
            let mut out = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(super::CHUNK) {
                let mut qb = QueryBuilder::<$db>::new(
                    "SELECT job_id, oof_rows, oof, test FROM predictions WHERE job_id IN (",
                );
                let mut list = qb.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                qb.push(") ORDER BY job_id");
                for row in qb.build().fetch_all(pool).await? {
                    out.push((
                        row.try_get::<i64, _>("job_id")?,
                        Predictions {
                            oof_rows: decode_u32s(&row.try_get::<Vec<u8>, _>("oof_rows")?),
                            oof: decode_f32s(&row.try_get::<Vec<u8>, _>("oof")?),
                            test: decode_f32s(&row.try_get::<Vec<u8>, _>("test")?),
                        },
                    ));
                }
            }
            Ok(out)
        }
    };
}

pub(crate) mod postgres {
    for_backend!(sqlx::Postgres);
}

pub(crate) mod sqlite {
    for_backend!(sqlx::Sqlite);
}
