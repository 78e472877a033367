//! Turns `stackhive submit` flags into `JobSpec`s, and holds the bounds that flags and job
//! files share. Only shapes what the user typed: kinds and payload contents are the
//! coordinator's to validate, so the CLI never drifts from what workers accept.

use serde_json::{json, Map, Value};
use stackhive_proto::v1::{JobSpec, Resources};

use crate::args::SubmitArgs;

/// Bounds checked before anything is sent, so a typo fails with a message naming the field
/// instead of a wrapped-around unsigned number: the coordinator's own limits.
pub mod limits {
    pub use stackhive_proto::limits::{
        MAX_ATTEMPTS as ATTEMPTS, MAX_COUNT as COUNT, MAX_CPU_SLOTS as CPU_SLOTS, MAX_GPUS as GPUS,
        MAX_GPU_MEM_MB as GPU_MEM_MB,
    };
}

/// Why flags do not describe a job.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("say what to run: --kind, --command, --ms or --file")]
    NoKind,
    #[error("--{flag} makes a {implied} job, but --kind is {kind:?}")]
    KindConflict {
        flag: &'static str,
        implied: &'static str,
        kind: String,
    },
    #[error("--payload is not valid JSON: {0}")]
    PayloadJson(String),
    #[error("--payload must be a JSON object, found {0}")]
    PayloadNotObject(&'static str),
}

/// The job described by `stackhive submit` flags, repeated `--count` times.
pub fn specs_from_flags(args: &SubmitArgs) -> Result<Vec<JobSpec>, SpecError> {
    let (kind, payload) = kind_and_payload(args)?;
    let spec = JobSpec {
        kind,
        name: args.name.clone().unwrap_or_default(),
        experiment: args.experiment.clone().unwrap_or_default(),
        payload_json: payload.map(|p| p.to_string()).unwrap_or_default(),
        priority: args.priority.unwrap_or(0),
        resources: Some(Resources {
            cpu_slots: args.cpu_slots.unwrap_or(0),
            gpus: args.gpus.unwrap_or(0),
            gpu_mem_mb: args.gpu_mem_mb.unwrap_or(0),
            tags: args.tags.clone(),
        }),
        max_attempts: args.max_attempts.unwrap_or(0),
        crash_limit: args.crash_limit.unwrap_or(0),
        timeout_s: args.timeout_s.unwrap_or(0),
        depends_on: args.depends_on.clone(),
        ..JobSpec::default()
    };
    Ok(vec![spec; args.count.unwrap_or(1) as usize])
}

fn kind_and_payload(args: &SubmitArgs) -> Result<(String, Option<Value>), SpecError> {
    let shorthand = match (&args.command, args.ms) {
        (Some(command), _) => Some(("command", "shell", json!({ "command": command }))),
        (None, Some(ms)) => Some(("ms", "sleep", json!({ "ms": ms }))),
        (None, None) => None,
    };
    if let Some((flag, implied, payload)) = shorthand {
        return match &args.kind {
            Some(kind) if kind != implied => Err(SpecError::KindConflict {
                flag,
                implied,
                kind: kind.clone(),
            }),
            _ => Ok((implied.to_string(), Some(payload))),
        };
    }
    let kind = args.kind.clone().ok_or(SpecError::NoKind)?;
    let payload = args.payload.as_deref().map(parse_payload).transpose()?;
    Ok((kind, payload))
}

/// Parses `--payload`; the coordinator checks the fields, the CLI only that it is an object.
pub fn parse_payload(text: &str) -> Result<Value, SpecError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| SpecError::PayloadJson(e.to_string()))?;
    match value {
        Value::Object(_) => Ok(value),
        other => Err(SpecError::PayloadNotObject(json_type_name(&other))),
    }
}

pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An empty object for jobs without a payload, so every stored payload is an object.
pub fn empty_payload() -> Value {
    Value::Object(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Cli;
    use clap::Parser;

    fn submit(flags: &[&str]) -> Result<Vec<JobSpec>, SpecError> {
        let mut argv = vec!["stackhive", "submit"];
        argv.extend_from_slice(flags);
        let cli = Cli::try_parse_from(argv).expect("flags parse");
        match cli.command {
            crate::args::Command::Submit(args) => specs_from_flags(&args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn every_flag_lands_in_the_spec() {
        let specs = submit(&[
            "--kind",
            "sleep",
            "--name",
            "warm-up",
            "--experiment",
            "exp1",
            "--payload",
            r#"{"ms": 5}"#,
            "--priority",
            "-3",
            "--cpu-slots",
            "2",
            "--gpus",
            "1",
            "--gpu-mem-mb",
            "16000",
            "--tag",
            "a100",
            "--tag",
            "fast",
            "--max-attempts",
            "4",
            "--crash-limit",
            "2",
            "--timeout-s",
            "60",
            "--depends-on",
            "7",
            "--depends-on",
            "9",
            "--count",
            "3",
        ])
        .unwrap();
        assert_eq!(specs.len(), 3);
        let s = &specs[0];
        assert_eq!(s.kind, "sleep");
        assert_eq!(s.name, "warm-up");
        assert_eq!(s.experiment, "exp1");
        assert_eq!(
            serde_json::from_str::<Value>(&s.payload_json).unwrap(),
            json!({"ms": 5})
        );
        assert_eq!(s.priority, -3);
        let r = s.resources.as_ref().unwrap();
        assert_eq!((r.cpu_slots, r.gpus, r.gpu_mem_mb), (2, 1, 16000));
        assert_eq!(r.tags, ["a100", "fast"]);
        assert_eq!((s.max_attempts, s.crash_limit, s.timeout_s), (4, 2, 60));
        assert_eq!(s.depends_on, [7, 9]);
        assert!(s.depends_on_batch.is_empty());
        assert!(specs.iter().all(|c| c == s));
    }

    #[test]
    fn shorthands_pick_the_kind_and_payload() {
        let shell = &submit(&["--command", "echo hi"]).unwrap()[0];
        assert_eq!(shell.kind, "shell");
        assert_eq!(
            serde_json::from_str::<Value>(&shell.payload_json).unwrap(),
            json!({"command": "echo hi"})
        );
        let sleep = &submit(&["--ms", "20", "--kind", "sleep"]).unwrap()[0];
        assert_eq!(sleep.kind, "sleep");
        assert_eq!(sleep.payload_json, r#"{"ms":20}"#);
        let noop = &submit(&["--kind", "noop"]).unwrap()[0];
        assert_eq!(
            (noop.kind.as_str(), noop.payload_json.as_str()),
            ("noop", "")
        );
    }

    #[test]
    fn contradictory_or_missing_flags_are_explained() {
        assert_eq!(
            submit(&["--kind", "noop", "--ms", "5"])
                .unwrap_err()
                .to_string(),
            r#"--ms makes a sleep job, but --kind is "noop""#
        );
        assert_eq!(submit(&[]).unwrap_err(), SpecError::NoKind);
        assert_eq!(
            submit(&["--kind", "sleep", "--payload", "[1]"])
                .unwrap_err()
                .to_string(),
            "--payload must be a JSON object, found an array"
        );
        assert!(submit(&["--kind", "sleep", "--payload", "{ms: 1}"])
            .unwrap_err()
            .to_string()
            .starts_with("--payload is not valid JSON: key must be a string"));
    }

    #[test]
    fn out_of_range_flags_are_usage_errors() {
        for flags in [
            &["submit", "--kind", "noop", "--cpu-slots", "-2"][..],
            &["submit", "--kind", "noop", "--gpus", "-1"],
            &["submit", "--kind", "noop", "--cpu-slots", "5000"],
            &["submit", "--kind", "noop", "--count", "0"],
            &["submit", "--kind", "noop", "--depends-on", "0"],
            &["submit", "--file", "x.toml", "--kind", "noop"],
        ] {
            let mut argv = vec!["stackhive"];
            argv.extend_from_slice(flags);
            let err = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{flags:?}: {err}");
        }
    }
}
