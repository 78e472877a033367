//! `stackhive submit`: builds the batch (flags or job file), splits very large batches into
//! requests the coordinator accepts, sends them and prints the ids. Splitting never separates a
//! job from a dependency in the same batch: such a batch goes as one request, so it stays
//! atomic.

use serde_json::json;
use stackhive_proto::v1::{JobSpec, SubmitRequest};

use crate::args::SubmitArgs;
use crate::client::Api;
use crate::output::{id_ranges, print_json};
use crate::{jobfile, spec};

/// Most jobs sent in one request when a batch is split.
pub const CHUNK_JOBS: usize = 5_000;

/// What the coordinator stored (or had stored under the same key before).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Submitted {
    pub job_ids: Vec<i64>,
    /// True when every request was a repeat of one already stored.
    pub deduplicated: bool,
}

pub async fn run(coordinator: &str, json: bool, args: &SubmitArgs) -> anyhow::Result<()> {
    let specs = match &args.file {
        Some(path) => jobfile::load(path, args.experiment.as_deref())?,
        None => spec::specs_from_flags(args)?,
    };
    let key = args
        .idempotency_key
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let api = Api::connect(coordinator).await?;
    let submitted = submit(&api, specs, &key).await?;
    if json {
        print_json(&json!({
            "job_ids": submitted.job_ids,
            "deduplicated": submitted.deduplicated,
            "idempotency_key": key,
        }));
    } else {
        outln!("{}", summary(&submitted, &key));
    }
    Ok(())
}

/// Sends a batch, split as [`plan`] decides. A failure after some chunks were stored says so,
/// and how to finish: the derived keys make a re-run with the same key skip what is stored.
pub async fn submit(api: &Api, specs: Vec<JobSpec>, key: &str) -> anyhow::Result<Submitted> {
    let requests = plan(specs, key);
    let chunks = requests.len();
    let mut out = Submitted {
        job_ids: Vec::new(),
        deduplicated: true,
    };
    for (n, request) in requests.into_iter().enumerate() {
        let response = match api.submit(request).await {
            Ok(response) => response,
            // Nothing was stored yet: the coordinator's message is the whole story.
            Err(e) if n == 0 => return Err(e.into()),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "request {} of {chunks} failed after jobs {} were stored; submit again with \
                     --idempotency-key {key} to add only the rest",
                    n + 1,
                    id_ranges(&out.job_ids)
                )))
            }
        };
        out.deduplicated &= response.deduplicated;
        out.job_ids.extend(response.job_ids);
    }
    Ok(out)
}

/// One request, or chunks of [`CHUNK_JOBS`] with keys `{key}-{n}` when no job depends on a
/// job of another chunk; `depends_on_batch` is rebased to each chunk.
pub fn plan(specs: Vec<JobSpec>, key: &str) -> Vec<SubmitRequest> {
    let crosses = specs.iter().enumerate().any(|(i, s)| {
        s.depends_on_batch
            .iter()
            .any(|&d| d as usize / CHUNK_JOBS != i / CHUNK_JOBS)
    });
    if specs.len() <= CHUNK_JOBS || crosses {
        return vec![SubmitRequest {
            idempotency_key: key.to_string(),
            jobs: specs,
        }];
    }
    let mut requests = Vec::new();
    let mut rest = specs.into_iter().peekable();
    while rest.peek().is_some() {
        let n = requests.len();
        let offset = (n * CHUNK_JOBS) as u32;
        let jobs = rest
            .by_ref()
            .take(CHUNK_JOBS)
            .map(|mut s| {
                s.depends_on_batch.iter_mut().for_each(|d| *d -= offset);
                s
            })
            .collect();
        requests.push(SubmitRequest {
            idempotency_key: format!("{key}-{n}"),
            jobs,
        });
    }
    requests
}

pub fn summary(s: &Submitted, key: &str) -> String {
    let jobs = if s.job_ids.len() == 1 { "job" } else { "jobs" };
    let ids = if s.job_ids.is_empty() {
        "none".to_string()
    } else {
        id_ranges(&s.job_ids)
    };
    if s.deduplicated {
        format!(
            "already submitted with idempotency key {key}, nothing new stored: {} {jobs}: {ids}",
            s.job_ids.len()
        )
    } else {
        format!("submitted {} {jobs}: {ids}", s.job_ids.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop(deps: &[u32]) -> JobSpec {
        JobSpec {
            kind: "noop".into(),
            depends_on_batch: deps.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn small_batches_go_in_one_request_under_the_given_key() {
        let requests = plan(vec![noop(&[]); 3], "k");
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].idempotency_key, "k");
        assert_eq!(requests[0].jobs.len(), 3);
    }

    #[test]
    fn large_independent_batches_split_with_derived_keys_and_rebased_dependencies() {
        let mut specs = vec![noop(&[]); 12_001];
        specs[5_001] = noop(&[5_000]);
        specs[12_000] = noop(&[10_000, 10_001]);
        let requests = plan(specs, "k");
        let sizes: Vec<usize> = requests.iter().map(|r| r.jobs.len()).collect();
        assert_eq!(sizes, [5_000, 5_000, 2_001]);
        let keys: Vec<&str> = requests
            .iter()
            .map(|r| r.idempotency_key.as_str())
            .collect();
        assert_eq!(keys, ["k-0", "k-1", "k-2"]);
        assert_eq!(requests[1].jobs[1].depends_on_batch, [0]);
        assert_eq!(requests[2].jobs[2_000].depends_on_batch, [0, 1]);
    }

    #[test]
    fn a_dependency_across_chunks_keeps_the_batch_whole() {
        let mut specs = vec![noop(&[]); 6_000];
        specs[5_999] = noop(&[0]);
        let requests = plan(specs, "k");
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].idempotency_key, "k");
        assert_eq!(requests[0].jobs[5_999].depends_on_batch, [0]);
    }

    #[test]
    fn the_summary_reads_as_a_sentence() {
        let s = Submitted {
            job_ids: vec![1, 2, 3],
            deduplicated: false,
        };
        assert_eq!(summary(&s, "k"), "submitted 3 jobs: 1..3");
        let s = Submitted {
            job_ids: vec![9],
            deduplicated: true,
        };
        assert_eq!(
            summary(&s, "k"),
            "already submitted with idempotency key k, nothing new stored: 1 job: 9"
        );
    }
}
