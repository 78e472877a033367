//! The cores of a stacker process, shared by the jobs it runs at a fold's grain. A job takes the
//! cores its slots name and runs that many folds at once, one thread each. Once free cores have
//! been quiet (nothing taken, given back or reserved) for [`LEND_AFTER`], one is lent to a
//! running job with folds still waiting, for one fold at a time. So a sweep's last long job
//! spreads its folds over the cores the finished jobs left, instead of running them one by one
//! beside idle cores. Cores the worker's jobs of other kinds hold are reserved: never lent.
//!
//! Must not: lend a core that is held or reserved, or let a job's own cores and lent ones add up
//! to more than the process was given: a job that arrives while its cores are lent out waits
//! for them (a lent core comes back after its fold). The quiet wait means a job handed to the
//! stacker just as a core came free takes that core first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::StackError;

/// How long free cores must stay quiet before one is lent: longer than a worker takes to hand
/// the stacker its next job after one finishes, so lending does not race the queue.
pub const LEND_AFTER: Duration = Duration::from_secs(2);

/// How often a job waiting for cores checks whether it was cancelled.
const POLL: Duration = Duration::from_millis(200);

pub struct Cores {
    total: usize,
    lend_after: Duration,
    state: Mutex<State>,
    changed: Condvar,
    lent: AtomicUsize,
}

struct State {
    /// Cores held by jobs, lent ones included.
    held: usize,
    /// Lent cores not yet given back.
    lent_out: usize,
    /// Cores the worker's jobs of other kinds hold.
    reserved: usize,
    /// When a core was last taken, given back or reserved.
    changed_at: Instant,
}

impl State {
    fn changed(&mut self) {
        self.changed_at = Instant::now();
    }
}

/// One core, given back when dropped.
pub struct Core<'a> {
    cores: &'a Cores,
    lent: bool,
}

impl Drop for Core<'_> {
    fn drop(&mut self) {
        let mut s = self.cores.lock();
        s.held -= 1;
        s.lent_out -= usize::from(self.lent);
        s.changed();
        drop(s);
        self.cores.changed.notify_all();
    }
}

impl Cores {
    /// `total` cores (at least one), lending free ones after `lend_after` of quiet.
    pub fn new(total: usize, lend_after: Duration) -> Cores {
        Cores {
            total: total.max(1),
            lend_after,
            state: Mutex::new(State {
                held: 0,
                lent_out: 0,
                reserved: 0,
                changed_at: Instant::now(),
            }),
            changed: Condvar::new(),
            lent: AtomicUsize::new(0),
        }
    }

    /// How many times a core was lent so far.
    pub fn lent(&self) -> usize {
        self.lent.load(Ordering::Relaxed)
    }

    /// Sets the cores the worker's jobs of other kinds hold.
    pub fn reserve(&self, cores: usize) {
        let mut s = self.lock();
        s.reserved = cores;
        s.changed();
        drop(s);
        self.changed.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hand_out(&self, s: &mut State, n: usize, lent: bool) -> Vec<Core<'_>> {
        s.held += n;
        s.lent_out += if lent { n } else { 0 };
        s.changed();
        (0..n).map(|_| Core { cores: self, lent }).collect()
    }

    /// `n` cores (at most all of them) for a job the worker gave its slots to. Those slots are
    /// free by the worker's count, so this waits only while cores are lent out and too few are
    /// free: until a lent one comes back, or `cancelled` says so (`Cancelled`).
    pub fn take(
        &self,
        n: usize,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<Core<'_>>, StackError> {
        let n = n.clamp(1, self.total);
        let mut s = self.lock();
        loop {
            if s.lent_out == 0 || s.held + s.reserved + n <= self.total {
                return Ok(self.hand_out(&mut s, n, false));
            }
            if cancelled() {
                return Err(StackError::Cancelled);
            }
            s = self.wait(s, POLL);
        }
    }

    /// A core to lend, waiting at most `wait` for a free one to have been quiet long enough.
    pub fn borrow(&self, wait: Duration) -> Option<Core<'_>> {
        let until = Instant::now() + wait;
        let mut s = self.lock();
        loop {
            let now = Instant::now();
            let quiet = now.saturating_duration_since(s.changed_at);
            let free = s.held + s.reserved < self.total;
            if free && quiet >= self.lend_after {
                self.lent.fetch_add(1, Ordering::Relaxed);
                return self.hand_out(&mut s, 1, true).pop();
            }
            if now >= until {
                return None;
            }
            // Wake when the quiet wait could end, at the deadline, or at a change.
            let next = if free {
                (self.lend_after - quiet).min(until - now)
            } else {
                until - now
            };
            s = self.wait(s, next);
        }
    }

    fn wait<'a>(
        &self,
        s: std::sync::MutexGuard<'a, State>,
        d: Duration,
    ) -> std::sync::MutexGuard<'a, State> {
        self.changed
            .wait_timeout(s, d)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_waits_only_for_its_cores_to_come_back_from_a_loan() {
        let cores = Cores::new(2, Duration::ZERO);
        let own = cores.take(5, &|| false).unwrap();
        assert_eq!(own.len(), 2, "a job asking for more than all gets all");
        assert!(
            cores.borrow(Duration::from_millis(50)).is_none(),
            "nothing free to lend"
        );
        drop(own);
        let a = cores.take(1, &|| false).unwrap();
        let lent = cores
            .borrow(Duration::from_millis(50))
            .expect("the free core is lent");
        // The worker hands over a job for the slot whose core is lent: it waits, gives up
        // when cancelled, and gets the core when the loan ends.
        assert!(matches!(
            cores.take(1, &|| true),
            Err(StackError::Cancelled)
        ));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| cores.take(1, &|| false).map(|c| c.len()));
            std::thread::sleep(Duration::from_millis(30));
            assert!(!waiter.is_finished());
            drop(lent);
            assert_eq!(waiter.join().unwrap().unwrap(), 1);
        });
        drop(a);
    }

    #[test]
    fn only_free_cores_quiet_long_enough_are_lent() {
        let cores = Cores::new(2, Duration::from_millis(300));
        let held = cores.take(1, &|| false).unwrap();
        // Just taken, under 300 ms ago: not yet.
        assert!(cores.borrow(Duration::ZERO).is_none());
        let started = Instant::now();
        let lent = cores
            .borrow(Duration::from_secs(5))
            .expect("lent once quiet long enough");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(cores.lent(), 1);
        drop(lent);
        // Just given back: a job may take it at once, but it is not lent again yet.
        assert!(cores.borrow(Duration::ZERO).is_none());
        assert_eq!(cores.take(1, &|| false).unwrap().len(), 1);
        drop(held);
    }

    #[test]
    fn cores_reserved_for_other_kinds_are_never_lent() {
        let cores = Cores::new(3, Duration::ZERO);
        let _own = cores.take(1, &|| false).unwrap();
        cores.reserve(2);
        assert!(cores.borrow(Duration::from_millis(50)).is_none());
        cores.reserve(1);
        let lent = cores
            .borrow(Duration::from_millis(50))
            .expect("one free core");
        assert!(cores.borrow(Duration::from_millis(50)).is_none());
        drop(lent);
    }
}
