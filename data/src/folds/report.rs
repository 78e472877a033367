//! Per-fold statistics of a fold assignment and the side-by-side table that
//! `stackhive folds report` prints, so schemes can be compared on what matters: fold sizes,
//! positive rates, the images-per-patient mix, and patients leaking across folds.
//! Must not: assign folds or judge them; it only describes.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::Folds;
use crate::error::DataError;
use crate::isic::TrainRow;

/// Images-per-patient quantiles (nearest rank) of the patients in one fold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantiles {
    pub p10: usize,
    pub p50: usize,
    pub p90: usize,
    pub max: usize,
}

impl Quantiles {
    fn of(mut counts: Vec<usize>) -> Quantiles {
        if counts.is_empty() {
            return Quantiles::default();
        }
        counts.sort_unstable();
        let at =
            |q: f64| counts[((q * counts.len() as f64).ceil() as usize).clamp(1, counts.len()) - 1];
        Quantiles {
            p10: at(0.10),
            p50: at(0.50),
            p90: at(0.90),
            max: counts[counts.len() - 1],
        }
    }
}

/// One validation fold (or, in `FoldReport::all`, all validating rows).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FoldStats {
    pub rows: usize,
    /// Patients with at least one row in this fold.
    pub patients: usize,
    pub positives: usize,
    /// `positives / rows` (0 for an empty fold).
    pub rate: f64,
    /// Over this fold's patients, counting only their rows in this fold.
    pub images_per_patient: Quantiles,
}

impl FoldStats {
    fn of(rows: &[TrainRow], members: impl Iterator<Item = usize>) -> FoldStats {
        let mut per_patient: HashMap<&str, usize> = HashMap::new();
        let (mut n, mut positives) = (0, 0);
        for i in members {
            n += 1;
            positives += (rows[i].target == 1) as usize;
            *per_patient.entry(&rows[i].patient_id).or_insert(0) += 1;
        }
        FoldStats {
            rows: n,
            patients: per_patient.len(),
            positives,
            rate: if n == 0 {
                0.0
            } else {
                positives as f64 / n as f64
            },
            images_per_patient: Quantiles::of(per_patient.into_values().collect()),
        }
    }
}

/// Statistics of one fold assignment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FoldReport {
    pub k: u16,
    /// Indexed by fold.
    pub folds: Vec<FoldStats>,
    /// All validating (isic2020) rows together.
    pub all: FoldStats,
    /// Rows that never validate.
    pub external_rows: usize,
    /// Patients whose validating rows are spread over more than one fold (0 unless the scheme
    /// ignores patients).
    pub leaked_patients: usize,
}

impl FoldReport {
    /// Largest relative distance of a fold's size from `rows / k` (0.02 = 2 %).
    pub fn max_size_deviation(&self) -> f64 {
        let target = self.all.rows as f64 / self.k as f64;
        self.folds
            .iter()
            .map(|f| (f.rows as f64 - target).abs() / target)
            .fold(0.0, f64::max)
    }

    /// Largest distance of a fold's positive rate from the overall one, in percentage points.
    pub fn max_rate_deviation_pp(&self) -> f64 {
        self.folds
            .iter()
            .map(|f| (f.rate - self.all.rate).abs() * 100.0)
            .fold(0.0, f64::max)
    }

    /// Several reports side by side, one column block per `(label, report)` and one line per
    /// fold, then the totals, the largest deviations and the leaked patients.
    pub fn render_table(columns: &[(&str, &FoldReport)]) -> String {
        const HEAD: &str = "   rows  pats   pos   rate  ipp p10/p50/p90/max";
        let width = HEAD.len();
        let mut out = String::new();
        let max_k = columns
            .iter()
            .map(|(_, r)| r.folds.len())
            .max()
            .unwrap_or(0);
        let _ = write!(out, "{:>7}", "");
        for (label, r) in columns {
            let title = format!("{label} (k={})", r.k);
            let _ = write!(out, " | {title:<width$}");
        }
        let _ = write!(out, "\n{:>7}", "fold");
        for _ in columns {
            let _ = write!(out, " | {HEAD}");
        }
        let cell = |s: &FoldStats| {
            let q = &s.images_per_patient;
            format!(
                "{:>7} {:>5} {:>5} {:>5.2}%  {:>19}",
                s.rows,
                s.patients,
                s.positives,
                s.rate * 100.0,
                format!("{}/{}/{}/{}", q.p10, q.p50, q.p90, q.max)
            )
        };
        for f in 0..max_k {
            let _ = write!(out, "\n{f:>7}");
            for (_, r) in columns {
                let text = r.folds.get(f).map(&cell).unwrap_or_default();
                let _ = write!(out, " | {text:<width$}");
            }
        }
        let _ = write!(out, "\n{:>7}", "all");
        for (_, r) in columns {
            let _ = write!(out, " | {:<width$}", cell(&r.all));
        }
        let _ = write!(out, "\n{:>7}", "max dev");
        for (_, r) in columns {
            let text = format!(
                "size ±{:.2}%  rate ±{:.3} pp",
                r.max_size_deviation() * 100.0,
                r.max_rate_deviation_pp()
            );
            let _ = write!(out, " | {text:<width$}");
        }
        let _ = write!(out, "\n{:>7}", "leaks");
        for (_, r) in columns {
            let text = format!(
                "{} patients split, {} external rows",
                r.leaked_patients, r.external_rows
            );
            let _ = write!(out, " | {text:<width$}");
        }
        // The last column block is padded like the others; trailing blanks help no one.
        let mut trimmed: String = out
            .lines()
            .map(|l| l.trim_end().to_string() + "\n")
            .collect();
        if trimmed.is_empty() {
            trimmed.push('\n');
        }
        trimmed
    }
}

/// Describes `folds` over `rows` (the rows they were assigned on).
pub fn report(rows: &[TrainRow], folds: &Folds) -> Result<FoldReport, DataError> {
    if rows.len() != folds.fold.len() {
        return Err(DataError::FoldsLength {
            expected: rows.len(),
            found: folds.fold.len(),
        });
    }
    let k = folds.k as usize;
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
    let mut first_fold: HashMap<&str, i16> = HashMap::new();
    let mut leaked: HashSet<&str> = HashSet::new();
    let mut external_rows = 0;
    for (i, &f) in folds.fold.iter().enumerate() {
        if f < 0 || f as usize >= k {
            external_rows += 1;
            continue;
        }
        members[f as usize].push(i);
        let first = *first_fold.entry(&rows[i].patient_id).or_insert(f);
        if first != f {
            leaked.insert(&rows[i].patient_id);
        }
    }
    Ok(FoldReport {
        k: folds.k,
        folds: members
            .iter()
            .map(|m| FoldStats::of(rows, m.iter().copied()))
            .collect(),
        all: FoldStats::of(rows, members.iter().flatten().copied()),
        external_rows,
        leaked_patients: leaked.len(),
    })
}
