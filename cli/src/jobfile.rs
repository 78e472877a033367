//! Job files for `stackhive submit --file`: TOML with an optional default `experiment` and
//! `[[job]]` tables, expanded into one submit batch. Dependencies by name become
//! `depends_on_batch` indices, so a whole pipeline is stored atomically; integers are ids of
//! jobs that already exist. Every problem is reported with the line it is on: a file with an
//! error submits nothing. Kinds and payload fields are left to the coordinator to validate.
//!
//! ```toml
//! experiment = "melanoma-l1"
//!
//! [[job]]
//! name = "fold"
//! kind = "sleep"
//! count = 5
//! payload = { ms = 200 }
//!
//! [[job]]
//! name = "report"
//! kind = "shell"
//! payload = { command = "echo done" }
//! depends_on = ["fold"]      # all five copies
//! ```

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;
use serde_json::Value as Json;
use stackhive_proto::v1::{JobSpec, Resources};
use toml::{Spanned, Value as Toml};

use crate::spec::limits;

/// What is wrong with a job file, and where.
#[derive(Debug, PartialEq, Eq)]
pub struct JobFileError {
    pub path: String,
    pub message: String,
    pub at: Option<Location>,
}

/// A place in the file, with the text of its line for the message.
#[derive(Debug, PartialEq, Eq)]
pub struct Location {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub text: String,
    /// Characters to underline.
    pub width: usize,
}

impl std::error::Error for JobFileError {}

impl fmt::Display for JobFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Shaped like a compiler message: a reader sees the offending text, not only a number.
        let Some(at) = &self.at else {
            return write!(f, "{}: {}", self.path, self.message);
        };
        let gutter = " ".repeat(at.line.to_string().len());
        write!(
            f,
            "{}:{}:{}: {}\n{gutter} |\n{} | {}\n{gutter} | {}{}",
            self.path,
            at.line,
            at.column,
            self.message,
            at.line,
            at.text,
            " ".repeat(at.column - 1),
            "^".repeat(at.width.max(1)),
        )
    }
}

impl Location {
    fn of(source: &str, span: Range<usize>) -> Self {
        let start = span.start.min(source.len());
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        let text = source[line_start..line_end].trim_end_matches('\r');
        let end = span.end.clamp(start, line_end);
        Location {
            line: source[..start].matches('\n').count() + 1,
            column: source[line_start..start].chars().count() + 1,
            text: text.to_string(),
            width: source[start..end].chars().count(),
        }
    }
}

/// Reads and expands a job file. `default_experiment` (from `--experiment`) wins over the
/// file's own default but not over a job's `experiment`.
pub fn load(path: &Path, default_experiment: Option<&str>) -> Result<Vec<JobSpec>, JobFileError> {
    let shown = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| JobFileError {
        path: shown.clone(),
        message: format!("cannot read the job file: {e}"),
        at: None,
    })?;
    parse(&source, &shown, default_experiment)
}

