//! Atomic batch submission with idempotency keys and dependency wiring, in one transaction of
//! a handful of array-parameter statements whatever the batch size.

use std::collections::HashMap;

use sqlx::{PgPool, Row};

use super::WORK_CHANNEL;
use crate::domain::model::*;
use crate::error::{Error, Result};
use crate::store::codes::*;
use crate::store::sort_key_sql;

/// Separator for tags packed into one text per job (UNNEST flattens 2-D arrays).
const TAG_SEP: char = '\u{1f}';

/// Stores the batch; also says whether any job of it is claimable now.
pub async fn submit(
    pool: &PgPool,
    policy: &Policy,
    batch: &SubmitBatch,
) -> Result<(SubmitOutcome, bool)> {
    let mut tx = pool.begin().await?;

    if let Some(key) = &batch.idempotency_key {
        // Claim the key first: a concurrent submit with the same key waits here until we commit.
        let claimed = sqlx::query(
            "INSERT INTO submissions (key, body_hash, job_ids, created_at) \
             VALUES ($1, $2, '{}', sh_now_ms()) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(&batch.body_hash)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            let row = sqlx::query("SELECT body_hash, job_ids FROM submissions WHERE key = $1")
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
            let hash: String = row.try_get("body_hash")?;
            if hash != batch.body_hash {
                return Err(Error::AlreadyExists(format!(
                    "idempotency key {key:?} was already used for a different submission"
                )));
            }
            let out = SubmitOutcome {
                ids: row.try_get("job_ids")?,
                deduplicated: true,
            };
            return Ok((out, false));
        }
    }

    // Existing dependencies: lock them (the UPDATE takes the row lock) so one that is finishing
    // right now either sees our job_deps rows or is seen by us as finished, never neither.
    let mut external: Vec<JobId> = batch
        .jobs
        .iter()
        .flat_map(|j| j.depends_on.iter().copied())
        .collect();
    external.sort_unstable();
    external.dedup();
    let mut ext_state: HashMap<JobId, JobState> = HashMap::new();
    if !external.is_empty() {
        let rows = sqlx::query(
            "UPDATE jobs SET has_dependents = true WHERE id = ANY($1) RETURNING id, state",
        )
        .bind(&external)
        .fetch_all(&mut *tx)
        .await?;
        for r in rows {
            ext_state.insert(r.try_get("id")?, super::rows::state(r.try_get("state")?)?);
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

    let mut c = Columns::with_capacity(n);
    let mut queued = 0;
    for (i, job) in batch.jobs.iter().enumerate() {
        let mut pending = job.depends_on_batch.len() as i32;
        for d in &job.depends_on {
            if ext_state.get(d) != Some(&JobState::Succeeded) {
                pending += 1;
            }
        }
        queued += (pending == 0) as usize;
        c.push(job, policy, pending, has_dependents[i]);
    }

    // Ids come from the identity default in row order: the rows are returned in the order they
    // were inserted, which is the order of the arrays. The check below proves it for this call
    // (one session's identity values only grow), so batch indices map to ids safely.
    let ids: Vec<JobId> = sqlx::query_scalar(&format!(
        "INSERT INTO jobs (kind, name, experiment, payload, priority, sort_key, state,
            cpu_slots, gpus, gpu_mem_mb, tags, max_attempts, crash_limit, timeout_s,
            expect_oof_rows, expect_test_rows, deps_pending, has_dependents,
            created_at, updated_at)
        SELECT kind, name, experiment, payload, priority,
            {},
            CASE WHEN pending = 0 THEN {QUEUED} ELSE {BLOCKED} END,
            cpu_slots, gpus, gpu_mem_mb,
            CASE WHEN tags = '' THEN '{{}}'::TEXT[] ELSE string_to_array(tags, $18) END,
            max_attempts, crash_limit, timeout_s, oof, test, pending, has_deps,
            sh_now_ms(), sh_now_ms()
        FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::INT[],
            $6::INT[], $7::INT[], $8::BIGINT[], $9::TEXT[], $10::INT[], $11::INT[],
            $12::INT[], $13::INT[], $14::INT[], $15::INT[], $16::BOOLEAN[])
            AS t(kind, name, experiment, payload, priority, cpu_slots, gpus, gpu_mem_mb,
                 tags, max_attempts, crash_limit, timeout_s, oof, test, pending, has_deps)
        RETURNING id",
        sort_key_sql("sh_now_ms()", "priority", "$17")
    ))
    .bind(&c.kind)
    .bind(&c.name)
    .bind(&c.experiment)
    .bind(&c.payload)
    .bind(&c.priority)
    .bind(&c.cpu_slots)
    .bind(&c.gpus)
    .bind(&c.gpu_mem_mb)
    .bind(&c.tags)
    .bind(&c.max_attempts)
    .bind(&c.crash_limit)
    .bind(&c.timeout_s)
    .bind(&c.oof)
    .bind(&c.test)
    .bind(&c.pending)
    .bind(&c.has_deps)
    .bind(policy.aging_ms_per_priority)
    .bind(TAG_SEP.to_string())
    .fetch_all(&mut *tx)
    .await?;
    if ids.len() != n || ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::Config(format!(
            "inserted {} jobs but the database returned {} ids out of insertion order",
            n,
            ids.len()
        )));
    }

    let (mut dep_job, mut dep_on) = (Vec::new(), Vec::new());
    for (i, job) in batch.jobs.iter().enumerate() {
        for &d in &job.depends_on {
            dep_job.push(ids[i]);
            dep_on.push(d);
        }
        for &b in &job.depends_on_batch {
            dep_job.push(ids[i]);
            dep_on.push(ids[b as usize]);
        }
    }
    sqlx::query(
        "INSERT INTO experiment_jobs (experiment, job_id)
         SELECT e, id FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS t(e, id) WHERE e <> ''",
    )
    .bind(&c.experiment)
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    if !dep_job.is_empty() {
        sqlx::query(
            "INSERT INTO job_deps (job_id, dep_id) SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&dep_job)
        .bind(&dep_on)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(key) = &batch.idempotency_key {
        sqlx::query("UPDATE submissions SET job_ids = $2 WHERE key = $1")
            .bind(key)
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
    }
    if queued > 0 {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(WORK_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let out = SubmitOutcome {
        ids,
        deduplicated: false,
    };
    Ok((out, queued > 0))
}

/// Column-major copy of a batch for UNNEST.
#[derive(Default)]
struct Columns {
    kind: Vec<String>,
    name: Vec<String>,
    experiment: Vec<String>,
    payload: Vec<String>,
    priority: Vec<i32>,
    cpu_slots: Vec<i32>,
    gpus: Vec<i32>,
    gpu_mem_mb: Vec<i64>,
    tags: Vec<String>,
    max_attempts: Vec<i32>,
    crash_limit: Vec<i32>,
    timeout_s: Vec<i32>,
    oof: Vec<i32>,
    test: Vec<i32>,
    pending: Vec<i32>,
    has_deps: Vec<bool>,
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        let mut c = Self::default();
        c.kind.reserve(n);
        c
    }

    fn push(&mut self, j: &NewJob, p: &Policy, pending: i32, has_deps: bool) {
        let or = |v: u32, d: u32| if v == 0 { d } else { v } as i32;
        self.kind.push(j.kind.clone());
        self.name.push(j.name.clone());
        self.experiment.push(j.experiment.clone());
        self.payload.push(j.payload.clone());
        self.priority.push(j.priority);
        self.cpu_slots.push(or(j.resources.cpu_slots, 1));
        self.gpus.push(j.resources.gpus as i32);
        self.gpu_mem_mb.push(j.resources.gpu_mem_mb as i64);
        self.tags.push(j.resources.tags.join(&TAG_SEP.to_string()));
        self.max_attempts
            .push(or(j.max_attempts, p.default_max_attempts));
        self.crash_limit
            .push(or(j.crash_limit, p.default_crash_limit));
        self.timeout_s.push(j.timeout_s as i32);
        self.oof.push(j.expect_oof_rows as i32);
        self.test.push(j.expect_test_rows as i32);
        self.pending.push(pending);
        self.has_deps.push(has_deps);
    }
}
