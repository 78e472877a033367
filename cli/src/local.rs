//! What the commands that run the whole system on one machine share (`stackhive demo`, `bench
//! cluster`): a coordinator served from a task of this process, the worker binary beside this
//! one, and waiting until the workers have registered.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use stackhive_coordinator::CoordinatorConfig;
use stackhive_proto::v1::ListWorkersRequest;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::client::Api;
use crate::procs::Workers;

const WORKERS_READY_TIMEOUT: Duration = Duration::from_secs(60);
const COORDINATOR_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until every worker has registered, so the measured rate is the scheduler's, not
/// the workers' start-up.
pub async fn wait_for_workers(api: &Api, workers: &mut Workers, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + WORKERS_READY_TIMEOUT;
    loop {
        if let Some(dead) = workers.exited() {
            return Err(dead);
        }
        let alive = api
            .list_workers(ListWorkersRequest {
                include_dead: false,
            })
            .await?;
        if alive.workers.len() >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "only {} of {n} workers registered within {}s; see their logs in {}",
                alive.workers.len(),
                WORKERS_READY_TIMEOUT.as_secs(),
                workers.log_dir().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `--worker-bin`, or `stackhive-worker` beside this executable (both land in
/// `target/<profile>/` when built by cargo).
pub fn worker_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        anyhow::ensure!(
            path.is_file(),
            "the worker binary {} does not exist",
            path.display()
        );
        return Ok(path.to_path_buf());
    }
    let exe = std::env::current_exe().context("cannot locate the stackhive executable")?;
    let dir = exe
        .parent()
        .context("the stackhive executable has no directory")?;
    let path = dir.join("stackhive-worker");
    anyhow::ensure!(
        path.is_file(),
        "the demo needs the worker binary, and {} does not exist: build it with \
         `cargo build --release -p stackhive-worker` (or pass --worker-bin PATH)",
        path.display()
    );
    Ok(path)
}

/// The coordinator, served from a task of this process.
pub struct Embedded {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<stackhive_coordinator::Result<()>>,
}

impl Embedded {
    /// Serves `db`, keeping uploaded datasets under `data_dir`.
    pub async fn start(db: &str, jobs: u32, data_dir: &Path) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot open a local port for the coordinator")?;
        let addr = listener.local_addr()?;
        let mut config = CoordinatorConfig::with_db(db);
        config.listen = addr;
        config.data_dir = data_dir.to_path_buf();
        // The demo's batch is one atomic request (its report jobs depend across groups).
        config.max_batch_jobs = config.max_batch_jobs.max(jobs);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(stackhive_coordinator::run(config, listener, async move {
            let _ = stopped.await;
        }));
        Ok(Embedded {
            url: format!("http://{addr}"),
            stop: Some(stop),
            task,
        })
    }

    /// Stops it and reports how it ended; an error here is why earlier calls failed.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(COORDINATOR_STOP_TIMEOUT, &mut self.task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(anyhow::anyhow!("the embedded coordinator failed: {e}")),
            Ok(Err(e)) => Err(anyhow::anyhow!("the embedded coordinator panicked: {e}")),
            Err(_) => {
                self.task.abort();
                anyhow::bail!(
                    "the embedded coordinator did not stop within {}s",
                    COORDINATOR_STOP_TIMEOUT.as_secs()
                )
            }
        }
    }
}
