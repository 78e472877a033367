//! An ensemble's inputs from a feature matrix (`stackhive_data::matrix`): a feature set built
//! from models alone (no tabular or patient columns) holds one column per model, its rows
//! already aligned, labelled, fold-assigned and grouped by patient, so the coordinator's one
//! rule for what a model is (a `cnn` configuration's fold jobs together, any other job alone)
//! also decides what the ensemble combines.
//!
//! Must not: accept a column that is not a model's prediction (a categorical column, or a
//! set built with extras), or a model with a missing value.

use stackhive_data::matrix::{ColumnKind, FeatureMatrix};

use crate::{EnsembleError, Model, Problem};

/// The problem a matrix describes; `test_labels` only where the truth is known (generated data).
pub fn problem<'a>(m: &'a FeatureMatrix, test_labels: Option<&'a [u8]>) -> Problem<'a> {
    Problem {
        labels: &m.labels,
        folds: &m.folds,
        k: m.k,
        groups: &m.train_groups,
        test_len: m.test_rows(),
        test_groups: &m.test_groups,
        test_labels,
    }
}

/// One model per column: `ids[i]` and `kinds[i]` name column `i`'s model (its first job, and
/// its kind or model type). A set with more columns than models was built with extras.
pub fn models(
    m: &FeatureMatrix,
    ids: &[i64],
    kinds: &[String],
) -> Result<Vec<Model>, EnsembleError> {
    let (n, t, c) = (m.train_rows(), m.test_rows(), m.cols());
    if ids.len() != c || kinds.len() != c {
        return Err(EnsembleError::Input(format!(
            "expected a feature set built from models alone (one column per model, no --tabular, \
             --patient or --restack), found {c} columns for {} models",
            ids.len()
        )));
    }
    let mut out = Vec::with_capacity(c);
    for (j, col) in m.columns.iter().enumerate() {
        if col.kind != ColumnKind::Numeric {
            return Err(EnsembleError::Input(format!(
                "column {:?} of the feature set is categorical; expected model predictions",
                col.name
            )));
        }
        let oof: Vec<f32> = (0..n).map(|i| m.train[i * c + j]).collect();
        let test: Vec<f32> = (0..t).map(|i| m.test[i * c + j]).collect();
        out.push(Model {
            id: ids[j],
            name: col.name.clone(),
            kind: kinds[j].clone(),
            oof,
            test,
        });
    }
    Ok(out)
}
