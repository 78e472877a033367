//! SVG building blocks shared by the charts: escaping, compact coordinates, linear scales with
//! readable ticks, axes, the AUC "ceiling" line and the colour palettes. Elements carry classes
//! styled by the page's stylesheet, so each chart stays small.
//! Must not: know any report section, or emit anything that fetches (no external href, font or
//! image); every string that reaches the output from data goes through [`esc`].

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

/// The SVG namespace. It names a vocabulary; nothing is fetched from it.
pub const SVG_NS: &str = "http://www.w3.org/2000/svg";

/// Escapes text for HTML/SVG text and attribute values alike. Control characters, which XML
/// forbids, become U+FFFD.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `s`, cut in the middle with "…" (full names go in tooltips).
/// The middle, because names of runs usually differ at their ends: "cnn-effnet-b3-…-fold4".
pub fn clip(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let keep = max.saturating_sub(1);
    let head = keep - keep * 2 / 5;
    let tail = keep - head;
    let mut out: String = s.chars().take(head).collect();
    out.push('…');
    out.extend(s.chars().skip(n - tail));
    out
}

/// A coordinate with one decimal and no trailing ".0"; thousands of bars make the digits count.
/// Non-finite values become 0 rather than an attribute the browser rejects.
#[derive(Clone, Copy)]
pub struct P(pub f64);

impl fmt::Display for P {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = if self.0.is_finite() {
            (self.0 * 10.0).round() / 10.0
        } else {
            0.0
        };
        if v == v.trunc() {
            write!(f, "{}", v as i64)
        } else {
            write!(f, "{v:.1}")
        }
    }
}

/// How a text is anchored at its x.
#[derive(Clone, Copy)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    fn attr(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

/// An SVG document under construction. Writing to a `String` cannot fail, hence the ignored
/// `fmt::Result`s.
pub struct Svg {
    buf: String,
}

impl Svg {
    pub fn new(width: f64, height: f64, label: &str) -> Self {
        let mut buf = String::new();
        let _ = write!(
            buf,
            r#"<svg xmlns="{SVG_NS}" class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{}">"#,
            esc(label),
            w = P(width),
            h = P(height)
        );
        Svg { buf }
    }

    /// Raw markup; the caller has escaped any data in it.
    pub fn raw(&mut self, s: &str) {
        self.buf.push_str(s);
    }

    pub fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, class: &str) {
        let _ = write!(
            self.buf,
            r#"<line class="{class}" x1="{}" y1="{}" x2="{}" y2="{}"/>"#,
            P(x1),
            P(y1),
            P(x2),
            P(y2)
        );
    }

    /// A rectangle filled with `fill` (a colour this crate chose, never data), with an
    /// optional tooltip.
    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, tip: Option<&str>) {
        let _ = write!(
            self.buf,
            r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{fill}""#,
            P(x),
            P(y),
            P(w.max(0.0)),
            P(h.max(0.0))
        );
        self.close(tip, "rect");
    }

    pub fn text(&mut self, x: f64, y: f64, anchor: Anchor, class: &str, s: &str) {
        self.text_tip(x, y, anchor, class, s, None);
    }

    /// A text with a tooltip, for labels cut short by [`clip`].
    pub fn text_tip(
        &mut self,
        x: f64,
        y: f64,
        anchor: Anchor,
        class: &str,
        s: &str,
        tip: Option<&str>,
    ) {
        let _ = write!(
            self.buf,
            r#"<text class="{class}" x="{}" y="{}" text-anchor="{}">{}"#,
            P(x),
            P(y),
            anchor.attr(),
            esc(s)
        );
        if let Some(t) = tip {
            let _ = write!(self.buf, "<title>{}</title>", esc(t));
        }
        self.buf.push_str("</text>");
    }

    /// Opens a group whose tooltip covers all its children.
    pub fn group(&mut self, class: &str, tip: &str) {
        let _ = write!(
            self.buf,
            r#"<g class="{class}"><title>{}</title>"#,
            esc(tip)
        );
    }

    pub fn end_group(&mut self) {
        self.buf.push_str("</g>");
    }

    /// Ends an element whose attributes are written: self-closing without a tooltip.
    pub fn close(&mut self, tip: Option<&str>, tag: &str) {
        match tip {
            Some(t) => {
                let _ = write!(self.buf, "><title>{}</title></{tag}>", esc(t));
            }
            None => self.buf.push_str("/>"),
        }
    }

    pub fn finish(mut self) -> String {
        self.buf.push_str("</svg>");
        self.buf
    }
}

