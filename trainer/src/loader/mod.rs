//! The training data pipeline (issue 4, item 5): CPU threads read the preprocessed image cache,
//! augment (`crate::augment`) and pack whole batches into one host buffer each, ahead of the
//! training loop, which receives them in order and makes the single host-to-device copy
//! (`HostBatch::to_device`). It must not decode images or touch the device from its threads.
//!
//! Batch `b` is built by worker `b mod threads` (PyTorch's `DataLoader` assigns work the same
//! way), and each worker has its own bounded channel, so batches arrive in order without a
//! reorder buffer, and at most `threads × (prefetch + 1)` batches exist at once. Each image's
//! random draws depend only on (seed, epoch, its position in the epoch), so the output is the
//! same for any thread count. Dropping a `Loader` mid-epoch stops its workers within one image
//! and joins them; a worker that fails or panics reports it as the next item instead of
//! leaving the consumer waiting.

mod host;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Scope, ScopedJoinHandle};

use stackhive_data::cache::ImageCache;
use stackhive_spec::cnn::AugmentSpec;

use crate::augment::{image_rng, Augmenter};
use crate::data::Examples;
use crate::meta::META_DIM;

pub use host::{upload, HostBatch};

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("loader threads must be at least 1, found 0")]
    NoThreads,
    #[error("batch {batch} is empty; expected at least one example")]
    EmptyBatch { batch: usize },
    #[error("batch {batch} asks for example {index}, the split has {len} examples")]
    ExampleOutOfRange {
        batch: usize,
        index: usize,
        len: usize,
    },
    #[error("example {example} points at image {image}, the cache has {len} images")]
    ImageOutOfRange {
        example: usize,
        image: usize,
        len: usize,
    },
    #[error("the split has {images} images and {found} metadata rows; expected one per image")]
    MetaRows { images: usize, found: usize },
    #[error("the split has {images} images and {found} labels; expected one per image, or none")]
    LabelRows { images: usize, found: usize },
    #[error("cannot start loader thread {worker}: {source}")]
    Spawn {
        worker: usize,
        source: std::io::Error,
    },
    #[error("loader thread panicked while building batch {batch}: {message}")]
    WorkerPanicked { batch: usize, message: String },
    #[error("loader thread for batch {batch} stopped without sending it")]
    WorkerGone { batch: usize },
}

/// How a [`Loader`] works through one epoch.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Per-image augmentation; `None` copies images unchanged (evaluation, prediction).
    pub augment: Option<AugmentSpec>,
    pub seed: u64,
    pub epoch: u64,
    /// Worker threads.
    pub threads: usize,
    /// Finished batches each worker may hold ahead of the consumer (PyTorch's
    /// `prefetch_factor`); 0 makes each worker wait until its last batch is taken.
    pub prefetch: usize,
}

impl LoaderConfig {
    /// No augmentation, `threads` workers, two batches ahead per worker.
    pub fn eval(threads: usize) -> LoaderConfig {
        LoaderConfig {
            augment: None,
            seed: 0,
            epoch: 0,
            threads,
            prefetch: 2,
        }
    }
}

type Message = Result<HostBatch, LoaderError>;

/// What every worker reads.
struct Job {
    batches: Vec<Vec<usize>>,
    /// Epoch position of each batch's first example.
    starts: Vec<u64>,
    augmenter: Option<Augmenter>,
    seed: u64,
    epoch: u64,
    threads: usize,
    prefetch: usize,
    stop: AtomicBool,
}

enum Handle<'scope> {
    Owned(JoinHandle<()>),
    Scoped(ScopedJoinHandle<'scope, ()>),
}

/// An epoch's batches, built ahead on worker threads and yielded in order. Iterate it; each
/// item is a batch or the error that stopped it (after which it yields nothing more).
pub struct Loader<'scope> {
    job: Arc<Job>,
    receivers: Vec<Receiver<Message>>,
    handles: Vec<Handle<'scope>>,
    next: usize,
    done: bool,
}

impl std::fmt::Debug for Loader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("batches", &self.job.batches.len())
            .field("next", &self.next)
            .field("threads", &self.job.threads)
            .finish_non_exhaustive()
    }
}

