//! The training data pipeline (issue 4, item 5) on a real image cache of generated images: every
//! requested example arrives exactly once in batch order, augmented batches do not depend on the
//! thread count but do on the epoch, dropping a loader mid-epoch neither hangs nor leaks its
//! threads, bad input is refused up front, and `to_device` normalises into the asked layout.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use stackhive_data::cache::{build_cache, list_images, ImageCache};
use stackhive_data::synth::{generate, SynthConfig};
use stackhive_spec::cnn::AugmentSpec;
use stackhive_trainer::data::Examples;
use stackhive_trainer::loader::{HostBatch, Loader, LoaderConfig, LoaderError};
use stackhive_trainer::meta::META_DIM;
use tch::{Device, Kind, Tensor};

const SIZE: u32 = 24;

struct Fixture {
    _dir: tempfile::TempDir,
    cache: Arc<ImageCache>,
    examples: Arc<Examples>,
}

/// About 50 generated images cached at 24×24; example `i` is image `len − 1 − i`, with label
/// `i % 2` and metadata starting with `i`, so any mix-up shows.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let cfg = SynthConfig {
        patients: 4,
        test_patients: 0,
        image_size: 32,
        seed: 5,
        ..SynthConfig::default()
    };
    generate(&cfg, &root).unwrap();
    let path = dir.path().join("cache.shvc");
    build_cache(
        &list_images(&root.join("images")).unwrap(),
        SIZE,
        &path,
        false,
    )
    .unwrap();
    let cache = ImageCache::open(&path).unwrap();
    let n = cache.len();
    assert!(n >= 30, "expected a few dozen images, found {n}");
    let examples = Examples {
        images: (0..n).rev().collect(),
        labels: (0..n).map(|i| (i % 2) as u8).collect(),
        meta: (0..n)
            .map(|i| {
                let mut m = [0.5; META_DIM];
                m[0] = i as f32;
                m
            })
            .collect(),
    };
    Fixture {
        _dir: dir,
        cache: Arc::new(cache),
        examples: Arc::new(examples),
    }
}

/// A shuffled epoch in batches of `batch` (the last one short).
fn batches(n: usize, batch: usize, seed: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed as u64));
    order.chunks(batch).map(<[usize]>::to_vec).collect()
}

fn config(augment: Option<AugmentSpec>, threads: usize, epoch: u64) -> LoaderConfig {
    LoaderConfig {
        augment,
        seed: 11,
        epoch,
        threads,
        prefetch: 1,
    }
}

fn heavy() -> AugmentSpec {
    AugmentSpec {
        rot90: true,
        rotate: 30.0,
        shear: 10.0,
        stretch: 0.1,
        cutout_holes: 4,
        cutout_size: 0.1,
        brightness: 0.2,
        contrast: 0.2,
        hue: 0.05,
        vignette: 0.3,
        ..AugmentSpec::default()
    }
}

