//! A fully connected net on the fold's standardised features: `layers` hidden layers of
//! `width` ReLU units with dropout, then one logit.

use rand_chacha::ChaCha8Rng;
use stackhive_spec::stack::Params;
use tch::nn;

use super::{dropout, matrix, rng, train, Forward, Inputs, Linear, Net, Schedule};
use crate::error::StackError;
use crate::models::{Fit, FoldPrediction};

pub struct Mlp {
    hidden: Vec<Linear>,
    out: Linear,
    dropout: f64,
}

impl Mlp {
    pub fn new(
        p: nn::Path<'_>,
        input: i64,
        layers: usize,
        width: i64,
        dropout: f64,
        rng: &mut ChaCha8Rng,
    ) -> Mlp {
        let mut hidden = Vec::with_capacity(layers);
        let mut fan_in = input;
        for l in 0..layers {
            hidden.push(Linear::new(&p / format!("hidden{l}"), fan_in, width, rng));
            fan_in = width;
        }
        Mlp {
            hidden,
            out: Linear::new(&p / "out", fan_in, 1, rng),
            dropout,
        }
    }

    /// The hidden layers, for nets that put something in front of them.
    pub fn forward_dense(&self, x: &tch::Tensor, train: bool, rng: &mut ChaCha8Rng) -> tch::Tensor {
        let mut h = x.shallow_clone();
        for l in &self.hidden {
            h = dropout(&l.forward(&h).relu(), self.dropout, train, rng);
        }
        self.out.forward(&h).squeeze_dim(1)
    }
}

impl Net for Mlp {
    fn forward(&self, x: &Inputs, train: bool, rng: &mut ChaCha8Rng) -> Forward {
        Ok(self.forward_dense(&x.dense, train, rng))
    }
}

pub fn fit(p: &Params, f: &Fit<'_>) -> Result<FoldPrediction, StackError> {
    let d = f.prep.dense(f.fold);
    let mut rng = rng(f.seed);
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let net = Mlp::new(
        vs.root(),
        d.cols as i64,
        p.usize("layers"),
        p.usize("width") as i64,
        p.f64("dropout"),
        &mut rng,
    );
    let inputs = |v: &[f32]| Inputs {
        dense: matrix(v, d.cols),
        codes: None,
    };
    let y = f.prep.labels(&f.prep.folds[f.fold as usize].train);
    let schedule = Schedule {
        epochs: p.usize("epochs"),
        batch: p.usize("batch"),
        lr: p.f64("lr"),
        weight_decay: p.f64("weight_decay"),
    };
    let mut out = train(
        &vs,
        &net,
        &inputs(&d.train),
        &y,
        &[&inputs(&d.valid), &inputs(&d.test)],
        &schedule,
        &mut rng,
    )?;
    let test = out.pop().expect("two outputs");
    let valid = out.pop().expect("two outputs");
    Ok(FoldPrediction { valid, test })
}
