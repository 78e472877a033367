//! L2 logistic regression with its strength chosen by inner cross-validation, as
//! scikit-learn's `LogisticRegressionCV` does: `cs` strengths log-spaced over 1e-4..1e4, each
//! scored by the mean log-loss over `inner_folds` stratified folds of the fold's training
//! rows, then the best refitted on all of them, starting from the inner fits' mean weights at
//! that strength. Along the path of strengths each fit starts from the previous one's weights
//! (warm starts).
//!
//! The solver is argmin's L-BFGS with a Moré–Thuente line search (the solver scikit-learn's
//! `lbfgs` is), on scikit-learn's objective: the mean log-loss plus ‖w‖²/(2·C·n), intercept
//! unpenalised. The objective is ours rather than linfa-logistic's: one pass over the rows
//! gives the loss and the gradient together (linfa computed them apart and read the rows
//! column-wise for the gradient, six times slower than scikit-learn here).

use std::borrow::Cow;
use std::sync::Mutex;

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use stackhive_spec::stack::Params;

use super::{Fit, FoldPrediction};
use crate::error::StackError;

const MAX_ITERATIONS: u64 = 200;
/// On the gradient of the mean log-loss, as scikit-learn's default `tol`.
const GRADIENT_TOLERANCE: f64 = 1e-4;
/// Gradients L-BFGS remembers (scikit-learn's scipy default).
const MEMORY: usize = 10;

/// Row-major rows `d` wide (f32, as the matrix holds them, borrowed from it for a fold's
/// own rows; all arithmetic is f64), with 0/1 targets.
struct Rows<'a> {
    x: Cow<'a, [f32]>,
    d: usize,
    y: Vec<f64>,
}

impl<'a> Rows<'a> {
    fn new(values: &'a [f32], d: usize, y: &[f32]) -> Rows<'a> {
        Rows {
            x: Cow::Borrowed(values),
            d,
            y: y.iter().map(|&v| v as f64).collect(),
        }
    }

    /// A copy of some of the rows (an inner fold's).
    fn select(&self, rows: &[usize]) -> Rows<'static> {
        let d = self.d;
        let mut x = Vec::with_capacity(rows.len() * d);
        for &i in rows {
            x.extend_from_slice(&self.x[i * d..(i + 1) * d]);
        }
        Rows {
            x: Cow::Owned(x),
            d,
            y: rows.iter().map(|&i| self.y[i]).collect(),
        }
    }

    fn len(&self) -> usize {
        self.y.len()
    }
}

/// With eight running sums, so the compiler can keep them in vector registers (one sum in
/// order cannot be vectorised).
#[inline(always)]
fn dot(a: &[f32], b: &[f64]) -> f64 {
    let mut acc = [0.0; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(&x, y)| x as f64 * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] as f64 * y[k];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// One pass over the rows: the summed log-loss at `theta = [w…, b]`, with the summed gradient
/// added to `grad`. Compiled for AVX-512 and AVX2 too, chosen at run time.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn pass(x: &[f32], d: usize, y: &[f64], theta: &[f64], grad: &mut [f64]) -> f64 {
    let (w, b) = theta.split_at(d);
    let (gw, gb) = grad.split_at_mut(d);
    let mut loss = 0.0;
    for (row, &y) in x.chunks_exact(d.max(1)).zip(y) {
        let z = b[0] + dot(row, w);
        // softplus(z) - y·z and sigmoid(z), sharing one exponential. `ln(1 + e)` is off
        // `ln_1p(e)` by under 1e-16, nothing next to a loss summed over rows, and faster.
        let e = (-z.abs()).exp();
        let t = 1.0 + e;
        loss += z.max(0.0) + t.ln() - y * z;
        let r = if z >= 0.0 { 1.0 / t } else { e / t } - y;
        for (g, &v) in gw.iter_mut().zip(row) {
            *g += r * v as f64;
        }
        gb[0] += r;
    }
    loss
}

/// A fitted model: `sigmoid(x·w + b)` is P(target = 1), `theta = [w…, b]`.
#[derive(Clone)]
struct Fitted {
    theta: Vec<f64>,
}

impl Fitted {
    /// P(target = 1) of each row of `x` (row-major, as wide as the weights).
    fn prob(&self, x: &[f32]) -> Vec<f32> {
        let (w, b) = self.theta.split_at(self.theta.len() - 1);
        x.chunks_exact(w.len().max(1))
            .map(|row| (1.0 / (1.0 + (-(b[0] + dot(row, w))).exp())) as f32)
            .collect()
    }
}

