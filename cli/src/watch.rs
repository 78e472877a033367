//! `stackhive watch`: follows the server-streaming `Watch` RPC until the coordinator says the
//! job set is done, as a progress bar (people) or one JSON line per event (`--json`). The demo
//! reuses [`follow`]. The coordinator decides what "done" means; this only shows it.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use stackhive_proto::v1::{JobState, StateCounts, WatchRequest};

use crate::args::WatchArgs;
use crate::client::Api;
use crate::output::{counts_json, counts_line, duration, finished, job_json, total, truncate};

/// Failures printed one by one before the rest are only counted.
const FAILURES_SHOWN: usize = 20;

/// How progress is shown while following.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// A progress bar on stderr, failures on stdout as they happen.
    Bar,
    /// Every event as one JSON line on stdout.
    JsonLines,
    /// Nothing: the caller reports the outcome.
    Quiet,
}

/// Where a followed job set ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub counts: StateCounts,
    pub elapsed: Duration,
}

pub async fn run(coordinator: &str, json: bool, args: &WatchArgs) -> anyhow::Result<ExitCode> {
    let api = Api::connect(coordinator).await?;
    let request = WatchRequest {
        experiment: args.experiment.clone().unwrap_or_default(),
        job_ids: args.ids.clone(),
        interval_ms: args.interval_ms,
    };
    let show = if json { Show::JsonLines } else { Show::Bar };
    let outcome = follow(&api, request, show).await?;
    if !json {
        outln!("{}", final_line(&outcome));
    }
    Ok(if outcome.counts.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `3000/3000 finished in 12.3s: blocked 0 · queued 0 · …`
pub fn final_line(outcome: &Outcome) -> String {
    let c = &outcome.counts;
    format!(
        "{}/{} finished in {}: {}",
        finished(c),
        total(c),
        duration(outcome.elapsed.as_millis() as i64),
        counts_line(c)
    )
}

/// Follows a job set until the coordinator reports it done.
pub async fn follow(api: &Api, request: WatchRequest, show: Show) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let mut stream = api.watch(request).await?;
    let bar = if show == Show::Bar {
        progress_bar()
    } else {
        ProgressBar::hidden()
    };
    let mut failures_seen = HashSet::new();
    let mut last = StateCounts::default();
    // The latest progress of running jobs that report one (a cnn job's epoch, step and AUC).
    let mut running: BTreeMap<i64, String> = BTreeMap::new();
    loop {
        let event = match stream.next().await {
            Ok(Some(event)) => event,
            Ok(None) => {
                bar.abandon();
                anyhow::bail!("the coordinator closed the watch stream before the jobs finished")
            }
            Err(e) => {
                bar.abandon();
                return Err(e.into());
            }
        };
        if let Some(counts) = &event.counts {
            last = *counts;
        }
        if show == Show::JsonLines {
            let line = serde_json::json!({
                "counts": counts_json(&last),
                "changed": event.changed.iter().map(job_json).collect::<Vec<_>>(),
                "done": event.done,
            });
            outln!("{line}");
        } else if show == Show::Bar {
            let first = bar.length().is_none();
            bar.set_length(total(&last));
            bar.set_position(finished(&last));
            if first {
                if let Some(style) = bar_style() {
                    bar.set_style(style);
                }
                // Jobs finished before the watch began say nothing about the rate.
                bar.reset_eta();
            }
            for job in &event.changed {
                match progress_note(job) {
                    Some(note) if job.state() == JobState::Running => {
                        running.insert(job.id, note);
                    }
                    _ => {
                        running.remove(&job.id);
                    }
                }
            }
            let mut message = short_counts(&last);
            for (id, note) in running.iter().take(RUNNING_SHOWN) {
                message.push_str(&format!("\n  job {id}: {note}"));
            }
            bar.set_message(crate::output::sanitize(&message).into_owned());
            for job in event
                .changed
                .iter()
                .filter(|j| j.state() == JobState::Failed)
            {
                if failures_seen.insert(job.id) && failures_seen.len() <= FAILURES_SHOWN {
                    let name = job.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("");
                    let label = if name.is_empty() {
                        String::new()
                    } else {
                        format!(" ({name})")
                    };
                    // Above the bar, and on stdout: these are results, not decoration.
                    bar.suspend(|| {
                        let mut stdout = std::io::stdout();
                        let error = truncate(&job.error, 200);
                        let line = format!("job {}{label} failed: {error}", job.id);
                        let _ = writeln!(stdout, "{}", crate::output::sanitize(&line));
                    });
                }
            }
        }
        if event.done {
            bar.finish_and_clear();
            let hidden = failures_seen.len().saturating_sub(FAILURES_SHOWN);
            if show == Show::Bar && hidden > 0 {
                outln!("… and {hidden} more failed jobs (stackhive jobs --state failed)");
            }
            return Ok(Outcome {
                counts: last,
                elapsed: start.elapsed(),
            });
        }
    }
}

/// Running jobs whose progress is shown under the bar.
const RUNNING_SHOWN: usize = 4;

/// One line from a job's progress document when it has the training fields (`epoch`,
/// `epochs`, `step`, `steps`, `loss`, `valid_auc`, `images_per_s`, `resumed_from`); other
/// documents are shown as they are, cut short.
fn progress_note(job: &stackhive_proto::v1::Job) -> Option<String> {
    let text = job.progress_json.trim();
    if text.is_empty() {
        return None;
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Some(truncate(text, 80));
    };
    let Some(epoch) = v.get("epoch").and_then(|e| e.as_u64()) else {
        return Some(truncate(text, 80));
    };
    let mut note = format!("epoch {epoch}/{}", v["epochs"]);
    if let (Some(step), Some(steps)) = (v["step"].as_u64(), v["steps"].as_u64()) {
        note.push_str(&format!(" · step {step}/{steps}"));
    }
    if let Some(loss) = v["loss"].as_f64() {
        note.push_str(&format!(" · loss {loss:.4}"));
    }
    if let Some(auc) = v["valid_auc"].as_f64() {
        note.push_str(&format!(" · auc {auc:.4}"));
    }
    if let Some(rate) = v["images_per_s"].as_f64().filter(|r| *r > 0.0) {
        note.push_str(&format!(" · {rate:.0} img/s"));
    }
    if let Some(from) = v["resumed_from"].as_u64() {
        note.push_str(&format!(" · resumed after epoch {from}"));
    }
    Some(note)
}

/// A spinner until the first event: a bar of length 0 would render as full.
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_message("waiting for the coordinator");
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn bar_style() -> Option<ProgressStyle> {
    // A template error is a programming error caught by the first run; keep the spinner then.
    let style = ProgressStyle::with_template(
        // Two lines, so that the per-state counts fit an 80-column terminal.
        "{spinner} [{bar:40}] {pos}/{len} · {rate} · eta {eta}\n  {elapsed_precise} · {msg}",
    )
    .ok()?;
    Some(
        style
            .progress_chars("=> ")
            // indicatif's own {per_sec} prints four decimals.
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} jobs/s", state.per_sec());
                },
            ),
    )
}

/// The non-zero states, shortest first-glance form for the bar.
fn short_counts(c: &StateCounts) -> String {
    let parts: Vec<String> = [
        ("blocked", c.blocked),
        ("queued", c.queued),
        ("running", c.running),
        ("ok", c.succeeded),
        ("failed", c.failed),
        ("cancelled", c.cancelled),
    ]
    .into_iter()
    .filter(|&(_, n)| n > 0)
    .map(|(name, n)| format!("{name} {n}"))
    .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_message_lists_non_zero_states() {
        let c = StateCounts {
            queued: 3,
            running: 2,
            succeeded: 10,
            failed: 1,
            ..Default::default()
        };
        assert_eq!(short_counts(&c), "queued 3 running 2 ok 10 failed 1");
        let outcome = Outcome {
            counts: c,
            elapsed: Duration::from_millis(1500),
        };
        assert_eq!(
            final_line(&outcome),
            "11/16 finished in 1.5s: blocked 0 · queued 3 · running 2 · succeeded 10 · failed 1 · cancelled 0"
        );
    }
}
