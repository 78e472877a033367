//! `TokenService`: create, list and revoke access tokens (admin only, by the auth layer). The
//! secret is returned once by CreateToken and only its hash is stored.

use std::sync::Arc;

use stackhive_proto::v1 as pb;
use stackhive_proto::v1::token_service_server::TokenService;
use tonic::{Request, Response, Status};

use crate::auth::secrets;
use crate::domain::model::{now_ms, Role, TokenRecord};
use crate::error::{Error, Result};
use crate::store::Store;

pub struct TokenApi {
    store: Arc<dyn Store>,
}

impl TokenApi {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

/// Creates a token with `role` named `name`; returns the record and the bearer secret. Also
/// what `stackhive token create --db` runs against a store directly (the first admin token).
pub async fn create(store: &dyn Store, name: &str, role: &str) -> Result<(TokenRecord, String)> {
    let role = Role::parse(role).ok_or_else(|| {
        Error::invalid(format!(
            "role {role:?} is not one of {}",
            Role::ALL.map(Role::as_str).join(", ")
        ))
    })?;
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.@".contains(c));
    if !ok {
        return Err(Error::invalid(format!(
            "token name {name:?} is not valid, expected 1 to 128 letters, digits and _-.@"
        )));
    }
    let (id, secret) = secrets::new_token();
    let (_, secret_part) = secrets::split_token(&secret).expect("a fresh token splits");
    let rec = TokenRecord {
        id,
        name: name.to_string(),
        role,
        secret_hash: secrets::sha256_hex(secret_part),
        created_at: now_ms(),
        revoked_at: None,
    };
    store.create_token(&rec).await?;
    tracing::info!(token = %rec.id, name = %rec.name, role = %rec.role, "token created");
    Ok((rec, secret))
}

pub fn info(t: &TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        role: t.role.as_str().to_string(),
        created_at_ms: t.created_at,
        revoked_at_ms: t.revoked_at.unwrap_or(0),
    }
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let r = req.into_inner();
        let (rec, secret) = create(&*self.store, &r.name, &r.role).await?;
        Ok(Response::new(pb::CreateTokenResponse {
            token: Some(info(&rec)),
            secret,
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let all = self
            .store
            .list_tokens(req.into_inner().include_revoked)
            .await?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: all.iter().map(info).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let id = req.into_inner().id;
        let revoked = self.store.revoke_token(&id).await?;
        tracing::info!(token = %id, revoked, "token revoked");
        Ok(Response::new(pb::RevokeTokenResponse { revoked }))
    }
}
