//! XGBoost (`hist`) through the library of the xgboost-cpu wheel: boosting, and its
//! random-forest mode (`num_parallel_tree` trees in one round, no shrinkage).

use stackhive_spec::stack::{ModelType, Params};
use xgb::parameters::BoosterParameters;
use xgb::{Booster, DMatrix};

use super::{Fit, FoldPrediction};
use crate::error::StackError;

fn lib(e: xgb::XGBError) -> StackError {
    StackError::Library(format!("XGBoost: {e}"))
}

pub fn fit(model: ModelType, p: &Params, f: &Fit<'_>) -> Result<FoldPrediction, StackError> {
    let rows = &f.prep.folds[f.fold as usize];
    let mut train =
        DMatrix::from_dense(&f.prep.gather(&rows.train), rows.train.len()).map_err(lib)?;
    let labels = f.prep.labels(&rows.train);
    train.set_labels(&labels).map_err(lib)?;
    let mut b =
        Booster::new_with_cached_dmats(&BoosterParameters::default(), &[&train]).map_err(lib)?;
    let mut set = |k: &str, v: String| b.set_param(k, &v).map_err(lib);
    set("objective", "binary:logistic".into())?;
    set("tree_method", "hist".into())?;
    set("nthread", f.threads.to_string())?;
    set("seed", (f.seed % (1 << 31)).to_string())?;
    set("verbosity", "0".into())?;
    // The crate's defaults pin the intercept at 0.5; XGBoost's own default (and Python's) is
    // the mean label, which matters with 2% positives (leaf weights, `min_child_weight`).
    let mean = labels.iter().map(|&y| f64::from(y)).sum::<f64>() / labels.len().max(1) as f64;
    set("base_score", mean.clamp(1e-6, 1.0 - 1e-6).to_string())?;
    let rounds = match model {
        ModelType::Xgboost => {
            set("eta", p.f64("eta").to_string())?;
            set("max_depth", p.usize("max_depth").to_string())?;
            set("min_child_weight", p.f64("min_child_weight").to_string())?;
            set("subsample", p.f64("subsample").to_string())?;
            set("colsample_bytree", p.f64("colsample_bytree").to_string())?;
            set("lambda", p.f64("lambda").to_string())?;
            p.usize("num_boost_round")
        }
        ModelType::XgboostRf => {
            set("eta", "1".into())?;
            set(
                "num_parallel_tree",
                p.usize("num_parallel_tree").to_string(),
            )?;
            set("max_depth", p.usize("max_depth").to_string())?;
            set("subsample", p.f64("subsample").to_string())?;
            set("colsample_bynode", p.f64("colsample_bynode").to_string())?;
            set("min_child_weight", p.f64("min_child_weight").to_string())?;
            1
        }
        other => unreachable!("xgboost fits XGBoost types, not {other}"),
    };
    for i in 0..rounds {
        b.update(&train, i as i32).map_err(lib)?;
    }
    let predict = |x: Vec<f32>, n: usize| -> Result<Vec<f32>, StackError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let m = DMatrix::from_dense(&x, n).map_err(lib)?;
        b.predict(&m).map_err(lib)
    };
    Ok(FoldPrediction {
        valid: predict(f.prep.gather(&rows.valid), rows.valid.len())?,
        test: predict(f.prep.matrix.test.clone(), f.prep.matrix.test_rows())?,
    })
}
