//! Worker settings: the clap flags (each also read from a `STACKHIVE_*` environment variable)
//! and their validation into a [`Settings`] the daemon runs on. Nothing here talks to the
//! coordinator; bad values are refused before anything connects.

use std::time::Duration;

use stackhive_proto::connect::ClientOptions;
/// What one worker may advertise: the coordinator's limits.
pub use stackhive_proto::limits::{MAX_CPU_SLOTS as MAX_SLOTS, MAX_GPUS, MAX_GPU_MEM_MB};

use crate::executor::RunAs;
const MAX_LEASE_BATCH: u32 = 10_000;
const MAX_LEASE_WAIT_MS: u32 = 600_000;
const MAX_DRAIN_TIMEOUT_S: u64 = 7 * 24 * 3600;
const MAX_REPORT_BATCH: u32 = 100_000;
const MAX_TAG_LEN: usize = 128;
const MAX_NAME_LEN: usize = 255;

#[derive(clap::Args, Clone, Debug)]
pub struct WorkerConfig {
    /// Coordinator gRPC address; several coordinators of one cluster, comma-separated, are
    /// used one at a time, moving on when one is unreachable.
    #[arg(
        long,
        env = "STACKHIVE_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub coordinator: String,

    /// Name shown in worker listings (default: hostname-pid).
    #[arg(long, env = "STACKHIVE_NAME")]
    pub name: Option<String>,

    /// CPU slots offered to jobs (default: the number of cores).
    #[arg(long, env = "STACKHIVE_SLOTS")]
    pub slots: Option<u32>,

    /// GPUs offered to jobs; they are numbered 0..N as CUDA_VISIBLE_DEVICES sees them.
    #[arg(long, env = "STACKHIVE_GPUS", default_value_t = 0)]
    pub gpus: u32,

    /// Memory of each GPU in MiB: one value for all GPUs, or one per GPU (comma separated).
    /// When left out with --gpus, it is read from nvidia-smi.
    #[arg(long, env = "STACKHIVE_GPU_MEM_MB", value_delimiter = ',')]
    pub gpu_mem_mb: Vec<u64>,

    /// Tags this worker has; a job runs only on workers with all of its tags (comma separated).
    #[arg(long, env = "STACKHIVE_TAGS", value_delimiter = ',')]
    pub tags: Vec<String>,

    /// Most jobs asked for in one lease call.
    #[arg(long, env = "STACKHIVE_LEASE_BATCH", default_value_t = 256)]
    pub lease_batch: u32,

    /// How long one lease call waits for work (long poll), in milliseconds.
    #[arg(long, env = "STACKHIVE_LEASE_WAIT_MS", default_value_t = 10_000)]
    pub lease_wait_ms: u32,

    /// On shutdown, how long running jobs may take to finish before they are handed back.
    #[arg(long, env = "STACKHIVE_DRAIN_TIMEOUT_S", default_value_t = 30)]
    pub drain_timeout_s: u64,

    /// Most completions sent in one Complete call.
    #[arg(long, env = "STACKHIVE_REPORT_BATCH", default_value_t = 1000)]
    pub report_batch: u32,

