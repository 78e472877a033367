//! Dataset files on the coordinator: checking an upload's manifest, receiving its files into a
//! staging folder, verifying every file and the whole content hash before anything is
//! registered, removing what a failed registration or a killed upload left behind, and serving
//! files back in chunks. Registration itself is the store's job; nothing here touches the
//! database. Must not: write, serve or keep a file whose path has not passed
//! [`verified_manifest`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use stackhive_data::hash::Manifest;
use stackhive_data::isic::Dataset;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// Largest chunk accepted in an upload.
pub const MAX_CHUNK: usize = 4 << 20;
/// Chunk size used when serving files.
pub const SERVE_CHUNK: usize = 1 << 20;
/// Largest manifest accepted in an upload header: about 200,000 files (ISIC 2020 with the
/// 2018 and 2019 data is under 60,000).
pub const MAX_MANIFEST_BYTES: usize = 32 << 20;
pub const MAX_FILES: usize = 250_000;
/// Staging folders of uploads in progress, under the data folder.
const INCOMING: &str = ".incoming";

/// Datasets kept read (their CSV rows) after use.
const LOADED_KEPT: usize = 4;

/// The folder holding one sub-folder per stored dataset hash.
#[derive(Clone, Debug)]
pub struct DatasetFiles {
    root: PathBuf,
    /// The few most recently read datasets, newest last: imports and model resolution read
    /// the rows on every call, and the content under a hash never changes.
    loaded: Arc<std::sync::Mutex<Loaded>>,
}

/// (hash, rows) of the datasets read last, newest last.
type Loaded = Vec<(String, Arc<Dataset>)>;

impl DatasetFiles {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            loaded: Arc::default(),
        }
    }

    /// The rows of dataset `hash` (its files verified at upload: the CSVs are read, images
    /// are not opened), from memory when read recently.
    pub async fn load(&self, hash: &str) -> Result<Arc<Dataset>> {
        let lock = || self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, ds)) = lock().iter().find(|(h, _)| h == hash) {
            return Ok(ds.clone());
        }
        if !self.has(hash) {
            return Err(Error::FailedPrecondition(format!(
                "dataset {hash}'s files are not on this coordinator; ask the one that has them"
            )));
        }
        let root = self.path_of(hash);
        let ds = tokio::task::spawn_blocking(move || {
            let opts = stackhive_data::validate::ValidateOptions {
                drop_invalid: false,
                image_check: stackhive_data::validate::ImageCheck::Skip,
            };
            stackhive_data::validate::load_and_validate(&root, &opts).map(|(d, _)| d)
        })
        .await
        .map_err(|e| Error::Config(format!("dataset load task failed: {e}")))?
        .map_err(|e| Error::FailedPrecondition(format!("dataset {hash} cannot be loaded: {e}")))?;
        let ds = Arc::new(ds);
        let mut kept = lock();
        kept.retain(|(h, _)| h != hash);
        if kept.len() >= LOADED_KEPT {
            kept.remove(0);
        }
        kept.push((hash.to_string(), ds.clone()));
        Ok(ds)
    }

    pub fn path_of(&self, hash: &str) -> PathBuf {
        self.root.join(hash)
    }

    /// True when the content of `hash` is on disk here.
    pub fn has(&self, hash: &str) -> bool {
        self.path_of(hash).join(".complete").exists()
    }

    /// Starts receiving the files of `manifest` into a fresh staging folder. The manifest must
    /// have passed [`verified_manifest`].
    pub async fn start_upload(&self, hash: &str, manifest: Manifest) -> Result<Upload> {
        let staging = self
            .root
            .join(INCOMING)
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

    /// Removes the stored content of `hash` (a registration that failed after its files were
    /// moved into place must leave nothing behind).
    pub async fn remove(&self, hash: &str) -> Result<()> {
        check_hash(hash)?;
        match tokio::fs::remove_dir_all(self.path_of(hash)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io("remove a dataset folder")(e))
            }
            _ => Ok(()),
        }
    }

    /// Removes staging folders of uploads that nothing has written to for `idle` (a coordinator
    /// killed mid-upload leaves them; a live upload touches its folder with every file it
    /// opens). Returns how many were removed.
    pub fn purge_incoming(&self, idle: Duration) -> usize {
        let Ok(entries) = std::fs::read_dir(self.root.join(INCOMING)) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            if newest_change(&entry.path()).is_some_and(|t| t.elapsed().unwrap_or_default() > idle)
                && std::fs::remove_dir_all(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }

    /// Hashes of the content folders here (complete or not), for the orphan sweep.
    pub fn stored_hashes(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| check_hash(name).is_ok())
            .collect()
    }

    /// How long ago the content folder of `hash` last changed.
    pub fn age_of(&self, hash: &str) -> Option<Duration> {
        newest_change(&self.path_of(hash)).map(|t| t.elapsed().unwrap_or_default())
    }
}

/// The newest modification time of a folder and the entries directly or one level below it.
fn newest_change(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = std::fs::metadata(dir).and_then(|m| m.modified()).ok()?;
    let mut visit = |p: &Path| {
        if let Ok(t) = std::fs::metadata(p).and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    };
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        visit(&e.path());
        if e.path().is_dir() {
            for e2 in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                visit(&e2.path());
            }
        }
    }
    Some(newest)
}

/// The manifest of an upload header, checked before anything is written or registered from it:
/// bounded in size, only the dataset layout's paths (`train.csv`, `test.csv`, `images/NAME`,
/// nothing that could name a file outside the dataset folder), well-formed digests, and a hash
/// equal to `hash`. Since the hash covers every path, size and digest, a manifest that passes
/// is exactly the manifest of the content the hash names; the coordinator never stores or
/// serves a client's list of paths it has not checked this way.
pub fn verified_manifest(hash: &str, manifest_json: &str) -> Result<Manifest> {
    check_hash(hash)?;
    if manifest_json.len() > MAX_MANIFEST_BYTES {
        return Err(Error::invalid(format!(
            "dataset manifest is {} bytes, the limit is {MAX_MANIFEST_BYTES}",
            manifest_json.len()
        )));
    }
    let manifest: Manifest = serde_json::from_str(manifest_json)
        .map_err(|e| Error::invalid(format!("dataset manifest is not valid JSON ({e})")))?;
    if manifest.files.len() > MAX_FILES {
        return Err(Error::invalid(format!(
            "dataset manifest lists {} files, the limit is {MAX_FILES}",
            manifest.files.len()
        )));
    }
    manifest
        .check(hash)
        .map_err(|e| Error::invalid(format!("dataset manifest refused: {e}")))?;
    Ok(manifest)
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
    pub async fn finish(mut self) -> Result<Placed> {
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
        if self.target.join(".complete").exists() {
            // Someone stored the same content meanwhile: keep theirs.
            return Ok(Placed {
                path: self.target.clone(),
                created: false,
            });
        }
        let _ = tokio::fs::remove_dir_all(&self.target).await;
        tokio::fs::rename(&self.staging, &self.target)
            .await
            .map_err(io("move the dataset into place"))?;
        Ok(Placed {
            path: self.target.clone(),
            created: true,
        })
    }
}

/// Where a finished upload's content lies.
#[derive(Debug)]
pub struct Placed {
    pub path: PathBuf,
    /// This upload moved it there (false: the same content was already stored).
    pub created: bool,
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
