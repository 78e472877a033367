//! The deployment files in deploy/ ("Running on a rack"), checked by the tools that read them,
//! offline: Docker Compose's own `config` for compose.yaml, kubernetes-validate (strict, against
//! Kubernetes' schemas) for deploy/k8s/, hadolint for the Dockerfiles, ShellCheck and a real run
//! into a temporary root for install.sh, and `systemd-analyze verify` for the units it installed.
//! Each linter must also reject a broken copy, so a tool that accepts anything fails here; and
//! every STACKHIVE_* name in deploy/ must be one the built binaries accept, and every metric the
//! Grafana dashboard queries one the coordinator or the worker exports.
//!
//! The linters come from `ensure_deploy_lint` (scripts/setup.sh, called by run-tests.sh): this
//! test installs nothing and reaches no network.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use stackhive_tests::cluster::bin;

/// The Kubernetes version the manifests must be valid for (and so for every later one that
/// kept these APIs).
const KUBERNETES: &str = "1.30.0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

/// A linter from the project's .venv, or a failure that says how to get it.
fn tool(name: &str) -> PathBuf {
    let path = repo().join(".venv/bin").join(name);
    assert!(
        path.is_file(),
        "{} not found: run `source scripts/setup.sh && ensure_deploy_lint`",
        path.display()
    );
    path
}

/// What a command said (stdout and stderr together) and whether it exited with success.
struct Said {
    ok: bool,
    text: String,
}

