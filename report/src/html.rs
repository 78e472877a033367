//! The page around the charts: document head (inline stylesheet and a content security policy
//! that forbids every fetch and script), the header with the summary numbers and the
//! recommendation, one section per topic, and the per-fold table.
//! Must not: reference anything outside the file, or write data into markup unescaped.

use crate::charts::{self, no_data, Ctx};
use crate::data::{FoldRow, ReportData};
use crate::svg::{esc, KindColours};

const STYLE: &str = include_str!("style.css");

/// Section ids, headings and bodies, in page order.
fn sections(data: &ReportData, ctx: &Ctx) -> Vec<(&'static str, &'static str, String)> {
    vec![
        (
            "roc",
            "ROC curves",
            charts::roc::chart(&data.roc_curves, ctx),
        ),
        (
            "models",
            "Models",
            charts::models::section(&data.models, ctx),
        ),
        (
            "kinds",
            "Model kinds",
            charts::models::per_kind(&data.models, ctx),
        ),
        (
            "correlation",
            "Correlation",
            charts::heatmap::chart(data.correlation.as_ref()),
        ),
        ("folds", "Per-fold AUC", fold_table(&data.fold_table)),
        (
            "intervals",
            "Ensemble intervals",
            charts::forest::chart(&data.intervals, ctx),
        ),
        (
            "shakeup",
            "Public/private shake-up",
            charts::shakeup::chart(data.shakeup.as_ref()),
        ),
        (
            "timeline",
            "Queue timeline",
            charts::timeline::chart(&data.timeline, ctx),
        ),
    ]
}

pub fn page(data: &ReportData) -> String {
    let kinds = data
        .models
        .iter()
        .map(|m| m.kind.as_str())
        .chain(data.timeline.iter().map(|j| j.kind.as_str()));
    let ctx = Ctx {
        kinds: KindColours::new(kinds),
        oracle: data.oracle_auc,
    };
    let name = if data.experiment.trim().is_empty() {
        "Unnamed experiment"
    } else {
        &data.experiment
    };
    let sections = sections(data, &ctx);

    let mut out = String::with_capacity(256 * 1024);
    out.push_str(&format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="color-scheme" content="light">
<title>{} — stackhive report</title>
<style>
{STYLE}</style>
</head>
<body>
"#,
        esc(name)
    ));
    out.push_str(&header(data, name, &sections));
    out.push_str("<main class=\"wrap\">\n");
    out.push_str(&recommendation(&data.recommendation));
    for (id, heading, body) in &sections {
        out.push_str(&format!(
            "<section id=\"{id}\">\n<h2>{heading}</h2>\n{body}\n</section>\n"
        ));
    }
    out.push_str(
        "</main>\n<footer class=\"wrap\">Made by stackhive-report. This file is self-contained: it loads no scripts, fonts or images and works offline.</footer>\n</body>\n</html>\n",
    );
    out
}

fn header(data: &ReportData, name: &str, sections: &[(&str, &str, String)]) -> String {
    let mut meta = String::from("stackhive experiment report");
    if !data.generated_at.is_empty() {
        meta.push_str(&format!(" · generated {}", esc(&data.generated_at)));
    }
    if let Some(o) = data.oracle_auc {
        meta.push_str(&format!(
            " · <strong>oracle AUC {o:.4}</strong>: the data came from a generator; no model can score higher (dashed line on the AUC charts)"
        ));
    }
    let mut cards = String::new();
    for (label, value) in &data.summary {
        cards.push_str(&format!(
            r#"<div class="card"><dt>{}</dt><dd>{}</dd></div>"#,
            esc(label),
            esc(value)
        ));
    }
    if let Some(o) = data.oracle_auc {
        cards.push_str(&format!(
            r#"<div class="card oracle"><dt>oracle AUC (ceiling)</dt><dd>{o:.4}</dd></div>"#
        ));
    }
    let cards = if cards.is_empty() {
        String::new()
    } else {
        format!(r#"<dl class="cards">{cards}</dl>"#)
    };
    let toc: String = sections
        .iter()
        .map(|(id, heading, _)| format!(r##"<a href="#{id}">{heading}</a>"##))
        .collect();
    format!(
        "<header class=\"top\"><div class=\"wrap\">\n<h1>{}</h1>\n<p class=\"meta\">{meta}</p>\n{cards}\n<nav class=\"toc\">{toc}</nav>\n</div></header>\n",
        esc(name)
    )
}

fn recommendation(text: &str) -> String {
    if text.trim().is_empty() {
        return no_data("No recommendation was made for this experiment.");
    }
    format!(
        "<div class=\"recommendation\" id=\"recommendation\"><h2>Recommendation</h2>{}</div>\n",
        esc(text.trim())
    )
}

/// One row per model or method, one column per fold, the mean, and the spread across folds;
/// the best value of each column in bold.
fn fold_table(rows: &[FoldRow]) -> String {
    if rows.is_empty() {
        return no_data("No per-fold AUCs were recorded.");
    }
    let folds = rows.iter().map(|r| r.fold_aucs.len()).max().unwrap_or(0);
    let std = |r: &FoldRow| {
        let v: Vec<f64> = r
            .fold_aucs
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        if v.len() < 2 {
            return f64::NAN;
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
    };
    let column_best = |get: &dyn Fn(&FoldRow) -> f64| {
        rows.iter()
            .map(get)
            .filter(|v| v.is_finite())
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let best: Vec<f64> = (0..folds)
        .map(|k| column_best(&|r: &FoldRow| r.fold_aucs.get(k).copied().unwrap_or(f64::NAN)))
        .collect();
    let best_mean = column_best(&|r: &FoldRow| r.mean);
    let cell = |v: f64, best: f64| {
        if !v.is_finite() {
            r#"<td class="na">—</td>"#.to_string()
        } else if v == best {
            format!(r#"<td class="best">{v:.4}</td>"#)
        } else {
            format!("<td>{v:.4}</td>")
        }
    };

    let mut out = String::from(
        r#"<p class="note">Out-of-fold AUC on each fold; the best value of each column is in bold. The spread is the standard deviation across folds.</p><div class="table-wrap"><table class="folds"><thead><tr><th>Model or method</th>"#,
    );
    for k in 1..=folds {
        out.push_str(&format!("<th>Fold {k}</th>"));
    }
    out.push_str("<th>Mean</th><th>Spread</th></tr></thead><tbody>");
    for r in rows {
        out.push_str(&format!("<tr><td>{}</td>", esc(&r.name)));
        for (k, b) in best.iter().enumerate() {
            out.push_str(&cell(r.fold_aucs.get(k).copied().unwrap_or(f64::NAN), *b));
        }
        out.push_str(&cell(r.mean, best_mean));
        let s = std(r);
        out.push_str(&if s.is_finite() {
            format!("<td>{s:.4}</td>")
        } else {
            r#"<td class="na">—</td>"#.into()
        });
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}
