//! Who may call what (issue 14). Every RPC but health carries `authorization: Bearer <token>`;
//! the layer in `layer.rs` checks it against the stored tokens and the method's required access
//! (`access.rs`) before any handler runs, so a refused call stores and changes nothing. Worker
//! identity on top of that (a worker may act only as itself) is `workers.rs`; transport
//! security is `tls.rs`; token and key material is `secrets.rs`.
//!
//! Must not: keep a revoked token usable (the cache is dropped on every revocation a store
//! reports, and not used at all where a store cannot report them), or log a secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::model::Role;
use crate::error::{Error, Result};
use crate::store::Store;

pub mod access;
pub mod layer;
pub mod secrets;
pub mod tls;
pub mod workers;

pub use access::Access;
pub use tls::ConnInfo;

/// Verified tokens kept at most; more are looked up again.
const CACHE_MAX: usize = 10_000;

/// Checks calls against the token store.
pub struct Authenticator {
    store: Arc<dyn Store>,
    /// False: the coordinator runs without tokens (loopback only).
    tokens_required: bool,
    /// Worker-protocol calls need a verified client certificate (mutual TLS).
    worker_certs: bool,
    /// Token id -> (secret hash, role, the store's epoch when verified).
    cache: Mutex<HashMap<String, (String, Role, u64)>>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, tokens_required: bool, worker_certs: bool) -> Self {
        Self {
            store,
            tokens_required,
            worker_certs,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn tokens_required(&self) -> bool {
        self.tokens_required
    }

    /// Whether a call of `path` with this `authorization` header over this connection may
    /// proceed: `Unauthenticated` without a valid token, `PermissionDenied` when its role may
    /// not make the call or a worker call lacks a client certificate.
    pub async fn authorize(
        &self,
        path: &str,
        authorization: Option<&[u8]>,
        conn: Option<&ConnInfo>,
    ) -> Result<Option<Role>> {
        let need = access::required(path);
        if need == Access::Open {
            return Ok(None);
        }
        if self.worker_certs && need == Access::Work && !conn.is_some_and(|c| c.client_cert) {
            return Err(Error::PermissionDenied(format!(
                "{path} needs a client certificate signed by the coordinator's client CA (mutual TLS)"
            )));
        }
        if !self.tokens_required {
            return Ok(None);
        }
        let role = self.role_of(authorization).await?;
        if !need.allows(role) {
            return Err(Error::PermissionDenied(format!(
                "a {role} token may not call {path}; it needs {}",
                need.roles()
            )));
        }
        Ok(Some(role))
    }

    /// The role of a valid, unrevoked bearer token.
    async fn role_of(&self, authorization: Option<&[u8]>) -> Result<Role> {
        let Some(header) = authorization else {
            return Err(Error::Unauthenticated(
                "missing bearer token: send `authorization: Bearer shk_…`".into(),
            ));
        };
        let invalid = || Error::Unauthenticated("invalid or revoked token".into());
        let token = std::str::from_utf8(header)
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(invalid)?;
        let (id, secret) = secrets::split_token(token.trim()).ok_or_else(invalid)?;
        let hash = secrets::sha256_hex(secret);
        let epoch = self.store.token_epoch();
        if let Some(epoch) = epoch {
            let cached = lock(&self.cache).get(id).cloned();
            if let Some((stored, role, at)) = cached {
                if at == epoch {
                    return if secrets::same(&stored, &hash) {
                        Ok(role)
                    } else {
                        Err(invalid())
                    };
                }
            }
        }
        let t = self.store.get_token(id).await?.ok_or_else(invalid)?;
        if t.revoked_at.is_some() || !secrets::same(&t.secret_hash, &hash) {
            return Err(invalid());
        }
        if let Some(epoch) = epoch {
            let mut cache = lock(&self.cache);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(id.to_string(), (t.secret_hash, t.role, epoch));
        }
        Ok(t.role)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
