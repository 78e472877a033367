//! One model's predictions aligned to the dataset's rows, from the jobs it is made of: the rule
//! the coordinator applies when it builds a feature set and the worker applies when it streams
//! thousands of models into an ensemble's preselection, kept here so both read rows the same
//! way. A `cnn` configuration's fold jobs each predict their validating rows; together they
//! cover each row once, and their test predictions are averaged. Any other model is one job.
//!
//! Must not: accept a row predicted twice, or parts that disagree on the number of test rows.

use crate::error::DataError;
use crate::features::Level1;

/// One job's stored predictions: out-of-fold values at dataset train rows, and test values.
pub struct Part<'a> {
    pub job_id: i64,
    pub oof_rows: &'a [u32],
    pub oof: &'a [f32],
    pub test: &'a [f32],
}

/// Aligns `parts` into model `name`: `oof[row]` from the part that predicts `row` (NaN where
/// none does; the vector ends at the last predicted row), `test` the parts' mean.
pub fn align(name: String, parts: &[Part<'_>]) -> Result<Level1, DataError> {
    let bad = |m: String| Err(DataError::Features(format!("model {name}: {m}")));
    let mut oof: Vec<f32> = Vec::new();
    let mut owner: Vec<Option<i64>> = Vec::new();
    let test_len = parts.first().map_or(0, |p| p.test.len());
    let mut test = vec![0.0f64; test_len];
    for p in parts {
        if p.test.len() != test_len {
            return bad(format!(
                "job {} has {} test predictions, job {} has {test_len}",
                p.job_id,
                p.test.len(),
                parts[0].job_id
            ));
        }
        if p.oof_rows.len() != p.oof.len() {
            return bad(format!(
                "job {} has {} out-of-fold rows but {} values",
                p.job_id,
                p.oof_rows.len(),
                p.oof.len()
            ));
        }
        for (t, &v) in test.iter_mut().zip(p.test) {
            *t += f64::from(v) / parts.len() as f64;
        }
        for (&row, &v) in p.oof_rows.iter().zip(p.oof) {
            let row = row as usize;
            if row >= oof.len() {
                oof.resize(row + 1, f32::NAN);
                owner.resize(row + 1, None);
            }
            if let Some(first) = owner[row] {
                return bad(format!(
                    "jobs {first} and {} both predict train row {row} out of fold; a model needs one job per fold",
                    p.job_id
                ));
            }
            oof[row] = v;
            owner[row] = Some(p.job_id);
        }
    }
    Ok(Level1 {
        name,
        oof,
        test: test.into_iter().map(|v| v as f32).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part<'a>(job_id: i64, rows: &'a [u32], oof: &'a [f32], test: &'a [f32]) -> Part<'a> {
        Part {
            job_id,
            oof_rows: rows,
            oof,
            test,
        }
    }

    #[test]
    fn folds_fill_their_rows_and_average_the_test_side() {
        let m = align(
            "cnn-j1".into(),
            &[
                part(1, &[0, 3], &[0.1, 0.4], &[0.2, 0.4]),
                part(2, &[1], &[0.2], &[0.4, 0.8]),
            ],
        )
        .unwrap();
        assert_eq!(m.oof[..2], [0.1, 0.2]);
        assert!(m.oof[2].is_nan(), "row 2 is nobody's");
        assert_eq!(m.oof[3], 0.4);
        assert!((m.test[0] - 0.3).abs() < 1e-6 && (m.test[1] - 0.6).abs() < 1e-6);
    }

    #[test]
    fn a_row_predicted_twice_or_uneven_test_sides_are_refused() {
        let e = align(
            "m".into(),
            &[
                part(1, &[0, 1], &[0.1, 0.2], &[]),
                part(2, &[1], &[0.3], &[]),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("jobs 1 and 2 both predict train row 1"), "{e}");
        let e = align(
            "m".into(),
            &[part(1, &[0], &[0.1], &[0.5]), part(2, &[1], &[0.3], &[])],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("job 2 has 0 test predictions, job 1 has 1"),
            "{e}"
        );
    }
}
