//! The `stack` job kind (issue 12): one level-2 model — a type from the zoo with its
//! hyperparameters — trained on every fold of a feature set. Each model type documents its
//! hyperparameter space here, once: the coordinator validates a payload against it at submit
//! time, a sweep samples from it, and the stacker reads the validated values.
//!
//! Payload: `{"features": "<feature set id or name>", "model": "lightgbm",
//! "params": {"learning_rate": 0.05, …}, "seed": 7}`. Parameters left out take their default;
//! an unknown parameter or a value outside its range is refused with the range.

use std::collections::BTreeMap;
use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::SpecError;

const KIND: &str = "stack";

/// The model types of the zoo: every type the seed system used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelType {
    /// LightGBM gradient boosting.
    Lightgbm,
    /// XGBoost gradient boosting (`hist`).
    Xgboost,
    /// XGBoost's random-forest mode (`num_parallel_tree`, one round).
    XgboostRf,
    /// CatBoost, through the `catboost` Python package.
    Catboost,
    /// Extremely randomised trees: LightGBM's `rf` boosting with `extra_trees`.
    ExtraTrees,
    /// Random forest: LightGBM's `rf` boosting.
    RandomForest,
    /// k nearest neighbours on standardised features.
    Knn,
    /// L2 logistic regression with its strength chosen by inner cross-validation.
    Logreg,
    /// A fully connected net (tch).
    Mlp,
    /// Embeddings for the categorical columns plus a fully connected net (tch).
    EntityEmbedding,
    /// TabNet (Arik & Pfister 2019), on tch.
    Tabnet,
}

impl ModelType {
    pub const ALL: [ModelType; 11] = [
        ModelType::Lightgbm,
        ModelType::Xgboost,
        ModelType::XgboostRf,
        ModelType::Catboost,
        ModelType::ExtraTrees,
        ModelType::RandomForest,
        ModelType::Knn,
        ModelType::Logreg,
        ModelType::Mlp,
        ModelType::EntityEmbedding,
        ModelType::Tabnet,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ModelType::Lightgbm => "lightgbm",
            ModelType::Xgboost => "xgboost",
            ModelType::XgboostRf => "xgboost-rf",
            ModelType::Catboost => "catboost",
            ModelType::ExtraTrees => "extra-trees",
            ModelType::RandomForest => "random-forest",
            ModelType::Knn => "knn",
            ModelType::Logreg => "logreg",
            ModelType::Mlp => "mlp",
            ModelType::EntityEmbedding => "entity-embedding",
            ModelType::Tabnet => "tabnet",
        }
    }

    pub fn parse(s: &str) -> Result<ModelType, SpecError> {
        ModelType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| SpecError::Field {
                kind: KIND,
                field: "model".into(),
                message: format!(
                    "unknown model type {s:?}, expected one of {}",
                    ModelType::ALL.map(ModelType::name).join(", ")
                ),
            })
    }

    /// The hyperparameters of this type, with ranges, defaults and how a sweep samples them.
    pub fn space(self) -> &'static [Param] {
        match self {
            ModelType::Lightgbm => LIGHTGBM,
            ModelType::Xgboost => XGBOOST,
            ModelType::XgboostRf => XGBOOST_RF,
            ModelType::Catboost => CATBOOST,
            ModelType::ExtraTrees | ModelType::RandomForest => FORESTS,
            ModelType::Knn => KNN,
            ModelType::Logreg => LOGREG,
            ModelType::Mlp => MLP,
            ModelType::EntityEmbedding => ENTITY_EMBEDDING,
            ModelType::Tabnet => TABNET,
        }
    }
}

impl fmt::Display for ModelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

use Dist::*;

const LIGHTGBM: &[Param] = &[
    Param::new("num_iterations", IntLog(50, 1000), 300.0),
    Param::new("learning_rate", Log(0.01, 0.3), 0.05),
    Param::new("num_leaves", IntLog(4, 128), 31.0),
    Param::new("min_data_in_leaf", IntLog(5, 200), 20.0),
    Param::new("feature_fraction", Uniform(0.3, 1.0), 0.8),
    Param::new("bagging_fraction", Uniform(0.5, 1.0), 0.8),
    Param::new("lambda_l2", Log(1e-3, 10.0), 0.1),
];

const XGBOOST: &[Param] = &[
    Param::new("num_boost_round", IntLog(50, 1000), 300.0),
    Param::new("eta", Log(0.01, 0.3), 0.05),
    Param::new("max_depth", Int(2, 10), 6.0),
    Param::new("min_child_weight", Log(1.0, 50.0), 1.0),
    Param::new("subsample", Uniform(0.5, 1.0), 0.8),
    Param::new("colsample_bytree", Uniform(0.3, 1.0), 0.8),
    Param::new("lambda", Log(1e-3, 10.0), 1.0),
];

