//! Smooth weighted round robin, exactly as nginx's `ngx_http_upstream_get_peer`
//! (the default `upstream` balancing): every pick adds each peer's weight to its current
//! weight, takes the peer with the largest current weight (the first one on ties) and
//! subtracts the total weight from it. Weights {5, 1, 1} give `a a b a c a a`.
//!
//! nginx's `slow_start` ([`super::slow_start`]): a server that becomes available has its
//! weight grow linearly from zero to nominal over the window. To ramp in small steps the
//! weights are then counted in thousandths (which leaves the sequence of picks unchanged:
//! scaling every weight scales every current weight alike), a ramping server's weight
//! rounded and at least one thousandth, so that a lone server is still picked.

use super::SpecError;
use super::registry::{About, Kind, NoParams, PickCost, Reads, Split};
use super::slow_start::{Ramp, RampKind, SlowStart};
use super::{Backend, PickContext, Strategy};
use crate::time::Nanos;

/// Weight units per unit of configured weight under slow start.
const SCALE: f64 = 1000.0;

/// nginx smooth weighted round robin. Backends of weight 0 are never picked.
#[derive(Debug, Default)]
pub struct SmoothWeightedRoundRobin {
    current: Vec<i64>,
    /// nginx's slow start, if the balancer's policy asks for it.
    slow: Option<SlowStart>,
}

impl SmoothWeightedRoundRobin {
    /// Runs one smooth-WRR step over the backends that are up, with `weight(i)` as backend
    /// `i`'s effective weight (0 excludes it; at most `u32::MAX × 1000`).
    pub(crate) fn step(
        current: &mut Vec<i64>,
        backends: &[Backend],
        weight: impl Fn(usize) -> i64,
    ) -> Option<usize> {
        if current.len() != backends.len() {
            current.resize(backends.len(), 0);
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, b) in backends.iter().enumerate() {
            let w = weight(i);
            if !b.up || w == 0 {
                continue;
            }
            current[i] += w;
            total += w;
            if best.is_none_or(|j| current[i] > current[j]) {
                best = Some(i);
            }
        }
        let i = best?;
        current[i] -= total;
        Some(i)
    }
}

impl Strategy for SmoothWeightedRoundRobin {
    fn pick(&mut self, backends: &[Backend], ctx: &PickContext) -> Option<usize> {
        match &self.slow {
            None => Self::step(&mut self.current, backends, |i| {
                i64::from(backends[i].weight)
            }),
            Some(s) => Self::step(&mut self.current, backends, |i| {
                let w = backends[i].weight;
                if w == 0 {
                    return 0;
                }
                let scaled = f64::from(w) * SCALE * s.factor(i, ctx.now);
                (scaled.round() as i64).max(1)
            }),
        }
    }

    fn set_slow_start(&mut self, ramp: Ramp) -> bool {
        if ramp.kind() != RampKind::Nginx {
            return false;
        }
        self.slow = Some(SlowStart::new(ramp));
        true
    }

    fn on_available(&mut self, backend: usize, now: Nanos) {
        if let Some(s) = &mut self.slow {
            s.start(backend, now);
        }
    }
}

/// `kind = "smooth_weighted_round_robin"`: no parameters.
impl Kind for SmoothWeightedRoundRobin {
    type Params = NoParams;
    const ABOUT: About = About {
        kind: "smooth_weighted_round_robin",
        aliases: &["weighted_round_robin"],
        follows: "nginx smooth weighted round robin (upstream default)",
        knobs: &[],
        reads: Reads {
            slow_start: Some(RampKind::Nginx),
            ..Reads::WEIGHTS
        },
        split: Split::Weights,
    };
    fn validate(_: &NoParams, _: usize) -> Result<(), SpecError> {
        Ok(())
    }
    fn build(_: &NoParams, _: usize, _: crate::rng::SimRng) -> SmoothWeightedRoundRobin {
        SmoothWeightedRoundRobin::default()
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
    fn nginx_sequence_for_5_1_1() {
        let mut b = Balancer::new(Box::new(SmoothWeightedRoundRobin::default()), &[5, 1, 1]);
        let seq: String = picks(&mut b, 14)
            .iter()
            .map(|&i| (b'a' + i as u8) as char)
            .collect();
        assert_eq!(seq, "aabacaaaabacaa");
    }

    #[test]
    fn zero_weight_is_never_picked_and_down_is_skipped() {
        let mut b = Balancer::new(Box::new(SmoothWeightedRoundRobin::default()), &[0, 2, 1]);
        let p = picks(&mut b, 30);
        assert_eq!(counts(&p, 3), vec![0, 20, 10]);
        b.set_up(1, false);
        assert!(picks(&mut b, 5).iter().all(|&i| i == 2));
    }

    proptest! {
        /// Every full cycle (Σ weights picks) honours each weight exactly.
        #[test]
        fn weights_are_honoured_exactly_per_cycle(weights in prop::collection::vec(0u32..8, 1..8)) {
            prop_assume!(weights.iter().any(|&w| w > 0));
            let total: u32 = weights.iter().sum();
            let mut b = Balancer::new(Box::new(SmoothWeightedRoundRobin::default()), &weights);
            for _cycle in 0..3 {
                let p = picks(&mut b, total as usize);
                let c = counts(&p, weights.len());
                let expect: Vec<usize> = weights.iter().map(|&w| w as usize).collect();
                prop_assert_eq!(c, expect);
            }
        }
    }
}
