//! The rest of the training craft (issue 4, item 4) and determinism: SGD with Nesterov momentum
//! on a step schedule with warm-up, label smoothing, an EMA of the weights and two batches per
//! optimizer step must learn, and the same config on the same data must give bit-identical
//! predictions and weights on CPU — also when the run stops after an epoch and a new run
//! resumes from its checkpoint (SGD with EMA, and AdamW without).
//!
//! A test binary of its own: torch's generator (flips, dropout, stochastic depth) is
//! process-wide, so a training test running in parallel in the same binary would interleave its
//! draws with these runs and make them differ.

mod synth_fixture;

use std::path::Path;

use stackhive_spec::TrainerEvent;
use stackhive_trainer::config::CheckpointPlan;
use stackhive_trainer::data::FoldData;
use stackhive_trainer::{train, TrainConfig, TrainOutcome, Trained};
use synth_fixture::{
    fixture, learning_fixture, recorder, tiny_config, tiny_sgd_config as sgd_config,
};

const FOLD: u16 = 0;

/// The bound (issue 10): the learning fixture's fold 0 holds about 700 validation rows, 140
/// positive; a model that learned nothing scores 0.5 ± 0.027 there, so 0.6 is 3.7 deviations
/// above chance. `examples/learning_margins.rs` trained this config over training seeds 1-8,
/// data seeds 7 and 11 and `ATEN_CPU_CAPABILITY` default, avx2 and avx512 (40 runs on an AMD
/// EPYC): 0.627-0.742, mean 0.681, sd 0.022, so 0.6 lies 3.7 of those deviations below the
/// mean; this run (seed 2, data seed 7) gave 0.669-0.701 across the three kernel sets. The
/// first version of this test (lr 0.05, six epochs, 5 folds) swung between 0.576 and 0.722 and
/// failed on AVX2 machines.
#[test]
fn sgd_with_step_schedule_smoothing_ema_and_accumulation_learns_and_repeats_exactly() {
    let fx = learning_fixture();
    let data = FoldData::new(&fx.dataset, &fx.folds, FOLD, &fx.cache).unwrap();
    let cfg = sgd_config();
    let mut events = Vec::new();
    let trained = train(&cfg, &data, &mut recorder(&mut events)).unwrap();
    let out = &trained.outcome;

    // Two batches per optimizer step; the schedule counts optimizer steps: a warm-up over the
    // first epoch from lr / steps_per_epoch, the full rate, then ×0.1 after five epochs.
    let steps_per_epoch = (data.train.len() as u64).div_ceil(32).div_ceil(2);
    assert_eq!(out.steps, 8 * steps_per_epoch);
    let Some(TrainerEvent::Progress(first)) = events.get(1) else {
        panic!("expected progress after start, found {:?}", events.get(1))
    };
    assert!(
        (first.lr - 0.02 / steps_per_epoch as f64).abs() < 1e-12,
        "first step's rate {}",
        first.lr
    );
    let lrs: Vec<f64> = out.epochs.iter().map(|m| m.lr).collect();
    let want = [0.02, 0.02, 0.02, 0.02, 0.02, 0.002, 0.002, 0.002];
    assert_eq!(lrs.len(), want.len(), "epoch rates {lrs:?}");
    for (got, want) in lrs.iter().zip(want) {
        assert!((got - want).abs() < 1e-12, "epoch rates {lrs:?}");
    }
    assert!(out.epochs.iter().all(|m| m.train_loss.is_finite()));
    let auc = out.epochs.last().unwrap().valid_auc.unwrap();
    assert!(auc >= 0.6, "validation AUC {auc:.3}, expected at least 0.6");
    assert_eq!(out.oof_rows, fx.folds.validation_rows(FOLD));

    // The same job twice gives bit-identical predictions, losses and saved (averaged) weights.
    // A shorter run on a smaller fixture keeps this cheap; it still crosses a step decay, the
    // warm-up, accumulation and the EMA.
    let small = fixture(40);
    let data = FoldData::new(&small.dataset, &small.folds, FOLD, &small.cache).unwrap();
    let mut cfg = sgd_config();
    cfg.epochs = 2;
    cfg.schedule.step_epochs = 1;
    let a = train(&cfg, &data, &mut |_| {}).unwrap();
    let b = train(&cfg, &data, &mut |_| {}).unwrap();
    assert_same(&a, &b);
    assert_eq!(a.outcome.resumed_from, None);

    // Stopped after epoch 1 and resumed from that epoch's checkpoint: the same bits again.
    let dir = tempfile::tempdir().unwrap();
    let resumed = stop_and_resume(&cfg, &data, dir.path());
    assert_same(&a, &resumed);
    assert_eq!(resumed.outcome.resumed_from, Some(1));
    assert_eq!(resumed.outcome.steps, a.outcome.steps);

    // AdamW (moments and per-parameter step counts) without EMA resumes exactly too.
    let mut adamw = tiny_config(2);
    adamw.batch_size = 32;
    let a = train(&adamw, &data, &mut |_| {}).unwrap();
    let resumed = stop_and_resume(&adamw, &data, dir.path());
    assert_same(&a, &resumed);

    // A checkpoint of another run (another seed) is not trusted: the run starts over and still
    // finishes, identical to a fresh run of that seed.
    let mut other = adamw.clone();
    other.seed = 2;
    other.resume = Some(dir.path().join("after-epoch-1.ot"));
    let mut events = Vec::new();
    let restarted = train(&other, &data, &mut recorder(&mut events)).unwrap();
    assert_eq!(restarted.outcome.resumed_from, None);
    assert!(matches!(
        events[0],
        TrainerEvent::Start {
            resumed_from: None,
            ..
        }
    ));
    other.resume = None;
    assert_same(&train(&other, &data, &mut |_| {}).unwrap(), &restarted);
}

