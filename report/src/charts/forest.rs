//! The forest plot of the ensemble methods' nested AUC with 95% intervals. The median method's
//! interval is shaded across the whole chart, so whether another method's interval clears it
//! is visible at a glance; the text column says it too.
//! Must not: reorder the methods (the integrator's order is the one the recommendation uses).

use super::{figure, legend, no_data, Ctx, Mark};
use crate::data::Interval;
use crate::svg::{auc_domain, clip, oracle_line, x_axis, Anchor, Scale, Svg, P};

const MEDIAN: &str = "#d9730d";
const RECOMMENDED: &str = "#2e7d32";
const OTHER: &str = "#1f4e79";

pub fn chart(intervals: &[Interval], ctx: &Ctx) -> String {
    if intervals.is_empty() {
        return no_data("No ensemble intervals were recorded.");
    }
    let median = intervals.iter().find(|i| i.is_median);
    let domain = auc_domain(intervals.iter().flat_map(|i| [i.low, i.high]), ctx.oracle);
    let (row, top, left, right, text_x) = (32.0, 46.0, 250.0, 790.0, 810.0);
    let axis_y = top + row * intervals.len() as f64 + 4.0;
    let x = Scale::new(domain, (left, right));
    let mut svg = Svg::new(
        1100.0,
        axis_y + 46.0,
        "Ensemble methods' AUC with 95% intervals",
    );
    x_axis(
        &mut svg,
        &x,
        axis_y,
        top - 6.0,
        8,
        "AUC (nested cross-validation)",
    );
    if let Some(m) = median {
        let (x0, x1) = (x.clamped(m.low), x.clamped(m.high));
        let tip = format!(
            "median method {}: 95% interval [{:.4}, {:.4}]",
            m.name, m.low, m.high
        );
        svg.raw(&format!(
            r#"<rect class="band" x="{}" y="{}" width="{}" height="{}" fill="{MEDIAN}"><title>{}</title></rect>"#,
            P(x0),
            P(top - 6.0),
            P((x1 - x0).max(1.0)),
            P(axis_y - top + 6.0),
            crate::svg::esc(&tip)
        ));
        let label = "median method's 95% interval";
        svg.text(
            (x0 + x1) / 2.0,
            top - 24.0,
            Anchor::Middle,
            "band-label",
            label,
        );
    }
    svg.text(
        text_x,
        top - 9.0,
        Anchor::Start,
        "col-head",
        "AUC [95% interval]",
    );
    for (i, iv) in intervals.iter().enumerate() {
        let mid = top + row * i as f64 + row / 2.0;
        let colour = if iv.is_median {
            MEDIAN
        } else if iv.recommended {
            RECOMMENDED
        } else {
            OTHER
        };
        let mut name = clip(&iv.name, 34);
        if iv.recommended {
            name = format!("★ {name}");
        }
        let class = if iv.recommended {
            "label strong"
        } else {
            "label"
        };
        let relation = match median {
            Some(m) if !std::ptr::eq(m, iv) => {
                if iv.low > m.high {
                    " · above the median"
                } else if iv.high < m.low {
                    " · below the median"
                } else {
                    " · overlaps the median"
                }
            }
            Some(_) => " · the median",
            None => "",
        };
        let tip = format!(
            "{}: AUC {:.4}, 95% interval [{:.4}, {:.4}]{}{}",
            iv.name,
            iv.auc,
            iv.low,
            iv.high,
            if iv.recommended { ", recommended" } else { "" },
            relation
        );
        svg.text_tip(
            left - 12.0,
            mid + 4.0,
            Anchor::End,
            class,
            &name,
            Some(&tip),
        );
        svg.group("ci", &tip);
        let (x0, x1) = (x.clamped(iv.low), x.clamped(iv.high));
        svg.raw(&format!(
            r#"<g stroke="{colour}" stroke-width="2"><line x1="{a}" y1="{m}" x2="{b}" y2="{m}"/><line x1="{a}" y1="{t}" x2="{a}" y2="{u}"/><line x1="{b}" y1="{t}" x2="{b}" y2="{u}"/></g>"#,
            a = P(x0),
            b = P(x1),
            m = P(mid),
            t = P(mid - 6.0),
            u = P(mid + 6.0)
        ));
        let r = if iv.recommended || iv.is_median {
            6.0
        } else {
            5.0
        };
        svg.raw(&format!(
            r##"<circle cx="{}" cy="{}" r="{r}" fill="{colour}" stroke="#fff" stroke-width="1.5"/>"##,
            P(x.clamped(iv.auc)),
            P(mid)
        ));
        svg.end_group();
        let text = format!("{:.4} [{:.4}, {:.4}]{relation}", iv.auc, iv.low, iv.high);
        svg.text(text_x, mid + 4.0, Anchor::Start, "value", &text);
    }
    oracle_line(&mut svg, &x, top - 6.0, axis_y, ctx.oracle);

    let mut items = Vec::new();
    if median.is_some() {
        items.push((MEDIAN, "median method (its interval shaded)", Mark::Swatch));
    }
    if intervals.iter().any(|i| i.recommended && !i.is_median) {
        items.push((RECOMMENDED, "★ recommended", Mark::Swatch));
    }
    if intervals.iter().any(|i| !i.recommended && !i.is_median) {
        items.push((OTHER, "other methods", Mark::Swatch));
    }
    if ctx.oracle.is_some() {
        items.push(("#7b3fb5", "oracle AUC (ceiling)", Mark::Dashed));
    }
    let note = match median {
        Some(_) => "Dots are each method's nested AUC, whiskers its 95% interval. An interval that clears the shaded band differs from the median method; one that overlaps it may not.",
        None => "Dots are each method's nested AUC, whiskers its 95% interval. No method was marked as the median, so there is no band to compare against.",
    };
    figure(
        "Ensemble methods: nested AUC with 95% intervals",
        note,
        &legend(&items),
        &svg.finish(),
    )
}
