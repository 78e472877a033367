//! Building feature sets (issue 12, item 3): a definition names a dataset, its folds and the
//! level-1 models; this resolves the models from the stored jobs, aligns their predictions to
//! the dataset's rows, builds the matrix (`stackhive_data::features`) and stores it under the
//! hash of the resolved definition, so the same definition is built once however often it is
//! asked for. Nothing here speaks gRPC.
//!
//! A model is one job with out-of-fold predictions for every validating row (a `stack` job, an
//! imported prediction), or the fold jobs of one `cnn` configuration: the jobs whose payloads
//! differ only in `fold` and `seed`, which together predict every validating row once.
//!
//! Must not: build a matrix from a model whose predictions miss or repeat a row (it is refused
//! with the jobs named), or from folds other than the ones the definition names.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use stackhive_data::align::{align, Part};
use stackhive_data::features::{Extras, Level1};
use stackhive_proto::v1 as pb;

use crate::domain::model::*;
use crate::error::{Error, Result};
use crate::services::datasets::DatasetFiles;
use crate::store::Store;

/// Models whose predictions are read together (a few statements each).
const MODELS_PER_READ: usize = 64;

/// What a stored set's `info` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Info {
    pub train_rows: u32,
    pub test_rows: u32,
    pub k: u32,
    pub columns: Vec<String>,
    /// Each model as the job ids it was made of.
    pub models: Vec<String>,
    /// Each model's kind: `cnn`, the model type of a `stack` job, or the job's kind.
    #[serde(default)]
    pub kinds: Vec<String>,
}

/// The definition after resolution: what the set's id is the hash of.
#[derive(Serialize)]
struct Resolved<'a> {
    dataset: &'a str,
    scheme: &'a str,
    k: u32,
    seed: u64,
    models: &'a [Vec<JobId>],
    tabular: bool,
    patient: bool,
    /// Feature sets whose columns are appended (absent when not restacking, so that the ids of
    /// sets built before restacking existed stay the same).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    restack: Vec<String>,
}

/// A definition resolved against the store: its dataset, its folds (computed and stored on
/// first use) and its models, each as the jobs it is made of.
pub struct Resolution {
    pub dataset: DatasetRecord,
    pub scheme: String,
    pub k: u32,
    pub seed: u64,
    pub folds: FoldsRecord,
    pub models: Vec<Vec<Job>>,
}

/// Resolves `def`: what `build` builds from, and what an ensemble streams from.
pub async fn resolve(
    store: &Arc<dyn Store>,
    files: &DatasetFiles,
    def: &pb::FeatureDefinition,
) -> Result<Resolution> {
    let dataset = store.get_dataset(&def.dataset).await?;
    let (scheme, k, seed) = crate::services::folds::spec(&def.scheme, def.k, def.seed)?;
    let folds = match store.get_folds(&dataset.hash, &scheme, k, seed).await? {
        Some(f) => f,
        None => {
            if !files.has(&dataset.hash) {
                return Err(Error::FailedPrecondition(format!(
                    "dataset {}'s files are not on this coordinator, so its folds cannot be computed here",
                    dataset.hash
                )));
            }
            let computed = crate::services::folds::compute(
                files.path_of(&dataset.hash),
                &dataset.hash,
                (scheme.clone(), k, seed),
            )
            .await?;
            store.put_folds(&computed).await?.0
        }
    };
    let mut models = group(candidates(store, def).await?)?;
    if def.skip_incomplete {
        models.retain(|m| complete(m, k));
    }
    if models.is_empty() && !def.tabular {
        return Err(Error::FailedPrecondition(
            "the definition names no finished model with predictions, and no tabular columns"
                .into(),
        ));
    }
    if def.sample > 0 && (def.sample as usize) < models.len() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(def.sample_seed);
        models.shuffle(&mut rng);
        models.truncate(def.sample as usize);
        models.sort_by_key(|m| m[0].id);
    }
    Ok(Resolution {
        dataset,
        scheme,
        k,
        seed,
        folds,
        models,
    })
}

