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
//! Building the map took O(slots × servers) as HAProxy's loop does (`slots = Σ eweights`):
//! 0.5 s at 10,000 servers of weights 1 to 4 (25,000 slots), at the first pick and at every
//! server going down or up, so a run of 10,000 weighted servers cost 11 times round
//! robin's (at weights 1 to 256, 1.3 million slots, about 26 s a build). It takes 0.74 ms
//! now (47 ms at weights 1 to 256; `benches/strategies.rs` `static_rr_map`): it is built by
//! levels of slots owed ([`StaticRr::map`], the same map slot for slot, proved there
//! and checked against the loop, [`StaticRr::map_walk`], by a property test) in
//! O((slots + servers) · log₆₄ servers), and with equal weights, where the map is the
//! usable servers in index order, in O(servers).

use std::sync::Arc;

use super::hash::shared;
use super::registry::{About, Parameterless, PickCost, Reads, Split};
use super::{Backend, Backends, BuiltFor, PickContext, Strategy};

/// HAProxy `static-rr`.
#[derive(Debug, Default)]
pub struct StaticRr {
    /// Shared with the other balancers that built the same map ([`shared`]).
    map: Arc<Vec<usize>>,
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

/// A set of indexes below a bound, the lowest found in O(log₆₄ bound): a bitset of the
/// indexes, and above each layer a bitset of its nonzero words, up to a single word.
#[derive(Debug)]
struct IndexSet {
    /// Bottom first.
    layers: Vec<Vec<u64>>,
}

impl IndexSet {
    fn new(bound: usize) -> IndexSet {
        let mut layers = Vec::new();
        let mut len = bound.max(1);
        loop {
            let words = len.div_ceil(64);
            layers.push(vec![0u64; words]);
            if words == 1 {
                return IndexSet { layers };
            }
            len = words;
        }
    }

    fn insert(&mut self, mut i: usize) {
        for layer in &mut self.layers {
            let word = &mut layer[i / 64];
            let was = *word;
            *word |= 1 << (i % 64);
            if was != 0 {
                break;
            }
            i /= 64;
        }
    }

    fn remove(&mut self, mut i: usize) {
        for layer in &mut self.layers {
            let word = &mut layer[i / 64];
            *word &= !(1 << (i % 64));
            if *word != 0 {
                break;
            }
            i /= 64;
        }
    }

    fn first(&self) -> Option<usize> {
        let mut i = 0;
        for layer in self.layers.iter().rev() {
            let word = layer[i];
            if word == 0 {
                return None;
            }
            i = i * 64 + word.trailing_zeros() as usize;
        }
        Some(i)
    }
}

impl StaticRr {
    /// HAProxy's map for `weights` (servers of weight 0 get no slot), without dividing
    /// the weights by their common divisor (which only repeats the map): what
    /// [`StaticRr::map_walk`] builds, slot for slot, in O((slots + servers) · log₆₄ servers)
    /// instead of O(slots · servers).
    ///
    /// **Why it is the same map.** Let `T` be the total weight and, at slot `k` (1 to `T`),
    /// `pᵢ` the slots server `i` took before `k`. After the additions, server `i` scores
    /// `sᵢ = k·wᵢ − T·pᵢ`, and these scores add up to `kT − T(k − 1) = T`.
    ///
    /// 1. *Signs.* Some score is then positive, and `(s + T) / T ≥ 1` for it, so the
    ///    winner reads `v ≥ 1`, which (Rust's and C's `/` truncate toward zero, so a
    ///    negative `s + T` reads at most 0) means its `s ≥ 0`: after giving back `T` it
    ///    scores at least `−T`, and the others only grow. So before the additions every
    ///    score is `≥ −T`, after them (`wᵢ ≥ 1`) `> −T`: `s + T > 0`, where the truncating
    ///    division is the floor, and `vᵢ = ⌊k·wᵢ/T⌋ − pᵢ + 1`.
    /// 2. *Levels.* So `vᵢ − 1 = ownedᵢ − pᵢ`, server `i`'s slots owed (`oᵢ`), where
    ///    `ownedᵢ = ⌊k·wᵢ/T⌋` steps up by one exactly at the slots `⌈j·T/wᵢ⌉`, `j = 1…wᵢ`
    ///    (at most once a slot as `wᵢ ≤ T`; the last at slot `T`): `T` steps in all, each
    ///    known in advance. `oᵢ ≥ −1` (1.), the winner's `o ≥ 0`, `Σ oᵢ ≤ 1` (`Σ ownedᵢ ≤ k`,
    ///    `Σ pᵢ = k − 1`), so `oᵢ ≤ n`. Mostly `v` is 0, 1 or 2, but a server of large
    ///    weight can owe two slots while waiting behind a lower index owing as much:
    ///    weights {1, 1, 3, 10} read `v = 3` at slot 6 (of the 16,807 vectors of 5
    ///    weights from 1 to 7 only {1, 1, 1, 2, 7} reaches 3, and none of 860,000 random
    ///    vectors of 3 to 24 servers reaches 4);
    ///    the levels below grow as needed.
    /// 3. *The loop.* So each slot: the servers whose `owned` steps up at `k` go one level
    ///    up (a queue of linked lists, one per slot, each server in the one of its next
    ///    step); then the winner is the lowest index at the highest level (one set of
    ///    indexes per level `o ≥ 0`, lowest found with a find-first over a bitset of
    ///    bitsets) and goes one level down. Ties go to the lowest index as in HAProxy's
    ///    `v > max`; the tests hold [`StaticRr::map_walk`] as the reference.
    ///
    /// At 10,000 servers of weights 1 to 4 (25,000 slots) the walk visits 2.5 × 10⁸
    /// server-slots per build, and a build happens at every server going down or up.
    pub fn map(weights: &[u32]) -> Vec<usize> {
        if weights.iter().all(|&w| w <= 1) {
            // Every usable server of weight 1: at slot k every server not placed yet
            // scores k + 1 and reads (k + 1 + total) / total = 1 (2 at the last slot),
            // every placed one scores k + 1 − total and reads 0, so the first server not
            // yet placed takes the slot: the usable servers in index order
            // (`map_walk` gives the same, checked in the tests).
            return (0..weights.len()).filter(|&i| weights[i] == 1).collect();
        }
        Self::map_by_levels(weights)
    }

