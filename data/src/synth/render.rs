//! Draws one dermoscopy-like image from a lesion's latent features: skin, the lesion itself
//! (shape from asymmetry and border irregularity, colours from variegation, size from diameter,
//! look from the patient's typical nevus shifted by the outlier score), then the nuisance real
//! images carry — lighting gradient, hair strands, ruler marks, the microscope's black vignette
//! and sensor noise. It must not decide anything the label depends on: every label-relevant
//! quantity comes in through `LesionFeatures`; the per-image RNG only draws nuisance and the
//! label-neutral details (phases, positions), so rendering can run in any order, in parallel.

use std::f32::consts::{PI, TAU};

use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson, StandardNormal};

use super::population::{Lesion, NevusStyle, Patient};

/// Entries of the radius-by-angle table that defines the lesion outline.
const OUTLINE_STEPS: usize = 720;
/// Share of images taken through a dermatoscope that leaves black corners (ISIC 2020 has many).
const VIGNETTE_RATE: f64 = 0.25;
/// Share of images with a ruler in view.
const RULER_RATE: f64 = 0.07;

type Rgb = [f32; 3];

/// Renders the lesion as a `size`×`size` RGB image; `seed` fixes every nuisance draw.
pub(crate) fn render(patient: &Patient, lesion: &Lesion, size: u32, seed: u64) -> RgbImage {
    let mut rng: ChaCha8Rng = rand::SeedableRng::seed_from_u64(seed);
    let s = size as usize;
    let mut canvas = Canvas {
        s,
        px: vec![[0.0; 3]; s * s],
    };

    paint_skin(&mut canvas, patient.skin_tone, &mut rng);
    paint_lesion(&mut canvas, &patient.style, lesion, &mut rng);
    paint_hair(&mut canvas, patient.hairiness, &mut rng);
    if rng.random_bool(RULER_RATE) {
        paint_ruler(&mut canvas, &mut rng);
    }
    apply_lighting(&mut canvas, &mut rng);
    if rng.random_bool(VIGNETTE_RATE) {
        apply_vignette(&mut canvas, &mut rng);
    }
    quantize(&canvas, &mut rng, size)
}

struct Canvas {
    s: usize,
    px: Vec<Rgb>,
}

/// Smooth random field on the unit square: a coarse grid of random values, interpolated with a
/// smoothstep. Cheap enough to sample per pixel.
struct ValueNoise {
    n: usize,
    v: Vec<f32>,
}

impl ValueNoise {
    fn new(rng: &mut ChaCha8Rng, n: usize) -> Self {
        Self {
            n,
            v: (0..(n + 1) * (n + 1))
                .map(|_| rng.random::<f32>())
                .collect(),
        }
    }

    /// Value in [0, 1] at (x, y); coordinates outside [0, 1] are clamped.
    fn at(&self, x: f32, y: f32) -> f32 {
        let n = self.n as f32;
        let fx = (x.clamp(0.0, 1.0) * n).min(n - 1e-4);
        let fy = (y.clamp(0.0, 1.0) * n).min(n - 1e-4);
        let (ix, iy) = (fx as usize, fy as usize);
        let (tx, ty) = (smooth(fx - ix as f32), smooth(fy - iy as f32));
        let row = self.n + 1;
        let v00 = self.v[iy * row + ix];
        let v10 = self.v[iy * row + ix + 1];
        let v01 = self.v[(iy + 1) * row + ix];
        let v11 = self.v[(iy + 1) * row + ix + 1];
        let top = v00 + (v10 - v00) * tx;
        let bottom = v01 + (v11 - v01) * tx;
        top + (bottom - top) * ty
    }
}

fn smooth(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    smooth(((x - e0) / (e1 - e0)).clamp(0.0, 1.0))
}

fn lerp(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    StandardNormal.sample(rng)
}

