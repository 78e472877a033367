//! The dataset content hash and its manifest: deterministic over exactly the layout's files,
//! sensitive to any byte, name or file of the layout and blind to everything else, and
//! checkable file by file (in chunks) and as a whole, as a worker fetching a dataset does.

mod isic_support;

use std::fs;

use isic_support::*;
use stackhive_data::error::DataError;
use stackhive_data::hash::{dataset_files, dataset_hash, verify_folder, Manifest};

#[test]
fn the_hash_depends_only_on_the_layout_files() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    valid_dataset(a.path());
    // The same content, images written in the opposite order (a different directory order).
    fs::create_dir_all(b.path().join("images")).unwrap();
    let mut images: Vec<_> = fs::read_dir(a.path().join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    images.sort();
    for p in images.iter().rev() {
        fs::copy(p, b.path().join("images").join(p.file_name().unwrap())).unwrap();
    }
    fs::copy(a.path().join("train.csv"), b.path().join("train.csv")).unwrap();
    fs::copy(a.path().join("test.csv"), b.path().join("test.csv")).unwrap();

    let (hash_a, manifest_a) = dataset_hash(a.path()).unwrap();
    let (hash_b, manifest_b) = dataset_hash(b.path()).unwrap();
    assert_eq!(hash_a, hash_b);
    assert_eq!(manifest_a, manifest_b);
    assert_eq!(hash_a.len(), 64);
    assert_eq!(manifest_a.dataset_hash(), hash_a);
    assert_eq!(manifest_a.files.len(), 10);
    assert_eq!(manifest_a.files[0].path, "images/ISIC_0000001.jpg");
    assert_eq!(manifest_a.files[9].path, "train.csv");
    let paths: Vec<&str> = manifest_a.files.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, dataset_files(a.path()).unwrap());
    assert_eq!(
        manifest_a.total_size(),
        manifest_a.files.iter().map(|e| e.size).sum::<u64>()
    );

    // Files outside the layout do not count: notes, a cache folder, OS droppings, subfolders.
    fs::write(b.path().join("README.txt"), "notes").unwrap();
    fs::create_dir_all(b.path().join("cache")).unwrap();
    fs::write(b.path().join("cache/x.bin"), [1, 2, 3]).unwrap();
    fs::write(b.path().join("images/.DS_Store"), "junk").unwrap();
    fs::create_dir_all(b.path().join("images/thumbs")).unwrap();
    fs::write(b.path().join("images/thumbs/t.jpg"), "t").unwrap();
    assert_eq!(dataset_hash(b.path()).unwrap().0, hash_a);

    // Any byte, name or added image of the layout does.
    let image = b.path().join("images/ISIC_0000003.jpg");
    let mut bytes = fs::read(&image).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&image, &bytes).unwrap();
    let flipped = dataset_hash(b.path()).unwrap().0;
    assert_ne!(flipped, hash_a);
    bytes[mid] ^= 1;
    fs::write(&image, &bytes).unwrap();
    assert_eq!(dataset_hash(b.path()).unwrap().0, hash_a);
    fs::rename(&image, b.path().join("images/ISIC_0000003b.jpg")).unwrap();
    let renamed = dataset_hash(b.path()).unwrap().0;
    assert_ne!(renamed, hash_a);
    assert_ne!(renamed, flipped);
    fs::rename(b.path().join("images/ISIC_0000003b.jpg"), &image).unwrap();
    fs::write(b.path().join("images/extra.jpg"), jpeg_bytes(1)).unwrap();
    assert_ne!(dataset_hash(b.path()).unwrap().0, hash_a);
}

#[test]
fn the_hash_of_a_fixed_folder_is_pinned() {
    // Dataset names are stored by coordinators and workers: the hash of given bytes must never
    // change between versions. (A deliberate change needs a new domain tag in hash.rs.)
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("images")).unwrap();
    fs::write(dir.path().join("train.csv"), "image_name,target\na,1\n").unwrap();
    fs::write(dir.path().join("test.csv"), "image_name\nb\n").unwrap();
    fs::write(dir.path().join("images/a.jpg"), [0xFF, 0xD8, 0xFF, 0xD9]).unwrap();
    let (hash, manifest) = dataset_hash(dir.path()).unwrap();
    assert_eq!(
        manifest.files[0].blake3,
        blake3::hash(&[0xFF, 0xD8, 0xFF, 0xD9]).to_hex().to_string()
    );
    assert_eq!(
        hash,
        PINNED,
        "manifest: {}",
        serde_json::to_string(&manifest).unwrap()
    );
}

