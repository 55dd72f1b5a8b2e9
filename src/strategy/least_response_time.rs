//! Least response time, after NGINX Plus `least_time` (which picks "the lowest average
//! response time and least number of active connections"; its exact formula is not
//! published). The variant here, stated exactly: each backend keeps an exponentially
//! weighted moving average of the latencies of its successful requests, `ewma ← ewma +
//! alpha × (latency − ewma)` (`alpha` default 0.1, the first sample taken as is); the cost
//! is `ewma × (in_flight + 1)` and the full scan picks the lowest. A backend with no sample
//! yet costs 0 (it is tried first, as a new NGINX Plus peer); ties go to the lowest index
//! after the last pick (round robin among equals).
//!
//! The picks are those of the full scan, exactly, but come from an index of the view kept
//! as it changes ([`Strategy::on_view`]): a tree of minima of the costs over the backends
//! (`min_tree.rs`: four children a node, down backends absent, each node with the first
//! and last backend under it at its cost), so that a pick reads the root when one backend
//! alone has the lowest cost, and walks the tree for "the first backend at that cost from
//! the last pick on" when several tie. A dispatch or a completion refiles one backend,
//! O(log n), with no allocation. The scan is kept in the tests as the oracle.

mod min_tree;

use min_tree::{ABSENT, MinTree};

use super::SpecError;
use super::registry::{About, Kind, Knob, PickCost, Reads, Split, Ty};
use super::{Backend, Backends, Entries, Outcome, PickContext, Strategy};
use crate::time::Nanos;

/// Least response time (EWMA latency × (in flight + 1)).
#[derive(Debug)]
pub struct LeastResponseTime {
    alpha: f64,
    ewma: Vec<Option<f64>>,
    next: usize,
    /// Pick by the full scan (small clusters) rather than from the index.
    scan: bool,
    index: Option<CostIndex>,
}

/// Up to this many backends the scan is faster than the index; both pick the same.
/// Measured with `benches/cost.rs` (CPU time per request of the whole simulation, index
/// over scan, medians of 7 alternating pairs): 1.16x at 2 backends, 1.04x at 4, 1.02x at
/// 6, 0.95x at 8, 0.92x at 10, 0.77x at 32, 0.74x at 48, 0.65x at 100.
pub const SCAN_UP_TO: usize = 6;

/// The backends' costs in a [`MinTree`]: position `i` holds backend `i`'s cost key
/// ([`cost_key`], [`ABSENT`] when down).
#[derive(Debug)]
struct CostIndex {
    flight: Vec<u32>,
    up: Vec<bool>,
    tree: MinTree,
    /// A backend whose view changed, refiled at the next event (a completion changes the
    /// view and then the EWMA: one refiling instead of two).
    pending: Option<usize>,
}

impl CostIndex {
    fn new(backends: &Backends, ewma: &[Option<f64>]) -> CostIndex {
        let mut tree = MinTree::new(backends.len());
        for (i, b) in backends.iter().enumerate() {
            if b.up {
                tree.set(i, cost_key(LeastResponseTime::cost(ewma, i, b.in_flight)));
            }
        }
        CostIndex {
            flight: backends.iter().map(|b| b.in_flight).collect(),
            up: backends.iter().map(|b| b.up).collect(),
            tree,
            pending: None,
        }
    }

    /// Sets backend `i`'s cost from its state.
    fn refile(&mut self, i: usize, ewma: &[Option<f64>]) {
        let key = if self.up[i] {
            cost_key(LeastResponseTime::cost(ewma, i, self.flight[i]))
        } else {
            ABSENT
        };
        self.tree.set(i, key);
    }

    /// Refiles the pending backend, if any.
    fn flush(&mut self, ewma: &[Option<f64>]) {
        if let Some(i) = self.pending.take() {
            self.refile(i, ewma);
        }
    }

