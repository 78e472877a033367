//! The hot paths of a running job: claim, heartbeat, complete, fail, and lease expiry. Each is
//! one short write transaction; claims, heartbeats and completions are a few statements over
//! a JSON list whatever the batch size.

use std::collections::{HashMap, HashSet};

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use super::rows::{self, json, LEASED_COLUMNS};
use crate::domain::model::*;
use crate::error::{Error, Result};
use crate::store::codes::*;
use crate::store::sort_key_sql;
use crate::store::{encode_f32s, encode_u32s};

/// Rows per predictions INSERT (5 bound parameters a row, far under the limit).
const PREDICTION_CHUNK: usize = 1_000;
/// Expired leases handled per reaper pass, so one pass stays a short transaction.
const REAP_BATCH: i64 = 1_000;

pub async fn lease(pool: &SqlitePool, q: &LeaseQuery) -> Result<Vec<LeasedJob>> {
    let now = now_ms();
    if q.max_jobs == 0 || q.free.cpu_slots == 0 {
        let mut tx = super::dialect::begin(pool).await?;
        touch_worker(&mut tx, &q.worker_id, now).await?;
        tx.commit().await?;
        return Ok(Vec::new());
    }
    // `cand` walks the queue index in order and keeps the jobs that fit on their own (resources,
    // tags, and a kind the worker registered: a CPU blade never takes a cnn job); `fit`
    // keeps the longest prefix of those whose running sums fit too (cpu_slots >= 1 and
    // gpus >= 0 make the sums monotonic, so the rows that pass form a prefix).
    let sql = format!(
        "WITH cand AS (
            SELECT id, sort_key, cpu_slots, gpus FROM jobs
            WHERE state = {QUEUED} AND run_after <= ?1
              AND cpu_slots <= ?2 AND gpus <= ?3 AND (gpus = 0 OR gpu_mem_mb <= ?4)
              AND kind IN (SELECT value FROM json_each(
                    (SELECT kinds FROM workers WHERE id = ?7)))
              AND (tags = '[]' OR NOT EXISTS (
                    SELECT 1 FROM json_each(jobs.tags) t
                    WHERE t.value NOT IN (SELECT value FROM json_each(?5))))
            ORDER BY sort_key, id
            LIMIT ?6
        ), fit AS (
            SELECT id FROM (
                SELECT id, sum(cpu_slots) OVER w AS cs, sum(gpus) OVER w AS gs
                FROM cand WINDOW w AS (ORDER BY sort_key, id ROWS UNBOUNDED PRECEDING)
            ) WHERE cs <= ?2 AND gs <= ?3
        )
        UPDATE jobs SET state = {RUNNING}, attempt = attempt + 1, worker_id = ?7, started_at = ?1,
            updated_at = ?1, lease_expires_at = ?1 + ?8, progress = NULL, cancel_requested = 0
        WHERE id IN (SELECT id FROM fit)
        RETURNING {LEASED_COLUMNS}"
    );
    let mut tx = super::dialect::begin(pool).await?;
    // A worker asking for work is alive, whether or not it gets any.
    touch_worker(&mut tx, &q.worker_id, now).await?;
    let rows = sqlx::query(&sql)
        .bind(now)
        .bind(i64::from(q.free.cpu_slots))
        .bind(i64::from(q.free.gpus))
        .bind(q.free.gpu_mem_mb as i64)
        .bind(json(&q.free.tags))
        .bind(i64::from(q.max_jobs))
        .bind(&q.worker_id)
        .bind(q.lease_ttl_ms)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let mut jobs = rows.iter().map(rows::leased).collect::<Result<Vec<_>>>()?;
    jobs.sort_unstable_by_key(|(sort_key, j)| (*sort_key, j.id));
    Ok(jobs.into_iter().map(|(_, j)| j).collect())
}

