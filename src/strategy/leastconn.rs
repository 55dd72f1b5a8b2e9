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

use super::SpecError;
use super::registry::{About, Kind, Knob, PickCost, Reads, Split, Ty};
use super::{Backend, PickContext, Strategy};
use crate::time::Nanos;

/// HAProxy `leastconn`.
#[derive(Debug, Default)]
pub struct Leastconn {
    weighted: bool,
    /// When each backend was last re-queued (its place among equal keys).
    queued_at: Vec<u64>,
    clock: u64,
}

impl Leastconn {
    /// `leastconn`; `weighted` uses the backends' weights (HAProxy always does; `false`
    /// models servers of weight 1).
    pub fn new(weighted: bool) -> Leastconn {
        Leastconn {
            weighted,
            queued_at: Vec::new(),
            clock: 0,
        }
    }

    fn requeue(&mut self, backend: usize) {
        if let Some(t) = self.queued_at.get_mut(backend) {
            self.clock += 1;
            *t = self.clock;
        }
    }
}

impl Strategy for Leastconn {
    fn pick(&mut self, backends: &[Backend], _ctx: &PickContext) -> Option<usize> {
        if self.queued_at.len() != backends.len() {
            // Queued in declaration order at start.
            self.queued_at = (0..backends.len() as u64).collect();
            self.clock = backends.len() as u64;
        }
        let weighted = self.weighted;
        let key = |b: &Backend| -> Option<u64> {
            let w = if weighted { u64::from(b.weight) } else { 1 };
            if !b.up || w == 0 {
                return None;
            }
            Some(match u64::from(b.in_flight) {
                0 => 0,
                n => (n + 1) * 256 / w,
            })
        };
        backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| key(b).map(|k| (k, self.queued_at[i], i)))
            .min()
            .map(|(_, _, i)| i)
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
    fn build(p: &LeastconnParams, _: usize, _: crate::rng::SimRng) -> Leastconn {
        Leastconn::new(p.weighted)
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
    use crate::strategy::{Balancer, Outcome};

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
