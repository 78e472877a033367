//! The feature matrix of level 2 (issue 12): the rows a level-2 model trains and predicts on,
//! already aligned and fold-assigned, in one compact binary form that the coordinator builds
//! once, a worker fetches once (checked by BLAKE3) and the stacker keeps in memory for every job
//! of that feature set.
//!
//! Layout, little-endian: `SHMX` magic, format version (u32), header length (u64), the header
//! as JSON (columns, row ids, k, counts), then labels (u8 per train row), folds (u16 per train
//! row), source rows (u32 per train row: its row in the dataset's train file, which is how a
//! level-2 job's out-of-fold predictions name their rows, as level-1 jobs' do), train groups
//! and test groups (u32 per row: patient or group index), the train values (f32, row-major)
//! and the test values (f32, row-major). Missing values are NaN.
//!
//! Must not: reorder rows (row `i` of a level-2 job's out-of-fold predictions is train row `i`
//! here), or accept a file whose sizes disagree with its header.

use serde::{Deserialize, Serialize};

use crate::error::DataError;

const MAGIC: &[u8; 4] = b"SHMX";
const VERSION: u32 = 1;
/// Largest header accepted when reading (row ids of a few million rows).
const MAX_HEADER: u64 = 1 << 30;

/// What one column holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ColumnKind {
    Numeric,
    /// Integer codes `0..levels` stored as f32 (NaN: missing). Models that need numbers expand
    /// them one-hot; entity embeddings and CatBoost use the codes.
    Categorical {
        levels: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(flatten)]
    pub kind: ColumnKind,
}

impl Column {
    pub fn numeric(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: ColumnKind::Numeric,
        }
    }

    pub fn categorical(name: impl Into<String>, levels: u32) -> Self {
        Self {
            name: name.into(),
            kind: ColumnKind::Categorical { levels },
        }
    }
}

/// Train rows (with labels and folds) and test rows over the same columns.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMatrix {
    pub columns: Vec<Column>,
    /// Row identities (image names, or the id column of a table), train then test.
    pub train_ids: Vec<String>,
    pub test_ids: Vec<String>,
    pub labels: Vec<u8>,
    /// Validation fold of each train row, `0..k`.
    pub folds: Vec<u16>,
    pub k: u16,
    /// Row of the dataset's train file that each train row is.
    pub source_rows: Vec<u32>,
    /// Group (patient) index of each row; equal indices are the same group.
    pub train_groups: Vec<u32>,
    pub test_groups: Vec<u32>,
    /// `train_ids.len() × columns.len()`, row-major.
    pub train: Vec<f32>,
    /// `test_ids.len() × columns.len()`, row-major.
    pub test: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    columns: Vec<Column>,
    k: u16,
    train_ids: Vec<String>,
    test_ids: Vec<String>,
}

impl FeatureMatrix {
    pub fn cols(&self) -> usize {
        self.columns.len()
    }

    pub fn train_rows(&self) -> usize {
        self.train_ids.len()
    }

    pub fn test_rows(&self) -> usize {
        self.test_ids.len()
    }

    /// Train row `i`.
    pub fn train_row(&self, i: usize) -> &[f32] {
        let c = self.cols();
        &self.train[i * c..(i + 1) * c]
    }

    /// Test row `i`.
    pub fn test_row(&self, i: usize) -> &[f32] {
        let c = self.cols();
        &self.test[i * c..(i + 1) * c]
    }

    /// Checks that every part has the size the others imply and the folds and labels are in
    /// range; what a reader and a writer both rely on.
    pub fn check(&self) -> Result<(), DataError> {
        let bad = |what: String| Err(DataError::BadMatrix(what));
        let (n, m, c) = (self.train_rows(), self.test_rows(), self.cols());
        if c == 0 {
            return bad("expected at least one column, found none".into());
        }
        if self.k < 2 {
            return bad(format!("expected at least 2 folds, found k = {}", self.k));
        }
        for (what, len, want) in [
            ("labels", self.labels.len(), n),
            ("folds", self.folds.len(), n),
            ("source rows", self.source_rows.len(), n),
            ("train groups", self.train_groups.len(), n),
            ("test groups", self.test_groups.len(), m),
            ("train values", self.train.len(), n * c),
            ("test values", self.test.len(), m * c),
        ] {
            if len != want {
                return bad(format!("expected {want} {what}, found {len}"));
            }
        }
        if let Some(l) = self.labels.iter().find(|&&l| l > 1) {
            return bad(format!("expected binary labels, found {l}"));
        }
        if let Some(f) = self.folds.iter().find(|&&f| f >= self.k) {
            return bad(format!("expected folds below k = {}, found {f}", self.k));
        }
        Ok(())
    }

