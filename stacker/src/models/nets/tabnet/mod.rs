//! TabNet (Arik & Pfister, "TabNet: Attentive Interpretable Tabular Learning", AAAI 2021),
//! shaped like pytorch-tabnet's defaults: `n_steps` decision steps, each choosing features
//! with a sparse attention mask (sparsemax of an attentive transformer, scaled by a prior that
//! `gamma` relaxes), transforming them with two shared and two step-specific GLU blocks (the
//! shared ones share their weights; each step keeps its own batch norms), and adding a ReLU of
//! its decision part to the output. Batch norms are "ghost" ones over virtual batches of 128
//! rows; the mask's entropy, weighted by `lambda_sparse`, joins the loss. As in pytorch-tabnet,
//! the linear layers have no bias and are initialised `xavier_normal_` with its gains, Adam
//! trains them, and gradients are clipped to norm 1: with PyTorch's default initialisation
//! instead, the same learning rate overshot and the bench's OOF AUC fell from 0.87 to 0.73.
//!
//! The forward and backward passes are written out by hand (`norm`, `ops`), not traced by
//! autograd: the matrix products still run in libtorch's MKL, but a batch norm and its GLU are
//! one pass over each virtual batch forward and one backward instead of a dozen operators with
//! their allocations, which were most of TabNet's time. `reference` (tests only) is the same
//! net on autograd; the two must agree on the loss and every gradient.

mod norm;
mod ops;
#[cfg(test)]
mod reference;

use rand_chacha::ChaCha8Rng;
use stackhive_spec::stack::Params;

use super::{diverged, rng, shuffle, xavier_values};
use crate::error::StackError;
use crate::models::{Fit, FoldPrediction};
use norm::{BatchNorm, BnCache};
use ops::{add_scaled, gemm, sparsemax, sparsemax_backward, Adam, View};

const VIRTUAL_BATCH: usize = 128;
const MOMENTUM: f32 = 0.02;
const EPS: f32 = 1e-15;
const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// Rows per forward pass when predicting (running statistics: the grouping does not matter).
const PREDICT_ROWS: usize = 1024;

/// pytorch-tabnet's gains for `xavier_normal_`: GLU layers and the others.
fn glu_gain(input: usize, output: usize) -> f64 {
    ((input + output) as f64 / (input as f64).sqrt()).sqrt()
}

fn plain_gain(input: usize, output: usize) -> f64 {
    ((input + output) as f64 / (4.0 * input as f64).sqrt()).sqrt()
}

/// The net's parameters, one flat buffer; layers hold offsets into it.
struct Alloc(Vec<f32>);

impl Alloc {
    fn push(&mut self, values: Vec<f32>) -> usize {
        let at = self.0.len();
        self.0.extend(values);
        at
    }

    /// A batch norm's scale (ones) and shift (zeros), `[γ…, β…]`.
    fn norm(&mut self, dim: usize) -> usize {
        let at = self.push(vec![1.0; dim]);
        self.push(vec![0.0; dim]);
        at
    }
}

/// Fully connected (no bias), ghost batch norm, gated linear unit, and a √½-scaled residual
/// when `residual` (every layer of a transformer but its first, as in pytorch-tabnet).
struct Glu {
    /// Offset of the `[2·out, fan_in]` weights (shared layers share it).
    w: usize,
    fan_in: usize,
    out: usize,
    bn: BatchNorm,
    residual: bool,
}

/// What a GLU layer's forward pass keeps for its backward pass.
#[derive(Default)]
struct GluCache {
    bn: BnCache,
    /// `sigmoid(b)` of the batch norm's output `[a, b]`.
    sig: Vec<f32>,
    out: Vec<f32>,
}

impl Glu {
    fn new(alloc: &mut Alloc, w: usize, fan_in: usize, out: usize, residual: bool) -> Glu {
        Glu {
            w,
            fan_in,
            out,
            bn: BatchNorm::new(alloc.norm(2 * out), 2 * out, MOMENTUM, Some(VIRTUAL_BATCH)),
            residual,
        }
    }

