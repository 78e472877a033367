//! End-to-end tests of `run` on generated data with a known truth: a latent score per row,
//! labels drawn from it, patients with several rows, folds by patient, and models that see
//! the latent score through noise of chosen size (or not at all).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, StandardNormal};
use stackhive_data::auc::roc_auc;

use crate::*;

pub(crate) struct Data {
    pub labels: Vec<u8>,
    pub folds: Vec<u16>,
    pub groups: Vec<u32>,
    pub latent: Vec<f64>,
    pub test_labels: Vec<u8>,
    pub test_groups: Vec<u32>,
    pub test_latent: Vec<f64>,
    pub k: u16,
}

impl Data {
    pub fn problem(&self) -> Problem<'_> {
        Problem {
            labels: &self.labels,
            folds: &self.folds,
            k: self.k,
            groups: &self.groups,
            test_len: self.test_labels.len(),
            test_groups: &self.test_groups,
            test_labels: Some(&self.test_labels),
        }
    }
}

/// Rows of `patients` patients (1 to 6 rows each) sharing a patient effect; a row is positive
/// when its latent score plus noise clears a threshold (about one row in five).
fn rows(rng: &mut ChaCha8Rng, patients: u32, first_id: u32) -> (Vec<u32>, Vec<f64>, Vec<u8>) {
    let (mut groups, mut latent, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for p in 0..patients {
        let effect: f64 = Normal::new(0.0, 0.7).unwrap().sample(rng);
        for _ in 0..rng.random_range(1..=6) {
            let e: f64 = StandardNormal.sample(rng);
            let z = effect + e;
            let noisy = z + Normal::new(0.0, 0.8).unwrap().sample(rng);
            groups.push(first_id + p);
            latent.push(z);
            labels.push((noisy > 1.1) as u8);
        }
    }
    (groups, latent, labels)
}

pub(crate) fn generate(seed: u64, patients: u32, test_patients: u32, k: u16) -> Data {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (groups, latent, labels) = rows(&mut rng, patients, 0);
    let (test_groups, test_latent, test_labels) = rows(&mut rng, test_patients, patients);
    // Folds by patient: a patient's rows all land in one fold.
    let mut fold_of: Vec<u16> = (0..patients).map(|p| (p % k as u32) as u16).collect();
    for i in (1..fold_of.len()).rev() {
        fold_of.swap(i, rng.random_range(0..=i));
    }
    let folds = groups.iter().map(|&g| fold_of[g as usize]).collect();
    Data {
        labels,
        folds,
        groups,
        latent,
        test_labels,
        test_groups,
        test_latent,
        k,
    }
}

fn sigmoid(z: f64) -> f32 {
    (1.0 / (1.0 + (-z).exp())) as f32
}

/// A model that sees the latent score through Gaussian noise of `sd`.
pub(crate) fn informative(d: &Data, id: i64, sd: f64, rng: &mut ChaCha8Rng) -> Model {
    let noise = Normal::new(0.0, sd).unwrap();
    let mut see = |z: &f64| sigmoid(z - 1.5 + noise.sample(rng));
    Model {
        id,
        name: format!("informative-{id}"),
        kind: "cnn".into(),
        oof: d.latent.iter().map(&mut see).collect(),
        test: d.test_latent.iter().map(&mut see).collect(),
    }
}

/// A model whose predictions are independent of everything.
pub(crate) fn noise(d: &Data, id: i64, rng: &mut ChaCha8Rng) -> Model {
    Model {
        id,
        name: format!("noise-{id}"),
        kind: "lightgbm".into(),
        oof: d.latent.iter().map(|_| rng.random::<f32>()).collect(),
        test: d.test_latent.iter().map(|_| rng.random::<f32>()).collect(),
    }
}

/// Small enough for unoptimised test builds, large enough for every code path.
fn quick(seed: u64) -> Config {
    Config {
        caruana_iterations: 15,
        caruana_bags: 4,
        fold_bags: 6,
        bootstrap: 300,
        shakeup_repeats: 200,
        seed,
        ..Config::default()
    }
}

const SELECTING: [Method; 5] = [
    Method::BestSingle,
    Method::CorrelationCap,
    Method::Caruana,
    Method::LogisticStacker,
    Method::FoldBagged,
];

/// On models that know nothing, every selecting method's nested AUC stays below its
/// in-sample AUC (selection only fits noise), and the recommendation is the median, flagged
/// as within the noise.
#[test]
fn pure_noise_is_not_trusted() {
    let d = generate(1, 400, 150, 5);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let models: Vec<Model> = (0..300).map(|i| noise(&d, i, &mut rng)).collect();
    // Selecting the top 10 of 300 by AUC makes the in-sample optimism large (several
    // standard errors), far beyond the spread of a nested AUC around 0.5.
    let config = Config {
        max_kept: 10,
        ..quick(3)
    };
    let out = run(&d.problem(), &models, &config).unwrap();
    for m in SELECTING {
        let r = out.method(m).unwrap();
        // Equality happens: one lucky model can win every nested fit too.
        assert!(
            r.nested_auc <= r.in_sample_auc,
            "{m}: nested {:.4} above in-sample {:.4}",
            r.nested_auc,
            r.in_sample_auc
        );
    }
    let rec = &out.recommendation;
    assert_eq!(rec.method, Method::Median, "{}", rec.reason);
    assert!(rec.within_noise, "{}", rec.reason);
    assert!(verdict(&out).contains("recommendation: median"));
}

/// A few good models, many weak ones and two near-copies of a good one.
fn informative_models(d: &Data, seed: u64) -> Vec<Model> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut models: Vec<Model> = (0..4).map(|i| informative(d, i, 0.6, &mut rng)).collect();
    models.extend((4..24).map(|i| informative(d, i, 1.6, &mut rng)));
    for id in [100, 101] {
        let mut copy = models[0].clone();
        copy.id = id;
        copy.name = format!("copy-{id}");
        for v in copy.oof.iter_mut().chain(copy.test.iter_mut()) {
            *v = (*v + rng.random_range(-0.002..0.002)).clamp(0.0, 1.0);
        }
        models.push(copy);
    }
    models
}

