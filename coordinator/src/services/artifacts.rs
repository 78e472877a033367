//! Receiving an artifact into the store: the name, size and hash announced by the upload's header
//! are checked first; the bytes are hashed as they arrive and written, 8 MiB per transaction, as
//! the 1 MiB chunks of a fresh upload; only when size and BLAKE3 match does `finish` name the
//! upload as the job's artifact (the store fences that by the running attempt and its worker). An
//! upload dropped before `finish` is discarded, and one whose coordinator died is purged by the
//! reaper, so a reader never sees half an artifact and a broken upload leaves nothing behind.

use std::sync::Arc;

use crate::domain::model::{ArtifactRecord, JobId};
use crate::error::{Error, Result};
use crate::store::Store;

/// Largest artifact accepted (a B7 checkpoint is ~260 MB, its resume state ~800 MB).
pub const MAX_ARTIFACT_BYTES: u64 = 16 << 30;

/// Bytes written to the store per transaction (as rows of `store::CHUNK_BYTES`): one commit,
/// so one log flush, per 8 MiB.
pub const WRITE_BYTES: usize = 8 << 20;

/// How long an uncommitted upload may sit untouched before the reaper removes it.
pub const STALE_UPLOAD_MS: i64 = 3_600_000;

/// Artifact names are plain file names, so a worker can cache them under that name.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "artifact name {name:?} is not valid, expected 1 to 128 letters, digits and _-. \
             (not starting with a dot)"
        )))
    }
}

/// An upload in progress; dropped without `finish`, its chunks are removed.
pub struct Incoming {
    store: Arc<dyn Store>,
    rec: ArtifactRecord,
    hasher: blake3::Hasher,
    received: u64,
    pending: Vec<u8>,
    stored: u64,
    committed: bool,
}

impl Incoming {
    /// Starts receiving artifact `name` of `job` that must end up `size` bytes long with hash
    /// `blake3`, for `attempt`.
    pub async fn start(
        store: Arc<dyn Store>,
        job: JobId,
        attempt: u32,
        name: &str,
        size: u64,
        blake3: &str,
    ) -> Result<Incoming> {
        check_name(name)?;
        if size > MAX_ARTIFACT_BYTES {
            return Err(Error::invalid(format!(
                "artifact {name} is {size} bytes, expected at most {MAX_ARTIFACT_BYTES}"
            )));
        }
        let hash_ok = blake3.len() == 64 && blake3.chars().all(|c| c.is_ascii_hexdigit());
        if !hash_ok {
            return Err(Error::invalid(format!(
                "artifact hash {blake3:?} is not valid, expected 64 hex digits (BLAKE3)"
            )));
        }
        let upload_id = store.begin_artifact_upload(job).await?;
        Ok(Incoming {
            store,
            rec: ArtifactRecord {
                job_id: job,
                attempt,
                name: name.to_string(),
                size,
                blake3: blake3.to_ascii_lowercase(),
                upload_id,
                created_at: 0,
            },
            hasher: blake3::Hasher::new(),
            received: 0,
            pending: Vec::with_capacity(WRITE_BYTES),
            stored: 0,
            committed: false,
        })
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.received += data.len() as u64;
        if self.received > self.rec.size {
            return Err(Error::invalid(format!(
                "artifact {} is longer than the {} bytes its header announced",
                self.rec.name, self.rec.size
            )));
        }
        self.hasher.update(data);
        let mut rest = data;
        while !rest.is_empty() {
            let take = rest.len().min(WRITE_BYTES - self.pending.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == WRITE_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.store
            .put_artifact_chunk(&self.rec.upload_id, self.stored, &self.pending)
            .await?;
        self.stored += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Checks size and hash, then names the upload as the job's artifact (replacing an earlier
    /// attempt's artifact of the same name), fenced by the attempt of `worker`.
    pub async fn finish(mut self, worker: &str) -> Result<ArtifactRecord> {
        if self.received != self.rec.size {
            return Err(Error::invalid(format!(
                "artifact {} has {} bytes, its header announced {}",
                self.rec.name, self.received, self.rec.size
            )));
        }
        let found = self.hasher.finalize().to_hex().to_string();
        if found != self.rec.blake3 {
            return Err(Error::invalid(format!(
                "artifact {} has BLAKE3 {found}, its header announced {}",
                self.rec.name, self.rec.blake3
            )));
        }
        self.flush().await?;
        let stored = self.store.commit_artifact(&self.rec, worker).await?;
        self.committed = true;
        Ok(stored)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // Best effort: if this fails (or the runtime is gone) the reaper purges it later.
        let store = self.store.clone();
        let upload = std::mem::take(&mut self.rec.upload_id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.discard_artifact_upload(&upload).await {
                    tracing::warn!(%upload, error = %e, "cannot discard an artifact upload; the reaper will");
                }
            });
        }
    }
}