/// Skin under a dermatoscope's light: a tone between fair and dark, a white-balance cast, and
/// coarse plus fine mottling.
fn paint_skin(c: &mut Canvas, tone: f32, rng: &mut ChaCha8Rng) {
    let fair = [238.0, 196.0, 178.0];
    let dark = [150.0, 100.0, 76.0];
    let base = lerp(fair, dark, tone);
    let exposure = rng.random_range(0.88..1.06f32);
    let cast = [
        exposure * (1.0 + 0.04 * normal(rng)),
        exposure * (1.0 + 0.03 * normal(rng)),
        exposure * (1.0 + 0.05 * normal(rng)),
    ];
    let coarse = ValueNoise::new(rng, 5);
    let fine = ValueNoise::new(rng, 17);
    let inv = 1.0 / c.s as f32;
    for y in 0..c.s {
        for x in 0..c.s {
            let (u, v) = (x as f32 * inv, y as f32 * inv);
            let m = 1.0 + 0.12 * (coarse.at(u, v) - 0.5) + 0.06 * (fine.at(u, v) - 0.5);
            c.px[y * c.s + x] = [
                base[0] * cast[0] * m,
                base[1] * cast[1] * m,
                base[2] * cast[2] * m,
            ];
        }
    }
}

/// The lesion: an outline whose low odd harmonics (asymmetry) and high harmonics (border
/// irregularity) grow with the features, filled with the patient's typical brown shifted by the
/// outlier score, plus extra colour zones (dark brown/black, blue-grey, red, white regression)
/// that appear as variegation grows, and a pigment pattern that the outliers break from.
fn paint_lesion(c: &mut Canvas, style: &NevusStyle, lesion: &Lesion, rng: &mut ChaCha8Rng) {
    let f = lesion.features;
    let s = c.s as f32;
    let radius = s * (0.19 + 0.05 * f.diameter).clamp(0.07, 0.38);
    let centre = [
        s * (0.5 + 0.04 * normal(rng)),
        s * (0.5 + 0.04 * normal(rng)),
    ];
    let elongation = (style.elongation + 0.05 * normal(rng)).clamp(0.0, 0.45);
    let orientation = if f.outlier > 1.0 {
        rng.random_range(0.0..PI)
    } else {
        style.orientation + 0.3 * normal(rng)
    };

    // Outline r(θ) relative to `radius`.
    let asym = (0.07 * (0.5 * f.asymmetry).exp()).min(0.35);
    let border = (0.02 * (0.55 * f.border).exp()).min(0.11);
    let phase1 = rng.random_range(0.0..TAU);
    let phase3 = rng.random_range(0.0..TAU);
    let wiggles: Vec<(f32, f32, f32)> = (4..=14)
        .map(|k| {
            let amp = border * normal(rng) / (k as f32 / 4.0).sqrt();
            (k as f32, amp, rng.random_range(0.0..TAU))
        })
        .collect();
    let outline: Vec<f32> = (0..OUTLINE_STEPS)
        .map(|i| {
            let t = i as f32 / OUTLINE_STEPS as f32 * TAU;
            let mut r = 1.0 + asym * ((t - phase1).cos() + 0.6 * (3.0 * t - phase3).cos());
            for &(k, amp, ph) in &wiggles {
                r += amp * (k * t + ph).cos();
            }
            r.max(0.3)
        })
        .collect();
    let r_max = outline.iter().cloned().fold(0.0f32, f32::max);
    // Benign nevi fade into the skin; irregular lesions end abruptly.
    let edge = (0.22 - 0.07 * f.border).clamp(0.04, 0.35);

    // Colours: the patient's typical brown, pushed darker (mostly) and redder by the outlier score.
    let darker = if rng.random_bool(0.8) { 1.0 } else { -1.0 };
    let darkness = (style.darkness + 0.2 * f.outlier * darker).clamp(0.05, 1.0);
    let warmth = style.warmth + 0.4 * f.outlier * normal(rng);
    let mut base = lerp([200.0, 142.0, 102.0], [82.0, 50.0, 36.0], darkness);
    base[0] += 15.0 * warmth;
    base[2] -= 10.0 * warmth;
    let variegation = 1.0 / (1.0 + (-(1.6 * f.variegation - 1.2)).exp());
    let extras: [Rgb; 4] = [
        [45.0, 30.0, 26.0],
        [105.0, 115.0, 142.0],
        [178.0, 82.0, 84.0],
        [226.0, 212.0, 206.0],
    ];
    let zones: Vec<(Rgb, f32, ValueNoise)> = extras
        .iter()
        .enumerate()
        .map(|(k, &col)| {
            (
                col,
                (1.7 * variegation - 0.35 * k as f32).clamp(0.0, 0.9),
                ValueNoise::new(rng, 4),
            )
        })
        .filter(|z| z.1 > 0.0)
        .collect();
    // An eccentric dark blotch: asymmetric pigmentation, not only an asymmetric outline.
    let blotch_at = [0.45 * phase1.cos(), 0.45 * phase1.sin()];
    let blotch = (asym * 2.5).min(0.7);
    let pattern = if f.outlier > 0.8 && rng.random::<f32>() < (f.outlier / 2.0).min(1.0) {
        (style.pattern + 1 + rng.random_range(0..2u8)) % 3
    } else {
        style.pattern
    };
    let warp = ValueNoise::new(rng, 4);
    let opacity = rng.random_range(0.85..0.97f32);

    let (sin_o, cos_o) = orientation.sin_cos();
    let reach = radius * r_max * (1.0 + edge) / (1.0 - elongation) + 2.0;
    let x0 = (centre[0] - reach).floor().max(0.0) as usize;
    let x1 = ((centre[0] + reach).ceil() as usize).min(c.s);
    let y0 = (centre[1] - reach).floor().max(0.0) as usize;
    let y1 = ((centre[1] + reach).ceil() as usize).min(c.s);
    for y in y0..y1 {
        for x in x0..x1 {
            let dx = (x as f32 + 0.5 - centre[0]) / radius;
            let dy = (y as f32 + 0.5 - centre[1]) / radius;
            let lx = dx * cos_o + dy * sin_o;
            let ly = (-dx * sin_o + dy * cos_o) / (1.0 - elongation);
            let rho = (lx * lx + ly * ly).sqrt();
            let theta = ly.atan2(lx).rem_euclid(TAU);
            let idx = ((theta / TAU * OUTLINE_STEPS as f32) as usize).min(OUTLINE_STEPS - 1);
            let rel = rho / outline[idx];
            let alpha = 1.0 - smoothstep(1.0 - edge, 1.0 + edge, rel);
            if alpha <= 0.0 {
                continue;
            }
            // Lesion-local coordinates in [0, 1] for the colour fields.
            let (u, v) = (0.5 + 0.5 * lx / r_max, 0.5 + 0.5 * ly / r_max);
            let mut col = base;
            // Nevi are often darker in the centre.
            let centre_dark = 1.0 - 0.12 * (1.0 - rel.min(1.0));
            col = [
                col[0] * centre_dark,
                col[1] * centre_dark,
                col[2] * centre_dark,
            ];
            for (zone_col, amp, field) in &zones {
                let w = amp * smoothstep(0.45, 0.75, field.at(u, v));
                col = lerp(col, *zone_col, w);
            }
            let bd = ((lx - blotch_at[0]).powi(2) + (ly - blotch_at[1]).powi(2)).sqrt();
            col = lerp(
                col,
                [60.0, 38.0, 30.0],
                blotch * (1.0 - smoothstep(0.15, 0.45, bd)),
            );
            // Pigment pattern, distorted as variegation grows.
            let w = (0.3 + variegation * 0.6) * (warp.at(u, v) - 0.5);
            let (px, py) = (lx * 4.0 + w, ly * 4.0 - w);
            let shade = match pattern {
                1 => {
                    let line = |t: f32| 1.0 - smoothstep(0.0, 0.3, (t * PI).sin().abs());
                    1.0 - 0.2 * line(px).max(line(py))
                }
                2 => {
                    let (gx, gy) = (px - px.round(), py - py.round());
                    1.0 - 0.2 * (1.0 - smoothstep(0.12, 0.3, (gx * gx + gy * gy).sqrt()))
                }
                _ => 1.0,
            };
            col = [col[0] * shade, col[1] * shade, col[2] * shade];
            let p = &mut c.px[y * c.s + x];
            *p = lerp(*p, col, alpha * opacity);
        }
    }
}

