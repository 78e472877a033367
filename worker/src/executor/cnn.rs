//! The `cnn` and `lr-find` kinds (issue 4, items 1 and 7). The worker itself never links
//! libtorch: it resolves what the job needs (the dataset on this machine, the coordinator's
//! stored folds, initial weights from another job's artifact, named by id or as a dependency), writes a `TrainerJob` file and
//! runs ONE `stackhive-trainer` process per job, in a process group of its own. So cancelling is
//! a kill, and a CUDA out-of-memory error, a libtorch abort or leaked GPU memory ends that
//! process alone while the worker keeps serving. The trainer's stdout events become the job's
//! progress (heartbeats carry it to `stackhive watch`); on success the checkpoint is uploaded as
//! the artifact `model.ot` and the job completes with its out-of-fold and test predictions.
//!
//! Resume: every resume checkpoint the trainer writes (`checkpoint` events) is uploaded as the
//! artifact `resume.ot` in the background, the newest winning, so a later attempt — on this
//! machine or another, after a crash, a kill or a lost lease — fetches it and trains only the
//! epochs that remain. Once the job's final checkpoint is stored, `resume.ot` is deleted.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stackhive_proto::connect::AuthChannel as Channel;
use stackhive_proto::v1::dataset_service_client::DatasetServiceClient;
use stackhive_proto::v1::job_service_client::JobServiceClient;
use stackhive_proto::v1::{self as pb, LeasedJob, Predictions};
use stackhive_spec::process::{self as contract, TrainerEvent, TrainerJob};
use stackhive_spec::{CnnKind, CnnResult, CnnSpec, LrFindResult, Progress};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::client::Identity;

use super::shell::{read_tail, ProcessGroup, Tail};
use super::{Executor, JobCtx, JobError, JobOutput};
use crate::artifacts;
use crate::datasets::{DatasetCache, DatasetError};

/// The checkpoint's artifact name.
pub const CHECKPOINT_ARTIFACT: &str = "model.ot";
/// The resume checkpoint's artifact name.
pub const RESUME_ARTIFACT: &str = "resume.ot";
/// How long a failed attempt waits for its last resume checkpoint to finish uploading.
const RESUME_UPLOAD_GRACE: Duration = Duration::from_secs(300);

/// The newest resume checkpoint the trainer announced: its file and epoch.
type CheckpointTx = watch::Sender<Option<(PathBuf, u32)>>;

/// Where the trainer runs and what it shares with other jobs on this machine.
#[derive(Clone, Debug)]
pub struct TrainerSetup {
    /// The `stackhive-trainer` binary.
    pub binary: PathBuf,
    /// One folder per attempt (`job-<id>-a<attempt>`) for the job file and outputs.
    pub work_dir: PathBuf,
    /// Preprocessed image caches, shared by the jobs of this machine.
    pub image_cache: PathBuf,
    /// Keep each attempt's folder after it ends (for debugging); otherwise removed.
    pub keep_job_dirs: bool,
}

pub struct CnnExecutor {
    kind: CnnKind,
    setup: Arc<TrainerSetup>,
    datasets: Arc<DatasetCache>,
    channel: Channel,
}

impl CnnExecutor {
    pub fn new(
        kind: CnnKind,
        setup: Arc<TrainerSetup>,
        datasets: Arc<DatasetCache>,
        channel: Channel,
    ) -> Self {
        Self {
            kind,
            setup,
            datasets,
            channel,
        }
    }

