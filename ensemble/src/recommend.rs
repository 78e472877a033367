//! The recommendation and its plain-text verdict. The rule is deliberately conservative:
//! the method with the highest nested AUC wins only if its paired gain over the median is
//! clear of the noise; otherwise the median, the choice that the SIIM-ISIC team would have
//! kept its medal with.
//! Must not: look at test labels; the recommendation has to be the one a user without them
//! would get.

use std::fmt::Write as _;

use crate::bootstrap::paired;
use crate::config::Method;
use crate::outcome::{MethodResult, Outcome, Recommendation, ShakeUpOn};

/// Two-sided error rate shared by all comparisons with the median.
const ALPHA: f64 = 0.05;

/// `boot[i]` holds method `i`'s bootstrap AUCs, `median` is the median's index.
pub(crate) fn recommend(
    results: &[MethodResult],
    boot: &[Vec<Option<f64>>],
    median: usize,
) -> Recommendation {
    let best = (0..results.len()).fold(median, |best, i| {
        if results[i].nested_auc > results[best].nested_auc {
            i
        } else {
            best
        }
    });
    let med = &results[median];
    if best == median {
        return Recommendation {
            method: Method::Median,
            reason: format!(
                "the median has the highest nested AUC ({:.4}); no method beats it",
                med.nested_auc
            ),
            gain_over_median: 0.0,
            gain_ci: (0.0, 0.0),
            confidence: 1.0 - ALPHA,
            within_noise: true,
        };
    }
    // Bonferroni over the methods compared with the median: the winner is the largest of
    // several noisy gains, and a plain 95% interval would crown noise too often.
    let compared = (results.len() - 1).max(1);
    let confidence = 1.0 - ALPHA / compared as f64;
    let r = &results[best];
    let gain = r.nested_auc - med.nested_auc;
    let gain_ci = paired(&boot[best], &boot[median], confidence).unwrap_or((gain, gain));
    let within_noise = gain_ci.0 <= 0.0;
    let ci_text = format!(
        "{:.1}% CI {:+.4} to {:+.4}, patients resampled, widened for {compared} methods compared",
        confidence * 100.0,
        gain_ci.0,
        gain_ci.1
    );
    let reason = if within_noise {
        format!(
            "{} has the highest nested AUC ({:.4}), but its gain over the median ({:.4}) is \
             {:+.4} ({ci_text}): that lies inside the noise, so use the median",
            r.method, r.nested_auc, med.nested_auc, gain
        )
    } else {
        format!(
            "{} beats the median on nested AUC, {:.4} against {:.4}, a gain of {:+.4} \
             ({ci_text}) that is clear of the noise",
            r.method, r.nested_auc, med.nested_auc, gain
        )
    };
    Recommendation {
        method: if within_noise {
            Method::Median
        } else {
            r.method
        },
        reason,
        gain_over_median: gain,
        gain_ci,
        confidence,
        within_noise,
    }
}

/// A few human-readable lines for `stackhive ensemble recommend`: the method table, the
/// shake-up summary and the recommendation.
pub fn verdict(outcome: &Outcome) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} models on {} train rows ({} patients, {} folds); AUCs are nested unless marked in-sample",
        outcome.models.len(),
        outcome.rows,
        outcome.patients,
        outcome.k
    );
    let has_test = outcome.methods.iter().any(|m| m.test_auc.is_some());
    let _ = writeln!(
        out,
        "{:<16} {:>7} {:>17} {:>9} {:>8} {:>17}{}",
        "method",
        "nested",
        "95% CI",
        "in-sample",
        "gain",
        "gain 95% CI",
        if has_test { "     test" } else { "" }
    );
    for m in &outcome.methods {
        let test = match m.test_auc {
            Some(t) if has_test => format!(" {t:>8.4}"),
            _ if has_test => format!(" {:>8}", "-"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<16} {:>7.4} {:>17} {:>9.4} {:>+8.4} {:>17}{}",
            m.method.name(),
            m.nested_auc,
            format!("[{:.4}, {:.4}]", m.ci_low, m.ci_high),
            m.in_sample_auc,
            m.gain_over_median,
            format!("[{:+.4}, {:+.4}]", m.gain_ci_low, m.gain_ci_high),
            test
        );
    }
    let s = &outcome.shakeup;
    let on = match s.on {
        ShakeUpOn::Test => "test rows",
        ShakeUpOn::Oof => "nested out-of-fold rows",
    };
    let _ = writeln!(
        out,
        "shake-up over {} random public/private splits of patients on the {on} ({:.0}% public): \
         the public-best method is not the private-best in {:.0}% of splits and falls below \
         the median in {:.0}%",
        s.repeats,
        s.public_fraction * 100.0,
        s.public_best_loses * 100.0,
        s.public_best_vs_median_loses * 100.0
    );
    let r = &outcome.recommendation;
    let _ = writeln!(out, "recommendation: {} — {}", r.method.name(), r.reason);
    out
}
