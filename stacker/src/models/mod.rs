//! The model zoo: one type per module, each turning a fold's training rows into predictions
//! for that fold's validation rows and for the test rows. Hyperparameters arrive validated
//! (`stackhive_spec::stack`), so a model reads them without checking ranges again.

pub mod catboost;
pub mod gbm;
pub mod knn;
pub mod logreg;
pub mod nets;
pub mod xgboost;

use stackhive_spec::stack::{ModelType, Params};

use crate::error::StackError;
use crate::prep::Prepared;

/// What one fold's model predicts.
#[derive(Debug)]
pub struct FoldPrediction {
    /// One per validation row of the fold, in `Prepared::folds[f].valid` order.
    pub valid: Vec<f32>,
    /// One per test row.
    pub test: Vec<f32>,
}

/// A fold to fit: the shared preparation, the fold, the job's seed and the threads it may use.
pub struct Fit<'a> {
    pub prep: &'a Prepared,
    pub fold: u16,
    pub seed: u64,
    pub threads: usize,
}

/// Trains `model` with `params` on one fold.
pub fn fit(model: ModelType, params: &Params, f: &Fit<'_>) -> Result<FoldPrediction, StackError> {
    match model {
        ModelType::Lightgbm | ModelType::ExtraTrees | ModelType::RandomForest => {
            gbm::fit(model, params, f)
        }
        ModelType::Xgboost | ModelType::XgboostRf => xgboost::fit(model, params, f),
        ModelType::Catboost => catboost::fit(params, f),
        ModelType::Knn => knn::fit(params, f),
        ModelType::Logreg => logreg::fit(params, f),
        ModelType::Mlp | ModelType::EntityEmbedding | ModelType::Tabnet => {
            nets::fit(model, params, f)
        }
    }
}
