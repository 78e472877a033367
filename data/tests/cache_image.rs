//! The preprocessed image cache as a training job uses it: pixels identical to decoding the
//! JPEG directly, black dermatoscope corners cropped away, corrupt files refused with a clear
//! error (and rebuilt by `ensure_cache`), a failed build leaving nothing behind, and a second
//! `ensure_cache` reusing the file instead of rebuilding it.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use stackhive_data::cache::{
    build_cache, crop_box, decode, ensure_cache, list_images, preprocess, CacheError, ImageCache,
};
use stackhive_data::synth::{generate, SynthConfig};

fn dataset(dir: &Path) -> PathBuf {
    let root = dir.join("ds");
    let cfg = SynthConfig {
        patients: 8,
        test_patients: 2,
        image_size: 64,
        seed: 11,
        mean_images_per_patient: 4.0,
        ..SynthConfig::default()
    };
    generate(&cfg, &root).unwrap();
    root
}

fn luma(p: &Rgb<u8>) -> f32 {
    0.299 * f32::from(p.0[0]) + 0.587 * f32::from(p.0[1]) + 0.114 * f32::from(p.0[2])
}

#[test]
fn cache_round_trip_matches_a_direct_decode_crop_and_resize() {
    let dir = tempfile::tempdir().unwrap();
    let root = dataset(dir.path());
    let images = list_images(&root.join("images")).unwrap();
    let out = dir.path().join("c.shvc");
    let report = build_cache(&images, 40, &out, false).unwrap();
    assert_eq!(report.images, images.len());
    assert_eq!(report.bytes, std::fs::metadata(&out).unwrap().len());
    assert!(
        report.vignettes > 0,
        "the generator draws vignettes in a quarter of its images"
    );

    let cache = ImageCache::open(&out).unwrap();
    assert_eq!((cache.len(), cache.size()), (images.len(), 40));
    for (i, (name, path)) in images.iter().enumerate() {
        let (expected, _) = preprocess(&decode(name, path).unwrap(), 40);
        assert_eq!(
            cache.image(i),
            expected.as_raw().as_slice(),
            "pixels of {name} differ"
        );
        assert_eq!(cache.index_of(name), Some(i));
        assert_eq!(cache.names()[i], *name);
    }
    assert_eq!(cache.index_of("ISIC_missing"), None);
}

/// A skin-coloured field seen through a circular dermatoscope: black outside the circle.
fn vignetted(w: u32, h: u32, radius: f32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let d = ((x as f32 + 0.5 - w as f32 / 2.0).powi(2)
            + (y as f32 + 0.5 - h as f32 / 2.0).powi(2))
        .sqrt();
        if d > radius {
            Rgb([6, 5, 5])
        } else {
            Rgb([214, 170, 150])
        }
    })
}

#[test]
fn cache_black_corners_are_cropped_away_and_hair_is_not_mistaken_for_them() {
    for (w, h, radius) in [(200, 200, 80.0), (300, 200, 90.0), (640, 480, 230.0)] {
        let img = vignetted(w, h, radius);
        let b = crop_box(&img);
        let inscribed = (2.0 * radius / std::f32::consts::SQRT_2) as u32;
        assert!(b.vignette, "{w}×{h}: vignette not detected");
        assert!(
            b.side <= inscribed && b.side as f32 >= 0.88 * inscribed as f32,
            "{w}×{h}: crop side {}, expected just inside the inscribed square of {inscribed}",
            b.side
        );
        assert_eq!(
            (b.x, b.y),
            ((w - b.side) / 2, (h - b.side) / 2),
            "{w}×{h}: crop not centred"
        );
        let (out, _) = preprocess(&img, 64);
        for (x, y) in [(0, 0), (63, 0), (0, 63), (63, 63)] {
            assert!(
                luma(out.get_pixel(x, y)) > 100.0,
                "{w}×{h}: corner ({x}, {y}) of the output is dark"
            );
        }
    }

    // A plain image with a dark hair across one corner keeps the full centre square.
    let mut img = RgbImage::from_pixel(120, 120, Rgb([214, 170, 150]));
    for t in 0..120 {
        for d in 0..2 {
            img.put_pixel(t, (t + d).min(119), Rgb([30, 22, 20]));
        }
    }
    let b = crop_box(&img);
    assert!(
        !b.vignette && b.side == 120,
        "hair taken for a vignette: {b:?}"
    );
}

