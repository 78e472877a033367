//! The content hash that names a dataset (shared/DESIGN.md: "a dataset is identified by a
//! content hash"), and the manifest a worker uses to fetch a dataset in pieces and verify each
//! file and the whole.
//!
//! The hash covers exactly the files of the layout — `train.csv`, `test.csv` and the regular
//! files directly in `images/` (dot-files such as `.DS_Store` excluded) — so a cache folder,
//! notes or a fold file beside them do not change a dataset's name.
//! Must not: read anything outside those files, or depend on directory order, thread timing
//! or platform path separators.

use std::fs;
use std::io::BufReader;
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::isic::{IMAGES_DIR, TEST_CSV, TRAIN_CSV};

/// Prefix of the dataset hash input; a new layout or encoding gets a new tag, never the same
/// hash for different content.
const DOMAIN: &[u8] = b"stackhive dataset v1\n";

/// One file of a dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative to the dataset root, `/`-separated: `train.csv`, `images/ISIC_0015719.jpg`.
    pub path: String,
    pub size: u64,
    /// BLAKE3 of the file's bytes, lower-case hex.
    pub blake3: String,
}

/// Every file of a dataset, sorted by `path` (byte order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<ManifestEntry>,
}

impl Manifest {
    /// The dataset hash these entries stand for: BLAKE3 over a domain tag and, per file in
    /// path order, the path's length and bytes, the file's length and its BLAKE3 in hex.
    /// Hashing the per-file hashes rather than the concatenated bytes is what lets a worker
    /// check a fetched manifest against the registered name before fetching any file.
    pub fn dataset_hash(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(DOMAIN);
        for e in &self.files {
            h.update(&(e.path.len() as u64).to_le_bytes());
            h.update(e.path.as_bytes());
            h.update(&e.size.to_le_bytes());
            // A malformed hex digest still hashes deterministically; `check` rejects it.
            h.update(e.blake3.as_bytes());
        }
        h.finalize().to_hex().to_string()
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|e| e.size).sum()
    }

    pub fn get(&self, path: &str) -> Option<&ManifestEntry> {
        self.files
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.files[i])
    }

    /// Checks a manifest received from elsewhere before any file is written from it: sorted
    /// unique paths of the layout only (nothing that could escape the dataset folder),
    /// well-formed digests, and a hash equal to `expected_hash`.
    pub fn check(&self, expected_hash: &str) -> Result<(), DataError> {
        for pair in self.files.windows(2) {
            if pair[0].path >= pair[1].path {
                return Err(DataError::BadManifest(format!(
                    "expected paths sorted and unique, found {:?} before {:?}",
                    pair[0].path, pair[1].path
                )));
            }
        }
        for e in &self.files {
            if !is_layout_path(&e.path) {
                return Err(DataError::BadManifest(format!(
                    "expected train.csv, test.csv or images/NAME, found path {:?}",
                    e.path
                )));
            }
            if e.blake3.len() != 64 || !e.blake3.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(DataError::BadManifest(format!(
                    "expected a 64-digit hex blake3 for {}, found {:?}",
                    e.path, e.blake3
                )));
            }
        }
        let found = self.dataset_hash();
        if found != expected_hash {
            return Err(DataError::HashMismatch {
                what: "manifest".into(),
                expected: expected_hash.into(),
                found,
            });
        }
        Ok(())
    }
}

impl ManifestEntry {
    /// An incremental checker for this file, for bytes arriving in chunks.
    pub fn verifier(&self) -> FileVerifier<'_> {
        FileVerifier {
            entry: self,
            hasher: blake3::Hasher::new(),
            seen: 0,
        }
    }

    /// Checks a whole file's bytes against this entry.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), DataError> {
        let mut v = self.verifier();
        v.update(bytes);
        v.finish()
    }
}

/// Checks one file fetched in chunks; see `ManifestEntry::verifier`.
#[derive(Debug)]
pub struct FileVerifier<'a> {
    entry: &'a ManifestEntry,
    hasher: blake3::Hasher,
    seen: u64,
}

