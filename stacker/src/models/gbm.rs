//! LightGBM: gradient boosting, and the forests as LightGBM's `rf` boosting (bagged trees,
//! averaged) with `extra_trees` for extremely randomised trees — one library for all three, on
//! the fold's shared binned dataset.

use stackhive_spec::stack::{ModelType, Params};

use super::{Fit, FoldPrediction};
use crate::error::StackError;

pub fn fit(model: ModelType, p: &Params, f: &Fit<'_>) -> Result<FoldPrediction, StackError> {
    let common = format!(
        "objective=binary verbosity=-1 num_threads={} seed={} deterministic=true force_row_wise=true",
        f.threads, f.seed
    );
    let (params, iterations) = match model {
        ModelType::Lightgbm => (
            format!(
                "{common} boosting=gbdt learning_rate={} num_leaves={} min_data_in_leaf={} \
                 feature_fraction={} bagging_fraction={} bagging_freq={} lambda_l2={}",
                p.f64("learning_rate"),
                p.usize("num_leaves"),
                p.usize("min_data_in_leaf"),
                p.f64("feature_fraction"),
                p.f64("bagging_fraction"),
                (p.f64("bagging_fraction") < 1.0) as u8,
                p.f64("lambda_l2"),
            ),
            p.usize("num_iterations"),
        ),
        ModelType::RandomForest | ModelType::ExtraTrees => (
            format!(
                "{common} boosting=rf num_leaves={} min_data_in_leaf={} feature_fraction={} \
                 bagging_fraction={} bagging_freq=1 extra_trees={}",
                p.usize("num_leaves"),
                p.usize("min_data_in_leaf"),
                p.f64("feature_fraction"),
                p.f64("bagging_fraction"),
                model == ModelType::ExtraTrees,
            ),
            p.usize("num_trees"),
        ),
        other => unreachable!("gbm fits LightGBM types, not {other}"),
    };
    let data = f.prep.binned(f.fold, f.threads)?;
    let booster = data.train(&params, iterations)?;
    let rows = &f.prep.folds[f.fold as usize];
    Ok(FoldPrediction {
        valid: booster.predict(&f.prep.gather(&rows.valid), f.threads)?,
        test: booster.predict(&f.prep.matrix.test, f.threads)?,
    })
}
