//! The meta-ensemble from the command line (issue 15): `ensemble recommend` (the verdict: which
//! combination to trust, with numbers), `ensemble submit` (the same work as an `ensemble` job on
//! a worker), `export` (the submission CSV and the out-of-fold table) and `report` (one HTML
//! file). `recommend`, `export` and `report` work at any time: they build the feature set of
//! the models finished so far (cnn configurations with unfinished folds are left out) and run
//! the ensemble here, so an hour before a deadline the median of everything ready is one
//! command away.
//!
//! Must not: leave a half-written output behind (files are written beside and renamed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;
use stackhive_data::matrix::FeatureMatrix;
use stackhive_ensemble::{Config, Method, Model, ModelSource, Outcome, Preselect};
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::feature_service_client::FeatureServiceClient;
use stackhive_worker::executor::preselect::preselected_set;
use stackhive_worker::features::FeatureCache;

use crate::client::{status_error, Api};
use crate::level2::FoldFlags;
use crate::output::print_json;

#[derive(Args, Debug, Clone)]
pub struct SourceArgs {
    /// Experiments whose succeeded models are combined (level 1, level 2, or both).
    #[arg(required = true)]
    pub experiments: Vec<String>,
    /// The registered dataset the models predict (name or hash).
    #[arg(long, env = "STACKHIVE_DATASET")]
    pub dataset: String,
    #[command(flatten)]
    pub folds: FoldFlags,
    /// The generator's `latent.csv` (or its folder), when the data came from `dataset synth`:
    /// the test labels, so every method's test AUC and the oracle ceiling are shown.
    #[arg(long, value_name = "PATH")]
    pub truth: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigFlags,
    #[command(flatten)]
    pub preselect: PreselectFlags,
}

/// For experiments of thousands of models: stream them and keep the best few.
#[derive(Args, Debug, Clone)]
pub struct PreselectFlags {
    /// Stream the models' predictions and keep at most this many, the best by out-of-fold AUC
    /// that pass --preselect-cap, instead of reading every model at once.
    #[arg(long, value_name = "N")]
    pub max_models: Option<usize>,
    /// With --max-models: drop a model more correlated than this with one already kept.
    #[arg(long, default_value_t = 0.995)]
    pub preselect_cap: f64,
}

/// The ensemble's settings that users change most; the rest keep `Config`'s defaults.
#[derive(Args, Debug, Clone)]
pub struct ConfigFlags {
    /// Patient resamples for the confidence intervals.
    #[arg(long, default_value_t = 500)]
    pub bootstrap: usize,
    /// Simulated public/private splits.
    #[arg(long, default_value_t = 500)]
    pub shakeup: usize,
    /// Share of the held-out patients in the simulated public part (Kaggle's was about 0.3).
    #[arg(long, default_value_t = 0.3)]
    pub public_fraction: f64,
    /// Drop a model more correlated than this with one already kept.
    #[arg(long, default_value_t = 0.97)]
    pub correlation_cap: f64,
    /// Seed of the resamples and the bags.
    #[arg(long = "ensemble-seed", default_value_t = 0)]
    pub seed: u64,
}

