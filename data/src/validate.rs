//! Loading a dataset folder with every check the rest of stackhive relies on: required columns,
//! parsable values, unique `image_name`s, test rows disjoint from train rows, and an image file
//! for every row that really is a JPEG. Problems are gathered over the whole folder and
//! reported together — the first few offending rows of each kind with file, line and what was
//! expected and found, and a count per kind — so one run shows everything to fix.
//! Must not: return a partly loaded dataset. Either every row passes, or the caller asked for
//! `drop_invalid` and the report says exactly which rows were dropped and why.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::isic::{self, Dataset, Record, Table, TEST_CSV, TRAIN_CSV};

/// How many offending rows of each kind an error or report shows.
pub const MAX_EXAMPLES: usize = 5;

/// How hard to look at each image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageCheck {
    /// Do not look at the images folder at all (e.g. a fold report from the CSVs alone).
    Skip,
    /// The file exists.
    Exists,
    /// The default: the file is JPEG data whose header decodes (dimensions known) and which
    /// ends with the end-of-image marker `FF D9`. Decoding the header catches garbage and
    /// non-JPEG files; the end marker catches truncation — the usual damage from an interrupted
    /// copy or download. Together they cost two small reads per file, where a full decode of
    /// ISIC 2020's 33,126 images (many of them 6000×4000) costs minutes of CPU; the cache build
    /// decodes every pixel anyway and reports a file that is damaged inside.
    #[default]
    Header,
    /// Decode every pixel as well as checking the end marker. (The JPEG decoder pads a
    /// truncated scan rather than failing, so the end-marker check stays on here too.)
    Full,
}

/// Options of `load_and_validate`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateOptions {
    /// Drop invalid rows (and report how many, per reason) instead of refusing the dataset.
    /// Missing columns and unreadable files stay errors: no row can be trusted then.
    pub drop_invalid: bool,
    pub image_check: ImageCheck,
}

/// What can be wrong with one row. The order is the order of the checks: a dropped row with
/// several problems is counted under the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// Wrong number of fields, or bytes that are not UTF-8.
    MalformedRow,
    /// An empty `image_name`/`patient_id`, an unsafe `image_name`, an unknown `sex`.
    BadValue,
    /// A `target` other than 0 or 1.
    BadTarget,
    /// An `age_approx` that is not a non-negative number.
    BadNumber,
    /// An `image_name` already used by an earlier row of the same file; the first row wins.
    DuplicateImageName,
    /// A test row whose `image_name` is also a train row; the train row wins.
    TestRowInTrain,
    MissingImage,
    /// An image file that is not a decodable, complete JPEG.
    BadImage,
}

impl ProblemKind {
    pub fn describe(self) -> &'static str {
        match self {
            ProblemKind::MalformedRow => "malformed csv row",
            ProblemKind::BadValue => "bad value",
            ProblemKind::BadTarget => "label outside {0, 1}",
            ProblemKind::BadNumber => "unparsable number",
            ProblemKind::DuplicateImageName => "duplicate image_name",
            ProblemKind::TestRowInTrain => "test row also in train",
            ProblemKind::MissingImage => "missing image file",
            ProblemKind::BadImage => "image not a decodable jpeg",
        }
    }
}

/// One problem of one row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `train.csv` or `test.csv`.
    pub file: String,
    /// 1-based line in that file (the header is line 1).
    pub line: u64,
    pub image_name: String,
    pub kind: ProblemKind,
    /// What was expected and what was found.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.image_name.is_empty() {
            "(empty)"
        } else {
            &self.image_name
        };
        write!(
            f,
            "{} line {}, image_name {}: {}",
            self.file, self.line, name, self.detail
        )
    }
}

/// All rows with a problem of one kind: how many, and the first `MAX_EXAMPLES` in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindSummary {
    pub count: usize,
    pub examples: Vec<Problem>,
}

/// The problems found in one dataset folder, per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problems {
    pub root: PathBuf,
    pub kinds: BTreeMap<ProblemKind, KindSummary>,
}

impl Problems {
    fn add(&mut self, problem: Problem) {
        let summary = self.kinds.entry(problem.kind).or_default();
        summary.count += 1;
        if summary.examples.len() < MAX_EXAMPLES {
            summary.examples.push(problem);
        }
    }

    /// Rows with a problem of `kind`.
    pub fn count(&self, kind: ProblemKind) -> usize {
        self.kinds.get(&kind).map_or(0, |s| s.count)
    }

