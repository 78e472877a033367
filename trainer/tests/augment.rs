//! Augmentation (issue 4, item 5) as a user would check it: transforms that must be exact are
//! exact, the others do what they claim and stay in range, mixup and cutmix give the right
//! convex combinations, and the test-time views are the eight symmetries of the square.

use stackhive_spec::cnn::AugmentSpec;
use stackhive_trainer::augment::geometry::{self, Dihedral};
use stackhive_trainer::augment::{image_rng, Augmenter, Jitter, Params, FILL};
use stackhive_trainer::data::Batch;
use stackhive_trainer::mix::{apply_mix, Mix, MixKind, Mixer};
use stackhive_trainer::tta::{tta_average, tta_inverse, tta_view, DISTINCT_VIEWS};
use tch::{Kind, Tensor};

/// Pixel `(x, y)` of a `size`-sided image whose every pixel differs: `(x, y, x ^ y)`.
fn coded(size: usize) -> Vec<u8> {
    let mut img = Vec::with_capacity(size * size * 3);
    for y in 0..size {
        for x in 0..size {
            img.extend_from_slice(&[x as u8, y as u8, (x ^ y) as u8]);
        }
    }
    img
}

/// A smooth image (so bilinear sampling has little to disagree about).
fn smooth(size: usize) -> Vec<u8> {
    let mut img = Vec::with_capacity(size * size * 3);
    for y in 0..size {
        for x in 0..size {
            let (u, v) = (x as f64 / size as f64, y as f64 / size as f64);
            img.push((40.0 + 160.0 * u) as u8);
            img.push((30.0 + 180.0 * v) as u8);
            img.push((120.0 + 100.0 * (u * v)) as u8);
        }
    }
    img
}

fn px(img: &[u8], size: usize, x: usize, y: usize) -> [u8; 3] {
    let i = (y * size + x) * 3;
    [img[i], img[i + 1], img[i + 2]]
}

fn run(spec: &AugmentSpec, src: &[u8], size: usize, seed: u64) -> Vec<u8> {
    let mut dst = vec![0; src.len()];
    Augmenter::new(spec, size).apply(src, &mut dst, &mut image_rng(seed, 0, 0));
    dst
}

#[test]
fn the_identity_spec_leaves_images_byte_identical() {
    let src = coded(37);
    let aug = Augmenter::new(&AugmentSpec::none(), 37);
    for seed in 0..20 {
        assert_eq!(
            aug.sample(&mut image_rng(seed, 3, seed)),
            Params::identity()
        );
        assert_eq!(run(&AugmentSpec::none(), &src, 37, seed), src);
    }
}

/// Where output pixel `(x, y)` comes from, given the last index.
type SourceOf = fn(usize, usize, usize) -> (usize, usize);

#[test]
fn flips_and_quarter_turns_are_exact_permutations() {
    for size in [6, 7] {
        let src = coded(size);
        let mut out = vec![0; src.len()];
        let last = size - 1;
        let cases: [(Dihedral, SourceOf); 3] = [
            (Dihedral::HFLIP, |x, y, l| (l - x, y)),
            (Dihedral::VFLIP, |x, y, l| (x, l - y)),
            // A quarter turn: output (x, y) comes from source column y, row last − x.
            (Dihedral::ROT90, |x, y, l| (y, l - x)),
        ];
        for (d, from) in cases {
            geometry::dihedral(&src, &mut out, size, d);
            for y in 0..size {
                for x in 0..size {
                    let (sx, sy) = from(x, y, last);
                    assert_eq!(
                        px(&out, size, x, y),
                        px(&src, size, sx, sy),
                        "{d:?} at {x},{y}"
                    );
                }
            }
        }
        // Through the spec: with flips and quarter turns on, every output is one of the eight
        // symmetries, a permutation of the same pixels, and all eight occur.
        let spec = AugmentSpec {
            rot90: true,
            ..AugmentSpec::default()
        };
        let mut seen = Vec::new();
        let mut sorted_src = src.chunks(3).collect::<Vec<_>>();
        sorted_src.sort();
        for seed in 0..200 {
            let out = run(&spec, &src, size, seed);
            let mut sorted = out.chunks(3).collect::<Vec<_>>();
            sorted.sort();
            assert_eq!(sorted, sorted_src);
            if !seen.contains(&out) {
                seen.push(out);
            }
        }
        assert_eq!(seen.len(), 8);
    }
}

