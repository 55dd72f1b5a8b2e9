//! Earliest-deadline-first scheduling of weighted backends, as Envoy's `EdfScheduler`
//! (`source/common/upstream/edf_scheduler.h`): each entry has deadline
//! `current_time + 1 / weight`; a pick pops the earliest deadline (ties by insertion
//! order), moves `current_time` to it and re-adds the entry with its (possibly new) weight.
//! Used by Envoy weighted round robin, Envoy least request with unequal weights and gRPC
//! weighted round robin.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::Backend;

#[derive(Clone, Copy, Debug)]
struct Entry {
    deadline: f64,
    order: u64,
    backend: usize,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest deadline first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .deadline
            .total_cmp(&self.deadline)
            .then(other.order.cmp(&self.order))
    }
}

/// An EDF scheduler over backend indices.
#[derive(Clone, Debug, Default)]
pub struct EdfScheduler {
    heap: BinaryHeap<Entry>,
    current: f64,
    order: u64,
    /// Scratch list of down entries met by a pick.
    down: Vec<usize>,
}

impl EdfScheduler {
    /// Empties the scheduler (time restarts at 0).
    pub fn clear(&mut self) {
        self.heap.clear();
        self.current = 0.0;
        self.order = 0;
    }

    /// Adds `backend` with `weight` (> 0): deadline `current_time + 1 / weight`.
    pub fn add(&mut self, backend: usize, weight: f64) {
        self.heap.push(Entry {
            deadline: self.current + 1.0 / weight,
            order: self.order,
            backend,
        });
        self.order += 1;
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Pops the earliest deadline that is up and re-adds it with `weight(i)` (Envoy's
    /// `pickAndAdd`). Entries of down backends met on the way are re-added after the
    /// current time, so they keep cycling and come back without a burst. `None` when
    /// every entry is down.
    pub fn pick_and_add(
        &mut self,
        backends: &[Backend],
        mut weight: impl FnMut(usize) -> f64,
    ) -> Option<usize> {
        let mut found = None;
        while let Some(e) = self.heap.pop() {
            if backends.get(e.backend).is_some_and(|b| b.up) {
                self.current = e.deadline;
                found = Some(e.backend);
                break;
            }
            self.down.push(e.backend);
        }
        if let Some(i) = found {
            self.add(i, weight(i));
        }
        while let Some(d) = self.down.pop() {
            self.add(d, weight(d));
        }
        found
    }
}

/// The weights a scheduler was built from, to notice when they change without scanning
/// every backend on every pick: the count of backends, each zero-weight backend (which
/// is not scheduled), and the weight of whichever backend is picked.
#[derive(Clone, Debug, Default)]
pub(crate) struct WeightsSeen {
    weights: Vec<u32>,
    zero: Vec<usize>,
}

impl WeightsSeen {
    /// Whether a rebuild is due before picking.
    pub fn stale(&self, backends: &[Backend]) -> bool {
        self.weights.len() != backends.len() || self.zero.iter().any(|&i| backends[i].weight != 0)
    }

    /// Whether backend `i`'s weight changed since the build.
    pub fn changed(&self, backends: &[Backend], i: usize) -> bool {
        self.weights[i] != backends[i].weight
    }

    /// Records the weights of a build.
    pub fn record(&mut self, backends: &[Backend]) {
        self.weights.clear();
        self.weights.extend(backends.iter().map(|b| b.weight));
        self.zero.clear();
        self.zero
            .extend((0..backends.len()).filter(|&i| backends[i].weight == 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_5_1_1_share_exactly_per_cycle_and_ties_go_in_order() {
        let b = vec![Backend::new(1); 3];
        let w = [5.0, 1.0, 1.0];
        let mut s = EdfScheduler::default();
        for (i, &x) in w.iter().enumerate() {
            s.add(i, x);
        }
        let p: Vec<usize> = (0..14)
            .map(|_| s.pick_and_add(&b, |i| w[i]).unwrap())
            .collect();
        let count = |k| p.iter().filter(|&&i| i == k).count();
        assert_eq!((count(0), count(1), count(2)), (10, 2, 2), "{p:?}");
        // Deadlines 0.2, 0.4, ... for backend 0; 1.0 for 1 and 2. At 1.0 the tie goes by
        // insertion order, and 0's entry at 1.0 was re-inserted after 1's and 2's: as Envoy.
        assert_eq!(&p[..7], &[0, 0, 0, 0, 1, 2, 0]);
    }
}
