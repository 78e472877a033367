//! A small safe layer over LightGBM's C API (`lightgbm3-sys`, LightGBM 4.7 built from source).
//! The crate's high-level `lightgbm3` API consumes its dataset in every training; here a binned
//! dataset outlives its boosters, so one fold's dataset is binned once and trained on by every
//! LightGBM, random-forest and extra-trees job of that fold (issue 12, item 7).
//!
//! Must not: let a booster outlive the dataset it was created on (a `Booster` holds an `Arc`
//! of its dataset), or train two boosters on one dataset at the same time (LightGBM does not
//! promise that is safe: `BinnedDataset::train` takes its lock).

// The workspace denies `unsafe_code`; calling LightGBM's C API cannot be done without it.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::ptr::null_mut;
use std::sync::{Arc, Mutex, MutexGuard, Once};

use lightgbm3_sys as sys;

use crate::error::StackError;

fn check(code: c_int, what: &str) -> Result<(), StackError> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: LightGBM returns a pointer to a thread-local, NUL-terminated message.
    let msg = unsafe { CStr::from_ptr(sys::LGBM_GetLastError()) }
        .to_string_lossy()
        .into_owned();
    Err(StackError::Library(format!("LightGBM {what}: {msg}")))
}

/// LightGBM logs to stdout, which is the stacker's protocol channel: route its log lines away.
fn quiet() {
    static ONCE: Once = Once::new();
    unsafe extern "C" fn drop_line(_: *const c_char) {}
    ONCE.call_once(|| {
        // SAFETY: a function that ignores its argument, valid for the process's lifetime.
        unsafe { sys::LGBM_RegisterLogCallback(Some(drop_line)) };
    });
}

struct Handle(sys::DatasetHandle);

// SAFETY: the handle is only used under the dataset's mutex, and LightGBM datasets are not tied
// to the thread that created them.
unsafe impl Send for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by LGBM_DatasetCreateFromMat and freed once.
        unsafe { sys::LGBM_DatasetFree(self.0) };
    }
}

/// A dataset binned once; boosters train on it one at a time.
pub struct BinnedDataset {
    handle: Mutex<Handle>,
    pub rows: usize,
    pub cols: usize,
}

impl BinnedDataset {
    /// Bins `rows × cols` row-major values with their labels. `feature_pre_filter=false` keeps
    /// every feature, so boosters with any `min_data_in_leaf` can share it.
    pub fn new(
        x: &[f32],
        labels: &[f32],
        rows: usize,
        cols: usize,
        threads: usize,
    ) -> Result<Self, StackError> {
        quiet();
        assert_eq!(x.len(), rows * cols, "dataset values");
        assert_eq!(labels.len(), rows, "dataset labels");
        let params = CString::new(format!(
            "max_bin=255 feature_pre_filter=false verbosity=-1 num_threads={threads}"
        ))
        .expect("no NUL");
        let mut out: sys::DatasetHandle = null_mut();
        // SAFETY: `x` holds rows × cols f32 values, row-major; `out` receives a new handle.
        check(
            unsafe {
                sys::LGBM_DatasetCreateFromMat(
                    x.as_ptr() as *const c_void,
                    sys::C_API_DTYPE_FLOAT32 as c_int,
                    rows as i32,
                    cols as i32,
                    1,
                    params.as_ptr(),
                    null_mut(),
                    &mut out,
                )
            },
            "dataset",
        )?;
        let handle = Handle(out);
        let field = CString::new("label").expect("no NUL");
        // SAFETY: `labels` holds `rows` f32 values; LightGBM copies them.
        check(
            unsafe {
                sys::LGBM_DatasetSetField(
                    handle.0,
                    field.as_ptr(),
                    labels.as_ptr() as *const c_void,
                    rows as c_int,
                    sys::C_API_DTYPE_FLOAT32 as c_int,
                )
            },
            "labels",
        )?;
        Ok(Self {
            handle: Mutex::new(handle),
            rows,
            cols,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Handle> {
        self.handle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Trains `iterations` rounds with `params` (LightGBM's `key=value` string).
    pub fn train(self: &Arc<Self>, params: &str, iterations: usize) -> Result<Booster, StackError> {
        let params =
            CString::new(params).map_err(|_| StackError::Library("parameters hold NUL".into()))?;
        let guard = self.lock();
        let mut out: sys::BoosterHandle = null_mut();
        // SAFETY: the dataset handle is valid while `guard` is held; `out` receives a booster.
        check(
            unsafe { sys::LGBM_BoosterCreate(guard.0, params.as_ptr(), &mut out) },
            "booster",
        )?;
        let booster = Booster {
            handle: out,
            cols: self.cols,
            _dataset: self.clone(),
        };
        for _ in 0..iterations {
            let mut finished: c_int = 0;
            // SAFETY: a live booster on a live dataset, trained under the dataset's lock.
            check(
                unsafe { sys::LGBM_BoosterUpdateOneIter(booster.handle, &mut finished) },
                "training",
            )?;
            if finished != 0 {
                break;
            }
        }
        drop(guard);
        Ok(booster)
    }
}

/// A trained model.
pub struct Booster {
    handle: sys::BoosterHandle,
    cols: usize,
    _dataset: Arc<BinnedDataset>,
}

// SAFETY: a booster is used by one thread at a time (`&mut self` is not needed by LightGBM's
// prediction, which is thread-safe for a fixed model).
unsafe impl Send for Booster {}

impl Booster {
    /// Probabilities for `x` (row-major, the dataset's columns).
    pub fn predict(&self, x: &[f32], threads: usize) -> Result<Vec<f32>, StackError> {
        let rows = x.len() / self.cols.max(1);
        if rows == 0 {
            return Ok(Vec::new());
        }
        let mut out = vec![0f64; rows];
        let mut len: i64 = 0;
        let params = CString::new(format!("num_threads={threads}")).expect("no NUL");
        // SAFETY: `x` holds rows × cols values; `out` has room for one value per row.
        check(
            unsafe {
                sys::LGBM_BoosterPredictForMat(
                    self.handle,
                    x.as_ptr() as *const c_void,
                    sys::C_API_DTYPE_FLOAT32 as c_int,
                    rows as i32,
                    self.cols as i32,
                    1,
                    sys::C_API_PREDICT_NORMAL as c_int,
                    0,
                    -1,
                    params.as_ptr(),
                    &mut len,
                    out.as_mut_ptr(),
                )
            },
            "prediction",
        )?;
        Ok(out.into_iter().map(|v| v as f32).collect())
    }
}

impl Drop for Booster {
    fn drop(&mut self) {
        // SAFETY: created by LGBM_BoosterCreate and freed once.
        unsafe { sys::LGBM_BoosterFree(self.handle) };
    }
}
