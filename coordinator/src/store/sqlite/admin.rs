//! Queries and operator actions on the SQLite store: get, list, count, cancel, retry, workers
//! and retention. None of these is on the per-job hot path; reads use the read pool, writes
//! one write transaction each.

use std::collections::{HashMap, HashSet};

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use super::rows::{self, json};
use super::run::cascade;
use crate::domain::model::*;
use crate::error::{Error, Result};
use crate::store::codes::*;
use crate::store::sort_key_sql;

/// Appends the filter's conditions; `paged` adds `updated_after` and `after_id`.
pub(crate) fn push_filter(qb: &mut QueryBuilder<'_, Sqlite>, f: &JobFilter, paged: bool) {
    qb.push(" WHERE 1");
    if !f.states.is_empty() {
        let codes: Vec<i16> = f.states.iter().map(|s| s.code()).collect();
        qb.push(" AND j.state IN (SELECT value FROM json_each(")
            .push_bind(json(&codes))
            .push("))");
    }
    if let Some(k) = &f.kind {
        qb.push(" AND j.kind = ").push_bind(k.clone());
    }
    if let Some(e) = &f.experiment {
        qb.push(" AND j.experiment = ").push_bind(e.clone());
    }
    if !f.ids.is_empty() {
        qb.push(" AND j.id IN (SELECT value FROM json_each(")
            .push_bind(json(&f.ids))
            .push("))");
    }
    if paged {
        if let Some(t) = f.updated_after {
            qb.push(" AND j.updated_at > ").push_bind(t);
        }
        if let Some(a) = f.after_id {
            qb.push(" AND j.id > ").push_bind(a);
        }
    }
}

/// The listed jobs' states and `has_dependents`, `NotFound` naming the first missing id.
async fn states_of(
    conn: &mut SqliteConnection,
    ids: &[JobId],
) -> Result<HashMap<JobId, (JobState, bool)>> {
    let found = sqlx::query(
        "SELECT id, state, has_dependents FROM jobs WHERE id IN (SELECT value FROM json_each(?1))",
    )
    .bind(json(ids))
    .fetch_all(&mut *conn)
    .await?;
    let mut m = HashMap::with_capacity(found.len());
    for r in found {
        let state = rows::state(r.try_get("state")?)?;
        m.insert(
            r.try_get("id")?,
            (state, r.try_get::<i64, _>("has_dependents")? != 0),
        );
    }
    if let Some(missing) = ids.iter().find(|&id| !m.contains_key(id)) {
        return Err(Error::NotFound(format!("job {missing} does not exist")));
    }
    Ok(m)
}

/// `ids` without repeats, in first-seen order.
fn distinct(ids: &[JobId]) -> Vec<JobId> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

