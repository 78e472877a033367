//! How a client reaches a coordinator: the endpoint (plaintext `http://` or TLS `https://`,
//! trusting a given CA or the system's, with a client certificate for mutual TLS) and the bearer
//! token sent with every call. An address may list several coordinators of one cluster,
//! comma-separated: calls go to one at a time and move on when it is unreachable (`failover`). The
//! CLI, the worker and the tests all connect through here, so a flag means the same everywhere;
//! every call also carries the caller's trace context (`telemetry`). Must not: print or log the
//! token.

use std::path::PathBuf;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::failover::Failover;

/// A channel to the coordinators that carries the caller's credentials.
pub type AuthChannel = InterceptedService<Failover, Credentials>;

/// The coordinator URLs of an address: `http://a:50051,http://b:50051` lists two.
pub fn addresses(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Client flags, shared by `stackhive` and `stackhive-worker`; each also reads a
/// `STACKHIVE_*` variable.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ClientOptions {
    /// Bearer token (`shk_…`) sent with every call; prefer --token-file or the variable, so
    /// the secret stays out of the process list.
    #[arg(long, env = "STACKHIVE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// File holding the bearer token (first line).
    #[arg(long, env = "STACKHIVE_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,

    /// PEM file of the CA that signed the coordinator's certificate (https:// only; the system's
    /// roots otherwise).
    #[arg(long, env = "STACKHIVE_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS, with --client-key.
    #[arg(
        long,
        env = "STACKHIVE_CLIENT_CERT",
        requires = "client_key",
        global = true
    )]
    pub client_cert: Option<PathBuf>,

    /// Private key (PEM) of --client-cert.
    #[arg(
        long,
        env = "STACKHIVE_CLIENT_KEY",
        requires = "client_cert",
        global = true
    )]
    pub client_key: Option<PathBuf>,

    /// Name to expect in the coordinator's certificate, when it differs from the URL's host.
    #[arg(long, env = "STACKHIVE_TLS_DOMAIN", global = true)]
    pub tls_domain: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid coordinator address {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token {0}")]
    Token(String),
    #[error("TLS settings for {url}: {message}")]
    Tls { url: String, message: String },
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
}

impl ClientOptions {
    /// The token, from --token or the first line of --token-file.
    pub fn bearer(&self) -> Result<Option<String>, ConnectError> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => t.trim().to_string(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|source| ConnectError::Read {
                    what: "token file",
                    path: path.clone(),
                    source,
                })?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
            (None, None) => return Ok(None),
        };
        if token.is_empty() {
            return Err(ConnectError::Token("is empty".into()));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConnectError::Token(
                "holds characters other than printable ASCII".into(),
            ));
        }
        Ok(Some(token))
    }

    /// The endpoint for `url`, with TLS set up for `https://` URLs. Nothing connects yet.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, ConnectError> {
        let mut endpoint =
            Endpoint::from_shared(url.to_string()).map_err(|e| ConnectError::Url {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let tls_flags = self.tls_ca.is_some() || self.client_cert.is_some();
        if url.starts_with("https://") {
            endpoint = endpoint
                .tls_config(self.tls()?)
                .map_err(|e| ConnectError::Tls {
                    url: url.to_string(),
                    message: e.to_string(),
                })?;
        } else if tls_flags {
            return Err(ConnectError::Tls {
                url: url.to_string(),
                message: "TLS files are given but the address is not https://".into(),
            });
        }
        Ok(endpoint.connect_timeout(Duration::from_secs(5)))
    }

    fn tls(&self) -> Result<ClientTlsConfig, ConnectError> {
        let read = |what, path: &PathBuf| {
            std::fs::read(path).map_err(|source| ConnectError::Read {
                what,
                path: path.clone(),
                source,
            })
        };
        let mut tls = ClientTlsConfig::new();
        tls = match &self.tls_ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(read("CA certificate", ca)?)),
            None => tls.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            tls = tls.identity(Identity::from_pem(
                read("client certificate", cert)?,
                read("client key", key)?,
            ));
        }
        if let Some(domain) = &self.tls_domain {
            tls = tls.domain_name(domain.clone());
        }
        Ok(tls)
    }

    /// The credentials every call of a channel carries.
    pub fn credentials(&self) -> Result<Credentials, ConnectError> {
        let header = match self.bearer()? {
            None => None,
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| ConnectError::Token("is not a valid header value".into()))?,
            ),
        };
        Ok(Credentials { header })
    }

    /// The endpoint of every coordinator `urls` lists (at least one).
    pub fn endpoints(&self, urls: &str) -> Result<Vec<Endpoint>, ConnectError> {
        let list = addresses(urls);
        if list.is_empty() {
            return Err(ConnectError::Url {
                url: urls.to_string(),
                message: "expected one or more comma-separated http:// or https:// URLs".into(),
            });
        }
        list.into_iter().map(|u| self.endpoint(u)).collect()
    }

    /// A lazily connected channel to the coordinators `urls` lists, carrying the credentials.
    pub fn channel(&self, urls: &str) -> Result<AuthChannel, ConnectError> {
        let endpoints = self.endpoints(urls)?;
        Ok(InterceptedService::new(
            lazy(endpoints),
            self.credentials()?,
        ))
    }

    /// Like [`ClientOptions::channel`], connecting now, to the first coordinator that answers.
    pub async fn connect(&self, urls: &str) -> Result<AuthChannel, ConnectError> {
        let credentials = self.credentials()?;
        let channel = connect_first(self.endpoints(urls)?).await?;
        Ok(InterceptedService::new(channel, credentials))
    }
}

fn url_of(e: &Endpoint) -> String {
    e.uri().to_string().trim_end_matches('/').to_string()
}

/// The coordinators behind `endpoints`, nothing connected yet.
pub fn lazy(endpoints: Vec<Endpoint>) -> Failover {
    Failover::new(
        endpoints
            .into_iter()
            .map(|e| (url_of(&e), e.connect_lazy()))
            .collect(),
    )
}

/// The coordinators behind `endpoints`, connected to the first that answers (the others
/// connect when calls fail over to them); an error naming each if none does.
pub async fn connect_first(endpoints: Vec<Endpoint>) -> Result<Failover, ConnectError> {
    let mut failures = Vec::new();
    for (i, e) in endpoints.iter().enumerate() {
        match e.connect().await {
            Ok(connected) => {
                let channels = endpoints
                    .iter()
                    .enumerate()
                    .map(|(j, e)| {
                        let c = if j == i {
                            connected.clone()
                        } else {
                            e.connect_lazy()
                        };
                        (url_of(e), c)
                    })
                    .collect();
                return Ok(Failover::new(channels).starting_at(i));
            }
            Err(err) => failures.push(format!(
                "{}: {err}: {}",
                url_of(e),
                std::error::Error::source(&err)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            )),
        }
    }
    Err(ConnectError::Connect {
        url: endpoints.iter().map(url_of).collect::<Vec<_>>().join(","),
        message: failures.join("; "),
    })
}

/// Adds `authorization: Bearer …` to every call.
#[derive(Clone, Default)]
pub struct Credentials {
    header: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.header.as_ref().map(|_| "…"))
            .finish()
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        crate::telemetry::inject(req.metadata_mut());
        Ok(req)
    }
}

/// A channel without credentials or TLS, for loopback coordinators running without
/// authentication (tests, the embedded single-machine mode).
pub fn plain(channel: Channel) -> AuthChannel {
    InterceptedService::new(Failover::from(channel), Credentials::default())
}
