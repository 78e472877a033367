//! Tests: TabNet's hand-written passes against the same net on libtorch's autograd, built from
//! the same flat parameters (sparsemax here by the paper's sorting formula), and the pieces
//! of `ops` against their definitions.

use rand::Rng;
use tch::{Kind, Tensor};

use super::norm::exp;
use super::ops::{sparsemax, sparsemax_backward};
use super::*;

/// Sparsemax by sorting (Martins & Astudillo 2016, Algorithm 1).
fn sparsemax_by_sorting(z: &Tensor) -> Tensor {
    let d = z.size()[1];
    let (sorted, _) = z.sort(1, true);
    let cumsum = sorted.cumsum(1, z.kind());
    let range = Tensor::arange_start(1, d + 1, (z.kind(), tch::Device::Cpu)).view([1, d]);
    let support = (&range * &sorted + 1.0).gt_tensor(&cumsum);
    let k = support.sum_dim_intlist([1i64].as_slice(), true, Kind::Int64);
    let tau = (cumsum.gather(1, &(&k - 1), false) - 1.0) / k.to_kind(z.kind());
    (z - tau).clamp_min(0.0)
}

/// The training loss of `net` on a batch, by autograd in double precision, and its gradient.
fn autograd_loss(net: &TabNet, x: &[f32], y: &[f32]) -> (f64, Vec<f32>) {
    let kind = Kind::Double;
    let n_in = net.inputs as i64;
    let d = net.n_d as i64;
    let rows = (x.len() / net.inputs) as i64;
    let p = Tensor::from_slice(&net.params)
        .to_kind(kind)
        .set_requires_grad(true);
    let weights = |at: usize, r: i64, c: i64| p.narrow(0, at as i64, r * c).view([r, c]);
    let bn = |z: &Tensor, at: usize, dim: i64, ghost: bool| {
        let gamma = p.narrow(0, at as i64, dim);
        let beta = p.narrow(0, at as i64 + dim, dim);
        let norm = |c: &Tensor| {
            c.batch_norm(
                Some(&gamma),
                Some(&beta),
                None::<&Tensor>,
                None::<&Tensor>,
                true,
                0.1,
                1e-5,
                false,
            )
        };
        if ghost && rows > VIRTUAL_BATCH as i64 {
            let chunks = (rows as f64 / VIRTUAL_BATCH as f64).ceil() as i64;
            let parts: Vec<Tensor> = z.chunk(chunks, 0).iter().map(norm).collect();
            Tensor::cat(&parts, 0)
        } else {
            norm(z)
        }
    };
    let scale = 0.5f64.sqrt();
    let glu = |x: &Tensor, l: &Glu| {
        let o = l.out as i64;
        let z = x.matmul(&weights(l.w, 2 * o, l.fan_in as i64).tr());
        let h = bn(&z, l.bn.at, 2 * o, true).glu(1);
        if l.residual {
            (h + x) * scale
        } else {
            h
        }
    };
    let transformer =
        |x: &Tensor, t: &Transformer| t.layers.iter().fold(x.shallow_clone(), |h, l| glu(&h, l));
    let xt = Tensor::from_slice(x).view([rows, n_in]).to_kind(kind);
    let x0 = bn(&xt, net.input_bn.at, n_in, false);
    let mut prior = Tensor::ones_like(&x0);
    let mut attention = transformer(&x0, &net.first).narrow(1, d, d);
    let mut decision = Tensor::zeros([rows, d], (kind, tch::Device::Cpu));
    let mut entropy = Tensor::zeros([], (kind, tch::Device::Cpu));
    for step in &net.steps {
        let z = attention.matmul(&weights(step.att, n_in, d).tr());
        let mask = sparsemax_by_sorting(&(bn(&z, step.att_bn.at, n_in, true) * &prior));
        entropy += (-&mask * (&mask + EPS as f64).log())
            .sum_dim_intlist([1i64].as_slice(), false, kind)
            .mean(kind);
        prior = prior.multiply(&(net.gamma as f64 - &mask));
        let h = transformer(&(&mask * &x0), &step.transformer);
        decision += h.narrow(1, 0, d).relu();
        attention = h.narrow(1, d, d);
    }
    let two = decision.matmul(&weights(net.out, 2, d).tr());
    let logits = two.select(1, 1) - two.select(1, 0);
    let loss = logits.binary_cross_entropy_with_logits::<Tensor>(
        &Tensor::from_slice(y).to_kind(kind),
        None,
        None,
        tch::Reduction::Mean,
    ) + entropy * (net.lambda_sparse as f64 / net.steps.len() as f64);
    loss.backward();
    let grad = Vec::<f32>::try_from(p.grad().to_kind(Kind::Float)).unwrap();
    (loss.double_value(&[]), grad)
}

/// The largest absolute difference between `a` and `b`, element by element.
fn largest_gap(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (a, b)| m.max((a - b).abs()))
}

fn batch(rows: usize, inputs: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut r = rng(seed);
    let x: Vec<f32> = (0..rows * inputs)
        .map(|_| r.sample::<f32, _>(rand_distr::StandardNormal))
        .collect();
    let y = x
        .chunks_exact(inputs)
        .map(|row| ((row[0] - row[1] + 0.5 * r.random::<f32>()) > 0.0) as u8 as f32)
        .collect();
    (x, y)
}

