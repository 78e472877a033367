//! The per-model charts: the top 50 models as horizontal bars, every model's AUC as a histogram
//! stacked by kind, and one box plot per kind (quartiles computed here from `models`).
//! Must not: draw one mark per model when there can be thousands; only the top-50 chart names
//! models, the others aggregate.

use std::collections::BTreeMap;

use super::{count, figure, legend, no_data, thousands, Ctx, Mark};
use crate::data::ModelBar;
use crate::stats::five;
use crate::svg::{
    auc_domain, clip, fmt_step, nice_step, oracle_line, x_axis, y_axis_steps, Anchor, Scale, Svg, P,
};

const TOP: usize = 50;
const WIDTH: f64 = 1100.0;

fn finite(models: &[ModelBar]) -> Vec<&ModelBar> {
    let mut v: Vec<&ModelBar> = models.iter().filter(|m| m.auc.is_finite()).collect();
    v.sort_by(|a, b| b.auc.total_cmp(&a.auc).then_with(|| a.name.cmp(&b.name)));
    v
}

fn kinds_legend(ctx: &Ctx, models: &[&ModelBar]) -> String {
    let mut kinds: Vec<&str> = models.iter().map(|m| m.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut items: Vec<(&str, &str, Mark)> = kinds
        .iter()
        .map(|k| (ctx.kinds.get(k), *k, Mark::Swatch))
        .collect();
    if ctx.oracle.is_some() {
        items.push(("#7b3fb5", "oracle AUC (ceiling)", Mark::Dashed));
    }
    legend(&items)
}

/// All three model charts, or one "no data" note.
pub fn section(models: &[ModelBar], ctx: &Ctx) -> String {
    let ok = finite(models);
    if ok.is_empty() {
        return no_data("No model AUCs were recorded.");
    }
    let skipped = models.len() - ok.len();
    let skipped_note = if skipped > 0 {
        format!(
            " Left out: {} without a finite AUC.",
            count(skipped, "model")
        )
    } else {
        String::new()
    };
    let key = kinds_legend(ctx, &ok);
    let mut out = top_bars(&ok, ctx, &key, &skipped_note);
    out.push_str(&histogram(&ok, ctx, &key));
    out
}

fn top_bars(ok: &[&ModelBar], ctx: &Ctx, key: &str, skipped_note: &str) -> String {
    let shown = &ok[..ok.len().min(TOP)];
    let (row, top, left, right) = (18.0, 20.0, 310.0, 1020.0);
    let axis_y = top + row * shown.len() as f64 + 6.0;
    let domain = auc_domain(shown.iter().map(|m| m.auc), ctx.oracle);
    let x = Scale::new(domain, (left, right));
    let mut svg = Svg::new(WIDTH, axis_y + 46.0, "AUC of the best models");
    x_axis(&mut svg, &x, axis_y, top, 10, "AUC (out of fold)");
    for (i, m) in shown.iter().enumerate() {
        let y = top + row * i as f64;
        let tip = format!("#{} {} ({}): AUC {:.4}", i + 1, m.name, m.kind, m.auc);
        let label = format!("{}. {}", i + 1, m.name);
        svg.text_tip(
            left - 8.0,
            y + 12.0,
            Anchor::End,
            "label",
            &clip(&label, 40),
            Some(&tip),
        );
        let x1 = x.clamped(m.auc);
        svg.rect(
            left,
            y + 2.0,
            x1 - left,
            row - 5.0,
            ctx.kinds.get(&m.kind),
            Some(&tip),
        );
        svg.text(
            x1 + 4.0,
            y + 12.0,
            Anchor::Start,
            "value",
            &format!("{:.4}", m.auc),
        );
    }
    oracle_line(&mut svg, &x, top, axis_y, ctx.oracle);
    let which = if shown.len() == ok.len() {
        format!("All {}, best first", count(ok.len(), "model"))
    } else {
        format!("The best {} of {} models", shown.len(), thousands(ok.len()))
    };
    let note = format!(
        "{which}; the axis starts at {:.2}, not 0, so small differences show.{skipped_note}",
        domain.0
    );
    figure("Top models by AUC", &note, key, &svg.finish())
}

fn histogram(ok: &[&ModelBar], ctx: &Ctx, key: &str) -> String {
    let domain = auc_domain(ok.iter().map(|m| m.auc), ctx.oracle);
    let step = nice_step(domain.1 - domain.0, 40);
    let b0 = (domain.0 / step).floor() * step;
    let nbins = (((domain.1 - b0) / step).ceil() as usize).max(1);
    let mut kinds: Vec<&str> = ok.iter().map(|m| m.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    // counts[bin][kind index]
    let mut counts = vec![vec![0usize; kinds.len()]; nbins];
    for m in ok {
        let bin = (((m.auc - b0) / step).floor().max(0.0) as usize).min(nbins - 1);
        let k = kinds.binary_search(&m.kind.as_str()).unwrap_or(0);
        counts[bin][k] += 1;
    }
    let max = counts
        .iter()
        .map(|c| c.iter().sum::<usize>())
        .max()
        .unwrap_or(1);
    let ystep = nice_step(max as f64, 5).max(1.0);
    let ymax = (max as f64 / ystep).ceil() * ystep;

    let (left, right, top, bottom) = (70.0, 1070.0, 20.0, 250.0);
    let x = Scale::new((b0, b0 + step * nbins as f64), (left, right));
    let y = Scale::new((0.0, ymax), (bottom, top));
    let mut svg = Svg::new(WIDTH, bottom + 46.0, "Histogram of all models' AUC");
    y_axis_steps(&mut svg, &y, left, right, (5, 1.0), "Models");
    x_axis(&mut svg, &x, bottom, bottom, 10, "AUC (out of fold)");
    for (bin, per_kind) in counts.iter().enumerate() {
        let total: usize = per_kind.iter().sum();
        if total == 0 {
            continue;
        }
        let lo = b0 + step * bin as f64;
        let mut detail: Vec<String> = Vec::new();
        for (k, &c) in per_kind.iter().enumerate().filter(|(_, c)| **c > 0) {
            detail.push(format!("{} {c}", kinds[k]));
        }
        let tip = format!(
            "AUC {:.3}–{:.3}: {total} model(s) ({})",
            lo,
            lo + step,
            detail.join(", ")
        );
        svg.group("bin", &tip);
        let mut acc = 0usize;
        for (k, &c) in per_kind.iter().enumerate().filter(|(_, c)| **c > 0) {
            let (y0, y1) = (y.map(acc as f64), y.map((acc + c) as f64));
            let (x0, x1) = (x.map(lo), x.map(lo + step));
            svg.rect(
                x0 + 0.5,
                y1,
                x1 - x0 - 1.0,
                y0 - y1,
                ctx.kinds.get(kinds[k]),
                None,
            );
            acc += c;
        }
        svg.end_group();
    }
    oracle_line(&mut svg, &x, top, bottom, ctx.oracle);
    let note = format!(
        "{} with a finite AUC, in bins of {}, stacked by kind.",
        count(ok.len(), "model"),
        fmt_step(step, step)
    );
    figure("Distribution of model AUCs", &note, key, &svg.finish())
}

/// One box plot per kind: whiskers at min and max, box from the first to the third quartile,
/// a bar at the median.
pub fn per_kind(models: &[ModelBar], ctx: &Ctx) -> String {
    let mut groups: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for m in models.iter().filter(|m| m.auc.is_finite()) {
        groups.entry(m.kind.as_str()).or_default().push(m.auc);
    }
    let mut rows: Vec<(&str, crate::stats::FiveNum)> = groups
        .into_iter()
        .filter_map(|(k, v)| five(v).map(|s| (k, s)))
        .collect();
    if rows.is_empty() {
        return no_data("No model AUCs were recorded, so there is nothing to compare by kind.");
    }
    rows.sort_by(|a, b| b.1.median.total_cmp(&a.1.median));
    let domain = auc_domain(rows.iter().flat_map(|r| [r.1.min, r.1.max]), ctx.oracle);
    let (row, top, left, right) = (40.0, 22.0, 200.0, 780.0);
    let axis_y = top + row * rows.len() as f64 + 4.0;
    let x = Scale::new(domain, (left, right));
    let mut svg = Svg::new(WIDTH, axis_y + 46.0, "AUC by model kind");
    x_axis(&mut svg, &x, axis_y, top - 4.0, 8, "AUC (out of fold)");
    svg.text(
        800.0,
        top - 6.0,
        Anchor::Start,
        "col-head",
        "n · min · median · max",
    );
    for (i, (kind, s)) in rows.iter().enumerate() {
        let mid = top + row * i as f64 + row / 2.0;
        let colour = ctx.kinds.get(kind);
        let tip = format!(
            "{kind}: {} models, min {:.4}, Q1 {:.4}, median {:.4}, Q3 {:.4}, max {:.4}, mean {:.4}",
            s.n, s.min, s.q1, s.median, s.q3, s.max, s.mean
        );
        svg.text_tip(
            left - 10.0,
            mid + 4.0,
            Anchor::End,
            "label",
            &clip(kind, 28),
            Some(&tip),
        );
        svg.group("box", &tip);
        svg.line(x.map(s.min), mid, x.map(s.max), mid, "whisker");
        svg.line(x.map(s.min), mid - 7.0, x.map(s.min), mid + 7.0, "whisker");
        svg.line(x.map(s.max), mid - 7.0, x.map(s.max), mid + 7.0, "whisker");
        let (q1, q3) = (x.map(s.q1), x.map(s.q3));
        svg.raw(&format!(
            r#"<rect class="iqr" x="{}" y="{}" width="{}" height="24" fill="{colour}" stroke="{colour}"/>"#,
            P(q1),
            P(mid - 12.0),
            P((q3 - q1).max(1.5)),
        ));
        svg.line(
            x.map(s.median),
            mid - 12.0,
            x.map(s.median),
            mid + 12.0,
            "median",
        );
        svg.end_group();
        let stats = format!("{} · {:.4} · {:.4} · {:.4}", s.n, s.min, s.median, s.max);
        svg.text(800.0, mid + 4.0, Anchor::Start, "value", &stats);
    }
    oracle_line(&mut svg, &x, top - 4.0, axis_y, ctx.oracle);
    figure(
        "AUC by model kind",
        "Whiskers span min to max, the box the middle half (first to third quartile), the dark bar is the median.",
        "",
        &svg.finish(),
    )
}
