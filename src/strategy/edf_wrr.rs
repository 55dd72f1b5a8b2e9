//! Envoy weighted round robin (`ROUND_ROBIN` with host weights): an EDF schedule
//! ([`super::edf`]) where each host's deadline advances by `1 / weight` per pick; the
//! earliest deadline wins, ties in backend order. Equal weights give plain round robin in
//! order; a full cycle (Σ weights picks, when the weights divide evenly) honours every
//! weight. Zero-weight hosts are never picked; a down host keeps its place in the
//! schedule and is skipped. Envoy's random initial offset is left out (the schedule
//! starts at backend 0), so runs compare picks one for one.

use super::SpecError;
use super::edf::{EdfScheduler, WeightsSeen};
use super::registry::{About, Kind, NoParams, PickCost, Reads, Split};
use super::{Backend, PickContext, Strategy};

/// Envoy EDF weighted round robin.
#[derive(Debug, Default)]
pub struct EdfWeightedRoundRobin {
    edf: EdfScheduler,
    seen: WeightsSeen,
}

impl EdfWeightedRoundRobin {
    fn rebuild(&mut self, backends: &[Backend]) {
        self.seen.record(backends);
        self.edf.clear();
        for (i, b) in backends.iter().enumerate() {
            if b.weight > 0 {
                self.edf.add(i, f64::from(b.weight));
            }
        }
    }
}

impl Strategy for EdfWeightedRoundRobin {
    fn pick(&mut self, backends: &[Backend], _ctx: &PickContext) -> Option<usize> {
        if self.seen.stale(backends) {
            self.rebuild(backends);
        }
        for _ in 0..2 {
            let i = self
                .edf
                .pick_and_add(backends, |j| f64::from(backends[j].weight.max(1)))?;
            if !self.seen.changed(backends, i) {
                return Some(i);
            }
            self.rebuild(backends);
        }
        None
    }
}

/// `kind = "edf_wrr"`: no parameters.
impl Kind for EdfWeightedRoundRobin {
    type Params = NoParams;
    const ABOUT: About = About {
        kind: "edf_wrr",
        aliases: &[],
        follows: "Envoy ROUND_ROBIN with weights (EDF schedule)",
        knobs: &[],
        reads: Reads::WEIGHTS,
        split: Split::Weights,
    };
    fn validate(_: &NoParams, _: usize) -> Result<(), SpecError> {
        Ok(())
    }
    fn build(_: &NoParams, _: usize, _: crate::rng::SimRng) -> EdfWeightedRoundRobin {
        EdfWeightedRoundRobin::default()
    }
    fn cost(_: &NoParams) -> PickCost {
        PickCost::CONSTANT
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
}