#[test]
fn cache_corrupt_cache_files_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dataset(dir.path());
    let images = list_images(&root.join("images")).unwrap();
    let good = dir.path().join("good.shvc");
    build_cache(&images, 16, &good, false).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let write = |name: &str, data: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    };

    let err = ImageCache::open(&write("short.shvc", &bytes[..bytes.len() - 1])).unwrap_err();
    assert!(matches!(err, CacheError::WrongLength { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "is {} bytes, its header says {}",
            bytes.len() - 1,
            bytes.len()
        )),
        "{msg}"
    );
    assert!(msg.contains("truncated"), "{msg}");

    let mut bad = bytes.clone();
    bad[..4].copy_from_slice(b"JFIF");
    let err = ImageCache::open(&write("magic.shvc", &bad)).unwrap_err();
    assert!(matches!(err, CacheError::BadMagic { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("is not a stackhive image cache: expected magic"),
        "{err}"
    );

    let mut bad = bytes.clone();
    bad[8] = 9;
    let err = ImageCache::open(&write("version.shvc", &bad)).unwrap_err();
    assert!(
        err.to_string()
            .contains("has format version 9, this build reads version 1"),
        "{err}"
    );

    let err = ImageCache::open(&write("tiny.shvc", b"SHVIMGC")).unwrap_err();
    assert!(
        matches!(
            err,
            CacheError::WrongLength {
                expected: 64,
                found: 7,
                ..
            }
        ),
        "{err}"
    );

    // A name index that claims more bytes than it holds.
    let mut bad = bytes.clone();
    bad[64..68].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = ImageCache::open(&write("names.shvc", &bad)).unwrap_err();
    assert!(matches!(err, CacheError::Corrupt { .. }), "{err}");
}

#[test]
fn cache_a_failed_build_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let root = dataset(dir.path());
    let mut images = list_images(&root.join("images")).unwrap();
    let broken = root.join("images").join("ISIC_broken.jpg");
    std::fs::write(&broken, b"not a jpeg").unwrap();
    images.push(("ISIC_broken".into(), broken));
    let out_dir = dir.path().join("caches");
    std::fs::create_dir(&out_dir).unwrap();
    let err = build_cache(&images, 16, &out_dir.join("c.shvc"), false).unwrap_err();
    assert!(
        matches!(&err, CacheError::Decode { name, .. } if name == "ISIC_broken"),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("cannot decode image ISIC_broken"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        0,
        "a failed build left files"
    );

    images.pop();
    images.push(images[0].clone());
    let err = build_cache(&images, 16, &out_dir.join("c.shvc"), false).unwrap_err();
    assert!(matches!(err, CacheError::DuplicateName(_)), "{err}");
}

#[test]
fn cache_ensure_cache_builds_once_then_reuses_and_rebuilds_a_corrupt_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dataset(dir.path());
    let caches = dir.path().join("caches");

    let first = ensure_cache(&root, 24, &caches, false).unwrap();
    assert!(first.built.is_some());
    let path = first.cache.path().to_path_buf();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();

    let second = ensure_cache(&root, 24, &caches, false).unwrap();
    assert!(second.built.is_none(), "second call rebuilt the cache");
    assert_eq!(second.cache.path(), path);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    assert_eq!(second.cache.image(3), first.cache.image(3));

    // Another size is another file; the first stays.
    let other = ensure_cache(&root, 12, &caches, false).unwrap();
    assert!(other.built.is_some());
    assert_ne!(other.cache.path(), path);

    // A truncated file (e.g. copied in half by hand) is rebuilt, not trusted.
    let len = std::fs::metadata(&path).unwrap().len();
    drop((first, second));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let again = ensure_cache(&root, 24, &caches, false).unwrap();
    assert!(again.built.is_some(), "a truncated cache was reused");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);

    // A changed dataset gets its own cache.
    let (_, img_path) = &list_images(&root.join("images")).unwrap()[0];
    let img = image::open(img_path).unwrap().into_rgb8();
    image::imageops::flip_horizontal(&img)
        .save(img_path)
        .unwrap();
    let changed = ensure_cache(&root, 24, &caches, false).unwrap();
    assert!(changed.built.is_some());
    assert_ne!(changed.cache.path(), path);
}
