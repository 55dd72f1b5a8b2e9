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
//! a segment tree over the view ([`Strategy::on_view`]) keeping, per subtree, the least
//! `in_flight − slots` and the least `in_flight` of the up servers: the first server with
//! a free slot and the least loaded are each a descent, O(log n). Slots from load reports
//! are read into the tree again whenever the table's
//! [`crate::strategy::LoadTable::workers_epoch`] moves.

use super::SpecError;
use super::registry::{About, Kind, Knob, PickCost, Reads, Split, Ty};
use super::{Backend, Backends, PickContext, Strategy};

/// Up to this many backends the scan is as fast as the tree; both pick the same.
pub const SCAN_UP_TO: usize = 48;

/// HAProxy `first`.
#[derive(Debug, Default)]
pub struct First {
    maxconn: Option<u32>,
    /// Pick by scanning (small clusters) rather than from the tree.
    scan: bool,
    tree: Option<Tree>,
}

/// Per node, over the up servers below it: the least `in_flight − slots` and the least
/// `in_flight` (leaves of down servers hold the largest values, so never win).
#[derive(Debug)]
struct Tree {
    /// Leaves from `size` on, node `k`'s children at `2k` and `2k + 1`.
    free: Vec<i64>,
    least: Vec<u32>,
    size: usize,
    /// Each server's slots as last read, and the view's length.
    slots: Vec<u32>,
    n: usize,
    /// The load table's workers epoch the slots were read at (0 without a table).
    epoch: u64,
}

impl Tree {
    fn new(backends: &Backends, slots: Vec<u32>, epoch: u64) -> Tree {
        let n = backends.len();
        let size = n.next_power_of_two();
        let mut t = Tree {
            free: vec![i64::MAX; 2 * size],
            least: vec![u32::MAX; 2 * size],
            size,
            slots,
            n,
            epoch,
        };
        for (i, b) in backends.iter().enumerate() {
            t.set_leaf(i, &b);
        }
        for k in (1..size).rev() {
            t.pull(k);
        }
        t
    }

    #[inline]
    fn set_leaf(&mut self, i: usize, b: &Backend) {
        let k = self.size + i;
        (self.free[k], self.least[k]) = if b.up {
            (
                i64::from(b.in_flight) - i64::from(self.slots[i]),
                b.in_flight,
            )
        } else {
            (i64::MAX, u32::MAX)
        };
    }

    #[inline]
    fn pull(&mut self, k: usize) {
        self.free[k] = self.free[2 * k].min(self.free[2 * k + 1]);
        self.least[k] = self.least[2 * k].min(self.least[2 * k + 1]);
    }

    fn update(&mut self, i: usize, b: &Backend) {
        if i >= self.n {
            return;
        }
        self.set_leaf(i, b);
        let mut k = (self.size + i) / 2;
        while k >= 1 {
            self.pull(k);
            k /= 2;
        }
    }

    /// The first up server with a free slot, else the up server with the least in
    /// flight, lowest index on ties: what the scan picks.
    fn pick(&self) -> Option<usize> {
        let mut k = 1;
        if self.free[1] < 0 {
            while k < self.size {
                k = if self.free[2 * k] < 0 {
                    2 * k
                } else {
                    2 * k + 1
                };
            }
        } else {
            let least = self.least[1];
            if least == u32::MAX {
                return None;
            }
            while k < self.size {
                k = if self.least[2 * k] == least {
                    2 * k
                } else {
                    2 * k + 1
                };
            }
        }
        Some(k - self.size)
    }
}

impl First {
    /// `first` with a fixed `maxconn` per server, or per-server worker counts when `None`.
    /// Picks by scanning the view.
    pub fn new(maxconn: Option<u32>) -> First {
        First {
            maxconn,
            scan: true,
            tree: None,
        }
    }

    /// `first` over `n` backends: the scan up to [`SCAN_UP_TO`] backends, the tree
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

    /// The tree, rebuilt when the view's length or the table's workers epoch changed.
    fn tree(&mut self, backends: &Backends, ctx: &PickContext) -> &Tree {
        let epoch = match self.maxconn {
            Some(_) => 0,
            None => ctx.loads.map_or(0, |t| t.workers_epoch()),
        };
        let fresh = self
            .tree
            .as_ref()
            .is_some_and(|t| t.n == backends.len() && t.epoch == epoch);
        if !fresh {
            let slots = (0..backends.len()).map(|i| self.slots(i, ctx)).collect();
            self.tree = Some(Tree::new(backends, slots, epoch));
        }
        self.tree.as_ref().expect("built above")
    }

    /// HAProxy's scan.
    fn scan(&self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
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
}

impl Strategy for First {
    fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
        if self.scan {
            return self.scan(backends, ctx);
        }
        self.tree(backends, ctx).pick()
    }

    fn indexes_view(&self) -> bool {
        !self.scan
    }

    fn on_view(&mut self, backend: usize, view: &Backend) {
        if let Some(t) = &mut self.tree {
            t.update(backend, view);
        }
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

    /// Runs `steps` on a tree and a scan over `n` backends; the picks of each.
    fn workout(
        n: usize,
        maxconn: Option<u32>,
        steps: &[Step],
    ) -> (Vec<Option<usize>>, Vec<Option<usize>>) {
        let weights = vec![1; n];
        let tree = First {
            scan: false,
            ..First::new(maxconn)
        };
        let mut fast = Balancer::new(Box::new(tree), &weights);
        let mut slow = Balancer::new(Box::new(First::new(maxconn)), &weights);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut out: Vec<usize> = Vec::new();
        for s in steps {
            match *s {
                Step::Op(Op::Route) => {
                    let p = fast.route(Nanos(0), 0);
                    a.push(p);
                    b.push(slow.route(Nanos(0), 0));
                    // Complete what the scan routed, as the oracle.
                    out.extend(b.last().copied().flatten());
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
        (a, b)
    }

    proptest::proptest! {
        /// The tree picks what the scan picks, through routes, completions, servers going
        /// down and up, and worker counts reported (the default `maxconn`) or fixed.
        #[test]
        fn tree_picks_what_the_scan_picks(
            n in 1usize..80,
            maxconn in proptest::option::of(1u32..4),
            steps in proptest::collection::vec(step(), 0..300),
        ) {
            let (fast, slow) = workout(n, maxconn, &steps);
            proptest::prop_assert_eq!(fast, slow);
        }
    }

    /// A planted bug: a tree deaf to changes of the view (never updated after its
    /// build). The same comparison as the property test tells it from the scan.
    #[test]
    fn the_comparison_catches_a_deaf_tree() {
        struct Deaf(First);
        impl Strategy for Deaf {
            fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
                self.0.pick(backends, ctx)
            }
            fn indexes_view(&self) -> bool {
                true
            }
        }
        let tree = First {
            scan: false,
            ..First::new(Some(1))
        };
        let mut deaf = Balancer::new(Box::new(Deaf(tree)), &[1; 4]);
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