    /// Everything the trainer needs that only the worker can resolve.
    async fn prepare(
        &self,
        job: &LeasedJob,
        spec: CnnSpec,
        ctx: &JobCtx,
        dir: &Path,
    ) -> Result<(TrainerJob, String), JobError> {
        let (dataset_dir, _) = self
            .datasets
            .ensure(self.channel.clone(), &spec.dataset)
            .await
            .map_err(|e| match e {
                DatasetError::Rpc(ref s) if s.code() == tonic::Code::NotFound => {
                    JobError::permanent(e.to_string())
                }
                other => JobError::retryable(other.to_string()),
            })?;
        let folds = DatasetServiceClient::new(self.channel.clone())
            .max_decoding_message_size(256 << 20)
            .compute_folds(pb::FoldsRequest {
                dataset: spec.dataset.clone(),
                scheme: spec.folds.scheme.name().to_string(),
                k: u32::from(spec.folds.k),
                seed: spec.folds.seed,
            })
            .await
            .map_err(|s| JobError::from_status("folds", &s))?
            .into_inner();
        let init_weights = match &spec.init_weights {
            None => None,
            Some(w) => match (&w.path, w.job, &w.dependency) {
                (Some(p), _, _) => Some(PathBuf::from(p)),
                (None, Some(source), _) => Some(self.fetch_weights(source).await?),
                (None, None, Some(name)) => {
                    let source = self.dependency_id(job.id, name).await?;
                    Some(self.fetch_weights(source).await?)
                }
                (None, None, None) => None,
            },
        };
        let device = if ctx.gpus().is_empty() {
            "cpu".to_string()
        } else {
            // CUDA_VISIBLE_DEVICES holds only this job's GPUs; the first is cuda:0.
            "cuda:0".to_string()
        };
        let resume = self.fetch_resume(job, &spec, dir).await?;
        let cpu_threads = job
            .resources
            .as_ref()
            .map(|r| r.cpu_slots.max(1))
            .or(Some(1));
        let trainer_job = TrainerJob {
            kind: self.kind,
            spec,
            dataset_dir,
            cache_dir: self.setup.image_cache.clone(),
            folds: folds.fold.iter().map(|&f| f as i16).collect(),
            device,
            cpu_threads,
            gpu_mem_mb: job.resources.as_ref().map_or(0, |r| r.gpu_mem_mb),
            init_weights,
            resume,
            progress_every_ms: 1000,
        };
        let file = dir.join(contract::JOB_FILE);
        let json = serde_json::to_vec_pretty(&trainer_job).expect("trainer jobs serialise");
        tokio::fs::write(&file, json)
            .await
            .map_err(|e| JobError::retryable(format!("cannot write {}: {e}", file.display())))?;
        Ok((trainer_job, folds.dataset_hash))
    }
}

impl CnnExecutor {
    /// Job `source`'s checkpoint, fetched (and verified) into the machine's weights cache.
    async fn fetch_weights(&self, source: i64) -> Result<PathBuf, JobError> {
        let cache = self.setup.work_dir.join("weights");
        artifacts::fetch_cached(self.channel.clone(), source, CHECKPOINT_ARTIFACT, &cache)
            .await
            .map_err(|e| match e {
                artifacts::ArtifactError::Rpc(ref s) if s.code() == tonic::Code::NotFound => {
                    JobError::permanent(format!("initial weights: {e}"))
                }
                other => JobError::retryable(format!("initial weights: {other}")),
            })
    }

    /// The id of the `cnn` dependency of job `id` called `name` (the coordinator checked at
    /// submit time that there is exactly one).
    async fn dependency_id(&self, id: i64, name: &str) -> Result<i64, JobError> {
        let mut jobs = JobServiceClient::new(self.channel.clone());
        let get = |id| pb::GetJobRequest {
            id,
            include_predictions: false,
        };
        let me = jobs
            .get_job(get(id))
            .await
            .map_err(|s| JobError::from_status("initial weights", &s))?
            .into_inner();
        let deps = me.job.and_then(|j| j.spec).map(|s| s.depends_on);
        for dep in deps.unwrap_or_default() {
            let d = jobs
                .get_job(get(dep))
                .await
                .map_err(|s| JobError::from_status("initial weights", &s))?
                .into_inner();
            if let Some(spec) = d.job.and_then(|j| j.spec) {
                if spec.name == name && spec.kind == "cnn" {
                    return Ok(dep);
                }
            }
        }
        Err(JobError::permanent(format!(
            "initial weights: job {id} has no cnn dependency named {name:?}"
        )))
    }

