//! Random ISIC-like train tables for the fold tests and the fold benchmark: long-tailed images
//! per patient (1 to ~100, median ~11, mean ~16, as in ISIC 2020's 33,126 images of 2,056
//! patients), ~2 % positives, and optionally external (isic2019) rows with their own patients.
//! Must not: depend on the synthetic image generator; folds only need the table.
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use stackhive_data::isic::{Sex, TrainRow, SOURCE_ISIC2020};

/// Shape of a random table.
#[derive(Clone, Copy, Debug)]
pub struct TableShape {
    pub patients: usize,
    pub positive_rate: f64,
    /// External rows as a fraction of the isic2020 rows.
    pub external_fraction: f64,
    pub max_images: usize,
}

fn row(image: usize, patient: &str, target: u8, source: &str) -> TrainRow {
    TrainRow {
        image_name: format!("ISIC_{image:07}"),
        patient_id: patient.to_string(),
        sex: if image.is_multiple_of(3) {
            None
        } else {
            Some(Sex::Female)
        },
        age_approx: Some(45.0),
        site: Some("torso".into()),
        diagnosis: if target == 1 { "melanoma" } else { "unknown" }.into(),
        benign_malignant: if target == 1 { "malignant" } else { "benign" }.into(),
        target,
        source: source.to_string(),
    }
}

/// Images per patient: log-normal with median 11 (ISIC 2020's is about 12), clamped.
fn patient_sizes(rng: &mut StdRng, patients: usize, max_images: usize) -> Vec<usize> {
    let dist = LogNormal::new(11f64.ln(), 0.9).expect("valid log-normal");
    (0..patients)
        .map(|_| (dist.sample(rng).round() as usize).clamp(1, max_images))
        .collect()
}

/// A random table: isic2020 rows with positives drawn per row, then external rows, shuffled
/// (the competition's train.csv is in image-name order, unrelated to patients).
pub fn random_table(shape: TableShape, seed: u64) -> Vec<TrainRow> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rows = Vec::new();
    let mut image = 0;
    for (p, n) in patient_sizes(&mut rng, shape.patients, shape.max_images)
        .into_iter()
        .enumerate()
    {
        let id = format!("IP_{p:07}");
        for _ in 0..n {
            let target = rng.random_bool(shape.positive_rate) as u8;
            rows.push(row(image, &id, target, SOURCE_ISIC2020));
            image += 1;
        }
    }
    let wanted = rows.len() + (rows.len() as f64 * shape.external_fraction) as usize;
    let mut p = 0;
    while rows.len() < wanted {
        let id = format!("EX_{p:07}");
        p += 1;
        for _ in 0..rng.random_range(1..=8) {
            // External years are far richer in melanoma (ISIC 2019: ~18 %).
            let target = rng.random_bool(0.18) as u8;
            rows.push(row(image, &id, target, "isic2019"));
            image += 1;
        }
    }
    rows.shuffle(&mut rng);
    rows
}

/// A table of exactly `rows` isic2020 rows, `patients` patients and `positives` positives,
/// long-tailed images per patient (at most 115, ISIC 2020's maximum).
pub fn exact_table(rows: usize, patients: usize, positives: usize, seed: u64) -> Vec<TrainRow> {
    let mut rng = StdRng::seed_from_u64(seed);
    let max = 115.max(rows.div_ceil(patients));
    let mut sizes = patient_sizes(&mut rng, patients, max);
    // Nudge random patients up or down one image until the total is exact.
    let mut total: usize = sizes.iter().sum();
    while total != rows {
        let p = rng.random_range(0..patients);
        if total < rows && sizes[p] < max {
            sizes[p] += 1;
            total += 1;
        } else if total > rows && sizes[p] > 1 {
            sizes[p] -= 1;
            total -= 1;
        }
    }
    let mut targets = vec![0u8; rows];
    targets[..positives].fill(1);
    targets.shuffle(&mut rng);
    let mut out = Vec::with_capacity(rows);
    for (p, n) in sizes.into_iter().enumerate() {
        let id = format!("IP_{p:07}");
        for _ in 0..n {
            let i = out.len();
            out.push(row(i, &id, targets[i], SOURCE_ISIC2020));
        }
    }
    out.shuffle(&mut rng);
    out
}