fn run(cmd: &mut Command) -> Said {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Said {
        ok: out.status.success(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn passes(what: &str, said: &Said) {
    assert!(said.ok, "{what} failed:\n{}", said.text);
}

/// Refused, and for the reason planted (`needle` in the linter's words).
fn rejects(what: &str, said: &Said, needle: &str) {
    assert!(!said.ok, "{what} was accepted:\n{}", said.text);
    assert!(
        said.text.contains(needle),
        "{what} was refused, but its output does not name {needle:?}:\n{}",
        said.text
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `text` with `from` replaced once; the replacement must happen, or the broken copy would test
/// nothing.
fn break_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the file no longer contains {from:?}");
    text.replacen(from, to, 1)
}

#[test]
fn compose_file_is_what_docker_compose_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    // The broken copies live elsewhere; relative paths (env files, build context) still resolve
    // against deploy/, so they fail for the planted reason only.
    let config = |file: &Path| {
        let mut cmd = Command::new(tool("docker-compose"));
        cmd.env_clear()
            .env("HOME", tmp.path())
            .arg("--project-directory")
            .arg(deploy())
            .arg("-f")
            .arg(file)
            .args(["--profile", "gpu", "config", "--quiet"]);
        run(&mut cmd)
    };
    let original = deploy().join("compose.yaml");
    passes(
        "docker-compose config of deploy/compose.yaml",
        &config(&original),
    );

    let text = read(&original);
    let broken = tmp.path().join("compose.yaml");
    std::fs::write(
        &broken,
        break_once(
            &text,
            "    restart: unless-stopped",
            "    restartt: unless-stopped",
        ),
    )
    .unwrap();
    rejects(
        "a compose file with an unknown key",
        &config(&broken),
        "restartt",
    );
    std::fs::write(
        &broken,
        break_once(
            &text,
            "- secrets:/etc/stackhive:ro",
            "- secret:/etc/stackhive:ro",
        ),
    )
    .unwrap();
    rejects(
        "a compose file mounting an undeclared volume",
        &config(&broken),
        "undefined volume secret",
    );
}

/// Cross-references that the schemas cannot see: every Secret, ConfigMap and claim a manifest
/// names is defined by one, every Service selects some pod template, and everything lives in
/// the namespace the manifests define.
const K8S_REFERENCES: &str = r#"
import sys, yaml
docs = []
for path in sys.argv[1:]:
    docs += [(path, d) for d in yaml.safe_load_all(open(path)) if d]
defined = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
namespaces = {n for k, n in defined if k == "Namespace"}
refs, pods, problems = [], [], []
def walk(node, where):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "secretName":
                refs.append(("Secret", value, where))
            elif key == "claimName":
                refs.append(("PersistentVolumeClaim", value, where))
            elif key in ("secretKeyRef", "secretRef"):
                refs.append(("Secret", value["name"], where))
            elif key in ("configMapKeyRef", "configMapRef", "configMap"):
                refs.append(("ConfigMap", value["name"], where))
            walk(value, where)
    elif isinstance(node, list):
        for item in node:
            walk(item, where)
for path, d in docs:
    where = "%s: %s/%s" % (path, d["kind"], d["metadata"]["name"])
    walk(d, where)
    if d["kind"] != "Namespace" and d["metadata"].get("namespace") not in namespaces:
        problems.append("%s is not in a namespace the manifests define" % where)
    template = d.get("spec", {}).get("template")
    if template:
        pods.append(template["metadata"]["labels"])
for kind, name, where in refs:
    if (kind, name) not in defined:
        problems.append("%s refers to %s %s, which no manifest defines" % (where, kind, name))
for path, d in docs:
    if d["kind"] == "Service":
        selector = d["spec"]["selector"].items()
        if not any(selector <= labels.items() for labels in pods):
            problems.append("%s: Service/%s selects no pod template" % (path, d["metadata"]["name"]))
print("\n".join(problems))
sys.exit(1 if problems else 0)
"#;

#[test]
fn kubernetes_manifests_match_the_schemas_and_each_other() {
    let k8s = deploy().join("k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&k8s)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(".yaml") || name.ends_with(".yaml.example")
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 7,
        "expected the namespace, secrets template, config, coordinator, two workers and the trial \
         PostgreSQL in deploy/k8s, found {files:?}"
    );
    let validate = |files: &[PathBuf]| {
        run(Command::new(tool("kubernetes-validate"))
            .args(["--strict", "-k", KUBERNETES])
            .args(files))
    };
    let said = validate(&files);
    passes("kubernetes-validate of deploy/k8s", &said);
    // A kind without a schema is only a warning to kubernetes-validate: not good enough here.
    assert!(
        !said.text.contains("WARN"),
        "kubernetes-validate skipped something:\n{}",
        said.text
    );
    for kind in [
        "deployment",
        "daemonset",
        "statefulset",
        "service",
        "secret",
        "configmap",
    ] {
        assert!(
            said.text.contains(&format!("for resource {kind}/")),
            "no {kind} was validated:\n{}",
            said.text
        );
    }
    let references = |files: &[PathBuf]| {
        run(Command::new(tool("python"))
            .args(["-c", K8S_REFERENCES])
            .args(files))
    };
    passes("the manifests' cross-references", &references(&files));

    let tmp = tempfile::tempdir().unwrap();
    let text = read(&k8s.join("coordinator.yaml"));
    let broken = tmp.path().join("coordinator.yaml");
    std::fs::write(&broken, break_once(&text, "replicas: 2", "replicas: two")).unwrap();
    rejects(
        "a Deployment with a string for replicas",
        &validate(std::slice::from_ref(&broken)),
        "'two' is not of type 'integer'",
    );
    std::fs::write(
        &broken,
        break_once(&text, "  replicas: 2\n", "  replicas: 2\n  replica: 2\n"),
    )
    .unwrap();
    rejects(
        "a Deployment with an unknown field",
        &validate(std::slice::from_ref(&broken)),
        "'replica' was unexpected",
    );
    let mut with_broken: Vec<PathBuf> = files
        .iter()
        .filter(|p| !p.ends_with("coordinator.yaml"))
        .cloned()
        .collect();
    std::fs::write(
        &broken,
        break_once(
            &text,
            "claimName: stackhive-datasets",
            "claimName: stackhive-dataset",
        ),
    )
    .unwrap();
    with_broken.push(broken);
    rejects(
        "a Deployment naming a claim no manifest defines",
        &references(&with_broken),
        "PersistentVolumeClaim stackhive-dataset,",
    );
}

/// Sources of the Dockerfile's COPY and ADD instructions that read the build context (not
/// `--from` another stage), with their line numbers.
fn context_sources(dockerfile: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut joined = String::new();
    let mut first_line = 0;
    for (i, line) in dockerfile.lines().enumerate() {
        let trimmed = line.trim();
        // Comment lines may stand inside a continued instruction too.
        if trimmed.starts_with('#') || (trimmed.is_empty() && joined.is_empty()) {
            continue;
        }
        if joined.is_empty() {
            first_line = i + 1;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            joined.push_str(part);
            joined.push(' ');
            continue;
        }
        joined.push_str(trimmed);
        let instruction = std::mem::take(&mut joined);
        let mut words = instruction.split_whitespace();
        let keyword = words.next().unwrap_or_default().to_ascii_uppercase();
        if keyword != "COPY" && keyword != "ADD" {
            continue;
        }
        let args: Vec<&str> = words.collect();
        if args.iter().any(|a| a.starts_with("--from=")) {
            continue;
        }
        let paths: Vec<String> = if args.first().is_some_and(|a| a.starts_with('[')) {
            let json = args.join(" ");
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("bad JSON form {json}: {e}"))
        } else {
            args.iter()
                .filter(|a| !a.starts_with("--"))
                .map(|a| a.to_string())
                .collect()
        };
        if let Some((_dest, sources)) = paths.split_last() {
            out.extend(sources.iter().map(|s| (first_line, s.clone())));
        }
    }
    out
}

/// Problems with the context sources: missing from the repository, or left out of the context
/// by .dockerignore (whose entries here are plain names, or `**/name`).
fn copy_problems(dockerfile: &str, root: &Path, ignore: &str) -> Vec<String> {
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut problems = Vec::new();
    for (line, src) in context_sources(dockerfile) {
        let clean = src.trim_start_matches("./").trim_end_matches('/');
        let parts: Vec<&str> = clean.split('/').collect();
        let left_out = ignored
            .iter()
            .find(|pattern| match pattern.strip_prefix("**/") {
                Some(name) => parts.contains(&name),
                None => parts.first() == Some(*pattern),
            });
        if let Some(pattern) = left_out {
            problems.push(format!(
                "line {line}: COPY {src}: .dockerignore leaves out {pattern}"
            ));
        } else if !root.join(clean).exists() {
            problems.push(format!(
                "line {line}: COPY {src}: no such path in the build context"
            ));
        }
    }
    problems
}

#[test]
fn dockerfiles_pass_hadolint_and_copy_only_what_the_context_holds() {
    let docker = deploy().join("docker");
    let hadolint = |file: &Path| {
        run(Command::new(tool("hadolint"))
            .arg("--no-color")
            .arg("--config")
            .arg(docker.join("hadolint.yaml"))
            .args(["--failure-threshold", "warning"])
            .arg(file))
    };
    let ignore = read(&repo().join(".dockerignore"));
    for name in ["coordinator.Dockerfile", "worker-gpu.Dockerfile"] {
        let file = docker.join(name);
        passes(
            &format!("hadolint of deploy/docker/{name}"),
            &hadolint(&file),
        );
        let text = read(&file);
        assert!(
            !context_sources(&text).is_empty(),
            "{name} copies nothing from the context"
        );
        let problems = copy_problems(&text, &repo(), &ignore);
        assert!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));
    }

    let tmp = tempfile::tempdir().unwrap();
    let text = read(&docker.join("coordinator.Dockerfile"));
    let broken = tmp.path().join("broken.Dockerfile");
    std::fs::write(
        &broken,
        break_once(
            &text,
            "WORKDIR /src\n",
            "WORKDIR /src\nRUN apt-get install curl\n",
        ),
    )
    .unwrap();
    rejects(
        "a Dockerfile that apt-gets without -y",
        &hadolint(&broken),
        "DL3014",
    );
    let broken_copies = break_once(
        &text,
        "COPY migrations migrations\n",
        "COPY migrations migrations\nCOPY no-such-folder ./\nCOPY --chown=1:1 target/release/stackhive /x\n",
    );
    let problems = copy_problems(&broken_copies, &repo(), &ignore);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("no-such-folder: no such path"))
            && problems
                .iter()
                .any(|p| p.contains(".dockerignore leaves out target")),
        "the COPY check missed a planted problem: {problems:?}"
    );
}

