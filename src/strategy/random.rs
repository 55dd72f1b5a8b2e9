//! Uniform random choice among the backends that are up (HAProxy `random` with equal
//! weights; Envoy `RANDOM`).

use rand::RngExt;

use super::registry::{About, Parameterless, PickCost, Reads, Split};
use super::{Backends, PickContext, Strategy, up_from};
use crate::rng::SimRng;

/// Uniform random choice.
#[derive(Debug)]
pub struct RandomChoice {
    rng: SimRng,
}

impl RandomChoice {
    /// Random choice driven by `rng` (seeded, for reproducibility).
    pub fn new(rng: SimRng) -> RandomChoice {
        RandomChoice { rng }
    }
}

impl Strategy for RandomChoice {
    fn pick(&mut self, backends: &Backends, _ctx: &PickContext) -> Option<usize> {
        uniform_up(backends, &mut self.rng)
    }
}

/// A backend drawn uniformly among those that are up, or `None` when none is.
pub(crate) fn uniform_up(backends: &Backends, rng: &mut SimRng) -> Option<usize> {
    let n = backends.len();
    if n == 0 {
        return None;
    }
    let i = rng.random_range(0..n);
    if backends.up(i) {
        return Some(i);
    }
    // Some backends are down: draw uniformly among those that are up.
    let up = up_from(backends, 0).count();
    if up == 0 {
        return None;
    }
    let k = rng.random_range(0..up);
    up_from(backends, 0).nth(k)
}

/// `kind = "random"`: no parameters.
impl Parameterless for RandomChoice {
    const ABOUT: About = About {
        kind: "random",
        aliases: &[],
        follows: "Envoy RANDOM / HAProxy random, equal weights",
        knobs: &[],
        reads: Reads::NOTHING,
        split: Split::Equal,
    };
    const COST: PickCost = PickCost::CONSTANT;
    fn start(_: usize, rng: crate::rng::SimRng) -> RandomChoice {
        RandomChoice::new(rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Stream, stream_rng};
    use crate::strategy::Balancer;
    use crate::strategy::testing::{counts, picks};

    #[test]
    fn uniform_over_up_backends() {
        let rng = stream_rng(1, 0, Stream::Strategy, 0);
        let mut b = Balancer::new(Box::new(RandomChoice::new(rng)), &[1, 1, 1, 1]);
        b.set_up(3, false);
        let c = counts(&picks(&mut b, 30_000), 4);
        assert_eq!(c[3], 0);
        // Each share is 1/3; sd of a count is sqrt(n p (1-p)) ≈ 82; allow 5 sd.
        for &k in &c[..3] {
            assert!((k as f64 - 10_000.0).abs() < 410.0, "{c:?}");
        }
    }
}
