//! Artifacts against an in-process coordinator on PostgreSQL: only the running attempt may
//! upload or delete, a file whose size or hash differs from its header is refused and leaves
//! nothing behind, and the worker's fetch returns exactly the bytes uploaded.

use stackhive_coordinator::{run, CoordinatorConfig};
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::artifact_service_client::ArtifactServiceClient;
use stackhive_proto::v1::job_service_client::JobServiceClient;
use stackhive_proto::v1::worker_service_client::WorkerServiceClient;
use stackhive_tests::cluster::spec;
use stackhive_tests::db::TestDb;
use stackhive_worker::artifacts::{self, ArtifactError};
use tonic::transport::Channel;
use tonic::Code;

fn code(e: &ArtifactError) -> Option<Code> {
    match e {
        ArtifactError::Rpc(s) => Some(s.code()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_running_attempt_uploads_and_bad_uploads_leave_nothing() {
    let db = TestDb::postgres().await;
    let data = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut config = CoordinatorConfig::with_db(db.url.clone());
    config.data_dir = data.path().to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        run(config, listener, async {
            let _ = rx.await;
        })
        .await
        .expect("coordinator runs");
    });
    let channel = Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = JobServiceClient::new(channel.clone());
    let id = c
        .submit(pb::SubmitRequest {
            idempotency_key: String::new(),
            jobs: vec![spec("noop", serde_json::json!({}))],
        })
        .await
        .unwrap()
        .into_inner()
        .job_ids[0];

    let file = data.path().join("upload.bin");
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &content).unwrap();

    // Not running yet: refused as stale.
    let err = artifacts::upload(channel.clone(), id, 1, "model.ot", &file)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::FailedPrecondition), "{err}");

    let mut w = WorkerServiceClient::new(channel.clone());
    let wid = w
        .register(pb::RegisterRequest {
            name: "t".into(),
            resources: Some(pb::Resources {
                cpu_slots: 1,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    let attempt = loop {
        let jobs = w
            .lease(pb::LeaseRequest {
                worker_id: wid.clone(),
                free: Some(pb::Resources {
                    cpu_slots: 1,
                    ..Default::default()
                }),
                max_jobs: 1,
                wait_ms: 1000,
            })
            .await
            .unwrap()
            .into_inner()
            .jobs;
        if let Some(j) = jobs.into_iter().find(|j| j.id == id) {
            break j.attempt;
        }
    };

    // Another attempt's upload is stale; a bad name is refused.
    let err = artifacts::upload(channel.clone(), id, attempt + 1, "model.ot", &file)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::FailedPrecondition), "{err}");
    let err = artifacts::upload(channel.clone(), id, attempt, "../escape", &file)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::InvalidArgument), "{err}");

    // A header announcing another hash: refused after the bytes arrive, nothing kept.
    let mut a = ArtifactServiceClient::new(channel.clone());
    let header = pb::UploadArtifactRequest {
        item: Some(pb::upload_artifact_request::Item::Header(
            pb::ArtifactHeader {
                job_id: id,
                attempt,
                name: "model.ot".into(),
                size: content.len() as u64,
                blake3: "0".repeat(64),
            },
        )),
    };
    let chunk = pb::UploadArtifactRequest {
        item: Some(pb::upload_artifact_request::Item::Chunk(content.clone())),
    };
    let err = a
        .upload_artifact(futures::stream::iter(vec![header, chunk]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("BLAKE3"), "{}", err.message());
    let listed = a
        .list_artifacts(pb::ListArtifactsRequest { job_id: id })
        .await
        .unwrap()
        .into_inner()
        .artifacts;
    assert!(
        listed.is_empty(),
        "a refused upload leaves nothing: {listed:?}"
    );
    let leftovers: Vec<_> =
        std::fs::read_dir(data.path().join("artifacts").join(format!("job-{id}")))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
    assert!(leftovers.is_empty(), "staging files left: {leftovers:?}");

    // The running attempt's upload is kept and fetches back byte for byte.
    let info = artifacts::upload(channel.clone(), id, attempt, "model.ot", &file)
        .await
        .unwrap();
    assert_eq!(info.size, content.len() as u64);
    assert_eq!(info.blake3, blake3::hash(&content).to_hex().as_str());
    let cache = data.path().join("fetched");
    let path = artifacts::fetch_cached(channel.clone(), id, "model.ot", &cache)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), content);
    let err = artifacts::fetch_cached(channel.clone(), id, "other.ot", &cache)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::NotFound), "{err}");
    let err = a
        .list_artifacts(pb::ListArtifactsRequest { job_id: id + 1000 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Deleting: another attempt is refused and the file stays; the running attempt removes it
    // (record and file), and a second delete finds nothing.
    let err = artifacts::delete(channel.clone(), id, attempt + 1, "model.ot")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::FailedPrecondition), "{err}");
    assert!(std::path::Path::new(&info.storage_path).exists());
    assert!(artifacts::delete(channel.clone(), id, attempt, "model.ot")
        .await
        .unwrap());
    assert!(!std::path::Path::new(&info.storage_path).exists());
    assert!(!artifacts::delete(channel.clone(), id, attempt, "model.ot")
        .await
        .unwrap());
    let err = artifacts::fetch_cached(channel.clone(), id, "model.ot", &data.path().join("again"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::NotFound), "{err}");
    let _ = tx.send(());
}
