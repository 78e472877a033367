//! A small cluster harness: real `stackhive coordinator` and `stackhive-worker` processes,
//! started from the workspace's own binaries and stopped with real signals (SIGKILL for
//! crashes, SIGTERM for graceful stops).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::job_service_client::JobServiceClient;
use stackhive_proto::v1::worker_service_client::WorkerServiceClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// Path of a workspace binary, building the binaries once if they are not there yet.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // target/<profile>/deps/<test-exe> -> target/<profile>
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe
            .parent()
            .and_then(|p| p.parent())
            .expect("target dir")
            .to_path_buf();
        let profile_release = dir.file_name().is_some_and(|n| n == "release");
        let status = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "stackhive-cli",
                "-p",
                "stackhive-worker",
                // The worker runs cnn jobs with the trainer binary next to it, and stack jobs
                // with the stacker.
                "-p",
                "stackhive-trainer",
                "-p",
                "stackhive-stacker",
            ])
            .args(profile_release.then_some("--release"))
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("run cargo build for the cluster binaries");
        assert!(status.success(), "building stackhive binaries failed");
        dir
    });
    dir.join(name)
}

/// A free TCP port on loopback (bound and released; fine for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Coordinator {
    child: Child,
    pub addr: SocketAddr,
    pub url: String,
    log: tokio::task::JoinHandle<()>,
    /// Every line it wrote to stderr (its log), also echoed to the test's.
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Coordinator {
    /// Starts `stackhive coordinator` on `port` (0 picks one) and waits until it listens.
    pub async fn start(db_url: &str, port: u16, extra: &[&str]) -> Coordinator {
        let port = if port == 0 { free_port() } else { port };
        let mut child = Command::new(bin("stackhive"))
            .args([
                "coordinator",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--db",
                db_url,
            ])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("STACKHIVE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn stackhive coordinator");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let kept = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err_lines.next_line().await {
                eprintln!("{line}");
                kept.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
                .await
                .expect("coordinator did not start within 60 s")
                .expect("read coordinator output")
                .expect("coordinator exited before listening");
            if let Some(a) = line.strip_prefix("stackhive coordinator listening on ") {
                break a.trim().parse::<SocketAddr>().expect("listen address");
            }
        };
        let log = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[coordinator] {line}");
            }
        });
        Coordinator {
            child,
            addr,
            url: format!("http://{addr}"),
            log,
            stderr,
        }
    }

    /// What it has logged so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// SIGKILL: no shutdown code runs.
    pub async fn kill(mut self) {
        signal(&self.child, Signal::SIGKILL);
        let _ = self.child.wait().await;
        self.log.abort();
    }

    pub async fn jobs(&self) -> JobServiceClient<Channel> {
        job_client(&self.url).await
    }

    pub async fn workers_api(&self) -> WorkerServiceClient<Channel> {
        WorkerServiceClient::connect(self.url.clone())
            .await
            .expect("connect worker api")
    }
}

pub async fn job_client(url: &str) -> JobServiceClient<Channel> {
    JobServiceClient::connect(url.to_string())
        .await
        .expect("connect job api")
}

pub struct Worker {
    child: Child,
    pub name: String,
}

impl Worker {
    /// Starts `stackhive-worker` against `coordinator_url` with extra flags.
    pub fn start(name: &str, coordinator_url: &str, extra: &[&str]) -> Worker {
        let child = Command::new(bin("stackhive-worker"))
            .args([
                "--coordinator",
                coordinator_url,
                "--name",
                name,
                "--lease-wait-ms",
                "1000",
            ])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("STACKHIVE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn stackhive-worker");
        Worker {
            child,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("worker is running")
    }

    /// SIGKILL: the worker dies mid-job without reporting anything.
    pub async fn kill(mut self) {
        signal(&self.child, Signal::SIGKILL);
        let _ = self.child.wait().await;
    }

    /// SIGTERM, then waits for the exit status.
    pub async fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
        signal(&self.child, Signal::SIGTERM);
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("worker did not exit after SIGTERM")
            .expect("wait for worker")
    }
}

fn signal(child: &Child, sig: Signal) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), sig);
    }
}

/// Polls `check` until it returns `Some`, panicking with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn spec(kind: &str, payload: serde_json::Value) -> pb::JobSpec {
    pb::JobSpec {
        kind: kind.into(),
        payload_json: payload.to_string(),
        ..Default::default()
    }
}

pub async fn submit(c: &mut JobServiceClient<Channel>, jobs: Vec<pb::JobSpec>) -> Vec<i64> {
    c.submit(pb::SubmitRequest {
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        jobs,
    })
    .await
    .expect("submit")
    .into_inner()
    .job_ids
}

pub async fn job(c: &mut JobServiceClient<Channel>, id: i64) -> pb::Job {
    c.get_job(pb::GetJobRequest {
        id,
        include_predictions: false,
    })
    .await
    .expect("get job")
    .into_inner()
    .job
    .expect("job in response")
}

pub fn state(j: &pb::Job) -> pb::JobState {
    pb::JobState::try_from(j.state).unwrap_or(pb::JobState::Unspecified)
}

/// Waits until job `id` reaches `want`, returning it.
pub async fn wait_state(
    c: &mut JobServiceClient<Channel>,
    id: i64,
    want: pb::JobState,
    timeout: Duration,
) -> pb::Job {
    let what = format!("job {id} to be {want:?}");
    wait_for(&what, timeout, || {
        let mut c = c.clone();
        async move {
            let j = job(&mut c, id).await;
            (state(&j) == want).then_some(j)
        }
    })
    .await
}

/// State counts of one experiment.
pub async fn counts(c: &mut JobServiceClient<Channel>, experiment: &str) -> pb::StateCounts {
    c.list_jobs(pb::ListJobsRequest {
        experiment: experiment.into(),
        page_size: 1,
        ..Default::default()
    })
    .await
    .expect("list jobs")
    .into_inner()
    .counts
    .unwrap_or_default()
}

/// GET /metrics on a local Prometheus endpoint: the exposition text.
pub fn scrape_metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the sample `name` in exposition `text` whose labels include all of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, v) = line.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        let all = labels
            .iter()
            .all(|(k, val)| rest.contains(&format!("{k}=\"{val}\"")));
        (n == name && all).then(|| v.parse().ok()).flatten()
    })
}

/// The one completion a Complete answer refused, as (kind, why); panics unless there is
/// exactly one and nothing was accepted.
pub fn refused_one(resp: pb::CompleteResponse) -> (pb::RefusalKind, String) {
    assert_eq!(resp.accepted, 0, "{resp:?}");
    assert_eq!(resp.rejected.len(), 1, "{resp:?}");
    let r = &resp.rejected[0];
    (r.kind(), r.reason.clone())
}