/// Parses and expands job-file text; `path` only names the file in messages.
pub fn parse(
    source: &str,
    path: &str,
    default_experiment: Option<&str>,
) -> Result<Vec<JobSpec>, JobFileError> {
    let fail = |message: String, span: Option<Range<usize>>| JobFileError {
        path: path.to_string(),
        message,
        at: span.map(|s| Location::of(source, s)),
    };
    let doc: FileDoc =
        toml::from_str(source).map_err(|e| fail(e.message().to_string(), e.span()))?;
    if doc.job.is_empty() {
        return Err(fail("no [[job]] tables: nothing to submit".into(), None));
    }
    let experiment = default_experiment.map(str::to_string).or(doc.experiment);

    // Batch indices of each entry's copies, and of every name.
    let mut first_index = Vec::with_capacity(doc.job.len());
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut total = 0usize;
    for (entry_no, entry) in doc.job.iter().enumerate() {
        first_index.push(total);
        total += entry.count as usize;
        if let Some(name) = &entry.name {
            by_name
                .entry(name.get_ref().as_str())
                .or_default()
                .push(entry_no);
        }
    }
    if total > u32::MAX as usize {
        return Err(fail(
            format!("the file expands to {total} jobs, too many"),
            None,
        ));
    }

    // Entry-level dependency graph: copies of an entry share its dependencies.
    let mut entry_deps: Vec<Vec<(usize, Range<usize>)>> = vec![Vec::new(); doc.job.len()];
    for (entry_no, entry) in doc.job.iter().enumerate() {
        for dep in &entry.depends_on {
            let name = match dep.get_ref() {
                DepRef::Name(name) => name,
                DepRef::Id(id) if *id > 0 => continue,
                DepRef::Id(id) => {
                    let message = format!("depends_on ids are positive job ids, found {id}");
                    return Err(fail(message, Some(dep.span())));
                }
            };
            let Some(targets) = by_name.get(name.as_str()) else {
                return Err(fail(unknown_name_message(name, &by_name), Some(dep.span())));
            };
            if targets.contains(&entry_no) {
                return Err(fail(
                    format!("job {name:?} depends on itself"),
                    Some(dep.span()),
                ));
            }
            entry_deps[entry_no].extend(targets.iter().map(|&t| (t, dep.span())));
        }
    }
    if let Some((cycle, span)) = find_cycle(&entry_deps) {
        let names: Vec<String> = cycle.iter().map(|&e| doc.job[e].display_name(e)).collect();
        return Err(fail(
            format!("dependency cycle: {}", names.join(" -> ")),
            Some(span),
        ));
    }

    let mut specs = Vec::with_capacity(total);
    for (entry_no, entry) in doc.job.iter().enumerate() {
        let payload = match &entry.payload {
            Some(table) => {
                let json = toml_to_json(&Toml::Table(table.get_ref().clone()))
                    .map_err(|m| fail(format!("payload: {m}"), Some(table.span())))?;
                json.to_string()
            }
            None => String::new(),
        };
        let mut batch_deps: Vec<u32> = entry_deps[entry_no]
            .iter()
            .flat_map(|&(t, _)| {
                let start = first_index[t];
                start..start + doc.job[t].count as usize
            })
            .map(|i| i as u32)
            .collect();
        batch_deps.sort_unstable();
        batch_deps.dedup();
        let mut ids: Vec<i64> = entry
            .depends_on
            .iter()
            .filter_map(|d| match d.get_ref() {
                DepRef::Id(id) => Some(*id),
                DepRef::Name(_) => None,
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let spec = JobSpec {
            kind: entry.kind.clone(),
            name: entry
                .name
                .as_ref()
                .map(|n| n.get_ref().clone())
                .unwrap_or_default(),
            experiment: entry
                .experiment
                .clone()
                .or_else(|| experiment.clone())
                .unwrap_or_default(),
            payload_json: payload,
            priority: entry.priority,
            resources: Some(Resources {
                cpu_slots: entry.cpu_slots,
                gpus: entry.gpus,
                gpu_mem_mb: entry.gpu_mem_mb,
                tags: entry.tags.clone(),
            }),
            max_attempts: entry.max_attempts,
            crash_limit: entry.crash_limit,
            timeout_s: entry.timeout_s,
            depends_on: ids,
            depends_on_batch: batch_deps,
            ..JobSpec::default()
        };
        specs.extend(std::iter::repeat_n(spec, entry.count as usize));
    }
    Ok(specs)
}

fn unknown_name_message(name: &str, by_name: &HashMap<&str, Vec<usize>>) -> String {
    let mut known: Vec<&str> = by_name.keys().copied().collect();
    known.sort_unstable();
    if known.is_empty() {
        return format!("depends_on names {name:?}, but no job in this file has a name");
    }
    let shown = known
        .iter()
        .take(10)
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>();
    let more = if known.len() > 10 { ", …" } else { "" };
    format!(
        "depends_on names {name:?}, which is not a job in this file (names: {}{more})",
        shown.join(", ")
    )
}

/// A cycle of entries (first entry repeated at the end) and the span of a dependency in it.
fn find_cycle(deps: &[Vec<(usize, Range<usize>)>]) -> Option<(Vec<usize>, Range<usize>)> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; deps.len()];
    for root in 0..deps.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // Iterative DFS: a generated file may chain thousands of entries.
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            if let Some((target, span)) = deps[node].get(*next) {
                *next += 1;
                match mark[*target] {
                    Mark::New => {
                        mark[*target] = Mark::OnPath;
                        path.push((*target, 0));
                    }
                    Mark::OnPath => {
                        let from = path.iter().position(|&(n, _)| n == *target).unwrap_or(0);
                        let mut cycle: Vec<usize> = path[from..].iter().map(|&(n, _)| n).collect();
                        cycle.push(*target);
                        return Some((cycle, span.clone()));
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                path.pop();
            }
        }
    }
    None
}

