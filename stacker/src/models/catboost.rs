//! CatBoost through its own Python package: no Rust library trains CatBoost, so each fold is
//! handed to `python/catboost_bridge.py` (embedded in the binary) with the interpreter named by
//! `STACKHIVE_PYTHON` (scripts/setup.sh points it at the project's `.venv`). Rows travel as
//! raw little-endian f32 files in a temporary folder; categorical columns go as CatBoost
//! categorical features.

use std::path::Path;
use std::process::Command;

use stackhive_data::matrix::ColumnKind;
use stackhive_spec::stack::Params;

use super::{Fit, FoldPrediction};
use crate::error::StackError;

const BRIDGE: &str = include_str!("../../python/catboost_bridge.py");

/// The Python that has `catboost`.
pub fn python() -> String {
    std::env::var("STACKHIVE_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn write_f32(path: &Path, v: &[f32]) -> Result<(), StackError> {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes)
        .map_err(|e| StackError::Io(format!("cannot write {}: {e}", path.display())))
}

fn read_f32(path: &Path, n: usize) -> Result<Vec<f32>, StackError> {
    let bytes = std::fs::read(path)
        .map_err(|e| StackError::Library(format!("CatBoost wrote no {}: {e}", path.display())))?;
    if bytes.len() != n * 4 {
        return Err(StackError::Library(format!(
            "CatBoost wrote {} predictions to {}, expected {n}",
            bytes.len() / 4,
            path.display()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

pub fn fit(p: &Params, f: &Fit<'_>) -> Result<FoldPrediction, StackError> {
    let m = &f.prep.matrix;
    let rows = &f.prep.folds[f.fold as usize];
    let work = tempfile::tempdir()
        .map_err(|e| StackError::Io(format!("cannot make a work folder: {e}")))?;
    let dir = work.path();
    let cat: Vec<usize> = m
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c.kind, ColumnKind::Categorical { .. }))
        .map(|(i, _)| i)
        .collect();
    let job = serde_json::json!({
        "params": {
            "iterations": p.usize("iterations"),
            "learning_rate": p.f64("learning_rate"),
            "depth": p.usize("depth"),
            "l2_leaf_reg": p.f64("l2_leaf_reg"),
        },
        "threads": f.threads,
        "seed": f.seed % (1 << 31),
        "cols": m.cols(),
        "cat_features": cat,
    });
    std::fs::write(dir.join("job.json"), job.to_string())
        .map_err(|e| StackError::Io(e.to_string()))?;
    write_f32(&dir.join("train.f32"), &f.prep.gather(&rows.train))?;
    let labels: Vec<u8> = rows.train.iter().map(|&i| m.labels[i]).collect();
    std::fs::write(dir.join("train.labels"), labels).map_err(|e| StackError::Io(e.to_string()))?;
    write_f32(&dir.join("valid.f32"), &f.prep.gather(&rows.valid))?;
    write_f32(&dir.join("test.f32"), &m.test)?;
    let out = Command::new(python())
        .arg("-c")
        .arg(BRIDGE)
        .arg(dir)
        .output()
        .map_err(|e| StackError::Library(format!("cannot run {} for CatBoost: {e}", python())))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String = err
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ");
        return Err(StackError::Library(format!(
            "CatBoost bridge failed ({}): {tail}",
            out.status
        )));
    }
    Ok(FoldPrediction {
        valid: read_f32(&dir.join("valid.pred"), rows.valid.len())?,
        test: read_f32(&dir.join("test.pred"), m.test_rows())?,
    })
}
