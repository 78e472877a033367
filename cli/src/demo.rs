//! `stackhive demo`, the main job (issue 15): the whole mission on one machine in one command,
//! through the public gRPC API like any other client. It generates an ISIC-like dataset (whose
//! truth is known), starts an embedded coordinator (SQLite in the output folder unless `--db`
//! says otherwise; or uses a running cluster with `--cluster`) and real worker processes,
//! registers the data, computes triple-stratified folds, trains CNN folds, runs a level-2 sweep
//! over their predictions with the tabular and patient features, builds the ensembles as an
//! `ensemble` job, and writes the submission, the out-of-fold table and the HTML report, with
//! progress per stage and a closing summary of the AUCs against the oracle.
//!
//! Must not: report success when a stage lost a job (every stage's jobs must all succeed), or
//! leave its processes running (workers stop first, then the coordinator, whatever happened).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::json;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::dataset_service_client::DatasetServiceClient;
use stackhive_proto::v1::sweep_service_client::SweepServiceClient;

use crate::client::{status_error, Api};
use crate::ensemble::{Computed, ConfigFlags, SourceArgs};
use crate::level2::FoldFlags;
use crate::local::{wait_for_workers, worker_binary, Embedded};
use crate::output::{counts_line, duration, total};
use crate::procs::Workers;
use crate::watch::{follow, Show};

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Folder for the data, the submission, the out-of-fold table, the report and the logs; it
    /// must be new or empty (default: a new `stackhive-demo/run-<time>` each run).
    #[arg(long, env = "STACKHIVE_DEMO_OUT")]
    pub out: Option<PathBuf>,
    /// Training patients of the generated dataset (about 6 images each).
    #[arg(long, env = "STACKHIVE_DEMO_PATIENTS", default_value_t = 600,
          value_parser = clap::value_parser!(u32).range(40..=100_000))]
    pub patients: u32,
    /// Test patients (their labels stay in the generator's truth file).
    #[arg(long, env = "STACKHIVE_DEMO_TEST_PATIENTS", default_value_t = 150,
          value_parser = clap::value_parser!(u32).range(10..=100_000))]
    pub test_patients: u32,
    /// Side of the generated images (a multiple of 32).
    #[arg(long, env = "STACKHIVE_DEMO_IMAGE_SIZE", default_value_t = 32)]
    pub image_size: u32,
    /// CNN architecture of the level-1 folds (e.g. efficientnet-b0 at 224 on a GPU).
    #[arg(
        long,
        env = "STACKHIVE_DEMO_ARCH",
        default_value = "efficientnet-w0.25-d0.25"
    )]
    pub arch: String,
    /// CNN configurations, each trained on every fold (they differ in learning rate and seed).
    #[arg(long, env = "STACKHIVE_DEMO_CNN_CONFIGS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cnn_configs: u32,
    #[arg(long, env = "STACKHIVE_DEMO_EPOCHS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub epochs: u32,
    /// GPUs per CNN job (0: CPU).
    #[arg(long, env = "STACKHIVE_DEMO_GPUS", default_value_t = 0)]
    pub gpus: u32,
    /// Level-2 models of the sweep.
    #[arg(long, env = "STACKHIVE_DEMO_MODELS", default_value_t = 150,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub models: u64,
    /// Stream the models into the ensemble and keep at most this many (for sweeps of
    /// thousands: `--models 20000 --ensemble-max-models 1000`).
    #[arg(long, env = "STACKHIVE_DEMO_ENSEMBLE_MAX_MODELS")]
    pub ensemble_max_models: Option<usize>,
    /// Model types the sweep draws from.
    #[arg(
        long,
        env = "STACKHIVE_DEMO_TYPES",
        value_delimiter = ',',
        default_value = "lightgbm,xgboost,xgboost-rf,extra-trees,random-forest,knn,logreg,mlp"
    )]
    pub types: Vec<String>,
    /// Worker processes to start (none with --cluster: the cluster's workers run the jobs).
    #[arg(long, env = "STACKHIVE_DEMO_WORKERS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// CPU slots of each worker.
    #[arg(long, env = "STACKHIVE_DEMO_SLOTS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub slots: u32,
    /// Job store of the embedded coordinator (default: SQLite in the output folder), e.g.
    /// postgres://postgres@127.0.0.1/stackhive.
    #[arg(
        long,
        env = "STACKHIVE_DEMO_DB",
        value_name = "URL",
        conflicts_with = "cluster"
    )]
    pub db: Option<String>,
    /// Use this running cluster instead of starting one.
    #[arg(long, env = "STACKHIVE_DEMO_CLUSTER", value_name = "URL")]
    pub cluster: Option<String>,
    /// Seed of the data, the CNNs, the sweep and the ensembles.
    #[arg(long, env = "STACKHIVE_DEMO_SEED", default_value_t = 7)]
    pub seed: u64,
    /// The worker binary (default: `stackhive-worker` next to this executable).
    #[arg(long, env = "STACKHIVE_WORKER_BIN", value_name = "PATH")]
    pub worker_bin: Option<PathBuf>,
}

