//! The worker's `stackhive-stacker serve` process (issue 12): started on the first `stack` job,
//! fed requests on its stdin and read on its stdout (`stackhive_spec::stacker`), kept for every
//! later job so the jobs of a feature set share its matrix and what is built from it. If it
//! dies, the jobs it was running fail with a retryable error and the next job starts a new one.
//! It dies with the worker (parent-death signal, and the handle kills it when dropped). Its cores
//! are the worker's slots; it is told, as it changes, how many of them the worker's jobs of
//! other kinds hold ([`Reserved`]), so it never lends those to a `stack` job.
//!
//! Must not: block a job on another job's answer (answers are matched to requests by id).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use stackhive_spec::stacker::{StackFailure, StackerReply, StackerRequest};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{oneshot, watch, Mutex};

/// The job kind the stacker runs.
pub const KIND: &str = "stack";

type Waiting = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<StackerReply>>>>;

struct Running {
    child: Child,
    /// Shared with the task that forwards [`Reserved`] changes.
    stdin: Arc<Mutex<ChildStdin>>,
    waiting: Waiting,
}

/// The CPU slots the worker's jobs of kinds other than `stack` hold, counted by the daemon.
#[derive(Clone, Debug)]
pub struct Reserved(Arc<watch::Sender<u32>>);

impl Default for Reserved {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl Reserved {
    /// Counts `slots` as reserved until the guard is dropped.
    pub fn hold(&self, slots: u32) -> ReservedHold {
        self.0.send_modify(|n| *n += slots);
        ReservedHold {
            reserved: self.clone(),
            slots,
        }
    }
}

/// Slots counted in [`Reserved`] while it lives.
pub struct ReservedHold {
    reserved: Reserved,
    slots: u32,
}

impl Drop for ReservedHold {
    fn drop(&mut self) {
        let slots = self.slots;
        self.reserved
            .0
            .send_modify(|n| *n = n.saturating_sub(slots));
    }
}

fn line(request: &StackerRequest) -> String {
    serde_json::to_string(request).expect("requests serialise") + "\n"
}

pub struct Stacker {
    binary: PathBuf,
    /// The cores its jobs share (the worker's slots).
    cores: usize,
    reserved: Reserved,
    next_id: AtomicU64,
    process: Mutex<Option<Running>>,
}

fn failure(message: String) -> StackFailure {
    StackFailure {
        message,
        retryable: true,
    }
}

impl Stacker {
    /// A stacker whose jobs share `cores` cores (the worker's slots: it never runs more threads),
    /// less those `reserved` for the worker's other jobs.
    pub fn new(binary: PathBuf, cores: usize, reserved: Reserved) -> Self {
        Self {
            binary,
            cores,
            reserved,
            next_id: AtomicU64::new(1),
            process: Mutex::new(None),
        }
    }

    fn start(&self) -> Result<Running, StackFailure> {
        let mut child = Command::new(&self.binary)
            .arg("serve")
            .arg("--cores")
            .arg(self.cores.max(1).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failure(format!("cannot start {}: {e}", self.binary.display())))?;
        let stdin = Arc::new(Mutex::new(child.stdin.take().expect("piped")));
        // Tells the new process what is reserved now, then each change, until it is gone.
        let (to, mut reserved) = (stdin.clone(), self.reserved.0.subscribe());
        tokio::spawn(async move {
            loop {
                let cores = *reserved.borrow_and_update() as usize;
                let request = line(&StackerRequest::Reserve { cores });
                if to.lock().await.write_all(request.as_bytes()).await.is_err()
                    || reserved.changed().await.is_err()
                {
                    break;
                }
            }
        });
        let stdout = child.stdout.take().expect("piped");
        let waiting: Waiting = Arc::default();
        let readers = waiting.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<StackerReply>(&line) {
                    Ok(reply) => {
                        let tx = readers
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&reply.id);
                        if let Some(tx) = tx {
                            let _ = tx.send(reply);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "stacker answered something that does not parse")
                    }
                }
            }
            // The process ended: every job still waiting fails (dropping its sender says so).
            readers.lock().unwrap_or_else(|e| e.into_inner()).clear();
        });
        tracing::info!(binary = %self.binary.display(), "stacker started");
        Ok(Running {
            child,
            stdin,
            waiting,
        })
    }

    /// Sends `make(id)` and waits for its answer; `cancel` resolving first asks the stacker to
    /// stop the job and waits for that answer.
    pub async fn run(
        &self,
        make: impl FnOnce(u64) -> StackerRequest,
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<stackhive_spec::stacker::StackResult, StackFailure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut guard = self.process.lock().await;
            let alive = match guard.as_mut() {
                Some(r) => r.child.try_wait().ok().flatten().is_none(),
                None => false,
            };
            if !alive {
                *guard = Some(self.start()?);
            }
            let r = guard.as_mut().expect("started above");
            r.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, tx);
            let request = line(&make(id));
            let written = r.stdin.lock().await.write_all(request.as_bytes()).await;
            if let Err(e) = written {
                r.waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                *guard = None;
                return Err(failure(format!("the stacker process is gone: {e}")));
            }
        }
        tokio::pin!(rx);
        tokio::select! {
            answer = &mut rx => return Self::answer(answer),
            _ = cancel => {}
        }
        {
            let mut guard = self.process.lock().await;
            if let Some(r) = guard.as_mut() {
                let request = line(&StackerRequest::Cancel { id });
                let _ = r.stdin.lock().await.write_all(request.as_bytes()).await;
            }
        }
        Self::answer(rx.await)
    }

    fn answer(
        answer: Result<StackerReply, oneshot::error::RecvError>,
    ) -> Result<stackhive_spec::stacker::StackResult, StackFailure> {
        match answer {
            Ok(reply) => reply.outcome,
            Err(_) => Err(failure(
                "the stacker process ended while running the job".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the stacker is told: the slots other kinds hold, as the daemon's guards come and
    /// go, in the form `stackhive-stacker serve` reads.
    #[test]
    fn reserved_slots_follow_the_guards_and_reach_the_stacker_as_requests() {
        let reserved = Reserved::default();
        let rx = reserved.0.subscribe();
        let a = reserved.hold(3);
        let b = reserved.clone().hold(2);
        assert_eq!(*rx.borrow(), 5);
        drop(a);
        assert_eq!(*rx.borrow(), 2);
        drop(b);
        assert_eq!(*rx.borrow(), 0);
        let sent = line(&StackerRequest::Reserve { cores: 2 });
        assert_eq!(sent, "{\"type\":\"reserve\",\"cores\":2}\n");
        assert!(matches!(
            serde_json::from_str::<StackerRequest>(sent.trim()).unwrap(),
            StackerRequest::Reserve { cores: 2 }
        ));
    }
}
