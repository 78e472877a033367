//! Sweeps (issue 12, item 5): `n` stack jobs, job `i` drawn from the zoo's spaces by a
//! generator seeded with (sweep seed, `i`) alone, fed to the queue `BATCH` at a time while
//! fewer than `WINDOW` of the sweep's jobs are unfinished. Every coordinator's upkeep feeds:
//! the submit of a window carries an idempotency key made of the sweep and its first index, and
//! advancing the sweep is a compare-and-set, so two coordinators never submit a window twice.
//! Nothing holds a sweep's jobs in memory, and a sweep of a million jobs costs its window.
//!
//! A sweep given a feature *definition* instead of a set waits until every job of the level-1
//! experiment it names has finished, builds the set then, and starts.
//!
//! Must not: submit past `n`, or feed a paused, cancelled or failed sweep.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stackhive_proto::v1 as pb;
use stackhive_spec::stack::{self, ModelType};

use crate::domain::model::*;
use crate::error::{Error, Result};
use crate::services::datasets::DatasetFiles;
use crate::store::Store;

/// Unfinished jobs of a sweep kept in the queue.
pub const WINDOW: u64 = 2_000;
/// Jobs per submit.
pub const BATCH: u64 = 1_000;
/// Names of a sweep's jobs start with this and the sweep id.
const PREFIX: &str = "sweep";

pub fn job_name(sweep: i64, index: u64) -> String {
    format!("{PREFIX}{sweep}-{index}")
}

fn belongs(sweep: i64, job: &Job) -> bool {
    job.spec.name.starts_with(&format!("{PREFIX}{sweep}-"))
}

