//! The `stack` kind (issue 12): one level-2 model trained on every fold of a feature set. The
//! worker fetches the set's matrix once (`crate::features`) and hands the job to its stacker
//! process (`crate::stacker`), which links the model libraries; the worker never does. The job
//! completes with out-of-fold predictions for every row of the set (named by their rows in the
//! dataset, as level-1 jobs' are), the mean test prediction of the fold models, the CV AUC, the
//! per-fold AUCs and the time taken.

use std::sync::Arc;

use stackhive_proto::connect::AuthChannel as Channel;
use stackhive_proto::v1::{LeasedJob, Predictions};
use stackhive_spec::stacker::StackerRequest;
use stackhive_spec::StackSpec;

use super::{Executor, JobCtx, JobError, JobOutput};
use crate::features::{FeatureCache, FeatureError};
use crate::stacker::Stacker;

pub struct StackExecutor {
    features: Arc<FeatureCache>,
    stacker: Arc<Stacker>,
    channel: Channel,
}

impl StackExecutor {
    pub fn new(features: Arc<FeatureCache>, stacker: Arc<Stacker>, channel: Channel) -> Self {
        Self {
            features,
            stacker,
            channel,
        }
    }
}

#[async_trait::async_trait]
impl Executor for StackExecutor {
    async fn run(&self, job: &LeasedJob, ctx: JobCtx) -> Result<JobOutput, JobError> {
        let payload: serde_json::Value = serde_json::from_str(&job.payload_json)
            .map_err(|e| JobError::permanent(format!("stack payload is not JSON: {e}")))?;
        let spec = StackSpec::from_json(&payload)
            .and_then(|s| s.validate())
            .map_err(|e| JobError::permanent(e.to_string()))?;
        let (matrix_id, matrix) = tokio::select! {
            r = self.features.ensure(self.channel.clone(), &spec.features) => r.map_err(|e| match e {
                FeatureError::Rpc(ref s) if s.code() == tonic::Code::NotFound => JobError::permanent(format!(
                    "feature set {}: {}", spec.features, s.message()
                )),
                other => JobError::retryable(format!("feature set {}: {other}", spec.features)),
            })?,
            _ = ctx.cancelled() => return Err(JobError::retryable("cancelled")),
        };
        let threads = job.resources.as_ref().map_or(1, |r| r.cpu_slots.max(1)) as usize;
        let request = |id| StackerRequest::Run {
            id,
            matrix,
            matrix_id: matrix_id.clone(),
            job: spec.clone(),
            threads,
        };
        let r = self
            .stacker
            .run(request, ctx.cancelled())
            .await
            .map_err(|f| {
                if f.retryable {
                    JobError::retryable(f.message)
                } else {
                    JobError::permanent(f.message)
                }
            })?;
        let result = serde_json::json!({
            "model": spec.model.name(),
            "params": spec.params.0,
            "seed": spec.seed,
            "features": matrix_id,
            "cv_auc": r.cv_auc,
            "fold_aucs": r.fold_aucs,
            "seconds": r.seconds,
        });
        Ok(JobOutput {
            result_json: result.to_string(),
            predictions: Some(Predictions {
                oof_rows: r.oof_rows,
                oof: r.oof,
                test: r.test,
            }),
        })
    }
}
