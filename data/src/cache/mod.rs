//! The preprocessed image cache (issue 3, item 4): every image of a dataset decoded, cropped
//! (cutting away a dermatoscope's black corners, see `crop`) and resized once per target size
//! into one memory-mapped file of `u8` pixels (layout in `format`), so a training epoch does no
//! JPEG decoding. Built in parallel on all cores; written to a temporary file and renamed, so a
//! crash never leaves a half cache that looks valid; reused by every job on the machine through
//! `ensure_cache`, which keys the file by the dataset's files and the size.
//!
//! It must not change a cache file once renamed into place: readers map it while jobs run.
//! Resizing uses `fast_image_resize` (SIMD): with the `image` crate's resize, resizing took four
//! times as long as decoding the JPEG.

mod crop;
mod format;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use memmap2::Mmap;
use rayon::prelude::*;

pub use crop::{crop_box, preprocess, CropBox};

/// Bumped whenever cropping or resizing changes, so `ensure_cache` never reuses stale pixels.
const PREPROCESS_VERSION: u32 = 1;
/// File name extension of cache files.
const EXTENSION: &str = "shvc";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot access {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot decode image {name} ({}): {source}", path.display())]
    Decode {
        name: String,
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("{} is not a stackhive image cache: expected magic {:?}, found {:?}", path.display(), String::from_utf8_lossy(&format::MAGIC), String::from_utf8_lossy(found))]
    BadMagic { path: PathBuf, found: Vec<u8> },
    #[error("image cache {} has format version {found}, this build reads version {}", path.display(), format::VERSION)]
    UnsupportedVersion { path: PathBuf, found: u32 },
    #[error("image cache {} is {found} bytes, its header says {expected} (truncated or corrupt)", path.display())]
    WrongLength {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("image cache {} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("image name {0:?} appears twice; expected unique names")]
    DuplicateName(String),
    #[error("cache size must be within 1..=8192 pixels, found {0}")]
    InvalidSize(u32),
    #[error("no .jpg images found in {}", .0.display())]
    NoImages(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct CacheReport {
    pub path: PathBuf,
    pub images: usize,
    pub size: u32,
    pub bytes: u64,
    /// Images in which black vignette corners were found and cropped away.
    pub vignettes: usize,
    pub elapsed: Duration,
}

impl CacheReport {
    /// Throughput of the build, images per second.
    pub fn images_per_sec(&self) -> f64 {
        self.images as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A progress bar, or a hidden one. indicatif also hides it when stderr is not a terminal.
pub(crate) fn progress_bar(len: u64, enabled: bool, what: &'static str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
        .expect("static template parses")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what);
    bar
}

/// Decodes, crops and resizes every `(image_name, path)` in order into a cache file at `out`.
/// Images are processed in parallel on rayon's pool and written in order; the file appears at
/// `out` only when complete.
pub fn build_cache(
    images: &[(String, PathBuf)],
    size: u32,
    out: &Path,
    progress: bool,
) -> Result<CacheReport, CacheError> {
    let started = Instant::now();
    if !(1..=8192).contains(&size) {
        return Err(CacheError::InvalidSize(size));
    }
    let names: Vec<String> = images.iter().map(|(n, _)| n.clone()).collect();
    let mut seen = HashSet::with_capacity(names.len());
    for name in &names {
        if !seen.insert(name.as_str()) {
            return Err(CacheError::DuplicateName(name.clone()));
        }
    }
    let (header, prefix) = format::encode_prefix(&names, size);
    let tmp = TempFile::beside(out);
    let file = File::create(&tmp.0).map_err(io_err(&tmp.0))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&prefix).map_err(io_err(&tmp.0))?;

    let bar = progress_bar(images.len() as u64, progress, "caching");
    // Batches bound memory (a batch of decoded images, not the dataset) while keeping every
    // core busy; each batch is written in order before the next starts.
    let batch = rayon::current_num_threads().max(1) * 16;
    let mut vignettes = 0;
    for chunk in images.chunks(batch) {
        let done: Vec<(Vec<u8>, bool)> = chunk
            .par_iter()
            .map(|(name, path)| {
                let img = decode(name, path)?;
                let (small, b) = preprocess(&img, size);
                Ok((small.into_raw(), b.vignette))
            })
            .collect::<Result<_, CacheError>>()?;
        for (pixels, vignette) in done {
            w.write_all(&pixels).map_err(io_err(&tmp.0))?;
            vignettes += usize::from(vignette);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let file = w.into_inner().map_err(|e| CacheError::Io {
        path: tmp.0.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_err(&tmp.0))?;
    drop(file);
    tmp.persist(out)?;
    Ok(CacheReport {
        path: out.to_path_buf(),
        images: images.len(),
        size,
        bytes: header
            .file_len()
            .expect("sizes of a cache we wrote fit in u64"),
        vignettes,
        elapsed: started.elapsed(),
    })
}

/// Reads and decodes one image to RGB8.
pub fn decode(name: &str, path: &Path) -> Result<image::RgbImage, CacheError> {
    let err = |source| CacheError::Decode {
        name: name.to_string(),
        path: path.to_path_buf(),
        source,
    };
    Ok(image::open(path).map_err(err)?.into_rgb8())
}

/// A temporary file next to its destination (same file system, so the rename is atomic),
/// removed on drop unless persisted.
struct TempFile(PathBuf);

impl TempFile {
    fn beside(out: &Path) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = out
            .file_name()
            .map_or_else(|| "cache".into(), |n| n.to_string_lossy().into_owned());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self(out.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id())))
    }

    fn persist(self, out: &Path) -> Result<(), CacheError> {
        fs::rename(&self.0, out).map_err(io_err(out))?;
        // Make the rename itself durable; not all file systems allow syncing a folder.
        if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A cache file mapped into memory: image `i` is a `size × size × 3` HWC slice of `u8`.
#[derive(Debug)]
pub struct ImageCache {
    path: PathBuf,
    map: Mmap,
    size: u32,
    pixel_offset: usize,
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl ImageCache {
    /// Maps and checks a cache file: magic, version, header consistency, exact length, names.
    pub fn open(path: &Path) -> Result<ImageCache, CacheError> {
        let file = File::open(path).map_err(io_err(path))?;
        let map = map_readonly(&file).map_err(io_err(path))?;
        let (header, names) = format::decode(path, &map)?;
        if header.height != header.width {
            return Err(CacheError::Corrupt {
                path: path.to_path_buf(),
                reason: format!(
                    "expected square images, the header says {}×{}",
                    header.height, header.width
                ),
            });
        }
        let mut index = HashMap::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            if index.insert(name.clone(), i).is_some() {
                return Err(CacheError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!("image name {name:?} appears twice in the index"),
                });
            }
        }
        Ok(ImageCache {
            path: path.to_path_buf(),
            map,
            size: header.height,
            pixel_offset: header.pixel_offset as usize,
            names,
            index,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Side of the square images in pixels.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Bytes per image: `size × size × 3`.
    pub fn image_len(&self) -> usize {
        self.size as usize * self.size as usize * format::CHANNELS as usize
    }

    /// Pixels of image `i`, HWC `u8`. Panics when `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        assert!(
            i < self.len(),
            "image index {i} out of range for a cache of {} images",
            self.len()
        );
        let start = self.pixel_offset + i * self.image_len();
        &self.map[start..start + self.image_len()]
    }

    /// Image names in cache order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

/// Maps `file` read-only.
#[allow(unsafe_code)]
fn map_readonly(file: &File) -> io::Result<Mmap> {
    // SAFETY: the mapping is read-only and cache files are never modified after the atomic
    // rename that publishes them (rebuilds write a new file and rename it over the old path,
    // which leaves existing mappings on the old inode intact). Another program truncating the
    // file in place would break this, as it would for any memory-mapped reader.
    unsafe { Mmap::map(file) }
}

/// A cache ready for use, and the build report when it had to be built.
#[derive(Debug)]
pub struct EnsuredCache {
    pub cache: ImageCache,
    pub built: Option<CacheReport>,
}

/// The cache of `dataset_root/images/*.jpg` at `size`, built once and reused afterwards. The
/// file in `cache_dir` is keyed by the images' names, lengths and modification times, so a
/// changed dataset gets a new cache. Callers that know the dataset's content hash should use
/// [`ensure_cache_keyed`] instead.
pub fn ensure_cache(
    dataset_root: &Path,
    size: u32,
    cache_dir: &Path,
    progress: bool,
) -> Result<EnsuredCache, CacheError> {
    let images = list_images(&dataset_root.join("images"))?;
    let mut h = blake3::Hasher::new();
    h.update(&PREPROCESS_VERSION.to_le_bytes());
    for (name, path) in &images {
        let meta = fs::metadata(path).map_err(io_err(path))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        h.update(name.as_bytes());
        h.update(&[0]);
        h.update(&meta.len().to_le_bytes());
        h.update(&mtime.as_nanos().to_le_bytes());
    }
    let key = h.finalize().to_hex()[..16].to_string();
    ensure_cache_keyed(&images, &key, size, cache_dir, progress)
}

/// The cache of `images` at `size` stored under `key` (e.g. the dataset's content hash) in
/// `cache_dir`: opened when a valid file with the same names exists, built otherwise. A corrupt
/// file is rebuilt. Two processes racing here both build and the last rename wins; both files
/// are complete and identical, so readers never see a partial one.
pub fn ensure_cache_keyed(
    images: &[(String, PathBuf)],
    key: &str,
    size: u32,
    cache_dir: &Path,
    progress: bool,
) -> Result<EnsuredCache, CacheError> {
    fs::create_dir_all(cache_dir).map_err(io_err(cache_dir))?;
    let path = cache_dir.join(format!("{key}-v{PREPROCESS_VERSION}-{size}px.{EXTENSION}"));
    if path.exists() {
        match ImageCache::open(&path) {
            Ok(cache)
                if cache.size() == size
                    && cache.names().iter().eq(images.iter().map(|(n, _)| n)) =>
            {
                return Ok(EnsuredCache { cache, built: None });
            }
            Ok(_) => {
                tracing::warn!(path = %path.display(), "image cache does not match the dataset; rebuilding")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "image cache unreadable; rebuilding")
            }
        }
    }
    let report = build_cache(images, size, &path, progress)?;
    let cache = ImageCache::open(&path)?;
    Ok(EnsuredCache {
        cache,
        built: Some(report),
    })
}

/// `(image_name, path)` for every `.jpg`/`.jpeg` in `dir`, sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<(String, PathBuf)>, CacheError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let is_jpeg = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"));
        if is_jpeg {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                out.push((stem.to_string(), path.clone()));
            }
        }
    }
    if out.is_empty() {
        return Err(CacheError::NoImages(dir.to_path_buf()));
    }
    out.sort();
    Ok(out)
}