/// Runs deploy/install.sh with `args`.
fn install(args: &[&OsStr]) -> Said {
    run(Command::new("bash")
        .arg(deploy().join("install.sh"))
        .args(args))
}

#[test]
fn install_script_is_clean_idempotent_and_installs_units_that_verify() {
    let script = deploy().join("install.sh");
    let shellcheck = |file: &Path| run(Command::new(tool("shellcheck")).arg(file));
    passes("shellcheck of deploy/install.sh", &shellcheck(&script));
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("install.sh");
    std::fs::write(
        &broken,
        break_once(
            &read(&script),
            "set -euo pipefail\n",
            "set -euo pipefail\nrm -rf $root/\n",
        ),
    )
    .unwrap();
    rejects(
        "an install script that may remove /",
        &shellcheck(&broken),
        "SC2115",
    );

    let bin_dir = bin("stackhive").parent().unwrap().to_path_buf();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let args = [
        OsStr::new("--root"),
        root.as_os_str(),
        OsStr::new("--bin-dir"),
        bin_dir.as_os_str(),
    ];
    let dry = install(&[&args[..], &[OsStr::new("--dry-run")][..]].concat());
    passes("install.sh --dry-run", &dry);
    assert!(
        dry.text.contains("+ install"),
        "the dry run showed no step:\n{}",
        dry.text
    );
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        0,
        "the dry run wrote into its root:\n{}",
        dry.text
    );

    passes("install.sh into a temporary root", &install(&args));
    for path in [
        "usr/local/bin/stackhive",
        "usr/local/bin/stackhive-worker",
        "usr/local/bin/stackhive-trainer",
        "usr/local/bin/stackhive-stacker",
        "etc/stackhive/coordinator.env",
        "etc/stackhive/worker.env",
        "etc/stackhive/tls",
        "etc/systemd/system/stackhive-coordinator.service",
        "etc/systemd/system/stackhive-worker.service",
    ] {
        assert!(
            root.join(path).exists(),
            "install.sh did not install {path}"
        );
    }
    // An operator's settings survive a second run, which changes nothing.
    let env = root.join("etc/stackhive/worker.env");
    let edited = format!("{}STACKHIVE_NAME=blade-17\n", read(&env));
    std::fs::write(&env, &edited).unwrap();
    let again = install(&args);
    passes("install.sh, run again", &again);
    assert!(
        !again.text.lines().any(|l| l.starts_with("+ ")),
        "the second run changed something:\n{}",
        again.text
    );
    assert_eq!(read(&env), edited, "the second run rewrote worker.env");

    // systemd-analyze verify resolves ExecStart= and the units' dependencies under --root: give
    // it the system's own units beside the installed ones. It exits 0 on a directive it cannot
    // parse, only saying so, so a unit passes when it says nothing at all.
    std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/systemd/system")
        .arg(root.join("usr/lib/systemd"))
        .status()
        .expect("run cp");
    assert!(copied.success(), "cannot copy /usr/lib/systemd/system");
    let verify = |units: &[&str]| {
        let mut cmd = Command::new("systemd-analyze");
        cmd.arg("verify").arg(format!("--root={}", root.display()));
        for unit in units {
            cmd.arg(root.join("etc/systemd/system").join(unit));
        }
        let said = run(&mut cmd);
        Said {
            ok: said.ok && said.text.trim().is_empty(),
            text: said.text,
        }
    };
    passes(
        "systemd-analyze verify of the installed units",
        &verify(&["stackhive-coordinator.service", "stackhive-worker.service"]),
    );
    let unit = read(&deploy().join("stackhive-worker.service"));
    std::fs::write(
        root.join("etc/systemd/system/broken.service"),
        break_once(&unit, "KillMode=mixed", "KillMode=gentle"),
    )
    .unwrap();
    rejects(
        "a unit with a bad directive",
        &verify(&["broken.service"]),
        "gentle",
    );
    std::fs::remove_file(root.join("usr/local/bin/stackhive")).unwrap();
    rejects(
        "a unit whose program is missing",
        &verify(&["stackhive-coordinator.service"]),
        "/usr/local/bin/stackhive",
    );
}