    /// The binary form; see the module header.
    pub fn to_bytes(&self) -> Result<Vec<u8>, DataError> {
        self.check()?;
        let header = serde_json::to_vec(&Header {
            columns: self.columns.clone(),
            k: self.k,
            train_ids: self.train_ids.clone(),
            test_ids: self.test_ids.clone(),
        })
        .map_err(|e| DataError::BadMatrix(format!("header does not serialise: {e}")))?;
        let (n, m) = (self.train_rows(), self.test_rows());
        let mut out = Vec::with_capacity(
            16 + header.len() + n * 15 + m * 4 + (self.train.len() + self.test.len()) * 4,
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.labels);
        for f in &self.folds {
            out.extend_from_slice(&f.to_le_bytes());
        }
        for g in self
            .source_rows
            .iter()
            .chain(&self.train_groups)
            .chain(&self.test_groups)
        {
            out.extend_from_slice(&g.to_le_bytes());
        }
        for v in self.train.iter().chain(&self.test) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        Ok(out)
    }

    /// Reads the binary form, refusing anything whose sizes disagree with its header.
    pub fn from_bytes(bytes: &[u8]) -> Result<FeatureMatrix, DataError> {
        let bad = |what: &str| DataError::BadMatrix(what.to_string());
        let mut r = Reader { bytes, at: 0 };
        if r.take(4)? != MAGIC {
            return Err(bad("not a stackhive feature matrix (bad magic)"));
        }
        let version = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(DataError::BadMatrix(format!(
                "expected format version {VERSION}, found {version}"
            )));
        }
        let len = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
        if len > MAX_HEADER {
            return Err(bad("header larger than 1 GiB"));
        }
        let header: Header = serde_json::from_slice(r.take(len as usize)?)
            .map_err(|e| DataError::BadMatrix(format!("header is not valid JSON ({e})")))?;
        let (n, m, c) = (
            header.train_ids.len(),
            header.test_ids.len(),
            header.columns.len(),
        );
        let labels = r.take(n)?.to_vec();
        let folds = r
            .take(n * 2)?
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        let u32s = |b: &[u8]| -> Vec<u32> {
            b.chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        let f32s = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        let source_rows = u32s(r.take(n * 4)?);
        let train_groups = u32s(r.take(n * 4)?);
        let test_groups = u32s(r.take(m * 4)?);
        let train = f32s(r.take(n * c * 4)?);
        let test = f32s(r.take(m * c * 4)?);
        if r.at != bytes.len() {
            return Err(DataError::BadMatrix(format!(
                "{} bytes after the end of the matrix",
                bytes.len() - r.at
            )));
        }
        let matrix = FeatureMatrix {
            columns: header.columns,
            train_ids: header.train_ids,
            test_ids: header.test_ids,
            labels,
            folds,
            k: header.k,
            source_rows,
            train_groups,
            test_groups,
            train,
            test,
        };
        matrix.check()?;
        Ok(matrix)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DataError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(DataError::BadMatrix(format!(
                "file ends at byte {}, expected {} more bytes at byte {}",
                self.bytes.len(),
                n,
                self.at
            )));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn small() -> FeatureMatrix {
        FeatureMatrix {
            columns: vec![Column::numeric("cnn_b0"), Column::categorical("site", 3)],
            train_ids: (0..4).map(|i| format!("ISIC_{i}")).collect(),
            test_ids: vec!["ISIC_T".into()],
            labels: vec![0, 1, 0, 1],
            folds: vec![0, 0, 1, 1],
            k: 2,
            source_rows: vec![0, 1, 3, 4],
            train_groups: vec![0, 0, 1, 2],
            test_groups: vec![3],
            train: vec![0.1, 0.0, 0.9, 1.0, 0.2, f32::NAN, 0.8, 2.0],
            test: vec![0.5, 1.0],
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let m = small();
        let bytes = m.to_bytes().unwrap();
        let back = FeatureMatrix::from_bytes(&bytes).unwrap();
        // NaN != NaN: compare the bits.
        assert_eq!(
            back.train.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            m.train.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(
            (back.columns, back.train_ids, back.folds),
            (m.columns.clone(), m.train_ids.clone(), m.folds.clone())
        );
        let err = FeatureMatrix::from_bytes(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.to_string().contains("expected 8 more bytes"), "{err}");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(FeatureMatrix::from_bytes(&longer)
            .unwrap_err()
            .to_string()
            .contains("after the end"));
        let mut bad = m.clone();
        bad.folds[0] = 2;
        assert!(bad
            .to_bytes()
            .unwrap_err()
            .to_string()
            .contains("below k = 2, found 2"));
        bad = m;
        bad.labels.pop();
        assert!(bad
            .check()
            .unwrap_err()
            .to_string()
            .contains("expected 4 labels, found 3"));
    }
}
