//! TabNet's ghost batch norm with its running statistics, and the batch norm feeding a gated
//! linear unit: fused loops for what autograd runs as many small operators, each with its
//! gradient. A batch norm feeding a GLU runs each virtual batch in one go while it is in cache,
//! both ways, with its own vectorisable `exp` for the gate. The loops are compiled for AVX-512
//! and AVX2 too, chosen at run time.

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
        let (d, ss) = (self.dim, self.scale_shift(p));
        let w = d - from;
        cache.zhat.resize(rows * d, 0.0);
        let zhat = &mut cache.zhat;
        self.pass(train, z, rows, &mut cache.invstd, |r, mean, inv| {
            normalize(
                &z[r.start * d..r.end * d],
                d,
                mean,
                inv,
                ss,
                &mut zhat[r.start * d..r.end * d],
                &mut y[r.start * w..r.end * w],
                from,
            );
        });
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
        let d = self.dim;
        self.backward_groups(p, g, dy, rows, cache, input, |_, zhat, dy, s1, s2| {
            bn_sums(dy, zhat, d, s1, s2)
        });
    }

    /// Rows per virtual batch, as pytorch-tabnet splits a batch: `x.chunk(⌈rows / v⌉)`, so
    /// 605 rows are five virtual batches of 121.
    fn chunk(&self, rows: usize) -> usize {
        match self.virtual_batch {
            Some(v) if rows > v => rows.div_ceil(rows.div_ceil(v)),
            _ => rows.max(1),
        }
    }

    /// The statistics each group of rows is normalised by, handed to `each` with the group's
    /// rows: in training, every virtual batch's own (their `1/σ` kept in `invstd` for the
    /// backward pass, the running statistics updated after each); in prediction, the running
    /// ones for all rows at once.
    fn pass(
        &mut self,
        train: bool,
        z: &[f32],
        rows: usize,
        invstd: &mut Vec<f32>,
        mut each: impl FnMut(std::ops::Range<usize>, &[f32], &[f32]),
    ) {
        let d = self.dim;
        if !train {
            let inv: Vec<f32> = self
                .running_var
                .iter()
                .map(|v| 1.0 / (v + BN_EPS).sqrt())
                .collect();
            each(0..rows, &self.running_mean, &inv);
            return;
        }
        let c = self.chunk(rows);
        invstd.resize(rows.div_ceil(c) * d, 0.0);
        let (mut mean, mut var) = (vec![0f32; d], vec![0f32; d]);
        let m = self.momentum;
        for (k, start) in (0..rows).step_by(c).enumerate() {
            let n = c.min(rows - start);
            moments(&z[start * d..(start + n) * d], d, &mut mean, &mut var);
            let inv = &mut invstd[k * d..(k + 1) * d];
            for (i, v) in inv.iter_mut().zip(&var) {
                *i = 1.0 / (v + BN_EPS).sqrt();
            }
            each(start..start + n, &mean, inv);
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

    /// A batch norm feeding a gated linear unit, in one pass over each group of rows while
    /// they are in cache: `ẑ` of `rows` rows of `z` (`[a, b]`, `o` columns each) into the
    /// cache, `sigmoid(b)` into `sig`, and `s·(a·sig + x)` with the residual `(x, s)`, or
    /// `a·sig` without, into `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_glu(
        &mut self,
        p: &[f32],
        train: bool,
        z: &[f32],
        rows: usize,
        cache: &mut BnCache,
        sig: &mut [f32],
        out: &mut [f32],
        residual: Option<(&[f32], f32)>,
    ) {
        let (d, o) = (self.dim, self.dim / 2);
        let ss = self.scale_shift(p);
        cache.zhat.resize(rows * d, 0.0);
        let zhat = &mut cache.zhat;
        self.pass(train, z, rows, &mut cache.invstd, |r, mean, inv| {
            let wide = r.start * d..r.end * d;
            let narrow = r.start * o..r.end * o;
            bn_glu(
                &z[wide.clone()],
                o,
                mean,
                inv,
                ss,
                residual.map(|(x, s)| (&x[narrow.clone()], s)),
                &mut zhat[wide],
                &mut sig[narrow.clone()],
                &mut out[narrow],
            );
        });
    }

    /// The gradient of `forward_glu` (training) before its residual, given the output's
    /// gradient `dout` scaled by `scale`: `[dγ…, dβ…]` added to `g`, the gradient of the
    /// norm's input written into `dy`. Each virtual batch is done in one go: the GLU's
    /// gradient with the norm's column sums, then the input's gradient, while it is in cache.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_glu(
        &self,
        p: &[f32],
        g: &mut [f32],
        dout: &[f32],
        scale: f32,
        rows: usize,
        cache: &BnCache,
        sig: &[f32],
        dy: &mut [f32],
    ) {
        let o = self.dim / 2;
        let ss = self.scale_shift(p);
        self.backward_groups(p, g, dy, rows, cache, true, |r, zhat, dy, s1, s2| {
            let narrow = r.start * o..r.end * o;
            glu_grad_sums(
                &dout[narrow.clone()],
                scale,
                zhat,
                ss,
                &sig[narrow],
                o,
                dy,
                s1,
                s2,
            );
        });
    }

    /// The backward pass over the virtual batches `pass` went forward over, one at a time:
    /// `sums` writes the gradient of the norm's output for the group's rows into `dy` (or
    /// leaves it there) with its column sums `s1 = Σ dy` and `s2 = Σ dy·ẑ`, then
    /// `input_grad` finishes the group while it is in cache.
    #[allow(clippy::too_many_arguments)]
    fn backward_groups(
        &self,
        p: &[f32],
        g: &mut [f32],
        dy: &mut [f32],
        rows: usize,
        cache: &BnCache,
        input: bool,
        mut sums: impl FnMut(std::ops::Range<usize>, &[f32], &mut [f32], &mut [f32], &mut [f32]),
    ) {
        let d = self.dim;
        let ss = self.scale_shift(p);
        let (dgamma, dbeta) = g[self.at..self.at + 2 * d].split_at_mut(d);
        let c = self.chunk(rows);
        let (mut s1, mut s2) = (vec![0f32; d], vec![0f32; d]);
        for (k, start) in (0..rows).step_by(c).enumerate() {
            let n = c.min(rows - start);
            let wide = start * d..(start + n) * d;
            let zhat = &cache.zhat[wide.clone()];
            let dy = &mut dy[wide];
            sums(start..start + n, zhat, dy, &mut s1, &mut s2);
            let inv = &cache.invstd[k * d..(k + 1) * d];
            self.input_grad(ss, inv, n, zhat, dy, &mut s1, &mut s2, dgamma, dbeta, input);
        }
    }

    /// A virtual batch's gradient once the column sums of its output's gradient, `s1 = Σ dy`
    /// and `s2 = Σ dy·ẑ`, are known: they are added to `[dγ…, dβ…]`, and when `input`, the
    /// input's gradient is written over `dy` (`gamma` starts with the scales).
    #[allow(clippy::too_many_arguments)]
    fn input_grad(
        &self,
        gamma: &[f32],
        inv: &[f32],
        n: usize,
        zhat: &[f32],
        dy: &mut [f32],
        s1: &mut [f32],
        s2: &mut [f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
        input: bool,
    ) {
        let d = self.dim;
        for j in 0..d {
            dbeta[j] += s1[j];
            dgamma[j] += s2[j];
        }
        if input {
            let coef: Vec<f32> = (0..d).map(|j| gamma[j] * inv[j]).collect();
            let n = n as f32;
            s1.iter_mut().for_each(|s| *s /= n);
            s2.iter_mut().for_each(|s| *s /= n);
            bn_input_grad(dy, zhat, d, &coef, s1, s2);
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

/// `e^x`, written so that a loop of it compiles to vector code (libm's `expf` is a call per
/// element): Cephes' `expf`, `x = n·ln 2 + r` with `|r| ≤ ½ln 2`, a degree-6 polynomial for
/// `e^r`, and `2^n` put into the exponent. Within 2 ulp of `expf` where the result is a
/// normal number; below `e^-87.3` it returns about `1e-38` instead of a denormal or zero.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // `2^n` without a float-to-integer cast (which does not vectorise): adding 1.5·2²³
    // leaves the integer `n` in the low bits of the sum's mantissa.
    let k = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    e * f32::from_bits(k.wrapping_add(127) << 23)
}

/// Batch norm and gated linear unit of one group of rows in a single pass: `ẑ = (z - μ)/σ`
/// of each row `[a, b]` (`o` columns each) into `zhat`, `sig = sigmoid(γ·ẑ_b + β)`, and
/// `out = s·((γ·ẑ_a + β)·sig + x)` with the residual `(x, s)`, or `(γ·ẑ_a + β)·sig`.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn bn_glu(
    z: &[f32],
    o: usize,
    mean: &[f32],
    inv: &[f32],
    scale_shift: &[f32],
    residual: Option<(&[f32], f32)>,
    zhat: &mut [f32],
    sig: &mut [f32],
    out: &mut [f32],
) {
    let d = 2 * o;
    let (gamma, beta) = (&scale_shift[..d], &scale_shift[d..2 * d]);
    for ((row, zh), sr) in z
        .chunks_exact(d)
        .zip(zhat.chunks_exact_mut(d))
        .zip(sig.chunks_exact_mut(o))
    {
        let (row, mean, inv, zh) = (&row[..d], &mean[..d], &inv[..d], &mut zh[..d]);
        for j in 0..d {
            zh[j] = (row[j] - mean[j]) * inv[j];
        }
        let sr = &mut sr[..o];
        for j in 0..o {
            sr[j] = gamma[o + j] * zh[o + j] + beta[o + j];
        }
    }
    // The gates in one flat pass, so that rows of `o` not a multiple of the vector width
    // leave no scalar remainder per row.
    for v in sig.iter_mut() {
        *v = 1.0 / (1.0 + exp(-*v));
    }
    for (r, ((zh, sr), dst)) in zhat
        .chunks_exact(d)
        .zip(sig.chunks_exact(o))
        .zip(out.chunks_exact_mut(o))
        .enumerate()
    {
        let (zh, sr, dst) = (&zh[..o], &sr[..o], &mut dst[..o]);
        match residual {
            Some((x, s)) => {
                let xr = &x[r * o..(r + 1) * o];
                for j in 0..o {
                    dst[j] = s * ((gamma[j] * zh[j] + beta[j]) * sr[j] + xr[j]);
                }
            }
            None => {
                for j in 0..o {
                    dst[j] = (gamma[j] * zh[j] + beta[j]) * sr[j];
                }
            }
        }
    }
}

/// The gradient of `bn_glu`'s GLU for one group of rows, `dy = [g·sig, g·a·sig·(1 - sig)]`
/// for `g = scale·dout` and `a = γ·ẑ_a + β`, with the batch norm's column sums `s1 = Σ dy`
/// and `s2 = Σ dy·ẑ` taken on the way.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn glu_grad_sums(
    dout: &[f32],
    scale: f32,
    zhat: &[f32],
    scale_shift: &[f32],
    sig: &[f32],
    o: usize,
    dy: &mut [f32],
    s1: &mut [f32],
    s2: &mut [f32],
) {
    let d = 2 * o;
    let (gamma, beta) = (&scale_shift[..o], &scale_shift[d..d + o]);
    s1.fill(0.0);
    s2.fill(0.0);
    let (s1, s2) = (&mut s1[..d], &mut s2[..d]);
    for (((g, zr), sr), dr) in dout
        .chunks_exact(o)
        .zip(zhat.chunks_exact(d))
        .zip(sig.chunks_exact(o))
        .zip(dy.chunks_exact_mut(d))
    {
        let (g, zr, sr, dr) = (&g[..o], &zr[..d], &sr[..o], &mut dr[..d]);
        for j in 0..o {
            let g = scale * g[j];
            let a = gamma[j] * zr[j] + beta[j];
            dr[j] = g * sr[j];
            dr[o + j] = g * a * sr[j] * (1.0 - sr[j]);
        }
        for j in 0..d {
            s1[j] += dr[j];
            s2[j] += dr[j] * zr[j];
        }
    }
}