    /// The map by levels of slots owed (see [`StaticRr::map`]).
    fn map_by_levels(weights: &[u32]) -> Vec<usize> {
        const NONE: u32 = u32::MAX;
        let n = weights.len();
        assert!(u32::try_from(n).is_ok_and(|n| n < NONE), "too many servers");
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let slots = usize::try_from(total).expect("a map of more slots than addresses");
        // The slot of server i's next step up (⌈j·T/w⌉ for its j-th): `first[slot]` heads
        // a list linked through `next`.
        let step = |j: u64, w: u32| (j * total).div_ceil(u64::from(w)) as usize;
        let mut first = vec![NONE; slots + 1];
        let mut next = vec![NONE; n];
        let mut steps = vec![0u32; n];
        // Each server's level, `o + 1` (`o ≥ −1`): level `l ≥ 1` is the set `levels[l − 1]`
        // (of `counts[l − 1]` servers), level 0 ("one slot ahead") is in no set. Every
        // usable server owes 0 at the start.
        let mut level = vec![1usize; n];
        let mut levels = vec![IndexSet::new(n)];
        let mut counts = vec![0usize];
        for (i, &w) in weights.iter().enumerate() {
            if w > 0 {
                levels[0].insert(i);
                counts[0] += 1;
                let at = step(1, w);
                next[i] = first[at];
                first[at] = i as u32;
            }
        }
        let set = |levels: &mut Vec<IndexSet>, counts: &mut Vec<usize>, level: usize, i| {
            if level == 0 {
                return;
            }
            if levels.len() < level {
                levels.resize_with(level, || IndexSet::new(n));
                counts.resize(level, 0);
            }
            levels[level - 1].insert(i);
            counts[level - 1] += 1;
        };
        let unset = |levels: &mut [IndexSet], counts: &mut [usize], level: usize, i| {
            if level > 0 {
                levels[level - 1].remove(i);
                counts[level - 1] -= 1;
            }
        };
        let mut top = 0;
        let mut map = Vec::with_capacity(slots);
        for k in 1..=slots {
            let mut at = first[k];
            while at != NONE {
                let i = at as usize;
                at = next[i];
                unset(&mut levels, &mut counts, level[i], i);
                level[i] += 1;
                set(&mut levels, &mut counts, level[i], i);
                top = top.max(level[i] - 1);
                steps[i] += 1;
                if steps[i] < weights[i] {
                    let later = step(u64::from(steps[i]) + 1, weights[i]);
                    next[i] = first[later];
                    first[later] = i as u32;
                }
            }
            while counts[top] == 0 {
                top -= 1;
            }
            let i = levels[top].first().expect("a level counted nonempty");
            unset(&mut levels, &mut counts, level[i], i);
            level[i] -= 1;
            set(&mut levels, &mut counts, level[i], i);
            map.push(i);
        }
        map
    }

