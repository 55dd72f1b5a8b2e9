//! Envoy weighted round robin (`ROUND_ROBIN` with host weights): an EDF schedule
//! ([`super::edf`]) where each host's deadline advances by `1 / weight` per pick; the
//! earliest deadline wins, ties in backend order. Equal weights give plain round robin in
//! order; a full cycle (Σ weights picks, when the weights divide evenly) honours every
//! weight. Zero-weight hosts are never picked; a down host keeps its place in the
//! schedule and is skipped. Envoy's random initial offset is left out (the schedule
//! starts at backend 0), so runs compare picks one for one.
//!
//! Under Envoy's slow start ([`super::slow_start`]) a host's weight is multiplied by its
//! ramp factor whenever it (re-)enters the schedule, and the schedule is rebuilt when a
//! host becomes available, as Envoy refreshes its schedulers on every host-set change.

use super::edf::EnvoySchedule;
use super::registry::{About, Parameterless, PickCost, Reads, Split};
use super::slow_start::{Ramp, RampKind};
use super::{Backend, Backends, PickContext, Strategy};
use crate::time::Nanos;

/// Envoy EDF weighted round robin.
#[derive(Debug, Default)]
pub struct EdfWeightedRoundRobin {
    schedule: EnvoySchedule,
}

impl EdfWeightedRoundRobin {
    /// A backend's configured weight (Envoy's `hostWeight`).
    #[inline]
    fn weight(b: &Backend) -> f64 {
        f64::from(b.weight.max(1))
    }
}

impl Strategy for EdfWeightedRoundRobin {
    fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
        self.schedule.refresh(backends, ctx.now, Self::weight);
        self.schedule.pick(backends, ctx.now, Self::weight)
    }

    fn set_slow_start(&mut self, ramp: Ramp) -> bool {
        self.schedule.set_slow_start(ramp)
    }

    fn on_available(&mut self, backend: usize, now: Nanos) {
        self.schedule.on_available(backend, now);
    }

    /// The schedule hears of changes to backends it left out of the schedule (weight 0)
    /// from the balancer instead of looking at them at every pick.
    fn indexes_view(&self) -> bool {
        true
    }

    /// Counts are not read.
    fn indexes_in_flight(&self) -> bool {
        false
    }

    fn on_view(&mut self, backend: usize, view: &Backend) {
        self.schedule.on_view(backend, view);
    }
}

/// `kind = "edf_wrr"`: no parameters.
impl Parameterless for EdfWeightedRoundRobin {
    const ABOUT: About = About {
        kind: "edf_wrr",
        aliases: &[],
        follows: "Envoy ROUND_ROBIN with weights (EDF schedule)",
        knobs: &[],
        reads: Reads {
            slow_start: Some(RampKind::Envoy),
            ..Reads::WEIGHTS
        },
        split: Split::Weights,
    };
    const COST: PickCost = PickCost::CONSTANT;
    fn start(_: usize, _: crate::rng::SimRng) -> EdfWeightedRoundRobin {
        EdfWeightedRoundRobin::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Balancer;
    use crate::strategy::testing::{counts, picks};
    use proptest::prelude::*;

    #[test]
    fn weights_and_down_hosts() {
        let mut b = Balancer::new(Box::new(EdfWeightedRoundRobin::default()), &[5, 1, 1]);
        assert_eq!(counts(&picks(&mut b, 70), 3), vec![50, 10, 10]);
        let mut b = Balancer::new(Box::new(EdfWeightedRoundRobin::default()), &[0, 2, 1]);
        assert_eq!(counts(&picks(&mut b, 30), 3), vec![0, 20, 10]);
        b.set_up(1, false);
        assert!(picks(&mut b, 5).iter().all(|&i| i == 2));
        b.set_up(2, false);
        assert_eq!(b.route(crate::time::Nanos(0), 0), None);
    }

    proptest! {
        /// Equal weights: every window of n consecutive picks holds each backend once.
        #[test]
        fn equal_weights_share_exactly_over_any_window_of_one_cycle(
            n in 1usize..12, w in 1u32..50, skip in 0usize..30
        ) {
            let mut b = Balancer::new(Box::new(EdfWeightedRoundRobin::default()), &vec![w; n]);
            let p = picks(&mut b, skip + 3 * n);
            for start in skip..skip + 2 * n {
                prop_assert_eq!(counts(&p[start..start + n], n), vec![1; n]);
            }
        }
    }

    /// The schedule rebuilt when told of a new weight for a backend it left out picks
    /// what it picks when it looks at every zero-weight backend at every pick, through
    /// up/down (balancer-driven workouts) and weight changes (views changed directly).
    #[test]
    fn a_told_schedule_picks_as_a_rescan() {
        use crate::strategy::hash::told::{pair, views_agree};
        use crate::strategy::testing::{index_agrees_with_scan, weights};
        let build = |_: &()| {
            let edf = EdfWeightedRoundRobin::default;
            pair(edf(), edf(), |s| s.schedule.suspect())
        };
        index_agrees_with_scan(Just(()), weights(), build);
        views_agree(Just(()), build);
    }
}
