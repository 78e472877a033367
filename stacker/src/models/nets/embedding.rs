//! An entity-embedding net (Guo & Berkhahn 2016): each categorical column gets an embedding of
//! `embedding_dim` (one more row for a missing value), concatenated with the numeric columns
//! standardised over the fold's training rows, then a fully connected net.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use stackhive_data::matrix::ColumnKind;
use stackhive_spec::stack::Params;
use tch::{nn, Kind, Tensor};

use super::mlp::Mlp;
use super::{rng, train, Forward, Inputs, Net, Schedule};
use crate::error::StackError;
use crate::models::{Fit, FoldPrediction};
use crate::prep::Prepared;

struct EntityNet {
    tables: Vec<Tensor>,
    mlp: Mlp,
}

impl Net for EntityNet {
    fn forward(&self, x: &Inputs, train: bool, rng: &mut ChaCha8Rng) -> Forward {
        let mut parts = vec![x.dense.shallow_clone()];
        if let Some(codes) = &x.codes {
            for (c, table) in self.tables.iter().enumerate() {
                parts.push(Tensor::embedding(
                    table,
                    &codes.select(1, c as i64),
                    -1,
                    false,
                    false,
                ));
            }
        }
        Ok(self.mlp.forward_dense(&Tensor::cat(&parts, 1), train, rng))
    }
}

/// The numeric columns standardised by the fold's training rows, and the categorical codes
/// (`levels` for a missing value) of `rows`, for the train side or the test side.
fn encode(prep: &Prepared, fold: u16, rows: &[usize], test: bool) -> (Vec<f32>, Vec<i64>) {
    let m = &prep.matrix;
    let c = m.cols();
    let train_rows = &prep.folds[fold as usize].train;
    let mut dense = Vec::new();
    let mut codes = Vec::new();
    let stats: Vec<Option<(f32, f32)>> = (0..c)
        .map(|j| match m.columns[j].kind {
            ColumnKind::Categorical { .. } => None,
            ColumnKind::Numeric => {
                let v: Vec<f64> = train_rows
                    .iter()
                    .map(|&i| m.train[i * c + j] as f64)
                    .filter(|v| v.is_finite())
                    .collect();
                let n = v.len().max(1) as f64;
                let mean = v.iter().sum::<f64>() / n;
                let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
                Some((mean as f32, if sd > 1e-12 { sd as f32 } else { 1.0 }))
            }
        })
        .collect();
    for &i in rows {
        let row = if test { m.test_row(i) } else { m.train_row(i) };
        for j in 0..c {
            match (stats[j], &m.columns[j].kind) {
                (Some((mean, sd)), _) => dense.push(if row[j].is_finite() {
                    (row[j] - mean) / sd
                } else {
                    0.0
                }),
                (None, ColumnKind::Categorical { levels }) => {
                    let v = row[j];
                    codes.push(if v.is_finite() && (v as u32) < *levels {
                        v as i64
                    } else {
                        *levels as i64
                    });
                }
                (None, ColumnKind::Numeric) => unreachable!("numeric columns have stats"),
            }
        }
    }
    (dense, codes)
}

pub fn fit(p: &Params, f: &Fit<'_>) -> Result<FoldPrediction, StackError> {
    let m = &f.prep.matrix;
    let levels: Vec<i64> = m
        .columns
        .iter()
        .filter_map(|c| match c.kind {
            ColumnKind::Categorical { levels } => Some(levels as i64),
            ColumnKind::Numeric => None,
        })
        .collect();
    let numeric = m.cols() - levels.len();
    let dim = p.usize("embedding_dim") as i64;
    let mut rng = rng(f.seed);
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let root = vs.root();
    let tables: Vec<Tensor> = levels
        .iter()
        .enumerate()
        .map(|(c, &l)| {
            let v: Vec<f32> = (0..(l + 1) * dim)
                .map(|_| rng.random_range(-1.0f32..1.0) * 0.1)
                .collect();
            root.var_copy(
                &format!("embedding{c}"),
                &Tensor::from_slice(&v).view([l + 1, dim]),
            )
        })
        .collect();
    let input = numeric as i64 + dim * levels.len() as i64;
    let mlp = Mlp::new(
        &root / "mlp",
        input,
        p.usize("layers"),
        p.usize("width") as i64,
        p.f64("dropout"),
        &mut rng,
    );
    let net = EntityNet { tables, mlp };
    let rows = &f.prep.folds[f.fold as usize];
    let inputs = |rows: &[usize], test: bool| {
        let (dense, codes) = encode(f.prep, f.fold, rows, test);
        Inputs {
            dense: super::matrix(&dense, numeric.max(1)).view([rows.len() as i64, numeric as i64]),
            codes: (!levels.is_empty()).then(|| {
                Tensor::from_slice(&codes)
                    .view([rows.len() as i64, levels.len() as i64])
                    .to_kind(Kind::Int64)
            }),
        }
    };
    let test_rows: Vec<usize> = (0..m.test_rows()).collect();
    let y = f.prep.labels(&rows.train);
    let schedule = Schedule {
        epochs: p.usize("epochs"),
        batch: p.usize("batch"),
        lr: p.f64("lr"),
        weight_decay: 0.0,
    };
    let mut out = train(
        &vs,
        &net,
        &inputs(&rows.train, false),
        &y,
        &[&inputs(&rows.valid, false), &inputs(&test_rows, true)],
        &schedule,
        &mut rng,
    )?;
    let test = out.pop().expect("two outputs");
    let valid = out.pop().expect("two outputs");
    Ok(FoldPrediction { valid, test })
}
