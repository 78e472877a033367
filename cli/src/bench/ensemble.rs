//! `stackhive bench ensemble` (issue 15): the meta-ensemble over tens of thousands of models.
//! A generated ISIC-sized dataset is registered with an embedded coordinator on a fresh
//! database, `--models` models of known quality are imported (every fourth an exact copy of
//! the one before, as sweeps produce), and `stackhive ensemble recommend` runs as a child
//! process twice: streamed (`--max-models`: two passes over every model's predictions, the
//! set built of those kept) over all of them, and the whole set read at once over as many as
//! that path can hold (`--direct-models`). Each run's wall time and peak resident memory
//! (the child's, from `wait4`) are printed side by side.
//!
//! Must not: count the coordinator's memory as the ensemble's (it runs in this process).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use stackhive_data::synth::noisy::{noisy_model, read_latent};
use stackhive_data::synth::SynthConfig;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::job_service_client::JobServiceClient;

use super::db::BenchDb;
use super::Backend;
use crate::client::Api;
use crate::local::Embedded;
use crate::output::Table;

const DATASET: &str = "bench-ensemble";
const EXPERIMENT: &str = "many";

#[derive(Args, Debug, Clone)]
pub struct EnsembleBenchArgs {
    /// Models imported and streamed.
    #[arg(long, env = "STACKHIVE_BENCH_MODELS", default_value_t = 20_000)]
    pub models: usize,
    /// Models the streamed ensemble keeps.
    #[arg(long, default_value_t = 500)]
    pub keep: usize,
    /// Models the read-everything-at-once run combines (0: skip it).
    #[arg(long, default_value_t = 2_000)]
    pub direct_models: usize,
    /// Patients of the generated dataset (ISIC 2020: 2,056, about 16 images each).
    #[arg(long, default_value_t = 2_056)]
    pub patients: usize,
    #[arg(long, value_enum, default_value = "postgres")]
    pub db: Backend,
    #[arg(
        long,
        env = "STACKHIVE_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub pg_url: String,
}

#[derive(Serialize, Debug)]
struct Run {
    path: &'static str,
    models_in: usize,
    models_kept: usize,
    seconds: f64,
    peak_rss_mb: f64,
}

#[derive(Serialize, Debug)]
struct Figures {
    train_rows: usize,
    test_rows: usize,
    models: usize,
    import_seconds: f64,
    runs: Vec<Run>,
}

