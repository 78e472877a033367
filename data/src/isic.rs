//! The ISIC 2020 dataset layout: a folder with `train.csv`, `test.csv` and
//! `images/<image_name>.jpg`, the row types, the CSV reader (used by `validate`) and the CSV
//! writer (used by tests and the synthetic generator), and `merge_folders` for adding external
//! years (2018/2019) as extra training rows.
//! Must not: decide whether a dataset is acceptable or look at image bytes — the reader only
//! reports per-row problems and `validate::load_and_validate` decides; the public entry point
//! for loading is `Dataset::load` / `validate::load_and_validate`, never the raw reader.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::error::DataError;
use crate::validate::{self, ProblemKind, ValidateOptions};

pub const TRAIN_CSV: &str = "train.csv";
pub const TEST_CSV: &str = "test.csv";
pub const IMAGES_DIR: &str = "images";
pub const IMAGE_EXT: &str = "jpg";
/// The competition's own rows; every other source is external and never validates.
pub const SOURCE_ISIC2020: &str = "isic2020";
pub const SOURCE_COLUMN: &str = "source";

/// Required train columns, in the order the competition's `train.csv` has them.
pub const TRAIN_COLUMNS: [&str; 8] = [
    "image_name",
    "patient_id",
    "sex",
    "age_approx",
    "anatom_site_general_challenge",
    "diagnosis",
    "benign_malignant",
    "target",
];
/// Required test columns: the train columns without the three label columns.
pub const TEST_COLUMNS: [&str; 5] = [
    "image_name",
    "patient_id",
    "sex",
    "age_approx",
    "anatom_site_general_challenge",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    Male,
    Female,
}

impl Sex {
    /// The spelling used in the ISIC files.
    pub fn as_str(self) -> &'static str {
        match self {
            Sex::Male => "male",
            Sex::Female => "female",
        }
    }
}

/// One labelled image. `source` is `isic2020` for the competition's rows and e.g. `isic2019`
/// for external rows, which only ever train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainRow {
    pub image_name: String,
    pub patient_id: String,
    pub sex: Option<Sex>,
    pub age_approx: Option<f32>,
    /// `anatom_site_general_challenge`.
    pub site: Option<String>,
    pub diagnosis: String,
    pub benign_malignant: String,
    /// 0 benign, 1 malignant.
    pub target: u8,
    pub source: String,
}

impl TrainRow {
    /// External rows (any source other than `isic2020`) train in every fold and never validate.
    pub fn is_external(&self) -> bool {
        self.source != SOURCE_ISIC2020
    }
}

/// One unlabelled image to predict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestRow {
    pub image_name: String,
    pub patient_id: String,
    pub sex: Option<Sex>,
    pub age_approx: Option<f32>,
    pub site: Option<String>,
}

/// A loaded, validated dataset. Row order is file order (after any dropped rows), which is the
/// order fold assignments and predictions refer to.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub root: PathBuf,
    pub train: Vec<TrainRow>,
    pub test: Vec<TestRow>,
}

impl Dataset {
    /// Loads and fully validates `root` with the default options (every image's JPEG header
    /// and end marker checked; any problem is an error).
    pub fn load(root: &Path) -> Result<Dataset, DataError> {
        validate::load_and_validate(root, &ValidateOptions::default()).map(|(d, _)| d)
    }

    /// Where the image of `image_name` lives.
    pub fn image_path(&self, image_name: &str) -> PathBuf {
        image_path(&self.root, image_name)
    }
}

/// `root/images/<image_name>.jpg`.
pub fn image_path(root: &Path, image_name: &str) -> PathBuf {
    root.join(IMAGES_DIR)
        .join(format!("{image_name}.{IMAGE_EXT}"))
}

// ---------------------------------------------------------------------------------------------
// Reading

/// One CSV record as the reader saw it: its line, its `image_name` (as far as it could be read)
/// and either the parsed row or what is wrong with it.
#[derive(Debug)]
pub(crate) struct Record<T> {
    pub line: u64,
    pub image_name: String,
    pub parsed: Result<T, Vec<(ProblemKind, String)>>,
}

#[derive(Debug)]
pub(crate) struct Table<T> {
    pub records: Vec<Record<T>>,
    /// Columns present in the file that the layout does not use; ignored, but reported.
    pub extra_columns: Vec<String>,
}

/// Column positions of one file, by name; column order in the files may vary.
struct Columns {
    index: Vec<usize>,
    source: Option<usize>,
    width: usize,
}

