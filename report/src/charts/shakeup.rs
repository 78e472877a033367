//! The shake-up chart: per ensemble method, the spread of private − public AUC over many random
//! public/private splits (a jittered strip with its quartile box), and the sentence saying how
//! often the method best on public lost on private.
//! Must not: draw more than `MAX_DOTS` dots a row; beyond that it draws evenly spaced quantiles,
//! which keep the shape of the spread and the file small.

use super::{count, figure, no_data, percent};
use crate::data::ShakeUp;
use crate::stats::{five, quantile};
use crate::svg::{clip, esc, nice_step, x_axis, Anchor, Scale, Svg, CATEGORICAL, P};

const MAX_DOTS: usize = 300;

/// No oracle line here: the axis is a difference of AUCs, where a ceiling means nothing.
pub fn chart(shake: Option<&ShakeUp>) -> String {
    let Some(s) = shake.filter(|s| !s.methods.is_empty()) else {
        return no_data("No public/private shake-up study was run.");
    };
    let splits = s.methods.iter().map(|m| m.deltas.len()).max().unwrap_or(0);
    let sentence = format!(
        "On {}, over {} with {} of the rows public: the method best on the public part was beaten on the private part by another method in {} of splits, and scored below the median method there in {}.",
        if s.on.is_empty() { "the test rows" } else { &s.on },
        count(splits, "random split"),
        percent(s.public_fraction),
        percent(s.public_best_loses),
        percent(s.public_best_vs_median_loses)
    );
    let mut out = format!(r#"<p class="finding">{}</p>"#, esc(&sentence));

    let rows: Vec<(usize, Vec<f64>)> = s
        .methods
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut d: Vec<f64> = m.deltas.iter().copied().filter(|v| v.is_finite()).collect();
            d.sort_by(f64::total_cmp);
            (i, d)
        })
        .collect();
    let reach = rows
        .iter()
        .flat_map(|(_, d)| d.first().into_iter().chain(d.last()))
        .fold(0.0f64, |a, v| a.max(v.abs()));
    let step = nice_step(2.0 * reach.max(0.001) * 1.1, 8);
    let reach = ((reach.max(0.001) * 1.05) / step).ceil() * step;

    let (row, top, left, right, text_x) = (46.0, 24.0, 230.0, 780.0, 800.0);
    let axis_y = top + row * rows.len() as f64 + 4.0;
    let x = Scale::new((-reach, reach), (left, right));
    let mut svg = Svg::new(1100.0, axis_y + 46.0, "Private minus public AUC per method");
    x_axis(
        &mut svg,
        &x,
        axis_y,
        top - 6.0,
        8,
        "private AUC − public AUC",
    );
    svg.line(x.map(0.0), top - 6.0, x.map(0.0), axis_y, "zero");
    let zero_label = "private = public";
    svg.text(
        x.map(0.0) + 4.0,
        top - 10.0,
        Anchor::Start,
        "tick",
        zero_label,
    );
    svg.text(
        text_x,
        top - 10.0,
        Anchor::Start,
        "col-head",
        "mean Δ · public → private",
    );
    let mut thinned = false;
    for (i, d) in &rows {
        let m = &s.methods[*i];
        let mid = top + row * *i as f64 + row / 2.0;
        let colour = CATEGORICAL[i % CATEGORICAL.len()];
        let summary = five(d.iter().copied());
        let tip = match &summary {
            Some(f) => format!(
                "{}: {} splits, private − public mean {:+.4}, median {:+.4}, middle half [{:+.4}, {:+.4}], range [{:+.4}, {:+.4}]",
                m.name, f.n, f.mean, f.median, f.q1, f.q3, f.min, f.max
            ),
            None => format!("{}: no finite deltas", m.name),
        };
        svg.text_tip(
            left - 12.0,
            mid + 4.0,
            Anchor::End,
            "label",
            &clip(&m.name, 32),
            Some(&tip),
        );
        let Some(f) = summary else {
            svg.text(left + 8.0, mid + 4.0, Anchor::Start, "tick", "no data");
            continue;
        };
        svg.group("strip", &tip);
        let dots: Vec<f64> = if d.len() > MAX_DOTS {
            thinned = true;
            (0..MAX_DOTS)
                .map(|k| quantile(d, k as f64 / (MAX_DOTS - 1) as f64))
                .collect()
        } else {
            d.clone()
        };
        let mut dots_svg = format!(r#"<g fill="{colour}" fill-opacity="0.45">"#);
        for (k, v) in dots.iter().enumerate() {
            // A golden-ratio sequence spreads the dots evenly up and down, the same every run.
            let jitter = ((k as f64 * 0.618_034).fract() - 0.5) * 26.0;
            dots_svg.push_str(&format!(
                r#"<circle cx="{}" cy="{}" r="2.3"/>"#,
                P(x.clamped(*v)),
                P(mid + jitter)
            ));
        }
        dots_svg.push_str("</g>");
        svg.raw(&dots_svg);
        let (q1, q3) = (x.clamped(f.q1), x.clamped(f.q3));
        svg.raw(&format!(
            r#"<rect class="iqr-outline" x="{}" y="{}" width="{}" height="32"/>"#,
            P(q1),
            P(mid - 16.0),
            P((q3 - q1).max(1.5))
        ));
        svg.line(
            x.clamped(f.median),
            mid - 16.0,
            x.clamped(f.median),
            mid + 16.0,
            "median",
        );
        svg.end_group();
        let text = format!(
            "{:+.4} · {:.4} → {:.4}",
            f.mean, m.mean_public, m.mean_private
        );
        svg.text(text_x, mid + 4.0, Anchor::Start, "value", &text);
    }
    let mut note = String::from(
        "One dot per split; the box spans the middle half of the splits and the dark bar is the median. Dots left of the line did worse on private than on public.",
    );
    if thinned {
        note.push_str(&format!(
            " Rows with more than {MAX_DOTS} splits show {MAX_DOTS} evenly spaced quantiles."
        ));
    }
    out.push_str(&figure(
        "Shake-up: private − public AUC per method",
        &note,
        "",
        &svg.finish(),
    ));
    out
}
