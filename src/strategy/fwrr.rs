//! HAProxy `balance roundrobin`: HAProxy's "fast weighted round robin", exactly as
//! HAProxy 2.6's `src/lb_fwrr.c` (`fwrr_get_next_server`, `fwrr_get_server_from_group`,
//! `fwrr_update_position`, `fwrr_queue_srv`, `fwrr_switch_trees`,
//! `fwrr_set_server_status_up`/`_down`, `fwrr_init_server_groups`).
//!
//! Each server's effective weight is `eweight = 16 × weight` (`BE_WEIGHT_SCALE`,
//! `include/haproxy/backend-t.h`; `lbprm.wmult` stays 1 for this algorithm). A window of
//! `W = Σ eweight` positions runs from `curr_pos = W`; each pick advances `curr_pos` by
//! one. Servers wait in three ebtrees: `init` (not yet placed in this window, heaviest
//! first: key `4096 − eweight`), `curr` (placed at position `npos`, key
//! `256 × npos + (4096 + rweight − eweight) / 16`, so at equal positions heavier servers
//! come first) and `next` (beyond the window). A pick takes the first server of `curr` if
//! its position has come (`npos ≤ curr_pos`), else the first of `init` (placed at
//! `curr_pos`), else the first of `curr` anyway; when `curr` and `init` are both empty the
//! trees switch (`next` becomes `init`). The picked server moves on by `W / eweight`
//! positions, carrying the remainder in `rweight`, and goes back to `curr`, or to `next`
//! when it leaves the window (`npos ≥ 2W` or `npos ≥ curr_weight + next_weight`).
//! Equal keys keep insertion order (ebtree duplicates are appended last).
//!
//! So weights {3, 2, 1} give `a b a c a b` repeated, and {5, 1, 1} `a a a b a a c` — not
//! nginx's smooth WRR (`a b a c b a`, `a a b a c a a`) nor `static_rr`'s map. Over any `W`
//! consecutive picks every server is picked its weight's number of times give or take one
//! (the property tests check it), but the sequence need not repeat every `W` picks.
//!
//! A server going down leaves the trees (`fwrr_set_server_status_down`); one coming back
//! is placed at `curr_pos + (next_weight + curr_weight − curr_pos) / eweight`
//! (`fwrr_set_server_status_up`). Changes are applied as the balancer's view reports them
//! ([`Strategy::on_view`]), in event order, as HAProxy applies health-check transitions.
//! The trees are built at the first pick from the view then: a server already down is left
//! out, as a server HAProxy starts `disabled`.
//! HAProxy's `maxconn` queueing and `backup` servers are not modelled (lbsim's generated
//! configurations set neither). HAProxy accepts weights 0–256; beyond (which `--via haproxy`
//! refuses) the same arithmetic continues in 64 bits. The sequences in the tests below were
//! derived from the C code and confirmed against HAProxy 2.6.12's own picks
//! (`tests/live_proxies.rs` compares them on every run).

use super::registry::{About, Parameterless, PickCost, Reads, Split};
use super::run_heap::RunHeap;
use super::{Backend, Backends, PickContext, Strategy};

/// `BE_WEIGHT_SCALE`: effective weight per unit of configured weight.
const BE_WEIGHT_SCALE: i64 = 16;
/// `SRV_UWGHT_RANGE`: HAProxy's largest configured weight.
const SRV_UWGHT_RANGE: i64 = 256;
/// `SRV_EWGHT_MAX`.
const SRV_EWGHT_MAX: i64 = SRV_UWGHT_RANGE * BE_WEIGHT_SCALE;
/// The `curr` tree (trees 0 and 1 are `init` and `next` in turn).
const CURR: usize = 2;

