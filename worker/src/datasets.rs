//! Datasets on a worker. A job names a dataset by its content hash; the worker reads it from a
//! shared path when the same content is there (the coordinator's own data folder mounted at the
//! same place, or `<shared root>/<hash>`), and otherwise fetches it from the coordinator in
//! chunks over gRPC, checks every file and the whole hash, and keeps it in its cache for every
//! later job on this machine. Nothing unverified is ever used: a fetch lands in a temporary
//! folder that only becomes the cache entry once it checks out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stackhive_data::hash::Manifest;
use stackhive_proto::connect::AuthChannel as Channel;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::dataset_service_client::DatasetServiceClient;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("coordinator refused dataset request: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("dataset {hash}: {what}")]
    Corrupt { hash: String, what: String },
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DatasetError {
    let what = what.into();
    move |source| DatasetError::Io { what, source }
}

/// Where this worker finds or keeps datasets.
#[derive(Debug)]
pub struct DatasetCache {
    shared_roots: Vec<PathBuf>,
    /// Also try the coordinator's own storage path (a data folder mounted on every machine).
    coordinator_path: bool,
    cache_dir: PathBuf,
    /// One lock per hash, so two jobs needing the same dataset fetch it once.
    locks: Mutex<HashMap<String, Arc<Mutex<Option<PathBuf>>>>>,
}

/// How a dataset was made available (for logs and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Shared,
    Cached,
    Fetched { bytes: u64 },
}

impl DatasetCache {
    pub fn new(cache_dir: impl Into<PathBuf>, shared_roots: Vec<PathBuf>) -> Self {
        Self {
            shared_roots,
            coordinator_path: true,
            cache_dir: cache_dir.into(),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Whether to look for the dataset at the coordinator's own storage path too.
    pub fn with_coordinator_path(mut self, yes: bool) -> Self {
        self.coordinator_path = yes;
        self
    }

    /// Returns a local folder holding dataset `hash` (a content hash or a registered name),
    /// verified.
    pub async fn ensure(
        &self,
        channel: Channel,
        hash: &str,
    ) -> Result<(PathBuf, Source), DatasetError> {
        let lock = self
            .locks
            .lock()
            .await
            .entry(hash.to_string())
            .or_default()
            .clone();
        let mut known = lock.lock().await;
        if let Some(p) = known.as_ref() {
            return Ok((p.clone(), Source::Cached));
        }
        let mut client = DatasetServiceClient::new(channel).max_decoding_message_size(64 << 20);
        let info = client
            .get_dataset(pb::GetDatasetRequest {
                dataset: hash.to_string(),
            })
            .await?
            .into_inner();
        let manifest: Manifest =
            serde_json::from_str(&info.manifest_json).map_err(|e| DatasetError::Corrupt {
                hash: hash.into(),
                what: format!("manifest is not valid JSON ({e})"),
            })?;
        // Nothing from the coordinator names a path here before it checks out: a hash of 64
        // hex digits and a manifest of layout paths only that hashes to it.
        let well_formed = info.hash.len() == 64 && info.hash.bytes().all(|b| b.is_ascii_hexdigit());
        if !well_formed {
            return Err(DatasetError::Corrupt {
                hash: hash.into(),
                what: format!(
                    "coordinator named it {:?}, expected 64 hex digits",
                    info.hash
                ),
            });
        }
        manifest
            .check(&info.hash)
            .map_err(|e| DatasetError::Corrupt {
                hash: info.hash.clone(),
                what: format!("manifest refused: {e}"),
            })?;

        // `hash` may be a name; from here on the content hash names everything.
        let hash = info.hash.as_str();
        let cached = self.cache_dir.join(hash);
        let (path, source) = if cached.join(".complete").exists() {
            (cached, Source::Cached)
        } else if let Some(p) = self.find_shared(&info, &manifest).await {
            (p, Source::Shared)
        } else {
            let bytes = self.fetch(&mut client, hash, &manifest).await?;
            (cached, Source::Fetched { bytes })
        };
        tracing::info!(dataset = %hash, path = %path.display(), ?source, "dataset ready");
        *known = Some(path.clone());
        Ok((path, source))
    }

    /// A shared folder whose files match the manifest and whose content hashes to `hash`.
    async fn find_shared(&self, info: &pb::DatasetInfo, manifest: &Manifest) -> Option<PathBuf> {
        let mut candidates: Vec<PathBuf> = self
            .shared_roots
            .iter()
            .map(|root| root.join(&info.hash))
            .collect();
        // The coordinator's own folder, when this machine mounts it at the same path.
        if self.coordinator_path && !info.storage_path.is_empty() {
            candidates.push(PathBuf::from(&info.storage_path));
        }
        for dir in candidates {
            if !sizes_match(&dir, manifest) {
                continue;
            }
            let d = dir.clone();
            let hashed =
                tokio::task::spawn_blocking(move || stackhive_data::hash::dataset_hash(&d)).await;
            if let Ok(Ok((h, _))) = hashed {
                if h == info.hash {
                    return Some(dir);
                }
            }
            tracing::warn!(path = %dir.display(), dataset = %info.hash,
                "shared folder has the dataset's file sizes but not its content; not using it");
        }
        None
    }

    async fn fetch(
        &self,
        client: &mut DatasetServiceClient<Channel>,
        hash: &str,
        manifest: &Manifest,
    ) -> Result<u64, DatasetError> {
        tokio::fs::create_dir_all(&self.cache_dir)
            .await
            .map_err(io("create the dataset cache"))?;
        let partial = self
            .cache_dir
            .join(format!(".partial-{}", uuid::Uuid::new_v4().simple()));
        let result = self.fetch_into(client, hash, manifest, &partial).await;
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&partial).await;
        }
        result
    }

