//! `stackhive report` (issue 15): one self-contained HTML file about an experiment's models and
//! ensembles (`stackhive_report` draws it). This gathers what it shows: the ensemble outcome of
//! the finished models (`crate::ensemble::compute`), ROC curves of the best models and of every
//! method, and the queue's timeline from the job records.
//!
//! Must not: leave a partial file (the report crate writes beside and renames).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;
use stackhive_proto::v1 as pb;
use stackhive_report::{
    roc_points, Curve, FoldRow, Heatmap, Interval, ModelBar, ReportData, ShakeMethod, ShakeUp,
    TimelineJob,
};

use crate::client::Api;
use crate::ensemble::{compute, Computed, SourceArgs};
use crate::output::print_json;

/// Points per ROC curve; enough for a smooth line at any size the page draws.
const ROC_POINTS: usize = 200;
/// Models whose ROC curves are drawn beside the ensembles'.
const ROC_MODELS: usize = 5;
/// Models in the fold table beside the methods.
const FOLD_TABLE_MODELS: usize = 10;

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The HTML file to write.
    #[arg(long, default_value = "report.html")]
    pub out: PathBuf,
}

pub async fn run(url: &str, json: bool, args: &ReportArgs) -> anyhow::Result<()> {
    let api = Api::connect(url).await?;
    let c = compute(&api, &args.source).await?;
    write_report(&api, &args.source, &c, &args.out).await?;
    if json {
        print_json(&json!({"report": args.out, "models": c.models.len()}));
    } else {
        outln!(
            "wrote {} ({} models of {})",
            args.out.display(),
            c.models.len(),
            args.source.experiments.join(", ")
        );
    }
    Ok(())
}

/// Gathers the report of `c` (and the timeline of `src`'s experiments) and writes it to `path`.
pub async fn write_report(
    api: &Api,
    src: &SourceArgs,
    c: &Computed,
    path: &Path,
) -> anyhow::Result<()> {
    let mut experiments = src.experiments.clone();
    experiments.push(format!("{}-ensemble", src.experiments[0]));
    let timeline = timeline(api, &experiments).await?;
    let data = report_data(src, c, timeline);
    stackhive_report::write(&data, path)?;
    Ok(())
}