/// Every `STACKHIVE_*` name in `text`.
fn variables(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("STACKHIVE_") {
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..len].trim_end_matches('_');
        // `STACKHIVE_*` in prose names the family, not a variable.
        if name.len() > "STACKHIVE".len() {
            names.insert(name.to_string());
        }
        rest = &tail[len..];
    }
    names
}

/// `file: NAME` for each variable of the (file, text) pairs that is not in `accepted`.
fn unknown(accepted: &BTreeSet<String>, files: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (file, text) in files {
        for name in variables(text) {
            if !accepted.contains(&name) {
                out.push(format!("{file}: {name}"));
            }
        }
    }
    out
}

/// Files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn deployment_files_use_only_variables_the_binaries_accept() {
    // Every flag's variable, as --help lists it (`[env: STACKHIVE_…=…]`).
    let mut accepted = BTreeSet::new();
    for (program, args) in [
        ("stackhive", &["--help"][..]),
        ("stackhive", &["coordinator", "--help"][..]),
        ("stackhive", &["token", "create", "--help"][..]),
        ("stackhive-worker", &["--help"][..]),
    ] {
        let said = run(Command::new(bin(program)).args(args));
        passes(&format!("{program} {}", args.join(" ")), &said);
        for chunk in said.text.split("[env: ").skip(1) {
            accepted.extend(variables(chunk.split([']', '=']).next().unwrap()));
        }
    }
    // Read by a binary without a flag: accepted when that binary holds the name.
    let (program, name) = ("stackhive-stacker", "STACKHIVE_PYTHON");
    let bytes = std::fs::read(bin(program)).unwrap();
    assert!(
        bytes.windows(name.len()).any(|w| w == name.as_bytes()),
        "{program} no longer reads {name}"
    );
    accepted.insert(name.to_string());
    for expected in [
        "STACKHIVE_DB",
        "STACKHIVE_LISTEN",
        "STACKHIVE_GPUS",
        "STACKHIVE_TOKEN_FILE",
    ] {
        assert!(
            accepted.contains(expected),
            "--help lists no {expected}: {accepted:?}"
        );
    }

    let files: Vec<(String, String)> = files_under(&deploy())
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(repo()).unwrap().display().to_string(),
                read(&p),
            )
        })
        .collect();
    let used: BTreeSet<String> = files.iter().flat_map(|(_, t)| variables(t)).collect();
    assert!(used.len() >= 20, "deploy/ names only {used:?}");
    let problems = unknown(&accepted, &files);
    assert!(
        problems.is_empty(),
        "variables no binary accepts:\n{}",
        problems.join("\n")
    );
    let planted = unknown(
        &accepted,
        &[(
            "planted.env".into(),
            "STACKHIVE_DB_URL=postgres://x\n".into(),
        )],
    );
    assert_eq!(planted, ["planted.env: STACKHIVE_DB_URL"]);
}

