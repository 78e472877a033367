//! ResNet-18/34/50 (He et al. 2016), torchvision's layout and variable names (`conv1`, `bn1`,
//! `layerL.B.conv1`, `downsample.0/1`), returning the pooled embedding; the classifier lives in
//! `models::Net`. The residual family next to EfficientNet gives the ensemble diverse members.

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use super::layers::{batch_norm, conv};
use crate::arch::ResNetDepth;

/// One residual block: basic (two 3×3) for 18/34, bottleneck (1×1, 3×3, 1×1 ×4) for 50.
#[derive(Debug)]
struct Block {
    convs: Vec<(nn::Conv2D, nn::BatchNorm)>,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Block {
    fn new(p: &nn::Path, c_in: i64, width: i64, stride: i64, bottleneck: bool) -> (Block, i64) {
        let c_out = if bottleneck { width * 4 } else { width };
        // (in, out, kernel, stride) per conv; torchvision puts the stride on the 3×3 conv.
        let shapes: Vec<(i64, i64, i64, i64)> = if bottleneck {
            vec![
                (c_in, width, 1, 1),
                (width, width, 3, stride),
                (width, c_out, 1, 1),
            ]
        } else {
            vec![(c_in, width, 3, stride), (width, width, 3, 1)]
        };
        let convs = shapes
            .iter()
            .enumerate()
            .map(|(i, &(a, b, k, s))| {
                (
                    conv(&(p / format!("conv{}", i + 1)), a, b, k, s, 1),
                    batch_norm(&(p / format!("bn{}", i + 1)), b),
                )
            })
            .collect();
        let downsample = (stride != 1 || c_in != c_out).then(|| {
            let d = p / "downsample";
            (
                conv(&(&d / 0), c_in, c_out, 1, stride, 1),
                batch_norm(&(&d / 1), c_out),
            )
        });
        (Block { convs, downsample }, c_out)
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
        let shortcut = match &self.downsample {
            Some((c, bn)) => xs.apply(c).apply_t(bn, train),
            None => xs.shallow_clone(),
        };
        (ys + shortcut).relu()
    }
}

/// The ResNet trunk up to the global average pool.
#[derive(Debug)]
pub struct ResNet {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    blocks: Vec<Block>,
    out_channels: i64,
}

impl ResNet {
    pub fn new(p: &nn::Path, depth: ResNetDepth) -> ResNet {
        let (layers, bottleneck) = match depth {
            ResNetDepth::R18 => ([2, 2, 2, 2], false),
            ResNetDepth::R34 => ([3, 4, 6, 3], false),
            ResNetDepth::R50 => ([3, 4, 6, 3], true),
        };
        let conv1 = conv(&(p / "conv1"), 3, 64, 7, 2, 1);
        let bn1 = batch_norm(&(p / "bn1"), 64);
        let mut blocks = Vec::new();
        let mut c = 64;
        for (l, &n) in layers.iter().enumerate() {
            let width = 64 << l;
            for b in 0..n {
                let stride = if l > 0 && b == 0 { 2 } else { 1 };
                let (block, c_out) = Block::new(
                    &(p / format!("layer{}", l + 1) / b),
                    c,
                    width,
                    stride,
                    bottleneck,
                );
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
