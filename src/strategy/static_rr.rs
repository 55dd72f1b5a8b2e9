//! HAProxy `balance static-rr` (`lb_map.c`): a static map of `Σ weights` slots, filled once
//! by HAProxy's `recalc_server_map` — at each slot every server adds its weight to its
//! score and the first server with the largest `(score + total) / total` (integer
//! division) takes the slot and gives back `total` — then walked in a circle from the
//! start. The proportions are the weights', as with nginx's smooth weighted round robin,
//! but the interleaving differs: weights {3, 3, 2, 2, 2, 2, 2, 2} give
//! `a b c d e a b f g h c a b d e f g h`, where smooth WRR gives `a b c … h a b c … h a b`.
//! Servers that are down are skipped (HAProxy rebuilds the map without them).

use super::SpecError;
use super::registry::{About, Kind, NoParams, PickCost, Reads, Split};
use super::{Backend, PickContext, Strategy};

/// HAProxy `static-rr`.
#[derive(Debug, Default)]
pub struct StaticRr {
    map: Vec<usize>,
    weights: Vec<u32>,
    next: usize,
}

impl StaticRr {
    /// HAProxy's map for `weights` (servers of weight 0 get no slot).
    pub fn map(weights: &[u32]) -> Vec<usize> {
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        let mut score = vec![0i64; weights.len()];
        let mut map = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for _ in 0..total {
            let mut best: Option<(i64, usize)> = None;
            for (i, &w) in weights.iter().enumerate() {
                if w == 0 {
                    continue;
                }
                score[i] += i64::from(w);
                let v = (score[i] + total) / total;
                if best.is_none_or(|(max, _)| v > max) {
                    best = Some((v, i));
                }
            }
            let Some((_, i)) = best else { break };
            map.push(i);
            score[i] -= total;
        }
        map
    }
}

impl Strategy for StaticRr {
    fn pick(&mut self, backends: &[Backend], _ctx: &PickContext) -> Option<usize> {
        if self.weights.len() != backends.len()
            || self
                .weights
                .iter()
                .zip(backends)
                .any(|(&w, b)| w != b.weight)
        {
            self.weights = backends.iter().map(|b| b.weight).collect();
            self.map = Self::map(&self.weights);
            self.next = 0;
        }
        let len = self.map.len();
        (0..len)
            .map(|k| (self.next + k) % len)
            .find(|&pos| backends[self.map[pos]].up)
            .map(|pos| {
                self.next = (pos + 1) % len;
                self.map[pos]
            })
    }
}

/// `kind = "static_rr"`: no parameters.
impl Kind for StaticRr {
    type Params = NoParams;
    const ABOUT: About = About {
        kind: "static_rr",
        aliases: &[],
        follows: "HAProxy balance static-rr (HAProxy's static weighted map, walked in a circle)",
        knobs: &[],
        reads: Reads::WEIGHTS,
        split: Split::Weights,
    };
    fn validate(_: &NoParams, _: usize) -> Result<(), SpecError> {
        Ok(())
    }
    fn build(_: &NoParams, _: usize, _: crate::rng::SimRng) -> StaticRr {
        StaticRr::default()
    }
    fn cost(_: &NoParams) -> PickCost {
        PickCost::CONSTANT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Balancer;
    use crate::strategy::testing::picks;

    #[test]
    fn haproxy_map_for_the_l4_scenario_weights() {
        let map = StaticRr::map(&[3, 3, 2, 2, 2, 2, 2, 2]);
        assert_eq!(map, [0, 1, 2, 3, 4, 0, 1, 5, 6, 7, 2, 0, 1, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn proportions_follow_weights_and_the_map_repeats() {
        let mut b = Balancer::new(Box::new(StaticRr::default()), &[5, 1, 1]);
        let first = picks(&mut b, 7);
        assert_eq!(first.iter().filter(|&&i| i == 0).count(), 5);
        assert_eq!(picks(&mut b, 7), first);
    }

    #[test]
    fn down_servers_are_skipped() {
        let mut b = Balancer::new(Box::new(StaticRr::default()), &[1, 1, 1]);
        b.set_up(1, false);
        assert_eq!(picks(&mut b, 4), [0, 2, 0, 2]);
    }
}