    fn weights<'a>(&self, p: &'a [f32]) -> View<'a> {
        View::new(&p[self.w..], 2 * self.out, self.fan_in)
    }

    /// `z` is scratch space for the product `x·Wᵀ`, which only the batch norm reads: keeping
    /// one per layer would double the memory a step streams through.
    fn forward(&mut self, p: &[f32], x: View, train: bool, c: &mut GluCache, z: &mut Vec<f32>) {
        let (rows, o) = (x.rows, self.out);
        z.resize(rows * 2 * o, 0.0);
        c.sig.resize(rows * o, 0.0);
        c.out.resize(rows * o, 0.0);
        gemm(x, false, self.weights(p), true, z, false);
        let residual = self.residual.then(|| {
            assert_eq!(x.stride, o, "a residual input is contiguous");
            (x.data, SQRT_HALF)
        });
        self.bn.forward_glu(
            p, train, z, rows, &mut c.bn, &mut c.sig, &mut c.out, residual,
        );
    }

    /// Given the output's gradient `dout`: the parameters' gradients added to `g`, the
    /// input's added to `dx`. `dy` is scratch space.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        p: &[f32],
        g: &mut [f32],
        x: View,
        c: &GluCache,
        dout: &[f32],
        dy: &mut Vec<f32>,
        dx: &mut [f32],
    ) {
        let (rows, o) = (x.rows, self.out);
        let scale = if self.residual {
            add_scaled(&mut dx[..rows * o], &dout[..rows * o], SQRT_HALF);
            SQRT_HALF
        } else {
            1.0
        };
        dy.resize(rows * 2 * o, 0.0);
        self.bn
            .backward_glu(p, g, &dout[..rows * o], scale, rows, &c.bn, &c.sig, dy);
        let dz = View::new(dy, rows, 2 * o);
        let dw = &mut g[self.w..self.w + 2 * o * self.fan_in];
        gemm(dz, true, x, false, dw, true);
        gemm(
            dz,
            false,
            self.weights(p),
            false,
            &mut dx[..rows * self.fan_in],
            true,
        );
    }
}

/// A feature transformer: the two shared GLU layers (shared weights, own batch norms), then
/// the step's own two.
struct Transformer {
    layers: [Glu; 4],
}

#[derive(Default)]
struct TransformerCache {
    layers: [GluCache; 4],
}

impl TransformerCache {
    fn out(&self) -> &[f32] {
        &self.layers[3].out
    }
}

impl Transformer {
    fn forward(
        &mut self,
        p: &[f32],
        x: View,
        train: bool,
        c: &mut TransformerCache,
        z: &mut Vec<f32>,
    ) {
        let (rows, w) = (x.rows, self.layers[0].out);
        let [c0, c1, c2, c3] = &mut c.layers;
        let [l0, l1, l2, l3] = &mut self.layers;
        l0.forward(p, x, train, c0, z);
        l1.forward(p, View::new(&c0.out, rows, w), train, c1, z);
        l2.forward(p, View::new(&c1.out, rows, w), train, c2, z);
        l3.forward(p, View::new(&c2.out, rows, w), train, c3, z);
    }

    /// Given the output's gradient in `dh` (used up as scratch, as are `dh2` and `dy`): the
    /// parameters' gradients added to `g`, the input's added to `dx`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        p: &[f32],
        g: &mut [f32],
        x: View,
        c: &TransformerCache,
        dh: &mut Vec<f32>,
        dh2: &mut Vec<f32>,
        dy: &mut Vec<f32>,
        dx: &mut [f32],
    ) {
        let (rows, w) = (x.rows, self.layers[0].out);
        let [c0, c1, c2, c3] = &c.layers;
        let [l0, l1, l2, l3] = &self.layers;
        zeroed(dh2, rows * w);
        l3.backward(p, g, View::new(&c2.out, rows, w), c3, dh, dy, dh2);
        zeroed(dh, rows * w);
        l2.backward(p, g, View::new(&c1.out, rows, w), c2, dh2, dy, dh);
        zeroed(dh2, rows * w);
        l1.backward(p, g, View::new(&c0.out, rows, w), c1, dh, dy, dh2);
        l0.backward(p, g, x, c0, dh2, dy, dx);
    }
}

