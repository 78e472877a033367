//! The generative model behind a synthetic dataset: patients, their metadata, each lesion's
//! latent features, and the label drawn from the latent probability. Everything here is cheap
//! and sequential, drawn from one seeded stream, so the rows are fixed before any pixel is
//! rendered. It must not touch pixels or files: `render.rs` draws what this module decided.
//!
//! The label model is a logistic one on standardised latent features:
//! `logit = intercept + metadata effect + image effect`, where the image effect is a linear
//! function of the lesion's asymmetry, border irregularity, colour variegation, diameter and its
//! deviation from the patient's own typical nevus (the "ugly duckling" sign dermatologists use).
//! The intercept is solved so that the mean probability equals the configured positive rate.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, StandardNormal};

use super::{mix_seed, SynthConfig};
use crate::isic::Sex;

/// Seed streams: one per purpose, so adding draws to one never shifts another.
const STREAM_POPULATION: u64 = 1;
const STREAM_NAMES: u64 = 2;

/// Spread of log(images per patient). With a mean of 16 this gives a median near 11 and a few
/// patients at the cap, close to ISIC 2020 (2,056 patients, 33,126 images, max 115).
const IMAGES_LOG_SIGMA: f64 = 0.9;

/// Metadata effects on the logit. Chosen so that metadata alone ranks at an AUC near 0.65, as
/// metadata-only models did on ISIC 2020: older patients, men and head/neck lesions are riskier.
const AGE_LOGIT_PER_YEAR: f64 = 0.045;
const AGE_MEAN: f64 = 49.0;
const MALE_LOGIT: f64 = 0.25;

/// Image effect weights on the standardised lesion features (the ABCD of dermoscopy plus the
/// ugly-duckling outlier score). The overall spread of the logit sets the oracle AUC; these give
/// about 0.92 at a 2% positive rate.
const W_ASYMMETRY: f64 = 0.65;
const W_BORDER: f64 = 0.6;
const W_VARIEGATION: f64 = 0.7;
const W_DIAMETER: f64 = 0.4;
const W_OUTLIER: f64 = 0.95;

/// Anatomic sites as ISIC 2020 spells them, their frequency in its train.csv, and their logit
/// effect. Missing sites (1.6% of rows in the real file) are handled by the caller.
pub(crate) const SITES: [(&str, f64, f64); 6] = [
    ("torso", 0.516, 0.0),
    ("lower extremity", 0.259, 0.0),
    ("upper extremity", 0.152, 0.15),
    ("head/neck", 0.057, 1.0),
    ("palms/soles", 0.011, 0.2),
    ("oral/genital", 0.005, 0.4),
];
const SITE_MISSING_RATE: f64 = 0.016;
/// ISIC 2020 leaves sex and age empty for a handful of patients (about 0.2% of rows).
const SEX_MISSING_RATE: f64 = 0.002;
const AGE_MISSING_RATE: f64 = 0.002;

/// Benign diagnoses of ISIC 2020's train.csv with their share of the benign rows.
const BENIGN_DIAGNOSES: [(&str, f64); 6] = [
    ("unknown", 0.8197),
    ("nevus", 0.1568),
    ("seborrheic keratosis", 0.0041),
    ("lentigo NOS", 0.0013),
    ("lichenoid keratosis", 0.0011),
    ("solar lentigo", 0.0002),
];
/// ISIC 2019 images all carry a diagnosis.
const BENIGN_DIAGNOSES_2019: [(&str, f64); 3] = [
    ("nevus", 0.8),
    ("seborrheic keratosis", 0.15),
    ("solar lentigo", 0.05),
];

/// Where a row ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Split {
    /// ISIC 2020 training row.
    Train,
    /// ISIC 2020 test row (label hidden from test.csv, kept in latent.csv).
    Test,
    /// External ISIC 2019 row: trains, never validates.
    External,
}

impl Split {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::External => "external",
        }
    }
}

/// The look a patient's ordinary moles share; each lesion deviates from it by its outlier score.
#[derive(Debug, Clone)]
pub(crate) struct NevusStyle {
    /// 0 = light tan, 1 = very dark brown.
    pub darkness: f32,
    /// Shift of the brown towards red (positive) or yellow (negative).
    pub warmth: f32,
    /// 0 homogeneous, 1 reticular (pigment network), 2 globular.
    pub pattern: u8,
    /// Typical ellipse elongation in [0, 0.3] and its orientation in radians.
    pub elongation: f32,
    pub orientation: f32,
}

#[derive(Debug, Clone)]
pub(crate) struct Patient {
    pub id: String,
    pub split: Split,
    pub sex: Option<Sex>,
    pub age: Option<f32>,
    pub style: NevusStyle,
    /// Skin tone, 0 = very fair, 1 = dark.
    pub skin_tone: f32,
    /// Expected number of hair strands per image.
    pub hairiness: f32,
}