/// The penalised mean log-loss of `rows` at strength `c`; the last point's loss and gradient
/// are kept, since the line search asks for both at one point and L-BFGS again after it.
struct Objective<'a> {
    rows: &'a Rows<'a>,
    /// `1 / (C·n)`: the penalty's weight on the mean loss.
    penalty: f64,
    last: Mutex<Option<Point>>,
}

/// Weights with their loss and gradient.
struct Point {
    theta: Vec<f64>,
    loss: f64,
    grad: Vec<f64>,
}

impl Objective<'_> {
    fn eval(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = last.as_ref().filter(|p| p.theta == theta) {
            return (p.loss, p.grad.clone());
        }
        let d = self.rows.d;
        let n = self.rows.len().max(1) as f64;
        let mut grad = vec![0.0; d + 1];
        let mut loss = pass(&self.rows.x, d, &self.rows.y, theta, &mut grad);
        let w = &theta[..d];
        loss = loss / n + 0.5 * self.penalty * w.iter().map(|v| v * v).sum::<f64>();
        for (g, &wj) in grad[..d].iter_mut().zip(w) {
            *g = *g / n + self.penalty * wj;
        }
        grad[d] /= n;
        *last = Some(Point {
            theta: theta.to_vec(),
            loss,
            grad: grad.clone(),
        });
        (loss, grad)
    }
}

impl CostFunction for Objective<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, theta: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.eval(theta).0)
    }
}

impl Gradient for Objective<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, theta: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.eval(theta).1)
    }
}

/// Fits at strength `c`, starting from `warm` (zeros when not given).
fn fit_one(rows: &Rows<'_>, c: f64, warm: Option<&Fitted>) -> Result<Fitted, StackError> {
    let fail = |e: argmin::core::Error| {
        StackError::Diverged(format!("logistic regression at C = {c}: {e}"))
    };
    let objective = Objective {
        rows,
        penalty: 1.0 / (c * rows.len().max(1) as f64),
        last: Mutex::new(None),
    };
    let init = warm.map_or_else(|| vec![0.0; rows.d + 1], |w| w.theta.clone());
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), MEMORY)
        .with_tolerance_grad(GRADIENT_TOLERANCE)
        .map_err(fail)?;
    let result = Executor::new(objective, solver)
        .configure(|s| s.param(init).max_iters(MAX_ITERATIONS))
        .run()
        .map_err(fail)?;
    let theta = result
        .state()
        .get_best_param()
        .cloned()
        .ok_or_else(|| StackError::Library(format!("L-BFGS returned no weights at C = {c}")))?;
    if theta.iter().any(|v| !v.is_finite()) {
        return Err(StackError::Diverged(format!(
            "logistic regression at C = {c} reached non-finite weights"
        )));
    }
    Ok(Fitted { theta })
}

/// Each strength's mean log-loss on inner fold `g` and its fit, along the path with warm starts.
fn path(
    rows: &Rows<'_>,
    inner_fold: &[usize],
    g: usize,
    cs: &[f64],
) -> Result<Vec<(f64, Fitted)>, StackError> {
    let fit_rows: Vec<usize> = (0..rows.len()).filter(|&i| inner_fold[i] != g).collect();
    let eval_rows: Vec<usize> = (0..rows.len()).filter(|&i| inner_fold[i] == g).collect();
    let (fit, eval) = (rows.select(&fit_rows), rows.select(&eval_rows));
    let mut out: Vec<(f64, Fitted)> = Vec::with_capacity(cs.len());
    for &c in cs {
        let m = fit_one(&fit, c, out.last().map(|(_, m)| m))?;
        out.push((log_loss(&m.prob(&eval.x), &eval.y), m));
    }
    Ok(out)
}

fn log_loss(p: &[f32], y: &[f64]) -> f64 {
    p.iter()
        .zip(y)
        .map(|(&p, &y)| {
            let p = (p as f64).clamp(1e-15, 1.0 - 1e-15);
            -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
        })
        .sum::<f64>()
        / p.len().max(1) as f64
}