pub async fn heartbeat(
    pool: &SqlitePool,
    worker_id: &str,
    jobs: &[ActiveJob],
    ttl: i64,
) -> Result<Vec<StopJob>> {
    let now = now_ms();
    let reports: Vec<(JobId, u32, Option<&str>)> = jobs
        .iter()
        .map(|j| (j.id, j.attempt, j.progress.as_deref()))
        .collect();
    let mut tx = super::dialect::begin(pool).await?;
    touch_worker(&mut tx, worker_id, now).await?;
    let rows = if jobs.is_empty() {
        Vec::new()
    } else {
        // A lease renewal alone is not a change worth showing to `watch`; new progress is.
        sqlx::query(&format!(
            "UPDATE jobs SET lease_expires_at = ?2 + ?3,
                progress = COALESCE(r.progress, jobs.progress),
                updated_at = CASE WHEN r.progress IS NOT NULL AND r.progress IS NOT jobs.progress
                             THEN ?2 ELSE jobs.updated_at END
             FROM (SELECT value ->> 0 AS rid, value ->> 1 AS rattempt, value ->> 2 AS progress
                   FROM json_each(?1)) AS r
             WHERE jobs.id = r.rid AND jobs.attempt = r.rattempt AND jobs.state = {RUNNING}
               AND jobs.worker_id = ?4
             RETURNING id, cancel_requested"
        ))
        .bind(json(&reports))
        .bind(now)
        .bind(ttl)
        .bind(worker_id)
        .fetch_all(&mut *tx)
        .await?
    };
    tx.commit().await?;
    let mut live: HashMap<JobId, bool> = HashMap::with_capacity(rows.len());
    for r in rows {
        live.insert(
            r.try_get("id")?,
            r.try_get::<i64, _>("cancel_requested")? != 0,
        );
    }
    Ok(jobs
        .iter()
        .filter_map(|j| {
            let reason = match live.get(&j.id) {
                None => StopReason::LeaseLost,
                Some(true) => StopReason::Cancelled,
                Some(false) => return None,
            };
            Some(StopJob {
                id: j.id,
                attempt: j.attempt,
                reason,
            })
        })
        .collect())
}

/// What `complete` needs to know of a reported job before writing.
struct Current {
    attempt: u32,
    state: JobState,
    worker: Option<String>,
    expect_oof: u32,
    expect_test: u32,
    has_dependents: bool,
}