    /// An earlier attempt's resume checkpoint, fetched (and verified) into `dir`, when the job
    /// has one. A corrupt one is skipped (the trainer starts over); an unreachable coordinator
    /// fails the attempt, which is retried, rather than throw hours of training away.
    async fn fetch_resume(
        &self,
        job: &LeasedJob,
        spec: &CnnSpec,
        dir: &Path,
    ) -> Result<Option<PathBuf>, JobError> {
        if self.kind != CnnKind::Cnn || spec.checkpoint_every == 0 {
            return Ok(None);
        }
        match artifacts::fetch_cached(self.channel.clone(), job.id, RESUME_ARTIFACT, dir).await {
            Ok(path) => {
                tracing::info!(
                    job_id = job.id,
                    attempt = job.attempt,
                    "resuming from an earlier attempt's checkpoint"
                );
                Ok(Some(path))
            }
            Err(artifacts::ArtifactError::Rpc(s)) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(e @ artifacts::ArtifactError::Corrupt { .. }) => {
                tracing::warn!(job_id = job.id, error = %e, "resume checkpoint skipped");
                Ok(None)
            }
            Err(e) => Err(JobError::retryable(format!("resume checkpoint: {e}"))),
        }
    }
}

/// Uploads each resume checkpoint announced on `rx` as `resume.ot`, the newest first: one
/// announced while another uploads replaces any still waiting. Ends when the sender is gone
/// and nothing is waiting, or at `stop` (an upload under way is finished first, so the job's
/// artifacts never change behind the caller's back once it has awaited this). A failed upload
/// is logged; the next epoch's tries again.
async fn upload_checkpoints(
    channel: Channel,
    who: Identity,
    job: i64,
    attempt: u32,
    mut rx: watch::Receiver<Option<(PathBuf, u32)>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let Some((path, epoch)) = rx.borrow_and_update().clone() else {
            continue;
        };
        match artifacts::upload(channel.clone(), &who, job, attempt, RESUME_ARTIFACT, &path).await {
            Ok(info) => {
                tracing::info!(
                    job_id = job,
                    attempt,
                    epoch,
                    bytes = info.size,
                    "resume checkpoint stored"
                )
            }
            Err(e) => {
                tracing::warn!(job_id = job, attempt, epoch, error = %e, "resume checkpoint upload failed")
            }
        }
    }
}

