//! Column lists, row decoding and small SQL helpers shared by the SQLite queries. Arrays travel
//! as JSON text both ways (tags, dependency ids, id lists bound to `json_each`), so every
//! statement keeps one fixed text and stays in the prepared-statement cache.

use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::domain::model::*;
use crate::error::{Error, Result};

/// Select list for a full `Job`, over `jobs j`. The dependency list and prediction sizes are
/// correlated subqueries: `length()` of a BLOB reads only its header, not the arrays.
pub const JOB_COLUMNS: &str = "j.id, j.kind, j.name, j.experiment, j.payload, j.priority, \
    j.state, j.cpu_slots, j.gpus, j.gpu_mem_mb, j.tags, j.max_attempts, j.crash_limit, \
    j.timeout_s, j.expect_oof_rows, j.expect_test_rows, j.attempt, j.failures, j.crashes, \
    j.worker_id, j.cancel_requested, j.lease_expires_at, j.run_after, j.created_at, \
    j.started_at, j.finished_at, j.updated_at, j.error, j.result, j.progress, \
    (SELECT json_group_array(d.dep_id) FROM job_deps d WHERE d.job_id = j.id) AS depends_on, \
    COALESCE((SELECT length(p.oof) / 4 FROM predictions p WHERE p.job_id = j.id), 0) AS oof_n, \
    COALESCE((SELECT length(p.test) / 4 FROM predictions p WHERE p.job_id = j.id), 0) AS test_n";

/// RETURNING list for a leased job (RETURNING sees only the updated table, unqualified).
pub const LEASED_COLUMNS: &str = "id, attempt, kind, name, payload, cpu_slots, gpus, \
    gpu_mem_mb, tags, timeout_s, lease_expires_at, expect_oof_rows, expect_test_rows, sort_key";

/// JSON text for binding a list to `json_each(?)`.
pub fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("plain lists always serialize")
}

fn json_list<T: serde::de::DeserializeOwned>(text: &str, column: &str) -> Result<Vec<T>> {
    serde_json::from_str(text).map_err(|e| {
        Error::Config(format!(
            "column {column} holds {text:?}, not a JSON list: {e}"
        ))
    })
}

pub fn state(code: i64) -> Result<JobState> {
    JobState::from_code(code)
        .ok_or_else(|| Error::Config(format!("unknown job state code {code} in the database")))
}

fn u32_col(row: &SqliteRow, col: &str) -> Result<u32> {
    Ok(row.try_get::<i64, _>(col)? as u32)
}

fn bool_col(row: &SqliteRow, col: &str) -> Result<bool> {
    Ok(row.try_get::<i64, _>(col)? != 0)
}

pub fn job(row: &SqliteRow) -> Result<Job> {
    let mut depends_on: Vec<JobId> =
        json_list(&row.try_get::<String, _>("depends_on")?, "depends_on")?;
    // json_group_array follows the primary-key scan order in practice; sort to promise it.
    depends_on.sort_unstable();
    Ok(Job {
        id: row.try_get("id")?,
        spec: NewJob {
            kind: row.try_get("kind")?,
            name: row.try_get("name")?,
            experiment: row.try_get("experiment")?,
            payload: row.try_get("payload")?,
            priority: row.try_get::<i64, _>("priority")? as i32,
            resources: Resources {
                cpu_slots: u32_col(row, "cpu_slots")?,
                gpus: u32_col(row, "gpus")?,
                gpu_mem_mb: row.try_get::<i64, _>("gpu_mem_mb")? as u64,
                tags: json_list(&row.try_get::<String, _>("tags")?, "tags")?,
            },
            max_attempts: u32_col(row, "max_attempts")?,
            crash_limit: u32_col(row, "crash_limit")?,
            timeout_s: u32_col(row, "timeout_s")?,
            depends_on,
            depends_on_batch: Vec::new(),
            expect_oof_rows: u32_col(row, "expect_oof_rows")?,
            expect_test_rows: u32_col(row, "expect_test_rows")?,
        },
        state: state(row.try_get("state")?)?,
        attempt: u32_col(row, "attempt")?,
        failures: u32_col(row, "failures")?,
        crashes: u32_col(row, "crashes")?,
        worker_id: row.try_get("worker_id")?,
        cancel_requested: bool_col(row, "cancel_requested")?,
        error: row.try_get("error")?,
        result: row.try_get("result")?,
        progress: row.try_get("progress")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        updated_at: row.try_get("updated_at")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        run_after: row.try_get("run_after")?,
        prediction_rows_oof: u32_col(row, "oof_n")?,
        prediction_rows_test: u32_col(row, "test_n")?,
    })
}

/// A leased job and its queue position (RETURNING comes back in no particular order).
pub fn leased(row: &SqliteRow) -> Result<(i64, LeasedJob)> {
    let job = LeasedJob {
        id: row.try_get("id")?,
        attempt: u32_col(row, "attempt")?,
        kind: row.try_get("kind")?,
        name: row.try_get("name")?,
        payload: row.try_get("payload")?,
        resources: Resources {
            cpu_slots: u32_col(row, "cpu_slots")?,
            gpus: u32_col(row, "gpus")?,
            gpu_mem_mb: row.try_get::<i64, _>("gpu_mem_mb")? as u64,
            tags: json_list(&row.try_get::<String, _>("tags")?, "tags")?,
        },
        timeout_s: u32_col(row, "timeout_s")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        expect_oof_rows: u32_col(row, "expect_oof_rows")?,
        expect_test_rows: u32_col(row, "expect_test_rows")?,
    };
    Ok((row.try_get("sort_key")?, job))
}

pub fn worker(row: &SqliteRow, dead_after_ms: i64, now: Millis) -> Result<WorkerRecord> {
    let last_seen: i64 = row.try_get("last_seen")?;
    // Same reading as the PostgreSQL store: a worker gone silent is reported as deregistered.
    let dead = bool_col(row, "deregistered")? || now - last_seen > dead_after_ms;
    Ok(WorkerRecord {
        id: row.try_get("id")?,
        info: WorkerInfo {
            name: row.try_get("name")?,
            hostname: row.try_get("hostname")?,
            resources: Resources {
                cpu_slots: u32_col(row, "cpu_slots")?,
                gpus: u32_col(row, "gpus")?,
                // Not stored: it is a moment's free memory; `gpu_mem_mb` lists every GPU.
                gpu_mem_mb: 0,
                tags: json_list(&row.try_get::<String, _>("tags")?, "tags")?,
            },
            gpu_mem_mb: json_list(&row.try_get::<String, _>("gpu_mem_mb")?, "gpu_mem_mb")?,
            kinds: json_list(&row.try_get::<String, _>("kinds")?, "kinds")?,
            version: row.try_get("version")?,
        },
        registered_at: row.try_get("registered_at")?,
        last_seen,
        deregistered: dead,
        running_jobs: u32_col(row, "running")?,
        busy_slots: u32_col(row, "busy_slots")?,
        busy_gpus: u32_col(row, "busy_gpus")?,
    })
}

/// The fence columns (`state`, `attempt`, `worker_id`) of a job row.
pub fn fence(row: &SqliteRow) -> Result<FenceRow> {
    Ok(FenceRow {
        state: state(row.try_get("state")?)?,
        attempt: row.try_get::<i64, _>("attempt")? as u32,
        worker: row.try_get("worker_id")?,
    })
}
