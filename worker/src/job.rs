//! One attempt of one job, from executor lookup to the outcome the daemon reports: applies the
//! job's timeout, turns stop requests (cancel, lease loss, shutdown) into the right report, and
//! checks predictions against the row counts the job expects. No network here.

use std::time::Duration;

use futures::FutureExt;
use stackhive_proto::v1::LeasedJob;

use crate::executor::{ExecutorRegistry, JobCtx, JobOutput, StopCause};

/// How long an executor may take to return once told to stop before it is abandoned (dropped,
/// which kills a shell job's process group).
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);

/// What the worker tells the coordinator about an attempt.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    Succeeded(JobOutput),
    Failed {
        reason: String,
        retryable: bool,
    },
    /// Shutdown: give the job back unrun, without counting the attempt.
    HandBack,
    /// The lease is gone; the coordinator no longer wants to hear about this attempt.
    Dropped,
}

/// Runs one attempt to its end. `ctx` carries the job's stop signal; the job's own
/// `timeout_s` is enforced here, so executors need not know about it.
pub(crate) async fn execute(registry: &ExecutorRegistry, job: &LeasedJob, ctx: JobCtx) -> Outcome {
    let Some(executor) = registry.get(&job.kind) else {
        // Claims match the kinds a worker registered, so this is a mismatch between what the
        // coordinator was told and what runs here: give the job back for a worker that knows
        // its kind, rather than failing it for everyone (issue 16).
        tracing::warn!(job_id = job.id, kind = %job.kind, "leased a job kind this worker does not run; handing it back");
        return Outcome::HandBack;
    };
    let slot = ctx.slot().clone();
    let run = std::panic::AssertUnwindSafe(executor.run(job, ctx)).catch_unwind();
    tokio::pin!(run);

    let timeout = (job.timeout_s > 0).then(|| Duration::from_secs(job.timeout_s.into()));
    let finished = tokio::select! {
        biased;
        r = &mut run => Some(r),
        _ = slot.token().cancelled() => None,
        _ = sleep_or_never(timeout) => {
            slot.stop(StopCause::Timeout);
            None
        }
    };
    let finished = match finished {
        Some(r) => Some(r),
        None => tokio::time::timeout(STOP_GRACE, &mut run).await.ok(),
    };
    if finished.is_none() {
        tracing::warn!(
            job_id = job.id,
            attempt = job.attempt,
            kind = %job.kind,
            "executor ignored the stop request; abandoned it"
        );
    }

    match (slot.cause(), finished) {
        (Some(StopCause::LeaseLost), _) => Outcome::Dropped,
        // A job that finished while being stopped did finish: its result is the truth.
        (_, Some(Ok(Ok(output)))) => Outcome::Succeeded(output),
        (Some(StopCause::Cancelled), _) => Outcome::Failed {
            reason: "cancelled".into(),
            retryable: false,
        },
        (Some(StopCause::Handback), _) => Outcome::HandBack,
        (Some(StopCause::Timeout), _) => Outcome::Failed {
            reason: format!("timed out after {}s", job.timeout_s),
            retryable: true,
        },
        (None, Some(Ok(Err(e)))) => Outcome::Failed {
            reason: e.message,
            retryable: e.retryable,
        },
        (None, Some(Err(panic))) => Outcome::Failed {
            reason: format!(
                "executor for kind {} panicked: {}",
                job.kind,
                panic_message(panic.as_ref())
            ),
            retryable: false,
        },
        // Unreachable: without a stop cause the executor's result was awaited.
        (None, None) => Outcome::Failed {
            reason: "stopped".into(),
            retryable: true,
        },
    }
}