fn zeroed(v: &mut Vec<f32>, len: usize) {
    v.clear();
    v.resize(len, 0.0);
}

/// A decision step: its attentive transformer (fully connected, ghost batch norm, times the
/// prior, sparsemax) and its feature transformer.
struct Step {
    transformer: Transformer,
    /// Offset of the attention's `[inputs, n_d]` weights.
    att: usize,
    att_bn: BatchNorm,
}

#[derive(Default)]
struct StepCache {
    bn: BnCache,
    /// The attention's batch-normed logits.
    logits: Vec<f32>,
    /// The prior this step's mask was scaled by.
    prior: Vec<f32>,
    mask: Vec<f32>,
    /// `ln(mask + ε)` on the mask's support, zero off it (training only): the entropy's
    /// gradient needs it again.
    ln_mask: Vec<f32>,
    /// `mask · x`: the transformer's input.
    masked: Vec<f32>,
    t: TransformerCache,
}

/// Everything a batch's forward pass keeps for its backward pass, and the backward pass's
/// scratch space; kept from batch to batch so no step allocates its activations or
/// gradients again (only vectors of one row's size are made per step).
#[derive(Default)]
struct Tape {
    rows: usize,
    input_bn: BnCache,
    x: Vec<f32>,
    first: TransformerCache,
    steps: Vec<StepCache>,
    decision: Vec<f32>,
    logits: Vec<f32>,
    entropy: f64,
    grad: Vec<f32>,
    /// Scratch: a layer's product before its batch norm.
    z: Vec<f32>,
    dh: Vec<f32>,
    dh2: Vec<f32>,
    dy: Vec<f32>,
    dx: Vec<f32>,
    dmasked: Vec<f32>,
    dprior: Vec<f32>,
    dprior_before: Vec<f32>,
    datt: Vec<f32>,
}

struct TabNet {
    params: Vec<f32>,
    inputs: usize,
    n_d: usize,
    gamma: f32,
    lambda_sparse: f32,
    input_bn: BatchNorm,
    first: Transformer,
    steps: Vec<Step>,
    /// Offset of the output layer's `[2, n_d]` weights: pytorch-tabnet's classifier has one
    /// logit per class under a softmax, which is a sigmoid of their difference; Adam moves
    /// each row on its own, so this is not the same training as one logit.
    out: usize,
}

impl TabNet {
    /// The weights are drawn in pytorch-tabnet's order: the shared layers, the first
    /// transformer's own, each step's own and its attention, the output.
    fn new(
        inputs: usize,
        n_d: usize,
        n_steps: usize,
        gamma: f64,
        lambda_sparse: f64,
        rng: &mut ChaCha8Rng,
    ) -> TabNet {
        let width = 2 * n_d; // n_d + n_a, with n_a = n_d
        let mut a = Alloc(Vec::new());
        let glu_w = |a: &mut Alloc, rng: &mut ChaCha8Rng, fan_in: usize| {
            a.push(xavier_values(
                fan_in,
                2 * width,
                glu_gain(fan_in, 2 * width),
                rng,
            ))
        };
        let shared = [glu_w(&mut a, rng, inputs), glu_w(&mut a, rng, width)];
        let transformer = |a: &mut Alloc, rng: &mut ChaCha8Rng| {
            let own = [glu_w(a, rng, width), glu_w(a, rng, width)];
            Transformer {
                layers: [
                    Glu::new(a, shared[0], inputs, width, false),
                    Glu::new(a, shared[1], width, width, true),
                    Glu::new(a, own[0], width, width, true),
                    Glu::new(a, own[1], width, width, true),
                ],
            }
        };
        let first = transformer(&mut a, rng);
        let steps = (0..n_steps)
            .map(|_| {
                let t = transformer(&mut a, rng);
                let att = a.push(xavier_values(n_d, inputs, plain_gain(n_d, inputs), rng));
                Step {
                    transformer: t,
                    att,
                    att_bn: BatchNorm::new(a.norm(inputs), inputs, MOMENTUM, Some(VIRTUAL_BATCH)),
                }
            })
            .collect();
        let out = a.push(xavier_values(n_d, 2, plain_gain(n_d, 2), rng));
        TabNet {
            inputs,
            n_d,
            gamma: gamma as f32,
            lambda_sparse: lambda_sparse as f32,
            // pytorch-tabnet: a plain batch norm of the inputs, momentum 0.01.
            input_bn: BatchNorm::new(a.norm(inputs), inputs, 0.01, None),
            first,
            steps,
            out,
            params: a.0,
        }
    }