/// Returns the outcome and whether some dependent became claimable.
pub async fn complete(
    pool: &SqlitePool,
    policy: &Policy,
    worker_id: &str,
    items: &[Completion],
) -> Result<(CompleteOutcome, bool)> {
    if items.is_empty() {
        return Ok((CompleteOutcome::default(), false));
    }
    let now = now_ms();
    let ids: Vec<JobId> = items.iter().map(|c| c.id).collect();
    let mut tx = super::dialect::begin(pool).await?;

    // Read the fencing tokens first: the write lock is ours, so they cannot change before
    // the update. Each item is then accepted, stale or invalid on its own.
    let found = sqlx::query(
        "SELECT id, attempt, state, worker_id, expect_oof_rows, expect_test_rows, has_dependents
         FROM jobs WHERE id IN (SELECT value FROM json_each(?1))",
    )
    .bind(json(&ids))
    .fetch_all(&mut *tx)
    .await?;
    let mut current: HashMap<JobId, Current> = HashMap::with_capacity(found.len());
    for r in found {
        current.insert(
            r.try_get("id")?,
            Current {
                attempt: r.try_get::<i64, _>("attempt")? as u32,
                state: rows::state(r.try_get("state")?)?,
                worker: r.try_get("worker_id")?,
                expect_oof: r.try_get::<i64, _>("expect_oof_rows")? as u32,
                expect_test: r.try_get::<i64, _>("expect_test_rows")? as u32,
                has_dependents: r.try_get::<i64, _>("has_dependents")? != 0,
            },
        );
    }

    let mut out = CompleteOutcome::default();
    let mut accepted: Vec<&Completion> = Vec::with_capacity(items.len());
    let mut seen: HashSet<JobId> = HashSet::with_capacity(items.len());
    let mut parents: Vec<JobId> = Vec::new();
    for c in items {
        let Some(cur) = current.get(&c.id) else {
            out.stale
                .push((c.id, c.attempt, format!("job {} does not exist", c.id)));
            continue;
        };
        let now_state = FenceState {
            state: if seen.contains(&c.id) {
                // The same report twice in one batch: the first one finished the job.
                JobState::Succeeded
            } else {
                cur.state
            },
            attempt: cur.attempt,
            worker: cur.worker.as_deref(),
        };
        if let Some(why) = fence_breach(c.id, c.attempt, worker_id, now_state) {
            out.stale.push((c.id, c.attempt, why));
            continue;
        }
        if let Some(why) = prediction_rows_breach(c, cur.expect_oof, cur.expect_test) {
            out.invalid.push((c.id, c.attempt, why));
            continue;
        }
        seen.insert(c.id);
        accepted.push(c);
        if cur.has_dependents {
            parents.push(c.id);
        }
    }
    if accepted.is_empty() {
        tx.commit().await?;
        return Ok((out, false));
    }

    let done: Vec<(JobId, Option<&str>, Option<&str>)> = accepted
        .iter()
        .map(|c| (c.id, c.result.as_deref(), c.progress.as_deref()))
        .collect();
    sqlx::query(&format!(
        "UPDATE jobs SET state = {SUCCEEDED}, result = r.result, finished_at = ?2, updated_at = ?2,
            lease_expires_at = NULL, progress = COALESCE(r.progress, jobs.progress)
         FROM (SELECT value ->> 0 AS rid, value ->> 1 AS result, value ->> 2 AS progress
               FROM json_each(?1)) AS r
         WHERE jobs.id = r.rid AND jobs.state = {RUNNING}"
    ))
    .bind(json(&done))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    out.accepted = accepted.iter().map(|c| c.id).collect();

    let with_preds: Vec<(&Completion, &Predictions)> = accepted
        .iter()
        .filter_map(|c| c.predictions.as_ref().map(|p| (*c, p)))
        .collect();
    for chunk in with_preds.chunks(PREDICTION_CHUNK) {
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
            "INSERT OR REPLACE INTO predictions (job_id, attempt, oof_rows, oof, test) ",
        );
        qb.push_values(chunk, |mut b, (c, p)| {
            b.push_bind(c.id)
                .push_bind(i64::from(c.attempt))
                .push_bind(encode_u32s(&p.oof_rows))
                .push_bind(encode_f32s(&p.oof))
                .push_bind(encode_f32s(&p.test));
        });
        qb.build().persistent(false).execute(&mut *tx).await?;
    }

    let unblocked = if parents.is_empty() {
        false
    } else {
        unblock_dependents(&mut tx, policy, &parents, now).await? > 0
    };
    tx.commit().await?;
    Ok((out, unblocked))
}

/// Counts the success of `parents` against their dependents and queues those whose last
/// dependency this was. Several parents of one dependent may finish in the same batch, hence
/// the count per dependent. Returns how many became queued.
async fn unblock_dependents(
    conn: &mut SqliteConnection,
    policy: &Policy,
    parents: &[JobId],
    now: Millis,
) -> Result<usize> {
    // SET expressions all see the row as it was, so `deps_pending - dec.n` is the new count
    // in every CASE. The new sort_key is `policy.sort_key(now, priority)`.
    let rows = sqlx::query(
        &format!("WITH dec AS (
            SELECT job_id, count(*) AS n FROM job_deps
            WHERE dep_id IN (SELECT value FROM json_each(?1)) GROUP BY job_id
        )
        UPDATE jobs SET deps_pending = jobs.deps_pending - dec.n,
            state = CASE WHEN jobs.state = {BLOCKED} AND jobs.deps_pending - dec.n <= 0 THEN {QUEUED}
                         ELSE jobs.state END,
            sort_key = CASE WHEN jobs.state = {BLOCKED} AND jobs.deps_pending - dec.n <= 0
                            THEN {} ELSE jobs.sort_key END,
            updated_at = CASE WHEN jobs.state = {BLOCKED} AND jobs.deps_pending - dec.n <= 0
                              THEN ?2 ELSE jobs.updated_at END
        FROM dec WHERE jobs.id = dec.job_id
        RETURNING state",
        sort_key_sql("?2", "jobs.priority", "?3")
        ),
    )
    .bind(json(parents))
    .bind(now)
    .bind(policy.aging_ms_per_priority)
    .fetch_all(&mut *conn)
    .await?;
    // A dependent with a pending dependency is never queued, so queued now means unblocked.
    let mut queued = 0;
    for r in rows {
        if r.try_get::<i64, _>("state")? == i64::from(JobState::Queued.code()) {
            queued += 1;
        }
    }
    Ok(queued)
}

