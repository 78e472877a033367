//! The report's charts, one module per section, and the frame every chart shares: a titled
//! figure with a note, an HTML legend and the SVG, or a "no data" note instead.
//! Must not: read files, or put data into markup without `svg::esc`.

pub mod forest;
pub mod heatmap;
pub mod models;
pub mod roc;
pub mod shakeup;
pub mod timeline;

use crate::svg::{esc, KindColours};

/// What every chart may need besides its own data.
pub struct Ctx {
    pub kinds: KindColours,
    pub oracle: Option<f64>,
}

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
pub enum Mark {
    Swatch,
    Dashed,
}

/// An HTML legend (it wraps with the page, which an SVG legend cannot). `colour` is ours,
/// `label` is data and gets escaped.
pub fn legend(items: &[(&str, &str, Mark)]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let mut out = String::from(r#"<div class="legend">"#);
    for (colour, label, mark) in items {
        let class = match mark {
            Mark::Swatch => "sw",
            Mark::Dashed => "sw dashed",
        };
        out.push_str(&format!(
            r#"<span class="item"><span class="{class}" style="--c:{colour}"></span>{}</span>"#,
            esc(label)
        ));
    }
    out.push_str("</div>");
    out
}

/// A chart with its title and a note (plain text, escaped here) above it.
pub fn figure(title: &str, note: &str, legend_html: &str, svg: &str) -> String {
    let note = if note.is_empty() {
        String::new()
    } else {
        format!(r#"<p class="note">{}</p>"#, esc(note))
    };
    format!(
        r#"<figure><h3>{}</h3>{note}{legend_html}<div class="plot">{svg}</div></figure>"#,
        esc(title)
    )
}

/// What a section shows instead of a chart when it has nothing to draw.
pub fn no_data(what: &str) -> String {
    format!(r#"<p class="empty">{}</p>"#, esc(what))
}

/// "1,234": counts in notes are read, not parsed.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "1 model", "2,000 models": counts in prose.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", thousands(n))
    }
}

/// An AUC for a label; "—" when it was not measured.
pub fn auc_text(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "—".to_string()
    }
}

/// A share (0–1) as a percentage for prose.
pub fn percent(share: f64) -> String {
    if share.is_finite() {
        format!("{:.0}%", share * 100.0)
    } else {
        "an unmeasured share".to_string()
    }
}
