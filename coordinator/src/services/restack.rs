//! Restacking for feature sets (issue 12, item 3): the feature sets that the chosen `stack`
//! models trained on, read back from the store, whose columns a level-3 set then carries too
//! (`stackhive_data::restack`).
//!
//! Must not: restack a set with no `stack` model in it (nothing to restack), or use a base
//! matrix whose bytes do not match its recorded hash.

use std::collections::BTreeSet;
use std::sync::Arc;

use stackhive_data::matrix::FeatureMatrix;

use crate::domain::model::Job;
use crate::error::{Error, Result};
use crate::store::Store;

/// Ids of the feature sets the `stack` jobs among `models` trained on, sorted.
pub async fn bases(store: &Arc<dyn Store>, models: &[Vec<Job>]) -> Result<Vec<String>> {
    let mut ids = BTreeSet::new();
    for job in models.iter().flatten().filter(|j| j.spec.kind == "stack") {
        let payload: serde_json::Value =
            serde_json::from_str(&job.spec.payload).unwrap_or_default();
        let named = payload["features"].as_str().unwrap_or_default();
        let set = store.get_feature_set(named).await.map_err(|_| {
            Error::FailedPrecondition(format!(
                "job {} trained on feature set {named:?}, which no longer exists; it cannot be restacked",
                job.id
            ))
        })?;
        ids.insert(set.id);
    }
    if ids.is_empty() {
        return Err(Error::FailedPrecondition(
            "restacking adds the inputs of the chosen stack models, and none of the chosen models is a stack job".into(),
        ));
    }
    Ok(ids.into_iter().collect())
}

/// The matrix of stored set `id`, checked against its hash.
pub async fn matrix(store: &Arc<dyn Store>, id: &str) -> Result<FeatureMatrix> {
    let rec = store.get_feature_set(id).await?;
    let mut bytes = Vec::with_capacity(rec.size as usize);
    while (bytes.len() as u64) < rec.size {
        let chunks = store.feature_set_chunks(id, bytes.len() as u64, 16).await?;
        if chunks.is_empty() {
            return Err(Error::Config(format!(
                "feature set {id} is missing bytes from {}",
                bytes.len()
            )));
        }
        for (start, data) in chunks {
            if start != bytes.len() as u64 {
                return Err(Error::Config(format!(
                    "feature set {id}: expected a chunk at {}, found one at {start}",
                    bytes.len()
                )));
            }
            bytes.extend_from_slice(&data);
        }
    }
    if blake3::hash(&bytes).to_hex().as_str() != rec.blake3 {
        return Err(Error::Config(format!(
            "feature set {id}'s stored bytes do not match its hash"
        )));
    }
    FeatureMatrix::from_bytes(&bytes).map_err(|e| Error::Config(format!("feature set {id}: {e}")))
}

/// Column prefix of base `id`'s columns.
pub fn prefix(id: &str) -> String {
    format!("in-{}:", &id[..id.len().min(8)])
}