/// Job `index` of the sweep: a model type and its hyperparameters, from (seed, index) alone.
pub fn job_spec(s: &SweepRecord, index: u64) -> Result<pb::JobSpec> {
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    rng.set_stream(index);
    let types: Vec<ModelType> = s
        .models
        .iter()
        .map(|m| ModelType::parse(m))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::invalid(e.to_string()))?;
    let model = types[rng.random_range(0..types.len())];
    let params = stack::sample(model, &mut rng);
    let payload = serde_json::json!({
        "features": s.features,
        "model": model.name(),
        "params": params,
        "seed": index,
    });
    Ok(pb::JobSpec {
        kind: "stack".into(),
        name: job_name(s.id, index),
        experiment: s.experiment.clone(),
        payload_json: payload.to_string(),
        priority: s.priority,
        resources: Some(pb::Resources {
            cpu_slots: s.cpu_slots.max(1),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Unfinished stack jobs of the sweep's experiment.
async fn unfinished(store: &dyn Store, s: &SweepRecord) -> Result<u64> {
    let c = store
        .count_states(&JobFilter {
            experiment: Some(s.experiment.clone()),
            kind: Some("stack".into()),
            ..Default::default()
        })
        .await?;
    Ok(c.blocked + c.queued + c.running)
}

/// One pass over the running sweeps: builds the feature sets of those that waited for their
/// level-1 jobs, and feeds each one window.
pub async fn feed(store: &Arc<dyn Store>, files: &DatasetFiles, max_batch: u32) -> Result<()> {
    for s in store.list_sweeps(Some("running")).await? {
        if let Err(e) = feed_one(store, files, max_batch, s.clone()).await {
            tracing::warn!(sweep = s.id, error = %e, "feeding a sweep failed; trying again later");
        }
    }
    Ok(())
}

async fn feed_one(
    store: &Arc<dyn Store>,
    files: &DatasetFiles,
    max_batch: u32,
    mut s: SweepRecord,
) -> Result<()> {
    let expect = s.submitted;
    if s.features.is_empty() {
        let def: pb::FeatureDefinition = definition(&s.definition)?;
        let level1 = store
            .count_states(&JobFilter {
                experiment: Some(def.experiment.clone()),
                ..Default::default()
            })
            .await?;
        if level1.blocked + level1.queued + level1.running > 0 {
            return Ok(());
        }
        match crate::services::features::build(store, files, &def, None).await {
            Ok(set) => s.features = set.id,
            Err(e) => {
                s.state = "failed".into();
                s.error = format!("cannot build the feature set: {e}");
            }
        }
        store.update_sweep(&s, expect).await?;
        return Ok(());
    }
    let open = unfinished(&**store, &s).await?;
    if s.submitted >= s.n {
        if open == 0 {
            s.state = "done".into();
            store.update_sweep(&s, expect).await?;
        }
        return Ok(());
    }
    if open >= WINDOW {
        return Ok(());
    }
    let take = BATCH
        .min(WINDOW - open)
        .min(s.n - s.submitted)
        .min(u64::from(max_batch));
    let specs = (s.submitted..s.submitted + take)
        .map(|i| job_spec(&s, i))
        .collect::<Result<Vec<_>>>()?;
    let req = pb::SubmitRequest {
        idempotency_key: format!("sweep-{}-{}-{}", s.id, s.submitted, take),
        jobs: specs,
    };
    let batch = crate::domain::validate::submit(&req, max_batch)?;
    store.submit(batch).await?;
    s.submitted += take;
    if store.update_sweep(&s, expect).await? {
        tracing::info!(sweep = s.id, submitted = s.submitted, n = s.n, "sweep fed");
    }
    Ok(())
}

fn definition(json: &str) -> Result<pb::FeatureDefinition> {
    #[derive(serde::Deserialize)]
    struct Def {
        dataset: String,
        #[serde(default)]
        scheme: String,
        #[serde(default)]
        k: u32,
        #[serde(default)]
        seed: u64,
        #[serde(default)]
        experiment: String,
        #[serde(default)]
        tabular: bool,
        #[serde(default)]
        patient: bool,
        #[serde(default)]
        restack: bool,
    }
    let d: Def = serde_json::from_str(json)
        .map_err(|e| Error::invalid(format!("feature definition is not valid: {e}")))?;
    if d.experiment.is_empty() {
        return Err(Error::invalid(
            "a sweep's feature definition must name its level-1 experiment",
        ));
    }
    Ok(pb::FeatureDefinition {
        dataset: d.dataset,
        scheme: d.scheme,
        k: d.k,
        seed: d.seed,
        experiment: d.experiment,
        tabular: d.tabular,
        patient: d.patient,
        restack: d.restack,
        ..Default::default()
    })
}

/// Checks and stores a new sweep.
pub async fn create(store: &Arc<dyn Store>, r: pb::CreateSweepRequest) -> Result<SweepRecord> {
    crate::domain::validate::check_text("experiment", &r.experiment).map_err(Error::invalid)?;
    if r.experiment.is_empty() {
        return Err(Error::invalid("a sweep needs an experiment for its jobs"));
    }
    if r.n == 0 || r.n > 100_000_000 {
        return Err(Error::invalid(format!(
            "a sweep's n must be from 1 to 100000000, found {}",
            r.n
        )));
    }
    let models: Vec<String> = if r.models.is_empty() {
        ModelType::ALL
            .iter()
            .map(|m| m.name().to_string())
            .collect()
    } else {
        for m in &r.models {
            ModelType::parse(m).map_err(|e| Error::invalid(e.to_string()))?;
        }
        r.models.clone()
    };
    if r.cpu_slots > crate::domain::validate::MAX_CPU_SLOTS {
        return Err(Error::invalid(format!(
            "cpu_slots must be at most {}, found {}",
            crate::domain::validate::MAX_CPU_SLOTS,
            r.cpu_slots
        )));
    }
    match (r.features.is_empty(), r.definition_json.is_empty()) {
        (false, true) => {
            store.get_feature_set(&r.features).await?;
        }
        (true, false) => {
            definition(&r.definition_json)?;
        }
        _ => {
            return Err(Error::invalid(
                "a sweep needs a feature set or a feature definition, exactly one",
            ))
        }
    }
    let rec = SweepRecord {
        id: 0,
        experiment: r.experiment,
        features: r.features,
        definition: r.definition_json,
        models,
        n: r.n,
        submitted: 0,
        seed: r.seed,
        cpu_slots: r.cpu_slots.max(1),
        priority: r.priority.clamp(
            *crate::domain::validate::PRIORITY_RANGE.start(),
            *crate::domain::validate::PRIORITY_RANGE.end(),
        ),
        state: "running".into(),
        error: String::new(),
        created_at: 0,
        updated_at: 0,
    };
    store.create_sweep(&rec).await
}

/// Pause, resume, cancel or extend a sweep as a unit.
pub async fn control(
    store: &Arc<dyn Store>,
    id: i64,
    action: &str,
    extend: u64,
) -> Result<SweepRecord> {
    let mut s = store.get_sweep(id).await?;
    let expect = s.submitted;
    let jobs = sweep_jobs(&**store, &s).await?;
    let ids = |states: &[JobState]| -> Vec<JobId> {
        jobs.iter()
            .filter(|j| states.contains(&j.state))
            .map(|j| j.id)
            .collect()
    };
    match action {
        "pause" => {
            require(&s, &["running"], action)?;
            store
                .cancel(&ids(&[JobState::Queued, JobState::Blocked]))
                .await?;
            s.state = "paused".into();
        }
        "resume" => {
            require(&s, &["paused"], action)?;
            let back = ids(&[JobState::Cancelled]);
            if !back.is_empty() {
                store.retry(&back).await?;
            }
            s.state = "running".into();
        }
        "cancel" => {
            let open = ids(&[JobState::Queued, JobState::Blocked, JobState::Running]);
            if !open.is_empty() {
                store.cancel(&open).await?;
            }
            s.state = "cancelled".into();
        }
        "extend" => {
            if extend == 0 {
                return Err(Error::invalid("extend needs a number of jobs to add"));
            }
            require(&s, &["running", "paused", "done"], action)?;
            s.n += extend;
            if s.state == "done" {
                s.state = "running".into();
            }
        }
        other => {
            return Err(Error::invalid(format!(
                "unknown sweep action {other:?}, expected pause, resume, cancel or extend"
            )))
        }
    }
    if !store.update_sweep(&s, expect).await? {
        return Err(Error::FailedPrecondition(format!(
            "sweep {id} changed meanwhile; try again"
        )));
    }
    store.get_sweep(id).await
}

fn require(s: &SweepRecord, states: &[&str], action: &str) -> Result<()> {
    if states.contains(&s.state.as_str()) {
        Ok(())
    } else {
        Err(Error::FailedPrecondition(format!(
            "sweep {} is {}; {action} needs it {}",
            s.id,
            s.state,
            states.join(" or ")
        )))
    }
}

/// The sweep's jobs (those of its experiment named after it).
pub async fn sweep_jobs(store: &dyn Store, s: &SweepRecord) -> Result<Vec<Job>> {
    let mut filter = JobFilter {
        experiment: Some(s.experiment.clone()),
        kind: Some("stack".into()),
        limit: 1000,
        ..Default::default()
    };
    let mut out = Vec::new();
    loop {
        let page = store.list_jobs(&filter).await?;
        let Some(last) = page.last() else { break };
        filter.after_id = Some(last.id);
        out.extend(page.into_iter().filter(|j| belongs(s.id, j)));
    }
    Ok(out)
}

pub fn to_pb(s: &SweepRecord, counts: Option<StateCounts>) -> pb::Sweep {
    let state = if s.state == "running" && s.features.is_empty() {
        "waiting"
    } else {
        s.state.as_str()
    };
    pb::Sweep {
        id: s.id,
        experiment: s.experiment.clone(),
        features: s.features.clone(),
        definition_json: s.definition.clone(),
        models: s.models.clone(),
        n: s.n,
        submitted: s.submitted,
        seed: s.seed,
        state: state.into(),
        error: s.error.clone(),
        created_at_ms: s.created_at,
        counts: counts.map(|c| pb::StateCountsLite {
            queued: c.queued + c.blocked,
            running: c.running,
            succeeded: c.succeeded,
            failed: c.failed,
            cancelled: c.cancelled,
        }),
    }
}
