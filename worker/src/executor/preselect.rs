//! The streamed side of the `ensemble` kind (issue 15): tens of thousands of models never sit in
//! memory together. The coordinator names the models (`FeatureService.ResolveModels`); a first
//! pass streams their predictions (`JobService.StreamPredictions`) a window at a time and keeps
//! only each model's out-of-fold AUC; a second pass streams them again in descending AUC into
//! a `Preselector` (the correlation cap), stopping once it is full; the coordinator then
//! builds the feature set of the models kept, which the ensemble runs over like any other.
//! Shared with the CLI (`ensemble recommend --max-models`), which does the same on its side.
//!
//! Must not: hold more than one window of predictions and the kept models' out-of-fold
//! vectors at once, or compare models over different rows.

use std::collections::HashMap;

use stackhive_data::align::{align, Part};
use stackhive_ensemble::{Model, ModelSource, Preselect, Preselector};
use stackhive_proto::connect::AuthChannel as Channel;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::feature_service_client::FeatureServiceClient;
use stackhive_proto::v1::job_service_client::JobServiceClient;

use super::JobError;

/// Models whose predictions one request streams (a window: ~0.3 MB per ISIC-sized model).
const WINDOW: usize = 128;

/// What the preselection did, for the job's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Preselected {
    /// The feature set of the kept models.
    pub features: String,
    pub models: usize,
    pub kept: usize,
    pub max_models: usize,
    pub cap: f64,
    /// Models streamed in the second pass before the preselector was full.
    pub examined: usize,
}

/// The feature definition of `source`, for the coordinator.
pub fn definition(source: &ModelSource) -> pb::FeatureDefinition {
    let mut experiments = source.experiments.iter().cloned();
    pb::FeatureDefinition {
        dataset: source.dataset.clone(),
        scheme: source.scheme.clone(),
        k: source.k,
        seed: source.seed,
        experiment: experiments.next().unwrap_or_default(),
        more_experiments: experiments.collect(),
        job_ids: source.job_ids.clone(),
        skip_incomplete: source.skip_incomplete,
        ..Default::default()
    }
}

/// One model as the coordinator resolved it.
struct Named {
    jobs: Vec<i64>,
    name: String,
    kind: String,
}

/// Streams the predictions of `models` (one window) and aligns each: `f(index in window,
/// aligned out-of-fold vector)` in window order.
async fn stream_window(
    channel: &Channel,
    models: &[&Named],
    mut f: impl FnMut(usize, Vec<f32>) -> Result<(), JobError>,
) -> Result<(), JobError> {
    let job_ids: Vec<i64> = models.iter().flat_map(|m| m.jobs.iter().copied()).collect();
    let mut stream = JobServiceClient::new(channel.clone())
        .stream_predictions(pb::StreamPredictionsRequest {
            job_ids,
            experiment: String::new(),
        })
        .await
        .map_err(|s| JobError::from_status("streaming predictions", &s))?
        .into_inner();
    let mut found: HashMap<i64, pb::Predictions> = HashMap::new();
    while let Some(msg) = stream
        .message()
        .await
        .map_err(|s| JobError::from_status("streaming predictions", &s))?
    {
        found.insert(msg.job_id, msg.predictions.unwrap_or_default());
    }
    for (i, m) in models.iter().enumerate() {
        let mut parts = Vec::with_capacity(m.jobs.len());
        for id in &m.jobs {
            let p = found.get(id).ok_or_else(|| {
                JobError::permanent(format!("job {id} of model {} sent no predictions", m.name))
            })?;
            parts.push(Part {
                job_id: *id,
                oof_rows: &p.oof_rows,
                oof: &p.oof,
                test: &[],
            });
        }
        let aligned =
            align(m.name.clone(), &parts).map_err(|e| JobError::permanent(e.to_string()))?;
        for id in &m.jobs {
            found.remove(id);
        }
        f(i, aligned.oof)?;
    }
    Ok(())
}

/// The rows every model must predict (those the first one does), and a model's values there.
struct Rows {
    first: String,
    rows: Vec<usize>,
    labels: Vec<u8>,
}

impl Rows {
    fn of(first: &str, oof: &[f32], train_labels: &[u8]) -> Self {
        let rows: Vec<usize> = (0..oof.len().min(train_labels.len()))
            .filter(|&r| oof[r].is_finite())
            .collect();
        let labels = rows.iter().map(|&r| train_labels[r]).collect();
        Rows {
            first: first.to_string(),
            rows,
            labels,
        }
    }

    fn pick(&self, name: &str, oof: &[f32]) -> Result<Vec<f32>, JobError> {
        let differ = |what: String| {
            Err(JobError::permanent(format!(
                "model {name} {what}; models of one ensemble must predict the same train rows \
                 out of fold"
            )))
        };
        if let Some(r) = self
            .rows
            .iter()
            .find(|&&r| oof.get(r).is_none_or(|v| !v.is_finite()))
        {
            return differ(format!(
                "has no out-of-fold prediction for train row {r}, which model {} predicts",
                self.first
            ));
        }
        let predicted = oof.iter().filter(|v| v.is_finite()).count();
        if predicted != self.rows.len() {
            return differ(format!(
                "predicts {predicted} train rows, model {} predicts {}",
                self.first,
                self.rows.len()
            ));
        }
        Ok(self.rows.iter().map(|&r| oof[r]).collect())
    }
}

