//! Input validation at the API boundary: turns client and worker messages into domain values or
//! a clear `InvalidArgument` that names the job, the field, what was expected and what was
//! found. Nothing reaches a store before it passes here, so nothing is half-written.

use prost::Message;
use sha2::{Digest, Sha256};
use stackhive_proto::v1 as pb;

use crate::domain::kinds;
use crate::domain::model::*;
use crate::error::{Error, Result};

pub use stackhive_proto::limits::*;

/// Validates a submit request and hashes its body for the idempotency check.
pub fn submit(req: &pb::SubmitRequest, max_batch: u32) -> Result<SubmitBatch> {
    let n = req.jobs.len();
    if n == 0 {
        return Err(Error::invalid(
            "submit request holds no jobs, expected at least 1",
        ));
    }
    if n > max_batch as usize {
        return Err(Error::invalid(format!(
            "submit request holds {n} jobs, the limit is {max_batch} per request; split it"
        )));
    }
    let key = req.idempotency_key.trim();
    check_text("idempotency key", key).map_err(Error::invalid)?;
    let edges: usize = req
        .jobs
        .iter()
        .map(|j| j.depends_on.len() + j.depends_on_batch.len())
        .sum();
    if edges > MAX_DEPS_PER_BATCH {
        return Err(Error::invalid(format!(
            "submit request holds {edges} dependencies, the limit is {MAX_DEPS_PER_BATCH} per request"
        )));
    }
    let jobs = req
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| job(j, i, n).map_err(|e| Error::invalid(format!("job {i}: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    check_batch_cycles(&jobs)?;
    let body = pb::SubmitRequest {
        idempotency_key: String::new(),
        jobs: req.jobs.clone(),
    };
    let body_hash = hex::encode(Sha256::digest(body.encode_to_vec()));
    Ok(SubmitBatch {
        idempotency_key: (!key.is_empty()).then(|| key.to_string()),
        body_hash,
        jobs,
    })
}

fn job(j: &pb::JobSpec, index: usize, batch_len: usize) -> Result<NewJob, String> {
    let kind = j.kind.trim();
    if kind.is_empty() {
        return Err(format!(
            "job kind is empty, expected one of {}",
            kinds::KNOWN_KINDS.join(", ")
        ));
    }
    let payload_text = if j.payload_json.trim().is_empty() {
        "{}"
    } else {
        j.payload_json.as_str()
    };
    if payload_text.len() > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "payload is {} bytes, the limit is {MAX_PAYLOAD_BYTES}",
            payload_text.len()
        ));
    }
    let payload: serde_json::Value = serde_json::from_str(payload_text)
        .map_err(|e| format!("payload is not valid JSON ({e})"))?;
    let obj = payload.as_object().ok_or_else(|| {
        format!(
            "payload must be a JSON object, found {}",
            json_type(&payload)
        )
    })?;
    kinds::validate_payload(kind, obj)?;
    text("name", &j.name)?;
    text("experiment", &j.experiment)?;
    if !PRIORITY_RANGE.contains(&j.priority) {
        return Err(format!(
            "priority must be between {} and {}, found {}",
            PRIORITY_RANGE.start(),
            PRIORITY_RANGE.end(),
            j.priority
        ));
    }
    let r = j.resources.clone().unwrap_or_default();
    let resources = resources(&r)?;
    bounded("max_attempts", j.max_attempts, MAX_ATTEMPTS)?;
    bounded("crash_limit", j.crash_limit, MAX_ATTEMPTS)?;
    bounded("timeout_s", j.timeout_s, MAX_TIMEOUT_S)?;
    bounded("expect_oof_rows", j.expect_oof_rows, MAX_EXPECTED_ROWS)?;
    bounded("expect_test_rows", j.expect_test_rows, MAX_EXPECTED_ROWS)?;
    let deps = j.depends_on.len() + j.depends_on_batch.len();
    if deps > MAX_DEPS_PER_JOB {
        return Err(format!(
            "job has {deps} dependencies, the limit is {MAX_DEPS_PER_JOB}"
        ));
    }
    if let Some(bad) = j.depends_on.iter().find(|&&d| d <= 0) {
        return Err(format!("depends_on holds {bad}, expected positive job ids"));
    }
    for &b in &j.depends_on_batch {
        if b as usize >= batch_len {
            return Err(format!(
                "depends_on_batch holds index {b}, the batch has only {batch_len} jobs"
            ));
        }
        if b as usize == index {
            return Err("job depends on itself".into());
        }
    }
    let mut depends_on = j.depends_on.clone();
    depends_on.sort_unstable();
    depends_on.dedup();
    let mut depends_on_batch = j.depends_on_batch.clone();
    depends_on_batch.sort_unstable();
    depends_on_batch.dedup();
    Ok(NewJob {
        kind: kind.to_string(),
        name: j.name.clone(),
        experiment: j.experiment.clone(),
        payload: serde_json::to_string(&payload).expect("a parsed value serializes"),
        priority: j.priority,
        resources,
        max_attempts: j.max_attempts,
        crash_limit: j.crash_limit,
        timeout_s: j.timeout_s,
        depends_on,
        depends_on_batch,
        expect_oof_rows: j.expect_oof_rows,
        expect_test_rows: j.expect_test_rows,
    })
}

