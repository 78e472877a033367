//! The queue's timeline: one lane per worker (split into slots where its jobs overlap), bars
//! coloured by job kind, failed jobs outlined and flagged in red, time in seconds since the
//! first job started.
//! Must not: draw one bar per job when jobs are too narrow to see. Back-to-back jobs narrower
//! than a few pixels in one slot merge into one bar (coloured by the kind that ran longest in
//! it, its tooltip counting the jobs per kind); if that still leaves more than `MAX_BARS`, the
//! width under which jobs merge doubles until it does not. Failed jobs are never merged away.

use std::collections::BTreeMap;

use super::{count, figure, legend, no_data, Ctx, Mark};
use crate::data::TimelineJob;
use crate::svg::{clip, esc, x_axis, Anchor, Scale, Svg, P};

/// Beyond this many concurrent jobs a worker's extra jobs share slots (drawn overlapping).
const MAX_SLOTS: usize = 8;
/// About 150 bytes each with its tooltip: 3,000 bars keep the timeline under half a megabyte.
const MAX_BARS: usize = 3_000;
const FAILED: &str = "#d62728";

/// Consecutive jobs of one slot drawn as one bar.
struct Run<'a> {
    start: f64,
    end: f64,
    /// (kind, seconds run, jobs)
    kinds: Vec<(&'a str, f64, usize)>,
    /// Whether the last job added was narrow; a wide job ends a run.
    last_narrow: bool,
}

impl<'a> Run<'a> {
    fn new(j: &'a TimelineJob, narrow: bool) -> Self {
        Run {
            start: j.start_s,
            end: j.end_s,
            kinds: vec![(j.kind.as_str(), j.end_s - j.start_s, 1)],
            last_narrow: narrow,
        }
    }

    fn add(&mut self, j: &'a TimelineJob, narrow: bool) {
        self.end = self.end.max(j.end_s);
        self.last_narrow = narrow;
        match self.kinds.iter_mut().find(|k| k.0 == j.kind) {
            Some(k) => {
                k.1 += j.end_s - j.start_s;
                k.2 += 1;
            }
            None => self.kinds.push((j.kind.as_str(), j.end_s - j.start_s, 1)),
        }
    }

    fn dominant(&self) -> &'a str {
        self.kinds
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or("", |k| k.0)
    }

    fn jobs(&self) -> usize {
        self.kinds.iter().map(|k| k.2).sum()
    }
}

/// What one slot draws: merged bars, and failed jobs on their own.
struct SlotPlan<'a> {
    bars: Vec<Run<'a>>,
    failed: Vec<&'a TimelineJob>,
}

/// Puts each job in the first slot free at its start (interval partitioning), so overlapping
/// jobs of one worker do not hide each other.
fn slots(mut jobs: Vec<&TimelineJob>) -> Vec<Vec<&TimelineJob>> {
    jobs.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    let mut slots: Vec<Vec<&TimelineJob>> = Vec::new();
    let mut ends: Vec<f64> = Vec::new();
    for j in jobs {
        let k = match ends.iter().position(|&e| e <= j.start_s) {
            Some(k) => k,
            None if slots.len() < MAX_SLOTS => {
                slots.push(Vec::new());
                ends.push(f64::NEG_INFINITY);
                slots.len() - 1
            }
            None => (0..ends.len())
                .min_by(|&a, &b| ends[a].total_cmp(&ends[b]))
                .unwrap_or(0),
        };
        ends[k] = ends[k].max(j.end_s);
        slots[k].push(j);
    }
    slots
}

/// Merges a slot's jobs narrower than `min_px` pixels (of `pixel_s` seconds) that follow each
/// other within a pixel: jobs of one kind without limit, mixed kinds up to 2.5 × `min_px`, so
/// a slot of interleaved tiny jobs still shows roughly which kinds ran where.
fn plan<'a>(slot: &[&'a TimelineJob], pixel_s: f64, min_px: f64) -> SlotPlan<'a> {
    let mut out = SlotPlan {
        bars: Vec::new(),
        failed: Vec::new(),
    };
    let mut run: Option<Run> = None;
    for &j in slot {
        if j.failed() {
            out.failed.push(j);
            continue;
        }
        let narrow = j.end_s - j.start_s < min_px * pixel_s;
        let merge = run.as_ref().is_some_and(|r| {
            let close = j.start_s - r.end <= pixel_s;
            let mixed_ok = r.end - r.start < 2.5 * min_px * pixel_s;
            narrow && r.last_narrow && close && (r.dominant() == j.kind || mixed_ok)
        });
        match &mut run {
            Some(r) if merge => r.add(j, narrow),
            _ => {
                out.bars.extend(run.take());
                run = Some(Run::new(j, narrow));
            }
        }
    }
    out.bars.extend(run);
    out
}

