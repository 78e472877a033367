//! The hot paths of a running job: claim, heartbeat, complete, fail, and lease expiry. Each is
//! one short transaction; claims and completions are single array-parameter statements.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool, Row};

use super::rows::{self, LEASED_COLUMNS};
use super::WORK_CHANNEL;
use crate::domain::model::*;
use crate::error::{Error, Result};
use crate::store::codes::*;
use crate::store::sort_key_sql;
use crate::store::{encode_f32s, encode_u32s};

/// The filters are written so the planner estimates them well (`run_after = 0`, `has_tags`):
/// a bad estimate makes it sort the whole queue instead of walking the queue index.
pub async fn lease(pool: &PgPool, q: &LeaseQuery) -> Result<Vec<LeasedJob>> {
    if q.max_jobs == 0 || q.free.cpu_slots == 0 {
        touch_worker(pool, &q.worker_id).await?;
        return Ok(Vec::new());
    }
    // `w` marks the worker seen (whether or not it gets work) and yields the kinds it runs:
    // nothing is claimed for an unregistered worker, or of a kind it did not register (a CPU
    // blade never takes a cnn job). An empty claim then asks whether the worker is registered.
    // The claimed jobs come back in queue order, as on SQLite.
    let sql = format!(
        "WITH w AS (
            UPDATE workers SET last_seen = sh_now_ms() WHERE id = $6 AND NOT deregistered
            RETURNING kinds
        ), cand AS (
            SELECT id, cpu_slots, gpus, sort_key FROM jobs
            WHERE state = {QUEUED} AND (run_after = 0 OR run_after <= sh_now_ms())
              AND EXISTS (SELECT 1 FROM w WHERE jobs.kind = ANY(w.kinds))
              AND cpu_slots <= $1 AND gpus <= $2 AND (gpus = 0 OR gpu_mem_mb <= $3)
              AND (NOT has_tags OR tags <@ $4)
            ORDER BY sort_key, id
            LIMIT $5
            FOR UPDATE SKIP LOCKED
        ), fit AS (
            SELECT id FROM (
                SELECT id, sum(cpu_slots) OVER w AS cs, sum(gpus) OVER w AS gs
                FROM cand WINDOW w AS (ORDER BY sort_key, id)
            ) c WHERE cs <= $1 AND gs <= $2
        ), claimed AS (
            UPDATE jobs j SET state = {RUNNING}, attempt = j.attempt + 1, worker_id = $6,
                started_at = sh_now_ms(), updated_at = sh_now_ms(),
                lease_expires_at = sh_now_ms() + $7, progress = NULL, cancel_requested = false
            FROM fit WHERE j.id = fit.id
            RETURNING {LEASED_COLUMNS}, j.sort_key
        )
        SELECT * FROM claimed ORDER BY sort_key, id"
    );
    let rows = sqlx::query(&sql)
        .bind(q.free.cpu_slots as i32)
        .bind(q.free.gpus as i32)
        .bind(q.free.gpu_mem_mb as i64)
        .bind(&q.free.tags)
        .bind(q.max_jobs as i64)
        .bind(&q.worker_id)
        .bind(q.lease_ttl_ms)
        .fetch_all(pool)
        .await?;
    if rows.is_empty() {
        check_worker(pool, &q.worker_id).await?;
    }
    rows.iter().map(rows::leased).collect()
}

/// `NotFound` unless the worker is registered and not deregistered.
async fn check_worker(pool: &PgPool, worker_id: &str) -> Result<()> {
    let live: Option<bool> =
        sqlx::query_scalar("SELECT NOT deregistered FROM workers WHERE id = $1")
            .bind(worker_id)
            .fetch_optional(pool)
            .await?;
    if live != Some(true) {
        return Err(crate::store::workers::not_registered(worker_id));
    }
    Ok(())
}

/// Like `check_worker`, marking the worker seen now.
async fn touch_worker(pool: &PgPool, worker_id: &str) -> Result<()> {
    let n = sqlx::query(
        "UPDATE workers SET last_seen = sh_now_ms() WHERE id = $1 AND NOT deregistered",
    )
    .bind(worker_id)
    .execute(pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(crate::store::workers::not_registered(worker_id));
    }
    Ok(())
}

