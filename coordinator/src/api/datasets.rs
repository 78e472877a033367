//! `DatasetService`: upload (verified before it is registered), stat, get, list, fetch in chunks,
//! and folds computed once per (dataset, scheme, k, seed).

use std::sync::Arc;

use stackhive_proto::v1 as pb;
use stackhive_proto::v1::dataset_service_server::DatasetService;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::domain::model::*;
use crate::error::Error;
use crate::services::datasets::{self, check_hash, DatasetFiles, SERVE_CHUNK};
use crate::services::folds;
use crate::store::Store;

/// Largest dataset summary (the CLI's statistics) accepted in an upload header.
const MAX_SUMMARY_BYTES: usize = 1 << 20;

pub struct DatasetApi {
    store: Arc<dyn Store>,
    files: DatasetFiles,
    /// Registration and the clean-up of a refused one run one at a time, so that a refused
    /// upload never removes content another upload of the same bytes is registering.
    registering: tokio::sync::Mutex<()>,
}

impl DatasetApi {
    pub fn new(store: Arc<dyn Store>, files: DatasetFiles) -> Self {
        Self {
            store,
            files,
            registering: tokio::sync::Mutex::new(()),
        }
    }
}

fn info(r: &DatasetRecord) -> pb::DatasetInfo {
    pb::DatasetInfo {
        hash: r.hash.clone(),
        names: r.names.clone(),
        manifest_json: r.manifest.clone(),
        summary_json: r.summary.clone(),
        registered_at_ms: r.registered_at,
        total_bytes: r.total_bytes,
        files: r.files,
        storage_path: r.storage_path.clone(),
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if !ok {
        return Err(Error::invalid(format!(
            "dataset name {name:?} is not valid, expected 1 to 128 letters, digits and _-."
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl DatasetService for DatasetApi {
    async fn stat_dataset(
        &self,
        req: Request<pb::StatDatasetRequest>,
    ) -> Result<Response<pb::StatDatasetResponse>, Status> {
        let hash = req.into_inner().hash;
        check_hash(&hash)?;
        let stored = self.store.get_dataset(&hash).await.is_ok() && self.files.has(&hash);
        Ok(Response::new(pb::StatDatasetResponse { stored }))
    }

    async fn upload_dataset(
        &self,
        req: Request<Streaming<pb::UploadDatasetRequest>>,
    ) -> Result<Response<pb::UploadDatasetResponse>, Status> {
        use pb::upload_dataset_request::Item;
        let mut stream = req.into_inner();
        let header = match stream.message().await?.and_then(|m| m.item) {
            Some(Item::Header(h)) => h,
            Some(Item::Chunk(_)) => {
                return Err(Error::invalid(
                    "upload must start with a dataset header, found a file chunk",
                )
                .into())
            }
            None => return Err(Error::invalid("upload holds no dataset header").into()),
        };
        check_name(&header.name)?;
        let manifest = datasets::verified_manifest(&header.hash, &header.manifest_json)?;
        if header.summary_json.len() > MAX_SUMMARY_BYTES {
            return Err(Error::invalid(format!(
                "dataset summary is {} bytes, the limit is {MAX_SUMMARY_BYTES}",
                header.summary_json.len()
            ))
            .into());
        }
        serde_json::from_str::<serde_json::Value>(&header.summary_json)
            .map_err(|e| Error::invalid(format!("dataset summary is not valid JSON ({e})")))?;
        // A name taken by other content is refused before a byte is received.
        if let Ok(taken) = self.store.get_dataset(&header.name).await {
            if taken.hash != header.hash && taken.names.contains(&header.name) {
                return Err(Error::AlreadyExists(format!(
                    "dataset name {} is already registered for content {}",
                    header.name, taken.hash
                ))
                .into());
            }
        }

        let record = |path: &std::path::Path| DatasetRecord {
            hash: header.hash.clone(),
            names: vec![],
            manifest: header.manifest_json.clone(),
            summary: header.summary_json.clone(),
            storage_path: path.display().to_string(),
            total_bytes: manifest.total_size(),
            files: manifest.files.len() as u32,
            registered_at: 0,
        };
        if self.files.has(&header.hash) {
            // Content already here (and verified when it arrived): only the name is new. Any
            // chunks sent anyway are ignored.
            while stream.message().await?.is_some() {}
            let _one = self.registering.lock().await;
            if !self.files.has(&header.hash) {
                return Err(Error::FailedPrecondition(format!(
                    "dataset {} was removed while registering; upload it again",
                    header.hash
                ))
                .into());
            }
            let rec = self
                .store
                .register_dataset(&record(&self.files.path_of(&header.hash)), &header.name)
                .await?;
            return Ok(Response::new(pb::UploadDatasetResponse {
                dataset: Some(info(&rec)),
                received_bytes: 0,
            }));
        }
        let mut upload = self
            .files
            .start_upload(&header.hash, manifest.clone())
            .await?;
        while let Some(msg) = stream.message().await? {
            match msg.item {
                Some(Item::Chunk(c)) => upload.write(&c.path, c.offset, &c.data).await?,
                Some(Item::Header(_)) => {
                    return Err(Error::invalid("upload holds a second dataset header").into())
                }
                None => {}
            }
        }
        let received = upload.received;
        let placed = upload.finish().await?;
        let _one = self.registering.lock().await;
        let registered = self
            .store
            .register_dataset(&record(&placed.path), &header.name)
            .await;
        let rec = match registered {
            Ok(rec) => rec,
            Err(e) => {
                // Nothing half-written: content this upload placed goes again unless some
                // registration (another name, another coordinator) already owns it.
                if placed.created && self.store.get_dataset(&header.hash).await.is_err() {
                    if let Err(rm) = self.files.remove(&header.hash).await {
                        tracing::warn!(hash = %header.hash, error = %rm, "cannot remove the files of a refused dataset");
                    }
                }
                return Err(e.into());
            }
        };
        tracing::info!(hash = %rec.hash, name = %header.name, bytes = received, "dataset registered");
        Ok(Response::new(pb::UploadDatasetResponse {
            dataset: Some(info(&rec)),
            received_bytes: received,
        }))
    }

    async fn get_dataset(
        &self,
        req: Request<pb::GetDatasetRequest>,
    ) -> Result<Response<pb::DatasetInfo>, Status> {
        let rec = self.store.get_dataset(&req.into_inner().dataset).await?;
        Ok(Response::new(info(&rec)))
    }

    async fn list_datasets(
        &self,
        _req: Request<pb::ListDatasetsRequest>,
    ) -> Result<Response<pb::ListDatasetsResponse>, Status> {
        let all = self.store.list_datasets().await?;
        Ok(Response::new(pb::ListDatasetsResponse {
            datasets: all.iter().map(info).collect(),
        }))
    }

    type FetchDatasetStream = ReceiverStream<Result<pb::FileChunk, Status>>;

    async fn fetch_dataset(
        &self,
        req: Request<pb::FetchDatasetRequest>,
    ) -> Result<Response<Self::FetchDatasetStream>, Status> {
        let r = req.into_inner();
        let rec = self.store.get_dataset(&r.hash).await?;
        if !self.files.has(&rec.hash) {
            return Err(Error::NotFound(format!(
                "dataset {} is registered but its files are not on this coordinator; fetch it \
                 through the coordinator it was uploaded to, or share the data folder",
                rec.hash
            ))
            .into());
        }
        // Checked again before serving: a row written before manifests were verified must not
        // name a file outside the dataset.
        let manifest = datasets::verified_manifest(&rec.hash, &rec.manifest).map_err(|e| {
            Error::FailedPrecondition(format!(
                "dataset {} is registered with a manifest this coordinator will not serve ({e}); \
                 register the dataset again",
                rec.hash
            ))
        })?;
        let mut paths: Vec<String> = manifest.files.iter().map(|f| f.path.clone()).collect();
        if !r.paths.is_empty() {
            if let Some(p) = r.paths.iter().find(|p| manifest.get(p).is_none()) {
                return Err(
                    Error::NotFound(format!("dataset {} has no file {p}", rec.hash)).into(),
                );
            }
            paths = r.paths.clone();
        }
        let root = self.files.path_of(&rec.hash);
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            for p in paths {
                let mut f = match tokio::fs::File::open(root.join(&p)).await {
                    Ok(f) => f,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("cannot read {p}: {e}"))))
                            .await;
                        return;
                    }
                };
                let mut offset = 0u64;
                loop {
                    let mut buf = vec![0u8; SERVE_CHUNK];
                    let n = match f.read(&mut buf).await {
                        Ok(n) => n,
                        Err(e) => {
                            let _ = tx
                                .send(Err(Status::internal(format!("cannot read {p}: {e}"))))
                                .await;
                            return;
                        }
                    };
                    if n == 0 && offset > 0 {
                        break;
                    }
                    buf.truncate(n);
                    let chunk = pb::FileChunk {
                        path: p.clone(),
                        offset,
                        data: buf,
                    };
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                    offset += n as u64;
                    if n == 0 {
                        break;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn compute_folds(
        &self,
        req: Request<pb::FoldsRequest>,
    ) -> Result<Response<pb::FoldsResponse>, Status> {
        let r = req.into_inner();
        let rec = self.store.get_dataset(&r.dataset).await?;
        let spec = folds::spec(&r.scheme, r.k, r.seed)?;
        if let Some(stored) = self
            .store
            .get_folds(&rec.hash, &spec.0, spec.1, spec.2)
            .await?
        {
            return Ok(Response::new(folds::response(&stored, false)?));
        }
        if !self.files.has(&rec.hash) {
            return Err(Error::FailedPrecondition(format!(
                "dataset {}'s files are not on this coordinator, so its folds cannot be computed here",
                rec.hash
            ))
            .into());
        }
        let root = self.files.path_of(&rec.hash);
        let computed = folds::compute(root, &rec.hash, spec).await?;
        let (stored, inserted) = self.store.put_folds(&computed).await?;
        Ok(Response::new(folds::response(&stored, inserted)?))
    }

    async fn get_folds(
        &self,
        req: Request<pb::FoldsRequest>,
    ) -> Result<Response<pb::FoldsResponse>, Status> {
        let r = req.into_inner();
        let rec = self.store.get_dataset(&r.dataset).await?;
        let (scheme, k, seed) = folds::spec(&r.scheme, r.k, r.seed)?;
        let stored = self
            .store
            .get_folds(&rec.hash, &scheme, k, seed)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                "no {scheme} folds with k={k} and seed={seed} for dataset {}; compute them first",
                rec.hash
            ))
            })?;
        Ok(Response::new(folds::response(&stored, false)?))
    }
}
