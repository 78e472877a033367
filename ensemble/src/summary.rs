//! The outcome as a small document: what an `ensemble` job stores as its result and what
//! `stackhive --json ensemble recommend` prints. Every score, interval, weight, the shake-up
//! and the recommendation, without the prediction vectors (a job's vectors go to its stored
//! predictions) and with at most [`MODELS_KEPT`] model scores, the best first.
//!
//! Must not: grow with the number of rows, or beyond the protocol's result limit for any
//! number of models.

use crate::Outcome;

/// Model scores a summary lists (the best by AUC); `models_total` says how many there were.
pub const MODELS_KEPT: usize = 500;

pub fn summary(outcome: &Outcome) -> serde_json::Value {
    let mut o = outcome.clone();
    for m in &mut o.methods {
        m.oof = Vec::new();
        m.test = Vec::new();
        m.weights.truncate(MODELS_KEPT);
    }
    let total = o.models.len();
    o.models.sort_by(|a, b| b.auc.total_cmp(&a.auc));
    o.models.truncate(MODELS_KEPT);
    let mut v = serde_json::to_value(&o).expect("an outcome serialises");
    v["models_total"] = total.into();
    v
}
