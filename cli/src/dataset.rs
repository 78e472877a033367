//! `stackhive dataset …` and `stackhive folds …`: generate, validate, register and cache
//! datasets; report and compute folds. Local work (generating, validating, hashing, caching,
//! fold reports) uses the data crate directly; registering and stored folds go through the
//! coordinator's `DatasetService`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use stackhive_data::folds::{self, FoldSpec, Scheme};
use stackhive_data::validate::{load_and_validate, ImageCheck, ValidateOptions};
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::dataset_service_client::DatasetServiceClient;

use crate::client::{status_error, Api};
use crate::output::{print_json, Table};

#[derive(Args, Debug)]
pub struct DatasetArgs {
    #[command(subcommand)]
    pub command: DatasetCommand,
}

#[derive(Subcommand, Debug)]
pub enum DatasetCommand {
    /// Write a synthetic ISIC-like dataset (CSV + JPEGs) with a known oracle AUC.
    Synth(SynthArgs),
    /// Check a dataset folder and print what it holds.
    Validate(ValidateArgs),
    /// Validate, hash and register a dataset with the coordinator (uploading it if needed).
    Add(AddArgs),
    /// List registered datasets.
    List,
    /// Show one registered dataset by name or hash.
    Show { dataset: String },
    /// Build (or reuse) the preprocessed image cache of a dataset folder.
    Cache(CacheArgs),
    /// Register a plain table (an id, a binary target, features) as a level-2 feature set.
    AddTable(crate::level2::TableArgs),
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    #[arg(long, env = "STACKHIVE_SYNTH_OUT")]
    pub out: PathBuf,
    #[arg(long, env = "STACKHIVE_SYNTH_PATIENTS", default_value_t = 500)]
    pub patients: usize,
    #[arg(long, env = "STACKHIVE_SYNTH_TEST_PATIENTS", default_value_t = 125)]
    pub test_patients: usize,
    #[arg(long, env = "STACKHIVE_SYNTH_POSITIVE_RATE", default_value_t = 0.02)]
    pub positive_rate: f64,
    #[arg(long, env = "STACKHIVE_SYNTH_IMAGE_SIZE", default_value_t = 128)]
    pub image_size: u32,
    /// Extra external (ISIC 2019-like) training rows.
    #[arg(long, env = "STACKHIVE_SYNTH_EXTERNAL", default_value_t = 0)]
    pub external: usize,
    #[arg(long, env = "STACKHIVE_SYNTH_SEED", default_value_t = 42)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    pub path: PathBuf,
    /// Drop invalid rows (and say how many) instead of refusing the dataset.
    #[arg(long, env = "STACKHIVE_DROP_INVALID")]
    pub drop_invalid: bool,
    /// Decode every pixel of every image, not only headers and end markers.
    #[arg(long)]
    pub full_decode: bool,
}

#[derive(Args, Debug)]
pub struct AddArgs {
    pub name: String,
    pub path: PathBuf,
    #[arg(long, env = "STACKHIVE_DROP_INVALID")]
    pub drop_invalid: bool,
}

