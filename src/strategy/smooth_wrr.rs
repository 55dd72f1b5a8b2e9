//! Smooth weighted round robin, exactly as nginx's `ngx_http_upstream_get_peer`
//! (the default `upstream` balancing): every pick adds each peer's weight to its current
//! weight, takes the peer with the largest current weight (the first one on ties) and
//! subtracts the total weight from it. Weights {5, 1, 1} give `a a b a c a a`.
//!
//! nginx's `slow_start` ([`super::slow_start`]): a server that becomes available has its
//! weight grow linearly from zero to nominal over the window. To ramp in small steps the
//! weights are then counted in thousandths (which leaves the sequence of picks unchanged:
//! scaling every weight scales every current weight alike), a ramping server's weight
//! rounded and at least one thousandth, so that a lone server is still picked.
//!
//! nginx scans every peer at each pick; above [`super::least_conn::SCAN_UP_TO`] backends
//! the same picks come from an index kept as the view changes ([`SmoothIndex`]: members
//! grouped by weight, ordered by their counter less `weight ×` the picks made, an order no
//! pick changes), O(1) per distinct weight when the picked member moves behind the others
//! of its weight (always, with equal weights) and O(log n) otherwise. The property tests
//! compare it with the scan. Slow start varies weights with time, so while a server ramps
//! a balancer with slow start scans; between ramps its weights are fixed (nominal, in
//! thousandths) and the index, built from the scan's counters, picks again (a ramp's
//! start hands its counters back to the scan): a steady cluster with slow start costs what
//! one without does, not O(n) a pick.

use std::cmp::Reverse;

use super::least_conn::SCAN_UP_TO;
use super::registry::{About, Parameterless, PickCost, Reads, Split};
use super::run_heap::RunHeap;
use super::slow_start::{Ramp, RampKind, SlowStart};
use super::{Backend, Backends, Entries, PickContext, Strategy};
use crate::time::Nanos;

/// Weight units per unit of configured weight under slow start.
const SCALE: f64 = 1000.0;

/// nginx smooth weighted round robin. Backends of weight 0 are never picked.
#[derive(Debug, Default)]
pub struct SmoothWeightedRoundRobin {
    current: Vec<i64>,
    /// nginx's slow start, if the balancer's policy asks for it.
    slow: Option<SlowStart>,
    /// Pick from the index (built at the first pick) rather than by the scan.
    indexed: bool,
    index: Option<SmoothIndex>,
}

impl SmoothWeightedRoundRobin {
    /// Smooth WRR picking from an index of the view.
    pub fn indexed() -> SmoothWeightedRoundRobin {
        SmoothWeightedRoundRobin {
            indexed: true,
            ..Default::default()
        }
    }

    /// Smooth WRR over `n` backends: nginx's scan up to `SCAN_UP_TO` backends, the
    /// index beyond. The same picks either way.
    pub fn for_backends(n: usize) -> SmoothWeightedRoundRobin {
        if n <= SCAN_UP_TO {
            SmoothWeightedRoundRobin::default()
        } else {
            SmoothWeightedRoundRobin::indexed()
        }
    }

    /// Runs one smooth-WRR step over the backends that are up, with `weight(i, w)` as
    /// backend `i`'s effective weight when `w` is its configured one (0 excludes it; at
    /// most `u32::MAX × 1000`); over a dense view's slices when it has them.
    pub(crate) fn step(
        current: &mut Vec<i64>,
        backends: &Backends,
        weight: impl Fn(usize, u32) -> i64,
    ) -> Option<usize> {
        match backends.dense() {
            Some(dense) => Self::step_entries(current, &dense, weight),
            None => Self::step_entries(current, backends, weight),
        }
    }

    /// [`SmoothWeightedRoundRobin::step`] over either layout.
    fn step_entries(
        current: &mut Vec<i64>,
        backends: &impl Entries,
        weight: impl Fn(usize, u32) -> i64,
    ) -> Option<usize> {
        if current.len() != backends.len() {
            current.resize(backends.len(), 0);
        }
        let mut total = 0i64;
        // The first backend of highest counter, with its counter beside it (a counter is
        // raised once a step, before it is compared: the best's stays as noted).
        let mut best: Option<(usize, i64)> = None;
        for (i, (b, c)) in backends.iter().zip(current.iter_mut()).enumerate() {
            let w = weight(i, b.weight);
            if !b.up || w == 0 {
                continue;
            }
            *c += w;
            total += w;
            if best.is_none_or(|(_, top)| *c > top) {
                best = Some((i, *c));
            }
        }
        let (i, _) = best?;
        current[i] -= total;
        Some(i)
    }
}