/// Coverage mask for thin strokes: each stamp keeps the maximum coverage so that overlapping
/// stamps along one stroke do not darken it.
struct Strokes {
    s: usize,
    cover: Vec<f32>,
}

impl Strokes {
    fn new(s: usize) -> Self {
        Self {
            s,
            cover: vec![0.0; s * s],
        }
    }

    fn stamp(&mut self, cx: f32, cy: f32, half_width: f32) {
        let reach = half_width + 1.0;
        let x0 = (cx - reach).floor().max(0.0) as usize;
        let y0 = (cy - reach).floor().max(0.0) as usize;
        let x1 = ((cx + reach).ceil().max(0.0) as usize).min(self.s);
        let y1 = ((cy + reach).ceil().max(0.0) as usize).min(self.s);
        for y in y0..y1 {
            for x in x0..x1 {
                let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
                let cov = (half_width + 0.5 - d).clamp(0.0, 1.0);
                let p = &mut self.cover[y * self.s + x];
                *p = p.max(cov);
            }
        }
    }

    fn line(&mut self, a: [f32; 2], b: [f32; 2], half_width: f32) {
        self.curve(a, [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0], b, half_width);
    }

    /// Quadratic Bézier from `a` to `b` bent towards `ctrl`, stamped every half pixel.
    fn curve(&mut self, a: [f32; 2], ctrl: [f32; 2], b: [f32; 2], half_width: f32) {
        let len = ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt()
            + ((ctrl[0] - a[0]).powi(2) + (ctrl[1] - a[1]).powi(2)).sqrt();
        let steps = (len * 2.0).ceil().max(1.0) as usize;
        for i in 0..=steps {
            let t = i as f32 / steps as f32;
            let (u, w) = ((1.0 - t) * (1.0 - t), t * t);
            let m = 2.0 * t * (1.0 - t);
            self.stamp(
                u * a[0] + m * ctrl[0] + w * b[0],
                u * a[1] + m * ctrl[1] + w * b[1],
                half_width,
            );
        }
    }