    /// Problems of all kinds (a row with two kinds of problem counts twice).
    pub fn total(&self) -> usize {
        self.kinds.values().map(|s| s.count).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dataset {} is invalid: {} problem(s) of {} kind(s), nothing was loaded",
            self.root.display(),
            self.total(),
            self.kinds.len()
        )?;
        for (kind, summary) in &self.kinds {
            write!(f, "\n  {}: {} row(s)", kind.describe(), summary.count)?;
            for p in &summary.examples {
                write!(f, "\n    {p}")?;
            }
            if summary.count > summary.examples.len() {
                write!(
                    f,
                    "\n    … and {} more",
                    summary.count - summary.examples.len()
                )?;
            }
        }
        write!(f, "\n  (drop_invalid drops these rows instead)")
    }
}

/// What `load_and_validate` found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationReport {
    pub root: PathBuf,
    /// Rows kept.
    pub train_rows: usize,
    pub test_rows: usize,
    /// Kept train rows from sources other than isic2020.
    pub external_rows: usize,
    /// Kept train rows per source.
    pub sources: BTreeMap<String, usize>,
    /// Columns present but not used, as `file: column`.
    pub ignored_columns: Vec<String>,
    pub image_check: ImageCheck,
    /// Distinct image files looked at.
    pub images_checked: usize,
    /// With `drop_invalid`: rows dropped, per (first) reason.
    pub dropped: BTreeMap<ProblemKind, usize>,
    /// With `drop_invalid`: the problems behind the dropped rows (empty otherwise).
    pub problems: Problems,
}

impl ValidationReport {
    pub fn dropped_total(&self) -> usize {
        self.dropped.values().sum()
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} train rows ({} external), {} test rows, {} images checked ({:?})",
            self.root.display(),
            self.train_rows,
            self.external_rows,
            self.test_rows,
            self.images_checked,
            self.image_check
        )?;
        for (source, n) in &self.sources {
            write!(f, "\n  source {source}: {n} train rows")?;
        }
        if !self.ignored_columns.is_empty() {
            write!(
                f,
                "\n  ignored columns: {}",
                self.ignored_columns.join(", ")
            )?;
        }
        if self.dropped_total() > 0 {
            write!(f, "\n  dropped {} invalid row(s):", self.dropped_total())?;
            for (kind, n) in &self.dropped {
                write!(f, "\n    {}: {n}", kind.describe())?;
            }
            for summary in self.problems.kinds.values() {
                for p in &summary.examples {
                    write!(f, "\n    e.g. {p}")?;
                }
            }
        }
        Ok(())
    }
}

/// Per-row problem lists of one table, indexed like its records.
type RowProblems = Vec<Vec<(ProblemKind, String)>>;

fn initial_problems<T>(table: &mut Table<T>) -> RowProblems {
    table
        .records
        .iter_mut()
        .map(|r| match &mut r.parsed {
            Ok(_) => Vec::new(),
            Err(p) => std::mem::take(p),
        })
        .collect()
}

/// Marks every row after the first with the same `image_name`; returns name → first line.
fn mark_duplicates<'a, T>(
    records: &'a [Record<T>],
    problems: &mut RowProblems,
) -> HashMap<&'a str, u64> {
    let mut first: HashMap<&str, u64> = HashMap::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        if r.image_name.is_empty() {
            continue;
        }
        if let Some(&line) = first.get(r.image_name.as_str()) {
            problems[i].push((
                ProblemKind::DuplicateImageName,
                format!("expected a unique image_name, found it again (first at line {line})"),
            ));
        } else {
            first.insert(&r.image_name, r.line);
        }
    }
    first
}

