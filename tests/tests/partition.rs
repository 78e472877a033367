//! Partitions (issue 16). A worker on another "host" cut off from the coordinator: the worker
//! runs in a network namespace of its own, reaching the coordinator only through a veth pair
//! (addresses inside the namespaces only) and a TCP forwarder on the host side of it. Taking
//! the link down partitions it mid-job: its lease expires and the job finishes on another
//! worker; when the link comes back, its late report is refused as stale and counted, and the
//! job keeps the result of the attempt that finished it. That test needs root and `ip netns`
//! (skipped, saying so, without them). And a coordinator cut off from PostgreSQL (its only path
//! to the database reset and refused for a while) loses no accepted job and recovers.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use stackhive_proto::v1 as pb;
use stackhive_tests::cluster::*;
use stackhive_tests::db::TestDb;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

const FAST: &[&str] = &[
    "--lease-ttl-ms",
    "2000",
    "--heartbeat-interval-ms",
    "300",
    "--reap-interval-ms",
    "200",
    "--backoff-base-ms",
    "100",
    "--backoff-max-ms",
    "400",
];

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A namespace joined to the host by a veth pair: host side `.1`, namespace side `.2` of a
/// /30. Removed (with its end of the pair) when dropped.
struct Host {
    ns: String,
    link: String,
    host_ip: String,
    ns_ip: String,
}

impl Host {
    fn create(tag: u16) -> Option<Host> {
        let ns = format!("sh-part-{tag}");
        let link = format!("shp{tag}h");
        let peer = format!("shp{tag}n");
        let net = format!("10.213.{}.", tag % 250);
        let h = Host {
            ns: ns.clone(),
            link: link.clone(),
            host_ip: format!("{net}1"),
            ns_ip: format!("{net}2"),
        };
        let ok = ip(&["netns", "add", &ns])
            && ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer])
            && ip(&["link", "set", &peer, "netns", &ns])
            && ip(&["addr", "add", &format!("{}/30", h.host_ip), "dev", &link])
            && ip(&["link", "set", &link, "up"])
            && ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/30", h.ns_ip),
                "dev",
                &peer,
            ])
            && ip(&["-n", &ns, "link", "set", &peer, "up"])
            && ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ok.then_some(h)
    }

    fn link(&self, up: bool) {
        assert!(ip(&[
            "link",
            "set",
            &self.link,
            if up { "up" } else { "down" }
        ]));
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        ip(&["link", "del", &self.link]);
        ip(&["netns", "del", &self.ns]);
    }
}

/// Forwards connections to `bind` on to `to` until dropped.
async fn forward(bind: &str, to: std::net::SocketAddr) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((bind, 0))
        .await
        .expect("bind the forwarder");
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut out) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    (port, task)
}

