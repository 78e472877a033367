//! The photometric half of augmentation, in place on one HWC `u8` image: brightness, contrast
//! and hue as one fused colour transform, the microscope vignette, and coarse dropout. Each is
//! one pass over the image (two for contrast, which needs the mean). It must not allocate: the
//! only table is 256 bytes on the stack.

/// ImageNet's mean colour in `u8`: holes are filled with it so that, after normalisation, a
/// hole is zero (timm's random erasing does the same in float).
pub const FILL: [u8; 3] = [124, 116, 104];

/// Rec. 601 luma weights, as torchvision's `rgb_to_grayscale` (used for contrast's mean).
const LUMA: [f64; 3] = [0.299, 0.587, 0.114];

/// Colour jitter factors: brightness and contrast multiply (1 = unchanged), hue turns the
/// colour wheel by this fraction of a full turn (0 = unchanged).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Jitter {
    pub brightness: f64,
    pub contrast: f64,
    pub hue: f64,
}

/// Applies brightness, then contrast about the image's mean grey (torchvision's definitions),
/// then a hue rotation, as one affine colour map `M·rgb + t`, clamped to `0..=255`.
///
/// The hue rotation is the linear one of the W3C filter-effects `hueRotate` matrix (a turn about
/// the grey axis), not an exact HSV shift: it composes with brightness and contrast into a
/// single 3×3 map, where an HSV round trip per pixel would cost several times the whole warp.
pub fn jitter(img: &mut [u8], j: Jitter) {
    let (b, k) = (j.brightness, j.contrast);
    // Contrast blends with the mean grey of the brightened image: (1 − k)·b·mean.
    let offset = if k == 1.0 {
        0.0
    } else {
        (1.0 - k) * b * mean_grey(img)
    };
    let gain = k * b;
    if j.hue == 0.0 {
        // Every channel gets the same map: one table lookup per byte.
        let mut lut = [0u8; 256];
        for (v, out) in lut.iter_mut().enumerate() {
            *out = (gain * v as f64 + offset).round().clamp(0.0, 255.0) as u8;
        }
        for p in img.iter_mut() {
            *p = lut[*p as usize];
        }
        return;
    }
    let h = hue_matrix(j.hue * 360.0);
    // 12-bit fixed point; the grey axis is kept by `h`, so the offset is the same per channel.
    const SHIFT: u32 = 12;
    let q = |v: f64| (v * f64::from(1u32 << SHIFT)).round() as i32;
    let m: [[i32; 3]; 3] = h.map(|row| row.map(|v| q(v * gain)));
    let t = q(offset) + (1 << (SHIFT - 1));
    for px in img.as_chunks_mut::<3>().0 {
        let [r, g, bl] = px.map(i32::from);
        *px =
            m.map(|row| ((row[0] * r + row[1] * g + row[2] * bl + t) >> SHIFT).clamp(0, 255) as u8);
    }
}

/// The hue-rotation matrix of the W3C filter-effects spec (`feColorMatrix type="hueRotate"`).
fn hue_matrix(degrees: f64) -> [[f64; 3]; 3] {
    let (s, c) = degrees.to_radians().sin_cos();
    [
        [
            0.213 + c * 0.787 - s * 0.213,
            0.715 - c * 0.715 - s * 0.715,
            0.072 - c * 0.072 + s * 0.928,
        ],
        [
            0.213 - c * 0.213 + s * 0.143,
            0.715 + c * 0.285 + s * 0.140,
            0.072 - c * 0.072 - s * 0.283,
        ],
        [
            0.213 - c * 0.213 - s * 0.787,
            0.715 - c * 0.715 + s * 0.715,
            0.072 + c * 0.928 + s * 0.072,
        ],
    ]
}

/// Mean luma of an HWC image.
fn mean_grey(img: &[u8]) -> f64 {
    let mut sums = [0u64; 3];
    for px in img.as_chunks::<3>().0 {
        for (s, &v) in sums.iter_mut().zip(px) {
            *s += u64::from(v);
        }
    }
    let n = (img.len() / 3).max(1) as f64;
    (0..3).map(|c| LUMA[c] * sums[c] as f64 / n).sum()
}

/// The microscope vignette: everything farther than `radius` pixels from the centre goes black,
/// with a one-pixel soft edge, like a dermatoscope's circular field of view (the "Microscope"
/// augmentation of ISIC 2020 Kaggle solutions). Pixels well inside the circle are not touched.
pub fn vignette(img: &mut [u8], size: usize, radius: f64) {
    let c = (size as f64 - 1.0) / 2.0;
    let (r_in, r_out) = ((radius - 0.5).max(0.0), radius + 0.5);
    let cols = |lo: f64, hi: f64| -> (usize, usize) {
        let a = (lo.floor() + 1.0).clamp(0.0, size as f64) as usize;
        (a, (hi.ceil()).clamp(a as f64, size as f64) as usize)
    };
    for (y, row) in img
        .as_chunks_mut::<3>()
        .0
        .chunks_exact_mut(size)
        .enumerate()
    {
        let dy2 = (y as f64 - c).powi(2);
        if dy2 >= r_out * r_out {
            row.fill([0; 3]);
            continue;
        }
        // Columns with |x − c| < outer half-width may keep light; those strictly inside the
        // inner circle keep all of it, so only the soft edge costs a square root per pixel.
        let half_out = (r_out * r_out - dy2).sqrt();
        let (a, b) = cols(c - half_out, c + half_out);
        let (lo, hi) = if dy2 < r_in * r_in {
            let half_in = (r_in * r_in - dy2).sqrt();
            cols(c - half_in, c + half_in)
        } else {
            (a, a)
        };
        row[..a].fill([0; 3]);
        row[b..].fill([0; 3]);
        for (x, px) in row.iter_mut().enumerate().take(b).skip(a) {
            if (lo..hi).contains(&x) {
                continue;
            }
            let d = ((x as f64 - c).powi(2) + dy2).sqrt();
            let keep = (radius + 0.5 - d).clamp(0.0, 1.0);
            *px = px.map(|v| (f64::from(v) * keep).round() as u8);
        }
    }
}

/// Fills a `side × side` square with top-left corner `(x, y)` with [`FILL`], clipped to the
/// image.
pub fn cutout(img: &mut [u8], size: usize, x: usize, y: usize, side: usize) {
    let (x1, y1) = ((x + side).min(size), (y + side).min(size));
    if x >= x1 {
        return;
    }
    for row in img
        .as_chunks_mut::<3>()
        .0
        .chunks_exact_mut(size)
        .take(y1)
        .skip(y)
    {
        row[x..x1].fill(FILL);
    }
}