/// Shapes: 300 rows are three virtual batches of 100; 8 inputs with n_d 4 make the first
/// shared layer square (it still has no residual); a large `lambda_sparse` weighs the
/// entropy's gradient in.
#[test]
fn hand_written_gradients_match_autograd() {
    for (inputs, n_d, steps, rows, lambda) in [
        (7, 4, 3, 300, 1e-3),
        (8, 4, 2, 300, 0.5),
        (5, 8, 4, 100, 0.1),
    ] {
        let mut r = rng(11);
        let mut net = TabNet::new(inputs, n_d, steps, 1.3, lambda, &mut r);
        // Away from the initialisation, so every batch norm's scale and shift matter.
        for v in net.params.iter_mut() {
            *v += 0.2 * r.sample::<f32, _>(rand_distr::StandardNormal);
        }
        let (x, y) = batch(rows, inputs, 5);
        let mut tape = Tape::default();
        net.forward(&x, rows, true, &mut tape);
        let ours = net.backward(&y, &mut tape);
        let (theirs, grad) = autograd_loss(&net, &x, &y);
        assert!(
            (ours - theirs).abs() < 1e-5 * theirs.abs().max(1.0),
            "{inputs} inputs, n_d {n_d}: loss {ours} by hand, {theirs} by autograd"
        );
        let scale = grad.iter().fold(0f32, |m, g| m.max(g.abs()));
        let gap = largest_gap(&tape.grad, &grad);
        // Rounding alone: against this double-precision truth, libtorch's own single-precision
        // autograd is off by up to 0.8e-4 of the largest gradient here, these passes by up to
        // 1.3e-4 (the large `lambda_sparse` case, through log(mask) of tiny masks). A wrong
        // term (an entropy gradient of the wrong sign) is off by 2e-3 or more.
        assert!(
            gap < 4e-4 * scale.max(1e-3),
            "{inputs} inputs, n_d {n_d}: gradients differ by {gap} (largest {scale})"
        );
    }
}

/// Running statistics: a batch norm over three virtual batches (300 rows: 100 each) ends where
/// libtorch's batch norm, called on each in turn, leaves its running mean and variance.
#[test]
fn running_statistics_follow_each_virtual_batch() {
    let (rows, dim) = (300usize, 6usize);
    let (z, _) = batch(rows, dim, 9);
    let mut bn = BatchNorm::new(0, dim, MOMENTUM, Some(VIRTUAL_BATCH));
    let ss: Vec<f32> = [vec![1.0; dim], vec![0.0; dim]].concat();
    bn.forward(
        &ss,
        true,
        &z,
        rows,
        &mut BnCache::default(),
        &mut vec![0.0; rows * dim],
        0,
    );
    let rm = Tensor::zeros([dim as i64], (Kind::Float, tch::Device::Cpu));
    let rv = Tensor::ones([dim as i64], (Kind::Float, tch::Device::Cpu));
    let zt = Tensor::from_slice(&z).view([rows as i64, dim as i64]);
    for c in zt.chunk(3, 0) {
        let _ = c.batch_norm(
            None::<&Tensor>,
            None::<&Tensor>,
            Some(&rm),
            Some(&rv),
            true,
            MOMENTUM as f64,
            1e-5,
            false,
        );
    }
    for (ours, theirs) in [(&bn.running_mean, &rm), (&bn.running_var, &rv)] {
        let theirs = Vec::<f32>::try_from(theirs).unwrap();
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-5, "{ours:?} against {theirs:?}");
        }
    }
}

#[test]
fn sparsemax_matches_the_sorting_formula_in_value_and_gradient() {
    tch::manual_seed(3);
    for scale in [0.1, 1.0, 10.0] {
        let z = (Tensor::randn([300, 40], (Kind::Float, tch::Device::Cpu)) * scale)
            .set_requires_grad(true);
        let weights = Tensor::randn([300, 40], (Kind::Float, tch::Device::Cpu));
        let theirs = sparsemax_by_sorting(&z);
        let mut ours = Vec::<f32>::try_from(z.detach().view([-1])).unwrap();
        sparsemax(&mut ours, 40);
        let values = Vec::<f32>::try_from(theirs.detach().view([-1])).unwrap();
        let value_gap = largest_gap(&ours, &values);
        assert!(
            value_gap < 1e-5,
            "scale {scale}: values differ by {value_gap}"
        );
        for row in ours.chunks_exact(40) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        let g = Tensor::run_backward(
            &[(&theirs * &weights).sum(Kind::Float)],
            &[&z],
            false,
            false,
        );
        let mut grad = Vec::<f32>::try_from(weights.view([-1])).unwrap();
        sparsemax_backward(&mut grad, &ours, 40);
        let expected = Vec::<f32>::try_from(g[0].view([-1])).unwrap();
        let grad_gap = largest_gap(&grad, &expected);
        assert!(
            grad_gap < 1e-4,
            "scale {scale}: gradients differ by {grad_gap}"
        );
    }
}

/// The vectorisable `exp` the GLU's sigmoid uses, against libm's over the whole range where
/// `e^x` is a normal number, and a NaN stays a NaN (so a diverging net is still caught).
#[test]
fn exp_stays_within_two_ulp_of_libm() {
    let mut worst = 0f32;
    for i in -870_000..=880_000 {
        let x = i as f32 * 1e-4;
        let (ours, theirs) = (exp(x), x.exp());
        worst = worst.max((ours - theirs).abs() / theirs);
    }
    assert!(
        worst <= 2.0 * f32::EPSILON,
        "relative error {worst:e}, expected at most 2 ulp ({:e})",
        2.0 * f32::EPSILON
    );
    assert!(exp(f32::NAN).is_nan());
    let sigmoid = |b: f32| 1.0 / (1.0 + exp(-b));
    assert_eq!(sigmoid(1e4), 1.0);
    assert!(sigmoid(-1e4) >= 0.0 && sigmoid(-1e4) < 1e-37);
}