impl ConfigFlags {
    pub fn config(&self) -> Config {
        Config {
            bootstrap: self.bootstrap,
            shakeup_repeats: self.shakeup,
            public_fraction: self.public_fraction,
            correlation_cap: self.correlation_cap,
            seed: self.seed,
            ..Config::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct EnsembleArgs {
    #[command(subcommand)]
    pub command: EnsembleCommand,
}

#[derive(Subcommand, Debug)]
pub enum EnsembleCommand {
    /// Run every ensemble method over the finished models and say which one to trust.
    Recommend(SourceArgs),
    /// Submit the same work as an `ensemble` job, run by a worker.
    Submit(SubmitArgs),
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Experiment of the ensemble job (default: the first experiment's name + "-ensemble").
    #[arg(long)]
    pub into: Option<String>,
    /// CPU slots of the job (threads it uses).
    #[arg(long, default_value_t = 2)]
    pub cpu: u32,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Folder for `submission.csv` and `oof.csv` (created if missing).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// The method whose predictions are submitted (default: the recommended one).
    #[arg(long)]
    pub method: Option<String>,
}

/// What `compute` found: the set, its models, the truth where known, and the outcome.
pub struct Computed {
    pub info: pb::FeatureSetInfo,
    pub matrix: FeatureMatrix,
    pub models: Vec<Model>,
    pub truth: Option<Truth>,
    pub outcome: Outcome,
}

/// The generator's ground truth for the test rows.
pub struct Truth {
    pub test_labels: Vec<u8>,
    /// AUC of the latent probabilities on the test rows: the ceiling no model can pass.
    pub oracle_auc: Option<f64>,
}

/// Builds the set of `src`'s finished models, fetches it, and runs the ensemble here.
pub async fn compute(api: &Api, src: &SourceArgs) -> anyhow::Result<Computed> {
    let config = src.config.config();
    config.validate().context("ensemble settings")?;
    let info = build_set(api, src).await?;
    let cache_dir = tempfile::Builder::new()
        .prefix("stackhive-ensemble-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let cache = FeatureCache::new(cache_dir.path());
    let (info, matrix, ids, kinds) =
        stackhive_worker::executor::ensemble::load_set(&cache, api.channel(), &info.id)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
    let truth = match &src.truth {
        Some(p) => Some(read_truth(p, &matrix.test_ids)?),
        None => None,
    };
    let run = {
        let matrix = matrix.clone();
        let test_labels = truth.as_ref().map(|t| t.test_labels.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<(Vec<Model>, Outcome)> {
            let models = stackhive_ensemble::input::models(&matrix, &ids, &kinds)?;
            let problem = stackhive_ensemble::input::problem(&matrix, test_labels.as_deref());
            let outcome = stackhive_ensemble::run(&problem, &models, &config)?;
            Ok((models, outcome))
        })
    };
    let (models, outcome) = run.await.context("the ensemble task failed")??;
    Ok(Computed {
        info,
        matrix,
        models,
        truth,
        outcome,
    })
}

/// Test labels from the generator's `latent.csv`, in the order of `test_ids`.
fn read_truth(path: &Path, test_ids: &[String]) -> anyhow::Result<Truth> {
    let file = if path.is_dir() {
        path.join(stackhive_data::synth::LATENT_CSV)
    } else {
        path.to_path_buf()
    };
    let mut r = csv::Reader::from_path(&file)
        .with_context(|| format!("cannot read the truth file {}", file.display()))?;
    let headers = r.headers()?.clone();
    let col = |name: &str| {
        headers.iter().position(|h| h == name).with_context(|| {
            format!(
                "{} has no column {name:?}; expected the generator's latent.csv",
                file.display()
            )
        })
    };
    let (name, prob, target) = (col("image_name")?, col("probability")?, col("target")?);
    let mut known: HashMap<String, (f32, u8)> = HashMap::new();
    for rec in r.records() {
        let rec = rec.with_context(|| format!("cannot read {}", file.display()))?;
        let p: f32 = rec[prob].parse().unwrap_or(f32::NAN);
        let t: u8 = rec[target].parse().unwrap_or(u8::MAX);
        known.insert(rec[name].to_string(), (p, t));
    }
    let mut labels = Vec::with_capacity(test_ids.len());
    let mut probs = Vec::with_capacity(test_ids.len());
    for id in test_ids {
        match known.get(id) {
            Some(&(p, t)) if t <= 1 => {
                labels.push(t);
                probs.push(p);
            }
            _ => bail!(
                "{} has no label for test image {id}; expected the latent.csv of the dataset these models predict",
                file.display()
            ),
        }
    }
    let oracle_auc = stackhive_data::auc::roc_auc(&labels, &probs);
    Ok(Truth {
        test_labels: labels,
        oracle_auc,
    })
}

pub async fn run(url: &str, json: bool, args: &EnsembleArgs) -> anyhow::Result<()> {
    let api = Api::connect(url).await?;
    match &args.command {
        EnsembleCommand::Recommend(src) => {
            let c = compute(&api, src).await?;
            if json {
                print_json(&stackhive_ensemble::summary(&c.outcome));
            } else {
                outln!(
                    "{} models of {} ({} train rows in {} folds)",
                    c.models.len(),
                    src.experiments.join(", "),
                    c.matrix.train_rows(),
                    c.matrix.k
                );
                out!("{}", stackhive_ensemble::verdict(&c.outcome));
            }
        }
        EnsembleCommand::Submit(a) => {
            let (job, features) = submit_job(&api, a).await?;
            if json {
                print_json(&json!({"job_id": job, "features": features}));
            } else {
                match a.source.preselect.max_models {
                    Some(n) => outln!(
                        "submitted ensemble job {job}: it streams the models and keeps at most {n}"
                    ),
                    None => outln!(
                        "submitted ensemble job {job} over feature set {}",
                        &features[..16.min(features.len())]
                    ),
                }
            }
        }
    }
    Ok(())
}

/// Builds the set of the finished models and submits an `ensemble` job over it: its id and
/// the set's.
pub async fn submit_job(api: &Api, a: &SubmitArgs) -> anyhow::Result<(i64, String)> {
    let config = a.source.config.config();
    config.validate().context("ensemble settings")?;
    // Streamed: the worker chooses the models, so the set is named once it has.
    let (payload, set) = match source_of(&a.source) {
        Some((models, preselect)) => (
            json!({"models": models, "preselect": preselect, "config": config}),
            String::new(),
        ),
        None => {
            let set = build_set(api, &a.source).await?.id;
            (json!({"features": set, "config": config}), set)
        }
    };
    let experiment = a
        .into
        .clone()
        .unwrap_or_else(|| format!("{}-ensemble", a.source.experiments[0]));
    let spec = pb::JobSpec {
        kind: "ensemble".into(),
        payload_json: payload.to_string(),
        experiment,
        name: "ensemble".into(),
        resources: Some(pb::Resources {
            cpu_slots: a.cpu,
            ..Default::default()
        }),
        ..Default::default()
    };
    let key = format!("ensemble-{}", uuid::Uuid::new_v4());
    let s = crate::submit::submit(api, vec![spec], &key).await?;
    Ok((s.job_ids[0], set))
}

/// With --max-models: the models `src` names and how to narrow them down, as an ensemble
/// payload and `preselect` read them.
fn source_of(src: &SourceArgs) -> Option<(ModelSource, Preselect)> {
    let max_models = src.preselect.max_models?;
    let models = ModelSource {
        dataset: src.dataset.clone(),
        experiments: src.experiments.clone(),
        job_ids: Vec::new(),
        scheme: src.folds.scheme.clone(),
        k: src.folds.k,
        seed: src.folds.fold_seed,
        skip_incomplete: true,
    };
    let preselect = Preselect {
        max_models,
        cap: src.preselect.preselect_cap,
    };
    Some((models, preselect))
}

/// The feature set of `src`'s finished models (built once; the same models give the same set),
/// or with --max-models of those the preselection keeps (streamed here, as a worker would).
async fn build_set(api: &Api, src: &SourceArgs) -> anyhow::Result<pb::FeatureSetInfo> {
    if let Some((models, preselect)) = source_of(src) {
        check_preselect(&models, &preselect)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let p = preselected_set(api.channel(), &models, &preselect, threads)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))
            .with_context(|| {
                format!(
                    "cannot preselect the models of {}",
                    src.experiments.join(", ")
                )
            })?;
        tracing::info!(models = p.models, kept = p.kept, "preselected");
        return Ok(FeatureServiceClient::new(api.channel())
            .get_feature_set(pb::GetFeatureSetRequest {
                feature_set: p.features,
            })
            .await
            .map_err(|s| status_error(api.url(), &s))?
            .into_inner());
    }
    let def = pb::FeatureDefinition {
        dataset: src.dataset.clone(),
        scheme: src.folds.scheme.clone(),
        k: src.folds.k,
        seed: src.folds.fold_seed,
        experiment: src.experiments[0].clone(),
        more_experiments: src.experiments[1..].to_vec(),
        skip_incomplete: true,
        ..Default::default()
    };
    Ok(FeatureServiceClient::new(api.channel())
        .build_feature_set(pb::BuildFeatureSetRequest {
            definition: Some(def),
            name: String::new(),
        })
        .await
        .map_err(|s| status_error(api.url(), &s))
        .with_context(|| format!("cannot gather the models of {}", src.experiments.join(", ")))?
        .into_inner())
}

/// The same bounds the coordinator puts on a streamed ensemble's payload, checked before any
/// work.
fn check_preselect(models: &ModelSource, preselect: &Preselect) -> anyhow::Result<()> {
    let payload = json!({"models": models, "preselect": preselect});
    stackhive_ensemble::EnsembleSpec::from_json(&payload)?;
    Ok(())
}

/// The method `name` of the outcome, or the recommended one.
fn chosen<'a>(
    outcome: &'a Outcome,
    name: Option<&str>,
) -> anyhow::Result<&'a stackhive_ensemble::MethodResult> {
    let method: Method = match name {
        Some(n) => n.parse()?,
        None => outcome.recommendation.method,
    };
    outcome
        .methods
        .iter()
        .find(|m| m.method == method)
        .with_context(|| format!("method {} was not run", method.name()))
}

pub async fn export(url: &str, json: bool, args: &ExportArgs) -> anyhow::Result<()> {
    let api = Api::connect(url).await?;
    let c = compute(&api, &args.source).await?;
    if c.matrix.test_rows() == 0 {
        bail!(
            "dataset {} has no test rows, so there is nothing to submit; expected a dataset with a test.csv",
            args.source.dataset
        );
    }
    let (submission, oof) = write_exports(&c, args.method.as_deref(), &args.out)?;
    let method = chosen(&c.outcome, args.method.as_deref())?;
    if json {
        print_json(&json!({
            "submission": submission, "oof": oof, "method": method.method.name(),
            "models": c.models.len(), "nested_auc": method.nested_auc,
        }));
    } else {
        outln!(
            "wrote {} ({} test rows; {} of {} models, nested CV AUC {:.4}) and {}",
            submission.display(),
            c.matrix.test_rows(),
            method.method.name(),
            c.models.len(),
            method.nested_auc,
            oof.display()
        );
    }
    Ok(())
}

/// Writes `submission.csv` (`image_name,target`, the test rows in the dataset's order, values
/// in [0, 1]) with `method`'s predictions (default: the recommended one) and `oof.csv` (each
/// train row's fold, label and every method's nested out-of-fold prediction) into `out`.
pub fn write_exports(
    c: &Computed,
    method: Option<&str>,
    out: &Path,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let method = chosen(&c.outcome, method)?;
    let mut submission = String::from("image_name,target\n");
    for (id, v) in c.matrix.test_ids.iter().zip(&method.test) {
        submission.push_str(&format!("{id},{:.6}\n", v.clamp(0.0, 1.0)));
    }
    let mut oof = String::from("image_name,fold,target");
    for m in &c.outcome.methods {
        oof.push(',');
        oof.push_str(m.method.name());
    }
    oof.push('\n');
    for i in 0..c.matrix.train_rows() {
        oof.push_str(&format!(
            "{},{},{}",
            c.matrix.train_ids[i], c.matrix.folds[i], c.matrix.labels[i]
        ));
        for m in &c.outcome.methods {
            oof.push_str(&format!(",{:.6}", m.oof[i]));
        }
        oof.push('\n');
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let files = [
        (out.join("submission.csv"), submission),
        (out.join("oof.csv"), oof),
    ];
    write_all_or_nothing(&files)?;
    let [(a, _), (b, _)] = files;
    Ok((a, b))
}

/// Writes every file beside its target, then renames them all; on an error before the renames
/// none is left (an unpersisted temporary file removes itself when dropped).
pub fn write_all_or_nothing(files: &[(PathBuf, String)]) -> anyhow::Result<()> {
    let mut staged = Vec::new();
    for (path, text) in files {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::io::Write::write_all(&mut tmp, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        staged.push((tmp, path));
    }
    for (tmp, path) in staged {
        tmp.persist(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