    async fn fetch_into(
        &self,
        client: &mut DatasetServiceClient<Channel>,
        hash: &str,
        manifest: &Manifest,
        partial: &Path,
    ) -> Result<u64, DatasetError> {
        let expected: HashMap<&str, (u64, &str)> = manifest
            .files
            .iter()
            .map(|f| (f.path.as_str(), (f.size, f.blake3.as_str())))
            .collect();
        let corrupt = |what: String| DatasetError::Corrupt {
            hash: hash.to_string(),
            what,
        };
        let mut stream = client
            .fetch_dataset(pb::FetchDatasetRequest {
                hash: hash.to_string(),
                paths: vec![],
            })
            .await?
            .into_inner();
        let mut current: Option<(String, tokio::fs::File, blake3::Hasher, u64)> = None;
        let mut done = 0usize;
        let mut bytes = 0u64;
        let mut close = |cur: Option<(String, tokio::fs::File, blake3::Hasher, u64)>| -> Result<Option<tokio::fs::File>, DatasetError> {
            let Some((path, file, hasher, len)) = cur else { return Ok(None) };
            let (size, want) = expected[path.as_str()];
            if len != size {
                return Err(corrupt(format!("{path} arrived with {len} bytes, the manifest says {size}")));
            }
            let got = hasher.finalize().to_hex().to_string();
            if got != want {
                return Err(corrupt(format!("{path} hashes to {got}, the manifest says {want}")));
            }
            done += 1;
            Ok(Some(file))
        };
        while let Some(chunk) = stream.message().await? {
            if current.as_ref().map(|c| c.0.as_str()) != Some(chunk.path.as_str()) {
                if let Some(mut f) = close(current.take())? {
                    f.flush().await.map_err(io("write a dataset file"))?;
                }
                if !expected.contains_key(chunk.path.as_str()) {
                    return Err(corrupt(format!(
                        "coordinator sent {}, which is not in the manifest",
                        chunk.path
                    )));
                }
                let dest = partial.join(&chunk.path);
                if let Some(parent) = dest.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(io("create a dataset folder"))?;
                }
                let f = tokio::fs::File::create(&dest)
                    .await
                    .map_err(io("create a dataset file"))?;
                current = Some((chunk.path.clone(), f, blake3::Hasher::new(), 0));
            }
            let cur = current.as_mut().expect("set above");
            if chunk.offset != cur.3 {
                return Err(corrupt(format!(
                    "{} chunk at byte {}, expected byte {}",
                    cur.0, chunk.offset, cur.3
                )));
            }
            cur.1
                .write_all(&chunk.data)
                .await
                .map_err(io("write a dataset file"))?;
            cur.2.update(&chunk.data);
            cur.3 += chunk.data.len() as u64;
            bytes += chunk.data.len() as u64;
        }
        if let Some(mut f) = close(current.take())? {
            f.flush().await.map_err(io("write a dataset file"))?;
        }
        if done != manifest.files.len() {
            return Err(corrupt(format!(
                "received {done} of {} files",
                manifest.files.len()
            )));
        }
        let p = partial.to_path_buf();
        let (whole, _) =
            tokio::task::spawn_blocking(move || stackhive_data::hash::dataset_hash(&p))
                .await
                .map_err(|e| corrupt(format!("hashing task failed: {e}")))?
                .map_err(|e| corrupt(format!("fetched files cannot be read back: {e}")))?;
        if whole != hash {
            return Err(corrupt(format!("fetched files hash to {whole}")));
        }
        tokio::fs::write(partial.join(".complete"), b"")
            .await
            .map_err(io("mark the dataset"))?;
        let target = self.cache_dir.join(hash);
        let _ = tokio::fs::remove_dir_all(&target).await;
        tokio::fs::rename(partial, &target)
            .await
            .map_err(io("move the dataset into the cache"))?;
        Ok(bytes)
    }
}

fn sizes_match(dir: &Path, manifest: &Manifest) -> bool {
    dir.is_dir()
        && manifest
            .files
            .iter()
            .all(|f| std::fs::metadata(dir.join(&f.path)).is_ok_and(|m| m.len() == f.size))
}
