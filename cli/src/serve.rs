//! `stackhive coordinator`: binds the listener, announces the address on stdout and serves
//! until SIGTERM or SIGINT. The server itself is `stackhive_coordinator::run`; this only owns
//! the process-level parts (socket, announcement, signals).

use std::io::Write as _;

use anyhow::Context as _;
use stackhive_coordinator::CoordinatorConfig;
use tokio::net::TcpListener;

pub async fn run(config: CoordinatorConfig) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener
        .local_addr()
        .context("the listener has no local address")?;
    // Refused settings (plaintext or no tokens on a public address) fail before the
    // announcement; `run` checks them again.
    let security = config.security(addr)?;
    // Tests and scripts parse this exact line to learn the port of `--listen 127.0.0.1:0`.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "stackhive coordinator listening on {addr}")
        .and_then(|()| writeln!(stdout, "security: {}", security.describe()))
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    drop(stdout);
    let shutdown = shutdown_signal()?;
    stackhive_coordinator::run(config, listener, shutdown).await?;
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed before the server
/// starts, so a signal that arrives during start-up is not lost.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}