    /// The logits of `rows` rows of `x` into `t.logits`; in training mode also the masks'
    /// entropy (summed over steps, averaged over rows) into `t.entropy`, and batch norms use
    /// the batch's statistics and update their running ones.
    fn forward(&mut self, x: &[f32], rows: usize, train: bool, t: &mut Tape) {
        let (n_in, d) = (self.inputs, self.n_d);
        let width = 2 * d;
        let p = &self.params;
        t.rows = rows;
        t.x.resize(rows * n_in, 0.0);
        self.input_bn
            .forward(p, train, x, rows, &mut t.input_bn, &mut t.x, 0);
        self.first.forward(
            p,
            View::new(&t.x, rows, n_in),
            train,
            &mut t.first,
            &mut t.z,
        );
        t.steps.resize_with(self.steps.len(), Default::default);
        zeroed(&mut t.decision, rows * d);
        t.entropy = 0.0;
        for (s, step) in self.steps.iter_mut().enumerate() {
            let (before, after) = t.steps.split_at_mut(s);
            let c = &mut after[0];
            let previous = before.last();
            let h = previous.map_or(t.first.out(), |c| c.t.out());
            let a = View::new(h, rows, width).columns(d, d);
            t.z.resize(rows * n_in, 0.0);
            c.logits.resize(rows * n_in, 0.0);
            gemm(
                a,
                false,
                View::new(&p[step.att..], n_in, d),
                true,
                &mut t.z,
                false,
            );
            step.att_bn
                .forward(p, train, &t.z, rows, &mut c.bn, &mut c.logits, 0);
            match previous {
                None => {
                    c.prior.clear();
                    c.prior.resize(rows * n_in, 1.0);
                }
                Some(b) => {
                    c.prior.resize(rows * n_in, 0.0);
                    for ((q, &pb), &mb) in c.prior.iter_mut().zip(&b.prior).zip(&b.mask) {
                        *q = pb * (self.gamma - mb);
                    }
                }
            }
            c.mask.resize(rows * n_in, 0.0);
            for ((m, &l), &q) in c.mask.iter_mut().zip(&c.logits).zip(&c.prior) {
                *m = l * q;
            }
            sparsemax(&mut c.mask, n_in);
            // Only the training loss has the sparsity term.
            if train {
                c.ln_mask.resize(rows * n_in, 0.0);
                let mut ent = 0f64;
                for (l, &m) in c.ln_mask.iter_mut().zip(&c.mask) {
                    *l = if m > 0.0 { (m + EPS).ln() } else { 0.0 };
                    ent -= (m * *l) as f64;
                }
                t.entropy += ent / rows as f64;
            }
            c.masked.resize(rows * n_in, 0.0);
            for ((o, &m), &v) in c.masked.iter_mut().zip(&c.mask).zip(&t.x) {
                *o = m * v;
            }
            step.transformer.forward(
                p,
                View::new(&c.masked, rows, n_in),
                train,
                &mut c.t,
                &mut t.z,
            );
            for (dec, hr) in t
                .decision
                .chunks_exact_mut(d)
                .zip(c.t.out().chunks_exact(width))
            {
                for (o, &v) in dec.iter_mut().zip(&hr[..d]) {
                    *o += v.max(0.0);
                }
            }
        }
        let w_out = self.output_weights();
        t.logits.clear();
        t.logits.extend(
            t.decision
                .chunks_exact(d)
                .map(|r| r.iter().zip(&w_out).map(|(a, b)| a * b).sum::<f32>()),
        );
    }

