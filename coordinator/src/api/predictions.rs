//! `JobService.StreamPredictions` (issue 12, item 6): stored predictions streamed one job per
//! message, read from the store `store::predictions::CHUNK` jobs per statement, so a client (an
//! ensemble) reads thousands of ISIC-sized vectors in seconds without any one message or
//! coordinator buffer holding them all.
//!
//! Must not: skip a listed job silently (its absence ends the stream with an error naming it),
//! or keep reading after the client has gone.

use std::sync::Arc;

use stackhive_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert;
use crate::domain::model::{JobFilter, JobId, JobState};
use crate::domain::validate;
use crate::error::Error;
use crate::store::Store;

/// Jobs read per round.
const BATCH: usize = 256;

pub type Stream = ReceiverStream<Result<pb::JobPredictions, Status>>;

/// Checks the request and starts streaming.
pub fn stream(store: Arc<dyn Store>, r: pb::StreamPredictionsRequest) -> Result<Stream, Error> {
    match (r.job_ids.is_empty(), r.experiment.is_empty()) {
        (true, true) => {
            return Err(Error::invalid(
                "expected job ids or an experiment, found neither",
            ))
        }
        (false, false) => {
            return Err(Error::invalid(
                "expected job ids or an experiment, found both",
            ))
        }
        _ => {}
    }
    if r.job_ids.len() > validate::MAX_PREDICTION_IDS {
        return Err(Error::invalid(format!(
            "expected at most {} job ids, found {}; ask for an experiment instead",
            validate::MAX_PREDICTION_IDS,
            r.job_ids.len()
        )));
    }
    validate::check_text("experiment", &r.experiment).map_err(Error::invalid)?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        if let Err(e) = send_all(&store, r, &tx).await {
            let _ = tx.send(Err(e.into())).await;
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// Sends every batch; `Ok` also when the client went away.
async fn send_all(
    store: &Arc<dyn Store>,
    r: pb::StreamPredictionsRequest,
    tx: &mpsc::Sender<Result<pb::JobPredictions, Status>>,
) -> Result<(), Error> {
    let listed = !r.job_ids.is_empty();
    let mut ids = r.job_ids;
    ids.sort_unstable();
    ids.dedup();
    let mut filter = JobFilter {
        experiment: Some(r.experiment),
        states: vec![JobState::Succeeded],
        limit: BATCH as u32,
        ..Default::default()
    };
    let mut next = 0;
    loop {
        let batch: Vec<JobId> = if listed {
            let b = ids[next..(next + BATCH).min(ids.len())].to_vec();
            next += b.len();
            b
        } else {
            let page = store.list_jobs(&filter).await?;
            filter.after_id = page.last().map(|j| j.id);
            page.into_iter()
                .filter(|j| j.prediction_rows_oof + j.prediction_rows_test > 0)
                .map(|j| j.id)
                .collect()
        };
        if batch.is_empty() && (listed || filter.after_id.is_none()) {
            return Ok(());
        }
        let found = store.get_predictions_many(&batch).await?;
        if listed && found.len() != batch.len() {
            let missing = batch
                .iter()
                .find(|id| !found.iter().any(|(f, _)| f == *id))
                .expect("fewer found than asked");
            return Err(Error::FailedPrecondition(format!(
                "job {missing} has no stored predictions"
            )));
        }
        for (job_id, p) in found {
            let msg = pb::JobPredictions {
                job_id,
                predictions: Some(convert::predictions(p)),
            };
            if tx.send(Ok(msg)).await.is_err() {
                return Ok(());
            }
        }
    }
}
