//! Level-2 commands (issue 12): `features` (build, list and show feature sets), `predictions
//! import` (a notebook's out-of-fold and test CSVs as a level-1 model), `dataset add-table` (a
//! plain tabular dataset, stacked directly), `sweep` (create and control sweeps), `leaderboard`
//! (a sweep's models ranked by CV AUC) and `models` (the zoo and its hyperparameter spaces).
//! Everything goes through the public gRPC API.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::feature_service_client::FeatureServiceClient;
use stackhive_proto::v1::sweep_service_client::SweepServiceClient;
use stackhive_spec::stack::{Dist, ModelType};

use crate::client::{status_error, Api};
use crate::output::{print_json, Table};

#[derive(Args, Debug)]
pub struct FeaturesArgs {
    #[command(subcommand)]
    pub command: FeaturesCommand,
}

#[derive(Subcommand, Debug)]
pub enum FeaturesCommand {
    /// Build (once) the feature set of a dataset's level-1 models and name it.
    Build(BuildArgs),
    /// List the feature sets.
    List,
    /// Show one feature set: rows, columns, models.
    Show { feature_set: String },
}

#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// Name for the set.
    pub name: String,
    /// Registered dataset (name or hash).
    #[arg(long)]
    pub dataset: String,
    /// The models: the succeeded jobs with predictions of this experiment (repeat the flag to
    /// join several, e.g. level 1 and level 2)...
    #[arg(long, conflicts_with = "jobs")]
    pub experiment: Vec<String>,
    /// ...or these jobs (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub jobs: Vec<i64>,
    #[command(flatten)]
    pub folds: FoldFlags,
    /// Add sex, age, site and images per patient.
    #[arg(long)]
    pub tabular: bool,
    /// Add each model's patient mean and max, and the image's rank and z-score in its patient.
    #[arg(long)]
    pub patient: bool,
    /// Restacking: also add the columns the chosen stack models trained on (a level-3 set).
    #[arg(long)]
    pub restack: bool,
    /// Keep a random subset of this many models.
    #[arg(long, default_value_t = 0)]
    pub sample: u32,
    #[arg(long, default_value_t = 0)]
    pub sample_seed: u64,
}

/// The stored folds a feature set uses.
#[derive(Args, Debug, Clone)]
pub struct FoldFlags {
    /// Fold scheme: triple-stratified (default), stratified, group.
    #[arg(long, default_value = "triple-stratified")]
    pub scheme: String,
    #[arg(long, default_value_t = 5)]
    pub k: u32,
    #[arg(long = "fold-seed", default_value_t = 42)]
    pub fold_seed: u64,
}

#[derive(Args, Debug)]
pub struct PredictionsArgs {
    #[command(subcommand)]
    pub command: PredictionsCommand,
}

