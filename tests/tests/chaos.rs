//! The chaos run at a small size (issue 16): `stackhive bench chaos` with workers SIGKILLed
//! every second, the coordinator killed and restarted twice and PostgreSQL restarted once (where
//! this machine's cluster can be restarted with `pg_ctlcluster`), ending with every job
//! terminal and every result from its job's final attempt. Alone in its test binary, so the
//! PostgreSQL restart disturbs no other test.

use std::process::Command;

use stackhive_tests::cluster::bin;

#[test]
fn every_job_ends_once_through_killed_workers_and_restarted_servers() {
    let mut cmd = Command::new(bin("stackhive"));
    cmd.args([
        "--json",
        "bench",
        "chaos",
        "--jobs",
        "600",
        "--workers",
        "4",
    ])
    .args(["--slots", "2", "--kill-every-ms", "1000"])
    .args(["--coordinator-restarts", "2", "--deadline-s", "300"])
    .env("STACKHIVE_WORKER_BIN", bin("stackhive-worker"));
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned());
    match &version {
        Some(v) => {
            cmd.args(["--pg-restarts", "1", "--pg-restart-cmd"])
                .arg(format!(
                    "pg_ctlcluster --skip-systemctl-redirect {v} main restart"
                ));
        }
        None => eprintln!("no /etc/postgresql here: PostgreSQL is not restarted"),
    }
    let out = cmd.output().expect("run stackhive bench chaos");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chaos run failed: {stderr}");
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON counts");
    eprintln!("{counts}");
    assert_eq!(counts["jobs"], 600);
    assert_eq!(counts["not_terminal"], 0);
    assert_eq!(counts["result_from_stale_attempt"], 0);
    assert_eq!(counts["succeeded"], 600, "{counts}");
    assert_eq!(counts["coordinator_restarts"], 2, "{counts}");
    assert!(counts["workers_killed"].as_u64().unwrap() >= 2, "{counts}");
    if version.is_some() {
        assert_eq!(counts["pg_restarts"], 1, "{counts}");
    }
}
