//! Fold assignment time per scheme for an ISIC-2020-sized train table (33,126 rows, 2,056
//! patients, 584 positives = 1.76 %, long-tailed images per patient) and for ten times that.
//! Prints figures, asserts nothing (shared/STYLE.md: speed goals live in benchmarks).
//!
//! `cargo run --release -p stackhive-data --example folds_bench`

#[path = "../tests/folds_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use stackhive_data::folds::{assign, report, FoldReport, FoldSpec, Scheme};

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "fold assignment (single-threaded; median of the runs; this machine has {threads} cores)"
    );
    println!(
        "{:>6} {:>8} {:>8} {:>5} {:>3} {:>18} {:>12} {:>10} {:>10}",
        "scale", "rows", "patients", "pos", "k", "scheme", "assign", "max size", "max rate"
    );
    for scale in [1usize, 10] {
        let rows = support::exact_table(33_126 * scale, 2_056 * scale, 584 * scale, 2020);
        for k in [5u16, 20] {
            let mut reports = Vec::new();
            for scheme in Scheme::ALL {
                let spec = FoldSpec {
                    scheme,
                    k,
                    seed: 42,
                };
                let runs = if scale == 1 { 15 } else { 5 };
                let mut times = Vec::with_capacity(runs);
                let mut folds = None;
                for _ in 0..runs {
                    let start = Instant::now();
                    folds = Some(assign(&rows, &spec).expect("valid table"));
                    times.push(start.elapsed());
                }
                let folds = folds.expect("at least one run");
                let r = report(&rows, &folds).expect("same table");
                println!(
                    "{:>5}× {:>8} {:>8} {:>5} {:>3} {:>18} {:>9.2} ms {:>9.3}% {:>7.3} pp",
                    scale,
                    rows.len(),
                    2_056 * scale,
                    584 * scale,
                    k,
                    scheme.name(),
                    median(times).as_secs_f64() * 1e3,
                    r.max_size_deviation() * 100.0,
                    r.max_rate_deviation_pp()
                );
                reports.push((scheme.name(), r));
            }
            if scale == 1 && k == 5 {
                let table: Vec<(&str, &FoldReport)> =
                    reports.iter().map(|(n, r)| (*n, r)).collect();
                println!("\n{}", FoldReport::render_table(&table));
            }
        }
    }
}
