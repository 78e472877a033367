//! `ArtifactService`: a worker uploads what its attempt produced (it proves who it is with its
//! key, and the store fences by `(job_id, attempt, worker)`: only the worker holding the running
//! attempt may upload or delete), users and later jobs list and fetch it. The bytes live in the
//! store, so any coordinator of the cluster serves any artifact.

use std::sync::Arc;

use stackhive_proto::v1 as pb;
use stackhive_proto::v1::artifact_service_server::ArtifactService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::workers::WorkerKeys;
use crate::domain::model::ArtifactRecord;
use crate::error::Error;
use crate::services::artifacts::{self, Incoming};
use crate::store::{check_artifact_fence, Store};

/// Chunks read from the store per query while serving an artifact.
const CHUNKS_PER_READ: u32 = 4;

pub struct ArtifactApi {
    store: Arc<dyn Store>,
    keys: Arc<WorkerKeys>,
}

impl ArtifactApi {
    pub fn new(store: Arc<dyn Store>, keys: Arc<WorkerKeys>) -> Self {
        Self { store, keys }
    }

    /// The worker's identity and the fence, checked early so a stale or forged upload is
    /// refused before its bytes are sent; the store checks the fence again when it names the
    /// upload.
    async fn check_holder(
        &self,
        job_id: i64,
        attempt: u32,
        worker: (&str, &str),
        name: &str,
    ) -> Result<(), Error> {
        self.keys.verify(worker.0, worker.1).await?;
        let job = self.store.get_job(job_id).await?;
        let found = (job.state.code() as i64, job.attempt as i64, job.worker_id);
        check_artifact_fence(job_id, attempt, worker.0, name, Some(found))
    }
}

fn info(m: &ArtifactRecord) -> pb::ArtifactInfo {
    pb::ArtifactInfo {
        job_id: m.job_id,
        attempt: m.attempt,
        name: m.name.clone(),
        size: m.size,
        blake3: m.blake3.clone(),
        created_at_ms: m.created_at,
    }
}

#[tonic::async_trait]
impl ArtifactService for ArtifactApi {
    async fn upload_artifact(
        &self,
        req: Request<Streaming<pb::UploadArtifactRequest>>,
    ) -> Result<Response<pb::ArtifactInfo>, Status> {
        use pb::upload_artifact_request::Item;
        let mut stream = req.into_inner();
        let h = match stream.message().await?.and_then(|m| m.item) {
            Some(Item::Header(h)) => h,
            Some(Item::Chunk(_)) => {
                return Err(Error::invalid(
                    "upload must start with an artifact header, found a chunk",
                )
                .into())
            }
            None => return Err(Error::invalid("upload holds no artifact header").into()),
        };
        self.check_holder(h.job_id, h.attempt, (&h.worker_id, &h.worker_key), &h.name)
            .await?;
        let mut incoming = Incoming::start(
            self.store.clone(),
            h.job_id,
            h.attempt,
            &h.name,
            h.size,
            &h.blake3,
        )
        .await?;
        while let Some(msg) = stream.message().await? {
            match msg.item {
                Some(Item::Chunk(c)) => incoming.write(&c).await?,
                Some(Item::Header(_)) => {
                    return Err(Error::invalid("upload holds a second artifact header").into())
                }
                None => {}
            }
        }
        let meta = incoming.finish(&h.worker_id).await?;
        tracing::info!(job_id = meta.job_id, attempt = meta.attempt, name = %meta.name, bytes = meta.size, "artifact stored");
        Ok(Response::new(info(&meta)))
    }

    async fn list_artifacts(
        &self,
        req: Request<pb::ListArtifactsRequest>,
    ) -> Result<Response<pb::ListArtifactsResponse>, Status> {
        let id = req.into_inner().job_id;
        // A job that does not exist is NotFound, not an empty list.
        let all = self.store.list_artifacts(id).await?;
        Ok(Response::new(pb::ListArtifactsResponse {
            artifacts: all.iter().map(info).collect(),
        }))
    }

    async fn delete_artifact(
        &self,
        req: Request<pb::DeleteArtifactRequest>,
    ) -> Result<Response<pb::DeleteArtifactResponse>, Status> {
        let r = req.into_inner();
        artifacts::check_name(&r.name)?;
        self.keys.verify(&r.worker_id, &r.worker_key).await?;
        let deleted = self
            .store
            .delete_artifact(r.job_id, r.attempt, &r.worker_id, &r.name)
            .await?;
        if deleted {
            tracing::info!(job_id = r.job_id, attempt = r.attempt, name = %r.name, "artifact removed");
        }
        Ok(Response::new(pb::DeleteArtifactResponse { deleted }))
    }

    type FetchArtifactStream = ReceiverStream<Result<pb::FileChunk, Status>>;

    async fn fetch_artifact(
        &self,
        req: Request<pb::FetchArtifactRequest>,
    ) -> Result<Response<Self::FetchArtifactStream>, Status> {
        let r = req.into_inner();
        artifacts::check_name(&r.name)?;
        let meta = self.store.get_artifact(r.job_id, &r.name).await?;
        let store = self.store.clone();
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            if let Err(status) = serve(store, &meta, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Streams the artifact's chunks in byte order, checking that they are contiguous and complete:
/// an artifact replaced or deleted while it is being read ends the stream with an error, never
/// with a silently different file.
async fn serve(
    store: Arc<dyn Store>,
    meta: &ArtifactRecord,
    tx: &mpsc::Sender<Result<pb::FileChunk, Status>>,
) -> Result<(), Status> {
    let changed = || {
        Status::aborted(format!(
            "artifact {} of job {} was replaced or deleted while it was being fetched; fetch it again",
            meta.name, meta.job_id
        ))
    };
    let mut offset = 0u64;
    while offset < meta.size {
        let chunks = store
            .artifact_chunks(&meta.upload_id, offset, CHUNKS_PER_READ)
            .await?;
        if chunks.is_empty() {
            return Err(changed());
        }
        for (start, data) in chunks {
            if start != offset || offset + data.len() as u64 > meta.size {
                return Err(changed());
            }
            let n = data.len() as u64;
            let chunk = pb::FileChunk {
                path: meta.name.clone(),
                offset,
                data,
            };
            if tx.send(Ok(chunk)).await.is_err() {
                return Ok(());
            }
            offset += n;
        }
    }
    Ok(())
}
