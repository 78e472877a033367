//! The geometric half of augmentation on HWC `u8` images: the eight flips and quarter turns as
//! exact pixel permutations, and everything else (rotation, shear, stretch, composed with a
//! flip or quarter turn) as ONE affine warp with bilinear sampling, so an image is resampled at
//! most once however many transforms are on. It must not allocate per image or per pixel: it
//! writes into the caller's buffer.
//!
//! Why not `imageproc::geometric_transformations::warp_into`: it fills outside the source with
//! a constant (black borders look like a dermatoscope's vignette, a label leak), its output must
//! be an owned `ImageBuffer` (one more copy into the batch), it interpolates in `f32` per
//! channel, and it fans out on rayon inside each image while our loader already keeps every
//! core busy with one image per thread. The warp below mirrors at the border and samples in
//! 8-bit fixed point.
//!
//! Coordinates: `x` is the column, `y` the row, both about the image centre
//! `c = (size − 1) / 2`. A transform maps source to output; sampling uses its inverse.

/// One of the eight symmetries of the square (the dihedral group D4), as an integer matrix
/// mapping centred source coordinates to output coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dihedral {
    m: [[i32; 2]; 2],
}

impl Dihedral {
    pub const IDENTITY: Dihedral = Dihedral {
        m: [[1, 0], [0, 1]],
    };
    /// Mirror left–right.
    pub const HFLIP: Dihedral = Dihedral {
        m: [[-1, 0], [0, 1]],
    };
    /// Mirror top–bottom.
    pub const VFLIP: Dihedral = Dihedral {
        m: [[1, 0], [0, -1]],
    };
    /// A quarter turn, the same sense as a positive `rotate` angle.
    pub const ROT90: Dihedral = Dihedral {
        m: [[0, -1], [1, 0]],
    };

    /// `self` after `first`: the map `p ↦ self(first(p))`.
    pub fn after(self, first: Dihedral) -> Dihedral {
        let (a, b) = (self.m, first.m);
        let mut m = [[0; 2]; 2];
        for (i, row) in m.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = a[i][0] * b[0][j] + a[i][1] * b[1][j];
            }
        }
        Dihedral { m }
    }

    /// A quarter turn `k` times (`k` taken mod 4).
    pub fn rot90(k: u32) -> Dihedral {
        (0..k % 4).fold(Dihedral::IDENTITY, |d, _| Dihedral::ROT90.after(d))
    }

    pub fn is_identity(self) -> bool {
        self == Dihedral::IDENTITY
    }

    /// The matrix as floats, to compose with a rotation, shear or stretch.
    pub fn matrix(self) -> [[f64; 2]; 2] {
        self.m.map(|r| r.map(f64::from))
    }
}

/// A 2×2 linear map about the image centre (source → output), as for [`warp`].
pub type Linear = [[f64; 2]; 2];

/// `a · b`.
pub fn compose(a: &Linear, b: &Linear) -> Linear {
    let mut m = [[0.0; 2]; 2];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = a[i][0] * b[0][j] + a[i][1] * b[1][j];
        }
    }
    m
}

/// Rotation by `degrees` (positive turns the x axis toward the y axis, the same sense as
/// [`Dihedral::ROT90`]).
pub fn rotation(degrees: f64) -> Linear {
    let (s, c) = degrees.to_radians().sin_cos();
    [[c, -s], [s, c]]
}

/// Horizontal shear by `degrees`: `x += tan(degrees) · y`.
pub fn shear(degrees: f64) -> Linear {
    [[1.0, degrees.to_radians().tan()], [0.0, 1.0]]
}

/// Scales x by `sx` and y by `sy`.
pub fn stretch(sx: f64, sy: f64) -> Linear {
    [[sx, 0.0], [0.0, sy]]
}

/// Copies `src` into `dst` (both `size × size × 3`) moved by `d`: exact, no interpolation.
pub fn dihedral(src: &[u8], dst: &mut [u8], size: usize, d: Dihedral) {
    check(src, dst, size);
    if d.is_identity() {
        dst.copy_from_slice(src);
        return;
    }
    let (spx, dpx) = (src.as_chunks::<3>().0, dst.as_chunks_mut::<3>().0);
    // The inverse of an orthogonal matrix is its transpose: source = mᵀ · output. In doubled
    // coordinates (2x − (size − 1)) everything stays an integer.
    let m = d.m;
    let n = size as isize;
    let (ax, bx, ay, by) = (m[0][0], m[1][0], m[0][1], m[1][1]);
    let src_of = |x: isize, y: isize| -> isize {
        let (u, v) = (2 * x - (n - 1), 2 * y - (n - 1));
        let sx = (ax as isize * u + bx as isize * v + (n - 1)) / 2;
        let sy = (ay as isize * u + by as isize * v + (n - 1)) / 2;
        sy * n + sx
    };
    let step = src_of(1, 0) - src_of(0, 0);
    for (y, row) in dpx.chunks_exact_mut(size).enumerate() {
        let start = src_of(0, y as isize);
        if step == 1 {
            let s = start as usize;
            row.copy_from_slice(&spx[s..s + size]);
        } else if step == -1 {
            // A mirrored row: the same source row read backwards.
            let s = start as usize + 1 - size;
            for (out, p) in row.iter_mut().zip(spx[s..=start as usize].iter().rev()) {
                *out = *p;
            }
        } else {
            let mut i = start;
            for out in row.iter_mut() {
                *out = spx[i as usize];
                i += step;
            }
        }
    }
}

