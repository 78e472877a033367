//! Folds on the coordinator: a stored dataset's train rows are split once per
//! (scheme, k, seed) with the data crate's schemes, and the assignment is stored so that every
//! job of an experiment validates on exactly the same rows.

use std::path::PathBuf;

use stackhive_data::folds::{self as f, FoldSpec, Scheme};
use stackhive_data::validate::{load_and_validate, ImageCheck, ValidateOptions};
use stackhive_proto::v1 as pb;

use crate::domain::model::FoldsRecord;
use crate::error::{Error, Result};

pub const DEFAULT_K: u32 = 5;
pub const DEFAULT_SEED: u64 = 42;

/// Canonical (scheme name, k, seed) from a request; empty and zero take the defaults.
pub fn spec(scheme: &str, k: u32, seed: u64) -> Result<(String, u32, u64)> {
    let scheme = match scheme {
        "" | "triple-stratified" => "triple-stratified",
        "stratified" => "stratified",
        "group" => "group",
        other => {
            return Err(Error::invalid(format!(
                "unknown fold scheme {other:?}, expected triple-stratified, stratified or group"
            )))
        }
    };
    let k = if k == 0 { DEFAULT_K } else { k };
    if !(2..=100).contains(&k) {
        return Err(Error::invalid(format!(
            "k must be between 2 and 100, found {k}"
        )));
    }
    Ok((
        scheme.to_string(),
        k,
        if seed == 0 { DEFAULT_SEED } else { seed },
    ))
}

fn scheme_of(name: &str) -> Scheme {
    name.parse().unwrap_or_default()
}

/// Loads the dataset at `root` and assigns its folds (on a blocking thread: it reads files).
pub async fn compute(
    root: PathBuf,
    hash: &str,
    (scheme, k, seed): (String, u32, u64),
) -> Result<FoldsRecord> {
    let hash = hash.to_string();
    tokio::task::spawn_blocking(move || {
        // The files were verified against their hash at upload: reading the CSVs is enough.
        let opts = ValidateOptions {
            drop_invalid: false,
            image_check: ImageCheck::Skip,
        };
        let (ds, _) = load_and_validate(&root, &opts).map_err(|e| {
            Error::FailedPrecondition(format!("dataset {hash} cannot be loaded: {e}"))
        })?;
        let fs = FoldSpec {
            scheme: scheme_of(&scheme),
            k: k as u16,
            seed,
        };
        let folds = f::assign(&ds.train, &fs).map_err(|e| Error::invalid(e.to_string()))?;
        let report = f::report(&ds.train, &folds).map_err(|e| Error::invalid(e.to_string()))?;
        Ok(FoldsRecord {
            dataset_hash: hash,
            scheme,
            k,
            seed,
            assignment: folds.to_bytes(),
            report: serde_json::to_string(&report).expect("a fold report serializes"),
            created_at: 0,
        })
    })
    .await
    .map_err(|e| Error::Config(format!("fold task failed: {e}")))?
}

pub fn response(r: &FoldsRecord, computed_now: bool) -> Result<pb::FoldsResponse> {
    let folds = f::Folds::from_bytes(&r.assignment).map_err(|e| {
        Error::Config(format!(
            "stored folds of {} are unreadable: {e}",
            r.dataset_hash
        ))
    })?;
    Ok(pb::FoldsResponse {
        dataset_hash: r.dataset_hash.clone(),
        scheme: r.scheme.clone(),
        k: r.k,
        seed: r.seed,
        fold: folds.fold.iter().map(|&x| x as i32).collect(),
        report_json: r.report.clone(),
        computed_now,
    })
}