/// Loads `root` (the ISIC 2020 layout, see `isic`) and checks it. On success every returned
/// row is valid; with `opts.drop_invalid` unset, any row-level problem makes this an
/// `DataError::Invalid` listing the first offending rows per kind and the count per kind.
pub fn load_and_validate(
    root: &Path,
    opts: &ValidateOptions,
) -> Result<(Dataset, ValidationReport), DataError> {
    let train_path = root.join(TRAIN_CSV);
    let test_path = root.join(TEST_CSV);
    let mut train = isic::read_train(&train_path)?;
    let mut test = isic::read_test(&test_path)?;
    let mut train_problems = initial_problems(&mut train);
    let mut test_problems = initial_problems(&mut test);

    let train_names = mark_duplicates(&train.records, &mut train_problems);
    mark_duplicates(&test.records, &mut test_problems);
    for (i, r) in test.records.iter().enumerate() {
        if let Some(line) = train_names.get(r.image_name.as_str()) {
            test_problems[i].push((
                ProblemKind::TestRowInTrain,
                format!(
                    "expected test rows disjoint from train rows, found this image_name at {TRAIN_CSV} line {line}"
                ),
            ));
        }
    }

    // Every usable name once (a duplicate row shares its image), checked in parallel.
    let mut names: Vec<&str> = train
        .records
        .iter()
        .map(|r| r.image_name.as_str())
        .chain(test.records.iter().map(|r| r.image_name.as_str()))
        .filter(|n| is_safe_name(n))
        .collect();
    names.sort_unstable();
    names.dedup();
    let image_results: HashMap<&str, (ProblemKind, String)> =
        if opts.image_check == ImageCheck::Skip {
            HashMap::new()
        } else {
            names
                .par_iter()
                .filter_map(|&name| {
                    check_image(&isic::image_path(root, name), opts.image_check)
                        .err()
                        .map(|p| (name, p))
                })
                .collect()
        };
    let images_checked = if opts.image_check == ImageCheck::Skip {
        0
    } else {
        names.len()
    };
    attach(&train.records, &mut train_problems, &image_results);
    attach(&test.records, &mut test_problems, &image_results);

    let mut all = Problems {
        root: root.to_path_buf(),
        kinds: BTreeMap::new(),
    };
    let mut dropped = BTreeMap::new();
    collect(
        TRAIN_CSV,
        &train.records,
        &mut train_problems,
        &mut all,
        &mut dropped,
    );
    collect(
        TEST_CSV,
        &test.records,
        &mut test_problems,
        &mut all,
        &mut dropped,
    );
    if !all.is_empty() && !opts.drop_invalid {
        tracing::warn!(root = %root.display(), problems = all.total(), "dataset rejected");
        return Err(DataError::Invalid(Box::new(all)));
    }

    let found_train = train.records.len();
    let train_rows: Vec<_> = keep(train.records, &train_problems);
    let test_rows: Vec<_> = keep(test.records, &test_problems);
    if train_rows.is_empty() {
        return Err(DataError::NoTrainRows {
            path: train_path,
            found: found_train,
        });
    }
    let mut sources = BTreeMap::new();
    for r in &train_rows {
        *sources.entry(r.source.clone()).or_insert(0) += 1;
    }
    let ignored_columns = train
        .extra_columns
        .iter()
        .map(|c| format!("{TRAIN_CSV}: {c}"))
        .chain(
            test.extra_columns
                .iter()
                .map(|c| format!("{TEST_CSV}: {c}")),
        )
        .collect();
    let report = ValidationReport {
        root: root.to_path_buf(),
        train_rows: train_rows.len(),
        test_rows: test_rows.len(),
        external_rows: train_rows.iter().filter(|r| r.is_external()).count(),
        sources,
        ignored_columns,
        image_check: opts.image_check,
        images_checked,
        dropped,
        problems: all,
    };
    tracing::info!(
        root = %root.display(),
        train = report.train_rows,
        test = report.test_rows,
        external = report.external_rows,
        dropped = report.dropped_total(),
        "dataset loaded"
    );
    let dataset = Dataset {
        root: root.to_path_buf(),
        train: train_rows,
        test: test_rows,
    };
    Ok((dataset, report))
}

/// Moves per-row problems into the summary, in file order, and counts each invalid row once
/// under its first problem.
fn collect<T>(
    file: &str,
    records: &[Record<T>],
    problems: &mut RowProblems,
    all: &mut Problems,
    dropped: &mut BTreeMap<ProblemKind, usize>,
) {
    for (record, row_problems) in records.iter().zip(problems.iter_mut()) {
        row_problems.sort_by_key(|(kind, _)| *kind);
        if let Some((first, _)) = row_problems.first() {
            *dropped.entry(*first).or_insert(0) += 1;
        }
        let mut seen_kind = None;
        for (kind, detail) in row_problems.iter() {
            // One entry per (row, kind): a row with two bad values is one "bad value" row.
            if seen_kind == Some(*kind) {
                continue;
            }
            seen_kind = Some(*kind);
            all.add(Problem {
                file: file.to_string(),
                line: record.line,
                image_name: record.image_name.clone(),
                kind: *kind,
                detail: detail.clone(),
            });
        }
    }
}

