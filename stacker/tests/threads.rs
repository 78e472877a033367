//! A net's fold keeps to the one thread its job gives it (issue 12). libtorch's thread
//! settings belong to the thread that sets them, and a fold runs on a fresh thread: left to
//! the defaults, its matrix products start a thread per core, and two folds side by side on
//! a worker's two slots spin four threads on two cores. A test binary of its own: it counts
//! the process's threads, which tests running beside it would add to. (On a machine of one
//! core libtorch starts no more threads either way, and the test shows nothing there.)

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{job, logistic_problem};
use stackhive_spec::stack::ModelType;
use stackhive_stacker::{run, Prepared};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task lists this process's threads")
        .count()
}

/// The most threads this process had while `work` ran, and how many it had before.
fn peak_threads(work: impl FnOnce()) -> (usize, usize) {
    let (stop, peak) = (AtomicBool::new(false), AtomicUsize::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(threads(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        // The watcher is running (and counted) before the baseline is taken.
        while peak.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let before = threads();
        // Stops the watcher even when `work` panics, so a failure fails instead of hanging.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _stop = Stop(&stop);
        work();
        (peak.load(Ordering::SeqCst), before)
    })
}

/// Each net on one slot: the job's one fold thread is the only thread it may add. TabNet is
/// the one that needs the care: its first libtorch call is a matrix product on borrowed
/// buffers, which starts MKL's threads before anything would have set them (the autograd
/// nets' first operators happen to apply the process's setting to their thread).
#[test]
fn every_net_fold_keeps_to_its_one_thread() {
    // As the stacker process does on its main thread, which fold threads do not inherit.
    tch::set_num_threads(1);
    let (m, _) = logistic_problem(2_000, 3);
    let prep = Prepared::new(m).unwrap();
    let wide = serde_json::json!({"layers": 2, "width": 64, "epochs": 10, "batch": 512});
    for (model, params) in [
        (
            ModelType::Tabnet,
            serde_json::json!({"n_d": 16, "n_steps": 3, "epochs": 10, "batch": 512}),
        ),
        (ModelType::Mlp, wide.clone()),
        (ModelType::EntityEmbedding, wide),
    ] {
        let (peak, before) = peak_threads(|| {
            run(&job(model, params), &prep, 1).unwrap();
        });
        assert!(
            peak <= before + 1,
            "a {model} job on one slot ran {} threads beside this test's {before}, expected at \
             most its one fold thread",
            peak - before
        );
    }
}
