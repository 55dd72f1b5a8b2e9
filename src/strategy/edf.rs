//! Earliest-deadline-first scheduling of weighted backends, as Envoy's `EdfScheduler`
//! (`source/common/upstream/edf_scheduler.h`): each entry has deadline
//! `current_time + 1 / weight`; a pick pops the earliest deadline (ties by insertion
//! order), moves `current_time` to it and re-adds the entry with its (possibly new) weight.
//! Used by Envoy weighted round robin, Envoy least request with unequal weights and gRPC
//! weighted round robin.
//!
//! The entries are one heap while they are few, then one FIFO per step (`1 / weight`) with
//! a heap of the FIFOs' heads while the steps are few ([`Steps`]), the same pops either
//! way: at 10,000 backends of weights 1–4 a pick no longer sifts through 14 levels.

use std::collections::VecDeque;

use super::slow_start::{Ramp, RampKind, SlowStart};
use super::{Backend, Backends};
use crate::time::Nanos;

#[derive(Clone, Copy, Debug)]
struct Entry {
    deadline: f64,
    order: u64,
    backend: usize,
    /// The bits of `1 / weight`, the step its deadline was put after the current time:
    /// which of [`Steps`]' queues holds it.
    step: u64,
}

impl Entry {
    /// The order in which entries come due: earlier deadline, then earlier insertion.
    /// Keys are unique (every entry has its own order), so this is a strict total order.
    #[inline]
    fn due(&self, other: &Entry) -> std::cmp::Ordering {
        self.deadline
            .total_cmp(&other.deadline)
            .then(self.order.cmp(&other.order))
    }

    /// Whether `self` is due before `other` ([`Entry::due`]).
    #[inline]
    fn before(&self, other: &Entry) -> bool {
        self.due(other).is_lt()
    }
}

/// A binary min-heap of entries, earliest first. `std`'s `BinaryHeap` has no "replace the
/// root": a pick popped the root and pushed its next entry, two passes; here
/// [`Heap::replace_top`] takes one. With unique keys every pop comes out as from
/// `BinaryHeap` (a property test below compares them).
#[derive(Clone, Debug, Default)]
struct Heap {
    v: Vec<Entry>,
}

impl Heap {
    fn clear(&mut self) {
        self.v.clear();
    }

    fn len(&self) -> usize {
        self.v.len()
    }

    #[inline]
    fn peek(&self) -> Option<&Entry> {
        self.v.first()
    }

    fn push(&mut self, e: Entry) {
        self.v.push(e);
        self.sift_up(self.v.len() - 1, e);
    }

    fn pop(&mut self) -> Option<Entry> {
        let last = self.v.pop()?;
        if self.v.is_empty() {
            return Some(last);
        }
        let top = self.v[0];
        self.replace_top(last);
        Some(top)
    }

    /// Replaces the earliest entry by `e`: the root's hole moves down to a leaf along
    /// the earlier child at each level (one comparison a level), and `e` rises from
    /// there to its place (Floyd's heap construction step; a new deadline is usually
    /// among the latest, so it rises little).
    #[inline]
    fn replace_top(&mut self, e: Entry) {
        let v = &mut self.v;
        let n = v.len();
        let mut hole = 0;
        let mut child = 1;
        while child + 1 < n {
            // The earlier child, without a branch (which way it goes is a coin toss).
            child += usize::from(v[child + 1].before(&v[child]));
            v[hole] = v[child];
            hole = child;
            child = 2 * hole + 1;
        }
        if child + 1 == n {
            v[hole] = v[child];
            hole = child;
        }
        self.sift_up(hole, e);
    }

    /// Puts `e` in the hole at `hole` or above it, moving later parents down.
    #[inline]
    fn sift_up(&mut self, mut hole: usize, e: Entry) {
        while hole > 0 {
            let parent = (hole - 1) / 2;
            if self.v[parent].before(&e) {
                break;
            }
            self.v[hole] = self.v[parent];
            hole = parent;
        }
        self.v[hole] = e;
    }
}

/// Steps beyond which [`Steps`] gives way to a [`Heap`].
const MAX_STEPS: usize = 32;

