//! The worker's free resources: CPU slots and which GPUs are busy. It makes the lease offer and
//! assigns concrete GPU indices to each job; it never blocks and never talks to anyone.

use stackhive_proto::v1::Resources;

/// What one running job holds; given back with [`Capacity::release`].
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Allocation {
    pub(crate) slots: u32,
    pub(crate) gpus: Vec<u32>,
}

#[derive(Debug)]
struct Gpu {
    mem_mb: u64,
    busy: bool,
}

#[derive(Debug)]
pub(crate) struct Capacity {
    free_slots: u32,
    gpus: Vec<Gpu>,
    tags: Vec<String>,
}

impl Capacity {
    pub(crate) fn new(slots: u32, gpu_mem_mb: &[u64], tags: &[String]) -> Self {
        Self {
            free_slots: slots,
            gpus: gpu_mem_mb
                .iter()
                .map(|&mem_mb| Gpu {
                    mem_mb,
                    busy: false,
                })
                .collect(),
            tags: tags.to_vec(),
        }
    }

    /// What to offer in a Lease call, or `None` when there is nothing to offer.
    pub(crate) fn offer(&self) -> Option<Resources> {
        if self.free_slots == 0 {
            return None;
        }
        let free = self.gpus.iter().filter(|g| !g.busy);
        Some(Resources {
            cpu_slots: self.free_slots,
            gpus: free.clone().count() as u32,
            // Per the API, a worker offers the memory of its smallest free GPU: any job that
            // fits it fits every free GPU.
            gpu_mem_mb: free.map(|g| g.mem_mb).min().unwrap_or(0),
            tags: self.tags.clone(),
        })
    }

    #[cfg(test)]
    fn free_slots(&self) -> u32 {
        self.free_slots
    }

    /// Takes what a leased job needs, or `None` if it does not fit (the coordinator matched it
    /// against an offer, so that means the two disagree).
    pub(crate) fn allocate(&mut self, need: Option<&Resources>) -> Option<Allocation> {
        let (cpu, gpus, mem) = need.map_or((0, 0, 0), |r| (r.cpu_slots, r.gpus, r.gpu_mem_mb));
        // A job that asks for no CPU still occupies a slot here, so that the number of jobs
        // running at once stays bounded by --slots.
        let slots = cpu.max(1);
        if slots > self.free_slots {
            return None;
        }
        // Best fit: the smallest free GPUs that have enough memory, keeping big ones for big jobs.
        let mut candidates: Vec<u32> = (0..self.gpus.len() as u32)
            .filter(|&i| {
                let g = &self.gpus[i as usize];
                !g.busy && g.mem_mb >= mem
            })
            .collect();
        if candidates.len() < gpus as usize {
            return None;
        }
        candidates.sort_by_key(|&i| (self.gpus[i as usize].mem_mb, i));
        candidates.truncate(gpus as usize);
        candidates.sort_unstable();
        for &i in &candidates {
            self.gpus[i as usize].busy = true;
        }
        self.free_slots -= slots;
        Some(Allocation {
            slots,
            gpus: candidates,
        })
    }

    pub(crate) fn release(&mut self, slots: u32, gpus: &[u32]) {
        self.free_slots += slots;
        for &i in gpus {
            if let Some(g) = self.gpus.get_mut(i as usize) {
                g.busy = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(cpu: u32, gpus: u32, mem: u64) -> Resources {
        Resources {
            cpu_slots: cpu,
            gpus,
            gpu_mem_mb: mem,
            tags: Vec::new(),
        }
    }

    #[test]
    fn gpus_are_assigned_best_fit_and_freed() {
        let mut c = Capacity::new(8, &[24_000, 16_000, 16_000, 80_000], &["gpu".into()]);
        let offer = c.offer().expect("free");
        assert_eq!(
            (offer.cpu_slots, offer.gpus, offer.gpu_mem_mb),
            (8, 4, 16_000)
        );
        assert_eq!(offer.tags, ["gpu"]);

        let big = c
            .allocate(Some(&need(2, 1, 40_000)))
            .expect("fits the 80 GB card");
        assert_eq!(big.gpus, [3]);
        let two = c.allocate(Some(&need(1, 2, 10_000))).expect("fits");
        assert_eq!(two.gpus, [1, 2]);
        let offer = c.offer().expect("free");
        assert_eq!(
            (offer.cpu_slots, offer.gpus, offer.gpu_mem_mb),
            (5, 1, 24_000)
        );
        assert_eq!(c.allocate(Some(&need(1, 2, 0))), None);

        c.release(big.slots, &big.gpus);
        c.release(two.slots, &two.gpus);
        let offer = c.offer().expect("free");
        assert_eq!((offer.cpu_slots, offer.gpus), (8, 4));
    }

    #[test]
    fn slots_bound_the_jobs_running_at_once() {
        let mut c = Capacity::new(2, &[], &[]);
        let a = c
            .allocate(Some(&need(0, 0, 0)))
            .expect("a zero-slot job still takes one");
        assert_eq!(a.slots, 1);
        let b = c.allocate(None).expect("fits");
        assert_eq!(c.offer(), None);
        assert_eq!(c.allocate(None), None);
        c.release(a.slots, &a.gpus);
        c.release(b.slots, &b.gpus);
        assert_eq!(c.free_slots(), 2);
    }
}
