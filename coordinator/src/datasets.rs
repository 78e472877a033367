//! Dataset files on the coordinator: receiving an upload into a staging folder, verifying every
//! file and the whole content hash before anything is registered, serving files back in
//! chunks, and computing folds from a stored dataset. Registration itself is the store's job;
//! nothing here touches the database.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use stackhive_data::hash::Manifest;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// Largest chunk accepted in an upload.
pub const MAX_CHUNK: usize = 4 << 20;
/// Chunk size used when serving files.
pub const SERVE_CHUNK: usize = 1 << 20;

/// The folder holding one sub-folder per stored dataset hash.
#[derive(Clone, Debug)]
pub struct DatasetFiles {
    root: PathBuf,
}

impl DatasetFiles {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn path_of(&self, hash: &str) -> PathBuf {
        self.root.join(hash)
    }

    /// True when the content of `hash` is on disk here.
    pub fn has(&self, hash: &str) -> bool {
        self.path_of(hash).join(".complete").exists()
    }

    /// Starts receiving the files of `manifest` into a fresh staging folder.
    pub async fn start_upload(&self, hash: &str, manifest: Manifest) -> Result<Upload> {
        check_hash(hash)?;
        for f in &manifest.files {
            check_rel_path(&f.path)?;
        }
        let staging = self
            .root
            .join(".incoming")
            .join(uuid::Uuid::new_v4().simple().to_string());
        tokio::fs::create_dir_all(&staging)
            .await
            .map_err(io("create the staging folder"))?;
        let sizes = manifest
            .files
            .iter()
            .map(|f| (f.path.clone(), (f.size, 0u64)))
            .collect();
        Ok(Upload {
            target: self.path_of(hash),
            hash: hash.to_string(),
            staging,
            manifest,
            sizes,
            open: None,
            received: 0,
        })
    }
}

/// An upload in progress. Dropping it without `finish` removes the staging folder.
pub struct Upload {
    target: PathBuf,
    hash: String,
    staging: PathBuf,
    manifest: Manifest,
    /// path -> (expected size, bytes written)
    sizes: HashMap<String, (u64, u64)>,
    open: Option<(String, tokio::fs::File)>,
    pub received: u64,
}

impl Upload {
    /// Appends a chunk; chunks of a file arrive in order (offset = bytes written so far).
    pub async fn write(&mut self, path: &str, offset: u64, data: &[u8]) -> Result<()> {
        if data.len() > MAX_CHUNK {
            return Err(Error::invalid(format!(
                "chunk of {path} is {} bytes, the limit is {MAX_CHUNK}",
                data.len()
            )));
        }
        let Some((size, written)) = self.sizes.get_mut(path) else {
            return Err(Error::invalid(format!(
                "{path} is not in the dataset's manifest"
            )));
        };
        if offset != *written {
            return Err(Error::invalid(format!(
                "chunk of {path} starts at byte {offset}, expected byte {written}"
            )));
        }
        if *written + data.len() as u64 > *size {
            return Err(Error::invalid(format!(
                "{path} is longer than the {size} bytes its manifest entry says"
            )));
        }
        *written += data.len() as u64;
        self.received += data.len() as u64;
        if self.open.as_ref().map(|(p, _)| p.as_str()) != Some(path) {
            let dest = self.staging.join(path);
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(io("create a dataset folder"))?;
            }
            let f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&dest)
                .await
                .map_err(io("open a dataset file"))?;
            self.open = Some((path.to_string(), f));
        }
        let (_, f) = self.open.as_mut().expect("opened above");
        f.write_all(data)
            .await
            .map_err(io("write a dataset file"))?;
        Ok(())
    }

    /// Checks sizes, every file's hash and the whole hash, then moves the files into place.
    /// Returns the folder and the total size.
    pub async fn finish(mut self) -> Result<(PathBuf, u64)> {
        if let Some((_, mut f)) = self.open.take() {
            f.flush().await.map_err(io("flush a dataset file"))?;
            f.sync_all().await.map_err(io("sync a dataset file"))?;
        }
        let incomplete: Vec<String> = self
            .sizes
            .iter()
            .filter(|(_, (size, written))| size != written)
            .map(|(p, (size, written))| format!("{p} ({written} of {size} bytes)"))
            .take(5)
            .collect();
        if !incomplete.is_empty() {
            return Err(Error::invalid(format!(
                "upload ended before every file arrived: {}",
                incomplete.join(", ")
            )));
        }
        for f in &self.manifest.files {
            // Empty files are never written by a chunk; create them.
            let p = self.staging.join(&f.path);
            if f.size == 0 && !p.exists() {
                if let Some(parent) = p.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(io("create a dataset folder"))?;
                }
                tokio::fs::write(&p, b"")
                    .await
                    .map_err(io("write a dataset file"))?;
            }
        }
        let staging = self.staging.clone();
        let want = self.hash.clone();
        let (got, manifest) =
            tokio::task::spawn_blocking(move || stackhive_data::hash::dataset_hash(&staging))
                .await
                .map_err(|e| Error::Config(format!("hashing task failed: {e}")))?
                .map_err(|e| {
                    Error::invalid(format!("uploaded dataset cannot be read back: {e}"))
                })?;
        if got != want {
            let bad: Vec<&str> = manifest
                .files
                .iter()
                .zip(&self.manifest.files)
                .filter(|(a, b)| a.blake3 != b.blake3 || a.path != b.path)
                .map(|(a, _)| a.path.as_str())
                .take(5)
                .collect();
            return Err(Error::invalid(format!(
                "uploaded files hash to {got}, the header says {want}; differing files: {}",
                if bad.is_empty() {
                    "none listed (the file sets differ)".to_string()
                } else {
                    bad.join(", ")
                }
            )));
        }
        tokio::fs::write(self.staging.join(".complete"), b"")
            .await
            .map_err(io("mark the dataset"))?;
        let total = self.manifest.files.iter().map(|f| f.size).sum();
        if self.target.join(".complete").exists() {
            // Someone stored the same content meanwhile: keep theirs.
            return Ok((self.target.clone(), total));
        }
        let _ = tokio::fs::remove_dir_all(&self.target).await;
        tokio::fs::rename(&self.staging, &self.target)
            .await
            .map_err(io("move the dataset into place"))?;
        Ok((self.target.clone(), total))
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // After a successful finish the staging folder was renamed away and this is a no-op.
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::Config(format!("cannot {what}: {e}"))
}

pub fn check_hash(hash: &str) -> Result<()> {
    if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::invalid(format!(
            "dataset hash must be 64 hex digits (BLAKE3), found {hash:?}"
        )));
    }
    Ok(())
}

/// Only plain relative paths inside the dataset folder.
pub fn check_rel_path(p: &str) -> Result<()> {
    let path = Path::new(p);
    let ok = !p.is_empty()
        && path.is_relative()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !ok {
        return Err(Error::invalid(format!(
            "dataset file path {p:?} is not a plain relative path inside the dataset"
        )));
    }
    Ok(())
}
