//! Artifact files on the coordinator: `<data-dir>/artifacts/job-<id>/<name>` with a JSON
//! sidecar `<name>.meta.json` (attempt, size, BLAKE3, time). An upload is written to a staging
//! file, checked against the size and hash its header announced, and only then renamed into
//! place, so a reader never sees half an artifact and a broken upload leaves nothing behind.
//! Who may upload (the running attempt) is the API's decision; nothing here touches the
//! database.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::model::JobId;

/// Largest artifact accepted (a B7 checkpoint is ~260 MB; leave room for larger models).
pub const MAX_ARTIFACT_BYTES: u64 = 16 << 30;

/// What the sidecar file records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    pub job_id: JobId,
    pub attempt: u32,
    pub name: String,
    pub size: u64,
    pub blake3: String,
    pub created_at_ms: i64,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Clone, Debug)]
pub struct ArtifactFiles {
    root: PathBuf,
}

/// Artifact names are plain file names, so they cannot reach outside the job's folder.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && !name.ends_with(".meta.json")
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

impl ArtifactFiles {
    /// Artifacts live under `data_dir/artifacts`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            root: data_dir.into().join("artifacts"),
        }
    }

    fn dir(&self, job: JobId) -> PathBuf {
        self.root.join(format!("job-{job}"))
    }

    /// Starts receiving an artifact that must end up `size` bytes long with hash `blake3`.
    pub async fn start(
        &self,
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
        let dir = self.dir(job);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io("create the artifact folder"))?;
        let staging = dir.join(format!(
            ".incoming-{}-{name}",
            uuid::Uuid::new_v4().simple()
        ));
        let file = tokio::fs::File::create(&staging)
            .await
            .map_err(io("create the staging file"))?;
        Ok(Incoming {
            meta: ArtifactMeta {
                job_id: job,
                attempt,
                name: name.to_string(),
                size,
                blake3: blake3.to_ascii_lowercase(),
                created_at_ms: 0,
                path: dir.join(name),
            },
            staging: Some(staging),
            file: Some(file),
            hasher: blake3::Hasher::new(),
            received: 0,
        })
    }

    /// The job's artifacts, by name.
    pub async fn list(&self, job: JobId) -> Result<Vec<ArtifactMeta>> {
        let dir = self.dir(job);
        let mut out = Vec::new();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io("list the artifact folder")(e)),
        };
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(io("list the artifact folder"))?
        {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = file_name.strip_suffix(".meta.json") {
                out.push(self.get(job, name).await?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One artifact's record; `NotFound` when the job has none of that name.
    pub async fn get(&self, job: JobId, name: &str) -> Result<ArtifactMeta> {
        check_name(name)?;
        let dir = self.dir(job);
        let text = match tokio::fs::read(dir.join(format!("{name}.meta.json"))).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!(
                    "job {job} has no artifact {name:?} on this coordinator"
                )))
            }
            Err(e) => return Err(io("read an artifact record")(e)),
        };
        let mut meta: ArtifactMeta = serde_json::from_slice(&text).map_err(|e| {
            Error::Config(format!(
                "artifact record {name} of job {job} is unreadable: {e}"
            ))
        })?;
        meta.path = dir.join(name);
        Ok(meta)
    }

    /// Removes artifact `name` of `job`: its record first, then the file, so a record never
    /// names a missing file. False when there was none.
    pub async fn remove(&self, job: JobId, name: &str) -> Result<bool> {
        check_name(name)?;
        let dir = self.dir(job);
        match tokio::fs::remove_file(dir.join(format!("{name}.meta.json"))).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io("remove an artifact record")(e)),
        }
        match tokio::fs::remove_file(dir.join(name)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove an artifact")(e)),
            _ => Ok(true),
        }
    }
}

/// An upload in progress; dropped without `finish`, its staging file is removed.
pub struct Incoming {
    meta: ArtifactMeta,
    staging: Option<PathBuf>,
    file: Option<tokio::fs::File>,
    hasher: blake3::Hasher,
    received: u64,
}

impl Incoming {
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.received += data.len() as u64;
        if self.received > self.meta.size {
            return Err(Error::invalid(format!(
                "artifact {} is longer than the {} bytes its header announced",
                self.meta.name, self.meta.size
            )));
        }
        self.hasher.update(data);
        let file = self.file.as_mut().expect("open until finish");
        file.write_all(data).await.map_err(io("write the artifact"))
    }

    /// Checks size and hash, then moves the file and its record into place (replacing an
    /// earlier attempt's artifact of the same name).
    pub async fn finish(mut self, now_ms: i64) -> Result<ArtifactMeta> {
        if self.received != self.meta.size {
            return Err(Error::invalid(format!(
                "artifact {} has {} bytes, its header announced {}",
                self.meta.name, self.received, self.meta.size
            )));
        }
        let found = self.hasher.finalize().to_hex().to_string();
        if found != self.meta.blake3 {
            return Err(Error::invalid(format!(
                "artifact {} has BLAKE3 {found}, its header announced {}",
                self.meta.name, self.meta.blake3
            )));
        }
        let file = self.file.take().expect("open until finish");
        file.sync_all().await.map_err(io("sync the artifact"))?;
        drop(file);
        let staging = self.staging.take().expect("staged until finish");
        self.meta.created_at_ms = now_ms;
        let meta_path = self
            .meta
            .path
            .with_file_name(format!("{}.meta.json", self.meta.name));
        let meta_tmp = staging.with_extension("meta");
        let json = serde_json::to_vec_pretty(&self.meta).expect("artifact records serialise");
        tokio::fs::write(&meta_tmp, json)
            .await
            .map_err(io("write the artifact record"))?;
        // The file first, then its record: a record always names a complete file.
        tokio::fs::rename(&staging, &self.meta.path)
            .await
            .map_err(io("move the artifact into place"))?;
        tokio::fs::rename(&meta_tmp, &meta_path)
            .await
            .map_err(io("move the artifact record into place"))?;
        Ok(self.meta.clone())
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(p) = self.staging.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::Config(format!("cannot {what}: {e}"))
}
