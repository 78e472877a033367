//! A feature matrix made ready for the models, with what the jobs of one feature set share:
//! the rows of each fold, each fold's standardised dense form (numeric columns scaled by the
//! fold's training rows, categorical ones expanded one-hot, missing values at the mean) for
//! KNN, logistic regression and the nets, each fold's binned LightGBM dataset, and each fold's
//! nearest neighbours. Each is computed the first time a job asks, then kept for the next job
//! of the same feature set (issue 12, item 7).
//!
//! Must not: let a fold's validation rows shape anything fitted for that fold (scaling is fit
//! on the training rows only).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use stackhive_data::matrix::{ColumnKind, FeatureMatrix};

use crate::error::StackError;
use crate::lgb::BinnedDataset;
use crate::models::knn::Neighbours;

/// Training and validation rows of one fold.
#[derive(Debug)]
pub struct FoldRows {
    pub train: Vec<usize>,
    pub valid: Vec<usize>,
}

/// Dense, standardised copies of one fold's rows (row-major, `cols` wide).
#[derive(Debug)]
pub struct DenseFold {
    pub cols: usize,
    pub train: Vec<f32>,
    pub valid: Vec<f32>,
    pub test: Vec<f32>,
}

pub struct Prepared {
    pub matrix: FeatureMatrix,
    pub folds: Vec<FoldRows>,
    dense: Vec<OnceLock<Arc<DenseFold>>>,
    binned: Mutex<HashMap<u16, Arc<BinnedDataset>>>,
    neighbours: Mutex<HashMap<u16, Arc<Neighbours>>>,
}

impl Prepared {
    pub fn new(matrix: FeatureMatrix) -> Result<Prepared, StackError> {
        matrix
            .check()
            .map_err(|e| StackError::Input(e.to_string()))?;
        let k = matrix.k;
        let folds: Vec<FoldRows> = (0..k)
            .map(|f| FoldRows {
                train: (0..matrix.train_rows())
                    .filter(|&i| matrix.folds[i] != f)
                    .collect(),
                valid: (0..matrix.train_rows())
                    .filter(|&i| matrix.folds[i] == f)
                    .collect(),
            })
            .collect();
        for (f, rows) in folds.iter().enumerate() {
            if rows.valid.is_empty() || rows.train.is_empty() {
                return Err(StackError::Input(format!(
                    "fold {f} of {k} has no rows to validate or train on"
                )));
            }
            let pos = rows
                .train
                .iter()
                .filter(|&&i| matrix.labels[i] == 1)
                .count();
            if pos == 0 || pos == rows.train.len() {
                return Err(StackError::Input(format!(
                    "the training rows of fold {f} hold one class only; a binary target needs both"
                )));
            }
        }
        Ok(Prepared {
            dense: (0..k).map(|_| OnceLock::new()).collect(),
            binned: Mutex::new(HashMap::new()),
            neighbours: Mutex::new(HashMap::new()),
            matrix,
            folds,
        })
    }

    pub fn k(&self) -> u16 {
        self.matrix.k
    }

    /// Row-major values of `rows` of the train side.
    pub fn gather(&self, rows: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * self.matrix.cols());
        for &i in rows {
            out.extend_from_slice(self.matrix.train_row(i));
        }
        out
    }

    pub fn labels(&self, rows: &[usize]) -> Vec<f32> {
        rows.iter().map(|&i| self.matrix.labels[i] as f32).collect()
    }

    /// The fold's standardised dense form.
    pub fn dense(&self, fold: u16) -> Arc<DenseFold> {
        self.dense[fold as usize]
            .get_or_init(|| Arc::new(standardise(&self.matrix, &self.folds[fold as usize])))
            .clone()
    }

    /// The fold's training rows binned for LightGBM, binned by the first job that asks.
    pub fn binned(&self, fold: u16, threads: usize) -> Result<Arc<BinnedDataset>, StackError> {
        if let Some(d) = lock(&self.binned).get(&fold) {
            return Ok(d.clone());
        }
        let rows = &self.folds[fold as usize].train;
        let d = Arc::new(BinnedDataset::new(
            &self.gather(rows),
            &self.labels(rows),
            rows.len(),
            self.matrix.cols(),
            threads,
        )?);
        Ok(lock(&self.binned).entry(fold).or_insert(d).clone())
    }

    /// The fold's nearest neighbours (up to `k` of them, more kept when a job asked for more).
    pub fn neighbours(&self, fold: u16, k: usize, threads: usize) -> Arc<Neighbours> {
        if let Some(n) = lock(&self.neighbours).get(&fold) {
            if n.k >= k {
                return n.clone();
            }
        }
        let n = Arc::new(Neighbours::compute(&self.dense(fold), k, threads));
        lock(&self.neighbours).insert(fold, n.clone());
        n
    }
}

/// A mutex's guard, even after a panic elsewhere poisoned it (the data stays whole).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Numeric columns scaled to zero mean and unit variance over the fold's training rows (NaN at
/// 0, the mean); categorical columns one-hot (NaN: all zeros).
fn standardise(m: &FeatureMatrix, rows: &FoldRows) -> DenseFold {
    struct Out {
        numeric: Option<(f32, f32)>,
        levels: u32,
    }
    let c = m.cols();
    let outs: Vec<Out> = (0..c)
        .map(|j| match m.columns[j].kind {
            ColumnKind::Categorical { levels } => Out {
                numeric: None,
                levels,
            },
            ColumnKind::Numeric => {
                let vals: Vec<f64> = rows
                    .train
                    .iter()
                    .map(|&i| m.train[i * c + j] as f64)
                    .filter(|v| v.is_finite())
                    .collect();
                let n = vals.len().max(1) as f64;
                let mean = vals.iter().sum::<f64>() / n;
                let sd = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
                Out {
                    numeric: Some((mean as f32, if sd > 1e-12 { sd as f32 } else { 1.0 })),
                    levels: 0,
                }
            }
        })
        .collect();
    let width: usize = outs
        .iter()
        .map(|o| {
            if o.numeric.is_some() {
                1
            } else {
                o.levels as usize
            }
        })
        .sum();
    let encode = |row: &[f32], out: &mut Vec<f32>| {
        for (j, o) in outs.iter().enumerate() {
            match o.numeric {
                Some((mean, sd)) => {
                    let v = row[j];
                    out.push(if v.is_finite() { (v - mean) / sd } else { 0.0 });
                }
                None => {
                    let code = row[j];
                    for l in 0..o.levels {
                        out.push((code.is_finite() && code as u32 == l) as u8 as f32);
                    }
                }
            }
        }
    };
    let side = |ids: &mut dyn Iterator<Item = &[f32]>, n: usize| {
        let mut out = Vec::with_capacity(n * width);
        for row in ids {
            encode(row, &mut out);
        }
        out
    };
    DenseFold {
        cols: width,
        train: side(
            &mut rows.train.iter().map(|&i| m.train_row(i)),
            rows.train.len(),
        ),
        valid: side(
            &mut rows.valid.iter().map(|&i| m.train_row(i)),
            rows.valid.len(),
        ),
        test: side(
            &mut (0..m.test_rows()).map(|i| m.test_row(i)),
            m.test_rows(),
        ),
    }
}
