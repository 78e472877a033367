//! Every validation error with a deliberately broken dataset folder: the error names the file,
//! line, image_name and what was expected and found, with a count per kind; nothing is loaded;
//! and `drop_invalid` drops exactly the offending rows and says how many, per reason.

mod isic_support;

use std::fs;
use std::path::Path;

use isic_support::*;
use stackhive_data::error::DataError;
use stackhive_data::isic::{image_path, write_train_csv, Dataset, TRAIN_CSV};
use stackhive_data::validate::{
    load_and_validate, ImageCheck, ProblemKind, ValidateOptions, ValidationReport, MAX_EXAMPLES,
};

fn strict() -> ValidateOptions {
    ValidateOptions::default()
}

fn dropping() -> ValidateOptions {
    ValidateOptions {
        drop_invalid: true,
        ..ValidateOptions::default()
    }
}

/// The error message of a dataset that must be refused, after checking it is `Invalid` with
/// `count` rows of `kind`.
fn refused(root: &Path, kind: ProblemKind, count: usize) -> String {
    match load_and_validate(root, &strict()) {
        Err(DataError::Invalid(problems)) => {
            assert_eq!(problems.count(kind), count, "{problems}");
            problems.to_string()
        }
        Err(other) => panic!("expected an invalid-rows error, found: {other}"),
        Ok((ds, _)) => panic!("expected an error, loaded {} train rows", ds.train.len()),
    }
}

/// Loads with `drop_invalid` and checks the kept train/test image names and the drop counts.
fn dropped(
    root: &Path,
    kind: ProblemKind,
    kept_train: &[&str],
    kept_test: &[&str],
) -> ValidationReport {
    let (ds, report) = load_and_validate(root, &dropping()).unwrap();
    let train: Vec<&str> = ds.train.iter().map(|r| r.image_name.as_str()).collect();
    let test: Vec<&str> = ds.test.iter().map(|r| r.image_name.as_str()).collect();
    assert_eq!(train, kept_train);
    assert_eq!(test, kept_test);
    let expected = 6 + 2 - kept_train.len() - kept_test.len();
    assert_eq!(report.dropped_total(), expected, "{report}");
    assert_eq!(
        report.dropped.get(&kind).copied(),
        Some(expected),
        "{report}"
    );
    assert!(
        report
            .to_string()
            .contains(&format!("dropped {expected} invalid row(s)")),
        "{report}"
    );
    report
}

const ALL_TRAIN: [&str; 6] = [
    "ISIC_0000001",
    "ISIC_0000002",
    "ISIC_0000003",
    "ISIC_0000004",
    "ISIC_0000005",
    "ISIC_0000006",
];
const ALL_TEST: [&str; 2] = ["ISIC_0000101", "ISIC_0000102"];

#[test]
fn a_valid_dataset_loads_with_a_clean_report() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = valid_dataset(dir.path());
    let (ds, report) = load_and_validate(dir.path(), &strict()).unwrap();
    assert_eq!(ds.train, train);
    assert_eq!(ds.test, test);
    assert_eq!(report.images_checked, 8);
    assert_eq!(report.dropped_total(), 0);
    assert!(report.problems.is_empty());
    assert_eq!(Dataset::load(dir.path()).unwrap(), ds);
}

