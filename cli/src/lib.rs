//! The `stackhive` command line as a library: argument definitions, one module per command
//! and the shared client and output code. `main.rs` only parses, sets up logging and calls
//! [`run`]. Every command goes through the public gRPC API; the only exceptions are
//! `coordinator` and `demo`, which serve one.

/// `println!` for command output: see [`output::write_stdout`] for why not `println!`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for command output.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

pub mod args;
pub mod artifact;
pub mod bench;
pub mod client;
pub mod control;
pub mod dataset;
pub mod demo;
pub mod ensemble;
pub mod jobfile;
pub mod level2;
pub mod local;
pub mod output;
pub mod procs;
pub mod query;
pub mod report;
pub mod serve;
pub mod spec;
pub mod submit;
pub mod tls;
pub mod token;
pub mod upload;
pub mod watch;

use std::process::ExitCode;

use args::{Cli, Command};

/// Runs one parsed command. `Ok` carries the exit code of commands whose result is a verdict
/// (`watch`, `demo`); errors are printed by the caller and exit with 1.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let (url, json) = (cli.coordinator.as_str(), cli.json);
    client::set_client_options(cli.client.clone());
    match &cli.command {
        Command::Coordinator(a) => serve::run(a.config.clone()).await?,
        Command::Submit(a) => submit::run(url, json, a).await?,
        Command::Jobs(a) => query::jobs(url, json, a).await?,
        Command::Job(a) => query::job(url, json, a).await?,
        Command::Watch(a) => return watch::run(url, json, a).await,
        Command::Cancel(a) => control::cancel(url, json, a).await?,
        Command::Retry(a) => control::retry(url, json, a).await?,
        Command::Workers(a) => query::workers(url, json, a).await?,
        Command::Demo(a) => return demo::run(json, a).await,
        Command::Bench(a) => return bench::run(json, a).await,
        Command::Dataset(a) => dataset::run(url, json, a).await?,
        Command::Folds(a) => dataset::run_folds(url, json, a).await?,
        Command::Artifact(a) => artifact::run(url, json, a).await?,
        Command::Token(a) => token::run(url, json, a).await?,
        Command::Tls(args::TlsCommand::Init(a)) => tls::run(a)?,
        Command::Features(a) => level2::features(url, json, a).await?,
        Command::Predictions(a) => level2::predictions(url, json, a).await?,
        Command::Sweep(a) => level2::sweep(url, json, a).await?,
        Command::Leaderboard(a) => level2::leaderboard(url, json, a).await?,
        Command::Models => level2::models(json),
        Command::Ensemble(a) => ensemble::run(url, json, a).await?,
        Command::Export(a) => ensemble::export(url, json, a).await?,
        Command::Report(a) => report::run(url, json, a).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// An error and its causes on one line, each cause only when its parent does not already
/// quote it (many errors embed their source in their own message).
pub fn error_message(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_already_quoted_are_not_repeated() {
        let inner = std::io::Error::other("disk full");
        let outer = anyhow::Error::new(inner).context("database error: disk full");
        assert_eq!(super::error_message(&outer), "database error: disk full");
        let e = anyhow::anyhow!("root").context("while saving");
        assert_eq!(super::error_message(&e), "while saving: root");
    }
}