/// Resamples `src` into `dst` (both `size × size × 3`) under the source → output map `forward`
/// (about the centre), bilinearly, mirroring at the border (`…2 1 0 1 2…`, OpenCV's
/// `BORDER_REFLECT_101`) so no black corners appear. Panics if `forward` is singular.
pub fn warp(src: &[u8], dst: &mut [u8], size: usize, forward: &Linear) {
    check(src, dst, size);
    let det = forward[0][0] * forward[1][1] - forward[0][1] * forward[1][0];
    assert!(
        det.abs() > 1e-9,
        "expected an invertible transform, found determinant {det}"
    );
    let inv = [
        [forward[1][1] / det, -forward[0][1] / det],
        [-forward[1][0] / det, forward[0][0] / det],
    ];
    let (spx, dpx) = (src.as_chunks::<3>().0, dst.as_chunks_mut::<3>().0);
    // 16.16 fixed point for the source position, stepped along each row: the rounding drift
    // over a row stays below 1/200 pixel, and the 8 fraction bits used for weights are exact
    // whenever the map lands on pixel centres (a quarter turn, a flip).
    const ONE: f64 = 65536.0;
    let c = (size as f64 - 1.0) / 2.0;
    let q = |v: f64| (v * ONE).round() as i64;
    let (dxx, dxy) = (q(inv[0][0]), q(inv[1][0]));
    let n = size as i64;
    for (y, row) in dpx.chunks_exact_mut(size).enumerate() {
        let v = y as f64 - c;
        let mut sx = q(inv[0][0] * -c + inv[0][1] * v + c);
        let mut sy = q(inv[1][0] * -c + inv[1][1] * v + c);
        for out in row.iter_mut() {
            let (ix, iy) = (sx >> 16, sy >> 16);
            let fx = ((sx >> 8) & 255) as u32;
            let fy = ((sy >> 8) & 255) as u32;
            let (p00, p01, p10, p11) = if ix >= 0 && iy >= 0 && ix + 1 < n && iy + 1 < n {
                let i = iy as usize * size + ix as usize;
                (spx[i], spx[i + 1], spx[i + size], spx[i + size + 1])
            } else {
                let (x0, x1) = (reflect(ix, n), reflect(ix + 1, n));
                let (y0, y1) = (reflect(iy, n) * size, reflect(iy + 1, n) * size);
                (spx[y0 + x0], spx[y0 + x1], spx[y1 + x0], spx[y1 + x1])
            };
            let w00 = (256 - fx) * (256 - fy);
            let w01 = fx * (256 - fy);
            let w10 = (256 - fx) * fy;
            let w11 = fx * fy;
            for ch in 0..3 {
                let acc = u32::from(p00[ch]) * w00
                    + u32::from(p01[ch]) * w01
                    + u32::from(p10[ch]) * w10
                    + u32::from(p11[ch]) * w11;
                out[ch] = ((acc + 32768) >> 16) as u8;
            }
            sx += dxx;
            sy += dxy;
        }
    }
}

/// Mirrors index `i` into `0..n` without repeating the edge (`reflect_101`). One reflection
/// covers every warp within the spec's limits; the division is only for farther points.
fn reflect(i: i64, n: i64) -> usize {
    let mut m = i.abs();
    if m >= n {
        m = 2 * (n - 1) - m;
    }
    if (0..n).contains(&m) {
        return m as usize;
    }
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - m }) as usize
}

fn check(src: &[u8], dst: &[u8], size: usize) {
    let len = size * size * 3;
    assert!(
        src.len() == len && dst.len() == len,
        "expected {size}×{size}×3 = {len} bytes in and out, found {} and {}",
        src.len(),
        dst.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_mirrors_without_repeating_the_edge() {
        let got: Vec<usize> = (-3..7).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        assert_eq!(reflect(-100, 1), 0);
    }

    #[test]
    fn dihedral_group_has_eight_distinct_elements() {
        let mut seen = Vec::new();
        for h in [false, true] {
            for k in 0..4 {
                let d = Dihedral::rot90(k).after(if h {
                    Dihedral::HFLIP
                } else {
                    Dihedral::IDENTITY
                });
                assert!(!seen.contains(&d));
                seen.push(d);
            }
        }
        assert_eq!(Dihedral::rot90(2), Dihedral::HFLIP.after(Dihedral::VFLIP));
    }
}