/// One server's `struct server` fields that FWRR uses.
#[derive(Clone, Copy, Debug, Default)]
struct Srv {
    /// `cur_eweight`: 16 × weight while usable, 0 otherwise.
    eweight: i64,
    /// `npos`: next position.
    npos: i64,
    /// `lpos`: last position.
    lpos: i64,
    /// `rweight`: remainder of `W / eweight` carried over.
    rweight: i64,
    /// `lb_tree`: the tree it belongs to (kept while briefly dequeued, as in C).
    tree: Option<usize>,
    /// Its node in that tree, while queued: (key, insertion number).
    node: Option<(i64, u64)>,
    /// The view last applied: (up, weight).
    seen: (bool, u32),
}

/// HAProxy `roundrobin` (FWRR).
#[derive(Debug, Default)]
pub struct Fwrr {
    srv: Vec<Srv>,
    /// `t0`, `t1`, `curr`.
    trees: [Tree; 3],
    /// Which of `t0`/`t1` is `init` (the other is `next`).
    init: usize,
    curr_pos: i64,
    curr_weight: i64,
    next_weight: i64,
    /// Usable servers (`srv_act`).
    active: usize,
    /// Insertion counter: equal keys keep insertion order.
    inserted: u64,
    /// Whether the groups were initialised from a view.
    ready: bool,
}

/// A tree's entry: (key, insertion number, server); the insertion number is unique.
type Entry = (i64, u64, usize);

/// One of FWRR's ebtrees: queued servers in order of (key, insertion number), the first
/// the smallest, as ebtree duplicates keep insertion order. With equal weights a picked
/// server moves on by the same `W / eweight` as every other, behind them all, so a pick is
/// O(1) ([`RunHeap`]). An entry is its server's current one only while the server's node
/// ([`Srv::node`]) holds its key and insertion number.
type Tree = RunHeap<Entry>;

/// Whether `e` is its server's current entry.
fn current(e: &Entry, srv: &[Srv]) -> bool {
    srv[e.2].node == Some((e.0, e.1))
}

/// `16 × weight` for a usable server, else 0 (`srv_willbe_usable`).
fn eweight(b: &Backend) -> i64 {
    if b.up {
        i64::from(b.weight) * BE_WEIGHT_SCALE
    } else {
        0
    }
}

impl Fwrr {
    fn next(&self) -> usize {
        1 - self.init
    }

    /// `fwrr_init_server_groups`: every usable server in `init`, in declaration order.
    fn setup(&mut self, backends: &Backends) {
        *self = Fwrr::default();
        self.srv = backends
            .iter()
            .map(|b| Srv {
                eweight: eweight(&b),
                seen: (b.up, b.weight),
                ..Srv::default()
            })
            .collect();
        let total: i64 = self.srv.iter().map(|s| s.eweight).sum();
        self.curr_pos = total;
        self.curr_weight = total;
        self.next_weight = total;
        for i in 0..self.srv.len() {
            if self.srv[i].eweight > 0 {
                self.active += 1;
                let e = self.srv[i].eweight;
                self.queue_by_weight(self.init, i, e);
            }
        }
        self.ready = true;
    }

    fn insert(&mut self, tree: usize, i: usize, key: i64) {
        self.inserted += 1;
        // The node first: the tree may drop stale entries as it inserts.
        self.srv[i].node = Some((key, self.inserted));
        self.srv[i].tree = Some(tree);
        let srv = &self.srv;
        self.trees[tree].insert((key, self.inserted, i), |e| current(e, srv));
    }

    /// `fwrr_dequeue_srv` (the server keeps its `tree`).
    fn dequeue(&mut self, i: usize) {
        if self.srv[i].node.take().is_some() {
            let tree = self.srv[i].tree.expect("a queued server has a tree");
            self.trees[tree].removed();
        }
    }

    /// `fwrr_queue_by_weight`.
    fn queue_by_weight(&mut self, tree: usize, i: usize, next_eweight: i64) {
        self.insert(tree, i, SRV_EWGHT_MAX - next_eweight);
    }

