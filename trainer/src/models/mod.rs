//! The networks a `cnn` job trains: an image trunk (EfficientNet or the residual family), an optional
//! metadata head whose embedding is concatenated to the pooled image embedding (as the top ISIC
//! 2020 solutions did), and a one-logit classifier for the binary target. Variables live in the
//! caller's `VarStore` under torchvision-compatible names; the classifier is `classifier.1` for
//! EfficientNet and `fc` for ResNet, the metadata head `meta.*`. No training logic here.

mod efficientnet;
mod layers;
mod resnet;

use tch::nn::{self, ModuleT};
use tch::Tensor;

pub use efficientnet::EfficientNet;
pub use resnet::{Layout as ResNetLayout, ResNet};

use crate::arch::Arch;
use crate::meta::META_DIM;

/// Widths of the metadata MLP's two layers.
const META_HIDDEN: i64 = 128;
const META_OUT: i64 = 32;
const META_DROPOUT: f64 = 0.3;

#[derive(Debug)]
enum Trunk {
    EfficientNet(Box<EfficientNet>),
    ResNet(Box<ResNet>),
}

/// Metadata MLP: linear, batch norm, SiLU, dropout, linear, batch norm, SiLU — stored as
/// `meta.0`, `meta.1`, `meta.4`, `meta.5` (the indices of that `nn.Sequential`).
#[derive(Debug)]
struct MetaHead {
    fc1: nn::Linear,
    bn1: nn::BatchNorm,
    fc2: nn::Linear,
    bn2: nn::BatchNorm,
}

impl MetaHead {
    fn new(p: &nn::Path) -> MetaHead {
        MetaHead {
            fc1: linear(&(p / 0), META_DIM as i64, META_HIDDEN),
            bn1: nn::batch_norm1d(p / 1, META_HIDDEN, Default::default()),
            fc2: linear(&(p / 4), META_HIDDEN, META_OUT),
            bn2: nn::batch_norm1d(p / 5, META_OUT, Default::default()),
        }
    }

    fn forward_t(&self, meta: &Tensor, train: bool) -> Tensor {
        meta.apply(&self.fc1)
            .apply_t(&self.bn1, train)
            .silu()
            .dropout(META_DROPOUT, train)
            .apply(&self.fc2)
            .apply_t(&self.bn2, train)
            .silu()
    }
}

/// PyTorch's `nn.Linear` default: weights and bias uniform in ±1/√fan_in. (torchvision's
/// EfficientNet uses ±1/√fan_out, which for a single logit gives initial logits of several
/// units and slows the first epochs.)
fn linear(p: &nn::Path, c_in: i64, c_out: i64) -> nn::Linear {
    let bound = 1.0 / (c_in as f64).sqrt();
    let init = nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    nn::linear(
        p,
        c_in,
        c_out,
        nn::LinearConfig {
            ws_init: init,
            bs_init: Some(init),
            bias: true,
        },
    )
}

/// A binary classifier: image trunk, optional metadata head, dropout, one logit.
#[derive(Debug)]
pub struct Net {
    trunk: Trunk,
    meta: Option<MetaHead>,
    dropout: f64,
    classifier: nn::Linear,
}

impl Net {
    /// Builds the network's variables under `p`. With `metadata`, `forward_t` needs the
    /// `[N, META_DIM]` features of `meta::encode`.
    pub fn new(p: &nn::Path, arch: &Arch, metadata: bool) -> Net {
        let (trunk, c, dropout, head) = match arch {
            Arch::EfficientNet(spec) => {
                let t = EfficientNet::new(p, spec);
                let c = t.out_channels();
                (
                    Trunk::EfficientNet(Box::new(t)),
                    c,
                    spec.dropout,
                    p / "classifier" / 1,
                )
            }
            Arch::ResNet(_) | Arch::ResNeXt50 { .. } => {
                let layout = ResNetLayout::of(arch).expect("a residual architecture");
                let t = ResNet::new(p, &layout);
                let c = t.out_channels();
                (Trunk::ResNet(Box::new(t)), c, 0.0, p / "fc")
            }
        };
        let meta = metadata.then(|| MetaHead::new(&(p / "meta")));
        let c_in = c + if metadata { META_OUT } else { 0 };
        Net {
            trunk,
            meta,
            dropout,
            classifier: linear(&head, c_in, 1),
        }
    }

    pub fn has_metadata(&self) -> bool {
        self.meta.is_some()
    }

    /// Pooled image embedding, `[N, C]`.
    pub fn embed(&self, images: &Tensor, train: bool) -> Tensor {
        match &self.trunk {
            Trunk::EfficientNet(t) => t.embed(images, train),
            Trunk::ResNet(t) => t.embed(images, train),
        }
    }

    /// Logits, `[N]`, for normalised `[N, 3, H, W]` images (and `[N, META_DIM]` metadata when
    /// the network has a metadata head).
    ///
    /// # Panics
    /// When the network has a metadata head and `meta` is `None`: a caller bug, never data.
    pub fn forward_t(&self, images: &Tensor, meta: Option<&Tensor>, train: bool) -> Tensor {
        let mut x = self.embed(images, train);
        if let Some(head) = &self.meta {
            let m = meta.expect("a network with a metadata head needs the metadata tensor");
            x = Tensor::cat(&[x, head.forward_t(m, train)], 1);
        }
        x.dropout(self.dropout, train)
            .apply(&self.classifier)
            .squeeze_dim(1)
    }
}

impl ModuleT for Net {
    /// Image-only forward (benchmarks and networks without a metadata head).
    fn forward_t(&self, images: &Tensor, train: bool) -> Tensor {
        Net::forward_t(self, images, None, train)
    }
}
