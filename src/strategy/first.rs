//! HAProxy `balance first`: servers are taken in order (HAProxy orders them by id; here by
//! index) and a request goes to the first up server with a free connection slot,
//! `in_flight < maxconn`, so traffic fills server 0, then 1, and leaves the rest idle
//! (to be powered down). `maxconn` is a strategy parameter; absent, each server's worker
//! count from its load report is used (one slot per worker, the usual HAProxy setting for
//! thread-per-request Thrift servers), or 1 before its first report. When every server is
//! full HAProxy queues the request in the backend until a slot frees; a balancer here must
//! choose at once, so it takes the up server with the fewest in flight (lowest index on
//! ties) — the one that would free a slot first under equal service rates.

use super::SpecError;
use super::registry::{About, Kind, Knob, PickCost, Reads, Split, Ty};
use super::{Backend, PickContext, Strategy};

/// HAProxy `first`.
#[derive(Debug, Default)]
pub struct First {
    maxconn: Option<u32>,
}

impl First {
    /// `first` with a fixed `maxconn` per server, or per-server worker counts when `None`.
    pub fn new(maxconn: Option<u32>) -> First {
        First { maxconn }
    }

    fn slots(&self, i: usize, ctx: &PickContext<'_>) -> u32 {
        self.maxconn
            .unwrap_or_else(|| ctx.load(i).map_or(1, |l| l.workers.max(1)))
    }
}

impl Strategy for First {
    fn pick(&mut self, backends: &[Backend], ctx: &PickContext) -> Option<usize> {
        let mut least: Option<usize> = None;
        for (i, b) in backends.iter().enumerate() {
            if !b.up {
                continue;
            }
            if b.in_flight < self.slots(i, ctx) {
                return Some(i);
            }
            if least.is_none_or(|j| b.in_flight < backends[j].in_flight) {
                least = Some(i);
            }
        }
        least
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
    fn build(p: &FirstParams, _: usize, _: crate::rng::SimRng) -> First {
        First::new(p.maxconn)
    }
    fn cost(_: &FirstParams) -> PickCost {
        PickCost::SCAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
