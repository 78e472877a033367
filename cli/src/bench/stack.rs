//! `stackhive bench stack` (issue 12): level-2 models per hour on an ISIC-2020-sized matrix,
//! per model type and for a random sweep mixing every type, through the real
//! `stackhive-stacker` process a worker runs — side by side, in the same run, with the same
//! models and hyperparameters trained by a Python pipeline (scikit-learn, lightgbm, xgboost,
//! catboost, PyTorch, pytorch-tabnet) in a scratch environment, with each side's OOF AUC.
//!
//! Per type, both sides run one model at a time with `--threads` threads; the sweep runs
//! `--threads` models at once with one thread each on both sides (a worker's slots, a Python
//! process pool).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use stackhive_spec::stack::{sample, ModelType, StackJob, StackSpec};
use stackhive_spec::stacker::StackerRequest;
use stackhive_worker::stacker::Stacker;

use super::{stack_data, stack_python};

#[derive(Args, Debug, Clone)]
pub struct StackBenchArgs {
    /// Training patients of the generated dataset (ISIC 2020: 2,056 patients, 33,126 images).
    #[arg(long, env = "STACKHIVE_BENCH_PATIENTS", default_value_t = 2_056)]
    pub patients: usize,

    /// Test patients (ISIC 2020: 690 patients, 10,982 images).
    #[arg(long, env = "STACKHIVE_BENCH_TEST_PATIENTS", default_value_t = 690)]
    pub test_patients: usize,

    /// Model types timed one by one (default: all).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,

    /// Skip the model types one by one (only the sweep).
    #[arg(long)]
    pub sweep_only: bool,

    /// Models in the random sweep (0 skips it).
    #[arg(long, env = "STACKHIVE_BENCH_SWEEP", default_value_t = 30)]
    pub sweep: usize,

    /// Cores to use: threads per model one by one, models at once in the sweep.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,

    #[arg(long, default_value_t = 7)]
    pub seed: u64,

    /// Skip the Python side (only this side's figures).
    #[arg(long)]
    pub no_python: bool,

    /// Working folder (matrix, raw arrays, the scratch Python environment).
    #[arg(long, default_value = "target/bench-stack")]
    pub work: PathBuf,

    /// The stacker binary (default: `stackhive-stacker` next to this program).
    #[arg(long)]
    pub stacker: Option<PathBuf>,
}

#[derive(Serialize, Debug)]
struct Row {
    what: String,
    models: usize,
    rust_seconds: f64,
    rust_models_per_hour: f64,
    rust_oof_auc: f64,
    python_seconds: Option<f64>,
    python_models_per_hour: Option<f64>,
    python_oof_auc: Option<f64>,
    speedup: Option<f64>,
}

fn job(
    model: ModelType,
    params: serde_json::Map<String, serde_json::Value>,
    seed: u64,
) -> anyhow::Result<StackJob> {
    Ok(StackSpec {
        features: "bench".into(),
        model: model.name().into(),
        params,
        seed,
    }
    .validate()?)
}

/// The script's form of the jobs.
fn py_jobs(jobs: &[StackJob]) -> serde_json::Value {
    jobs.iter()
        .map(|j| serde_json::json!({"model": j.model.name(), "params": j.params.0, "seed": j.seed}))
        .collect()
}