impl Loader<'static> {
    /// Starts workers that own their share of the cache and the examples.
    pub fn new(
        cache: Arc<ImageCache>,
        examples: Arc<Examples>,
        batches: Vec<Vec<usize>>,
        config: &LoaderConfig,
    ) -> Result<Loader<'static>, LoaderError> {
        let job = Arc::new(Job::new(&cache, &examples, batches, config)?);
        Loader::start(job, |w, job, tx| {
            let (cache, examples) = (cache.clone(), examples.clone());
            thread::Builder::new()
                .name(format!("stackhive-loader-{w}"))
                .spawn(move || work(w, &cache, &examples, &job, &tx))
                .map(Handle::Owned)
        })
    }
}

impl<'scope> Loader<'scope> {
    /// Starts workers in `scope` that borrow the cache and the examples (e.g. a `FoldData`'s):
    /// create the scope around the epoch's loop with `std::thread::scope`; the loop itself
    /// runs on the calling thread, so it may hold tensors.
    pub fn scoped<'env>(
        scope: &'scope Scope<'scope, 'env>,
        cache: &'env ImageCache,
        examples: &'env Examples,
        batches: Vec<Vec<usize>>,
        config: &LoaderConfig,
    ) -> Result<Loader<'scope>, LoaderError> {
        let job = Arc::new(Job::new(cache, examples, batches, config)?);
        Loader::start(job, |w, job, tx| {
            thread::Builder::new()
                .name(format!("stackhive-loader-{w}"))
                .spawn_scoped(scope, move || work(w, cache, examples, &job, &tx))
                .map(Handle::Scoped)
        })
    }

    fn start(
        job: Arc<Job>,
        mut spawn: impl FnMut(usize, Arc<Job>, SyncSender<Message>) -> std::io::Result<Handle<'scope>>,
    ) -> Result<Loader<'scope>, LoaderError> {
        let mut loader = Loader {
            job: job.clone(),
            receivers: Vec::new(),
            handles: Vec::new(),
            next: 0,
            done: false,
        };
        for w in 0..job.threads {
            let (tx, rx) = mpsc::sync_channel(job.prefetch);
            // On failure `loader` drops here, stopping the workers already started.
            let handle = spawn(w, job.clone(), tx)
                .map_err(|source| LoaderError::Spawn { worker: w, source })?;
            loader.handles.push(handle);
            loader.receivers.push(rx);
        }
        Ok(loader)
    }

    /// Batches in the epoch.
    pub fn batches(&self) -> usize {
        self.job.batches.len()
    }
}

impl Iterator for Loader<'_> {
    type Item = Result<HostBatch, LoaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.next >= self.job.batches.len() {
            return None;
        }
        let batch = self.next;
        self.next += 1;
        let rx = &self.receivers[batch % self.receivers.len()];
        let item = match rx.recv() {
            Ok(item) => item,
            Err(_) => Err(LoaderError::WorkerGone { batch }),
        };
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = if self.done {
            0
        } else {
            self.job.batches.len() - self.next
        };
        (0, Some(left))
    }
}

impl Drop for Loader<'_> {
    fn drop(&mut self) {
        self.job.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers wakes workers blocked on a full channel.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            // A panic was already reported as an item (or nobody is listening any more).
            let _ = match h {
                Handle::Owned(h) => h.join(),
                Handle::Scoped(h) => h.join(),
            };
        }
    }
}

impl Job {
    /// Checks every index up front, so workers cannot fail on bad input.
    fn new(
        cache: &ImageCache,
        ex: &Examples,
        batches: Vec<Vec<usize>>,
        config: &LoaderConfig,
    ) -> Result<Job, LoaderError> {
        if config.threads == 0 {
            return Err(LoaderError::NoThreads);
        }
        if ex.meta.len() != ex.images.len() {
            return Err(LoaderError::MetaRows {
                images: ex.images.len(),
                found: ex.meta.len(),
            });
        }
        if !ex.labels.is_empty() && !ex.is_labelled() {
            return Err(LoaderError::LabelRows {
                images: ex.images.len(),
                found: ex.labels.len(),
            });
        }
        for (example, &image) in ex.images.iter().enumerate() {
            if image >= cache.len() {
                return Err(LoaderError::ImageOutOfRange {
                    example,
                    image,
                    len: cache.len(),
                });
            }
        }
        let mut starts = Vec::with_capacity(batches.len());
        let mut position = 0u64;
        for (batch, idx) in batches.iter().enumerate() {
            if idx.is_empty() {
                return Err(LoaderError::EmptyBatch { batch });
            }
            if let Some(&index) = idx.iter().find(|&&i| i >= ex.len()) {
                return Err(LoaderError::ExampleOutOfRange {
                    batch,
                    index,
                    len: ex.len(),
                });
            }
            starts.push(position);
            position += idx.len() as u64;
        }
        let size = cache.size() as usize;
        // No idle threads for a short epoch.
        let threads = config.threads.min(batches.len());
        Ok(Job {
            batches,
            starts,
            augmenter: config.augment.as_ref().map(|a| Augmenter::new(a, size)),
            seed: config.seed,
            epoch: config.epoch,
            threads,
            prefetch: config.prefetch,
            stop: AtomicBool::new(false),
        })
    }
}

