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

use stackhive_spec::{ScheduleName, ScheduleSpec, TrainerEvent};
use stackhive_trainer::config::CheckpointPlan;
use stackhive_trainer::data::FoldData;
use stackhive_trainer::{train, OptimConfig, OptimKind, TrainConfig, TrainOutcome, Trained};
use synth_fixture::{fixture, recorder, tiny_config};

const FOLD: u16 = 0;

fn sgd_config() -> TrainConfig {
    let mut cfg = tiny_config(6);
    cfg.batch_size = 32;
    cfg.accumulate = 2;
    cfg.optimizer = OptimConfig {
        kind: OptimKind::Sgd {
            momentum: 0.9,
            nesterov: true,
        },
        lr: 0.05,
        weight_decay: 1e-4,
        decay_1d: false,
        fused: true,
    };
    cfg.schedule = ScheduleSpec {
        name: ScheduleName::Step,
        step_epochs: 3,
        gamma: 0.1,
        warmup_epochs: 1.0,
        ..ScheduleSpec::default()
    };
    cfg.label_smoothing = 0.1;
    cfg.ema = Some(0.98);
    cfg.seed = 2;
    cfg
}

/// The bound: the 160-patient fold holds about 420 validation rows, 80 positive; a model that
/// learned nothing scores 0.5 ± 0.036 there, so 0.6 is nearly 3 deviations above chance. With
/// per-epoch seeding (which makes resuming exact) and every parameter decayed, training seeds 1-6
/// gave 0.607-0.722 at the sixth epoch (SGD on this tiny network is noisier than AdamW; the EMA
/// and the step decay steady it); this run (seed 2, biases and norms spared from the decay, as
/// jobs do by default) reaches 0.686.
#[test]
fn sgd_with_step_schedule_smoothing_ema_and_accumulation_learns_and_repeats_exactly() {
    let fx = fixture(160);
    let data = FoldData::new(&fx.dataset, &fx.folds, FOLD, &fx.cache).unwrap();
    let cfg = sgd_config();
    let mut events = Vec::new();
    let trained = train(&cfg, &data, &mut recorder(&mut events)).unwrap();
    let out = &trained.outcome;

    // Two batches per optimizer step; the schedule counts optimizer steps: a warm-up over the
    // first epoch from lr / steps_per_epoch, the full rate, then ×0.1 after three epochs.
    let steps_per_epoch = (data.train.len() as u64).div_ceil(32).div_ceil(2);
    assert_eq!(out.steps, 6 * steps_per_epoch);
    let Some(TrainerEvent::Progress(first)) = events.get(1) else {
        panic!("expected progress after start, found {:?}", events.get(1))
    };
    assert!(
        (first.lr - 0.05 / steps_per_epoch as f64).abs() < 1e-12,
        "first step's rate {}",
        first.lr
    );
    let lrs: Vec<f64> = out.epochs.iter().map(|m| m.lr).collect();
    for (got, want) in lrs.iter().zip([0.05, 0.05, 0.05, 0.005, 0.005, 0.005]) {
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
