//! Spans across processes (issue 16): a CLI command, the coordinator and a worker each export
//! their spans over OTLP/gRPC to one collector (a real OTLP `TraceService` served by this
//! test), and every request span of the coordinator is a child, in the same trace, of the
//! caller's span that made the call: `stackhive submit` → `JobService/Submit`, and a worker's
//! `lease` and `complete` calls → `WorkerService/Lease` and `WorkerService/Complete`.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use stackhive_tests::cluster::*;
use stackhive_tests::db::TestDb;

/// One exported span: the process that sent it and what it said.
#[derive(Clone, Debug)]
struct Seen {
    service: String,
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    attributes: Vec<(String, String)>,
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Seen>>>,
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .map(|a| text(&a.value))
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                kept.push(Seen {
                    service: service.clone(),
                    name: span.name,
                    trace: span.trace_id,
                    id: span.span_id,
                    parent: span.parent_span_id,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|a| (a.key.clone(), text(&a.value)))
                        .collect(),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        url
    }

    fn spans(&self) -> Vec<Seen> {
        self.spans.lock().unwrap().clone()
    }
}

/// The coordinator's span of `method` whose parent is a span `service` exported under `name`.
fn linked(spans: &[Seen], service: &str, name: &str, method: &str) -> Option<(Seen, Seen)> {
    spans
        .iter()
        .filter(|s| s.service == "stackhive-coordinator" && s.name == method)
        .find_map(|server| {
            let caller = spans
                .iter()
                .find(|c| c.service == service && c.name == name && c.id == server.parent)?;
            Some((caller.clone(), server.clone()))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_and_a_worker_share_their_traces_with_the_coordinator() {
    let collector = Collector::default();
    let otlp = collector.serve().await;
    let db = TestDb::sqlite();
    let coord = Coordinator::start(&db.url, 0, &["--otlp-endpoint", &otlp]).await;
    let worker = Worker::start("traced", &coord.url, &["--otlp-endpoint", &otlp]);

    let submitted = Command::new(bin("stackhive"))
        .args([
            "--coordinator",
            &coord.url,
            "submit",
            "--experiment",
            "traced",
        ])
        .args(["--command", "true"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .output()
        .unwrap();
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let mut jobs = coord.jobs().await;
    wait_for("the job succeeded", Duration::from_secs(60), || {
        let mut jobs = jobs.clone();
        async move { (counts(&mut jobs, "traced").await.succeeded == 1).then_some(()) }
    })
    .await;
    let _ = &mut jobs;

    // The CLI flushed its spans before it exited; the servers send theirs every few seconds.
    let spans = wait_for("the linked spans", Duration::from_secs(45), || {
        let spans = collector.spans();
        async move {
            let submit = linked(
                &spans,
                "stackhive-cli",
                "stackhive submit",
                "stackhive.v1.JobService/Submit",
            )?;
            let lease = linked(
                &spans,
                "stackhive-worker",
                "lease",
                "stackhive.v1.WorkerService/Lease",
            )?;
            let complete = linked(
                &spans,
                "stackhive-worker",
                "complete",
                "stackhive.v1.WorkerService/Complete",
            )?;
            let job = spans
                .iter()
                .find(|s| s.service == "stackhive-worker" && s.name == "job shell")?
                .clone();
            Some((submit, lease, complete, job))
        }
    })
    .await;
    let ((cli, submit), (lease, leased), (complete, completed), job) = spans;
    for (caller, server) in [(&cli, &submit), (&lease, &leased), (&complete, &completed)] {
        assert_eq!(
            caller.trace, server.trace,
            "{} and {}",
            caller.name, server.name
        );
        assert_eq!(server.trace.len(), 16, "a W3C trace id");
        assert!(
            server
                .attributes
                .contains(&("rpc.system".to_string(), "grpc".to_string())),
            "{:?}",
            server.attributes
        );
    }
    // A client command is one trace; the worker's calls are traces of their own.
    assert_ne!(cli.trace, lease.trace);
    assert!(
        job.attributes
            .contains(&("job.kind".to_string(), "shell".to_string())),
        "{:?}",
        job.attributes
    );
    worker.terminate(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn an_endpoint_that_is_not_a_url_is_refused_plainly() {
    let out = Command::new(bin("stackhive"))
        .args(["--otlp-endpoint", "localhost:4317", "jobs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expects an http:// or https:// URL") && err.contains("localhost:4317"),
        "{err}"
    );
}