pub async fn run(json: bool, args: &EnsembleBenchArgs) -> anyhow::Result<()> {
    if args.keep < 2 || args.keep > args.models {
        bail!(
            "--keep must be 2 to --models ({}), found {}",
            args.models,
            args.keep
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("stackhive-bench-ensemble-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let data = dir.path().join("isic");
    let cfg = SynthConfig {
        patients: args.patients,
        test_patients: args.patients / 4,
        image_size: 16,
        seed: 11,
        ..Default::default()
    };
    eprintln!("generating {} patients' images", cfg.patients);
    {
        let (cfg, data) = (cfg.clone(), data.clone());
        tokio::task::spawn_blocking(move || stackhive_data::synth::generate(&cfg, &data)).await??;
    }
    let db = BenchDb::create(args.db, &args.pg_url).await?;
    let mut coordinator = Embedded::start(&db.url, 1000, &dir.path().join("coordinator")).await?;
    let result = measure(json, args, &coordinator.url, &data).await;
    coordinator.stop().await?;
    result
}

async fn measure(
    json: bool,
    args: &EnsembleBenchArgs,
    url: &str,
    data: &Path,
) -> anyhow::Result<()> {
    let api = Api::connect(url).await?;
    crate::dataset::add_dataset(&api, DATASET, data, false, false).await?;
    let ds = Arc::new(stackhive_data::isic::Dataset::load(data)?);
    let latent = Arc::new(read_latent(data)?);
    let (train_rows, test_rows) = (
        ds.train.iter().filter(|r| !r.is_external()).count(),
        ds.test.len(),
    );
    eprintln!(
        "importing {} models of {train_rows} out-of-fold and {test_rows} test rows",
        args.models
    );
    let started = Instant::now();
    import(&api, &ds, &latent, args.models).await?;
    let import_seconds = started.elapsed().as_secs_f64();

    let mut runs = Vec::new();
    let streamed = recommend(url, data, &["--max-models", &args.keep.to_string()])?;
    runs.push(Run {
        path: "streamed",
        models_in: args.models,
        ..streamed
    });
    let direct_n = args.direct_models.min(args.models);
    if direct_n > 0 {
        // The same models, another experiment: a set of the first `direct_n` jobs.
        let mut jobs = JobServiceClient::new(api.channel()).max_encoding_message_size(64 << 20);
        for i in 0..direct_n {
            let m = model(&ds, &latent, i);
            jobs.import_predictions(request(m, "direct", i))
                .await
                .map_err(|s| crate::client::status_error(url, &s))?;
        }
        let direct = recommend_experiment(url, data, "direct", &[])?;
        runs.push(Run {
            path: "all at once",
            models_in: direct_n,
            ..direct
        });
    }
    let figures = Figures {
        train_rows,
        test_rows,
        models: args.models,
        import_seconds,
        runs,
    };
    if json {
        crate::output::print_json(&serde_json::to_value(&figures)?);
        return Ok(());
    }
    outln!(
        "{} models of {} out-of-fold and {} test rows, imported in {:.0} s ({:.0} models/s)",
        figures.models,
        train_rows,
        test_rows,
        import_seconds,
        figures.models as f64 / import_seconds
    );
    let mut t = Table::new(&["path", "models in", "kept", "seconds", "peak RSS MB"]);
    for r in &figures.runs {
        t.push(vec![
            r.path.into(),
            r.models_in.to_string(),
            r.models_kept.to_string(),
            format!("{:.1}", r.seconds),
            format!("{:.0}", r.peak_rss_mb),
        ]);
    }
    out!("{}", t.render());
    Ok(())
}

/// Model `i`: noise from 0.6 to 3 logit units; every fourth repeats the one before exactly.
fn model(
    ds: &stackhive_data::isic::Dataset,
    latent: &std::collections::HashMap<String, f64>,
    i: usize,
) -> stackhive_data::synth::noisy::NoisyModel {
    let base = if i % 4 == 3 { i - 1 } else { i };
    let sd = 0.6 + 2.4 * ((base as u64 * 2_654_435_761) % 1000) as f64 / 1000.0;
    noisy_model(ds, latent, sd, base as u64)
}

fn request(
    m: stackhive_data::synth::noisy::NoisyModel,
    experiment: &str,
    i: usize,
) -> pb::ImportPredictionsRequest {
    pb::ImportPredictionsRequest {
        experiment: experiment.into(),
        name: format!("m{i}"),
        dataset: DATASET.into(),
        oof_names: m.oof_names,
        oof: m.oof,
        test_names: m.test_names,
        test: m.test,
    }
}

/// Imports `n` models into the experiment, four requests in flight.
async fn import(
    api: &Api,
    ds: &Arc<stackhive_data::isic::Dataset>,
    latent: &Arc<std::collections::HashMap<String, f64>>,
    n: usize,
) -> anyhow::Result<()> {
    const TASKS: usize = 4;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (ds, latent) = (ds.clone(), latent.clone());
        let mut jobs = JobServiceClient::new(api.channel()).max_encoding_message_size(64 << 20);
        let url = api.url().to_string();
        tasks.push(tokio::spawn(async move {
            for i in (t..n).step_by(TASKS) {
                let m = model(&ds, &latent, i);
                jobs.import_predictions(request(m, EXPERIMENT, i))
                    .await
                    .map_err(|s| crate::client::status_error(&url, &s))?;
                if t == 0 && i % 2000 == 0 && i > 0 {
                    eprintln!("  {i} imported");
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

fn recommend(url: &str, data: &Path, extra: &[&str]) -> anyhow::Result<Run> {
    recommend_experiment(url, data, EXPERIMENT, extra)
}

/// Runs `stackhive --json ensemble recommend` on `experiment` as a child process: its wall time,
/// peak RSS and how many models it combined.
fn recommend_experiment(
    url: &str,
    data: &Path,
    experiment: &str,
    extra: &[&str],
) -> anyhow::Result<Run> {
    let exe = std::env::current_exe().context("cannot find the stackhive binary")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "--coordinator",
        url,
        "--json",
        "ensemble",
        "recommend",
        experiment,
    ])
    .args(["--dataset", DATASET, "--truth"])
    .arg(data)
    .args(["--bootstrap", "100", "--shakeup", "100"])
    .args(extra);
    eprintln!(
        "running ensemble recommend {experiment} {}",
        extra.join(" ")
    );
    let started = Instant::now();
    let (out, peak_kb) = crate::procs::output_with_peak_rss(&mut cmd)?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "ensemble recommend {experiment} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .context("ensemble recommend printed no JSON summary")?;
    Ok(Run {
        path: "",
        models_in: 0,
        models_kept: summary["models_total"].as_u64().unwrap_or(0) as usize,
        seconds,
        peak_rss_mb: peak_kb as f64 / 1024.0,
    })
}