fn read_header(
    path: &Path,
    reader: &mut csv::Reader<fs::File>,
    required: &[&str],
    optional: &[&str],
) -> Result<(Columns, Vec<String>), DataError> {
    let headers = reader
        .byte_headers()
        .map_err(|e| csv_error(path, e))?
        .clone();
    let names: Vec<String> = headers
        .iter()
        .map(|h| {
            // Spreadsheet exports often start with a byte order mark; the csv crate strips it
            // from the first field, but be safe about stray ones and surrounding spaces.
            String::from_utf8_lossy(h)
                .trim_start_matches('\u{feff}')
                .trim()
                .to_string()
        })
        .collect();
    let found: Vec<String> = names.iter().filter(|n| !n.is_empty()).cloned().collect();
    let position = |want: &str| names.iter().position(|n| n == want);
    let missing: Vec<String> = required
        .iter()
        .filter(|c| position(c).is_none())
        .map(|c| c.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(DataError::MissingColumns {
            path: path.to_path_buf(),
            missing,
            expected: required.iter().map(|c| c.to_string()).collect(),
            found,
        });
    }
    let index = required.iter().map(|c| position(c).unwrap_or(0)).collect();
    let known: HashSet<&str> = required.iter().chain(optional).copied().collect();
    let mut seen = HashSet::new();
    let extra = names
        .iter()
        .filter(|n| !known.contains(n.as_str()) || !seen.insert(n.as_str()))
        .map(|n| {
            if n.is_empty() {
                "(unnamed)".to_string()
            } else {
                n.clone()
            }
        })
        .collect();
    let source = optional
        .contains(&SOURCE_COLUMN)
        .then(|| position(SOURCE_COLUMN))
        .flatten();
    Ok((
        Columns {
            index,
            source,
            width: names.len(),
        },
        extra,
    ))
}

fn csv_error(path: &Path, e: csv::Error) -> DataError {
    let message = e.to_string();
    match e.into_kind() {
        csv::ErrorKind::Io(source) => DataError::Read {
            path: path.to_path_buf(),
            source,
        },
        _ => DataError::Csv {
            path: path.to_path_buf(),
            message,
        },
    }
}

fn open_csv(path: &Path) -> Result<csv::Reader<fs::File>, DataError> {
    let file = fs::File::open(path).map_err(|source| DataError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // flexible: a row with a wrong field count is reported as that row's problem instead of
    // aborting the whole read at the first one.
    Ok(csv::ReaderBuilder::new().flexible(true).from_reader(file))
}

/// Reads every record of a table, parsing each with `parse` (which sees the fields in the
/// order of `required`, plus the optional `source` field).
fn read_table<T>(
    path: &Path,
    required: &[&str],
    optional: &[&str],
    parse: impl Fn(&[&str], Option<&str>, &mut Vec<(ProblemKind, String)>) -> Option<T>,
) -> Result<Table<T>, DataError> {
    let mut reader = open_csv(path)?;
    let (columns, extra_columns) = read_header(path, &mut reader, required, optional)?;
    let mut records = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(path, e)),
        }
        let line = record.position().map_or(0, |p| p.line());
        let mut problems = Vec::new();
        let field = |i: usize| -> Result<&str, ()> {
            std::str::from_utf8(record.get(i).unwrap_or(b"")).map_err(|_| ())
        };
        if record.len() != columns.width {
            problems.push((
                ProblemKind::MalformedRow,
                format!(
                    "expected {} fields as in the header, found {}",
                    columns.width,
                    record.len()
                ),
            ));
        }
        let mut fields = Vec::with_capacity(required.len());
        let mut utf8_ok = true;
        for (&i, name) in columns.index.iter().zip(required) {
            match field(i) {
                Ok(v) => fields.push(v),
                Err(()) => {
                    utf8_ok = false;
                    problems.push((
                        ProblemKind::MalformedRow,
                        format!("expected utf-8 text in {name}, found invalid bytes"),
                    ));
                    fields.push("");
                }
            }
        }
        let source = match columns.source.map(field) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(())) => {
                utf8_ok = false;
                problems.push((
                    ProblemKind::MalformedRow,
                    format!("expected utf-8 text in {SOURCE_COLUMN}, found invalid bytes"),
                ));
                None
            }
        };
        let image_name = fields[0].trim().to_string();
        let parsed = if problems.is_empty() && utf8_ok {
            parse(&fields, source, &mut problems)
        } else {
            None
        };
        let parsed = match parsed {
            Some(row) if problems.is_empty() => Ok(row),
            _ => Err(problems),
        };
        records.push(Record {
            line,
            image_name,
            parsed,
        });
    }
    Ok(Table {
        records,
        extra_columns,
    })
}

/// Pandas writes a missing value as an empty field (as the competition files have it); files
/// re-saved by other tools say `NaN`. Both mean "missing".
fn is_missing(v: &str) -> bool {
    v.is_empty() || v.eq_ignore_ascii_case("nan")
}