#[async_trait::async_trait]
impl Executor for CnnExecutor {
    async fn run(&self, job: &LeasedJob, ctx: JobCtx) -> Result<JobOutput, JobError> {
        let kind = self.kind.name();
        let payload: serde_json::Value = if job.payload_json.trim().is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_str(&job.payload_json)
                .map_err(|e| JobError::permanent(format!("invalid {kind} payload: {e}")))?
        };
        let spec = CnnSpec::from_json(self.kind, &payload)
            .map_err(|e| JobError::permanent(e.to_string()))?;
        let dir = self
            .setup
            .work_dir
            .join(format!("job-{}-a{}", job.id, job.attempt));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| JobError::retryable(format!("cannot create {}: {e}", dir.display())))?;
        let _cleanup = JobDir {
            path: dir.clone(),
            keep: self.setup.keep_job_dirs,
        };
        let prepared = tokio::select! {
            r = self.prepare(job, spec, &ctx, &dir) => r?,
            _ = ctx.cancelled() => return Err(JobError::retryable("cancelled")),
        };
        let (trainer_job, dataset_hash) = prepared;
        let out = dir.join("out");
        let (checkpoints, announced) = watch::channel(None);
        let stop_uploads = CancellationToken::new();
        let mut uploader = tokio::spawn(upload_checkpoints(
            self.channel.clone(),
            ctx.worker().clone(),
            job.id,
            job.attempt,
            announced,
            stop_uploads.clone(),
        ));
        let ran = run_trainer(&self.setup.binary, &dir, &out, &ctx, checkpoints).await;
        if let Err(e) = ran {
            // The next attempt resumes from what this one stored: let the last upload finish
            // (not when cancelled: then the job is over, or the lease is gone and the upload
            // would be refused).
            let wait = !ctx.is_cancelled()
                && tokio::time::timeout(RESUME_UPLOAD_GRACE, &mut uploader)
                    .await
                    .is_ok();
            if !wait {
                uploader.abort();
            }
            return Err(e);
        }
        // Finished: no further resume checkpoint is worth uploading. One under way completes
        // (cutting it off could leave the coordinator half-way through storing it), so the
        // delete below cannot race it.
        stop_uploads.cancel();
        if tokio::time::timeout(RESUME_UPLOAD_GRACE, &mut uploader)
            .await
            .is_err()
        {
            uploader.abort();
        }

        let result_path = out.join(contract::RESULT);
        let text = tokio::fs::read(&result_path).await.map_err(|e| {
            JobError::retryable(format!(
                "trainer exited 0 but {} is unreadable: {e}",
                result_path.display()
            ))
        })?;
        match self.kind {
            CnnKind::LrFind => {
                let r: LrFindResult = serde_json::from_slice(&text)
                    .map_err(|e| JobError::retryable(format!("lr-find result unreadable: {e}")))?;
                let mut v = serde_json::to_value(&r).expect("results serialise");
                v["dataset"] = dataset_hash.into();
                Ok(JobOutput::json(&v))
            }
            CnnKind::Cnn => {
                let r: CnnResult = serde_json::from_slice(&text)
                    .map_err(|e| JobError::retryable(format!("cnn result unreadable: {e}")))?;
                let info = artifacts::upload(
                    self.channel.clone(),
                    ctx.worker(),
                    job.id,
                    job.attempt,
                    CHECKPOINT_ARTIFACT,
                    &out.join(&r.checkpoint),
                )
                .await
                .map_err(|e| JobError::retryable(format!("checkpoint upload: {e}")))?;
                if trainer_job.spec.checkpoint_every > 0 {
                    // The final checkpoint is stored; the resume one would only take space.
                    let dropped = artifacts::delete(
                        self.channel.clone(),
                        ctx.worker(),
                        job.id,
                        job.attempt,
                        RESUME_ARTIFACT,
                    )
                    .await;
                    if let Err(e) = dropped {
                        tracing::warn!(job_id = job.id, error = %e, "resume checkpoint not deleted");
                    }
                }
                let summary = serde_json::json!({
                    "dataset": dataset_hash,
                    "folds": trainer_job.spec.folds,
                    "fold": r.fold,
                    "arch": r.arch,
                    "image_size": r.image_size,
                    "device": r.device,
                    "steps": r.steps,
                    "epochs": r.epochs,
                    "valid_auc": r.epochs.last().and_then(|e| e.valid_auc),
                    "init": r.init,
                    "resumed_from": r.resumed_from,
                    "checkpoint": {
                        "artifact": info.name,
                        "bytes": info.size,
                        "blake3": info.blake3,
                    },
                });
                Ok(JobOutput {
                    result_json: summary.to_string(),
                    predictions: Some(Predictions {
                        oof_rows: r.oof_rows,
                        oof: r.oof,
                        test: r.test,
                    }),
                })
            }
        }
    }
}

/// Removes an attempt's folder when the attempt ends, however it ends.
struct JobDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for JobDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// What the trainer's event stream said so far.
#[derive(Default)]
struct Seen {
    progress: Progress,
    error: Option<(String, bool)>,
}