#[test]
fn a_ninety_degree_rotation_matches_the_exact_quarter_turn() {
    for size in [31, 32] {
        let src = smooth(size);
        let mut exact = vec![0; src.len()];
        geometry::dihedral(&src, &mut exact, size, Dihedral::ROT90);
        let mut warped = vec![0; src.len()];
        geometry::warp(&src, &mut warped, size, &geometry::rotation(90.0));
        let worst = exact
            .iter()
            .zip(&warped)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(worst <= 1, "warped quarter turn differs by up to {worst}");
        // The same through sampled parameters: a 90° rotate takes the warp path.
        let p = Params {
            rotate: 90.0,
            ..Params::identity()
        };
        assert!(p.needs_warp());
        let mut via = vec![0; src.len()];
        p.apply(&src, &mut via, size);
        assert!(via.iter().zip(&exact).all(|(a, b)| a.abs_diff(*b) <= 1));
        // A small rotation is a real resampling: neither the source nor a copy of it.
        geometry::warp(&src, &mut warped, size, &geometry::rotation(10.0));
        assert_ne!(warped, src);
        let centre = px(&warped, size, size / 2, size / 2);
        let expect = px(&src, size, size / 2, size / 2);
        assert!(centre.iter().zip(expect).all(|(a, b)| a.abs_diff(b) <= 3));
    }
}

#[test]
fn cutout_fills_the_expected_area_with_the_mean_colour() {
    let size = 64;
    let src: Vec<u8> = [10u8, 20, 30].repeat(size * size);
    let filled = |img: &[u8]| img.chunks(3).filter(|p| *p == FILL).count();
    let one = AugmentSpec {
        cutout_holes: 1,
        cutout_size: 0.25,
        ..AugmentSpec::none()
    };
    for seed in 0..20 {
        assert_eq!(filled(&run(&one, &src, size, seed)), 16 * 16, "seed {seed}");
    }
    let three = AugmentSpec {
        cutout_holes: 3,
        ..one
    };
    let areas: Vec<usize> = (0..50)
        .map(|s| filled(&run(&three, &src, size, s)))
        .collect();
    assert!(areas.iter().all(|&a| (256..=768).contains(&a)), "{areas:?}");
    assert!(
        areas.contains(&768),
        "three holes never landed apart: {areas:?}"
    );
}

#[test]
fn the_vignette_darkens_corners_but_not_the_centre() {
    let size = 48;
    let src: Vec<u8> = [200u8, 150, 100].repeat(size * size);
    let spec = AugmentSpec {
        vignette: 1.0,
        ..AugmentSpec::none()
    };
    for seed in 0..20 {
        let out = run(&spec, &src, size, seed);
        for (x, y) in [(0, 0), (size - 1, 0), (0, size - 1), (size - 1, size - 1)] {
            assert_eq!(
                px(&out, size, x, y),
                [0, 0, 0],
                "corner {x},{y}, seed {seed}"
            );
        }
        // Everything within 0.4 of the side from the centre is untouched.
        let c = (size as f64 - 1.0) / 2.0;
        for y in 0..size {
            for x in 0..size {
                if ((x as f64 - c).powi(2) + (y as f64 - c).powi(2)).sqrt() < 0.4 * size as f64 {
                    assert_eq!(px(&out, size, x, y), [200, 150, 100]);
                }
            }
        }
    }
    // Probability 0 never darkens.
    let off = AugmentSpec {
        vignette: 0.0,
        ..spec
    };
    assert_eq!(run(&off, &src, size, 1), src);
}

#[test]
fn colour_jitter_changes_the_image_and_saturates_instead_of_wrapping() {
    let size = 16;
    let src = smooth(size);
    let apply = |j: Jitter| {
        let p = Params {
            jitter: Some(j),
            ..Params::identity()
        };
        let mut out = vec![0; src.len()];
        p.apply(&src, &mut out, size);
        out
    };
    // Brightness ×1.5: exact, clamped at 255.
    let bright = apply(Jitter {
        brightness: 1.5,
        contrast: 1.0,
        hue: 0.0,
    });
    for (a, b) in src.iter().zip(&bright) {
        assert_eq!(*b, (f64::from(*a) * 1.5).round().min(255.0) as u8);
    }
    assert!(bright.contains(&255));
    // Contrast ×0.5 halves the spread about the mean.
    let spread = |img: &[u8]| {
        let (lo, hi) = (img.iter().min().unwrap(), img.iter().max().unwrap());
        f64::from(hi - lo)
    };
    let flat = apply(Jitter {
        brightness: 1.0,
        contrast: 0.5,
        hue: 0.0,
    });
    let ratio = spread(&flat) / spread(&src);
    assert!(
        (0.45..=0.55).contains(&ratio),
        "contrast 0.5 scaled the spread by {ratio}"
    );
    // Hue turns colours about the grey axis: greys stay, colours change, a full turn is a
    // no-op up to rounding.
    let hue = |img: &[u8], h: f64| {
        let mut out = img.to_vec();
        stackhive_trainer::augment::pixels::jitter(
            &mut out,
            Jitter {
                brightness: 1.0,
                contrast: 1.0,
                hue: h,
            },
        );
        out
    };
    let grey = [90u8, 90, 90, 200, 200, 200];
    assert!(hue(&grey, 0.3)
        .iter()
        .zip(grey)
        .all(|(a, b)| a.abs_diff(b) <= 1));
    let turned = hue(&src, 0.25);
    assert!(turned.iter().zip(&src).any(|(a, b)| a.abs_diff(*b) > 20));
    assert!(hue(&src, 1.0)
        .iter()
        .zip(&src)
        .all(|(a, b)| a.abs_diff(*b) <= 2));
    // Through the spec, at the largest settings: always a change, never a panic.
    let spec = AugmentSpec {
        brightness: 1.0,
        contrast: 1.0,
        hue: 0.5,
        ..AugmentSpec::none()
    };
    for seed in 0..20 {
        assert_ne!(run(&spec, &src, size, seed), src);
    }
}

