//! Opens a realistic report (300 models of 4 kinds, 8 ROC curves, a 20 × 20 heatmap, 6
//! ensemble methods, a shake-up with 200 splits, 2,000 jobs on 3 workers) in headless Chromium:
//! it must load without a console error (the page's content security policy would log any
//! fetch or script it blocks), keep every chart in its DOM, and leave a screenshot in
//! `target/report-screenshot.png` for a person to look at.
//! Chromium is `chromium` on PATH or `$STACKHIVE_CHROMIUM`; without it this test fails and says
//! how to install it, because a skipped browser check reads like a passed one.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use stackhive_report::{
    roc_points, Curve, FoldRow, Heatmap, Interval, ModelBar, ReportData, ShakeMethod, ShakeUp,
    TimelineJob,
};

const INSTALL: &str = "apt-get update && apt-get install -y chromium";
const HOSTILE: &str = r#"<script>alert("x")</script> & co"#;

/// SplitMix64: a few lines of deterministic noise, so the data is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(1e-12), self.next());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn realistic() -> ReportData {
    let mut rng = Rng(7);
    let kinds = ["cnn_efficientnet", "cnn_resnet", "lightgbm", "logreg"];
    let mut models: Vec<ModelBar> = (0..300)
        .map(|i| {
            let kind = kinds[i % 4];
            let base = [0.855, 0.845, 0.87, 0.862][i % 4];
            let auc = (base + rng.normal() * 0.012).min(0.899);
            ModelBar {
                name: format!(
                    "{kind}-fold{}-seed{}-lr{:.0e}",
                    i % 5,
                    i / 20,
                    1e-4 * (1 + i % 3) as f64
                ),
                kind: kind.into(),
                auc,
            }
        })
        .collect();
    models[42].name = HOSTILE.into();
    models[42].auc = 0.893;

    // 5,000 rows with 2% positives, like the melanoma data; better models separate more.
    let labels: Vec<u8> = (0..5_000).map(|_| u8::from(rng.next() < 0.02)).collect();
    let roc_curves = [
        "stack: logreg",
        "stack: lightgbm",
        "caruana",
        "rank mean",
        "best cnn",
        "median cnn",
        "worst kept",
        HOSTILE,
    ]
    .iter()
    .enumerate()
    .map(|(i, name)| {
        let sep = 1.6 - 0.12 * i as f64;
        let scores: Vec<f32> = labels
            .iter()
            .map(|&l| (rng.normal() + sep * f64::from(l)) as f32)
            .collect();
        let auc = 0.87 - 0.01 * i as f64;
        Curve {
            name: (*name).into(),
            auc,
            points: roc_points(&labels, &scores, 200),
        }
    })
    .collect();

    let kept: Vec<String> = (0..20).map(|i| format!("{}-{i}", kinds[i % 4])).collect();
    let values = (0..20)
        .map(|i| {
            (0..20)
                .map(|j| match (i == j, i % 4 == j % 4) {
                    (true, _) => 1.0,
                    // Models of one kind agree far more than models of different kinds.
                    (false, true) => 0.92 + 0.005 * ((i * j) % 10) as f64,
                    (false, false) => 0.70 + 0.012 * ((i + j) % 10) as f64,
                })
                .collect()
        })
        .collect();

    let methods = [
        "logistic stack",
        "lightgbm stack",
        "caruana selection",
        "rank average",
        "mean",
        "best single",
    ];
    let intervals = methods
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let auc = 0.874 - 0.004 * i as f64 - if i == 5 { 0.02 } else { 0.0 };
            Interval {
                name: (*m).into(),
                auc,
                low: auc - 0.018,
                high: auc + 0.016,
                is_median: i == 2,
                recommended: i == 0,
            }
        })
        .collect();
    let fold_table = methods
        .iter()
        .map(|m| {
            let folds: Vec<f64> = (0..5).map(|_| 0.86 + rng.normal() * 0.01).collect();
            FoldRow {
                name: (*m).into(),
                mean: folds.iter().sum::<f64>() / 5.0,
                fold_aucs: folds,
            }
        })
        .collect();
    let shake = methods
        .iter()
        .map(|m| ShakeMethod {
            name: (*m).into(),
            deltas: (0..200).map(|_| rng.normal() * 0.015 - 0.002).collect(),
            mean_public: 0.87,
            mean_private: 0.868,
        })
        .collect();

    // 3 workers; the GPU worker trains CNN folds one at a time, the CPU workers run 4 jobs at once.
    let mut timeline = Vec::new();
    let mut clocks = [0.0f64; 9];
    for i in 0..2_000 {
        let lane = i % 9;
        let (worker, kind, length) = match lane {
            0 => ("gpu-0", "train_cnn", 30.0 + rng.next() * 20.0),
            1..=4 => (
                "cpu-1",
                if i % 3 == 0 {
                    "stack_lightgbm"
                } else {
                    "stack_logreg"
                },
                2.0 + rng.next() * 8.0,
            ),
            _ => ("cpu-2", "predict", 1.0 + rng.next() * 3.0),
        };
        let start = clocks[lane] + rng.next() * 0.5;
        clocks[lane] = start + length;
        let state = if i % 97 == 13 { "failed" } else { "succeeded" };
        timeline.push(TimelineJob {
            worker: worker.into(),
            kind: kind.into(),
            start_s: start,
            end_s: start + length,
            state: state.into(),
        });
    }

    ReportData {
        experiment: format!("melanoma-stack-2026-05 {HOSTILE}"),
        generated_at: "2026-05-01T12:00:00Z".into(),
        summary: vec![
            ("best single CNN".into(), "0.8612".into()),
            ("best ensemble (nested)".into(), "0.8740".into()),
            ("models trained".into(), "300".into()),
            ("jobs".into(), "2,000 (21 failed)".into()),
        ],
        recommendation: "Use the logistic-regression stack: its nested AUC is the highest, but its interval overlaps the median method's, so expect no more than a small gain over simple averaging.".into(),
        oracle_auc: Some(0.905),
        roc_curves,
        models,
        correlation: Some(Heatmap { labels: kept, values }),
        fold_table,
        intervals,
        shakeup: Some(ShakeUp { on: "the held-out test fold".into(), public_fraction: 0.3, methods: shake, public_best_loses: 0.46, public_best_vs_median_loses: 0.21 }),
        timeline,
    }
}