/// Standardised latent lesion features (mean 0, sd 1 over lesions, except `outlier` which is a
/// non-negative distance). These drive both the label and the rendering.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LesionFeatures {
    pub asymmetry: f32,
    pub border: f32,
    pub variegation: f32,
    pub diameter: f32,
    pub outlier: f32,
}

#[derive(Debug, Clone)]
pub(crate) struct Lesion {
    pub image_name: String,
    pub patient: usize,
    pub site: Option<&'static str>,
    pub features: LesionFeatures,
    pub logit_meta: f64,
    pub logit_image: f64,
    pub probability: f64,
    pub target: u8,
    pub diagnosis: &'static str,
}

#[derive(Debug)]
pub(crate) struct Population {
    pub patients: Vec<Patient>,
    pub lesions: Vec<Lesion>,
}

/// Draws the whole population: train patients, test patients, then external patients.
pub(crate) fn draw(cfg: &SynthConfig) -> Population {
    let mut rng: ChaCha8Rng =
        rand::SeedableRng::seed_from_u64(mix_seed(cfg.seed, STREAM_POPULATION, 0));
    let mut patients = Vec::new();
    let mut lesions = Vec::new();
    let groups = [
        (Split::Train, cfg.patients, cfg.mean_images_per_patient),
        (Split::Test, cfg.test_patients, cfg.mean_images_per_patient),
    ];
    for (split, n_patients, mean) in groups {
        for _ in 0..n_patients {
            let count = images_for_patient(&mut rng, mean, cfg.max_images_per_patient);
            add_patient(&mut rng, split, count, &mut patients, &mut lesions);
        }
    }
    // ISIC 2019 has about 1.5 images per lesion series; give external patients 1 to 4 images.
    let mut external_left = cfg.external_2019;
    while external_left > 0 {
        let count = rng.random_range(1..=4usize).min(external_left);
        add_patient(
            &mut rng,
            Split::External,
            count,
            &mut patients,
            &mut lesions,
        );
        external_left -= count;
    }

    // One intercept for the 2020 population (train and test share it), one for ISIC 2019, whose
    // melanoma share is much higher.
    let logits = |external: bool| -> Vec<f64> {
        lesions
            .iter()
            .filter(|l| (patients[l.patient].split == Split::External) == external)
            .map(|l| l.logit_meta + l.logit_image)
            .collect()
    };
    let b2020 = solve_intercept(&logits(false), cfg.positive_rate);
    let b2019 = solve_intercept(&logits(true), cfg.external_positive_rate);
    for lesion in &mut lesions {
        let split = patients[lesion.patient].split;
        let b = if split == Split::External {
            b2019
        } else {
            b2020
        };
        lesion.probability = sigmoid(b + lesion.logit_meta + lesion.logit_image);
        lesion.target = u8::from(rng.random_bool(lesion.probability));
        lesion.diagnosis = if lesion.target == 1 {
            "melanoma"
        } else if split == Split::External {
            pick(&mut rng, &BENIGN_DIAGNOSES_2019)
        } else {
            pick(&mut rng, &BENIGN_DIAGNOSES)
        };
    }
    assign_names(cfg.seed, &mut patients, &mut lesions);
    Population { patients, lesions }
}

/// A discretised lognormal clamped to [1, max]: long-tailed like ISIC's images per patient.
fn images_for_patient(rng: &mut ChaCha8Rng, mean: f64, max: usize) -> usize {
    let mu = mean.max(1.0).ln() - IMAGES_LOG_SIGMA * IMAGES_LOG_SIGMA / 2.0;
    let dist = LogNormal::new(mu, IMAGES_LOG_SIGMA).expect("lognormal parameters are finite");
    let n: f64 = dist.sample(rng);
    (n.round() as usize).clamp(1, max.max(1))
}

