//! The synthetic ISIC-like dataset generator (issue 3, item 5): there is no public image data on
//! the build machines, and tests need data whose truth is known. `generate` writes the ISIC 2020
//! layout — `train.csv`, `test.csv`, `images/<image_name>.jpg` — plus `latent.csv`, each image's
//! true probability and label, from which the oracle AUC (the best AUC any model could reach on
//! this sample) is computed and reported, and `synth.json`, the config and report.
//!
//! The same config gives the same bytes on a machine: every random draw comes from a seeded
//! stream, and each image has its own stream derived from (seed, image index), so images render
//! in parallel in any order. The output folder appears complete or not at all (written to a
//! staging folder, then renamed). This module must not read real data or the network.

pub mod noisy;
mod population;
mod render;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::auc::roc_auc;
use crate::error::DataError;
use crate::isic::{
    write_test_csv, write_train_csv, TestRow, TrainRow, IMAGES_DIR, IMAGE_EXT, SOURCE_ISIC2020,
    TEST_CSV, TRAIN_CSV,
};
use population::{Lesion, Population, Split};

/// Seed stream for the per-image renderers (see `population` for the others).
const STREAM_IMAGES: u64 = 3;
/// The `source` of external rows.
pub const SOURCE_ISIC2019: &str = "isic2019";
/// Each row's latent probability, label and features: the ground truth.
pub const LATENT_CSV: &str = "latent.csv";
/// The config and the report (without timings), for provenance.
pub const SYNTH_JSON: &str = "synth.json";

/// What to generate. `Default` gives a small ISIC-2020-shaped dataset (500 train patients,
/// about 8,000 images of 128×128, 2% positives).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthConfig {
    /// ISIC 2020 training patients.
    pub patients: usize,
    /// ISIC 2020 test patients (their rows go to test.csv, labels only to latent.csv).
    pub test_patients: usize,
    /// Mean share of positives among 2020 rows (ISIC 2020: 1.76%).
    pub positive_rate: f64,
    /// Side of the square images in pixels.
    pub image_size: u32,
    pub seed: u64,
    /// Extra external rows with source `isic2019`; they only ever train.
    pub external_2019: usize,
    /// Mean share of positives among the external rows (ISIC 2019 is about 18% melanoma).
    pub external_positive_rate: f64,
    /// Mean images per patient (ISIC 2020: 16.1); the count is long-tailed (lognormal).
    pub mean_images_per_patient: f64,
    /// Cap on images per patient (ISIC 2020's largest patient has 115).
    pub max_images_per_patient: usize,
    pub jpeg_quality: u8,
    /// Show a progress bar (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            patients: 500,
            test_patients: 125,
            positive_rate: 0.02,
            image_size: 128,
            seed: 0,
            external_2019: 0,
            external_positive_rate: 0.18,
            mean_images_per_patient: 16.0,
            max_images_per_patient: 100,
            jpeg_quality: 90,
            progress: false,
        }
    }
}

/// What was generated, and how well an oracle that knows the latent probabilities ranks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthReport {
    /// ISIC 2020 training rows, patients and positives (external rows not included).
    pub rows: usize,
    pub patients: usize,
    pub positives: usize,
    /// AUC of the training labels against their latent probabilities; `None` without both classes.
    pub oracle_auc: Option<f64>,
    /// AUC of the training labels against the metadata part of the latent logit alone: about the
    /// best a metadata-only model can do.
    pub metadata_oracle_auc: Option<f64>,
    pub test_rows: usize,
    pub test_patients: usize,
    pub test_positives: usize,
    pub test_oracle_auc: Option<f64>,
    pub external_rows: usize,
    pub external_positives: usize,
    /// Images per training patient: largest and mean.
    pub max_images_per_patient: usize,
    pub mean_images_per_patient: f64,
    /// Wall time of the whole generation (not written to synth.json, to keep it deterministic).
    #[serde(skip)]
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("invalid synth config: {0}")]
    InvalidConfig(String),
    #[error("output folder {} exists and is not empty; expected a new or empty folder", .0.display())]
    OutputNotEmpty(PathBuf),
    #[error("cannot access {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Csv { path: PathBuf, source: csv::Error },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("cannot encode image {name}: {source}")]
    Encode {
        name: String,
        source: image::ImageError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SynthError + '_ {
    move |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Generates a dataset into `out`, which must not exist or be empty.
pub fn generate(cfg: &SynthConfig, out: &Path) -> Result<SynthReport, SynthError> {
    let started = Instant::now();
    check_config(cfg)?;
    if out.exists() {
        let mut entries = fs::read_dir(out).map_err(io_err(out))?;
        if entries.next().is_some() {
            return Err(SynthError::OutputNotEmpty(out.to_path_buf()));
        }
    }
    let pop = population::draw(cfg);
    let staging = staging_dir(out);
    let guard = RemoveOnDrop(staging.clone());
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
    }
    let images = staging.join(IMAGES_DIR);
    fs::create_dir_all(&images).map_err(io_err(&images))?;

    render_all(cfg, &pop, &images)?;
    write_csvs(&pop, &staging)?;
    let mut report = summarize(&pop);
    let json = serde_json::json!({ "config": cfg, "report": &report });
    let json_path = staging.join(SYNTH_JSON);
    let text = serde_json::to_string_pretty(&json).expect("config and report serialize");
    fs::write(&json_path, text + "\n").map_err(io_err(&json_path))?;

    if out.exists() {
        fs::remove_dir(out).map_err(io_err(out))?;
    }
    fs::rename(&staging, out).map_err(io_err(out))?;
    std::mem::forget(guard);
    report.elapsed = started.elapsed();
    Ok(report)
}

