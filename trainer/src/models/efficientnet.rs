//! EfficientNet (Tan & Le 2019) for any width/depth multiplier: the B0 stage table scaled by
//! compound scaling, MBConv blocks with squeeze-excitation, SiLU and stochastic depth. Written
//! for speed: symmetric padding inside each conv (torchvision's layout), no padding layers.
//! Variable names match torchvision's `efficientnet_b*` (`features.S.R.block.I...`) so its
//! weights load name for name. This module returns the pooled embedding; the classifier lives
//! in `models::Net`.

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use super::layers::{make_divisible, stochastic_depth, Act, ConvBnAct, ConvOpts, SqueezeExcite};
use crate::arch::EfficientNetSpec;

/// One stage of the B0 baseline: expand ratio, kernel, stride, in and out channels, layers.
struct Stage {
    expand: f64,
    kernel: i64,
    stride: i64,
    c_in: i64,
    c_out: i64,
    layers: usize,
}

/// EfficientNet-B0's stages (table 1 of the paper).
const B0_STAGES: [(f64, i64, i64, i64, i64, usize); 7] = [
    (1.0, 3, 1, 32, 16, 1),
    (6.0, 3, 2, 16, 24, 2),
    (6.0, 5, 2, 24, 40, 2),
    (6.0, 3, 2, 40, 80, 3),
    (6.0, 5, 1, 80, 112, 3),
    (6.0, 5, 2, 112, 192, 4),
    (6.0, 3, 1, 192, 320, 1),
];

fn stages(width: f64, depth: f64) -> Vec<Stage> {
    B0_STAGES
        .iter()
        .map(|&(expand, kernel, stride, c_in, c_out, layers)| Stage {
            expand,
            kernel,
            stride,
            c_in: make_divisible(c_in as f64 * width, 8),
            c_out: make_divisible(c_out as f64 * width, 8),
            layers: (layers as f64 * depth).ceil() as usize,
        })
        .collect()
}

/// Inverted-residual block: 1×1 expand (skipped when the ratio is 1), depthwise k×k, SE,
/// 1×1 project; residual with stochastic depth when shape allows.
#[derive(Debug)]
struct MbConv {
    expand: Option<ConvBnAct>,
    depthwise: ConvBnAct,
    se: SqueezeExcite,
    project: ConvBnAct,
    residual: bool,
    drop: f64,
}

impl MbConv {
    fn new(
        p: &nn::Path,
        c_in: i64,
        c_out: i64,
        expand: f64,
        kernel: i64,
        stride: i64,
        drop: f64,
    ) -> MbConv {
        let p = p / "block";
        let hidden = make_divisible(c_in as f64 * expand, 8);
        let mut i = 0;
        let expand = (hidden != c_in).then(|| {
            i += 1;
            ConvBnAct::new(
                &(&p / 0),
                c_in,
                hidden,
                ConvOpts {
                    kernel: 1,
                    stride: 1,
                    groups: 1,
                    act: Act::Silu,
                },
            )
        });
        let depthwise = ConvBnAct::new(
            &(&p / i),
            hidden,
            hidden,
            ConvOpts {
                kernel,
                stride,
                groups: hidden,
                act: Act::Silu,
            },
        );
        let se = SqueezeExcite::new(&(&p / (i + 1)), hidden, i64::max(1, c_in / 4), Act::Silu);
        let project = ConvBnAct::new(
            &(&p / (i + 2)),
            hidden,
            c_out,
            ConvOpts {
                kernel: 1,
                stride: 1,
                groups: 1,
                act: Act::None,
            },
        );
        MbConv {
            expand,
            depthwise,
            se,
            project,
            residual: stride == 1 && c_in == c_out,
            drop,
        }
    }
}

impl ModuleT for MbConv {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let ys = match &self.expand {
            Some(e) => xs.apply_t(e, train),
            None => xs.shallow_clone(),
        };
        let ys = ys
            .apply_t(&self.depthwise, train)
            .apply_t(&self.se, train)
            .apply_t(&self.project, train);
        if self.residual {
            stochastic_depth(ys, self.drop, train) + xs
        } else {
            ys
        }
    }
}

/// The EfficientNet trunk: stem, MBConv stages, 1×1 head conv, global average pool.
#[derive(Debug)]
pub struct EfficientNet {
    stem: ConvBnAct,
    blocks: Vec<MbConv>,
    head: ConvBnAct,
    out_channels: i64,
}

impl EfficientNet {
    /// Builds the trunk under `p` (`p / "features"`).
    pub fn new(p: &nn::Path, spec: &EfficientNetSpec) -> EfficientNet {
        let f = p / "features";
        let stages = stages(spec.width, spec.depth);
        let total: usize = stages.iter().map(|s| s.layers).sum();
        let stem_c = stages[0].c_in;
        let stem = ConvBnAct::new(
            &(&f / 0),
            3,
            stem_c,
            ConvOpts {
                kernel: 3,
                stride: 2,
                groups: 1,
                act: Act::Silu,
            },
        );
        let mut blocks = Vec::with_capacity(total);
        for (s, st) in stages.iter().enumerate() {
            for r in 0..st.layers {
                let (c_in, stride) = if r == 0 {
                    (st.c_in, st.stride)
                } else {
                    (st.c_out, 1)
                };
                // Drop probability grows linearly with the block's position in the network.
                let drop = spec.stochastic_depth * blocks.len() as f64 / total as f64;
                blocks.push(MbConv::new(
                    &(&f / (s + 1) / r),
                    c_in,
                    st.c_out,
                    st.expand,
                    st.kernel,
                    stride,
                    drop,
                ));
            }
        }
        let last = stages.last().map_or(stem_c, |s| s.c_out);
        let out_channels = 4 * last;
        let head = ConvBnAct::new(
            &(&f / (stages.len() + 1)),
            last,
            out_channels,
            ConvOpts {
                kernel: 1,
                stride: 1,
                groups: 1,
                act: Act::Silu,
            },
        );
        EfficientNet {
            stem,
            blocks,
            head,
            out_channels,
        }
    }

    /// Width of the pooled embedding.
    pub fn out_channels(&self) -> i64 {
        self.out_channels
    }

    /// Pooled embedding, `[N, out_channels]`.
    pub fn embed(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut xs = xs.apply_t(&self.stem, train);
        for b in &self.blocks {
            xs = xs.apply_t(b, train);
        }
        xs.apply_t(&self.head, train)
            .mean_dim(&[2i64, 3][..], false, None::<Kind>)
    }
}