/// A linear map from a data domain to pixels.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub d0: f64,
    pub d1: f64,
    pub r0: f64,
    pub r1: f64,
}

impl Scale {
    pub fn new((d0, d1): (f64, f64), (r0, r1): (f64, f64)) -> Self {
        Scale { d0, d1, r0, r1 }
    }

    pub fn map(&self, v: f64) -> f64 {
        if self.d1 == self.d0 {
            return (self.r0 + self.r1) / 2.0;
        }
        self.r0 + (v - self.d0) / (self.d1 - self.d0) * (self.r1 - self.r0)
    }

    /// Like `map`, but values outside the domain land on its edge.
    pub fn clamped(&self, v: f64) -> f64 {
        let (lo, hi) = if self.d0 <= self.d1 {
            (self.d0, self.d1)
        } else {
            (self.d1, self.d0)
        };
        self.map(v.clamp(lo, hi))
    }

    /// About `target` ticks at 1, 2 or 5 × 10ᵏ steps, with labels of just enough decimals.
    pub fn ticks(&self, target: usize) -> Vec<(f64, String)> {
        self.ticks_at_least(target, 0.0)
    }

    /// `ticks` with steps of at least `min_step` (1 for counts: no "2.5 models").
    pub fn ticks_at_least(&self, target: usize, min_step: f64) -> Vec<(f64, String)> {
        let (lo, hi) = (self.d0.min(self.d1), self.d0.max(self.d1));
        let step = nice_step(hi - lo, target).max(min_step);
        let decimals = (-step.log10().floor()).max(0.0) as usize;
        let mut out = Vec::new();
        let mut k = (lo / step - 1e-9).ceil();
        while k * step <= hi + step * 1e-9 {
            let v = k * step;
            let v = if v.abs() < step * 1e-6 { 0.0 } else { v };
            out.push((v, format!("{v:.decimals$}")));
            k += 1.0;
        }
        out
    }
}

