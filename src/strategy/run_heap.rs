//! An ordered queue for entries that mostly arrive in order, with lazy removal: what
//! HAProxy's FWRR ebtrees and the index of nginx's smooth weighted round robin keep.
//!
//! A balanced tree costs O(log n) per operation and grew with the cluster (a fifth of a
//! request's cost at 1,000 servers for FWRR). Here an entry goes to a sorted run (a deque)
//! when it sorts at or after the run's last entry, else to a binary heap: when a picked
//! server always moves behind every other (equal weights, in both strategies), every
//! insertion lands in the run and a pick is O(1). The first entry is the lesser of the
//! run's first and the heap's least, which is the order of the union (both are in order,
//! and entries are unique: each carries a number of its own).
//!
//! Removal is lazy: the owner says which entries are still current (an entry carries a
//! stamp that its server's state must still hold), tells the queue when one stops being
//! current ([`RunHeap::removed`]), and the others are dropped when they come first, or all
//! at once when they outnumber the current ones.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Entries in order, the least first (see the module documentation).
#[derive(Debug)]
pub(crate) struct RunHeap<E> {
    run: VecDeque<E>,
    heap: BinaryHeap<Reverse<E>>,
    /// Entries still current.
    live: usize,
}

impl<E> Default for RunHeap<E>
where
    E: Ord,
{
    fn default() -> Self {
        RunHeap {
            run: VecDeque::new(),
            heap: BinaryHeap::new(),
            live: 0,
        }
    }
}

impl<E: Ord + Copy> RunHeap<E> {
    /// Adds `e`, which is current (and distinct from every entry held); `current` tells
    /// the entries still current, should the queue drop the others now.
    pub(crate) fn insert(&mut self, e: E, current: impl Fn(&E) -> bool) {
        match self.run.back() {
            Some(last) if e < *last => self.heap.push(Reverse(e)),
            _ => self.run.push_back(e),
        }
        self.live += 1;
        if self.run.len() + self.heap.len() > 2 * self.live + 64 {
            self.run.retain(&current);
            self.heap.retain(|Reverse(e)| current(e));
        }
    }

    /// One current entry stopped being current.
    pub(crate) fn removed(&mut self) {
        self.live -= 1;
    }

    /// The least current entry, dropping stale ones before it.
    pub(crate) fn first(&mut self, current: impl Fn(&E) -> bool) -> Option<E> {
        while self.run.front().is_some_and(|e| !current(e)) {
            self.run.pop_front();
        }
        while self.heap.peek().is_some_and(|Reverse(e)| !current(e)) {
            self.heap.pop();
        }
        match (self.run.front(), self.heap.peek()) {
            (Some(a), Some(Reverse(b))) => Some(*a.min(b)),
            (Some(a), None) => Some(*a),
            (None, Some(Reverse(b))) => Some(*b),
            (None, None) => None,
        }
    }

    /// Current entries (for tests).
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Every entry held, current or not (for tests).
    #[cfg(test)]
    pub(crate) fn entries(&self) -> impl Iterator<Item = &E> {
        self.run.iter().chain(self.heap.iter().map(|Reverse(e)| e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The queue gives the first entry a `BTreeSet` of the current entries gives,
        /// whatever the insertions (in order, out of order, equal keys) and removals, and
        /// holds at most about twice the current ones.
        #[test]
        fn the_queue_orders_as_a_btree(
            ops in proptest::collection::vec((0u8..4, -20i64..20, 0usize..6), 0..300),
        ) {
            // Server i's current entry: (key, number).
            let mut node: Vec<Option<(i64, u64)>> = vec![None; 6];
            let mut q = RunHeap::default();
            let mut want = std::collections::BTreeSet::new();
            let mut n = 0u64;
            for (op, key, i) in ops {
                let current = |e: &(i64, u64, usize)| node[e.2] == Some((e.0, e.1));
                match op {
                    // Insert (most keys after the last: the run).
                    0 | 1 if node[i].is_none() => {
                        n += 1;
                        let key = if op == 0 { key } else { i64::from(n as u8) * 4 + key };
                        node[i] = Some((key, n));
                        let current = |e: &(i64, u64, usize)| node[e.2] == Some((e.0, e.1));
                        q.insert((key, n, i), current);
                        want.insert((key, n, i));
                    }
                    2 => {
                        if let Some((k, m)) = node[i].take() {
                            q.removed();
                            want.remove(&(k, m, i));
                        }
                    }
                    // Take the first out, as a pick does.
                    3 => {
                        let first = q.first(current);
                        prop_assert_eq!(first, want.first().copied());
                        if let Some((k, m, j)) = first {
                            node[j] = None;
                            q.removed();
                            want.remove(&(k, m, j));
                        }
                    }
                    _ => {}
                }
                let current = |e: &(i64, u64, usize)| node[e.2] == Some((e.0, e.1));
                prop_assert_eq!(q.first(current), want.first().copied());
                prop_assert_eq!(q.live(), want.len());
                prop_assert!(q.entries().count() <= 2 * q.live() + 65);
            }
        }
    }
}
