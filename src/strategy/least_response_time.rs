//! Least response time, after NGINX Plus `least_time` (which picks "the lowest average
//! response time and least number of active connections"; its exact formula is not
//! published). The variant here, stated exactly: each backend keeps an exponentially
//! weighted moving average of the latencies of its successful requests, `ewma ← ewma +
//! alpha × (latency − ewma)` (`alpha` default 0.1, the first sample taken as is); the cost
//! is `ewma × (in_flight + 1)` and the full scan picks the lowest. A backend with no sample
//! yet costs 0 (it is tried first, as a new NGINX Plus peer); ties go to the lowest index
//! after the last pick (round robin among equals).

use super::{Backend, Outcome, PickContext, Strategy};
use crate::time::Nanos;

/// Least response time (EWMA latency × (in flight + 1)), full scan.
#[derive(Debug)]
pub struct LeastResponseTime {
    alpha: f64,
    ewma: Vec<Option<f64>>,
    next: usize,
}

impl LeastResponseTime {
    /// Least response time with smoothing factor `alpha` in (0, 1].
    pub fn new(alpha: f64) -> LeastResponseTime {
        LeastResponseTime {
            alpha,
            ewma: Vec::new(),
            next: 0,
        }
    }

    fn cost(&self, i: usize, b: &Backend) -> f64 {
        self.ewma.get(i).copied().flatten().unwrap_or(0.0) * f64::from(b.in_flight + 1)
    }
}

impl Strategy for LeastResponseTime {
    fn pick(&mut self, backends: &[Backend], _ctx: &PickContext) -> Option<usize> {
        let n = backends.len();
        let mut best: Option<(usize, f64)> = None;
        for k in 0..n {
            let i = (self.next + k) % n;
            let b = &backends[i];
            if !b.up {
                continue;
            }
            let c = self.cost(i, b);
            if best.is_none_or(|(_, bc)| c < bc) {
                best = Some((i, c));
            }
        }
        let (i, _) = best?;
        self.next = i + 1;
        Some(i)
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Balancer;
    use crate::strategy::testing::picks;

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
