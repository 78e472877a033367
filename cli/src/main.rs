//! The `stackhive` binary: parse the command line, set up logging, run the command, and turn
//! an error into `error: …` on stderr with exit code 1 (clap exits with 2 on usage errors).

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use stackhive_cli::args::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server logs what it does; a client command stays quiet unless asked.
    let default_level = match cli.command {
        Command::Coordinator(_) => "info",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_env("STACKHIVE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(stackhive_cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let message = stackhive_cli::error_message(&e);
            eprintln!("error: {}", stackhive_cli::output::sanitize(&message));
            ExitCode::FAILURE
        }
    }
}