    /// The first backend at the lowest cost from `next` on, wrapping; `None` if all are
    /// down.
    fn pick(&self, next: usize) -> Option<usize> {
        self.tree.first_least_from(next)
    }
}

/// A non-negative cost as an integer of the same order (`0.0` and `-0.0` alike), below
/// [`ABSENT`] (no finite cost maps to it).
fn cost_key(cost: f64) -> u64 {
    if cost == 0.0 {
        0
    } else {
        let bits = cost.to_bits();
        // The usual total order of IEEE doubles, exact for every non-NaN value.
        if bits >> 63 == 1 {
            !bits
        } else {
            bits | (1 << 63)
        }
    }
}

impl LeastResponseTime {
    /// Least response time with smoothing factor `alpha` in (0, 1].
    pub fn new(alpha: f64) -> LeastResponseTime {
        LeastResponseTime {
            alpha,
            ewma: Vec::new(),
            next: 0,
            scan: false,
            index: None,
        }
    }

    /// Least response time over `n` backends: the scan up to `SCAN_UP_TO` backends,
    /// the index beyond. The same picks either way.
    pub fn for_backends(alpha: f64, n: usize) -> LeastResponseTime {
        LeastResponseTime {
            scan: n <= SCAN_UP_TO,
            ..LeastResponseTime::new(alpha)
        }
    }

    /// The full scan from the last pick on, over a dense view's slices when it has them.
    fn scan(&mut self, backends: &Backends) -> Option<usize> {
        match backends.dense() {
            Some(dense) => self.scan_entries(&dense),
            None => self.scan_entries(backends),
        }
    }

    /// The full scan from the last pick on.
    fn scan_entries(&mut self, backends: &impl Entries) -> Option<usize> {
        let n = backends.len();
        let mut best: Option<(usize, f64)> = None;
        for k in 0..n {
            let i = (self.next + k) % n;
            let b = backends.at(i);
            if !b.up {
                continue;
            }
            let c = Self::cost(&self.ewma, i, b.in_flight);
            if best.is_none_or(|(_, bc)| c < bc) {
                best = Some((i, c));
            }
        }
        let (i, _) = best?;
        self.next = i + 1;
        Some(i)
    }

    fn cost(ewma: &[Option<f64>], i: usize, in_flight: u32) -> f64 {
        ewma.get(i).copied().flatten().unwrap_or(0.0) * f64::from(in_flight + 1)
    }
}

impl Strategy for LeastResponseTime {
    fn pick(&mut self, backends: &Backends, _ctx: &PickContext) -> Option<usize> {
        if self.scan {
            return self.scan(backends);
        }
        let index = match &mut self.index {
            Some(index) if index.up.len() == backends.len() => index,
            stale => stale.insert(CostIndex::new(backends, &self.ewma)),
        };
        index.flush(&self.ewma);
        let i = index.pick(self.next)?;
        self.next = i + 1;
        Some(i)
    }

    fn indexes_view(&self) -> bool {
        !self.scan
    }

    fn on_view(&mut self, backend: usize, view: &Backend) {
        if let Some(index) = &mut self.index
            && backend < index.up.len()
        {
            if index.pending != Some(backend) {
                index.flush(&self.ewma);
            }
            index.flight[backend] = view.in_flight;
            index.up[backend] = view.up;
            index.pending = Some(backend);
        }
    }

    fn on_complete(&mut self, backend: usize, latency: Nanos, outcome: Outcome, _now: Nanos) {
        if outcome != Outcome::Ok {
            return;
        }
        if backend >= self.ewma.len() {
            self.ewma.resize(backend + 1, None);
        }
        let x = latency.0 as f64;
        let e = &mut self.ewma[backend];
        *e = Some(match *e {
            None => x,
            Some(v) => v + self.alpha * (x - v),
        });
        if let Some(index) = &mut self.index
            && backend < index.up.len()
        {
            if index.pending != Some(backend) {
                index.flush(&self.ewma);
            }
            index.pending = Some(backend);
        }
    }
}

