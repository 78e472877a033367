//! The correlation heatmap of the kept models, with a colour-scale legend. The colour scale
//! spans the values present (e.g. 0.7–1.0), not −1–1: kept models are mostly highly correlated
//! and the differences between 0.90 and 0.97 are what matters for diversity.
//! Must not: reorder the matrix (the integrator's order, e.g. by kind or by clustering, means
//! something).

use super::{count, figure, no_data};
use crate::data::Heatmap;
use crate::svg::{clip, heat, Anchor, Scale, Svg, P};

/// Labels longer than this are cut (the full name is in the tooltip).
const LABEL_CHARS: usize = 26;

pub fn chart(h: Option<&Heatmap>) -> String {
    let Some(h) = h.filter(|h| !h.labels.is_empty()) else {
        return no_data("No correlations of the kept models were recorded.");
    };
    let n = h.labels.len();
    let cell = (560.0 / n as f64).clamp(6.0, 36.0);
    let show_labels = cell >= 9.0;
    // Room for the longest label: about 6.6 px a character at 12 px; the column labels are
    // turned 45°, so they need that times sin 45° above the grid and to its right.
    let longest = h
        .labels
        .iter()
        .map(|l| l.chars().count().min(LABEL_CHARS))
        .max()
        .unwrap_or(0);
    let label_px = if show_labels {
        longest as f64 * 6.6
    } else {
        0.0
    };
    let (left, top) = (label_px + 20.0, (label_px * 0.71 + 16.0).max(20.0));
    let grid = cell * n as f64;
    let legend_x = left + grid + (label_px * 0.71 - cell / 2.0).max(0.0) + 30.0;
    let width = (legend_x + 90.0).max(600.0);
    let height = top + grid.max(200.0) + 20.0;

    let finite = h.values.iter().flatten().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (mut lo, hi) = if lo > hi {
        (0.0, 1.0)
    } else {
        ((lo * 10.0).floor() / 10.0, (hi * 10.0).ceil() / 10.0)
    };
    if hi - lo < 0.1 {
        lo = hi - 0.1;
    }
    let t = |v: f64| (v - lo) / (hi - lo);

    let mut svg = Svg::new(width, height, "Correlation heatmap of the kept models");
    for (i, row) in h.values.iter().enumerate() {
        let y = top + cell * i as f64;
        for (j, &v) in row.iter().enumerate() {
            let x = left + cell * j as f64;
            let pair = format!("{} × {}", h.labels[i], h.labels[j]);
            if v.is_finite() {
                let tip = format!("{pair}: {v:.3}");
                svg.rect(x, y, cell - 1.0, cell - 1.0, &heat(t(v)), Some(&tip));
                if cell >= 30.0 {
                    let class = if t(v) > 0.6 {
                        "cell-text dark"
                    } else {
                        "cell-text"
                    };
                    let (cx, cy) = (x + cell / 2.0, y + cell / 2.0 + 3.5);
                    svg.text(cx, cy, Anchor::Middle, class, &format!("{v:.2}"));
                }
            } else {
                let tip = format!("{pair}: n/a");
                svg.rect(x, y, cell - 1.0, cell - 1.0, "#d9d9d9", Some(&tip));
            }
        }
    }
    if show_labels {
        for (i, label) in h.labels.iter().enumerate() {
            let c = cell * i as f64 + cell / 2.0;
            let short = clip(label, LABEL_CHARS);
            svg.text_tip(
                left - 6.0,
                top + c + 4.0,
                Anchor::End,
                "label",
                &short,
                Some(label),
            );
            let (x, y) = (left + c - 2.0, top - 6.0);
            svg.raw(&format!(
                r#"<text class="label" x="{x}" y="{y}" transform="rotate(-45 {x} {y})">{}<title>{}</title></text>"#,
                crate::svg::esc(&short),
                crate::svg::esc(label),
                x = P(x),
                y = P(y)
            ));
        }
    }

    // The colour scale: a gradient bar with ticks, high values at the top.
    let (bar_top, bar_h) = (top, grid.clamp(160.0, 320.0));
    let mut stops = String::new();
    for k in 0..=10 {
        let f = k as f64 / 10.0;
        stops.push_str(&format!(r#"<stop offset="{f}" stop-color="{}"/>"#, heat(f)));
    }
    svg.raw(&format!(
        r##"<defs><linearGradient id="sh-heat-scale" x1="0" y1="1" x2="0" y2="0">{stops}</linearGradient></defs><rect x="{}" y="{}" width="16" height="{}" fill="url(#sh-heat-scale)" stroke="#999"/>"##,
        P(legend_x),
        P(bar_top),
        P(bar_h)
    ));
    let scale = Scale::new((lo, hi), (bar_top + bar_h, bar_top));
    for (v, label) in scale.ticks(5) {
        let y = scale.map(v);
        svg.line(legend_x + 16.0, y, legend_x + 21.0, y, "axis");
        svg.text(legend_x + 24.0, y + 4.0, Anchor::Start, "tick", &label);
    }
    svg.text(
        legend_x,
        bar_top + bar_h + 18.0,
        Anchor::Start,
        "axis-label",
        "correlation",
    );
    let note = format!(
        "Correlation of the predictions of {}; colours span {lo:.1} to {hi:.1}, darker is more alike. Hover a cell for the pair.",
        count(n, "kept model")
    );
    figure("Correlation of the kept models", &note, "", &svg.finish())
}
