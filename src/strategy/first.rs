//! HAProxy `balance first`: servers are taken in order (HAProxy orders them by id; here by
//! index) and a request goes to the first up server with a free connection slot,
//! `in_flight < maxconn`, so traffic fills server 0, then 1, and leaves the rest idle
//! (to be powered down). `maxconn` is a strategy parameter; absent, each server's worker
//! count from its load report is used (one slot per worker, the usual HAProxy setting for
//! thread-per-request Thrift servers), or 1 before its first report. When every server is
//! full HAProxy queues the request in the backend until a slot frees; a balancer here must
//! choose at once, so it takes the up server with the fewest in flight (lowest index on
//! ties) — the one that would free a slot first under equal service rates.
//!
//! The scan takes O(n) a pick once the first servers are full (29.6× round robin's cost
//! per request at 10,000 servers). Beyond [`SCAN_UP_TO`] backends the same picks come from
//! an index: the servers with a free slot as a two-level bit set with the first of them
//! noted (when it fills, the next is a few `trailing_zeros` away), and for when none has
//! one, a segment tree of the up servers' requests in flight (the least, lowest index, is
//! one descent). A pick first re-reads from the view the servers dispatched to, completed
//! at or gone up or down since the last pick (told by [`Strategy::on_dispatch`],
//! [`Strategy::on_complete`] and [`Strategy::on_view`], which is asked for up and down
//! only): a few bit operations each. The tree's inner nodes are brought up to date only when every server is full
//! (a pick that reads them), so a run that keeps a free slot never walks the tree. Slots
//! from load reports are read into the index again whenever the table's
//! [`crate::strategy::LoadTable::workers_epoch`] moves.

use super::SpecError;
use super::registry::{About, Kind, Knob, PickCost, Reads, Split, Ty};
use super::{Backend, Backends, Entries, PickContext, Strategy};
use crate::time::Nanos;

/// Up to this many backends the scan is as fast as the index; both pick the same.
pub const SCAN_UP_TO: usize = 48;

/// HAProxy `first`.
#[derive(Debug, Default)]
pub struct First {
    maxconn: Option<u32>,
    /// Pick by scanning (small clusters) rather than from the index.
    scan: bool,
    index: Option<Index>,
}

/// The index of [`First`] over `n` servers: which have a free slot, and the least loaded.
#[derive(Debug)]
struct Index {
    /// Each server's slots as last read, and the view's length.
    slots: Vec<u32>,
    n: usize,
    /// The load table's workers epoch the slots were read at (0 without a table).
    epoch: u64,
    /// One bit per server: up, with fewer requests in flight than slots.
    free: Vec<u64>,
    /// One bit per word of `free`: whether it has a bit set.
    summary: Vec<u64>,
    /// The first server with a free slot (`n` when none has): what a pick reads.
    first: usize,
    /// Segment tree of the up servers' requests in flight (down: `u32::MAX`): leaves
    /// from `size` on, node `k`'s children at `2k` and `2k + 1`. The leaves are always
    /// current; the inner nodes only after [`Index::settle`].
    least: Vec<u32>,
    size: usize,
    /// Leaves changed since the inner nodes were last settled, unless `rebuild`.
    stale: Vec<u32>,
    /// Whether so many leaves changed that settling recomputes every inner node.
    rebuild: bool,
    /// Servers whose entry may have changed since the last pick, to re-read.
    touched: Vec<u32>,
    /// Whether so many were touched that the index is to be built again instead.
    outdated: bool,
}

impl Index {
    fn new(backends: &Backends, slots: Vec<u32>, epoch: u64) -> Index {
        let n = backends.len();
        let size = n.next_power_of_two();
        let words = n.div_ceil(64);
        let mut index = Index {
            slots,
            n,
            epoch,
            free: vec![0; words],
            summary: vec![0; words.div_ceil(64)],
            first: n,
            least: vec![u32::MAX; 2 * size],
            size,
            stale: Vec::new(),
            rebuild: true,
            touched: Vec::new(),
            outdated: false,
        };
        for i in 0..n {
            index.set(i, &backends.at(i));
        }
        index
    }

