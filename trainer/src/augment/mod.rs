//! Per-image training augmentation on HWC `u8` buffers (issue 4, item 5), run by the loader's
//! CPU threads: flips, quarter turns, rotation, shear and stretch (one resampling at most, see
//! `geometry`), brightness/contrast/hue jitter, the microscope vignette and coarse dropout (see
//! `pixels`). Mixup and cutmix mix whole batches on the device (`crate::mix`); test-time views
//! live in `crate::tta`.
//!
//! Every random draw comes from a per-image ChaCha8 stream derived from (seed, epoch, position
//! in the epoch), so an image's augmentation does not depend on thread count or scheduling. This
//! module must not touch tensors, threads or the cache: it maps one buffer to another.

pub mod geometry;
pub mod pixels;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stackhive_spec::cnn::AugmentSpec;

pub use geometry::Dihedral;
pub use pixels::{Jitter, FILL};

/// Largest number of cutout holes (the spec refuses more).
pub const MAX_HOLES: usize = 64;
/// Vignette radius range as a fraction of the side: the centre is never darkened, the corners
/// (at 0.707) always are.
pub const VIGNETTE_RADIUS: (f64, f64) = (0.42, 0.6);

/// Seed streams, so the per-image and per-batch generators never share a sequence.
const STREAM_IMAGE: u64 = 0x1a6e;
pub(crate) const STREAM_MIX: u64 = 0x313c;

/// The generator for one draw site: `(seed, epoch, position)` hashed into a ChaCha8 seed.
/// ChaCha8 is documented as reproducible across platforms and `rand` versions.
pub(crate) fn derive_rng(stream: u64, seed: u64, epoch: u64, position: u64) -> ChaCha8Rng {
    let mut h = splitmix(seed ^ stream.rotate_left(48));
    h = splitmix(h ^ epoch);
    h = splitmix(h ^ position);
    ChaCha8Rng::seed_from_u64(h)
}

/// SplitMix64's finaliser: a bijective mix, so distinct inputs give distinct seeds.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The generator of the image at `position` (0-based, counted over the whole epoch's batches)
/// in `epoch` of a run seeded with `seed`.
pub fn image_rng(seed: u64, epoch: u64, position: u64) -> ChaCha8Rng {
    derive_rng(STREAM_IMAGE, seed, epoch, position)
}

/// What one image gets: the draws of [`Augmenter::sample`], applied by [`Params::apply`].
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub dihedral: Dihedral,
    /// Degrees; 0 when off.
    pub rotate: f64,
    pub shear: f64,
    /// Factors for x and y; 1 when off.
    pub stretch: (f64, f64),
    pub jitter: Option<Jitter>,
    /// Vignette radius in pixels.
    pub vignette: Option<f64>,
    /// Top-left corners of the holes, the first `hole_count` of them, each `hole_side` wide.
    pub holes: [(u32, u32); MAX_HOLES],
    pub hole_count: usize,
    pub hole_side: usize,
}

impl Params {
    /// The identity: no transform at all.
    pub fn identity() -> Params {
        Params {
            dihedral: Dihedral::IDENTITY,
            rotate: 0.0,
            shear: 0.0,
            stretch: (1.0, 1.0),
            jitter: None,
            vignette: None,
            holes: [(0, 0); MAX_HOLES],
            hole_count: 0,
            hole_side: 0,
        }
    }

    /// Whether the geometry needs resampling (anything beyond a flip or quarter turn).
    pub fn needs_warp(&self) -> bool {
        self.rotate != 0.0 || self.shear != 0.0 || self.stretch != (1.0, 1.0)
    }

