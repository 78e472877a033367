//! Domain types of the scheduler, independent of gRPC and of SQL. Times are Unix epoch
//! milliseconds (`i64`) everywhere, so both stores and the API agree without conversions.
//! Nothing here talks to a database or the network.

use serde::{Deserialize, Serialize};

pub type JobId = i64;
/// Unix epoch milliseconds.
pub type Millis = i64;

/// Lifecycle of a job; the integer codes are what the stores persist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    Blocked = 1,
    Queued = 2,
    Running = 3,
    Succeeded = 4,
    Failed = 5,
    Cancelled = 6,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        Self::Blocked,
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn code(self) -> i16 {
        self as i16
    }

    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() as i64 == code)
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blocked => "blocked",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a job needs, or what a worker has free.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_slots: u32,
    pub gpus: u32,
    /// Per GPU: the memory each GPU must have (job) or the smallest free GPU has (worker).
    pub gpu_mem_mb: u64,
    pub tags: Vec<String>,
}

/// A validated job as submitted. `depends_on_batch` refers to other jobs of the same batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewJob {
    pub kind: String,
    pub name: String,
    pub experiment: String,
    /// JSON object text, validated per kind before it reaches a store.
    pub payload: String,
    pub priority: i32,
    pub resources: Resources,
    pub max_attempts: u32,
    pub crash_limit: u32,
    pub timeout_s: u32,
    pub depends_on: Vec<JobId>,
    pub depends_on_batch: Vec<u32>,
    pub expect_oof_rows: u32,
    pub expect_test_rows: u32,
}

/// One atomic submission. `body_hash` identifies the content for idempotency checks.
#[derive(Clone, Debug, Default)]
pub struct SubmitBatch {
    pub idempotency_key: Option<String>,
    pub body_hash: String,
    pub jobs: Vec<NewJob>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitOutcome {
    pub ids: Vec<JobId>,
    pub deduplicated: bool,
}

/// A stored job. `spec.depends_on` holds every dependency as an id; `depends_on_batch` is empty.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub spec: NewJob,
    pub state: JobState,
    pub attempt: u32,
    pub failures: u32,
    pub crashes: u32,
    pub worker_id: Option<String>,
    pub cancel_requested: bool,
    pub error: Option<String>,
    pub result: Option<String>,
    pub progress: Option<String>,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub updated_at: Millis,
    pub lease_expires_at: Option<Millis>,
    pub run_after: Millis,
    pub prediction_rows_oof: u32,
    pub prediction_rows_test: u32,
}

/// Filter and page for listing jobs; every set field must match.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub states: Vec<JobState>,
    pub kind: Option<String>,
    pub experiment: Option<String>,
    pub ids: Vec<JobId>,
    /// Only jobs changed after this instant (for watch).
    pub updated_after: Option<Millis>,
    /// Paging: only ids greater than this.
    pub after_id: Option<JobId>,
    /// 0 means no limit.
    pub limit: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub blocked: u64,
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl StateCounts {
    pub fn add(&mut self, state: JobState, n: u64) {
        match state {
            JobState::Blocked => self.blocked += n,
            JobState::Queued => self.queued += n,
            JobState::Running => self.running += n,
            JobState::Succeeded => self.succeeded += n,
            JobState::Failed => self.failed += n,
            JobState::Cancelled => self.cancelled += n,
        }
    }
    pub fn merge(&mut self, o: &StateCounts) {
        self.blocked += o.blocked;
        self.queued += o.queued;
        self.running += o.running;
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.cancelled += o.cancelled;
    }
    pub fn total(&self) -> u64 {
        self.blocked + self.queued + self.running + self.succeeded + self.failed + self.cancelled
    }
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled
    }
}

