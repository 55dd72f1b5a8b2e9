//! Round robin: backends in turn, skipping those that are down (nginx, HAProxy `roundrobin`
//! with equal weights).

use super::registry::{About, Parameterless, PickCost, Reads, Split};
use super::{Backends, PickContext, Strategy, up_from};

/// Plain round robin; ignores weights.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: usize,
}

impl Strategy for RoundRobin {
    fn pick(&mut self, backends: &Backends, _ctx: &PickContext) -> Option<usize> {
        let i = up_from(backends, self.next % backends.len().max(1)).next()?;
        self.next = i + 1;
        Some(i)
    }
}

/// `kind = "round_robin"`: no parameters.
impl Parameterless for RoundRobin {
    const ABOUT: About = About {
        kind: "round_robin",
        aliases: &[],
        follows: "nginx / HAProxy roundrobin with equal weights",
        knobs: &[],
        reads: Reads::NOTHING,
        split: Split::Equal,
    };
    const COST: PickCost = PickCost::CONSTANT;
    fn start(_: usize, _: crate::rng::SimRng) -> RoundRobin {
        RoundRobin::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Balancer;
    use crate::strategy::testing::picks;

    #[test]
    fn cycles_in_order_and_skips_down_backends() {
        let mut b = Balancer::new(Box::new(RoundRobin::default()), &[1, 1, 1]);
        assert_eq!(picks(&mut b, 5), vec![0, 1, 2, 0, 1]);
        b.set_up(0, false);
        assert_eq!(picks(&mut b, 4), vec![2, 1, 2, 1]);
        b.set_up(1, false);
        b.set_up(2, false);
        assert_eq!(b.route(crate::time::Nanos(0), 0), None);
    }
}