    /// `fwrr_queue_srv`, with the server's `next_eweight`.
    fn queue_srv(&mut self, i: usize, next_eweight: i64) {
        let (cw, nw) = (self.curr_weight, self.next_weight);
        let s = &mut self.srv[i];
        if next_eweight == 0 {
            s.tree = None;
        } else if s.npos >= 2 * cw || s.npos >= cw + nw {
            s.npos -= cw;
            self.queue_by_weight(self.next(), i, next_eweight);
        } else {
            let key = SRV_UWGHT_RANGE * s.npos
                + (SRV_EWGHT_MAX + s.rweight - next_eweight) / BE_WEIGHT_SCALE;
            self.insert(CURR, i, key);
        }
    }

    /// `fwrr_get_srv`: prepares a server taken out of its tree.
    fn get_srv(&mut self, i: usize) {
        let (init, next, cw, cp) = (self.init, self.next(), self.curr_weight, self.curr_pos);
        let s = &mut self.srv[i];
        match s.tree {
            Some(t) if t == init => {
                s.npos = 0;
                s.rweight = 0;
            }
            Some(t) if t == next => s.npos += cw,
            None => s.npos = cp,
            Some(_) => {}
        }
    }

    /// `fwrr_get_server_from_group`.
    fn server_from_group(&mut self) -> Option<usize> {
        let srv = &self.srv;
        let s1 = self.trees[CURR].first(|e| current(e, srv)).map(|e| e.2);
        if let Some(i) = s1
            && self.srv[i].eweight != 0
            && self.srv[i].npos <= self.curr_pos
        {
            return Some(i);
        }
        if let Some(j) = self.trees[self.init]
            .first(|e| current(e, srv))
            .map(|e| e.2)
            && self.srv[j].eweight != 0
        {
            self.srv[j].npos = 0;
            self.srv[j].rweight = 0;
            return Some(j);
        }
        s1
    }

    /// `fwrr_update_position`.
    fn update_position(&mut self, i: usize) {
        let (cp, nw) = (self.curr_pos, self.next_weight);
        let s = &mut self.srv[i];
        let e = s.eweight;
        if e == 0 {
            return;
        }
        if s.npos == 0 {
            s.npos = cp;
        }
        s.lpos = s.npos;
        s.npos += nw / e;
        s.rweight += nw % e;
        if s.rweight >= e {
            s.rweight -= e;
            s.npos += 1;
        }
    }

    /// `fwrr_get_next_server`, without `maxconn` saturation.
    fn next_server(&mut self) -> Option<usize> {
        if self.active == 0 {
            return None;
        }
        if self.curr_weight == 0 {
            self.curr_pos = self.next_weight;
            self.curr_weight = self.next_weight;
        }
        let mut switched = false;
        let i = loop {
            if let Some(i) = self.server_from_group() {
                break i;
            }
            if switched {
                return None;
            }
            switched = true;
            // `fwrr_switch_trees`.
            self.init = self.next();
            self.curr_weight = self.next_weight;
            self.curr_pos = self.curr_weight;
        };
        self.update_position(i);
        self.dequeue(i);
        self.curr_pos += 1;
        let e = self.srv[i].eweight;
        self.queue_srv(i, e);
        Some(i)
    }