    fn blend_into(&self, c: &mut Canvas, col: Rgb, strength: f32) {
        for (p, &cov) in c.px.iter_mut().zip(&self.cover) {
            if cov > 0.0 {
                *p = lerp(*p, col, cov * strength);
            }
        }
    }
}

/// Dark, thin, curved hair strands crossing the field — the nuisance that hair-removal
/// augmentations exist for.
fn paint_hair(c: &mut Canvas, hairiness: f32, rng: &mut ChaCha8Rng) {
    let count = if hairiness > 0.0 {
        let n: f64 = Poisson::new(f64::from(hairiness)).map_or(0.0, |d| d.sample(rng));
        (n as usize).min(30)
    } else {
        0
    };
    if count == 0 {
        return;
    }
    let s = c.s as f32;
    let mut strokes = Strokes::new(c.s);
    for _ in 0..count {
        let a = [
            rng.random_range(-0.1..1.1) * s,
            rng.random_range(-0.1..1.1) * s,
        ];
        let angle = rng.random_range(0.0..TAU);
        let len = rng.random_range(0.4..1.3) * s;
        let b = [a[0] + len * angle.cos(), a[1] + len * angle.sin()];
        let bend = 0.25 * len * normal(rng);
        let ctrl = [
            (a[0] + b[0]) / 2.0 - bend * angle.sin(),
            (a[1] + b[1]) / 2.0 + bend * angle.cos(),
        ];
        let half_width = (s / 256.0 * rng.random_range(0.6..1.6)).max(0.45);
        strokes.curve(a, ctrl, b, half_width);
    }
    let col = if rng.random_bool(0.8) {
        [34.0, 26.0, 22.0]
    } else {
        [96.0, 70.0, 52.0]
    };
    strokes.blend_into(c, col, 0.9);
}

