//! HAProxy `balance static-rr` (HAProxy 2.6, `src/lb_map.c`): a static map of `Σ eweights`
//! slots, filled by `recalc_server_map` — at each slot every usable server adds its
//! effective weight to its score and the first server with the largest
//! `(score + total) / total` (integer division) takes the slot and gives back `total` — and
//! walked in a circle by `map_get_server_rr`. Effective weights are the weights divided by
//! their greatest common divisor (`init_server_map`: `lbprm.wmult`, computed once over
//! every server). The proportions are the weights', as with nginx's smooth weighted round
//! robin, but the interleaving differs: weights {3, 3, 2, 2, 2, 2, 2, 2} give
//! `a b c d e a b f g h c a b d e f g h`, where smooth WRR gives `a b c … h a b c … h a b`.
//!
//! A server going down or up makes HAProxy rebuild the map over the usable servers
//! (`map_set_server_status_down`/`_up` → `recalc_server_map`) while the walk keeps its index
//! (`lbprm.map.rr_idx`, back to 0 when beyond the new map): the map is rebuilt here at the
//! next pick after such a change, so the order after a failure is HAProxy's, not the old
//! map with the server skipped. The tests' sequences were confirmed against HAProxy
//! 2.6.12's own picks.
//!
//! Cost: the balancer tells the strategy of every change of its view
//! ([`Strategy::on_view`]), so a pick compares the view with the map's only after a server
//! went down or up, not at every pick (that compare was 6 µs a pick at 10,000 servers).
//! Building the map costs O(slots × servers) as in HAProxy, except with equal weights,
//! where the map is the usable servers in index order, built in O(servers).

use super::registry::{About, Parameterless, PickCost, Reads, Split};
use super::{Backend, Backends, BuiltFor, PickContext, Strategy};

/// HAProxy `static-rr`.
#[derive(Debug, Default)]
pub struct StaticRr {
    map: Vec<usize>,
    /// The view the map was built for.
    built_for: BuiltFor,
    /// `lbprm.wmult`: the weights' greatest common divisor, fixed at the first pick.
    wmult: u32,
    /// `lbprm.map.rr_idx`.
    next: usize,
}

/// Greatest common divisor (Euclid, as `init_server_map`); 1 when every weight is 0.
fn gcd(weights: &[u32]) -> u32 {
    let mut g = 0u32;
    for &w in weights {
        let (mut a, mut b) = (g, w);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        g = a;
    }
    g.max(1)
}

impl StaticRr {
    /// HAProxy's map for `weights` (servers of weight 0 get no slot), without dividing
    /// the weights by their common divisor (which only repeats the map).
    pub fn map(weights: &[u32]) -> Vec<usize> {
        if weights.iter().all(|&w| w <= 1) {
            // Every usable server of weight 1: at slot k every server not placed yet
            // scores k + 1 and reads (k + 1 + total) / total = 1 (2 at the last slot),
            // every placed one scores k + 1 − total and reads 0, so the first server not
            // yet placed takes the slot: the usable servers in index order
            // (`map_walk` gives the same, checked in the tests).
            return (0..weights.len()).filter(|&i| weights[i] == 1).collect();
        }
        Self::map_walk(weights)
    }

    /// HAProxy's `recalc_server_map` loop itself: O(slots × servers).
    fn map_walk(weights: &[u32]) -> Vec<usize> {
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

    /// HAProxy's map over the usable servers of `backends` (`lbprm.map.srv`, of
    /// `lbprm.tot_weight` slots), rebuilt if they changed since the last call: what
    /// `static-rr` walks and map-based hashing (`balance source`) indexes.
    /// The owner forwards the balancer's [`Strategy::on_view`] to this map.
    pub(crate) fn slots(&mut self, backends: &Backends) -> &[usize] {
        if self.built_for.changed(backends) {
            self.rebuild(backends);
        }
        &self.map
    }

    /// Rebuilds the map for `backends`.
    fn rebuild(&mut self, backends: &Backends) {
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        let built_for = self.built_for.view();
        if built_for.len() != backends.len()
            || built_for
                .iter()
                .zip(&weights)
                .any(|(&(_, old), &w)| old != w)
        {
            // New servers or weights: a new configuration, as at HAProxy's start.
            self.wmult = gcd(&weights);
            self.next = 0;
        }
        let eweights: Vec<u32> = backends
            .iter()
            .map(|b| {
                if b.up {
                    b.weight.div_ceil(self.wmult)
                } else {
                    0
                }
            })
            .collect();
        self.map = Self::map(&eweights);
        self.built_for.built(backends);
    }
}

impl Strategy for StaticRr {
    fn pick(&mut self, backends: &Backends, _ctx: &PickContext) -> Option<usize> {
        if self.built_for.changed(backends) {
            self.rebuild(backends);
        }
        if self.map.is_empty() {
            return None;
        }
        if self.next >= self.map.len() {
            self.next = 0;
        }
        let i = self.map[self.next];
        self.next += 1;
        Some(i)
    }

