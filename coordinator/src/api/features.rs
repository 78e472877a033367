//! `FeatureService`: build a feature set from a definition (`crate::services::features`), register
//! one built elsewhere (a plain table), and get, list and fetch them. Matrices live in the store,
//! so any coordinator serves any set.

use std::sync::Arc;

use stackhive_data::matrix::FeatureMatrix;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::feature_service_server::FeatureService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::domain::model::{now_ms, FeatureSetRecord};
use crate::error::Error;
use crate::services::datasets::DatasetFiles;
use crate::services::features::{self, Info};
use crate::store::Store;

/// Largest matrix accepted in an upload (it is checked whole, in memory).
pub const MAX_UPLOAD_BYTES: u64 = 1 << 30;
const MAX_DEFINITION_BYTES: usize = 64 * 1024;

pub struct FeatureApi {
    store: Arc<dyn Store>,
    files: DatasetFiles,
}

impl FeatureApi {
    pub fn new(store: Arc<dyn Store>, files: DatasetFiles) -> Self {
        Self { store, files }
    }
}

fn check_name(name: &str) -> Result<Option<&str>, Error> {
    if name.is_empty() {
        return Ok(None);
    }
    let ok = name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if !ok {
        return Err(Error::invalid(format!(
            "feature set name {name:?} is not valid, expected 1 to 128 letters, digits and _-."
        )));
    }
    Ok(Some(name))
}

/// A definition's bounds: a dataset, at most 100,000 jobs and 64 more experiments, and
/// experiment names that are valid text.
fn check_definition(def: Option<pb::FeatureDefinition>) -> Result<pb::FeatureDefinition, Error> {
    let def = def.ok_or_else(|| Error::invalid("a feature set needs a definition, found none"))?;
    if def.dataset.is_empty() {
        return Err(Error::invalid("feature definition names no dataset"));
    }
    if def.job_ids.len() > 100_000 {
        return Err(Error::invalid(format!(
            "feature definition lists {} jobs, the limit is 100000",
            def.job_ids.len()
        )));
    }
    if def.more_experiments.len() > 64 {
        return Err(Error::invalid(format!(
            "feature definition names {} more experiments, the limit is 64",
            def.more_experiments.len()
        )));
    }
    for e in std::iter::once(&def.experiment).chain(&def.more_experiments) {
        crate::domain::validate::check_text("experiment", e).map_err(Error::invalid)?;
    }
    Ok(def)
}

#[tonic::async_trait]
impl FeatureService for FeatureApi {
    async fn build_feature_set(
        &self,
        req: Request<pb::BuildFeatureSetRequest>,
    ) -> Result<Response<pb::FeatureSetInfo>, Status> {
        let r = req.into_inner();
        let name = check_name(&r.name)?;
        let def = check_definition(r.definition)?;
        let rec = features::build(&self.store, &self.files, &def, name).await?;
        Ok(Response::new(features::info(&rec)))
    }

    async fn resolve_models(
        &self,
        req: Request<pb::ResolveModelsRequest>,
    ) -> Result<Response<pb::ResolvedModels>, Status> {
        let def = check_definition(req.into_inner().definition)?;
        let resolved = features::resolved_models(&self.store, &self.files, &def).await?;
        Ok(Response::new(resolved))
    }

