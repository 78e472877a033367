//! Restacking (issue 12, item 3): a matrix built from level-2 models' predictions also gets the
//! columns those models were trained on, so a level-3 model sees the level-2 inputs next to the
//! level-2 outputs (StackNet's `restacking`). Rows are matched by their identity (image name or
//! table id), never by position.
//!
//! Must not: mix folds. The level-2 models' out-of-fold predictions are honest only on the folds
//! they were trained with, so a base whose fold of any row differs is refused.

use std::collections::HashMap;

use crate::error::DataError;
use crate::matrix::{Column, FeatureMatrix};

/// `matrix` with every column of `base` appended (named `{prefix}{name}`), rows matched by id.
pub fn restack(
    matrix: FeatureMatrix,
    base: &FeatureMatrix,
    prefix: &str,
) -> Result<FeatureMatrix, DataError> {
    let bad = |m: String| Err(DataError::Features(m));
    if base.k != matrix.k {
        return bad(format!(
            "restacking needs the folds the base set used: it has k = {}, this set k = {}",
            base.k, matrix.k
        ));
    }
    let index = |ids: &[String]| -> HashMap<String, usize> {
        ids.iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i))
            .collect()
    };
    let (train_at, test_at) = (index(&base.train_ids), index(&base.test_ids));
    let find = |at: &HashMap<String, usize>, id: &str, side: &str| {
        at.get(id).copied().ok_or_else(|| {
            DataError::Features(format!(
                "restacking: {side} row {id:?} is not in the base feature set"
            ))
        })
    };
    let train_rows: Vec<usize> = matrix
        .train_ids
        .iter()
        .map(|id| find(&train_at, id, "train"))
        .collect::<Result<_, _>>()?;
    let test_rows: Vec<usize> = matrix
        .test_ids
        .iter()
        .map(|id| find(&test_at, id, "test"))
        .collect::<Result<_, _>>()?;
    if let Some((i, &r)) = train_rows
        .iter()
        .enumerate()
        .find(|&(i, &r)| base.folds[r] != matrix.folds[i])
    {
        return bad(format!(
            "restacking needs the folds the base set used: row {:?} validates in fold {} here and in fold {} there",
            matrix.train_ids[i], matrix.folds[i], base.folds[r]
        ));
    }
    let widen = |values: &[f32], cols: usize, rows: &[usize], other: &[f32]| {
        let bc = base.cols();
        let mut out = Vec::with_capacity(rows.len() * (cols + bc));
        for (i, &r) in rows.iter().enumerate() {
            out.extend_from_slice(&values[i * cols..(i + 1) * cols]);
            out.extend_from_slice(&other[r * bc..(r + 1) * bc]);
        }
        out
    };
    let cols = matrix.cols();
    let train = widen(&matrix.train, cols, &train_rows, &base.train);
    let test = widen(&matrix.test, cols, &test_rows, &base.test);
    let mut columns = matrix.columns;
    columns.extend(base.columns.iter().map(|c| Column {
        name: format!("{prefix}{}", c.name),
        kind: c.kind.clone(),
    }));
    let out = FeatureMatrix {
        columns,
        train,
        test,
        ..matrix
    };
    out.check()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(ids: &[&str], folds: &[u16], cols: &[&str], fill: f32) -> FeatureMatrix {
        let n = ids.len();
        FeatureMatrix {
            columns: cols.iter().map(|c| Column::numeric(*c)).collect(),
            train_ids: ids.iter().map(|s| s.to_string()).collect(),
            test_ids: vec!["t".into()],
            labels: (0..n).map(|i| (i % 2) as u8).collect(),
            folds: folds.to_vec(),
            k: 2,
            source_rows: (0..n as u32).collect(),
            train_groups: (0..n as u32).collect(),
            test_groups: vec![0],
            train: (0..n * cols.len()).map(|i| fill + i as f32).collect(),
            test: vec![fill; cols.len()],
        }
    }

    #[test]
    fn appends_the_base_columns_by_row_identity() {
        let level2 = matrix(&["a", "b", "c"], &[0, 1, 0], &["m1"], 0.0);
        // The base lists its rows in another order.
        let base = matrix(&["c", "a", "b"], &[0, 0, 1], &["x", "y"], 100.0);
        let out = restack(level2, &base, "in:").unwrap();
        let names: Vec<&str> = out.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["m1", "in:x", "in:y"]);
        // Row "a": its own m1 (0.0), then base row 1 ("a"): 102, 103.
        assert_eq!(out.train_row(0), [0.0, 102.0, 103.0]);
        assert_eq!(out.train_row(2), [2.0, 100.0, 101.0]);
    }

    #[test]
    fn refuses_other_folds_and_missing_rows() {
        let level2 = matrix(&["a", "b"], &[0, 1], &["m1"], 0.0);
        let swapped = matrix(&["a", "b"], &[1, 0], &["x"], 0.0);
        let e = restack(level2.clone(), &swapped, "in:")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("validates in fold 0 here and in fold 1 there"),
            "{e}"
        );
        let short = matrix(&["a"], &[0], &["x"], 0.0);
        let e = restack(level2, &short, "in:").unwrap_err().to_string();
        assert!(e.contains("train row \"b\" is not in the base"), "{e}");
    }
}