/// What the closing summary shows.
struct Summary {
    rows: usize,
    test_rows: usize,
    computed: Computed,
    report: PathBuf,
    submission: PathBuf,
}

pub async fn run(json: bool, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("stackhive-demo")
            .join(chrono::Local::now().format("run-%Y%m%d-%H%M%S").to_string())
    });
    if out.exists() && std::fs::read_dir(&out)?.next().is_some() {
        bail!(
            "the output folder {} is not empty; expected a new or empty folder (remove it or pass another --out)",
            out.display()
        );
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let out = out.canonicalize()?;
    let (url, mut local) = match &args.cluster {
        Some(url) => (url.clone(), None),
        None => {
            let worker_bin = worker_binary(args.worker_bin.as_deref())?;
            let db = args
                .db
                .clone()
                .unwrap_or_else(|| format!("sqlite://{}", out.join("stackhive.db").display()));
            let coordinator = Embedded::start(&db, 10_000, &out.join("coordinator")).await?;
            let logs = out.join("logs");
            std::fs::create_dir_all(&logs)?;
            let workers = Workers::new(worker_bin, logs);
            (coordinator.url.clone(), Some((coordinator, workers)))
        }
    };
    let result = mission(&url, local.as_mut().map(|l| &mut l.1), args, &out).await;
    if let Some((mut coordinator, mut workers)) = local {
        for problem in workers.stop().await {
            eprintln!("warning: {problem}");
        }
        coordinator.stop().await?;
    }
    let s = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("note: logs and data are kept in {}", out.display());
            return Err(e);
        }
    };
    print_summary(json, &s, started.elapsed());
    Ok(ExitCode::SUCCESS)
}

fn stage(n: u32, what: &str) -> Instant {
    eprintln!("\n[{n}/7] {what}");
    Instant::now()
}

