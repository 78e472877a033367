//! The tensor side of a fold: which cached images train, validate and get predicted, and the
//! `Batch` they become on the device. Images come from `stackhive_data::cache::ImageCache` (HWC
//! `u8`, already cropped and resized); the `loader` gathers and augments them on CPU threads and
//! normalises them on the device. It must not decode JPEGs or decide folds: the data crate does
//! both.

use stackhive_data::cache::ImageCache;
use stackhive_data::folds::Folds;
use stackhive_data::isic::Dataset;
use tch::Tensor;

use crate::error::TrainerError;
use crate::meta::{self, META_DIM};

/// A list of examples: their images in the cache, labels (absent for test rows) and metadata.
#[derive(Clone, Debug, Default)]
pub struct Examples {
    /// Index of each example's image in the cache.
    pub images: Vec<usize>,
    /// 0/1 per example; empty for unlabelled (test) examples.
    pub labels: Vec<u8>,
    pub meta: Vec<[f32; META_DIM]>,
}

impl Examples {
    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    pub fn is_labelled(&self) -> bool {
        self.labels.len() == self.images.len()
    }
}

/// Everything one fold job reads: training examples (other folds plus external rows),
/// validation examples in row order with their row numbers, and the test set.
#[derive(Debug)]
pub struct FoldData<'a> {
    pub cache: &'a ImageCache,
    pub fold: u16,
    pub train: Examples,
    pub valid: Examples,
    /// Train-table row of each validation example: where the out-of-fold predictions go.
    pub valid_rows: Vec<usize>,
    pub test: Examples,
}

impl<'a> FoldData<'a> {
    /// Splits `dataset` by `folds` for validation fold `fold`, finding every image in `cache`.
    pub fn new(
        dataset: &Dataset,
        folds: &Folds,
        fold: u16,
        cache: &'a ImageCache,
    ) -> Result<FoldData<'a>, TrainerError> {
        if fold >= folds.k {
            return Err(TrainerError::FoldOutOfRange { fold, k: folds.k });
        }
        if folds.len() != dataset.train.len() {
            return Err(TrainerError::FoldRows {
                expected: dataset.train.len(),
                found: folds.len(),
            });
        }
        let find = |name: &str, what: &'static str| {
            cache
                .index_of(name)
                .ok_or_else(|| TrainerError::MissingImage {
                    name: name.to_string(),
                    what,
                    cache: cache.path().to_path_buf(),
                })
        };
        let pick = |rows: &[usize]| -> Result<Examples, TrainerError> {
            let mut ex = Examples::default();
            for &r in rows {
                let row = &dataset.train[r];
                ex.images.push(find(&row.image_name, "train row")?);
                ex.labels.push(row.target);
                ex.meta.push(meta::encode_train(row));
            }
            Ok(ex)
        };
        let valid_rows = folds.validation_rows(fold);
        let train = pick(&folds.training_rows(fold))?;
        let valid = pick(&valid_rows)?;
        for (what, ex) in [("training", &train), ("validation", &valid)] {
            if ex.is_empty() {
                return Err(TrainerError::EmptySplit { fold, what, min: 1 });
            }
        }
        let mut test = Examples::default();
        for row in &dataset.test {
            test.images.push(find(&row.image_name, "test row")?);
            test.meta.push(meta::encode_test(row));
        }
        Ok(FoldData {
            cache,
            fold,
            train,
            valid,
            valid_rows,
            test,
        })
    }
}

/// One batch on the device.
#[derive(Debug)]
pub struct Batch {
    /// `[N, 3, S, S]` float, normalised.
    pub images: Tensor,
    /// `[N, META_DIM]` float.
    pub meta: Tensor,
    /// `[N]` float 0/1; `None` for unlabelled examples.
    pub labels: Option<Tensor>,
}