/// The entries as one FIFO per step (`1 / weight`): every entry is pushed at the current
/// time plus its step, and the current time never goes back (it is the deadline last
/// popped, and every deadline pushed is at or after it), so the entries of one step come
/// due in the order they were pushed, and the earliest of all is the earliest of the
/// FIFOs' heads, kept in a [`Heap`] of at most [`MAX_STEPS`]. The same pops as one heap of
/// every entry (keys are unique), for a pick that sifts through a heap of a few heads in
/// the first-level cache, not through one of every backend: at 10,000 backends of weights
/// 1–4, Envoy weighted round robin has 4 steps and least request (`weight / (active +
/// 1)`) a dozen, where a heap of 10,000 entries is 14 levels of dependent reads.
#[derive(Clone, Debug, Default)]
struct Steps {
    /// Each FIFO's step (its bits), in the order first met.
    steps: Vec<u64>,
    fifos: Vec<VecDeque<Entry>>,
    /// The heads of the non-empty FIFOs.
    heads: Heap,
    /// The step last looked up and its FIFO: most lookups are of the step before them.
    last: Option<(u64, usize)>,
    len: usize,
}

impl Steps {
    /// The FIFO of `step`, added if new; `None` past [`MAX_STEPS`].
    #[inline]
    fn fifo(&mut self, step: u64) -> Option<usize> {
        if let Some((last, k)) = self.last
            && last == step
        {
            return Some(k);
        }
        let k = match self.steps.iter().position(|&s| s == step) {
            Some(k) => k,
            None if self.steps.len() < MAX_STEPS => {
                self.steps.push(step);
                self.fifos.push(VecDeque::new());
                self.steps.len() - 1
            }
            None => return None,
        };
        self.last = Some((step, k));
        Some(k)
    }

    /// Queues `e` in its FIFO (a head if the FIFO was empty); `false` (nothing queued)
    /// when its step would be one too many.
    #[inline]
    fn push(&mut self, e: Entry) -> bool {
        let Some(k) = self.fifo(e.step) else {
            return false;
        };
        let fifo = &mut self.fifos[k];
        if fifo.is_empty() {
            self.heads.push(e);
        }
        fifo.push_back(e);
        self.len += 1;
        true
    }

    /// Takes the earliest entry out of its FIFO, the FIFO's next (if any) taking its place
    /// among the heads.
    #[inline]
    fn pop(&mut self) -> Option<Entry> {
        let top = *self.heads.peek()?;
        let k = self.fifo(top.step).expect("a head's step has its FIFO");
        let fifo = &mut self.fifos[k];
        fifo.pop_front();
        match fifo.front() {
            Some(&next) => self.heads.replace_top(next),
            None => {
                self.heads.pop();
            }
        }
        self.len -= 1;
        Some(top)
    }

    /// `heap`'s entries by step, if they have at most [`MAX_STEPS`] steps: pushed in the
    /// order they come due, so that each FIFO is in that order.
    fn of(heap: &Heap) -> Option<Steps> {
        let mut entries = heap.v.clone();
        entries.sort_unstable_by(Entry::due);
        let mut steps = Steps::default();
        entries.into_iter().all(|e| steps.push(e)).then_some(steps)
    }

    /// Every entry, FIFO after FIFO (for a [`Heap`] to take them over).
    fn drain(&mut self) -> impl Iterator<Item = Entry> + '_ {
        self.heads.clear();
        self.len = 0;
        self.fifos.iter_mut().flat_map(|f| f.drain(..))
    }
}

/// Entries from which a [`Heap`] hands them to [`Steps`]: a heap of fewer fits in the
/// first-level cache, and a pick there costs less than the FIFOs' bookkeeping (Envoy
/// least request at 10 backends of weights 1–4 took 1.09× the CPU time a request by
/// steps).
const STEPS_FROM: usize = 64;

/// The scheduler's entries: one [`Heap`] while they are few, then by step ([`Steps`])
/// while the steps are few, else one [`Heap`] for good (gRPC weighted round robin's
/// weights may come from every report: a step a backend). The same pops either way.
#[derive(Clone, Debug)]
enum Queue {
    /// A heap, and whether it may still go by steps.
    Heap(Heap, bool),
    Steps(Steps),
}

impl Default for Queue {
    fn default() -> Queue {
        Queue::Heap(Heap::default(), true)
    }
}

impl Queue {
    fn clear(&mut self) {
        *self = Queue::default();
    }

    fn len(&self) -> usize {
        match self {
            Queue::Heap(h, _) => h.len(),
            Queue::Steps(s) => s.len,
        }
    }

    #[inline]
    fn peek(&self) -> Option<&Entry> {
        match self {
            Queue::Heap(h, _) => h.peek(),
            Queue::Steps(s) => s.heads.peek(),
        }
    }