fn report_data(src: &SourceArgs, c: &Computed, timeline: Vec<TimelineJob>) -> ReportData {
    let o = &c.outcome;
    let labels = &c.matrix.labels;
    let by_id: HashMap<i64, &stackhive_ensemble::Model> =
        c.models.iter().map(|m| (m.id, m)).collect();
    let mut ranked: Vec<&stackhive_ensemble::ModelScore> = o.models.iter().collect();
    ranked.sort_by(|a, b| b.auc.total_cmp(&a.auc));

    let mut roc_curves: Vec<Curve> = o
        .methods
        .iter()
        .map(|m| Curve {
            name: format!("ensemble: {}", m.method.name()),
            auc: m.nested_auc,
            points: roc_points(labels, &m.oof, ROC_POINTS),
        })
        .collect();
    for s in ranked.iter().take(ROC_MODELS) {
        if let Some(m) = by_id.get(&s.id) {
            roc_curves.push(Curve {
                name: format!("{} ({})", s.name, s.kind),
                auc: s.auc,
                points: roc_points(labels, &m.oof, ROC_POINTS),
            });
        }
    }
    let mut fold_table: Vec<FoldRow> = o
        .methods
        .iter()
        .map(|m| FoldRow {
            name: format!("ensemble: {}", m.method.name()),
            mean: mean(&m.fold_aucs),
            fold_aucs: m.fold_aucs.clone(),
        })
        .collect();
    fold_table.extend(ranked.iter().take(FOLD_TABLE_MODELS).map(|s| FoldRow {
        name: format!("{} ({})", s.name, s.kind),
        mean: mean(&s.fold_aucs),
        fold_aucs: s.fold_aucs.clone(),
    }));
    let names: HashMap<i64, &str> = o.models.iter().map(|m| (m.id, m.name.as_str())).collect();
    let correlation = (!o.kept_correlation.is_empty()).then(|| Heatmap {
        labels: o
            .kept
            .iter()
            .take(o.kept_correlation.len())
            .map(|id| names.get(id).copied().unwrap_or("?").to_string())
            .collect(),
        values: o.kept_correlation.clone(),
    });
    let intervals = o
        .methods
        .iter()
        .map(|m| Interval {
            name: m.method.name().to_string(),
            auc: m.nested_auc,
            low: m.ci_low,
            high: m.ci_high,
            is_median: m.method == stackhive_ensemble::Method::Median,
            recommended: m.method == o.recommendation.method,
        })
        .collect();
    let shakeup = Some(ShakeUp {
        on: match o.shakeup.on {
            stackhive_ensemble::ShakeUpOn::Test => "test rows".into(),
            stackhive_ensemble::ShakeUpOn::Oof => "out-of-fold rows".into(),
        },
        public_fraction: o.shakeup.public_fraction,
        methods: o
            .shakeup
            .methods
            .iter()
            .map(|m| ShakeMethod {
                name: m.method.name().to_string(),
                deltas: m.deltas.clone(),
                mean_public: m.mean_public,
                mean_private: m.mean_private,
            })
            .collect(),
        public_best_loses: o.shakeup.public_best_loses,
        public_best_vs_median_loses: o.shakeup.public_best_vs_median_loses,
    });
    let oracle = c.truth.as_ref().and_then(|t| t.oracle_auc);
    let mut summary = vec![
        ("models".to_string(), o.models.len().to_string()),
        (
            "train rows / folds".to_string(),
            format!("{} / {}", c.matrix.train_rows(), c.matrix.k),
        ),
        ("test rows".to_string(), c.matrix.test_rows().to_string()),
    ];
    if let Some(best) = ranked.first() {
        summary.push((
            "best single model (CV AUC)".into(),
            format!("{:.4} {}", best.auc, best.name),
        ));
    }
    for m in &o.methods {
        if m.method == stackhive_ensemble::Method::Median || m.method == o.recommendation.method {
            let test = m
                .test_auc
                .map_or(String::new(), |t| format!(", test {t:.4}"));
            summary.push((
                format!("{} (nested CV AUC)", m.method.name()),
                format!(
                    "{:.4} [{:.4}, {:.4}]{test}",
                    m.nested_auc, m.ci_low, m.ci_high
                ),
            ));
        }
    }
    if let Some(a) = oracle {
        summary.push(("oracle (test)".into(), format!("{a:.4}")));
    }
    ReportData {
        experiment: src.experiments.join(" + "),
        generated_at: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        summary,
        recommendation: o.recommendation.reason.clone(),
        oracle_auc: oracle,
        roc_curves,
        models: o
            .models
            .iter()
            .map(|m| ModelBar {
                name: m.name.clone(),
                kind: m.kind.clone(),
                auc: m.auc,
            })
            .collect(),
        correlation,
        fold_table,
        intervals,
        shakeup,
        timeline,
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Every started job of `experiments` as a bar on its worker's lane.
async fn timeline(api: &Api, experiments: &[String]) -> anyhow::Result<Vec<TimelineJob>> {
    let mut jobs = Vec::new();
    for e in experiments {
        let mut request = pb::ListJobsRequest {
            experiment: e.clone(),
            page_size: 1000,
            ..Default::default()
        };
        loop {
            let page = api.list_jobs(request.clone()).await?;
            jobs.extend(page.jobs);
            if page.next_page_token.is_empty() {
                break;
            }
            request.page_token = page.next_page_token;
        }
    }
    let started: Vec<&pb::Job> = jobs.iter().filter(|j| j.started_at_ms > 0).collect();
    let t0 = started.iter().map(|j| j.started_at_ms).min().unwrap_or(0);
    Ok(started
        .iter()
        .map(|j| {
            let end = if j.finished_at_ms > 0 {
                j.finished_at_ms
            } else {
                j.started_at_ms
            };
            TimelineJob {
                worker: if j.worker_id.is_empty() {
                    "?".into()
                } else {
                    j.worker_id.clone()
                },
                kind: j.spec.as_ref().map_or_else(String::new, |s| s.kind.clone()),
                start_s: (j.started_at_ms - t0) as f64 / 1000.0,
                end_s: (end - t0) as f64 / 1000.0,
                state: pb::JobState::try_from(j.state)
                    .map(|s| s.as_str_name().to_lowercase())
                    .unwrap_or_default(),
            }
        })
        .collect())
}