pub async fn heartbeat(
    pool: &PgPool,
    worker_id: &str,
    jobs: &[ActiveJob],
    ttl: i64,
) -> Result<Vec<StopJob>> {
    let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
    let attempts: Vec<i32> = jobs.iter().map(|j| j.attempt as i32).collect();
    let progress: Vec<Option<String>> = jobs.iter().map(|j| j.progress.clone()).collect();
    if jobs.is_empty() {
        touch_worker(pool, worker_id).await?;
        return Ok(Vec::new());
    }
    let rows = sqlx::query(&format!(
        "WITH w AS (
            UPDATE workers SET last_seen = sh_now_ms() WHERE id = $4 AND NOT deregistered
            RETURNING id
         )
         UPDATE jobs j SET lease_expires_at = sh_now_ms() + $5,
            progress = COALESCE(r.progress, j.progress),
            updated_at = CASE WHEN r.progress IS DISTINCT FROM j.progress AND r.progress IS NOT NULL
                         THEN sh_now_ms() ELSE j.updated_at END
         FROM UNNEST($1::BIGINT[], $2::INT[], $3::TEXT[]) AS r(id, attempt, progress)
         WHERE j.id = r.id AND j.attempt = r.attempt AND j.state = {RUNNING} AND j.worker_id = $4
           AND EXISTS (SELECT 1 FROM w)
         RETURNING j.id, j.cancel_requested"
    ))
    .bind(&ids)
    .bind(&attempts)
    .bind(&progress)
    .bind(worker_id)
    .bind(ttl)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        check_worker(pool, worker_id).await?;
    }
    let mut live: HashMap<i64, bool> = HashMap::with_capacity(rows.len());
    for r in rows {
        live.insert(r.try_get("id")?, r.try_get("cancel_requested")?);
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

/// Returns the outcome and whether some dependent became claimable. The batch is stored in
/// rounds: round k holds the k-th completion of each job, so a job completed twice in one
/// batch is judged in order, as if its reports came one after another (the first that holds
/// finishes it; a later one is stale).
pub async fn complete(
    pool: &PgPool,
    policy: &Policy,
    worker_id: &str,
    items: &[Completion],
) -> Result<(CompleteOutcome, bool)> {
    if items.is_empty() {
        return Ok((CompleteOutcome::default(), false));
    }
    let mut tx = pool.begin().await?;
    let mut out = CompleteOutcome::default();
    let mut parents = Vec::new();
    for round in rounds(items) {
        let (o, p) = complete_round(&mut tx, worker_id, &round).await?;
        out.accepted.extend(o.accepted);
        out.stale.extend(o.stale);
        out.invalid.extend(o.invalid);
        parents.extend(p);
    }
    let mut woke = false;
    if !parents.is_empty() {
        let unblocked: i64 = sqlx::query_scalar(
            &format!("WITH dec AS (
                SELECT job_id, count(*)::INT AS n FROM job_deps WHERE dep_id = ANY($1) GROUP BY job_id
            ), upd AS (
                UPDATE jobs j SET deps_pending = j.deps_pending - dec.n,
                    state = CASE WHEN j.state = {BLOCKED} AND j.deps_pending - dec.n = 0 THEN {QUEUED} ELSE j.state END,
                    sort_key = CASE WHEN j.state = {BLOCKED} AND j.deps_pending - dec.n = 0
                               THEN {} ELSE j.sort_key END,
                    updated_at = sh_now_ms()
                FROM dec WHERE j.id = dec.job_id
                RETURNING j.state
            ) SELECT count(*) FILTER (WHERE state = {QUEUED}) FROM upd",
            sort_key_sql("sh_now_ms()", "j.priority", "$2")
        ))
        .bind(&parents)
        .bind(policy.aging_ms_per_priority)
        .fetch_one(&mut *tx)
        .await?;
        if unblocked > 0 {
            notify(&mut tx).await?;
            woke = true;
        }
    }
    tx.commit().await?;
    Ok((out, woke))
}

