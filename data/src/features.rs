//! Level-2 feature matrices (issue 12, item 3 and 4), built from what the cluster collected:
//! - ISIC datasets: the out-of-fold and test predictions of chosen level-1 models, the tabular
//!   metadata (sex, age, site, images per patient), and patient-level features derived from
//!   each model's predictions (the patient's mean and max, and the image's rank and z-score
//!   within its patient: the "ugly duckling" signal);
//! - plain tables: any CSV with an id column, a binary target, an optional group column and
//!   numeric or categorical features, plus an optional test CSV.
//!
//! Rows are the dataset's validating train rows in file order (external rows never validate,
//! so no level-1 model predicts them out of fold) and its test rows. Pure code: the caller
//! brings the predictions; nothing here reads a database.
//!
//! Must not: let a model whose predictions do not cover every row into a matrix (it is refused
//! with its name), or compute a patient feature across train and test.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use crate::error::DataError;
use crate::folds::{self, FoldSpec, Scheme};
use crate::isic::{Dataset, Sex, TrainRow};
use crate::matrix::{Column, FeatureMatrix};

/// One level-1 model's predictions, aligned to the dataset: `oof[i]` for train row `i` (NaN
/// where it has none, as for external rows), `test[j]` for test row `j`.
#[derive(Clone, Debug)]
pub struct Level1 {
    pub name: String,
    pub oof: Vec<f32>,
    pub test: Vec<f32>,
}

/// What an ISIC feature matrix holds besides the models' predictions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extras {
    /// Sex, age, anatomical site, images of the patient.
    pub tabular: bool,
    /// Per model: the patient's mean and max, the image's rank and z-score in its patient.
    pub patient: bool,
}

/// Builds the matrix of `models` over `dataset` with its stored folds (`fold[i]` per train row,
/// negative for rows that never validate).
pub fn isic(
    dataset: &Dataset,
    fold: &[i16],
    k: u16,
    models: &[Level1],
    extras: Extras,
) -> Result<FeatureMatrix, DataError> {
    let bad = |m: String| Err(DataError::Features(m));
    if fold.len() != dataset.train.len() {
        return bad(format!(
            "folds cover {} rows, the dataset has {} train rows",
            fold.len(),
            dataset.train.len()
        ));
    }
    if models.is_empty() && !extras.tabular {
        return bad(
            "expected at least one level-1 model or the tabular columns, found neither".into(),
        );
    }
    let rows: Vec<usize> = (0..fold.len()).filter(|&i| fold[i] >= 0).collect();
    for m in models {
        if m.oof.len() != dataset.train.len() || m.test.len() != dataset.test.len() {
            return bad(format!(
                "level-1 model {} has {} out-of-fold and {} test values, the dataset has {} train and {} test rows",
                m.name,
                m.oof.len(),
                m.test.len(),
                dataset.train.len(),
                dataset.test.len()
            ));
        }
        let missing: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|&i| !m.oof[i].is_finite())
            .collect();
        if let Some(&first) = missing.first() {
            return bad(format!(
                "level-1 model {} has no out-of-fold prediction for {} of the {} validating rows \
                 (first: {}); expected one fold job per fold, all succeeded",
                m.name,
                missing.len(),
                rows.len(),
                dataset.train[first].image_name
            ));
        }
        if let Some(j) = m.test.iter().position(|v| !v.is_finite()) {
            return bad(format!(
                "level-1 model {} has no finite test prediction for {}",
                m.name, dataset.test[j].image_name
            ));
        }
    }

    // Groups: one index per patient over train and test.
    let mut patient_index: HashMap<String, u32> = HashMap::new();
    let mut group = |p: &str| {
        let n = patient_index.len() as u32;
        *patient_index.entry(p.to_string()).or_insert(n)
    };
    let train_groups: Vec<u32> = rows
        .iter()
        .map(|&i| group(&dataset.train[i].patient_id))
        .collect();
    let test_groups: Vec<u32> = dataset.test.iter().map(|r| group(&r.patient_id)).collect();

    let mut b = Builder::new(rows.len(), dataset.test.len());
    for m in models {
        let tr: Vec<f32> = rows.iter().map(|&i| m.oof[i]).collect();
        b.numeric(&m.name, &tr, &m.test);
        if extras.patient {
            for (suffix, f) in PATIENT_FEATURES {
                b.numeric(
                    &format!("{}:{suffix}", m.name),
                    &f(&tr, &train_groups),
                    &f(&m.test, &test_groups),
                );
            }
        }
    }
    if extras.tabular {
        let sex = |s: Option<Sex>| s.map_or(f32::NAN, |s| (s == Sex::Female) as u8 as f32);
        b.categorical(
            "sex",
            2,
            &rows
                .iter()
                .map(|&i| sex(dataset.train[i].sex))
                .collect::<Vec<_>>(),
            &dataset.test.iter().map(|r| sex(r.sex)).collect::<Vec<_>>(),
        );
        b.numeric(
            "age_approx",
            &rows
                .iter()
                .map(|&i| dataset.train[i].age_approx.unwrap_or(f32::NAN))
                .collect::<Vec<_>>(),
            &dataset
                .test
                .iter()
                .map(|r| r.age_approx.unwrap_or(f32::NAN))
                .collect::<Vec<_>>(),
        );
        let sites: BTreeSet<&str> = dataset
            .train
            .iter()
            .filter_map(|r| r.site.as_deref())
            .chain(dataset.test.iter().filter_map(|r| r.site.as_deref()))
            .collect();
        let code: HashMap<&str, f32> = sites
            .iter()
            .enumerate()
            .map(|(i, s)| (*s, i as f32))
            .collect();
        let site = |s: &Option<String>| s.as_deref().map_or(f32::NAN, |s| code[s]);
        b.categorical(
            "anatom_site",
            sites.len().max(1) as u32,
            &rows
                .iter()
                .map(|&i| site(&dataset.train[i].site))
                .collect::<Vec<_>>(),
            &dataset
                .test
                .iter()
                .map(|r| site(&r.site))
                .collect::<Vec<_>>(),
        );
        b.numeric(
            "patient_images",
            &group_sizes(&train_groups),
            &group_sizes(&test_groups),
        );
    }
    let matrix = b.finish(
        rows.iter()
            .map(|&i| dataset.train[i].image_name.clone())
            .collect(),
        dataset.test.iter().map(|r| r.image_name.clone()).collect(),
        rows.iter().map(|&i| dataset.train[i].target).collect(),
        rows.iter().map(|&i| fold[i] as u16).collect(),
        k,
        rows.iter().map(|&i| i as u32).collect(),
        train_groups,
        test_groups,
    );
    matrix.check()?;
    Ok(matrix)
}