pub fn chart(jobs: &[TimelineJob], ctx: &Ctx) -> String {
    if jobs.is_empty() {
        return no_data("No jobs were recorded in the queue's timeline.");
    }
    let t0 = jobs.iter().map(|j| j.start_s).fold(f64::INFINITY, f64::min);
    let t1 = jobs
        .iter()
        .map(|j| j.end_s)
        .fold(f64::NEG_INFINITY, f64::max);
    let span = if t1 > t0 { t1 - t0 } else { 1.0 };
    let mut workers: BTreeMap<&str, Vec<&TimelineJob>> = BTreeMap::new();
    for j in jobs {
        workers.entry(j.worker.as_str()).or_default().push(j);
    }
    let lanes: Vec<(&str, Vec<Vec<&TimelineJob>>)> =
        workers.into_iter().map(|(w, js)| (w, slots(js))).collect();

    let (left, right, top) = (150.0, 1070.0, 14.0);
    let x = Scale::new((0.0, span), (left, right));
    let pixel_s = span / (right - left);
    let mut min_px = 2.0;
    let plans = loop {
        let plans: Vec<Vec<SlotPlan>> = lanes
            .iter()
            .map(|(_, slots)| slots.iter().map(|s| plan(s, pixel_s, min_px)).collect())
            .collect();
        let bars: usize = plans.iter().flatten().map(|p| p.bars.len()).sum();
        if bars <= MAX_BARS || min_px >= 64.0 {
            break plans;
        }
        min_px *= 2.0;
    };

    let lane_h = |n: usize| (n as f64 * 9.0).clamp(30.0, 96.0);
    let gap = 10.0;
    let axis_y = top
        + lanes
            .iter()
            .map(|(_, s)| lane_h(s.len()) + gap)
            .sum::<f64>();
    let mut svg = Svg::new(
        1100.0,
        axis_y + 46.0,
        "Timeline of the queue's jobs per worker",
    );
    x_axis(
        &mut svg,
        &x,
        axis_y,
        top,
        10,
        "seconds since the first job started",
    );
    let (mut bars, mut failed) = (0usize, 0usize);
    let mut y = top;
    for ((worker, slots), plans) in lanes.iter().zip(&plans) {
        let h = lane_h(slots.len());
        let slot_h = h / slots.len() as f64;
        let bar_h = (slot_h - 1.5).max(1.0);
        svg.raw(&format!(
            r#"<rect class="lane" x="{}" y="{}" width="{}" height="{}"/>"#,
            P(left),
            P(y - 3.0),
            P(right - left),
            P(h + 6.0)
        ));
        let n: usize = slots.iter().map(Vec::len).sum();
        let tip = format!("{worker}: {n} job(s), up to {} at once", slots.len());
        let label = clip(worker, 20);
        svg.text_tip(
            left - 10.0,
            y + h / 2.0 + 4.0,
            Anchor::End,
            "label",
            &label,
            Some(&tip),
        );
        for (k, p) in plans.iter().enumerate() {
            let sy = y + slot_h * k as f64;
            for r in &p.bars {
                draw_bar(&mut svg, &x, t0, worker, r, ctx, (sy, bar_h));
            }
            for j in &p.failed {
                draw_failed(&mut svg, &x, t0, j, (sy, bar_h));
            }
            bars += p.bars.len();
            failed += p.failed.len();
        }
        y += h + gap;
    }

    let mut kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut items: Vec<(&str, &str, Mark)> = kinds
        .iter()
        .map(|k| (ctx.kinds.get(k), *k, Mark::Swatch))
        .collect();
    if failed > 0 {
        items.push((FAILED, "failed (outlined, flagged above)", Mark::Swatch));
    }
    let note = format!(
        "{} on {} over {:.0} s, drawn as {} and {}: back-to-back jobs shorter than {:.0} px are merged into one bar, coloured by the kind that ran longest in it (hover for the counts). Jobs of one worker that overlap get their own slot within its lane.",
                count(jobs.len(), "job"),
        count(lanes.len(), "worker"),
        span,
        count(bars, "bar"),
        count(failed, "failed job"),
        min_px
    );
    figure(
        "Jobs per worker over time",
        &note,
        &legend(&items),
        &svg.finish(),
    )
}