pub fn fit(p: &Params, f: &Fit<'_>) -> Result<FoldPrediction, StackError> {
    let d = f.prep.dense(f.fold);
    let fold = &f.prep.folds[f.fold as usize];
    let y = f.prep.labels(&fold.train);
    let rows = Rows::new(&d.train, d.cols, &y);
    let cs: Vec<f64> = {
        let n = p.usize("cs");
        (0..n)
            .map(|i| 10f64.powf(-4.0 + 8.0 * i as f64 / (n - 1).max(1) as f64))
            .collect()
    };
    // Inner folds, stratified: positives and negatives dealt round-robin.
    let inner = p.usize("inner_folds");
    let mut inner_fold = vec![0usize; y.len()];
    let (mut pos, mut neg) = (0, 0);
    for (i, &v) in y.iter().enumerate() {
        let c = if v > 0.5 { &mut pos } else { &mut neg };
        inner_fold[i] = *c % inner;
        *c += 1;
    }
    // The inner folds' paths are independent: they share the job's threads.
    let mut paths = Vec::with_capacity(inner);
    let groups: Vec<usize> = (0..inner).collect();
    for batch in groups.chunks(f.threads.max(1)) {
        let done: Vec<Result<Vec<(f64, Fitted)>, StackError>> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|&g| {
                    let (rows, inner_fold, cs) = (&rows, &inner_fold, &cs);
                    s.spawn(move || path(rows, inner_fold, g, cs))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(StackError::Library(
                            "a logistic regression thread panicked".into(),
                        ))
                    })
                })
                .collect()
        });
        for path in done {
            paths.push(path?);
        }
    }
    let loss = |i: usize| paths.iter().map(|p| p[i].0).sum::<f64>() / inner as f64;
    let best = (0..cs.len())
        .min_by(|&a, &b| loss(a).total_cmp(&loss(b)))
        .expect("at least one strength");
    // The refit starts where the inner fits ended, as scikit-learn's does.
    let mut start = vec![0.0; d.cols + 1];
    for path in &paths {
        for (s, v) in start.iter_mut().zip(&path[best].1.theta) {
            *s += v / inner as f64;
        }
    }
    let model = fit_one(&rows, cs[best], Some(&Fitted { theta: start }))?;
    Ok(FoldPrediction {
        valid: model.prob(&d.valid),
        test: model.prob(&d.test),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// 4,000 rows of 4 features with labels from a known logistic model.
    fn problem() -> (Rows<'static>, [f64; 5]) {
        let truth = [1.5, -1.0, 0.5, 0.0, -0.3]; // weights, then the intercept
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..4_000 {
            let row: Vec<f32> = (0..4).map(|_| rng.random_range(-2.0..2.0)).collect();
            let z = truth[4]
                + row
                    .iter()
                    .zip(&truth)
                    .map(|(&v, w)| v as f64 * w)
                    .sum::<f64>();
            y.push((rng.random::<f64>() < 1.0 / (1.0 + (-z).exp())) as u8 as f64);
            x.extend(row);
        }
        let rows = Rows {
            x: Cow::Owned(x),
            d: 4,
            y,
        };
        (rows, truth)
    }

    #[test]
    fn reaches_the_optimum_and_recovers_the_weights() {
        let (rows, truth) = problem();
        let m = fit_one(&rows, 1e4, None).unwrap();
        let objective = Objective {
            rows: &rows,
            penalty: 1.0 / (1e4 * rows.len() as f64),
            last: Mutex::new(None),
        };
        let (_, grad) = objective.eval(&m.theta);
        let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        assert!(norm < GRADIENT_TOLERANCE, "gradient norm {norm} at the end");
        // 4,000 rows pin each weight to about ±0.06 (one standard error); 0.25 is 4 of them.
        for (w, t) in m.theta.iter().zip(truth) {
            assert!(
                (w - t).abs() < 0.25,
                "weights {:?}, truth {truth:?}",
                m.theta
            );
        }
        // A strong penalty (1 / (C·n) = 2.5 on the mean loss) shrinks every weight several times.
        let shrunk = fit_one(&rows, 1e-4, Some(&m)).unwrap();
        for (s, w) in shrunk.theta[..4].iter().zip(&m.theta) {
            assert!(
                s.abs() <= w.abs() / 5.0 + 0.01,
                "{:?} from {:?}",
                shrunk.theta,
                m.theta
            );
        }
    }

    #[test]
    fn a_warm_start_reaches_the_same_fit() {
        let (rows, _) = problem();
        let cold = fit_one(&rows, 0.01, None).unwrap();
        let from = fit_one(&rows, 100.0, None).unwrap();
        let warm = fit_one(&rows, 0.01, Some(&from)).unwrap();
        for (a, b) in cold.theta.iter().zip(&warm.theta) {
            assert!(
                (a - b).abs() < 1e-3,
                "cold {:?}, warm {:?}",
                cold.theta,
                warm.theta
            );
        }
    }
}