type PatientFeature = fn(&[f32], &[u32]) -> Vec<f32>;

/// The within-patient views of one model's predictions.
const PATIENT_FEATURES: [(&str, PatientFeature); 4] = [
    ("patient_mean", patient_mean),
    ("patient_max", patient_max),
    ("rank_in_patient", rank_in_patient),
    ("z_in_patient", z_in_patient),
];

fn members(groups: &[u32]) -> HashMap<u32, Vec<usize>> {
    let mut by: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, &g) in groups.iter().enumerate() {
        by.entry(g).or_default().push(i);
    }
    by
}

fn per_group(values: &[f32], groups: &[u32], f: impl Fn(&[f32]) -> Vec<f32>) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for rows in members(groups).values() {
        let v: Vec<f32> = rows.iter().map(|&i| values[i]).collect();
        for (&i, x) in rows.iter().zip(f(&v)) {
            out[i] = x;
        }
    }
    out
}

fn patient_mean(v: &[f32], g: &[u32]) -> Vec<f32> {
    per_group(v, g, |x| {
        vec![x.iter().sum::<f32>() / x.len() as f32; x.len()]
    })
}

fn patient_max(v: &[f32], g: &[u32]) -> Vec<f32> {
    per_group(v, g, |x| {
        vec![x.iter().copied().fold(f32::MIN, f32::max); x.len()]
    })
}

/// 0 for the patient's lowest prediction, 1 for the highest (0.5 for a patient's only image).
fn rank_in_patient(v: &[f32], g: &[u32]) -> Vec<f32> {
    per_group(v, g, |x| {
        if x.len() == 1 {
            return vec![0.5];
        }
        x.iter()
            .map(|a| {
                let below = x.iter().filter(|b| *b < a).count() as f32;
                let equal = x.iter().filter(|b| *b == a).count() as f32 - 1.0;
                (below + equal / 2.0) / (x.len() - 1) as f32
            })
            .collect()
    })
}

/// How many standard deviations the image stands above its patient's mean (0 when the
/// patient's predictions do not vary).
fn z_in_patient(v: &[f32], g: &[u32]) -> Vec<f32> {
    per_group(v, g, |x| {
        let n = x.len() as f32;
        let mean = x.iter().sum::<f32>() / n;
        let sd = (x.iter().map(|a| (a - mean).powi(2)).sum::<f32>() / n).sqrt();
        x.iter()
            .map(|a| if sd > 0.0 { (a - mean) / sd } else { 0.0 })
            .collect()
    })
}

fn group_sizes(groups: &[u32]) -> Vec<f32> {
    let by = members(groups);
    groups.iter().map(|g| by[g].len() as f32).collect()
}

/// Columns assembled one at a time, stored row-major at the end.
struct Builder {
    columns: Vec<Column>,
    train_cols: Vec<Vec<f32>>,
    test_cols: Vec<Vec<f32>>,
    n: usize,
    m: usize,
}