    /// Applies a change of backend `i`'s view, as `fwrr_update_server_weight` (which
    /// hands state changes to `fwrr_set_server_status_up`/`_down`) does.
    fn apply(&mut self, i: usize, view: &Backend) {
        let Some(s) = self.srv.get_mut(i) else {
            return;
        };
        if s.seen == (view.up, view.weight) {
            return;
        }
        s.seen = (view.up, view.weight);
        let (old, new) = (s.eweight, eweight(view));
        match (old != 0, new != 0) {
            (false, false) => {}
            (true, false) => {
                // `fwrr_set_server_status_down`.
                self.next_weight -= old;
                self.active -= 1;
                self.dequeue(i);
                self.srv[i].tree = None;
                self.srv[i].eweight = 0;
            }
            (false, true) => {
                // `fwrr_set_server_status_up`.
                self.next_weight += new;
                self.active += 1;
                self.get_srv(i);
                self.srv[i].npos =
                    self.curr_pos + (self.next_weight + self.curr_weight - self.curr_pos) / new;
                self.queue_srv(i, new);
                self.srv[i].eweight = new;
            }
            (true, true) if old != new => {
                // `fwrr_update_server_weight`, weight changed while usable.
                self.next_weight += new - old;
                let tree = self.srv[i].tree;
                if tree == Some(self.init) {
                    self.dequeue(i);
                    self.queue_by_weight(self.init, i, new);
                } else if tree.is_none() {
                    self.dequeue(i);
                    self.get_srv(i);
                    self.srv[i].npos =
                        self.curr_pos + (self.next_weight + self.curr_weight - self.curr_pos) / new;
                    self.queue_srv(i, new);
                } else {
                    self.get_srv(i);
                    let (cp, nw) = (self.curr_pos, self.next_weight);
                    let s = &mut self.srv[i];
                    let prev_next = s.npos;
                    let step = nw / new;
                    s.npos = (s.lpos + step).min(prev_next);
                    s.rweight = 0;
                    if s.npos < cp + 2 {
                        s.npos = cp + step;
                    }
                    self.dequeue(i);
                    self.queue_srv(i, new);
                }
                self.srv[i].eweight = new;
            }
            (true, true) => {}
        }
    }
}

impl Strategy for Fwrr {
    fn pick(&mut self, backends: &Backends, _ctx: &PickContext) -> Option<usize> {
        if !self.ready || self.srv.len() != backends.len() {
            // A new backend list: HAProxy starts afresh on a new configuration.
            self.setup(backends);
        }
        self.next_server()
    }

    fn indexes_view(&self) -> bool {
        true
    }

    fn indexes_in_flight(&self) -> bool {
        // HAProxy's FWRR reads weights and states, never counts.
        false
    }

    fn on_view(&mut self, backend: usize, view: &Backend) {
        if self.ready {
            self.apply(backend, view);
        }
    }
}

