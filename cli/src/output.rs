//! How results look: plain-text tables and durations for people, `serde_json` values for
//! `--json`. Pure functions of the API messages; nothing here talks to the coordinator, and the
//! JSON field names follow the proto so scripts can rely on them.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use stackhive_proto::v1::{Job, JobSpec, JobState, Resources, StateCounts, Worker};

/// A left-aligned text table; the last column is not padded, so long errors do not add
/// trailing blanks.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    let _ = write!(line, "{cell}{}  ", " ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `850ms`, `4.2s`, `3m07s`, `2h05m`, `3d04h`: short enough for a table column.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match ms {
        _ if ms < 1_000 => format!("{ms}ms"),
        _ if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ if s < 3_600 => format!("{}m{:02}s", s / 60, s % 60),
        _ if s < 86_400 => format!("{}h{:02}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3_600),
    }
}

pub fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Unspecified => "unknown",
        JobState::Blocked => "blocked",
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

/// `text` cut to `max` characters, marking the cut; newlines folded so a row stays one line.
pub fn truncate(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Ids as compact ranges: `1..3, 7, 9..12`.
pub fn id_ranges(ids: &[i64]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        parts.push(if j == i {
            ids[i].to_string()
        } else {
            format!("{}..{}", ids[i], ids[j])
        });
        i = j + 1;
    }
    parts.join(", ")
}

pub fn finished(c: &StateCounts) -> u64 {
    c.succeeded + c.failed + c.cancelled
}

pub fn total(c: &StateCounts) -> u64 {
    c.blocked + c.queued + c.running + finished(c)
}

/// `blocked 0 · queued 12 · running 8 · succeeded 100 · failed 1 · cancelled 0`
pub fn counts_line(c: &StateCounts) -> String {
    format!(
        "blocked {} · queued {} · running {} · succeeded {} · failed {} · cancelled {}",
        c.blocked, c.queued, c.running, c.succeeded, c.failed, c.cancelled
    )
}

pub fn counts_json(c: &StateCounts) -> Value {
    json!({
        "blocked": c.blocked, "queued": c.queued, "running": c.running,
        "succeeded": c.succeeded, "failed": c.failed, "cancelled": c.cancelled,
        "total": total(c),
    })
}

/// Age of a waiting job, run time of a running or finished one.
pub fn job_age(job: &Job, now: i64) -> String {
    let state = job.state();
    if job.started_at_ms > 0 && (state == JobState::Running || job.finished_at_ms > 0) {
        let end = if job.finished_at_ms > 0 {
            job.finished_at_ms
        } else {
            now
        };
        duration(end - job.started_at_ms)
    } else if job.created_at_ms > 0 {
        format!("{} ago", duration(now - job.created_at_ms))
    } else {
        "-".into()
    }
}

pub fn jobs_table(jobs: &[Job]) -> String {
    let now = now_ms();
    let mut table = Table::new(&[
        "ID",
        "STATE",
        "KIND",
        "NAME",
        "EXPERIMENT",
        "ATTEMPT",
        "WORKER",
        "AGE/DURATION",
        "ERROR",
    ]);
    for job in jobs {
        let spec = job.spec.clone().unwrap_or_default();
        table.push(vec![
            job.id.to_string(),
            state_name(job.state()).to_string(),
            spec.kind,
            truncate(&spec.name, 24),
            truncate(&spec.experiment, 20),
            job.attempt.to_string(),
            short_id(&job.worker_id),
            job_age(job, now),
            truncate(&job.error, 60),
        ]);
    }
    table.render()
}

pub fn workers_table(workers: &[Worker]) -> String {
    let now = now_ms();
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "HOST",
        "FREE SLOTS",
        "FREE GPUS",
        "TAGS",
        "RUNNING",
        "LAST SEEN",
        "ALIVE",
        "KINDS",
    ]);
    for w in workers {
        let r = w.resources.clone().unwrap_or_default();
        let free = |total: u32, busy: u32| format!("{}/{total}", total.saturating_sub(busy));
        let gpus = if r.gpus == 0 || w.gpu_mem_mb.is_empty() {
            free(r.gpus, w.busy_gpus)
        } else {
            let mem: Vec<String> = w
                .gpu_mem_mb
                .iter()
                .map(|m| format!("{}G", m / 1024))
                .collect();
            format!("{} ({})", free(r.gpus, w.busy_gpus), mem.join(","))
        };
        table.push(vec![
            short_id(&w.id),
            w.name.clone(),
            w.hostname.clone(),
            free(r.cpu_slots, w.busy_slots),
            gpus,
            if r.tags.is_empty() {
                "-".into()
            } else {
                r.tags.join(",")
            },
            w.running_jobs.to_string(),
            if w.last_seen_ms > 0 {
                format!("{} ago", duration(now - w.last_seen_ms))
            } else {
                "-".into()
            },
            if w.alive { "yes" } else { "no" }.into(),
            w.kinds.join(","),
        ]);
    }
    table.render()
}

/// Worker ids are UUIDs; eight characters tell them apart in a table.
pub fn short_id(id: &str) -> String {
    if id.is_empty() {
        "-".into()
    } else {
        id.chars().take(8).collect()
    }
}