#[derive(Subcommand, Debug)]
pub enum PredictionsCommand {
    /// Register a model's predictions made elsewhere (`image_name,prediction` CSVs).
    Import {
        experiment: String,
        /// The model's name.
        #[arg(long)]
        name: String,
        /// Registered dataset (name or hash) the images belong to.
        #[arg(long)]
        dataset: String,
        /// Out-of-fold predictions: one per validating train image.
        #[arg(long)]
        oof: PathBuf,
        /// Test predictions: one per test image.
        #[arg(long)]
        test: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
pub struct TableArgs {
    /// Name of the feature set.
    pub name: String,
    /// The train CSV.
    pub train: PathBuf,
    /// A test CSV with the same feature columns.
    #[arg(long)]
    pub test: Option<PathBuf>,
    #[arg(long, default_value = "id")]
    pub id: String,
    #[arg(long, default_value = "target")]
    pub target: String,
    /// Rows of one group never straddle folds.
    #[arg(long)]
    pub group: Option<String>,
    #[arg(long, default_value_t = 5)]
    pub k: u16,
    #[arg(long = "fold-seed", default_value_t = 42)]
    pub fold_seed: u64,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub command: Option<SweepCommand>,
    #[command(flatten)]
    pub create: SweepCreate,
}

#[derive(Args, Debug, Clone)]
pub struct SweepCreate {
    /// Experiment the sweep's jobs belong to.
    pub experiment: Option<String>,
    /// Jobs to run.
    #[arg(long)]
    pub n: Option<u64>,
    /// Model types to draw from (comma separated; default: every type).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A feature set (id or name)...
    #[arg(long, conflicts_with = "level1")]
    pub features: Option<String>,
    /// ...or the level-1 experiment to build one from once its jobs have finished (with
    /// --dataset).
    #[arg(long, requires = "dataset")]
    pub level1: Option<String>,
    #[arg(long)]
    pub dataset: Option<String>,
    #[command(flatten)]
    pub folds: FoldFlags,
    #[arg(long)]
    pub tabular: bool,
    #[arg(long)]
    pub patient: bool,
    /// With --level1 naming a level-2 experiment: also the columns its models trained on.
    #[arg(long)]
    pub restack: bool,
    /// CPU slots (and threads) per job.
    #[arg(long, default_value_t = 1)]
    pub cpu_slots: u32,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
}

#[derive(Subcommand, Debug)]
pub enum SweepCommand {
    /// List sweeps.
    List,
    /// A sweep's progress.
    Status { id: i64 },
    /// Stop feeding and cancel its queued jobs.
    Pause { id: i64 },
    /// Bring paused jobs back and feed again.
    Resume { id: i64 },
    /// Cancel every unfinished job of the sweep.
    Cancel { id: i64 },
    /// Add jobs.
    Extend {
        id: i64,
        #[arg(long)]
        n: u64,
    },
}

#[derive(Args, Debug)]
pub struct LeaderboardArgs {
    pub experiment: String,
    /// Rows shown.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
}

fn features_client(api: &Api) -> FeatureServiceClient<stackhive_proto::connect::AuthChannel> {
    FeatureServiceClient::new(api.channel())
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20)
}

fn set_json(s: &pb::FeatureSetInfo) -> serde_json::Value {
    json!({
        "id": s.id, "names": s.names, "train_rows": s.train_rows, "test_rows": s.test_rows,
        "k": s.k, "columns": s.columns, "models": s.models, "bytes": s.size,
        "blake3": s.blake3, "definition": serde_json::from_str::<serde_json::Value>(&s.definition_json).unwrap_or_default(),
    })
}

fn print_set(json: bool, s: &pb::FeatureSetInfo) {
    if json {
        print_json(&set_json(s));
        return;
    }
    outln!(
        "feature set {} ({})",
        &s.id[..16.min(s.id.len())],
        s.names.join(", ")
    );
    outln!(
        "  {} train rows in {} folds, {} test rows, {} columns, {} models",
        s.train_rows,
        s.k,
        s.test_rows,
        s.columns.len(),
        s.models.len()
    );
    outln!("  columns: {}", s.columns.join(", "));
}

pub async fn features(url: &str, json: bool, args: &FeaturesArgs) -> anyhow::Result<()> {
    let api = Api::connect(url).await?;
    let mut c = features_client(&api);
    let fail = |s: tonic::Status| status_error(api.url(), &s);
    match &args.command {
        FeaturesCommand::Build(b) => {
            let def = pb::FeatureDefinition {
                dataset: b.dataset.clone(),
                scheme: b.folds.scheme.clone(),
                k: b.folds.k,
                seed: b.folds.fold_seed,
                experiment: b.experiment.first().cloned().unwrap_or_default(),
                more_experiments: b.experiment.iter().skip(1).cloned().collect(),
                job_ids: b.jobs.clone(),
                sample: b.sample,
                sample_seed: b.sample_seed,
                tabular: b.tabular,
                patient: b.patient,
                restack: b.restack,
                skip_incomplete: false,
            };
            let s = c
                .build_feature_set(pb::BuildFeatureSetRequest {
                    definition: Some(def),
                    name: b.name.clone(),
                })
                .await
                .map_err(fail)?
                .into_inner();
            print_set(json, &s);
        }
        FeaturesCommand::List => {
            let all = c
                .list_feature_sets(pb::ListFeatureSetsRequest {})
                .await
                .map_err(fail)?
                .into_inner()
                .feature_sets;
            if json {
                print_json(&json!(all.iter().map(set_json).collect::<Vec<_>>()));
                return Ok(());
            }
            let mut t = Table::new(&["ID", "NAMES", "ROWS", "TEST", "COLUMNS", "MODELS"]);
            for s in &all {
                t.push(vec![
                    s.id[..16.min(s.id.len())].to_string(),
                    s.names.join(","),
                    s.train_rows.to_string(),
                    s.test_rows.to_string(),
                    s.columns.len().to_string(),
                    s.models.len().to_string(),
                ]);
            }
            out!("{}", t.render());
        }
        FeaturesCommand::Show { feature_set } => {
            let s = c
                .get_feature_set(pb::GetFeatureSetRequest {
                    feature_set: feature_set.clone(),
                })
                .await
                .map_err(fail)?
                .into_inner();
            print_set(json, &s);
        }
    }
    Ok(())
}

/// `image_name,prediction` rows of a CSV (a header line is expected and skipped).
fn read_predictions(path: &Path) -> anyhow::Result<(Vec<String>, Vec<f32>)> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let headers = r.headers()?.clone();
    if headers.len() < 2 {
        anyhow::bail!(
            "{}: expected the columns image_name,prediction, found {:?}",
            path.display(),
            headers.iter().collect::<Vec<_>>()
        );
    }
    let (mut names, mut values) = (Vec::new(), Vec::new());
    for (i, rec) in r.records().enumerate() {
        let rec = rec.with_context(|| format!("{} line {}", path.display(), i + 2))?;
        let v: f32 = rec[1].trim().parse().with_context(|| {
            format!(
                "{} line {}: expected a number, found {:?}",
                path.display(),
                i + 2,
                &rec[1]
            )
        })?;
        names.push(rec[0].trim().to_string());
        values.push(v);
    }
    Ok((names, values))
}

