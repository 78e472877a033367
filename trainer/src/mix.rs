//! Mixup (Zhang et al. 2018) and cutmix (Yun et al. 2019) on a device batch (issue 4, item 5):
//! each batch is mixed with probability `mix_prob`, with a partner batch that is a random
//! permutation of itself; when both are on, one is picked per batch with even odds, as timm's
//! `Mixup` does. Labels become soft (`λ·y + (1 − λ)·y_partner`, λ the share of the image that is
//! its own, by area for cutmix), and the metadata is mixed by the same λ. Draws come from a
//! stream keyed by (seed, epoch, batch index). It must not run on evaluation batches.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Beta, Distribution};
use stackhive_spec::cnn::AugmentSpec;
use tch::Tensor;

use crate::augment::{derive_rng, STREAM_MIX};
use crate::data::Batch;
use crate::loader::upload;

#[derive(Debug, thiserror::Error)]
pub enum MixError {
    #[error("mixing needs labels, found an unlabelled batch")]
    Unlabelled,
    #[error("{what} α must be a positive finite number, found {found}")]
    InvalidAlpha { what: &'static str, found: f64 },
    #[error("the mix pairs {found} examples, the batch has {expected}")]
    WrongLength { expected: usize, found: usize },
}

/// How a batch was mixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MixKind {
    Mixup,
    /// The box pasted from the partner: rows `y..y + h`, columns `x..x + w`.
    Cutmix {
        y: i64,
        x: i64,
        h: i64,
        w: i64,
    },
}

/// One batch's mix: example `i` is mixed with example `partner[i]`, keeping share `lambda`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    pub kind: MixKind,
    pub lambda: f64,
    pub partner: Vec<i64>,
}

/// Mixup and cutmix settings, from an [`AugmentSpec`].
#[derive(Clone, Debug)]
pub struct Mixer {
    mixup: Option<Beta<f64>>,
    cutmix: Option<Beta<f64>>,
    prob: f64,
    seed: u64,
}

impl Mixer {
    /// `None` when the spec mixes nothing (both α are 0, or `mix_prob` is 0).
    pub fn from_spec(spec: &AugmentSpec, seed: u64) -> Result<Option<Mixer>, MixError> {
        let beta = |what, a: f64| -> Result<Option<Beta<f64>>, MixError> {
            if a == 0.0 {
                return Ok(None);
            }
            let bad = MixError::InvalidAlpha { what, found: a };
            if !a.is_finite() || a < 0.0 {
                return Err(bad);
            }
            Beta::new(a, a).map(Some).map_err(|_| bad)
        };
        let (mixup, cutmix) = (beta("mixup", spec.mixup)?, beta("cutmix", spec.cutmix)?);
        if (mixup.is_none() && cutmix.is_none()) || spec.mix_prob <= 0.0 {
            return Ok(None);
        }
        Ok(Some(Mixer {
            mixup,
            cutmix,
            prob: spec.mix_prob.min(1.0),
            seed,
        }))
    }

    /// Draws the mix of batch `index` of `epoch` (`n` examples of `size × size`), or `None`
    /// when this batch stays unmixed.
    pub fn sample(&self, n: usize, size: i64, epoch: u64, index: u64) -> Option<Mix> {
        let mut rng = derive_rng(STREAM_MIX, self.seed, epoch, index);
        if !rng.random_bool(self.prob) {
            return None;
        }
        let (beta, cut) = match (&self.mixup, &self.cutmix) {
            (Some(m), Some(c)) => {
                if rng.random_bool(0.5) {
                    (c, true)
                } else {
                    (m, false)
                }
            }
            (Some(m), None) => (m, false),
            (None, Some(c)) => (c, true),
            (None, None) => return None,
        };
        let mut lambda: f64 = beta.sample(&mut rng);
        let mut partner: Vec<i64> = (0..n as i64).collect();
        partner.shuffle(&mut rng);
        let kind = if cut {
            // timm's `rand_bbox`: a box of side √(1 − λ) of the image, centred uniformly and
            // clipped; λ is then corrected to the share actually kept.
            let side = ((1.0 - lambda).sqrt() * size as f64).round() as i64;
            let (cy, cx) = (rng.random_range(0..size), rng.random_range(0..size));
            let (y0, y1) = ((cy - side / 2).max(0), (cy + side / 2).min(size));
            let (x0, x1) = ((cx - side / 2).max(0), (cx + side / 2).min(size));
            let (h, w) = (y1 - y0, x1 - x0);
            lambda = 1.0 - (h * w) as f64 / (size * size) as f64;
            MixKind::Cutmix { y: y0, x: x0, h, w }
        } else {
            MixKind::Mixup
        };
        Some(Mix {
            kind,
            lambda,
            partner,
        })
    }

    /// Samples and applies the mix of batch `index` of `epoch`; returns what was done.
    pub fn apply(
        &self,
        batch: &mut Batch,
        epoch: u64,
        index: u64,
    ) -> Result<Option<Mix>, MixError> {
        if batch.labels.is_none() {
            return Err(MixError::Unlabelled);
        }
        let dims = batch.images.size();
        let mix = self.sample(dims[0] as usize, dims[3], epoch, index);
        if let Some(m) = &mix {
            apply_mix(batch, m)?;
        }
        Ok(mix)
    }
}

/// Mixes `batch` in place as `mix` says (images keep their memory format).
pub fn apply_mix(batch: &mut Batch, mix: &Mix) -> Result<(), MixError> {
    let n = batch.images.size()[0] as usize;
    if mix.partner.len() != n {
        return Err(MixError::WrongLength {
            expected: n,
            found: mix.partner.len(),
        });
    }
    let labels = batch.labels.as_mut().ok_or(MixError::Unlabelled)?;
    let device = batch.images.device();
    let perm = upload(&Tensor::from_slice(&mix.partner), device);
    let other = 1.0 - mix.lambda;
    match mix.kind {
        MixKind::Mixup => {
            let partner = batch.images.index_select(0, &perm);
            let _ = batch.images.lerp_(&partner, other);
        }
        MixKind::Cutmix { y, x, h, w } => {
            if h > 0 && w > 0 {
                let mut region = batch.images.narrow(2, y, h).narrow(3, x, w);
                let patch = region.index_select(0, &perm);
                region.copy_(&patch);
            }
        }
    }
    let partner = labels.index_select(0, &perm);
    let _ = labels.lerp_(&partner, other);
    let partner = batch.meta.index_select(0, &perm);
    let _ = batch.meta.lerp_(&partner, other);
    Ok(())
}