    async fn upload_feature_set(
        &self,
        req: Request<Streaming<pb::UploadFeatureSetRequest>>,
    ) -> Result<Response<pb::FeatureSetInfo>, Status> {
        use pb::upload_feature_set_request::Item;
        let mut stream = req.into_inner();
        let h = match stream.message().await?.and_then(|m| m.item) {
            Some(Item::Header(h)) => h,
            _ => return Err(Error::invalid("upload must start with a feature set header").into()),
        };
        let name = check_name(&h.name)?;
        if h.size > MAX_UPLOAD_BYTES {
            return Err(Error::invalid(format!(
                "feature set is {} bytes, the limit is {MAX_UPLOAD_BYTES}",
                h.size
            ))
            .into());
        }
        if h.definition_json.len() > MAX_DEFINITION_BYTES {
            return Err(Error::invalid("feature set definition is larger than 64 KiB").into());
        }
        let definition: serde_json::Value = serde_json::from_str(if h.definition_json.is_empty() {
            "{}"
        } else {
            &h.definition_json
        })
        .map_err(|e| Error::invalid(format!("feature set definition is not valid JSON ({e})")))?;
        let mut bytes = Vec::with_capacity(h.size as usize);
        while let Some(msg) = stream.message().await? {
            match msg.item {
                Some(Item::Chunk(c)) => {
                    if bytes.len() as u64 + c.len() as u64 > h.size {
                        return Err(Error::invalid(format!(
                            "feature set is longer than the {} bytes its header announced",
                            h.size
                        ))
                        .into());
                    }
                    bytes.extend_from_slice(&c);
                }
                _ => return Err(Error::invalid("upload holds a second header").into()),
            }
        }
        let found = blake3::hash(&bytes).to_hex().to_string();
        if bytes.len() as u64 != h.size || found != h.blake3 {
            return Err(Error::invalid(format!(
                "feature set arrived as {} bytes with BLAKE3 {found}, its header announced {} and {}",
                bytes.len(),
                h.size,
                h.blake3
            ))
            .into());
        }
        let matrix = tokio::task::spawn_blocking(move || {
            FeatureMatrix::from_bytes(&bytes).map(|m| (m, bytes))
        })
        .await
        .map_err(|e| Error::Config(format!("check task failed: {e}")))?
        .map_err(|e| Error::invalid(format!("feature set refused: {e}")))?;
        let (matrix, bytes) = matrix;
        let resolved = serde_json::json!({ "upload": found, "definition": definition }).to_string();
        let info = Info {
            train_rows: matrix.train_rows() as u32,
            test_rows: matrix.test_rows() as u32,
            k: u32::from(matrix.k),
            columns: matrix.columns.iter().map(|c| c.name.clone()).collect(),
            models: vec![],
            kinds: vec![],
        };
        let rec = FeatureSetRecord {
            id: blake3::hash(resolved.as_bytes()).to_hex().to_string(),
            names: vec![],
            definition: resolved,
            info: serde_json::to_string(&info).expect("info serialises"),
            size: bytes.len() as u64,
            blake3: found,
            created_at: now_ms(),
        };
        let (stored, _) = self.store.put_feature_set(&rec, &bytes, name).await?;
        Ok(Response::new(features::info(&stored)))
    }

    async fn get_feature_set(
        &self,
        req: Request<pb::GetFeatureSetRequest>,
    ) -> Result<Response<pb::FeatureSetInfo>, Status> {
        let rec = self
            .store
            .get_feature_set(&req.into_inner().feature_set)
            .await?;
        Ok(Response::new(features::info(&rec)))
    }

    async fn list_feature_sets(
        &self,
        _req: Request<pb::ListFeatureSetsRequest>,
    ) -> Result<Response<pb::ListFeatureSetsResponse>, Status> {
        let all = self.store.list_feature_sets().await?;
        Ok(Response::new(pb::ListFeatureSetsResponse {
            feature_sets: all.iter().map(features::info).collect(),
        }))
    }

    type FetchFeatureSetStream = ReceiverStream<Result<pb::FileChunk, Status>>;

    async fn fetch_feature_set(
        &self,
        req: Request<pb::GetFeatureSetRequest>,
    ) -> Result<Response<Self::FetchFeatureSetStream>, Status> {
        let rec = self
            .store
            .get_feature_set(&req.into_inner().feature_set)
            .await?;
        let store = self.store.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut offset = 0u64;
            while offset < rec.size {
                let chunks = match store.feature_set_chunks(&rec.id, offset, 4).await {
                    Ok(c) if !c.is_empty() => c,
                    Ok(_) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "feature set {} is missing bytes from {offset}",
                                rec.id
                            ))))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                for (start, data) in chunks {
                    let n = data.len() as u64;
                    let chunk = pb::FileChunk {
                        path: rec.id.clone(),
                        offset: start,
                        data,
                    };
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                    offset = start + n;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