/// Validates resources offered by a worker or needed by a job.
pub fn resources(r: &pb::Resources) -> Result<Resources, String> {
    bounded("cpu_slots", r.cpu_slots, MAX_CPU_SLOTS)?;
    bounded("gpus", r.gpus, MAX_GPUS)?;
    if r.gpu_mem_mb > MAX_GPU_MEM_MB {
        return Err(format!(
            "gpu_mem_mb must be at most {MAX_GPU_MEM_MB}, found {}",
            r.gpu_mem_mb
        ));
    }
    if r.tags.len() > MAX_TAGS {
        return Err(format!(
            "at most {MAX_TAGS} tags are allowed, found {}",
            r.tags.len()
        ));
    }
    let mut tags = Vec::with_capacity(r.tags.len());
    for t in &r.tags {
        let ok = !t.is_empty()
            && t.len() <= 64
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:=/".contains(c));
        if !ok {
            return Err(format!(
                "tag {t:?} is not valid, expected 1 to 64 characters of letters, digits and _-.:=/"
            ));
        }
        tags.push(t.clone());
    }
    tags.sort();
    tags.dedup();
    Ok(Resources {
        cpu_slots: r.cpu_slots,
        gpus: r.gpus,
        gpu_mem_mb: r.gpu_mem_mb,
        tags,
    })
}

fn bounded(field: &str, v: u32, max: u32) -> Result<(), String> {
    if v > max {
        return Err(format!("{field} must be at most {max}, found {v}"));
    }
    Ok(())
}

fn text(field: &str, v: &str) -> Result<(), String> {
    check_text(field, v)
}

/// What a worker says about itself at registration: bounded, printable text (it is shown by
/// `stackhive workers` on people's terminals).
pub fn worker_info(r: &pb::RegisterRequest) -> Result<(), String> {
    text("worker name", &r.name)?;
    text("worker hostname", &r.hostname)?;
    text("worker version", &r.version)?;
    if r.kinds.len() > MAX_WORKER_KINDS {
        return Err(format!(
            "worker lists {} job kinds, the limit is {MAX_WORKER_KINDS}",
            r.kinds.len()
        ));
    }
    for k in &r.kinds {
        let ok = !k.is_empty()
            && k.len() <= 64
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !ok {
            return Err(format!(
                "job kind {k:?} is not valid, expected 1 to 64 letters, digits and _-."
            ));
        }
    }
    Ok(())
}