#[test]
fn missing_columns_name_what_is_missing_and_what_was_found() {
    let dir = tempfile::tempdir().unwrap();
    valid_dataset(dir.path());
    // Drop the target column (the last one) from train.csv.
    edit_lines(dir.path(), TRAIN_CSV, |_, l| {
        Some(l.rsplit_once(',').unwrap().0.to_string())
    });
    for opts in [strict(), dropping()] {
        let err = load_and_validate(dir.path(), &opts).unwrap_err();
        assert!(matches!(err, DataError::MissingColumns { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("train.csv lacks required column(s) target"),
            "{msg}"
        );
        assert!(
            msg.contains("found image_name, patient_id, sex, age_approx"),
            "{msg}"
        );
        assert!(
            msg.contains("benign_malignant") && !msg.ends_with("target"),
            "{msg}"
        );
    }
    // An empty test.csv has no header at all.
    let dir = tempfile::tempdir().unwrap();
    valid_dataset(dir.path());
    fs::write(dir.path().join("test.csv"), "").unwrap();
    let msg = load_and_validate(dir.path(), &strict())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("test.csv lacks required column(s) image_name, patient_id"),
        "{msg}"
    );
    assert!(msg.contains("found no header at all"), "{msg}");
}

#[test]
fn duplicate_image_name_in_train_and_in_test() {
    let dir = tempfile::tempdir().unwrap();
    valid_dataset(dir.path());
    // Line 5 (ISIC_0000004) repeats line 3's image name; test line 3 repeats test line 2.
    edit_lines(dir.path(), TRAIN_CSV, |n, l| {
        Some(if n == 5 {
            l.replace("ISIC_0000004", "ISIC_0000002")
        } else {
            l.into()
        })
    });
    edit_lines(dir.path(), "test.csv", |n, l| {
        Some(if n == 3 {
            l.replace("ISIC_0000102", "ISIC_0000101")
        } else {
            l.into()
        })
    });
    let msg = refused(dir.path(), ProblemKind::DuplicateImageName, 2);
    assert!(msg.contains("duplicate image_name: 2 row(s)"), "{msg}");
    assert!(
        msg.contains("train.csv line 5, image_name ISIC_0000002: expected a unique image_name, found it again (first at line 3)"),
        "{msg}"
    );
    assert!(
        msg.contains("test.csv line 3, image_name ISIC_0000101: expected a unique image_name"),
        "{msg}"
    );
    // The first occurrence wins.
    let kept_train = [
        "ISIC_0000001",
        "ISIC_0000002",
        "ISIC_0000003",
        "ISIC_0000005",
        "ISIC_0000006",
    ];
    dropped(
        dir.path(),
        ProblemKind::DuplicateImageName,
        &kept_train,
        &["ISIC_0000101"],
    );
}

#[test]
fn a_label_outside_0_1_and_an_unparsable_age() {
    let dir = tempfile::tempdir().unwrap();
    valid_dataset(dir.path());
    edit_lines(dir.path(), TRAIN_CSV, |n, l| {
        Some(if n == 4 {
            l.replace("malignant,1", "malignant,2")
        } else {
            l.into()
        })
    });
    let msg = refused(dir.path(), ProblemKind::BadTarget, 1);
    assert!(
        msg.contains(
            "train.csv line 4, image_name ISIC_0000003: expected target 0 or 1, found \"2\""
        ),
        "{msg}"
    );
    let kept: Vec<&str> = ALL_TRAIN
        .iter()
        .copied()
        .filter(|n| *n != "ISIC_0000003")
        .collect();
    dropped(dir.path(), ProblemKind::BadTarget, &kept, &ALL_TEST);

    let dir = tempfile::tempdir().unwrap();
    valid_dataset(dir.path());
    edit_lines(dir.path(), TRAIN_CSV, |n, l| {
        Some(if n == 6 {
            l.replace("45.0", "forty")
        } else {
            l.into()
        })
    });
    let msg = refused(dir.path(), ProblemKind::BadNumber, 1);
    assert!(msg.contains("line 6, image_name ISIC_0000005: expected age_approx a number of years or empty, found \"forty\""), "{msg}");
    let kept: Vec<&str> = ALL_TRAIN
        .iter()
        .copied()
        .filter(|n| *n != "ISIC_0000005")
        .collect();
    dropped(dir.path(), ProblemKind::BadNumber, &kept, &ALL_TEST);
}

#[test]
fn a_missing_image_file() {
    let dir = tempfile::tempdir().unwrap();
    valid_dataset(dir.path());
    fs::remove_file(image_path(dir.path(), "ISIC_0000002")).unwrap();
    fs::remove_file(image_path(dir.path(), "ISIC_0000102")).unwrap();
    let msg = refused(dir.path(), ProblemKind::MissingImage, 2);
    assert!(
        msg.contains("train.csv line 3, image_name ISIC_0000002: expected image file images/ISIC_0000002.jpg, found none"),
        "{msg}"
    );
    assert!(
        msg.contains("test.csv line 3, image_name ISIC_0000102"),
        "{msg}"
    );
    let kept: Vec<&str> = ALL_TRAIN
        .iter()
        .copied()
        .filter(|n| *n != "ISIC_0000002")
        .collect();
    dropped(
        dir.path(),
        ProblemKind::MissingImage,
        &kept,
        &["ISIC_0000101"],
    );
    // Checking only for existence finds it too; skipping images does not look.
    let exists = ValidateOptions {
        image_check: ImageCheck::Exists,
        ..strict()
    };
    assert!(load_and_validate(dir.path(), &exists).is_err());
    let skip = ValidateOptions {
        image_check: ImageCheck::Skip,
        ..strict()
    };
    let (_, report) = load_and_validate(dir.path(), &skip).unwrap();
    assert_eq!(report.images_checked, 0);
}

#[test]
fn a_garbage_jpg_and_a_png_named_jpg() {
    let dir = tempfile::tempdir().unwrap();
    valid_dataset(dir.path());
    write_image(
        dir.path(),
        "ISIC_0000004",
        b"this is not an image, just text that ends here",
    );
    let png = {
        let mut out = std::io::Cursor::new(Vec::new());
        image::RgbImage::new(8, 8)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    };
    write_image(dir.path(), "ISIC_0000006", &png);
    let msg = refused(dir.path(), ProblemKind::BadImage, 2);
    assert!(
        msg.contains("train.csv line 5, image_name ISIC_0000004: images/ISIC_0000004.jpg: expected jpeg data (starting ff d8 ff), found unrecognised data"),
        "{msg}"
    );
    assert!(msg.contains("line 7, image_name ISIC_0000006: images/ISIC_0000006.jpg: expected jpeg data (starting ff d8 ff), found png data"), "{msg}");
    let kept = [
        "ISIC_0000001",
        "ISIC_0000002",
        "ISIC_0000003",
        "ISIC_0000005",
    ];
    dropped(dir.path(), ProblemKind::BadImage, &kept, &ALL_TEST);
    // Existence alone does not catch it.
    let exists = ValidateOptions {
        image_check: ImageCheck::Exists,
        ..strict()
    };
    assert!(load_and_validate(dir.path(), &exists).is_ok());
}

#[test]
fn a_truncated_jpeg_is_caught_by_both_the_header_and_the_full_check() {
    let dir = tempfile::tempdir().unwrap();
    valid_dataset(dir.path());
    let good = jpeg_bytes(7);
    // Cut inside the compressed scan: the header still parses, the end marker is gone.
    write_image(dir.path(), "ISIC_0000101", &good[..good.len() - 10]);
    // Cut inside the header: nothing after the first segments.
    write_image(dir.path(), "ISIC_0000001", &good[..40]);
    for check in [ImageCheck::Header, ImageCheck::Full] {
        let opts = ValidateOptions {
            image_check: check,
            ..strict()
        };
        let Err(DataError::Invalid(problems)) = load_and_validate(dir.path(), &opts) else {
            panic!("expected the truncated images to be refused with {check:?}");
        };
        assert_eq!(problems.count(ProblemKind::BadImage), 2, "{problems}");
        let msg = problems.to_string();
        assert!(
            msg.contains("test.csv line 2, image_name ISIC_0000101: images/ISIC_0000101.jpg: expected the jpeg end marker ff d9 at the end, found"),
            "{msg}"
        );
        assert!(
            msg.contains("train.csv line 2, image_name ISIC_0000001"),
            "{msg}"
        );
    }
    let kept: Vec<&str> = ALL_TRAIN[1..].to_vec();
    dropped(dir.path(), ProblemKind::BadImage, &kept, &["ISIC_0000102"]);
    // Zero padding after a complete image is tolerated, as some encoders write it.
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 16]);
    write_image(dir.path(), "ISIC_0000101", &padded);
    write_image(dir.path(), "ISIC_0000001", &good);
    let full = ValidateOptions {
        image_check: ImageCheck::Full,
        ..strict()
    };
    assert!(load_and_validate(dir.path(), &full).is_ok());
}