    /// Files server `i` as the view shows it: its free bit and its leaf.
    #[inline(always)]
    fn set(&mut self, i: usize, b: &Backend) {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        if b.up && b.in_flight < self.slots[i] {
            self.free[w] |= bit;
            self.summary[w / 64] |= 1 << (w % 64);
            self.first = self.first.min(i);
        } else if self.free[w] & bit != 0 {
            self.free[w] &= !bit;
            if self.free[w] == 0 {
                self.summary[w / 64] &= !(1 << (w % 64));
            }
            if self.first == i {
                self.first = self.free_from(i + 1);
            }
        }
        let leaf = if b.up { b.in_flight } else { u32::MAX };
        let k = self.size + i;
        if self.least[k] != leaf {
            self.least[k] = leaf;
            self.mark_stale(i);
        }
    }

    /// Notes that leaf `i` changed (past `n` notes, that every inner node is to be
    /// recomputed: then settling costs O(n) however many changed).
    #[inline]
    fn mark_stale(&mut self, i: usize) {
        if self.rebuild {
            return;
        }
        if self.stale.len() >= self.n {
            self.rebuild = true;
            self.stale.clear();
        } else {
            self.stale.push(i as u32);
        }
    }

    /// Notes that server `i` may have changed, to be re-read at the next pick.
    #[inline]
    fn touch(&mut self, i: usize) {
        if i >= self.n || self.outdated {
            return;
        }
        if self.touched.len() >= self.n {
            // More than a rebuild's worth of re-reading: rebuild instead.
            self.outdated = true;
            self.touched.clear();
        } else {
            self.touched.push(i as u32);
        }
    }

    /// Re-reads the touched servers from the view (from a dense view's slices when it
    /// has them).
    #[inline]
    fn refresh(&mut self, backends: &Backends) {
        match backends.dense() {
            Some(dense) => self.reread(&dense),
            None => self.reread(backends),
        }
        self.touched.clear();
    }

    /// Files the touched servers as `backends` shows them.
    #[inline]
    fn reread(&mut self, backends: &impl Entries) {
        for k in 0..self.touched.len() {
            let i = self.touched[k] as usize;
            self.set(i, &backends.at(i));
        }
    }

    /// The first server from `from` on with a free slot, `n` when none has: in the rest
    /// of `from`'s word, else in the first word after it that the summary says is not
    /// empty.
    fn free_from(&self, from: usize) -> usize {
        let w = from / 64;
        if w >= self.free.len() {
            return self.n;
        }
        let rest = self.free[w] & (!0u64 << (from % 64));
        if rest != 0 {
            return w * 64 + rest.trailing_zeros() as usize;
        }
        // Words after `w`: bits from `w + 1` on in the summary.
        let next = w + 1;
        let mut s = next / 64;
        let mut words = match self.summary.get(s) {
            Some(&x) => x & (!0u64 << (next % 64)),
            None => return self.n,
        };
        loop {
            if words != 0 {
                let w = s * 64 + words.trailing_zeros() as usize;
                return w * 64 + self.free[w].trailing_zeros() as usize;
            }
            s += 1;
            match self.summary.get(s) {
                Some(&x) => words = x,
                None => return self.n,
            }
        }
    }

    /// The first server with a free slot.
    #[inline]
    fn first_free(&self) -> Option<usize> {
        (self.first < self.n).then_some(self.first)
    }

    /// Brings the tree's inner nodes up to date with its leaves.
    fn settle(&mut self) {
        if self.rebuild {
            for k in (1..self.size).rev() {
                self.pull(k);
            }
            self.rebuild = false;
        } else {
            for j in 0..self.stale.len() {
                let mut k = (self.size + self.stale[j] as usize) / 2;
                while k >= 1 {
                    self.pull(k);
                    k /= 2;
                }
            }
        }
        self.stale.clear();
    }

    #[inline]
    fn pull(&mut self, k: usize) {
        self.least[k] = self.least[2 * k].min(self.least[2 * k + 1]);
    }

    /// The up server with the least in flight, lowest index on ties.
    fn least_loaded(&mut self) -> Option<usize> {
        self.settle();
        let least = self.least[1];
        if least == u32::MAX {
            return None;
        }
        let mut k = 1;
        while k < self.size {
            k = if self.least[2 * k] == least {
                2 * k
            } else {
                2 * k + 1
            };
        }
        Some(k - self.size)
    }

    /// The first up server with a free slot, else the up server with the least in
    /// flight, lowest index on ties: what the scan picks.
    fn pick(&mut self, backends: &Backends) -> Option<usize> {
        self.refresh(backends);
        self.first_free().or_else(|| self.least_loaded())
    }
}

