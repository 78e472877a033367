//! Atomic batch submission with idempotency keys and dependency wiring: one write transaction
//! of a few statements whatever the batch size (multi-row INSERTs chunked under SQLite's bound
//! parameter limit).

use std::collections::{BTreeSet, HashMap};

use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::rows::{self, json};
use crate::domain::model::*;
use crate::error::{Error, Result};

/// Rows per INSERT: 21 bound parameters a row × 1,500 = 31,500, under SQLite's limit of 32,766 bound parameters.
const JOB_CHUNK: usize = 1_500;

/// Returns the outcome and whether some job went straight to the queue.
pub async fn submit(
    pool: &SqlitePool,
    policy: &Policy,
    batch: &SubmitBatch,
) -> Result<(SubmitOutcome, bool)> {
    let mut tx = super::dialect::begin(pool).await?;

    if let Some(key) = &batch.idempotency_key {
        // BEGIN IMMEDIATE holds the write lock, so a concurrent submit with the same key
        // waits and then finds ours.
        let row = sqlx::query("SELECT body_hash, job_ids FROM submissions WHERE key = ?1")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = row {
            let hash: String = row.try_get("body_hash")?;
            if hash != batch.body_hash {
                return Err(Error::AlreadyExists(format!(
                    "idempotency key {key:?} was already used for a different submission"
                )));
            }
            let ids: String = row.try_get("job_ids")?;
            let ids: Vec<JobId> = serde_json::from_str(&ids).map_err(|e| {
                Error::Config(format!("submission {key:?} holds job ids {ids:?}: {e}"))
            })?;
            return Ok((
                SubmitOutcome {
                    ids,
                    deduplicated: true,
                },
                false,
            ));
        }
    }

    // Existing dependencies: mark them as having dependents (so their completion looks for
    // us) and check they can still succeed. An error rolls the mark back with everything else.
    let external: BTreeSet<JobId> = batch
        .jobs
        .iter()
        .flat_map(|j| j.depends_on.iter().copied())
        .collect();
    let mut ext_state: HashMap<JobId, JobState> = HashMap::with_capacity(external.len());
    if !external.is_empty() {
        let found = sqlx::query(
            "UPDATE jobs SET has_dependents = 1
             WHERE id IN (SELECT value FROM json_each(?1)) RETURNING id, state",
        )
        .bind(json(&external))
        .fetch_all(&mut *tx)
        .await?;
        for r in found {
            ext_state.insert(r.try_get("id")?, rows::state(r.try_get("state")?)?);
        }
        for id in &external {
            match ext_state.get(id) {
                None => return Err(Error::invalid(format!("dependency {id} does not exist"))),
                Some(s @ (JobState::Failed | JobState::Cancelled)) => {
                    return Err(Error::FailedPrecondition(format!(
                        "dependency {id} is {s}; retry it before depending on it"
                    )))
                }
                Some(_) => {}
            }
        }
    }

    let n = batch.jobs.len();
    let mut has_dependents = vec![false; n];
    for job in &batch.jobs {
        for &i in &job.depends_on_batch {
            has_dependents[i as usize] = true;
        }
    }
    // Distinct sets: a dependency listed twice is one edge and one pending count.
    let deps: Vec<(BTreeSet<JobId>, BTreeSet<u32>)> = batch
        .jobs
        .iter()
        .map(|j| {
            (
                j.depends_on.iter().copied().collect(),
                j.depends_on_batch.iter().copied().collect(),
            )
        })
        .collect();

    let now = now_ms();
    let mut ids: Vec<JobId> = Vec::with_capacity(n);
    let mut queued = false;
    for (start, chunk) in batch
        .jobs
        .chunks(JOB_CHUNK)
        .enumerate()
        .map(|(c, j)| (c * JOB_CHUNK, j))
    {
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
            "INSERT INTO jobs (kind, name, experiment, payload, priority, sort_key, state, \
             cpu_slots, gpus, gpu_mem_mb, tags, max_attempts, crash_limit, timeout_s, \
             expect_oof_rows, expect_test_rows, deps_pending, has_dependents, run_after, \
             created_at, updated_at) ",
        );
        qb.push_values(chunk.iter().enumerate(), |mut b, (k, job)| {
            let i = start + k;
            let (ext, inner) = &deps[i];
            let pending = inner.len()
                + ext
                    .iter()
                    .filter(|d| ext_state[d] != JobState::Succeeded)
                    .count();
            let state = if pending == 0 {
                JobState::Queued
            } else {
                JobState::Blocked
            };
            queued |= pending == 0;
            let or = |v: u32, d: u32| i64::from(if v == 0 { d } else { v });
            b.push_bind(job.kind.clone())
                .push_bind(job.name.clone())
                .push_bind(job.experiment.clone())
                .push_bind(job.payload.clone())
                .push_bind(i64::from(job.priority))
                .push_bind(policy.sort_key(now, job.priority))
                .push_bind(i64::from(state.code()))
                .push_bind(or(job.resources.cpu_slots, 1))
                .push_bind(i64::from(job.resources.gpus))
                .push_bind(job.resources.gpu_mem_mb as i64)
                .push_bind(json(&job.resources.tags))
                .push_bind(or(job.max_attempts, policy.default_max_attempts))
                .push_bind(or(job.crash_limit, policy.default_crash_limit))
                .push_bind(i64::from(job.timeout_s))
                .push_bind(i64::from(job.expect_oof_rows))
                .push_bind(i64::from(job.expect_test_rows))
                .push_bind(pending as i64)
                .push_bind(has_dependents[i])
                .push_bind(now)
                .push_bind(now)
                .push_bind(now);
        });
        qb.push(" RETURNING id");
        // A short final chunk has a one-off text: do not let it crowd the statement cache.
        let persistent = chunk.len() == JOB_CHUNK;
        let mut chunk_ids: Vec<JobId> = qb
            .build_query_scalar()
            .persistent(persistent)
            .fetch_all(&mut *tx)
            .await?;
        // One INSERT assigns increasing ids in VALUES order; RETURNING promises no order.
        chunk_ids.sort_unstable();
        ids.extend(chunk_ids);
    }

    let edges: Vec<(JobId, JobId)> = deps
        .iter()
        .enumerate()
        .flat_map(|(i, (ext, inner))| {
            let id = ids[i];
            let ids = &ids;
            ext.iter()
                .map(move |&d| (id, d))
                .chain(inner.iter().map(move |&b| (id, ids[b as usize])))
        })
        .collect();
    if !edges.is_empty() {
        sqlx::query(
            "INSERT OR IGNORE INTO job_deps (job_id, dep_id)
             SELECT value ->> 0, value ->> 1 FROM json_each(?1)",
        )
        .bind(json(&edges))
        .execute(&mut *tx)
        .await?;
    }

    if let Some(key) = &batch.idempotency_key {
        sqlx::query(
            "INSERT INTO submissions (key, body_hash, job_ids, created_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(key)
        .bind(&batch.body_hash)
        .bind(json(&ids))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            crate::store::map_unique(e, || format!("idempotency key {key:?} was already used"))
        })?;
    }
    tx.commit().await?;
    Ok((
        SubmitOutcome {
            ids,
            deduplicated: false,
        },
        queued,
    ))
}