/// `v` with as many decimals as a tick `step` needs.
pub fn fmt_step(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// A step of 1, 2 or 5 × 10ᵏ giving about `target` intervals over `span`.
pub fn nice_step(span: f64, target: usize) -> f64 {
    let span = if span.is_finite() && span > 0.0 {
        span
    } else {
        1.0
    };
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// The AUC axis domain for `values` and the oracle: padded, widened to at least 0.02, rounded
/// to tick steps and kept within [0, 1]. AUCs cluster (0.84 vs 0.86), so an axis from 0 would
/// hide every difference worth seeing; the charts say the axis does not start at 0.
pub fn auc_domain(values: impl IntoIterator<Item = f64>, oracle: Option<f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().chain(oracle).filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (0.5, 1.0);
    }
    let pad = ((hi - lo) * 0.06).max(0.01);
    let (lo, hi) = ((lo - pad).max(0.0), (hi + pad).min(1.0));
    let step = nice_step(hi - lo, 8);
    (
        ((lo / step).floor() * step).max(0.0),
        ((hi / step).ceil() * step).min(1.0),
    )
}

/// A horizontal axis at `y` with grid lines up to `top`, tick labels and a title.
pub fn x_axis(svg: &mut Svg, x: &Scale, y: f64, top: f64, target: usize, title: &str) {
    for (v, label) in x.ticks(target) {
        let px = x.map(v);
        svg.line(px, top, px, y, "grid");
        svg.text(px, y + 15.0, Anchor::Middle, "tick", &label);
    }
    svg.line(x.r0, y, x.r1, y, "axis");
    svg.text(
        (x.r0 + x.r1) / 2.0,
        y + 34.0,
        Anchor::Middle,
        "axis-label",
        title,
    );
}

/// A vertical axis at `x` with grid lines across to `right`, tick labels and a rotated title.
pub fn y_axis(svg: &mut Svg, y: &Scale, x: f64, right: f64, target: usize, title: &str) {
    y_axis_steps(svg, y, x, right, (target, 0.0), title);
}

/// `y_axis` with ticks at least `min_step` apart.
pub fn y_axis_steps(
    svg: &mut Svg,
    y: &Scale,
    x: f64,
    right: f64,
    (target, min_step): (usize, f64),
    title: &str,
) {
    for (v, label) in y.ticks_at_least(target, min_step) {
        let py = y.map(v);
        svg.line(x, py, right, py, "grid");
        svg.text(x - 6.0, py + 4.0, Anchor::End, "tick", &label);
    }
    svg.line(x, y.r0, x, y.r1, "axis");
    let cy = (y.r0 + y.r1) / 2.0;
    let _ = write!(
        svg.buf,
        r#"<text class="axis-label" x="{x}" y="{y}" text-anchor="middle" transform="rotate(-90 {x} {y})">{}</text>"#,
        esc(title),
        x = P(x - 42.0),
        y = P(cy)
    );
}

/// The dashed "ceiling" at the generator's oracle AUC, across an AUC axis from `top` to
/// `bottom`, labelled just above `top` on the side of the line with more room (charts keep
/// 14 px free above their plot for it).
pub fn oracle_line(svg: &mut Svg, x: &Scale, top: f64, bottom: f64, oracle: Option<f64>) {
    let Some(o) = oracle else { return };
    let px = x.clamped(o);
    let tip = format!("oracle AUC {o:.4}: the best any model can reach on this generated data");
    let _ = write!(
        svg.buf,
        r#"<line class="oracle" x1="{px}" y1="{}" x2="{px}" y2="{}"><title>{}</title></line>"#,
        P(top),
        P(bottom),
        esc(&tip),
        px = P(px)
    );
    let (lx, anchor) = if px > (x.r0 + x.r1) / 2.0 {
        (px - 4.0, Anchor::End)
    } else {
        (px + 4.0, Anchor::Start)
    };
    svg.text(
        lx,
        top - 3.0,
        anchor,
        "oracle-label",
        &format!("oracle {o:.3}"),
    );
}

/// Tableau 10, distinct and readable by most colour-blind readers, then the light halves of
/// Tableau 20's pairs for kinds 11 to 20 (rarely needed; after 20 colours repeat).
pub const CATEGORICAL: [&str; 20] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#a0cbe8", "#ffbe7d", "#ff9d9a", "#499894", "#8cd17d", "#b6992d",
    "#d4a6c8", "#d37295", "#d7b5a6", "#79706e",
];

/// One colour per kind, the same in every chart (models and timeline kinds share the map).
pub struct KindColours(BTreeMap<String, &'static str>);

impl KindColours {
    pub fn new<'a>(kinds: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names: Vec<&str> = kinds.into_iter().collect();
        names.sort_unstable();
        names.dedup();
        let map = names
            .into_iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), CATEGORICAL[i % CATEGORICAL.len()]))
            .collect();
        KindColours(map)
    }

    pub fn get(&self, kind: &str) -> &'static str {
        self.0.get(kind).copied().unwrap_or("#888888")
    }
}

/// Yellow → orange → dark red (ColorBrewer YlOrRd) at `t` in [0, 1]: darker means more
/// correlated, as readers of correlation matrices expect.
pub fn heat(t: f64) -> String {
    const STOPS: [(u8, u8, u8); 7] = [
        (255, 255, 204),
        (255, 237, 160),
        (254, 217, 118),
        (254, 178, 76),
        (253, 141, 60),
        (227, 26, 28),
        (128, 0, 38),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (STOPS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(STOPS.len() - 2);
    let f = pos - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_formats_numbers() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'co'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;co&#39;"
        );
        assert_eq!(esc("a\u{0}b"), "a\u{fffd}b");
        assert_eq!(P(12.0).to_string(), "12");
        assert_eq!(P(12.345).to_string(), "12.3");
        assert_eq!(P(f64::NAN).to_string(), "0");
        assert_eq!(clip("abcdefghij", 6), "abc…ij");
        assert_eq!(clip("abc", 3), "abc");
        let ticks = Scale::new((0.8, 0.9), (0.0, 100.0)).ticks(5);
        let labels: Vec<&str> = ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["0.80", "0.82", "0.84", "0.86", "0.88", "0.90"]);
        let (lo, hi) = auc_domain([0.84, 0.86], Some(0.9));
        assert!(lo <= 0.83 && (0.9..=1.0).contains(&hi), "{lo}..{hi}");
    }
}