/// The metric names a dashboard query reads (`stackhive_…` identifiers, a histogram's
/// `_count`/`_sum` reduced to its name).
fn queried_metrics(dashboard: &serde_json::Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("a query");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("stackhive_") {
                    let base = word.trim_end_matches("_count").trim_end_matches("_sum");
                    names.insert(base.to_string());
                }
            }
        }
    }
    names
}

/// The metric names the coordinator and the worker export, from their one list each.
fn exported_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in ["coordinator/src/metrics.rs", "worker/src/metrics.rs"] {
        for line in read(&repo().join(file)).lines() {
            if let Some(rest) = line.trim().strip_prefix("pub const ") {
                if let Some((_, value)) = rest.split_once("= \"") {
                    names.insert(value.trim_end_matches("\";").to_string());
                }
            }
        }
    }
    names
}

#[test]
fn the_grafana_dashboard_reads_only_metrics_that_exist() {
    let path = deploy().join("grafana/stackhive.json");
    let dashboard: serde_json::Value = serde_json::from_str(&read(&path)).expect("valid JSON");
    let exported = exported_metrics();
    assert!(exported.len() >= 15, "{exported:?}");
    let queried = queried_metrics(&dashboard);
    let unknown: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries {unknown:?}, not exported"
    );
    // Every exported metric is on some panel.
    let unshown: Vec<&String> = exported.difference(&queried).collect();
    assert!(unshown.is_empty(), "no panel shows {unshown:?}");
    // And the check itself catches a typo.
    let typo = serde_json::from_str(&read(&path).replacen(
        "stackhive_workers_alive",
        "stackhive_worker_alive",
        1,
    ))
    .unwrap();
    assert!(queried_metrics(&typo).contains("stackhive_worker_alive"));
    assert!(!exported.contains("stackhive_worker_alive"));
}
