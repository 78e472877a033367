//! Issue 14's findings, each replayed as the attacker ran it, against real coordinators: every
//! attack now gets a clean refusal, and nothing is stored, leaked or left running.
//! Authentication, roles and TLS are `auth.rs`.

use std::path::Path;
use std::time::Duration;

use stackhive_coordinator::{run, CoordinatorConfig};
use stackhive_data::hash::{dataset_hash, Manifest, ManifestEntry};
use stackhive_data::synth::{generate, SynthConfig};
use stackhive_proto::connect::{plain, AuthChannel};
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::artifact_service_client::ArtifactServiceClient;
use stackhive_proto::v1::dataset_service_client::DatasetServiceClient;
use stackhive_proto::v1::job_service_client::JobServiceClient;
use stackhive_proto::v1::upload_dataset_request::Item;
use stackhive_proto::v1::worker_service_client::WorkerServiceClient;
use stackhive_tests::cluster::{bin, refused_one, spec};
use stackhive_tests::db::TestDb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// An in-process coordinator; it stops when the sender is dropped.
struct Coord {
    url: String,
    channel: AuthChannel,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn coordinator(
    db_url: &str,
    data_dir: &Path,
    tweak: impl FnOnce(&mut CoordinatorConfig),
) -> Coord {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut config = CoordinatorConfig::with_db(db_url.to_string());
    config.data_dir = data_dir.to_path_buf();
    tweak(&mut config);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        run(config, listener, async {
            let _ = rx.await;
        })
        .await
        .expect("coordinator runs");
    });
    let channel = connect(&url).await;
    Coord {
        url,
        channel,
        _stop: tx,
    }
}