/// TOML to JSON: datetimes become their RFC 3339 text; non-finite floats have no JSON form.
fn toml_to_json(value: &Toml) -> Result<Json, String> {
    Ok(match value {
        Toml::String(s) => Json::String(s.clone()),
        Toml::Integer(i) => Json::from(*i),
        Toml::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .ok_or_else(|| format!("{f} has no JSON representation"))?,
        Toml::Boolean(b) => Json::Bool(*b),
        Toml::Datetime(d) => Json::String(d.to_string()),
        Toml::Array(items) => {
            Json::Array(items.iter().map(toml_to_json).collect::<Result<_, _>>()?)
        }
        Toml::Table(table) => Json::Object(
            table
                .iter()
                .map(|(k, v)| Ok((k.clone(), toml_to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    experiment: Option<String>,
    #[serde(default)]
    job: Vec<JobEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobEntry {
    name: Option<Spanned<String>>,
    kind: String,
    experiment: Option<String>,
    payload: Option<Spanned<toml::Table>>,
    #[serde(default, deserialize_with = "priority")]
    priority: i32,
    #[serde(default, deserialize_with = "cpu_slots")]
    cpu_slots: u32,
    #[serde(default, deserialize_with = "gpus")]
    gpus: u32,
    #[serde(default, deserialize_with = "gpu_mem_mb")]
    gpu_mem_mb: u64,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default, deserialize_with = "max_attempts")]
    max_attempts: u32,
    #[serde(default, deserialize_with = "crash_limit")]
    crash_limit: u32,
    #[serde(default, deserialize_with = "timeout_s")]
    timeout_s: u32,
    #[serde(default = "one", deserialize_with = "count")]
    count: u32,
    #[serde(default)]
    depends_on: Vec<Spanned<DepRef>>,
}

impl JobEntry {
    fn display_name(&self, entry_no: usize) -> String {
        match &self.name {
            Some(n) => n.get_ref().clone(),
            None => format!("[[job]] #{}", entry_no + 1),
        }
    }
}

/// One `depends_on` entry: a job of this file by name, or an existing job by id.
enum DepRef {
    Name(String),
    Id(i64),
}

impl<'de> Deserialize<'de> for DepRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Toml::deserialize(d)? {
            Toml::String(name) => Ok(DepRef::Name(name)),
            // Checked for sign in `parse`, where the entry's own span is known.
            Toml::Integer(id) => Ok(DepRef::Id(id)),
            other => Err(D::Error::custom(format!(
                "depends_on entries are job names or existing job ids, found a {}",
                other.type_str()
            ))),
        }
    }
}

fn one() -> u32 {
    1
}

/// Reads an integer field and checks its range, so that `cpu_slots = -2` is reported as such
/// and not as a type mismatch against `u32`.
fn bounded<'de, D: Deserializer<'de>>(
    d: D,
    field: &str,
    min: i64,
    max: i64,
) -> Result<i64, D::Error> {
    match Toml::deserialize(d)? {
        Toml::Integer(v) if (min..=max).contains(&v) => Ok(v),
        Toml::Integer(v) => Err(D::Error::custom(format!(
            "{field} must be between {min} and {max}, found {v}"
        ))),
        other => Err(D::Error::custom(format!(
            "{field} must be an integer between {min} and {max}, found a {}",
            other.type_str()
        ))),
    }
}

macro_rules! bounded_field {
    ($name:ident: $ty:ty, $min:expr, $max:expr) => {
        fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
            bounded(d, stringify!($name), $min as i64, $max as i64).map(|v| v as $ty)
        }
    };
}

bounded_field!(priority: i32, i32::MIN, i32::MAX);
bounded_field!(cpu_slots: u32, 0, limits::CPU_SLOTS);
bounded_field!(gpus: u32, 0, limits::GPUS);
bounded_field!(gpu_mem_mb: u64, 0, limits::GPU_MEM_MB);
bounded_field!(max_attempts: u32, 0, limits::ATTEMPTS);
bounded_field!(crash_limit: u32, 0, limits::ATTEMPTS);
bounded_field!(timeout_s: u32, 0, u32::MAX);
bounded_field!(count: u32, 1, limits::COUNT);

#[cfg(test)]
#[path = "jobfile_tests.rs"]
mod tests;
