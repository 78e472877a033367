//! `stackhive-trainer`: runs ONE trainer job (`cnn` or `lr-find`, a `stackhive_spec::TrainerJob`
//! file) in this process and exits, so the worker can spawn it per job and a CUDA out-of-memory
//! error, a libtorch abort or leaked GPU memory ends that job alone; cancelling is a kill.
//!
//! The contract (`stackhive_spec::process`): stdout carries one `TrainerEvent` JSON object per
//! line, flushed line by line (`start`, `progress`, `epoch`, then `done`, or an `error` last);
//! logs go to stderr. Exit status 0 means `result.json` (and for `cnn`, `model.ot`) is written;
//! `EXIT_PERMANENT` a failure the same input repeats; `EXIT_OUT_OF_MEMORY` CUDA ran out of
//! memory; 1 anything else, which another try may pass. No training logic here.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use stackhive_spec::{TrainerEvent, TrainerJob};
use stackhive_trainer::{run_job, TrainerError};

#[derive(Debug, Parser)]
#[command(
    name = "stackhive-trainer",
    about = "Run one stackhive trainer job (cnn or lr-find) in this process"
)]
struct Args {
    /// The job file, as the worker writes it (`stackhive_spec::TrainerJob` JSON).
    #[arg(long, env = "STACKHIVE_TRAINER_JOB")]
    job: PathBuf,
    /// Output folder for result.json (and model.ot).
    #[arg(long, env = "STACKHIVE_TRAINER_OUT")]
    out: PathBuf,
    /// Overrides the job's device: auto, cpu, cuda or cuda:N.
    #[arg(long, env = "STACKHIVE_TRAINER_DEVICE")]
    device: Option<String>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    die_with_parent();
    let result = read_job(&args).and_then(|job| run_job(&job, &args.out, &mut emit));
    if let Err(e) = result {
        tracing::error!(error = %e, permanent = e.is_permanent(), "job failed");
        emit(&TrainerEvent::Error {
            message: e.to_string(),
            permanent: e.is_permanent(),
        });
        std::process::exit(e.exit_code());
    }
}

/// A trainer outliving its worker (killed with SIGKILL, or crashed) would keep a GPU busy with
/// a job the coordinator has already given to someone else: ask the kernel for SIGKILL when the
/// parent goes, and exit now if it is already gone (re-parented before the request took hold).
fn die_with_parent() {
    #[cfg(target_os = "linux")]
    {
        let parent = nix::unistd::getppid();
        if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
            tracing::warn!(error = %e, "cannot ask to be killed with the worker");
        }
        if parent.as_raw() == 1 {
            tracing::warn!(
                "started without a parent process; nothing will stop this job but a kill"
            );
        } else if nix::unistd::getppid() != parent {
            std::process::exit(1);
        }
    }
}

fn read_job(args: &Args) -> Result<TrainerJob, TrainerError> {
    let text = std::fs::read_to_string(&args.job).map_err(|source| TrainerError::Io {
        path: args.job.clone(),
        source,
    })?;
    let mut job: TrainerJob = serde_json::from_str(&text).map_err(|e| TrainerError::JobFile {
        path: args.job.clone(),
        message: e.to_string(),
    })?;
    if let Some(device) = &args.device {
        job.device = device.clone();
    }
    Ok(job)
}

/// One event, one line, flushed: the worker reads progress as it happens. A closed stdout (the
/// worker gone) must not kill the job, so write errors are ignored.
fn emit(event: &TrainerEvent) {
    let line = serde_json::to_string(event).expect("events serialise");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
