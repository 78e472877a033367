//! The worker's side of artifacts: uploading a file its attempt produced (hashed first, so the
//! coordinator can verify it) and fetching another job's artifact into a local cache, verified
//! against the size and BLAKE3 the coordinator recorded. It must not decide what is uploaded:
//! executors do.

use std::path::{Path, PathBuf};

use stackhive_proto::connect::AuthChannel as Channel;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::artifact_service_client::ArtifactServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::Identity;

/// Bytes per upload message (well under the coordinator's message limit).
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("coordinator refused the artifact request: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("cannot access {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("artifact {name} of job {job} arrived with {found}, expected {expected}")]
    Corrupt {
        job: i64,
        name: String,
        expected: String,
        found: String,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Uploads `path` as artifact `name` of attempt `attempt` of job `job`, as worker `who` (the
/// worker holding the attempt). The file is opened once and hashed and sent through that one
/// handle, so a writer replacing it meanwhile (renaming a new version over it) cannot make the
/// bytes disagree with the hash.
pub async fn upload(
    channel: Channel,
    who: &Identity,
    job: i64,
    attempt: u32,
    name: &str,
    path: &Path,
) -> Result<pb::ArtifactInfo, ArtifactError> {
    let opened = std::fs::File::open(path).map_err(io(path))?;
    let (opened, blake3, size) = tokio::task::spawn_blocking(move || {
        use std::io::{Seek, SeekFrom};
        let mut f = opened;
        let mut h = blake3::Hasher::new();
        let size = std::io::copy(&mut f, &mut h)?;
        f.seek(SeekFrom::Start(0))?;
        Ok::<_, std::io::Error>((f, h.finalize().to_hex().to_string(), size))
    })
    .await
    .expect("hashing does not panic")
    .map_err(io(path))?;
    let mut file = tokio::fs::File::from_std(opened);
    let (worker_id, worker_key) = who.current();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let header = pb::UploadArtifactRequest {
        item: Some(pb::upload_artifact_request::Item::Header(
            pb::ArtifactHeader {
                job_id: job,
                attempt,
                name: name.to_string(),
                size,
                blake3,
                worker_id: worker_id.to_string(),
                worker_key: worker_key.to_string(),
            },
        )),
    };
    let send = async move {
        if tx.send(header).await.is_err() {
            return Ok(());
        }
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            let item = pb::upload_artifact_request::Item::Chunk(buf);
            if tx
                .send(pb::UploadArtifactRequest { item: Some(item) })
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    };
    let mut client = ArtifactServiceClient::new(channel);
    let call = client.upload_artifact(tokio_stream_from(rx));
    let (sent, answer): (std::io::Result<()>, _) = tokio::join!(send, call);
    sent.map_err(io(path))?;
    Ok(answer?.into_inner())
}

/// Removes artifact `name` of job `job`, as worker `who` running attempt `attempt`; false when
/// there was none.
pub async fn delete(
    channel: Channel,
    who: &Identity,
    job: i64,
    attempt: u32,
    name: &str,
) -> Result<bool, ArtifactError> {
    let (worker_id, worker_key) = who.current();
    let answer = ArtifactServiceClient::new(channel)
        .delete_artifact(pb::DeleteArtifactRequest {
            job_id: job,
            attempt,
            name: name.to_string(),
            worker_id: worker_id.to_string(),
            worker_key: worker_key.to_string(),
        })
        .await?;
    Ok(answer.into_inner().deleted)
}

fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

/// Makes artifact `name` of job `job` present under `cache_dir` and returns its path. The file
/// is named by its hash, so a re-uploaded artifact (a later attempt) is fetched again, and it is
/// renamed into place only once verified.
pub async fn fetch_cached(
    channel: Channel,
    job: i64,
    name: &str,
    cache_dir: &Path,
) -> Result<PathBuf, ArtifactError> {
    let mut client = ArtifactServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let listed = client
        .list_artifacts(pb::ListArtifactsRequest { job_id: job })
        .await?
        .into_inner();
    let Some(info) = listed.artifacts.into_iter().find(|a| a.name == name) else {
        return Err(tonic::Status::not_found(format!(
            "job {job} has no artifact {name:?}; expected a finished cnn job's checkpoint"
        ))
        .into());
    };
    let target = cache_dir.join(format!(
        "job-{job}-{}-{name}",
        &info.blake3[..16.min(info.blake3.len())]
    ));
    if target.exists() {
        return Ok(target);
    }
    tokio::fs::create_dir_all(cache_dir)
        .await
        .map_err(io(cache_dir))?;
    let tmp = cache_dir.join(format!(".fetch-{}", uuid::Uuid::new_v4().simple()));
    let result = async {
        let mut out = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
        let mut stream = client
            .fetch_artifact(pb::FetchArtifactRequest {
                job_id: job,
                name: name.to_string(),
            })
            .await?
            .into_inner();
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.message().await? {
            hasher.update(&chunk.data);
            size += chunk.data.len() as u64;
            out.write_all(&chunk.data).await.map_err(io(&tmp))?;
        }
        out.sync_all().await.map_err(io(&tmp))?;
        let found = hasher.finalize().to_hex().to_string();
        if size != info.size || found != info.blake3 {
            return Err(ArtifactError::Corrupt {
                job,
                name: name.to_string(),
                expected: format!("{} bytes, BLAKE3 {}", info.size, info.blake3),
                found: format!("{size} bytes, BLAKE3 {found}"),
            });
        }
        tokio::fs::rename(&tmp, &target).await.map_err(io(&target))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result.map(|()| target)
}