/// Greedy selection never scores below the best single model in-sample; every method
/// predicts M test probabilities; the correlation cap drops the near-copies, and the
/// streaming `Preselector` keeps exactly what `run` kept.
#[test]
fn informative_models_end_to_end() {
    let d = generate(5, 400, 150, 5);
    let models = informative_models(&d, 6);
    let out = run(&d.problem(), &models, &quick(7)).unwrap();
    assert_eq!(out.methods.len(), Method::ALL.len());

    let best_single = models
        .iter()
        .map(|m| roc_auc(&d.labels, &m.oof).unwrap())
        .fold(f64::MIN, f64::max);
    let caruana = out.method(Method::Caruana).unwrap();
    assert!(
        caruana.in_sample_auc >= best_single,
        "{} < {best_single}",
        caruana.in_sample_auc
    );
    assert_eq!(
        out.method(Method::BestSingle).unwrap().in_sample_auc,
        best_single
    );

    let m_rows = d.test_labels.len();
    for r in &out.methods {
        assert_eq!(r.test.len(), m_rows, "{}", r.method);
        assert_eq!(r.oof.len(), d.labels.len(), "{}", r.method);
        assert!(
            r.test.iter().chain(&r.oof).all(|p| (0.0..=1.0).contains(p)),
            "{}",
            r.method
        );
        assert!(r.test_auc.is_some() && r.ci_low <= r.nested_auc && r.nested_auc <= r.ci_high);
        // Informative models: every method is far from a coin flip, honestly scored.
        assert!(r.nested_auc > 0.7, "{}: {}", r.method, r.nested_auc);
    }
    assert_eq!(out.shakeup.on, ShakeUpOn::Test);

    let copies = [0, 100, 101]
        .iter()
        .filter(|id| out.kept.contains(id))
        .count();
    assert_eq!(copies, 1, "kept {:?}", out.kept);

    let mut order: Vec<usize> = (0..models.len()).collect();
    order.sort_by(|&a, &b| {
        out.models[b]
            .auc
            .total_cmp(&out.models[a].auc)
            .then(a.cmp(&b))
    });
    let mut pre = Preselector::new(&d.labels, 0.97, 200);
    for i in order {
        pre.push(models[i].clone(), out.models[i].auc).unwrap();
    }
    let streamed: Vec<i64> = pre.into_models().iter().map(|m| m.id).collect();
    assert_eq!(streamed, out.kept);

    let json = serde_json::to_string(&out).unwrap();
    let back: Outcome = serde_json::from_str(&json).unwrap();
    assert_eq!(back.recommendation.reason, out.recommendation.reason);
    assert_eq!(back.kept, out.kept);
    let text = verdict(&out);
    assert!(
        Method::ALL.iter().all(|m| text.contains(m.name())),
        "{text}"
    );
}

