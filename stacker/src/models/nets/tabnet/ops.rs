//! The pieces of TabNet's hand-written forward and backward passes: matrix products through
//! libtorch (MKL) on borrowed buffers, and fused loops for what autograd runs as many small
//! operators: ghost batch norm with its running statistics, the gated linear unit, sparsemax,
//! each with its gradient, and Adam over one flat parameter buffer. The loops are compiled for
//! AVX-512 and AVX2 too, chosen at run time.

use tch::{Device, Kind, Tensor};

/// A row-major matrix in a borrowed buffer: `rows` × `cols`, rows `stride` elements apart.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

impl<'a> View<'a> {
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> View<'a> {
        View {
            data: &data[..rows * cols],
            rows,
            cols,
            stride: cols,
        }
    }

    /// Columns `from..from + cols`.
    pub fn columns(self, from: usize, cols: usize) -> View<'a> {
        assert!(from + cols <= self.cols);
        View {
            data: &self.data[from..],
            rows: self.rows,
            cols,
            stride: self.stride,
        }
    }

    /// A tensor over the buffer (no copy), transposed when `t`. It must not outlive `self`.
    #[allow(unsafe_code)]
    fn tensor(&self, t: bool) -> Tensor {
        assert!(self.rows == 0 || (self.rows - 1) * self.stride + self.cols <= self.data.len());
        let (r, c, s) = (self.rows as i64, self.cols as i64, self.stride as i64);
        let (size, strides) = if t {
            ([c, r], [1, s])
        } else {
            ([r, c], [s, 1])
        };
        // SAFETY: the asserted bounds keep every element inside `data`, which the borrow keeps
        // alive for as long as the caller holds the tensor (they never escape this module).
        unsafe {
            Tensor::from_blob(
                self.data.as_ptr() as *const u8,
                &size,
                &strides,
                Kind::Float,
                Device::Cpu,
            )
        }
    }
}

/// A contiguous `rows` × `cols` tensor over `out` (no copy), for libtorch to write into.
#[allow(unsafe_code)]
fn out_tensor(out: &mut [f32], rows: usize, cols: usize) -> Tensor {
    assert!(rows * cols <= out.len());
    // SAFETY: in bounds; the tensor is dropped before `out`'s borrow ends.
    unsafe {
        Tensor::from_blob(
            out.as_mut_ptr() as *const u8,
            &[rows as i64, cols as i64],
            &[cols as i64, 1],
            Kind::Float,
            Device::Cpu,
        )
    }
}

/// `out = op(a)·op(b)`, or `out += op(a)·op(b)` when `accumulate`, where `op` transposes the
/// operands flagged `ta`, `tb`. `out` is contiguous.
pub fn gemm(a: View, ta: bool, b: View, tb: bool, out: &mut [f32], accumulate: bool) {
    let m = if ta { a.cols } else { a.rows };
    let n = if tb { b.rows } else { b.cols };
    let o = out_tensor(out, m, n);
    let (a, b) = (a.tensor(ta), b.tensor(tb));
    if accumulate {
        let _ = o.addmm_out(&o, &a, &b);
    } else {
        let _ = a.mm_out(&o, &b);
    }
}

/// `x = sigmoid(x)` in place, over its first `len` elements.
pub fn sigmoid(x: &mut [f32], len: usize) {
    let mut t = out_tensor(x, 1, len);
    let _ = t.sigmoid_();
}

const BN_EPS: f32 = 1e-5;

/// Batch norm of `[rows, dim]` inputs whose statistics, while training, come from each
/// virtual batch of rows on its own ("ghost" batch norm); the running statistics (for
/// prediction) follow every virtual batch in turn, as a batch norm called once per virtual
/// batch would update them. Its scale and shift live in the net's parameter buffer.
pub struct BatchNorm {
    /// Offset of `[γ…, β…]` in the parameters.
    pub at: usize,
    pub dim: usize,
    momentum: f32,
    /// Rows per virtual batch while training; `None`: the whole batch.
    virtual_batch: Option<usize>,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
}

