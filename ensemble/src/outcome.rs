//! The result of `run`: per-model and per-method scores, the kept models, the simulated
//! leaderboard shake-up and the recommendation. Plain serialisable data for the CLI, the
//! coordinator's store and the HTML report.
//! Must not: compute anything; every number here is filled in by `run`.

use serde::{Deserialize, Serialize};

use crate::config::{Config, Method};

/// One input model's own out-of-fold scores.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelScore {
    pub id: i64,
    pub name: String,
    pub kind: String,
    /// Out-of-fold AUC over all train rows.
    pub auc: f64,
    /// Out-of-fold AUC on each fold's rows.
    pub fold_aucs: Vec<f64>,
}

/// One method's scores and predictions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MethodResult {
    pub method: Method,
    /// Fitted (selected) on all rows and scored on the same rows: optimistic for any method
    /// that selects.
    pub in_sample_auc: f64,
    /// The honest score: fold `f`'s rows predicted by the method fitted on the other folds
    /// only; the AUC of the concatenated nested predictions.
    pub nested_auc: f64,
    /// 95% percentile bootstrap interval of `nested_auc`, resampling patients.
    pub ci_low: f64,
    pub ci_high: f64,
    /// Nested AUC minus the median's, with its paired bootstrap 95% interval (same resamples).
    pub gain_over_median: f64,
    pub gain_ci_low: f64,
    pub gain_ci_high: f64,
    /// Nested AUC on each fold's rows.
    pub fold_aucs: Vec<f64>,
    /// The final fit on all rows, by model id: averaging weights (summing to 1), or the
    /// logistic stacker's coefficients on the models' logits.
    pub weights: Vec<(i64, f64)>,
    /// The logistic stacker's intercept; `None` for the averaging methods.
    pub intercept: Option<f64>,
    /// Nested out-of-fold predictions, one per train row.
    pub oof: Vec<f32>,
    /// The final fit's predictions on the test rows, in [0, 1].
    pub test: Vec<f32>,
    /// Test AUC, when the test labels are known (generated data only).
    pub test_auc: Option<f64>,
}

/// Which rows the shake-up split into public and private.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ShakeUpOn {
    /// The test rows with each method's test predictions (test labels known).
    Test,
    /// The train rows with each method's nested out-of-fold predictions.
    Oof,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MethodShakeUp {
    pub method: Method,
    pub mean_public: f64,
    pub mean_private: f64,
    /// Mean and standard deviation of private − public AUC.
    pub mean_delta: f64,
    pub sd_delta: f64,
    /// private − public AUC of the first repeats (at most `SHAKEUP_DELTAS_KEPT`), for a histogram.
    pub deltas: Vec<f64>,
}

/// Simulated public/private leaderboards: patients split at random, every method scored on
/// both parts of each split.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShakeUp {
    pub on: ShakeUpOn,
    /// Splits where both parts held both classes (the others are skipped).
    pub repeats: usize,
    pub public_fraction: f64,
    pub methods: Vec<MethodShakeUp>,
    /// Share of splits where the method best on public is not the best on private.
    pub public_best_loses: f64,
    /// Share of splits where the method best on public scores below the median on private.
    pub public_best_vs_median_loses: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Recommendation {
    pub method: Method,
    pub reason: String,
    /// Nested AUC gain over the median of the method with the highest nested AUC.
    pub gain_over_median: f64,
    /// Its paired bootstrap interval at `confidence`, widened for the number of methods
    /// compared (Bonferroni): picking the best of several and then testing it at 95% would
    /// crown noise far more often than one time in twenty.
    pub gain_ci: (f64, f64),
    pub confidence: f64,
    /// True when no method's gain over the median is distinguishable from noise (the
    /// recommendation is then the median).
    pub within_noise: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    pub rows: usize,
    pub test_rows: usize,
    pub patients: usize,
    pub k: usize,
    pub models: Vec<ModelScore>,
    pub methods: Vec<MethodResult>,
    /// Models kept by the correlation cap on all rows, in descending AUC.
    pub kept: Vec<i64>,
    /// Pearson correlations (out-of-fold) among the first `KEPT_CORRELATION_MAX` kept models.
    pub kept_correlation: Vec<Vec<f64>>,
    pub shakeup: ShakeUp,
    pub recommendation: Recommendation,
    pub config: Config,
}

impl Outcome {
    pub fn method(&self, method: Method) -> Option<&MethodResult> {
        self.methods.iter().find(|r| r.method == method)
    }
}