impl Builder {
    fn new(n: usize, m: usize) -> Self {
        Self {
            columns: Vec::new(),
            train_cols: Vec::new(),
            test_cols: Vec::new(),
            n,
            m,
        }
    }

    fn push(&mut self, col: Column, train: &[f32], test: &[f32]) {
        debug_assert_eq!((train.len(), test.len()), (self.n, self.m));
        let mut col = col;
        // Unique names: a second model called like the first gets a suffix.
        let base = col.name.clone();
        let mut k = 2;
        while self.columns.iter().any(|c| c.name == col.name) {
            col.name = format!("{base}#{k}");
            k += 1;
        }
        self.columns.push(col);
        self.train_cols.push(train.to_vec());
        self.test_cols.push(test.to_vec());
    }

    fn numeric(&mut self, name: &str, train: &[f32], test: &[f32]) {
        self.push(Column::numeric(name), train, test);
    }

    fn categorical(&mut self, name: &str, levels: u32, train: &[f32], test: &[f32]) {
        self.push(Column::categorical(name, levels), train, test);
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        self,
        train_ids: Vec<String>,
        test_ids: Vec<String>,
        labels: Vec<u8>,
        folds: Vec<u16>,
        k: u16,
        source_rows: Vec<u32>,
        train_groups: Vec<u32>,
        test_groups: Vec<u32>,
    ) -> FeatureMatrix {
        let row_major = |cols: &[Vec<f32>], rows: usize| {
            let mut out = Vec::with_capacity(rows * cols.len());
            for r in 0..rows {
                out.extend(cols.iter().map(|c| c[r]));
            }
            out
        };
        FeatureMatrix {
            train: row_major(&self.train_cols, self.n),
            test: row_major(&self.test_cols, self.m),
            columns: self.columns,
            train_ids,
            test_ids,
            labels,
            folds,
            k,
            source_rows,
            train_groups,
            test_groups,
        }
    }
}

/// How a plain table is read.
#[derive(Clone, Debug)]
pub struct TableSpec {
    pub id: String,
    pub target: String,
    /// Rows of one group never straddle folds (a patient, a customer).
    pub group: Option<String>,
    pub k: u16,
    pub seed: u64,
}

