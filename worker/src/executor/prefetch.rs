//! `dataset-prefetch`: makes a dataset present and verified on this worker ahead of the jobs
//! that need it (payload `{"dataset": "<hash or name>"}`): read in place from a shared folder
//! when the content is there, otherwise fetched from the coordinator and cached.

use std::sync::Arc;

use stackhive_proto::connect::AuthChannel as Channel;
use stackhive_proto::v1::LeasedJob;

use super::{parse_payload, Executor, JobCtx, JobError, JobOutput};
use crate::datasets::{DatasetCache, DatasetError, Source};

pub struct PrefetchExecutor {
    cache: Arc<DatasetCache>,
    channel: Channel,
}

impl PrefetchExecutor {
    pub fn new(cache: Arc<DatasetCache>, channel: Channel) -> Self {
        Self { cache, channel }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    dataset: String,
}

#[async_trait::async_trait]
impl Executor for PrefetchExecutor {
    async fn run(&self, job: &LeasedJob, ctx: JobCtx) -> Result<JobOutput, JobError> {
        let p: Payload = parse_payload("dataset-prefetch", job)?;
        let ensured = tokio::select! {
            r = self.cache.ensure(self.channel.clone(), &p.dataset) => r,
            _ = ctx.cancelled() => return Err(JobError::retryable("cancelled")),
        };
        let (path, source) = ensured.map_err(|e| match e {
            // A missing dataset will not appear by retrying; a broken transfer may.
            DatasetError::Rpc(ref s) if s.code() == tonic::Code::NotFound => {
                JobError::permanent(e.to_string())
            }
            other => JobError::retryable(other.to_string()),
        })?;
        let (how, bytes) = match source {
            Source::Shared => ("shared", 0),
            Source::Cached => ("cached", 0),
            Source::Fetched { bytes } => ("fetched", bytes),
        };
        let result = serde_json::json!({ "path": path, "source": how, "bytes": bytes });
        Ok(JobOutput {
            result_json: result.to_string(),
            ..Default::default()
        })
    }
}