fn parse_name(column: &str, v: &str, problems: &mut Vec<(ProblemKind, String)>) -> Option<String> {
    let v = v.trim();
    if v.is_empty() {
        problems.push((
            ProblemKind::BadValue,
            format!("expected a non-empty {column}, found an empty field"),
        ));
        return None;
    }
    // image_name becomes part of a path: refuse anything that could leave images/.
    if column == "image_name" && (v.contains(['/', '\\', '\0']) || v == "." || v == "..") {
        problems.push((
            ProblemKind::BadValue,
            format!("expected an image_name without path separators, found {v:?}"),
        ));
        return None;
    }
    Some(v.to_string())
}

fn parse_sex(v: &str, problems: &mut Vec<(ProblemKind, String)>) -> Option<Sex> {
    match v.trim() {
        s if is_missing(s) => None,
        "male" => Some(Sex::Male),
        "female" => Some(Sex::Female),
        other => {
            problems.push((
                ProblemKind::BadValue,
                format!("expected sex male, female or empty, found {other:?}"),
            ));
            None
        }
    }
}

fn parse_age(v: &str, problems: &mut Vec<(ProblemKind, String)>) -> Option<f32> {
    let v = v.trim();
    if is_missing(v) {
        return None;
    }
    match v.parse::<f32>() {
        Ok(a) if a.is_finite() && a >= 0.0 => Some(a),
        _ => {
            problems.push((
                ProblemKind::BadNumber,
                format!("expected age_approx a number of years or empty, found {v:?}"),
            ));
            None
        }
    }
}

fn parse_site(v: &str) -> Option<String> {
    let v = v.trim();
    (!is_missing(v)).then(|| v.to_string())
}

fn parse_target(v: &str, problems: &mut Vec<(ProblemKind, String)>) -> Option<u8> {
    match v.trim() {
        "0" => Some(0),
        "1" => Some(1),
        other => {
            problems.push((
                ProblemKind::BadTarget,
                format!("expected target 0 or 1, found {other:?}"),
            ));
            None
        }
    }
}

/// A missing or empty `source` means the competition's own rows.
fn parse_source(v: Option<&str>) -> String {
    match v.map(str::trim) {
        None | Some("") => SOURCE_ISIC2020.to_string(),
        Some(s) => s.to_ascii_lowercase(),
    }
}

pub(crate) fn read_train(path: &Path) -> Result<Table<TrainRow>, DataError> {
    read_table(path, &TRAIN_COLUMNS, &[SOURCE_COLUMN], |f, source, p| {
        let image_name = parse_name("image_name", f[0], p);
        let patient_id = parse_name("patient_id", f[1], p);
        let sex = parse_sex(f[2], p);
        let age_approx = parse_age(f[3], p);
        let target = parse_target(f[7], p);
        if !p.is_empty() {
            return None;
        }
        Some(TrainRow {
            image_name: image_name?,
            patient_id: patient_id?,
            sex,
            age_approx,
            site: parse_site(f[4]),
            diagnosis: f[5].trim().to_string(),
            benign_malignant: f[6].trim().to_string(),
            target: target?,
            source: parse_source(source),
        })
    })
}