fn add_patient(
    rng: &mut ChaCha8Rng,
    split: Split,
    count: usize,
    patients: &mut Vec<Patient>,
    lesions: &mut Vec<Lesion>,
) {
    let sex = if rng.random_bool(SEX_MISSING_RATE) {
        None
    } else if rng.random_bool(0.515) {
        Some(Sex::Male)
    } else {
        Some(Sex::Female)
    };
    // ISIC's age_approx is in 5-year steps; mean 49, sd 14.
    let age = if rng.random_bool(AGE_MISSING_RATE) {
        None
    } else {
        let a = AGE_MEAN + 14.0 * normal(rng);
        Some(((a / 5.0).round() * 5.0).clamp(10.0, 90.0) as f32)
    };
    let style = NevusStyle {
        darkness: rng.random_range(0.25..0.75),
        warmth: normal(rng) as f32 * 0.5,
        pattern: pick_index(rng, &[0.4, 0.4, 0.2]) as u8,
        elongation: rng.random_range(0.0..0.3),
        orientation: rng.random_range(0.0..std::f32::consts::PI),
    };
    // Most ISIC patients have fair skin; square a uniform to skew towards it.
    let skin_tone = rng.random::<f32>().powi(2) * 0.85;
    let hairiness = -(1.0 - rng.random::<f32>()).ln() * 2.0;
    // Patient-level shares of each feature: a patient's moles resemble each other.
    let p_asym = normal(rng);
    let p_border = normal(rng);
    let p_var = normal(rng);
    let p_size = normal(rng);

    let patient = patients.len();
    let sex_logit = match sex {
        Some(Sex::Male) => MALE_LOGIT,
        Some(Sex::Female) => -MALE_LOGIT,
        None => 0.0,
    };
    let age_logit = age.map_or(0.0, |a| AGE_LOGIT_PER_YEAR * (f64::from(a) - AGE_MEAN));
    for _ in 0..count {
        let site_idx = if rng.random_bool(SITE_MISSING_RATE) {
            None
        } else {
            Some(pick_index(rng, &SITES.map(|s| s.1)))
        };
        // One atypia factor per lesion ties the ABCD features together, as in real melanomas.
        let atypia = normal(rng);
        let loaded = |rng: &mut ChaCha8Rng, patient_part: f64, p: f64, a: f64| -> f64 {
            let rest = (1.0 - p * p - a * a).sqrt();
            p * patient_part + a * atypia + rest * normal(rng)
        };
        let asymmetry = loaded(rng, p_asym, 0.4, 0.55);
        let border = loaded(rng, p_border, 0.4, 0.55);
        let variegation = loaded(rng, p_var, 0.3, 0.6);
        let diameter = loaded(rng, p_size, 0.55, 0.35);
        // Ugly duckling: how far this lesion sits from the patient's own typical mole.
        let outlier = (0.7 * atypia + 0.714 * normal(rng)).max(0.0);
        let site_logit = site_idx.map_or(0.0, |i| SITES[i].2);
        let logit_meta = sex_logit + age_logit + site_logit;
        let logit_image = W_ASYMMETRY * asymmetry
            + W_BORDER * border
            + W_VARIEGATION * variegation
            + W_DIAMETER * diameter
            + W_OUTLIER * outlier;
        lesions.push(Lesion {
            image_name: String::new(),
            patient,
            site: site_idx.map(|i| SITES[i].0),
            features: LesionFeatures {
                asymmetry: asymmetry as f32,
                border: border as f32,
                variegation: variegation as f32,
                diameter: diameter as f32,
                outlier: outlier as f32,
            },
            logit_meta,
            logit_image,
            probability: 0.0,
            target: 0,
            diagnosis: "",
        });
    }
    patients.push(Patient {
        id: String::new(),
        split,
        sex,
        age,
        style,
        skin_tone,
        hairiness,
    });
}

/// ISIC-style identifiers (`ISIC_0123456`, `IP_0123456`), unique and in random order, so that a
/// file sorted by image name interleaves patients as the real one does.
fn assign_names(seed: u64, patients: &mut [Patient], lesions: &mut [Lesion]) {
    let mut rng: ChaCha8Rng = rand::SeedableRng::seed_from_u64(mix_seed(seed, STREAM_NAMES, 0));
    let mut used = std::collections::HashSet::new();
    let mut fresh = |rng: &mut ChaCha8Rng| loop {
        let n = rng.random_range(0..10_000_000u32);
        if used.insert(n) {
            break n;
        }
    };
    for lesion in lesions.iter_mut() {
        lesion.image_name = format!("ISIC_{:07}", fresh(&mut rng));
    }
    let mut used_patients = std::collections::HashSet::new();
    for patient in patients.iter_mut() {
        let n = loop {
            let n = rng.random_range(0..10_000_000u32);
            if used_patients.insert(n) {
                break n;
            }
        };
        patient.id = format!("IP_{n:07}");
    }
}

/// The intercept `b` with `mean(sigmoid(b + logit)) == rate`, by bisection (the mean is
/// monotone in `b`). An empty group keeps a neutral intercept.
fn solve_intercept(logits: &[f64], rate: f64) -> f64 {
    if logits.is_empty() {
        return 0.0;
    }
    let mean_at =
        |b: f64| logits.iter().map(|&l| sigmoid(b + l)).sum::<f64>() / logits.len() as f64;
    let (mut lo, mut hi) = (-40.0, 40.0);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if mean_at(mid) < rate {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

pub(crate) fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

fn pick_index(rng: &mut ChaCha8Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

fn pick(rng: &mut ChaCha8Rng, choices: &[(&'static str, f64)]) -> &'static str {
    let weights: Vec<f64> = choices.iter().map(|c| c.1).collect();
    choices[pick_index(rng, &weights)].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intercept_hits_the_rate() {
        let logits: Vec<f64> = (0..1000).map(|i| (i as f64 / 100.0) - 5.0).collect();
        let b = solve_intercept(&logits, 0.02);
        let mean = logits.iter().map(|&l| sigmoid(b + l)).sum::<f64>() / 1000.0;
        assert!((mean - 0.02).abs() < 1e-9, "mean probability {mean}");
    }
}
