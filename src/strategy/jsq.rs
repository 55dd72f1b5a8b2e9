//! Join the shortest queue (JSQ; Winston 1977, the full-information baseline of the
//! supermarket model): scan every backend and send the request to the one with the fewest
//! requests. The count is the server's own report `load.in_system` (waiting + in service,
//! from every balancer) when one is present, else this balancer's `in_flight`. Ties are
//! broken uniformly at random (reservoir sampling over the tied backends).
//!
//! Reservoir sampling draws once per tied backend, in index order: with thousands of idle
//! servers that is thousands of draws per pick, and no index can reproduce those draws
//! without making them. The `indexed` variant keeps the up backends in buckets by queue
//! length, updated as the view changes ([`Strategy::on_view`]), and picks a uniform member
//! of the lowest bucket with one draw: O(1) per pick, dispatch and completion, the same
//! distribution, but other draws than the scan (so other numbers, within noise).

use rand::RngExt;

use super::SpecError;
use super::buckets::Buckets;
use super::registry::{About, Kind, Knob, PickCost, Reads, Split, Ty};
use super::{Backend, Backends, LoadReport, PickContext, Strategy};
use crate::rng::SimRng;

/// Join the shortest queue: full scan (default) or indexed.
#[derive(Debug)]
pub struct ShortestQueue {
    rng: SimRng,
    /// The indexed variant's up backends by in-flight count (built at its first pick
    /// without load reports).
    buckets: Option<Buckets>,
    indexed: bool,
}

impl ShortestQueue {
    /// JSQ with random tie-breaking driven by `rng`, full scan.
    pub fn new(rng: SimRng) -> ShortestQueue {
        ShortestQueue {
            rng,
            buckets: None,
            indexed: false,
        }
    }

    /// JSQ picking among tied backends with one draw from an index of the view.
    pub fn indexed(rng: SimRng) -> ShortestQueue {
        ShortestQueue {
            indexed: true,
            ..ShortestQueue::new(rng)
        }
    }

    /// The queue length JSQ compares: the server's report if any, else `in_flight`.
    #[inline]
    pub fn queue(b: &Backend, load: Option<LoadReport>) -> u32 {
        load.map_or(b.in_flight, |l| l.in_system)
    }

    /// One draw among `tied`.
    fn draw(&mut self, tied: &[u32]) -> usize {
        let k = match tied.len() {
            1 => 0,
            t => self.rng.random_range(0..t),
        };
        tied[k] as usize
    }
}

impl Strategy for ShortestQueue {
    fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
        if self.indexed {
            match ctx.loads {
                // The simulator's shared table, indexed by reported queue length (servers
                // not yet reported count as empty).
                Some(t) if t.has_queue_index() => {
                    let tied = t.shortest()?;
                    return Some(self.draw(tied));
                }
                // No reports: this balancer's in-flight counts, indexed here.
                None => {
                    let b = match self.buckets.take() {
                        Some(b) if b.len() == backends.len() => b,
                        _ => {
                            let mut b = Buckets::new(backends.len());
                            for (i, x) in backends.iter().enumerate() {
                                b.set(i, x.up, x.in_flight);
                            }
                            b
                        }
                    };
                    let picked = b.lowest().map(|tied| self.draw(tied));
                    self.buckets = Some(b);
                    return picked;
                }
                // Reports without an index (given to this balancer alone): scan.
                Some(_) => {}
            }
        }
        let mut best: Option<usize> = None;
        let mut best_q = u32::MAX;
        let mut ties = 0u32;
        for (i, b) in backends.iter().enumerate() {
            if !b.up {
                continue;
            }
            let q = Self::queue(&b, ctx.load(i));
            if q < best_q || best.is_none() {
                best = Some(i);
                best_q = q;
                ties = 1;
            } else if q == best_q {
                ties += 1;
                if self.rng.random_range(0..ties) == 0 {
                    best = Some(i);
                }
            }
        }
        best
    }

    fn indexes_view(&self) -> bool {
        self.indexed
    }

    fn on_view(&mut self, backend: usize, view: &Backend) {
        if let Some(b) = &mut self.buckets
            && backend < b.len()
        {
            b.set(backend, view.up, view.in_flight);
        }
    }
}

/// Parameters of `kind = "jsq"`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JsqParams {
    /// Pick among tied backends with one draw from an index of the queues kept as the
    /// view changes (O(1) per pick), rather than by reservoir sampling over a full scan
    /// (the default). Same distribution, other draws. Default false.
    pub indexed: bool,
}

