//! `stackhive-trainer`: runs ONE `cnn` job in this process and exits, so the worker can spawn it
//! per job and a CUDA out-of-memory error, a libtorch abort or leaked GPU memory ends that job
//! alone; cancelling is a kill. Progress goes to stdout as one JSON object per line
//! (`{"event":"epoch",…}`, then `{"event":"done",…}`); logs and errors go to stderr; the exit
//! status is 0 only when `result.json` and `model.ot` were written.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use serde_json::json;
use stackhive_trainer::{run_job, CnnJob};

#[derive(Debug, Parser)]
#[command(
    name = "stackhive-trainer",
    about = "Train one CNN fold job (stackhive's cnn job kind)"
)]
struct Args {
    /// The job, as JSON (see `stackhive_trainer::CnnJob`).
    #[arg(long, env = "STACKHIVE_TRAINER_JOB")]
    job: PathBuf,
    /// Output folder for model.ot and result.json.
    #[arg(long, env = "STACKHIVE_TRAINER_OUT")]
    out: PathBuf,
    /// Overrides the job's device: auto, cpu, cuda or cuda:N.
    #[arg(long, env = "STACKHIVE_TRAINER_DEVICE")]
    device: Option<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.job)
        .with_context(|| format!("cannot read job file {}", args.job.display()))?;
    let mut job: CnnJob = serde_json::from_str(&text)
        .with_context(|| format!("cannot parse job file {}", args.job.display()))?;
    if let Some(device) = args.device {
        job.device = device;
    }
    let mut on_epoch = |m: &stackhive_trainer::EpochMetrics| {
        println!("{}", json!({ "event": "epoch", "metrics": m }));
    };
    let result = run_job(&job, &args.out, &mut on_epoch)?;
    println!(
        "{}",
        json!({ "event": "done", "result": args.out.join(stackhive_trainer::job::RESULT), "checkpoint": result.checkpoint })
    );
    Ok(())
}