/// Adds each row's image problem, if its image has one.
fn attach<T>(
    records: &[Record<T>],
    problems: &mut RowProblems,
    image_results: &HashMap<&str, (ProblemKind, String)>,
) {
    for (record, row_problems) in records.iter().zip(problems.iter_mut()) {
        if let Some(p) = image_results.get(record.image_name.as_str()) {
            row_problems.push(p.clone());
        }
    }
}

fn keep<T>(records: Vec<Record<T>>, problems: &RowProblems) -> Vec<T> {
    records
        .into_iter()
        .zip(problems)
        .filter(|(_, p)| p.is_empty())
        .filter_map(|(r, _)| r.parsed.ok())
        .collect()
}

fn is_safe_name(n: &str) -> bool {
    !n.is_empty() && !n.contains(['/', '\\', '\0']) && n != "." && n != ".."
}

/// Checks one image file as `check` asks; `Ok` holds the dimensions when they were read.
/// Public so other stages (the image cache, a worker's fetched copy) can apply the same test.
pub fn check_image(
    path: &Path,
    check: ImageCheck,
) -> Result<Option<(u32, u32)>, (ProblemKind, String)> {
    let shown = shown_path(path);
    let bad = |detail: String| (ProblemKind::BadImage, format!("{shown}: {detail}"));
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err((
                ProblemKind::MissingImage,
                format!("expected image file {shown}, found none"),
            ))
        }
        Err(e) => return Err(bad(format!("expected a readable file, found error: {e}"))),
    };
    let len = match file.metadata() {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return Err(bad("expected a file, found a directory".into())),
        Err(e) => return Err(bad(format!("expected a readable file, found error: {e}"))),
    };
    if check == ImageCheck::Skip || check == ImageCheck::Exists {
        return Ok(None);
    }
    // The magic first, so a wrong file is called what it is rather than "truncated".
    let mut head = Vec::with_capacity(16);
    (&mut file)
        .take(16)
        .read_to_end(&mut head)
        .map_err(|e| bad(format!("expected a readable file, found error: {e}")))?;
    if !head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        let what = image::guess_format(&head)
            .ok()
            .and_then(|f| f.extensions_str().first().copied())
            .unwrap_or("unrecognised");
        return Err(bad(format!(
            "expected jpeg data (starting ff d8 ff), found {what} data"
        )));
    }
    check_end_marker(&mut file, len).map_err(bad)?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| bad(format!("cannot rewind: {e}")))?;
    let reader = image::ImageReader::with_format(BufReader::new(file), image::ImageFormat::Jpeg);
    let dims = if check == ImageCheck::Full {
        let img = reader
            .decode()
            .map_err(|e| bad(format!("expected a decodable jpeg, found: {e}")))?;
        (img.width(), img.height())
    } else {
        reader
            .into_dimensions()
            .map_err(|e| bad(format!("expected a decodable jpeg header, found: {e}")))?
    };
    Ok(Some(dims))
}

/// A complete JPEG ends with the end-of-image marker FF D9 (ITU-T T.81, B.2.1). Some encoders
/// pad with zero bytes after it, which is tolerated; a truncated file ends inside the
/// compressed scan instead, where FF D9 cannot occur (T.81 B.1.1.5: an FF there is stuffed).
fn check_end_marker(file: &mut File, len: u64) -> Result<(), String> {
    const TAIL: u64 = 64;
    if len < 4 {
        return Err(format!("expected a jpeg file, found {len} bytes"));
    }
    let start = len.saturating_sub(TAIL);
    let mut tail = Vec::with_capacity(TAIL as usize);
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.take(TAIL).read_to_end(&mut tail))
        .map_err(|e| format!("cannot read the end of the file: {e}"))?;
    let end = tail.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if end >= 2 && tail[end - 2..end] == [0xFF, 0xD9] {
        Ok(())
    } else {
        let last: Vec<String> = tail[end.saturating_sub(2)..end]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Err(format!(
            "expected the jpeg end marker ff d9 at the end, found {} (truncated or not a jpeg)",
            if last.is_empty() {
                "only zero bytes".to_string()
            } else {
                last.join(" ")
            }
        ))
    }
}

/// `images/NAME.jpg` — the path relative to the dataset root, as the user knows it.
fn shown_path(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{}/{name}", isic::IMAGES_DIR)
}
