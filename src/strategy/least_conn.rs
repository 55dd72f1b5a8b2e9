//! Least connections, as nginx's `least_conn`: the backend with the fewest requests in
//! flight wins; in the weighted variant the comparison is `in_flight / weight` (nginx
//! compares `conns * best.weight < best.conns * weight`). Ties are broken by smooth
//! weighted round robin among the tied backends, as nginx does — with equal weights that is
//! plain round robin.

use super::{Backend, PickContext, Strategy};

/// nginx `least_conn`, optionally weighted.
#[derive(Debug, Default)]
pub struct LeastConnections {
    weighted: bool,
    current: Vec<i64>,
}

impl LeastConnections {
    /// Least connections; `weighted` compares `in_flight / weight`.
    pub fn new(weighted: bool) -> LeastConnections {
        LeastConnections {
            weighted,
            current: Vec::new(),
        }
    }
}

impl Strategy for LeastConnections {
    fn pick(&mut self, backends: &[Backend], _ctx: &PickContext) -> Option<usize> {
        let weighted = self.weighted;
        let wt = |b: &Backend| if weighted { u64::from(b.weight) } else { 1 };
        // Pass 1: the best ratio in_flight / weight, by cross-multiplication (exact, as
        // nginx compares `conns * best.weight < best.conns * weight`).
        let mut best: Option<(u64, u64)> = None;
        for b in backends {
            let w = wt(b);
            if !b.up || w == 0 {
                continue;
            }
            let c = u64::from(b.in_flight);
            if best.is_none_or(|(bc, bw)| c * bw < bc * w) {
                best = Some((c, w));
            }
        }
        let (cj, wj) = best?;
        // Pass 2: smooth weighted round robin among the backends tied at that ratio.
        if self.current.len() != backends.len() {
            self.current.resize(backends.len(), 0);
        }
        let mut total = 0i64;
        let mut chosen: Option<usize> = None;
        for (i, b) in backends.iter().enumerate() {
            let w = wt(b);
            if !b.up || w == 0 || u64::from(b.in_flight) * wj != cj * w {
                continue;
            }
            self.current[i] += w as i64;
            total += w as i64;
            if chosen.is_none_or(|k| self.current[i] > self.current[k]) {
                chosen = Some(i);
            }
        }
        let i = chosen?;
        self.current[i] -= total;
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{Balancer, Outcome};
    use crate::time::Nanos;

    #[test]
    fn picks_fewest_in_flight() {
        let mut b = Balancer::new(Box::new(LeastConnections::new(false)), &[1, 1, 1]);
        // Three requests outstanding spread one each, then complete backend 1's.
        let a = b.route(Nanos(0), 0).unwrap();
        let c = b.route(Nanos(0), 0).unwrap();
        let d = b.route(Nanos(0), 0).unwrap();
        let mut got = vec![a, c, d];
        got.sort();
        assert_eq!(got, vec![0, 1, 2]);
        b.complete(1, Nanos(5), Outcome::Ok, Nanos(5));
        assert_eq!(b.route(Nanos(6), 0), Some(1));
    }

    #[test]
    fn ties_are_broken_round_robin() {
        let mut b = Balancer::new(Box::new(LeastConnections::new(false)), &[1, 1, 1]);
        let seq = crate::strategy::testing::picks(&mut b, 6);
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weighted_compares_in_flight_over_weight() {
        let mut b = Balancer::new(Box::new(LeastConnections::new(true)), &[3, 1]);
        // Keep everything in flight: the 3-weight backend should take 3 of every 4.
        let picks: Vec<usize> = (0..8).map(|_| b.route(Nanos(0), 0).unwrap()).collect();
        let zero = picks.iter().filter(|&&i| i == 0).count();
        assert_eq!(zero, 6, "{picks:?}");
    }
}