impl First {
    /// `first` with a fixed `maxconn` per server, or per-server worker counts when `None`.
    /// Picks by scanning the view.
    pub fn new(maxconn: Option<u32>) -> First {
        First {
            maxconn,
            scan: true,
            index: None,
        }
    }

    /// `first` over `n` backends: the scan up to `SCAN_UP_TO` backends, the index
    /// beyond. The same picks either way.
    pub fn for_backends(maxconn: Option<u32>, n: usize) -> First {
        First {
            scan: n <= SCAN_UP_TO,
            ..First::new(maxconn)
        }
    }

    fn slots(&self, i: usize, ctx: &PickContext<'_>) -> u32 {
        self.maxconn
            .unwrap_or_else(|| ctx.load(i).map_or(1, |l| l.workers.max(1)))
    }

    /// The index, built again when the view's length or the table's workers epoch
    /// changed, or when too many servers were touched since the last pick.
    #[inline]
    fn index(&mut self, backends: &Backends, ctx: &PickContext) -> &mut Index {
        let epoch = match self.maxconn {
            Some(_) => 0,
            None => ctx.loads.map_or(0, |t| t.workers_epoch()),
        };
        let fresh = self
            .index
            .as_ref()
            .is_some_and(|x| x.n == backends.len() && x.epoch == epoch && !x.outdated);
        if !fresh {
            self.build(backends, ctx, epoch);
        }
        self.index.as_mut().expect("built above")
    }

    /// Builds the index from the view, with slots as of `epoch`.
    #[cold]
    fn build(&mut self, backends: &Backends, ctx: &PickContext, epoch: u64) {
        let slots = (0..backends.len()).map(|i| self.slots(i, ctx)).collect();
        self.index = Some(Index::new(backends, slots, epoch));
    }

    /// HAProxy's scan, over a dense view's slices when it has them.
    fn scan(&self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
        match backends.dense() {
            Some(dense) => self.scan_entries(&dense, ctx),
            None => self.scan_entries(backends, ctx),
        }
    }

    /// HAProxy's scan.
    fn scan_entries(&self, backends: &impl Entries, ctx: &PickContext) -> Option<usize> {
        let mut least: Option<usize> = None;
        for (i, b) in backends.iter().enumerate() {
            if !b.up {
                continue;
            }
            if b.in_flight < self.slots(i, ctx) {
                return Some(i);
            }
            if least.is_none_or(|j| b.in_flight < backends.in_flight(j)) {
                least = Some(i);
            }
        }
        least
    }

    /// Notes that server `i` may have changed, when picking from the index.
    #[inline]
    fn touch(&mut self, i: usize) {
        if let Some(x) = &mut self.index {
            x.touch(i);
        }
    }
}

impl Strategy for First {
    fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
        if self.scan {
            return self.scan(backends, ctx);
        }
        self.index(backends, ctx).pick(backends)
    }

    fn indexes_view(&self) -> bool {
        !self.scan
    }

    /// Requests in flight are re-read at the next pick from the servers told of by
    /// [`Strategy::on_dispatch`] and [`Strategy::on_complete`], which the balancer calls
    /// anyway: two dynamic calls a request fewer.
    fn indexes_in_flight(&self) -> bool {
        false
    }

    fn on_view(&mut self, backend: usize, _view: &Backend) {
        self.touch(backend);
    }

    fn on_dispatch(&mut self, backend: usize, _now: Nanos) {
        self.touch(backend);
    }

    fn on_complete(&mut self, backend: usize, _: Nanos, _: super::Outcome, _now: Nanos) {
        self.touch(backend);
    }
}

/// Parameters of `kind = "first"`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FirstParams {
    /// Requests each server takes before the next one is used. Default: the server's
    /// reported worker count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxconn: Option<u32>,
}

