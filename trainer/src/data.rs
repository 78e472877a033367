//! The tensor side of a fold: which cached images train, validate and get predicted, and the
//! batches made from them. Images come from `stackhive_data::cache::ImageCache` (HWC `u8`,
//! already cropped and resized), so a batch is a gather and one host-to-device copy; scaling,
//! ImageNet normalisation and flips run on the device. It must not decode JPEGs or decide folds:
//! the data crate does both.

use stackhive_data::cache::ImageCache;
use stackhive_data::folds::Folds;
use stackhive_data::isic::Dataset;
use tch::{Device, Kind, Tensor};

use crate::error::TrainerError;
use crate::meta::{self, META_DIM};

/// ImageNet channel statistics, for weights pre-trained there.
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

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

/// Gathers examples `idx` of `ex` from `cache` into a batch on `device`. With `flip`, each
/// image is flipped horizontally and vertically with probability ½ each (torch's generator, so
/// `tch::manual_seed` fixes the draws).
pub fn make_batch(
    cache: &ImageCache,
    ex: &Examples,
    idx: &[usize],
    device: Device,
    flip: bool,
) -> Batch {
    let s = cache.size() as i64;
    let n = idx.len() as i64;
    let mut pixels = Vec::with_capacity(idx.len() * cache.image_len());
    let mut meta = Vec::with_capacity(idx.len() * META_DIM);
    for &i in idx {
        pixels.extend_from_slice(cache.image(ex.images[i]));
        meta.extend_from_slice(&ex.meta[i]);
    }
    let images = Tensor::from_slice(&pixels)
        .view([n, s, s, 3])
        .to_device(device);
    let mut images = normalize(&images);
    if flip {
        images = random_flip(&images, 3);
        images = random_flip(&images, 2);
    }
    let meta = Tensor::from_slice(&meta)
        .view([n, META_DIM as i64])
        .to_device(device);
    let labels = ex.is_labelled().then(|| {
        let l: Vec<f32> = idx.iter().map(|&i| f32::from(ex.labels[i])).collect();
        Tensor::from_slice(&l).to_device(device)
    });
    Batch {
        images,
        meta,
        labels,
    }
}

/// HWC `u8` → CHW float, scaled to 0..1 and normalised with the ImageNet statistics.
fn normalize(hwc: &Tensor) -> Tensor {
    let device = hwc.device();
    let mean = Tensor::from_slice(&MEAN)
        .view([1, 3, 1, 1])
        .to_device(device);
    let std = Tensor::from_slice(&STD)
        .view([1, 3, 1, 1])
        .to_device(device);
    let x = hwc.permute([0, 3, 1, 2]).to_kind(Kind::Float) / 255.0;
    ((x - mean) / std).contiguous()
}

/// Flips each image along `dim` with probability ½.
fn random_flip(x: &Tensor, dim: i64) -> Tensor {
    let n = x.size()[0];
    let mask = Tensor::rand([n, 1, 1, 1], (Kind::Float, x.device())).lt(0.5);
    x.flip([dim]).where_self(&mask, x)
}
