//! The one error type of the report. Messages follow shared/STYLE.md: lower case, no trailing
//! period, what was expected and what was found.
//! Must not: carry anything the integrator cannot act on; problems it can fix (a heatmap with
//! ragged rows, an interval whose low end is above its high end) say which item is wrong.

use std::path::PathBuf;

/// Everything that can go wrong while rendering or writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The data contradicts itself; nothing was rendered.
    #[error("invalid report data: {0}")]
    Invalid(String),

    /// The file could not be written; no partial file or temp file was left behind.
    #[error("cannot write the report to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