impl Kind for First {
    type Params = FirstParams;
    const ABOUT: About = About {
        kind: "first",
        aliases: &[],
        follows: "HAProxy balance first: fill servers in order up to maxconn",
        knobs: &[Knob::new("maxconn", Ty::Int)
            .unset("workers")
            .meaning("requests in flight per server")],
        reads: Reads::LOAD_REPORTS,
        split: Split::Dynamic,
    };
    fn validate(p: &FirstParams, _: usize) -> Result<(), SpecError> {
        if p.maxconn == Some(0) {
            return Err(SpecError::new(
                "maxconn",
                "is 0: no server could take a request",
                "use 1 or more, or remove it to use each server's worker count",
            ));
        }
        Ok(())
    }
    fn build(p: &FirstParams, n: usize, _: crate::rng::SimRng) -> First {
        First::for_backends(p.maxconn, n)
    }
    fn cost(_: &FirstParams) -> PickCost {
        PickCost::SCAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testing::{Op, op};
    use crate::strategy::{Balancer, LoadReport, Outcome};
    use crate::time::Nanos;

    #[test]
    fn fills_servers_in_order() {
        let mut b = Balancer::new(Box::new(First::new(Some(2))), &[1, 1, 1]);
        let p: Vec<usize> = (0..6).map(|_| b.route(Nanos(0), 0).unwrap()).collect();
        assert_eq!(p, vec![0, 0, 1, 1, 2, 2]);
        // A slot frees on server 1: it is refilled before anything else.
        b.complete(1, Nanos(1), Outcome::Ok, Nanos(1));
        assert_eq!(b.route(Nanos(1), 0), Some(1));
        // All full: the least loaded (all tie at 2: the first).
        assert_eq!(b.route(Nanos(1), 0), Some(0));
        b.set_up(0, false);
        b.complete(2, Nanos(1), Outcome::Ok, Nanos(1));
        assert_eq!(b.route(Nanos(1), 0), Some(2));
    }

    /// A step of the workout: an operation on the view, or a worker count reported.
    #[derive(Clone, Debug)]
    enum Step {
        Op(Op),
        Report(usize, u32),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::strategy::Strategy as _;
        proptest::prop_oneof![
            8 => op().prop_map(Step::Op),
            1 => (0usize..80, 0u32..4).prop_map(|(i, w)| Step::Report(i, w)),
        ]
    }

    /// Runs `steps` on the index and the scan over `n` backends; the picks of each.
    fn workout(
        n: usize,
        maxconn: Option<u32>,
        steps: &[Step],
    ) -> (Vec<Option<usize>>, Vec<Option<usize>>) {
        let (a, b, _) = workout_on(n, maxconn, 1, steps);
        (a, b)
    }

    /// [`workout`] on views of one of `balancers` balancers (dense or sparse views); also
    /// the most requests outstanding at once.
    fn workout_on(
        n: usize,
        maxconn: Option<u32>,
        balancers: usize,
        steps: &[Step],
    ) -> (Vec<Option<usize>>, Vec<Option<usize>>, usize) {
        let weights: std::sync::Arc<[u32]> = vec![1; n].into();
        let index = First {
            scan: false,
            ..First::new(maxconn)
        };
        let mut fast = Balancer::sharing(Box::new(index), weights.clone(), balancers);
        let mut slow = Balancer::sharing(Box::new(First::new(maxconn)), weights, balancers);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut out: Vec<usize> = Vec::new();
        let mut peak = 0;
        for s in steps {
            match *s {
                Step::Op(Op::Route) => {
                    let p = fast.route(Nanos(0), 0);
                    a.push(p);
                    b.push(slow.route(Nanos(0), 0));
                    // Complete what the scan routed, as the oracle.
                    out.extend(b.last().copied().flatten());
                    peak = peak.max(out.len());
                }
                Step::Op(Op::Complete(k, _, _)) if !out.is_empty() => {
                    let i = out.swap_remove(k % out.len());
                    fast.complete(i, Nanos(1), Outcome::Ok, Nanos(1));
                    slow.complete(i, Nanos(1), Outcome::Ok, Nanos(1));
                }
                Step::Op(Op::Complete(..)) => {}
                Step::Op(Op::SetUp(i, up)) => {
                    fast.set_up(i % n, up);
                    slow.set_up(i % n, up);
                }
                Step::Report(i, workers) => {
                    let r = LoadReport {
                        workers,
                        ..LoadReport::default()
                    };
                    fast.set_load(i % n, r);
                    slow.set_load(i % n, r);
                }
            }
        }
        (a, b, peak)
    }

    proptest::proptest! {
        /// The index picks what the scan picks, through routes, completions, servers going
        /// down and up, and worker counts reported (the default `maxconn`) or fixed.
        #[test]
        fn index_picks_what_the_scan_picks(
            n in 1usize..80,
            maxconn in proptest::option::of(1u32..4),
            steps in proptest::collection::vec(step(), 0..300),
        ) {
            let (fast, slow) = workout(n, maxconn, &steps);
            proptest::prop_assert_eq!(fast, slow);
        }
    }

    /// Long workouts over 300 and 5,000 servers (the free set's summary of two words),
    /// filling every slot and draining again, with worker counts reported now and then,
    /// on dense and sparse views: the index picks what the scan picks.
    #[test]
    fn long_runs_index_picks_what_the_scan_picks() {
        use rand::{RngExt, SeedableRng};
        let mut rng = crate::rng::SimRng::seed_from_u64(8);
        let cases = [
            (300, Some(2), 60, 1),
            (300, None, 60, 1_000),
            (5_000, Some(1), 72, 1),
            (5_000, None, 72, 1_000),
        ];
        for (n, maxconn, route_pct, balancers) in cases {
            let mut steps = Vec::new();
            for op in crate::strategy::testing::workout(&mut rng, route_pct, false) {
                steps.push(Step::Op(op));
                if rng.random_range(0..200) == 0 {
                    steps.push(Step::Report(rng.random_range(0..n), rng.random_range(1..4)));
                }
            }
            let (fast, slow, peak) = workout_on(n, maxconn, balancers, &steps);
            assert!(peak > n * maxconn.unwrap_or(1) as usize, "{n}: never full");
            let differ = fast.iter().zip(&slow).position(|(x, y)| x != y);
            assert_eq!(
                differ, None,
                "{n} servers, {maxconn:?}, {balancers} balancers"
            );
        }
    }

    /// More completions between two picks than there are servers: the index is built
    /// again at the next pick, and picks what the scan picks.
    #[test]
    fn many_completions_between_picks_rebuild_the_index() {
        let index = First {
            scan: false,
            ..First::new(Some(2))
        };
        let mut fast = Balancer::new(Box::new(index), &[1; 60]);
        let mut slow = Balancer::new(Box::new(First::new(Some(2))), &[1; 60]);
        let mut out = Vec::new();
        let mut both = |fast: &mut Balancer, slow: &mut Balancer, k: usize| {
            for _ in 0..k {
                let (x, y) = (fast.route(Nanos(0), 0), slow.route(Nanos(0), 0));
                assert_eq!(x, y);
                out.extend(x);
            }
            out.clone()
        };
        let routed = both(&mut fast, &mut slow, 150);
        for &i in routed.iter().step_by(2).chain(routed.iter().take(20)) {
            fast.complete(i, Nanos(1), Outcome::Ok, Nanos(1));
            slow.complete(i, Nanos(1), Outcome::Ok, Nanos(1));
        }
        both(&mut fast, &mut slow, 150);
    }

    /// A planted bug: an index deaf to changes of the view (never updated after its
    /// build). The same comparison as the property test tells it from the scan.
    #[test]
    fn the_comparison_catches_a_deaf_index() {
        struct Deaf(First);
        impl Strategy for Deaf {
            fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
                self.0.pick(backends, ctx)
            }
            fn indexes_view(&self) -> bool {
                true
            }
        }
        let index = First {
            scan: false,
            ..First::new(Some(1))
        };
        let mut deaf = Balancer::new(Box::new(Deaf(index)), &[1; 4]);
        let mut scan = Balancer::new(Box::new(First::new(Some(1))), &[1; 4]);
        let picks = |b: &mut Balancer| -> Vec<Option<usize>> {
            (0..3).map(|_| b.route(Nanos(0), 0)).collect()
        };
        assert_eq!(picks(&mut scan), vec![Some(0), Some(1), Some(2)]);
        assert_ne!(picks(&mut deaf), vec![Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn default_maxconn_is_the_reported_worker_count() {
        let mut b = Balancer::new(Box::new(First::new(None)), &[1, 1]);
        assert_eq!(b.route(Nanos(0), 0), Some(0));
        assert_eq!(b.route(Nanos(0), 0), Some(1));
        b.set_load(
            0,
            LoadReport {
                workers: 4,
                ..LoadReport::default()
            },
        );
        let p: Vec<usize> = (0..3).map(|_| b.route(Nanos(0), 0).unwrap()).collect();
        assert_eq!(p, vec![0, 0, 0]);
        for i in 0..2 {
            b.set_up(i, false);
        }
        assert_eq!(b.route(Nanos(0), 0), None);
    }
}