/// What a training pass of a batch norm keeps for its backward pass.
#[derive(Default)]
pub struct BnCache {
    zhat: Vec<f32>,
    /// One row of `1/√(var + ε)` per virtual batch.
    invstd: Vec<f32>,
}

impl BnCache {
    /// `ẑ` of the last pass.
    pub fn zhat(&self) -> &[f32] {
        &self.zhat
    }
}

impl BatchNorm {
    pub fn new(at: usize, dim: usize, momentum: f32, virtual_batch: Option<usize>) -> BatchNorm {
        BatchNorm {
            at,
            dim,
            momentum,
            virtual_batch,
            running_mean: vec![0.0; dim],
            running_var: vec![1.0; dim],
        }
    }

    /// `[γ…, β…]` in the parameters `p`.
    pub fn scale_shift<'a>(&self, p: &'a [f32]) -> &'a [f32] {
        &p[self.at..self.at + 2 * self.dim]
    }

    /// `ẑ` of `rows` rows of `z` into the cache, and the output `y = γ·ẑ + β` of the columns
    /// from `from` on into `y` (rows of `dim - from`: a GLU wants only its gate's). Training
    /// normalises each virtual batch by its own statistics and updates the running ones;
    /// prediction normalises by the running ones.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &mut self,
        p: &[f32],
        train: bool,
        z: &[f32],
        rows: usize,
        cache: &mut BnCache,
        y: &mut [f32],
        from: usize,
    ) {
        let ss = self.scale_shift(p);
        if train {
            self.train(z, rows, ss, cache, y, from);
        } else {
            self.eval(z, rows, ss, cache, y, from);
        }
    }

    /// The gradient of a training pass, given the output's in `dy`: `[dγ…, dβ…]` added to the
    /// gradient `g`, and, when `input` is wanted, the input's written over `dy`.
    pub fn backward(
        &self,
        p: &[f32],
        g: &mut [f32],
        dy: &mut [f32],
        rows: usize,
        cache: &BnCache,
        input: bool,
    ) {
        let span = self.at..self.at + 2 * self.dim;
        self.backward_pass(dy, rows, &p[span.clone()], cache, &mut g[span], input);
    }

    /// Rows per virtual batch, as pytorch-tabnet splits a batch: `x.chunk(⌈rows / v⌉)`, so
    /// 605 rows are five virtual batches of 121.
    fn chunk(&self, rows: usize) -> usize {
        match self.virtual_batch {
            Some(v) if rows > v => rows.div_ceil(rows.div_ceil(v)),
            _ => rows.max(1),
        }
    }

    fn train(
        &mut self,
        z: &[f32],
        rows: usize,
        scale_shift: &[f32],
        cache: &mut BnCache,
        y: &mut [f32],
        from: usize,
    ) {
        let d = self.dim;
        let c = self.chunk(rows);
        cache.zhat.resize(rows * d, 0.0);
        cache.invstd.resize(rows.div_ceil(c) * d, 0.0);
        let (mut mean, mut var) = (vec![0f32; d], vec![0f32; d]);
        let m = self.momentum;
        for (k, start) in (0..rows).step_by(c).enumerate() {
            let n = c.min(rows - start);
            let span = start * d..(start + n) * d;
            moments(&z[span.clone()], d, &mut mean, &mut var);
            let inv = &mut cache.invstd[k * d..(k + 1) * d];
            for (i, v) in inv.iter_mut().zip(&var) {
                *i = 1.0 / (v + BN_EPS).sqrt();
            }
            let w = d - from;
            normalize(
                &z[span.clone()],
                d,
                &mean,
                inv,
                scale_shift,
                &mut cache.zhat[span.clone()],
                &mut y[start * w..(start + n) * w],
                from,
            );
            let unbias = if n > 1 {
                n as f32 / (n - 1) as f32
            } else {
                1.0
            };
            for j in 0..d {
                self.running_mean[j] = (1.0 - m) * self.running_mean[j] + m * mean[j];
                self.running_var[j] = (1.0 - m) * self.running_var[j] + m * var[j] * unbias;
            }
        }
    }

    fn eval(
        &self,
        z: &[f32],
        rows: usize,
        scale_shift: &[f32],
        cache: &mut BnCache,
        y: &mut [f32],
        from: usize,
    ) {
        let d = self.dim;
        cache.zhat.resize(rows * d, 0.0);
        let inv: Vec<f32> = self
            .running_var
            .iter()
            .map(|v| 1.0 / (v + BN_EPS).sqrt())
            .collect();
        normalize(
            &z[..rows * d],
            d,
            &self.running_mean,
            &inv,
            scale_shift,
            &mut cache.zhat,
            &mut y[..rows * (d - from)],
            from,
        );
    }

    fn backward_pass(
        &self,
        dy: &mut [f32],
        rows: usize,
        scale_shift: &[f32],
        cache: &BnCache,
        d_scale_shift: &mut [f32],
        input: bool,
    ) {
        let d = self.dim;
        let c = self.chunk(rows);
        let gamma = &scale_shift[..d];
        let (dgamma, dbeta) = d_scale_shift.split_at_mut(d);
        let (mut s1, mut s2) = (vec![0f32; d], vec![0f32; d]);
        for (k, start) in (0..rows).step_by(c).enumerate() {
            let n = c.min(rows - start);
            let span = start * d..(start + n) * d;
            let zhat = &cache.zhat[span.clone()];
            bn_sums(&dy[span.clone()], zhat, d, &mut s1, &mut s2);
            for j in 0..d {
                dbeta[j] += s1[j];
                dgamma[j] += s2[j];
            }
            if input {
                let inv = &cache.invstd[k * d..(k + 1) * d];
                let coef: Vec<f32> = (0..d).map(|j| gamma[j] * inv[j]).collect();
                let n = n as f32;
                s1.iter_mut().for_each(|s| *s /= n);
                s2.iter_mut().for_each(|s| *s /= n);
                bn_input_grad(&mut dy[span], zhat, d, &coef, &s1, &s2);
            }
        }
    }
}