const XGBOOST_RF: &[Param] = &[
    Param::new("num_parallel_tree", IntLog(50, 500), 200.0),
    Param::new("max_depth", Int(4, 16), 10.0),
    Param::new("subsample", Uniform(0.5, 0.9), 0.632),
    Param::new("colsample_bynode", Uniform(0.2, 0.8), 0.5),
    Param::new("min_child_weight", Log(1.0, 20.0), 1.0),
];

const CATBOOST: &[Param] = &[
    Param::new("iterations", IntLog(100, 1000), 300.0),
    Param::new("learning_rate", Log(0.02, 0.3), 0.08),
    Param::new("depth", Int(3, 8), 6.0),
    Param::new("l2_leaf_reg", Log(1.0, 10.0), 3.0),
];

const FORESTS: &[Param] = &[
    Param::new("num_trees", IntLog(100, 500), 200.0),
    Param::new("num_leaves", IntLog(16, 256), 64.0),
    Param::new("feature_fraction", Uniform(0.2, 0.8), 0.5),
    Param::new("bagging_fraction", Uniform(0.5, 0.9), 0.632),
    Param::new("min_data_in_leaf", IntLog(1, 50), 5.0),
];

const KNN: &[Param] = &[
    Param::new("k", IntLog(5, 500), 50.0),
    Param::choice("weights", &["uniform", "distance"], 0),
];

const LOGREG: &[Param] = &[
    Param::new("cs", Int(5, 20), 10.0),
    Param::new("inner_folds", Int(3, 5), 3.0),
];

const MLP: &[Param] = &[
    Param::new("layers", Int(1, 3), 2.0),
    Param::new("width", IntLog(16, 256), 64.0),
    Param::new("dropout", Uniform(0.0, 0.5), 0.1),
    Param::new("lr", Log(1e-4, 1e-2), 1e-3),
    Param::new("epochs", IntLog(10, 100), 30.0),
    Param::new("batch", IntLog(64, 512), 256.0),
    Param::new("weight_decay", Log(1e-6, 1e-3), 1e-5),
];

const ENTITY_EMBEDDING: &[Param] = &[
    Param::new("embedding_dim", IntLog(2, 16), 4.0),
    Param::new("layers", Int(1, 3), 2.0),
    Param::new("width", IntLog(16, 256), 64.0),
    Param::new("dropout", Uniform(0.0, 0.5), 0.1),
    Param::new("lr", Log(1e-4, 1e-2), 1e-3),
    Param::new("epochs", IntLog(10, 100), 30.0),
    Param::new("batch", IntLog(64, 512), 256.0),
];

const TABNET: &[Param] = &[
    Param::new("n_d", IntLog(8, 64), 16.0),
    Param::new("n_steps", Int(3, 7), 4.0),
    Param::new("gamma", Uniform(1.0, 2.0), 1.5),
    Param::new("lambda_sparse", Log(1e-6, 1e-3), 1e-4),
    Param::new("lr", Log(5e-3, 5e-2), 2e-2),
    Param::new("epochs", IntLog(10, 100), 30.0),
    Param::new("batch", IntLog(256, 1024), 512.0),
];

/// How a hyperparameter is drawn, and its allowed range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dist {
    /// Uniform on [a, b].
    Uniform(f64, f64),
    /// Log-uniform on [a, b].
    Log(f64, f64),
    /// An integer, uniform on [a, b].
    Int(i64, i64),
    /// An integer, log-uniform on [a, b].
    IntLog(i64, i64),
    /// One of the names.
    Choice(&'static [&'static str]),
}

/// One hyperparameter of a model type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Param {
    pub name: &'static str,
    pub dist: Dist,
    /// For choices: the index of the default name.
    pub default: f64,
}

impl Param {
    const fn new(name: &'static str, dist: Dist, default: f64) -> Param {
        Param {
            name,
            dist,
            default,
        }
    }