/// Runs `jobs`, `at_once` at a time with `threads` threads each; per job: (seconds, OOF AUC).
async fn run_rust(
    stacker: &Arc<Stacker>,
    matrix: &std::path::Path,
    jobs: &[StackJob],
    at_once: usize,
    threads: usize,
) -> anyhow::Result<(Vec<(f64, f64)>, f64)> {
    let gate = Arc::new(tokio::sync::Semaphore::new(at_once));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for j in jobs {
        let (stacker, gate, j, matrix) = (
            stacker.clone(),
            gate.clone(),
            j.clone(),
            matrix.to_path_buf(),
        );
        tasks.push(tokio::spawn(async move {
            let _slot = gate.acquire_owned().await.expect("never closed");
            let t = Instant::now();
            let model = j.model;
            let r = stacker
                .run(
                    |id| StackerRequest::Run {
                        id,
                        matrix,
                        matrix_id: "bench".into(),
                        job: j,
                        threads,
                    },
                    futures::future::pending(),
                )
                .await
                .map_err(|f| anyhow::anyhow!("{model}: {}", f.message))?;
            anyhow::Ok((t.elapsed().as_secs_f64(), r.cv_auc.unwrap_or(f64::NAN)))
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    Ok((out, started.elapsed().as_secs_f64()))
}

fn stacker_binary(given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this program has no folder")?
            .join("stackhive-stacker"),
    };
    if !path.is_file() {
        bail!(
            "expected the stackhive-stacker binary at {} (build it, or pass --stacker), found nothing",
            path.display()
        );
    }
    Ok(path)
}

fn per_hour(models: usize, seconds: f64) -> f64 {
    models as f64 * 3600.0 / seconds
}

pub async fn run(json: bool, args: &StackBenchArgs) -> anyhow::Result<()> {
    let stacker = Arc::new(Stacker::new(
        stacker_binary(args.stacker.as_ref())?,
        args.threads,
        Default::default(),
    ));
    std::fs::create_dir_all(&args.work)?;
    let work = args.work.canonicalize()?;
    let types: Vec<ModelType> = if args.sweep_only {
        Vec::new()
    } else if args.models.is_empty() {
        ModelType::ALL.to_vec()
    } else {
        args.models
            .iter()
            .map(|m| ModelType::parse(m))
            .collect::<Result<_, _>>()?
    };
    let python = if args.no_python {
        None
    } else {
        Some(stack_python::environment(&work)?)
    };
    let (p, tp, seed) = (args.patients, args.test_patients, args.seed);
    let m = tokio::task::spawn_blocking(move || stack_data::build(&work, p, tp, seed)).await??;
    let work = args.work.canonicalize()?;
    let positives = m.matrix.labels.iter().filter(|&&y| y == 1).count();
    eprintln!(
        "matrix: {} train rows ({positives} positive), {} test rows, {} columns, {} folds",
        m.matrix.train_rows(),
        m.matrix.test_rows(),
        m.matrix.cols(),
        m.matrix.k
    );

    let mut rows = Vec::new();
    for &t in &types {
        let jobs = vec![job(t, Default::default(), 1)?];
        let (r, _) = run_rust(&stacker, &m.path, &jobs, 1, args.threads).await?;
        let py = match &python {
            Some(py) => Some(stack_python::run(py, &work, &py_jobs(&jobs), 1, args.threads)?.0),
            None => None,
        };
        let py = py.as_ref().and_then(|v| v.first());
        rows.push(Row {
            what: t.name().into(),
            models: 1,
            rust_seconds: r[0].0,
            rust_models_per_hour: per_hour(1, r[0].0),
            rust_oof_auc: r[0].1,
            python_seconds: py.map(|p| p.seconds),
            python_models_per_hour: py.map(|p| per_hour(1, p.seconds)),
            python_oof_auc: py.map(|p| p.oof_auc),
            speedup: py.map(|p| p.seconds / r[0].0),
        });
        print_row(json, rows.last().expect("pushed"))?;
    }
    if args.sweep > 0 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
        let jobs = (0..args.sweep)
            .map(|i| {
                let t = ModelType::ALL[rng.random_range(0..ModelType::ALL.len())];
                job(t, sample(t, &mut rng), i as u64)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (r, wall) = run_rust(&stacker, &m.path, &jobs, args.threads, 1).await?;
        let py = match &python {
            Some(py) => Some(stack_python::run(
                py,
                &work,
                &py_jobs(&jobs),
                args.threads,
                1,
            )?),
            None => None,
        };
        if !json {
            println!("sweep, model by model (OOF AUC and seconds, this side and Python):");
            for (i, j) in jobs.iter().enumerate() {
                let other = py.as_ref().map_or(String::new(), |(v, _)| {
                    format!(
                        "   python {:.4} in {:>6.1} s   (AUC diff {:+.4})",
                        v[i].oof_auc,
                        v[i].seconds,
                        r[i].1 - v[i].oof_auc,
                    )
                });
                println!(
                    "  {:>2} {:<17} {:.4} in {:>6.1} s{other}",
                    i,
                    j.model.name(),
                    r[i].1,
                    r[i].0
                );
            }
        }
        let mean = |v: &mut dyn Iterator<Item = f64>| {
            let v: Vec<f64> = v.collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        rows.push(Row {
            what: format!("sweep of {}", jobs.len()),
            models: jobs.len(),
            rust_seconds: wall,
            rust_models_per_hour: per_hour(jobs.len(), wall),
            rust_oof_auc: mean(&mut r.iter().map(|x| x.1)),
            python_seconds: py.as_ref().map(|p| p.1),
            python_models_per_hour: py.as_ref().map(|p| per_hour(jobs.len(), p.1)),
            python_oof_auc: py
                .as_ref()
                .map(|p| mean(&mut p.0.iter().map(|x| x.oof_auc))),
            speedup: py.as_ref().map(|p| p.1 / wall),
        });
        print_row(json, rows.last().expect("pushed"))?;
    }
    Ok(())
}

fn print_row(json: bool, r: &Row) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    let opt = |v: Option<f64>, w: usize, p: usize| {
        v.map_or(format!("{:>w$}", "-"), |x| format!("{x:>w$.p$}"))
    };
    println!(
        "{:<17} stackhive {:>8.0} models/h ({:>7.1} s, OOF AUC {:.4})   python {} models/h ({} s, OOF AUC {})   x{}",
        r.what,
        r.rust_models_per_hour,
        r.rust_seconds,
        r.rust_oof_auc,
        opt(r.python_models_per_hour, 7, 0),
        opt(r.python_seconds, 7, 1),
        opt(r.python_oof_auc, 6, 4),
        opt(r.speedup, 4, 2),
    );
    Ok(())
}
