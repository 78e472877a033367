//! `stackhive-stacker serve`: the long-lived process a worker sends `stack` jobs to
//! (`stackhive_spec::stacker`). Each request runs on a thread of its own, its folds side by
//! side on as many of the process's cores (`--cores`, the worker's slots) as the request names,
//! with idle cores lent to jobs whose folds are waiting (`cores`). Matrices are read once and
//! kept (the last `KEEP` feature sets), with everything the jobs of a set share (`Prepared`).
//!
//! Must not: write anything but reply lines to stdout (a log line there would break the
//! protocol: libraries' logs are routed to stderr or dropped).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use stackhive_data::matrix::FeatureMatrix;
use stackhive_spec::stacker::{StackFailure, StackResult, StackerReply, StackerRequest};

use crate::cores::{Cores, LEND_AFTER};
use crate::error::StackError;
use crate::kfold::run_until;
use crate::prep::Prepared;

/// Feature sets kept in memory.
const KEEP: usize = 4;

#[derive(Default)]
struct State {
    sets: Mutex<VecDeque<(String, Arc<Prepared>)>>,
    /// Serialises the reading of one set, so two jobs of a new set read it once.
    loading: Mutex<()>,
    cancelled: Mutex<HashSet<u64>>,
}

impl State {
    fn prepared(&self, id: &str, path: &Path) -> Result<Arc<Prepared>, StackError> {
        let find = || {
            let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
            sets.iter().find(|(k, _)| k == id).map(|(_, p)| p.clone())
        };
        if let Some(p) = find() {
            return Ok(p);
        }
        let _one = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = find() {
            return Ok(p);
        }
        let bytes = std::fs::read(path)
            .map_err(|e| StackError::Io(format!("cannot read {}: {e}", path.display())))?;
        let matrix =
            FeatureMatrix::from_bytes(&bytes).map_err(|e| StackError::Input(e.to_string()))?;
        let p = Arc::new(Prepared::new(matrix)?);
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.push_back((id.to_string(), p.clone()));
        while sets.len() > KEEP {
            sets.pop_front();
        }
        Ok(p)
    }
}

fn reply(out: &Mutex<std::io::Stdout>, r: &StackerReply) {
    let line = serde_json::to_string(r).expect("replies serialise");
    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
    // A worker that went away ends the process at the next read anyway.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Serves requests from stdin until it closes, with `cores` cores for its jobs.
pub fn serve(cores: usize) {
    // Folds run side by side, one thread each: a net's intra-op threads too (the process's
    // setting; `models::nets::fit` also sets each fold's thread, whose settings are its own).
    tch::set_num_threads(1);
    let state = Arc::new(State::default());
    let cores = Arc::new(Cores::new(cores, LEND_AFTER));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let stdin = std::io::stdin();
    let mut running: HashMap<u64, std::thread::JoinHandle<()>> = HashMap::new();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        running.retain(|_, h| !h.is_finished());
        match serde_json::from_str::<StackerRequest>(&line) {
            Ok(StackerRequest::Cancel { id }) => {
                state
                    .cancelled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id);
            }
            Ok(StackerRequest::Reserve { cores: n }) => cores.reserve(n),
            Ok(StackerRequest::Run {
                id,
                matrix,
                matrix_id,
                job,
                threads,
            }) => {
                let (state, out, cores) = (state.clone(), out.clone(), cores.clone());
                let handle = std::thread::spawn(move || {
                    let cancelled = || {
                        state
                            .cancelled
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .contains(&id)
                    };
                    let outcome = state
                        .prepared(&matrix_id, &matrix)
                        .and_then(|prep| {
                            let o = run_until(&job, &prep, &cores, threads.max(1), &cancelled)?;
                            Ok(StackResult {
                                oof_rows: prep.matrix.source_rows.clone(),
                                oof: o.oof,
                                test: o.test,
                                cv_auc: o.cv_auc,
                                fold_aucs: o.fold_aucs,
                                seconds: o.seconds,
                            })
                        })
                        .map_err(|e| StackFailure {
                            retryable: e.retryable(),
                            message: e.to_string(),
                        });
                    state
                        .cancelled
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    reply(&out, &StackerReply { id, outcome });
                });
                running.insert(id, handle);
            }
            Err(e) => eprintln!("stackhive-stacker: ignoring a request that does not parse: {e}"),
        }
    }
    for (_, h) in running {
        let _ = h.join();
    }
}