/// Worker `w`: builds batches `w, w + threads, …` and sends each, until the epoch ends, the
/// loader is dropped, or building a batch panics (reported, then the worker stops).
fn work(w: usize, cache: &ImageCache, ex: &Examples, job: &Job, tx: &SyncSender<Message>) {
    for batch in (w..job.batches.len()).step_by(job.threads) {
        let built = panic::catch_unwind(AssertUnwindSafe(|| build(batch, cache, ex, job)));
        let message = match built {
            Ok(Some(b)) => Ok(b),
            Ok(None) => return,
            Err(payload) => Err(LoaderError::WorkerPanicked {
                batch,
                message: panic_message(payload.as_ref()),
            }),
        };
        let failed = message.is_err();
        if tx.send(message).is_err() || failed {
            return;
        }
    }
}

/// Builds batch `batch` into one buffer; `None` when the loader was dropped meanwhile.
fn build(batch: usize, cache: &ImageCache, ex: &Examples, job: &Job) -> Option<HostBatch> {
    let idx = &job.batches[batch];
    let size = cache.size() as usize;
    let image_len = cache.image_len();
    let mut pixels = vec![0u8; idx.len() * image_len];
    let mut meta = Vec::with_capacity(idx.len() * META_DIM);
    for (j, (&i, dst)) in idx
        .iter()
        .zip(pixels.chunks_exact_mut(image_len))
        .enumerate()
    {
        if job.stop.load(Ordering::Relaxed) {
            return None;
        }
        let src = cache.image(ex.images[i]);
        match &job.augmenter {
            Some(aug) => {
                let position = job.starts[batch] + j as u64;
                aug.apply(src, dst, &mut image_rng(job.seed, job.epoch, position));
            }
            None => dst.copy_from_slice(src),
        }
        meta.extend_from_slice(&ex.meta[i]);
    }
    let labels = if ex.is_labelled() {
        idx.iter().map(|&i| f32::from(ex.labels[i])).collect()
    } else {
        Vec::new()
    };
    Some(HostBatch {
        index: batch,
        len: idx.len(),
        size,
        pixels,
        meta,
        labels,
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use stackhive_data::cache::{build_cache, list_images};
    use stackhive_data::synth::{generate, SynthConfig};

    use super::*;

    /// A worker that panics (here: an index that slipped past validation) must surface as an
    /// error item, after which the loader yields nothing and drops cleanly.
    #[test]
    fn a_panicking_worker_surfaces_as_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let cfg = SynthConfig {
            patients: 1,
            test_patients: 0,
            image_size: 16,
            ..SynthConfig::default()
        };
        generate(&cfg, &root).unwrap();
        let path = dir.path().join("c.shvc");
        build_cache(&list_images(&root.join("images")).unwrap(), 8, &path, false).unwrap();
        let cache = Arc::new(ImageCache::open(&path).unwrap());
        let n = cache.len();
        let examples = Arc::new(Examples {
            images: (0..n).chain([n + 5]).collect(),
            labels: Vec::new(),
            meta: vec![[0.0; META_DIM]; n + 1],
        });
        let batches = vec![vec![0], vec![1], vec![n], vec![0]];
        let job = Job {
            starts: vec![0, 1, 2, 3],
            batches,
            augmenter: None,
            seed: 0,
            epoch: 0,
            threads: 2,
            prefetch: 1,
            stop: AtomicBool::new(false),
        };
        let mut loader = Loader::start(Arc::new(job), |w, job, tx| {
            let (cache, examples) = (cache.clone(), examples.clone());
            thread::Builder::new()
                .spawn(move || work(w, &cache, &examples, &job, &tx))
                .map(Handle::Owned)
        })
        .unwrap();
        assert!(loader.next().unwrap().is_ok());
        assert!(loader.next().unwrap().is_ok());
        let err = loader.next().unwrap().unwrap_err();
        assert!(
            matches!(err, LoaderError::WorkerPanicked { batch: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("out of range"), "{err}");
        assert!(loader.next().is_none());
        drop(loader);
        assert_eq!(Arc::strong_count(&cache), 1);
    }
}