    #[inline]
    fn push(&mut self, e: Entry) {
        match self {
            Queue::Heap(h, may) => {
                h.push(e);
                if *may && h.len() >= STEPS_FROM {
                    *may = false;
                    if let Some(steps) = Steps::of(h) {
                        *self = Queue::Steps(steps);
                    }
                }
            }
            Queue::Steps(s) => {
                if !s.push(e) {
                    // One step too many: every entry into one heap, for good.
                    let mut heap = Heap::default();
                    for x in s.drain() {
                        heap.push(x);
                    }
                    heap.push(e);
                    *self = Queue::Heap(heap, false);
                }
            }
        }
    }

    #[inline]
    fn pop(&mut self) -> Option<Entry> {
        match self {
            Queue::Heap(h, _) => h.pop(),
            Queue::Steps(s) => s.pop(),
        }
    }

    /// Replaces the earliest entry by `e`.
    #[inline]
    fn replace_top(&mut self, e: Entry) {
        match self {
            Queue::Heap(h, _) => h.replace_top(e),
            Queue::Steps(s) => {
                s.pop();
                self.push(e);
            }
        }
    }
}

/// An EDF scheduler over backend indices.
#[derive(Clone, Debug, Default)]
pub struct EdfScheduler {
    queue: Queue,
    current: f64,
    order: u64,
    /// Scratch list of down entries met by a pick.
    down: Vec<usize>,
}

