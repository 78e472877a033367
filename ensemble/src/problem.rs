//! The inputs of `run` (the train/test layout and the models' predictions), their validation,
//! and the derived indexes every later step shares (rows per fold, dense patient numbers).
//! Must not: look at predictions beyond checking them, or fit anything.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::EnsembleError;

/// The train/test layout the models were scored on.
#[derive(Clone, Copy, Debug)]
pub struct Problem<'a> {
    /// N train labels, 0 or 1.
    pub labels: &'a [u8],
    /// N fold indices in `0..k`, grouped by patient.
    pub folds: &'a [u16],
    pub k: u16,
    /// N patient indices (equal = same patient).
    pub groups: &'a [u32],
    /// M, the number of test rows.
    pub test_len: usize,
    /// M patient indices of the test rows.
    pub test_groups: &'a [u32],
    /// Known only for generated data (the oracle); `None` in real use.
    pub test_labels: Option<&'a [u8]>,
}

/// One level-1 or level-2 model: its out-of-fold predictions over the N train rows (each row
/// predicted by a model that did not train on it) and its predictions over the M test rows.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Model {
    pub id: i64,
    pub name: String,
    /// e.g. "cnn", "lightgbm".
    pub kind: String,
    pub oof: Vec<f32>,
    pub test: Vec<f32>,
}

/// A validated problem with the indexes derived from it.
pub(crate) struct Prepared<'a> {
    pub labels: &'a [u8],
    pub folds: &'a [u16],
    pub k: usize,
    /// Train rows of each fold, ascending.
    pub fold_rows: Vec<Vec<usize>>,
    /// Dense patient number (0..n_patients) of each train row.
    pub patient: Vec<u32>,
    pub n_patients: usize,
    pub test_len: usize,
    pub test_patient: Vec<u32>,
    pub n_test_patients: usize,
    pub test_labels: Option<&'a [u8]>,
}

fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), EnsembleError> {
    if expected != found {
        return Err(EnsembleError::Length {
            what,
            expected,
            found,
        });
    }
    Ok(())
}

fn check_labels(part: &'static str, labels: &[u8]) -> Result<(), EnsembleError> {
    match labels.iter().position(|&l| l > 1) {
        Some(row) => Err(EnsembleError::BadLabel {
            part,
            row,
            value: labels[row],
        }),
        None => Ok(()),
    }
}

/// Dense numbers for arbitrary patient ids, in order of first appearance.
fn densify(groups: &[u32]) -> (Vec<u32>, usize) {
    let mut ids: HashMap<u32, u32> = HashMap::new();
    let dense = groups
        .iter()
        .map(|g| {
            let next = ids.len() as u32;
            *ids.entry(*g).or_insert(next)
        })
        .collect();
    (dense, ids.len())
}

impl<'a> Prepared<'a> {
    pub fn new(p: &Problem<'a>) -> Result<Self, EnsembleError> {
        let n = p.labels.len();
        check_len("folds", n, p.folds.len())?;
        check_len("groups", n, p.groups.len())?;
        check_len("test_groups", p.test_len, p.test_groups.len())?;
        if let Some(t) = p.test_labels {
            check_len("test_labels", p.test_len, t.len())?;
            check_labels("test", t)?;
        }
        check_labels("train", p.labels)?;
        let positives = p.labels.iter().filter(|&&l| l == 1).count();
        if positives == 0 || positives == n {
            return Err(EnsembleError::SingleClass {
                class: if positives == 0 { 0 } else { 1 },
                rows: n,
            });
        }
        if p.k < 2 {
            return Err(EnsembleError::TooFewFolds(p.k));
        }
        let k = p.k as usize;
        let mut fold_rows = vec![Vec::new(); k];
        for (row, &fold) in p.folds.iter().enumerate() {
            if fold >= p.k {
                return Err(EnsembleError::FoldOutOfRange { row, fold, k: p.k });
            }
            fold_rows[fold as usize].push(row);
        }
        for (fold, rows) in fold_rows.iter().enumerate() {
            let positives = rows.iter().filter(|&&r| p.labels[r] == 1).count();
            if positives == 0 || positives == rows.len() {
                return Err(EnsembleError::FoldClasses {
                    fold: fold as u16,
                    positives,
                    negatives: rows.len() - positives,
                });
            }
        }
        // A patient split across folds would let nested selection see that patient's other
        // rows: the honest score this crate exists for would not be honest.
        let mut fold_of_group: HashMap<u32, u16> = HashMap::new();
        for (&g, &f) in p.groups.iter().zip(p.folds) {
            let first = *fold_of_group.entry(g).or_insert(f);
            if first != f {
                return Err(EnsembleError::PatientSpansFolds {
                    group: g,
                    first,
                    second: f,
                });
            }
        }
        let (patient, n_patients) = densify(p.groups);
        let (test_patient, n_test_patients) = densify(p.test_groups);
        Ok(Prepared {
            labels: p.labels,
            folds: p.folds,
            k,
            fold_rows,
            patient,
            n_patients,
            test_len: p.test_len,
            test_patient,
            n_test_patients,
            test_labels: p.test_labels,
        })
    }

    pub fn n(&self) -> usize {
        self.labels.len()
    }
}

fn check_values(m: &Model, part: &'static str, values: &[f32]) -> Result<(), EnsembleError> {
    // Probabilities are required: the logistic stacker takes logits and the raw averages must
    // stay in [0, 1]; the negated comparison rejects NaN as well.
    match values.iter().position(|v| !(*v >= 0.0 && *v <= 1.0)) {
        Some(row) => Err(EnsembleError::BadPrediction {
            id: m.id,
            name: m.name.clone(),
            part,
            row,
            value: values[row],
        }),
        None => Ok(()),
    }
}

/// Checks one model's vectors against the expected lengths; shared with the `Preselector`.
pub(crate) fn check_model(
    m: &Model,
    n: usize,
    test_len: Option<usize>,
) -> Result<(), EnsembleError> {
    let length = |part, expected, found| EnsembleError::ModelLength {
        id: m.id,
        name: m.name.clone(),
        part,
        expected,
        found,
    };
    if m.oof.len() != n {
        return Err(length("out-of-fold", n, m.oof.len()));
    }
    if let Some(t) = test_len {
        if m.test.len() != t {
            return Err(length("test", t, m.test.len()));
        }
    }
    check_values(m, "out-of-fold", &m.oof)?;
    check_values(m, "test", &m.test)
}

pub(crate) fn check_models(models: &[Model], prep: &Prepared<'_>) -> Result<(), EnsembleError> {
    if models.is_empty() {
        return Err(EnsembleError::NoModels);
    }
    let mut seen: HashMap<i64, &str> = HashMap::new();
    for m in models {
        if let Some(first) = seen.insert(m.id, &m.name) {
            return Err(EnsembleError::DuplicateId {
                id: m.id,
                first: first.to_string(),
                second: m.name.clone(),
            });
        }
        check_model(m, prep.n(), Some(prep.test_len))?;
    }
    Ok(())
}