    /// Where fetched datasets are kept, one folder per content hash, for every later job.
    #[arg(
        long,
        env = "STACKHIVE_DATASET_CACHE",
        default_value = "stackhive-cache/datasets"
    )]
    pub dataset_cache: std::path::PathBuf,

    /// Folders that may hold datasets as `<folder>/<hash>` (a shared file system); a dataset
    /// found there with the right content is read in place instead of fetched (comma separated).
    #[arg(long, env = "STACKHIVE_SHARED_DATA", value_delimiter = ',')]
    pub shared_data: Vec<std::path::PathBuf>,

    /// The `stackhive-trainer` binary that runs `cnn` and `lr-find` jobs (default: the one next
    /// to this program). Without one, the worker does not offer those kinds.
    #[arg(long, env = "STACKHIVE_TRAINER")]
    pub trainer: Option<std::path::PathBuf>,

    /// A folder per running `cnn` / `lr-find` attempt (job file, checkpoint before upload) and
    /// fetched initial weights.
    #[arg(
        long,
        env = "STACKHIVE_WORK_DIR",
        default_value = "stackhive-cache/jobs"
    )]
    pub work_dir: std::path::PathBuf,

    /// Preprocessed image caches (one per dataset and image size), shared by this machine's jobs.
    #[arg(
        long,
        env = "STACKHIVE_IMAGE_CACHE",
        default_value = "stackhive-cache/images"
    )]
    pub image_cache: std::path::PathBuf,

    /// The `stackhive-stacker` binary that runs `stack` jobs (default: the one next to this
    /// program). Without one, the worker does not offer that kind.
    #[arg(long, env = "STACKHIVE_STACKER")]
    pub stacker: Option<std::path::PathBuf>,

    /// Where fetched feature sets (level-2 matrices) are kept, for every later job of the set.
    #[arg(
        long,
        env = "STACKHIVE_FEATURE_CACHE",
        default_value = "stackhive-cache/features"
    )]
    pub feature_cache: std::path::PathBuf,

    /// Keep each attempt's folder under --work-dir after it ends (for debugging).
    #[arg(long, env = "STACKHIVE_KEEP_JOB_DIRS")]
    pub keep_job_dirs: bool,

    /// Job kinds this worker does not offer, e.g. `shell` on a machine that must never run
    /// arbitrary commands (comma separated).
    #[arg(long, env = "STACKHIVE_DISABLE_KINDS", value_delimiter = ',')]
    pub disable_kinds: Vec<String>,

    /// Run `shell` job commands as this unprivileged user (for a worker that runs as root).
    #[arg(long, env = "STACKHIVE_RUN_AS")]
    pub run_as: Option<String>,

    /// Serve Prometheus metrics (slots and GPUs busy, jobs and their durations by kind) on
    /// this address, e.g. 0.0.0.0:9465.
    #[arg(long, env = "STACKHIVE_WORKER_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub client: ClientOptions,
}

impl WorkerConfig {
    /// The defaults the CLI would give, pointed at `coordinator`; tests start workers with it.
    pub fn new(coordinator: impl Into<String>) -> Self {
        Self {
            coordinator: coordinator.into(),
            name: None,
            slots: None,
            gpus: 0,
            gpu_mem_mb: Vec::new(),
            tags: Vec::new(),
            lease_batch: 256,
            lease_wait_ms: 10_000,
            drain_timeout_s: 30,
            report_batch: 1000,
            dataset_cache: "stackhive-cache/datasets".into(),
            shared_data: Vec::new(),
            trainer: None,
            work_dir: "stackhive-cache/jobs".into(),
            image_cache: "stackhive-cache/images".into(),
            keep_job_dirs: false,
            stacker: None,
            feature_cache: "stackhive-cache/features".into(),
            disable_kinds: Vec::new(),
            run_as: None,
            metrics_addr: None,
            client: ClientOptions::default(),
        }
    }

    /// Checks every value and fills in the machine-dependent defaults.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let coordinator = self.coordinator.trim();
        let addresses = stackhive_proto::connect::addresses(coordinator);
        let bad = addresses.iter().find(|a| {
            let scheme_ok = a.starts_with("http://") || a.starts_with("https://");
            !scheme_ok || a.parse::<tonic::codegen::http::Uri>().is_err()
        });
        if addresses.is_empty() || bad.is_some() {
            return Err(invalid(
                "coordinator",
                "one or more comma-separated http:// or https:// URLs",
                format!("{:?}", bad.unwrap_or(&coordinator)),
            ));
        }
        self.client
            .endpoints(coordinator)
            .map_err(|e| invalid("coordinator", "usable connection settings", e.to_string()))?;
        self.client
            .credentials()
            .map_err(|e| invalid("token", "a bearer token", e.to_string()))?;
        let run_as = self
            .run_as
            .as_deref()
            .map(RunAs::lookup)
            .transpose()
            .map_err(|e| invalid("run-as", "an unprivileged user of this machine", e))?;

        let name = match &self.name {
            Some(n) => {
                let n = n.trim();
                if n.is_empty() || n.len() > MAX_NAME_LEN {
                    let expected = format!("a name of 1 to {MAX_NAME_LEN} characters");
                    return Err(invalid("name", &expected, format!("{n:?}")));
                }
                n.to_string()
            }
            None => format!("{}-{}", local_hostname(), std::process::id()),
        };

        let slots = self.slots.unwrap_or_else(|| num_cpus::get() as u32);
        check_range("slots", u64::from(slots), 1, u64::from(MAX_SLOTS))?;
        check_range("gpus", u64::from(self.gpus), 0, u64::from(MAX_GPUS))?;

        let gpu_mem_mb = self.gpu_mem(self.gpus)?;

