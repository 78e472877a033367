//! Logging and tracing across processes. Every stackhive binary sets up its log here (`init`).
//! With `--otlp-endpoint` (or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`) it also exports its
//! spans over OTLP/gRPC to a collector (the OpenTelemetry Collector, Jaeger, Tempo), and every
//! gRPC call carries the caller's span as a W3C `traceparent` header: the client side injects
//! it (`inject`, called by the credentials interceptor every client shares) and the
//! coordinator opens each request's span as that span's child (`server_span`). So one trace
//! shows `stackhive submit` → the coordinator's `JobService/Submit`, or a worker's `job` →
//! the feature and prediction calls it makes. Without an endpoint nothing is exported or
//! injected and spans are plain `tracing` spans in the log.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// Set once an exporter is installed; until then `inject` and `server_span` skip the work.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The tracing flag, shared by `stackhive` and `stackhive-worker`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TelemetryOptions {
    /// OTLP/gRPC collector to export spans to, e.g. http://localhost:4317 (off when unset).
    /// `OTEL_SERVICE_NAME` renames the process in the traces.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
}

/// What `init` set up; `shutdown` sends the spans still buffered before the process exits.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporter (a no-op without one). Blocks while it sends.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("warning: could not send the last spans to the OTLP collector: {e}");
            }
        }
    }
}

/// The log: `fmt` (the binary's own format and writer) filtered by `filter` (`RUST_LOG` and
/// the like). With an endpoint, also the OTLP exporter, which takes stackhive's spans and
/// events at info and above whatever the log shows. Must run inside a Tokio runtime when an
/// endpoint is given (the exporter's gRPC channel lives on it).
pub fn init<F>(
    service: &str,
    fmt: F,
    filter: EnvFilter,
    options: &TelemetryOptions,
) -> Result<Telemetry, String>
where
    F: Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    let endpoint = options
        .otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty());
    let Some(endpoint) = endpoint else {
        tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .init();
        return Ok(Telemetry::default());
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(format!(
            "--otlp-endpoint expects an http:// or https:// URL of an OTLP/gRPC collector \
             (e.g. http://localhost:4317), found {endpoint:?}"
        ));
    }
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("cannot set up the OTLP exporter for {endpoint}: {e}"))?;
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| service.to_string());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(name).build())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("stackhive"))
        .with_filter(Targets::new().with_target("stackhive", tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .init();
    EXPORTING.store(true, Ordering::Release);
    Ok(Telemetry {
        provider: Some(provider),
    })
}

fn exporting() -> bool {
    EXPORTING.load(Ordering::Acquire)
}

/// Writes the current span's context into an outgoing call's metadata (`traceparent`).
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    if !exporting() {
        return;
    }
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(metadata))
    });
}

/// The span a served request runs in: named after its method (`stackhive.v1.JobService/
/// Submit`) and, when the caller sent a `traceparent`, a child of the caller's span.
pub fn server_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let span = tracing::info_span!(
        "rpc",
        otel.name = %path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
    );
    if exporting() {
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(request.headers()))
        });
        let _ = span.set_parent(parent);
    }
    span
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let key = tonic::metadata::MetadataKey::from_bytes(key.as_bytes());
        if let (Ok(key), Ok(value)) = (key, value.parse()) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}
