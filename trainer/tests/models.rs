//! Architectures by name, the networks they build, and weights that fit across sizes (issue 4,
//! items 2, 3 and 8). CPU only, 32×32 images.

use stackhive_trainer::{load_fitting, Arch, Net};
use tch::nn::{self, OptimizerConfig, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

/// One libtorch thread: tests run in parallel on 2 cores and OpenMP threads spin-wait.
fn one_thread() {
    tch::set_num_threads(1);
}

#[test]
fn parses_names_and_explains_bad_ones() {
    for (name, canonical) in [
        ("efficientnet-b0", "efficientnet-b0"),
        ("EfficientNet_B3", "efficientnet-b3"),
        ("efficientnet-phi4", "efficientnet-phi4"),
        ("efficientnet-w0.25-d0.5", "efficientnet-w0.25-d0.5"),
        ("resnet50", "resnet50"),
        ("resnet-18", "resnet18"),
        ("ResNeXt50_32x4d", "resnext50-32x4d"),
        ("se_resnext50_32x4d", "seresnext50-32x4d"),
        ("seresnext50", "seresnext50-32x4d"),
    ] {
        assert_eq!(Arch::parse(name).unwrap().name(), canonical, "{name}");
    }
    let err = Arch::parse("effnet").unwrap_err().to_string();
    assert_eq!(
        err,
        "unknown architecture \"effnet\", expected efficientnet-b0..b7, efficientnet-phiN, efficientnet-wX-dY, resnet18/34/50, resnext50-32x4d or seresnext50-32x4d"
    );
    for bad in [
        "efficientnet-b8",
        "efficientnet-phi",
        "resnet101",
        "resnext50-32x8d",
        "",
    ] {
        assert!(
            matches!(
                Arch::parse(bad),
                Err(stackhive_spec::SpecError::UnknownArch { .. })
            ),
            "{bad}"
        );
    }
    let err = Arch::parse("efficientnet-phi40").unwrap_err().to_string();
    assert!(err.contains("between 0 and 16, found 40"), "{err}");

    let b0 = Arch::parse("efficientnet-b0").unwrap();
    for ok in [32, 224, 256, 2048] {
        b0.check_image_size(ok).unwrap();
    }
    let err = b0.check_image_size(100).unwrap_err().to_string();
    assert_eq!(
        err,
        "image size 100 does not fit efficientnet-b0: expected a multiple of 32 between 32 and 2048 (nearest: 96 or 128)"
    );
    for bad in [0, 16, 31, 4096] {
        let err = b0.check_image_size(bad).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("image size {bad} does not fit")),
            "{err}"
        );
    }
    // The compound rule gives an "L3"-like size beyond B7.
    let Arch::EfficientNet(l) = Arch::parse("efficientnet-phi9").unwrap() else {
        panic!("not an EfficientNet")
    };
    assert!(
        l.width > 2.0 && l.depth > 5.0 && l.resolution > 600,
        "{l:?}"
    );
}

