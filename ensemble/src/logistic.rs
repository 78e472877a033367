//! The logistic stacker: L2-penalised logistic regression on the logits of the best pool
//! models, fitted by Newton's method (IRLS) with step halving. A direct solver rather than
//! linfa-logistic: with at most 50 features the Hessian is tiny, Newton converges in a handful
//! of iterations to machine precision, and there is no class-orientation quirk to undo.
//! Must not: see rows outside the fit it is given.

use crate::blend::{logit, Blend};
use crate::select::{Fit, Shared};

/// At most this many pool models (the best by AUC) enter the regression, to keep it well posed.
pub(crate) const MAX_FEATURES: usize = 50;
/// Penalty on the summed log-loss, `λ/2 · ‖β‖²` over standardised features: scikit-learn's
/// default C = 1. The intercept is not penalised.
const LAMBDA: f64 = 1.0;
const MAX_ITERATIONS: usize = 100;

/// Coefficients on the original (unstandardised) features.
pub(crate) struct Fitted {
    pub coef: Vec<f64>,
    pub intercept: f64,
}

fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// Penalised loss of standardised rows `z` (row-major, `d` wide) at `theta = [b, β…]`.
fn loss(z: &[f64], d: usize, y: &[u8], theta: &[f64], lambda: f64) -> f64 {
    let data: f64 = y
        .iter()
        .enumerate()
        .map(|(i, &yi)| {
            let eta = theta[0] + dot(&z[i * d..(i + 1) * d], &theta[1..]);
            softplus(eta) - yi as f64 * eta
        })
        .sum();
    data + 0.5 * lambda * theta[1..].iter().map(|b| b * b).sum::<f64>()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Solves `a x = b` for a symmetric positive definite `a` (`n × n`, row-major) by Cholesky.
fn cholesky_solve(mut a: Vec<f64>, b: &[f64], n: usize) -> Option<Vec<f64>> {
    for j in 0..n {
        let mut diag = a[j * n + j];
        for k in 0..j {
            diag -= a[j * n + k] * a[j * n + k];
        }
        if diag <= 0.0 {
            return None;
        }
        let diag = diag.sqrt();
        a[j * n + j] = diag;
        for i in j + 1..n {
            let mut v = a[i * n + j];
            for k in 0..j {
                v -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = v / diag;
        }
    }
    let mut x = b.to_vec();
    for i in 0..n {
        for k in 0..i {
            x[i] -= a[i * n + k] * x[k];
        }
        x[i] /= a[i * n + i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            x[i] -= a[k * n + i] * x[k];
        }
        x[i] /= a[i * n + i];
    }
    Some(x)
}

/// Fits `P(y = 1) = sigmoid(b + Σ coef_j x_j)` on feature columns `x`.
pub(crate) fn newton(x: &[Vec<f64>], y: &[u8], lambda: f64) -> Fitted {
    let n = y.len();
    let d = x.len();
    // Standardised so that one λ means the same for every feature; constant columns get a
    // scale of 1 and so a coefficient the penalty pins at 0.
    let mean: Vec<f64> = x.iter().map(|c| c.iter().sum::<f64>() / n as f64).collect();
    let sd: Vec<f64> = x
        .iter()
        .zip(&mean)
        .map(|(c, m)| {
            let v = (c.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n as f64).sqrt();
            if v > 1e-12 {
                v
            } else {
                1.0
            }
        })
        .collect();
    let mut z = vec![0.0f64; n * d];
    for (j, c) in x.iter().enumerate() {
        for (i, v) in c.iter().enumerate() {
            z[i * d + j] = (v - mean[j]) / sd[j];
        }
    }
    let p = d + 1;
    let mut theta = vec![0.0f64; p];
    let mut current = loss(&z, d, y, &theta, lambda);
    for _ in 0..MAX_ITERATIONS {
        let mut grad = vec![0.0f64; p];
        let mut hess = vec![0.0f64; p * p];
        let mut row = vec![1.0f64; p];
        for i in 0..n {
            row[1..].copy_from_slice(&z[i * d..(i + 1) * d]);
            let prob = 1.0 / (1.0 + (-dot(&row, &theta)).exp());
            let r = prob - y[i] as f64;
            let w = (prob * (1.0 - prob)).max(1e-12);
            for a in 0..p {
                grad[a] += r * row[a];
                let wa = w * row[a];
                for b in 0..=a {
                    hess[a * p + b] += wa * row[b];
                }
            }
        }
        for a in 1..p {
            grad[a] += lambda * theta[a];
            hess[a * p + a] += lambda;
        }
        for a in 0..p {
            for b in 0..a {
                hess[b * p + a] = hess[a * p + b];
            }
        }
        // The penalty makes the Hessian positive definite; a tiny ridge covers rounding.
        let step = cholesky_solve(hess.clone(), &grad, p).or_else(|| {
            (0..p).for_each(|a| hess[a * p + a] += 1e-8 * n as f64);
            cholesky_solve(hess, &grad, p)
        });
        let Some(step) = step else { break };
        let mut t = 1.0;
        let mut improved = false;
        for _ in 0..40 {
            let trial: Vec<f64> = theta.iter().zip(&step).map(|(th, s)| th - t * s).collect();
            let l = loss(&z, d, y, &trial, lambda);
            if l <= current {
                let gain = current - l;
                theta = trial;
                current = l;
                improved = gain > 1e-12 * (1.0 + current.abs());
                break;
            }
            t /= 2.0;
        }
        if !improved || step.iter().all(|s| s.abs() * t < 1e-10) {
            break;
        }
    }
    let coef: Vec<f64> = (0..d).map(|j| theta[j + 1] / sd[j]).collect();
    let intercept = theta[0] - (0..d).map(|j| coef[j] * mean[j]).sum::<f64>();
    Fitted { coef, intercept }
}

/// The stacker on the fit rows: the top `MAX_FEATURES` of the pool by AUC.
pub(crate) fn logistic(shared: &Shared<'_>, fit: &Fit) -> Blend {
    let vectors = fit.pool_oof(shared.models);
    let used = fit.pool.len().min(MAX_FEATURES);
    let x: Vec<Vec<f64>> = vectors[..used]
        .iter()
        .map(|v| v.iter().map(|&p| logit(p)).collect())
        .collect();
    let fitted = newton(&x, &fit.labels, LAMBDA);
    Blend::Logistic {
        terms: fit.pool[..used].iter().copied().zip(fitted.coef).collect(),
        intercept: fitted.intercept,
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    use super::*;

    /// At the optimum the penalised gradient vanishes; an informative feature gets a clearly
    /// positive weight, a pure-noise one a weight near zero, a constant one exactly zero.
    #[test]
    fn newton_reaches_the_penalised_optimum() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 4000;
        let signal: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
        let y: Vec<u8> = signal
            .iter()
            .map(|s| (rng.random::<f64>() < 1.0 / (1.0 + (-(2.0 * s - 1.0)).exp())) as u8)
            .collect();
        let noise: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
        let x = vec![
            signal.iter().map(|s| 3.0 * s + 5.0).collect::<Vec<_>>(),
            noise,
            vec![2.0; n],
        ];
        let f = newton(&x, &y, 1.0);
        // Gradient in the original parametrisation: the penalty lives on standardised scale,
        // so check the data part against it feature by feature.
        let mut grad = [0.0f64; 4];
        for i in 0..n {
            let eta = f.intercept + (0..3).map(|j| f.coef[j] * x[j][i]).sum::<f64>();
            let r = 1.0 / (1.0 + (-eta).exp()) - y[i] as f64;
            grad[0] += r;
            for j in 0..3 {
                grad[j + 1] += r * x[j][i];
            }
        }
        // Summed over 4000 rows; the solver stops once a step gains < 1e-12 of the loss.
        assert!(grad[0].abs() < 1e-4, "intercept gradient {}", grad[0]);
        // The penalty λ/2 (coef·sd)² has gradient λ sd² coef: the data gradient must cancel it.
        for j in 0..2 {
            let mean = x[j].iter().sum::<f64>() / n as f64;
            let var = x[j].iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
            let stationarity = grad[j + 1] + var * f.coef[j];
            assert!(stationarity.abs() < 1e-4, "feature {j}: {stationarity}");
        }
        assert!(
            (f.coef[0] * 3.0 - 2.0).abs() < 0.3,
            "signal weight {}",
            f.coef[0] * 3.0
        );
        assert!(f.coef[1].abs() < 0.15, "noise weight {}", f.coef[1]);
        assert_eq!(f.coef[2], 0.0);
    }
}
