//! Worker processes started by `stackhive demo`: spawning them with their output in log files,
//! noticing one that died, and stopping them politely (SIGTERM, then a bounded wait, then
//! SIGKILL). Nothing here knows about jobs.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Longer than a worker's default drain timeout (30 s), so a clean drain is never cut short.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);
const LOG_TAIL_LINES: usize = 15;

pub struct Workers {
    bin: PathBuf,
    log_dir: PathBuf,
    children: Vec<Spawned>,
}

struct Spawned {
    n: usize,
    child: Child,
    log: PathBuf,
    /// Its death was already reported by [`Workers::exited`]; `stop` only reaps it.
    reported: bool,
}

impl Workers {
    pub fn new(bin: PathBuf, log_dir: PathBuf) -> Self {
        Workers {
            bin,
            log_dir,
            children: Vec::new(),
        }
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    pub fn spawn(&mut self, coordinator: &str, slots: u32) -> anyhow::Result<()> {
        let n = self.children.len() + 1;
        let log = self.log_dir.join(format!("worker-{n}.log"));
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(&self.bin);
        // The worker's caches and job folders default to its working directory: keep them
        // with its log, not wherever the command was started.
        command
            .current_dir(&self.log_dir)
            .arg("--coordinator")
            .arg(coordinator)
            .arg("--name")
            .arg(format!("demo-worker-{n}"))
            .arg("--slots")
            .arg(slots.to_string())
            // A worker finishes its in-flight long poll before it stops; a short one keeps
            // the demo's shutdown quick.
            .arg("--lease-wait-ms")
            .arg("1000")
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("cannot share the log file")?)
            .stderr(file)
            // Plain text in the log files, which the demo quotes in its errors.
            .env("NO_COLOR", "1")
            // A demo that fails half-way must not leave workers behind.
            .kill_on_drop(true);
        // The user's own worker settings (tags, GPUs, …) would make the demo unpredictable;
        // only the log level is passed on.
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("STACKHIVE_") && key_text != "STACKHIVE_LOG" {
                command.env_remove(&key);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.children.push(Spawned {
            n,
            child,
            log,
            reported: false,
        });
        Ok(())
    }

    /// The first worker found to have exited, described with the end of its log.
    pub fn exited(&mut self) -> Option<anyhow::Error> {
        self.children
            .iter_mut()
            .filter(|s| !s.reported)
            .find_map(|s| match s.child.try_wait() {
                Ok(Some(status)) => {
                    s.reported = true;
                    Some(died(s, status))
                }
                Ok(None) => None,
                Err(e) => Some(anyhow::anyhow!("cannot check on worker {}: {e}", s.n)),
            })
    }

    /// Resolves when a worker exits; they are meant to run until stopped.
    pub async fn first_exit(&mut self) -> anyhow::Error {
        loop {
            if let Some(e) = self.exited() {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops every worker; returns what went wrong, one line per worker.
    pub async fn stop(&mut self) -> Vec<String> {
        // Signal all first so they drain in parallel.
        for s in &self.children {
            if let Some(pid) = s.child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        let mut problems = Vec::new();
        for s in &mut self.children {
            match tokio::time::timeout(STOP_TIMEOUT, s.child.wait()).await {
                Ok(Ok(status)) if status.success() || s.reported => {}
                Ok(Ok(status)) => problems.push(format!(
                    "worker {} exited with {status} on SIGTERM (log: {})",
                    s.n,
                    s.log.display()
                )),
                Ok(Err(e)) => problems.push(format!("cannot wait for worker {}: {e}", s.n)),
                Err(_) => {
                    let _ = s.child.kill().await;
                    problems.push(format!(
                        "worker {} did not stop within {}s of SIGTERM and was killed (log: {})",
                        s.n,
                        STOP_TIMEOUT.as_secs(),
                        s.log.display()
                    ));
                }
            }
        }
        self.children.clear();
        problems
    }
}

fn died(s: &Spawned, status: ExitStatus) -> anyhow::Error {
    let text = std::fs::read_to_string(&s.log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    anyhow::anyhow!(
        "worker {} exited with {status} before the jobs finished; {} ends with:\n{tail}",
        s.n,
        s.log.display()
    )
}

/// Runs `cmd` to the end: its output, and its peak resident memory in KiB (`VmHWM`, read from
/// `/proc` every 20 ms while it runs; the last reading before it exits is kept).
pub fn output_with_peak_rss(
    cmd: &mut std::process::Command,
) -> anyhow::Result<(std::process::Output, u64)> {
    use std::io::Read as _;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the child process")?;
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
            peak_kb = peak_kb.max(hwm.unwrap_or(0));
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    Ok((output, peak_kb))
}
