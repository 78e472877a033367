//! The few summaries the report computes itself from what it is given: quantiles and the
//! five-number summary behind the box plots.
//! Must not: measure models (AUCs, intervals and correlations come from the integrator).

/// The `q` quantile (0–1) of sorted, non-empty `sorted`, interpolating linearly between ranks
/// (R's type 7, numpy's default), so a reader's spreadsheet gives the same numbers.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (i, f) = (pos.floor() as usize, pos.fract());
    match sorted.get(i + 1) {
        Some(next) => sorted[i] + (next - sorted[i]) * f,
        None => sorted[i],
    }
}

/// Minimum, quartiles, maximum, mean and count of the finite values of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FiveNum {
    pub min: f64,
    pub q1: f64,
    pub median: f64,
    pub q3: f64,
    pub max: f64,
    pub mean: f64,
    pub n: usize,
}

/// `None` when no value is finite.
pub fn five(values: impl IntoIterator<Item = f64>) -> Option<FiveNum> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(FiveNum {
        min: v[0],
        q1: quantile(&v, 0.25),
        median: quantile(&v, 0.5),
        q3: quantile(&v, 0.75),
        max: v[v.len() - 1],
        mean: v.iter().sum::<f64>() / v.len() as f64,
        n: v.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::five;

    #[test]
    fn five_number_summary_skips_nan() {
        let s = five([4.0, 1.0, f64::NAN, 3.0, 2.0, 5.0]).unwrap();
        assert_eq!(
            (s.min, s.q1, s.median, s.q3, s.max, s.n),
            (1.0, 2.0, 3.0, 4.0, 5.0, 5)
        );
        assert_eq!(s.mean, 3.0);
        assert!(five([f64::NAN]).is_none());
    }
}