pub async fn predictions(url: &str, json: bool, args: &PredictionsArgs) -> anyhow::Result<()> {
    let PredictionsCommand::Import {
        experiment,
        name,
        dataset,
        oof,
        test,
    } = &args.command;
    let (oof_names, oof) = read_predictions(oof)?;
    let (test_names, test) = read_predictions(test)?;
    let api = Api::connect(url).await?;
    let mut c = stackhive_proto::v1::job_service_client::JobServiceClient::new(api.channel())
        .max_encoding_message_size(256 << 20);
    let r = c
        .import_predictions(pb::ImportPredictionsRequest {
            experiment: experiment.clone(),
            name: name.clone(),
            dataset: dataset.clone(),
            oof_names,
            oof,
            test_names,
            test,
        })
        .await
        .map_err(|s| status_error(api.url(), &s))?
        .into_inner();
    if json {
        print_json(&json!({"job_id": r.job_id, "oof_rows": r.oof_rows, "test_rows": r.test_rows}));
    } else {
        outln!(
            "imported as job {} ({} out-of-fold, {} test predictions)",
            r.job_id,
            r.oof_rows,
            r.test_rows
        );
    }
    Ok(())
}

/// Builds a plain table's matrix here and registers it as a feature set.
pub async fn add_table(url: &str, json: bool, a: &TableArgs) -> anyhow::Result<()> {
    let spec = stackhive_data::features::TableSpec {
        id: a.id.clone(),
        target: a.target.clone(),
        group: a.group.clone(),
        k: a.k,
        seed: a.fold_seed,
    };
    let (train, test) = (a.train.clone(), a.test.clone());
    let matrix = tokio::task::spawn_blocking(move || {
        stackhive_data::features::table(&train, test.as_deref(), &spec)
    })
    .await??;
    let bytes = matrix.to_bytes()?;
    let definition = json!({
        "table": a.train.file_name().map(|f| f.to_string_lossy().to_string()),
        "test": a.test.as_ref().and_then(|t| t.file_name()).map(|f| f.to_string_lossy().to_string()),
        "id": a.id, "target": a.target, "group": a.group, "k": a.k, "fold_seed": a.fold_seed,
    });
    let header = pb::UploadFeatureSetRequest {
        item: Some(pb::upload_feature_set_request::Item::Header(
            pb::FeatureSetHeader {
                name: a.name.clone(),
                definition_json: definition.to_string(),
                size: bytes.len() as u64,
                blake3: blake3::hash(&bytes).to_hex().to_string(),
            },
        )),
    };
    let mut items = vec![header];
    for chunk in bytes.chunks(1 << 20) {
        items.push(pb::UploadFeatureSetRequest {
            item: Some(pb::upload_feature_set_request::Item::Chunk(chunk.to_vec())),
        });
    }
    let api = Api::connect(url).await?;
    let s = features_client(&api)
        .upload_feature_set(futures::stream::iter(items))
        .await
        .map_err(|s| status_error(api.url(), &s))?
        .into_inner();
    print_set(json, &s);
    Ok(())
}

