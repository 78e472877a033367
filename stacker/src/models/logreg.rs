//! L2 logistic regression with its strength chosen by inner cross-validation, as
//! scikit-learn's `LogisticRegressionCV` does: `cs` strengths log-spaced over 1e-4..1e4, each
//! scored by the mean log-loss over `inner_folds` stratified folds of the fold's training
//! rows, then the best refitted on all of them. Along the path of strengths each fit starts
//! from the previous one's weights (warm starts). linfa-logistic minimises the summed log-loss
//! plus α/2·‖w‖², which is scikit-learn's objective with α = 1/C.

use linfa::traits::Fit as _;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use stackhive_spec::stack::Params;

use super::{Fit, FoldPrediction};
use crate::error::StackError;

const MAX_ITERATIONS: u64 = 200;
/// On the gradient of the mean log-loss, as scikit-learn's default `tol`.
const GRADIENT_TOLERANCE: f64 = 1e-4;

struct Fitted {
    /// Oriented so that `sigmoid(x·w + b)` is P(target = 1).
    w: Array1<f64>,
    b: f64,
    /// linfa's own parameters (its orientation), to warm-start the next fit.
    raw: Vec<f64>,
}

impl Fitted {
    fn prob(&self, x: &Array2<f64>) -> Vec<f32> {
        let z = x.dot(&self.w) + self.b;
        z.iter()
            .map(|&z| (1.0 / (1.0 + (-z).exp())) as f32)
            .collect()
    }
}

type Data<'a> = linfa::DatasetBase<ndarray::ArrayView2<'a, f64>, Array1<bool>>;

fn dataset<'a>(x: ndarray::ArrayView2<'a, f64>, y: &[f32]) -> Data<'a> {
    linfa::DatasetBase::new(x, y.iter().map(|&v| v > 0.5).collect())
}

/// Fits at strength `c`, starting from `warm` when given.
fn fit_one(data: &Data<'_>, c: f64, warm: Option<&Fitted>) -> Result<Fitted, StackError> {
    // linfa's loss is a sum over rows, scikit-learn's (since 1.2) a mean: the same tolerance
    // on the mean's gradient is `n` times it on the sum's (without this every fit runs to
    // `MAX_ITERATIONS`, some thirty times slower, to a precision nobody can see in an AUC).
    let n = data.records().nrows().max(1) as f64;
    let mut params = LogisticRegression::default()
        .alpha(1.0 / c)
        .max_iterations(MAX_ITERATIONS)
        .gradient_tolerance(GRADIENT_TOLERANCE * n);
    if let Some(w) = warm {
        params = params.initial_params(Array1::from(w.raw.clone()));
    }
    let model = params
        .fit(data)
        .map_err(|e| StackError::Diverged(format!("logistic regression at C = {c}: {e}")))?;
    // linfa names the more frequent class positive; we want P(target = 1).
    let sign = if model.labels().pos.class { 1.0 } else { -1.0 };
    // linfa's layout: the weights, then the intercept.
    let mut raw = model.params().to_vec();
    raw.push(model.intercept());
    Ok(Fitted {
        w: model.params().mapv(|v| sign * v),
        b: sign * model.intercept(),
        raw,
    })
}

/// Mean log-loss of each strength on inner fold `g`, fitted along the path with warm starts.
fn path_losses(
    x: &Array2<f64>,
    y: &[f32],
    inner_fold: &[usize],
    g: usize,
    cs: &[f64],
) -> Result<Vec<f64>, StackError> {
    let fit_rows: Vec<usize> = (0..y.len()).filter(|&i| inner_fold[i] != g).collect();
    let eval_rows: Vec<usize> = (0..y.len()).filter(|&i| inner_fold[i] == g).collect();
    let xf = x.select(ndarray::Axis(0), &fit_rows);
    let yf: Vec<f32> = fit_rows.iter().map(|&i| y[i]).collect();
    let xe = x.select(ndarray::Axis(0), &eval_rows);
    let ye: Vec<f32> = eval_rows.iter().map(|&i| y[i]).collect();
    let data = dataset(xf.view(), &yf);
    let mut warm: Option<Fitted> = None;
    let mut out = Vec::with_capacity(cs.len());
    for &c in cs {
        let m = fit_one(&data, c, warm.as_ref())?;
        out.push(log_loss(&m.prob(&xe), &ye));
        warm = Some(m);
    }
    Ok(out)
}

fn matrix(values: &[f32], cols: usize) -> Array2<f64> {
    Array2::from_shape_vec(
        (values.len() / cols.max(1), cols),
        values.iter().map(|&v| v as f64).collect(),
    )
    .expect("dense shape")
}

fn log_loss(p: &[f32], y: &[f32]) -> f64 {
    p.iter()
        .zip(y)
        .map(|(&p, &y)| {
            let p = (p as f64).clamp(1e-15, 1.0 - 1e-15);
            -(y as f64 * p.ln() + (1.0 - y as f64) * (1.0 - p).ln())
        })
        .sum::<f64>()
        / p.len().max(1) as f64
}

pub fn fit(p: &Params, f: &Fit<'_>) -> Result<FoldPrediction, StackError> {
    let d = f.prep.dense(f.fold);
    let rows = &f.prep.folds[f.fold as usize];
    let y = f.prep.labels(&rows.train);
    let x = matrix(&d.train, d.cols);
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
    let mut loss = vec![0f64; cs.len()];
    let groups: Vec<usize> = (0..inner).collect();
    for batch in groups.chunks(f.threads.max(1)) {
        let paths: Vec<Result<Vec<f64>, StackError>> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|&g| {
                    let (x, y, inner_fold, cs) = (&x, &y, &inner_fold, &cs);
                    s.spawn(move || path_losses(x, y, inner_fold, g, cs))
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
        for path in paths {
            for (l, v) in loss.iter_mut().zip(path?) {
                *l += v / inner as f64;
            }
        }
    }
    let best = (0..cs.len())
        .min_by(|&a, &b| loss[a].total_cmp(&loss[b]))
        .expect("at least one strength");
    let model = fit_one(&dataset(x.view(), &y), cs[best], None)?;
    Ok(FoldPrediction {
        valid: model.prob(&matrix(&d.valid, d.cols)),
        test: model.prob(&matrix(&d.test, d.cols)),
    })
}
