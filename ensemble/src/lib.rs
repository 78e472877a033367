//! stackhive's meta-ensemble: combines the level-1 and level-2 models' out-of-fold and test
//! predictions by several methods (mean, median, rank mean, best single, correlation cap,
//! Caruana selection, a logistic stacker, fold-bagged selection), scores each honestly by
//! nested validation with patient-bootstrap intervals and a simulated public/private
//! shake-up, and recommends the one to submit: the best only if it beats the median beyond
//! the noise, else the median.
//! Must not: train models, read files or talk to the network; no libtorch.

mod blend;
mod bootstrap;
mod caruana;
mod config;
mod error;
pub mod input;
mod kernels;
mod logistic;
mod methods;
mod nested;
mod outcome;
mod payload;
mod preselect;
mod problem;
mod recommend;
mod seeds;
mod select;
mod shakeup;
mod summary;
#[cfg(test)]
mod tests;

use rayon::prelude::*;
use stackhive_data::auc::roc_auc;

pub use config::{Config, Method};
pub use error::EnsembleError;
pub use outcome::{
    MethodResult, MethodShakeUp, ModelScore, Outcome, Recommendation, ShakeUp, ShakeUpOn,
};
pub use payload::{EnsembleSpec, ModelSource, Preselect, Source, MAX_PRESELECTED};
pub use preselect::Preselector;
pub use problem::{Model, Problem};
pub use recommend::verdict;
pub use shakeup::SHAKEUP_DELTAS_KEPT;
pub use summary::{summary, MODELS_KEPT};

use blend::Rows;
use kernels::Sorted;
use problem::Prepared;
use select::Shared;

/// The correlation matrix of the report covers at most this many kept models.
pub const KEPT_CORRELATION_MAX: usize = 30;

/// AUC on rows validation guarantees to hold both classes (every fold does).
fn auc(labels: &[u8], scores: &[f32]) -> f64 {
    roc_auc(labels, scores).unwrap_or(0.5)
}

/// Scores every configured method (and the median, the reference) on `models`.
pub fn run(
    problem: &Problem<'_>,
    models: &[Model],
    config: &Config,
) -> Result<Outcome, EnsembleError> {
    config.validate()?;
    let prep = Prepared::new(problem)?;
    problem::check_models(models, &prep)?;
    let list = config.methods_with_median();
    let median = list.iter().position(|&m| m == Method::Median).unwrap_or(0);
    let shared = Shared::new(&prep, models, config);
    let (n, k) = (prep.n(), prep.k);
    let all_folds = vec![true; k];
    let one_fold = |f: usize| (0..k).map(|g| g == f).collect::<Vec<bool>>();

    let model_scores = models
        .iter()
        .enumerate()
        .map(|(i, m)| ModelScore {
            id: m.id,
            name: m.name.clone(),
            kind: m.kind.clone(),
            auc: shared.auc(i, &all_folds),
            fold_aucs: (0..k).map(|f| shared.auc(i, &one_fold(f))).collect(),
        })
        .collect();

    let (fitted, kept) = nested::fit_methods(&shared, &list);
    let all_rows: Vec<usize> = (0..n).collect();
    let mut results: Vec<MethodResult> = list
        .iter()
        .zip(fitted)
        .map(|(&method, f)| {
            let in_sample = f.blend.apply(models, Rows::Oof(&all_rows));
            let test = f.blend.apply(models, Rows::Test);
            let fold_aucs = prep
                .fold_rows
                .iter()
                .map(|rows| {
                    let l: Vec<u8> = rows.iter().map(|&r| prep.labels[r]).collect();
                    let p: Vec<f32> = rows.iter().map(|&r| f.nested[r]).collect();
                    auc(&l, &p)
                })
                .collect();
            MethodResult {
                method,
                in_sample_auc: auc(prep.labels, &in_sample),
                nested_auc: auc(prep.labels, &f.nested),
                ci_low: 0.0,
                ci_high: 0.0,
                gain_over_median: 0.0,
                gain_ci_low: 0.0,
                gain_ci_high: 0.0,
                fold_aucs,
                weights: f.blend.weights(models),
                intercept: f.blend.intercept(),
                test_auc: prep.test_labels.and_then(|t| roc_auc(t, &test)),
                oof: f.nested,
                test,
            }
        })
        .collect();

    // Patient bootstrap, the same resamples for every method (paired gains).
    let sorted: Vec<Sorted> = results
        .par_iter()
        .map(|r| Sorted::new(&r.oof, prep.labels, &prep.patient))
        .collect();
    let boot = bootstrap::resample_aucs(&sorted, prep.n_patients, config.bootstrap, config.seed);
    let median_auc = results[median].nested_auc;
    for (i, r) in results.iter_mut().enumerate() {
        let point = r.nested_auc;
        (r.ci_low, r.ci_high) =
            bootstrap::interval(boot[i].iter().flatten().copied(), 0.95).unwrap_or((point, point));
        r.gain_over_median = point - median_auc;
        (r.gain_ci_low, r.gain_ci_high) = bootstrap::paired(&boot[i], &boot[median], 0.95)
            .unwrap_or((r.gain_over_median, r.gain_over_median));
    }

    let recommendation = recommend::recommend(&results, &boot, median);
    let shakeup = shakeup::shakeup(&list, board(&prep, &results), config);
    let shown = &kept[..kept.len().min(KEPT_CORRELATION_MAX)];
    let kept_correlation = shown
        .iter()
        .map(|&i| {
            shown
                .iter()
                .map(|&j| {
                    if i == j {
                        1.0
                    } else {
                        shared.corr.get(models, prep.folds, i, j, &all_folds)
                    }
                })
                .collect()
        })
        .collect();
    Ok(Outcome {
        rows: n,
        test_rows: prep.test_len,
        patients: prep.n_patients,
        k,
        models: model_scores,
        kept: kept.iter().map(|&i| models[i].id).collect(),
        kept_correlation,
        methods: results,
        shakeup,
        recommendation,
        config: config.clone(),
    })
}

/// The shake-up runs on the test rows when their labels are known (and hold both classes),
/// else on the nested out-of-fold rows.
fn board<'a>(prep: &'a Prepared<'a>, results: &'a [MethodResult]) -> shakeup::Board<'a> {
    match prep.test_labels {
        Some(t) if t.contains(&0) && t.contains(&1) => shakeup::Board {
            on: ShakeUpOn::Test,
            predictions: results.iter().map(|r| r.test.as_slice()).collect(),
            labels: t,
            patient: &prep.test_patient,
            n_patients: prep.n_test_patients,
        },
        _ => shakeup::Board {
            on: ShakeUpOn::Oof,
            predictions: results.iter().map(|r| r.oof.as_slice()).collect(),
            labels: prep.labels,
            patient: &prep.patient,
            n_patients: prep.n_patients,
        },
    }
}