fn sweep_json(s: &pb::Sweep) -> serde_json::Value {
    let c = s.counts.unwrap_or_default();
    json!({
        "id": s.id, "experiment": s.experiment, "state": s.state, "n": s.n, "submitted": s.submitted,
        "models": s.models, "features": s.features, "seed": s.seed, "error": s.error,
        "counts": {"queued": c.queued, "running": c.running, "succeeded": c.succeeded, "failed": c.failed, "cancelled": c.cancelled},
    })
}

fn print_sweep(json: bool, s: &pb::Sweep) {
    if json {
        print_json(&sweep_json(s));
        return;
    }
    let c = s.counts.unwrap_or_default();
    outln!(
        "sweep {} ({}) in {}: {} of {} submitted",
        s.id,
        s.state,
        s.experiment,
        s.submitted,
        s.n
    );
    outln!(
        "  {} queued, {} running, {} succeeded, {} failed, {} cancelled",
        c.queued,
        c.running,
        c.succeeded,
        c.failed,
        c.cancelled
    );
    if !s.error.is_empty() {
        outln!("  error: {}", s.error);
    }
}

pub async fn sweep(url: &str, json: bool, args: &SweepArgs) -> anyhow::Result<()> {
    let api = Api::connect(url).await?;
    let mut c = SweepServiceClient::new(api.channel());
    let fail = |s: tonic::Status| status_error(api.url(), &s);
    let control = |id: i64, action: &str, extend: u64| pb::ControlSweepRequest {
        id,
        action: action.into(),
        extend,
    };
    let create = (&args.create.experiment, args.create.n);
    let s = match (&args.command, create) {
        (Some(SweepCommand::List), _) => {
            let all = c.list_sweeps(pb::ListSweepsRequest {}).await.map_err(fail)?.into_inner().sweeps;
            if json {
                print_json(&json!(all.iter().map(sweep_json).collect::<Vec<_>>()));
                return Ok(());
            }
            let mut t = Table::new(&["ID", "STATE", "EXPERIMENT", "SUBMITTED", "N", "MODELS"]);
            for s in &all {
                t.push(vec![s.id.to_string(), s.state.clone(), s.experiment.clone(), s.submitted.to_string(), s.n.to_string(), s.models.join(",")]);
            }
            out!("{}", t.render());
            return Ok(());
        }
        (Some(SweepCommand::Status { id }), _) => c.get_sweep(pb::GetSweepRequest { id: *id }).await,
        (Some(SweepCommand::Pause { id }), _) => c.control_sweep(control(*id, "pause", 0)).await,
        (Some(SweepCommand::Resume { id }), _) => c.control_sweep(control(*id, "resume", 0)).await,
        (Some(SweepCommand::Cancel { id }), _) => c.control_sweep(control(*id, "cancel", 0)).await,
        (Some(SweepCommand::Extend { id, n }), _) => c.control_sweep(control(*id, "extend", *n)).await,
        (None, (Some(experiment), Some(n))) => {
            let a = &args.create;
            let definition = a.level1.as_ref().map(|l1| {
                json!({
                    "dataset": a.dataset, "scheme": a.folds.scheme, "k": a.folds.k, "seed": a.folds.fold_seed,
                    "experiment": l1, "tabular": a.tabular, "patient": a.patient, "restack": a.restack,
                })
                .to_string()
            });
            c.create_sweep(pb::CreateSweepRequest {
                experiment: experiment.clone(),
                models: a.models.clone(),
                n,
                seed: a.seed,
                features: a.features.clone().unwrap_or_default(),
                definition_json: definition.unwrap_or_default(),
                cpu_slots: a.cpu_slots,
                priority: a.priority,
            })
            .await
        }
        (None, _) => anyhow::bail!("say which sweep to create (stackhive sweep EXPERIMENT --n N …) or what to do (list, status, pause, resume, cancel, extend)"),
    }
    .map_err(fail)?
    .into_inner();
    print_sweep(json, &s);
    Ok(())
}

