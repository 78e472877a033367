//! The command-line surface of `stackhive`: clap derive structs only, no behaviour. Every flag
//! also reads a `STACKHIVE_*` environment variable. Flags that would be dangerous to pick up
//! silently from the environment of another command (cancelling a whole experiment) get a name
//! of their own rather than sharing one.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use stackhive_coordinator::CoordinatorConfig;
use stackhive_proto::v1::JobState;

use crate::spec::limits;

/// Submit, watch and query stackhive jobs; serve a coordinator; run the demo.
#[derive(Parser, Debug)]
#[command(name = "stackhive", version, about, propagate_version = true)]
pub struct Cli {
    /// The coordinator's gRPC address; several of one cluster, comma-separated, are tried in
    /// order and used one at a time.
    #[arg(
        long,
        global = true,
        env = "STACKHIVE_COORDINATOR",
        default_value = "http://127.0.0.1:50051",
        value_name = "URL"
    )]
    pub coordinator: String,

    /// Print JSON instead of human-readable tables.
    #[arg(long, global = true, env = "STACKHIVE_JSON")]
    pub json: bool,

    /// Credentials and TLS for the coordinator.
    #[command(flatten)]
    pub client: stackhive_proto::connect::ClientOptions,

    /// Span export (OTLP) for this command, or for the coordinator it starts.
    #[command(flatten)]
    pub telemetry: stackhive_proto::telemetry::TelemetryOptions,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve a coordinator until SIGTERM or SIGINT.
    Coordinator(CoordinatorArgs),
    /// Submit jobs from flags or from a TOML file.
    Submit(Box<SubmitArgs>),
    /// List jobs with their states.
    Jobs(JobsArgs),
    /// Show one job in detail.
    Job(JobArgs),
    /// Follow the progress of an experiment or of some jobs until they finish.
    Watch(WatchArgs),
    /// Cancel jobs: queued ones at once, running ones are stopped by their worker.
    Cancel(CancelArgs),
    /// Put failed or cancelled jobs back in the queue.
    Retry(RetryArgs),
    /// List the workers known to the coordinator.
    Workers(WorkersArgs),
    /// The whole mission on this machine: data, CNN folds, a level-2 sweep, the ensembles, the
    /// submission and the report.
    Demo(crate::demo::DemoArgs),
    /// Benchmarks that print figures (queue throughput and latency).
    Bench(crate::bench::BenchArgs),
    /// Generate, validate, register and cache datasets.
    Dataset(crate::dataset::DatasetArgs),
    /// Report and compute fold assignments.
    Folds(crate::dataset::FoldsArgs),
    /// List and download the files jobs left behind (a cnn fold's checkpoint).
    Artifact(crate::artifact::ArtifactArgs),
    /// Create, list and revoke access tokens (admin).
    Token(crate::token::TokenArgs),
    /// Build, list and show level-2 feature sets.
    Features(crate::level2::FeaturesArgs),
    /// Import predictions made elsewhere as a level-1 model.
    Predictions(crate::level2::PredictionsArgs),
    /// Create, inspect and control sweeps of level-2 models (`sweep EXPERIMENT --n N …`).
    Sweep(crate::level2::SweepArgs),
    /// An experiment's level-2 models ranked by CV AUC.
    Leaderboard(crate::level2::LeaderboardArgs),
    /// The level-2 model zoo and each type's hyperparameter space.
    Models,
    /// The meta-ensemble: `recommend` (which combination to trust) and `submit` (as a job).
    Ensemble(crate::ensemble::EnsembleArgs),
    /// Write the submission CSV and the out-of-fold table of the finished models' ensemble.
    Export(crate::ensemble::ExportArgs),
    /// Write the HTML report of an experiment: models, ensembles, intervals, shake-up, timeline.
    Report(crate::report::ReportArgs),
    /// TLS helpers: `tls init` makes a private CA, a coordinator and a worker certificate.
    #[command(subcommand)]
    Tls(TlsCommand),
}

#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// Write a private CA, a coordinator certificate and a worker client certificate.
    Init(crate::tls::TlsArgs),
}

#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub config: CoordinatorConfig,
}

