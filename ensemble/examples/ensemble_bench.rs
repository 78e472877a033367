//! Times `run` at the size the product meets: 33,000 train rows (about 2% positive, as in
//! SIIM-ISIC), 11,000 test rows, 300 models, default config. Prints figures; asserts nothing.
//! `cargo run --release -p stackhive-ensemble --example ensemble_bench [-- rows models]`

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stackhive_ensemble::{run, verdict, Config, Model, Problem};

fn sigmoid(z: f64) -> f32 {
    (1.0 / (1.0 + (-z).exp())) as f32
}

fn gauss(rng: &mut ChaCha8Rng) -> f64 {
    // Box–Muller: enough for a benchmark and keeps dependencies to the crate's own.
    let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(33_000);
    let n_models = args.get(1).copied().unwrap_or(300);
    let test_rows = rows / 3;
    let k = 5u16;
    let mut rng = ChaCha8Rng::seed_from_u64(1);

    // Patients of about 16 rows each (ISIC's average), one fold per patient.
    let mut groups = Vec::with_capacity(rows);
    let mut patient_effect = Vec::new();
    while groups.len() < rows {
        let p = patient_effect.len() as u32;
        patient_effect.push(0.8 * gauss(&mut rng));
        for _ in 0..rng.random_range(1..32) {
            groups.push(p);
        }
    }
    groups.truncate(rows);
    let fold_of: Vec<u16> = (0..patient_effect.len())
        .map(|_| rng.random_range(0..k))
        .collect();
    let folds: Vec<u16> = groups.iter().map(|&g| fold_of[g as usize]).collect();
    // A row's latent score: its patient's effect plus its own; positive when a noisy reading
    // of it clears a high threshold.
    let draw = |groups: &[u32], effects: &[f64], rng: &mut ChaCha8Rng| {
        let latent: Vec<f64> = groups
            .iter()
            .map(|&g| effects[g as usize] + gauss(rng))
            .collect();
        let labels: Vec<u8> = latent
            .iter()
            .map(|z| (z + 0.8 * gauss(rng) > 2.6) as u8)
            .collect();
        (latent, labels)
    };
    let (latent, labels) = draw(&groups, &patient_effect, &mut rng);
    let test_groups: Vec<u32> = (0..test_rows as u32).map(|i| i / 16).collect();
    let test_effect: Vec<f64> = (0..=test_rows / 16)
        .map(|_| 0.8 * gauss(&mut rng))
        .collect();
    let (test_latent, test_labels) = draw(&test_groups, &test_effect, &mut rng);
    println!(
        "{rows} train rows ({:.1}% positive, {} patients), {test_rows} test rows, {n_models} models",
        100.0 * labels.iter().filter(|&&l| l == 1).count() as f64 / rows as f64,
        patient_effect.len()
    );

    let models: Vec<Model> = (0..n_models)
        .map(|i| {
            let sd = 0.5 + 2.0 * (i as f64 / n_models as f64);
            let mut see = |z: &f64| sigmoid(z - 3.0 + sd * gauss(&mut rng));
            Model {
                id: i as i64,
                name: format!("model-{i}"),
                kind: if i % 2 == 0 { "cnn" } else { "lightgbm" }.into(),
                oof: latent.iter().map(&mut see).collect(),
                test: test_latent.iter().map(&mut see).collect(),
            }
        })
        .collect();
    let problem = Problem {
        labels: &labels,
        folds: &folds,
        k,
        groups: &groups,
        test_len: test_rows,
        test_groups: &test_groups,
        test_labels: Some(&test_labels),
    };
    // STACKHIVE_BENCH_METHODS=median,caruana times a subset of the methods.
    let mut config = Config::default();
    if let Ok(list) = std::env::var("STACKHIVE_BENCH_METHODS") {
        config.methods = list
            .split(',')
            .map(|m| m.parse().expect("a method name"))
            .collect();
    }
    let start = Instant::now();
    let out = run(&problem, &models, &config).expect("valid generated problem");
    let seconds = start.elapsed().as_secs_f64();
    print!("{}", verdict(&out));
    println!(
        "run: {seconds:.1} s on {} threads ({} models kept by the correlation cap)",
        rayon::current_num_threads(),
        out.kept.len()
    );
}