/// Runs the trainer on `dir/job.json` until it exits or the job is cancelled.
/// Resume checkpoints it announces go to `checkpoints`.
async fn run_trainer(
    binary: &Path,
    dir: &Path,
    out: &Path,
    ctx: &JobCtx,
    checkpoints: CheckpointTx,
) -> Result<(), JobError> {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg("--job")
        .arg(dir.join(contract::JOB_FILE))
        .arg("--out")
        .arg(out)
        .env("CUDA_VISIBLE_DEVICES", ctx.cuda_visible_devices())
        .env("TORCH_CPP_LOG_LEVEL", "ERROR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| JobError::retryable(format!("could not start {}: {e}", binary.display())))?;
    let mut group = ProcessGroup::of(&child);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stdout = child.stdout.take().map(|r| {
        let (seen, ctx) = (seen.clone(), ctx.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(event) = serde_json::from_str::<TrainerEvent>(&line) else {
                    tracing::debug!(%line, "trainer said");
                    continue;
                };
                on_event(&seen, &ctx, &checkpoints, event);
            }
        })
    });
    let stderr = Arc::new(Mutex::new(Tail::default()));
    let err_reader = child
        .stderr
        .take()
        .map(|r| tokio::spawn(read_tail(r, stderr.clone())));
    let status = tokio::select! {
        biased;
        s = child.wait() => Some(s),
        _ = ctx.cancelled() => None,
    };
    group.kill();
    let Some(status) = status else {
        let _ = child.wait().await;
        return Err(JobError::retryable("cancelled"));
    };
    for reader in [stdout, err_reader].into_iter().flatten() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), reader).await;
    }
    let status =
        status.map_err(|e| JobError::retryable(format!("could not wait for the trainer: {e}")))?;
    if status.success() {
        return Ok(());
    }
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let tail = stderr.lock().unwrap_or_else(|e| e.into_inner()).text();
    let last_lines: Vec<&str> = tail.trim_end().lines().rev().take(5).collect();
    let stderr_hint = last_lines.into_iter().rev().collect::<Vec<_>>().join("\n");
    let where_ = format!(
        "epoch {}/{}, step {}/{}",
        seen.progress.epoch, seen.progress.epochs, seen.progress.step, seen.progress.steps
    );
    Err(match (status.code(), status.signal()) {
        (Some(contract::EXIT_PERMANENT), _) => JobError::permanent(
            seen.error
                .as_ref()
                .map(|e| e.0.clone())
                .unwrap_or(stderr_hint),
        ),
        (Some(contract::EXIT_OUT_OF_MEMORY), _) => JobError::permanent(format!(
            "out of GPU memory at {where_}: {}",
            seen.error.as_ref().map(|e| e.0.as_str()).unwrap_or(&stderr_hint)
        )),
        (Some(code), _) => JobError::retryable(format!(
            "trainer exited with code {code} at {where_}: {}",
            seen.error.as_ref().map(|e| e.0.as_str()).unwrap_or(&stderr_hint)
        )),
        (None, Some(sig)) => JobError::retryable(format!(
            "trainer killed by signal {sig} at {where_} (out of host memory or a libtorch abort?): {stderr_hint}"
        )),
        (None, None) => JobError::retryable(format!("trainer ended without a status: {stderr_hint}")),
    })
}

/// Turns one trainer event into the job's progress document.
fn on_event(seen: &Mutex<Seen>, ctx: &JobCtx, checkpoints: &CheckpointTx, event: TrainerEvent) {
    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
    match event {
        TrainerEvent::Start {
            steps_per_epoch,
            epochs,
            resumed_from,
            ..
        } => {
            s.progress.epochs = epochs;
            s.progress.steps = steps_per_epoch * u64::from(epochs);
            s.progress.resumed_from = resumed_from;
            // Resumed: the epochs before the checkpoint are done.
            s.progress.epoch = resumed_from.unwrap_or(0);
            s.progress.step = steps_per_epoch * u64::from(resumed_from.unwrap_or(0));
        }
        TrainerEvent::Progress(p) => {
            let (auc, resumed_from) = (s.progress.valid_auc, s.progress.resumed_from);
            s.progress = p;
            s.progress.valid_auc = s.progress.valid_auc.or(auc);
            s.progress.resumed_from = resumed_from;
        }
        TrainerEvent::Epoch(m) => {
            s.progress.epoch = m.epoch;
            s.progress.valid_auc = m.valid_auc;
            s.progress.loss = m.train_loss;
            s.progress.lr = m.lr;
        }
        TrainerEvent::Error { message, permanent } => {
            s.error = Some((message, permanent));
            return;
        }
        TrainerEvent::Checkpoint { path, epoch } => {
            checkpoints.send_replace(Some((path, epoch)));
            return;
        }
        TrainerEvent::Done { .. } => {}
    }
    ctx.set_progress(serde_json::to_string(&s.progress).expect("progress serialises"));
}