/// The k-th completion of each job in the batch, per round k.
fn rounds(items: &[Completion]) -> Vec<Vec<&Completion>> {
    let mut seen: HashMap<JobId, usize> = HashMap::with_capacity(items.len());
    let mut rounds: Vec<Vec<&Completion>> = Vec::new();
    for c in items {
        let k = seen.entry(c.id).or_insert(0);
        if rounds.len() <= *k {
            rounds.push(Vec::new());
        }
        rounds[*k].push(c);
        *k += 1;
    }
    rounds
}

/// Stores the completions of one round (each job at most once); returns what became of each
/// and the accepted jobs that have dependents.
async fn complete_round(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    worker_id: &str,
    items: &[&Completion],
) -> Result<(CompleteOutcome, Vec<JobId>)> {
    let ids: Vec<i64> = items.iter().map(|c| c.id).collect();
    let attempts: Vec<i32> = items.iter().map(|c| c.attempt as i32).collect();
    let results: Vec<Option<String>> = items.iter().map(|c| c.result.clone()).collect();
    let progress: Vec<Option<String>> = items.iter().map(|c| c.progress.clone()).collect();
    let oof_n: Vec<i32> = items
        .iter()
        .map(|c| c.predictions.as_ref().map_or(0, |p| p.oof.len() as i32))
        .collect();
    let test_n: Vec<i32> = items
        .iter()
        .map(|c| c.predictions.as_ref().map_or(0, |p| p.test.len() as i32))
        .collect();

    let rows = sqlx::query(&format!(
        "UPDATE jobs j SET state = {SUCCEEDED}, result = r.result, finished_at = sh_now_ms(),
            updated_at = sh_now_ms(), lease_expires_at = NULL,
            progress = COALESCE(r.progress, j.progress)
         FROM UNNEST($1::BIGINT[], $2::INT[], $3::TEXT[], $4::INT[], $5::INT[], $7::TEXT[])
            AS r(id, attempt, result, oof_n, test_n, progress)
         WHERE j.id = r.id AND j.attempt = r.attempt AND j.state = {RUNNING} AND j.worker_id = $6
           AND (j.expect_oof_rows = 0 OR j.expect_oof_rows = r.oof_n)
           AND (j.expect_test_rows = 0 OR j.expect_test_rows = r.test_n)
         RETURNING j.id, j.has_dependents"
    ))
    .bind(&ids)
    .bind(&attempts)
    .bind(&results)
    .bind(&oof_n)
    .bind(&test_n)
    .bind(worker_id)
    .bind(&progress)
    .fetch_all(&mut **tx)
    .await?;

    let mut accepted = Vec::with_capacity(rows.len());
    let mut parents = Vec::new();
    for r in &rows {
        let id: i64 = r.try_get("id")?;
        accepted.push(id);
        if r.try_get::<bool, _>("has_dependents")? {
            parents.push(id);
        }
    }

    let (mut stale, mut invalid) = (Vec::new(), Vec::new());
    if accepted.len() < items.len() {
        let done: std::collections::HashSet<i64> = accepted.iter().copied().collect();
        let missing: Vec<&Completion> = items
            .iter()
            .copied()
            .filter(|c| !done.contains(&c.id))
            .collect();
        let missing_ids: Vec<i64> = missing.iter().map(|c| c.id).collect();
        let found = sqlx::query(
            "SELECT id, attempt, state, worker_id, expect_oof_rows, expect_test_rows
             FROM jobs WHERE id = ANY($1)",
        )
        .bind(&missing_ids)
        .fetch_all(&mut **tx)
        .await?;
        let mut by_id = HashMap::new();
        for r in found {
            let id: i64 = r.try_get("id")?;
            by_id.insert(
                id,
                (
                    r.try_get::<i32, _>("attempt")? as u32,
                    rows::state(r.try_get("state")?)?,
                    r.try_get::<Option<String>, _>("worker_id")?,
                    r.try_get::<i32, _>("expect_oof_rows")? as u32,
                    r.try_get::<i32, _>("expect_test_rows")? as u32,
                ),
            );
        }
        for c in missing {
            match by_id.get(&c.id) {
                None => stale.push((c.id, c.attempt, format!("job {} does not exist", c.id))),
                Some((attempt, state, worker, oof, test)) => {
                    let now = FenceState {
                        state: *state,
                        attempt: *attempt,
                        worker: worker.as_deref(),
                    };
                    match fence_breach(c.id, c.attempt, worker_id, now) {
                        Some(why) => stale.push((c.id, c.attempt, why)),
                        // The fence held, so the prediction sizes were wrong.
                        None => invalid.push((
                            c.id,
                            c.attempt,
                            prediction_rows_breach(c, *oof, *test)
                                .unwrap_or_else(|| format!("job {} was not updated", c.id)),
                        )),
                    }
                }
            }
        }
    }

    // A set, not `accepted.contains`: batches hold thousands of completions.
    let accepted_set: std::collections::HashSet<i64> = accepted.iter().copied().collect();
    let with_preds: Vec<&Completion> = items
        .iter()
        .copied()
        .filter(|c| c.predictions.is_some() && accepted_set.contains(&c.id))
        .collect();
    if !with_preds.is_empty() {
        let mut pid = Vec::new();
        let mut patt = Vec::new();
        let mut rows_b = Vec::new();
        let mut oof_b = Vec::new();
        let mut test_b = Vec::new();
        for c in with_preds {
            let p = c.predictions.as_ref().expect("filtered on is_some");
            pid.push(c.id);
            patt.push(c.attempt as i32);
            rows_b.push(encode_u32s(&p.oof_rows));
            oof_b.push(encode_f32s(&p.oof));
            test_b.push(encode_f32s(&p.test));
        }
        sqlx::query(
            "INSERT INTO predictions (job_id, attempt, oof_rows, oof, test)
             SELECT * FROM UNNEST($1::BIGINT[], $2::INT[], $3::BYTEA[], $4::BYTEA[], $5::BYTEA[])
             ON CONFLICT (job_id) DO UPDATE SET attempt = EXCLUDED.attempt,
                oof_rows = EXCLUDED.oof_rows, oof = EXCLUDED.oof, test = EXCLUDED.test",
        )
        .bind(&pid)
        .bind(&patt)
        .bind(&rows_b)
        .bind(&oof_b)
        .bind(&test_b)
        .execute(&mut **tx)
        .await?;
    }

    let out = CompleteOutcome {
        accepted,
        stale,
        invalid,
    };
    Ok((out, parents))
}

