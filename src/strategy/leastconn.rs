//! HAProxy `balance leastconn` (`lb_fwlc.c`, HAProxy 2.6): servers sit in a tree keyed by
//! `0` when idle, else `(in_flight + 1) × SRV_EWGHT_MAX / eweight` (with `eweight` =
//! 16 × weight and `SRV_EWGHT_MAX` = 4096, that is `(in_flight + 1) × 256 / weight`,
//! truncated); the first server of the smallest key wins. A server is re-queued — placed
//! after the servers of equal key — every time its count changes (a pick or a release),
//! so ties go to the server whose count changed longest ago (initially: declaration
//! order). Two differences from nginx's `least_conn` ([`super::LeastConnections`]): ties
//! are not broken by weighted round robin, and with weights the key is
//! `(in_flight + 1) / weight`, not `in_flight / weight`, while any idle server comes first.
//! With `weighted = false` every weight counts as 1.
//!
//! HAProxy walks an ebtree; the scan here finds the same server in O(n). Beyond
//! [`SCAN_UP_TO`] backends the picks come from an index of the view kept as it changes
//! ([`Strategy::on_view`]) — exactly the scan's picks, which the property tests check.
//! Servers of one key are ordered by when they were re-queued, and a re-queue always
//! files a server last among its key (the clock only grows): each key is a FIFO queue
//! with lazy deletion, the keys an ordered map (few distinct keys: in-flight counts).
//! A pick reads the front of the first queue, a dispatch or a completion moves one
//! server to the back of another: O(log k) for k distinct keys, O(1) amortised within
//! a key. Only a server coming back up is filed in the middle of its queue (by binary
//! search, O(queue)).
//!
//! Up to [`SCAN_UP_TO`] backends with weights the scan compares keys without dividing
//! (`Leastconn::scan_weighted`): 0.92× the CPU time of dividing by each backend's weight at
//! 10 servers of weights 1 to 4, 0.96× at equal weights (cost bench, 2026-11-28, helper
//! lcw). Tried, not kept: each backend's key cached with its count and weight (0.985×
//! weighted, 1.14× unweighted); the comparison with branches (0.97× weighted).

use std::collections::{BTreeMap, VecDeque};

use super::SpecError;
use super::registry::{About, Kind, Knob, PickCost, Reads, Split, Ty};
use super::{Backend, Backends, Entries, PickContext, Strategy};
use crate::time::Nanos;

/// Up to this many backends the scan is faster than the index (as for
/// [`super::LeastConnections`]); both pick the same.
pub const SCAN_UP_TO: usize = 48;

/// HAProxy `leastconn`.
#[derive(Debug, Default)]
pub struct Leastconn {
    weighted: bool,
    /// When each backend was last re-queued (its place among equal keys).
    queued_at: Vec<u64>,
    clock: u64,
    /// Pick by the scan (small clusters) rather than from the index.
    scan: bool,
    /// The index (built at the first pick when not scanning).
    index: Option<Queues>,
}

/// A backend's place in the tree: `None` when it cannot be picked (down, or weight 0),
/// else 0 when idle and `(in_flight + 1) × 256 / weight` otherwise.
fn key(weighted: bool, b: &Backend) -> Option<u64> {
    let w = if weighted { u64::from(b.weight) } else { 1 };
    if !b.up || w == 0 {
        return None;
    }
    Some(scaled_load(b) / w)
}

/// A backend's key before its division by the weight: 0 when idle, else
/// `(in_flight + 1) × 256` (`SRV_EWGHT_MAX` over 16 × weight, the 16 cancelled).
fn scaled_load(b: &Backend) -> u64 {
    match u64::from(b.in_flight) {
        0 => 0,
        n => (n + 1) * 256,
    }
}

/// Whether key `floor(x / w)` (`x` below 2^41, `w` above 0) is below `k`: `x < k · w`,
/// without the division (the product saturating: exact, as `x` is below `u64::MAX`).
fn below(x: u64, w: u64, k: u64) -> bool {
    x < k.saturating_mul(w)
}

