//! The `ensemble` kind (issue 15): the meta-ensemble over every model of a feature set built
//! from models alone (`stackhive_ensemble`), run inside the worker (it is plain Rust, no model
//! library). The job completes with the recommended ensemble's nested out-of-fold predictions
//! and its test predictions through the same Complete path as any model, and with a result
//! document holding every method's scores, intervals, the shake-up and the recommendation
//! (`stackhive_ensemble::summary`), which `stackhive report` and `ensemble recommend` read.
//!
//! Its models are a feature set's columns, or every finished model of some experiments,
//! streamed and narrowed down first (`preselect`), however many there are.
//!
//! Must not: hold the whole outcome in the result document (the vectors go in predictions).

use std::sync::Arc;

use stackhive_data::matrix::FeatureMatrix;
use stackhive_ensemble::{EnsembleSpec, Source};
use stackhive_proto::connect::AuthChannel as Channel;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::feature_service_client::FeatureServiceClient;
use stackhive_proto::v1::{LeasedJob, Predictions};

use super::preselect::preselected_set;
use super::{Executor, JobCtx, JobError, JobOutput};
use crate::features::{FeatureCache, FeatureError};

pub struct EnsembleExecutor {
    features: Arc<FeatureCache>,
    channel: Channel,
}

impl EnsembleExecutor {
    pub fn new(features: Arc<FeatureCache>, channel: Channel) -> Self {
        Self { features, channel }
    }
}

/// Loads set `key` and what the coordinator knows of its models: the matrix, and each
/// column's model as (first job id, kind). Shared with the CLI's `export` and `report`.
pub async fn load_set(
    cache: &FeatureCache,
    channel: Channel,
    key: &str,
) -> Result<(pb::FeatureSetInfo, FeatureMatrix, Vec<i64>, Vec<String>), JobError> {
    let (_, path) = cache
        .ensure(channel.clone(), key)
        .await
        .map_err(|e| match e {
            FeatureError::Rpc(ref s) if s.code() == tonic::Code::NotFound => {
                JobError::permanent(format!("feature set {key}: {}", s.message()))
            }
            other => JobError::retryable(format!("feature set {key}: {other}")),
        })?;
    let info = FeatureServiceClient::new(channel)
        .get_feature_set(pb::GetFeatureSetRequest {
            feature_set: key.to_string(),
        })
        .await
        .map_err(|s| JobError::retryable(format!("feature set {key}: {}", s.message())))?
        .into_inner();
    let matrix = tokio::task::spawn_blocking(move || {
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        FeatureMatrix::from_bytes(&bytes).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| JobError::retryable(format!("reading the feature set failed: {e}")))?
    .map_err(JobError::retryable)?;
    let ids = info
        .models
        .iter()
        .map(|m| {
            m.split('+')
                .next()
                .and_then(|j| j.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    let mut kinds = info.model_kinds.clone();
    kinds.resize(info.models.len(), "model".into());
    Ok((info, matrix, ids, kinds))
}

#[async_trait::async_trait]
impl Executor for EnsembleExecutor {
    async fn run(&self, job: &LeasedJob, ctx: JobCtx) -> Result<JobOutput, JobError> {
        let payload: serde_json::Value = serde_json::from_str(&job.payload_json)
            .map_err(|e| JobError::permanent(format!("ensemble payload is not JSON: {e}")))?;
        let spec =
            EnsembleSpec::from_json(&payload).map_err(|e| JobError::permanent(e.to_string()))?;
        let threads = job.resources.as_ref().map_or(1, |r| r.cpu_slots.max(1)) as usize;
        let (set, preselected) = match &spec.source {
            Source::Set(set) => (set.clone(), None),
            Source::Stream { models, preselect } => {
                let chosen = preselected_set(self.channel.clone(), models, preselect, threads);
                let p = tokio::select! {
                    r = chosen => r?,
                    _ = ctx.cancelled() => return Err(JobError::retryable("cancelled")),
                };
                (p.features.clone(), Some(p))
            }
        };
        let (info, matrix, ids, kinds) = tokio::select! {
            r = load_set(&self.features, self.channel.clone(), &set) => r?,
            _ = ctx.cancelled() => return Err(JobError::retryable("cancelled")),
        };
        let config = spec.config.clone();
        let work = tokio::task::spawn_blocking(move || {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(|e| JobError::retryable(format!("cannot start threads: {e}")))?;
            pool.install(|| {
                let models = stackhive_ensemble::input::models(&matrix, &ids, &kinds)
                    .map_err(|e| JobError::permanent(e.to_string()))?;
                let problem = stackhive_ensemble::input::problem(&matrix, None);
                let outcome = stackhive_ensemble::run(&problem, &models, &config)
                    .map_err(|e| JobError::permanent(e.to_string()))?;
                let result = stackhive_ensemble::summary(&outcome);
                Ok::<_, JobError>((outcome, result, matrix.source_rows))
            })
        });
        let (outcome, mut result, rows) = tokio::select! {
            r = work => r.map_err(|e| JobError::permanent(format!("ensemble panicked: {e}")))??,
            _ = ctx.cancelled() => return Err(JobError::retryable("cancelled")),
        };
        result["features"] = serde_json::Value::String(info.id.clone());
        if let Some(p) = preselected {
            result["preselect"] = serde_json::to_value(p).expect("preselection serialises");
        }
        let chosen = outcome
            .methods
            .iter()
            .find(|m| m.method == outcome.recommendation.method)
            .ok_or_else(|| JobError::permanent("the recommended method has no result"))?;
        Ok(JobOutput {
            result_json: result.to_string(),
            predictions: Some(Predictions {
                oof_rows: rows,
                oof: chosen.oof.clone(),
                test: chosen.test.clone(),
            }),
        })
    }
}
