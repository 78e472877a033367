//! `stackhive bench cluster`: the scheduler on one machine in one command (what `stackhive demo`
//! was before the demo ran the mission). It starts an embedded coordinator (SQLite in a
//! temporary directory unless `--db` says otherwise), real `stackhive-worker` processes, submits
//! a few thousand small jobs with dependencies and priorities as one experiment, follows them
//! with the `watch` code, prints a summary and stops everything in order: workers first
//! (SIGTERM, so they hand back and deregister), then the coordinator. It exercises only the
//! public gRPC API, like any other client.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;
use stackhive_proto::v1::{JobSpec, WatchRequest};

use super::ClusterArgs;
use crate::client::Api;
use crate::local::{wait_for_workers, worker_binary, Embedded};
use crate::output::{counts_json, counts_line, duration, finished, total};
use crate::procs::Workers;
use crate::submit::submit;
use crate::watch::{follow, Outcome, Show};

/// Work jobs per group; each group ends in a report job that depends on all of them.
const GROUP: usize = 100;

pub async fn run(json: bool, args: &ClusterArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    // Checked before anything starts: the most likely first-run mistake.
    let worker_bin = worker_binary(args.worker_bin.as_deref())?;
    let dir = tempfile::Builder::new()
        .prefix("stackhive-cluster-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("demo.db").display()));
    let mut coordinator = Embedded::start(&db, args.jobs, &dir.path().join("coordinator")).await?;
    let mut workers = Workers::new(worker_bin, dir.path().to_path_buf());

    let outcome = exercise(&coordinator.url, &mut workers, args, json).await;
    let worker_problems = workers.stop().await;
    let coordinator_result = coordinator.stop().await;

    let failed = outcome.as_ref().map_or(true, |r| {
        r.outcome.counts.succeeded != total(&r.outcome.counts)
    }) || !worker_problems.is_empty()
        || coordinator_result.is_err();
    let logs = if failed {
        let kept = dir.keep();
        format!("worker logs are kept in {}", kept.display())
    } else {
        String::new()
    };
    for problem in &worker_problems {
        eprintln!("warning: {problem}");
    }
    let report = match (outcome, coordinator_result) {
        (Ok(report), Ok(())) => report,
        // A coordinator that died explains the failed calls that followed: it goes first.
        (_, Err(e)) | (Err(e), Ok(())) => {
            eprintln!("note: {logs}");
            return Err(e);
        }
    };
    let wall = started.elapsed();
    let c = &report.outcome.counts;
    let rate = finished(c) as f64 / report.outcome.elapsed.as_secs_f64().max(1e-3);
    if json {
        crate::output::print_json(&json!({
            "experiment": report.experiment, "db": args.db,
            "jobs": args.jobs, "workers": args.workers, "slots": args.slots,
            "counts": counts_json(c),
            "submit_s": report.submit.as_secs_f64(),
            "run_s": report.outcome.elapsed.as_secs_f64(),
            "wall_s": wall.as_secs_f64(),
            "jobs_per_s": rate,
            "ok": !failed,
        }));
    } else {
        outln!(
            "cluster bench {}: {} jobs on {} workers × {} slots: submitted in {}, ran in {} \
             ({rate:.0} jobs/s), {} wall",
            report.experiment,
            total(c),
            args.workers,
            args.slots,
            duration(report.submit.as_millis() as i64),
            duration(report.outcome.elapsed.as_millis() as i64),
            duration(wall.as_millis() as i64),
        );
        outln!("{}", counts_line(c));
        if failed {
            outln!("{logs}");
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

struct Report {
    experiment: String,
    submit: Duration,
    outcome: Outcome,
}

/// Starts the workers, submits and follows the batch. Stops for nothing but the end of the
/// batch, a worker that died, or Ctrl-C; the caller cleans up in every case.
async fn exercise(
    url: &str,
    workers: &mut Workers,
    args: &ClusterArgs,
    json: bool,
) -> anyhow::Result<Report> {
    let api = Api::connect(url).await?;
    for _ in 0..args.workers {
        workers.spawn(url, args.slots)?;
    }
    let ready = wait_for_workers(&api, workers, args.workers as usize);
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        r = ready => r?,
    }

    let experiment = format!("demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let batch = demo_batch(args.jobs as usize, &experiment, 0x5eed);
    let submit_start = Instant::now();
    submit(&api, batch, &uuid::Uuid::new_v4().to_string()).await?;
    let submit = submit_start.elapsed();

    let request = WatchRequest {
        experiment: experiment.clone(),
        ..Default::default()
    };
    let show = if json { Show::Quiet } else { Show::Bar };
    let outcome = tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        dead = workers.first_exit() => return Err(dead),
        outcome = follow(&api, request, show) => outcome?,
    };
    Ok(Report {
        experiment,
        submit,
        outcome,
    })
}

/// The demo's experiment: groups of mostly noop and 1–20 ms sleep jobs with a few shell jobs
/// at three priorities, each group closed by a report that depends on all of it, and one final
/// summary job that depends on every report. Deterministic for a given seed.
pub fn demo_batch(jobs: usize, experiment: &str, seed: u64) -> Vec<JobSpec> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut specs = Vec::with_capacity(jobs);
    let mut reports = Vec::new();
    let base = |kind: &str, name: String, payload: serde_json::Value, priority: i32| JobSpec {
        kind: kind.into(),
        name,
        experiment: experiment.into(),
        payload_json: payload.to_string(),
        priority,
        ..JobSpec::default()
    };
    let body = jobs.saturating_sub(1);
    while specs.len() < body {
        let group_start = specs.len();
        let group_len = GROUP.min(body - group_start);
        for i in group_start..group_start + group_len - 1 {
            let priority = [0, 0, 5, 10][rng.random_range(0..4)];
            let roll = rng.random_range(0..100);
            specs.push(if roll < 3 {
                base(
                    "shell",
                    format!("shell-{i}"),
                    json!({ "command": format!("echo demo job {i}") }),
                    priority,
                )
            } else if roll < 45 {
                let ms = rng.random_range(1..=20);
                base("sleep", format!("sleep-{i}"), json!({ "ms": ms }), priority)
            } else {
                base("noop", format!("noop-{i}"), json!({}), priority)
            });
        }
        let mut report = base("noop", format!("report-{}", reports.len()), json!({}), 20);
        report.depends_on_batch =
            (group_start as u32..(group_start + group_len - 1) as u32).collect();
        reports.push(specs.len() as u32);
        specs.push(report);
    }
    if jobs > 0 {
        let mut summary = base(
            "shell",
            "summary".into(),
            json!({ "command": "echo demo finished" }),
            30,
        );
        summary.depends_on_batch = reports;
        specs.push(summary);
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_batch_has_the_requested_size_and_a_sound_dependency_graph() {
        for n in [2, 3, 101, 102, 3000] {
            let specs = demo_batch(n, "demo-x", 1);
            assert_eq!(specs.len(), n);
            for (i, s) in specs.iter().enumerate() {
                assert_eq!(s.experiment, "demo-x");
                // Dependencies point backwards, so the graph has no cycle.
                assert!(
                    s.depends_on_batch.iter().all(|&d| (d as usize) < i),
                    "job {i}"
                );
            }
            let last = specs.last().unwrap();
            assert_eq!(last.name, "summary");
            let reports = specs
                .iter()
                .filter(|s| s.name.starts_with("report-"))
                .count();
            assert_eq!(last.depends_on_batch.len(), reports);
        }
        let specs = demo_batch(3000, "demo-x", 1);
        let count = |kind: &str| specs.iter().filter(|s| s.kind == kind).count();
        assert!(count("noop") > 1000 && count("sleep") > 1000 && count("shell") > 10);
        assert_eq!(specs[99].name, "report-0");
        assert_eq!(specs[99].depends_on_batch, (0..99).collect::<Vec<u32>>());
        let priorities: std::collections::BTreeSet<i32> =
            specs.iter().map(|s| s.priority).collect();
        assert!(priorities.len() >= 4);
        assert_eq!(
            demo_batch(3000, "demo-x", 1),
            specs,
            "deterministic for a seed"
        );
    }
}
