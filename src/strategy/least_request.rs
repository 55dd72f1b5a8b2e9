//! Envoy `LEAST_REQUEST` (`source/extensions/load_balancing_policies/least_request`).
//!
//! - All weights equal: draw `choice_count` (default 2) hosts *with replacement* among
//!   the healthy ones and keep the one with the fewest active requests; a later draw
//!   replaces the candidate only when strictly less loaded (Envoy's `unweightedHostPick`).
//! - Unequal weights: Envoy's EDF scheduler where a host re-enters the schedule with
//!   `effective_weight = weight / (active_requests + 1)^active_request_bias` (default
//!   bias 1.0; bias 0 is plain weighted round robin), the active count read when the
//!   host is picked. Zero-weight hosts are never picked. Envoy's random number of
//!   initial picks (to desynchronise proxies) is left out: the schedule starts in order.
//! - Slow start (Envoy `slow_start_config`, [`super::slow_start`]): while some host is in
//!   its window the EDF path is taken even with equal weights (Envoy's
//!   `noHostsAreInSlowStart()` check), each host's effective weight multiplied by its ramp
//!   factor; the schedule is rebuilt when a host becomes available. Envoy keeps its EDF
//!   until the next host-set change after the window; here picks return to the
//!   two-choice path as soon as no host ramps.

use super::SpecError;
use super::edf::EnvoySchedule;
use super::power_of_d::PowerOfD;
use super::registry::{About, Kind, Knob, PickCost, Reads, Scanned, Split, Ty};
use super::slow_start::{Ramp, RampKind};
use super::{Backend, Backends, Outcome, PickContext, Strategy};
use crate::rng::SimRng;
use crate::time::Nanos;

/// Envoy least request.
#[derive(Debug)]
pub struct LeastRequest {
    bias: f64,
    unweighted: PowerOfD,
    schedule: EnvoySchedule,
}

impl LeastRequest {
    /// Least request with `choice_count` draws and `active_request_bias`.
    pub fn new(choice_count: usize, active_request_bias: f64, rng: SimRng) -> LeastRequest {
        LeastRequest {
            bias: active_request_bias,
            unweighted: PowerOfD::new(choice_count, true, rng),
            schedule: EnvoySchedule::default(),
        }
    }

    /// A backend's EDF weight before slow start: `weight / (active + 1)^bias`.
    #[inline]
    fn effective_weight(bias: f64, b: &Backend) -> f64 {
        let w = f64::from(b.weight);
        let active = f64::from(b.in_flight) + 1.0;
        if bias == 1.0 {
            w / active
        } else if bias == 0.0 {
            w
        } else {
            w / active.powf(bias)
        }
    }
}

impl Strategy for LeastRequest {
    fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
        let bias = self.bias;
        let weight = |b: &Backend| Self::effective_weight(bias, b);
        self.schedule.refresh(backends, ctx.now, weight);
        // The unweighted path ignores weights, so it is taken only when no weight is 0.
        if self.schedule.all_equal() && !self.schedule.ramping(ctx.now) {
            return self.unweighted.pick(backends, ctx);
        }
        self.schedule.pick(backends, ctx.now, weight)
    }

    fn set_slow_start(&mut self, ramp: Ramp) -> bool {
        self.schedule.set_slow_start(ramp)
    }

    fn on_available(&mut self, backend: usize, now: Nanos) {
        self.schedule.on_available(backend, now);
    }

    fn on_dispatch(&mut self, backend: usize, now: Nanos) {
        self.unweighted.on_dispatch(backend, now);
    }

    /// The EDF schedule hears of changes to backends it left out (weight 0) from the
    /// balancer instead of looking at them at every pick; the two-choice path may keep a
    /// list of the backends up ([`PowerOfD`]).
    fn indexes_view(&self) -> bool {
        true
    }

    /// Counts are told only if the two-choice path indexes them (the schedule reads them
    /// from the view when a host re-enters it).
    fn indexes_in_flight(&self) -> bool {
        self.unweighted.indexes_view() && self.unweighted.indexes_in_flight()
    }

    fn on_view(&mut self, backend: usize, view: &Backend) {
        self.schedule.on_view(backend, view);
        if self.unweighted.indexes_view() {
            self.unweighted.on_view(backend, view);
        }
    }

    fn on_complete(&mut self, backend: usize, latency: Nanos, outcome: Outcome, now: Nanos) {
        self.unweighted.on_complete(backend, latency, outcome, now);
    }
}

/// Parameters of `kind = "least_request"`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeastRequestParams {
    /// Hosts drawn per pick with equal weights (≥ 2). Default 2.
    pub choice_count: usize,
    /// Exponent of `(active + 1)` dividing the weight with unequal weights. Default 1.0.
    pub active_request_bias: f64,
}

impl Default for LeastRequestParams {
    fn default() -> LeastRequestParams {
        LeastRequestParams {
            choice_count: 2,
            active_request_bias: 1.0,
        }
    }
}