/// Parameters of `kind = "least_response_time"`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeastResponseTimeParams {
    /// EWMA smoothing factor of latencies, in (0, 1]. Default 0.1.
    pub alpha: f64,
}

impl Default for LeastResponseTimeParams {
    fn default() -> LeastResponseTimeParams {
        LeastResponseTimeParams { alpha: 0.1 }
    }
}

impl Kind for LeastResponseTime {
    type Params = LeastResponseTimeParams;
    const ABOUT: About = About {
        kind: "least_response_time",
        aliases: &[],
        follows: "NGINX Plus least_time-like: lowest EWMA latency x (in flight + 1), the full scan's picks (from a tree of minima over 7 backends or more)",
        knobs: &[
            Knob::new("alpha", Ty::Float).meaning("EWMA weight of each new latency, in (0, 1]")
        ],
        reads: Reads::NOTHING,
        split: Split::Dynamic,
    };
    fn validate(p: &LeastResponseTimeParams, _: usize) -> Result<(), SpecError> {
        if !(p.alpha > 0.0 && p.alpha <= 1.0) {
            return Err(SpecError::new(
                "alpha",
                format!("is {}", p.alpha),
                "use a smoothing factor in (0, 1], e.g. 0.1",
            ));
        }
        Ok(())
    }
    fn build(p: &LeastResponseTimeParams, n: usize, _: crate::rng::SimRng) -> LeastResponseTime {
        LeastResponseTime::for_backends(p.alpha, n)
    }
    fn cost(_: &LeastResponseTimeParams) -> PickCost {
        // The index above a few backends: O(log n) a pick, mostly a read of the root.
        PickCost::CONSTANT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Balancer;
    use crate::strategy::testing::{Pair, index_agrees_with_scan, long_runs_agree, picks};
    use proptest::prelude::*;
    use proptest::strategy::Strategy as _;

    /// The tree (`new`) and the scan (`for_backends` of 0 backends, which keeps none).
    fn index_and_scan(&alpha: &f64) -> Pair {
        (
            Box::new(LeastResponseTime::new(alpha)),
            Box::new(LeastResponseTime::for_backends(alpha, 0)),
        )
    }

    #[test]
    fn index_picks_what_the_scan_picks() {
        let alpha = prop_oneof![Just(1.0), Just(0.5), 0.01f64..1.0];
        let equal = (1usize..12).prop_map(|n| vec![1; n]);
        index_agrees_with_scan(alpha, equal, index_and_scan);
    }

    /// A long random workout of larger clusters (deeper trees, padded leaves, many ties
    /// among unsampled and among equal latencies).
    #[test]
    fn long_runs_pick_what_the_scan_picks() {
        long_runs_agree(
            5,
            (52, true),
            &[(0.1, 1000), (1.0, 200), (0.5, 37), (0.3, 1)],
            |&(_, n), _| vec![1; n],
            |(alpha, _)| index_and_scan(alpha),
        );
    }

    #[test]
    fn unsampled_first_then_fastest() {
        let mut b = Balancer::new(Box::new(LeastResponseTime::new(0.5)), &[1, 1, 1]);
        assert_eq!(picks(&mut b, 3), vec![0, 1, 2]);
        b.complete(0, Nanos(10), Outcome::Ok, Nanos(0));
        b.complete(1, Nanos(3), Outcome::Ok, Nanos(0));
        b.complete(2, Nanos(5), Outcome::Ok, Nanos(0));
        // EWMAs (alpha 0.5 over the 1 ns samples of `picks`): 5.5, 2, 3.
        let i = b.route(Nanos(0), 0).unwrap();
        assert_eq!(i, 1);
        // Backend 1 now has one in flight: cost 4 > 3, so backend 2 is next.
        assert_eq!(b.route(Nanos(0), 0), Some(2));
        b.set_up(1, false);
        b.set_up(2, false);
        assert_eq!(b.route(Nanos(0), 0), Some(0));
    }
}