    fn indexes_view(&self) -> bool {
        true
    }

    fn on_view(&mut self, backend: usize, view: &Backend) {
        self.built_for.told(backend, view);
    }
}

/// `kind = "static_rr"`: no parameters.
impl Parameterless for StaticRr {
    const ABOUT: About = About {
        kind: "static_rr",
        aliases: &[],
        follows: "HAProxy balance static-rr (lb_map.c, HAProxy 2.6: the static weighted map walked in a circle, rebuilt when servers go down or up)",
        knobs: &[],
        reads: Reads::WEIGHTS,
        split: Split::Weights,
    };
    const COST: PickCost = PickCost::CONSTANT;
    fn start(_: usize, _: crate::rng::SimRng) -> StaticRr {
        StaticRr::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Balancer;
    use crate::strategy::testing::{down_and_up, picks};

    /// The equal-weight map (usable servers in index order) is the one HAProxy's loop
    /// builds, whichever servers are down.
    #[test]
    fn equal_weights_map_as_haproxys_loop_does() {
        for m in 1..=40usize {
            for pattern in [0u64, 0x5555_5555_5555, 0x0f0f_3c3c_9999, u64::MAX] {
                let w: Vec<u32> = (0..m).map(|i| u32::from(pattern >> i & 1 == 0)).collect();
                assert_eq!(StaticRr::map(&w), StaticRr::map_walk(&w), "{w:?}");
            }
        }
    }

    /// Through a balancer (which tells the strategy of every change), long runs with
    /// servers going down and up pick what a strategy rebuilding its map from the view at
    /// every pick picks.
    #[test]
    fn told_changes_pick_what_comparing_the_view_at_every_pick_picks() {
        use rand::{RngExt, SeedableRng};
        for weights in [vec![1; 60], vec![3, 1, 2, 2, 5, 1, 1, 4, 2, 2]] {
            let mut rng = crate::rng::SimRng::seed_from_u64(7);
            let mut b = Balancer::new(Box::new(StaticRr::default()), &weights);
            let mut reference = StaticRr::default();
            for step in 0..5_000 {
                if step % 7 == 0 {
                    let i = rng.random_range(0..weights.len());
                    let up = !b.backends().up(i) || rng.random_range(0..3) == 0;
                    b.set_up(i, up);
                }
                let ctx = PickContext {
                    now: crate::time::Nanos(0),
                    key: 0,
                    loads: None,
                };
                reference.built_for.suspect();
                let expected = reference.pick(b.backends(), &ctx);
                assert_eq!(b.route(crate::time::Nanos(0), 0), expected, "step {step}");
                if let Some(i) = expected {
                    b.complete(
                        i,
                        crate::time::Nanos(0),
                        crate::strategy::Outcome::Ok,
                        crate::time::Nanos(0),
                    );
                }
            }
        }
    }

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

    /// Weights 3:2:1, 5 picks, a down, 4 picks, a up, 8 picks: HAProxy 2.6.12 gave
    /// `aabab` `bbcb` `ababcaab` (the map rebuilt as `b b c`, then `a a b a b c` again,
    /// the walk keeping its index).
    #[test]
    fn down_and_up_rebuild_the_map_and_keep_the_index() {
        let s = down_and_up(Box::new(StaticRr::default()), &[3, 2, 1], (5, 4, 8));
        assert_eq!(s, "aababbbcbababcaab");
    }

    #[test]
    fn down_servers_are_never_picked() {
        let mut b = Balancer::new(Box::new(StaticRr::default()), &[1, 1, 1]);
        b.set_up(1, false);
        assert_eq!(picks(&mut b, 4), [0, 2, 0, 2]);
        b.set_up(0, false);
        b.set_up(2, false);
        assert_eq!(b.route(crate::time::Nanos(0), 0), None);
    }

    /// Weights are divided by their common divisor: {2, 4} walks a map of 3 slots, so the
    /// index kept across a rebuild is the one HAProxy keeps (HAProxy 2.6.12: `abbabb`).
    #[test]
    fn weights_are_divided_by_their_common_divisor() {
        assert_eq!(gcd(&[2, 4, 0, 6]), 2);
        assert_eq!(gcd(&[0, 0]), 1);
        let mut b = Balancer::new(Box::new(StaticRr::default()), &[2, 4]);
        assert_eq!(picks(&mut b, 6), [0, 1, 1, 0, 1, 1]);
    }
}
