//! Nested validation: every method is fitted k + 1 times, once on all rows (the final fit,
//! which gives the weights and the test predictions) and once without each outer fold, whose
//! rows it then predicts. The concatenated held-out predictions are the nested out-of-fold
//! vector; its AUC is the honest estimate of how the method generalises, because each row was
//! predicted by a selection that never saw its label.
//! Must not: let a fit read the fold it predicts (`select::Fit` holds only the other folds).

use crate::blend::{Blend, Rows};
use crate::config::Method;
use crate::methods;
use crate::select::{Fit, Shared};

pub(crate) struct Fitted {
    /// The fit on all rows.
    pub blend: Blend,
    /// Nested out-of-fold predictions, one per train row.
    pub nested: Vec<f32>,
}

/// Fits every method k + 1 times; also returns the pool (correlation-cap survivors) of the
/// all-rows fit.
pub(crate) fn fit_methods(shared: &Shared<'_>, list: &[Method]) -> (Vec<Fitted>, Vec<usize>) {
    let prep = shared.prep;
    let mut nested = vec![vec![0.0f32; prep.n()]; list.len()];
    let mut finals = Vec::with_capacity(list.len());
    let mut kept = Vec::new();
    // One fit at a time: each holds its pool's predictions gathered over its rows, and the
    // greedy loops inside are parallel already.
    for index in 0..=prep.k {
        let fit = Fit::new(shared, index);
        for (i, &method) in list.iter().enumerate() {
            let blend = methods::fit(method, shared, &fit);
            if index == 0 {
                finals.push(blend);
                continue;
            }
            let rows = &prep.fold_rows[index - 1];
            for (&r, p) in rows.iter().zip(blend.apply(shared.models, Rows::Oof(rows))) {
                nested[i][r] = p;
            }
        }
        if index == 0 {
            kept = fit.pool.clone();
        }
    }
    let fitted = finals
        .into_iter()
        .zip(nested)
        .map(|(blend, nested)| Fitted { blend, nested })
        .collect();
    (fitted, kept)
}
