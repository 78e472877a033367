//! The `shell` kind: payload `{"command": "…", "env": {…}, "cwd": "…"}`, run with `sh -c` in a
//! process group of its own, so that cancel, timeout and shutdown can kill everything the command
//! started, and so that nothing it left running survives the job. It keeps only the last
//! [`TAIL_BYTES`] of stdout and stderr: a chatty command must not grow the worker's memory.
//! With a [`RunAs`] user (`--run-as`, for a worker running as root) the command runs as that
//! user, with its groups only, so a job cannot act as root on the worker's machine. Under the
//! worker binary every command runs below a guard (`crate::guard`), so the group also dies
//! when the worker is killed.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use stackhive_proto::v1::LeasedJob;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{parse_payload, Executor, JobCtx, JobError, JobOutput};

/// How much of the end of stdout and of stderr a result keeps.
pub const TAIL_BYTES: usize = 4096;

/// After the command exits, how long its output pipes may stay open. A process that escaped
/// the group (setsid) can hold them forever; the job must not wait for it.
const PIPE_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Default)]
pub struct ShellExecutor {
    /// The user commands run as; `None`: the worker's own.
    pub run_as: Option<RunAs>,
    /// The worker binary, which runs each command under a guard that kills the job's group
    /// when the worker dies (`crate::guard`); `None`: commands run unguarded.
    pub guard: Option<PathBuf>,
}