impl EdfScheduler {
    /// Empties the scheduler (time restarts at 0).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.current = 0.0;
        self.order = 0;
    }

    /// Adds `backend` with `weight` (> 0): deadline `current_time + 1 / weight`.
    pub fn add(&mut self, backend: usize, weight: f64) {
        let e = self.entry(backend, weight);
        self.queue.push(e);
    }

    /// `backend`'s next entry: deadline `current_time + 1 / weight`, the next order.
    #[inline]
    fn entry(&mut self, backend: usize, weight: f64) -> Entry {
        let step = 1.0 / weight;
        let e = Entry {
            deadline: self.current + step,
            order: self.order,
            backend,
            step: step.to_bits(),
        };
        self.order += 1;
        e
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.queue.len() == 0
    }

    /// Pops the earliest deadline that is up and re-adds it with `weight(i)` (Envoy's
    /// `pickAndAdd`). Entries of down backends met on the way are re-added after the
    /// current time, so they keep cycling and come back without a burst. `None` when
    /// every entry is down.
    pub fn pick_and_add(
        &mut self,
        backends: &Backends,
        mut weight: impl FnMut(usize) -> f64,
    ) -> Option<usize> {
        // The usual case: the earliest entry is up and takes its own new deadline, in
        // place of the root (one pass down the heap instead of a pop's and a push's).
        let top = *self.queue.peek()?;
        if backends.get(top.backend).is_some_and(|b| b.up) {
            let i = top.backend;
            self.current = top.deadline;
            let again = self.entry(i, weight(i));
            self.queue.replace_top(again);
            return Some(i);
        }
        let mut found = None;
        while let Some(e) = self.queue.pop() {
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
///
/// The zero-weight backends are looked at only after the balancer told of a change to
/// one of them ([`WeightsSeen::told`], from [`super::Strategy::on_view`]): walking them
/// at every pick made Envoy's weighted round robin 5.1× round robin's pick with 5,000
/// weight-0 servers beside 10,000.
#[derive(Clone, Debug, Default)]
pub(crate) struct WeightsSeen {
    weights: Vec<u32>,
    zero: Vec<usize>,
    /// The balancer told of a new weight for a backend of weight 0 at the build, since
    /// the build or the last look at `zero`: the next [`WeightsSeen::stale`] looks.
    revived: bool,
}

impl WeightsSeen {
    /// Whether a rebuild is due before picking: the backends are new, or a backend of
    /// weight 0 at the build has another weight now. `zero` is looked at only after
    /// [`WeightsSeen::told`] heard of such a change (the look confirms it: the weight
    /// may have gone back to 0).
    #[inline]
    pub fn stale(&mut self, backends: &Backends) -> bool {
        if self.weights.len() != backends.len() {
            return true;
        }
        std::mem::take(&mut self.revived) && self.zero.iter().any(|&i| backends.weight(i) != 0)
    }

    /// The balancer told that entry `backend` of the view is now `view`. A backend
    /// scheduled at the build needs no telling: a pick landing on it sees a new weight
    /// ([`WeightsSeen::changed`]).
    #[inline]
    pub fn told(&mut self, backend: usize, view: &Backend) {
        if self.weights.get(backend) == Some(&0) && view.weight != 0 {
            self.revived = true;
        }
    }

    /// Makes the next [`WeightsSeen::stale`] look at every zero-weight backend, as it
    /// did at every pick before the balancer's tells were kept (tests: the oracle).
    #[cfg(test)]
    pub fn suspect(&mut self) {
        self.revived = true;
    }

    /// Whether backend `i`'s weight changed since the build.
    pub fn changed(&self, backends: &Backends, i: usize) -> bool {
        self.weights[i] != backends.weight(i)
    }

    /// Records the weights of a build.
    pub fn record(&mut self, backends: &Backends) {
        self.weights.clear();
        self.weights.extend(backends.iter().map(|b| b.weight));
        self.zero.clear();
        self.zero
            .extend((0..backends.len()).filter(|&i| backends.weight(i) == 0));
        self.revived = false;
    }
}

/// Envoy's EDF schedule of weighted hosts as its weighted round robin and its least
/// request keep it: rebuilt when the weights change and, under slow start
/// ([`super::slow_start`]), when a host becomes available (Envoy refreshes its schedulers on
/// every host-set change), each host's weight multiplied by its ramp factor whenever it
/// (re-)enters the schedule. What a balancer makes of a host's weight is its own (`weight`).
#[derive(Debug)]
pub(crate) struct EnvoySchedule {
    edf: EdfScheduler,
    seen: WeightsSeen,
    /// Every weight equal and non-zero, as of the last build (Envoy's unweighted case).
    all_equal: bool,
    /// Envoy's slow start, if the balancer's policy asks for it.
    slow: Option<SlowStart>,
    /// A host became available: the schedule is rebuilt before the next pick.
    refresh: bool,
}

impl Default for EnvoySchedule {
    fn default() -> EnvoySchedule {
        EnvoySchedule {
            edf: EdfScheduler::default(),
            seen: WeightsSeen::default(),
            all_equal: true,
            slow: None,
            refresh: false,
        }
    }
}

impl EnvoySchedule {
    /// Host `i`'s weight `w` at `now` times its slow-start factor (Envoy's
    /// `applySlowStartFactor`).
    #[inline]
    fn ramped(slow: Option<&SlowStart>, w: f64, i: usize, now: Nanos) -> f64 {
        match slow {
            Some(s) => w * s.factor(i, now),
            None => w,
        }
    }

    /// Rebuilds the schedule if a host became available or the weights changed since.
    #[inline]
    pub fn refresh(&mut self, backends: &Backends, now: Nanos, weight: impl Fn(&Backend) -> f64) {
        if self.refresh || self.seen.stale(backends) {
            self.rebuild(backends, now, weight);
        }
    }

    fn rebuild(&mut self, backends: &Backends, now: Nanos, weight: impl Fn(&Backend) -> f64) {
        self.seen.record(backends);
        self.refresh = false;
        let first = backends.get(0).map_or(0, |b| b.weight);
        self.all_equal = first > 0 && backends.iter().all(|b| b.weight == first);
        self.edf.clear();
        for (i, b) in backends.iter().enumerate() {
            if b.weight > 0 {
                self.edf
                    .add(i, Self::ramped(self.slow.as_ref(), weight(&b), i, now));
            }
        }
    }

    /// Whether every weight was equal and non-zero at the last build.
    pub fn all_equal(&self) -> bool {
        self.all_equal
    }

    /// Whether some host is in its slow-start window at `now`.
    pub fn ramping(&self, now: Nanos) -> bool {
        self.slow.as_ref().is_some_and(|s| s.active(now))
    }

    /// The earliest deadline that is up (call [`EnvoySchedule::refresh`] first); a host
    /// whose weight changed since the build is not picked: the schedule is rebuilt and
    /// picks again.
    pub fn pick(
        &mut self,
        backends: &Backends,
        now: Nanos,
        weight: impl Fn(&Backend) -> f64,
    ) -> Option<usize> {
        for _ in 0..2 {
            let slow = self.slow.as_ref();
            let i = self.edf.pick_and_add(backends, |j| {
                Self::ramped(slow, weight(&backends.at(j)), j, now)
            })?;
            if !self.seen.changed(backends, i) {
                return Some(i);
            }
            self.rebuild(backends, now, &weight);
        }
        None
    }

    /// Takes Envoy's slow start; `false` (refused) for another system's ramp.
    pub fn set_slow_start(&mut self, ramp: Ramp) -> bool {
        if ramp.kind() != RampKind::Envoy {
            return false;
        }
        self.slow = Some(SlowStart::new(ramp));
        true
    }

    /// Host `backend` became available at `now`: under slow start its ramp begins and the
    /// schedule is rebuilt before the next pick.
    pub fn on_available(&mut self, backend: usize, now: Nanos) {
        if let Some(s) = &mut self.slow {
            s.start(backend, now);
            self.refresh = true;
        }
    }

    /// The balancer told that entry `backend` of the view is now `view` (a balancer keeping
    /// a schedule indexes the view, without counts): see [`WeightsSeen::told`].
    #[inline]
    pub fn on_view(&mut self, backend: usize, view: &Backend) {
        self.seen.told(backend, view);
    }

    /// Makes the next [`EnvoySchedule::refresh`] compare the weights with the view's as it
    /// did at every pick before the tells were kept (tests: the oracle).
    #[cfg(test)]
    pub fn suspect(&mut self) {
        self.seen.suspect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    /// An entry's key as `std`'s heap orders it (its deadline's bits order as the
    /// deadline for the non-negative deadlines used here).
    fn key(e: &Entry) -> Reverse<(u64, u64, usize)> {
        Reverse((e.deadline.to_bits(), e.order, e.backend))
    }

    proptest! {
        /// Pushes, pops and root replacements come out as from `std`'s `BinaryHeap`.
        #[test]
        fn the_heap_pops_as_binary_heap(ops in prop::collection::vec((0u8..3, 0u32..40), 1..400)) {
            let (mut heap, mut model) = (Heap::default(), BinaryHeap::new());
            for (order, (op, d)) in ops.into_iter().enumerate() {
                let e = Entry { deadline: f64::from(d) / 4.0, order: order as u64, backend: order, step: 0 };
                match op {
                    0 => {
                        heap.push(e);
                        model.push(key(&e));
                    }
                    1 => prop_assert_eq!(heap.pop().map(|e| key(&e)), model.pop()),
                    _ => {
                        if let Some(top) = heap.peek().copied() {
                            prop_assert_eq!(Some(key(&top)), model.pop());
                            heap.replace_top(e);
                            model.push(key(&e));
                        }
                    }
                }
                prop_assert_eq!(heap.len(), model.len());
                prop_assert_eq!(heap.peek().map(key), model.peek().copied());
            }
        }
    }

    proptest! {
        /// The queue by steps pops what one heap of every entry pops, under the
        /// scheduler's discipline (each entry pushed at the current time, the deadline
        /// last popped, plus its step): pushes, pops and root replacements, with a few
        /// steps, and with enough of them (over `MAX_STEPS`) to hand every entry to a
        /// heap midway; weights of equal steps, of steps equal in value only after the
        /// division, and ties.
        #[test]
        fn steps_pop_as_one_heap(
            ops in prop::collection::vec((0u8..4, 0usize..6), 1..500),
            many in prop::bool::ANY,
        ) {
            let weights: Vec<f64> = if many {
                (1..=40).map(|w| f64::from(w) / 3.0).collect()
            } else {
                vec![1.0, 2.0, 3.0, 4.0, 0.5, 6.0]
            };
            let (mut q, mut heap) = (Queue::default(), Heap::default());
            let (mut current, mut order) = (0.0f64, 0u64);
            for (op, w) in ops {
                let weight = if many { weights[(order as usize * 7 + w) % weights.len()] } else { weights[w] };
                let step = 1.0 / weight;
                let e = Entry { deadline: current + step, order, backend: w, step: step.to_bits() };
                order += 1;
                match op {
                    0 | 1 => {
                        q.push(e);
                        heap.push(e);
                    }
                    2 => {
                        let (a, b) = (q.pop(), heap.pop());
                        prop_assert_eq!(a.map(|e| key(&e)), b.map(|e| key(&e)));
                        if let Some(b) = b {
                            current = b.deadline;
                        }
                    }
                    _ => {
                        if let Some(top) = heap.peek().copied() {
                            prop_assert_eq!(q.peek().map(key), Some(key(&top)));
                            current = top.deadline;
                            let e = Entry { deadline: current + step, ..e };
                            q.replace_top(e);
                            heap.replace_top(e);
                        }
                    }
                }
                prop_assert_eq!(q.len(), heap.len());
                prop_assert_eq!(q.peek().map(key), heap.peek().map(key));
            }
            while let Some(b) = heap.pop() {
                prop_assert_eq!(q.pop().map(|e| key(&e)), Some(key(&b)));
            }
            prop_assert!(q.pop().is_none());
        }
    }

    #[test]
    fn weights_5_1_1_share_exactly_per_cycle_and_ties_go_in_order() {
        let b = Backends::new(&[1; 3]);
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