impl Leastconn {
    /// `leastconn`; `weighted` uses the backends' weights (HAProxy always does; `false`
    /// models servers of weight 1). Picks from the index.
    pub fn new(weighted: bool) -> Leastconn {
        Leastconn {
            weighted,
            ..Default::default()
        }
    }

    /// `leastconn` over `n` backends: the scan up to `SCAN_UP_TO` backends, the index
    /// beyond. The same picks either way.
    pub fn for_backends(weighted: bool, n: usize) -> Leastconn {
        Leastconn {
            scan: n <= SCAN_UP_TO,
            ..Leastconn::new(weighted)
        }
    }

    fn requeue(&mut self, backend: usize) {
        if let Some(t) = self.queued_at.get_mut(backend) {
            self.clock += 1;
            *t = self.clock;
            if let Some(q) = &mut self.index {
                q.requeue(backend, self.clock);
            }
        }
    }
}

impl Leastconn {
    /// The scan: the least key, the least recently re-queued among equal keys.
    fn scan(&self, backends: &impl Entries) -> Option<usize> {
        if self.weighted {
            return self.scan_weighted(backends);
        }
        // The least (key, queued_at), the first such: keys stay below 2^40 and the clock
        // below u64::MAX, so (MAX, MAX) is above every backend's. Scalars, not a fold
        // over tuples: that one went through the stack (leastconn at 10 backends 26 ns
        // with `&[Backend]`, 44 with the fold).
        let mut best = (u64::MAX, u64::MAX);
        let mut chosen = None;
        for (i, b) in backends.iter().enumerate() {
            let Some(k) = key(false, &b) else {
                continue;
            };
            let at = (k, self.queued_at[i]);
            if at < best {
                best = at;
                chosen = Some(i);
            }
        }
        chosen
    }

    /// The scan with weights: the same picks, the keys compared without dividing.
    ///
    /// A backend's key `floor(x / w)` (`x` = `(in_flight + 1) × 256`, or 0 when idle) is
    /// compared with the best's `k` by multiplication, exactly: below it iff `x < k·w`,
    /// equal iff not and `x < (k + 1)·w`. The division is made only for a new best (a few
    /// times a scan, not once a backend: a 64-bit division a backend made the weighted
    /// scan at 10 backends 1.51× round robin against 1.27× without weights). Without
    /// branches there (`&`, `|`): with `&&` and `||` it gained nothing (0.97×).
    fn scan_weighted(&self, backends: &impl Entries) -> Option<usize> {
        let mut best = (u64::MAX, u64::MAX);
        let mut chosen = None;
        for (i, b) in backends.iter().enumerate() {
            let w = u64::from(b.weight);
            if !b.up || w == 0 {
                continue;
            }
            let t = self.queued_at[i];
            let x = scaled_load(&b);
            let better =
                below(x, w, best.0) | (below(x, w, best.0.saturating_add(1)) & (t < best.1));
            if better {
                best = (x / w, t);
                chosen = Some(i);
            }
        }
        chosen
    }
}

impl Strategy for Leastconn {
    fn pick(&mut self, backends: &Backends, _ctx: &PickContext) -> Option<usize> {
        if self.queued_at.len() != backends.len() {
            // Queued in declaration order at start.
            self.queued_at = (0..backends.len() as u64).collect();
            self.clock = backends.len() as u64;
            self.index = (!self.scan).then(|| Queues::new(backends, self.weighted));
        }
        if let Some(q) = &mut self.index {
            return q.pick();
        }
        match backends.dense() {
            Some(dense) => self.scan(&dense),
            None => self.scan(backends),
        }
    }

    fn indexes_view(&self) -> bool {
        !self.scan
    }

    fn on_view(&mut self, backend: usize, view: &Backend) {
        if let Some(q) = &mut self.index {
            q.update(backend, view);
        }
    }

    fn on_dispatch(&mut self, backend: usize, _now: Nanos) {
        self.requeue(backend);
    }

    fn on_complete(
        &mut self,
        backend: usize,
        _latency: Nanos,
        _outcome: super::Outcome,
        _now: Nanos,
    ) {
        self.requeue(backend);
    }
}

