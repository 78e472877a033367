//! Architecture names and what they mean: the EfficientNet family by compound scaling (Tan & Le,
//! "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019) and the
//! residual family (ResNet, He et al. 2016; ResNeXt and SE-ResNeXt), parsed from the strings a
//! `cnn` job carries, plus the check
//! that an image size suits an architecture. It must not build tensors: `models` does that.
//!
//! EfficientNet sizes:
//! - `efficientnet-b0` … `efficientnet-b7`: the published (width, depth, resolution, dropout)
//!   table, which is what torchvision and the reference implementation use;
//! - `efficientnet-phiN`: the paper's compound rule for any coefficient φ = N (fractions
//!   allowed): depth × α^φ, width × β^φ, resolution 224 × γ^φ with α = 1.2, β = 1.1, γ = 1.15,
//!   so sizes beyond B7 (the seed team's "L3"-like model) need no new table;
//! - `efficientnet-wX-dY`: explicit width and depth multipliers, e.g. a tiny
//!   `efficientnet-w0.25-d0.25` for quick CPU tests.

use std::fmt;

use crate::error::SpecError;

/// Compound-scaling constants from the paper's grid search (section 3.3).
const ALPHA_DEPTH: f64 = 1.2;
const BETA_WIDTH: f64 = 1.1;
const GAMMA_RESOLUTION: f64 = 1.15;
/// Largest φ accepted: width 1.1^16 ≈ 4.6, depth 1.2^16 ≈ 18.5 (the L2 of Noisy Student is
/// width 4.3); anything larger would not fit a GPU at any useful resolution.
const MAX_PHI: f64 = 16.0;
/// Bounds for explicit multipliers.
const MULT_RANGE: (f64, f64) = (0.05, 8.0);
/// Every supported network downsamples by 32 (five stride-2 stages).
pub const STRIDE: u32 = 32;
/// Largest image side accepted; beyond it one image's activations exceed any GPU's memory.
pub const MAX_IMAGE_SIZE: u32 = 2048;

/// (width, depth, resolution, dropout) of B0..B7, as published (and used by torchvision).
const EFFICIENTNET_TABLE: [(f64, f64, u32, f64); 8] = [
    (1.0, 1.0, 224, 0.2),
    (1.0, 1.1, 240, 0.2),
    (1.1, 1.2, 260, 0.3),
    (1.2, 1.4, 300, 0.3),
    (1.4, 1.8, 380, 0.4),
    (1.6, 2.2, 456, 0.4),
    (1.8, 2.6, 528, 0.5),
    (2.0, 3.1, 600, 0.5),
];

/// One EfficientNet size.
#[derive(Clone, Debug, PartialEq)]
pub struct EfficientNetSpec {
    /// Canonical name, e.g. `efficientnet-b3` or `efficientnet-phi9`.
    pub name: String,
    /// Channel multiplier (β^φ).
    pub width: f64,
    /// Layer-count multiplier (α^φ).
    pub depth: f64,
    /// The resolution the size was designed for; a job may train at another (checked by
    /// [`Arch::check_image_size`]).
    pub resolution: u32,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// Stochastic depth: the drop probability of the last block, growing linearly from 0 at
    /// the first (torchvision's 0.2).
    pub stochastic_depth: f64,
}

impl EfficientNetSpec {
    /// B0..B7 from the published table.
    pub fn b(n: usize) -> Option<EfficientNetSpec> {
        let &(width, depth, resolution, dropout) = EFFICIENTNET_TABLE.get(n)?;
        Some(EfficientNetSpec {
            name: format!("efficientnet-b{n}"),
            width,
            depth,
            resolution,
            dropout,
            stochastic_depth: 0.2,
        })
    }

    /// Compound scaling with coefficient `phi`: depth α^φ, width β^φ, resolution 224·γ^φ
    /// rounded to a multiple of 32. Dropout grows like the table's (0.2 at B0, 0.5 from φ = 6).
    pub fn phi(phi: f64) -> Result<EfficientNetSpec, SpecError> {
        let name = format!("efficientnet-phi{phi}");
        if !(0.0..=MAX_PHI).contains(&phi) {
            return Err(SpecError::BadArch {
                arch: name,
                reason: format!(
                    "expected a compound coefficient φ between 0 and {MAX_PHI}, found {phi}"
                ),
            });
        }
        let resolution =
            (224.0 * GAMMA_RESOLUTION.powf(phi) / f64::from(STRIDE)).round() as u32 * STRIDE;
        Ok(EfficientNetSpec {
            name,
            width: BETA_WIDTH.powf(phi),
            depth: ALPHA_DEPTH.powf(phi),
            resolution,
            dropout: (0.2 + 0.05 * phi).min(0.5),
            stochastic_depth: 0.2,
        })
    }

    /// Explicit multipliers; resolution 224 and B0's dropout.
    pub fn custom(width: f64, depth: f64) -> Result<EfficientNetSpec, SpecError> {
        let name = format!("efficientnet-w{width}-d{depth}");
        for (what, v) in [("width", width), ("depth", depth)] {
            if !(MULT_RANGE.0..=MULT_RANGE.1).contains(&v) {
                return Err(SpecError::BadArch {
                    arch: name,
                    reason: format!(
                        "expected a {what} multiplier between {} and {}, found {v}",
                        MULT_RANGE.0, MULT_RANGE.1
                    ),
                });
            }
        }
        Ok(EfficientNetSpec {
            name,
            width,
            depth,
            resolution: 224,
            dropout: 0.2,
            stochastic_depth: 0.2,
        })
    }
}

