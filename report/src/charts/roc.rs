//! The ROC chart: every curve on one square plot with the chance diagonal, and a legend beside
//! it ordered by AUC.
//! Must not: recompute AUCs from the points (the integrator's AUC is the one reported).

use super::{auc_text, figure, no_data, Ctx};
use crate::data::Curve;
use crate::svg::{clip, esc, x_axis, y_axis, Anchor, Scale, Svg, CATEGORICAL, P};

pub fn chart(curves: &[Curve], ctx: &Ctx) -> String {
    if curves.is_empty() {
        return no_data("No ROC curves were recorded.");
    }
    let mut order: Vec<&Curve> = curves.iter().collect();
    // Best first, so the legend reads as a ranking and colours follow rank.
    order.sort_by(|a, b| {
        let key = |c: &Curve| {
            if c.auc.is_finite() {
                c.auc
            } else {
                f64::NEG_INFINITY
            }
        };
        key(b).total_cmp(&key(a))
    });
    let (left, top, size): (f64, f64, f64) = (70.0, 16.0, 480.0);
    let legend_x = left + size + 40.0;
    let row = 22.0;
    let legend_rows = order.len() + usize::from(ctx.oracle.is_some()) + 1;
    let height = (top + size + 50.0).max(top + row * legend_rows as f64 + 20.0);
    let x = Scale::new((0.0, 1.0), (left, left + size));
    let y = Scale::new((0.0, 1.0), (top + size, top));
    let mut svg = Svg::new(
        1100.0,
        height,
        "ROC curves of the best models and the ensembles",
    );
    y_axis(&mut svg, &y, left, left + size, 5, "True positive rate");
    x_axis(&mut svg, &x, top + size, top, 5, "False positive rate");
    svg.raw(&format!(
        r#"<line class="diag" x1="{}" y1="{}" x2="{}" y2="{}"><title>chance: AUC 0.5</title></line>"#,
        P(x.map(0.0)),
        P(y.map(0.0)),
        P(x.map(1.0)),
        P(y.map(1.0))
    ));

    svg.text(
        legend_x,
        top + 12.0,
        Anchor::Start,
        "col-head",
        "AUC      model",
    );
    // Drawn worst first so the best curve lies on top where curves cross.
    for (rank, c) in order.iter().enumerate().rev() {
        let colour = CATEGORICAL[rank % CATEGORICAL.len()];
        let tip = format!("{}: AUC {:.4}", c.name, c.auc);
        if c.points.len() >= 2 {
            let pts: Vec<String> = c
                .points
                .iter()
                .map(|&(f, t)| format!("{},{}", P(x.map(f)), P(y.map(t))))
                .collect();
            svg.raw(&format!(
                r#"<polyline class="curve" stroke="{colour}" points="{}"><title>{}</title></polyline>"#,
                pts.join(" "),
                esc(&tip)
            ));
        }
        let ly = top + row * (rank + 1) as f64 + 12.0;
        svg.raw(&format!(
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{colour}" stroke-width="3"/>"#,
            P(legend_x),
            P(ly - 4.0),
            P(legend_x + 22.0),
            P(ly - 4.0)
        ));
        let missing = if c.points.len() < 2 {
            " (no curve)"
        } else {
            ""
        };
        let text = format!("{}   {}{missing}", auc_text(c.auc), clip(&c.name, 56));
        svg.text_tip(
            legend_x + 30.0,
            ly,
            Anchor::Start,
            "label mono-num",
            &text,
            Some(&tip),
        );
    }
    if let Some(o) = ctx.oracle {
        let ly = top + row * (order.len() + 1) as f64 + 12.0;
        svg.raw(&format!(
            r#"<line class="oracle" x1="{}" y1="{}" x2="{}" y2="{}"/>"#,
            P(legend_x),
            P(ly - 4.0),
            P(legend_x + 22.0),
            P(ly - 4.0)
        ));
        let text = format!("{o:.4}   oracle: the best achievable AUC on this generated data");
        svg.text(
            legend_x + 30.0,
            ly,
            Anchor::Start,
            "label oracle-text",
            &text,
        );
    }
    figure(
        "ROC curves of the best models and the ensembles",
        "Each curve is one model or ensemble, scored on its out-of-fold predictions; the dashed diagonal is chance. Hover a curve for its name.",
        "",
        &svg.finish(),
    )
}
