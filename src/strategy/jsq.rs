//! Join the shortest queue (JSQ; Winston 1977, the full-information baseline of the
//! supermarket model): scan every backend and send the request to the one with the fewest
//! requests. The count is the server's own report `load.in_system` (waiting + in service,
//! from every balancer) when one is present, else this balancer's `in_flight`. Ties are
//! broken uniformly at random (reservoir sampling over the tied backends).

use rand::RngExt;

use super::{Backend, PickContext, Strategy};
use crate::rng::SimRng;

/// Join the shortest queue, full scan.
#[derive(Debug)]
pub struct ShortestQueue {
    rng: SimRng,
}

impl ShortestQueue {
    /// JSQ with random tie-breaking driven by `rng`.
    pub fn new(rng: SimRng) -> ShortestQueue {
        ShortestQueue { rng }
    }

    /// The queue length JSQ compares.
    #[inline]
    pub fn queue(b: &Backend) -> u32 {
        b.load.map_or(b.in_flight, |l| l.in_system)
    }
}

impl Strategy for ShortestQueue {
    fn pick(&mut self, backends: &[Backend], _ctx: &PickContext) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut best_q = u32::MAX;
        let mut ties = 0u32;
        for (i, b) in backends.iter().enumerate() {
            if !b.up {
                continue;
            }
            let q = Self::queue(b);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Stream, stream_rng};
    use crate::strategy::testing::counts;
    use crate::strategy::{Balancer, LoadReport};
    use crate::time::Nanos;

    #[test]
    fn picks_shortest_and_breaks_ties_uniformly() {
        let rng = stream_rng(1, 0, Stream::Strategy, 0);
        let mut b = Balancer::new(Box::new(ShortestQueue::new(rng)), &[1, 1, 1, 1]);
        b.route(Nanos(0), 0).unwrap();
        // One backend has 1 in flight; the others tie at 0.
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