    /// After a training `forward`: the loss (binary cross-entropy with logits, averaged,
    /// plus the sparsity term) against `y`, and its gradient in `t.grad`.
    fn backward(&self, y: &[f32], t: &mut Tape) -> f64 {
        let (rows, n_in, d) = (t.rows, self.inputs, self.n_d);
        let width = 2 * d;
        let p = &self.params;
        zeroed(&mut t.grad, p.len());
        let sparsity = self.lambda_sparse as f64 / self.steps.len() as f64;
        let mut loss = t.entropy * sparsity;
        let mut dlogit = Vec::with_capacity(rows);
        for (&l, &y) in t.logits.iter().zip(y) {
            let (l, y) = (l as f64, y as f64);
            loss += (l.max(0.0) - l * y + (-l.abs()).exp().ln_1p()) / rows as f64;
            dlogit.push(((1.0 / (1.0 + (-l).exp()) - y) / rows as f64) as f32);
        }
        let w_out = self.output_weights();
        let (g0, g1) = t.grad[self.out..self.out + 2 * d].split_at_mut(d);
        for (dec, &g) in t.decision.chunks_exact(d).zip(&dlogit) {
            add_scaled(g1, dec, g);
        }
        g0.iter_mut().zip(g1.iter()).for_each(|(a, &b)| *a = -b);
        let entropy_coef = (sparsity / rows as f64) as f32;
        zeroed(&mut t.datt, rows * d);
        zeroed(&mut t.dprior, rows * n_in);
        zeroed(&mut t.dx, rows * n_in);
        for s in (0..self.steps.len()).rev() {
            let step = &self.steps[s];
            let (before, after) = t.steps.split_at(s);
            let c = &after[0];
            // The output's gradient: through the ReLU into the decision half, and from the
            // next step's attention into the other.
            t.dh.resize(rows * width, 0.0);
            for (r, (dh, hr)) in
                t.dh.chunks_exact_mut(width)
                    .zip(c.t.out().chunks_exact(width))
                    .enumerate()
            {
                for j in 0..d {
                    dh[j] = if hr[j] > 0.0 {
                        dlogit[r] * w_out[j]
                    } else {
                        0.0
                    };
                }
                dh[d..].copy_from_slice(&t.datt[r * d..(r + 1) * d]);
            }
            zeroed(&mut t.dmasked, rows * n_in);
            step.transformer.backward(
                p,
                &mut t.grad,
                View::new(&c.masked, rows, n_in),
                &c.t,
                &mut t.dh,
                &mut t.dh2,
                &mut t.dy,
                &mut t.dmasked,
            );
            // masked = mask·x; prior' = prior·(γ - mask); the entropy term. `dmask` reuses
            // `dmasked`'s buffer, `dprior_before` collects the gradient for the prior.
            t.dprior_before.resize(rows * n_in, 0.0);
            // Off the support `m` and `ln_mask` are zero, and so is the entropy's term.
            for ((((g, dx), db), (&m, &lm)), (&x, (&q, &dnext))) in t
                .dmasked
                .iter_mut()
                .zip(t.dx.iter_mut())
                .zip(t.dprior_before.iter_mut())
                .zip(c.mask.iter().zip(&c.ln_mask))
                .zip(t.x.iter().zip(c.prior.iter().zip(&t.dprior)))
            {
                let dm = *g;
                *dx += dm * m;
                *g = dm * x - dnext * q - entropy_coef * (lm + m / (m + EPS));
                *db = dnext * (self.gamma - m);
            }
            sparsemax_backward(&mut t.dmasked, &c.mask, n_in);
            // mask input = logits·prior.
            for (((g, db), &l), &q) in t
                .dmasked
                .iter_mut()
                .zip(t.dprior_before.iter_mut())
                .zip(&c.logits)
                .zip(&c.prior)
            {
                *db += *g * l;
                *g *= q;
            }
            std::mem::swap(&mut t.dprior, &mut t.dprior_before);
            step.att_bn
                .backward(p, &mut t.grad, &mut t.dmasked, rows, &c.bn, true);
            let dz = View::new(&t.dmasked, rows, n_in);
            let h = before.last().map_or(t.first.out(), |c| c.t.out());
            let a = View::new(h, rows, width).columns(d, d);
            gemm(
                dz,
                true,
                a,
                false,
                &mut t.grad[step.att..step.att + n_in * d],
                true,
            );
            gemm(
                dz,
                false,
                View::new(&p[step.att..], n_in, d),
                false,
                &mut t.datt,
                false,
            );
        }
        t.dh.resize(rows * width, 0.0);
        for (r, dh) in t.dh.chunks_exact_mut(width).enumerate() {
            dh[..d].fill(0.0);
            dh[d..].copy_from_slice(&t.datt[r * d..(r + 1) * d]);
        }
        self.first.backward(
            p,
            &mut t.grad,
            View::new(&t.x, rows, n_in),
            &t.first,
            &mut t.dh,
            &mut t.dh2,
            &mut t.dy,
            &mut t.dx,
        );
        self.input_bn
            .backward(p, &mut t.grad, &mut t.dx, rows, &t.input_bn, false);
        loss
    }

