//! Learning-rate schedules. For now the one-cycle policy (Smith & Topping 2017, "Super-
//! Convergence"), with PyTorch `OneCycleLR`'s defaults: cosine warm-up from `max / 25` to `max`
//! over the first 30% of steps, then cosine annealing to `max / 25 / 1e4`. A pure function of
//! the step, so the loop can name the rate of any step (e.g. the one whose loss was NaN).

use std::f64::consts::PI;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneCycle {
    pub max_lr: f64,
    pub total_steps: usize,
    /// Share of the steps spent warming up.
    pub pct_start: f64,
    /// Initial rate is `max_lr / div_factor`.
    pub div_factor: f64,
    /// Final rate is the initial one divided by this.
    pub final_div_factor: f64,
}

impl OneCycle {
    pub fn new(max_lr: f64, total_steps: usize) -> OneCycle {
        OneCycle {
            max_lr,
            total_steps,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
        }
    }

    /// The rate at `step` (0-based); steps past the end keep the final rate.
    pub fn lr(&self, step: usize) -> f64 {
        let initial = self.max_lr / self.div_factor;
        let last = initial / self.final_div_factor;
        let end = self.total_steps.saturating_sub(1).max(1) as f64;
        let warm = (self.pct_start * end).max(1.0);
        let t = (step as f64).min(end);
        let cos =
            |from: f64, to: f64, frac: f64| to + (from - to) * (1.0 + (PI * frac).cos()) / 2.0;
        if t <= warm {
            cos(initial, self.max_lr, t / warm)
        } else {
            cos(self.max_lr, last, (t - warm) / (end - warm).max(1.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OneCycle;

    #[test]
    fn warms_up_peaks_and_anneals() {
        let s = OneCycle::new(1e-3, 101);
        assert!((s.lr(0) - 4e-5).abs() < 1e-12);
        assert!((s.lr(30) - 1e-3).abs() < 1e-12);
        assert!(s.lr(15) > s.lr(0) && s.lr(15) < 1e-3);
        assert!((s.lr(100) - 4e-9).abs() < 1e-15);
        assert!(s.lr(60) < s.lr(40));
    }
}
