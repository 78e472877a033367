//! Read-only commands: `stackhive jobs`, `stackhive job ID`, `stackhive workers`. They ask the
//! coordinator and print; nothing here changes a job.

use serde_json::{json, Value};
use stackhive_proto::v1::{
    GetJobRequest, Job, JobState, ListJobsRequest, ListWorkersRequest, Predictions,
};

use crate::args::{JobArgs, JobsArgs, WorkersArgs};
use crate::client::Api;
use crate::output::{
    counts_json, counts_line, duration, job_json, jobs_table, now_ms, print_json, state_name,
    worker_json, workers_table,
};

pub async fn jobs(coordinator: &str, json: bool, args: &JobsArgs) -> anyhow::Result<()> {
    let api = Api::connect(coordinator).await?;
    let mut request = ListJobsRequest {
        states: args
            .states
            .iter()
            .map(|&s| JobState::from(s) as i32)
            .collect(),
        kind: args.kind.clone().unwrap_or_default(),
        experiment: args.experiment.clone().unwrap_or_default(),
        page_size: args.limit,
        page_token: String::new(),
    };
    let mut jobs = Vec::new();
    let (counts, more) = loop {
        let page = api.list_jobs(request.clone()).await?;
        jobs.extend(page.jobs);
        if !args.all || page.next_page_token.is_empty() {
            break (page.counts.unwrap_or_default(), page.next_page_token);
        }
        request.page_token = page.next_page_token;
    };
    if json {
        print_json(&json!({
            "jobs": jobs.iter().map(job_json).collect::<Vec<_>>(),
            "counts": counts_json(&counts),
            "next_page_token": more,
        }));
        return Ok(());
    }
    if jobs.is_empty() {
        outln!("no jobs");
    } else {
        out!("{}", jobs_table(&jobs));
    }
    if !more.is_empty() {
        outln!("(first {} shown; --all lists every page)", jobs.len());
    }
    outln!("{}", counts_line(&counts));
    Ok(())
}

pub async fn job(coordinator: &str, json: bool, args: &JobArgs) -> anyhow::Result<()> {
    let api = Api::connect(coordinator).await?;
    let response = api
        .get_job(GetJobRequest {
            id: args.id,
            include_predictions: args.predictions,
        })
        .await?;
    let job = response
        .job
        .ok_or_else(|| anyhow::anyhow!("the coordinator answered without job {}", args.id))?;
    let predictions = response.predictions.filter(|_| args.predictions);
    if json {
        let mut value = job_json(&job);
        if let Some(p) = &predictions {
            value["predictions"] = predictions_json(p);
        }
        print_json(&value);
    } else {
        out!("{}", job_details(&job, predictions.as_ref(), now_ms()));
    }
    Ok(())
}

pub async fn workers(coordinator: &str, json: bool, args: &WorkersArgs) -> anyhow::Result<()> {
    let api = Api::connect(coordinator).await?;
    let response = api
        .list_workers(ListWorkersRequest {
            include_dead: args.all,
        })
        .await?;
    if json {
        print_json(&Value::Array(
            response.workers.iter().map(worker_json).collect(),
        ));
    } else if response.workers.is_empty() {
        outln!(
            "no workers{}",
            if args.all {
                ""
            } else {
                " alive (--all shows dead ones too)"
            }
        );
    } else {
        out!("{}", workers_table(&response.workers));
    }
    Ok(())
}

