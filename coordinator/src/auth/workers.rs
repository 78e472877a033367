//! Worker identity: Register hands out a key, and every later worker call must carry the id
//! with that key, so that no client can act as a worker it is not (the store fences each
//! report by job, attempt and worker on top). Verified keys are cached: a worker's key never
//! changes, so a cached match stays true; whether the worker is still registered is the
//! store's check on the calls where it matters (lease, heartbeat).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::secrets;
use crate::error::{Error, Result};
use crate::store::Store;

/// Verified worker keys kept at most.
const CACHE_MAX: usize = 100_000;

pub struct WorkerKeys {
    store: Arc<dyn Store>,
    /// Worker id -> SHA-256 of its key.
    verified: Mutex<HashMap<String, String>>,
}

impl WorkerKeys {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// `InvalidArgument` for an empty id, `NotFound` for an unknown worker (it should register
    /// again), `PermissionDenied` when the key is not this worker's.
    pub async fn verify(&self, worker_id: &str, key: &str) -> Result<()> {
        if worker_id.is_empty() {
            return Err(Error::invalid("worker_id is empty; register first"));
        }
        let hash = secrets::sha256_hex(key);
        let cached = lock(&self.verified).get(worker_id).cloned();
        let stored = match cached {
            Some(h) => h,
            None => self
                .store
                .worker_key(worker_id)
                .await?
                .ok_or_else(|| crate::store::not_registered(worker_id))?,
        };
        if stored.is_empty() || !secrets::same(&stored, &hash) {
            return Err(Error::PermissionDenied(format!(
                "the worker key does not match worker {worker_id}"
            )));
        }
        let mut verified = lock(&self.verified);
        if verified.len() >= CACHE_MAX {
            verified.clear();
        }
        verified.insert(worker_id.to_string(), stored);
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