/// The servers of one key, by when they were re-queued: (queued at, backend,
/// generation); an entry is live while its backend's generation matches.
#[derive(Debug, Default)]
struct Fifo {
    live: usize,
    entries: VecDeque<(u64, u32, u32)>,
}

/// The pickable backends by (key, queued at): one FIFO per key in an ordered map.
#[derive(Debug)]
struct Queues {
    weighted: bool,
    /// The key each backend is filed under, if filed.
    filed: Vec<Option<u64>>,
    /// When each backend was re-queued (mirrors [`Leastconn::queued_at`]).
    queued_at: Vec<u64>,
    /// Bumped at every filing and unfiling: entries of older generations are dead.
    generation: Vec<u32>,
    /// Each backend's view as last told.
    view: Vec<Backend>,
    by_key: BTreeMap<u64, Fifo>,
    /// A backend whose view changed and whose re-queue is expected next (a dispatch or a
    /// completion): filed then, at the back, instead of twice.
    pending: Option<usize>,
}

impl Queues {
    fn new(backends: &Backends, weighted: bool) -> Queues {
        let n = backends.len();
        let mut q = Queues {
            weighted,
            filed: vec![None; n],
            queued_at: (0..n as u64).collect(),
            generation: vec![0; n],
            view: backends.to_vec(),
            by_key: BTreeMap::new(),
            pending: None,
        };
        for i in 0..n {
            q.file(i);
        }
        q
    }

    /// Files backend `i` under its key, in its place among that key's servers.
    fn file(&mut self, i: usize) {
        let Some(k) = key(self.weighted, &self.view[i]) else {
            return;
        };
        self.generation[i] = self.generation[i].wrapping_add(1);
        let entry = (self.queued_at[i], i as u32, self.generation[i]);
        let fifo = self.by_key.entry(k).or_default();
        if fifo.entries.back().is_none_or(|&(t, ..)| t < entry.0) {
            fifo.entries.push_back(entry);
        } else {
            // Back up after a while down: its place is among the others.
            let at = fifo.entries.partition_point(|&(t, ..)| t < entry.0);
            fifo.entries.insert(at, entry);
        }
        fifo.live += 1;
        if fifo.entries.len() > 2 * fifo.live + 32 {
            // Drop dead entries: memory stays within twice the members.
            let (filed, generation) = (&self.filed, &self.generation);
            fifo.entries.retain(|&(_, j, g)| {
                let j = j as usize;
                (j == i || filed[j] == Some(k)) && generation[j] == g
            });
        }
        self.filed[i] = Some(k);
    }

    /// Takes backend `i` out of its queue, if filed.
    fn unfile(&mut self, i: usize) {
        let Some(k) = self.filed[i].take() else {
            return;
        };
        self.generation[i] = self.generation[i].wrapping_add(1);
        if let Some(fifo) = self.by_key.get_mut(&k) {
            fifo.live -= 1;
            if fifo.live == 0 {
                self.by_key.remove(&k);
            }
        }
    }

    /// Files the pending backend, if any.
    fn flush(&mut self) {
        if let Some(j) = self.pending.take() {
            self.file(j);
        }
    }

    fn update(&mut self, i: usize, view: &Backend) {
        if i >= self.view.len() {
            return;
        }
        if self.pending != Some(i) {
            self.flush();
        }
        self.unfile(i);
        self.view[i] = *view;
        self.pending = Some(i);
    }

    fn requeue(&mut self, i: usize, at: u64) {
        if i >= self.view.len() {
            return;
        }
        if self.pending == Some(i) {
            self.pending = None;
        } else {
            self.flush();
            self.unfile(i);
        }
        self.queued_at[i] = at;
        self.file(i);
    }

    fn pick(&mut self) -> Option<usize> {
        self.flush();
        let (filed, generation) = (&self.filed, &self.generation);
        let (&k, fifo) = self.by_key.iter_mut().next()?;
        // The oldest live entry of the lowest key (there is one: `live` > 0).
        while let Some(&(_, j, g)) = fifo.entries.front() {
            let j = j as usize;
            if filed[j] == Some(k) && generation[j] == g {
                return Some(j);
            }
            fifo.entries.pop_front();
        }
        None
    }
}

