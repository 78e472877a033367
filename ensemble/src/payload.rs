//! The `ensemble` job kind's payload (issue 15): the feature set whose columns are the models to
//! combine, and the ensemble's settings. The coordinator checks it at submit, the worker reads
//! it; both through this one type.
//!
//! Payload: `{"features": "<feature set id or name>", "config": {"bootstrap": 500, …}}`; the
//! settings left out take their defaults (`Config`).

use serde::{Deserialize, Serialize};

use crate::{Config, EnsembleError};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleSpec {
    pub features: String,
    #[serde(default)]
    pub config: Config,
}

impl EnsembleSpec {
    pub fn from_json(v: &serde_json::Value) -> Result<Self, EnsembleError> {
        let spec: EnsembleSpec = serde_json::from_value(v.clone()).map_err(|e| {
            EnsembleError::Payload(format!(
                "ensemble payload: {e}; expected {{\"features\": \"<feature set>\", \"config\": {{…}}}}"
            ))
        })?;
        if spec.features.trim().is_empty() {
            return Err(EnsembleError::Payload(
                "ensemble payload field \"features\" must name a feature set, found an empty string"
                    .into(),
            ));
        }
        spec.config.validate()?;
        Ok(spec)
    }
}