pub async fn fail(pool: &SqlitePool, policy: &Policy, f: &Failure) -> Result<FailOutcome> {
    let now = now_ms();
    let mut tx = super::dialect::begin(pool).await?;
    let row = sqlx::query(
        "SELECT state, attempt, worker_id, failures, max_attempts, cancel_requested, priority,
            run_after, has_dependents
         FROM jobs WHERE id = ?1",
    )
    .bind(f.id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::Stale(format!("job {} does not exist", f.id)))?;
    if let Some(why) = rows::fence(&row)?.breach(f.id, f.attempt, &f.worker_id) {
        return Err(Error::Stale(why));
    }
    let failures = row.try_get::<i64, _>("failures")? as u32;
    let max_attempts = row.try_get::<i64, _>("max_attempts")? as u32;
    let cancel = row.try_get::<i64, _>("cancel_requested")? != 0;
    let priority = row.try_get::<i64, _>("priority")? as i32;
    let has_dependents = row.try_get::<i64, _>("has_dependents")? != 0;
    let mut run_after: Millis = row.try_get("run_after")?;
    let mut sort_key: Option<i64> = None;

    let after = policy.after_failure(f, failures, max_attempts, cancel);
    let (next, failures, reason) = (after.state, after.failures, after.error);
    if after.backoff_ms > 0 {
        run_after = now + after.backoff_ms;
        // Re-enqueued at the end of its backoff, as if submitted then.
        sort_key = Some(policy.sort_key(run_after, priority));
    }
    let finished = next.is_finished().then_some(now);
    sqlx::query(
        "UPDATE jobs SET state = ?2, failures = ?3, error = ?4, worker_id = NULL,
            lease_expires_at = NULL, updated_at = ?5, run_after = ?6,
            sort_key = COALESCE(?7, sort_key), finished_at = ?8
         WHERE id = ?1",
    )
    .bind(f.id)
    .bind(i64::from(next.code()))
    .bind(i64::from(failures))
    .bind(&reason)
    .bind(now)
    .bind(run_after)
    .bind(sort_key)
    .bind(finished)
    .execute(&mut *tx)
    .await?;
    if has_dependents {
        let id = f.id;
        match next {
            JobState::Failed => {
                let msg = format!("dependency {id} failed: {reason}");
                cascade(&mut tx, &[(id, msg)], JobState::Failed, now).await?;
            }
            JobState::Cancelled => {
                let msg = format!("dependency {id} was cancelled");
                cascade(&mut tx, &[(id, msg)], JobState::Cancelled, now).await?;
            }
            _ => {}
        }
    }
    tx.commit().await?;
    Ok(FailOutcome {
        state: next,
        run_after,
    })
}

