//! stackhive datasets: the ISIC 2020 file layout (`train.csv`, `test.csv`, `images/*.jpg`), its
//! loader and validator, content hashing, the synthetic ISIC-like generator with a known oracle
//! AUC, the fold schemes (triple-stratified K-fold by default), the preprocessed image cache, and
//! the level-2 feature matrices built from level-1 predictions (`features`, `matrix`).
//! Pure data code: no network, no database, no libtorch.

pub mod align;
pub mod auc;
pub mod cache;
pub mod error;
pub mod features;
pub mod folds;
pub mod hash;
pub mod isic;
pub mod matrix;
pub mod restack;
pub mod synth;
pub mod validate;
