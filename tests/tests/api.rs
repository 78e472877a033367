//! The public API against an in-process coordinator: bad input is refused with a clear error and
//! stores nothing; gRPC health and reflection answer, so `grpcurl` works.

use serde_json::json;
use stackhive_coordinator::{run, CoordinatorConfig};
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::job_service_client::JobServiceClient;
use stackhive_proto::v1::worker_service_client::WorkerServiceClient;
use stackhive_tests::cluster::{refused_one, spec};
use stackhive_tests::db::TestDb;
use tonic::transport::Channel;
use tonic::Code;

async fn start(db: &TestDb) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut config = CoordinatorConfig::with_db(db.url.clone());
    config.max_message_mb = 1;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        run(config, listener, async {
            let _ = rx.await;
        })
        .await
        .expect("coordinator runs");
    });
    (url, tx)
}

async fn total(c: &mut JobServiceClient<Channel>) -> u64 {
    let k = c
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .counts
        .unwrap();
    k.blocked + k.queued + k.running + k.succeeded + k.failed + k.cancelled
}

async fn refused(
    c: &mut JobServiceClient<Channel>,
    jobs: Vec<pb::JobSpec>,
    key: &str,
) -> tonic::Status {
    c.submit(pb::SubmitRequest {
        idempotency_key: key.into(),
        jobs,
    })
    .await
    .unwrap_err()
}

async fn bad_input_is_refused_and_stores_nothing(db: TestDb) {
    let (url, stop) = start(&db).await;
    let mut c = JobServiceClient::connect(url.clone()).await.unwrap();

    let e = refused(
        &mut c,
        vec![spec("noop", json!({})), spec("train-magic", json!({}))],
        "",
    )
    .await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "job 1: unknown job kind \"train-magic\", expected one of noop, sleep, shell, dataset-prefetch, cnn, lr-find, stack, ensemble");

    let mut s = spec("sleep", json!({ "ms": 5 }));
    s.resources = Some(pb::Resources {
        cpu_slots: 5000,
        ..Default::default()
    });
    let e = refused(&mut c, vec![s], "").await;
    assert_eq!(
        e.message(),
        "job 0: cpu_slots must be at most 4096, found 5000"
    );

    let e = refused(
        &mut c,
        vec![pb::JobSpec {
            payload_json: "{\"ms\":".into(),
            ..spec("sleep", json!({}))
        }],
        "",
    )
    .await;
    assert!(
        e.message().starts_with("job 0: payload is not valid JSON"),
        "{}",
        e.message()
    );

    let mut a = spec("noop", json!({}));
    let mut b = spec("noop", json!({}));
    a.depends_on_batch = vec![1];
    b.depends_on_batch = vec![0];
    let e = refused(&mut c, vec![a, b], "").await;
    assert_eq!(
        e.message(),
        "dependencies form a cycle among jobs 0, 1 of the batch"
    );

    let mut orphan = spec("noop", json!({}));
    orphan.depends_on = vec![987_654];
    let e = refused(&mut c, vec![spec("noop", json!({})), orphan], "").await;
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "dependency 987654 does not exist")
    );

    // More than max_message_mb (1 MiB here) in one message.
    let huge = spec("shell", json!({ "command": "x".repeat(60_000) }));
    let e = refused(&mut c, vec![huge; 20], "").await;
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );

    assert_eq!(
        total(&mut c).await,
        0,
        "nothing was stored by any refused submit"
    );

    // Same key, same body: deduplicated; same key, other body: refused.
    let first = c
        .submit(pb::SubmitRequest {
            idempotency_key: "k".into(),
            jobs: vec![spec("noop", json!({}))],
        })
        .await
        .unwrap()
        .into_inner();
    let again = c
        .submit(pb::SubmitRequest {
            idempotency_key: "k".into(),
            jobs: vec![spec("noop", json!({}))],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.job_ids.clone(), again.deduplicated),
        (first.job_ids.clone(), true)
    );
    let e = refused(&mut c, vec![spec("sleep", json!({ "ms": 1 }))], "k").await;
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(total(&mut c).await, 1);

    // A completion holding NaN, or the wrong number of rows, is refused and nothing is stored.
    let mut s = spec("noop", json!({}));
    s.expect_oof_rows = 3;
    let id = c
        .submit(pb::SubmitRequest {
            idempotency_key: String::new(),
            jobs: vec![s],
        })
        .await
        .unwrap()
        .into_inner()
        .job_ids[0];
    let mut w = WorkerServiceClient::connect(url.clone()).await.unwrap();
    let me = w
        .register(pb::RegisterRequest {
            name: "t".into(),
            kinds: vec!["noop".into()],
            resources: Some(pb::Resources {
                cpu_slots: 4,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (wid, key) = (me.worker_id, me.worker_key);
    let mut leased = Vec::new();
    while !leased.iter().any(|j: &pb::LeasedJob| j.id == id) {
        leased.extend(
            w.lease(pb::LeaseRequest {
                worker_id: wid.clone(),
                worker_key: key.clone(),
                free: Some(pb::Resources {
                    cpu_slots: 4,
                    ..Default::default()
                }),
                max_jobs: 4,
                wait_ms: 1000,
            })
            .await
            .unwrap()
            .into_inner()
            .jobs,
        );
    }
    let attempt = leased.iter().find(|j| j.id == id).unwrap().attempt;
    let complete = |oof: Vec<f32>| pb::CompleteRequest {
        worker_id: wid.clone(),
        worker_key: key.clone(),
        completions: vec![pb::Completion {
            id,
            attempt,
            result_json: String::new(),
            progress_json: String::new(),
            predictions: Some(pb::Predictions {
                oof_rows: (0..oof.len() as u32).collect(),
                oof,
                test: vec![],
            }),
        }],
    };
    // Refused per item (issue 11): the call answers, naming the completion and why.
    let e = w
        .complete(complete(vec![0.1, f32::INFINITY, 0.3]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        refused_one(e),
        (
            pb::RefusalKind::Invalid,
            format!("out-of-fold prediction 1 of job {id} is inf, expected a finite number")
        )
    );
    let e = w
        .complete(complete(vec![0.1, 0.2]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        refused_one(e),
        (
            pb::RefusalKind::Invalid,
            format!("predictions for job {id} have 2 out-of-fold rows, the job expects 3")
        )
    );
    let j = c
        .get_job(pb::GetJobRequest {
            id,
            include_predictions: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(j.job.unwrap().state, pb::JobState::Running as i32);
    assert!(j.predictions.is_none());
    w.complete(complete(vec![0.1, 0.2, 0.3])).await.unwrap();
    let j = c
        .get_job(pb::GetJobRequest {
            id,
            include_predictions: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(j.predictions.unwrap().oof, vec![0.1, 0.2, 0.3]);

    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_postgres() {
    bad_input_is_refused_and_stores_nothing(TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_sqlite() {
    bad_input_is_refused_and_stores_nothing(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer() {
    let db = TestDb::sqlite();
    let (url, stop) = start(&db).await;
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "stackhive.v1.JobService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut refl = ServerReflectionClient::new(channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "stackhive.v1.JobService",
        "stackhive.v1.WorkerService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }

    // The older protocol too (issue 16): grpcio-reflection, older grpcurl and GUI tools.
    use tonic_reflection::pb::v1alpha as alpha;
    let mut refl = alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let req = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        resp.message_response
    else {
        panic!("unexpected v1alpha reflection answer {resp:?}");
    };
    assert!(list
        .service
        .iter()
        .any(|s| s.name == "stackhive.v1.TokenService"));
    let _ = stop.send(());
}