fn chromium_binary() -> String {
    let bin = std::env::var("STACKHIVE_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    match Command::new(&bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => bin,
        Ok(s) => panic!("{bin} --version exited with {s}; install Chromium with `{INSTALL}` or point STACKHIVE_CHROMIUM at a working binary"),
        Err(e) => panic!("cannot run {bin} ({e}): this test needs headless Chromium; install it with `{INSTALL}` (Debian) or set STACKHIVE_CHROMIUM to its path"),
    }
}

/// Runs Chromium headless on `page` with `args`, killing it after two minutes: a hung browser
/// must fail the test, not stall the suite.
fn run_chromium(bin: &str, profile: &Path, page: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    // Read both pipes while waiting, or a chatty browser blocks on a full pipe.
    let stdout = std::thread::spawn(move || {
        let mut b = Vec::new();
        out.read_to_end(&mut b).map(|_| b)
    });
    let stderr = std::thread::spawn(move || {
        let mut b = Vec::new();
        err.read_to_end(&mut b).map(|_| b)
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("{bin} {args:?} did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: stdout.join().unwrap().unwrap(),
        stderr: stderr.join().unwrap().unwrap(),
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let report = Path::new(env!("CARGO_MANIFEST_DIR"));
            report.parent().unwrap_or(report).join("target")
        })
}

#[test]
fn report_opens_in_headless_chromium_without_errors() {
    let bin = chromium_binary();
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    stackhive_report::write(&realistic(), &page).unwrap();
    let size = std::fs::metadata(&page).unwrap().len();
    println!("report: {size} bytes");
    assert!(
        size < 2_000_000,
        "the report is {size} bytes; the charts should aggregate more"
    );

    let dom = run_chromium(
        &bin,
        &dir.path().join("profile-dom"),
        &page,
        &["--dump-dom", "--enable-logging=stderr", "--v=0"],
    );
    let stderr = String::from_utf8_lossy(&dom.stderr);
    assert!(
        dom.status.success(),
        "chromium --dump-dom exited with {}:\n{stderr}",
        dom.status
    );
    // Console messages from the page (errors, CSP refusals) are logged as "CONSOLE(line)".
    let page_errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("Uncaught") || l.contains(":CONSOLE") || l.contains("Refused to"))
        .collect();
    assert!(
        page_errors.is_empty(),
        "the page logged errors:\n{}",
        page_errors.join("\n")
    );

    let html = String::from_utf8_lossy(&dom.stdout);
    let svgs = html.matches("<svg").count();
    assert!(svgs >= 8, "{svgs} charts in the DOM; expected 8");
    for id in [
        "roc",
        "models",
        "kinds",
        "correlation",
        "folds",
        "intervals",
        "shakeup",
        "timeline",
    ] {
        assert!(
            html.contains(&format!(r#"<section id="{id}">"#)),
            "section {id} missing from the DOM"
        );
    }
    assert!(
        html.contains("&lt;script&gt;alert(\"x\")&lt;/script&gt; &amp; co"),
        "the hostile name is shown as text"
    );
    assert!(
        !html.contains("<script"),
        "a script element made it into the DOM"
    );
    assert!(
        html.matches("<polyline").count() >= 8,
        "every ROC curve is drawn"
    );
    assert!(
        html.matches("<title>").count() > 300,
        "marks carry tooltips"
    );
    assert!(html.contains("<table class=\"folds\">"));

    let shot = dir.path().join("report.png");
    let run = run_chromium(
        &bin,
        &dir.path().join("profile-shot"),
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,6400",
        ],
    );
    assert!(
        run.status.success(),
        "chromium --screenshot exited with {}:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 50_000,
        "the screenshot is not a picture of a page ({} bytes)",
        png.len()
    );
    // Kept beside the build for a person to look at (the temp dir goes when the test ends).
    let target = target_dir();
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("report-screenshot.png"), &png).unwrap();
    std::fs::copy(&page, target.join("report-sample.html")).unwrap();
    println!(
        "screenshot: {}",
        target.join("report-screenshot.png").display()
    );
}