/// One row of the leaderboard.
struct Entry {
    id: i64,
    model: String,
    auc: f64,
    seconds: f64,
    params: serde_json::Value,
}

/// The succeeded stack jobs of `experiment`, best CV AUC first.
pub async fn leaderboard(url: &str, json: bool, a: &LeaderboardArgs) -> anyhow::Result<()> {
    let api = Api::connect(url).await?;
    let mut request = pb::ListJobsRequest {
        states: vec![pb::JobState::Succeeded as i32],
        kind: "stack".into(),
        experiment: a.experiment.clone(),
        page_size: 1000,
        page_token: String::new(),
    };
    let mut entries = Vec::new();
    loop {
        let page = api.list_jobs(request.clone()).await?;
        for j in &page.jobs {
            let Ok(r) = serde_json::from_str::<serde_json::Value>(&j.result_json) else {
                continue;
            };
            let Some(auc) = r["cv_auc"].as_f64() else {
                continue;
            };
            entries.push(Entry {
                id: j.id,
                model: r["model"].as_str().unwrap_or("").to_string(),
                auc,
                seconds: r["seconds"].as_f64().unwrap_or(0.0),
                params: r["params"].clone(),
            });
        }
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    entries.sort_by(|x, y| y.auc.total_cmp(&x.auc).then(x.id.cmp(&y.id)));
    let total = entries.len();
    entries.truncate(a.top);
    if json {
        print_json(&json!({
            "models": total,
            "top": entries.iter().map(|e| json!({"job_id": e.id, "model": e.model, "cv_auc": e.auc, "seconds": e.seconds, "params": e.params})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let mut t = Table::new(&["RANK", "JOB", "MODEL", "CV AUC", "SECONDS", "PARAMS"]);
    for (i, e) in entries.iter().enumerate() {
        t.push(vec![
            (i + 1).to_string(),
            e.id.to_string(),
            e.model.clone(),
            format!("{:.4}", e.auc),
            format!("{:.1}", e.seconds),
            e.params.to_string(),
        ]);
    }
    out!("{}", t.render());
    outln!("{total} models ranked in {}", a.experiment);
    Ok(())
}

/// The zoo: each type and how a sweep samples its hyperparameters.
pub fn models(json: bool) {
    let describe = |d: Dist| match d {
        Dist::Uniform(a, b) => format!("uniform {a}..{b}"),
        Dist::Log(a, b) => format!("log-uniform {a}..{b}"),
        Dist::Int(a, b) => format!("integer {a}..{b}"),
        Dist::IntLog(a, b) => format!("integer, log-uniform {a}..{b}"),
        Dist::Choice(names) => format!("one of {}", names.join(", ")),
    };
    if json {
        let v: Vec<serde_json::Value> = ModelType::ALL
            .iter()
            .map(|m| json!({"model": m.name(), "params": m.space().iter().map(|p| json!({"name": p.name, "space": describe(p.dist)})).collect::<Vec<_>>()}))
            .collect();
        print_json(&json!(v));
        return;
    }
    for m in ModelType::ALL {
        outln!("{m}");
        for p in m.space() {
            outln!("  {:<18} {}", p.name, describe(p.dist));
        }
    }
}
