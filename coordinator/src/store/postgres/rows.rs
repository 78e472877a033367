//! Column lists and row decoding shared by the PostgreSQL queries.

use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::domain::model::*;
use crate::error::{Error, Result};

/// Select list for a full `Job`, over `jobs j`.
pub const JOB_COLUMNS: &str = "j.id, j.kind, j.name, j.experiment, j.payload, j.priority, \
    j.state, j.cpu_slots, j.gpus, j.gpu_mem_mb, j.tags, j.max_attempts, j.crash_limit, \
    j.timeout_s, j.expect_oof_rows, j.expect_test_rows, j.attempt, j.failures, j.crashes, \
    j.worker_id, j.cancel_requested, j.lease_expires_at, j.run_after, j.created_at, \
    j.started_at, j.finished_at, j.updated_at, j.error, j.result, j.progress, \
    ARRAY(SELECT d.dep_id FROM job_deps d WHERE d.job_id = j.id ORDER BY d.dep_id) AS depends_on, \
    COALESCE((SELECT length(p.oof) / 4 FROM predictions p WHERE p.job_id = j.id), 0) AS oof_n, \
    COALESCE((SELECT length(p.test) / 4 FROM predictions p WHERE p.job_id = j.id), 0) AS test_n";

/// RETURNING list for a leased job.
pub const LEASED_COLUMNS: &str = "j.id, j.attempt, j.kind, j.name, j.payload, j.cpu_slots, \
    j.gpus, j.gpu_mem_mb, j.tags, j.timeout_s, j.lease_expires_at, j.expect_oof_rows, \
    j.expect_test_rows";

pub fn state(code: i16) -> Result<JobState> {
    JobState::from_code(code as i64)
        .ok_or_else(|| Error::Config(format!("unknown job state code {code} in the database")))
}

pub fn job(row: &PgRow) -> Result<Job> {
    Ok(Job {
        id: row.try_get("id")?,
        spec: NewJob {
            kind: row.try_get("kind")?,
            name: row.try_get("name")?,
            experiment: row.try_get("experiment")?,
            payload: row.try_get("payload")?,
            priority: row.try_get("priority")?,
            resources: Resources {
                cpu_slots: row.try_get::<i32, _>("cpu_slots")? as u32,
                gpus: row.try_get::<i32, _>("gpus")? as u32,
                gpu_mem_mb: row.try_get::<i64, _>("gpu_mem_mb")? as u64,
                tags: row.try_get("tags")?,
            },
            max_attempts: row.try_get::<i32, _>("max_attempts")? as u32,
            crash_limit: row.try_get::<i32, _>("crash_limit")? as u32,
            timeout_s: row.try_get::<i32, _>("timeout_s")? as u32,
            depends_on: row.try_get("depends_on")?,
            depends_on_batch: Vec::new(),
            expect_oof_rows: row.try_get::<i32, _>("expect_oof_rows")? as u32,
            expect_test_rows: row.try_get::<i32, _>("expect_test_rows")? as u32,
        },
        state: state(row.try_get("state")?)?,
        attempt: row.try_get::<i32, _>("attempt")? as u32,
        failures: row.try_get::<i32, _>("failures")? as u32,
        crashes: row.try_get::<i32, _>("crashes")? as u32,
        worker_id: row.try_get("worker_id")?,
        cancel_requested: row.try_get("cancel_requested")?,
        error: row.try_get("error")?,
        result: row.try_get("result")?,
        progress: row.try_get("progress")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        updated_at: row.try_get("updated_at")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        run_after: row.try_get("run_after")?,
        prediction_rows_oof: row.try_get::<i32, _>("oof_n")? as u32,
        prediction_rows_test: row.try_get::<i32, _>("test_n")? as u32,
    })
}

pub fn leased(row: &PgRow) -> Result<LeasedJob> {
    Ok(LeasedJob {
        id: row.try_get("id")?,
        attempt: row.try_get::<i32, _>("attempt")? as u32,
        kind: row.try_get("kind")?,
        name: row.try_get("name")?,
        payload: row.try_get("payload")?,
        resources: Resources {
            cpu_slots: row.try_get::<i32, _>("cpu_slots")? as u32,
            gpus: row.try_get::<i32, _>("gpus")? as u32,
            gpu_mem_mb: row.try_get::<i64, _>("gpu_mem_mb")? as u64,
            tags: row.try_get("tags")?,
        },
        timeout_s: row.try_get::<i32, _>("timeout_s")? as u32,
        lease_expires_at: row.try_get("lease_expires_at")?,
        expect_oof_rows: row.try_get::<i32, _>("expect_oof_rows")? as u32,
        expect_test_rows: row.try_get::<i32, _>("expect_test_rows")? as u32,
    })
}

/// The fence columns (`state`, `attempt`, `worker_id`) of a job row.
pub fn fence(row: &PgRow) -> Result<FenceRow> {
    Ok(FenceRow {
        state: state(row.try_get("state")?)?,
        attempt: row.try_get::<i32, _>("attempt")? as u32,
        worker: row.try_get("worker_id")?,
    })
}
