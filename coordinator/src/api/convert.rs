//! Conversions between domain values and API messages.

use stackhive_proto::v1 as pb;

use crate::domain::model::*;

pub fn state_to_pb(s: JobState) -> pb::JobState {
    match s {
        JobState::Blocked => pb::JobState::Blocked,
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

pub fn state_from_pb(s: i32) -> Option<JobState> {
    match pb::JobState::try_from(s).ok()? {
        pb::JobState::Unspecified => None,
        pb::JobState::Blocked => Some(JobState::Blocked),
        pb::JobState::Queued => Some(JobState::Queued),
        pb::JobState::Running => Some(JobState::Running),
        pb::JobState::Succeeded => Some(JobState::Succeeded),
        pb::JobState::Failed => Some(JobState::Failed),
        pb::JobState::Cancelled => Some(JobState::Cancelled),
    }
}

pub fn resources(r: &Resources) -> pb::Resources {
    pb::Resources {
        cpu_slots: r.cpu_slots,
        gpus: r.gpus,
        gpu_mem_mb: r.gpu_mem_mb,
        tags: r.tags.clone(),
    }
}

pub fn job(j: &Job) -> pb::Job {
    let s = &j.spec;
    pb::Job {
        id: j.id,
        spec: Some(pb::JobSpec {
            kind: s.kind.clone(),
            name: s.name.clone(),
            experiment: s.experiment.clone(),
            payload_json: s.payload.clone(),
            priority: s.priority,
            resources: Some(resources(&s.resources)),
            max_attempts: s.max_attempts,
            crash_limit: s.crash_limit,
            timeout_s: s.timeout_s,
            depends_on: s.depends_on.clone(),
            depends_on_batch: Vec::new(),
            expect_oof_rows: s.expect_oof_rows,
            expect_test_rows: s.expect_test_rows,
        }),
        state: state_to_pb(j.state) as i32,
        attempt: j.attempt,
        failures: j.failures,
        crashes: j.crashes,
        worker_id: j.worker_id.clone().unwrap_or_default(),
        cancel_requested: j.cancel_requested,
        error: j.error.clone().unwrap_or_default(),
        result_json: j.result.clone().unwrap_or_default(),
        progress_json: j.progress.clone().unwrap_or_default(),
        created_at_ms: j.created_at,
        started_at_ms: j.started_at.unwrap_or(0),
        finished_at_ms: j.finished_at.unwrap_or(0),
        lease_expires_at_ms: j.lease_expires_at.unwrap_or(0),
        run_after_ms: j.run_after,
        prediction_rows_oof: j.prediction_rows_oof,
        prediction_rows_test: j.prediction_rows_test,
    }
}

pub fn counts(c: &StateCounts) -> pb::StateCounts {
    pb::StateCounts {
        blocked: c.blocked,
        queued: c.queued,
        running: c.running,
        succeeded: c.succeeded,
        failed: c.failed,
        cancelled: c.cancelled,
    }
}

pub fn predictions(p: Predictions) -> pb::Predictions {
    pb::Predictions {
        oof_rows: p.oof_rows,
        oof: p.oof,
        test: p.test,
    }
}

pub fn leased(j: LeasedJob) -> pb::LeasedJob {
    pb::LeasedJob {
        id: j.id,
        attempt: j.attempt,
        kind: j.kind,
        payload_json: j.payload,
        resources: Some(resources(&j.resources)),
        timeout_s: j.timeout_s,
        lease_expires_at_ms: j.lease_expires_at,
        expect_oof_rows: j.expect_oof_rows,
        expect_test_rows: j.expect_test_rows,
        name: j.name,
    }
}

pub fn worker(w: &WorkerRecord, alive: bool) -> pb::Worker {
    pb::Worker {
        id: w.id.clone(),
        name: w.info.name.clone(),
        hostname: w.info.hostname.clone(),
        resources: Some(resources(&w.info.resources)),
        gpu_mem_mb: w.info.gpu_mem_mb.clone(),
        registered_at_ms: w.registered_at,
        last_seen_ms: w.last_seen,
        alive,
        running_jobs: w.running_jobs,
        kinds: w.info.kinds.clone(),
        busy_slots: w.busy_slots,
        busy_gpus: w.busy_gpus,
        version: w.info.version.clone(),
    }
}
