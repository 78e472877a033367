//! The worker's copies of feature sets (issue 12): each set a `stack` job names is fetched from
//! the coordinator once, checked against the BLAKE3 the coordinator recorded, and kept under
//! the cache folder by its id for every later job of the set. Two jobs of a new set fetch it
//! once.
//!
//! Must not: hand out a file that has not checked out (it is written beside and renamed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stackhive_proto::connect::AuthChannel as Channel;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::feature_service_client::FeatureServiceClient;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("coordinator refused the feature set request: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("feature set {id} arrived damaged: {what}")]
    Corrupt { id: String, what: String },
}

pub struct FeatureCache {
    dir: PathBuf,
    /// Id → verified path, and a lock per set being fetched.
    known: Mutex<HashMap<String, Arc<Mutex<Option<PathBuf>>>>>,
}

impl FeatureCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The set named `key` (id or name): its id and a verified local file.
    pub async fn ensure(
        &self,
        channel: Channel,
        key: &str,
    ) -> Result<(String, PathBuf), FeatureError> {
        let mut client = FeatureServiceClient::new(channel).max_decoding_message_size(64 << 20);
        let info = client
            .get_feature_set(pb::GetFeatureSetRequest {
                feature_set: key.to_string(),
            })
            .await?
            .into_inner();
        let id = info.id.clone();
        let well_formed = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
        if !well_formed {
            return Err(FeatureError::Corrupt {
                id,
                what: "the coordinator named it with something other than 64 hex digits".into(),
            });
        }
        let slot = self
            .known
            .lock()
            .await
            .entry(id.clone())
            .or_default()
            .clone();
        let mut verified = slot.lock().await;
        if let Some(p) = verified.as_ref() {
            return Ok((id, p.clone()));
        }
        let path = self.dir.join(format!("{id}.shmx"));
        if !matches_file(&path, &info.blake3).await {
            self.fetch(&mut client, &info, &path).await?;
        }
        *verified = Some(path.clone());
        Ok((id, path))
    }

    async fn fetch(
        &self,
        client: &mut FeatureServiceClient<Channel>,
        info: &pb::FeatureSetInfo,
        path: &Path,
    ) -> Result<(), FeatureError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| FeatureError::Io { what, source }
        };
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(io("create the feature cache"))?;
        let partial = self.dir.join(format!(
            ".partial-{}-{}",
            info.id,
            uuid::Uuid::new_v4().simple()
        ));
        let result = async {
            let mut stream = client
                .fetch_feature_set(pb::GetFeatureSetRequest {
                    feature_set: info.id.clone(),
                })
                .await?
                .into_inner();
            let mut file = tokio::fs::File::create(&partial)
                .await
                .map_err(io("create a feature file"))?;
            let mut hasher = blake3::Hasher::new();
            let mut at = 0u64;
            while let Some(chunk) = stream.message().await? {
                if chunk.offset != at {
                    return Err(FeatureError::Corrupt {
                        id: info.id.clone(),
                        what: format!("a chunk starts at byte {}, expected {at}", chunk.offset),
                    });
                }
                hasher.update(&chunk.data);
                file.write_all(&chunk.data)
                    .await
                    .map_err(io("write a feature file"))?;
                at += chunk.data.len() as u64;
            }
            file.flush().await.map_err(io("write a feature file"))?;
            let found = hasher.finalize().to_hex().to_string();
            if at != info.size || found != info.blake3 {
                return Err(FeatureError::Corrupt {
                    id: info.id.clone(),
                    what: format!(
                        "{at} bytes with BLAKE3 {found}, expected {} and {}",
                        info.size, info.blake3
                    ),
                });
            }
            tokio::fs::rename(&partial, path)
                .await
                .map_err(io("move a feature file into place"))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        result
    }
}

/// True when `path` exists and hashes to `blake3` (a copy fetched by an earlier process).
async fn matches_file(path: &Path, blake3: &str) -> bool {
    let p = path.to_path_buf();
    let want = blake3.to_string();
    tokio::task::spawn_blocking(move || {
        let Ok(bytes) = std::fs::read(&p) else {
            return false;
        };
        blake3::hash(&bytes).to_hex().as_str() == want
    })
    .await
    .unwrap_or(false)
}