/// A JSON text field as a JSON value when it parses, as a string otherwise, `null` when empty.
fn embedded_json(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
    }
}

fn resources_json(r: &Resources) -> Value {
    json!({ "cpu_slots": r.cpu_slots, "gpus": r.gpus, "gpu_mem_mb": r.gpu_mem_mb, "tags": r.tags })
}

pub fn spec_json(s: &JobSpec) -> Value {
    json!({
        "kind": s.kind, "name": s.name, "experiment": s.experiment,
        "payload": embedded_json(&s.payload_json), "priority": s.priority,
        "resources": resources_json(&s.resources.clone().unwrap_or_default()),
        "max_attempts": s.max_attempts, "crash_limit": s.crash_limit, "timeout_s": s.timeout_s,
        "depends_on": s.depends_on, "depends_on_batch": s.depends_on_batch,
        "expect_oof_rows": s.expect_oof_rows, "expect_test_rows": s.expect_test_rows,
    })
}

pub fn job_json(j: &Job) -> Value {
    json!({
        "id": j.id,
        "state": state_name(j.state()),
        "spec": spec_json(&j.spec.clone().unwrap_or_default()),
        "attempt": j.attempt, "failures": j.failures, "crashes": j.crashes,
        "worker_id": j.worker_id, "cancel_requested": j.cancel_requested,
        "error": j.error,
        "result": embedded_json(&j.result_json),
        "progress": embedded_json(&j.progress_json),
        "created_at_ms": j.created_at_ms, "started_at_ms": j.started_at_ms,
        "finished_at_ms": j.finished_at_ms, "lease_expires_at_ms": j.lease_expires_at_ms,
        "run_after_ms": j.run_after_ms,
        "prediction_rows_oof": j.prediction_rows_oof,
        "prediction_rows_test": j.prediction_rows_test,
    })
}

pub fn worker_json(w: &Worker) -> Value {
    json!({
        "id": w.id, "name": w.name, "hostname": w.hostname,
        "resources": resources_json(&w.resources.clone().unwrap_or_default()),
        "gpu_mem_mb": w.gpu_mem_mb, "registered_at_ms": w.registered_at_ms,
        "last_seen_ms": w.last_seen_ms, "alive": w.alive, "running_jobs": w.running_jobs,
        "kinds": w.kinds, "busy_slots": w.busy_slots, "busy_gpus": w.busy_gpus,
        "version": w.version,
    })
}

/// Prints one JSON document on stdout.
pub fn print_json(value: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// Text from the coordinator made safe for a terminal: control characters (escape sequences
/// that could rewrite the screen or the title) and bidirectional overrides are shown as
/// `\u{…}` instead of being interpreted; line breaks and tabs stay.
pub fn sanitize(text: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c != '\n' && c != '\t' && stackhive_proto::limits::is_forbidden_char(c);
    if !text.chars().any(bad) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if bad(c) {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// Writes command output, with [`sanitize`]d text: every string a server sent is printed
/// through here. A reader that went away (`stackhive jobs | head -3`) ends the process quietly
/// with success, as SIGPIPE does for C tools, where `println!` would panic. Only for output
/// printed while nothing needs cleaning up.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let text = args.to_string();
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(sanitize(&text).as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_cannot_drive_the_terminal() {
        assert_eq!(sanitize("fold 3\tok\n"), "fold 3\tok\n");
        assert_eq!(sanitize("\u{1b}]0;pwned\u{7}x"), "\\u{1b}]0;pwned\\u{7}x");
        assert_eq!(sanitize("a\u{202e}b"), "a\\u{202e}b");
    }

    #[test]
    fn tables_align_and_ranges_compress() {
        let mut t = Table::new(&["ID", "NAME", "ERROR"]);
        t.push(vec!["1".into(), "a-long-name".into(), "".into()]);
        t.push(vec!["123".into(), "b".into(), "boom".into()]);
        assert_eq!(
            t.render(),
            "ID   NAME         ERROR\n1    a-long-name\n123  b            boom\n"
        );
        assert_eq!(id_ranges(&[1, 2, 3, 7, 9, 10]), "1..3, 7, 9..10");
        assert_eq!(id_ranges(&[]), "");
    }

    #[test]
    fn durations_and_truncation_stay_short() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(4_200), "4.2s");
        assert_eq!(duration(187_000), "3m07s");
        assert_eq!(duration(7_500_000), "2h05m");
        assert_eq!(duration(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
        assert_eq!(truncate("line one\nline two", 12), "line one li…");
        assert_eq!(truncate("short", 12), "short");
    }

    #[test]
    fn job_json_embeds_json_fields_and_names_states() {
        let job = Job {
            id: 7,
            state: JobState::Failed as i32,
            result_json: r#"{"auc": 0.91}"#.into(),
            progress_json: "not json".into(),
            spec: Some(JobSpec {
                kind: "sleep".into(),
                payload_json: r#"{"ms":5}"#.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = job_json(&job);
        assert_eq!(v["state"], "failed");
        assert_eq!(v["result"]["auc"], 0.91);
        assert_eq!(v["progress"], "not json");
        assert_eq!(v["spec"]["payload"]["ms"], 5);
        assert_eq!(v["error"], "");
    }
}
