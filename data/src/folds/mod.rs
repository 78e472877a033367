//! Fold schemes over a dataset's train rows: which validation fold each row belongs to.
//! Folds are computed once per (dataset, scheme, k, seed), stored (`Folds::to_bytes`) and used
//! by every job of an experiment (shared/DESIGN.md, "Data and predictions"), so assignment is
//! a pure function of the rows and the spec.
//!
//! Only `isic2020` rows validate; external rows get fold `-1` and train in every fold.
//! Must not: look at features or images, or use a random generator whose stream could change
//! with a dependency upgrade (see `SplitMix64`): the same inputs must give the same folds in
//! every version.

mod report;
mod simple;
mod triple;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::isic::TrainRow;

pub use report::{report, FoldReport, FoldStats, Quantiles};

/// The fold of a row that never validates (an external source).
pub const EXTERNAL: i16 = -1;
/// The largest k: fold numbers are stored as `i16`.
pub const MAX_K: u16 = i16::MAX as u16;

/// How rows are split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// Stratified on the target, grouped by patient, balanced in images per patient.
    #[default]
    TripleStratified,
    /// Row-level stratified K-fold. Leaks patients across folds; kept as a baseline.
    Stratified,
    /// Patient-grouped K-fold without stratification.
    Group,
}

impl Scheme {
    pub const ALL: [Scheme; 3] = [Scheme::TripleStratified, Scheme::Stratified, Scheme::Group];

    pub fn name(self) -> &'static str {
        match self {
            Scheme::TripleStratified => "triple-stratified",
            Scheme::Stratified => "stratified",
            Scheme::Group => "group",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheme {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Scheme, DataError> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "triple-stratified" | "triple" => Ok(Scheme::TripleStratified),
            "stratified" => Ok(Scheme::Stratified),
            "group" => Ok(Scheme::Group),
            _ => Err(DataError::UnknownScheme {
                found: s.to_string(),
            }),
        }
    }
}

/// A fold scheme, its number of folds and its seed: together with the dataset hash, the key
/// folds are stored under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FoldSpec {
    pub scheme: Scheme,
    pub k: u16,
    pub seed: u64,
}

impl Default for FoldSpec {
    fn default() -> FoldSpec {
        FoldSpec {
            scheme: Scheme::TripleStratified,
            k: 5,
            seed: 42,
        }
    }
}

/// The validation fold of every train row, in row order: `0..k`, or `EXTERNAL` (-1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Folds {
    pub k: u16,
    pub fold: Vec<i16>,
}

/// `to_bytes` layout: this magic, k as u16 LE, then one i16 LE per row.
const MAGIC: &[u8; 4] = b"SHF1";

impl Folds {
    pub fn len(&self) -> usize {
        self.fold.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fold.is_empty()
    }

    /// Rows that validate in fold `f`.
    pub fn validation_rows(&self, f: u16) -> Vec<usize> {
        let f = f as i16;
        (0..self.fold.len())
            .filter(|&i| self.fold[i] == f)
            .collect()
    }

    /// Rows that train when fold `f` validates: every other fold and all external rows.
    pub fn training_rows(&self, f: u16) -> Vec<usize> {
        let f = f as i16;
        (0..self.fold.len())
            .filter(|&i| self.fold[i] != f)
            .collect()
    }

    /// Compact storage: 4 magic bytes, k (u16 LE), then the folds as i16 LE — 2 bytes a row.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(6 + 2 * self.fold.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.k.to_le_bytes());
        for &f in &self.fold {
            out.extend_from_slice(&f.to_le_bytes());
        }
        out
    }

    /// The inverse of `to_bytes`; rejects a wrong magic, an odd length or a fold outside
    /// `-1..k`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Folds, DataError> {
        if bytes.len() < 6 || &bytes[..4] != MAGIC {
            return Err(DataError::FoldsBytes(format!(
                "expected the magic SHF1 and k, found {} bytes starting {:02x?}",
                bytes.len(),
                &bytes[..bytes.len().min(4)]
            )));
        }
        let k = u16::from_le_bytes([bytes[4], bytes[5]]);
        if !(2..=MAX_K).contains(&k) {
            return Err(DataError::FoldsBytes(format!(
                "expected k between 2 and {MAX_K}, found {k}"
            )));
        }
        let body = &bytes[6..];
        if !body.len().is_multiple_of(2) {
            return Err(DataError::FoldsBytes(format!(
                "expected 2 bytes per row, found {} bytes after the header",
                body.len()
            )));
        }
        let fold: Vec<i16> = body
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        if let Some((row, &f)) = fold
            .iter()
            .enumerate()
            .find(|(_, &f)| f < EXTERNAL || f >= k as i16)
        {
            return Err(DataError::FoldsBytes(format!(
                "expected folds between -1 and {}, found {f} at row {row}",
                k - 1
            )));
        }
        Ok(Folds { k, fold })
    }
}