/// Builds (or finds) the set of `def`, named `name` when given.
pub async fn build(
    store: &Arc<dyn Store>,
    files: &DatasetFiles,
    def: &pb::FeatureDefinition,
    name: Option<&str>,
) -> Result<FeatureSetRecord> {
    let Resolution {
        dataset,
        scheme,
        k,
        seed,
        folds,
        models,
    } = resolve(store, files, def).await?;
    let restack = if def.restack {
        crate::services::restack::bases(store, &models).await?
    } else {
        Vec::new()
    };
    let ids: Vec<Vec<JobId>> = models
        .iter()
        .map(|m| m.iter().map(|j| j.id).collect())
        .collect();
    let resolved = Resolved {
        dataset: &dataset.hash,
        scheme: &scheme,
        k,
        seed,
        models: &ids,
        tabular: def.tabular,
        patient: def.patient,
        restack: restack.clone(),
    };
    let definition = serde_json::to_string(&resolved).expect("a definition serialises");
    let id = blake3::hash(definition.as_bytes()).to_hex().to_string();
    if let Ok(found) = store.get_feature_set(&id).await {
        return match name {
            Some(n) if !found.names.iter().any(|x| x == n) => {
                Ok(store.put_feature_set(&found, &[], Some(n)).await?.0)
            }
            _ => Ok(found),
        };
    }
    if !files.has(&dataset.hash) {
        return Err(Error::FailedPrecondition(format!(
            "dataset {}'s files are not on this coordinator; build the feature set through the one that has them",
            dataset.hash
        )));
    }
    let mut bases = Vec::with_capacity(restack.len());
    for id in &restack {
        bases.push((
            crate::services::restack::prefix(id),
            crate::services::restack::matrix(store, id).await?,
        ));
    }
    let mut level1 = Vec::with_capacity(models.len());
    for batch in models.chunks(MODELS_PER_READ) {
        let ids: Vec<JobId> = batch.iter().flatten().map(|j| j.id).collect();
        let mut found: HashMap<JobId, Predictions> = store
            .get_predictions_many(&ids)
            .await?
            .into_iter()
            .collect();
        for jobs in batch {
            level1.push(predictions_of(&mut found, jobs)?);
        }
    }
    let stored = stackhive_data::folds::Folds::from_bytes(&folds.assignment).map_err(|e| {
        Error::Config(format!(
            "stored folds of {} are unreadable: {e}",
            dataset.hash
        ))
    })?;
    let (fold, fold_k) = (stored.fold, stored.k);
    let ds = files.load(&dataset.hash).await?;
    let extras = Extras {
        tabular: def.tabular,
        patient: def.patient,
    };
    let built = tokio::task::spawn_blocking(move || {
        let mut level1 = level1;
        for m in &mut level1 {
            if m.oof.len() > ds.train.len() {
                return Err(stackhive_data::error::DataError::Features(format!(
                    "level-1 model {} predicts train row {}, the dataset has {} train rows",
                    m.name,
                    m.oof.len() - 1,
                    ds.train.len()
                )));
            }
            m.oof.resize(ds.train.len(), f32::NAN);
        }
        let mut built = stackhive_data::features::isic(&ds, &fold, fold_k, &level1, extras)?;
        for (prefix, base) in &bases {
            built = stackhive_data::restack::restack(built, base, prefix)?;
        }
        Ok(built)
    })
    .await
    .map_err(|e| Error::Config(format!("feature build task failed: {e}")))?
    .map_err(|e| Error::FailedPrecondition(e.to_string()))?;
    let info = Info {
        train_rows: built.train_rows() as u32,
        test_rows: built.test_rows() as u32,
        k: u32::from(built.k),
        columns: built.columns.iter().map(|c| c.name.clone()).collect(),
        models: ids
            .iter()
            .map(|m| {
                m.iter()
                    .map(|j| j.to_string())
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect(),
        kinds: models.iter().map(|m| kind_of(&m[0])).collect(),
    };
    let bytes = built.to_bytes().map_err(|e| Error::Config(e.to_string()))?;
    let rec = FeatureSetRecord {
        id,
        names: vec![],
        definition,
        info: serde_json::to_string(&info).expect("info serialises"),
        size: bytes.len() as u64,
        blake3: blake3::hash(&bytes).to_hex().to_string(),
        created_at: now_ms(),
    };
    let (stored, _) = store.put_feature_set(&rec, &bytes, name).await?;
    tracing::info!(id = %stored.id, rows = info.train_rows, columns = info.columns.len(), "feature set built");
    Ok(stored)
}

/// The models `def` names and the dataset's train labels, for a caller that streams the
/// predictions itself (`FeatureService.ResolveModels`).
pub async fn resolved_models(
    store: &Arc<dyn Store>,
    files: &DatasetFiles,
    def: &pb::FeatureDefinition,
) -> Result<pb::ResolvedModels> {
    let r = resolve(store, files, def).await?;
    let ds = files.load(&r.dataset.hash).await?;
    let train_labels = ds.train.iter().map(|t| t.target).collect();
    Ok(pb::ResolvedModels {
        models: r
            .models
            .iter()
            .map(|m| pb::ResolvedModel {
                job_ids: m.iter().map(|j| j.id).collect(),
                name: model_name(m),
                kind: kind_of(&m[0]),
            })
            .collect(),
        train_labels,
    })
}

/// The succeeded jobs with predictions that the definition names.
async fn candidates(store: &Arc<dyn Store>, def: &pb::FeatureDefinition) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    if !def.job_ids.is_empty() {
        for &id in &def.job_ids {
            let j = store.get_job(id).await?;
            if j.state != JobState::Succeeded || j.prediction_rows_oof == 0 {
                return Err(Error::FailedPrecondition(format!(
                    "job {id} is {} with {} out-of-fold predictions; a level-1 model must have succeeded with predictions",
                    j.state, j.prediction_rows_oof
                )));
            }
            jobs.push(j);
        }
    } else {
        let experiments = std::iter::once(&def.experiment)
            .chain(&def.more_experiments)
            .filter(|e| !e.is_empty());
        for experiment in experiments {
            let mut filter = JobFilter {
                experiment: Some(experiment.clone()),
                states: vec![JobState::Succeeded],
                limit: 1000,
                ..Default::default()
            };
            loop {
                let page = store.list_jobs(&filter).await?;
                let Some(last) = page.last() else { break };
                filter.after_id = Some(last.id);
                jobs.extend(page.into_iter().filter(|j| j.prediction_rows_oof > 0));
            }
        }
    }
    Ok(jobs)
}

/// True unless `model` is a cnn configuration whose jobs do not hold every fold `0..k`.
fn complete(model: &[Job], k: u32) -> bool {
    if model[0].spec.kind != "cnn" {
        return true;
    }
    let folds: std::collections::BTreeSet<u64> = model
        .iter()
        .filter_map(|j| {
            let p: serde_json::Value = serde_json::from_str(&j.spec.payload).ok()?;
            p["fold"].as_u64()
        })
        .collect();
    folds.len() == k as usize && folds.iter().all(|&f| f < u64::from(k))
}

/// What a model is, for the report's charts by type.
fn kind_of(job: &Job) -> String {
    if job.spec.kind == "stack" {
        let payload: serde_json::Value =
            serde_json::from_str(&job.spec.payload).unwrap_or_default();
        if let Some(m) = payload["model"].as_str() {
            return m.to_string();
        }
    }
    job.spec.kind.clone()
}

/// Groups jobs into models: a `cnn` configuration's fold jobs together, any other job alone.
fn group(jobs: Vec<Job>) -> Result<Vec<Vec<Job>>> {
    let mut by_config: BTreeMap<String, Vec<Job>> = BTreeMap::new();
    for j in jobs {
        let key = if j.spec.kind == "cnn" {
            let mut payload: serde_json::Value =
                serde_json::from_str(&j.spec.payload).unwrap_or_default();
            if let Some(o) = payload.as_object_mut() {
                o.remove("fold");
                o.remove("seed");
            }
            format!("cnn:{payload}")
        } else {
            format!("job:{:020}", j.id)
        };
        by_config.entry(key).or_default().push(j);
    }
    let mut out: Vec<Vec<Job>> = by_config.into_values().collect();
    for m in &mut out {
        m.sort_by_key(|j| j.id);
    }
    out.sort_by_key(|m| m[0].id);
    Ok(out)
}

/// What a model is called in a set's columns and a report: a lone job's name (or
/// `job-<id>`), a cnn configuration's architecture and first job.
pub fn model_name(jobs: &[Job]) -> String {
    let first = &jobs[0];
    if jobs.len() == 1 {
        if first.spec.name.is_empty() {
            format!("job-{}", first.id)
        } else {
            first.spec.name.clone()
        }
    } else {
        let payload: serde_json::Value =
            serde_json::from_str(&first.spec.payload).unwrap_or_default();
        format!(
            "{}-j{}",
            payload["arch"].as_str().unwrap_or("cnn"),
            first.id
        )
    }
}

/// One model's predictions aligned to the dataset (`stackhive_data::align`).
fn predictions_of(found: &mut HashMap<JobId, Predictions>, jobs: &[Job]) -> Result<Level1> {
    let mut stored = Vec::with_capacity(jobs.len());
    for j in jobs {
        let p = found.remove(&j.id).ok_or_else(|| {
            Error::FailedPrecondition(format!("job {} has no stored predictions", j.id))
        })?;
        stored.push((j.id, p));
    }
    let parts: Vec<Part<'_>> = stored
        .iter()
        .map(|(id, p)| Part {
            job_id: *id,
            oof_rows: &p.oof_rows,
            oof: &p.oof,
            test: &p.test,
        })
        .collect();
    align(model_name(jobs), &parts).map_err(|e| Error::FailedPrecondition(e.to_string()))
}

/// The public description of a stored set.
pub fn info(rec: &FeatureSetRecord) -> pb::FeatureSetInfo {
    let i: Option<Info> = serde_json::from_str(&rec.info).ok();
    pb::FeatureSetInfo {
        id: rec.id.clone(),
        names: rec.names.clone(),
        definition_json: rec.definition.clone(),
        train_rows: i.as_ref().map_or(0, |i| i.train_rows),
        test_rows: i.as_ref().map_or(0, |i| i.test_rows),
        k: i.as_ref().map_or(0, |i| i.k),
        columns: i.as_ref().map_or_else(Vec::new, |i| i.columns.clone()),
        model_kinds: i.as_ref().map_or_else(Vec::new, |i| i.kinds.clone()),
        models: i.map_or_else(Vec::new, |i| i.models),
        size: rec.size,
        blake3: rec.blake3.clone(),
        created_at_ms: rec.created_at,
    }
}