fn collect(fx: &Fixture, batches: &[Vec<usize>], cfg: &LoaderConfig) -> Vec<HostBatch> {
    Loader::new(fx.cache.clone(), fx.examples.clone(), batches.to_vec(), cfg)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn the_loader_returns_every_example_once_in_batch_order() {
    let fx = fixture();
    let n = fx.examples.len();
    let plan = batches(n, 8, 3);
    let got = collect(&fx, &plan, &config(None, 3, 0));
    assert_eq!(got.len(), plan.len());
    let img = fx.cache.image_len();
    let mut seen = vec![0; n];
    for (b, (hb, idx)) in got.iter().zip(&plan).enumerate() {
        assert_eq!((hb.index, hb.len, hb.size), (b, idx.len(), SIZE as usize));
        assert_eq!(hb.pixels.len(), idx.len() * img);
        for (j, &i) in idx.iter().enumerate() {
            seen[i] += 1;
            let image = fx.examples.images[i];
            assert_eq!(&hb.pixels[j * img..(j + 1) * img], fx.cache.image(image));
            assert_eq!(hb.meta[j * META_DIM], i as f32);
            assert_eq!(hb.labels[j], (i % 2) as f32);
        }
    }
    assert!(seen.iter().all(|&c| c == 1), "counts per example: {seen:?}");

    // Unlabelled examples give empty labels; the scoped loader borrows instead of sharing.
    let test = Examples {
        labels: Vec::new(),
        ..(*fx.examples).clone()
    };
    let scoped: Vec<HostBatch> = std::thread::scope(|s| {
        Loader::scoped(s, &fx.cache, &test, plan.clone(), &config(None, 2, 0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    });
    for (a, b) in scoped.iter().zip(&got) {
        assert!(a.labels.is_empty());
        assert_eq!((&a.pixels, &a.meta), (&b.pixels, &b.meta));
    }
}

#[test]
fn augmented_batches_depend_on_seed_and_epoch_not_on_threads() {
    let fx = fixture();
    let plan = batches(fx.examples.len(), 5, 1);
    let one = collect(&fx, &plan, &config(Some(heavy()), 1, 4));
    let two = collect(&fx, &plan, &config(Some(heavy()), 2, 4));
    let four = collect(&fx, &plan, &config(Some(heavy()), 4, 4));
    assert!(
        one == two && two == four,
        "thread count changed the batches"
    );
    let plain = collect(&fx, &plan, &config(None, 2, 4));
    assert!(one.iter().zip(&plain).all(|(a, p)| a.pixels != p.pixels));
    let next = collect(&fx, &plan, &config(Some(heavy()), 2, 5));
    let changed = one
        .iter()
        .zip(&next)
        .flat_map(|(a, b)| {
            let len = fx.cache.image_len();
            a.pixels
                .chunks(len)
                .zip(b.pixels.chunks(len))
                .map(|(x, y)| x != y)
        })
        .filter(|&c| c)
        .count();
    assert_eq!(
        changed,
        fx.examples.len(),
        "another epoch reused some augmentations"
    );
    // Labels and metadata are never augmented.
    assert!(one
        .iter()
        .zip(&next)
        .all(|(a, b)| a.meta == b.meta && a.labels == b.labels));
}

#[test]
fn dropping_a_loader_mid_epoch_stops_its_threads() {
    let fx = fixture();
    // A long epoch: 400 batches, so finishing it would take far longer than stopping.
    let plan: Vec<Vec<usize>> = (0..400)
        .map(|b| batches(fx.examples.len(), 16, b)[0].clone())
        .collect();
    let (tx, rx) = mpsc::channel();
    let (cache, examples) = (fx.cache.clone(), fx.examples.clone());
    std::thread::spawn(move || {
        let mut loader = Loader::new(cache, examples, plan, &config(Some(heavy()), 2, 0)).unwrap();
        let first = loader.next().unwrap().unwrap();
        // Let both workers fill their channels and block on sending, the case a drop must
        // also wake them from.
        std::thread::sleep(Duration::from_millis(300));
        drop(loader);
        tx.send(first.index).unwrap();
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("dropping the loader hung");
    assert_eq!(first, 0);
    // The workers held clones of the cache and the examples: all released once joined.
    assert_eq!(
        Arc::strong_count(&fx.cache),
        1,
        "a loader thread outlived its loader"
    );
    assert_eq!(Arc::strong_count(&fx.examples), 1);
}

#[test]
fn bad_plans_are_refused_before_any_thread_starts() {
    let fx = fixture();
    let n = fx.examples.len();
    let start = |plan: Vec<Vec<usize>>, threads| {
        Loader::new(
            fx.cache.clone(),
            fx.examples.clone(),
            plan,
            &config(None, threads, 0),
        )
        .map(|_| ())
    };
    let err = start(vec![vec![0, 1], vec![2, n]], 1).unwrap_err();
    assert!(
        matches!(err, LoaderError::ExampleOutOfRange { batch: 1, .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("batch 1 asks for example {n}, the split has {n} examples")
    );
    let err = start(vec![vec![0], vec![]], 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "batch 1 is empty; expected at least one example"
    );
    assert!(matches!(
        start(vec![vec![0]], 0),
        Err(LoaderError::NoThreads)
    ));
    let mut bad = (*fx.examples).clone();
    bad.images[3] = fx.cache.len();
    let err = Loader::new(
        fx.cache.clone(),
        Arc::new(bad),
        vec![vec![0]],
        &config(None, 1, 0),
    )
    .unwrap_err();
    assert!(
        matches!(err, LoaderError::ImageOutOfRange { example: 3, .. }),
        "{err}"
    );
    // An empty epoch is fine and yields nothing.
    assert!(start(Vec::new(), 2).is_ok());
}

#[test]
fn to_device_normalises_into_either_layout() {
    let fx = fixture();
    let plan = batches(fx.examples.len(), 4, 0);
    let hb = collect(&fx, &plan[..1], &config(None, 1, 0)).remove(0);
    let s = SIZE as i64;
    let plain = hb.to_device(Device::Cpu, false);
    let last = hb.to_device(Device::Cpu, true);
    assert_eq!(plain.images.size(), [4, 3, s, s]);
    assert!(plain.images.is_contiguous());
    // Channels-last: the NHWC storage under an NCHW shape.
    assert_eq!(last.images.size(), [4, 3, s, s]);
    assert_eq!(last.images.stride(), [s * s * 3, 1, s * 3, 3]);
    assert!(plain.images.equal(&last.images));
    // Pixel (image 1, row 2, column 5, channel g) by hand.
    let v = f32::from(hb.pixels[((s * s + 2 * s + 5) * 3 + 1) as usize]);
    let expect = (v / 255.0 - 0.456) / 0.224;
    let got = plain.images.double_value(&[1, 1, 2, 5]) as f32;
    assert!((got - expect).abs() < 1e-5, "{got} vs {expect}");
    assert_eq!(plain.meta.size(), [4, META_DIM as i64]);
    let labels = plain.labels.unwrap();
    assert_eq!(labels.kind(), Kind::Float);
    assert!(labels.equal(&Tensor::from_slice(&hb.labels)));
}
