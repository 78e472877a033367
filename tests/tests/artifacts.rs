//! Artifacts against two in-process coordinators on one PostgreSQL database: only the running
//! attempt may upload or delete, a file whose size or hash differs from its header is refused
//! and leaves nothing behind, and what one coordinator received the other serves, byte for
//! byte (artifacts live in the database, not on a coordinator's disk).

use stackhive_coordinator::{run, CoordinatorConfig};
use stackhive_proto::connect::{plain, AuthChannel as Channel};
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::artifact_service_client::ArtifactServiceClient;
use stackhive_proto::v1::job_service_client::JobServiceClient;
use stackhive_proto::v1::worker_service_client::WorkerServiceClient;
use stackhive_tests::cluster::spec;
use stackhive_tests::db::TestDb;
use stackhive_worker::artifacts::{self, ArtifactError};
use stackhive_worker::Identity;
use tonic::Code;

fn code(e: &ArtifactError) -> Option<Code> {
    match e {
        ArtifactError::Rpc(s) => Some(s.code()),
        _ => None,
    }
}

/// Starts a coordinator on `db_url`; it stops when the returned sender is dropped or used.
async fn coordinator(db_url: &str) -> (Channel, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = CoordinatorConfig::with_db(db_url.to_string());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        run(config, listener, async {
            let _ = rx.await;
        })
        .await
        .expect("coordinator runs");
    });
    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    (plain(channel), tx)
}

/// Uploads (committed or not) and chunks in the database, once a discard under way settles.
async fn stored_rows(pool: &sqlx::PgPool, expect_uploads: i64) -> (i64, i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let uploads: i64 = sqlx::query_scalar("SELECT count(*) FROM artifact_uploads")
            .fetch_one(pool)
            .await
            .unwrap();
        let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM artifact_chunks")
            .fetch_one(pool)
            .await
            .unwrap();
        if uploads == expect_uploads || std::time::Instant::now() > deadline {
            return (uploads, chunks);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_running_attempt_uploads_and_any_coordinator_serves_it() {
    let db = TestDb::postgres().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let (channel, tx) = coordinator(&db.url).await;
    let (other, other_tx) = coordinator(&db.url).await;
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

    let mut w = WorkerServiceClient::new(channel.clone());
    let me = w
        .register(pb::RegisterRequest {
            name: "t".into(),
            kinds: vec!["noop".into()],
            resources: Some(pb::Resources {
                cpu_slots: 1,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let who = Identity::new(&me.worker_id, &me.worker_key);

    // Not running yet: refused as stale.
    let err = artifacts::upload(channel.clone(), &who, id, 1, "model.ot", &file)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::FailedPrecondition), "{err}");

    let attempt = loop {
        let jobs = w
            .lease(pb::LeaseRequest {
                worker_id: me.worker_id.clone(),
                worker_key: me.worker_key.clone(),
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
    let err = artifacts::upload(channel.clone(), &who, id, attempt + 1, "model.ot", &file)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::FailedPrecondition), "{err}");
    let err = artifacts::upload(channel.clone(), &who, id, attempt, "../escape", &file)
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
                worker_id: me.worker_id.clone(),
                worker_key: me.worker_key.clone(),
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
    assert_eq!(
        stored_rows(&pool, 0).await,
        (0, 0),
        "a refused upload's chunks are removed"
    );

    // The running attempt's upload is kept, in 1 MiB chunks, and the other coordinator
    // serves it back byte for byte.
    let info = artifacts::upload(channel.clone(), &who, id, attempt, "model.ot", &file)
        .await
        .unwrap();
    assert_eq!(info.size, content.len() as u64);
    assert_eq!(info.blake3, blake3::hash(&content).to_hex().as_str());
    assert_eq!(stored_rows(&pool, 1).await, (1, 3));
    let cache = data.path().join("fetched");
    let path = artifacts::fetch_cached(other.clone(), id, "model.ot", &cache)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), content);

    // A new upload of the name, through the other coordinator, replaces the old one whole.
    let shorter = &content[..1_500_000];
    let file2 = data.path().join("upload2.bin");
    std::fs::write(&file2, shorter).unwrap();
    let info2 = artifacts::upload(other.clone(), &who, id, attempt, "model.ot", &file2)
        .await
        .unwrap();
    assert_eq!(info2.size, shorter.len() as u64);
    assert_eq!(stored_rows(&pool, 1).await, (1, 2));
    let path2 = artifacts::fetch_cached(channel.clone(), id, "model.ot", &cache)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path2).unwrap(), shorter);
    let err = artifacts::fetch_cached(channel.clone(), id, "other.ot", &cache)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::NotFound), "{err}");
    let err = a
        .list_artifacts(pb::ListArtifactsRequest { job_id: id + 1000 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Deleting: another attempt is refused and the bytes stay; the running attempt removes
    // record and bytes, and a second delete finds nothing.
    let err = artifacts::delete(channel.clone(), &who, id, attempt + 1, "model.ot")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::FailedPrecondition), "{err}");
    assert_eq!(stored_rows(&pool, 1).await, (1, 2));
    assert!(
        artifacts::delete(other.clone(), &who, id, attempt, "model.ot")
            .await
            .unwrap()
    );
    assert_eq!(stored_rows(&pool, 0).await, (0, 0));
    assert!(
        !artifacts::delete(channel.clone(), &who, id, attempt, "model.ot")
            .await
            .unwrap()
    );
    let err = artifacts::fetch_cached(channel.clone(), id, "model.ot", &data.path().join("again"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(Code::NotFound), "{err}");
    let _ = tx.send(());
    let _ = other_tx.send(());
}