impl SmoothWeightedRoundRobin {
    /// A pick under slow start: nginx's scan while a server ramps (weights vary with
    /// time); otherwise every weight is its nominal one in thousandths, fixed until the
    /// next ramp, and an index of those weights, built from the scan's counters, picks.
    fn pick_slow(&mut self, backends: &Backends, now: Nanos) -> Option<usize> {
        let s = self.slow.as_ref().expect("slow start is set");
        if !self.indexed || s.active(now) {
            if let Some(index) = self.index.take() {
                self.current = index.counters();
            }
            return Self::step(&mut self.current, backends, |i, w| {
                if w == 0 {
                    return 0;
                }
                let scaled = f64::from(w) * SCALE * s.factor(i, now);
                (scaled.round() as i64).max(1)
            });
        }
        let index = match &mut self.index {
            Some(index) if index.len() == backends.len() => index,
            stale => {
                if let Some(old) = stale.take() {
                    self.current = old.counters();
                }
                let mut counters = std::mem::take(&mut self.current);
                counters.resize(backends.len(), 0);
                stale.insert(SmoothIndex::with_counters(backends, counters, SCALE as i64))
            }
        };
        index.pick()
    }
}

impl Strategy for SmoothWeightedRoundRobin {
    fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
        match &self.slow {
            Some(_) => self.pick_slow(backends, ctx.now),
            None if self.indexed => {
                let index = match &mut self.index {
                    Some(index) if index.len() == backends.len() => index,
                    stale => stale.insert(SmoothIndex::new(backends)),
                };
                index.pick()
            }
            None => Self::step(&mut self.current, backends, |_, w| i64::from(w)),
        }
    }

    fn set_slow_start(&mut self, ramp: Ramp) -> bool {
        if ramp.kind() != RampKind::Nginx {
            return false;
        }
        self.slow = Some(SlowStart::new(ramp));
        // Weights are now counted in thousandths: an index of nominal weights is dropped
        // (the counters start again from the scan's, as before slow start was set).
        self.index = None;
        true
    }

    fn on_available(&mut self, backend: usize, now: Nanos) {
        if let Some(s) = &mut self.slow {
            s.start(backend, now);
        }
    }

    fn indexes_view(&self) -> bool {
        self.indexed
    }

    fn indexes_in_flight(&self) -> bool {
        // Only up and weight matter: requests in flight never change a pick.
        false
    }

    fn on_view(&mut self, backend: usize, view: &Backend) {
        if let Some(index) = &mut self.index
            && backend < index.len()
        {
            index.update(backend, view);
        }
    }
}

/// A member's entry in its weight's queue: its key (highest first), its index (lowest
/// first among equal keys, as nginx keeps the first peer of highest counter) and its
/// stamp (the entry is current while the member's [`SmoothIndex::stamp`] is this one).
type Entry = (Reverse<i64>, u32, u64);

/// nginx's smooth WRR step over the view, indexed: the same picks as
/// [`SmoothWeightedRoundRobin::step`] over the backends up and of positive weight (the
/// members).
///
/// A step adds each member's weight to its counter, so members of one weight keep their
/// order by counter: each is filed under its *key*, its counter less `weight × picks`,
/// which no step changes. The first of each weight's queue is its member of highest
/// counter (the first index on ties), and the step takes the best of those: one per
/// distinct weight. The one taken gives back the members' total weight, so its key falls
/// by that total, usually behind every other of its weight (always, with equal weights:
/// the queue's run takes it in O(1)).
#[derive(Debug)]
pub(crate) struct SmoothIndex {
    /// Each backend's configured weight.
    weight: Vec<u32>,
    /// Whether it is a member (up, of positive weight).
    member: Vec<bool>,
    /// A member's key; a non-member's counter (nginx's `current_weight`, kept while it is
    /// out, as nginx skips a peer that is down without touching it).
    current: Vec<i64>,
    /// The stamp of a member's current entry.
    stamp: Vec<u64>,
    /// Stamps handed out.
    stamps: u64,
    /// Steps taken.
    picks: i64,
    /// Sum of the members' weights.
    total: i64,
    /// Per distinct weight, its members' entries.
    queues: Vec<(i64, RunHeap<Entry>)>,
    /// Units per unit of configured weight: 1, or [`SCALE`] under slow start.
    scale: i64,
}

impl SmoothIndex {
    /// The index of `backends` (every counter at 0, as nginx starts).
    pub(crate) fn new(backends: &Backends) -> SmoothIndex {
        SmoothIndex::with_counters(backends, vec![0; backends.len()], 1)
    }

    /// The index of `backends` with each weight counted `scale` times and these counters
    /// (one a backend), as the scan left them.
    fn with_counters(backends: &Backends, counters: Vec<i64>, scale: i64) -> SmoothIndex {
        let n = backends.len();
        debug_assert_eq!(counters.len(), n);
        let mut index = SmoothIndex {
            weight: backends.iter().map(|b| b.weight).collect(),
            member: vec![false; n],
            current: counters,
            stamp: vec![0; n],
            stamps: 0,
            picks: 0,
            total: 0,
            queues: Vec::new(),
            scale,
        };
        for (i, b) in backends.iter().enumerate() {
            if b.up && b.weight > 0 {
                index.join(i);
            }
        }
        index
    }

