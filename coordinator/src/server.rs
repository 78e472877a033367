//! Serving: `run(config, listener, shutdown)` opens the store, starts the reaper and serves the
//! job, worker, dataset, artifact and token services plus gRPC health and reflection until
//! `shutdown` resolves, behind the auth layer and over plaintext or TLS as
//! `CoordinatorConfig::security` decides. A test starts a coordinator with a listener on
//! `127.0.0.1:0` and a oneshot as shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use stackhive_proto::v1::artifact_service_server::ArtifactServiceServer;
use stackhive_proto::v1::dataset_service_server::DatasetServiceServer;
use stackhive_proto::v1::feature_service_server::FeatureServiceServer;
use stackhive_proto::v1::job_service_server::JobServiceServer;
use stackhive_proto::v1::sweep_service_server::SweepServiceServer;
use stackhive_proto::v1::token_service_server::TokenServiceServer;
use stackhive_proto::v1::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;

use crate::api::{ArtifactApi, DatasetApi, FeatureApi, JobApi, SweepApi, TokenApi, WorkerApi};
use crate::auth::layer::AuthLayer;
use crate::auth::workers::WorkerKeys;
use crate::auth::Authenticator;
use crate::config::CoordinatorConfig;
use crate::error::{Error, Result};
use crate::services::datasets::DatasetFiles;
use crate::store::{self, Store};

/// Serves until `shutdown` resolves, then stops long-polls and watches and drains requests.
pub async fn run(
    config: CoordinatorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let store = store::open(&config.db, config.policy(), config.db_max_connections).await?;
    serve(config, store, listener, shutdown).await
}

/// Like [`run`], over a store that is already open.
pub async fn serve(
    config: CoordinatorConfig,
    store: Arc<dyn Store>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Config(e.to_string()))?;
    let security = config.security(addr)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = config.metrics_addr {
        crate::metrics::install_prometheus(addr).map_err(Error::Config)?;
        tokio::spawn(crate::metrics::sample(store.clone(), stop_rx.clone()));
    }
    let files = DatasetFiles::new(config.data_dir.clone());
    warn_missing_datasets(&*store, &files, &config.data_dir).await;
    let reaper = tokio::spawn(crate::services::reaper::run(
        store.clone(),
        files.clone(),
        config.max_batch_jobs,
        Duration::from_millis(config.reap_interval_ms.max(10) as u64),
        config.retention_hours,
        stop_rx.clone(),
    ));

    let max_msg = config.max_message_mb as usize * 1024 * 1024;
    let keys = Arc::new(WorkerKeys::new(store.clone()));
    let jobs = JobServiceServer::new(JobApi::new(
        store.clone(),
        files.clone(),
        config.max_batch_jobs,
        config.max_watches,
        config.policy(),
        stop_rx.clone(),
    ))
    .max_decoding_message_size(max_msg)
    .max_encoding_message_size(max_msg);
    let workers = WorkerServiceServer::new(WorkerApi::new(
        store.clone(),
        keys.clone(),
        config.lease_ttl_ms,
        config.heartbeat_interval_ms(),
        stop_rx.clone(),
    ))
    .max_decoding_message_size(max_msg)
    .max_encoding_message_size(max_msg);

    let features = FeatureServiceServer::new(FeatureApi::new(store.clone(), files.clone()))
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
    let datasets = DatasetServiceServer::new(DatasetApi::new(store.clone(), files))
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);

    let artifacts = ArtifactServiceServer::new(ArtifactApi::new(store.clone(), keys))
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
    let tokens = TokenServiceServer::new(TokenApi::new(store.clone()));
    let sweep_api = SweepServiceServer::new(SweepApi::new(store.clone()));

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ArtifactServiceServer<ArtifactApi>>()
        .await;
    health_reporter
        .set_serving::<DatasetServiceServer<DatasetApi>>()
        .await;
    health_reporter
        .set_serving::<JobServiceServer<JobApi>>()
        .await;
    health_reporter
        .set_serving::<WorkerServiceServer<WorkerApi>>()
        .await;
    health_reporter
        .set_serving::<TokenServiceServer<TokenApi>>()
        .await;
    health_reporter
        .set_serving::<FeatureServiceServer<FeatureApi>>()
        .await;
    health_reporter
        .set_serving::<SweepServiceServer<SweepApi>>()
        .await;
    // Both reflection protocols: v1alpha is what Python's grpcio-reflection, older grpcurl and
    // GUI tools speak (issue 16).
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(stackhive_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(|e| Error::Config(format!("cannot build gRPC reflection: {e}")))?;
    let reflection_alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| Error::Config(format!("cannot build gRPC reflection: {e}")))?;

    tracing::info!(%addr, backend = store.backend(), security = %security.describe(), "coordinator serving");
    if !security.tokens {
        tracing::info!(%addr, "authentication is off: anyone who can reach this loopback address may use the coordinator");
    }
    let auth = Arc::new(Authenticator::new(
        store.clone(),
        security.tokens,
        security.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
    ));
    let on_shutdown = async move {
        shutdown.await;
        tracing::info!("coordinator shutting down");
        let _ = stop_tx.send(true);
    };
    let incoming = crate::auth::tls::incoming(listener, security.tls.clone())?;
    let served = tonic::transport::Server::builder()
        .trace_fn(stackhive_proto::telemetry::server_span)
        .layer(AuthLayer::new(auth))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(jobs)
        .add_service(workers)
        .add_service(datasets)
        .add_service(artifacts)
        .add_service(tokens)
        .add_service(features)
        .add_service(sweep_api)
        .serve_with_incoming_shutdown(incoming, on_shutdown)
        .await;
    reaper.abort();
    served.map_err(|e| Error::Config(format!("gRPC server failed: {e}")))
}

/// Says at start which registered datasets this coordinator cannot serve: uploads are kept in
/// the `--data-dir` of the coordinator that received them, so every coordinator of a cluster
/// needs the same folder (a shared volume). Fetching one of them through this coordinator
/// answers NOT_FOUND with the same advice.
async fn warn_missing_datasets(
    store: &dyn Store,
    files: &DatasetFiles,
    data_dir: &std::path::Path,
) {
    let Ok(datasets) = store.list_datasets().await else {
        return;
    };
    let missing: Vec<String> = datasets
        .iter()
        .filter(|d| !files.has(&d.hash))
        .map(|d| match d.names.first() {
            Some(n) => format!("{n} ({})", &d.hash[..12.min(d.hash.len())]),
            None => d.hash.clone(),
        })
        .collect();
    if !missing.is_empty() {
        tracing::warn!(
            "{} registered dataset(s) have no files in {}: {}; this coordinator cannot serve them, \
             build their folds or feature sets, or import into them. Give every coordinator of a \
             cluster the same --data-dir (a shared volume)",
            missing.len(),
            data_dir.display(),
            missing.join(", ")
        );
    }
}