/// Model outputs carried by a completion, stored as little-endian arrays.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Predictions {
    pub oof_rows: Vec<u32>,
    pub oof: Vec<f32>,
    pub test: Vec<f32>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerInfo {
    pub name: String,
    pub hostname: String,
    pub resources: Resources,
    pub gpu_mem_mb: Vec<u64>,
    pub kinds: Vec<String>,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WorkerRecord {
    pub id: String,
    pub info: WorkerInfo,
    pub registered_at: Millis,
    pub last_seen: Millis,
    pub deregistered: bool,
    pub running_jobs: u32,
    /// CPU slots and GPUs its running jobs hold.
    pub busy_slots: u32,
    pub busy_gpus: u32,
}

/// A claim request: up to `max_jobs` jobs whose summed needs fit in `free`.
#[derive(Clone, Debug)]
pub struct LeaseQuery {
    pub worker_id: String,
    pub free: Resources,
    pub max_jobs: u32,
    pub lease_ttl_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LeasedJob {
    pub id: JobId,
    pub attempt: u32,
    pub kind: String,
    pub name: String,
    pub payload: String,
    pub resources: Resources,
    pub timeout_s: u32,
    pub lease_expires_at: Millis,
    pub expect_oof_rows: u32,
    pub expect_test_rows: u32,
}

/// A job a worker is running, as reported in a heartbeat.
#[derive(Clone, Debug, PartialEq)]
pub struct ActiveJob {
    pub id: JobId,
    pub attempt: u32,
    pub progress: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    LeaseLost,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopJob {
    pub id: JobId,
    pub attempt: u32,
    pub reason: StopReason,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub id: JobId,
    pub attempt: u32,
    pub result: Option<String>,
    pub predictions: Option<Predictions>,
    /// The last progress document; `None` keeps what the heartbeats stored.
    pub progress: Option<String>,
}

/// What `Complete` did with each item of a batch: every item is accepted, stale or invalid.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompleteOutcome {
    pub accepted: Vec<JobId>,
    /// (id, attempt, why) of reports whose fencing token no longer matches.
    pub stale: Vec<(JobId, u32, String)>,
    /// (id, attempt, why) of reports the coordinator will never take (a bad result, or
    /// predictions that do not fit their job); the worker fails those jobs.
    pub invalid: Vec<(JobId, u32, String)>,
}

/// The prediction rows a job declared (`expect_oof_rows`, `expect_test_rows`; 0: any number)
/// against a completion's. `None` when they fit, otherwise why not.
pub fn prediction_rows_breach(c: &Completion, expect_oof: u32, expect_test: u32) -> Option<String> {
    let (oof, test) = c
        .predictions
        .as_ref()
        .map_or((0, 0), |p| (p.oof.len(), p.test.len()));
    let id = c.id;
    if expect_oof != 0 && oof != expect_oof as usize {
        return Some(format!(
            "predictions for job {id} have {oof} out-of-fold rows, the job expects {expect_oof}"
        ));
    }
    if expect_test != 0 && test != expect_test as usize {
        return Some(format!(
            "predictions for job {id} have {test} test rows, the job expects {expect_test}"
        ));
    }
    None
}

#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub worker_id: String,
    pub id: JobId,
    pub attempt: u32,
    pub reason: String,
    pub retryable: bool,
    /// Given back unrun (worker shutdown): counts neither as a failure nor as a crash.
    pub handback: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailOutcome {
    pub state: JobState,
    pub run_after: Millis,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CancelOutcome {
    pub cancelled: Vec<JobId>,
    pub stopping: Vec<JobId>,
    pub already_finished: Vec<JobId>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReapOutcome {
    pub requeued: Vec<JobId>,
    pub failed: Vec<JobId>,
    pub cancelled: Vec<JobId>,
}

/// Scheduling policy shared by both stores.
#[derive(Clone, Debug)]
pub struct Policy {
    pub default_max_attempts: u32,
    pub default_crash_limit: u32,
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
    /// Waiting time worth one priority point: the queue orders by
    /// `enqueued_at - priority * aging_ms`, so an old low-priority job eventually outranks
    /// new high-priority ones (no starvation) while the order stays indexable.
    pub aging_ms_per_priority: i64,
    /// Workers not seen for this long are listed as dead.
    pub worker_dead_after_ms: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default_max_attempts: 3,
            default_crash_limit: 3,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
            aging_ms_per_priority: 60_000,
            worker_dead_after_ms: 60_000,
        }
    }
}

impl Policy {
    /// Queue order key: smaller runs first. Statements that compute it in the database use its
    /// SQL twin, `store::sort_key_sql`.
    pub fn sort_key(&self, enqueued_at: Millis, priority: i32) -> i64 {
        enqueued_at - priority as i64 * self.aging_ms_per_priority
    }

    /// Exponential backoff with "equal jitter": half fixed, half random, capped.
    pub fn backoff_ms(&self, failures: u32) -> i64 {
        let exp = self
            .backoff_base_ms
            .saturating_mul(1i64 << failures.saturating_sub(1).min(30))
            .min(self.backoff_max_ms);
        let half = exp / 2;
        half + rand::random_range(0..=half.max(0))
    }
}

/// What a failed attempt turns into; both stores apply it, so the rule lives in one place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfterFailure {
    pub state: JobState,
    pub failures: u32,
    /// Delay before the job may be claimed again (0: at once, or not re-queued).
    pub backoff_ms: i64,
    pub error: String,
}

impl Policy {
    /// A requested cancel wins over everything (the user no longer wants the job run); a
    /// handback re-queues without counting; a retryable failure with attempts left backs off;
    /// anything else fails the job.
    pub fn after_failure(
        &self,
        f: &Failure,
        failures: u32,
        max_attempts: u32,
        cancel: bool,
    ) -> AfterFailure {
        let (state, failures, backoff_ms) = if cancel {
            (JobState::Cancelled, failures, 0)
        } else if f.handback {
            (JobState::Queued, failures, 0)
        } else if f.retryable && failures + 1 < max_attempts {
            (
                JobState::Queued,
                failures + 1,
                self.backoff_ms(failures + 1),
            )
        } else {
            (JobState::Failed, failures + 1, 0)
        };
        let error = if cancel {
            "cancelled by request".to_string()
        } else {
            f.reason.clone()
        };
        AfterFailure {
            state,
            failures,
            backoff_ms,
            error,
        }
    }
}

/// A job as the fence sees it: state, attempt and the worker holding the lease.
#[derive(Clone, Copy, Debug)]
pub struct FenceState<'a> {
    pub state: JobState,
    pub attempt: u32,
    pub worker: Option<&'a str>,
}

