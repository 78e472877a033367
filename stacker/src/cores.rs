//! The cores of a stacker process, shared by the jobs it runs at a fold's grain. A job takes the
//! cores its slots name and runs that many folds at once, one thread each. Once free cores have
//! been quiet (nothing taken or given back) for [`LEND_AFTER`], one is lent to a running job
//! with folds still waiting, for one fold at a time. So a sweep's last long job spreads its folds
//! over the cores the finished jobs left, instead of running them one by one beside idle cores.
//!
//! Must not: hold more cores at once than the process was given (lent ones included), or lend a
//! core a job is about to take: a lent core comes back after its fold, and the quiet wait means
//! a job handed to the stacker just as a core came free takes it first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::StackError;

/// How long a core must stay idle before it is lent: longer than a worker takes to hand the
/// stacker its next job after one finishes, so lending never races the queue.
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
    held: usize,
    /// When a core was last taken or given back.
    changed_at: Instant,
}

/// One core, given back when dropped.
pub struct Core<'a> {
    cores: &'a Cores,
}

impl Drop for Core<'_> {
    fn drop(&mut self) {
        let mut s = self.cores.lock();
        s.held -= 1;
        s.changed_at = Instant::now();
        drop(s);
        self.cores.changed.notify_all();
    }
}

impl Cores {
    /// `total` cores (at least one), lending those idle for `lend_after`.
    pub fn new(total: usize, lend_after: Duration) -> Cores {
        Cores {
            total: total.max(1),
            lend_after,
            state: Mutex::new(State {
                held: 0,
                changed_at: Instant::now(),
            }),
            changed: Condvar::new(),
            lent: AtomicUsize::new(0),
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// How many times a core was lent so far.
    pub fn lent(&self) -> usize {
        self.lent.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hand_out(&self, s: &mut State, n: usize) -> Vec<Core<'_>> {
        s.held += n;
        s.changed_at = Instant::now();
        (0..n).map(|_| Core { cores: self }).collect()
    }

    /// `n` cores (at most all of them), waiting until they are free; `Cancelled` if `cancelled`
    /// says so meanwhile.
    pub fn take(
        &self,
        n: usize,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<Core<'_>>, StackError> {
        let n = n.clamp(1, self.total);
        let mut s = self.lock();
        loop {
            if self.total - s.held >= n {
                return Ok(self.hand_out(&mut s, n));
            }
            if cancelled() {
                return Err(StackError::Cancelled);
            }
            s = self
                .changed
                .wait_timeout(s, POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A core to lend, waiting at most `wait` for a free one to have been quiet long enough.
    pub fn borrow(&self, wait: Duration) -> Option<Core<'_>> {
        let until = Instant::now() + wait;
        let mut s = self.lock();
        loop {
            let now = Instant::now();
            let quiet = now.saturating_duration_since(s.changed_at);
            if s.held < self.total && quiet >= self.lend_after {
                self.lent.fetch_add(1, Ordering::Relaxed);
                return self.hand_out(&mut s, 1).pop();
            }
            if now >= until {
                return None;
            }
            // Wake when the quiet wait could end, at the deadline, or at a change.
            let next = if s.held < self.total {
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
    fn takes_wait_for_free_cores_and_never_exceed_the_total() {
        let cores = Cores::new(2, Duration::from_millis(50));
        let a = cores.take(5, &|| false).unwrap();
        assert_eq!(a.len(), 2, "a job asking for more than all gets all");
        // Nothing is free: a second job waits, and gives up when cancelled.
        assert!(matches!(
            cores.take(1, &|| true),
            Err(StackError::Cancelled)
        ));
        assert!(cores.borrow(Duration::from_millis(100)).is_none());
        std::thread::scope(|s| {
            let waiter = s.spawn(|| cores.take(1, &|| false).map(|c| c.len()));
            std::thread::sleep(Duration::from_millis(30));
            drop(a);
            assert_eq!(waiter.join().unwrap().unwrap(), 1);
        });
    }

    #[test]
    fn only_cores_idle_long_enough_are_lent() {
        let cores = Cores::new(2, Duration::from_millis(300));
        let held = cores.take(1, &|| false).unwrap();
        // Just taken, under 300 ms ago: not yet.
        assert!(cores.borrow(Duration::ZERO).is_none());
        let started = Instant::now();
        let lent = cores.borrow(Duration::from_secs(5)).expect("lent once idle long enough");
        assert!(started.elapsed() < Duration::from_secs(2));
        // All held: nothing more to lend, and a take must wait for the lent core.
        assert!(cores.borrow(Duration::from_millis(400)).is_none());
        drop(lent);
        // Just given back: a job may take it at once, but it is not lent again yet.
        assert!(cores.borrow(Duration::ZERO).is_none());
        assert_eq!(cores.take(1, &|| false).unwrap().len(), 1);
        drop(held);
    }
}
