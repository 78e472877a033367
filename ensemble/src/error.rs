//! The one error type of the ensemble layer: invalid inputs (problem, models, config) found
//! before any work starts. Messages follow shared/STYLE.md: lower case, no trailing period,
//! what was expected and what was found.
//! Must not: carry transport, database or file concerns; callers map these in one place.

/// Everything `run`, `Config::validate`, `Method::from_str` and `Preselector` can reject.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnsembleError {
    #[error("no models to ensemble")]
    NoModels,

    #[error("{what} has {found} entries, expected {expected}")]
    Length {
        what: &'static str,
        expected: usize,
        found: usize,
    },

    #[error("label {value} at {part} row {row}, expected 0 or 1")]
    BadLabel {
        part: &'static str,
        row: usize,
        value: u8,
    },

    #[error(
        "train labels must hold both classes 0 and 1, found only class {class} in {rows} rows"
    )]
    SingleClass { class: u8, rows: usize },

    #[error("k = {0}, expected at least 2 folds")]
    TooFewFolds(u16),

    #[error("fold index {fold} at train row {row}, expected one below k = {k}")]
    FoldOutOfRange { row: usize, fold: u16, k: u16 },

    #[error(
        "fold {fold} has {positives} positive and {negatives} negative rows, expected both \
         classes in every fold (nested scores are computed per fold)"
    )]
    FoldClasses {
        fold: u16,
        positives: usize,
        negatives: usize,
    },

    #[error(
        "patient {group} has rows in folds {first} and {second}, expected all of a patient's \
         rows in one fold"
    )]
    PatientSpansFolds { group: u32, first: u16, second: u16 },

    #[error(
        "model {name} (id {id}) has {found} {part} predictions, expected {expected} \
         (one per {part} row)"
    )]
    ModelLength {
        id: i64,
        name: String,
        part: &'static str,
        expected: usize,
        found: usize,
    },

    #[error(
        "model {name} (id {id}) has {part} prediction {value} at row {row}, expected a finite \
         probability in [0, 1]"
    )]
    BadPrediction {
        id: i64,
        name: String,
        part: &'static str,
        row: usize,
        value: f32,
    },

    #[error("models {first} and {second} share id {id}, expected unique model ids")]
    DuplicateId {
        id: i64,
        first: String,
        second: String,
    },

    #[error("invalid config: {field} is {found}, expected {expected}")]
    Config {
        field: &'static str,
        found: String,
        expected: &'static str,
    },

    #[error("unknown ensemble method {found:?}, expected one of: {valid}")]
    UnknownMethod { found: String, valid: String },

    #[error(
        "model {name} (id {id}) pushed with AUC {auc}, expected models in descending AUC order \
         (the previous one had {previous})"
    )]
    PreselectorOrder {
        id: i64,
        name: String,
        auc: f64,
        previous: f64,
    },

    /// The inputs as the cluster gave them: a feature set that is not models alone.
    #[error("{0}")]
    Input(String),

    /// An `ensemble` job's payload.
    #[error("{0}")]
    Payload(String),
}