        let mut tags: Vec<String> = Vec::new();
        for tag in &self.tags {
            let tag = tag.trim();
            if tag.is_empty() {
                continue;
            }
            if tag.len() > MAX_TAG_LEN || tag.chars().any(|c| c.is_whitespace() || c == ',') {
                let expected = format!("tags of at most {MAX_TAG_LEN} characters without spaces");
                return Err(invalid("tags", &expected, format!("{tag:?}")));
            }
            if !tags.iter().any(|t| t == tag) {
                tags.push(tag.to_string());
            }
        }

        check_range(
            "lease-batch",
            u64::from(self.lease_batch),
            1,
            MAX_LEASE_BATCH.into(),
        )?;
        check_range(
            "lease-wait-ms",
            self.lease_wait_ms.into(),
            0,
            MAX_LEASE_WAIT_MS.into(),
        )?;
        check_range(
            "drain-timeout-s",
            self.drain_timeout_s,
            0,
            MAX_DRAIN_TIMEOUT_S,
        )?;
        check_range(
            "report-batch",
            self.report_batch.into(),
            1,
            MAX_REPORT_BATCH.into(),
        )?;

        Ok(Settings {
            coordinator: coordinator.to_string(),
            name,
            hostname: local_hostname(),
            slots,
            gpu_mem_mb,
            tags,
            lease_batch: self.lease_batch,
            lease_wait: Duration::from_millis(self.lease_wait_ms.into()),
            drain_timeout: Duration::from_secs(self.drain_timeout_s),
            report_batch: self.report_batch as usize,
            run_as,
            client: self.client.clone(),
        })
    }

    /// One memory figure per GPU: a single value applies to all of them.
    fn gpu_mem(&self, gpus: u32) -> Result<Vec<u64>, ConfigError> {
        let given = &self.gpu_mem_mb;
        if gpus == 0 {
            if !given.is_empty() {
                return Err(invalid(
                    "gpu-mem-mb",
                    "no value without --gpus",
                    format!("{} value(s)", given.len()),
                ));
            }
            return Ok(Vec::new());
        }
        let mems = match given.len() {
            0 => detect_gpu_mem_mb(gpus as usize).ok_or_else(|| {
                invalid(
                    "gpu-mem-mb",
                    &format!("one value, or {gpus} (one per GPU), since nvidia-smi could not say"),
                    "none".to_string(),
                )
            })?,
            1 => vec![given[0]; gpus as usize],
            n if n == gpus as usize => given.clone(),
            n => {
                return Err(invalid(
                    "gpu-mem-mb",
                    &format!("one value or {gpus} (one per GPU)"),
                    format!("{n} values"),
                ))
            }
        };
        for &m in &mems {
            check_range("gpu-mem-mb", m, 1, MAX_GPU_MEM_MB)?;
        }
        Ok(mems)
    }
}

/// Validated settings, with every default resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    pub coordinator: String,
    pub name: String,
    pub hostname: String,
    pub slots: u32,
    /// One entry per GPU, in index order.
    pub gpu_mem_mb: Vec<u64>,
    pub tags: Vec<String>,
    pub lease_batch: u32,
    pub lease_wait: Duration,
    pub drain_timeout: Duration,
    pub report_batch: usize,
    pub run_as: Option<RunAs>,
    pub client: ClientOptions,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--{flag}: expected {expected}, found {found}")]
    Invalid {
        flag: &'static str,
        expected: String,
        found: String,
    },
}

fn invalid(flag: &'static str, expected: &str, found: String) -> ConfigError {
    ConfigError::Invalid {
        flag,
        expected: expected.to_string(),
        found,
    }
}

fn check_range(flag: &'static str, v: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if v < min || v > max {
        return Err(invalid(
            flag,
            &format!("a value between {min} and {max}"),
            v.to_string(),
        ));
    }
    Ok(())
}

