//! The evidence behind the learning tests' bounds (issue 10): trains the configs those tests
//! use over several training seeds and data seeds and prints each run's validation AUC, so a
//! bound is chosen against a spread rather than one machine's one number. Run it under each
//! `ATEN_CPU_CAPABILITY` the CPU supports (`default`, `avx2`, `avx512`): libtorch picks other
//! kernels, the float rounding changes, and a run lands elsewhere.
//!
//! ```sh
//! ATEN_CPU_CAPABILITY=avx2 cargo run --release -p stackhive-trainer --example learning_margins -- \
//!     --configs adamw,sgd --seeds 1,2,3,4,5,6 --data-seeds 7,11
//! ```
//!
//! Prints one line per run and the minimum per config; asserts nothing.

#[path = "../tests/synth_fixture/mod.rs"]
mod synth_fixture;

use clap::Parser;
use stackhive_trainer::data::FoldData;
use stackhive_trainer::{train, TrainConfig};

#[derive(Parser)]
struct Args {
    /// `adamw` (tests/train.rs: AdamW, one-cycle, 10 epochs) and/or `sgd` (tests/determinism.rs).
    #[arg(long, value_delimiter = ',', default_value = "adamw,sgd")]
    configs: Vec<String>,
    /// Training seeds.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5,6")]
    seeds: Vec<u64>,
    /// Seeds of the generated dataset (the tests use 7).
    #[arg(long, value_delimiter = ',', default_value = "7")]
    data_seeds: Vec<u64>,
    /// Training patients of the fixture (the tests use 160).
    #[arg(long, default_value_t = 160)]
    patients: usize,
    /// Folds of the fixture (the learning tests use 3); fold 0 validates.
    #[arg(long, default_value_t = 3)]
    k: u16,
    /// Overrides of the sgd config, for exploring others: learning rate, epochs, epochs per step.
    #[arg(long)]
    sgd_lr: Option<f64>,
    #[arg(long)]
    sgd_epochs: Option<usize>,
    #[arg(long)]
    sgd_step_epochs: Option<u32>,
}

fn config(name: &str, args: &Args) -> TrainConfig {
    match name {
        "adamw" => synth_fixture::tiny_config(10),
        "sgd" => {
            let mut cfg = synth_fixture::tiny_sgd_config();
            cfg.optimizer.lr = args.sgd_lr.unwrap_or(cfg.optimizer.lr);
            cfg.epochs = args.sgd_epochs.unwrap_or(cfg.epochs);
            cfg.schedule.step_epochs = args.sgd_step_epochs.unwrap_or(cfg.schedule.step_epochs);
            cfg
        }
        other => panic!("unknown config {other:?}, expected adamw or sgd"),
    }
}

fn main() {
    let args = Args::parse();
    let capability = std::env::var("ATEN_CPU_CAPABILITY").unwrap_or_else(|_| "auto".into());
    for data_seed in &args.data_seeds {
        let fx = synth_fixture::fixture_with(args.patients, *data_seed, args.k);
        let data = FoldData::new(&fx.dataset, &fx.folds, 0, &fx.cache).unwrap();
        for name in &args.configs {
            let mut aucs = Vec::new();
            for seed in &args.seeds {
                let mut cfg = config(name, &args);
                cfg.seed = *seed;
                let out = train(&cfg, &data, &mut |_| {}).unwrap().outcome;
                let auc = out.epochs.last().unwrap().valid_auc.unwrap();
                println!(
                    "capability={capability} config={name} data_seed={data_seed} seed={seed} auc={auc:.3} \
                     valid_rows={}",
                    out.oof_rows.len()
                );
                aucs.push(auc);
            }
            let min = aucs.iter().copied().fold(f64::INFINITY, f64::min);
            let mean = aucs.iter().sum::<f64>() / aucs.len() as f64;
            println!(
                "capability={capability} config={name} data_seed={data_seed} min={min:.3} mean={mean:.3}"
            );
        }
    }
}