/// An unprivileged user to run job commands as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl RunAs {
    /// Looks `user` up in the system's user database.
    pub fn lookup(user: &str) -> Result<RunAs, String> {
        let found = nix::unistd::User::from_name(user)
            .map_err(|e| format!("cannot look up user {user:?}: {e}"))?
            .ok_or_else(|| format!("no user named {user:?} on this machine"))?;
        if found.uid.is_root() {
            return Err(format!(
                "user {user:?} is root; --run-as needs an unprivileged user"
            ));
        }
        Ok(RunAs {
            name: found.name,
            uid: found.uid.as_raw(),
            gid: found.gid.as_raw(),
            home: found.dir,
        })
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ShellPayload {
    command: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<PathBuf>,
}

#[async_trait::async_trait]
impl Executor for ShellExecutor {
    async fn run(&self, job: &LeasedJob, ctx: JobCtx) -> Result<JobOutput, JobError> {
        let p: ShellPayload = parse_payload("shell", job)?;
        if p.command.trim().is_empty() {
            return Err(JobError::permanent(
                "invalid shell payload: expected a command, found an empty string",
            ));
        }

        let mut cmd = match &self.guard {
            Some(guard) => tokio::process::Command::from(crate::guard::command(guard, "sh")),
            None => tokio::process::Command::new("sh"),
        };
        cmd.arg("-c")
            .arg(&p.command)
            .envs(&p.env)
            // Set after the payload's env: the scheduler's GPU assignment is not negotiable.
            .env("CUDA_VISIBLE_DEVICES", ctx.cuda_visible_devices())
            .env("STACKHIVE_JOB_ID", job.id.to_string())
            .env("STACKHIVE_ATTEMPT", job.attempt.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(u) = &self.run_as {
            // The std library drops supplementary groups when a root parent sets the uid.
            cmd.uid(u.uid)
                .gid(u.gid)
                .env("HOME", &u.home)
                .env("USER", &u.name)
                .env("LOGNAME", &u.name);
            if p.cwd.is_none() {
                // The worker's own folder may be closed to that user (nobody's home is
                // /nonexistent on Debian).
                cmd.current_dir(if u.home.is_dir() {
                    u.home.as_path()
                } else {
                    std::path::Path::new("/")
                });
            }
        }
        if let Some(cwd) = &p.cwd {
            cmd.current_dir(cwd);
        }
        // Retryable: a missing cwd or a full process table may be fine on the next machine.
        let mut child = cmd
            .spawn()
            .map_err(|e| JobError::retryable(format!("could not start sh -c: {e}")))?;
        let mut group = ProcessGroup::of(&child);

        let stdout = Arc::new(Mutex::new(Tail::default()));
        let stderr = Arc::new(Mutex::new(Tail::default()));
        let readers = [
            child
                .stdout
                .take()
                .map(|r| tokio::spawn(read_tail(r, stdout.clone()))),
            child
                .stderr
                .take()
                .map(|r| tokio::spawn(read_tail(r, stderr.clone()))),
        ];

        let status = tokio::select! {
            biased;
            s = child.wait() => Some(s),
            _ = ctx.cancelled() => None,
        };
        // On cancel this stops the command; after a normal exit it removes whatever the command
        // left running in the background.
        group.kill();
        let Some(status) = status else {
            let _ = child.wait().await;
            return Err(JobError::retryable("cancelled"));
        };
        let status =
            status.map_err(|e| JobError::retryable(format!("could not wait for sh -c: {e}")))?;

        let _ = tokio::time::timeout(PIPE_GRACE, async {
            for reader in readers.into_iter().flatten() {
                let _ = reader.await;
            }
        })
        .await;
        let stdout_tail = stdout.lock().unwrap_or_else(|e| e.into_inner()).text();
        let stderr_tail = stderr.lock().unwrap_or_else(|e| e.into_inner()).text();

        let (exit_code, signal) = match (status.code(), status.signal()) {
            (Some(code), _) => (code, None),
            // The shell convention, so that the number means the same as in a terminal.
            (None, Some(sig)) => (128 + sig, Some(sig)),
            (None, None) => (-1, None),
        };
        if exit_code == 0 {
            return Ok(JobOutput::json(&serde_json::json!({
                "exit_code": 0,
                "stdout_tail": stdout_tail,
                "stderr_tail": stderr_tail,
            })));
        }
        let mut reason = match signal {
            Some(sig) => format!("command killed by signal {sig} (exit code {exit_code})"),
            None => format!("command exited with code {exit_code}"),
        };
        let err = stderr_tail.trim_end();
        if !err.is_empty() {
            reason.push_str(": ");
            reason.push_str(err);
        }
        Err(JobError::retryable(reason))
    }
}

/// The command's process group; killed when dropped, so an abandoned job leaves nothing behind.
pub(crate) struct ProcessGroup {
    pgid: Option<Pid>,
}

impl ProcessGroup {
    pub(crate) fn of(child: &tokio::process::Child) -> Self {
        // `process_group(0)` makes the child the leader: its pid is the group id.
        let pgid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .map(Pid::from_raw);
        Self { pgid }
    }

    /// SIGKILL to every process of the group, once. A group already gone (ESRCH) is fine.
    pub(crate) fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last [`TAIL_BYTES`] of a stream. Trims in chunks so that a long stream costs amortized
/// O(1) per byte, not a shift per read.
#[derive(Default)]
pub(crate) struct Tail {
    buf: Vec<u8>,
}

impl Tail {
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > 2 * TAIL_BYTES {
            let cut = self.buf.len() - TAIL_BYTES;
            self.buf.drain(..cut);
        }
    }

    pub(crate) fn text(&self) -> String {
        let start = self.buf.len().saturating_sub(TAIL_BYTES);
        let mut tail = &self.buf[start..];
        if start > 0 {
            // Do not begin with the remains of a character cut in half.
            while let Some((&b, rest)) = tail.split_first() {
                if b & 0xC0 != 0x80 {
                    break;
                }
                tail = rest;
            }
        }
        String::from_utf8_lossy(tail).into_owned()
    }
}

/// Keeps the last bytes a child wrote to one of its pipes, until the pipe closes.
pub(super) async fn read_tail(mut r: impl AsyncRead + Unpin, tail: Arc<Mutex<Tail>>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => tail
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(&buf[..n]),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Instant;

    pub(crate) fn shell_job(command: &str) -> LeasedJob {
        let payload = serde_json::json!({ "command": command });
        LeasedJob {
            id: 7,
            attempt: 2,
            kind: "shell".into(),
            payload_json: payload.to_string(),
            ..Default::default()
        }
    }

    /// A process is gone once it no longer exists or is a zombie waiting for its reaper.
    pub(crate) fn process_gone(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // The state follows the parenthesised command name.
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        }
    }

    pub(crate) async fn wait_gone(pid: i32) -> bool {
        for _ in 0..100 {
            if process_gone(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub(crate) async fn read_pid(path: &std::path::Path) -> i32 {
        for _ in 0..250 {
            if let Ok(s) = std::fs::read_to_string(path) {
                if let Ok(pid) = s.trim().parse() {
                    return pid;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{} was never written", path.display());
    }

    fn result(out: JobOutput) -> serde_json::Value {
        serde_json::from_str(&out.result_json).expect("result is JSON")
    }

    #[tokio::test]
    async fn success_keeps_exit_code_and_output_tails() {
        let out = ShellExecutor::default()
            .run(
                &shell_job("echo hello; echo oops >&2"),
                JobCtx::new(Vec::new()),
            )
            .await
            .expect("exit 0 succeeds");
        let v = result(out);
        assert_eq!(v["exit_code"], 0);
        assert_eq!(v["stdout_tail"], "hello\n");
        assert_eq!(v["stderr_tail"], "oops\n");
    }

    /// Issue 14: a worker running as root runs commands as the --run-as user, with that
    /// user's groups only. Needs root to switch users; run as another user it checks the lookup.
    #[tokio::test]
    async fn run_as_drops_root_for_the_command() {
        let nobody = RunAs::lookup("nobody").expect("the nobody user exists");
        assert!(RunAs::lookup("root").unwrap_err().contains("unprivileged"));
        assert!(RunAs::lookup("no-such-user-xyz")
            .unwrap_err()
            .contains("no user named"));
        if !nix::unistd::getuid().is_root() {
            eprintln!("not root: the switch itself is not exercised");
            return;
        }
        let exec = ShellExecutor {
            run_as: Some(nobody.clone()),
            guard: None,
        };
        let out = exec
            .run(
                &shell_job("id -u; id -G; echo $USER"),
                JobCtx::new(Vec::new()),
            )
            .await
            .expect("runs");
        let stdout = result(out)["stdout_tail"].as_str().unwrap().to_string();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines[0], nobody.uid.to_string(), "{stdout}");
        assert_eq!(
            lines[1],
            nobody.gid.to_string(),
            "no supplementary groups: {stdout}"
        );
        assert_eq!(lines[2], "nobody");
    }

    #[tokio::test]
    async fn only_the_last_bytes_of_a_long_output_are_kept() {
        let cmd = "head -c 300000 /dev/zero | tr '\\0' x; echo; echo END; echo é";
        let out = ShellExecutor::default()
            .run(&shell_job(cmd), JobCtx::new(Vec::new()))
            .await
            .expect("succeeds");
        let tail = result(out)["stdout_tail"]
            .as_str()
            .expect("string")
            .to_string();
        assert!(
            tail.len() <= TAIL_BYTES && tail.len() > TAIL_BYTES - 8,
            "{}",
            tail.len()
        );
        assert!(tail.ends_with("xx\nEND\né\n"), "{tail:?}");
    }

    #[tokio::test]
    async fn non_zero_exit_is_a_retryable_failure_with_code_and_stderr() {
        let err = ShellExecutor::default()
            .run(
                &shell_job("echo disk full >&2; exit 3"),
                JobCtx::new(Vec::new()),
            )
            .await
            .expect_err("exit 3 fails");
        assert!(err.retryable);
        assert_eq!(err.message, "command exited with code 3: disk full");

        let err = ShellExecutor::default()
            .run(&shell_job("kill -9 $$"), JobCtx::new(Vec::new()))
            .await
            .expect_err("killed");
        assert_eq!(err.message, "command killed by signal 9 (exit code 137)");
    }

    #[tokio::test]
    async fn env_cwd_and_assigned_gpus_reach_the_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let payload = serde_json::json!({
            "command": "echo $FOO; pwd; echo \"[$CUDA_VISIBLE_DEVICES] $STACKHIVE_JOB_ID\"",
            "env": {"FOO": "bar", "CUDA_VISIBLE_DEVICES": "0,1,2,3"},
            "cwd": dir.path(),
        });
        let mut job = shell_job("");
        job.payload_json = payload.to_string();
        let ctx = JobCtx::new(vec![1, 3]);
        let devices = ctx.cuda_visible_devices();
        assert!(!devices.is_empty());
        let out = ShellExecutor::default()
            .run(&job, ctx)
            .await
            .expect("succeeds");
        let cwd = dir.path().canonicalize().expect("canonical");
        let expected = format!("bar\n{}\n[{devices}] 7\n", cwd.display());
        assert_eq!(result(out)["stdout_tail"], expected.as_str());

        let out = ShellExecutor::default()
            .run(
                &shell_job("echo \"[$CUDA_VISIBLE_DEVICES]\""),
                JobCtx::new(Vec::new()),
            )
            .await
            .expect("succeeds");
        assert_eq!(result(out)["stdout_tail"], "[]\n");
    }

    #[tokio::test]
    async fn bad_payloads_fail_for_good() {
        let mut job = shell_job("");
        for payload in [r#"{"cmd": "ls"}"#, r#"{"command": ""}"#, "not json"] {
            job.payload_json = payload.into();
            let err = ShellExecutor::default()
                .run(&job, JobCtx::new(Vec::new()))
                .await
                .expect_err("refused");
            assert!(!err.retryable);
            assert!(
                err.message.starts_with("invalid shell payload: "),
                "{}",
                err.message
            );
        }
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let cmd = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let ctx = JobCtx::new(Vec::new());
        let token = ctx.cancellation_token().clone();
        let job = shell_job(&cmd);
        let run = tokio::spawn(async move { ShellExecutor::default().run(&job, ctx).await });

        let grandchild = read_pid(&pidfile).await;
        assert!(!process_gone(grandchild));
        let started = Instant::now();
        token.cancel();
        let out = run.await.expect("task");
        assert_eq!(out, Err(JobError::retryable("cancelled")));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            wait_gone(grandchild).await,
            "background sleep {grandchild} survived"
        );
    }

    #[tokio::test]
    async fn background_leftovers_die_with_the_job_and_do_not_hold_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        // The background sleep keeps stdout open; the job must still end promptly.
        let cmd = format!("sleep 60 & echo $! > {}; echo done", pidfile.display());
        let started = Instant::now();
        let out = ShellExecutor::default()
            .run(&shell_job(&cmd), JobCtx::new(Vec::new()))
            .await
            .expect("succeeds");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(result(out)["stdout_tail"], "done\n");
        let leftover = read_pid(&pidfile).await;
        assert!(wait_gone(leftover).await, "leftover {leftover} survived");
    }
}