    /// HAProxy's `recalc_server_map` loop itself, O(slots × servers): the reference
    /// [`StaticRr::map`] is tested against (and benchmarked beside).
    pub fn map_walk(weights: &[u32]) -> Vec<usize> {
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
        self.map = shared("StaticRr::map", [0, 0], &eweights, Self::map);
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

    /// Balancers over the same servers hold one map, each with its own place in it; one
    /// whose view differs builds its own.
    #[test]
    fn balancers_share_the_map_of_the_same_servers() {
        let mut rr: Vec<StaticRr> = (0..3).map(|_| StaticRr::default()).collect();
        let all = Backends::new(&[3, 1, 2]);
        let mut one_down = Backends::new(&[3, 1, 2]);
        one_down.set_up(0, false);
        rr[0].slots(&all);
        rr[1].slots(&all);
        rr[2].slots(&one_down);
        assert!(Arc::ptr_eq(&rr[0].map, &rr[1].map));
        assert!(!Arc::ptr_eq(&rr[0].map, &rr[2].map) && !rr[2].map.contains(&0));
        let ctx = PickContext::new(crate::time::Nanos(0), 0);
        let map = Arc::clone(&rr[0].map);
        let two = (rr[0].pick(&all, &ctx), rr[0].pick(&all, &ctx));
        assert_eq!(two, (Some(map[0]), Some(map[1])));
        assert_eq!(
            rr[1].pick(&all, &ctx),
            Some(map[0]),
            "its own place in the map"
        );
    }

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

    /// The map by levels is HAProxy's loop's, slot for slot: weights 0, a single server,
    /// very unequal weights, weights that make a server owe two slots (`v = 3`: {1, 1, 3,
    /// 10} and {1, 1, 1, 2, 7}), and a map of a few million slots (against a loop of
    /// 8 servers there, to keep the walk short).
    #[test]
    fn map_by_levels_is_haproxys_loop() {
        let cases: [&[u32]; 12] = [
            &[5],
            &[0, 7, 0],
            &[1, 1, 3, 10],
            &[1, 1, 1, 2, 7],
            &[1, 256, 1, 1, 256, 1],
            &[256, 1, 1, 1, 1, 1, 1, 1, 1],
            &[3, 3, 2, 2, 2, 2, 2, 2],
            &[2, 4, 0, 6],
            &[0, 0, 0, 2],
            &[1_000_000, 1, 2_000_000, 3, 999_999, 0, 7, 500_000],
            &[1, 2],
            &[300, 0, 0, 299, 1],
        ];
        for w in cases {
            assert_eq!(StaticRr::map_by_levels(w), StaticRr::map_walk(w), "{w:?}");
        }
        let w: Vec<u32> = (0..2_000u32).map(|i| 1 + i % 4).collect();
        assert_eq!(StaticRr::map(&w), StaticRr::map_walk(&w));
    }

    #[test]
    fn index_set_finds_the_lowest() {
        for bound in [1, 63, 64, 65, 4_096, 4_097, 300_000] {
            let mut set = IndexSet::new(bound);
            assert_eq!(set.first(), None);
            let mut present = std::collections::BTreeSet::new();
            for (step, i) in (0..bound).rev().step_by(bound / 7 + 1).enumerate() {
                set.insert(i);
                present.insert(i);
                if step % 3 == 2 {
                    let low = *present.first().unwrap();
                    set.remove(low);
                    present.remove(&low);
                }
                assert_eq!(set.first(), present.first().copied(), "{bound} {i}");
            }
            while let Some(low) = present.pop_first() {
                assert_eq!(set.first(), Some(low));
                set.remove(low);
            }
            assert_eq!(set.first(), None);
        }
    }

    proptest::proptest! {
        /// The map by levels is the one HAProxy's loop builds, for weight vectors of 1 to
        /// 200 servers of weights 0 to 300, often with many zeros or ones.
        #[test]
        fn map_is_haproxys_loop(
            weights in proptest::collection::vec(
                proptest::prop_oneof![0u32..=300, 0u32..=1, 0u32..=4, proptest::strategy::Just(0u32)],
                1..200,
            ),
        ) {
            proptest::prop_assert_eq!(StaticRr::map(&weights), StaticRr::map_walk(&weights));
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