/// Per column: the mean and the biased variance of `z`'s rows (two passes).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn moments(z: &[f32], d: usize, mean: &mut [f32], var: &mut [f32]) {
    let n = (z.len() / d) as f32;
    mean.fill(0.0);
    var.fill(0.0);
    for row in z.chunks_exact(d) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += x;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    for row in z.chunks_exact(d) {
        for ((v, &x), &m) in var.iter_mut().zip(row).zip(mean.iter()) {
            *v += (x - m) * (x - m);
        }
    }
    var.iter_mut().for_each(|v| *v /= n);
}

#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn normalize(
    z: &[f32],
    d: usize,
    mean: &[f32],
    inv: &[f32],
    scale_shift: &[f32],
    zhat: &mut [f32],
    y: &mut [f32],
    from: usize,
) {
    let (gamma, beta) = scale_shift.split_at(d);
    let w = d - from;
    for ((row, zh), yr) in z
        .chunks_exact(d)
        .zip(zhat.chunks_exact_mut(d))
        .zip(y.chunks_exact_mut(w.max(1)))
    {
        // Slices of one known length, so the loops compile to vector code without bounds
        // checks.
        let (row, mean, inv, zh) = (&row[..d], &mean[..d], &inv[..d], &mut zh[..d]);
        for j in 0..d {
            zh[j] = (row[j] - mean[j]) * inv[j];
        }
        let (zh, gamma, beta, yr) = (&zh[from..d], &gamma[from..d], &beta[from..d], &mut yr[..w]);
        for j in 0..w {
            yr[j] = gamma[j] * zh[j] + beta[j];
        }
    }
}