/// Assigns every train row its validation fold under `spec`. Deterministic: the same rows
/// (in the same order) and spec always give the same folds.
pub fn assign(rows: &[TrainRow], spec: &FoldSpec) -> Result<Folds, DataError> {
    if !(2..=MAX_K).contains(&spec.k) {
        return Err(DataError::BadFoldCount {
            k: spec.k,
            max: MAX_K,
        });
    }
    let groups = Patients::of(rows);
    let stratify = spec.scheme != Scheme::Group;
    let validating = groups.rows();
    if stratify && groups.positives() == 0 {
        return Err(DataError::NoPositives {
            scheme: spec.scheme.name(),
            rows: validating,
        });
    }
    let (unit, found) = match spec.scheme {
        Scheme::Stratified => ("rows", validating),
        _ => ("patients", groups.list.len()),
    };
    if found < spec.k as usize {
        return Err(DataError::TooFewForFolds {
            scheme: spec.scheme.name(),
            k: spec.k,
            unit,
            found,
        });
    }
    if stratify && groups.positives() < spec.k as usize {
        // Not an error: the folds are still valid, but some will have no positive, and a
        // per-fold AUC is undefined there.
        tracing::warn!(
            scheme = spec.scheme.name(),
            k = spec.k,
            positives = groups.positives(),
            "fewer positives than folds"
        );
    }
    let mut fold = vec![EXTERNAL; rows.len()];
    match spec.scheme {
        Scheme::TripleStratified => triple::assign(&groups, spec.k, spec.seed, &mut fold),
        Scheme::Group => simple::group(&groups, spec.k, spec.seed, &mut fold),
        Scheme::Stratified => simple::stratified(rows, spec.k, spec.seed, &mut fold),
    }
    Ok(Folds { k: spec.k, fold })
}

/// One patient's validating (isic2020) rows.
#[derive(Debug)]
pub(crate) struct Patient {
    pub rows: Vec<usize>,
    pub positives: usize,
}

/// The validating rows grouped by patient, patients in order of first appearance.
#[derive(Debug)]
pub(crate) struct Patients {
    pub list: Vec<Patient>,
}

impl Patients {
    pub fn of(rows: &[TrainRow]) -> Patients {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut list: Vec<Patient> = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            if r.is_external() {
                continue;
            }
            let p = *index.entry(&r.patient_id).or_insert_with(|| {
                list.push(Patient {
                    rows: Vec::new(),
                    positives: 0,
                });
                list.len() - 1
            });
            list[p].rows.push(i);
            list[p].positives += (r.target == 1) as usize;
        }
        Patients { list }
    }

    pub fn rows(&self) -> usize {
        self.list.iter().map(|p| p.rows.len()).sum()
    }

    pub fn positives(&self) -> usize {
        self.list.iter().map(|p| p.positives).sum()
    }
}

/// SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number generators",
/// OOPSLA 2014). Used instead of `rand`'s generators because stored folds must be
/// reproducible from (dataset, spec) forever, and `rand` documents that `StdRng`'s stream may
/// change between versions; shuffling needs no more than this.
#[derive(Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (multiply-shift; the bias is below 2^-40 for any n a table has).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_reject_damage() {
        let folds = Folds {
            k: 5,
            fold: vec![0, 4, -1, 2, 3, 1],
        };
        let bytes = folds.to_bytes();
        assert_eq!(bytes.len(), 6 + 12);
        assert_eq!(Folds::from_bytes(&bytes).unwrap(), folds);
        assert!(Folds::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        bad[6] = 5; // fold 5 with k = 5
        let err = Folds::from_bytes(&bad).unwrap_err().to_string();
        assert!(err.contains("found 5 at row 0"), "{err}");
        assert!(Folds::from_bytes(b"nope").is_err());
    }

    #[test]
    fn splitmix_stream_is_pinned() {
        // Stored folds depend on this exact stream; a change here changes every fold file.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }

    #[test]
    fn scheme_names_parse() {
        for s in Scheme::ALL {
            assert_eq!(s.name().parse::<Scheme>().unwrap(), s);
        }
        let err = "kfold".parse::<Scheme>().unwrap_err().to_string();
        assert!(err.contains("\"kfold\""), "{err}");
    }
}