impl Kind for ShortestQueue {
    type Params = JsqParams;
    const ABOUT: About = About {
        kind: "jsq",
        aliases: &[],
        follows: "join the shortest queue: full scan of server-reported queue (else in flight), random ties (indexed: O(1) picks, other draws)",
        knobs: &[Knob::new("indexed", Ty::Bool)],
        reads: Reads::LOAD_REPORTS,
        split: Split::Dynamic,
    };
    fn validate(_: &JsqParams, _: usize) -> Result<(), SpecError> {
        Ok(())
    }
    fn build(p: &JsqParams, _: usize, rng: SimRng) -> ShortestQueue {
        if p.indexed {
            ShortestQueue::indexed(rng)
        } else {
            ShortestQueue::new(rng)
        }
    }
    fn cost(_: &JsqParams) -> PickCost {
        PickCost::SCAN
    }
    fn reads(p: &JsqParams) -> Reads {
        Reads {
            indexed_reports: p.indexed,
            ..Reads::LOAD_REPORTS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Stream, stream_rng};
    use crate::strategy::testing::{Op, counts, op};
    use crate::strategy::{Balancer, LoadReport, Outcome};
    use crate::time::Nanos;
    use proptest::prelude::*;

    /// One backend busy, three tied at 0: the busy one is never picked and the tie is
    /// split evenly. Binomial(30000, 1/3): sd 81.6, so ±410 is 5 sd.
    fn check_ties_uniform(strategy: ShortestQueue) {
        let mut b = Balancer::new(Box::new(strategy), &[1, 1, 1, 1]);
        b.route(Nanos(0), 0).unwrap();
        let busy = b.backends().iter().position(|x| x.in_flight == 1).unwrap();
        let mut p = Vec::new();
        for _ in 0..30_000 {
            let i = b.route(Nanos(0), 0).unwrap();
            b.complete(i, Nanos(1), crate::strategy::Outcome::Ok, Nanos(0));
            p.push(i);
        }
        let c = counts(&p, 4);
        assert_eq!(c[busy], 0);
        for (i, &k) in c.iter().enumerate() {
            if i != busy {
                assert!((k as f64 - 10_000.0).abs() < 410.0, "{c:?}");
            }
        }
    }

    #[test]
    fn picks_shortest_and_breaks_ties_uniformly() {
        check_ties_uniform(ShortestQueue::new(stream_rng(1, 0, Stream::Strategy, 0)));
    }

    #[test]
    fn indexed_picks_shortest_and_breaks_ties_uniformly() {
        check_ties_uniform(ShortestQueue::indexed(stream_rng(
            1,
            0,
            Stream::Strategy,
            0,
        )));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Indexed JSQ picks a backend of the lowest queue among those up, as the scan
        /// does (which of the tied ones differs: other draws).
        #[test]
        fn indexed_picks_a_shortest_queue(
            n in 1usize..12,
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let rng = stream_rng(1, 0, Stream::Strategy, 0);
            let mut b = Balancer::new(Box::new(ShortestQueue::indexed(rng)), &vec![1; n]);
            let mut outstanding = Vec::new();
            for (t, op) in ops.iter().enumerate() {
                let now = Nanos(t as u64);
                match *op {
                    Op::Route => {
                        let lowest = b
                            .backends()
                            .iter()
                            .filter(|x| x.up)
                            .map(|x| x.in_flight)
                            .min();
                        let got = b.route(now, 0);
                        prop_assert_eq!(got.is_some(), lowest.is_some());
                        if let Some(i) = got {
                            let view = b.backends().at(i);
                            prop_assert!(view.up);
                            prop_assert_eq!(Some(view.in_flight - 1), lowest);
                            outstanding.push(i);
                        }
                    }
                    Op::Complete(k, ..) if !outstanding.is_empty() => {
                        let i = outstanding.swap_remove(k % outstanding.len());
                        b.complete(i, Nanos(1), Outcome::Ok, now);
                    }
                    Op::Complete(..) => {}
                    Op::SetUp(i, up) => b.set_up(i % n, up),
                }
            }
        }
    }

    #[test]
    fn prefers_the_server_report() {
        let rng = stream_rng(1, 0, Stream::Strategy, 0);
        let mut b = Balancer::new(Box::new(ShortestQueue::new(rng)), &[1, 1]);
        let report = |q| LoadReport {
            in_system: q,
            ..LoadReport::default()
        };
        b.set_load(0, report(5));
        b.set_load(1, report(2));
        assert_eq!(b.route(Nanos(0), 0), Some(1));
        b.set_up(1, false);
        assert_eq!(b.route(Nanos(0), 0), Some(0));
        b.set_up(0, false);
        assert_eq!(b.route(Nanos(0), 0), None);
    }
}