/// A ruler along one edge: a base line with ticks, every fifth one longer.
fn paint_ruler(c: &mut Canvas, rng: &mut ChaCha8Rng) {
    let s = c.s as f32;
    let mut strokes = Strokes::new(c.s);
    let inset = rng.random_range(0.04..0.12) * s;
    let half_width = (s / 300.0).max(0.45);
    let step = s / 24.0;
    let side = rng.random_range(0..4u8);
    // Work in a frame where the ruler runs along the top edge, then map to the chosen side.
    let map = |p: [f32; 2]| match side {
        0 => p,
        1 => [s - p[1], p[0]],
        2 => [p[0], s - p[1]],
        _ => [p[1], p[0]],
    };
    strokes.line(map([0.0, inset]), map([s, inset]), half_width);
    let mut i = 0;
    let mut x = rng.random_range(0.0..step);
    while x < s {
        let len = if i % 5 == 0 { 0.05 * s } else { 0.025 * s };
        strokes.line(map([x, inset]), map([x, inset + len]), half_width);
        x += step;
        i += 1;
    }
    strokes.blend_into(c, [38.0, 38.0, 44.0], 0.85);
}

/// Uneven illumination: a linear gradient across the field and a fall-off towards the rim.
fn apply_lighting(c: &mut Canvas, rng: &mut ChaCha8Rng) {
    let s = c.s as f32;
    let strength = rng.random_range(0.0..0.35f32);
    let dir = rng.random_range(0.0..TAU);
    let (gx, gy) = (dir.cos() * strength, dir.sin() * strength);
    let falloff = rng.random_range(0.0..0.25f32);
    for y in 0..c.s {
        for x in 0..c.s {
            let (u, v) = (x as f32 / s - 0.5, y as f32 / s - 0.5);
            let m = (1.0 + gx * u + gy * v) * (1.0 - falloff * (u * u + v * v) * 2.0);
            let p = &mut c.px[y * c.s + x];
            *p = [p[0] * m, p[1] * m, p[2] * m];
        }
    }
}

/// The dermatoscope's circular field of view: everything outside a centred circle is near black,
/// with a soft rim. The circle is smaller than the half-diagonal, so the corners go black.
fn apply_vignette(c: &mut Canvas, rng: &mut ChaCha8Rng) {
    let s = c.s as f32;
    let radius = rng.random_range(0.5..0.66) * s;
    let centre = [
        s * (0.5 + 0.01 * normal(rng)),
        s * (0.5 + 0.01 * normal(rng)),
    ];
    let rim = s / 80.0 + 1.0;
    let black = [8.0, 7.0, 7.0];
    for y in 0..c.s {
        for x in 0..c.s {
            let d = ((x as f32 + 0.5 - centre[0]).powi(2) + (y as f32 + 0.5 - centre[1]).powi(2))
                .sqrt();
            let t = smoothstep(radius - rim, radius, d);
            if t > 0.0 {
                let p = &mut c.px[y * c.s + x];
                *p = lerp(*p, black, t);
            }
        }
    }
}

/// Sensor noise and 8-bit quantisation.
fn quantize(c: &Canvas, rng: &mut ChaCha8Rng, size: u32) -> RgbImage {
    let mut img = RgbImage::new(size, size);
    for (out, p) in img.pixels_mut().zip(&c.px) {
        for (o, &v) in out.0.iter_mut().zip(p) {
            let noisy = v + rng.random_range(-3.0..3.0f32);
            // Adding 0.5 and truncating rounds a non-negative value; `f32::round` is a libm call
            // that took a tenth of the rendering time.
            *o = (noisy.clamp(0.0, 255.0) + 0.5) as u8;
        }
    }
    img
}
