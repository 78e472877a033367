//! Building blocks shared by the networks: convolution + batch norm + activation with
//! symmetric "same" padding folded into the convolution (no separate padding layer: one kernel
//! launch per conv, as torchvision does), squeeze-and-excitation, and stochastic depth. Variable
//! names follow torchvision's module layout, so its weights map onto ours name for name.

use tch::nn::{self, init, ModuleT};
use tch::{Kind, Tensor};

/// torchvision initialises convolutions with Kaiming normal in fan-out mode.
pub(crate) const CONV_INIT: nn::Init = nn::Init::Kaiming {
    dist: init::NormalOrUniform::Normal,
    fan: init::FanInOut::FanOut,
    non_linearity: init::NonLinearity::ReLU,
};

/// Activation after a conv + batch norm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    None,
    Relu,
    Silu,
}

impl Act {
    pub(crate) fn apply(self, xs: Tensor) -> Tensor {
        match self {
            Act::None => xs,
            Act::Relu => xs.relu(),
            Act::Silu => xs.silu(),
        }
    }
}

/// A bias-free conv, batch norm and activation, stored as `{path}.0` (conv) and `{path}.1`
/// (norm), like torchvision's `Conv2dNormActivation`.
#[derive(Debug)]
pub(crate) struct ConvBnAct {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    act: Act,
}

/// Options for [`ConvBnAct::new`]; `groups == in` makes a depthwise conv.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvOpts {
    pub kernel: i64,
    pub stride: i64,
    pub groups: i64,
    pub act: Act,
}

impl ConvBnAct {
    pub(crate) fn new(p: &nn::Path, c_in: i64, c_out: i64, o: ConvOpts) -> ConvBnAct {
        let conv = conv(&(p / 0), c_in, c_out, o.kernel, o.stride, o.groups);
        let bn = batch_norm(&(p / 1), c_out);
        ConvBnAct {
            conv,
            bn,
            act: o.act,
        }
    }
}

impl ModuleT for ConvBnAct {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.act
            .apply(xs.apply(&self.conv).apply_t(&self.bn, train))
    }
}

/// A bias-free conv with padding `(k - 1) / 2`: the output side is `ceil(in / stride)` for the
/// sizes `Arch::check_image_size` admits, like TensorFlow's "same" but symmetric.
pub(crate) fn conv(
    p: &nn::Path,
    c_in: i64,
    c_out: i64,
    kernel: i64,
    stride: i64,
    groups: i64,
) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding: (kernel - 1) / 2,
        groups,
        bias: false,
        ws_init: CONV_INIT,
        ..Default::default()
    };
    nn::conv2d(p, c_in, c_out, kernel, cfg)
}

/// PyTorch's defaults (eps 1e-5, momentum 0.1): a short fine-tune needs running statistics that
/// catch up within an epoch.
pub(crate) fn batch_norm(p: &nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, Default::default())
}

/// Squeeze-and-excitation (Hu et al. 2018): global pool, 1×1 conv down, `act` (SiLU in
/// EfficientNet, ReLU in SE-ResNeXt), 1×1 conv up, sigmoid gate. Stored as `{path}.fc1` and
/// `{path}.fc2`, as torchvision's and timm's modules are.
#[derive(Debug)]
pub(crate) struct SqueezeExcite {
    fc1: nn::Conv2D,
    fc2: nn::Conv2D,
    act: Act,
}

impl SqueezeExcite {
    pub(crate) fn new(p: &nn::Path, channels: i64, squeeze: i64, act: Act) -> SqueezeExcite {
        let cfg = nn::ConvConfig {
            ws_init: CONV_INIT,
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        SqueezeExcite {
            fc1: nn::conv2d(p / "fc1", channels, squeeze, 1, cfg),
            fc2: nn::conv2d(p / "fc2", squeeze, channels, 1, cfg),
            act,
        }
    }
}

impl ModuleT for SqueezeExcite {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let squeezed = xs
            .mean_dim(&[2i64, 3][..], true, None::<Kind>)
            .apply(&self.fc1);
        let scale = self.act.apply(squeezed).apply(&self.fc2).sigmoid();
        xs * scale
    }
}

/// Stochastic depth (Huang et al. 2016), torchvision's "row" mode: in training, drop the
/// residual branch of each sample with probability `p` and scale survivors by `1 / (1 - p)`.
pub(crate) fn stochastic_depth(branch: Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return branch;
    }
    let keep = 1.0 - p;
    let n = branch.size()[0];
    let mask = Tensor::empty([n, 1, 1, 1], (branch.kind(), branch.device())).bernoulli_float_(keep);
    branch * (mask / keep)
}

/// torchvision's `_make_divisible`: round channels to a multiple of `divisor`, never going
/// below 90% of `v`.
pub(crate) fn make_divisible(v: f64, divisor: i64) -> i64 {
    let rounded = i64::max(
        divisor,
        (v + divisor as f64 / 2.0) as i64 / divisor * divisor,
    );
    if (rounded as f64) < 0.9 * v {
        rounded + divisor
    } else {
        rounded
    }
}

#[cfg(test)]
mod tests {
    use super::make_divisible;

    #[test]
    fn channel_rounding_matches_torchvision() {
        assert_eq!(make_divisible(32.0 * 1.1, 8), 32);
        assert_eq!(make_divisible(40.0 * 1.1, 8), 48);
        assert_eq!(make_divisible(24.0 * 1.2, 8), 32);
        assert_eq!(make_divisible(3.0, 8), 8);
    }
}