#[derive(Args, Debug)]
pub struct CacheArgs {
    pub path: PathBuf,
    #[arg(long, env = "STACKHIVE_CACHE_SIZE", default_value_t = 256)]
    pub size: u32,
    #[arg(long, env = "STACKHIVE_CACHE_DIR", default_value = "stackhive-cache")]
    pub cache_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct FoldsArgs {
    #[command(subcommand)]
    pub command: FoldsCommand,
}

#[derive(Subcommand, Debug)]
pub enum FoldsCommand {
    /// Per-fold rows, patients, positives and images-per-patient, every scheme side by side.
    Report {
        path: PathBuf,
        #[arg(long, default_value_t = 5)]
        k: u16,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Compute (once) and store the folds of a registered dataset on the coordinator.
    Compute {
        dataset: String,
        #[arg(long, default_value = "triple-stratified")]
        scheme: String,
        #[arg(long, default_value_t = 5)]
        k: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

pub async fn run(coordinator: &str, json: bool, args: &DatasetArgs) -> anyhow::Result<()> {
    match &args.command {
        DatasetCommand::Synth(a) => synth(json, a).await,
        DatasetCommand::Validate(a) => validate(json, a).await,
        DatasetCommand::Add(a) => add(coordinator, json, a).await,
        DatasetCommand::List => list(coordinator, json).await,
        DatasetCommand::Show { dataset } => show(coordinator, json, dataset).await,
        DatasetCommand::Cache(a) => cache(json, a).await,
        DatasetCommand::AddTable(a) => crate::level2::add_table(coordinator, json, a).await,
    }
}

pub async fn run_folds(coordinator: &str, json: bool, args: &FoldsArgs) -> anyhow::Result<()> {
    match &args.command {
        FoldsCommand::Report { path, k, seed } => folds_report(json, path, *k, *seed).await,
        FoldsCommand::Compute {
            dataset,
            scheme,
            k,
            seed,
        } => folds_compute(coordinator, json, dataset, scheme, *k, *seed).await,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("worker thread failed")?
}

async fn synth(json: bool, a: &SynthArgs) -> anyhow::Result<()> {
    let cfg = stackhive_data::synth::SynthConfig {
        patients: a.patients,
        test_patients: a.test_patients,
        positive_rate: a.positive_rate,
        image_size: a.image_size,
        seed: a.seed,
        external_2019: a.external,
        progress: !json,
        ..Default::default()
    };
    let out = a.out.clone();
    let report = blocking(move || Ok(stackhive_data::synth::generate(&cfg, &out)?)).await?;
    if json {
        print_json(&serde_json::to_value(&report)?);
    } else {
        outln!(
            "wrote {}: {} train rows from {} patients ({} positive), {} test rows, {} external rows",
            a.out.display(),
            report.rows,
            report.patients,
            report.positives,
            report.test_rows,
            report.external_rows
        );
        if let Some(auc) = report.oracle_auc {
            outln!("oracle AUC {auc:.4} (the best any model can reach on these train rows)");
        }
        if let Some(auc) = report.metadata_oracle_auc {
            outln!("metadata-only oracle AUC {auc:.4}");
        }
    }
    Ok(())
}

fn validate_blocking(
    path: PathBuf,
    drop_invalid: bool,
    full: bool,
) -> anyhow::Result<(
    stackhive_data::isic::Dataset,
    stackhive_data::validate::ValidationReport,
)> {
    let opts = ValidateOptions {
        drop_invalid,
        image_check: if full {
            ImageCheck::Full
        } else {
            ImageCheck::Header
        },
    };
    Ok(load_and_validate(&path, &opts)?)
}

async fn validate(json: bool, a: &ValidateArgs) -> anyhow::Result<()> {
    let (p, d, f) = (a.path.clone(), a.drop_invalid, a.full_decode);
    let (_, report) = blocking(move || validate_blocking(p, d, f)).await?;
    if json {
        print_json(&serde_json::to_value(&report)?);
    } else {
        outln!("{report}");
    }
    Ok(())
}

/// Counts shown with a registered dataset.
fn summary(ds: &stackhive_data::isic::Dataset) -> serde_json::Value {
    let internal: Vec<_> = ds.train.iter().filter(|r| !r.is_external()).collect();
    let positives = internal.iter().filter(|r| r.target == 1).count();
    let patients: std::collections::HashSet<&str> =
        ds.train.iter().map(|r| r.patient_id.as_str()).collect();
    json!({
        "train_rows": ds.train.len(),
        "external_rows": ds.train.len() - internal.len(),
        "test_rows": ds.test.len(),
        "patients": patients.len(),
        "positives": positives,
        "positive_rate": if internal.is_empty() { 0.0 } else { positives as f64 / internal.len() as f64 },
    })
}

/// Writes the kept rows of a dataset with dropped rows into a staging folder, linking the
/// images, so that what is hashed and registered is exactly what validated.
fn stage_cleaned(
    ds: &stackhive_data::isic::Dataset,
    src: &Path,
) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    stackhive_data::isic::write_train_csv(&dir.path().join("train.csv"), &ds.train)?;
    stackhive_data::isic::write_test_csv(&dir.path().join("test.csv"), &ds.test)?;
    std::fs::create_dir(dir.path().join("images"))?;
    let names = ds
        .train
        .iter()
        .map(|r| &r.image_name)
        .chain(ds.test.iter().map(|r| &r.image_name));
    for name in names {
        let from = stackhive_data::isic::image_path(src, name);
        let to = stackhive_data::isic::image_path(dir.path(), name);
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
        }
    }
    Ok(dir)
}

async fn add(coordinator: &str, json: bool, a: &AddArgs) -> anyhow::Result<()> {
    let api = Api::connect(coordinator).await?;
    let added = add_dataset(&api, &a.name, &a.path, a.drop_invalid, !json).await?;
    if json {
        print_json(&json!({
            "hash": added.uploaded.info.hash,
            "names": added.uploaded.info.names,
            "uploaded_bytes": added.uploaded.sent_bytes,
            "summary": added.summary,
            "dropped_rows": added.dropped_rows,
        }));
    } else {
        let how = if added.uploaded.sent_bytes == 0 {
            "content already stored, name added".to_string()
        } else {
            format!("uploaded {} bytes", added.uploaded.sent_bytes)
        };
        outln!(
            "registered {} as {} ({how})",
            a.name,
            added.uploaded.info.hash
        );
    }
    Ok(())
}

/// What [`add_dataset`] registered.
pub struct Added {
    pub uploaded: crate::upload::Uploaded,
    pub summary: serde_json::Value,
    pub dropped_rows: usize,
}

/// Validates the ISIC-layout folder `path` (dropping invalid rows when asked), hashes it and
/// registers it as `name`, uploading its files unless the coordinator has them already.
pub async fn add_dataset(
    api: &Api,
    name: &str,
    path: &Path,
    drop_invalid: bool,
    progress: bool,
) -> anyhow::Result<Added> {
    let path = path.to_path_buf();
    let (staged, dir, hash, manifest, summary, report) = blocking(move || {
        let (ds, report) = validate_blocking(path.clone(), drop_invalid, false)?;
        let summary = summary(&ds);
        let staged = if report.dropped_total() > 0 {
            Some(stage_cleaned(&ds, &path)?)
        } else {
            None
        };
        let dir = staged
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or(path);
        let (hash, manifest) = stackhive_data::hash::dataset_hash(&dir)?;
        Ok((staged, dir, hash, manifest, summary, report))
    })
    .await?;
    if report.dropped_total() > 0 && progress {
        eprintln!(
            "dropped {} invalid rows: {:?}",
            report.dropped_total(),
            report.dropped
        );
    }
    let outgoing = crate::upload::Outgoing {
        name,
        dir: &dir,
        hash: &hash,
        manifest: &manifest,
        summary: &summary,
    };
    let uploaded = crate::upload::upload(api.channel(), api.url(), outgoing, progress).await?;
    drop(staged);
    Ok(Added {
        uploaded,
        summary,
        dropped_rows: report.dropped_total(),
    })
}

fn datasets_client(api: &Api) -> DatasetServiceClient<stackhive_proto::connect::AuthChannel> {
    DatasetServiceClient::new(api.channel()).max_decoding_message_size(256 << 20)
}

fn info_json(d: &pb::DatasetInfo) -> serde_json::Value {
    json!({
        "hash": d.hash,
        "names": d.names,
        "files": d.files,
        "total_bytes": d.total_bytes,
        "registered_at_ms": d.registered_at_ms,
        "summary": serde_json::from_str::<serde_json::Value>(&d.summary_json).unwrap_or_default(),
        "storage_path": d.storage_path,
    })
}

async fn list(coordinator: &str, json: bool) -> anyhow::Result<()> {
    let api = Api::connect(coordinator).await?;
    let all = datasets_client(&api)
        .list_datasets(pb::ListDatasetsRequest {})
        .await
        .map_err(|s| status_error(api.url(), &s))?
        .into_inner()
        .datasets;
    if json {
        print_json(&json!(all.iter().map(info_json).collect::<Vec<_>>()));
        return Ok(());
    }
    let mut t = Table::new(&[
        "HASH",
        "NAMES",
        "FILES",
        "BYTES",
        "TRAIN",
        "TEST",
        "POSITIVES",
    ]);
    for d in &all {
        let s: serde_json::Value = serde_json::from_str(&d.summary_json).unwrap_or_default();
        t.push(vec![
            d.hash[..12.min(d.hash.len())].to_string(),
            d.names.join(","),
            d.files.to_string(),
            d.total_bytes.to_string(),
            s["train_rows"].to_string(),
            s["test_rows"].to_string(),
            s["positives"].to_string(),
        ]);
    }
    out!("{}", t.render());
    Ok(())
}

async fn show(coordinator: &str, json: bool, dataset: &str) -> anyhow::Result<()> {
    let api = Api::connect(coordinator).await?;
    let d = datasets_client(&api)
        .get_dataset(pb::GetDatasetRequest {
            dataset: dataset.to_string(),
        })
        .await
        .map_err(|s| status_error(api.url(), &s))?
        .into_inner();
    if json {
        print_json(&info_json(&d));
    } else {
        outln!("{}", serde_json::to_string_pretty(&info_json(&d))?);
    }
    Ok(())
}

async fn cache(json: bool, a: &CacheArgs) -> anyhow::Result<()> {
    let (path, size, dir) = (a.path.clone(), a.size, a.cache_dir.clone());
    let progress = !json;
    let ensured = blocking(move || {
        Ok(stackhive_data::cache::ensure_cache(
            &path, size, &dir, progress,
        )?)
    })
    .await?;
    let c = &ensured.cache;
    if json {
        print_json(&json!({
            "path": c.path(),
            "images": c.len(),
            "size": c.size(),
            "built": ensured.built.as_ref().map(|r| json!({
                "seconds": r.elapsed.as_secs_f64(),
                "images_per_sec": r.images_per_sec(),
                "vignettes_cropped": r.vignettes,
            })),
        }));
    } else {
        match &ensured.built {
            Some(r) => {
                outln!(
                "built {} ({} images of {}×{}) in {:.1} s, {:.0} images/s, {} vignettes cropped",
                c.path().display(), c.len(), c.size(), c.size(), r.elapsed.as_secs_f64(),
                r.images_per_sec(), r.vignettes
            )
            }
            None => outln!(
                "reused {} ({} images of {}×{})",
                c.path().display(),
                c.len(),
                c.size(),
                c.size()
            ),
        }
    }
    Ok(())
}

async fn folds_report(json: bool, path: &Path, k: u16, seed: u64) -> anyhow::Result<()> {
    let path = path.to_path_buf();
    let reports = blocking(move || {
        let ds = stackhive_data::isic::Dataset::load(&path)?;
        let mut out = Vec::new();
        for scheme in Scheme::ALL {
            let f = folds::assign(&ds.train, &FoldSpec { scheme, k, seed })?;
            out.push((scheme, folds::report(&ds.train, &f)?));
        }
        Ok(out)
    })
    .await?;
    if json {
        let v: serde_json::Map<String, serde_json::Value> = reports
            .iter()
            .map(|(s, r)| {
                (
                    s.name().to_string(),
                    serde_json::to_value(r).unwrap_or_default(),
                )
            })
            .collect();
        print_json(&serde_json::Value::Object(v));
    } else {
        let cols: Vec<(&str, &folds::FoldReport)> =
            reports.iter().map(|(s, r)| (s.name(), r)).collect();
        out!("{}", folds::FoldReport::render_table(&cols));
    }
    Ok(())
}

async fn folds_compute(
    coordinator: &str,
    json: bool,
    dataset: &str,
    scheme: &str,
    k: u32,
    seed: u64,
) -> anyhow::Result<()> {
    let api = Api::connect(coordinator).await?;
    let r = datasets_client(&api)
        .compute_folds(pb::FoldsRequest {
            dataset: dataset.to_string(),
            scheme: scheme.to_string(),
            k,
            seed,
        })
        .await
        .map_err(|s| status_error(api.url(), &s))?
        .into_inner();
    let report: serde_json::Value = serde_json::from_str(&r.report_json).unwrap_or_default();
    if json {
        print_json(&json!({
            "dataset": r.dataset_hash, "scheme": r.scheme, "k": r.k, "seed": r.seed,
            "computed_now": r.computed_now, "rows": r.fold.len(), "report": report,
        }));
    } else {
        let how = if r.computed_now {
            "computed and stored"
        } else {
            "already stored"
        };
        outln!(
            "{} folds k={} seed={} of {}: {how}, {} rows",
            r.scheme,
            r.k,
            r.seed,
            r.dataset_hash,
            r.fold.len()
        );
        if let Ok(rep) = serde_json::from_value::<folds::FoldReport>(report) {
            out!(
                "{}",
                folds::FoldReport::render_table(&[(r.scheme.as_str(), &rep)])
            );
        }
    }
    Ok(())
}
