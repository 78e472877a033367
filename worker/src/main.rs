//! `stackhive-worker`: parses the flags, sets up logging and tracing and runs the worker until SIGTERM or
//! SIGINT, after which it drains and exits. All behaviour lives in the library.

use std::future::Future;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use stackhive_worker::WorkerConfig;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "stackhive-worker",
    version,
    about = "Runs stackhive jobs on this machine: leases them from a coordinator, runs them, reports"
)]
struct Cli {
    #[command(flatten)]
    worker: WorkerConfig,

    #[command(flatten)]
    telemetry: stackhive_proto::telemetry::TelemetryOptions,
}

fn main() -> anyhow::Result<()> {
    // A shell job's guard is this binary too: it starts no runtime and never returns.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == stackhive_worker::guard::ARG)
    {
        stackhive_worker::guard::run(&args[2..]);
    }
    worker_main()
}

#[tokio::main]
async fn worker_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Refuse bad values the way clap refuses bad flags: a usage error, exit code 2.
    if let Err(e) = cli.worker.validate() {
        Cli::command()
            .error(clap::error::ErrorKind::ValueValidation, e)
            .exit();
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let telemetry = stackhive_proto::telemetry::init(
        "stackhive-worker",
        tracing_subscriber::fmt::layer(),
        filter,
        &cli.telemetry,
    )
    .map_err(anyhow::Error::msg)?;
    let shutdown = shutdown_signal().context("could not install signal handlers")?;
    let outcome = stackhive_worker::run(cli.worker, shutdown).await;
    // The exporter's sends run on this runtime: flush from a blocking thread beside it.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    outcome?;
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed before the worker
/// starts, so a signal during registration is not lost.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
        }
    })
}
