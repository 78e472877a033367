//! The trivial kinds: `noop` (finishes at once; the throughput benchmark runs it) and `sleep`
//! (waits, cancellably; tests and demos use it to hold a slot).

use std::time::Duration;

use stackhive_proto::v1::LeasedJob;

use super::{parse_payload, Executor, JobCtx, JobError, JobOutput};

/// Completes at once with an empty result; the payload is ignored.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopExecutor;

#[async_trait::async_trait]
impl Executor for NoopExecutor {
    async fn run(&self, _job: &LeasedJob, _ctx: JobCtx) -> Result<JobOutput, JobError> {
        Ok(JobOutput::default())
    }
}

/// Payload `{"ms": N}`: waits N milliseconds, or until cancelled.
#[derive(Clone, Copy, Debug, Default)]
pub struct SleepExecutor;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepPayload {
    ms: u64,
}

#[async_trait::async_trait]
impl Executor for SleepExecutor {
    async fn run(&self, job: &LeasedJob, ctx: JobCtx) -> Result<JobOutput, JobError> {
        let p: SleepPayload = parse_payload("sleep", job)?;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(p.ms)) => Ok(JobOutput::default()),
            _ = ctx.cancelled() => Err(JobError::retryable("cancelled")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn job(payload: &str) -> LeasedJob {
        LeasedJob {
            id: 1,
            attempt: 1,
            kind: "sleep".into(),
            payload_json: payload.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn sleep_waits_and_stops_when_cancelled() {
        let ctx = JobCtx::new(Vec::new());
        let out = SleepExecutor.run(&job(r#"{"ms": 20}"#), ctx).await;
        assert_eq!(out, Ok(JobOutput::default()));

        let ctx = JobCtx::new(Vec::new());
        let token = ctx.cancellation_token().clone();
        let started = Instant::now();
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            token.cancel();
        });
        let out = SleepExecutor.run(&job(r#"{"ms": 60000}"#), ctx).await;
        canceller.await.expect("canceller");
        assert_eq!(out, Err(JobError::retryable("cancelled")));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn sleep_refuses_a_bad_payload_for_good() {
        let err = SleepExecutor
            .run(&job(r#"{"seconds": 3}"#), JobCtx::new(Vec::new()))
            .await
            .expect_err("bad payload");
        assert!(!err.retryable);
        assert!(
            err.message.starts_with("invalid sleep payload: "),
            "{}",
            err.message
        );
    }
}
