//! k nearest neighbours on the fold's standardised features (Euclidean). The expensive part,
//! the distances from every validation and test row to every training row of the fold, is done
//! once per fold with up to `K_CACHE` neighbours kept sorted; every KNN job of the feature set
//! then reads its `k` off that list (issue 12, item 7: one distance computation per fold for
//! every k).

use ndarray::{ArrayView2, Axis};
use rayon::prelude::*;
use stackhive_spec::stack::Params;

use super::{Fit, FoldPrediction};
use crate::error::StackError;
use crate::prep::DenseFold;

/// Neighbours kept per row: the largest `k` of the zoo's space.
pub const K_CACHE: usize = 500;
/// Query rows per block of the distance computation (one matrix product each).
const BLOCK: usize = 256;

/// The nearest training rows of each validation and test row, nearest first.
#[derive(Debug)]
pub struct Neighbours {
    pub k: usize,
    /// `valid_rows × k` indices into the fold's training rows, and squared distances.
    pub valid: (Vec<u32>, Vec<f32>),
    pub test: (Vec<u32>, Vec<f32>),
}

impl Neighbours {
    pub fn compute(d: &DenseFold, k: usize, threads: usize) -> Neighbours {
        let n = d.train.len() / d.cols.max(1);
        let k = k.max(K_CACHE).min(n);
        let train = ArrayView2::from_shape((n, d.cols), &d.train).expect("dense train shape");
        let train_sq: Vec<f32> = train.axis_iter(Axis(0)).map(|r| r.dot(&r)).collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build()
            .expect("a thread pool");
        let side = |q: &[f32]| -> (Vec<u32>, Vec<f32>) {
            let rows = q.len() / d.cols.max(1);
            let blocks: Vec<(Vec<u32>, Vec<f32>)> = pool.install(|| {
                (0..rows.div_ceil(BLOCK))
                    .into_par_iter()
                    .map(|b| {
                        let lo = b * BLOCK;
                        let hi = (lo + BLOCK).min(rows);
                        let qb =
                            ArrayView2::from_shape((hi - lo, d.cols), &q[lo * d.cols..hi * d.cols])
                                .expect("query block shape");
                        let dots = qb.dot(&train.t());
                        let mut idx = Vec::with_capacity((hi - lo) * k);
                        let mut dist = Vec::with_capacity((hi - lo) * k);
                        let mut cand: Vec<(f32, u32)> = Vec::with_capacity(n);
                        for (r, row) in dots.axis_iter(Axis(0)).enumerate() {
                            let q_sq = qb.row(r).dot(&qb.row(r));
                            cand.clear();
                            cand.extend(row.iter().enumerate().map(|(j, &dot)| {
                                ((q_sq + train_sq[j] - 2.0 * dot).max(0.0), j as u32)
                            }));
                            if k < n {
                                cand.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
                                cand.truncate(k);
                            }
                            cand.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                            idx.extend(cand.iter().map(|c| c.1));
                            dist.extend(cand.iter().map(|c| c.0));
                        }
                        (idx, dist)
                    })
                    .collect()
            });
            let mut idx = Vec::with_capacity(rows * k);
            let mut dist = Vec::with_capacity(rows * k);
            for (i, d) in blocks {
                idx.extend(i);
                dist.extend(d);
            }
            (idx, dist)
        };
        Neighbours {
            valid: side(&d.valid),
            test: side(&d.test),
            k,
        }
    }

    /// P(target = 1) of each row from its first `k` neighbours' labels.
    fn vote(
        &self,
        side: &(Vec<u32>, Vec<f32>),
        k: usize,
        labels: &[f32],
        by_distance: bool,
    ) -> Vec<f32> {
        let rows = side.0.len() / self.k.max(1);
        (0..rows)
            .map(|r| {
                let at = r * self.k;
                let (mut num, mut den) = (0f64, 0f64);
                for j in at..at + k.min(self.k) {
                    let w = if by_distance {
                        1.0 / (side.1[j].sqrt() as f64 + 1e-6)
                    } else {
                        1.0
                    };
                    num += w * labels[side.0[j] as usize] as f64;
                    den += w;
                }
                (num / den) as f32
            })
            .collect()
    }
}

pub fn fit(p: &Params, f: &Fit<'_>) -> Result<FoldPrediction, StackError> {
    let k = p.usize("k");
    let by_distance = p.str("weights") == "distance";
    let n = f.prep.neighbours(f.fold, k, f.threads);
    let labels = f.prep.labels(&f.prep.folds[f.fold as usize].train);
    Ok(FoldPrediction {
        valid: n.vote(&n.valid, k, &labels, by_distance),
        test: n.vote(&n.test, k, &labels, by_distance),
    })
}
