//! Commands that change jobs: `stackhive cancel` and `stackhive retry`. They report exactly
//! what the coordinator did, per job, since "cancel" on a running job only asks its worker.

use serde_json::json;
use stackhive_proto::v1::{CancelRequest, CancelResponse, RetryRequest, RetryResponse};

use crate::args::{CancelArgs, RetryArgs};
use crate::client::Api;
use crate::output::{id_ranges, print_json};

pub async fn cancel(coordinator: &str, json: bool, args: &CancelArgs) -> anyhow::Result<()> {
    let api = Api::connect(coordinator).await?;
    let response = api
        .cancel(CancelRequest {
            job_ids: args.ids.clone(),
            experiment: args.experiment.clone().unwrap_or_default(),
        })
        .await?;
    if json {
        print_json(&json!({
            "cancelled": response.cancelled,
            "stopping": response.stopping,
            "already_finished": response.already_finished,
        }));
    } else {
        out!("{}", cancel_report(&response));
    }
    Ok(())
}

pub async fn retry(coordinator: &str, json: bool, args: &RetryArgs) -> anyhow::Result<()> {
    let api = Api::connect(coordinator).await?;
    let response = api
        .retry(RetryRequest {
            job_ids: args.ids.clone(),
        })
        .await?;
    if json {
        print_json(&json!({ "requeued": response.requeued }));
    } else {
        out!("{}", retry_report(&args.ids, &response));
    }
    Ok(())
}

fn sorted(ids: &[i64]) -> Vec<i64> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}

pub fn cancel_report(r: &CancelResponse) -> String {
    let mut out = String::new();
    for (ids, what) in [
        (&r.cancelled, "cancelled"),
        (
            &r.stopping,
            "stopping (their workers were told to stop them)",
        ),
        (&r.already_finished, "already finished, left as they were"),
    ] {
        if !ids.is_empty() {
            out.push_str(&format!("{what}: {}\n", id_ranges(&sorted(ids))));
        }
    }
    if out.is_empty() {
        out.push_str("nothing to cancel\n");
    }
    out
}

/// Requeued jobs may include dependents the request did not name: the ones a failure took down.
pub fn retry_report(requested: &[i64], r: &RetryResponse) -> String {
    let mut out = String::new();
    if r.requeued.is_empty() {
        out.push_str("nothing requeued\n");
    } else {
        let n = r.requeued.len();
        let jobs = if n == 1 { "job" } else { "jobs" };
        out.push_str(&format!(
            "requeued {n} {jobs}: {}\n",
            id_ranges(&sorted(&r.requeued))
        ));
    }
    let left: Vec<i64> = sorted(requested)
        .into_iter()
        .filter(|id| !r.requeued.contains(id))
        .collect();
    if !left.is_empty() {
        out.push_str(&format!(
            "not requeued (not failed or cancelled): {}\n",
            id_ranges(&left)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_say_what_happened_to_each_job() {
        let r = CancelResponse {
            cancelled: vec![3, 1, 2],
            stopping: vec![4],
            already_finished: vec![],
        };
        assert_eq!(
            cancel_report(&r),
            "cancelled: 1..3\nstopping (their workers were told to stop them): 4\n"
        );
        assert_eq!(
            cancel_report(&CancelResponse::default()),
            "nothing to cancel\n"
        );
        let r = RetryResponse {
            requeued: vec![5, 6, 9],
        };
        assert_eq!(
            retry_report(&[5, 7], &r),
            "requeued 3 jobs: 5..6, 9\nnot requeued (not failed or cancelled): 7\n"
        );
    }
}
