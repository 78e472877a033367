//! The ISIC 2020 file format: files as the competition wrote them load (missing values as
//! `None`, any column order, extra columns ignored but reported), the `source` column marks
//! external rows, the writer round-trips, and `merge_folders` adds an external year.

mod isic_support;

use std::fs;

use isic_support::*;
use stackhive_data::isic::{
    merge_folders, write_train_csv, Dataset, Sex, TrainRow, SOURCE_ISIC2020, TEST_CSV, TRAIN_CSV,
};
use stackhive_data::validate::{load_and_validate, ValidateOptions};

/// The first lines of the competition's train.csv and test.csv, with the missing values the
/// real files have (empty sex, age and site).
const REAL_TRAIN: &str = "\
image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target
ISIC_2637011,IP_7279968,male,45.0,head/neck,unknown,benign,0
ISIC_0015719,IP_3075186,female,45.0,upper extremity,unknown,benign,0
ISIC_0052212,IP_2842074,female,50.0,lower extremity,nevus,benign,0
ISIC_0068279,IP_6890425,female,45.0,head/neck,unknown,benign,0
ISIC_0074268,IP_8723313,female,55.0,upper extremity,unknown,benign,0
ISIC_0074311,IP_2950485,female,40.0,lower extremity,unknown,benign,0
ISIC_0074542,IP_4698288,male,25.0,lower extremity,unknown,benign,0
ISIC_0075663,IP_6017204,female,35.0,torso,unknown,benign,0
ISIC_0075914,IP_7622888,male,30.0,torso,unknown,benign,0
ISIC_0076262,IP_5075533,female,50.0,,unknown,benign,0
ISIC_9174306,IP_0550106,,,torso,melanoma,malignant,1
";
const REAL_TEST: &str = "\
image_name,patient_id,sex,age_approx,anatom_site_general_challenge
ISIC_0052060,IP_3579794,male,70.0,
ISIC_0052349,IP_7782715,male,40.0,lower extremity
ISIC_0058510,IP_7960270,female,55.0,torso
";

fn write_real(root: &std::path::Path) {
    fs::write(root.join(TRAIN_CSV), REAL_TRAIN).unwrap();
    fs::write(root.join(TEST_CSV), REAL_TEST).unwrap();
    for (i, line) in REAL_TRAIN
        .lines()
        .chain(REAL_TEST.lines())
        .skip(1)
        .enumerate()
    {
        let name = line.split(',').next().unwrap();
        if name != "image_name" {
            write_image(root, name, &jpeg_bytes(i as u8));
        }
    }
}

#[test]
fn competition_files_load_with_missing_values_as_none() {
    let dir = tempfile::tempdir().unwrap();
    write_real(dir.path());
    let (ds, report) = load_and_validate(dir.path(), &ValidateOptions::default()).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (11, 3));
    let first = &ds.train[0];
    assert_eq!(first.image_name, "ISIC_2637011");
    assert_eq!(first.sex, Some(Sex::Male));
    assert_eq!(first.age_approx, Some(45.0));
    assert_eq!(first.site.as_deref(), Some("head/neck"));
    assert_eq!(first.source, SOURCE_ISIC2020);
    assert!(!first.is_external());
    assert_eq!(ds.train[9].site, None);
    let melanoma = &ds.train[10];
    assert_eq!(
        (melanoma.sex, melanoma.age_approx, melanoma.target),
        (None, None, 1)
    );
    assert_eq!(melanoma.benign_malignant, "malignant");
    assert_eq!(ds.test[0].site, None);
    assert_eq!(report.external_rows, 0);
    assert!(report.ignored_columns.is_empty());

    // Written back with the crate's writer, the train file is byte for byte the original.
    let out = dir.path().join("rewritten.csv");
    write_train_csv(&out, &ds.train).unwrap();
    assert_eq!(fs::read_to_string(out).unwrap(), REAL_TRAIN);
}

#[test]
fn column_order_may_vary_and_extra_columns_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_real(dir.path());
    // Reverse the train columns and add a `width` column; put `notes` first in test.csv.
    edit_lines(dir.path(), TRAIN_CSV, |n, l| {
        let mut cells: Vec<String> = l.split(',').rev().map(String::from).collect();
        cells.push(if n == 1 {
            "width".into()
        } else {
            "6000".into()
        });
        Some(cells.join(","))
    });
    edit_lines(dir.path(), TEST_CSV, |n, l| {
        Some(format!("{},{l}", if n == 1 { "notes" } else { "x" }))
    });
    let (ds, report) = load_and_validate(dir.path(), &ValidateOptions::default()).unwrap();
    let original = {
        let dir = tempfile::tempdir().unwrap();
        write_real(dir.path());
        Dataset::load(dir.path()).unwrap()
    };
    assert_eq!(ds.train, original.train);
    assert_eq!(ds.test, original.test);
    assert_eq!(
        report.ignored_columns,
        ["train.csv: width", "test.csv: notes"]
    );
    assert!(
        report
            .to_string()
            .contains("ignored columns: train.csv: width, test.csv: notes"),
        "{report}"
    );
}

