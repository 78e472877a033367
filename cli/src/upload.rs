//! Sending a dataset folder to the coordinator: hash it, ask whether the content is already
//! stored, and if not stream it in 1 MiB chunks with a progress bar. The coordinator verifies
//! every file and the whole hash before it registers anything.

use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use stackhive_data::hash::Manifest;
use stackhive_proto::connect::AuthChannel as Channel;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::dataset_service_client::DatasetServiceClient;
use stackhive_proto::v1::upload_dataset_request::Item;
use tokio::io::AsyncReadExt;

use crate::client::status_error;

const CHUNK: usize = 1 << 20;

pub struct Uploaded {
    pub info: pb::DatasetInfo,
    pub sent_bytes: u64,
}

/// A validated dataset folder and what was computed from it.
pub struct Outgoing<'a> {
    pub name: &'a str,
    pub dir: &'a Path,
    pub hash: &'a str,
    pub manifest: &'a Manifest,
    pub summary: &'a serde_json::Value,
}

/// Uploads `out.dir` under `out.name` to the coordinator at `url`.
pub async fn upload(
    channel: Channel,
    url: &str,
    out: Outgoing<'_>,
    progress: bool,
) -> anyhow::Result<Uploaded> {
    let Outgoing {
        name,
        dir,
        hash,
        manifest,
        summary,
    } = out;
    let mut client = DatasetServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let stored = client
        .stat_dataset(pb::StatDatasetRequest {
            hash: hash.to_string(),
        })
        .await
        .map_err(|s| status_error(url, &s))?
        .into_inner()
        .stored;
    let header = pb::DatasetHeader {
        name: name.to_string(),
        hash: hash.to_string(),
        manifest_json: serde_json::to_string(manifest)?,
        summary_json: summary.to_string(),
    };
    let total: u64 = if stored {
        0
    } else {
        manifest.files.iter().map(|f| f.size).sum()
    };
    let bar = if progress && total > 0 {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} · {bytes_per_sec} · eta {eta}",
            )
            .expect("static template"),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::UploadDatasetRequest>(4);
    let files: Vec<(String, std::path::PathBuf)> = if stored {
        Vec::new()
    } else {
        manifest
            .files
            .iter()
            .map(|f| (f.path.clone(), dir.join(&f.path)))
            .collect()
    };
    let sender = {
        let bar = bar.clone();
        tokio::spawn(async move {
            if tx
                .send(pb::UploadDatasetRequest {
                    item: Some(Item::Header(header)),
                })
                .await
                .is_err()
            {
                return Ok(());
            }
            for (rel, path) in files {
                let mut f = tokio::fs::File::open(&path)
                    .await
                    .with_context(|| format!("cannot open {}", path.display()))?;
                let mut offset = 0u64;
                loop {
                    let mut buf = vec![0u8; CHUNK];
                    let n = f
                        .read(&mut buf)
                        .await
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    if n == 0 {
                        break;
                    }
                    buf.truncate(n);
                    let chunk = pb::FileChunk {
                        path: rel.clone(),
                        offset,
                        data: buf,
                    };
                    if tx
                        .send(pb::UploadDatasetRequest {
                            item: Some(Item::Chunk(chunk)),
                        })
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                    offset += n as u64;
                    bar.inc(n as u64);
                }
            }
            anyhow::Ok(())
        })
    };
    let response = client
        .upload_dataset(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| status_error(url, &s));
    bar.finish_and_clear();
    sender.await??;
    let r = response?.into_inner();
    Ok(Uploaded {
        info: r.dataset.unwrap_or_default(),
        sent_bytes: r.received_bytes,
    })
}
