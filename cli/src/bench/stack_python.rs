//! The Python peer of `stackhive bench stack`: a scratch virtual environment under the bench's
//! folder that sees the project's `.venv` (PyTorch, XGBoost, CatBoost, NumPy, pandas) and gets
//! scikit-learn, lightgbm and pytorch-tabnet from the Python registry, and `stack_bench.py`
//! run in it over the same matrix and jobs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde::Deserialize;

/// The peer's own packages, pinned so that runs compare.
const PACKAGES: &[&str] = &["scikit-learn==1.9.1", "lightgbm==4.7.0", "tqdm==4.70.1"];
/// Installed without its dependencies (it pins an old NumPy; the `.venv`'s works).
const TABNET: &str = "pytorch-tabnet==4.1.0";
const SCRIPT: &str = include_str!("stack_bench.py");

/// One job's answer from the script.
#[derive(Debug, Deserialize)]
pub struct PyResult {
    pub index: usize,
    pub seconds: f64,
    pub oof_auc: f64,
}

fn base_python() -> PathBuf {
    std::env::var_os("STACKHIVE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".venv/bin/python"))
}

fn run_ok(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Creates (once) `work/pyenv` and returns its interpreter.
pub fn environment(work: &Path) -> anyhow::Result<PathBuf> {
    let env = work.join("pyenv");
    let python = env.join("bin/python");
    let base = base_python();
    if !python.is_file() {
        run_ok(
            Command::new(&base).args(["-m", "venv"]).arg(&env),
            "python -m venv",
        )?;
    }
    let site = |py: &Path| {
        run_ok(
            Command::new(py).args([
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ]),
            "python (site-packages)",
        )
    };
    // The project's packages, after the scratch environment's own.
    std::fs::write(
        Path::new(&site(&python)?).join("stackhive-venv.pth"),
        site(&base)? + "\n",
    )?;
    let ready = Command::new(&python)
        .args([
            "-c",
            "import sklearn, lightgbm, pytorch_tabnet, xgboost, catboost, torch",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ready {
        eprintln!("installing the Python peer into {} …", env.display());
        let pip = |args: &[&str]| {
            run_ok(
                Command::new(&python)
                    .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                    .args(args),
                "pip install",
            )
        };
        pip(PACKAGES)?;
        pip(&["--no-deps", TABNET])?;
    }
    Ok(python)
}

/// Runs `jobs` (the script's `jobs.json` form) with `procs` processes of `threads` threads;
/// returns each job's answer and the wall time of the whole run, interpreter start included.
pub fn run(
    python: &Path,
    work: &Path,
    jobs: &serde_json::Value,
    procs: usize,
    threads: usize,
) -> anyhow::Result<(Vec<PyResult>, f64)> {
    let script = work.join("stack_bench.py");
    std::fs::write(&script, SCRIPT)?;
    let jobs_file = work.join("jobs.json");
    std::fs::write(&jobs_file, jobs.to_string())?;
    let started = std::time::Instant::now();
    let out = run_ok(
        Command::new(python)
            .arg(&script)
            .arg(work)
            .arg(threads.to_string())
            .arg(procs.to_string())
            .arg(&jobs_file)
            .env("OMP_NUM_THREADS", threads.to_string())
            .env("PYTHONWARNINGS", "ignore"),
        "the Python side",
    )?;
    let wall = started.elapsed().as_secs_f64();
    let mut results = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(serde_json::from_str::<PyResult>)
        .collect::<Result<Vec<_>, _>>()
        .context("the Python side printed a line that does not parse")?;
    results.sort_by_key(|r| r.index);
    let expected = jobs.as_array().map_or(0, Vec::len);
    if results.len() != expected || results.iter().enumerate().any(|(i, r)| r.index != i) {
        bail!(
            "the Python side answered {} of {expected} jobs",
            results.len()
        );
    }
    Ok((results, wall))
}