#[test]
fn the_full_augmentation_depends_on_the_stream_only() {
    let size = 40;
    let src = smooth(size);
    let spec = heavy();
    let aug = Augmenter::new(&spec, size);
    let go = |seed, epoch, pos| {
        let mut out = vec![0; src.len()];
        aug.apply(&src, &mut out, &mut image_rng(seed, epoch, pos));
        out
    };
    assert_eq!(go(1, 2, 3), go(1, 2, 3));
    assert_ne!(go(1, 2, 3), go(1, 3, 3));
    assert_ne!(go(1, 2, 3), go(1, 2, 4));
    assert_ne!(go(1, 2, 3), go(2, 2, 3));
}

fn heavy() -> AugmentSpec {
    AugmentSpec {
        rot90: true,
        ..AugmentSpec::heavy()
    }
}

fn batch(n: i64, size: i64) -> Batch {
    tch::manual_seed(3);
    Batch {
        images: Tensor::rand([n, 3, size, size], (Kind::Float, tch::Device::Cpu)),
        meta: Tensor::rand([n, 4], (Kind::Float, tch::Device::Cpu)),
        labels: Some(Tensor::from_slice(
            &(0..n).map(|i| (i % 2) as f32).collect::<Vec<_>>(),
        )),
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

#[test]
fn mixup_mixes_images_labels_and_metadata_by_lambda() {
    let before = batch(6, 8);
    let mut b = batch(6, 8);
    let spec = AugmentSpec {
        mixup: 0.4,
        mix_prob: 1.0,
        ..AugmentSpec::none()
    };
    let mixer = Mixer::from_spec(&spec, 9).unwrap().unwrap();
    let mix = mixer
        .apply(&mut b, 0, 0)
        .unwrap()
        .expect("mix_prob 1 always mixes");
    assert_eq!(mix.kind, MixKind::Mixup);
    let l = mix.lambda;
    assert!((0.0..=1.0).contains(&l));
    let perm = Tensor::from_slice(&mix.partner);
    for (new, old) in [
        (&b.images, &before.images),
        (&b.meta, &before.meta),
        (b.labels.as_ref().unwrap(), before.labels.as_ref().unwrap()),
    ] {
        let expect = old * l + old.index_select(0, &perm) * (1.0 - l);
        assert!(new.allclose(&expect, 1e-5, 1e-6, false));
    }
    let labels = values(b.labels.as_ref().unwrap());
    assert!(labels.iter().all(|v| (0.0..=1.0).contains(v)));
    // The same (seed, epoch, batch) mixes the same way; the permutation is a permutation.
    assert_eq!(mixer.sample(6, 8, 0, 0), Some(mix.clone()));
    let mut sorted = mix.partner.clone();
    sorted.sort();
    assert_eq!(sorted, (0..6).collect::<Vec<i64>>());
}

#[test]
fn cutmix_pastes_a_box_and_mixes_labels_by_its_area() {
    let before = batch(4, 16);
    // A fixed box first: 4×8 of 16×16 pasted, so λ = 1 − 32/256.
    let mix = Mix {
        kind: MixKind::Cutmix {
            y: 2,
            x: 5,
            h: 4,
            w: 8,
        },
        lambda: 1.0 - 32.0 / 256.0,
        partner: vec![1, 0, 3, 2],
    };
    let mut b = batch(4, 16);
    // Channels-last in, channels-last out.
    b.images = b
        .images
        .permute([0, 2, 3, 1])
        .contiguous()
        .permute([0, 3, 1, 2]);
    apply_mix(&mut b, &mix).unwrap();
    assert_eq!(
        b.images.stride()[1],
        1,
        "cutmix lost the channels-last layout"
    );
    let img = &b.images;
    let old = &before.images;
    let inside = img.narrow(2, 2, 4).narrow(3, 5, 8);
    let pasted = old
        .narrow(2, 2, 4)
        .narrow(3, 5, 8)
        .index_select(0, &Tensor::from_slice(&[1i64, 0, 3, 2]));
    assert!(inside.equal(&pasted));
    let outside = img.copy();
    let outside_old = old.copy();
    let _ = outside.narrow(2, 2, 4).narrow(3, 5, 8).fill_(0.0);
    let _ = outside_old.narrow(2, 2, 4).narrow(3, 5, 8).fill_(0.0);
    assert!(
        outside.equal(&outside_old),
        "cutmix touched pixels outside its box"
    );
    let labels = values(b.labels.as_ref().unwrap());
    let l = 1.0 - 32.0 / 256.0;
    // Labels alternate 0, 1, 0, 1 and partners swap neighbours.
    let expect: Vec<f32> = [0.0, 1.0, 0.0, 1.0]
        .iter()
        .map(|&y: &f64| (l * y + (1.0 - l) * (1.0 - y)) as f32)
        .collect();
    for (a, e) in labels.iter().zip(&expect) {
        assert!((a - e).abs() < 1e-6, "{labels:?} vs {expect:?}");
    }
    // Sampled boxes: λ is the share kept, by area, and labels stay in [0, 1].
    let spec = AugmentSpec {
        cutmix: 1.0,
        mix_prob: 1.0,
        ..AugmentSpec::none()
    };
    let mixer = Mixer::from_spec(&spec, 4).unwrap().unwrap();
    for i in 0..50 {
        let m = mixer.sample(4, 16, 2, i).unwrap();
        let MixKind::Cutmix { y, x, h, w } = m.kind else {
            panic!("expected cutmix, found {:?}", m.kind)
        };
        assert!(y >= 0 && x >= 0 && y + h <= 16 && x + w <= 16);
        assert!((m.lambda - (1.0 - (h * w) as f64 / 256.0)).abs() < 1e-12);
    }
}

#[test]
fn mix_probability_and_the_choice_between_mixup_and_cutmix() {
    let off = AugmentSpec::default();
    assert!(Mixer::from_spec(&off, 0).unwrap().is_none());
    let both = AugmentSpec {
        mixup: 0.2,
        cutmix: 1.0,
        mix_prob: 0.5,
        ..AugmentSpec::none()
    };
    let mixer = Mixer::from_spec(&both, 1).unwrap().unwrap();
    let mixes: Vec<Option<Mix>> = (0..1000).map(|i| mixer.sample(8, 32, 0, i)).collect();
    let mixed = mixes.iter().flatten().count();
    assert!(
        (400..=600).contains(&mixed),
        "mixed {mixed} of 1000 at mix_prob 0.5"
    );
    let cut = mixes
        .iter()
        .flatten()
        .filter(|m| matches!(m.kind, MixKind::Cutmix { .. }))
        .count();
    assert!(
        cut > mixed / 3 && cut < mixed * 2 / 3,
        "{cut} of {mixed} were cutmix"
    );
    let mut unlabelled = batch(2, 4);
    unlabelled.labels = None;
    assert!(mixer.apply(&mut unlabelled, 0, 0).is_err());
}

#[test]
fn tta_views_are_the_eight_invertible_symmetries() {
    tch::manual_seed(0);
    let x = Tensor::rand([2, 3, 5, 5], (Kind::Float, tch::Device::Cpu));
    assert!(tta_view(&x, 0).equal(&x));
    let views: Vec<Tensor> = (0..DISTINCT_VIEWS).map(|i| tta_view(&x, i)).collect();
    for i in 0..DISTINCT_VIEWS {
        assert!(
            tta_inverse(&views[i], i).equal(&x),
            "view {i} does not invert"
        );
        assert!(
            tta_view(&x, i + DISTINCT_VIEWS).equal(&views[i]),
            "views do not cycle"
        );
        for j in 0..i {
            assert!(!views[i].equal(&views[j]), "views {i} and {j} coincide");
        }
        // Each view only moves pixels: the same values, rearranged within each channel.
        let sorted = |t: &Tensor| t.flatten(2, -1).sort(-1, false).0;
        assert!(sorted(&views[i]).equal(&sorted(&x)));
    }
    // Averaging: 10 passes weight views 0 and 1 twice, the same as running all ten.
    let predict = |v: &Tensor| v.narrow(2, 0, 1).narrow(3, 0, 1).flatten(1, -1).sigmoid();
    let all: Vec<Tensor> = (0..10).map(|i| predict(&tta_view(&x, i))).collect();
    let manual = Tensor::stack(&all, 0).mean_dim(0, false, Kind::Float);
    let mut calls = 0;
    let avg = tta_average(&x, 10, |v| {
        calls += 1;
        predict(v)
    });
    assert_eq!(calls, 8);
    assert!(avg.allclose(&manual, 1e-6, 1e-7, false));
}