impl FileVerifier<'_> {
    pub fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.seen += chunk.len() as u64;
    }

    pub fn finish(self) -> Result<(), DataError> {
        if self.seen != self.entry.size {
            return Err(DataError::SizeMismatch {
                path: self.entry.path.clone(),
                expected: self.entry.size,
                found: self.seen,
            });
        }
        let found = self.hasher.finalize().to_hex().to_string();
        if found != self.entry.blake3 {
            return Err(DataError::HashMismatch {
                what: self.entry.path.clone(),
                expected: self.entry.blake3.clone(),
                found,
            });
        }
        Ok(())
    }
}

fn is_layout_path(p: &str) -> bool {
    if p == TRAIN_CSV || p == TEST_CSV {
        return true;
    }
    match p.strip_prefix(IMAGES_DIR).and_then(|r| r.strip_prefix('/')) {
        Some(name) => {
            !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0'])
        }
        None => false,
    }
}

/// The relative paths of the files that make up the dataset at `root`, sorted.
pub fn dataset_files(root: &Path) -> Result<Vec<String>, DataError> {
    let mut files = Vec::new();
    for name in [TRAIN_CSV, TEST_CSV] {
        if root.join(name).is_file() {
            files.push(name.to_string());
        }
    }
    let images = root.join(IMAGES_DIR);
    if images.is_dir() {
        let read_err = |source| DataError::Read {
            path: images.clone(),
            source,
        };
        for entry in fs::read_dir(&images).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(DataError::NonUtf8Path { path: entry.path() });
            };
            // Follows symlinks: a dataset assembled from links hashes like its copy.
            if name.starts_with('.') || !entry.path().is_file() {
                continue;
            }
            files.push(format!("{IMAGES_DIR}/{name}"));
        }
    }
    files.sort_unstable();
    Ok(files)
}

/// BLAKE3 of one file, streamed.
fn hash_file(root: &Path, rel: &str) -> Result<ManifestEntry, DataError> {
    let path = root.join(rel);
    let read_err = |source| DataError::Read {
        path: path.clone(),
        source,
    };
    let file = fs::File::open(&path).map_err(read_err)?;
    let mut hasher = blake3::Hasher::new();
    let size = std::io::copy(&mut BufReader::with_capacity(1 << 16, file), &mut hasher)
        .map_err(read_err)?;
    Ok(ManifestEntry {
        path: rel.to_string(),
        size,
        blake3: hasher.finalize().to_hex().to_string(),
    })
}

/// The content hash of the dataset at `root` (64 hex digits) and its manifest. Files are
/// hashed in parallel; the result depends only on their paths and bytes.
pub fn dataset_hash(root: &Path) -> Result<(String, Manifest), DataError> {
    let files = dataset_files(root)?;
    for required in [TRAIN_CSV, TEST_CSV] {
        if files
            .binary_search_by(|f| f.as_str().cmp(required))
            .is_err()
        {
            return Err(DataError::Read {
                path: root.join(required),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "expected a file, found none",
                ),
            });
        }
    }
    let entries: Result<Vec<ManifestEntry>, DataError> =
        files.par_iter().map(|rel| hash_file(root, rel)).collect();
    let manifest = Manifest { files: entries? };
    let hash = manifest.dataset_hash();
    tracing::debug!(root = %root.display(), files = manifest.files.len(), %hash, "dataset hashed");
    Ok((hash, manifest))
}

/// Recomputes the hash of `root` and checks it equals `expected` — what a worker does before
/// trusting a shared path or a freshly fetched copy.
pub fn verify_folder(root: &Path, expected: &str) -> Result<Manifest, DataError> {
    let (found, manifest) = dataset_hash(root)?;
    if found != expected {
        return Err(DataError::HashMismatch {
            what: format!("dataset {}", root.display()),
            expected: expected.to_string(),
            found,
        });
    }
    Ok(manifest)
}