/// Chooses at most `preselect.max_models` of the models `source` names and builds their
/// feature set. The correlation checks run on `threads` threads.
pub async fn preselected_set(
    channel: Channel,
    source: &ModelSource,
    preselect: &Preselect,
    threads: usize,
) -> Result<Preselected, JobError> {
    let pool = std::sync::Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| JobError::retryable(format!("cannot start threads: {e}")))?,
    );
    let def = definition(source);
    let resolved = FeatureServiceClient::new(channel.clone())
        .resolve_models(pb::ResolveModelsRequest {
            definition: Some(def.clone()),
        })
        .await
        .map_err(|s| JobError::from_status("resolving the models", &s))?
        .into_inner();
    let models: Vec<Named> = resolved
        .models
        .into_iter()
        .map(|m| Named {
            jobs: m.job_ids,
            name: m.name,
            kind: m.kind,
        })
        .collect();
    if models.is_empty() {
        return Err(JobError::permanent(
            "the ensemble's source names no finished model with predictions",
        ));
    }

    // Pass 1: every model's out-of-fold AUC, on the rows the first model predicts.
    let mut rows: Option<Rows> = None;
    let mut aucs: Vec<(f64, usize)> = Vec::with_capacity(models.len());
    for (w, window) in models.chunks(WINDOW).enumerate() {
        let refs: Vec<&Named> = window.iter().collect();
        stream_window(&channel, &refs, |i, oof| {
            let rows =
                rows.get_or_insert_with(|| Rows::of(&window[i].name, &oof, &resolved.train_labels));
            let picked = rows.pick(&window[i].name, &oof)?;
            let auc = stackhive_data::auc::roc_auc(&rows.labels, &picked).ok_or_else(|| {
                JobError::permanent(format!(
                    "model {}: its rows hold a single class, so no AUC can rank it",
                    window[i].name
                ))
            })?;
            aucs.push((auc, w * WINDOW + i));
            Ok(())
        })
        .await?;
    }
    let rows = rows.expect("at least one model");
    // Best first; ties by the coordinator's order, so a rerun keeps the same models.
    aucs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));

    // Pass 2: in that order into the preselector, until it is full.
    let max = preselect.max_models;
    let mut pre = Preselector::new(&rows.labels, preselect.cap, max);
    let mut kept_jobs: Vec<i64> = Vec::new();
    let mut examined = 0;
    for window in aucs.chunks(WINDOW) {
        if pre.kept() >= max {
            break;
        }
        let refs: Vec<&Named> = window.iter().map(|&(_, m)| &models[m]).collect();
        let mut batch: Vec<(Model, f64, Vec<i64>)> = Vec::with_capacity(window.len());
        stream_window(&channel, &refs, |i, oof| {
            let m = refs[i];
            let model = Model {
                id: m.jobs[0],
                name: m.name.clone(),
                kind: m.kind.clone(),
                oof: rows.pick(&m.name, &oof)?,
                test: Vec::new(),
            };
            batch.push((model, window[i].0, m.jobs.clone()));
            Ok(())
        })
        .await?;
        // The correlation checks are the CPU work: off the async threads.
        let pool = pool.clone();
        let (p, newly, n) = tokio::task::spawn_blocking(move || {
            let (mut newly, mut n) = (Vec::new(), 0);
            for (model, auc, jobs) in batch {
                if pre.kept() >= max {
                    break;
                }
                n += 1;
                if pool
                    .install(|| pre.push(model, auc))
                    .map_err(|e| JobError::permanent(e.to_string()))?
                {
                    newly.extend(jobs);
                }
            }
            Ok::<_, JobError>((pre, newly, n))
        })
        .await
        .map_err(|e| JobError::permanent(format!("the preselection panicked: {e}")))??;
        pre = p;
        kept_jobs.extend(newly);
        examined += n;
    }
    let kept = pre.kept();
    drop(pre);

    let set = FeatureServiceClient::new(channel)
        .build_feature_set(pb::BuildFeatureSetRequest {
            definition: Some(pb::FeatureDefinition {
                experiment: String::new(),
                more_experiments: Vec::new(),
                job_ids: kept_jobs,
                skip_incomplete: false,
                ..def
            }),
            name: String::new(),
        })
        .await
        .map_err(|s| JobError::from_status("building the set of the kept models", &s))?
        .into_inner();
    Ok(Preselected {
        features: set.id,
        models: models.len(),
        kept,
        max_models: preselect.max_models,
        cap: preselect.cap,
        examined,
    })
}