pub async fn cancel(pool: &SqlitePool, ids: &[JobId]) -> Result<CancelOutcome> {
    let ids = distinct(ids);
    let now = now_ms();
    let mut tx = super::dialect::begin(pool).await?;
    let states = states_of(&mut tx, &ids).await?;
    let mut out = CancelOutcome::default();
    let mut roots = Vec::new();
    for &id in &ids {
        let (state, has_dependents) = states[&id];
        match state {
            JobState::Queued | JobState::Blocked => {
                out.cancelled.push(id);
                if has_dependents {
                    roots.push((id, format!("dependency {id} was cancelled")));
                }
            }
            JobState::Running => out.stopping.push(id),
            _ => out.already_finished.push(id),
        }
    }
    if !out.cancelled.is_empty() {
        sqlx::query(&format!(
            "UPDATE jobs SET state = {CANCELLED}, error = 'cancelled by request', dep_failed = 0,
                finished_at = ?2, updated_at = ?2
             WHERE id IN (SELECT value FROM json_each(?1))"
        ))
        .bind(json(&out.cancelled))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    if !out.stopping.is_empty() {
        sqlx::query(
            "UPDATE jobs SET cancel_requested = 1, updated_at = ?2
             WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json(&out.stopping))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    cascade(&mut tx, &roots, JobState::Cancelled, now).await?;
    tx.commit().await?;
    Ok(out)
}

/// Fresh-attempt columns for a revived job: `deps_pending` recounted from the dependencies
/// (a purged or meanwhile-retried dependency must not leave a stale count), blocked while any
/// dependency is unsucceeded, queued at the back of its priority otherwise. `x.n` is the
/// recount; `?2` now, `?3` the aging per priority point.
fn revive_set() -> String {
    format!(
        "deps_pending = x.n,
    state = CASE WHEN x.n = 0 THEN {QUEUED} ELSE {BLOCKED} END,
    failures = 0, crashes = 0, error = NULL, result = NULL, progress = NULL,
    cancel_requested = 0, dep_failed = 0, worker_id = NULL, lease_expires_at = NULL,
    started_at = NULL, finished_at = NULL, run_after = ?2,
    sort_key = {}, updated_at = ?2",
        sort_key_sql("?2", "jobs.priority", "?3")
    )
}

/// Counts the unsucceeded dependencies of `c.value` (a job id from `json_each`).
fn pending_count() -> String {
    format!(
        "(SELECT count(*) FROM job_deps d JOIN jobs p ON p.id = d.dep_id
    WHERE d.job_id = c.value AND p.state <> {SUCCEEDED})"
    )
}

/// Returns every revived id (ascending) and whether one of them is queued.
pub async fn retry(
    pool: &SqlitePool,
    policy: &Policy,
    ids: &[JobId],
) -> Result<(Vec<JobId>, bool)> {
    let ids = distinct(ids);
    let now = now_ms();
    let mut tx = super::dialect::begin(pool).await?;
    let states = states_of(&mut tx, &ids).await?;
    for &id in &ids {
        let (s, _) = states[&id];
        if !matches!(s, JobState::Failed | JobState::Cancelled) {
            return Err(Error::FailedPrecondition(format!(
                "job {id} is {s}; only failed or cancelled jobs can be retried"
            )));
        }
    }
    // Attempts are kept: the fencing token only ever grows, so a report from before the
    // failure can never match the new attempt.
    let direct = format!(
        "UPDATE jobs SET {}
         FROM (SELECT c.value AS xid, {} AS n FROM json_each(?1) c) AS x
         WHERE jobs.id = x.xid
         RETURNING id, state",
        revive_set(),
        pending_count()
    );
    let mut revived = sqlx::query(&direct)
        .bind(json(&ids))
        .bind(now)
        .bind(policy.aging_ms_per_priority)
        .fetch_all(&mut *tx)
        .await?;
    // Then, level by level, the dependents that went down only because of revived jobs: those
    // with no dependency still failed or cancelled.
    let level = format!(
        "UPDATE jobs SET {}
         FROM (SELECT c.value AS xid, {} AS n FROM (
                SELECT DISTINCT d.job_id AS value FROM job_deps d
                WHERE d.dep_id IN (SELECT value FROM json_each(?1))) c) AS x
         WHERE jobs.id = x.xid AND jobs.dep_failed = 1 AND jobs.state IN ({FAILED}, {CANCELLED})
           AND NOT EXISTS (SELECT 1 FROM job_deps d JOIN jobs p ON p.id = d.dep_id
                           WHERE d.job_id = jobs.id AND p.state IN ({FAILED}, {CANCELLED}))
         RETURNING id, state",
        revive_set(),
        pending_count()
    );
    let mut frontier: Vec<JobId> = ids_of(&revived)?;
    while !frontier.is_empty() {
        let next = sqlx::query(&level)
            .bind(json(&frontier))
            .bind(now)
            .bind(policy.aging_ms_per_priority)
            .fetch_all(&mut *tx)
            .await?;
        frontier = ids_of(&next)?;
        revived.extend(next);
    }
    tx.commit().await?;
    let mut queued = false;
    let mut out = Vec::with_capacity(revived.len());
    for r in &revived {
        out.push(r.try_get::<JobId, _>("id")?);
        queued |= r.try_get::<i64, _>("state")? == i64::from(JobState::Queued.code());
    }
    out.sort_unstable();
    Ok((out, queued))
}

fn ids_of(rows: &[sqlx::sqlite::SqliteRow]) -> Result<Vec<JobId>> {
    rows.iter()
        .map(|r| Ok(r.try_get::<JobId, _>("id")?))
        .collect()
}

pub async fn register_worker(
    pool: &SqlitePool,
    id: &str,
    info: &WorkerInfo,
    key_hash: &str,
) -> Result<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO workers (id, name, hostname, cpu_slots, gpus, gpu_mem_mb, tags, kinds,
            version, registered_at, last_seen, key_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11)",
    )
    .bind(id)
    .bind(&info.name)
    .bind(&info.hostname)
    .bind(i64::from(info.resources.cpu_slots))
    .bind(i64::from(info.resources.gpus))
    .bind(json(&info.gpu_mem_mb))
    .bind(json(&info.resources.tags))
    .bind(json(&info.kinds))
    .bind(&info.version)
    .bind(now)
    .bind(key_hash)
    .execute(pool)
    .await
    .map_err(|e| crate::store::map_unique(e, || format!("worker id {id} is already registered")))?;
    Ok(())
}

