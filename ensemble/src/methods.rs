//! Fitting each method on one fit's rows, giving a `Blend`. The rows a method may look at are
//! exactly the fit's; the caller applies the blend to the held-out fold (nested score) or to
//! everything (final fit).
//! Must not: predict; that is `blend.rs`, shared by all methods.

use crate::blend::Blend;
use crate::caruana::{caruana, fold_bagged};
use crate::config::Method;
use crate::logistic::logistic;
use crate::select::{Fit, Shared};

pub(crate) fn fit(method: Method, shared: &Shared<'_>, fit: &Fit) -> Blend {
    let all = shared.models.len();
    let equal = |ms: &[usize]| ms.iter().map(|&m| (m, 1.0)).collect();
    let everyone: Vec<usize> = (0..all).collect();
    match method {
        Method::Mean => Blend::Raw(equal(&everyone)),
        Method::Median => Blend::Median(everyone),
        Method::RankMean => Blend::Rank(equal(&everyone)),
        // The pool is in descending AUC on the fit rows and always keeps the best model.
        Method::BestSingle => Blend::Raw(vec![(fit.pool[0], 1.0)]),
        // Ranks, because the survivors may be on different scales (CNN and GBM outputs).
        Method::CorrelationCap => Blend::Rank(equal(&fit.pool)),
        Method::Caruana => caruana(shared, fit),
        Method::LogisticStacker => logistic(shared, fit),
        Method::FoldBagged => fold_bagged(shared, fit),
    }
}