impl Kind for LeastRequest {
    type Params = LeastRequestParams;
    const ABOUT: About = About {
        kind: "least_request",
        aliases: &[],
        follows: "Envoy LEAST_REQUEST (P2C with replacement; weight/(active+1)^bias EDF if weights differ)",
        knobs: &[
            Knob::new("choice_count", Ty::Int).meaning("backends sampled"),
            Knob::new("active_request_bias", Ty::Float).meaning("exponent"),
        ],
        reads: Reads {
            slow_start: Some(RampKind::Envoy),
            ..Reads::WEIGHTS
        },
        split: Split::Dynamic,
    };
    fn validate(p: &LeastRequestParams, _: usize) -> Result<(), SpecError> {
        let most = crate::scenario::cost::MAX_CHOICES;
        if !(2..=most).contains(&p.choice_count) {
            return Err(SpecError::new(
                "choice_count",
                format!("is {}", p.choice_count),
                format!("Envoy requires choice_count ≥ 2 (default 2); lbsim allows at most {most}"),
            ));
        }
        let bias = p.active_request_bias;
        if !(bias.is_finite() && bias >= 0.0) {
            return Err(SpecError::new(
                "active_request_bias",
                format!("is {bias}"),
                "use 0 or more (1.0 is Envoy's default, 0 ignores active requests)",
            ));
        }
        Ok(())
    }
    fn build(p: &LeastRequestParams, _: usize, rng: SimRng) -> LeastRequest {
        LeastRequest::new(p.choice_count, p.active_request_bias, rng)
    }
    fn cost(p: &LeastRequestParams) -> PickCost {
        PickCost {
            scanned: Scanned::Few(p.choice_count),
            table: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Stream, stream_rng};
    use crate::strategy::Balancer;
    use crate::strategy::testing::{counts, picks};

    fn lr(weights: &[u32], bias: f64) -> Balancer {
        let rng = stream_rng(1, 0, Stream::Strategy, 0);
        Balancer::new(Box::new(LeastRequest::new(2, bias, rng)), weights)
    }

    #[test]
    fn unequal_weights_without_load_follow_weights() {
        // Requests complete at once: active is always 0, effective weight = weight.
        let mut b = lr(&[3, 1], 1.0);
        assert_eq!(counts(&picks(&mut b, 400), 2), vec![300, 100]);
    }

    #[test]
    fn active_requests_lower_the_effective_weight() {
        // Requests stay in flight: a host is picked every (active + 1) / weight units of
        // EDF time, so d(active)/dt = w / (active + 1) and (active + 1)² grows as 2 w t:
        // the in-flight ratio tends to √3, not 3 (the bias damps the weights).
        let mut b = lr(&[3, 1], 1.0);
        for _ in 0..4000 {
            b.route(Nanos(0), 0).unwrap();
        }
        let f = b.backends();
        let ratio = f64::from(f.in_flight(0) + 1) / f64::from(f.in_flight(1) + 1);
        assert!(
            (ratio - 3f64.sqrt()).abs() < 0.03,
            "{} {}",
            f.in_flight(0),
            f.in_flight(1)
        );
        // Bias 0 ignores active requests: the 3:1 split holds whatever is in flight.
        let mut b = lr(&[3, 1], 0.0);
        let p: Vec<usize> = (0..400).map(|_| b.route(Nanos(0), 0).unwrap()).collect();
        assert_eq!(counts(&p, 2), vec![300, 100]);
    }

    #[test]
    fn equal_weights_use_two_choices_and_skip_down() {
        let mut b = lr(&[2, 2, 2], 1.0);
        b.set_up(0, false);
        let c = counts(&picks(&mut b, 300), 3);
        assert_eq!(c[0], 0);
        let mut b = lr(&[2, 1, 0], 1.0);
        b.set_up(0, false);
        assert!(picks(&mut b, 10).iter().all(|&i| i == 1));
        b.set_up(1, false);
        assert_eq!(b.route(Nanos(0), 0), None);
    }

    /// The schedule rebuilt when told of a new weight for a backend it left out picks
    /// what it picks when it looks at every zero-weight backend at every pick, through
    /// up/down (balancer-driven workouts, with requests in flight) and weight changes
    /// (views changed directly), with few and many choices and several biases.
    #[test]
    fn a_told_schedule_picks_as_a_rescan() {
        use crate::strategy::hash::told::{pair, views_agree};
        use crate::strategy::testing::{index_agrees_with_scan, weights};
        use proptest::prelude::*;
        let params = || {
            (
                prop::sample::select(vec![2usize, 3, 32]),
                prop::sample::select(vec![0.0, 0.5, 1.0]),
                0u64..4,
            )
        };
        let build = |&(d, bias, seed): &(usize, f64, u64)| {
            let lr = || LeastRequest::new(d, bias, stream_rng(seed, 0, Stream::Strategy, 0));
            pair(lr(), lr(), |s| s.schedule.suspect())
        };
        index_agrees_with_scan(params(), weights(), build);
        views_agree(params(), build);
    }
}