async fn sleep_or_never(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::shell::tests::{process_gone, read_pid, shell_job, wait_gone};
    use crate::executor::{Executor, JobError};
    use stackhive_proto::v1::Predictions;
    use std::sync::Arc;
    use std::time::Instant;

    fn registry() -> ExecutorRegistry {
        ExecutorRegistry::with_builtins()
    }

    fn job(kind: &str, payload: &str) -> LeasedJob {
        LeasedJob {
            id: 3,
            attempt: 1,
            kind: kind.into(),
            payload_json: payload.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn timeout_kills_a_shell_job_and_its_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let mut job = shell_job(&format!("sleep 60 & echo $! > {}; wait", pidfile.display()));
        job.timeout_s = 1;
        let started = Instant::now();
        let outcome = execute(&registry(), &job, JobCtx::new(Vec::new())).await;
        assert_eq!(
            outcome,
            Outcome::Failed {
                reason: "timed out after 1s".into(),
                retryable: true
            }
        );
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(6));
        let pid = read_pid(&pidfile).await;
        assert!(
            wait_gone(pid).await,
            "background sleep {pid} survived the timeout"
        );
    }

    #[tokio::test]
    async fn stop_reasons_decide_the_report() {
        let cases = [
            (
                StopCause::Cancelled,
                Outcome::Failed {
                    reason: "cancelled".into(),
                    retryable: false,
                },
            ),
            (StopCause::LeaseLost, Outcome::Dropped),
            (StopCause::Handback, Outcome::HandBack),
        ];
        for (cause, expected) in cases {
            let ctx = JobCtx::new(Vec::new());
            let slot = ctx.slot().clone();
            let stopper = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                slot.stop(cause);
            });
            let outcome = execute(&registry(), &job("sleep", r#"{"ms": 60000}"#), ctx).await;
            stopper.await.expect("stopper");
            assert_eq!(outcome, expected, "{cause:?}");
        }
    }

    #[tokio::test]
    async fn cancelling_a_shell_job_reports_cancelled_and_kills_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let job = shell_job(&format!("echo $$ > {}; sleep 60", pidfile.display()));
        let ctx = JobCtx::new(Vec::new());
        let slot = ctx.slot().clone();
        let run = tokio::spawn(async move { execute(&registry(), &job, ctx).await });
        let pid = read_pid(&pidfile).await;
        assert!(!process_gone(pid));
        slot.stop(StopCause::Cancelled);
        let outcome = run.await.expect("task");
        assert_eq!(
            outcome,
            Outcome::Failed {
                reason: "cancelled".into(),
                retryable: false
            }
        );
        assert!(wait_gone(pid).await);
    }

    #[tokio::test]
    async fn unknown_kinds_go_back_and_bad_predictions_and_panics_fail_for_good() {
        let outcome = execute(&registry(), &job("xgboost", ""), JobCtx::new(Vec::new())).await;
        assert_eq!(outcome, Outcome::HandBack);

        struct Predicts;
        #[async_trait::async_trait]
        impl Executor for Predicts {
            async fn run(&self, _: &LeasedJob, _: JobCtx) -> Result<JobOutput, JobError> {
                Ok(JobOutput {
                    result_json: String::new(),
                    predictions: Some(Predictions {
                        oof_rows: vec![0, 1, 2],
                        oof: vec![0.1, 0.2, 0.3],
                        test: vec![0.5],
                    }),
                })
            }
        }
        struct Panics;
        #[async_trait::async_trait]
        impl Executor for Panics {
            async fn run(&self, _: &LeasedJob, _: JobCtx) -> Result<JobOutput, JobError> {
                panic!("boom")
            }
        }
        let mut reg = registry();
        reg.register("predicts", Predicts)
            .register("panics", Panics);
        assert_eq!(
            reg.kinds(),
            ["noop", "panics", "predicts", "shell", "sleep"]
        );

        let ok = execute(&reg, &job("predicts", ""), JobCtx::new(Vec::new())).await;
        assert!(matches!(ok, Outcome::Succeeded(_)), "{ok:?}");

        let outcome = execute(&reg, &job("panics", ""), JobCtx::new(Vec::new())).await;
        assert_eq!(
            outcome,
            Outcome::Failed {
                reason: "executor for kind panics panicked: boom".into(),
                retryable: false
            }
        );
    }

    #[tokio::test]
    async fn progress_is_kept_for_the_heartbeat() {
        let ctx = JobCtx::new(vec![2]);
        let slot: Arc<_> = ctx.slot().clone();
        ctx.set_progress(r#"{"epoch": 3}"#);
        assert_eq!(slot.progress(), r#"{"epoch": 3}"#);
        assert_eq!(ctx.cuda_visible_devices(), "2");
    }
}