/// A heartbeat's progress document: JSON, at most [`MAX_PROGRESS_BYTES`].
pub fn progress(id: JobId, p: &str) -> Result<()> {
    if p.len() > MAX_PROGRESS_BYTES {
        return Err(Error::invalid(format!(
            "progress of job {id} is {} bytes, the limit is {MAX_PROGRESS_BYTES}",
            p.len()
        )));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(p)
        .map_err(|e| Error::invalid(format!("progress of job {id} is not valid JSON ({e})")))?;
    Ok(())
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Rejects dependency cycles inside a batch (Kahn's algorithm); jobs outside the batch cannot
/// depend on new ones, so no other cycle is possible.
/// The dependency name a `cnn` / `lr-find` job takes its initial weights from
/// (`init_weights.dependency`), if any.
pub fn init_dependency(j: &NewJob) -> Option<String> {
    if !matches!(j.kind.as_str(), "cnn" | "lr-find") {
        return None;
    }
    let payload: serde_json::Value = serde_json::from_str(&j.payload).ok()?;
    payload["init_weights"]["dependency"]
        .as_str()
        .map(str::to_string)
}

/// `init_weights.dependency` must name exactly one of the job's dependencies, and a `cnn` one
/// (only those leave a checkpoint). `existing` holds (name, kind) of the stored jobs among the
/// `depends_on` ids; ids it lacks are left to the store, which refuses unknown dependencies.
pub fn weight_sources(
    jobs: &[NewJob],
    existing: &std::collections::HashMap<JobId, (String, String)>,
) -> Result<()> {
    for (i, j) in jobs.iter().enumerate() {
        let Some(name) = init_dependency(j) else {
            continue;
        };
        let deps: Vec<(&str, &str)> = j
            .depends_on_batch
            .iter()
            .map(|&b| &jobs[b as usize])
            .map(|d| (d.name.as_str(), d.kind.as_str()))
            .chain(
                j.depends_on
                    .iter()
                    .filter_map(|id| existing.get(id))
                    .map(|(n, k)| (n.as_str(), k.as_str())),
            )
            .collect();
        let matching: Vec<&str> = deps
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, k)| *k)
            .collect();
        let problem = match matching.as_slice() {
            ["cnn"] => continue,
            [kind] => format!(
                "a dependency of kind {kind}; expected a cnn job (only those leave a checkpoint)"
            ),
            [] if deps.is_empty() => {
                "but the job has no dependencies; expected the seeding job in depends_on too".into()
            }
            [] => format!(
                "which is not a dependency of this job; expected one of: {}",
                deps.iter()
                    .map(|(n, _)| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            more => format!(
                "which names {} of this job's dependencies; expected a unique name",
                more.len()
            ),
        };
        return Err(Error::invalid(format!(
            "job {i}: init_weights.dependency names {name:?}, {problem}"
        )));
    }
    Ok(())
}

fn check_batch_cycles(jobs: &[NewJob]) -> Result<()> {
    let n = jobs.len();
    let mut indegree = vec![0usize; n];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, j) in jobs.iter().enumerate() {
        for &d in &j.depends_on_batch {
            indegree[i] += 1;
            children[d as usize].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut seen = 0;
    while let Some(i) = ready.pop() {
        seen += 1;
        for &c in &children[i] {
            indegree[c] -= 1;
            if indegree[c] == 0 {
                ready.push(c);
            }
        }
    }
    if seen < n {
        let in_cycle: Vec<String> = (0..n)
            .filter(|&i| indegree[i] > 0)
            .take(5)
            .map(|i| i.to_string())
            .collect();
        return Err(Error::invalid(format!(
            "dependencies form a cycle among jobs {} of the batch",
            in_cycle.join(", ")
        )));
    }
    Ok(())
}

/// A completion refused by validation: (id, attempt, why).
pub type Refused = (JobId, u32, String);

/// Validates completions, taking them over (prediction vectors are large: never copied). Each
/// item stands alone: the valid ones come back first, the refused ones second as (id, attempt,
/// why). Only a request that is too large as a whole is refused as a whole.
pub fn completions(items: Vec<pb::Completion>) -> Result<(Vec<Completion>, Vec<Refused>)> {
    let values: usize = items
        .iter()
        .filter_map(|c| c.predictions.as_ref())
        .map(|p| p.oof.len() + p.test.len())
        .sum();
    if values > MAX_PREDICTION_VALUES_PER_REQUEST {
        return Err(Error::invalid(format!(
            "completions carry {values} prediction values, the limit is \
             {MAX_PREDICTION_VALUES_PER_REQUEST} per request; send fewer at once"
        )));
    }
    let mut valid = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    for c in items {
        let (id, attempt) = (c.id, c.attempt);
        match completion(c) {
            Ok(c) => valid.push(c),
            Err(e) => refused.push((id, attempt, e.to_string())),
        }
    }
    Ok((valid, refused))
}

fn completion(c: pb::Completion) -> Result<Completion> {
    if c.result_json.len() > MAX_RESULT_BYTES {
        return Err(Error::invalid(format!(
            "result of job {} is {} bytes, the limit is {MAX_RESULT_BYTES}",
            c.id,
            c.result_json.len()
        )));
    }
    if !c.result_json.is_empty() {
        serde_json::from_str::<serde::de::IgnoredAny>(&c.result_json).map_err(|e| {
            Error::invalid(format!("result of job {} is not valid JSON ({e})", c.id))
        })?;
    }
    if !c.progress_json.is_empty() {
        progress(c.id, &c.progress_json)?;
    }
    let predictions = match c.predictions {
        None => None,
        Some(p) => Some(predictions(c.id, p)?),
    };
    Ok(Completion {
        id: c.id,
        attempt: c.attempt,
        result: (!c.result_json.is_empty()).then_some(c.result_json),
        predictions,
        progress: (!c.progress_json.is_empty()).then_some(c.progress_json),
    })
}

fn predictions(id: JobId, p: pb::Predictions) -> Result<Predictions> {
    if p.oof_rows.len() != p.oof.len() {
        return Err(Error::invalid(format!(
            "predictions for job {id} have {} out-of-fold values but {} row indices",
            p.oof.len(),
            p.oof_rows.len()
        )));
    }
    for (name, values) in [("out-of-fold", &p.oof), ("test", &p.test)] {
        if values.len() > MAX_PREDICTION_ROWS {
            return Err(Error::invalid(format!(
                "predictions for job {id} hold {} {name} values, the limit is {MAX_PREDICTION_ROWS}",
                values.len()
            )));
        }
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "{name} prediction {i} of job {id} is {v}, expected a finite number"
            )));
        }
    }
    Ok(Predictions {
        oof_rows: p.oof_rows,
        oof: p.oof,
        test: p.test,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str, payload: &str) -> pb::JobSpec {
        pb::JobSpec {
            kind: kind.into(),
            payload_json: payload.into(),
            ..Default::default()
        }
    }

    #[test]
    fn initial_weights_must_name_one_cnn_dependency() {
        let job = |kind: &str, name: &str, payload: &str| NewJob {
            kind: kind.into(),
            name: name.into(),
            payload: payload.into(),
            ..Default::default()
        };
        let seeded = |deps: Vec<u32>, ids: Vec<JobId>| NewJob {
            depends_on_batch: deps,
            depends_on: ids,
            ..job("cnn", "b2", r#"{"init_weights": {"dependency": "b0"}}"#)
        };
        let stored: std::collections::HashMap<JobId, (String, String)> =
            [(7, ("b0".to_string(), "cnn".to_string()))].into();
        let none = std::collections::HashMap::new();
        // By batch index or by a stored id: fine.
        let b0 = job("cnn", "b0", "{}");
        assert!(weight_sources(&[b0.clone(), seeded(vec![0], vec![])], &none).is_ok());
        assert!(weight_sources(&[seeded(vec![], vec![7])], &stored).is_ok());
        // Other dependencies only, or two of that name.
        let other = job("cnn", "other", "{}");
        let err = weight_sources(&[other, seeded(vec![0], vec![])], &none)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("job 1: init_weights.dependency names \"b0\", which is not a dependency of this job; expected one of: \"other\""),
            "{err}"
        );
        let err = weight_sources(&[b0.clone(), b0, seeded(vec![0, 1], vec![])], &none)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("which names 2 of this job's dependencies; expected a unique name"),
            "{err}"
        );
        // Jobs of other kinds are not looked at.
        assert_eq!(
            init_dependency(&job(
                "shell",
                "x",
                r#"{"init_weights": {"dependency": "b0"}}"#
            )),
            None
        );
    }

    #[test]
    fn rejects_bad_jobs_with_clear_messages() {
        let cases = [
            (spec("nop", ""), "job 0: unknown job kind \"nop\", expected one of noop, sleep, shell, dataset-prefetch"),
            (spec("sleep", "{\"ms\": -5}"), "job 0: sleep payload field \"ms\" must be an integer"),
            (spec("shell", "[1]"), "job 0: payload must be a JSON object, found an array"),
            (spec("noop", "{"), "job 0: payload is not valid JSON"),
        ];
        for (s, want) in cases {
            let req = pb::SubmitRequest {
                idempotency_key: String::new(),
                jobs: vec![s],
            };
            let err = submit(&req, 10).unwrap_err().to_string();
            assert!(
                err.starts_with(want),
                "{err:?} does not start with {want:?}"
            );
        }
        let mut big = spec("noop", "");
        big.resources = Some(pb::Resources {
            cpu_slots: 1_000_000,
            ..Default::default()
        });
        let req = pb::SubmitRequest {
            idempotency_key: String::new(),
            jobs: vec![big],
        };
        assert_eq!(
            submit(&req, 10).unwrap_err().to_string(),
            "job 0: cpu_slots must be at most 4096, found 1000000"
        );
    }

    #[test]
    fn rejects_cycles_and_self_dependencies() {
        let mut a = spec("noop", "");
        let mut b = spec("noop", "");
        a.depends_on_batch = vec![1];
        b.depends_on_batch = vec![0];
        let req = pb::SubmitRequest {
            idempotency_key: String::new(),
            jobs: vec![a.clone(), b],
        };
        assert!(submit(&req, 10)
            .unwrap_err()
            .to_string()
            .contains("cycle among jobs 0, 1"));
        a.depends_on_batch = vec![0];
        let req = pb::SubmitRequest {
            idempotency_key: String::new(),
            jobs: vec![a],
        };
        assert_eq!(
            submit(&req, 10).unwrap_err().to_string(),
            "job 0: job depends on itself"
        );
    }

    #[test]
    fn same_body_same_hash_whatever_the_key() {
        let jobs = vec![spec("sleep", "{\"ms\":1}")];
        let a = submit(
            &pb::SubmitRequest {
                idempotency_key: "a".into(),
                jobs: jobs.clone(),
            },
            10,
        );
        let b = submit(
            &pb::SubmitRequest {
                idempotency_key: "b".into(),
                jobs,
            },
            10,
        );
        assert_eq!(a.unwrap().body_hash, b.unwrap().body_hash);
    }

    #[test]
    fn a_completions_progress_is_checked_like_a_heartbeats() {
        let with = |progress_json: &str| pb::Completion {
            id: 4,
            attempt: 1,
            progress_json: progress_json.into(),
            ..Default::default()
        };
        let (ok, refused) = completions(vec![with(r#"{"epoch":3}"#), with("")]).unwrap();
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(ok[0].progress.as_deref(), Some(r#"{"epoch":3}"#));
        assert_eq!(ok[1].progress, None, "empty: keep the heartbeat's");
        // Per item: the bad one is refused with why, the good one passes.
        let (ok, refused) = completions(vec![with("{epoch"), with("")]).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!((refused[0].0, refused[0].1), (4, 1));
        assert!(
            refused[0].2.contains("progress of job 4 is not valid JSON"),
            "{refused:?}"
        );
    }

    #[test]
    fn rejects_non_finite_predictions() {
        let c = pb::Completion {
            id: 3,
            attempt: 1,
            result_json: String::new(),
            predictions: Some(pb::Predictions {
                oof_rows: vec![0, 1],
                oof: vec![0.5, f32::NAN],
                test: vec![],
            }),
            ..Default::default()
        };
        let (ok, refused) = completions(vec![c]).unwrap();
        assert!(ok.is_empty());
        assert_eq!(
            refused,
            [(
                3,
                1,
                "out-of-fold prediction 1 of job 3 is NaN, expected a finite number".to_string()
            )]
        );
    }
}