pub async fn fail(pool: &PgPool, policy: &Policy, f: &Failure) -> Result<FailOutcome> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "SELECT state, attempt, worker_id, failures, max_attempts, cancel_requested, priority
         FROM jobs WHERE id = $1 FOR UPDATE",
    )
    .bind(f.id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::Stale(format!("job {} does not exist", f.id)))?;
    if let Some(why) = rows::fence(&row)?.breach(f.id, f.attempt, &f.worker_id) {
        return Err(Error::Stale(why));
    }
    let failures = row.try_get::<i32, _>("failures")? as u32;
    let max_attempts = row.try_get::<i32, _>("max_attempts")? as u32;
    let cancel: bool = row.try_get("cancel_requested")?;
    let priority: i32 = row.try_get("priority")?;

    let after = policy.after_failure(f, failures, max_attempts, cancel);
    let (next, run_after_delay, failures, reason) =
        (after.state, after.backoff_ms, after.failures, after.error);
    let row = sqlx::query(&format!(
        "UPDATE jobs SET state = $2, failures = $3, error = $4, worker_id = NULL,
            lease_expires_at = NULL, updated_at = sh_now_ms(),
            run_after = CASE WHEN $5 > 0 THEN sh_now_ms() + $5 ELSE run_after END,
            sort_key = CASE WHEN $5 > 0 THEN {} ELSE sort_key END,
            finished_at = CASE WHEN $2 IN ({FAILED}, {CANCELLED}) THEN sh_now_ms() END
         WHERE id = $1 RETURNING run_after",
        sort_key_sql("sh_now_ms() + $5", "$6", "$7")
    ))
    .bind(f.id)
    .bind(next.code())
    .bind(failures as i32)
    .bind(&reason)
    .bind(run_after_delay)
    .bind(priority)
    .bind(policy.aging_ms_per_priority)
    .fetch_one(&mut *tx)
    .await?;
    let run_after: i64 = row.try_get("run_after")?;
    match next {
        JobState::Failed => {
            cascade(
                &mut tx,
                f.id,
                JobState::Failed,
                &format!("dependency {} failed: {reason}", f.id),
            )
            .await?;
        }
        JobState::Cancelled => {
            cascade(
                &mut tx,
                f.id,
                JobState::Cancelled,
                &format!("dependency {} was cancelled", f.id),
            )
            .await?;
        }
        JobState::Queued if run_after_delay == 0 => notify(&mut tx).await?,
        _ => {}
    }
    tx.commit().await?;
    Ok(FailOutcome {
        state: next,
        run_after,
    })
}

