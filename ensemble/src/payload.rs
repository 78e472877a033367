//! The `ensemble` job kind's payload (issue 15): which models to combine and the ensemble's
//! settings. The coordinator checks it at submit, the worker reads it; both through this one
//! type.
//!
//! Two ways to name the models:
//! - `{"features": "<feature set id or name>", "config": {…}}`: a set built from models alone,
//!   one column per model, all read at once.
//! - `{"models": {"dataset": …, "experiments": […]}, "preselect": {"max_models": 1000,
//!   "cap": 0.995}, "config": {…}}`: every finished model of those experiments, however many;
//!   the worker streams their predictions in descending out-of-fold AUC through a
//!   [`crate::Preselector`] and builds the set of the ones it keeps, so tens of thousands of
//!   models never sit in memory together.
//!
//! The settings left out take their defaults (`Config`, `Preselect`).

use serde::{Deserialize, Serialize};

use crate::{Config, EnsembleError};

/// The models a streamed ensemble reads: the finished models of these experiments (or these
/// jobs), on the dataset's stored folds. The fields of a feature definition that apply.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    pub dataset: String,
    #[serde(default)]
    pub experiments: Vec<String>,
    #[serde(default)]
    pub job_ids: Vec<i64>,
    #[serde(default)]
    pub scheme: String,
    #[serde(default)]
    pub k: u32,
    #[serde(default)]
    pub seed: u64,
    /// Leave out cnn configurations whose folds have not all finished.
    #[serde(default)]
    pub skip_incomplete: bool,
}

/// How a streamed ensemble narrows the models down before combining them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Preselect {
    /// Models kept at most (the best by out-of-fold AUC that pass the cap).
    pub max_models: usize,
    /// A model whose out-of-fold correlation with a kept one exceeds this is dropped.
    pub cap: f64,
}

impl Default for Preselect {
    fn default() -> Self {
        Preselect {
            max_models: 1000,
            cap: 0.995,
        }
    }
}

/// Where the models come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A feature set built from models alone.
    Set(String),
    /// Models streamed and preselected by the worker.
    Stream {
        models: ModelSource,
        preselect: Preselect,
    },
}

#[derive(Clone, Debug)]
pub struct EnsembleSpec {
    pub source: Source,
    pub config: Config,
}

/// The payload as written; `EnsembleSpec` once checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    features: Option<String>,
    models: Option<ModelSource>,
    preselect: Option<Preselect>,
    #[serde(default)]
    config: Config,
}

const EXPECTED: &str = "expected {\"features\": \"<feature set>\", \"config\": {…}} or \
     {\"models\": {\"dataset\": …, \"experiments\": […]}, \"preselect\": {…}, \"config\": {…}}";

/// The most models a streamed ensemble keeps.
pub const MAX_PRESELECTED: usize = 20_000;

impl EnsembleSpec {
    pub fn from_json(v: &serde_json::Value) -> Result<Self, EnsembleError> {
        let bad = |m: String| Err(EnsembleError::Payload(m));
        let raw: Raw = serde_json::from_value(v.clone())
            .map_err(|e| EnsembleError::Payload(format!("ensemble payload: {e}; {EXPECTED}")))?;
        raw.config.validate()?;
        let source = match (raw.features, raw.models) {
            (Some(set), None) => {
                if raw.preselect.is_some() {
                    return bad(
                        "ensemble payload field \"preselect\" goes with \"models\", not with a \
                         feature set"
                            .into(),
                    );
                }
                if set.trim().is_empty() {
                    return bad(
                        "ensemble payload field \"features\" must name a feature set, \
                         found an empty string"
                            .into(),
                    );
                }
                Source::Set(set)
            }
            (None, Some(models)) => {
                if models.dataset.trim().is_empty() {
                    return bad("ensemble payload field \"models.dataset\" must name a \
                         registered dataset, found an empty string"
                        .into());
                }
                if models.experiments.is_empty() == models.job_ids.is_empty() {
                    return bad(format!(
                        "ensemble payload field \"models\" needs \"experiments\" or \"job_ids\", \
                         found {} experiments and {} job ids",
                        models.experiments.len(),
                        models.job_ids.len()
                    ));
                }
                let preselect = raw.preselect.unwrap_or_default();
                if !(2..=MAX_PRESELECTED).contains(&preselect.max_models) {
                    return bad(format!(
                        "ensemble payload field \"preselect.max_models\" must be 2 to \
                         {MAX_PRESELECTED}, found {}",
                        preselect.max_models
                    ));
                }
                if !(preselect.cap > 0.0 && preselect.cap <= 1.0) {
                    return bad(format!(
                        "ensemble payload field \"preselect.cap\" must be in (0, 1], found {}",
                        preselect.cap
                    ));
                }
                Source::Stream { models, preselect }
            }
            (Some(_), Some(_)) => {
                return bad(format!(
                    "ensemble payload names both \"features\" and \"models\"; {EXPECTED}"
                ))
            }
            (None, None) => return bad(format!("ensemble payload names no models; {EXPECTED}")),
        };
        Ok(EnsembleSpec {
            source,
            config: raw.config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: serde_json::Value) -> String {
        EnsembleSpec::from_json(&v).unwrap_err().to_string()
    }

    #[test]
    fn a_set_or_streamed_models_are_read_and_bad_payloads_say_why() {
        let s = EnsembleSpec::from_json(&json!({"features": "l1"})).unwrap();
        assert_eq!(s.source, Source::Set("l1".into()));
        let s = EnsembleSpec::from_json(&json!({
            "models": {"dataset": "isic", "experiments": ["l2"]},
            "preselect": {"max_models": 50}
        }))
        .unwrap();
        let Source::Stream { models, preselect } = s.source else {
            panic!("streamed")
        };
        assert_eq!(models.experiments, ["l2"]);
        assert_eq!((preselect.max_models, preselect.cap), (50, 0.995));

        assert!(err(json!({})).contains("names no models"));
        assert!(err(json!({"features": "a", "models": {"dataset": "d"}})).contains("both"));
        assert!(err(json!({"features": "a", "preselect": {}})).contains("goes with"));
        assert!(err(json!({"models": {"dataset": "d"}})).contains("found 0 experiments"));
        let e = err(json!({"models": {"dataset": "d", "experiments": ["e"]},
                           "preselect": {"max_models": 1}}));
        assert!(e.contains("must be 2 to 20000, found 1"), "{e}");
        let e = err(json!({"models": {"dataset": "d", "experiments": ["e"]},
                           "preselect": {"cap": 1.5}}));
        assert!(e.contains("found 1.5"), "{e}");
        assert!(err(json!({"models": {"dataset": "d", "folds": 3}})).contains("unknown field"));
    }
}