/// Per column: `Σ dy` into `s1` and `Σ dy·ẑ` into `s2`.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn bn_sums(dy: &[f32], zhat: &[f32], d: usize, s1: &mut [f32], s2: &mut [f32]) {
    s1.fill(0.0);
    s2.fill(0.0);
    let (s1, s2) = (&mut s1[..d], &mut s2[..d]);
    for (g, h) in dy.chunks_exact(d).zip(zhat.chunks_exact(d)) {
        for j in 0..d {
            s1[j] += g[j];
            s2[j] += g[j] * h[j];
        }
    }
}

/// `dy ← γ/σ · (dy - mean(dy) - ẑ·mean(dy·ẑ))`, with `coef = γ/σ` and the two means given.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn bn_input_grad(
    dy: &mut [f32],
    zhat: &[f32],
    d: usize,
    coef: &[f32],
    mean_dy: &[f32],
    mean_dy_zhat: &[f32],
) {
    for (g, h) in dy.chunks_exact_mut(d).zip(zhat.chunks_exact(d)) {
        let (g, h) = (&mut g[..d], &h[..d]);
        let (coef, mean_dy, mean_dy_zhat) = (&coef[..d], &mean_dy[..d], &mean_dy_zhat[..d]);
        for j in 0..d {
            g[j] = coef[j] * (g[j] - mean_dy[j] - h[j] * mean_dy_zhat[j]);
        }
    }
}

/// The gated linear unit over a batch norm's output `[a, b]` (`o` columns each), given the
/// norm's `ẑ` and `[γ…, β…]` (from which `a = γ·ẑ + β` is formed again) and `sig =
/// sigmoid(b)`: `out = s·(a·sig + x)` with the residual `x`, or `a·sig` without.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub fn glu(
    zhat: &[f32],
    scale_shift: &[f32],
    sig: &[f32],
    o: usize,
    residual: Option<(&[f32], f32)>,
    out: &mut [f32],
) {
    let (gamma, beta) = (&scale_shift[..o], &scale_shift[2 * o..3 * o]);
    for (r, (zr, sr)) in zhat
        .chunks_exact(2 * o)
        .zip(sig.chunks_exact(o))
        .enumerate()
    {
        let dst = &mut out[r * o..(r + 1) * o];
        let (zr, sr) = (&zr[..o], &sr[..o]);
        match residual {
            Some((x, s)) => {
                let xr = &x[r * o..(r + 1) * o];
                for j in 0..o {
                    dst[j] = s * ((gamma[j] * zr[j] + beta[j]) * sr[j] + xr[j]);
                }
            }
            None => {
                for j in 0..o {
                    dst[j] = (gamma[j] * zr[j] + beta[j]) * sr[j];
                }
            }
        }
    }
}

/// The gradient of `glu` before its batch norm: `dy = [g·sig, g·a·sig·(1 - sig)]` for
/// `g = scale·dout`.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub fn glu_backward(
    dout: &[f32],
    scale: f32,
    zhat: &[f32],
    scale_shift: &[f32],
    sig: &[f32],
    o: usize,
    dy: &mut [f32],
) {
    let (gamma, beta) = (&scale_shift[..o], &scale_shift[2 * o..3 * o]);
    for (((g, zr), sr), dr) in dout
        .chunks_exact(o)
        .zip(zhat.chunks_exact(2 * o))
        .zip(sig.chunks_exact(o))
        .zip(dy.chunks_exact_mut(2 * o))
    {
        let (da, db) = dr.split_at_mut(o);
        let (g, zr, sr, da, db) = (&g[..o], &zr[..o], &sr[..o], &mut da[..o], &mut db[..o]);
        for j in 0..o {
            let g = scale * g[j];
            let a = gamma[j] * zr[j] + beta[j];
            da[j] = g * sr[j];
            db[j] = g * a * sr[j] * (1.0 - sr[j]);
        }
    }
}

/// `acc += s·x`.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub fn add_scaled(acc: &mut [f32], x: &[f32], s: f32) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += s * v;
    }
}