const PINNED: &str = "e52bbaa3f1a2b453b1541d79f2d0548553e94e4da34f797a9a43455cbecc56e7";

#[test]
fn a_manifest_checks_files_in_chunks_and_as_a_whole() {
    let dir = tempfile::tempdir().unwrap();
    valid_dataset(dir.path());
    let (hash, manifest) = dataset_hash(dir.path()).unwrap();

    // Through JSON, as it travels between coordinator and worker.
    let manifest: Manifest =
        serde_json::from_str(&serde_json::to_string(&manifest).unwrap()).unwrap();
    manifest.check(&hash).unwrap();
    for entry in &manifest.files {
        let bytes = fs::read(dir.path().join(&entry.path)).unwrap();
        entry.verify(&bytes).unwrap();
        let mut v = entry.verifier();
        for chunk in bytes.chunks(7) {
            v.update(chunk);
        }
        v.finish().unwrap();
    }
    let entry = manifest.get("train.csv").unwrap();
    let bytes = fs::read(dir.path().join("train.csv")).unwrap();
    let short = entry
        .verify(&bytes[..bytes.len() - 1])
        .unwrap_err()
        .to_string();
    assert_eq!(
        short,
        format!(
            "train.csv has {} bytes, the manifest says {}",
            bytes.len() - 1,
            bytes.len()
        )
    );
    let mut changed = bytes.clone();
    changed[0] = b'X';
    let err = entry.verify(&changed).unwrap_err();
    assert!(matches!(err, DataError::HashMismatch { .. }));
    assert!(
        err.to_string().starts_with("train.csv has blake3 "),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with(&format!("expected {}", entry.blake3)),
        "{err}"
    );

    // A tampered manifest is refused before any file is written from it.
    let wrong = manifest.check(&"0".repeat(64)).unwrap_err().to_string();
    assert!(
        wrong.contains("manifest has blake3") && wrong.contains(&hash),
        "{wrong}"
    );
    let mut escaping = manifest.clone();
    escaping.files[0].path = "images/../../etc/cron.d/x".into();
    let msg = escaping
        .check(&escaping.dataset_hash())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(
            "expected train.csv, test.csv or images/NAME, found path \"images/../../etc/cron.d/x\""
        ),
        "{msg}"
    );
    let mut unsorted = manifest.clone();
    unsorted.files.swap(0, 1);
    assert!(unsorted
        .check(&unsorted.dataset_hash())
        .unwrap_err()
        .to_string()
        .contains("expected paths sorted and unique"));
    let mut bad_hex = manifest.clone();
    bad_hex.files[0].blake3 = "xyz".into();
    assert!(bad_hex
        .check(&bad_hex.dataset_hash())
        .unwrap_err()
        .to_string()
        .contains("expected a 64-digit hex blake3"));

    // The whole folder, as a worker checks a shared path or a finished fetch.
    assert_eq!(verify_folder(dir.path(), &hash).unwrap(), manifest);
    fs::write(
        dir.path().join("test.csv"),
        "image_name,patient_id,sex,age_approx,anatom_site_general_challenge\n",
    )
    .unwrap();
    let msg = verify_folder(dir.path(), &hash).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("dataset {} has blake3 ", dir.path().display())),
        "{msg}"
    );
}

#[test]
fn a_folder_without_the_csvs_has_no_hash() {
    let dir = tempfile::tempdir().unwrap();
    valid_dataset(dir.path());
    fs::remove_file(dir.path().join("test.csv")).unwrap();
    let msg = dataset_hash(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains("test.csv") && msg.contains("expected a file, found none"),
        "{msg}"
    );
}