/// Parameters of `kind = "leastconn"`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeastconnParams {
    /// Use the backends' weights; false counts every weight as 1. Default false.
    pub weighted: bool,
}

impl Kind for Leastconn {
    type Params = LeastconnParams;
    const ABOUT: About = About {
        kind: "leastconn",
        aliases: &[],
        follows: "HAProxy balance leastconn (idle first, then (conns+1)/weight; ties to the least recently re-queued)",
        knobs: &[Knob::new("weighted", Ty::Bool)],
        reads: Reads::NOTHING,
        split: Split::Dynamic,
    };
    fn validate(_: &LeastconnParams, _: usize) -> Result<(), SpecError> {
        Ok(())
    }
    fn build(p: &LeastconnParams, n: usize, _: crate::rng::SimRng) -> Leastconn {
        Leastconn::for_backends(p.weighted, n)
    }
    fn cost(_: &LeastconnParams) -> PickCost {
        PickCost::CONSTANT
    }
    fn reads(p: &LeastconnParams) -> Reads {
        Reads {
            weights: p.weighted,
            ..Reads::NOTHING
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testing::{Pair, index_agrees_with_scan, long_runs_agree, weights};
    use crate::strategy::{Balancer, Outcome};
    use proptest::prelude::*;

    /// The queues (`new`) and the scan (`for_backends` of 0 backends, which keeps none).
    fn index_and_scan(&weighted: &bool) -> Pair {
        (
            Box::new(Leastconn::new(weighted)),
            Box::new(Leastconn::for_backends(weighted, 0)),
        )
    }

    #[test]
    fn index_picks_what_the_scan_picks() {
        index_agrees_with_scan(any::<bool>(), weights(), index_and_scan);
    }

    /// A long random workout of a larger cluster: the queues compact many times and
    /// servers come back up into the middle of theirs.
    #[test]
    fn long_runs_pick_what_the_scan_picks() {
        use rand::RngExt;
        long_runs_agree(
            11,
            (52, false),
            &[(false, 200), (true, 200), (false, 60), (true, 1000)],
            |&(_, n), rng| (0..n).map(|_| rng.random_range(0..4)).collect(),
            |(weighted, _)| index_and_scan(weighted),
        );
    }

    /// `n` picks that stay in flight, as letters.
    fn picks(b: &mut Balancer, n: usize) -> String {
        (0..n)
            .map(|k| {
                let i = b.route(Nanos(k as u64), 0).expect("a backend is up");
                char::from(b'a' + i as u8)
            })
            .collect()
    }

    #[test]
    fn ties_go_to_the_least_recently_requeued_server() {
        // Nothing completes: every server gets one, then a second, in declaration order
        // (nginx's least_conn would go 0 1 2 2 1 0: smooth round robin among ties).
        let mut b = Balancer::new(Box::new(Leastconn::new(false)), &[1, 1, 1]);
        assert_eq!(picks(&mut b, 6), "abcabc");
    }

    #[test]
    fn a_release_makes_the_server_the_least_loaded_again() {
        let mut b = Balancer::new(Box::new(Leastconn::new(false)), &[1, 1, 1]);
        assert_eq!(picks(&mut b, 6), "abcabc");
        b.complete(1, Nanos(1), Outcome::Ok, Nanos(1));
        assert_eq!(b.route(Nanos(2), 0), Some(1));
        // All at 2 again; requeue order is now a, c, b.
        assert_eq!(picks(&mut b, 3), "acb");
    }

    #[test]
    fn weights_compare_in_flight_plus_one_and_idle_servers_come_first() {
        // Weights 3 and 1: the idle server of weight 1 is taken before the weight-3 one
        // gets a second connection; then (n+1)*256/w decides: 3*256/3 = 256 < 2*256/1.
        let mut b = Balancer::new(Box::new(Leastconn::new(true)), &[3, 1]);
        assert_eq!(picks(&mut b, 4), "abaa");
    }
}
