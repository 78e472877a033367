//! What the stacker's integration tests share: a generated problem and a job for it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stackhive_data::matrix::{Column, FeatureMatrix};
use stackhive_spec::stack::{ModelType, StackSpec};

/// `n` train and `n / 4` test rows, 8 numeric features and a 4-level categorical one, labels
/// drawn from a logistic model of them (the oracle ranks at about 0.85), 5 folds.
pub fn logistic_problem(n: usize, seed: u64) -> (FeatureMatrix, f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let beta = [1.0, -0.8, 0.6, 0.5, -0.4, 0.3, 0.0, 0.0];
    let cat_effect = [-0.5, 0.0, 0.3, 0.8];
    let row = |rng: &mut ChaCha8Rng| {
        let x: Vec<f32> = (0..8).map(|_| rng.random_range(-2.0..2.0)).collect();
        let c = rng.random_range(0..4usize);
        let z: f64 =
            x.iter().zip(beta).map(|(&x, b)| x as f64 * b).sum::<f64>() + cat_effect[c] - 1.0;
        let p = 1.0 / (1.0 + (-z).exp());
        let y = (rng.random::<f64>() < p) as u8;
        let mut v = x;
        v.push(c as f32);
        (v, y, p as f32)
    };
    let (mut train, mut labels, mut truth) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let (v, y, p) = row(&mut rng);
        train.extend(v);
        labels.push(y);
        truth.push(p);
    }
    let mut test = Vec::new();
    for _ in 0..n / 4 {
        test.extend(row(&mut rng).0);
    }
    let oracle = stackhive_data::auc::roc_auc(&labels, &truth).unwrap();
    let mut columns: Vec<Column> = (0..8).map(|i| Column::numeric(format!("x{i}"))).collect();
    columns.push(Column::categorical("site", 4));
    let m = FeatureMatrix {
        columns,
        train_ids: (0..n).map(|i| format!("r{i}")).collect(),
        test_ids: (0..n / 4).map(|i| format!("t{i}")).collect(),
        folds: (0..n).map(|i| (i % 5) as u16).collect(),
        k: 5,
        source_rows: (0..n as u32).collect(),
        train_groups: (0..n as u32).collect(),
        test_groups: (0..(n / 4) as u32).collect(),
        labels,
        train,
        test,
    };
    (m, oracle)
}

pub fn job(model: ModelType, params: serde_json::Value) -> stackhive_spec::stack::StackJob {
    StackSpec {
        features: "fs".into(),
        model: model.name().into(),
        params: params.as_object().unwrap().clone(),
        seed: 11,
    }
    .validate()
    .unwrap()
}