fn stale_reports(port: u16) -> f64 {
    metric(&scrape_metrics(port), "stackhive_stale_reports_total", &[]).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_workers_job_finishes_elsewhere_and_its_late_report_is_refused() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("not root: network namespaces cannot be made here; skipped");
        return;
    }
    let Some(host) = Host::create(std::process::id() as u16 % 200 + 20) else {
        eprintln!("`ip netns` is not usable here; skipped");
        return;
    };
    let db = TestDb::postgres().await;
    let metrics = free_port();
    let mut flags = FAST.to_vec();
    let metrics_addr = format!("127.0.0.1:{metrics}");
    flags.extend(["--metrics-addr", &metrics_addr]);
    let coord = Coordinator::start(&db.url, 0, &flags).await;
    let (port, _forwarder) = forward(&host.host_ip, coord.addr).await;
    let mut c = coord.jobs().await;
    let id = submit(
        &mut c,
        vec![pb::JobSpec {
            max_attempts: 5,
            ..spec(
                "shell",
                json!({"command": "sleep 4; echo $STACKHIVE_ATTEMPT"}),
            )
        }],
    )
    .await[0];

    // The worker on the other host: only the namespace's address reaches the coordinator.
    let _far = Command::new("ip")
        .args(["netns", "exec", &host.ns])
        .arg(bin("stackhive-worker"))
        .args(["--coordinator", &format!("http://{}:{port}", host.host_ip)])
        .args(["--name", "far", "--slots", "1", "--lease-wait-ms", "1000"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker in its namespace");
    let running = wait_state(&mut c, id, pb::JobState::Running, Duration::from_secs(30)).await;
    assert_eq!(running.attempt, 1);

    // Cut it off mid-job; the job comes back and a worker on this host finishes it.
    host.link(false);
    let near = Worker::start("near", &coord.url, &["--slots", "1"]);
    let done = wait_state(&mut c, id, pb::JobState::Succeeded, Duration::from_secs(60)).await;
    assert!(
        done.attempt >= 2,
        "finished by a later attempt: {}",
        done.attempt
    );
    let result: serde_json::Value = serde_json::from_str(&done.result_json).unwrap();
    let printed = result["stdout_tail"].as_str().unwrap().trim().to_string();
    assert_eq!(printed, done.attempt.to_string());

    // Healed: the far worker's report of attempt 1 arrives late, is refused and counted.
    let before = stale_reports(metrics);
    host.link(true);
    wait_for(
        "the late report refused",
        Duration::from_secs(60),
        || async move { (stale_reports(metrics) > before).then_some(()) },
    )
    .await;
    let after = job(&mut c, id).await;
    assert_eq!(
        (after.attempt, after.result_json.clone()),
        (done.attempt, done.result_json.clone()),
        "the job keeps the result of the attempt that finished it"
    );
    near.terminate(Duration::from_secs(20)).await;
    coord.kill().await;
}

/// A TCP path to PostgreSQL that a test can cut (every connection reset, new ones refused)
/// and heal.
struct Cuttable {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
    _task: tokio::task::JoinHandle<()>,
}

impl Cuttable {
    async fn to(target: String) -> Cuttable {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *watch.borrow() {
                    continue; // dropped: refused
                }
                let (target, mut watch) = (target.clone(), watch.clone());
                tokio::spawn(async move {
                    let Ok(mut out) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        _ = watch.wait_for(|&c| c) => {}
                    }
                });
            }
        });
        Cuttable {
            port,
            cut,
            _task: task,
        }
    }

    fn set(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// A coordinator whose path to PostgreSQL is cut mid-run refuses what it cannot store
/// (nothing it accepted is lost, and nothing it refused appears later), and carries on when
/// the database is back: every accepted job finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_cut_off_from_postgres_loses_no_accepted_job_and_recovers() {
    let db = TestDb::postgres().await;
    // postgres://user@host:port/name: the coordinator reaches host:port through the cut.
    let (head, rest) = db.url.split_once('@').unwrap();
    let (target, name) = rest.split_once('/').unwrap();
    let path = Cuttable::to(target.to_string()).await;
    let via = format!("{head}@127.0.0.1:{}/{name}", path.port);
    let coord = Coordinator::start(&via, 0, FAST).await;
    let mut c = coord.jobs().await;
    let batch = |n: usize, tag: &str| -> Vec<pb::JobSpec> {
        (0..n)
            .map(|i| pb::JobSpec {
                experiment: "cut".into(),
                name: format!("{tag}-{i}"),
                ..spec("sleep", json!({"ms": 50}))
            })
            .collect()
    };
    let mut accepted: Vec<i64> = submit(&mut c, batch(40, "before")).await;
    let w = Worker::start("steady", &coord.url, &["--slots", "2"]);

    path.set(true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // During the cut a submission either fails or, if it was stored, is kept.
    for round in 0..3 {
        let r = c
            .submit(pb::SubmitRequest {
                idempotency_key: format!("cut-{round}"),
                jobs: batch(10, &format!("during-{round}")),
            })
            .await;
        match r {
            Ok(ok) => accepted.extend(ok.into_inner().job_ids),
            Err(s) => assert!(
                matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::Internal | tonic::Code::Unknown
                ),
                "a refusal says the store is unreachable: {s:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    path.set(false);

    // Back: the same coordinator takes new work and finishes everything it accepted.
    accepted.extend(submit(&mut c, batch(10, "after")).await);
    let n = accepted.len() as u64;
    wait_for("every accepted job done", Duration::from_secs(90), || {
        let mut c = c.clone();
        async move { (counts(&mut c, "cut").await.succeeded == n).then_some(()) }
    })
    .await;
    // Straight from the database: exactly the accepted jobs, no more.
    use sqlx::Connection as _;
    let mut direct = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE experiment = 'cut'")
        .fetch_one(&mut direct)
        .await
        .unwrap();
    assert_eq!(
        stored as u64, n,
        "stored jobs are exactly the accepted ones"
    );
    w.terminate(Duration::from_secs(20)).await;
    coord.kill().await;
}