/// The nested fit that predicts fold 0 never reads fold 0's labels: flipping all of them
/// leaves every method's fold-0 nested predictions bit for bit unchanged, while the fits that
/// do include fold 0 change.
#[test]
fn nested_predictions_never_see_their_fold_labels() {
    let d = generate(8, 400, 150, 5);
    let models = informative_models(&d, 9);
    let config = quick(10);
    let before = run(&d.problem(), &models, &config).unwrap();
    let mut flipped = d.labels.clone();
    for (l, &f) in flipped.iter_mut().zip(&d.folds) {
        if f == 0 {
            *l = 1 - *l;
        }
    }
    let problem = Problem {
        labels: &flipped,
        ..d.problem()
    };
    let after = run(&problem, &models, &config).unwrap();
    for (b, a) in before.methods.iter().zip(&after.methods) {
        for r in (0..d.labels.len()).filter(|&r| d.folds[r] == 0) {
            assert_eq!(b.oof[r], a.oof[r], "{} row {r}", b.method);
        }
    }
    let (b, a) = (
        before.method(Method::LogisticStacker).unwrap(),
        after.method(Method::LogisticStacker).unwrap(),
    );
    let changed = (0..d.labels.len())
        .filter(|&r| d.folds[r] != 0 && b.oof[r] != a.oof[r])
        .count();
    assert!(
        changed > 0,
        "the fits that include fold 0 must see the flipped labels"
    );
}

/// Bad inputs are rejected before any work, with messages naming the culprit and saying
/// what was expected and found.
#[test]
fn invalid_inputs_are_rejected_with_clear_messages() {
    let d = generate(12, 60, 20, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let good = informative(&d, 1, 1.0, &mut rng);
    let n = d.labels.len();
    let config = quick(0);
    let err = |models: &[Model], problem: &Problem<'_>| {
        run(problem, models, &config).unwrap_err().to_string()
    };

    let mut short = good.clone();
    short.id = 3;
    short.name = "cnn-fold3".into();
    short.oof.truncate(n - 5);
    let msg = err(&[good.clone(), short], &d.problem());
    assert!(
        msg.contains("cnn-fold3")
            && msg.contains(&format!(
                "has {} out-of-fold predictions, expected {n}",
                n - 5
            )),
        "{msg}"
    );

    let mut nan = good.clone();
    nan.id = 2;
    nan.name = "gbm-nan".into();
    nan.test[3] = f32::NAN;
    let msg = err(&[good.clone(), nan], &d.problem());
    assert!(
        msg.contains("gbm-nan") && msg.contains("NaN") && msg.contains("test"),
        "{msg}"
    );

    assert_eq!(err(&[], &d.problem()), "no models to ensemble");

    let zeros = vec![0u8; n];
    let msg = err(
        std::slice::from_ref(&good),
        &Problem {
            labels: &zeros,
            ..d.problem()
        },
    );
    assert!(
        msg.contains("both classes") && msg.contains("only class 0"),
        "{msg}"
    );

    let bad = Config {
        bootstrap: 0,
        ..Config::default()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("bootstrap is 0"));
    let msg = "blend".parse::<Method>().unwrap_err().to_string();
    assert!(
        msg.contains("\"blend\"") && msg.contains("caruana, logistic, fold_bagged"),
        "{msg}"
    );
}
