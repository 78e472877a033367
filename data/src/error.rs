//! The one error type of the dataset layer (loader, validator, hashing, folds). Messages follow
//! shared/STYLE.md: lower case, no trailing period, what was expected and what was found.
//! Must not: carry transport or database concerns; the coordinator maps these to its own
//! status codes in one place.

use std::path::PathBuf;

use crate::validate::Problems;

/// Everything that can go wrong while reading, checking, hashing or splitting a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot parse {} as csv: {message}", path.display())]
    Csv { path: PathBuf, message: String },

    /// A file lacks columns the ISIC layout requires; not fixable by dropping rows.
    #[error(
        "{} lacks required column(s) {}; expected {}, found {}",
        path.display(),
        missing.join(", "),
        expected.join(", "),
        if found.is_empty() { "no header at all".to_string() } else { found.join(", ") }
    )]
    MissingColumns {
        path: PathBuf,
        missing: Vec<String>,
        expected: Vec<String>,
        found: Vec<String>,
    },

    /// Row-level problems (bad values, duplicates, missing or broken images), summarised with
    /// the first offending rows of each kind. Nothing was loaded.
    #[error("{0}")]
    Invalid(Box<Problems>),

    #[error("{} has no usable train rows; expected at least one, found {found} before checks", path.display())]
    NoTrainRows { path: PathBuf, found: usize },

    #[error("cannot merge datasets: {0}")]
    Merge(String),

    #[error("fold count k must be at least 2 and at most {max}, found {k}")]
    BadFoldCount { k: u16, max: u16 },

    #[error("{scheme} folds with k = {k} need at least {k} {unit} among the isic2020 rows, found {found}")]
    TooFewForFolds {
        scheme: &'static str,
        k: u16,
        unit: &'static str,
        found: usize,
    },

    #[error("{scheme} folds stratify on the target and need at least one positive isic2020 row, found none among {rows} rows")]
    NoPositives { scheme: &'static str, rows: usize },

    #[error("unknown fold scheme {found:?}; expected one of triple-stratified, stratified, group")]
    UnknownScheme { found: String },

    #[error("fold assignment covers {found} rows, the train table has {expected}")]
    FoldsLength { expected: usize, found: usize },

    #[error("cannot decode fold assignment: {0}")]
    FoldsBytes(String),

    #[error("{what} has blake3 {found}, expected {expected}")]
    HashMismatch {
        what: String,
        expected: String,
        found: String,
    },

    #[error("{path} has {found} bytes, the manifest says {expected}")]
    SizeMismatch {
        path: String,
        expected: u64,
        found: u64,
    },

    #[error("invalid manifest: {0}")]
    BadManifest(String),

    #[error("invalid feature matrix: {0}")]
    BadMatrix(String),

    #[error("feature set: {0}")]
    Features(String),

    #[error("file name {} is not valid utf-8; dataset file names must be", path.display())]
    NonUtf8Path { path: PathBuf },
}
