//! The pieces of TabNet's hand-written forward and backward passes other than its batch norms
//! (`norm`): matrix products through libtorch (MKL) on borrowed buffers, sparsemax with its
//! gradient, and Adam over one flat parameter buffer. The loops are compiled for AVX-512 and
//! AVX2 too, chosen at run time.

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
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub fn sparsemax(z: &mut [f32], d: usize) {
    for row in z.chunks_exact_mut(d) {
        let tau = simplex_threshold(row);
        row.iter_mut().for_each(|v| *v = (*v - tau).max(0.0));
    }
}

/// The τ with Σ max(vᵢ - τ, 0) = 1 (Michelot 1986): the mean, less 1/n, of the elements
/// above the last τ, starting from all of them, until the set stops shrinking. τ only grows,
/// so an element once out stays out, and each round is one pass over the whole row that
/// compiles to vector code (sums in eight lanes of `f64`).
#[inline(always)]
fn simplex_threshold(v: &[f32]) -> f32 {
    const LANES: usize = 8;
    let (mut tau, mut kept) = (f64::NEG_INFINITY, v.len() + 1);
    loop {
        let (mut sum, mut count) = ([0f64; LANES], [0u32; LANES]);
        let mut chunks = v.chunks_exact(LANES);
        for c in &mut chunks {
            for l in 0..LANES {
                let x = c[l] as f64;
                let above = x > tau;
                sum[l] += if above { x } else { 0.0 };
                count[l] += above as u32;
            }
        }
        for (l, &x) in chunks.remainder().iter().enumerate() {
            let x = x as f64;
            if x > tau {
                sum[l] += x;
                count[l] += 1;
            }
        }
        let n = count.iter().sum::<u32>() as usize;
        if n == kept || n == 0 {
            return tau as f32;
        }
        kept = n;
        tau = (sum.iter().sum::<f64>() - 1.0) / n as f64;
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