/// Runs `cfg` with a checkpoint after every epoch, keeping a copy of epoch 1's (as an attempt
/// killed during epoch 2 would leave it), then runs it again from that copy.
fn stop_and_resume(cfg: &TrainConfig, data: &FoldData<'_>, dir: &Path) -> Trained {
    let kept = dir.join("after-epoch-1.ot");
    let mut first = cfg.clone();
    first.checkpoint = Some(CheckpointPlan {
        path: dir.join("resume.ot"),
        every: 1,
    });
    let mut saved = Vec::new();
    train(&first, data, &mut |e| {
        if let TrainerEvent::Checkpoint { path, epoch } = e {
            saved.push(*epoch);
            if *epoch == 1 {
                std::fs::copy(path, &kept).unwrap();
            }
        }
    })
    .unwrap();
    assert_eq!(saved, [1, 2], "a checkpoint after every epoch");
    let mut second = cfg.clone();
    second.resume = Some(kept);
    let mut events = Vec::new();
    let resumed = train(&second, data, &mut recorder(&mut events)).unwrap();
    let epochs: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            TrainerEvent::Epoch(m) => Some(m.epoch),
            _ => None,
        })
        .collect();
    assert_eq!(
        epochs,
        [2],
        "only the epoch after the checkpoint is trained again"
    );
    resumed
}

/// Bit-identical predictions, losses of every epoch and saved (averaged) weights.
fn assert_same(a: &Trained, b: &Trained) {
    assert_eq!(
        b.outcome.oof, a.outcome.oof,
        "out-of-fold predictions differ"
    );
    assert_eq!(b.outcome.test, a.outcome.test, "test predictions differ");
    let losses = |o: &TrainOutcome| -> Vec<(u32, f64, f64, Option<f64>)> {
        o.epochs
            .iter()
            .map(|m| (m.epoch, m.train_loss, m.valid_loss, m.valid_auc))
            .collect()
    };
    assert_eq!(losses(&b.outcome), losses(&a.outcome));
    let (va, vb) = (a.vs.variables(), b.vs.variables());
    assert_eq!(va.len(), vb.len());
    for (name, t) in &va {
        assert!(t.equal(&vb[name]), "variable {name} differs");
    }
}