#[test]
fn the_source_column_marks_external_rows() {
    let dir = tempfile::tempdir().unwrap();
    write_real(dir.path());
    edit_lines(dir.path(), TRAIN_CSV, |n, l| {
        Some(match n {
            1 => format!("{l},source"),
            2 | 3 => format!("{l},ISIC2019"),
            4 => format!("{l},isic2018"),
            5 => format!("{l},"),
            _ => format!("{l},isic2020"),
        })
    });
    let (ds, report) = load_and_validate(dir.path(), &ValidateOptions::default()).unwrap();
    let sources: Vec<&str> = ds.train.iter().map(|r| r.source.as_str()).collect();
    assert_eq!(
        &sources[..5],
        ["isic2019", "isic2019", "isic2018", "isic2020", "isic2020"]
    );
    assert_eq!(ds.train.iter().filter(|r| r.is_external()).count(), 3);
    assert_eq!(report.external_rows, 3);
    assert_eq!(report.sources["isic2019"], 2);
    assert_eq!(report.sources["isic2020"], 8);

    // The writer keeps the column when some row is external, and the file round-trips.
    let out = dir.path().join("out.csv");
    write_train_csv(&out, &ds.train).unwrap();
    let text = fs::read_to_string(&out).unwrap();
    assert!(
        text.lines().next().unwrap().ends_with(",target,source"),
        "{text}"
    );
    fs::copy(&out, dir.path().join(TRAIN_CSV)).unwrap();
    assert_eq!(Dataset::load(dir.path()).unwrap().train, ds.train);
}

#[test]
fn written_rows_round_trip_through_the_loader() {
    let dir = tempfile::tempdir().unwrap();
    let mut train = vec![
        train_row("A_1", "P1", 0),
        train_row("A_2", "P1", 1),
        train_row("A_3", "P2", 0),
    ];
    train[0].sex = None;
    train[0].age_approx = None;
    train[1].age_approx = Some(37.5);
    train[1].site = Some("oral/genital, lip".into()); // a comma must be quoted
    train[2].sex = Some(Sex::Female);
    train[2].source = "isic2019".into();
    let test = vec![test_row("T_1", "P9")];
    write_dataset(dir.path(), &train, &test);
    let ds = Dataset::load(dir.path()).unwrap();
    assert_eq!(ds.train, train);
    assert_eq!(ds.test, test);
    assert_eq!(
        ds.image_path("A_1"),
        dir.path().join("images").join("A_1.jpg")
    );
}

#[test]
fn merge_folders_adds_an_external_year_as_training_rows() {
    let base = tempfile::tempdir().unwrap();
    let extra = tempfile::tempdir().unwrap();
    let out_parent = tempfile::tempdir().unwrap();
    let (base_train, base_test) = valid_dataset(base.path());
    let extra_train = vec![
        train_row("ISIC_2019_1", "X1", 1),
        train_row("ISIC_2019_2", "X2", 0),
    ];
    write_dataset(extra.path(), &extra_train, &[test_row("ISIC_2019_T", "X9")]);

    let out = out_parent.path().join("merged");
    let merged = merge_folders(base.path(), extra.path(), "ISIC2019", &out).unwrap();
    assert_eq!(merged.train.len(), base_train.len() + 2);
    assert_eq!(
        merged.test, base_test,
        "the extra folder's test rows are not merged"
    );
    let external: Vec<&TrainRow> = merged.train.iter().filter(|r| r.is_external()).collect();
    assert_eq!(external.len(), 2);
    assert!(external.iter().all(|r| r.source == "isic2019"));
    // The merged folder is a dataset of its own: it loads and validates, images included.
    assert_eq!(Dataset::load(&out).unwrap(), merged);
    assert_eq!(
        fs::read(out.join("images/ISIC_2019_1.jpg")).unwrap(),
        fs::read(extra.path().join("images/ISIC_2019_1.jpg")).unwrap()
    );

    // Refusals: an existing output, the competition's own source name, a name clash.
    let again = merge_folders(base.path(), extra.path(), "isic2019", &out)
        .unwrap_err()
        .to_string();
    assert!(again.contains("expected a new output folder"), "{again}");
    let own = merge_folders(
        base.path(),
        extra.path(),
        "isic2020",
        &out_parent.path().join("m2"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        own.contains("expected an external source name such as isic2019, found \"isic2020\""),
        "{own}"
    );
    let clash = merge_folders(
        base.path(),
        base.path(),
        "isic2019",
        &out_parent.path().join("m3"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        clash.contains("expected image names unique across both datasets, found ISIC_0000001"),
        "{clash}"
    );
    assert!(
        !out_parent.path().join("m3").exists(),
        "nothing half-built is left behind"
    );
}
