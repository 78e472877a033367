//! Datasets end to end: a generated ISIC-like dataset is registered through the real CLI with a
//! real coordinator on PostgreSQL, fetched and verified by the worker's dataset cache (or read
//! from a shared folder), refused when tampered with or broken, and its folds are computed once.

use std::path::{Path, PathBuf};
use std::process::Command;

use stackhive_data::synth::{generate, SynthConfig};
use stackhive_proto::connect::{plain, AuthChannel as Channel};
use stackhive_proto::v1 as pb;
use stackhive_proto::v1::dataset_service_client::DatasetServiceClient;
use stackhive_tests::cluster::{bin, Coordinator};
use stackhive_tests::db::TestDb;
use stackhive_worker::datasets::{DatasetCache, Source};

fn synth(dir: &Path, seed: u64) {
    let cfg = SynthConfig {
        patients: 20,
        test_patients: 4,
        image_size: 32,
        external_2019: 10,
        positive_rate: 0.1,
        seed,
        ..Default::default()
    };
    generate(&cfg, dir).expect("generate dataset");
}

/// Runs the CLI; returns (exit success, stdout, stderr).
fn cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("stackhive"))
        .arg("--coordinator")
        .arg(url)
        .args(args)
        .output()
        .expect("run stackhive");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("images")).unwrap();
    for f in ["train.csv", "test.csv"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    for e in std::fs::read_dir(from.join("images")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join("images").join(e.file_name())).unwrap();
    }
}

