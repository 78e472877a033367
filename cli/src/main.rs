//! The `stackhive` binary: parse the command line, set up logging and tracing, run the command in
//! its span (a client command's calls form one trace), and turn an error into `error: …` on stderr
//! with exit code 1 (clap exits with 2 on usage errors).

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};
use stackhive_cli::args::{Cli, Command};
use tracing::Instrument as _;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let command = matches.subcommand_name().unwrap_or("stackhive").to_string();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // A server logs what it does; a client command stays quiet unless asked.
    let server = matches!(cli.command, Command::Coordinator(_));
    let (default_level, service) = match server {
        true => ("info", "stackhive-coordinator"),
        false => ("warn", "stackhive-cli"),
    };
    let filter = EnvFilter::try_from_env("STACKHIVE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default_level));

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let telemetry = {
        let _in_runtime = runtime.enter();
        match stackhive_proto::telemetry::init(service, fmt, filter, &cli.telemetry) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    // A client command is one trace; a server's requests are each their own.
    let span = match server {
        true => tracing::Span::none(),
        false => tracing::info_span!("command", otel.name = %format!("stackhive {command}")),
    };
    let outcome = runtime.block_on(stackhive_cli::run(cli).instrument(span));
    telemetry.shutdown();
    match outcome {
        Ok(code) => code,
        Err(e) => {
            let message = stackhive_cli::error_message(&e);
            eprintln!("error: {}", stackhive_cli::output::sanitize(&message));
            ExitCode::FAILURE
        }
    }
}
