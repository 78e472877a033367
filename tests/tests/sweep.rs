//! A sweep end to end (issue 12): a plain tabular dataset is registered as a feature set, a
//! sweep of level-2 models is created, paused, resumed and extended through the CLI, two real
//! workers run it, and it ends with every job accounted for and the leaderboard complete.
//! Tables that cannot be stacked are refused naming the problem.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use stackhive_tests::cluster::{bin, wait_for, Coordinator, Worker};
use stackhive_tests::db::TestDb;

fn cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("stackhive"))
        .arg("--coordinator")
        .arg(url)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A table of `n` rows: id, group, six numeric features, a categorical one, and a target drawn
/// from a logistic model of them; `with_target` false leaves the target out (a test CSV).
fn table(path: &Path, n: usize, seed: u64, with_target: bool) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut f = std::fs::File::create(path).unwrap();
    let target = if with_target { ",target" } else { "" };
    writeln!(f, "id,customer,x1,x2,x3,x4,x5,x6,plan{target}").unwrap();
    for i in 0..n {
        let x: Vec<f64> = (0..6).map(|_| rng.random_range(-2.0..2.0)).collect();
        let plan = ["basic", "pro", "team"][rng.random_range(0..3)];
        let z = 1.2 * x[0] - 0.8 * x[1] + 0.5 * x[2] + if plan == "pro" { 0.7 } else { 0.0 } - 0.5;
        let y = (rng.random::<f64>() < 1.0 / (1.0 + (-z).exp())) as u8;
        let xs: Vec<String> = x.iter().map(|v| format!("{v:.4}")).collect();
        let target = if with_target {
            format!(",{y}")
        } else {
            String::new()
        };
        writeln!(f, "r{seed}-{i},c{},{},{plan}{target}", i / 3, xs.join(",")).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_over_a_table_finishes_with_every_job_accounted_for() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, test) = (tmp.path().join("train.csv"), tmp.path().join("test.csv"));
    table(&train, 600, 1, true);
    table(&test, 150, 2, false);
    let db = TestDb::sqlite();
    let coord = Coordinator::start(&db.url, 0, &["--reap-interval-ms", "200"]).await;
    let url = coord.url.clone();
    let (train_s, test_s) = (train.to_str().unwrap(), test.to_str().unwrap());

    // Tables that cannot be stacked.
    let bad_target = tmp.path().join("bad.csv");
    std::fs::write(&bad_target, "id,x,target\na,1,0\nb,2,2\n").unwrap();
    let (ok, _, err) = cli(
        &url,
        &["dataset", "add-table", "bad", bad_target.to_str().unwrap()],
    );
    assert!(
        !ok && err.contains("expected a binary target (0 or 1) in \"target\", found \"2\""),
        "{err}"
    );
    let other_test = tmp.path().join("other.csv");
    std::fs::write(&other_test, "id,x1,y9\nt,1,2\n").unwrap();
    let (ok, _, err) = cli(
        &url,
        &[
            "dataset",
            "add-table",
            "bad",
            train_s,
            "--test",
            other_test.to_str().unwrap(),
            "--group",
            "customer",
        ],
    );
    assert!(
        !ok && err.contains("the test CSV's columns differ from the train CSV's"),
        "{err}"
    );

    let (ok, out, err) = cli(
        &url,
        &[
            "--json",
            "dataset",
            "add-table",
            "churn",
            train_s,
            "--test",
            test_s,
            "--group",
            "customer",
        ],
    );
    assert!(ok, "{err}");
    let set: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (set["train_rows"].as_u64(), set["test_rows"].as_u64()),
        (Some(600), Some(150))
    );

    let (ok, out, err) = cli(
        &url,
        &[
            "--json",
            "sweep",
            "sweeps",
            "--n",
            "150",
            "--models",
            "knn,lightgbm,extra-trees,logreg",
            "--seed",
            "3",
            "--features",
            "churn",
        ],
    );
    assert!(ok, "{err}");
    let sweep: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = sweep["id"].as_i64().unwrap().to_string();
    // Fed by the coordinator's upkeep; paused before any worker exists, nothing stays queued.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (ok, out, err) = cli(&url, &["--json", "sweep", "pause", &id]);
    assert!(ok, "{err}");
    let paused: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(paused["state"], "paused");
    assert_eq!(paused["counts"]["queued"], 0, "{paused}");
    assert!(paused["submitted"].as_u64().unwrap() > 0, "{paused}");
    let (ok, _, err) = cli(&url, &["sweep", "resume", &id]);
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&url, &["--json", "sweep", "extend", &id, "--n", "10"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["n"],
        160
    );

    let cache = |w: &str| tmp.path().join(w).to_str().unwrap().to_string();
    let (c1, c2) = (cache("w1"), cache("w2"));
    let _w1 = Worker::start("w1", &url, &["--slots", "2", "--feature-cache", &c1]);
    let _w2 = Worker::start("w2", &url, &["--slots", "2", "--feature-cache", &c2]);
    let done = wait_for("the sweep to finish", Duration::from_secs(600), || {
        let url = url.clone();
        let id = id.clone();
        async move {
            let (ok, out, _) = cli(&url, &["--json", "sweep", "status", &id]);
            let s: serde_json::Value = serde_json::from_str(&out).ok()?;
            (ok && s["state"] == "done").then_some(s)
        }
    })
    .await;
    assert_eq!(done["submitted"], 160);
    assert_eq!(done["counts"]["succeeded"], 160, "{done}");
    assert_eq!(done["counts"]["failed"], 0, "{done}");

    let (ok, out, err) = cli(
        &url,
        &[
            "--json",
            "jobs",
            "--experiment",
            "sweeps",
            "--all",
            "--limit",
            "1000",
        ],
    );
    assert!(ok, "{err}");
    let jobs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: HashSet<String> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["state"] == "succeeded")
        .map(|j| j["spec"]["name"].as_str().unwrap().to_string())
        .collect();
    let want: HashSet<String> = (0..160).map(|i| format!("sweep{id}-{i}")).collect();
    assert_eq!(names, want, "every job of the sweep ran once");

    let (ok, out, err) = cli(&url, &["--json", "leaderboard", "sweeps", "--top", "5"]);
    assert!(ok, "{err}");
    let board: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(board["models"], 160);
    let aucs: Vec<f64> = board["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["cv_auc"].as_f64().unwrap())
        .collect();
    assert!(aucs.windows(2).all(|w| w[0] >= w[1]), "{aucs:?}");
    assert!(aucs[0] > 0.7, "the best model learned the table: {aucs:?}");
}
