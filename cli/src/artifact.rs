//! `stackhive artifact`: list a job's artifacts and download one (e.g. a `cnn` fold's
//! `model.ot`), verified against the size and BLAKE3 the coordinator recorded. The download is
//! written beside the target and renamed, so a failed one leaves no partial file.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::artifact_service_client::ArtifactServiceClient;
use tokio::io::AsyncWriteExt;

use crate::client::{status_error, Api};
use crate::output::{print_json, Table};

#[derive(Args, Debug)]
pub struct ArtifactArgs {
    #[command(subcommand)]
    pub command: ArtifactCommand,
}

#[derive(Subcommand, Debug)]
pub enum ArtifactCommand {
    /// List the artifacts a job left (name, size, BLAKE3, attempt).
    List { job: i64 },
    /// Download one artifact of a job.
    Get {
        job: i64,
        /// Artifact name.
        #[arg(long, default_value = "model.ot")]
        name: String,
        /// Where to write it (default: `job-<id>-<name>` in the current folder).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

fn client(api: &Api) -> ArtifactServiceClient<stackhive_proto::connect::AuthChannel> {
    ArtifactServiceClient::new(api.channel()).max_decoding_message_size(64 << 20)
}

fn info_json(a: &pb::ArtifactInfo) -> serde_json::Value {
    json!({
        "job_id": a.job_id,
        "attempt": a.attempt,
        "name": a.name,
        "bytes": a.size,
        "blake3": a.blake3,
        "created_at_ms": a.created_at_ms,
    })
}

pub async fn run(coordinator: &str, json: bool, args: &ArtifactArgs) -> anyhow::Result<()> {
    let api = Api::connect(coordinator).await?;
    match &args.command {
        ArtifactCommand::List { job } => {
            let all = client(&api)
                .list_artifacts(pb::ListArtifactsRequest { job_id: *job })
                .await
                .map_err(|s| status_error(api.url(), &s))?
                .into_inner()
                .artifacts;
            if json {
                print_json(&json!(all.iter().map(info_json).collect::<Vec<_>>()));
                return Ok(());
            }
            let mut t = Table::new(&["NAME", "BYTES", "ATTEMPT", "BLAKE3"]);
            for a in &all {
                t.push(vec![
                    a.name.clone(),
                    a.size.to_string(),
                    a.attempt.to_string(),
                    a.blake3[..16.min(a.blake3.len())].to_string(),
                ]);
            }
            out!("{}", t.render());
        }
        ArtifactCommand::Get { job, name, output } => {
            let mut c = client(&api);
            let listed = c
                .list_artifacts(pb::ListArtifactsRequest { job_id: *job })
                .await
                .map_err(|s| status_error(api.url(), &s))?
                .into_inner();
            let Some(info) = listed.artifacts.iter().find(|a| &a.name == name) else {
                let names: Vec<&str> = listed.artifacts.iter().map(|a| a.name.as_str()).collect();
                anyhow::bail!(
                    "job {job} has no artifact {name:?}; it has {}",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                );
            };
            let target = output
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("job-{job}-{name}")));
            let tmp = target.with_file_name(format!(
                ".{}.part",
                target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("artifact")
            ));
            let result = async {
                let mut out = tokio::fs::File::create(&tmp)
                    .await
                    .with_context(|| format!("cannot create {}", tmp.display()))?;
                let mut stream = c
                    .fetch_artifact(pb::FetchArtifactRequest {
                        job_id: *job,
                        name: name.clone(),
                    })
                    .await
                    .map_err(|s| status_error(api.url(), &s))?
                    .into_inner();
                let mut hasher = blake3::Hasher::new();
                let mut size = 0u64;
                while let Some(chunk) = stream
                    .message()
                    .await
                    .map_err(|s| status_error(api.url(), &s))?
                {
                    hasher.update(&chunk.data);
                    size += chunk.data.len() as u64;
                    out.write_all(&chunk.data).await?;
                }
                out.sync_all().await?;
                let found = hasher.finalize().to_hex().to_string();
                if size != info.size || found != info.blake3 {
                    anyhow::bail!(
                        "artifact {name} of job {job} arrived with {size} bytes, BLAKE3 {found}; expected {} bytes, BLAKE3 {}",
                        info.size,
                        info.blake3
                    );
                }
                tokio::fs::rename(&tmp, &target)
                    .await
                    .with_context(|| format!("cannot write {}", target.display()))?;
                Ok(())
            }
            .await;
            if result.is_err() {
                let _ = tokio::fs::remove_file(&tmp).await;
            }
            result?;
            if json {
                let mut v = info_json(info);
                v["path"] = json!(target);
                print_json(&v);
            } else {
                outln!(
                    "wrote {} ({} bytes, BLAKE3 {})",
                    target.display(),
                    info.size,
                    info.blake3
                );
            }
        }
    }
    Ok(())
}