/// Flags of `stackhive submit`. Job-shaping flags conflict with `--file`, which carries its own.
#[derive(Args, Debug, Default, Clone)]
pub struct SubmitArgs {
    /// Read jobs from a TOML file with `[[job]]` tables instead of flags.
    #[arg(long, env = "STACKHIVE_SUBMIT_FILE", value_name = "PATH",
          conflicts_with_all = ["kind", "name", "payload", "command", "ms", "priority",
                                "cpu_slots", "gpus", "gpu_mem_mb", "tags", "max_attempts",
                                "crash_limit", "timeout_s", "depends_on", "count"])]
    pub file: Option<PathBuf>,

    /// Job kind: noop, sleep, shell, dataset-prefetch, cnn, lr-find, stack (the coordinator validates it).
    #[arg(long, env = "STACKHIVE_SUBMIT_KIND")]
    pub kind: Option<String>,

    /// Job name.
    #[arg(long, env = "STACKHIVE_SUBMIT_NAME")]
    pub name: Option<String>,

    /// Experiment label (with --file: the default for jobs that name none).
    #[arg(long, env = "STACKHIVE_EXPERIMENT")]
    pub experiment: Option<String>,

    /// Kind-specific parameters as a JSON object, e.g. '{"ms": 250}'.
    #[arg(long, env = "STACKHIVE_SUBMIT_PAYLOAD", value_name = "JSON",
          conflicts_with_all = ["command", "ms"])]
    pub payload: Option<String>,

    /// Shorthand for a shell job: --kind shell --payload '{"command": "…"}'.
    #[arg(long, env = "STACKHIVE_SUBMIT_COMMAND", conflicts_with = "ms")]
    pub command: Option<String>,

    /// Shorthand for a sleep job: --kind sleep --payload '{"ms": N}'.
    #[arg(
        long,
        env = "STACKHIVE_SUBMIT_MS",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub ms: Option<u64>,

    /// Higher runs first.
    #[arg(long, env = "STACKHIVE_SUBMIT_PRIORITY", allow_negative_numbers = true)]
    pub priority: Option<i32>,

    /// CPU slots the job occupies on its worker.
    #[arg(long, env = "STACKHIVE_SUBMIT_CPU_SLOTS", value_name = "N", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(0..=limits::CPU_SLOTS as i64))]
    pub cpu_slots: Option<u32>,

    /// GPUs the job needs.
    #[arg(long, env = "STACKHIVE_SUBMIT_GPUS", value_name = "N", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(0..=limits::GPUS as i64))]
    pub gpus: Option<u32>,

    /// Memory each GPU must have, in MiB.
    #[arg(long, env = "STACKHIVE_SUBMIT_GPU_MEM_MB", value_name = "MB", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64).range(0..=limits::GPU_MEM_MB as u64))]
    pub gpu_mem_mb: Option<u64>,

    /// A tag the worker must have (repeatable; the variable takes a comma-separated list).
    #[arg(
        long = "tag",
        value_name = "TAG",
        env = "STACKHIVE_SUBMIT_TAGS",
        value_delimiter = ','
    )]
    pub tags: Vec<String>,

    /// Attempts allowed for retryable failures (0 = server default).
    #[arg(long, env = "STACKHIVE_SUBMIT_MAX_ATTEMPTS", value_name = "N", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(0..=limits::ATTEMPTS as i64))]
    pub max_attempts: Option<u32>,

    /// Worker losses tolerated while running (0 = server default).
    #[arg(long, env = "STACKHIVE_SUBMIT_CRASH_LIMIT", value_name = "N", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(0..=limits::ATTEMPTS as i64))]
    pub crash_limit: Option<u32>,

    /// Wall-clock limit of one attempt in seconds (0 = none).
    #[arg(
        long,
        env = "STACKHIVE_SUBMIT_TIMEOUT_S",
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    pub timeout_s: Option<u32>,

    /// An existing job this one waits for (repeatable; the variable takes a comma-separated list).
    #[arg(long, env = "STACKHIVE_SUBMIT_DEPENDS_ON", value_name = "ID", value_delimiter = ',',
          allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub depends_on: Vec<i64>,

    /// Submit this many copies.
    #[arg(long, env = "STACKHIVE_SUBMIT_COUNT", value_name = "N", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=limits::COUNT as i64))]
    pub count: Option<u32>,

    /// Makes a re-sent submission a no-op (default: a fresh UUID per invocation).
    #[arg(long, env = "STACKHIVE_IDEMPOTENCY_KEY", value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

/// A job state as typed on the command line.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateArg {
    Blocked,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl From<StateArg> for JobState {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Blocked => JobState::Blocked,
            StateArg::Queued => JobState::Queued,
            StateArg::Running => JobState::Running,
            StateArg::Succeeded => JobState::Succeeded,
            StateArg::Failed => JobState::Failed,
            StateArg::Cancelled => JobState::Cancelled,
        }
    }
}

#[derive(Args, Debug)]
pub struct JobsArgs {
    /// Only jobs in this state (repeatable; the variable takes a comma-separated list).
    #[arg(
        long = "state",
        value_name = "STATE",
        env = "STACKHIVE_JOBS_STATES",
        value_delimiter = ','
    )]
    pub states: Vec<StateArg>,

    /// Only jobs of this kind.
    #[arg(long, env = "STACKHIVE_JOBS_KIND")]
    pub kind: Option<String>,

    /// Only jobs of this experiment.
    #[arg(long, env = "STACKHIVE_EXPERIMENT")]
    pub experiment: Option<String>,

    /// Jobs per page (the first page only, unless --all).
    #[arg(long, env = "STACKHIVE_JOBS_LIMIT", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,

    /// Fetch every page.
    #[arg(long, env = "STACKHIVE_JOBS_ALL")]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct JobArgs {
    /// The job's id.
    pub id: i64,

    /// Also fetch the job's predictions and summarise them.
    #[arg(long, env = "STACKHIVE_JOB_PREDICTIONS")]
    pub predictions: bool,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Watch every job of this experiment.
    #[arg(long, env = "STACKHIVE_EXPERIMENT")]
    pub experiment: Option<String>,

    /// Watch these jobs (with --experiment: the union).
    #[arg(required_unless_present = "experiment")]
    pub ids: Vec<i64>,

    /// How often the coordinator sends an update, in milliseconds (0 = its default).
    #[arg(long, env = "STACKHIVE_WATCH_INTERVAL_MS", default_value_t = 0)]
    pub interval_ms: u32,
}

#[derive(Args, Debug)]
pub struct CancelArgs {
    /// Jobs to cancel.
    #[arg(required_unless_present = "experiment")]
    pub ids: Vec<i64>,

    /// Cancel every unfinished job of this experiment.
    #[arg(long, env = "STACKHIVE_CANCEL_EXPERIMENT")]
    pub experiment: Option<String>,
}

#[derive(Args, Debug)]
pub struct RetryArgs {
    /// Failed or cancelled jobs to put back in the queue.
    #[arg(required = true)]
    pub ids: Vec<i64>,
}

#[derive(Args, Debug)]
pub struct WorkersArgs {
    /// Include workers that stopped heartbeating.
    #[arg(long, env = "STACKHIVE_WORKERS_ALL")]
    pub all: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
