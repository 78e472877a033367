//! CUDA-graph training (`cuda_graph`, issue 4's speed goal) on a GPU: a job whose steps replay
//! a captured graph must learn as the eager job does, with bf16 autocast and channels-last on,
//! and take one step per full batch (a graph replays one batch shape, so each epoch drops its
//! partial batch). Ignored without a GPU (CI has none); `scripts/device_check.sh` runs it on the
//! device machine.

mod synth_fixture;

use stackhive_trainer::data::FoldData;
use stackhive_trainer::train;
use synth_fixture::{learning_fixture, tiny_config};
use tch::Device;

/// The bound of `tests/train.rs` (0.65, over 5 deviations above chance on this fold).
const MIN_AUC: f64 = 0.65;

#[test]
#[ignore = "needs a CUDA GPU"]
fn graphed_training_learns_like_eager_training_on_cuda() {
    let fx = learning_fixture();
    let data = FoldData::new(&fx.dataset, &fx.folds, 0, &fx.cache).unwrap();
    let mut cfg = tiny_config(10);
    cfg.device = Device::Cuda(0);
    cfg.bf16 = true;
    cfg.channels_last = true;
    cfg.ema = Some(0.99);
    let eager = train(&cfg, &data, &mut |_| {}).unwrap().outcome;
    cfg.cuda_graph = true;
    let graphed = train(&cfg, &data, &mut |_| {}).unwrap().outcome;

    let full_batches = (data.train.len() / cfg.batch_size) as u64;
    assert_eq!(graphed.steps, 10 * full_batches);
    assert!(eager.steps >= graphed.steps);
    let auc = |o: &stackhive_trainer::TrainOutcome| o.epochs.last().unwrap().valid_auc.unwrap();
    let (a, b) = (auc(&eager), auc(&graphed));
    eprintln!("validation AUC: eager {a:.3}, graphed {b:.3}");
    assert!(a >= MIN_AUC && b >= MIN_AUC, "eager {a:.3}, graphed {b:.3}");
    assert!((a - b).abs() < 0.06, "eager {a:.3}, graphed {b:.3}");
    assert!(graphed
        .oof
        .iter()
        .chain(&graphed.test)
        .all(|p| p.is_finite()));
    assert_eq!(graphed.oof_rows, eager.oof_rows);
}