fn check_config(cfg: &SynthConfig) -> Result<(), SynthError> {
    let bad = |msg: String| Err(SynthError::InvalidConfig(msg));
    if cfg.patients == 0 {
        return bad("patients must be at least 1, found 0".into());
    }
    for (name, rate) in [
        ("positive_rate", cfg.positive_rate),
        ("external_positive_rate", cfg.external_positive_rate),
    ] {
        if !(rate > 0.0 && rate < 1.0) {
            return bad(format!(
                "{name} must be strictly between 0 and 1, found {rate}"
            ));
        }
    }
    if !(16..=4096).contains(&cfg.image_size) {
        return bad(format!(
            "image_size must be within 16..=4096, found {}",
            cfg.image_size
        ));
    }
    if !(1..=100).contains(&cfg.jpeg_quality) {
        return bad(format!(
            "jpeg_quality must be within 1..=100, found {}",
            cfg.jpeg_quality
        ));
    }
    if cfg.mean_images_per_patient.is_nan()
        || cfg.mean_images_per_patient < 1.0
        || cfg.max_images_per_patient == 0
    {
        return bad(format!(
            "mean_images_per_patient must be at least 1 and max_images_per_patient at least 1, found {} and {}",
            cfg.mean_images_per_patient, cfg.max_images_per_patient
        ));
    }
    Ok(())
}

/// A sibling of `out`, so the final rename stays on one file system.
fn staging_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map_or_else(|| "synth".into(), |n| n.to_string_lossy().into_owned());
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parent.join(format!(".{name}.synth-{}.tmp", std::process::id()))
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// SplitMix64 over (seed, stream, index): independent, reproducible seeds per purpose and item.
pub(crate) fn mix_seed(seed: u64, stream: u64, index: u64) -> u64 {
    let mut z = seed
        ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03)
        ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for _ in 0..2 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

fn render_all(cfg: &SynthConfig, pop: &Population, images: &Path) -> Result<(), SynthError> {
    let bar = crate::cache::progress_bar(pop.lesions.len() as u64, cfg.progress, "rendering");
    let result = pop
        .lesions
        .par_iter()
        .enumerate()
        .try_for_each(|(i, lesion)| {
            let patient = &pop.patients[lesion.patient];
            let seed = mix_seed(cfg.seed, STREAM_IMAGES, i as u64);
            let img = render::render(patient, lesion, cfg.image_size, seed);
            let mut bytes = Vec::with_capacity(img.len() / 4);
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, cfg.jpeg_quality)
                .encode_image(&img)
                .map_err(|source| SynthError::Encode {
                    name: lesion.image_name.clone(),
                    source,
                })?;
            let path = images.join(format!("{}.{IMAGE_EXT}", lesion.image_name));
            fs::write(&path, bytes).map_err(io_err(&path))?;
            bar.inc(1);
            Ok(())
        });
    bar.finish_and_clear();
    result
}