async fn connect(url: &str) -> AuthChannel {
    for _ in 0..100 {
        if let Ok(c) = tonic::transport::Channel::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
        {
            return plain(c);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("coordinator at {url} did not come up")
}

fn jobs(c: &Coord) -> JobServiceClient<AuthChannel> {
    JobServiceClient::new(c.channel.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

fn workers(c: &Coord) -> WorkerServiceClient<AuthChannel> {
    WorkerServiceClient::new(c.channel.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

fn datasets(c: &Coord) -> DatasetServiceClient<AuthChannel> {
    DatasetServiceClient::new(c.channel.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// Registers a worker running `noop` jobs: (id, key).
async fn register(c: &Coord, name: &str, slots: u32) -> (String, String) {
    let r = workers(c)
        .register(pb::RegisterRequest {
            name: name.into(),
            resources: Some(cpu(slots)),
            kinds: vec!["noop".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (r.worker_id, r.worker_key)
}

fn cpu(slots: u32) -> pb::Resources {
    pb::Resources {
        cpu_slots: slots,
        ..Default::default()
    }
}

async fn submit(c: &Coord, specs: Vec<pb::JobSpec>) -> Vec<i64> {
    jobs(c)
        .submit(pb::SubmitRequest {
            idempotency_key: String::new(),
            jobs: specs,
        })
        .await
        .unwrap()
        .into_inner()
        .job_ids
}

async fn lease(c: &Coord, who: &(String, String), n: u32) -> Vec<pb::LeasedJob> {
    workers(c)
        .lease(pb::LeaseRequest {
            worker_id: who.0.clone(),
            worker_key: who.1.clone(),
            free: Some(cpu(n)),
            max_jobs: n,
            wait_ms: 2_000,
        })
        .await
        .unwrap()
        .into_inner()
        .jobs
}

async fn get(c: &Coord, id: i64) -> pb::Job {
    jobs(c)
        .get_job(pb::GetJobRequest {
            id,
            include_predictions: false,
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap()
}

async fn total_jobs(c: &Coord) -> u64 {
    let n = jobs(c)
        .list_jobs(pb::ListJobsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .counts
        .unwrap_or_default();
    n.blocked + n.queued + n.running + n.succeeded + n.failed + n.cancelled
}

fn synth(dir: &Path, seed: u64) -> (String, Manifest) {
    let cfg = SynthConfig {
        patients: 8,
        test_patients: 2,
        image_size: 16,
        positive_rate: 0.3,
        seed,
        ..Default::default()
    };
    generate(&cfg, dir).unwrap();
    dataset_hash(dir).unwrap()
}

/// An upload stream: the header now, the files' bytes when `send_files` is called, the end of
/// the stream when the sender is dropped.
struct Upload {
    tx: mpsc::Sender<pb::UploadDatasetRequest>,
    call: tokio::task::JoinHandle<Result<pb::UploadDatasetResponse, tonic::Status>>,
}

fn header(name: &str, hash: &str, manifest_json: String) -> pb::UploadDatasetRequest {
    pb::UploadDatasetRequest {
        item: Some(Item::Header(pb::DatasetHeader {
            name: name.into(),
            hash: hash.into(),
            manifest_json,
            summary_json: "{}".into(),
        })),
    }
}

async fn start_upload(c: &Coord, first: pb::UploadDatasetRequest) -> Upload {
    let (tx, rx) = mpsc::channel(64);
    tx.send(first).await.unwrap();
    let mut client = datasets(c);
    let call = tokio::spawn(async move {
        client
            .upload_dataset(ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner())
    });
    Upload { tx, call }
}

impl Upload {
    async fn send_files(&self, root: &Path, manifest: &Manifest) {
        for f in &manifest.files {
            let data = std::fs::read(root.join(&f.path)).unwrap();
            let item = Item::Chunk(pb::FileChunk {
                path: f.path.clone(),
                offset: 0,
                data,
            });
            if self
                .tx
                .send(pb::UploadDatasetRequest { item: Some(item) })
                .await
                .is_err()
            {
                return;
            }
        }
    }

    async fn finish(self) -> Result<pb::UploadDatasetResponse, tonic::Status> {
        drop(self.tx);
        self.call.await.unwrap()
    }
}

async fn upload(
    c: &Coord,
    name: &str,
    root: &Path,
    hash: &str,
    m: &Manifest,
) -> Result<pb::UploadDatasetResponse, tonic::Status> {
    let up = start_upload(c, header(name, hash, serde_json::to_string(m).unwrap())).await;
    up.send_files(root, m).await;
    up.finish().await
}

/// Everything under the coordinator's data folder, relative.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Finding 1 (critical): a refused upload left its files under their hash, and a header-only
/// upload then registered a client-written manifest naming /etc files, which FetchDataset
/// streamed back. Now every manifest is checked by the coordinator, refused registrations leave
/// nothing, leftovers are purged, and neither coordinator nor worker touches a path outside the
/// dataset even for a row written before the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_dataset_manifests_read_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite();
    let data = tmp.path().join("coordinator-data");
    let c = coordinator(&db.url, &data, |_| {}).await;
    let (a, b, d) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("d"),
    );
    let (hash_a, man_a) = synth(&a, 1);
    let (hash_b, man_b) = synth(&b, 2);
    let (hash_d, man_d) = synth(&d, 3);
    upload(&c, "taken", &a, &hash_a, &man_a).await.unwrap();

    // The first step of the attack: a taken name is refused before a byte is stored.
    let err = upload(&c, "taken", &b, &hash_b, &man_b).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let stored = listing(&data);
    assert!(!stored.iter().any(|p| p.starts_with(&hash_b)), "{stored:?}");

    // Two uploads race for one free name: the loser's content, already moved into place,
    // goes again (a failed registration leaves nothing behind).
    let first = start_upload(
        &c,
        header("race", &hash_b, serde_json::to_string(&man_b).unwrap()),
    )
    .await;
    let second = start_upload(
        &c,
        header("race", &hash_d, serde_json::to_string(&man_d).unwrap()),
    )
    .await;
    first.send_files(&b, &man_b).await;
    second.send_files(&d, &man_d).await;
    // Both headers passed the name check before either registers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.finish().await.unwrap();
    let err = second.finish().await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let stored = listing(&data);
    assert!(stored.iter().any(|p| p == &hash_b), "{stored:?}");
    assert!(
        !stored.iter().any(|p| p.starts_with(&hash_d)),
        "the loser's files are gone: {stored:?}"
    );
    assert!(
        !stored.iter().any(|p| p.starts_with(".incoming/")),
        "{stored:?}"
    );

    // The second step: a header-only upload of present content with a forged manifest.
    let mut forged = man_a.clone();
    for (path, i) in [("/etc/hostname", 0), ("../../../../../../etc/passwd", 1)] {
        forged.files[i].path = path.into();
    }
    for manifest in [forged.clone(), Manifest { files: vec![] }] {
        let up = start_upload(
            &c,
            header("evil", &hash_a, serde_json::to_string(&manifest).unwrap()),
        )
        .await;
        let err = up.finish().await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains("dataset manifest refused"),
            "{}",
            err.message()
        );
    }
    // Files outside the layout, with a hash that matches the manifest they are in.
    for bad in ["extra.bin", "images/sub/deep", "images/.hidden"] {
        let mut m = man_a.clone();
        m.files.push(ManifestEntry {
            path: bad.into(),
            size: 1,
            blake3: blake3::hash(b"x").to_hex().to_string(),
        });
        m.files.sort_by(|x, y| x.path.cmp(&y.path));
        let up = start_upload(
            &c,
            header(
                "evil",
                &m.dataset_hash(),
                serde_json::to_string(&m).unwrap(),
            ),
        )
        .await;
        let err = up.finish().await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
        assert!(err.message().contains(bad), "{}", err.message());
    }
    let err = datasets(&c)
        .get_dataset(pb::GetDatasetRequest {
            dataset: "evil".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = datasets(&c)
        .fetch_dataset(pb::FetchDatasetRequest {
            hash: hash_a.clone(),
            paths: vec!["/etc/hostname".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // A row registered before the fix, whose manifest names paths outside the dataset (and
    // hashes to its name): the coordinator will not serve it, and a worker will not fetch it.
    let mut poisoned = man_a.clone();
    poisoned.files[0].path = "../../outside.txt".into();
    poisoned.files.sort_by(|x, y| x.path.cmp(&y.path));
    let hash_p = poisoned.dataset_hash();
    std::fs::create_dir_all(data.join(&hash_p)).unwrap();
    std::fs::write(data.join(&hash_p).join(".complete"), b"").unwrap();
    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO datasets (hash, manifest, summary, storage_path, total_bytes, files, registered_at)
         VALUES (?1, ?2, '{}', ?3, 1, 1, 1)",
    )
    .bind(&hash_p)
    .bind(serde_json::to_string(&poisoned).unwrap())
    .bind(data.join(&hash_p).display().to_string())
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO dataset_names (name, hash) VALUES ('old', ?1)")
        .bind(&hash_p)
        .execute(&pool)
        .await
        .unwrap();
    let err = datasets(&c)
        .fetch_dataset(pb::FetchDatasetRequest {
            hash: hash_p.clone(),
            paths: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let cache = tmp.path().join("worker/cache");
    let worker = stackhive_worker::datasets::DatasetCache::new(&cache, vec![]);
    let err = worker.ensure(c.channel.clone(), "old").await.unwrap_err();
    assert!(err.to_string().contains("manifest refused"), "{err}");
    assert!(!tmp.path().join("worker/outside.txt").exists());
    assert!(!tmp.path().join("outside.txt").exists());

    // Leftovers: a killed upload's staging folder and content nothing registers are purged
    // by the reaper; registered content stays.
    std::fs::create_dir_all(data.join(".incoming/killed")).unwrap();
    std::fs::write(data.join(".incoming/killed/train.csv"), b"half").unwrap();
    let orphan = "ab".repeat(32);
    std::fs::create_dir_all(data.join(&orphan)).unwrap();
    let store = stackhive_coordinator::store::open(
        &db.url,
        CoordinatorConfig::with_db(&db.url).policy(),
        2,
    )
    .await
    .unwrap();
    let files = stackhive_coordinator::services::datasets::DatasetFiles::new(&data);
    let removed = stackhive_coordinator::services::reaper::purge_dataset_leftovers(
        &*store,
        &files,
        Duration::ZERO,
    )
    .await;
    assert_eq!(removed, 2);
    let stored = listing(&data);
    assert!(
        !stored
            .iter()
            .any(|p| p.contains("killed") || p.starts_with(&orphan)),
        "{stored:?}"
    );
    assert!(stored.iter().any(|p| p == &hash_a), "{stored:?}");
}

/// Finding 3 (high): with a made-up worker id, or another worker's id read from GetJob, a
/// client completed, failed, heartbeated, leased and deregistered as that worker. Now every
/// worker call proves the worker's key, and reports are fenced by (job, attempt, worker).
/// Finding 4 (high): artifacts of a running job could be uploaded and deleted by anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_acts_as_another_worker_or_touches_its_artifacts() {
    let tmp = tempfile::tempdir().unwrap();
    let db = TestDb::postgres().await;
    let c = coordinator(&db.url, tmp.path(), |_| {}).await;
    let ids = submit(
        &c,
        vec![
            spec("noop", serde_json::json!({})),
            spec("noop", serde_json::json!({})),
        ],
    )
    .await;
    let w1 = register(&c, "w1", 1).await;
    let w2 = register(&c, "w2", 1).await;
    let leased = lease(&c, &w1, 1).await;
    let (job, attempt) = (leased[0].id, leased[0].attempt);
    let victim = get(&c, job).await.worker_id;
    assert_eq!(victim, w1.0, "GetJob shows who runs the job");

    let made_up = (
        "00000000-0000-0000-0000-000000000000".to_string(),
        String::new(),
    );
    let as_victim = (victim.clone(), "0".repeat(64));
    let complete = |who: &(String, String)| pb::CompleteRequest {
        worker_id: who.0.clone(),
        worker_key: who.1.clone(),
        completions: vec![pb::Completion {
            id: job,
            attempt,
            result_json: "{\"forged\":true}".into(),
            progress_json: String::new(),
            predictions: None,
        }],
    };
    let e = workers(&c).complete(complete(&made_up)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = workers(&c)
        .complete(complete(&as_victim))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // A real, registered worker reporting a job leased to another.
    let e = workers(&c)
        .complete(complete(&w2))
        .await
        .unwrap()
        .into_inner();
    let (kind, why) = refused_one(e);
    assert_eq!(kind, pb::RefusalKind::Stale);
    assert!(why.contains("leased to another worker"), "{why}");

    let fail = |who: &(String, String)| pb::FailRequest {
        worker_id: who.0.clone(),
        worker_key: who.1.clone(),
        id: job,
        attempt,
        reason: "forged".into(),
        retryable: false,
        handback: false,
    };
    assert_eq!(
        workers(&c).fail(fail(&as_victim)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        workers(&c).fail(fail(&w2)).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    let beat = |who: &(String, String)| pb::HeartbeatRequest {
        worker_id: who.0.clone(),
        worker_key: who.1.clone(),
        jobs: vec![pb::ActiveJob {
            id: job,
            attempt,
            progress_json: "{\"forged\":true}".into(),
        }],
    };
    assert_eq!(
        workers(&c)
            .heartbeat(beat(&as_victim))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let stops = workers(&c)
        .heartbeat(beat(&w2))
        .await
        .unwrap()
        .into_inner()
        .stop;
    assert_eq!(
        stops.len(),
        1,
        "the other worker is told the job is not its own"
    );
    let e = workers(&c)
        .lease(pb::LeaseRequest {
            worker_id: made_up.0.clone(),
            worker_key: String::new(),
            free: Some(cpu(1)),
            max_jobs: 1,
            wait_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert_eq!(
        get(&c, ids[1]).await.state,
        pb::JobState::Queued as i32,
        "nothing claimed"
    );
    let e = workers(&c)
        .deregister(pb::DeregisterRequest {
            worker_id: victim.clone(),
            worker_key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Registering "again" as the victim needs its key.
    let e = workers(&c)
        .register(pb::RegisterRequest {
            name: "thief".into(),
            resources: Some(cpu(1)),
            worker_id: victim.clone(),
            worker_key: "f".repeat(64),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // Artifacts: only the worker holding the attempt uploads or deletes.
    let file = tmp.path().join("checkpoint.pt");
    std::fs::write(&file, b"forged weights").unwrap();
    let anonymous = stackhive_worker::Identity::default();
    let err = stackhive_worker::artifacts::upload(
        c.channel.clone(),
        &anonymous,
        job,
        attempt,
        "checkpoint.pt",
        &file,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("worker_id is empty"), "{err}");
    for (who, code) in [
        (&as_victim, Code::PermissionDenied),
        (&w2, Code::FailedPrecondition),
    ] {
        let who = stackhive_worker::Identity::new(&who.0, &who.1);
        let err = stackhive_worker::artifacts::upload(
            c.channel.clone(),
            &who,
            job,
            attempt,
            "checkpoint.pt",
            &file,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, stackhive_worker::artifacts::ArtifactError::Rpc(s) if s.code() == code),
            "{err}"
        );
    }
    let owner = stackhive_worker::Identity::new(&w1.0, &w1.1);
    stackhive_worker::artifacts::upload(
        c.channel.clone(),
        &owner,
        job,
        attempt,
        "checkpoint.pt",
        &file,
    )
    .await
    .unwrap();
    for who in [&as_victim, &w2] {
        let who = stackhive_worker::Identity::new(&who.0, &who.1);
        assert!(stackhive_worker::artifacts::delete(
            c.channel.clone(),
            &who,
            job,
            attempt,
            "checkpoint.pt"
        )
        .await
        .is_err());
    }
    let listed = ArtifactServiceClient::new(c.channel.clone())
        .list_artifacts(pb::ListArtifactsRequest { job_id: job })
        .await
        .unwrap()
        .into_inner()
        .artifacts;
    assert_eq!(listed.len(), 1, "the owner's upload stays: {listed:?}");

    // Nothing the impostors sent changed the job; its worker still finishes it.
    let j = get(&c, job).await;
    assert_eq!(
        (j.state, j.attempt),
        (pb::JobState::Running as i32, attempt)
    );
    assert!(
        j.result_json.is_empty() && j.progress_json.is_empty(),
        "{j:?}"
    );
    let done = workers(&c)
        .complete(complete(&w1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.accepted, 1);
}

/// Finding 5 (high): 7 MiB of non-JSON progress on ten running jobs made ListJobs and Watch
/// fail with OUT_OF_RANGE for everyone. Now progress is bounded JSON, and pages are cut by
/// encoded size as well as by rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_bounded_and_listings_fit_any_job_set() {
    let tmp = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite();
    let c = coordinator(&db.url, tmp.path(), |_| {}).await;
    let n = 300u32;
    let specs = (0..n)
        .map(|_| spec("noop", serde_json::json!({})))
        .collect();
    submit(&c, specs).await;
    let w = register(&c, "w", n).await;
    let mut running = Vec::new();
    while running.len() < n as usize {
        running.extend(lease(&c, &w, n).await);
    }
    let beat = |progress: &dyn Fn(usize) -> String, k: usize| pb::HeartbeatRequest {
        worker_id: w.0.clone(),
        worker_key: w.1.clone(),
        jobs: running
            .iter()
            .take(k)
            .enumerate()
            .map(|(i, j)| pb::ActiveJob {
                id: j.id,
                attempt: j.attempt,
                progress_json: progress(i),
            })
            .collect(),
    };
    let huge = "x".repeat(7 << 20);
    for job in running.iter().take(10) {
        let e = workers(&c)
            .heartbeat(pb::HeartbeatRequest {
                worker_id: w.0.clone(),
                worker_key: w.1.clone(),
                jobs: vec![pb::ActiveJob {
                    id: job.id,
                    attempt: job.attempt,
                    progress_json: huge.clone(),
                }],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    }
    let e = workers(&c)
        .heartbeat(beat(&|_| "not json".into(), 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        get(&c, running[0].id).await.progress_json.is_empty(),
        "nothing stored"
    );

    // The most every job may carry: 300 × 16 KiB is more than one response may hold.
    let fat = |i: usize| serde_json::json!({ "epoch": i, "note": "y".repeat(16_000) }).to_string();
    workers(&c).heartbeat(beat(&fat, n as usize)).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = jobs(&c)
            .list_jobs(pb::ListJobsRequest {
                states: vec![pb::JobState::Running as i32],
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(!page.jobs.is_empty());
        seen.extend(page.jobs.iter().map(|j| j.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        seen.len(),
        n as usize,
        "every job listed once over the pages"
    );
    assert!(pages >= 2, "cut by size, not only by rows: {pages} page(s)");
    let mut watch = jobs(&c)
        .watch(pb::WatchRequest {
            job_ids: running.iter().map(|j| j.id).collect(),
            interval_ms: 200,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.counts.unwrap().running, n as u64);
}

/// Finding 6 (high): Watch streams whose clients had gone kept polling until their jobs
/// finished, and one Watch could name a million ids. Now each stream ends with its client, a
/// coordinator serves a bounded number, and the ids of one are bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_end_with_their_clients_and_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite();
    let c = coordinator(&db.url, tmp.path(), |cfg| cfg.max_watches = 4).await;
    let mut never = spec("noop", serde_json::json!({}));
    never.resources = Some(pb::Resources {
        cpu_slots: 1,
        tags: vec!["no-such-machine".into()],
        ..Default::default()
    });
    let id = submit(&c, vec![never]).await[0];
    let request = || pb::WatchRequest {
        job_ids: vec![id],
        interval_ms: 200,
        ..Default::default()
    };
    let mut streams = Vec::new();
    for _ in 0..4 {
        // Each client on a connection of its own, as 500 attackers would be.
        let own = connect(&c.url).await;
        let mut s = JobServiceClient::new(own)
            .watch(request())
            .await
            .unwrap()
            .into_inner();
        s.message().await.unwrap().unwrap();
        streams.push(s);
    }
    let e = jobs(&c).watch(request()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    drop(streams);
    // The clients are gone: their streams end and free their places, while the job waits on.
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(s) = jobs(&c).watch(request()).await {
            reopened = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reopened.is_some(),
        "watch places were not freed when their clients left"
    );
    assert_eq!(get(&c, id).await.state, pb::JobState::Queued as i32);
    let e = jobs(&c)
        .watch(pb::WatchRequest {
            job_ids: (1..=10_001).collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}

/// A prost message with a `bytes` field where ListJobsRequest has the string `experiment`,
/// to send invalid UTF-8 as a hand-built client would.
#[derive(Clone, PartialEq, prost::Message)]
struct RawListJobs {
    #[prost(bytes = "vec", tag = "3")]
    experiment: Vec<u8>,
}

/// Finding 7 (medium, low): dependency graphs that held the SQLite writer for seconds, huge
/// headers and prediction arrays, escape sequences in worker names and job text, invalid UTF-8
/// answered with INTERNAL, control and bidi characters in keys and names. Each is refused with
/// INVALID_ARGUMENT and nothing is stored; text that did get stored (a failure reason) is shown
/// escaped by the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_input_is_refused_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite();
    let c = coordinator(&db.url, tmp.path(), |_| {}).await;
    let first = submit(&c, vec![spec("noop", serde_json::json!({}))]).await[0];
    let refused = |specs: Vec<pb::JobSpec>, key: &str| {
        let mut j = jobs(&c);
        let key = key.to_string();
        async move {
            j.submit(pb::SubmitRequest {
                idempotency_key: key,
                jobs: specs,
            })
            .await
            .unwrap_err()
        }
    };
    let mut wide = spec("noop", serde_json::json!({}));
    wide.depends_on = vec![first; 10_001];
    let e = refused(vec![wide], "").await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .contains("10001 dependencies, the limit is 10000"),
        "{}",
        e.message()
    );
    // 800 jobs each depending on every earlier one: 319,600 edges.
    let dense: Vec<pb::JobSpec> = (0..800u32)
        .map(|i| {
            let mut s = spec("noop", serde_json::json!({}));
            s.depends_on_batch = (0..i).collect();
            s
        })
        .collect();
    let e = refused(dense, "").await;
    assert!(
        e.message().contains("319600 dependencies"),
        "{}",
        e.message()
    );
    let mut named = spec("noop", serde_json::json!({}));
    named.name = "fold\u{1b}[2J".into();
    assert_eq!(refused(vec![named], "").await.code(), Code::InvalidArgument);
    let e = refused(
        vec![spec("noop", serde_json::json!({}))],
        "key\u{202e}gpj.exe",
    )
    .await;
    assert!(e.message().contains("U+202E"), "{}", e.message());
    assert_eq!(total_jobs(&c).await, 1, "nothing stored");

    // A 40 MB dataset header.
    let up = start_upload(&c, header("big", &"a".repeat(64), "x".repeat(40 << 20))).await;
    let e = up.finish().await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("the limit is"), "{}", e.message());

    // Ten million test predictions, with no row count expected.
    let w = register(&c, "w", 1).await;
    let leased = lease(&c, &w, 1).await;
    let e = workers(&c)
        .complete(pb::CompleteRequest {
            worker_id: w.0.clone(),
            worker_key: w.1.clone(),
            completions: vec![pb::Completion {
                id: leased[0].id,
                attempt: leased[0].attempt,
                result_json: String::new(),
                progress_json: String::new(),
                predictions: Some(pb::Predictions {
                    oof_rows: vec![],
                    oof: vec![],
                    test: vec![0.5; 10_000_000],
                }),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let (kind, why) = refused_one(e);
    assert_eq!(kind, pb::RefusalKind::Invalid);
    assert!(why.contains("the limit is"), "{why}");
    assert_eq!(
        get(&c, leased[0].id).await.state,
        pb::JobState::Running as i32
    );

    // Worker metadata: a 1 MB name starting with an escape, control characters, bad kinds.
    for (name, kinds) in [
        (
            format!("\u{1b}]0;pwned\u{7}{}", "n".repeat(1 << 20)),
            vec![],
        ),
        ("blade\u{1b}[31m".to_string(), vec![]),
        ("blade".to_string(), vec!["no spaces".to_string()]),
    ] {
        let e = workers(&c)
            .register(pb::RegisterRequest {
                name,
                resources: Some(cpu(1)),
                kinds,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    }

    // Invalid UTF-8 in a string field: the sender's fault, not the server's.
    let mut grpc = tonic::client::Grpc::new(c.channel.clone());
    grpc.ready().await.unwrap();
    let e = grpc
        .unary::<RawListJobs, pb::ListJobsResponse, _>(
            tonic::Request::new(RawListJobs {
                experiment: vec![0x66, 0xff, 0xfe],
            }),
            "/stackhive.v1.JobService/ListJobs".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // A failure reason carrying a terminal escape is stored, and shown escaped.
    workers(&c)
        .fail(pb::FailRequest {
            worker_id: w.0.clone(),
            worker_key: w.1.clone(),
            id: leased[0].id,
            attempt: leased[0].attempt,
            reason: "\u{1b}]0;owned\u{7}boom".into(),
            retryable: false,
            handback: false,
        })
        .await
        .unwrap();
    let out = std::process::Command::new(bin("stackhive"))
        .args(["--coordinator", &c.url, "job", &leased[0].id.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.contains(&0x1b), "raw escape printed");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\\u{1b}]0;owned"));
}

/// Finding 2 (critical): any client ran `id` as root on the workers. Submitting now needs a
/// submitter token (`auth.rs`); on top, an operator can keep a worker from offering shell jobs
/// at all, and run them as an unprivileged user when the worker runs as root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_disable_shell_jobs_or_run_them_unprivileged() {
    let tmp = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite();
    let c = coordinator(&db.url, tmp.path(), |_| {}).await;
    let id = submit(
        &c,
        vec![spec("shell", serde_json::json!({ "command": "id -u" }))],
    )
    .await[0];
    let cache = tmp.path().join("cache");
    let cache = cache.to_str().unwrap();
    let no_shell = stackhive_tests::cluster::Worker::start(
        "no-shell",
        &c.url,
        &["--disable-kinds", "shell", "--dataset-cache", cache],
    );
    stackhive_tests::cluster::wait_for("the worker to register", Duration::from_secs(30), || {
        let mut j = jobs(&c);
        async move {
            let w = j
                .list_workers(pb::ListWorkersRequest {
                    include_dead: false,
                })
                .await
                .ok()?
                .into_inner();
            (!w.workers.is_empty()).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        get(&c, id).await.state,
        pb::JobState::Queued as i32,
        "a worker without shell never takes the shell job"
    );
    no_shell.terminate(Duration::from_secs(20)).await;

    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: --run-as is covered by the worker's unit test only");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let _unprivileged = stackhive_tests::cluster::Worker::start(
        "unprivileged",
        &c.url,
        &["--run-as", "nobody", "--dataset-cache", cache],
    );
    let done = stackhive_tests::cluster::wait_for("the shell job", Duration::from_secs(30), || {
        let c = &c;
        async move {
            let j = get(c, id).await;
            (j.state == pb::JobState::Succeeded as i32).then_some(j)
        }
    })
    .await;
    let result: serde_json::Value = serde_json::from_str(&done.result_json).unwrap();
    assert_eq!(result["stdout_tail"], format!("{}\n", nobody.uid));
}