    /// Number of backends.
    pub(crate) fn len(&self) -> usize {
        self.weight.len()
    }

    /// Backend `i`'s weight in units (its configured weight × the scale).
    fn units(&self, i: usize) -> i64 {
        i64::from(self.weight[i]) * self.scale
    }

    /// Every backend's counter, as the scan keeps them (a member's is its key plus
    /// `weight × picks`, undoing [`SmoothIndex::join`]).
    fn counters(&self) -> Vec<i64> {
        (0..self.len())
            .map(|i| match self.member[i] {
                true => self.current[i] + self.units(i) * self.picks,
                false => self.current[i],
            })
            .collect()
    }

    /// The queue of weight `w`, made if new.
    fn queue(queues: &mut Vec<(i64, RunHeap<Entry>)>, w: i64) -> &mut RunHeap<Entry> {
        let k = match queues.iter().position(|(qw, _)| *qw == w) {
            Some(k) => k,
            None => {
                queues.push((w, RunHeap::default()));
                queues.len() - 1
            }
        };
        &mut queues[k].1
    }

    /// Files backend `i` (a non-member now joining) under its key.
    fn join(&mut self, i: usize) {
        let w = self.units(i);
        self.member[i] = true;
        self.current[i] -= w * self.picks;
        self.total += w;
        self.file(i);
    }

    /// Takes member `i` out, its counter kept.
    fn leave(&mut self, i: usize) {
        let w = self.units(i);
        self.member[i] = false;
        self.current[i] += w * self.picks;
        self.total -= w;
        Self::queue(&mut self.queues, w).removed();
    }

    /// Adds member `i`'s entry under its current key.
    fn file(&mut self, i: usize) {
        self.stamps += 1;
        self.stamp[i] = self.stamps;
        let e = (Reverse(self.current[i]), i as u32, self.stamps);
        let (member, stamp) = (&self.member, &self.stamp);
        let w = self.units(i);
        Self::queue(&mut self.queues, w).insert(e, |e| is_current(e, member, stamp));
    }

    /// Backend `i`'s view changed (only `up` and `weight` matter).
    pub(crate) fn update(&mut self, i: usize, view: &Backend) {
        let member = view.up && view.weight > 0;
        if self.member[i] == member && self.weight[i] == view.weight {
            return;
        }
        if self.member[i] {
            self.leave(i);
        }
        self.weight[i] = view.weight;
        if member {
            self.join(i);
        }
    }

    /// One smooth-WRR step.
    pub(crate) fn pick(&mut self) -> Option<usize> {
        self.picks += 1;
        let (member, stamp, picks) = (&self.member, &self.stamp, self.picks);
        // The highest counter (key + weight × picks), lowest index among equals.
        let mut best: Option<(i64, u32)> = None;
        for (w, queue) in &mut self.queues {
            let Some((Reverse(key), i, _)) = queue.first(|e| is_current(e, member, stamp)) else {
                continue;
            };
            let counter = key + *w * picks;
            if best.is_none_or(|(bc, bi)| counter > bc || (counter == bc && i < bi)) {
                best = Some((counter, i));
            }
        }
        let Some((_, i)) = best else {
            self.picks -= 1;
            return None;
        };
        let i = i as usize;
        // It gives back the total weight: its key falls by as much, and it is filed anew.
        let w = self.units(i);
        Self::queue(&mut self.queues, w).removed();
        self.current[i] -= self.total;
        self.file(i);
        Some(i)
    }
}

/// Whether `e` is its member's current entry.
fn is_current(e: &Entry, member: &[bool], stamp: &[u64]) -> bool {
    let i = e.1 as usize;
    member[i] && stamp[i] == e.2
}