#[test]
fn a_test_row_that_is_also_a_train_row() {
    let dir = tempfile::tempdir().unwrap();
    valid_dataset(dir.path());
    edit_lines(dir.path(), "test.csv", |n, l| {
        Some(if n == 3 {
            l.replace("ISIC_0000102", "ISIC_0000004")
        } else {
            l.into()
        })
    });
    let msg = refused(dir.path(), ProblemKind::TestRowInTrain, 1);
    assert!(
        msg.contains("test.csv line 3, image_name ISIC_0000004: expected test rows disjoint from train rows, found this image_name at train.csv line 5"),
        "{msg}"
    );
    // The labelled train row is kept; the test row goes.
    dropped(
        dir.path(),
        ProblemKind::TestRowInTrain,
        &ALL_TRAIN,
        &["ISIC_0000101"],
    );
}

#[test]
fn many_problems_show_the_first_five_and_the_counts_per_kind() {
    let dir = tempfile::tempdir().unwrap();
    let train: Vec<_> = (0..20)
        .map(|i| {
            train_row(
                &format!("ISIC_{i:07}"),
                &format!("IP_{}", i / 2),
                (i % 2) as u8,
            )
        })
        .collect();
    write_dataset(dir.path(), &train, &[test_row("ISIC_9000000", "IP_99")]);
    // Rows 0..8 get label 7; rows 10, 11 lose their image.
    edit_lines(dir.path(), TRAIN_CSV, |n, l| {
        let row = n.wrapping_sub(2);
        Some(if n > 1 && row < 8 {
            format!("{},7", l.rsplit_once(',').unwrap().0)
        } else {
            l.into()
        })
    });
    for i in [10, 11] {
        fs::remove_file(image_path(dir.path(), &format!("ISIC_{i:07}"))).unwrap();
    }
    let Err(DataError::Invalid(problems)) = load_and_validate(dir.path(), &strict()) else {
        panic!("expected an error")
    };
    assert_eq!(problems.count(ProblemKind::BadTarget), 8);
    assert_eq!(problems.count(ProblemKind::MissingImage), 2);
    assert_eq!(
        problems.kinds[&ProblemKind::BadTarget].examples.len(),
        MAX_EXAMPLES
    );
    let lines: Vec<u64> = problems.kinds[&ProblemKind::BadTarget]
        .examples
        .iter()
        .map(|p| p.line)
        .collect();
    assert_eq!(
        lines,
        [2, 3, 4, 5, 6],
        "the first offending rows, in file order"
    );
    let msg = problems.to_string();
    assert!(
        msg.contains("10 problem(s) of 2 kind(s), nothing was loaded"),
        "{msg}"
    );
    assert!(
        msg.contains("label outside {0, 1}: 8 row(s)") && msg.contains("… and 3 more"),
        "{msg}"
    );
    assert!(msg.contains("missing image file: 2 row(s)"), "{msg}");

    let (ds, report) = load_and_validate(dir.path(), &dropping()).unwrap();
    assert_eq!(ds.train.len(), 10);
    assert_eq!(report.dropped[&ProblemKind::BadTarget], 8);
    assert_eq!(report.dropped[&ProblemKind::MissingImage], 2);
    assert!(ds
        .train
        .iter()
        .all(|r| r.image_name.as_str() >= "ISIC_0000008" && r.image_name != "ISIC_0000010"));
}