/// `kind = "fwrr"`: no parameters.
impl Parameterless for Fwrr {
    const ABOUT: About = About {
        kind: "fwrr",
        aliases: &["haproxy_roundrobin"],
        follows: "HAProxy balance roundrobin (lb_fwrr.c, HAProxy 2.6: fast weighted round robin, its exact order)",
        knobs: &[],
        reads: Reads::WEIGHTS,
        split: Split::Weights,
    };
    const COST: PickCost = PickCost::CONSTANT;
    fn start(_: usize, _: crate::rng::SimRng) -> Fwrr {
        Fwrr::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Balancer;
    use crate::strategy::testing::{self, down_and_up, picks};
    use proptest::prelude::*;

    fn letters(weights: &[u32], n: usize) -> String {
        let mut b = Balancer::new(Box::new(Fwrr::default()), weights);
        testing::letters(&picks(&mut b, n))
    }

    /// Weights 3:2:1 by hand from `lb_fwrr.c`: eweights 48, 32, 16, W = 96, steps
    /// 96/48 = 2, 96/32 = 3, 96/16 = 6; `curr_pos` starts at 96.
    /// 1. `curr` empty: `init`'s first (heaviest) a; npos 96 → 98; curr_pos 97.
    /// 2. a waits (98 > 97): `init`'s b; 97 → 100; curr_pos 98.
    /// 3. a (98 ≤ 98) → 100; curr_pos 99.
    /// 4. a waits (100 > 99): `init`'s c; 99 → 105; curr_pos 100.
    /// 5. a and b both at 100: keys 256·100 + (4096−48)/16 = 25853 and 25854, a
    ///    first; a → 102; curr_pos 101.
    /// 6. b (100) → 103; curr_pos 102. 7. a (102) → 104; … and so on: `abacab` again.
    ///
    /// HAProxy 2.6.12 gives the same (`abacababacab…`).
    #[test]
    fn weights_3_2_1_by_hand() {
        assert_eq!(letters(&[3, 2, 1], 24), "abacab".repeat(4));
    }

    /// 5:1:1: eweights 80, 16, 16, W = 112, steps 112/80 = 1 remainder 32 (a
    /// advances 1 or 2), 7, 7. a at 112 → 113 (rweight 32); init's b at 113 → 120 …
    /// HAProxy 2.6.12: `aaabaac` repeated.
    #[test]
    fn weights_5_1_1() {
        assert_eq!(letters(&[5, 1, 1], 28), "aaabaac".repeat(4));
    }

    #[test]
    fn equal_weights_take_servers_in_declaration_order() {
        assert_eq!(letters(&[1, 1, 1], 9), "abcabcabc");
        assert_eq!(letters(&[7, 7, 7, 7], 8), "abcdabcd");
    }

    /// `scenarios/l4-persistent-connections.toml`'s weights, as HAProxy 2.6.12 picked
    /// them: not periodic in 18 (a gets 4 of the first 18).
    #[test]
    fn l4_scenario_weights_as_haproxy_picks_them() {
        assert_eq!(
            letters(&[3, 3, 2, 2, 2, 2, 2, 2], 24),
            "abcdefabghcadbefgahbcdef"
        );
    }

    /// Down and up, as HAProxy 2.6.12 did with `disable server` / `enable server` on its
    /// admin socket between connections (weights 3:2:1).
    #[test]
    fn a_server_going_down_and_up() {
        let s = down_and_up(Box::new(Fwrr::default()), &[3, 2, 1], (5, 4, 8));
        assert_eq!(s, HAPROXY_DOWN_UP);
    }

    /// What HAProxy 2.6.12 picked in [`a_server_going_down_and_up`].
    const HAPROXY_DOWN_UP: &str = "abacabbbbcababaca";

    /// A returning server can starve another for many windows: weights 4:1, the first
    /// down after 5 picks and back after 7 more, is placed at `curr_pos + (next_weight +
    /// curr_weight − curr_pos) / eweight`, behind which b waits far ahead in `curr`.
    /// HAProxy 2.6.12 sent the next 58 connections to a (b normally gets one in five).
    #[test]
    fn a_returning_server_starves_another_as_haproxy_does() {
        let s = down_and_up(Box::new(Fwrr::default()), &[4, 1], (5, 7, 80));
        let haproxy = format!("aaaabbbbbbbb{}baaaabaaaabaaaabaaaaba", "a".repeat(58));
        assert_eq!(s, haproxy);
    }

    #[test]
    fn weight_zero_and_down_servers_are_never_picked() {
        let mut b = Balancer::new(Box::new(Fwrr::default()), &[2, 0, 1]);
        assert!(!picks(&mut b, 30).contains(&1));
        let mut b = Balancer::new(Box::new(Fwrr::default()), &[1, 1]);
        b.set_up(0, false);
        b.set_up(1, false);
        assert_eq!(b.route(crate::time::Nanos(0), 0), None);
        b.set_up(1, true);
        assert_eq!(picks(&mut b, 3), [1, 1, 1]);
    }

    proptest! {
        /// Over every `W` consecutive picks (W = Σ weights) each server is picked its
        /// weight's number of times, give or take one; so shares are the weights'.
        #[test]
        fn every_window_of_total_weight_picks_follows_the_weights(
            weights in proptest::collection::vec(
                prop_oneof![1u32..=8, 1u32..=256], 1..12),
        ) {
            let total: u32 = weights.iter().sum();
            let n = (3 * total as usize).min(4000);
            let mut b = Balancer::new(Box::new(Fwrr::default()), &weights);
            let seq = picks(&mut b, n);
            let w = total as usize;
            prop_assume!(n >= w);
            let mut count = vec![0i64; weights.len()];
            for &i in &seq[..w] {
                count[i] += 1;
            }
            for start in 0..=(n - w) {
                if start > 0 {
                    count[seq[start - 1]] -= 1;
                    count[seq[start + w - 1]] += 1;
                }
                for (i, &c) in count.iter().enumerate() {
                    prop_assert!(
                        (c - i64::from(weights[i])).abs() <= 1,
                        "window at {start}: server {i} picked {c} times, weight {}",
                        weights[i]
                    );
                }
            }
        }

        /// With servers going down and up, a down server is never picked and, once the
        /// set is stable again, windows follow the weights of those up — but only after a
        /// while: HAProxy may leave a returning server placed up to two windows of `16 W`
        /// positions ahead, and the position moves by one a pick (see
        /// `a_returning_server_starves_another_as_haproxy_does`). So: 34 W picks to settle.
        #[test]
        fn down_servers_are_skipped_and_shares_recover(
            weights in proptest::collection::vec(1u32..=16, 2..8),
            changes in proptest::collection::vec((any::<usize>(), any::<bool>(), 0usize..20), 0..12),
        ) {
            let mut b = Balancer::new(Box::new(Fwrr::default()), &weights);
            let n = weights.len();
            for (k, up, gap) in changes {
                b.set_up(k % n, up);
                for _ in 0..gap {
                    match b.route(crate::time::Nanos(0), 0) {
                        Some(i) => {
                            prop_assert!(b.backends().up(i));
                            b.complete(i, crate::time::Nanos(1), crate::strategy::Outcome::Ok, crate::time::Nanos(0));
                        }
                        None => prop_assert!(b.backends().iter().all(|x| !x.up)),
                    }
                }
            }
            b.set_up(0, true);
            let up: Vec<bool> = b.backends().iter().map(|x| x.up).collect();
            let total: u32 = weights.iter().zip(&up).filter(|(_, u)| **u).map(|(w, _)| w).sum();
            let w = total as usize;
            let seq = picks(&mut b, 35 * w);
            let mut count = vec![0i64; n];
            for &i in &seq[34 * w..] {
                count[i] += 1;
            }
            for i in 0..n {
                let want = if up[i] { i64::from(weights[i]) } else { 0 };
                prop_assert!((count[i] - want).abs() <= 1, "server {i}: {} picks, weight {want}", count[i]);
            }
        }
    }

    /// Every tree holds exactly one current entry per server queued in it, however many
    /// stale ones flapping servers leave (enough to make the trees drop them at once).
    fn assert_trees_hold_the_queued(f: &Fwrr) {
        for (t, tree) in f.trees.iter().enumerate() {
            let queued = (f.srv.iter())
                .filter(|s| s.node.is_some() && s.tree == Some(t))
                .count();
            let current = tree.entries().filter(|e| current(e, &f.srv)).count();
            assert_eq!((tree.live(), current), (queued, queued), "tree {t}");
        }
    }

    #[test]
    fn flapping_servers_leave_every_queued_server_in_its_tree() {
        let mut backends = Backends::new(&[1, 2, 1, 3]);
        let mut f = Fwrr::default();
        let ctx = PickContext::new(crate::time::Nanos(0), 0);
        for round in 0..40 {
            crate::strategy::Strategy::pick(&mut f, &backends, &ctx);
            // Flap servers 1 and 2 many times between picks: their entries go stale.
            for k in 0..round * 8 {
                let i = 1 + k % 2;
                backends.set_up(i, k % 4 >= 2);
                crate::strategy::Strategy::on_view(&mut f, i, &backends.at(i));
                assert_trees_hold_the_queued(&f);
            }
        }
        assert!(f.inserted > 3000, "flapped: {}", f.inserted);
    }
}
