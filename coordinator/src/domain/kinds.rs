//! The job kinds the coordinator accepts and the shape of each kind's payload. A job of an
//! unknown kind, or with a payload its kind cannot run, is refused at submit time rather than
//! failing later on a worker. The ML kinds' payloads are checked by `stackhive_spec`, which the
//! worker and the trainer read too.

use serde_json::{Map, Value};
use stackhive_spec::{CnnKind, CnnSpec};

/// Kinds that workers of this version can run.
pub const KNOWN_KINDS: &[&str] = &[
    "noop",
    "sleep",
    "shell",
    "dataset-prefetch",
    "cnn",
    "lr-find",
    "stack",
    "ensemble",
];

const MAX_SLEEP_MS: u64 = 7 * 24 * 3_600_000;

/// Checks a payload (already parsed as a JSON object) for `kind`. Errors say what was expected
/// and what was found.
pub fn validate_payload(kind: &str, p: &Map<String, Value>) -> Result<(), String> {
    match kind {
        "noop" => Ok(()),
        "sleep" => match p.get("ms") {
            Some(Value::Number(n)) if n.as_u64().is_some_and(|ms| ms <= MAX_SLEEP_MS) => {
                only_fields(p, &["ms"])
            }
            Some(v) => Err(format!(
                "sleep payload field \"ms\" must be an integer from 0 to {MAX_SLEEP_MS}, found {v}"
            )),
            None => Err("sleep payload needs a field \"ms\" (milliseconds)".into()),
        },
        "shell" => {
            match p.get("command") {
                Some(Value::String(c)) if !c.trim().is_empty() => {}
                Some(v) => {
                    return Err(format!(
                        "shell payload field \"command\" must be a non-empty string, found {v}"
                    ))
                }
                None => return Err("shell payload needs a field \"command\"".into()),
            }
            if let Some(env) = p.get("env") {
                let ok = env.as_object().is_some_and(|m| m.values().all(Value::is_string));
                if !ok {
                    return Err(format!(
                        "shell payload field \"env\" must be an object of strings, found {env}"
                    ));
                }
            }
            if let Some(cwd) = p.get("cwd") {
                if !cwd.is_string() {
                    return Err(format!("shell payload field \"cwd\" must be a string, found {cwd}"));
                }
            }
            only_fields(p, &["command", "env", "cwd"])
        }
        "dataset-prefetch" => match p.get("dataset") {
            Some(Value::String(d)) if !d.trim().is_empty() => only_fields(p, &["dataset"]),
            Some(v) => Err(format!(
                "dataset-prefetch payload field \"dataset\" must be a dataset hash or name, found {v}"
            )),
            None => Err("dataset-prefetch payload needs a field \"dataset\" (hash or name)".into()),
        },
        "cnn" => cnn(CnnKind::Cnn, p),
        "lr-find" => cnn(CnnKind::LrFind, p),
        // The feature set is looked up by the worker: one may be built after the job is queued
        // behind the jobs whose predictions it needs.
        "stack" => stackhive_spec::StackSpec::from_json(&Value::Object(p.clone()))
            .and_then(|s| s.validate())
            .map(|_| ())
            .map_err(|e| e.to_string()),
        "ensemble" => stackhive_ensemble::EnsembleSpec::from_json(&Value::Object(p.clone()))
            .map(|_| ())
            .map_err(|e| e.to_string()),
        other => Err(format!(
            "unknown job kind {other:?}, expected one of {}",
            KNOWN_KINDS.join(", ")
        )),
    }
}

fn cnn(kind: CnnKind, p: &Map<String, Value>) -> Result<(), String> {
    CnnSpec::from_json(kind, &Value::Object(p.clone()))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn only_fields(p: &Map<String, Value>, allowed: &[&str]) -> Result<(), String> {
    match p.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unexpected payload field {k:?}, expected only {}",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}