/// ResNet depths (torchvision's layouts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResNetDepth {
    R18,
    R34,
    R50,
}

impl ResNetDepth {
    pub fn layers(self) -> u32 {
        match self {
            ResNetDepth::R18 => 18,
            ResNetDepth::R34 => 34,
            ResNetDepth::R50 => 50,
        }
    }
}

/// A network family and size.
#[derive(Clone, Debug, PartialEq)]
pub enum Arch {
    EfficientNet(EfficientNetSpec),
    ResNet(ResNetDepth),
    /// ResNeXt-50 32×4d (Xie et al. 2017, torchvision's layout); with `se`, a
    /// squeeze-and-excitation gate in every block (SE-ResNeXt, Hu et al. 2018, timm's
    /// `seresnext50_32x4d`), a favourite of the ISIC 2019/2020 leaderboards.
    ResNeXt50 {
        se: bool,
    },
}

impl Arch {
    /// Parses `efficientnet-b0..b7`, `efficientnet-phiN`, `efficientnet-wX-dY`, `resnet18`,
    /// `resnet34`, `resnet50`, `resnext50-32x4d` or `seresnext50-32x4d` (case-insensitive; `_`
    /// may stand for `-`).
    pub fn parse(s: &str) -> Result<Arch, SpecError> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        let unknown = || SpecError::UnknownArch {
            found: s.to_string(),
        };
        if let Some(rest) = norm.strip_prefix("efficientnet-") {
            if let Some(n) = rest.strip_prefix('b') {
                let n: usize = n.parse().map_err(|_| unknown())?;
                return EfficientNetSpec::b(n)
                    .map(Arch::EfficientNet)
                    .ok_or_else(unknown);
            }
            if let Some(phi) = rest.strip_prefix("phi") {
                let phi: f64 = phi.parse().map_err(|_| unknown())?;
                return EfficientNetSpec::phi(phi).map(Arch::EfficientNet);
            }
            if let Some((w, d)) = rest.strip_prefix('w').and_then(|r| r.split_once("-d")) {
                let (w, d): (f64, f64) = (
                    w.parse().map_err(|_| unknown())?,
                    d.parse().map_err(|_| unknown())?,
                );
                return EfficientNetSpec::custom(w, d).map(Arch::EfficientNet);
            }
            return Err(unknown());
        }
        match norm.as_str() {
            "resnet18" | "resnet-18" => Ok(Arch::ResNet(ResNetDepth::R18)),
            "resnet34" | "resnet-34" => Ok(Arch::ResNet(ResNetDepth::R34)),
            "resnet50" | "resnet-50" => Ok(Arch::ResNet(ResNetDepth::R50)),
            "resnext50-32x4d" | "resnext50" => Ok(Arch::ResNeXt50 { se: false }),
            "seresnext50-32x4d" | "seresnext50" | "se-resnext50-32x4d" | "se-resnext50" => {
                Ok(Arch::ResNeXt50 { se: true })
            }
            _ => Err(unknown()),
        }
    }

    /// Canonical name (what `parse` reads back).
    pub fn name(&self) -> String {
        match self {
            Arch::EfficientNet(spec) => spec.name.clone(),
            Arch::ResNet(d) => format!("resnet{}", d.layers()),
            Arch::ResNeXt50 { se: false } => "resnext50-32x4d".into(),
            Arch::ResNeXt50 { se: true } => "seresnext50-32x4d".into(),
        }
    }

    /// The image side the architecture was designed for.
    pub fn default_image_size(&self) -> u32 {
        match self {
            Arch::EfficientNet(spec) => spec.resolution,
            Arch::ResNet(_) | Arch::ResNeXt50 { .. } => 224,
        }
    }

    /// Whether the networks can take `size`×`size` images: at least 32 and a multiple of 32, so
    /// every stride-2 stage halves an even side and the symmetric "same" padding (torchvision's
    /// `(k - 1) / 2`) lines up, and at most [`MAX_IMAGE_SIZE`].
    pub fn check_image_size(&self, size: u32) -> Result<(), SpecError> {
        if size >= STRIDE && size.is_multiple_of(STRIDE) && size <= MAX_IMAGE_SIZE {
            return Ok(());
        }
        let mut expected = format!("a multiple of {STRIDE} between {STRIDE} and {MAX_IMAGE_SIZE}");
        if size > STRIDE && size < MAX_IMAGE_SIZE {
            let lo = size / STRIDE * STRIDE;
            expected.push_str(&format!(" (nearest: {lo} or {})", lo + STRIDE));
        }
        Err(SpecError::ImageSize {
            arch: self.name(),
            found: size,
            expected,
        })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl std::str::FromStr for Arch {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Arch, SpecError> {
        Arch::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_compound_rule() {
        let b3 = EfficientNetSpec::b(3).unwrap();
        assert_eq!(
            (b3.width, b3.depth, b3.resolution, b3.dropout),
            (1.2, 1.4, 300, 0.3)
        );
        let p0 = EfficientNetSpec::phi(0.0).unwrap();
        assert_eq!((p0.width, p0.depth, p0.resolution), (1.0, 1.0, 224));
        let p4 = EfficientNetSpec::phi(4.0).unwrap();
        assert!((p4.width - 1.4641).abs() < 1e-9 && (p4.depth - 2.0736).abs() < 1e-9);
        assert_eq!(p4.resolution, 384);
    }
}