fn draw_bar(
    svg: &mut Svg,
    x: &Scale,
    t0: f64,
    worker: &str,
    r: &Run,
    ctx: &Ctx,
    (sy, h): (f64, f64),
) {
    let (x0, x1) = (x.map(r.start - t0), x.map(r.end - t0));
    let kind = r.dominant();
    let (start, end) = (r.start - t0, r.end - t0);
    let tip = if r.jobs() == 1 {
        format!(
            "{kind} on {worker}: {start:.1}–{end:.1} s ({:.1} s)",
            end - start
        )
    } else {
        let mix: Vec<String> = r.kinds.iter().map(|k| format!("{} {}", k.2, k.0)).collect();
        format!(
            "{} jobs on {worker} ({}): {start:.1}–{end:.1} s",
            r.jobs(),
            mix.join(", ")
        )
    };
    // A hairline of white between wide bars shows where one job ends and the next begins; on
    // bars a pixel or two wide it would wash out the colour.
    let class = if x1 - x0 >= 3.0 {
        r#" class="job""#
    } else {
        ""
    };
    svg.raw(&format!(
        r#"<rect{class} x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>"#,
        P(x0),
        P(sy),
        P((x1 - x0).max(1.0)),
        P(h),
        ctx.kinds.get(kind),
        esc(&tip)
    ));
}

/// A failed job: red outline, and a red flag above it that stays visible when the job is
/// narrower than a pixel.
fn draw_failed(svg: &mut Svg, x: &Scale, t0: f64, j: &TimelineJob, (sy, h): (f64, f64)) {
    let (x0, x1) = (x.map(j.start_s - t0), x.map(j.end_s - t0));
    let tip = format!(
        "{} on {}: {:.1}–{:.1} s, {}",
        j.kind,
        j.worker,
        j.start_s - t0,
        j.end_s - t0,
        j.state
    );
    svg.raw(&format!(
        r#"<g class="failed"><title>{}</title><rect x="{}" y="{}" width="{}" height="{}" fill="{FAILED}" fill-opacity="0.35" stroke="{FAILED}"/><path d="M{} {}l-3.5 -5h7z" fill="{FAILED}"/></g>"#,
        esc(&tip),
        P(x0),
        P(sy),
        P((x1 - x0).max(1.0)),
        P(h),
        P(x0),
        P(sy + 1.0)
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svg::KindColours;

    fn job(worker: &str, kind: &str, start_s: f64, end_s: f64, state: &str) -> TimelineJob {
        TimelineJob {
            worker: worker.into(),
            kind: kind.into(),
            start_s,
            end_s,
            state: state.into(),
        }
    }

    #[test]
    fn thousands_of_tiny_jobs_stay_a_bounded_number_of_bars_and_failures_stay_visible() {
        // 60,000 one-second jobs of alternating kinds on 4 busy workers over 10,000 s.
        let kinds = ["a", "b", "c"];
        let jobs: Vec<TimelineJob> = (0..60_000)
            .map(|i| {
                let s = (i / 4) as f64 * 0.66;
                let state = if i % 1000 == 7 { "FAILED" } else { "succeeded" };
                job(
                    &format!("w{}", i % 4),
                    kinds[i % 3],
                    s,
                    s + 1.0 + (i % 7) as f64,
                    state,
                )
            })
            .collect();
        let ctx = Ctx {
            kinds: KindColours::new(kinds),
            oracle: None,
        };
        let html = chart(&jobs, &ctx);
        let bars = html.matches("<rect").count();
        let failed = html.matches(r#"class="failed""#).count();
        assert_eq!(failed, 60, "every failed job is drawn");
        assert!(bars <= MAX_BARS + failed + 4 + 1, "{bars} rects");
        assert!(html.len() < 700_000, "{} bytes", html.len());

        // Three wide jobs back to back stay three bars.
        let wide: Vec<TimelineJob> = (0..3)
            .map(|i| job("w", "a", i as f64 * 10.0, i as f64 * 10.0 + 10.0, "ok"))
            .collect();
        let html = chart(&wide, &ctx);
        assert_eq!(html.matches(r#"class="job""#).count(), 3);
    }
}