pub(crate) fn read_test(path: &Path) -> Result<Table<TestRow>, DataError> {
    read_table(path, &TEST_COLUMNS, &[], |f, _, p| {
        let image_name = parse_name("image_name", f[0], p);
        let patient_id = parse_name("patient_id", f[1], p);
        let sex = parse_sex(f[2], p);
        let age_approx = parse_age(f[3], p);
        if !p.is_empty() {
            return None;
        }
        Some(TestRow {
            image_name: image_name?,
            patient_id: patient_id?,
            sex,
            age_approx,
            site: parse_site(f[4]),
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Writing

fn fmt_age(age: Option<f32>) -> String {
    match age {
        // The competition files write ages as floats ("45.0"); keep that spelling.
        Some(a) if a.fract() == 0.0 => format!("{a:.1}"),
        Some(a) => a.to_string(),
        None => String::new(),
    }
}

/// Writes `path` through a temporary sibling and a rename, so a reader never sees half a file.
fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut csv::Writer<fs::File>) -> csv::Result<()>,
) -> Result<(), DataError> {
    let write_err = |source| DataError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let file = fs::File::create(&tmp).map_err(write_err)?;
    let mut writer = csv::Writer::from_writer(file);
    let result = fill(&mut writer)
        .and_then(|()| writer.flush().map_err(csv::Error::from))
        .map_err(|e| match e.into_kind() {
            csv::ErrorKind::Io(source) => source,
            other => std::io::Error::other(format!("{other:?}")),
        })
        .and_then(|()| {
            writer
                .into_inner()
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(write_err)
}

/// Writes `rows` as an ISIC 2020 `train.csv`. The `source` column is added only when some row
/// is external, so a pure 2020 table is byte-for-byte the competition's format.
pub fn write_train_csv(path: &Path, rows: &[TrainRow]) -> Result<(), DataError> {
    let with_source = rows.iter().any(TrainRow::is_external);
    write_atomically(path, |w| {
        let mut header: Vec<&str> = TRAIN_COLUMNS.to_vec();
        if with_source {
            header.push(SOURCE_COLUMN);
        }
        w.write_record(&header)?;
        for r in rows {
            let age = fmt_age(r.age_approx);
            let target = r.target.to_string();
            let mut record = vec![
                r.image_name.as_str(),
                r.patient_id.as_str(),
                r.sex.map_or("", Sex::as_str),
                age.as_str(),
                r.site.as_deref().unwrap_or(""),
                r.diagnosis.as_str(),
                r.benign_malignant.as_str(),
                target.as_str(),
            ];
            if with_source {
                record.push(r.source.as_str());
            }
            w.write_record(&record)?;
        }
        Ok(())
    })
}

/// Writes `rows` as an ISIC 2020 `test.csv`.
pub fn write_test_csv(path: &Path, rows: &[TestRow]) -> Result<(), DataError> {
    write_atomically(path, |w| {
        w.write_record(TEST_COLUMNS)?;
        for r in rows {
            let age = fmt_age(r.age_approx);
            w.write_record([
                r.image_name.as_str(),
                r.patient_id.as_str(),
                r.sex.map_or("", Sex::as_str),
                age.as_str(),
                r.site.as_deref().unwrap_or(""),
            ])?;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Merging sources

/// Builds a new dataset folder `out` from `base` plus the train rows of `extra`, which are
/// marked with `source` (e.g. `isic2019`) and so only ever train. `base`'s test set is kept;
/// `extra`'s is ignored. Images are hard-linked where the file system allows, copied otherwise.
///
/// A merge is a new folder rather than an in-memory union because a dataset is identified by
/// the content hash of one folder (shared/DESIGN.md, "Data and predictions"): the merged rows
/// must be registrable and fetchable like any other dataset. Both inputs are validated first;
/// `out` is built in a temporary sibling and renamed into place, so it never exists half-built.
pub fn merge_folders(
    base: &Path,
    extra: &Path,
    source: &str,
    out: &Path,
) -> Result<Dataset, DataError> {
    let source = source.trim().to_ascii_lowercase();
    if source.is_empty() || source == SOURCE_ISIC2020 {
        return Err(DataError::Merge(format!(
            "expected an external source name such as isic2019, found {source:?}"
        )));
    }
    if out.exists() {
        return Err(DataError::Merge(format!(
            "expected a new output folder, found {} already there",
            out.display()
        )));
    }
    let base_ds = Dataset::load(base)?;
    let extra_ds = Dataset::load(extra)?;
    let names: HashSet<&str> = base_ds
        .train
        .iter()
        .map(|r| r.image_name.as_str())
        .chain(base_ds.test.iter().map(|r| r.image_name.as_str()))
        .collect();
    if let Some(clash) = extra_ds
        .train
        .iter()
        .find(|r| names.contains(r.image_name.as_str()))
    {
        return Err(DataError::Merge(format!(
            "expected image names unique across both datasets, found {} in {} and in {}",
            clash.image_name,
            base.display(),
            extra.display()
        )));
    }

    let parent = out.parent().unwrap_or(Path::new("."));
    let tmp = parent.join(format!(
        ".{}.merge-{}",
        out.file_name()
            .map_or("out".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let built = (|| {
        let images = tmp.join(IMAGES_DIR);
        fs::create_dir_all(&images).map_err(|source| DataError::Write {
            path: images.clone(),
            source,
        })?;
        let link = |root: &Path, name: &str| -> Result<(), DataError> {
            let from = image_path(root, name);
            let to = image_path(&tmp, name);
            fs::hard_link(&from, &to)
                .or_else(|_| fs::copy(&from, &to).map(|_| ()))
                .map_err(|source| DataError::Write { path: to, source })
        };
        for name in base_ds
            .train
            .iter()
            .map(|r| &r.image_name)
            .chain(base_ds.test.iter().map(|r| &r.image_name))
        {
            link(base, name)?;
        }
        let mut train = base_ds.train.clone();
        for row in &extra_ds.train {
            link(extra, &row.image_name)?;
            train.push(TrainRow {
                source: source.clone(),
                ..row.clone()
            });
        }
        write_train_csv(&tmp.join(TRAIN_CSV), &train)?;
        write_test_csv(&tmp.join(TEST_CSV), &base_ds.test)?;
        fs::rename(&tmp, out).map_err(|source| DataError::Write {
            path: out.to_path_buf(),
            source,
        })?;
        Ok(train)
    })();
    match built {
        Ok(train) => Ok(Dataset {
            root: out.to_path_buf(),
            train,
            test: base_ds.test,
        }),
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}