    /// The weights of the logit difference: class 1's less class 0's.
    fn output_weights(&self) -> Vec<f32> {
        let d = self.n_d;
        let w = &self.params[self.out..self.out + 2 * d];
        w[d..].iter().zip(&w[..d]).map(|(a, b)| a - b).collect()
    }

    /// Probabilities for every row of `x`.
    fn predict(&mut self, x: &[f32], t: &mut Tape) -> Vec<f32> {
        let mut out = Vec::with_capacity(x.len() / self.inputs.max(1));
        for chunk in x.chunks(PREDICT_ROWS * self.inputs) {
            self.forward(chunk, chunk.len() / self.inputs, false, t);
            out.extend(t.logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())));
        }
        out
    }
}

pub fn fit(p: &Params, f: &Fit<'_>) -> Result<FoldPrediction, StackError> {
    let d = f.prep.dense(f.fold);
    let mut rng = rng(f.seed);
    let mut net = TabNet::new(
        d.cols,
        p.usize("n_d"),
        p.usize("n_steps"),
        p.f64("gamma"),
        p.f64("lambda_sparse"),
        &mut rng,
    );
    let y = f.prep.labels(&f.prep.folds[f.fold as usize].train);
    let mut adam = Adam::new(net.params.len(), p.f64("lr"), Some(1.0));
    let mut tape = Tape::default();
    let n = y.len();
    let mut order: Vec<i64> = (0..n as i64).collect();
    let (mut xb, mut yb) = (Vec::new(), Vec::new());
    for epoch in 0..p.usize("epochs") {
        shuffle(&mut order, &mut rng);
        for chunk in order.chunks(p.usize("batch").max(2)) {
            // A batch of one cannot be normalised; it is left out.
            if chunk.len() < 2 {
                continue;
            }
            xb.clear();
            yb.clear();
            for &r in chunk {
                let r = r as usize;
                xb.extend_from_slice(&d.train[r * d.cols..(r + 1) * d.cols]);
                yb.push(y[r]);
            }
            net.forward(&xb, chunk.len(), true, &mut tape);
            let loss = net.backward(&yb, &mut tape);
            if !loss.is_finite() {
                return Err(diverged(loss, epoch));
            }
            adam.step(&mut net.params, &mut tape.grad);
        }
    }
    let valid = net.predict(&d.valid, &mut tape);
    let test = net.predict(&d.test, &mut tape);
    Ok(FoldPrediction { valid, test })
}
