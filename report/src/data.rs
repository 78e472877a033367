//! What a report shows: plain data the integrator fills from an experiment, serialisable so a
//! run can save it beside the HTML and re-render later. Also the structural checks `render`
//! runs before drawing.
//! Must not: compute model metrics (AUCs, intervals, correlations are measured elsewhere and
//! passed in); the report only summarises what it is given (per-kind quartiles, histograms).

use serde::{Deserialize, Serialize};

use crate::error::ReportError;

/// Everything one report shows. Every section may be empty; it then renders a short note.
/// Missing fields deserialise as empty, so older saved data still renders.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportData {
    /// The experiment's name, the page title.
    pub experiment: String,
    /// When the report was made, shown as given (e.g. RFC 3339).
    pub generated_at: String,
    /// Label/value lines at the top, e.g. ("best single CNN", "0.8612").
    pub summary: Vec<(String, String)>,
    /// The paragraph shown prominently under the header: what to use and why.
    pub recommendation: String,
    /// The best achievable AUC when the data came from a generator; drawn as a dashed
    /// "ceiling" line on every chart with an AUC axis and shown in the header.
    pub oracle_auc: Option<f64>,
    /// ROC curves of the best models and the ensembles, drawn on one chart.
    pub roc_curves: Vec<Curve>,
    /// Every model's AUC (may be thousands): top 50 as bars, all as a histogram, per kind.
    pub models: Vec<ModelBar>,
    /// Correlations of the kept models' predictions (up to ~30 × 30).
    pub correlation: Option<Heatmap>,
    /// Per-fold AUC of the top models and the ensemble methods, shown as a table.
    pub fold_table: Vec<FoldRow>,
    /// Each ensemble method's nested AUC with its 95% interval (a forest plot).
    pub intervals: Vec<Interval>,
    /// How rankings on a public split carry over to the private rest.
    pub shakeup: Option<ShakeUp>,
    /// The queue's jobs, one lane per worker.
    pub timeline: Vec<TimelineJob>,
}

/// One ROC curve.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub name: String,
    #[serde(deserialize_with = "nan::one")]
    pub auc: f64,
    /// (false positive rate, true positive rate), from (0, 0) to (1, 1); see [`crate::roc_points`].
    pub points: Vec<(f64, f64)>,
}

/// One model's out-of-fold AUC.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelBar {
    pub name: String,
    /// The model family (e.g. "cnn", "logreg", "lightgbm"); colours the bars and groups the
    /// per-kind chart.
    pub kind: String,
    /// A non-finite AUC (a fold with one class) is left out of the charts and counted in a note.
    #[serde(deserialize_with = "nan::one")]
    pub auc: f64,
}

/// A symmetric matrix of correlations with its row/column labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heatmap {
    pub labels: Vec<String>,
    /// `values[i][j]`, one row per label, each as long as `labels`; non-finite cells are drawn
    /// grey as "n/a" (a constant prediction has no correlation).
    #[serde(deserialize_with = "nan::rows")]
    pub values: Vec<Vec<f64>>,
}

/// One row of the per-fold table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FoldRow {
    pub name: String,
    /// AUC per fold, fold 1 first; a non-finite value shows as "—".
    #[serde(deserialize_with = "nan::many")]
    pub fold_aucs: Vec<f64>,
    #[serde(deserialize_with = "nan::one")]
    pub mean: f64,
}

/// An ensemble method's nested AUC and its 95% interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub name: String,
    pub auc: f64,
    pub low: f64,
    pub high: f64,
    /// The median method: its interval is shaded across the whole chart.
    pub is_median: bool,
    /// The method the report recommends: its row is marked.
    pub recommended: bool,
}

/// The public/private shake-up study: many random public/private splits of `on`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShakeUp {
    /// What was split (e.g. "the held-out test fold").
    pub on: String,
    /// The share of rows in the public part of each split, in (0, 1).
    #[serde(deserialize_with = "nan::one")]
    pub public_fraction: f64,
    pub methods: Vec<ShakeMethod>,
    /// Share of splits (0–1) in which the method best on public was beaten on private by
    /// another method.
    #[serde(deserialize_with = "nan::one")]
    pub public_best_loses: f64,
    /// Share of splits (0–1) in which the method best on public scored below the median
    /// method on private.
    #[serde(deserialize_with = "nan::one")]
    pub public_best_vs_median_loses: f64,
}

