//! Weighted random choice: backend `i` with probability `weight_i / Σ weight` over the
//! backends that are up (HAProxy `random` with weights, Envoy `RANDOM` with host weights).
//!
//! The draws are rand's `WeightedIndex` over the effective weights, draw for draw: a
//! uniform value below `Σ weights` (the same `Uniform` sampler), and the backend whose
//! range of the weights holds it. `WeightedIndex` finds it by a binary search of the
//! running sums, whose last steps missed the cache at 10,000 backends (a sixth of a run
//! of this strategy there); [`Ranges`] finds the same backend through an index.

use rand::distr::{Distribution, Uniform};

use super::ranges::Ranges;
use super::registry::{About, Parameterless, PickCost, Reads, Split};
use super::{Backend, Backends, PickContext, Strategy};
use crate::rng::SimRng;

/// The sampler of a set of effective weights.
#[derive(Debug)]
struct Sampler {
    /// The effective weights it was built from.
    weights: Vec<u32>,
    ranges: Ranges,
    /// Uniform over `0..Σ weights`, as `WeightedIndex` draws.
    uniform: Uniform<u64>,
}

/// Weighted random choice.
#[derive(Debug)]
pub struct WeightedRandom {
    rng: SimRng,
    /// Cached sampler, rebuilt when the weights or the set of backends up change.
    cache: Option<Sampler>,
    /// Whether a view entry's effective weight changed since the sampler was built (told
    /// by [`Strategy::on_view`], so a pick need not compare every weight).
    stale: bool,
}

impl WeightedRandom {
    /// Weighted random choice driven by `rng`.
    pub fn new(rng: SimRng) -> WeightedRandom {
        WeightedRandom {
            rng,
            cache: None,
            stale: true,
        }
    }
}

fn effective(b: &Backend) -> u32 {
    if b.up { b.weight } else { 0 }
}

impl Strategy for WeightedRandom {
    fn pick(&mut self, backends: &Backends, _ctx: &PickContext) -> Option<usize> {
        let stale = match &self.cache {
            Some(s) => self.stale || s.weights.len() != backends.len(),
            None => true,
        };
        if stale {
            self.stale = false;
            self.cache = None;
            let weights: Vec<u32> = backends.iter().map(|b| effective(&b)).collect();
            let ranges = Ranges::new(weights.iter().map(|&w| u64::from(w)));
            // All weights zero (or everything down, or no backend): nothing to pick.
            let uniform = Uniform::new(0, ranges.total()).ok()?;
            self.cache = Some(Sampler {
                weights,
                ranges,
                uniform,
            });
        }
        let s = self.cache.as_ref()?;
        Some(s.ranges.holding(s.uniform.sample(&mut self.rng)))
    }

    fn indexes_view(&self) -> bool {
        true
    }

    fn on_view(&mut self, backend: usize, view: &Backend) {
        if let Some(s) = &self.cache
            && s.weights
                .get(backend)
                .is_some_and(|&w| w != effective(view))
        {
            self.stale = true;
        }
    }
}

/// `kind = "weighted_random"`: no parameters.
impl Parameterless for WeightedRandom {
    const ABOUT: About = About {
        kind: "weighted_random",
        aliases: &[],
        follows: "HAProxy random with weights",
        knobs: &[],
        reads: Reads::WEIGHTS,
        split: Split::Weights,
    };
    const COST: PickCost = PickCost::CONSTANT;
    fn start(_: usize, rng: crate::rng::SimRng) -> WeightedRandom {
        WeightedRandom::new(rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Stream, stream_rng};
    use crate::strategy::Balancer;
    use crate::strategy::testing::{both, counts, op, picks};
    use proptest::prelude::*;
    use proptest::strategy::Strategy as _;

    /// The sampler rebuilt at every pick: the oracle of the cache's invalidation.
    struct Rebuilt(WeightedRandom);

    impl super::Strategy for Rebuilt {
        fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
            self.0.cache = None;
            self.0.pick(backends, ctx)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn cached_sampler_picks_what_a_fresh_one_picks(
            weights in proptest::collection::vec(0u32..4, 1..12),
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let rng = || stream_rng(1, 0, Stream::Strategy, 0);
            let (fast, oracle) = both(
                Box::new(WeightedRandom::new(rng())),
                Box::new(Rebuilt(WeightedRandom::new(rng()))),
                &weights,
                &ops,
            );
            prop_assert_eq!(fast, oracle);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]

        /// Draw for draw what rand's `WeightedIndex` draws from the same stream: the
        /// same uniform value, the same backend (through the index, or the division
        /// when the weights are equal), weights of 0 included, up to 3,000 backends.
        #[test]
        fn picks_what_weighted_index_picks(
            weights in prop_oneof![
                proptest::collection::vec(0u32..5, 1..40),
                proptest::collection::vec(prop_oneof![Just(0u32), 1u32..4, Just(300)], 1..3000),
                (1u32..4, 1usize..50).prop_map(|(w, n)| vec![w; n]),
            ],
            seed in 0u64..1000,
        ) {
            use rand::distr::weighted::WeightedIndex;
            let index = WeightedIndex::new(weights.iter().map(|&w| u64::from(w)));
            let rng = || stream_rng(seed, 0, Stream::Strategy, 0);
            let mut b = Balancer::new(Box::new(WeightedRandom::new(rng())), &weights);
            match index {
                Ok(index) => {
                    let mut r = rng();
                    let want: Vec<usize> = (0..200).map(|_| index.sample(&mut r)).collect();
                    prop_assert_eq!(picks(&mut b, 200), want);
                }
                // Every weight 0: nothing to pick.
                Err(_) => prop_assert_eq!(b.route(crate::time::Nanos(0), 0), None),
            }
        }
    }

    #[test]
    fn shares_follow_weights() {
        let rng = stream_rng(1, 0, Stream::Strategy, 0);
        let mut b = Balancer::new(Box::new(WeightedRandom::new(rng)), &[2, 1, 0, 1]);
        let c = counts(&picks(&mut b, 40_000), 4);
        assert_eq!(c[2], 0);
        // Expected 20000, 10000, 0, 10000; sd ≤ 100; allow 5 sd.
        assert!((c[0] as f64 - 20_000.0).abs() < 500.0, "{c:?}");
        assert!((c[1] as f64 - 10_000.0).abs() < 500.0, "{c:?}");
        b.set_up(0, false);
        b.set_up(1, false);
        assert!(picks(&mut b, 10).iter().all(|&i| i == 3));
        b.set_up(3, false);
        assert_eq!(b.route(crate::time::Nanos(0), 0), None);
    }
}
