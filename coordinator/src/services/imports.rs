//! Importing predictions made elsewhere (issue 12, item 4): a CSV of `image_name,prediction`
//! per side, from a Keras or PyTorch notebook, becomes a finished level-1 model of an
//! experiment. Rows are matched to the dataset by image name; nothing is stored unless every
//! validating train row and every test row is predicted exactly once by a finite number.

use std::collections::HashMap;
use std::sync::Arc;

use stackhive_proto::v1 as pb;

use crate::domain::model::{JobId, Predictions};
use crate::error::{Error, Result};
use crate::services::datasets::DatasetFiles;
use crate::store::Store;

/// Checks and stores an import; returns the new job's id and row counts.
pub async fn import(
    store: &Arc<dyn Store>,
    files: &DatasetFiles,
    r: pb::ImportPredictionsRequest,
) -> Result<(JobId, u32, u32)> {
    let bad = |m: String| Err(Error::invalid(m));
    crate::domain::validate::check_text("name", &r.name).map_err(Error::invalid)?;
    crate::domain::validate::check_text("experiment", &r.experiment).map_err(Error::invalid)?;
    if r.experiment.is_empty() {
        return bad("an import needs an experiment to belong to".into());
    }
    if r.oof_names.len() != r.oof.len() || r.test_names.len() != r.test.len() {
        return bad(format!(
            "{} out-of-fold names for {} values and {} test names for {} values; expected one name per value",
            r.oof_names.len(),
            r.oof.len(),
            r.test_names.len(),
            r.test.len()
        ));
    }
    for (side, values, names) in [
        ("out-of-fold", &r.oof, &r.oof_names),
        ("test", &r.test, &r.test_names),
    ] {
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return bad(format!(
                "{side} prediction for {} is {}, expected a finite number",
                names[i], values[i]
            ));
        }
    }
    let dataset = store.get_dataset(&r.dataset).await?;
    let ds = files.load(&dataset.hash).await?;

    let train_row: HashMap<&str, usize> = ds
        .train
        .iter()
        .enumerate()
        .map(|(i, t)| (t.image_name.as_str(), i))
        .collect();
    let test_row: HashMap<&str, usize> = ds
        .test
        .iter()
        .enumerate()
        .map(|(i, t)| (t.image_name.as_str(), i))
        .collect();
    let align =
        |side: &str, names: &[String], index: &HashMap<&str, usize>| -> Result<Vec<usize>> {
            let mut rows = Vec::with_capacity(names.len());
            let mut seen = vec![false; index.len()];
            for n in names {
                let Some(&i) = index.get(n.as_str()) else {
                    return Err(Error::invalid(format!(
                        "{side} predictions name {n:?}, which is not a {side} image of dataset {}",
                        dataset.hash
                    )));
                };
                if std::mem::replace(&mut seen[i], true) {
                    return Err(Error::invalid(format!(
                        "{side} predictions name {n:?} twice"
                    )));
                }
                rows.push(i);
            }
            Ok(rows)
        };
    let oof_rows = align("train", &r.oof_names, &train_row)?;
    let test_rows = align("test", &r.test_names, &test_row)?;
    let predicted: std::collections::HashSet<usize> = oof_rows.iter().copied().collect();
    let missing: Vec<&str> = ds
        .train
        .iter()
        .enumerate()
        .filter(|(i, t)| !t.is_external() && !predicted.contains(i))
        .map(|(_, t)| t.image_name.as_str())
        .collect();
    if !missing.is_empty() {
        return bad(format!(
            "out-of-fold predictions miss {} of the dataset's validating train rows (first: {}); every one needs a prediction",
            missing.len(),
            missing[..missing.len().min(3)].join(", ")
        ));
    }
    if test_rows.len() != ds.test.len() {
        return bad(format!(
            "test predictions cover {} of the {} test rows",
            test_rows.len(),
            ds.test.len()
        ));
    }
    let mut test = vec![0f32; ds.test.len()];
    for (&row, &v) in test_rows.iter().zip(&r.test) {
        test[row] = v;
    }
    let p = Predictions {
        oof_rows: oof_rows.iter().map(|&i| i as u32).collect(),
        oof: r.oof.clone(),
        test,
    };
    let result = serde_json::json!({ "imported": true, "dataset": dataset.hash }).to_string();
    let id = store
        .import_predictions(&r.experiment, &r.name, &result, &p)
        .await?;
    tracing::info!(job_id = id, experiment = %r.experiment, name = %r.name, "predictions imported");
    Ok((id, p.oof.len() as u32, p.test.len() as u32))
}