/// Every field of a job, one per line, with JSON fields pretty-printed.
pub fn job_details(job: &Job, predictions: Option<&Predictions>, now: i64) -> String {
    let spec = job.spec.clone().unwrap_or_default();
    let r = spec.resources.clone().unwrap_or_default();
    let mut lines: Vec<(&str, String)> = vec![
        ("id", job.id.to_string()),
        ("state", state_name(job.state()).to_string()),
        ("kind", spec.kind.clone()),
        ("name", or_dash(&spec.name)),
        ("experiment", or_dash(&spec.experiment)),
        ("priority", spec.priority.to_string()),
        (
            "resources",
            format!(
                "cpu_slots {} · gpus {} · gpu_mem_mb {} · tags {}",
                r.cpu_slots,
                r.gpus,
                r.gpu_mem_mb,
                if r.tags.is_empty() {
                    "-".into()
                } else {
                    r.tags.join(",")
                }
            ),
        ),
        (
            "limits",
            format!(
                "max_attempts {} · crash_limit {} · timeout_s {}",
                spec.max_attempts, spec.crash_limit, spec.timeout_s
            ),
        ),
        (
            "attempts",
            format!(
                "attempt {} · failures {} · crashes {}",
                job.attempt, job.failures, job.crashes
            ),
        ),
    ];
    if !spec.depends_on.is_empty() {
        let ids: Vec<String> = spec.depends_on.iter().map(i64::to_string).collect();
        lines.push(("depends on", ids.join(", ")));
    }
    if !job.worker_id.is_empty() {
        lines.push(("worker", job.worker_id.clone()));
    }
    if job.cancel_requested {
        lines.push(("cancel", "requested".into()));
    }
    for (label, ms) in [
        ("created", job.created_at_ms),
        ("started", job.started_at_ms),
        ("finished", job.finished_at_ms),
    ] {
        if ms > 0 {
            lines.push((label, timestamp(ms, now)));
        }
    }
    if job.state() == JobState::Running && job.lease_expires_at_ms > 0 {
        lines.push(("lease until", timestamp(job.lease_expires_at_ms, now)));
    }
    // Only a retry's backoff makes this worth showing; otherwise it is just the submit time.
    if job.run_after_ms > now && !job.state().is_finished() {
        lines.push(("run after", timestamp(job.run_after_ms, now)));
    }
    if job.started_at_ms > 0 && job.finished_at_ms > 0 {
        lines.push(("duration", duration(job.finished_at_ms - job.started_at_ms)));
    }
    if job.prediction_rows_oof > 0 || job.prediction_rows_test > 0 {
        lines.push((
            "prediction rows",
            format!(
                "oof {} · test {}",
                job.prediction_rows_oof, job.prediction_rows_test
            ),
        ));
    }
    for (label, text) in [
        ("payload", &spec.payload_json),
        ("progress", &job.progress_json),
        ("result", &job.result_json),
    ] {
        if !text.is_empty() {
            lines.push((label, pretty_json(text)));
        }
    }
    if !job.error.is_empty() {
        lines.push(("error", job.error.clone()));
    }
    if let Some(p) = predictions {
        lines.push(("predictions oof", stats_line(&summarize(&p.oof))));
        lines.push(("predictions test", stats_line(&summarize(&p.test))));
    }
    // A fixed label column, so the details of any two jobs line up the same way.
    const WIDTH: usize = 16;
    let indent = format!("\n{}", " ".repeat(WIDTH + 1));
    let mut out = String::new();
    for (label, value) in lines {
        // Multi-line values (pretty JSON, errors with output) stay aligned under their label.
        out.push_str(&format!(
            "{label:<WIDTH$} {}\n",
            value.replace('\n', &indent)
        ));
    }
    out
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.to_string()
    }
}

fn timestamp(ms: i64, now: i64) -> String {
    let when = chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| ms.to_string());
    if ms <= now {
        format!("{when} ({} ago)", duration(now - ms))
    } else {
        format!("{when} (in {})", duration(ms - now))
    }
}

fn pretty_json(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_string())
}

/// Count and range of a prediction vector; NaNs are counted apart since they poison a mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub count: usize,
    pub nan: usize,
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

pub fn summarize(values: &[f32]) -> Stats {
    let finite: Vec<f64> = values
        .iter()
        .filter(|v| !v.is_nan())
        .map(|&v| v as f64)
        .collect();
    let (min, max) = finite
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let mean = if finite.is_empty() {
        f64::NAN
    } else {
        finite.iter().sum::<f64>() / finite.len() as f64
    };
    Stats {
        count: values.len(),
        nan: values.len() - finite.len(),
        min,
        mean,
        max,
    }
}

fn stats_line(s: &Stats) -> String {
    if s.count == s.nan {
        return format!("{} values", s.count);
    }
    let nan = if s.nan > 0 {
        format!(" ({} NaN)", s.nan)
    } else {
        String::new()
    };
    format!(
        "{} values{nan} · min {:.4} · mean {:.4} · max {:.4}",
        s.count, s.min, s.mean, s.max
    )
}

fn predictions_json(p: &Predictions) -> Value {
    let stats = |v: &[f32]| {
        let s = summarize(v);
        let num = |x: f64| if x.is_finite() { json!(x) } else { Value::Null };
        json!({ "count": s.count, "nan": s.nan, "min": num(s.min), "mean": num(s.mean), "max": num(s.max) })
    };
    json!({ "oof": stats(&p.oof), "test": stats(&p.test), "oof_rows": p.oof_rows.len() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stackhive_proto::v1::JobSpec;

    #[test]
    fn predictions_are_summarised_without_nan_poisoning() {
        let s = summarize(&[0.25, f32::NAN, 0.75, 0.5]);
        assert_eq!((s.count, s.nan), (4, 1));
        assert_eq!((s.min, s.mean, s.max), (0.25, 0.5, 0.75));
        assert_eq!(
            stats_line(&s),
            "4 values (1 NaN) · min 0.2500 · mean 0.5000 · max 0.7500"
        );
        assert_eq!(stats_line(&summarize(&[])), "0 values");
    }

    #[test]
    fn details_show_errors_and_pretty_results() {
        let job = Job {
            id: 3,
            state: JobState::Succeeded as i32,
            result_json: r#"{"auc":0.9}"#.into(),
            created_at_ms: 1_000,
            started_at_ms: 2_000,
            finished_at_ms: 4_500,
            spec: Some(JobSpec {
                kind: "noop".into(),
                depends_on: vec![1, 2],
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = job_details(&job, None, 10_000);
        assert!(text.contains("state            succeeded\n"), "{text}");
        assert!(text.contains("depends on       1, 2\n"), "{text}");
        assert!(text.contains("duration         2.5s\n"), "{text}");
        assert!(
            text.contains(
                "result           {\n                   \"auc\": 0.9\n                 }\n"
            ),
            "{text}"
        );
    }
}
