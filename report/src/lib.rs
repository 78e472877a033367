//! stackhive-report: the experiment report as one self-contained HTML5 file — inline CSS and
//! hand-written inline SVG (ROC curves, model AUCs, per-kind boxes, correlation heatmap,
//! per-fold table, ensemble forest plot, public/private shake-up, queue timeline), viewable
//! offline, with tooltips from SVG `<title>` elements and no script at all.
//! Must not: fetch or reference anything outside the file (no URLs, fonts, images or scripts;
//! the page's content security policy forbids them too), put user-supplied names into markup
//! unescaped, or measure models: the integrator fills [`ReportData`] and the report draws it.

mod charts;
mod data;
mod error;
mod html;
mod output;
mod roc;
mod stats;
mod svg;

use std::path::Path;

pub use data::{
    Curve, FoldRow, Heatmap, Interval, ModelBar, ReportData, ShakeMethod, ShakeUp, TimelineJob,
};
pub use error::ReportError;
pub use roc::roc_points;

/// The report as one HTML document. Fails only when the data contradicts itself (see
/// [`ReportError::Invalid`]); empty sections render as a short note.
pub fn render(data: &ReportData) -> Result<String, ReportError> {
    data::validate(data)?;
    Ok(html::page(data))
}

/// Renders the report and writes it to `path` atomically (a temp file beside it, renamed over
/// it). On error nothing is left behind and an existing report at `path` is untouched.
pub fn write(data: &ReportData, path: &Path) -> Result<(), ReportError> {
    let html = render(data)?;
    output::write_atomic(path, html.as_bytes())
}

#[cfg(test)]
mod tests;
