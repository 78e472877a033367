//! Job-file parsing: expansion, dependency mapping and the messages a user sees for mistakes.

use super::*;
use serde_json::json;

fn ok(source: &str) -> Vec<JobSpec> {
    parse(source, "jobs.toml", None).unwrap_or_else(|e| panic!("{e}"))
}

fn err(source: &str) -> String {
    parse(source, "jobs.toml", None)
        .expect_err("the file is invalid")
        .to_string()
}

#[test]
fn a_pipeline_expands_and_maps_dependencies_to_batch_indices() {
    let specs = ok(r#"
experiment = "melanoma"

[[job]]
name = "prep"
kind = "shell"
payload = { command = "echo prep" }

[[job]]
name = "fold"
kind = "sleep"
count = 3
priority = 5
cpu_slots = 2
gpus = 1
gpu_mem_mb = 16000
tags = ["a100"]
max_attempts = 4
crash_limit = 2
timeout_s = 3600
payload = { ms = 20, nested = { list = [1, 2.5, true] } }
depends_on = ["prep", 42]

[[job]]
name = "report"
kind = "noop"
experiment = "reports"
depends_on = ["fold", "prep", 7, 42]
"#);
    assert_eq!(specs.len(), 5);
    assert_eq!(specs[0].kind, "shell");
    assert_eq!(specs[0].payload_json, r#"{"command":"echo prep"}"#);
    assert!(specs[0].depends_on_batch.is_empty());

    for fold in &specs[1..4] {
        assert_eq!(fold.name, "fold");
        assert_eq!(fold.experiment, "melanoma");
        assert_eq!(fold.priority, 5);
        let r = fold.resources.as_ref().unwrap();
        assert_eq!((r.cpu_slots, r.gpus, r.gpu_mem_mb), (2, 1, 16000));
        assert_eq!(r.tags, ["a100"]);
        assert_eq!(
            (fold.max_attempts, fold.crash_limit, fold.timeout_s),
            (4, 2, 3600)
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&fold.payload_json).unwrap(),
            json!({"ms": 20, "nested": {"list": [1, 2.5, true]}})
        );
        assert_eq!(fold.depends_on_batch, [0]);
        assert_eq!(fold.depends_on, [42]);
    }

    let report = &specs[4];
    assert_eq!(report.experiment, "reports");
    assert_eq!(
        report.depends_on_batch,
        [0, 1, 2, 3],
        "every copy of fold, and prep"
    );
    assert_eq!(report.depends_on, [7, 42]);
    assert_eq!(report.payload_json, "");
}

#[test]
fn the_command_line_experiment_beats_the_file_default_but_not_a_job() {
    let source = r#"
experiment = "from-file"
[[job]]
kind = "noop"
[[job]]
kind = "noop"
experiment = "own"
"#;
    let specs = parse(source, "jobs.toml", Some("from-flag")).unwrap();
    assert_eq!(specs[0].experiment, "from-flag");
    assert_eq!(specs[1].experiment, "own");
    assert_eq!(ok(source)[0].experiment, "from-file");
}

#[test]
fn a_name_shared_by_several_tables_means_all_of_them() {
    let specs = ok(r#"
[[job]]
name = "train"
kind = "noop"
[[job]]
name = "train"
kind = "noop"
count = 2
[[job]]
kind = "noop"
depends_on = ["train"]
"#);
    assert_eq!(specs[3].depends_on_batch, [0, 1, 2]);
}

#[test]
fn a_negative_number_names_the_field_the_range_and_the_line() {
    assert_eq!(
        err("[[job]]\nkind = \"noop\"\ncpu_slots = -2\n"),
        "jobs.toml:3:13: cpu_slots must be between 0 and 4096, found -2\n  |\n3 | cpu_slots = -2\n  |             ^^"
    );
    assert!(err("[[job]]\nkind = \"noop\"\ncount = 0\n")
        .starts_with("jobs.toml:3:9: count must be between 1 and 1000000, found 0"));
    assert!(err("[[job]]\nkind = \"noop\"\ngpus = \"two\"\n")
        .starts_with("jobs.toml:3:8: gpus must be an integer between 0 and 64, found a string"));
}

#[test]
fn an_unknown_field_is_named_with_its_line() {
    let message = err("[[job]]\nkind = \"noop\"\ncpu = 2\n");
    assert!(
        message.starts_with("jobs.toml:3:1: unknown field `cpu`, expected one of"),
        "{message}"
    );
    assert!(message.contains("`cpu_slots`"), "{message}");
    assert!(message.ends_with("3 | cpu = 2\n  | ^^^"), "{message}");

    let message = err("experiments = \"x\"\n[[job]]\nkind = \"noop\"\n");
    assert!(
        message.starts_with("jobs.toml:1:1: unknown field `experiments`"),
        "{message}"
    );
}

#[test]
fn a_dependency_on_a_name_not_in_the_file_is_pointed_at() {
    let source = "[[job]]\nname = \"train\"\nkind = \"noop\"\n\n[[job]]\nname = \"report\"\nkind = \"noop\"\ndepends_on = [\"train\", \"trian\"]\n";
    assert_eq!(
        err(source),
        "jobs.toml:8:24: depends_on names \"trian\", which is not a job in this file \
         (names: \"report\", \"train\")\n  |\n8 | depends_on = [\"train\", \"trian\"]\n  |                        ^^^^^^^"
    );
}

#[test]
fn self_dependencies_and_cycles_are_refused() {
    assert!(
        err("[[job]]\nname = \"a\"\nkind = \"noop\"\ndepends_on = [\"a\"]\n")
            .starts_with("jobs.toml:4:15: job \"a\" depends on itself")
    );
    let message = err(r#"
[[job]]
name = "a"
kind = "noop"
depends_on = ["b"]
[[job]]
name = "b"
kind = "noop"
depends_on = ["c"]
[[job]]
name = "c"
kind = "noop"
depends_on = ["a"]
"#);
    assert!(
        message.starts_with("jobs.toml:13:15: dependency cycle: a -> b -> c -> a"),
        "{message}"
    );
}

#[test]
fn bad_depends_on_entries_and_missing_kinds_are_explained() {
    assert!(err("[[job]]\nkind = \"noop\"\ndepends_on = [0]\n")
        .starts_with("jobs.toml:3:15: depends_on ids are positive job ids, found 0"));
    assert!(err("[[job]]\nkind = \"noop\"\ndepends_on = [1.5]\n")
        .contains("depends_on entries are job names or existing job ids, found a float"));
    let message = err("[[job]]\nname = \"x\"\n");
    assert!(message.contains("missing field `kind`"), "{message}");
    assert_eq!(
        err("experiment = \"x\"\n"),
        "jobs.toml: no [[job]] tables: nothing to submit"
    );
    assert!(err("[[job]\n").starts_with("jobs.toml:1:"));
}

#[test]
fn a_missing_file_says_which() {
    let e = load(Path::new("/nonexistent/jobs.toml"), None).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/jobs.toml: cannot read the job file: "),
        "{e}"
    );
}
