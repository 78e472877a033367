//! The ensemble methods and the knobs of `run`, with their defaults and validation.
//! Must not: hold any data or state of a run; everything here is plain, serialisable settings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::EnsembleError;

/// One way of combining models. `Median` is always computed: it is the reference every other
/// method's gain is measured against.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Mean,
    Median,
    RankMean,
    BestSingle,
    CorrelationCap,
    Caruana,
    LogisticStacker,
    FoldBagged,
}

impl Method {
    pub const ALL: [Method; 8] = [
        Method::Mean,
        Method::Median,
        Method::RankMean,
        Method::BestSingle,
        Method::CorrelationCap,
        Method::Caruana,
        Method::LogisticStacker,
        Method::FoldBagged,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Method::Mean => "mean",
            Method::Median => "median",
            Method::RankMean => "rank_mean",
            Method::BestSingle => "best_single",
            Method::CorrelationCap => "correlation_cap",
            Method::Caruana => "caruana",
            Method::LogisticStacker => "logistic",
            Method::FoldBagged => "fold_bagged",
        }
    }

    /// Whether fitting looks at labels; only these can overfit the rows they were fitted on.
    pub fn selects(&self) -> bool {
        !matches!(self, Method::Mean | Method::Median | Method::RankMean)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = EnsembleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Method::ALL
            .into_iter()
            // The serde spelling of the logistic stacker is accepted too.
            .find(|m| {
                m.name() == wanted
                    || (wanted == "logistic_stacker" && *m == Method::LogisticStacker)
            })
            .ok_or_else(|| EnsembleError::UnknownMethod {
                found: s.to_string(),
                valid: Method::ALL.map(|m| m.name()).join(", "),
            })
    }
}

/// Settings of one `run`. Unknown fields are rejected so that a typo in an experiment spec is
/// an error rather than a silently ignored default.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Methods to score; `Median` is added when missing (it is the reference).
    pub methods: Vec<Method>,
    /// Drop a model whose out-of-fold Pearson correlation with an already kept one exceeds this.
    pub correlation_cap: f64,
    /// At most this many models survive the correlation cap (taken in AUC order); they are the
    /// candidate pool of Caruana, fold bagging and the logistic stacker.
    pub max_kept: usize,
    /// Greedy additions after the initial (best single) model.
    pub caruana_iterations: usize,
    pub caruana_bags: usize,
    /// Share of the candidate pool each Caruana bag (and each fold bag) may choose from.
    pub caruana_bag_fraction: f64,
    /// Ensembles selected on a random half of the folds, then averaged.
    pub fold_bags: usize,
    /// Patient resamples for the confidence intervals.
    pub bootstrap: usize,
    pub shakeup_repeats: usize,
    /// Share of patients on the simulated public leaderboard (Kaggle's was 30%).
    pub public_fraction: f64,
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            methods: Method::ALL.to_vec(),
            correlation_cap: 0.97,
            max_kept: 200,
            caruana_iterations: 50,
            caruana_bags: 10,
            caruana_bag_fraction: 0.5,
            fold_bags: 20,
            bootstrap: 500,
            shakeup_repeats: 500,
            public_fraction: 0.3,
            seed: 0,
        }
    }
}

fn check_count(
    field: &'static str,
    v: usize,
    max: usize,
    expected: &'static str,
) -> Result<(), EnsembleError> {
    if v == 0 || v > max {
        return Err(EnsembleError::Config {
            field,
            found: v.to_string(),
            expected,
        });
    }
    Ok(())
}

impl Config {
    pub fn validate(&self) -> Result<(), EnsembleError> {
        if self.methods.is_empty() {
            return Err(EnsembleError::Config {
                field: "methods",
                found: "an empty list".into(),
                expected: "at least one method",
            });
        }
        for (i, m) in self.methods.iter().enumerate() {
            if self.methods[..i].contains(m) {
                return Err(EnsembleError::Config {
                    field: "methods",
                    found: format!("{m} listed twice"),
                    expected: "each method at most once",
                });
            }
        }
        // `!(a < x && x <= b)` rather than the negated form so that NaN is rejected too.
        if !(self.correlation_cap > 0.0 && self.correlation_cap <= 1.0) {
            return Err(EnsembleError::Config {
                field: "correlation_cap",
                found: self.correlation_cap.to_string(),
                expected: "a correlation in (0, 1]",
            });
        }
        if !(self.caruana_bag_fraction > 0.0 && self.caruana_bag_fraction <= 1.0) {
            return Err(EnsembleError::Config {
                field: "caruana_bag_fraction",
                found: self.caruana_bag_fraction.to_string(),
                expected: "a fraction in (0, 1]",
            });
        }
        if !(self.public_fraction > 0.0 && self.public_fraction < 1.0) {
            return Err(EnsembleError::Config {
                field: "public_fraction",
                found: self.public_fraction.to_string(),
                expected: "a fraction in (0, 1)",
            });
        }
        check_count("max_kept", self.max_kept, 100_000, "between 1 and 100000")?;
        check_count(
            "caruana_iterations",
            self.caruana_iterations,
            10_000,
            "between 1 and 10000",
        )?;
        check_count(
            "caruana_bags",
            self.caruana_bags,
            1_000,
            "between 1 and 1000",
        )?;
        check_count("fold_bags", self.fold_bags, 1_000, "between 1 and 1000")?;
        check_count("bootstrap", self.bootstrap, 100_000, "between 1 and 100000")?;
        check_count(
            "shakeup_repeats",
            self.shakeup_repeats,
            100_000,
            "between 1 and 100000",
        )?;
        Ok(())
    }

    /// The methods to score, `Median` first when the caller left it out.
    pub(crate) fn methods_with_median(&self) -> Vec<Method> {
        let mut out = self.methods.clone();
        if !out.contains(&Method::Median) {
            out.insert(0, Method::Median);
        }
        out
    }
}