    const fn choice(name: &'static str, names: &'static [&'static str], default: usize) -> Param {
        Param {
            name,
            dist: Dist::Choice(names),
            default: default as f64,
        }
    }

    fn default_value(&self) -> Value {
        match self.dist {
            Dist::Choice(names) => Value::from(names[self.default as usize]),
            Dist::Int(..) | Dist::IntLog(..) => Value::from(self.default as i64),
            _ => Value::from(self.default),
        }
    }

    /// A value drawn from the space.
    pub fn sample(&self, rng: &mut impl Rng) -> Value {
        match self.dist {
            Dist::Uniform(a, b) => Value::from(round6(rng.random_range(a..=b))),
            Dist::Log(a, b) => Value::from(round6(rng.random_range(a.ln()..=b.ln()).exp())),
            Dist::Int(a, b) => Value::from(rng.random_range(a..=b)),
            Dist::IntLog(a, b) => {
                let x = rng
                    .random_range((a as f64).ln()..=(b as f64 + 0.999).ln())
                    .exp();
                Value::from((x.floor() as i64).clamp(a, b))
            }
            Dist::Choice(names) => Value::from(names[rng.random_range(0..names.len())]),
        }
    }

    /// Checks a given value against the range.
    fn check(&self, model: ModelType, v: &Value) -> Result<Value, SpecError> {
        let err = |expected: String| SpecError::Field {
            kind: KIND,
            field: format!("params.{}", self.name),
            message: format!("{model} expects {expected}, found {v}"),
        };
        match self.dist {
            Dist::Uniform(a, b) | Dist::Log(a, b) => match v.as_f64() {
                Some(x) if x.is_finite() && (a..=b).contains(&x) => Ok(Value::from(x)),
                _ => Err(err(format!("a number from {a} to {b}"))),
            },
            Dist::Int(a, b) | Dist::IntLog(a, b) => match v.as_i64() {
                Some(x) if (a..=b).contains(&x) => Ok(Value::from(x)),
                _ => Err(err(format!("an integer from {a} to {b}"))),
            },
            Dist::Choice(names) => match v.as_str() {
                Some(s) if names.contains(&s) => Ok(v.clone()),
                _ => Err(err(format!("one of {}", names.join(", ")))),
            },
        }
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Validated hyperparameters: every parameter of the type, given or default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params(pub BTreeMap<String, Value>);

impl Params {
    pub fn f64(&self, name: &str) -> f64 {
        self.0
            .get(name)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("parameter {name} was validated"))
    }

    pub fn usize(&self, name: &str) -> usize {
        self.0
            .get(name)
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("parameter {name} was validated")) as usize
    }

    pub fn str(&self, name: &str) -> &str {
        self.0
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("parameter {name} was validated"))
    }
}

/// A `stack` job's payload, as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackSpec {
    /// Feature set id (hash of its definition) or name.
    pub features: String,
    pub model: String,
    #[serde(default)]
    pub params: serde_json::Map<String, Value>,
    /// Seeds the model (bagging, initialisation, shuffles).
    #[serde(default)]
    pub seed: u64,
}

/// A `stack` payload after validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StackJob {
    pub features: String,
    pub model: ModelType,
    pub params: Params,
    pub seed: u64,
}

impl StackSpec {
    pub fn from_json(v: &Value) -> Result<StackSpec, SpecError> {
        serde_json::from_value(v.clone()).map_err(|e| SpecError::Json {
            kind: KIND,
            message: e.to_string(),
        })
    }

    /// Checks the model type and every parameter, filling in defaults.
    pub fn validate(&self) -> Result<StackJob, SpecError> {
        if self.features.trim().is_empty() || self.features.len() > 128 {
            return Err(SpecError::Field {
                kind: KIND,
                field: "features".into(),
                message: format!(
                    "expected a feature set id or name, found {:?}",
                    self.features
                ),
            });
        }
        let model = ModelType::parse(&self.model)?;
        let space = model.space();
        if let Some(unknown) = self
            .params
            .keys()
            .find(|k| !space.iter().any(|p| p.name == *k))
        {
            return Err(SpecError::Field {
                kind: KIND,
                field: format!("params.{unknown}"),
                message: format!(
                    "{model} has no parameter {unknown:?}, expected {}",
                    space.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        let mut params = BTreeMap::new();
        for p in space {
            let v = match self.params.get(p.name) {
                Some(v) => p.check(model, v)?,
                None => p.default_value(),
            };
            params.insert(p.name.to_string(), v);
        }
        Ok(StackJob {
            features: self.features.clone(),
            model,
            params: Params(params),
            seed: self.seed,
        })
    }
}

/// Draws the hyperparameters of `model` for a sweep.
pub fn sample(model: ModelType, rng: &mut impl Rng) -> serde_json::Map<String, Value> {
    model
        .space()
        .iter()
        .map(|p| (p.name.to_string(), p.sample(rng)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn spec(model: &str, params: Value) -> StackSpec {
        StackSpec {
            features: "fs".into(),
            model: model.into(),
            params: params.as_object().unwrap().clone(),
            seed: 1,
        }
    }

    #[test]
    fn sampled_params_validate_and_bad_ones_say_the_range() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for model in ModelType::ALL {
            for _ in 0..50 {
                let p = sample(model, &mut rng);
                let job = spec(model.name(), Value::Object(p)).validate().unwrap();
                assert_eq!(job.params.0.len(), model.space().len());
            }
            let defaults = spec(model.name(), serde_json::json!({}))
                .validate()
                .unwrap();
            assert_eq!(defaults.params.0.len(), model.space().len(), "{model}");
        }
        let err = spec("lightgbm", serde_json::json!({"num_leaves": 1000}))
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "stack payload field \"params.num_leaves\": lightgbm expects an integer from 4 to 128, found 1000"
        );
        let err = spec("knn", serde_json::json!({"leaves": 3}))
            .validate()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("knn has no parameter \"leaves\", expected k, weights"),
            "{err}"
        );
        let err = spec("svm", serde_json::json!({})).validate().unwrap_err();
        assert!(
            err.to_string().contains("unknown model type \"svm\""),
            "{err}"
        );
        let err = spec("knn", serde_json::json!({"weights": "cosine"}))
            .validate()
            .unwrap_err();
        assert!(
            err.to_string().contains("one of uniform, distance"),
            "{err}"
        );
    }
}