#[test]
fn a_row_with_several_problems_is_dropped_once_under_its_first() {
    let dir = tempfile::tempdir().unwrap();
    valid_dataset(dir.path());
    // Bad label and a missing image on the same row; a bad sex on another.
    edit_lines(dir.path(), TRAIN_CSV, |n, l| {
        Some(match n {
            4 => l.replace("malignant,1", "malignant,x"),
            6 => l.replace(",male,", ",M,"),
            _ => l.into(),
        })
    });
    fs::remove_file(image_path(dir.path(), "ISIC_0000003")).unwrap();
    let Err(DataError::Invalid(problems)) = load_and_validate(dir.path(), &strict()) else {
        panic!("expected an error")
    };
    assert_eq!(problems.count(ProblemKind::BadTarget), 1);
    assert_eq!(problems.count(ProblemKind::MissingImage), 1);
    assert_eq!(problems.count(ProblemKind::BadValue), 1);
    assert!(
        problems
            .to_string()
            .contains("expected sex male, female or empty, found \"M\""),
        "{problems}"
    );
    let (ds, report) = load_and_validate(dir.path(), &dropping()).unwrap();
    assert_eq!(ds.train.len(), 4);
    assert_eq!(report.dropped_total(), 2);
    assert_eq!(report.dropped[&ProblemKind::BadTarget], 1);
    assert_eq!(report.dropped[&ProblemKind::BadValue], 1);
    assert!(!report.dropped.contains_key(&ProblemKind::MissingImage));
}

#[test]
fn unsafe_or_empty_names_and_short_rows_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut train, test) = valid_dataset(dir.path());
    train[1].image_name = "../../etc/passwd".into();
    train[2].patient_id = String::new();
    write_train_csv(&dir.path().join(TRAIN_CSV), &train).unwrap();
    edit_lines(dir.path(), TRAIN_CSV, |n, l| {
        Some(if n == 7 {
            l.rsplit_once(',').unwrap().0.into()
        } else {
            l.into()
        })
    });
    let Err(DataError::Invalid(problems)) = load_and_validate(dir.path(), &strict()) else {
        panic!("expected an error")
    };
    let msg = problems.to_string();
    assert!(
        msg.contains("expected an image_name without path separators, found \"../../etc/passwd\""),
        "{msg}"
    );
    assert!(msg.contains("line 4, image_name ISIC_0000003: expected a non-empty patient_id, found an empty field"), "{msg}");
    assert!(
        msg.contains(
            "line 7, image_name ISIC_0000006: expected 8 fields as in the header, found 7"
        ),
        "{msg}"
    );
    let (ds, _) = load_and_validate(dir.path(), &dropping()).unwrap();
    assert_eq!(ds.train.len(), 3);
    assert_eq!(ds.test.len(), test.len());
}

#[test]
fn dropping_every_train_row_is_an_error_not_an_empty_dataset() {
    let dir = tempfile::tempdir().unwrap();
    valid_dataset(dir.path());
    edit_lines(dir.path(), TRAIN_CSV, |n, l| {
        Some(if n > 1 {
            format!("{},9", l.rsplit_once(',').unwrap().0)
        } else {
            l.into()
        })
    });
    let msg = load_and_validate(dir.path(), &dropping())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(
            "train.csv has no usable train rows; expected at least one, found 6 before checks"
        ),
        "{msg}"
    );
}
