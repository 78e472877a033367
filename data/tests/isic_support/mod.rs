//! Small ISIC-layout dataset folders for the loader, validator and hash tests: rows written
//! with the crate's own CSV writer and tiny (8×8) real JPEGs encoded by the `image` crate.
//! Must not: depend on the synthetic generator; each test states exactly the rows it needs.
#![allow(dead_code)]

use std::fs;
use std::path::Path;

use stackhive_data::isic::{
    image_path, write_test_csv, write_train_csv, Sex, TestRow, TrainRow, IMAGES_DIR,
    SOURCE_ISIC2020, TEST_CSV, TRAIN_CSV,
};

pub fn train_row(image: &str, patient: &str, target: u8) -> TrainRow {
    TrainRow {
        image_name: image.to_string(),
        patient_id: patient.to_string(),
        sex: Some(Sex::Male),
        age_approx: Some(45.0),
        site: Some("torso".to_string()),
        diagnosis: if target == 1 { "melanoma" } else { "nevus" }.to_string(),
        benign_malignant: if target == 1 { "malignant" } else { "benign" }.to_string(),
        target,
        source: SOURCE_ISIC2020.to_string(),
    }
}

pub fn test_row(image: &str, patient: &str) -> TestRow {
    TestRow {
        image_name: image.to_string(),
        patient_id: patient.to_string(),
        sex: None,
        age_approx: None,
        site: None,
    }
}

/// The bytes of a valid 8×8 JPEG whose pixels depend on `seed`.
pub fn jpeg_bytes(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(8, 8, |x, y| {
        image::Rgb([seed.wrapping_mul(31), (x * 30) as u8, (y * 30) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encode jpeg");
    out.into_inner()
}

pub fn write_image(root: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(root.join(IMAGES_DIR)).unwrap();
    fs::write(image_path(root, name), bytes).unwrap();
}

/// Writes train.csv, test.csv and one valid JPEG per row.
pub fn write_dataset(root: &Path, train: &[TrainRow], test: &[TestRow]) {
    fs::create_dir_all(root.join(IMAGES_DIR)).unwrap();
    write_train_csv(&root.join(TRAIN_CSV), train).unwrap();
    write_test_csv(&root.join(TEST_CSV), test).unwrap();
    let names = train
        .iter()
        .map(|r| &r.image_name)
        .chain(test.iter().map(|r| &r.image_name));
    for (i, name) in names.enumerate() {
        write_image(root, name, &jpeg_bytes(i as u8));
    }
}

/// A valid dataset: 6 train rows of 3 patients (one positive), 2 test rows.
pub fn valid_dataset(root: &Path) -> (Vec<TrainRow>, Vec<TestRow>) {
    let train = vec![
        train_row("ISIC_0000001", "IP_1", 0),
        train_row("ISIC_0000002", "IP_1", 0),
        train_row("ISIC_0000003", "IP_2", 1),
        train_row("ISIC_0000004", "IP_2", 0),
        train_row("ISIC_0000005", "IP_3", 0),
        train_row("ISIC_0000006", "IP_3", 0),
    ];
    let test = vec![
        test_row("ISIC_0000101", "IP_9"),
        test_row("ISIC_0000102", "IP_9"),
    ];
    write_dataset(root, &train, &test);
    (train, test)
}

/// Rewrites `root/file` line by line.
pub fn edit_lines(root: &Path, file: &str, edit: impl Fn(usize, &str) -> Option<String>) {
    let path = root.join(file);
    let text = fs::read_to_string(&path).unwrap();
    let out: Vec<String> = text
        .lines()
        .enumerate()
        .filter_map(|(i, l)| edit(i + 1, l))
        .collect();
    fs::write(&path, out.join("\n") + "\n").unwrap();
}