/// Moves every blocked transitive dependent of each root to `state` (failed or cancelled),
/// with the root's message as its error and `dep_failed` set so a retry of the root revives
/// it. A dependent reachable from several roots takes one of their messages. Returns the ids
/// changed. The walk goes only through blocked jobs: every dependent of an unfinished job is
/// blocked, and finished ones are left alone.
pub async fn cascade(
    conn: &mut SqliteConnection,
    roots: &[(JobId, String)],
    state: JobState,
    now: Millis,
) -> Result<Vec<JobId>> {
    if roots.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<JobId> = sqlx::query_scalar(&format!(
        "WITH RECURSIVE r(id, msg) AS (
            SELECT value ->> 0, value ->> 1 FROM json_each(?1)
            UNION
            SELECT d.job_id, r.msg FROM r
            JOIN job_deps d ON d.dep_id = r.id
            JOIN jobs c ON c.id = d.job_id
            WHERE c.state = {BLOCKED}
        )
        UPDATE jobs SET state = ?2, error = x.msg, dep_failed = 1, finished_at = ?3,
            updated_at = ?3
        FROM (SELECT id AS xid, min(msg) AS msg FROM r GROUP BY id) AS x
        WHERE jobs.id = x.xid AND jobs.state = {BLOCKED}
        RETURNING id"
    ))
    .bind(json(roots))
    .bind(i64::from(state.code()))
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    Ok(ids)
}

pub async fn reap(pool: &SqlitePool) -> Result<ReapOutcome> {
    let now = now_ms();
    let mut tx = super::dialect::begin(pool).await?;
    // Messages match the PostgreSQL store's; every SET sees the row as it was.
    let rows = sqlx::query(&format!(
        "UPDATE jobs SET crashes = crashes + 1,
            state = CASE WHEN cancel_requested THEN {CANCELLED}
                         WHEN crashes + 1 >= crash_limit THEN {FAILED} ELSE {QUEUED} END,
            error = CASE WHEN cancel_requested THEN 'cancelled by request (worker lost)'
                         WHEN crashes + 1 >= crash_limit
                         THEN 'worker lost ' || (crashes + 1) || ' times (crash limit '
                              || crash_limit || '); last on worker ' || coalesce(worker_id, '?')
                         ELSE 'lease expired on worker ' || coalesce(worker_id, '?')
                              || ' at attempt ' || attempt END,
            finished_at = CASE WHEN cancel_requested OR crashes + 1 >= crash_limit
                               THEN ?1 END,
            worker_id = NULL, lease_expires_at = NULL, updated_at = ?1
         WHERE id IN (
            SELECT id FROM jobs WHERE state = {RUNNING} AND lease_expires_at <= ?1
            ORDER BY lease_expires_at LIMIT ?2)
         RETURNING id, state, error, has_dependents"
    ))
    .bind(now)
    .bind(REAP_BATCH)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = ReapOutcome::default();
    let mut failed_roots = Vec::new();
    let mut cancelled_roots = Vec::new();
    for r in rows {
        let id: JobId = r.try_get("id")?;
        let has_dependents = r.try_get::<i64, _>("has_dependents")? != 0;
        match rows::state(r.try_get("state")?)? {
            JobState::Queued => out.requeued.push(id),
            JobState::Failed => {
                out.failed.push(id);
                if has_dependents {
                    let err: String = r.try_get("error")?;
                    failed_roots.push((id, format!("dependency {id} failed: {err}")));
                }
            }
            _ => {
                out.cancelled.push(id);
                if has_dependents {
                    cancelled_roots.push((id, format!("dependency {id} was cancelled")));
                }
            }
        }
    }
    cascade(&mut tx, &failed_roots, JobState::Failed, now).await?;
    cascade(&mut tx, &cancelled_roots, JobState::Cancelled, now).await?;
    tx.commit().await?;
    for v in [&mut out.requeued, &mut out.failed, &mut out.cancelled] {
        v.sort_unstable();
    }
    Ok(out)
}

/// `NotFound` unless the worker is registered and not deregistered; marks it seen now.
async fn touch_worker(conn: &mut SqliteConnection, worker_id: &str, now: Millis) -> Result<()> {
    let n = sqlx::query("UPDATE workers SET last_seen = ?2 WHERE id = ?1 AND deregistered = 0")
        .bind(worker_id)
        .bind(now)
        .execute(conn)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(crate::store::workers::not_registered(worker_id));
    }
    Ok(())
}