/// `kind = "smooth_weighted_round_robin"`: no parameters.
impl Parameterless for SmoothWeightedRoundRobin {
    const ABOUT: About = About {
        kind: "smooth_weighted_round_robin",
        aliases: &["weighted_round_robin"],
        follows: "nginx smooth weighted round robin (upstream default)",
        knobs: &[],
        reads: Reads {
            slow_start: Some(RampKind::Nginx),
            ..Reads::WEIGHTS
        },
        split: Split::Weights,
    };
    const COST: PickCost = PickCost::CONSTANT;
    fn start(n: usize, _: crate::rng::SimRng) -> SmoothWeightedRoundRobin {
        SmoothWeightedRoundRobin::for_backends(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Balancer;
    use crate::strategy::testing::{
        Pair, counts, index_agrees_with_scan, long_runs_agree, picks, weights,
    };
    use proptest::prelude::*;
    use proptest::strategy::Strategy as _;

    /// The index (`indexed`) and the scan (`default`).
    fn index_and_scan<P>(_: &P) -> Pair {
        (
            Box::new(SmoothWeightedRoundRobin::indexed()),
            Box::new(SmoothWeightedRoundRobin::default()),
        )
    }

    #[test]
    fn index_picks_what_the_scan_picks() {
        index_agrees_with_scan(Just(()), weights(), index_and_scan);
    }

    /// Larger clusters with many distinct weights (`(backends, weights below)`), backends
    /// going down and up.
    #[test]
    fn long_runs_pick_what_the_scan_picks() {
        use rand::RngExt;
        long_runs_agree(
            3,
            (60, false),
            &[(300, 2), (1000, 8), (60, 100)],
            |&(n, max_weight), rng| (0..n).map(|_| rng.random_range(0..max_weight)).collect(),
            index_and_scan,
        );
    }

    /// One step of a slow-start workout: a pick, or a backend going down or coming back
    /// (and starting its ramp), each after some nanoseconds.
    #[derive(Clone, Debug)]
    enum SlowOp {
        Route(u64),
        Down(usize, u64),
        Back(usize, u64),
    }

    fn slow_op() -> impl proptest::strategy::Strategy<Value = SlowOp> {
        prop_oneof![
            8 => (0u64..40).prop_map(SlowOp::Route),
            1 => (any::<usize>(), 0u64..40).prop_map(|(i, t)| SlowOp::Down(i, t)),
            1 => (any::<usize>(), 0u64..40).prop_map(|(i, t)| SlowOp::Back(i, t)),
        ]
    }

    /// Every pick of a balancer with nginx slow start (a `window` of nanoseconds) over
    /// `ops`.
    fn slow_picks(
        strategy: SmoothWeightedRoundRobin,
        weights: &[u32],
        window: u64,
        ops: &[SlowOp],
    ) -> Vec<Option<usize>> {
        let mut b = Balancer::new(Box::new(strategy), weights);
        assert!(b.set_slow_start(Ramp::Nginx {
            window: Nanos(window)
        }));
        let (n, mut now, mut got) = (weights.len(), 0, Vec::new());
        for op in ops {
            match *op {
                SlowOp::Route(dt) => {
                    now += dt;
                    got.push(b.route(Nanos(now), 0));
                }
                SlowOp::Down(i, dt) => {
                    now += dt;
                    b.set_up(i % n, false);
                }
                SlowOp::Back(i, dt) => {
                    now += dt;
                    b.set_up(i % n, true);
                    b.available(i % n, Nanos(now));
                }
            }
        }
        got
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Under slow start, the index (between ramps) and the scan (while a server ramps)
        /// pick what the scan alone picks, through ramps that start, overlap and end.
        #[test]
        fn slow_start_index_picks_what_the_scan_picks(
            weights in prop::collection::vec(0u32..5, 1..10),
            window in 1u64..300,
            ops in prop::collection::vec(slow_op(), 1..400),
        ) {
            let fast = slow_picks(SmoothWeightedRoundRobin::indexed(), &weights, window, &ops);
            let oracle = slow_picks(SmoothWeightedRoundRobin::default(), &weights, window, &ops);
            prop_assert_eq!(fast, oracle);
        }
    }

    #[test]
    fn nginx_sequence_for_5_1_1() {
        let mut b = Balancer::new(Box::new(SmoothWeightedRoundRobin::default()), &[5, 1, 1]);
        let seq: String = picks(&mut b, 14)
            .iter()
            .map(|&i| (b'a' + i as u8) as char)
            .collect();
        assert_eq!(seq, "aabacaaaabacaa");
    }

    #[test]
    fn zero_weight_is_never_picked_and_down_is_skipped() {
        let mut b = Balancer::new(Box::new(SmoothWeightedRoundRobin::default()), &[0, 2, 1]);
        let p = picks(&mut b, 30);
        assert_eq!(counts(&p, 3), vec![0, 20, 10]);
        b.set_up(1, false);
        assert!(picks(&mut b, 5).iter().all(|&i| i == 2));
    }

    proptest! {
        /// Every full cycle (Σ weights picks) honours each weight exactly.
        #[test]
        fn weights_are_honoured_exactly_per_cycle(weights in prop::collection::vec(0u32..8, 1..8)) {
            prop_assume!(weights.iter().any(|&w| w > 0));
            let total: u32 = weights.iter().sum();
            let mut b = Balancer::new(Box::new(SmoothWeightedRoundRobin::default()), &weights);
            for _cycle in 0..3 {
                let p = picks(&mut b, total as usize);
                let c = counts(&p, weights.len());
                let expect: Vec<usize> = weights.iter().map(|&w| w as usize).collect();
                prop_assert_eq!(c, expect);
            }
        }
    }
}