async fn mission(
    url: &str,
    workers: Option<&mut Workers>,
    args: &DemoArgs,
    out: &std::path::Path,
) -> anyhow::Result<Summary> {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let (dataset, l1, l2, ens) = (
        format!("demo-{tag}"),
        format!("demo-{tag}-level1"),
        format!("demo-{tag}-level2"),
        // The name `ensemble submit` gives by default, where `report` finds its timeline.
        format!("demo-{tag}-level1-ensemble"),
    );
    let folds = FoldFlags {
        scheme: "triple-stratified".into(),
        k: 5,
        fold_seed: 42,
    };

    stage(1, "generating an ISIC-like dataset whose truth is known");
    let data = out.join("data");
    let cfg = stackhive_data::synth::SynthConfig {
        patients: args.patients as usize,
        test_patients: args.test_patients as usize,
        positive_rate: 0.08,
        image_size: args.image_size,
        seed: args.seed,
        mean_images_per_patient: 6.0,
        max_images_per_patient: 40,
        ..Default::default()
    };
    let dir = data.clone();
    let synth =
        tokio::task::spawn_blocking(move || stackhive_data::synth::generate(&cfg, &dir)).await??;
    eprintln!(
        "      {} train images of {} patients ({} positive), {} test images; oracle AUC {:.4}",
        synth.rows,
        synth.patients,
        synth.positives,
        synth.test_rows,
        synth.oracle_auc.unwrap_or(f64::NAN)
    );

    let api = Api::connect(url).await?;
    if let Some(w) = workers {
        stage(
            2,
            &format!("starting {} workers × {} slots", args.workers, args.slots),
        );
        for _ in 0..args.workers {
            w.spawn(url, args.slots)?;
        }
        wait_for_workers(&api, w, args.workers as usize).await?;
    } else {
        stage(2, &format!("using the cluster at {url}"));
    }

    stage(
        3,
        "registering the dataset and computing triple-stratified folds",
    );
    crate::dataset::add_dataset(&api, &dataset, &data, false, false).await?;
    DatasetServiceClient::new(api.channel())
        .compute_folds(pb::FoldsRequest {
            dataset: dataset.clone(),
            scheme: folds.scheme.clone(),
            k: folds.k,
            seed: folds.fold_seed,
        })
        .await
        .map_err(|s| status_error(api.url(), &s))?;

    let t = stage(4, "level 1: CNN folds");
    let mut specs = Vec::new();
    for c in 0..args.cnn_configs {
        let lr = [3e-3, 1e-3, 5e-3, 2e-3][c as usize % 4];
        for fold in 0..folds.k {
            let payload = json!({
                "dataset": dataset, "folds": {"k": folds.k, "seed": folds.fold_seed},
                "fold": fold, "arch": args.arch, "image_size": args.image_size,
                "epochs": args.epochs, "batch_size": 32,
                "optimizer": {"name": "adamw", "lr": lr},
                "augment": {"rotate": 15, "brightness": 0.1},
                "seed": args.seed + u64::from(c) * 100 + u64::from(fold),
            });
            specs.push(pb::JobSpec {
                kind: "cnn".into(),
                name: format!("cnn{c}-fold{fold}"),
                experiment: l1.clone(),
                payload_json: payload.to_string(),
                resources: Some(pb::Resources {
                    cpu_slots: 1,
                    gpus: args.gpus,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    crate::submit::submit(&api, specs, &format!("{l1}-submit")).await?;
    follow_all(&api, &l1, t).await?;

    let t = stage(
        5,
        "level 2: a sweep of stacking models over the CNNs' predictions",
    );
    let sweep = SweepServiceClient::new(api.channel())
        .create_sweep(pb::CreateSweepRequest {
            experiment: l2.clone(),
            models: args.types.clone(),
            n: args.models,
            seed: args.seed,
            features: String::new(),
            definition_json: json!({
                "dataset": dataset, "scheme": folds.scheme, "k": folds.k, "seed": folds.fold_seed,
                "experiment": l1, "tabular": true, "patient": true,
            })
            .to_string(),
            cpu_slots: 1,
            priority: 0,
        })
        .await
        .map_err(|s| status_error(api.url(), &s))?
        .into_inner();
    wait_for_sweep(&api, sweep.id).await?;
    follow_all(&api, &l2, t).await?;

    let t = stage(
        6,
        "the ensembles: every method, nested validation, patient bootstrap, shake-up",
    );
    let source = SourceArgs {
        experiments: vec![l1.clone(), l2.clone()],
        dataset: dataset.clone(),
        folds,
        truth: Some(data.clone()),
        config: ConfigFlags {
            bootstrap: 300,
            shakeup: 300,
            public_fraction: 0.3,
            correlation_cap: 0.97,
            seed: args.seed,
        },
        preselect: crate::ensemble::PreselectFlags {
            max_models: args.ensemble_max_models,
            preselect_cap: 0.995,
        },
    };
    let submit = crate::ensemble::SubmitArgs {
        source: source.clone(),
        into: Some(ens.clone()),
        cpu: args.slots,
    };
    crate::ensemble::submit_job(&api, &submit).await?;
    follow_all(&api, &ens, t).await?;

    stage(7, "the submission, the out-of-fold table and the report");
    let computed = crate::ensemble::compute(&api, &source).await?;
    let (submission, _) = crate::ensemble::write_exports(&computed, None, out)?;
    let report = out.join("report.html");
    crate::report::write_report(&api, &source, &computed, &report).await?;
    Ok(Summary {
        rows: computed.matrix.train_rows(),
        test_rows: computed.matrix.test_rows(),
        computed,
        report,
        submission,
    })
}

/// Follows `experiment` until its jobs have finished; an error unless all succeeded.
async fn follow_all(api: &Api, experiment: &str, since: Instant) -> anyhow::Result<()> {
    let request = pb::WatchRequest {
        experiment: experiment.to_string(),
        ..Default::default()
    };
    let o = follow(api, request, Show::Bar).await?;
    eprintln!(
        "      {} in {}",
        counts_line(&o.counts),
        duration(since.elapsed().as_millis() as i64)
    );
    if o.counts.succeeded != total(&o.counts) {
        bail!(
            "{experiment}: {} of {} jobs did not succeed; see `stackhive jobs --experiment {experiment}`",
            total(&o.counts) - o.counts.succeeded,
            total(&o.counts)
        );
    }
    Ok(())
}

/// Waits until the sweep has submitted all its models.
async fn wait_for_sweep(api: &Api, id: i64) -> anyhow::Result<()> {
    let mut c = SweepServiceClient::new(api.channel());
    loop {
        let s = c
            .get_sweep(pb::GetSweepRequest { id })
            .await
            .map_err(|s| status_error(api.url(), &s))?
            .into_inner();
        match s.state.as_str() {
            "done" => return Ok(()),
            "failed" | "cancelled" => bail!("sweep {id} is {}: {}", s.state, s.error),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn print_summary(json: bool, s: &Summary, wall: Duration) {
    let o = &s.computed.outcome;
    let best_of = |cnn: bool| {
        o.models
            .iter()
            .filter(|m| (m.kind == "cnn") == cnn)
            .map(|m| m.auc)
            .fold(f64::NAN, f64::max)
    };
    let method = |m: &stackhive_ensemble::Method| o.methods.iter().find(|r| &r.method == m);
    let median = method(&stackhive_ensemble::Method::Median);
    let chosen = method(&o.recommendation.method);
    let oracle = s.computed.truth.as_ref().and_then(|t| t.oracle_auc);
    if json {
        crate::output::print_json(&json!({
            "train_rows": s.rows, "test_rows": s.test_rows, "models": o.models.len(),
            "best_cnn_oof_auc": best_of(true), "best_level2_oof_auc": best_of(false),
            "median_nested_auc": median.map(|m| m.nested_auc),
            "median_test_auc": median.and_then(|m| m.test_auc),
            "recommended": o.recommendation.method.name(),
            "recommended_nested_auc": chosen.map(|m| m.nested_auc),
            "recommended_test_auc": chosen.and_then(|m| m.test_auc),
            "oracle_test_auc": oracle,
            "submission": s.submission, "report": s.report, "wall_s": wall.as_secs_f64(),
        }));
        return;
    }
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    outln!(
        "\nstackhive demo: {} train and {} test images, {} models, {} wall",
        s.rows,
        s.test_rows,
        o.models.len(),
        duration(wall.as_millis() as i64)
    );
    outln!("  {:<28} {:>10} {:>10}", "", "CV AUC", "test AUC");
    outln!(
        "  {:<28} {:>10} {:>10}",
        "best single CNN",
        f(Some(best_of(true))),
        ""
    );
    outln!(
        "  {:<28} {:>10} {:>10}",
        "best level-2 model",
        f(Some(best_of(false))),
        ""
    );
    outln!(
        "  {:<28} {:>10} {:>10}",
        "median of all models",
        f(median.map(|m| m.nested_auc)),
        f(median.and_then(|m| m.test_auc))
    );
    outln!(
        "  {:<28} {:>10} {:>10}",
        format!("recommended: {}", o.recommendation.method.name()),
        f(chosen.map(|m| m.nested_auc)),
        f(chosen.and_then(|m| m.test_auc))
    );
    outln!(
        "  {:<28} {:>10} {:>10}",
        "oracle (the ceiling)",
        "",
        f(oracle)
    );
    outln!("  {}", o.recommendation.reason);
    outln!("  submission: {}", s.submission.display());
    outln!("  report:     {}", s.report.display());
}
