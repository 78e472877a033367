//! The main job at a small size (issue 15): `stackhive demo` generates data, trains CNN folds
//! through real worker and trainer processes, runs a level-2 sweep through the stacker, builds
//! the ensembles as a job, and writes the submission and the report; its summary names every
//! AUC the README promises.

use std::process::Command;

use stackhive_tests::cluster::bin;

#[test]
fn the_demo_runs_the_mission_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let run = Command::new(bin("stackhive"))
        .args(["--json", "demo", "--out"])
        .arg(&out)
        .args([
            "--patients",
            "100",
            "--test-patients",
            "30",
            "--epochs",
            "1",
            "--cnn-configs",
            "1",
            "--models",
            "6",
            "--types",
            "lightgbm,logreg,knn",
            "--worker-bin",
        ])
        .arg(bin("stackhive-worker"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "the demo failed: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    // 1 CNN configuration (its 5 folds are one model) and 6 level-2 models.
    assert_eq!(summary["models"], 7, "{summary}");
    for key in [
        "best_cnn_oof_auc",
        "best_level2_oof_auc",
        "median_nested_auc",
        "recommended_nested_auc",
        "recommended_test_auc",
        "oracle_test_auc",
    ] {
        let v = summary[key].as_f64().unwrap_or(f64::NAN);
        assert!((0.0..=1.0).contains(&v), "{key} = {v} in {summary}");
    }
    let submission = std::fs::read_to_string(out.join("submission.csv")).unwrap();
    let test_rows = summary["test_rows"].as_u64().unwrap() as usize;
    assert_eq!(submission.lines().count(), test_rows + 1);
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(report.contains("<svg"));
    // A second run into the same folder is refused before anything starts.
    let again = Command::new(bin("stackhive"))
        .args(["demo", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}