fn param_count(vs: &VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

/// torchvision's published parameter counts (1,000 classes) and the embedding width: ours, with
/// one logit, must have exactly `count - 1000 (C + 1) + (C + 1)` — the same network. torchvision
/// has no SE-ResNeXt: its count is timm's `seresnext50_32x4d` (27.56 M), which is ResNeXt-50's
/// plus one gate per block, 2 C²/16 + C/16 + C for a block of C output channels.
const TORCHVISION: [(&str, i64, i64); 13] = [
    ("efficientnet-b0", 5_288_548, 1280),
    ("efficientnet-b1", 7_794_184, 1280),
    ("efficientnet-b2", 9_109_994, 1408),
    ("efficientnet-b3", 12_233_232, 1536),
    ("efficientnet-b4", 19_341_616, 1792),
    ("efficientnet-b5", 30_389_784, 2048),
    ("efficientnet-b6", 43_040_704, 2304),
    ("efficientnet-b7", 66_347_960, 2560),
    ("resnet18", 11_689_512, 512),
    ("resnet34", 21_797_672, 512),
    ("resnet50", 25_557_032, 2048),
    ("resnext50-32x4d", 25_028_904, 2048),
    ("seresnext50-32x4d", 27_559_896, 2048),
];

#[test]
fn every_size_builds_matches_torchvision_and_runs_at_32px() {
    one_thread();
    tch::manual_seed(0);
    let images = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    for (name, tv_params, c) in TORCHVISION {
        let arch = Arch::parse(name).unwrap();
        let vs = VarStore::new(Device::Cpu);
        let net = Net::new(&vs.root(), &arch, false);
        assert_eq!(
            param_count(&vs),
            tv_params - 999 * (c + 1),
            "{name} parameters"
        );
        for train in [false, true] {
            let out = net.forward_t(&images, None, train);
            assert_eq!(out.size(), [2], "{name} output shape");
            assert_eq!(
                out.isfinite().all().int64_value(&[]),
                1,
                "{name} outputs are finite"
            );
        }
    }
    // A compound size beyond the table and a metadata head build and run too.
    let vs = VarStore::new(Device::Cpu);
    let net = Net::new(
        &vs.root(),
        &Arch::parse("efficientnet-phi1.5").unwrap(),
        true,
    );
    let meta = Tensor::rand(
        [2, stackhive_trainer::meta::META_DIM as i64],
        (Kind::Float, Device::Cpu),
    );
    assert_eq!(net.forward_t(&images, Some(&meta), true).size(), [2]);
}

#[test]
fn b0_weights_seed_b2_which_still_trains() {
    one_thread();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("b0.ot");
    tch::manual_seed(1);
    let b0 = VarStore::new(Device::Cpu);
    let _ = Net::new(&b0.root(), &Arch::parse("efficientnet-b0").unwrap(), false);
    b0.save(&ckpt).unwrap();

    let b2_arch = Arch::parse("efficientnet-b2").unwrap();
    let exact = {
        let vs = VarStore::new(Device::Cpu);
        let _ = Net::new(&vs.root(), &b2_arch, false);
        load_fitting(&vs, &ckpt, false).unwrap()
    };
    assert!(
        exact.loaded.len() > 50 && exact.sliced.is_empty() && !exact.random.is_empty(),
        "{}",
        exact.summary()
    );

    let b2 = VarStore::new(Device::Cpu);
    let net = Net::new(&b2.root(), &b2_arch, false);
    let report = load_fitting(&b2, &ckpt, true).unwrap();
    eprintln!("B0 into B2: {}", report.summary());
    assert_eq!(
        report.loaded, exact.loaded,
        "slicing never changes what fits whole"
    );
    assert!(
        !report.sliced.is_empty() && !report.random.is_empty(),
        "{}",
        report.summary()
    );
    assert_eq!(
        report.loaded.len() + report.sliced.len() + report.random.len(),
        b2.variables().len()
    );
    // A whole tensor and a sliced one hold B0's values.
    let (src, dst) = (b0.variables(), b2.variables());
    let stem = "features.0.0.weight";
    assert!(report.loaded.iter().any(|n| n == stem));
    assert!(src[stem].equal(&dst[stem]));
    let s = &report.sliced[0];
    let mut a = src[&s.name].shallow_clone();
    let mut b = dst[&s.name].shallow_clone();
    for (d, (x, y)) in s.from.iter().zip(&s.to).enumerate() {
        a = a.narrow(d as i64, 0, *x.min(y));
        b = b.narrow(d as i64, 0, *x.min(y));
    }
    assert!(a.equal(&b), "{} holds B0's overlapping slice", s.name);

    // The seeded network still trains: one AdamW step changes the weights, the loss is finite.
    let mut opt = nn::AdamW::default().build(&b2, 1e-3).unwrap();
    let images = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    let labels = Tensor::from_slice(&[0.0f32, 1.0, 0.0, 1.0]);
    let before = dst[stem].copy();
    let loss = net
        .forward_t(&images, None, true)
        .binary_cross_entropy_with_logits::<Tensor>(&labels, None, None, Reduction::Mean);
    opt.backward_step(&loss);
    assert!(loss.double_value(&[]).is_finite());
    assert!(
        !before.equal(&b2.variables()[stem]),
        "the step changed the loaded weights"
    );

    // Weights that fit nothing are an error naming the model's tensor count.
    let resnet = VarStore::new(Device::Cpu);
    let _ = Net::new(&resnet.root(), &Arch::parse("resnet18").unwrap(), false);
    let n = resnet.variables().len();
    let err = load_fitting(&resnet, &ckpt, true).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "weights in {} fit none of the model's {n} tensors",
            ckpt.display()
        )
    );
}
