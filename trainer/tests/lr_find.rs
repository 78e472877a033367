//! The learning-rate finder of `lr-find` jobs (issue 4, item 7) on the tiny EfficientNet and
//! generated 32×32 images: a sweep into absurd rates must stop early on divergence and still
//! suggest a rate inside the sweep, and a gentle sweep must run all its steps.

mod synth_fixture;

use stackhive_spec::{SweepSpec, TrainerEvent};
use stackhive_trainer::data::FoldData;
use stackhive_trainer::lr_find;
use synth_fixture::{fixture, recorder, tiny_config};

#[test]
fn sweep_stops_on_divergence_and_suggests_a_rate_inside_it() {
    // About 380 training rows: 12 batches of 32, so 60 steps cycle through them five times.
    let fx = fixture(40);
    let data = FoldData::new(&fx.dataset, &fx.folds, 0, &fx.cache).unwrap();
    let mut cfg = tiny_config(1);
    cfg.batch_size = 32;
    let sweep = SweepSpec {
        min_lr: 1e-5,
        max_lr: 10.0,
        steps: 60,
        smoothing: 0.9,
        diverge: 4.0,
    };
    let mut events = Vec::new();
    let r = lr_find(&cfg, &sweep, &data, &mut recorder(&mut events)).unwrap();
    eprintln!(
        "{} points, suggestion {:?}, minimum at {:?}, last lr {:e}",
        r.lrs.len(),
        r.suggestion,
        r.min_loss_lr,
        r.lrs.last().unwrap()
    );
    // AdamW at rates of order 1 and above wrecks a network within a few steps: the smoothed loss
    // must pass 4 × its best before the sweep reaches 10.
    assert!(r.stopped_early, "{:?}", r.smoothed);
    let n = r.lrs.len();
    assert!(n > 10 && n < 60, "{n} points");
    assert_eq!((r.losses.len(), r.smoothed.len()), (n, n));
    assert_eq!(r.lrs[0], 1e-5);
    assert!(r.lrs.windows(2).all(|w| w[1] > w[0]));
    assert!(r.losses.iter().all(|l| l.is_finite()));
    let best = r.smoothed.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(r.smoothed[n - 1] > 4.0 * best, "{:?}", r.smoothed);
    let suggestion = r.suggestion.expect("the loss falls before it diverges");
    assert!(
        (1e-5..=r.lrs[n - 1]).contains(&suggestion),
        "suggestion {suggestion:e}"
    );
    let min_lr = r.min_loss_lr.unwrap();
    assert!((1e-5..=10.0).contains(&min_lr), "{min_lr:e}");

    // start, then one progress event per step (progress_every is 0 here).
    assert!(matches!(
        events[0],
        TrainerEvent::Start {
            steps_per_epoch: 60,
            epochs: 1,
            ..
        }
    ));
    let steps: Vec<u64> = events[1..]
        .iter()
        .map(|e| match e {
            TrainerEvent::Progress(p) => p.step,
            other => panic!("expected progress, found {other:?}"),
        })
        .collect();
    assert_eq!(steps, (1..=n as u64).collect::<Vec<_>>());
}

#[test]
fn gentle_sweep_runs_every_step() {
    let fx = fixture(40);
    let data = FoldData::new(&fx.dataset, &fx.folds, 0, &fx.cache).unwrap();
    let mut cfg = tiny_config(1);
    cfg.batch_size = 32;
    let sweep = SweepSpec {
        min_lr: 1e-6,
        max_lr: 1e-3,
        steps: 12,
        ..SweepSpec::default()
    };
    let r = lr_find(&cfg, &sweep, &data, &mut |_| {}).unwrap();
    assert!(!r.stopped_early, "{:?}", r.smoothed);
    assert_eq!(r.lrs.len(), 12);
    assert!((r.lrs[11] / 1e-3 - 1.0).abs() < 1e-9, "{:?}", r.lrs);
    if let Some(s) = r.suggestion {
        assert!((1e-6..=1e-3).contains(&s), "{s:e}");
    }
}
