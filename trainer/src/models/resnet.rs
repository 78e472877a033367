//! The residual family: ResNet-18/34/50 (He et al. 2016), ResNeXt-50 32×4d (Xie et al. 2017) and
//! SE-ResNeXt-50 32×4d (Hu et al. 2018), in torchvision's layout and variable names (`conv1`,
//! `bn1`, `layerL.B.conv1`, `downsample.0/1`; timm's `layerL.B.se.fc1/fc2` for the gate),
//! returning the pooled embedding; the classifier lives in `models::Net`. The residual family
//! next to EfficientNet gives the ensemble diverse members.

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use super::layers::{batch_norm, conv, Act, SqueezeExcite};
use crate::arch::{Arch, ResNetDepth};

/// What distinguishes the members of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Blocks per stage.
    pub blocks: [usize; 4],
    /// Bottleneck blocks (1×1, 3×3, 1×1 ×4) rather than basic ones (two 3×3).
    pub bottleneck: bool,
    /// Groups of the bottleneck's 3×3 conv (ResNeXt's cardinality) and the width of each.
    pub groups: i64,
    pub width_per_group: i64,
    /// A squeeze-and-excitation gate (reduction 16, ReLU) on each block's residual branch.
    pub se: bool,
}

impl Layout {
    /// The layout of a residual `arch`; `None` for other families.
    pub fn of(arch: &Arch) -> Option<Layout> {
        let resnet = |blocks, bottleneck| Layout {
            blocks,
            bottleneck,
            groups: 1,
            width_per_group: 64,
            se: false,
        };
        Some(match arch {
            Arch::ResNet(ResNetDepth::R18) => resnet([2, 2, 2, 2], false),
            Arch::ResNet(ResNetDepth::R34) => resnet([3, 4, 6, 3], false),
            Arch::ResNet(ResNetDepth::R50) => resnet([3, 4, 6, 3], true),
            Arch::ResNeXt50 { se } => Layout {
                groups: 32,
                width_per_group: 4,
                se: *se,
                ..resnet([3, 4, 6, 3], true)
            },
            Arch::EfficientNet(_) => return None,
        })
    }
}

/// One residual block.
#[derive(Debug)]
struct Block {
    convs: Vec<(nn::Conv2D, nn::BatchNorm)>,
    se: Option<SqueezeExcite>,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Block {
    /// A block of stage width `planes` (64, 128, 256, 512) taking `c_in` channels; returns it
    /// and its output channels.
    fn new(p: &nn::Path, l: &Layout, c_in: i64, planes: i64, stride: i64) -> (Block, i64) {
        let c_out = if l.bottleneck { planes * 4 } else { planes };
        // torchvision's Bottleneck: width = planes · (width_per_group / 64) · groups.
        let width = planes * l.width_per_group / 64 * l.groups;
        // (in, out, kernel, stride, groups) per conv; the stride sits on the 3×3 conv.
        let shapes: Vec<(i64, i64, i64, i64, i64)> = if l.bottleneck {
            vec![
                (c_in, width, 1, 1, 1),
                (width, width, 3, stride, l.groups),
                (width, c_out, 1, 1, 1),
            ]
        } else {
            vec![(c_in, planes, 3, stride, 1), (planes, planes, 3, 1, 1)]
        };
        let convs = shapes
            .iter()
            .enumerate()
            .map(|(i, &(a, b, k, s, g))| {
                (
                    conv(&(p / format!("conv{}", i + 1)), a, b, k, s, g),
                    batch_norm(&(p / format!("bn{}", i + 1)), b),
                )
            })
            .collect();
        let se =
            l.se.then(|| SqueezeExcite::new(&(p / "se"), c_out, c_out / 16, Act::Relu));
        let downsample = (stride != 1 || c_in != c_out).then(|| {
            let d = p / "downsample";
            (
                conv(&(&d / 0), c_in, c_out, 1, stride, 1),
                batch_norm(&(&d / 1), c_out),
            )
        });
        (
            Block {
                convs,
                se,
                downsample,
            },
            c_out,
        )
    }
}

impl ModuleT for Block {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = xs.shallow_clone();
        let last = self.convs.len() - 1;
        for (i, (c, bn)) in self.convs.iter().enumerate() {
            ys = ys.apply(c).apply_t(bn, train);
            if i < last {
                ys = ys.relu();
            }
        }
        if let Some(se) = &self.se {
            ys = ys.apply_t(se, train);
        }
        let shortcut = match &self.downsample {
            Some((c, bn)) => xs.apply(c).apply_t(bn, train),
            None => xs.shallow_clone(),
        };
        (ys + shortcut).relu()
    }
}

/// The trunk up to the global average pool.
#[derive(Debug)]
pub struct ResNet {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    blocks: Vec<Block>,
    out_channels: i64,
}

impl ResNet {
    pub fn new(p: &nn::Path, layout: &Layout) -> ResNet {
        let conv1 = conv(&(p / "conv1"), 3, 64, 7, 2, 1);
        let bn1 = batch_norm(&(p / "bn1"), 64);
        let mut blocks = Vec::new();
        let mut c = 64;
        for (stage, &n) in layout.blocks.iter().enumerate() {
            let planes = 64 << stage;
            for b in 0..n {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let path = p / format!("layer{}", stage + 1) / b;
                let (block, c_out) = Block::new(&path, layout, c, planes, stride);
                blocks.push(block);
                c = c_out;
            }
        }
        ResNet {
            conv1,
            bn1,
            blocks,
            out_channels: c,
        }
    }

    pub fn out_channels(&self) -> i64 {
        self.out_channels
    }

    /// Pooled embedding, `[N, out_channels]`.
    pub fn embed(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut xs = xs
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu()
            .max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for b in &self.blocks {
            xs = xs.apply_t(b, train);
        }
        xs.mean_dim(&[2i64, 3][..], false, None::<Kind>)
    }
}
