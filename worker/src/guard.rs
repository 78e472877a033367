//! The job guard (issue 16): a shell job's command runs under `stackhive-worker __job-guard
//! <worker pid> sh -c …`, the leader of the job's process group. The guard starts the command
//! and waits for it, passing its exit status on; if the worker dies first (a SIGKILL, an OOM
//! kill, a crash), the guard sees it within [`POLL`] and kills the whole group, so a retry never
//! runs beside an orphan of the previous attempt. Plain polling of the parent pid: it needs no
//! signal handler, and works the same when the command runs as an unprivileged user.
//!
//! Guaranteed: every process that stays in the job's process group dies with the worker.
//! Not covered: a process that leaves the group (`setsid`, a daemonizing tool); confine those
//! with a cgroup (systemd's `KillMode=control-group` does, for the worker's unit).

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use nix::sys::signal::{killpg, raise, Signal};
use nix::unistd::{getpgrp, getppid};

/// The first argument that makes the worker binary act as a guard.
pub const ARG: &str = "__job-guard";

/// How often the guard checks that the worker is still its parent.
pub const POLL: Duration = Duration::from_millis(100);

/// Exit code when the guard itself could not start the command (as a shell's "not found").
const CANNOT_START: i32 = 127;

/// The command line that runs `program args…` under a guard of this worker, by `guard` (the
/// worker's own executable).
pub fn command(guard: &std::path::Path, program: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(guard);
    cmd.arg(ARG)
        .arg(std::process::id().to_string())
        .arg(program);
    cmd
}

/// Runs the guard: `args` are what follows [`ARG`]: the worker's pid, the program and its
/// arguments. Never returns.
pub fn run(args: &[OsString]) -> ! {
    let parent: Option<i32> = args
        .first()
        .and_then(|a| a.to_str())
        .and_then(|a| a.parse().ok());
    let (Some(parent), Some(program)) = (parent, args.get(1)) else {
        eprintln!("usage: stackhive-worker {ARG} <worker pid> <program> [args…]");
        std::process::exit(2);
    };
    let orphaned = || getppid().as_raw() != parent;
    if orphaned() {
        // The worker died before the command started: run nothing.
        std::process::exit(CANNOT_START);
    }
    let mut child = match std::process::Command::new(program).args(&args[2..]).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot start {}: {e}", program.to_string_lossy());
            std::process::exit(CANNOT_START);
        }
    };
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if let Some(code) = status.code() {
                    std::process::exit(code);
                }
                if let Some(sig) = status.signal() {
                    // Die the same way, so the worker reports the same signal.
                    if let Ok(s) = Signal::try_from(sig) {
                        let _ = raise(s);
                    }
                    std::process::exit(128 + sig);
                }
                std::process::exit(CANNOT_START);
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("cannot wait for the command: {e}");
                std::process::exit(CANNOT_START);
            }
        }
        if orphaned() {
            // Everything in the job's group, this guard included.
            let _ = killpg(getpgrp(), Signal::SIGKILL);
            std::process::exit(128 + Signal::SIGKILL as i32);
        }
        std::thread::sleep(POLL);
    }
}