pub async fn renew_worker(pool: &SqlitePool, id: &str, info: &WorkerInfo) -> Result<()> {
    let n = sqlx::query(
        "UPDATE workers SET name = ?2, hostname = ?3, cpu_slots = ?4, gpus = ?5, gpu_mem_mb = ?6,
            tags = ?7, kinds = ?8, version = ?9, last_seen = ?10, deregistered = 0
         WHERE id = ?1",
    )
    .bind(id)
    .bind(&info.name)
    .bind(&info.hostname)
    .bind(i64::from(info.resources.cpu_slots))
    .bind(i64::from(info.resources.gpus))
    .bind(json(&info.gpu_mem_mb))
    .bind(json(&info.resources.tags))
    .bind(json(&info.kinds))
    .bind(&info.version)
    .bind(now_ms())
    .execute(pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(crate::store::workers::not_registered(id));
    }
    Ok(())
}

pub async fn list_workers(
    pool: &SqlitePool,
    policy: &Policy,
    include_dead: bool,
) -> Result<Vec<WorkerRecord>> {
    // One pass over the running rows (a partial index) instead of one count per worker.
    let rows = sqlx::query(&format!(
        "SELECT w.*, coalesce(r.n, 0) AS running, coalesce(r.slots, 0) AS busy_slots,
            coalesce(r.gpus, 0) AS busy_gpus
         FROM workers w
         LEFT JOIN (SELECT worker_id, count(*) AS n, sum(cpu_slots) AS slots, sum(gpus) AS gpus
                    FROM jobs WHERE state = {RUNNING} GROUP BY worker_id) r ON r.worker_id = w.id
         ORDER BY w.registered_at, w.id"
    ))
    .fetch_all(pool)
    .await?;
    let now = now_ms();
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let w = rows::worker(r, policy.worker_dead_after_ms, now)?;
        if include_dead || !w.deregistered {
            out.push(w);
        }
    }
    Ok(out)
}

pub async fn purge(pool: &SqlitePool, before: Millis, limit: u32) -> Result<u64> {
    let mut tx = super::dialect::begin(pool).await?;
    // `state >= SUCCEEDED`, which formats to the partial index `jobs_finished`'s `state >= 4`,
    // so the planner uses it.
    let n = sqlx::query(&format!(
        "DELETE FROM jobs WHERE id IN (
            SELECT j.id FROM jobs j
            WHERE j.state >= {SUCCEEDED} AND j.finished_at < ?1
              AND NOT EXISTS (SELECT 1 FROM job_deps d JOIN jobs c ON c.id = d.job_id
                              WHERE d.dep_id = j.id AND c.state < {SUCCEEDED})
            ORDER BY j.id LIMIT ?2)"
    ))
    .bind(before)
    .bind(i64::from(limit))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Idempotency keys are kept as long as the jobs of their era.
    sqlx::query("DELETE FROM submissions WHERE created_at < ?1")
        .bind(before)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n)
}
