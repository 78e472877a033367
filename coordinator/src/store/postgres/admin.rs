//! Queries and operator actions on the PostgreSQL store: get, list, count, cancel, retry,
//! workers and retention. None of these is on the per-job hot path.

use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use super::rows;
use super::run::{cascade, notify};
use crate::domain::model::*;
use crate::error::{Error, Result};
use crate::store::codes::*;
use crate::store::sort_key_sql;

pub(crate) fn push_filter(qb: &mut QueryBuilder<'_, Postgres>, f: &JobFilter, paged: bool) {
    qb.push(" WHERE true");
    if !f.states.is_empty() {
        let codes: Vec<i16> = f.states.iter().map(|s| s.code()).collect();
        qb.push(" AND j.state = ANY(").push_bind(codes).push(")");
    }
    if let Some(k) = &f.kind {
        qb.push(" AND j.kind = ").push_bind(k.clone());
    }
    if let Some(e) = &f.experiment {
        qb.push(" AND j.id IN (SELECT job_id FROM experiment_jobs WHERE experiment = ")
            .push_bind(e.clone());
        if let (true, Some(a)) = (paged, f.after_id) {
            qb.push(" AND job_id > ").push_bind(a);
        }
        qb.push(")");
    }
    if !f.ids.is_empty() {
        qb.push(" AND j.id = ANY(")
            .push_bind(f.ids.clone())
            .push(")");
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

/// Locks the listed jobs and returns their states, `NotFound` naming the first missing id.
async fn lock_states(
    tx: &mut sqlx::PgConnection,
    ids: &[JobId],
) -> Result<std::collections::HashMap<JobId, JobState>> {
    let rows = sqlx::query("SELECT id, state FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
    let mut m = std::collections::HashMap::new();
    for r in rows {
        m.insert(r.try_get("id")?, rows::state(r.try_get("state")?)?);
    }
    if let Some(missing) = ids.iter().find(|id| !m.contains_key(*id)) {
        return Err(Error::NotFound(format!("job {missing} does not exist")));
    }
    Ok(m)
}

pub async fn cancel(pool: &PgPool, ids: &[JobId]) -> Result<CancelOutcome> {
    let mut tx = pool.begin().await?;
    let states = lock_states(&mut tx, ids).await?;
    let mut out = CancelOutcome::default();
    for &id in ids {
        match states[&id] {
            JobState::Queued | JobState::Blocked => out.cancelled.push(id),
            JobState::Running => out.stopping.push(id),
            _ => out.already_finished.push(id),
        }
    }
    out.cancelled.dedup();
    sqlx::query(
        &format!("UPDATE jobs SET state = {CANCELLED}, error = 'cancelled by request', finished_at = sh_now_ms(),
            updated_at = sh_now_ms() WHERE id = ANY($1)"),
    )
    .bind(&out.cancelled)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE jobs SET cancel_requested = true, updated_at = sh_now_ms() WHERE id = ANY($1)",
    )
    .bind(&out.stopping)
    .execute(&mut *tx)
    .await?;
    for &id in &out.cancelled {
        cascade(
            &mut tx,
            id,
            JobState::Cancelled,
            &format!("dependency {id} was cancelled"),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(out)
}

/// Revives the jobs; also says whether any of them is claimable now.
pub async fn retry(pool: &PgPool, policy: &Policy, ids: &[JobId]) -> Result<(Vec<JobId>, bool)> {
    let mut tx = pool.begin().await?;
    let states = lock_states(&mut tx, ids).await?;
    for &id in ids {
        let s = states[&id];
        if !matches!(s, JobState::Failed | JobState::Cancelled) {
            return Err(Error::FailedPrecondition(format!(
                "job {id} is {s}; only failed or cancelled jobs can be retried"
            )));
        }
    }
    let rows: Vec<(JobId, bool)> = sqlx::query_as(&format!(
        "UPDATE jobs SET state = CASE WHEN deps_pending = 0 THEN {QUEUED} ELSE {BLOCKED} END,
            failures = 0, crashes = 0, error = NULL, cancel_requested = false, dep_failed = false,
            run_after = 0, finished_at = NULL, worker_id = NULL, result = NULL,
            sort_key = {}, updated_at = sh_now_ms()
         WHERE id = ANY($1) RETURNING id, state = {QUEUED}",
        sort_key_sql("sh_now_ms()", "priority", "$2")
    ))
    .bind(ids)
    .bind(policy.aging_ms_per_priority)
    .fetch_all(&mut *tx)
    .await?;
    let queued = rows.iter().any(|&(_, queued)| queued);
    let mut revived: Vec<JobId> = rows.into_iter().map(|(id, _)| id).collect();
    // Revive, level by level, dependents that went down only because of these jobs: those whose
    // dependencies are now all alive again.
    let mut frontier = revived.clone();
    while !frontier.is_empty() {
        frontier = sqlx::query_scalar(
            &format!("UPDATE jobs c SET state = {BLOCKED}, dep_failed = false, error = NULL, finished_at = NULL,
                updated_at = sh_now_ms()
             WHERE c.dep_failed AND c.state IN ({FAILED}, {CANCELLED})
               AND c.id IN (SELECT job_id FROM job_deps WHERE dep_id = ANY($1))
               AND NOT EXISTS (SELECT 1 FROM job_deps d JOIN jobs p ON p.id = d.dep_id
                               WHERE d.job_id = c.id AND p.state IN ({FAILED}, {CANCELLED}))
             RETURNING c.id"),
        )
        .bind(&frontier)
        .fetch_all(&mut *tx)
        .await?;
        revived.extend_from_slice(&frontier);
    }
    notify(&mut tx).await?;
    tx.commit().await?;
    Ok((revived, queued))
}

pub async fn register_worker(
    pool: &PgPool,
    id: &str,
    info: &WorkerInfo,
    key_hash: &str,
) -> Result<()> {
    let mem: Vec<i64> = info.gpu_mem_mb.iter().map(|&m| m as i64).collect();
    sqlx::query(
        "INSERT INTO workers (id, name, hostname, cpu_slots, gpus, gpu_mem_mb, tags, kinds,
            version, registered_at, last_seen, key_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, sh_now_ms(), sh_now_ms(), $10)",
    )
    .bind(id)
    .bind(&info.name)
    .bind(&info.hostname)
    .bind(info.resources.cpu_slots as i32)
    .bind(info.resources.gpus as i32)
    .bind(&mem)
    .bind(&info.resources.tags)
    .bind(&info.kinds)
    .bind(&info.version)
    .bind(key_hash)
    .execute(pool)
    .await
    .map_err(|e| crate::store::map_unique(e, || format!("worker id {id} is already registered")))?;
    Ok(())
}

pub async fn renew_worker(pool: &PgPool, id: &str, info: &WorkerInfo) -> Result<()> {
    let mem: Vec<i64> = info.gpu_mem_mb.iter().map(|&m| m as i64).collect();
    let n = sqlx::query(
        "UPDATE workers SET name = $2, hostname = $3, cpu_slots = $4, gpus = $5, gpu_mem_mb = $6,
            tags = $7, kinds = $8, version = $9, last_seen = sh_now_ms(), deregistered = false
         WHERE id = $1",
    )
    .bind(id)
    .bind(&info.name)
    .bind(&info.hostname)
    .bind(info.resources.cpu_slots as i32)
    .bind(info.resources.gpus as i32)
    .bind(&mem)
    .bind(&info.resources.tags)
    .bind(&info.kinds)
    .bind(&info.version)
    .execute(pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(crate::store::workers::not_registered(id));
    }
    Ok(())
}

pub async fn list_workers(
    pool: &PgPool,
    policy: &Policy,
    include_dead: bool,
) -> Result<Vec<WorkerRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT w.*, sh_now_ms() AS now, coalesce(r.n, 0) AS running,
            coalesce(r.slots, 0) AS busy_slots, coalesce(r.gpus, 0) AS busy_gpus
         FROM workers w
         LEFT JOIN (SELECT worker_id, count(*) AS n, sum(cpu_slots) AS slots, sum(gpus) AS gpus
                    FROM jobs WHERE state = {RUNNING} GROUP BY worker_id) r ON r.worker_id = w.id
         ORDER BY w.registered_at, w.id"
    ))
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let now: i64 = r.try_get("now")?;
        let last_seen: i64 = r.try_get("last_seen")?;
        let deregistered: bool = r.try_get("deregistered")?;
        let dead = deregistered || now - last_seen > policy.worker_dead_after_ms;
        if dead && !include_dead {
            continue;
        }
        out.push(WorkerRecord {
            id: r.try_get("id")?,
            info: WorkerInfo {
                name: r.try_get("name")?,
                hostname: r.try_get("hostname")?,
                resources: Resources {
                    cpu_slots: r.try_get::<i32, _>("cpu_slots")? as u32,
                    gpus: r.try_get::<i32, _>("gpus")? as u32,
                    gpu_mem_mb: 0,
                    tags: r.try_get("tags")?,
                },
                gpu_mem_mb: r
                    .try_get::<Vec<i64>, _>("gpu_mem_mb")?
                    .into_iter()
                    .map(|m| m as u64)
                    .collect(),
                kinds: r.try_get("kinds")?,
                version: r.try_get("version")?,
            },
            registered_at: r.try_get("registered_at")?,
            last_seen,
            deregistered,
            running_jobs: r.try_get::<i64, _>("running")? as u32,
            busy_slots: r.try_get::<i64, _>("busy_slots")? as u32,
            busy_gpus: r.try_get::<i64, _>("busy_gpus")? as u32,
        });
    }
    Ok(out)
}

pub async fn purge(pool: &PgPool, before: Millis, limit: u32) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(&format!(
        "WITH d AS (
            DELETE FROM jobs WHERE id IN (
                SELECT j.id FROM jobs j
                WHERE j.state >= {SUCCEEDED} AND j.finished_at < $1
                  AND NOT EXISTS (SELECT 1 FROM job_deps d JOIN jobs c ON c.id = d.job_id
                                  WHERE d.dep_id = j.id AND c.state < {SUCCEEDED})
                ORDER BY j.id LIMIT $2)
            RETURNING id, experiment
        ), e AS (
            DELETE FROM experiment_jobs x USING d
            WHERE x.experiment = d.experiment AND x.job_id = d.id
        ) SELECT count(*) FROM d"
    ))
    .bind(before)
    .bind(limit as i64)
    .fetch_one(pool)
    .await?;
    sqlx::query("DELETE FROM submissions WHERE created_at < $1")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(n as u64)
}