/// Builds the matrix of a plain table: every column but the id, target and group is a
/// feature; a column whose every non-empty value parses as a number is numeric, any other is
/// categorical (its levels taken over train and test). Folds are stratified on the target and
/// grouped by `group` when given.
pub fn table(
    train_csv: &Path,
    test_csv: Option<&Path>,
    spec: &TableSpec,
) -> Result<FeatureMatrix, DataError> {
    let bad = |m: String| DataError::Features(m);
    let (header, train) = read_csv(train_csv)?;
    let (test_header, test) = match test_csv {
        Some(p) => read_csv(p)?,
        None => (Vec::new(), Vec::new()),
    };
    let find = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| {
            bad(format!(
                "{}: expected a column {name:?}, found {}",
                train_csv.display(),
                header.join(", ")
            ))
        })
    };
    let id = find(&spec.id)?;
    let target = find(&spec.target)?;
    let group = spec.group.as_deref().map(find).transpose()?;
    let features: Vec<usize> = (0..header.len())
        .filter(|&c| c != id && c != target && Some(c) != group)
        .collect();
    if features.is_empty() {
        return Err(bad(format!(
            "{}: no feature columns besides the id, target and group",
            train_csv.display()
        )));
    }
    // The test CSV must carry the same features (its target and group columns are optional).
    let mut test_pos = Vec::new();
    if test_csv.is_some() {
        let want: Vec<&String> = features.iter().map(|&c| &header[c]).collect();
        let have: Vec<&String> = test_header
            .iter()
            .filter(|h| {
                **h != spec.target && Some(h.as_str()) != spec.group.as_deref() && **h != spec.id
            })
            .collect();
        if want != have || !test_header.contains(&spec.id) {
            return Err(bad(format!(
                "the test CSV's columns differ from the train CSV's: expected {} and {}, found {}",
                spec.id,
                want.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                test_header.join(", ")
            )));
        }
        for &c in &features {
            test_pos.push(
                test_header
                    .iter()
                    .position(|h| *h == header[c])
                    .expect("checked above"),
            );
        }
    }
    let test_id = test_header.iter().position(|h| *h == spec.id);

    let mut labels = Vec::with_capacity(train.len());
    for (line, row) in train.iter().enumerate() {
        match row[target].trim() {
            "0" | "0.0" | "false" => labels.push(0),
            "1" | "1.0" | "true" => labels.push(1),
            other => {
                return Err(bad(format!(
                    "{} line {}: expected a binary target (0 or 1) in {:?}, found {other:?}",
                    train_csv.display(),
                    line + 2,
                    spec.target
                )))
            }
        }
    }
    if !labels.contains(&1) || !labels.contains(&0) {
        return Err(bad(format!(
            "{}: the target {:?} holds only one class; a binary target needs both 0 and 1",
            train_csv.display(),
            spec.target
        )));
    }

    // Folds through the dataset fold machinery: a table row is a TrainRow whose patient is its
    // group (or itself).
    let rows: Vec<TrainRow> = train
        .iter()
        .zip(&labels)
        .map(|(r, &y)| TrainRow {
            image_name: r[id].clone(),
            patient_id: group.map_or_else(|| r[id].clone(), |g| r[g].clone()),
            sex: None,
            age_approx: None,
            site: None,
            diagnosis: String::new(),
            benign_malignant: String::new(),
            target: y,
            source: "isic2020".into(),
        })
        .collect();
    let scheme = if group.is_some() {
        Scheme::TripleStratified
    } else {
        Scheme::Stratified
    };
    let assigned = folds::assign(
        &rows,
        &FoldSpec {
            scheme,
            k: spec.k,
            seed: spec.seed,
        },
    )?;

    let mut gindex: HashMap<String, u32> = HashMap::new();
    let mut gid = |s: &str| {
        let n = gindex.len() as u32;
        *gindex.entry(s.to_string()).or_insert(n)
    };
    let train_groups: Vec<u32> = rows.iter().map(|r| gid(&r.patient_id)).collect();
    let test_groups: Vec<u32> = test
        .iter()
        .enumerate()
        .map(|(j, r)| {
            gid(&format!(
                "\u{0}test-{}",
                test_id.map_or(j.to_string(), |c| r[c].clone())
            ))
        })
        .collect();

    let mut b = Builder::new(train.len(), test.len());
    for (f, &c) in features.iter().enumerate() {
        let tr: Vec<&str> = train.iter().map(|r| r[c].trim()).collect();
        let te: Vec<&str> = test.iter().map(|r| r[test_pos[f]].trim()).collect();
        let numeric = tr
            .iter()
            .chain(&te)
            .all(|v| v.is_empty() || v.parse::<f32>().is_ok());
        if numeric {
            let num = |v: &&str| v.parse::<f32>().unwrap_or(f32::NAN);
            b.numeric(
                &header[c],
                &tr.iter().map(num).collect::<Vec<_>>(),
                &te.iter().map(num).collect::<Vec<_>>(),
            );
        } else {
            let levels: BTreeSet<&str> = tr
                .iter()
                .chain(&te)
                .copied()
                .filter(|v| !v.is_empty())
                .collect();
            let code: HashMap<&str, f32> = levels
                .iter()
                .enumerate()
                .map(|(i, s)| (*s, i as f32))
                .collect();
            let enc = |v: &&str| code.get(v).copied().unwrap_or(f32::NAN);
            b.categorical(
                &header[c],
                levels.len() as u32,
                &tr.iter().map(enc).collect::<Vec<_>>(),
                &te.iter().map(enc).collect::<Vec<_>>(),
            );
        }
    }
    let matrix = b.finish(
        rows.iter().map(|r| r.image_name.clone()).collect(),
        test.iter()
            .enumerate()
            .map(|(j, r)| test_id.map_or(j.to_string(), |c| r[c].clone()))
            .collect(),
        labels,
        assigned.fold.iter().map(|&f| f as u16).collect(),
        spec.k,
        (0..rows.len() as u32).collect(),
        train_groups,
        test_groups,
    );
    matrix.check()?;
    Ok(matrix)
}

type Rows = Vec<Vec<String>>;

fn read_csv(path: &Path) -> Result<(Vec<String>, Rows), DataError> {
    let bad = |m: String| DataError::Features(format!("{}: {m}", path.display()));
    let mut r = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
    let header: Vec<String> = r
        .headers()
        .map_err(|e| bad(e.to_string()))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| bad(e.to_string()))?;
        rows.push(rec.iter().map(str::to_string).collect());
    }
    if rows.is_empty() {
        return Err(bad("expected at least one row, found none".into()));
    }
    Ok((header, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_patient_views() {
        let v = [0.1, 0.9, 0.5, 0.3];
        let g = [0, 0, 0, 1];
        let rank = rank_in_patient(&v, &g);
        assert_eq!(rank, [0.0, 1.0, 0.5, 0.5]);
        let z = z_in_patient(&v, &g);
        assert!(z[1] > 1.0 && z[0] < -1.0 && z[3] == 0.0, "{z:?}");
        assert_eq!(patient_max(&v, &g), [0.9, 0.9, 0.9, 0.3]);
        assert!((patient_mean(&v, &g)[0] - 0.5).abs() < 1e-6);
        assert_eq!(group_sizes(&g), [3.0, 3.0, 3.0, 1.0]);
    }
}