    /// Writes `src` transformed into `dst` (both `size × size × 3`): geometry first (a copy, a
    /// permutation or one warp), then colour, vignette and holes in place on `dst`.
    pub fn apply(&self, src: &[u8], dst: &mut [u8], size: usize) {
        if self.needs_warp() {
            let m = geometry::compose(
                &self.dihedral.matrix(),
                &geometry::compose(
                    &geometry::rotation(self.rotate),
                    &geometry::compose(
                        &geometry::shear(self.shear),
                        &geometry::stretch(self.stretch.0, self.stretch.1),
                    ),
                ),
            );
            geometry::warp(src, dst, size, &m);
        } else {
            geometry::dihedral(src, dst, size, self.dihedral);
        }
        if let Some(j) = self.jitter {
            pixels::jitter(dst, j);
        }
        if let Some(r) = self.vignette {
            pixels::vignette(dst, size, r);
        }
        for &(x, y) in &self.holes[..self.hole_count] {
            pixels::cutout(dst, size, x as usize, y as usize, self.hole_side);
        }
    }
}

/// Uniform in `±x`, or 0 (without a draw) when `x` is not positive.
fn sym<R: Rng + ?Sized>(x: f64, rng: &mut R) -> f64 {
    if x > 0.0 {
        rng.random_range(-x..=x)
    } else {
        0.0
    }
}

/// Samples and applies an [`AugmentSpec`]'s per-image transforms at one image size.
#[derive(Clone, Debug)]
pub struct Augmenter {
    spec: AugmentSpec,
    size: usize,
}

impl Augmenter {
    /// For images of `size × size`. The spec is assumed validated (`CnnSpec::validate`);
    /// out-of-range values are clamped rather than trusted.
    pub fn new(spec: &AugmentSpec, size: usize) -> Augmenter {
        Augmenter {
            spec: spec.clone(),
            size,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Draws one image's parameters. The order of draws is fixed for a given spec, so a stream
    /// always gives the same parameters.
    pub fn sample(&self, rng: &mut impl Rng) -> Params {
        let s = &self.spec;
        let mut p = Params::identity();
        let mut d = Dihedral::IDENTITY;
        if s.hflip && rng.random_bool(0.5) {
            d = Dihedral::HFLIP.after(d);
        }
        if s.vflip && rng.random_bool(0.5) {
            d = Dihedral::VFLIP.after(d);
        }
        if s.rot90 {
            d = Dihedral::rot90(rng.random_range(0..4)).after(d);
        }
        p.dihedral = d;
        p.rotate = sym(s.rotate.min(180.0), rng);
        p.shear = sym(s.shear.clamp(0.0, 60.0), rng);
        let st = s.stretch.clamp(0.0, 0.9);
        p.stretch = (1.0 + sym(st, rng), 1.0 + sym(st, rng));
        let (b, c, h) = (
            s.brightness.clamp(0.0, 1.0),
            s.contrast.clamp(0.0, 1.0),
            s.hue.clamp(0.0, 0.5),
        );
        if b > 0.0 || c > 0.0 || h > 0.0 {
            p.jitter = Some(Jitter {
                brightness: 1.0 + sym(b, rng),
                contrast: 1.0 + sym(c, rng),
                hue: sym(h, rng),
            });
        }
        if s.vignette > 0.0 && rng.random_bool(s.vignette.min(1.0)) {
            let (lo, hi) = VIGNETTE_RADIUS;
            p.vignette = Some(rng.random_range(lo..=hi) * self.size as f64);
        }
        let side = (s.cutout_size.clamp(0.0, 1.0) * self.size as f64).round() as usize;
        if s.cutout_holes > 0 && side > 0 {
            p.hole_side = side;
            p.hole_count = (s.cutout_holes as usize).min(MAX_HOLES);
            let room = (self.size - side) as u32;
            for hole in &mut p.holes[..p.hole_count] {
                *hole = (rng.random_range(0..=room), rng.random_range(0..=room));
            }
        }
        p
    }

    /// Draws parameters from `rng` and writes the augmented `src` into `dst`.
    pub fn apply(&self, src: &[u8], dst: &mut [u8], rng: &mut impl Rng) {
        self.sample(rng).apply(src, dst, self.size);
    }
}