/// Fails or cancels every blocked transitive dependent of `root`.
pub async fn cascade(
    conn: &mut PgConnection,
    root: JobId,
    state: JobState,
    error: &str,
) -> Result<Vec<JobId>> {
    let ids: Vec<i64> = sqlx::query_scalar(&format!(
        "WITH RECURSIVE d(id) AS (
            SELECT job_id FROM job_deps WHERE dep_id = $1
            UNION SELECT jd.job_id FROM job_deps jd JOIN d ON jd.dep_id = d.id
        )
        UPDATE jobs j SET state = $2, error = $3, dep_failed = true,
            finished_at = sh_now_ms(), updated_at = sh_now_ms()
        FROM d WHERE j.id = d.id AND j.state = {BLOCKED}
        RETURNING j.id"
    ))
    .bind(root)
    .bind(state.code())
    .bind(error)
    .fetch_all(&mut *conn)
    .await?;
    Ok(ids)
}

pub async fn notify(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(WORK_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn reap(pool: &PgPool) -> Result<ReapOutcome> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(&format!(
        "UPDATE jobs j SET crashes = j.crashes + 1,
            state = CASE WHEN j.cancel_requested THEN {CANCELLED}
                         WHEN j.crashes + 1 >= j.crash_limit THEN {FAILED} ELSE {QUEUED} END,
            error = CASE WHEN j.cancel_requested THEN 'cancelled by request (worker lost)'
                         WHEN j.crashes + 1 >= j.crash_limit
                         THEN 'worker lost ' || (j.crashes + 1) || ' times (crash limit '
                              || j.crash_limit || '); last on worker ' || coalesce(j.worker_id, '?')
                         ELSE 'lease expired on worker ' || coalesce(j.worker_id, '?')
                              || ' at attempt ' || j.attempt END,
            finished_at = CASE WHEN j.cancel_requested OR j.crashes + 1 >= j.crash_limit
                               THEN sh_now_ms() END,
            worker_id = NULL, lease_expires_at = NULL, updated_at = sh_now_ms()
         WHERE j.id IN (
            SELECT id FROM jobs WHERE state = {RUNNING} AND lease_expires_at < sh_now_ms()
            ORDER BY lease_expires_at LIMIT 1000 FOR UPDATE SKIP LOCKED)
         RETURNING j.id, j.state, j.error"
    ))
    .fetch_all(&mut *tx)
    .await?;
    let mut out = ReapOutcome::default();
    for r in rows {
        let id: i64 = r.try_get("id")?;
        match rows::state(r.try_get("state")?)? {
            JobState::Queued => out.requeued.push(id),
            JobState::Failed => {
                let err: String = r.try_get("error")?;
                cascade(
                    &mut tx,
                    id,
                    JobState::Failed,
                    &format!("dependency {id} failed: {err}"),
                )
                .await?;
                out.failed.push(id);
            }
            _ => {
                cascade(
                    &mut tx,
                    id,
                    JobState::Cancelled,
                    &format!("dependency {id} was cancelled"),
                )
                .await?;
                out.cancelled.push(id);
            }
        }
    }
    if !out.requeued.is_empty() {
        notify(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(out)
}