/// One method's private − public AUC over the splits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShakeMethod {
    pub name: String,
    /// private AUC − public AUC, one per split; non-finite values are left out.
    #[serde(deserialize_with = "nan::many")]
    pub deltas: Vec<f64>,
    #[serde(deserialize_with = "nan::one")]
    pub mean_public: f64,
    #[serde(deserialize_with = "nan::one")]
    pub mean_private: f64,
}

/// One job of the queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineJob {
    pub worker: String,
    /// The job kind (e.g. "train_cnn", "stack"); colours the bar.
    pub kind: String,
    /// Seconds on any clock shared by all jobs; the chart starts at the earliest start.
    pub start_s: f64,
    pub end_s: f64,
    /// The job's final state; any state containing "fail" (e.g. "failed", "JOB_STATE_FAILED")
    /// is marked in red.
    pub state: String,
}

impl TimelineJob {
    pub(crate) fn failed(&self) -> bool {
        self.state.to_ascii_lowercase().contains("fail")
    }
}

/// serde_json writes a NaN (an unmeasured AUC) as `null` but will not read `null` back as an
/// f64; these read it as NaN, so saved report data loads again.
mod nan {
    use serde::{Deserialize, Deserializer};

    pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }

    pub fn many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let v = Vec::<Option<f64>>::deserialize(d)?;
        Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
    }

    pub fn rows<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<f64>>, D::Error> {
        let v = Vec::<Vec<Option<f64>>>::deserialize(d)?;
        Ok(v.into_iter()
            .map(|r| r.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
            .collect())
    }
}

/// Structural checks: what would make a chart lie or break. Missing metrics (NaN AUCs) are not
/// errors here; the charts leave them out and say so.
pub(crate) fn validate(data: &ReportData) -> Result<(), ReportError> {
    let bad = |m: String| Err(ReportError::Invalid(m));
    if let Some(o) = data.oracle_auc {
        if !(0.0..=1.0).contains(&o) {
            return bad(format!("oracle AUC is {o}; expected a value within [0, 1]"));
        }
    }
    for c in &data.roc_curves {
        if let Some((i, p)) = c
            .points
            .iter()
            .enumerate()
            .find(|(_, p)| !unit(p.0) || !unit(p.1))
        {
            return bad(format!(
                "roc curve {:?} has point {i} at ({}, {}); expected fpr and tpr within [0, 1]",
                c.name, p.0, p.1
            ));
        }
    }
    if let Some(h) = &data.correlation {
        if h.values.len() != h.labels.len() {
            return bad(format!(
                "correlation heatmap has {} labels but {} rows of values",
                h.labels.len(),
                h.values.len()
            ));
        }
        if let Some((i, row)) = h
            .values
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != h.labels.len())
        {
            return bad(format!(
                "correlation heatmap row {i} ({:?}) has {} values; expected {}, one per label",
                h.labels[i],
                row.len(),
                h.labels.len()
            ));
        }
    }
    for iv in &data.intervals {
        let finite = iv.auc.is_finite() && iv.low.is_finite() && iv.high.is_finite();
        if !finite || iv.low > iv.high {
            return bad(format!(
                "interval of {:?} is {} [{}, {}]; expected finite values with low <= high",
                iv.name, iv.auc, iv.low, iv.high
            ));
        }
    }
    for (i, j) in data.timeline.iter().enumerate() {
        if !j.start_s.is_finite() || !j.end_s.is_finite() || j.end_s < j.start_s {
            return bad(format!(
                "timeline job {i} ({} on {:?}) runs from {} s to {} s; expected finite times with end >= start",
                j.kind, j.worker, j.start_s, j.end_s
            ));
        }
    }
    Ok(())
}

fn unit(v: f64) -> bool {
    (0.0..=1.0).contains(&v)
}