/// A job's fence columns as read from its row (each backend's `rows::fence`).
#[derive(Clone, Debug)]
pub struct FenceRow {
    pub state: JobState,
    pub attempt: u32,
    pub worker: Option<String>,
}

impl FenceRow {
    /// `fence_breach` against this row.
    pub fn breach(&self, job: JobId, attempt: u32, worker: &str) -> Option<String> {
        let now = FenceState {
            state: self.state,
            attempt: self.attempt,
            worker: self.worker.as_deref(),
        };
        fence_breach(job, attempt, worker, now)
    }
}

/// The fence of every report (heartbeat, completion, failure, artifact change): the job is
/// running, at the reported attempt, leased to the reporting worker. `None` when it holds,
/// otherwise why not. A worker that lost its lease, or a client posing as another worker, can
/// never change the job this way.
pub fn fence_breach(
    id: JobId,
    reported: u32,
    reporter: &str,
    now: FenceState<'_>,
) -> Option<String> {
    if now.attempt != reported {
        Some(format!(
            "job {id} is at attempt {}, the report is for attempt {reported}",
            now.attempt
        ))
    } else if now.state != JobState::Running {
        Some(format!(
            "job {id} attempt {reported} is no longer running (it is {})",
            now.state
        ))
    } else if now.worker != Some(reporter) {
        Some(format!(
            "job {id} attempt {reported} is leased to another worker than {reporter}"
        ))
    } else {
        None
    }
}

pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A registered dataset: content stored once under its hash, known by one or more names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatasetRecord {
    pub hash: String,
    pub names: Vec<String>,
    /// The file manifest (paths, sizes, per-file hashes) as JSON.
    pub manifest: String,
    /// Row counts and rates as JSON.
    pub summary: String,
    /// Where the coordinator keeps the files.
    pub storage_path: String,
    pub total_bytes: u64,
    pub files: u32,
    pub registered_at: Millis,
}

/// The folds of one (dataset, scheme, k, seed), computed once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FoldsRecord {
    pub dataset_hash: String,
    pub scheme: String,
    pub k: u32,
    pub seed: u64,
    /// Validation fold per train row, i16 little endian; -1 never validates.
    pub assignment: Vec<u8>,
    pub report: String,
    pub created_at: Millis,
}

/// A job's artifact (a checkpoint, a resume state): bytes stored in the database as the chunks
/// of one upload, named by `(job_id, name)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArtifactRecord {
    pub job_id: JobId,
    /// The attempt that uploaded it.
    pub attempt: u32,
    pub name: String,
    pub size: u64,
    /// BLAKE3 of the bytes, lower-case hex.
    pub blake3: String,
    /// The upload whose chunks hold the bytes.
    pub upload_id: String,
    pub created_at: Millis,
}

/// What a token may do (proto/stackhive/v1/auth.proto lists each role's calls).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Worker,
    Reader,
    Submitter,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Worker, Role::Reader, Role::Submitter, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Reader => "reader",
            Role::Submitter => "submitter",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored access token: the public id, a label, the role and the SHA-256 of the secret.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub secret_hash: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// A stored feature set (issue 12): a level-2 matrix, named by the hash of its definition.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureSetRecord {
    pub id: String,
    pub names: Vec<String>,
    /// The resolved definition, JSON.
    pub definition: String,
    /// Rows, columns, folds and models, JSON (`crate::services::features::Info`).
    pub info: String,
    pub size: u64,
    /// BLAKE3 of the matrix bytes.
    pub blake3: String,
    pub created_at: Millis,
}

/// A sweep (issue 12, item 5): `n` stack jobs sampled from the spaces of `models`, fed to the
/// queue a window at a time.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepRecord {
    pub id: i64,
    pub experiment: String,
    /// Feature set id or name; empty until built from `definition`.
    pub features: String,
    /// The feature definition (JSON of `pb::FeatureDefinition`), empty with a named set.
    pub definition: String,
    pub models: Vec<String>,
    pub n: u64,
    pub submitted: u64,
    pub seed: u64,
    pub cpu_slots: u32,
    pub priority: i32,
    pub state: String,
    pub error: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}