async fn channel(url: &str) -> Channel {
    plain(
        tonic::transport::Channel::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_fetch_verify_and_fold_a_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ds");
    synth(&data, 11);
    let db = TestDb::postgres().await;
    let store_dir = tmp.path().join("coordinator-data");
    let coord = Coordinator::start(&db.url, 0, &["--data-dir", store_dir.to_str().unwrap()]).await;

    // Register through the CLI; a second name for the same content uploads nothing.
    let (ok, out, err) = cli(
        &coord.url,
        &["--json", "dataset", "add", "tiny", data.to_str().unwrap()],
    );
    assert!(ok, "dataset add failed: {err}");
    let added: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let hash = added["hash"].as_str().unwrap().to_string();
    assert!(added["uploaded_bytes"].as_u64().unwrap() > 0);
    let (ok, out, _) = cli(
        &coord.url,
        &[
            "--json",
            "dataset",
            "add",
            "tiny-alias",
            data.to_str().unwrap(),
        ],
    );
    assert!(ok);
    let again: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (
            again["hash"].as_str().unwrap(),
            again["uploaded_bytes"].as_u64()
        ),
        (hash.as_str(), Some(0))
    );

    // A worker without a shared folder fetches it in chunks, verifies it and caches it.
    let cache_dir = tmp.path().join("worker-cache");
    let cache = DatasetCache::new(&cache_dir, vec![]).with_coordinator_path(false);
    let ch = channel(&coord.url).await;
    let (path, source) = cache.ensure(ch.clone(), &hash).await.unwrap();
    assert!(
        matches!(source, Source::Fetched { bytes } if bytes > 0),
        "{source:?}"
    );
    assert_eq!(
        std::fs::read(path.join("train.csv")).unwrap(),
        std::fs::read(data.join("train.csv")).unwrap()
    );
    assert_eq!(stackhive_data::hash::dataset_hash(&path).unwrap().0, hash);
    assert_eq!(
        cache.ensure(ch.clone(), &hash).await.unwrap().1,
        Source::Cached
    );
    let fresh = DatasetCache::new(&cache_dir, vec![]).with_coordinator_path(false);
    assert_eq!(
        fresh.ensure(ch.clone(), &hash).await.unwrap().1,
        Source::Cached,
        "kept on disk"
    );

    // A worker that sees the same content on a shared path reads it there.
    let shared = tmp.path().join("shared");
    copy_dir(&data, &shared.join(&hash));
    let on_share = DatasetCache::new(tmp.path().join("other-cache"), vec![shared.clone()])
        .with_coordinator_path(false);
    let (p, s) = on_share.ensure(ch.clone(), &hash).await.unwrap();
    assert_eq!((p, s), (shared.join(&hash), Source::Shared));

    // Folds: computed once, then served as stored; external rows never validate.
    let mut client = DatasetServiceClient::new(ch.clone());
    let req = pb::FoldsRequest {
        dataset: "tiny".into(),
        scheme: String::new(),
        k: 4,
        seed: 7,
    };
    let first = client
        .compute_folds(req.clone())
        .await
        .unwrap()
        .into_inner();
    let second = client
        .compute_folds(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(first.computed_now && !second.computed_now);
    assert_eq!(first.fold, second.fold);
    let ds = stackhive_data::isic::Dataset::load(&data).unwrap();
    assert_eq!(first.fold.len(), ds.train.len());
    for (row, f) in ds.train.iter().zip(&first.fold) {
        assert_eq!(row.is_external(), *f == -1, "{} fold {f}", row.image_name);
        assert!(*f < 4);
    }
    let got = client.get_folds(req).await.unwrap().into_inner();
    assert_eq!(got.fold, first.fold);

    // Through a real worker: a prefetch job finds the coordinator's own folder on this machine
    // (the shared-folder case) and reports it.
    let mut jobs = coord.jobs().await;
    let spec = stackhive_tests::cluster::spec(
        "dataset-prefetch",
        serde_json::json!({ "dataset": "tiny" }),
    );
    let id = stackhive_tests::cluster::submit(&mut jobs, vec![spec]).await[0];
    let wcache = tmp.path().join("daemon-cache");
    let w = stackhive_tests::cluster::Worker::start(
        "prefetcher",
        &coord.url,
        &["--slots", "1", "--dataset-cache", wcache.to_str().unwrap()],
    );
    let done = stackhive_tests::cluster::wait_state(
        &mut jobs,
        id,
        pb::JobState::Succeeded,
        std::time::Duration::from_secs(60),
    )
    .await;
    let result: serde_json::Value = serde_json::from_str(&done.result_json).unwrap();
    assert_eq!(result["source"], "shared", "{result}");
    assert_eq!(
        PathBuf::from(result["path"].as_str().unwrap()),
        store_dir.join(&hash)
    );
    w.terminate(std::time::Duration::from_secs(20)).await;
    coord.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_or_broken_datasets_are_refused_and_nothing_is_registered() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ds");
    synth(&data, 12);
    let db = TestDb::postgres().await;
    let store_dir = tmp.path().join("coordinator-data");
    let coord = Coordinator::start(&db.url, 0, &["--data-dir", store_dir.to_str().unwrap()]).await;
    let ch = channel(&coord.url).await;
    let mut client = DatasetServiceClient::new(ch.clone());

    // Upload the right header but one image with a flipped byte.
    let (hash, manifest) = stackhive_data::hash::dataset_hash(&data).unwrap();
    let victim = manifest
        .files
        .iter()
        .find(|f| f.path.starts_with("images/"))
        .unwrap()
        .path
        .clone();
    let mut msgs = vec![pb::UploadDatasetRequest {
        item: Some(pb::upload_dataset_request::Item::Header(
            pb::DatasetHeader {
                name: "tampered".into(),
                hash: hash.clone(),
                manifest_json: serde_json::to_string(&manifest).unwrap(),
                summary_json: "{}".into(),
            },
        )),
    }];
    for f in &manifest.files {
        let mut bytes = std::fs::read(data.join(&f.path)).unwrap();
        if f.path == victim {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
        }
        msgs.push(pb::UploadDatasetRequest {
            item: Some(pb::upload_dataset_request::Item::Chunk(pb::FileChunk {
                path: f.path.clone(),
                offset: 0,
                data: bytes,
            })),
        });
    }
    let err = client
        .upload_dataset(tokio_stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains(&victim),
        "the message names the bad file: {}",
        err.message()
    );
    let missing = client
        .get_dataset(pb::GetDatasetRequest {
            dataset: hash.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let leftovers: Vec<PathBuf> = std::fs::read_dir(store_dir.join(".incoming"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "staging folders left behind: {leftovers:?}"
    );
    assert!(!store_dir.join(&hash).exists());

    // A dataset with a missing image is refused by the CLI, naming the row.
    let broken = tmp.path().join("broken");
    copy_dir(&data, &broken);
    let gone = std::fs::read_dir(broken.join("images"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_file(&gone).unwrap();
    let stem = gone.file_stem().unwrap().to_str().unwrap().to_string();
    let (ok, _, err) = cli(
        &coord.url,
        &["dataset", "add", "broken", broken.to_str().unwrap()],
    );
    assert!(!ok);
    assert!(err.contains(&stem), "error names the row's image: {err}");
    // With --drop-invalid the row is dropped, and what is registered is what validated.
    let (ok, out, err) = cli(
        &coord.url,
        &[
            "--json",
            "dataset",
            "add",
            "cleaned",
            broken.to_str().unwrap(),
            "--drop-invalid",
        ],
    );
    assert!(ok, "{err}");
    let added: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(added["dropped_rows"].as_u64(), Some(1));
    let all = client
        .list_datasets(pb::ListDatasetsRequest {})
        .await
        .unwrap()
        .into_inner()
        .datasets;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].names, vec!["cleaned".to_string()]);
    coord.kill().await;
}

/// Uploads live in the `--data-dir` of the coordinator that received them (issue 16): a second
/// coordinator of the cluster with a folder of its own says at start which registered datasets
/// it cannot serve and names the requirement, and a fetch through it is refused with the same
/// advice while the first one serves the files. One that shares the folder serves them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_without_a_datasets_files_says_so_at_start_and_on_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ds");
    synth(&data, 12);
    let db = TestDb::postgres().await;
    let dir_a = tmp.path().join("data-a");
    let a = Coordinator::start(&db.url, 0, &["--data-dir", dir_a.to_str().unwrap()]).await;
    let (ok, out, err) = cli(
        &a.url,
        &[
            "--json",
            "dataset",
            "add",
            "shared-one",
            data.to_str().unwrap(),
        ],
    );
    assert!(ok, "dataset add failed: {err}");
    let hash = serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_string();

    let dir_b = tmp.path().join("data-b");
    let b = Coordinator::start(&db.url, 0, &["--data-dir", dir_b.to_str().unwrap()]).await;
    let said = stackhive_tests::cluster::wait_for(
        "B's start-up warning",
        std::time::Duration::from_secs(10),
        || {
            let lines = b.stderr();
            async move { lines.into_iter().find(|l| l.contains("have no files in")) }
        },
    )
    .await;
    assert!(
        said.contains("shared-one") && said.contains("same --data-dir"),
        "{said}"
    );
    let cache = DatasetCache::new(tmp.path().join("cache-b"), vec![]).with_coordinator_path(false);
    let e = cache
        .ensure(channel(&b.url).await, &hash)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not on this coordinator"), "{e}");
    let cache = DatasetCache::new(tmp.path().join("cache-a"), vec![]).with_coordinator_path(false);
    cache.ensure(channel(&a.url).await, &hash).await.unwrap();

    // Sharing the folder is the cure: C on A's folder serves the dataset and warns of nothing.
    let c = Coordinator::start(&db.url, 0, &["--data-dir", dir_a.to_str().unwrap()]).await;
    let cache = DatasetCache::new(tmp.path().join("cache-c"), vec![]).with_coordinator_path(false);
    cache.ensure(channel(&c.url).await, &hash).await.unwrap();
    assert!(
        !c.stderr().iter().any(|l| l.contains("have no files in")),
        "{:?}",
        c.stderr()
    );
    for coord in [a, b, c] {
        coord.kill().await;
    }
}
