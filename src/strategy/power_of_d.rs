//! Power of d choices, least loaded: draw `d` backends at random and send the request to
//! the least loaded of them (Mitzenmacher 2001, "The power of two choices in randomized
//! load balancing").
//!
//! Sampling without replacement follows Finagle (`Balancers.p2c`), tower
//! (`balance::p2c`, two *distinct* indices) and Linkerd; with replacement follows Envoy
//! (`LEAST_REQUEST` draws `choice_count` hosts independently) and gRPC. The load is this
//! balancer's in-flight count unless another [`Load`] measure is plugged in (peak EWMA).
//! Ties go to the candidate drawn first, that is at random.

use super::SpecError;
use super::load::{Load, PendingRequests};
use super::registry::{About, Kind, Knob, PickCost, Reads, Scanned, Split, Ty};
use super::sample::{Sampler, least_cost};
use super::{Backend, Backends, Outcome, PickContext, Strategy};
use crate::rng::SimRng;
use crate::time::Nanos;

/// Power of d choices over a load measure `L`.
#[derive(Debug)]
pub struct PowerOfD<L = PendingRequests> {
    sampler: Sampler,
    load: L,
    rng: SimRng,
}

impl PowerOfD<PendingRequests> {
    /// `d` choices by in-flight requests, with or without replacement.
    pub fn new(d: usize, replacement: bool, rng: SimRng) -> PowerOfD {
        PowerOfD::with_load(d, replacement, PendingRequests, rng)
    }
}

impl<L: Load> PowerOfD<L> {
    /// `d` choices over the load measure `load`.
    pub fn with_load(d: usize, replacement: bool, load: L, rng: SimRng) -> PowerOfD<L> {
        PowerOfD {
            sampler: Sampler::new(d, replacement),
            load,
            rng,
        }
    }

    /// The load measure.
    pub fn load(&self) -> &L {
        &self.load
    }
}

impl<L: Load> Strategy for PowerOfD<L> {
    #[inline]
    fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
        let candidates = self.sampler.draw(backends, &mut self.rng);
        let load = &mut self.load;
        least_cost(candidates, |i| load.cost(i, backends, ctx.now))
    }

    fn on_dispatch(&mut self, backend: usize, now: Nanos) {
        self.load.on_dispatch(backend, now);
    }

    fn indexes_view(&self) -> bool {
        // A large `d` keeps the list of backends up between picks (an O(n) scan each
        // pick otherwise): it must hear of every backend going up or down.
        self.sampler.keeps_list()
    }

    fn indexes_in_flight(&self) -> bool {
        false
    }

    fn on_view(&mut self, _backend: usize, _view: &Backend) {
        self.sampler.told();
    }

    fn on_complete(&mut self, backend: usize, latency: Nanos, outcome: Outcome, now: Nanos) {
        self.load.on_complete(backend, latency, outcome, now);
    }
}

/// Parameters of `kind = "power_of_d"`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PowerOfDParams {
    /// Candidates per pick (1 ≤ d ≤ backends). Default 2.
    pub d: usize,
    /// Draw candidates with replacement (Envoy, gRPC) rather than distinct (Finagle,
    /// tower, Linkerd). Default false.
    pub replacement: bool,
}

impl Default for PowerOfDParams {
    fn default() -> PowerOfDParams {
        PowerOfDParams {
            d: 2,
            replacement: false,
        }
    }
}

impl Kind for PowerOfD {
    type Params = PowerOfDParams;
    const ABOUT: About = About {
        kind: "power_of_d",
        aliases: &[],
        follows: "power of d choices, fewest in flight: Finagle/tower/Linkerd (distinct), Envoy/gRPC (replacement)",
        knobs: &[
            Knob::new("d", Ty::Int).meaning("backends sampled"),
            Knob::new("replacement", Ty::Bool),
        ],
        reads: Reads::NOTHING,
        split: Split::Dynamic,
    };
    fn validate(p: &PowerOfDParams, n: usize) -> Result<(), SpecError> {
        if p.d == 0 || p.d > n {
            return Err(SpecError::new(
                "d",
                format!("is {} with {n} backends", p.d),
                format!("use 1 ≤ d ≤ {n} (2 is the classic power of two choices)"),
            ));
        }
        Ok(())
    }
    fn build(p: &PowerOfDParams, _: usize, rng: SimRng) -> PowerOfD {
        PowerOfD::new(p.d, p.replacement, rng)
    }
    fn cost(p: &PowerOfDParams) -> PickCost {
        PickCost {
            scanned: Scanned::Few(p.d),
            table: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Stream, stream_rng};
    use crate::strategy::Balancer;
    use crate::strategy::testing::{Pair, counts, index_agrees_with_scan, picks};
    use proptest::prelude::*;

    /// The oracle: the list of backends up made anew at every pick, as before it was kept.
    struct Relist(PowerOfD);

    impl super::Strategy for Relist {
        fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
            self.0.sampler.told();
            self.0.pick(backends, ctx)
        }
    }

    /// A large `d` (with or without replacement) keeps its list of the backends up
    /// between picks, told of each going up or down: the same picks as a list made anew
    /// at every pick, through backends going down and up.
    #[test]
    fn kept_list_picks_what_a_fresh_list_picks() {
        index_agrees_with_scan(
            (17usize..24, any::<bool>()),
            prop::collection::vec(Just(1u32), 24..40),
            |&(d, replacement): &(usize, bool)| -> Pair {
                let rng = || stream_rng(5, 0, Stream::Strategy, 0);
                (
                    Box::new(PowerOfD::new(d, replacement, rng())),
                    Box::new(Relist(PowerOfD::new(d, replacement, rng()))),
                )
            },
        );
    }

    #[test]
    fn d_equal_n_without_replacement_is_least_loaded() {
        let rng = stream_rng(1, 0, Stream::Strategy, 0);
        let mut b = Balancer::new(Box::new(PowerOfD::new(3, false, rng)), &[1, 1, 1]);
        // Keep requests in flight: every backend must get one before any gets two.
        let mut got: Vec<usize> = (0..6).map(|_| b.route(Nanos(0), 0).unwrap()).collect();
        got[..3].sort();
        got[3..].sort();
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn two_choices_even_out_in_flight_counts() {
        let rng = stream_rng(2, 0, Stream::Strategy, 0);
        let mut b = Balancer::new(Box::new(PowerOfD::new(2, false, rng)), &[1; 10]);
        for _ in 0..1_000 {
            b.route(Nanos(0), 0).unwrap();
        }
        let max = b.backends().iter().map(|x| x.in_flight).max().unwrap();
        // 100 per backend on average; two choices keep the maximum within a few of it.
        assert!(max <= 103, "max in flight {max}");
    }

    #[test]
    fn skips_down_backends_and_none_when_all_down() {
        let rng = stream_rng(3, 0, Stream::Strategy, 0);
        let mut b = Balancer::new(Box::new(PowerOfD::new(2, true, rng)), &[1, 1, 1]);
        b.set_up(1, false);
        let c = counts(&picks(&mut b, 300), 3);
        assert_eq!(c[1], 0);
        b.set_up(0, false);
        b.set_up(2, false);
        assert_eq!(b.route(Nanos(0), 0), None);
    }
}
