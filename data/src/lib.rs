//! stackhive datasets: the ISIC 2020 file layout (`train.csv`, `test.csv`, `images/*.jpg`), its
//! loader and validator, content hashing, the synthetic ISIC-like generator with a known oracle
//! AUC, the fold schemes (triple-stratified K-fold by default), and the preprocessed image cache.
//! Pure data code: no network, no database, no libtorch.

pub mod auc;
pub mod cache;
pub mod error;
pub mod folds;
pub mod hash;
pub mod isic;
pub mod synth;
pub mod validate;