/// Sparsemax of each `d`-wide row of `z`, in place (Martins & Astudillo 2016): the Euclidean
/// projection onto the simplex, so most weights are exactly zero. Its support is where the
/// result is above zero, which is all `sparsemax_backward` needs.
pub fn sparsemax(z: &mut [f32], d: usize) {
    let mut scratch = Vec::with_capacity(d);
    for row in z.chunks_exact_mut(d) {
        let tau = simplex_threshold(row, &mut scratch);
        row.iter_mut().for_each(|v| *v = (*v - tau).max(0.0));
    }
}

/// The τ with Σ max(vᵢ - τ, 0) = 1 (Michelot 1986): start from every element, drop those not
/// above the current τ, until none drops. τ only grows, so elements once dropped stay out.
/// `kept` is scratch space, reused across rows.
fn simplex_threshold(v: &[f32], kept: &mut Vec<f32>) -> f32 {
    kept.clear();
    kept.extend_from_slice(v);
    loop {
        let tau = (kept.iter().map(|&x| x as f64).sum::<f64>() - 1.0) / kept.len() as f64;
        let before = kept.len();
        kept.retain(|&x| x as f64 > tau);
        if kept.len() == before || kept.is_empty() {
            return tau as f32;
        }
    }
}

/// Sparsemax's Jacobian applied to `g` in place, for rows whose output was `p`: on the
/// support, `g` less its mean there; zero elsewhere.
pub fn sparsemax_backward(g: &mut [f32], p: &[f32], d: usize) {
    for (gr, pr) in g.chunks_exact_mut(d).zip(p.chunks_exact(d)) {
        let (mut sum, mut n) = (0f32, 0usize);
        for (&gv, &pv) in gr.iter().zip(pr) {
            if pv > 0.0 {
                sum += gv;
                n += 1;
            }
        }
        let mean = sum / n.max(1) as f32;
        for (gv, &pv) in gr.iter_mut().zip(pr) {
            *gv = if pv > 0.0 { *gv - mean } else { 0.0 };
        }
    }
}

/// Adam (Kingma & Ba; libtorch's and PyTorch's rule, no weight decay) over one flat buffer,
/// after clipping the gradient to global norm `clip` as `clip_grad_norm_` does.
pub struct Adam {
    lr: f32,
    clip: Option<f64>,
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    const BETA1: f32 = 0.9;
    const BETA2: f32 = 0.999;
    const EPS: f32 = 1e-8;

    pub fn new(len: usize, lr: f64, clip: Option<f64>) -> Adam {
        Adam {
            lr: lr as f32,
            clip,
            m: vec![0.0; len],
            v: vec![0.0; len],
            t: 0,
        }
    }

    pub fn step(&mut self, params: &mut [f32], grad: &mut [f32]) {
        if let Some(max) = self.clip {
            let norm = grad
                .iter()
                .map(|&g| g as f64 * g as f64)
                .sum::<f64>()
                .sqrt();
            let coef = max / (norm + 1e-6);
            if coef < 1.0 {
                grad.iter_mut().for_each(|g| *g *= coef as f32);
            }
        }
        self.t += 1;
        let bc1 = 1.0 - Self::BETA1.powi(self.t);
        let bc2_sqrt = (1.0 - Self::BETA2.powi(self.t)).sqrt();
        adam_update(
            params,
            grad,
            &mut self.m,
            &mut self.v,
            self.lr / bc1,
            bc2_sqrt,
        );
    }
}

#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn adam_update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], step: f32, bc2_sqrt: f32) {
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        m[i] = Adam::BETA1 * m[i] + (1.0 - Adam::BETA1) * g[i];
        v[i] = Adam::BETA2 * v[i] + (1.0 - Adam::BETA2) * g[i] * g[i];
        p[i] -= step * m[i] / (v[i].sqrt() / bc2_sqrt + Adam::EPS);
    }
}