fn local_hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Total memory of the first `gpus` GPUs as nvidia-smi reports it; `None` when it is not
/// installed or lists fewer GPUs.
fn detect_gpu_mem_mb(gpus: usize) -> Option<Vec<u64>> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=memory.total", "--format=csv,noheader,nounits"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mems: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    (mems.len() >= gpus).then(|| mems[..gpus].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerConfig,
    }

    fn parse(args: &[&str]) -> WorkerConfig {
        let mut argv = vec!["stackhive-worker"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("flags parse").worker
    }

    fn error(cfg: &WorkerConfig) -> String {
        cfg.validate()
            .expect_err("config must be refused")
            .to_string()
    }

    #[test]
    fn defaults_resolve_to_the_machine() {
        let s = parse(&[]).validate().expect("defaults are valid");
        assert_eq!(s.coordinator, "http://127.0.0.1:50051");
        assert_eq!(s.slots as usize, num_cpus::get());
        assert!(s.gpu_mem_mb.is_empty());
        assert!(s.name.ends_with(&format!("-{}", std::process::id())));
        assert_eq!(s.lease_batch, 256);
        assert_eq!(s.lease_wait, Duration::from_secs(10));
        assert_eq!(s.drain_timeout, Duration::from_secs(30));
        assert_eq!(s.report_batch, 1000);
    }

    #[test]
    fn lists_and_gpu_memory_are_parsed() {
        let s = parse(&[
            "--gpus",
            "2",
            "--gpu-mem-mb",
            "16000",
            "--tags",
            "gpu, fast,,gpu",
            "--slots",
            "8",
        ])
        .validate()
        .expect("valid");
        assert_eq!(s.gpu_mem_mb, vec![16000, 16000]);
        assert_eq!(s.tags, vec!["gpu".to_string(), "fast".to_string()]);
        assert_eq!(s.slots, 8);

        let s = parse(&["--gpus", "2", "--gpu-mem-mb", "16000,24000"])
            .validate()
            .expect("valid");
        assert_eq!(s.gpu_mem_mb, vec![16000, 24000]);
    }

    #[test]
    fn absurd_values_are_refused_with_what_was_expected() {
        let mut c = WorkerConfig::new("http://127.0.0.1:50051");
        c.slots = Some(0);
        assert_eq!(
            error(&c),
            "--slots: expected a value between 1 and 4096, found 0"
        );
        c.slots = Some(100_001);
        assert!(error(&c).contains("found 100001"));

        let mut c = WorkerConfig::new("http://127.0.0.1:50051");
        c.gpus = 65;
        assert_eq!(
            error(&c),
            "--gpus: expected a value between 0 and 64, found 65"
        );

        let mut c = WorkerConfig::new("http://127.0.0.1:50051");
        c.gpus = 2;
        c.gpu_mem_mb = vec![1, 2, 3];
        assert_eq!(
            error(&c),
            "--gpu-mem-mb: expected one value or 2 (one per GPU), found 3 values"
        );
        c.gpu_mem_mb = vec![0];
        assert!(error(&c).starts_with("--gpu-mem-mb: expected a value between 1"));

        let mut c = WorkerConfig::new("http://127.0.0.1:50051");
        c.gpu_mem_mb = vec![8000];
        assert!(error(&c).contains("no value without --gpus"));

        let c = WorkerConfig::new("127.0.0.1:50051");
        assert_eq!(
            error(&c),
            "--coordinator: expected one or more comma-separated http:// or https:// URLs, \
             found \"127.0.0.1:50051\""
        );
        // A list is checked address by address.
        let c = WorkerConfig::new("http://a:50051,b:50051");
        assert!(error(&c).ends_with("found \"b:50051\""), "{}", error(&c));
        WorkerConfig::new("http://a:50051, https://b:50051")
            .validate()
            .expect("two coordinators");

        let mut c = WorkerConfig::new("http://127.0.0.1:50051");
        c.lease_batch = 0;
        assert!(error(&c).starts_with("--lease-batch: expected a value between 1"));
        let mut c = WorkerConfig::new("http://127.0.0.1:50051");
        c.report_batch = 0;
        assert!(error(&c).starts_with("--report-batch"));
        let mut c = WorkerConfig::new("http://127.0.0.1:50051");
        c.tags = vec!["has space".into()];
        assert!(error(&c).starts_with("--tags: expected tags"));
        let mut c = WorkerConfig::new("http://127.0.0.1:50051");
        c.name = Some("  ".into());
        assert!(error(&c).starts_with("--name: expected a name"));
    }

    #[test]
    fn flags_also_come_from_the_environment() {
        // Parsing reads the process environment, so the variable names are unique to this test.
        let cmd = <Cli as clap::CommandFactory>::command();
        let slots = cmd
            .get_arguments()
            .find(|a| a.get_id() == "slots")
            .expect("slots flag");
        assert_eq!(
            slots.get_env().and_then(|e| e.to_str()),
            Some("STACKHIVE_SLOTS")
        );
        for a in cmd.get_arguments() {
            let env = a.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            assert!(
                env.starts_with("STACKHIVE_"),
                "--{} has no STACKHIVE_ variable",
                a.get_id()
            );
        }
    }
}
