//! Initial weights that fit across sizes (issue 4, item 3): load a checkpoint saved by
//! `VarStore::save` into a network of another size, copying every tensor whose name and shape
//! fit, optionally the overlapping leading slice of tensors whose shapes differ, and report what
//! was loaded, sliced and left at random. This is how one pre-trained set of weights seeds
//! networks of every size. It must never resize the model's tensors, only write into them.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

use crate::error::TrainerError;

/// A tensor loaded partially: its shape in the checkpoint and in the model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sliced {
    pub name: String,
    pub from: Vec<i64>,
    pub to: Vec<i64>,
}

/// What [`load_fitting`] did. Names are sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Copied whole (same name and shape).
    pub loaded: Vec<String>,
    /// Same name and rank, other shape: the overlapping slice was copied.
    pub sliced: Vec<Sliced>,
    /// The model's tensors left at their random initialisation.
    pub random: Vec<String>,
    /// Checkpoint tensors that matched no model tensor by name.
    pub unused: Vec<String>,
}

impl LoadReport {
    /// One line for logs: `loaded 180, sliced 25, random 6 of 211 tensors; 12 unused`.
    pub fn summary(&self) -> String {
        let total = self.loaded.len() + self.sliced.len() + self.random.len();
        format!(
            "loaded {}, sliced {}, random {} of {total} tensors; {} unused",
            self.loaded.len(),
            self.sliced.len(),
            self.random.len(),
            self.unused.len()
        )
    }
}

/// Loads the checkpoint at `path` into `vs` as far as it fits; with `slice`, tensors of the same
/// rank but another shape get the overlapping leading block `[..min(a0, b0), ..min(a1, b1), …]`
/// and keep their initial values elsewhere. Fails, changing nothing, when no tensor fits.
pub fn load_fitting(vs: &VarStore, path: &Path, slice: bool) -> Result<LoadReport, TrainerError> {
    let read_err = |source| TrainerError::ReadWeights {
        path: path.to_path_buf(),
        source,
    };
    let named = Tensor::load_multi_with_device(path, vs.device()).map_err(read_err)?;
    load_fitting_tensors(vs, named, slice).map_err(|e| match e {
        FitError::Nothing { tensors } => TrainerError::WeightsFitNothing {
            path: path.to_path_buf(),
            tensors,
        },
        FitError::Torch(e) => read_err(e),
    })
}

pub(crate) enum FitError {
    Nothing { tensors: usize },
    Torch(tch::TchError),
}

/// [`load_fitting`] on tensors already in memory.
pub(crate) fn load_fitting_tensors(
    vs: &VarStore,
    named: Vec<(String, Tensor)>,
    slice: bool,
) -> Result<LoadReport, FitError> {
    let mut source: HashMap<String, Tensor> = named.into_iter().collect();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));

    // Plan first, so a checkpoint that fits nothing leaves the model untouched.
    let mut plan = Vec::new();
    let mut report = LoadReport::default();
    for (name, var) in vars {
        let Some(src) = source.remove(&name) else {
            report.random.push(name);
            continue;
        };
        let (from, to) = (src.size(), var.size());
        if from == to {
            report.loaded.push(name.clone());
            plan.push((var, src, None));
        } else if slice && from.len() == to.len() {
            let overlap: Vec<i64> = from.iter().zip(&to).map(|(a, b)| *a.min(b)).collect();
            report.sliced.push(Sliced {
                name: name.clone(),
                from,
                to,
            });
            plan.push((var, src, Some(overlap)));
        } else {
            report.random.push(name);
        }
    }
    if plan.is_empty() {
        return Err(FitError::Nothing {
            tensors: report.random.len(),
        });
    }
    report.unused = source.into_keys().collect();
    report.unused.sort();

    tch::no_grad(|| -> Result<(), tch::TchError> {
        for (mut var, src, overlap) in plan {
            let src = src.f_to_kind(var.kind())?;
            match overlap {
                None => var.f_copy_(&src)?,
                Some(overlap) => {
                    let (mut dst, mut s) = (var.shallow_clone(), src);
                    for (d, &n) in overlap.iter().enumerate() {
                        dst = dst.f_narrow(d as i64, 0, n)?;
                        s = s.f_narrow(d as i64, 0, n)?;
                    }
                    dst.f_copy_(&s)?;
                }
            }
        }
        Ok(())
    })
    .map_err(FitError::Torch)?;
    Ok(report)
}