/// Rows in the ISIC layout, through the loader's own writers: train.csv is the 2020 rows sorted
/// by image name followed by the external rows (as when the 2019 file is appended), test.csv is
/// sorted by image name. latent.csv holds the truth for both, with the latent features.
fn write_csvs(pop: &Population, dir: &Path) -> Result<(), SynthError> {
    let by_split = |split: Split| -> Vec<&Lesion> {
        let mut rows: Vec<&Lesion> = pop
            .lesions
            .iter()
            .filter(|l| pop.patients[l.patient].split == split)
            .collect();
        rows.sort_by(|a, b| a.image_name.cmp(&b.image_name));
        rows
    };
    let train: Vec<&Lesion> = by_split(Split::Train)
        .into_iter()
        .chain(by_split(Split::External))
        .collect();
    let test = by_split(Split::Test);

    let train_rows: Vec<TrainRow> = train
        .iter()
        .map(|l| {
            let p = &pop.patients[l.patient];
            TrainRow {
                image_name: l.image_name.clone(),
                patient_id: p.id.clone(),
                sex: p.sex,
                age_approx: p.age,
                site: l.site.map(String::from),
                diagnosis: l.diagnosis.to_string(),
                benign_malignant: if l.target == 1 { "malignant" } else { "benign" }.to_string(),
                target: l.target,
                source: if p.split == Split::External {
                    SOURCE_ISIC2019
                } else {
                    SOURCE_ISIC2020
                }
                .to_string(),
            }
        })
        .collect();
    write_train_csv(&dir.join(TRAIN_CSV), &train_rows)?;
    let test_rows: Vec<TestRow> = test
        .iter()
        .map(|l| {
            let p = &pop.patients[l.patient];
            TestRow {
                image_name: l.image_name.clone(),
                patient_id: p.id.clone(),
                sex: p.sex,
                age_approx: p.age,
                site: l.site.map(String::from),
            }
        })
        .collect();
    write_test_csv(&dir.join(TEST_CSV), &test_rows)?;

    let path = dir.join(LATENT_CSV);
    let csv_err = |source| SynthError::Csv {
        path: path.clone(),
        source,
    };
    let mut w = csv::Writer::from_path(&path).map_err(csv_err)?;
    w.write_record([
        "image_name",
        "split",
        "probability",
        "target",
        "logit_meta",
        "logit_image",
        "asymmetry",
        "border",
        "variegation",
        "diameter",
        "outlier",
    ])
    .map_err(csv_err)?;
    for l in train.iter().chain(test.iter()) {
        let f = l.features;
        w.write_record([
            l.image_name.clone(),
            pop.patients[l.patient].split.as_str().to_string(),
            format!("{:.6}", l.probability),
            l.target.to_string(),
            format!("{:.6}", l.logit_meta),
            format!("{:.6}", l.logit_image),
            format!("{:.4}", f.asymmetry),
            format!("{:.4}", f.border),
            format!("{:.4}", f.variegation),
            format!("{:.4}", f.diameter),
            format!("{:.4}", f.outlier),
        ])
        .map_err(csv_err)?;
    }
    w.flush().map_err(io_err(&path))
}

fn summarize(pop: &Population) -> SynthReport {
    let of = |split: Split| -> Vec<&Lesion> {
        pop.lesions
            .iter()
            .filter(|l| pop.patients[l.patient].split == split)
            .collect()
    };
    let auc = |rows: &[&Lesion], score: &dyn Fn(&Lesion) -> f64| {
        let labels: Vec<u8> = rows.iter().map(|l| l.target).collect();
        let scores: Vec<f32> = rows.iter().map(|l| score(l) as f32).collect();
        roc_auc(&labels, &scores)
    };
    let train = of(Split::Train);
    let test = of(Split::Test);
    let external = of(Split::External);
    let patients = pop
        .patients
        .iter()
        .filter(|p| p.split == Split::Train)
        .count();
    let mut per_patient = std::collections::HashMap::new();
    for l in &train {
        *per_patient.entry(l.patient).or_insert(0usize) += 1;
    }
    let positives = |rows: &[&Lesion]| rows.iter().filter(|l| l.target == 1).count();
    SynthReport {
        rows: train.len(),
        patients,
        positives: positives(&train),
        oracle_auc: auc(&train, &|l| l.probability),
        metadata_oracle_auc: auc(&train, &|l| l.logit_meta),
        test_rows: test.len(),
        test_patients: pop
            .patients
            .iter()
            .filter(|p| p.split == Split::Test)
            .count(),
        test_positives: positives(&test),
        test_oracle_auc: auc(&test, &|l| l.probability),
        external_rows: external.len(),
        external_positives: positives(&external),
        max_images_per_patient: per_patient.values().copied().max().unwrap_or(0),
        mean_images_per_patient: train.len() as f64 / patients.max(1) as f64,
        elapsed: Duration::ZERO,
    }
}
