//! `ArtifactService`: a worker uploads what its attempt produced (fenced by `(job_id, attempt)`:
//! only the running attempt may upload or delete), users and later jobs list and fetch it.

use std::sync::Arc;

use stackhive_proto::v1 as pb;
use stackhive_proto::v1::artifact_service_server::ArtifactService;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::artifacts::{ArtifactFiles, ArtifactMeta};
use crate::datasets::SERVE_CHUNK;
use crate::error::Error;
use crate::model::{now_ms, JobState};
use crate::store::Store;

pub struct ArtifactApi {
    store: Arc<dyn Store>,
    files: ArtifactFiles,
}

impl ArtifactApi {
    pub fn new(store: Arc<dyn Store>, files: ArtifactFiles) -> Self {
        Self { store, files }
    }
}

impl ArtifactApi {
    /// The fence: only the running attempt of a job may change its artifacts.
    async fn check_running(&self, job_id: i64, attempt: u32, name: &str) -> Result<(), Error> {
        let job = self.store.get_job(job_id).await?;
        if job.state != JobState::Running || job.attempt != attempt {
            return Err(Error::Stale(format!(
                "artifact {name} for job {job_id} attempt {attempt}, but the job is {} at attempt {}",
                job.state.as_str(),
                job.attempt
            )));
        }
        Ok(())
    }
}

fn info(m: &ArtifactMeta) -> pb::ArtifactInfo {
    pb::ArtifactInfo {
        job_id: m.job_id,
        attempt: m.attempt,
        name: m.name.clone(),
        size: m.size,
        blake3: m.blake3.clone(),
        created_at_ms: m.created_at_ms,
        storage_path: m.path.display().to_string(),
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
        self.check_running(h.job_id, h.attempt, &h.name).await?;
        let mut incoming = self
            .files
            .start(h.job_id, h.attempt, &h.name, h.size, &h.blake3)
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
        let meta = incoming.finish(now_ms()).await?;
        tracing::info!(job_id = meta.job_id, attempt = meta.attempt, name = %meta.name, bytes = meta.size, "artifact stored");
        Ok(Response::new(info(&meta)))
    }

    async fn list_artifacts(
        &self,
        req: Request<pb::ListArtifactsRequest>,
    ) -> Result<Response<pb::ListArtifactsResponse>, Status> {
        let id = req.into_inner().job_id;
        // A job that does not exist is NotFound, not an empty list.
        self.store.get_job(id).await?;
        let all = self.files.list(id).await?;
        Ok(Response::new(pb::ListArtifactsResponse {
            artifacts: all.iter().map(info).collect(),
        }))
    }

    async fn delete_artifact(
        &self,
        req: Request<pb::DeleteArtifactRequest>,
    ) -> Result<Response<pb::DeleteArtifactResponse>, Status> {
        let r = req.into_inner();
        self.check_running(r.job_id, r.attempt, &r.name).await?;
        let deleted = self.files.remove(r.job_id, &r.name).await?;
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
        let meta = self.files.get(r.job_id, &r.name).await?;
        let mut f = tokio::fs::File::open(&meta.path)
            .await
            .map_err(|e| Error::Config(format!("cannot open {}: {e}", meta.path.display())))?;
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            let mut offset = 0u64;
            loop {
                let mut buf = vec![0u8; SERVE_CHUNK];
                let n = match f.read(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => {
                        let msg = format!("cannot read artifact {}: {e}", meta.name);
                        let _ = tx.send(Err(Status::internal(msg))).await;
                        return;
                    }
                };
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                let chunk = pb::FileChunk {
                    path: meta.name.clone(),
                    offset,
                    data: buf,
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
                offset += n as u64;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
