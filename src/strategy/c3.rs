//! C3: Suresh, Canini, Schmid, Feldmann, "C3: Cutting Tail Latency in Cloud Data Stores
//! via Adaptive Replica Selection", NSDI 2015 (Cassandra's replica selection).
//!
//! **Replica ranking.** Servers piggyback on every reply their queue size `q` and the
//! request's service time `1/μ` (here: the reply's [`ServerLoad`]); the client keeps
//! exponentially weighted moving averages of them and of the response times `R` it sees,
//! and counts its own outstanding requests `os` per server. It sends each request to the
//! server of lowest
//!
//! ```text
//!   Ψ = R̄ − 1/μ̄ + q̂³ / μ̄,   with   q̂ = 1 + os · n + q̄,
//! ```
//!
//! where `n` (`clients`) compensates for the other clients' requests in flight. The cube
//! penalises long queues far more than slow service, which is what keeps clients from
//! herding onto the fastest server. A server without feedback yet ranks first (Ψ = 0,
//! explored); ties go to a random one of the tied.
//!
//! **Rate control.** Each client limits its sending rate to each server with a cubic
//! controller (as TCP CUBIC): per interval `δ` (`rate_interval`) it may send `srate`
//! requests to a server; on each reply it compares `srate` with the server's receive
//! rate `rrate` (replies in the last interval): below it, `srate` grows along
//! `γ (Δt − ∛(β R₀ / γ))³ + R₀` (`Δt` in ms since the last decrease, `R₀` the rate
//! before it), by at most `s_max` per step; above it, and at least `hysteresis` after the
//! last decrease, `srate` falls to `(1 − β) srate`. Ranking skips servers over their rate.
//!
//! Defaults: `alpha` = 0.9 (weight of the history in each EWMA), `δ` = 20 ms, `β` = 0.2
//! and `s_max` = 10 follow the paper; `γ` = 4·10⁻⁶ (the rate regains `R₀` = 20 about
//! 100 ms after a decrease), `hysteresis` = 2δ and `clients` = 1 are lbsim's. Left out:
//! the backpressure queue — when every server is over its rate, C3 holds the request
//! until a limiter admits it; here it goes to the best-ranked server at once (the
//! simulator's balancers have no client-side queue).
//!
//! **Indexed variant** (`indexed = true`). The ranking scans every server, and its ties
//! (every server not yet heard from scores 0) are broken by reservoir sampling, one draw
//! per tied server in index order: thousands of draws per pick at 10,000 servers, which
//! no index can reproduce without making them. The variant keeps each server's score in a
//! 4-ary tree of minima, as one integer key per server that orders the servers within
//! their rate by score before those over it (the least key is C3's choice, the least
//! score within rate, else the least overall); each node holds the least key under it,
//! how many servers hold it and the first of them. A key is refreshed only for the
//! servers an event touched since the last pick (dispatch, completion, reply feedback,
//! going up or down) and, at each new rate interval, for those that were over their rate
//! (every limiter's interval starts on the same grid of `rate_interval`, and a new
//! interval lets every server take a request). A pick is O(log n): the same rule and the
//! same scores, the least one always chosen, and ties broken with one draw among the tied
//! (the same distribution, other draws): when no two servers tie, the picks are exactly
//! the scan's. Small clusters too: at 10 servers the index cost a request 0.89x the CPU
//! time of the scan (which draws as the default does), measured with 16 keys a node (4
//! cost 0.99x of that).

use std::hint::select_unpredictable;

use rand::RngExt;

use super::registry::{About, Kind, Knob, PickCost, Reads, Split, Ty};
use super::spec::SpecError;
use super::{Backend, Backends, Outcome, PickContext, ServerLoad, Signals, Strategy};
use crate::rng::SimRng;
use crate::time::Nanos;

/// C3's knobs (see the module documentation for their sources).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct C3Config {
    /// Weight of the history in each EWMA (the new sample gets `1 − alpha`).
    pub alpha: f64,
    /// Clients sharing the servers (`n` in `q̂ = 1 + os·n + q̄`).
    pub clients: u32,
    /// Whether the cubic rate control is on.
    pub rate_control: bool,
    /// Rate interval `δ`.
    pub rate_interval: Nanos,
    /// Multiplicative decrease `β`.
    pub beta: f64,
    /// Cubic growth `γ`, in requests per interval per ms³.
    pub gamma: f64,
    /// Largest increase of `srate` per step (requests per interval).
    pub s_max: f64,
    /// Least time between two decreases.
    pub hysteresis: Nanos,
    /// Pick from an index of scores (O(log n)) rather than by a full scan; ties are
    /// broken with one draw (see the module documentation).
    pub indexed: bool,
}

impl Default for C3Config {
    fn default() -> Self {
        C3Config {
            alpha: 0.9,
            clients: 1,
            rate_control: true,
            rate_interval: Nanos::from_secs_f64(0.020),
            beta: 0.2,
            gamma: 4e-6,
            s_max: 10.0,
            hysteresis: Nanos::from_secs_f64(0.040),
            indexed: false,
        }
    }
}

/// What one client knows of one server.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Feedback {
    /// Whether any reply came back yet.
    seen: bool,
    /// EWMA of response times (ns).
    response: f64,
    /// EWMA of service times (ns), `1/μ̄`.
    service: f64,
    /// EWMA of queue sizes.
    queue: f64,
}

/// The part of a server's rate limiter that dispatches and picks read (the cubic's
/// state, read on replies alone, is [`Cubic`]).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Limiter {
    /// Requests allowed per interval.
    srate: f64,
    /// Replies received in the last full interval.
    rrate: f64,
    /// Start of the current interval.
    window: Nanos,
    sent: u32,
    received: u32,
}

/// What one client knows of one server and the server's [`Limiter`]: the state that every
/// event at the server and every pick that scores it reads, in one cache line. Held in
/// two tables, feedback and the whole limiter were two to three lines a server, and at
/// 1,000 servers and more each was a miss.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(align(64))]
struct Peer {
    feedback: Feedback,
    limiter: Limiter,
}

/// The cubic's state of a server's rate limiter, read and set on replies.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Cubic {
    /// Rate before the last decrease, and when it happened.
    r0: f64,
    decreased: Nanos,
    /// `∛(β r0 / γ)`, the cubic's offset, computed when `r0` is set ([`Cubic::set_r0`]):
    /// a cube root on every reply showed in profiles.
    k: f64,
}

impl Cubic {
    /// Sets the rate before the decrease, and the cubic's offset with it.
    fn set_r0(&mut self, r0: f64, cfg: &C3Config) {
        self.r0 = r0;
        self.k = (cfg.beta * r0 / cfg.gamma).cbrt();
    }
}

/// Children of each node of [`ScoreIndex`]'s tree (servers under each lowest node).
/// A pick raises the least score, so the picked server's path is refreshed up to the
/// root, a rescan of its [`Group`] at every level: the least of 4 keys (minima taken
/// with conditional moves) is cheap. Measured (`benches/cost.rs`, `perf stat`, 22 alternating rounds):
/// 4 children cost 0.95× of 16 at 1,000 servers and 0.975× at 10,000 (8: 0.96×,
/// 0.975×); a binary tree cost more (1.02–1.07× of 16, branch-free), and 32 more still.
const FANOUT: usize = 4;

/// A server's key in [`ScoreIndex`] while it is up and within its rate: its score's bits.
/// Scores are finite and never below +0.0 ([`C3::score`]), and for such floats the order
/// of the bits as integers is the order of the values, equality included.
fn within_key(score: f64) -> u64 {
    debug_assert!(
        score.is_finite() && score.is_sign_positive(),
        "score {score}"
    );
    score.to_bits()
}

/// The key of a server that is up but over its rate: above every server within its rate
/// (whose keys have the top bit clear), and among those over their rate in score order.
fn over_key(score: f64) -> u64 {
    within_key(score) | 1 << 63
}

/// The key of a server that is down: in no set (no finite score's key reaches it).
const DOWN_KEY: u64 = u64::MAX;

/// The least of [`FANOUT`] (4) keys and the first slot holding it: two pairs, then their
/// least, each a comparison and conditional moves (which key is least is as random as
/// the scores: a branch would be mispredicted), the first slot carried along (a pair's
/// first on equal keys). Also whether another slot may hold it too: true whenever one
/// does (and sometimes when none does, e.g. two equal keys above the least), tested
/// apart from the least so that it does not lengthen the walk's chain.
#[inline(always)]
fn least_slot(k: &[u64; FANOUT]) -> (u64, usize, bool) {
    const { assert!(FANOUT == 4, "least_slot compares two pairs") };
    let low = k[1] < k[0];
    let a = select_unpredictable(low, k[1], k[0]);
    let high = k[3] < k[2];
    let b = select_unpredictable(high, k[3], k[2]);
    let right = b < a;
    let slot = select_unpredictable(right, 2 + usize::from(high), usize::from(low));
    let maybe_tied = (a == b) | (k[0] == k[1]) | (k[2] == k[3]);
    (select_unpredictable(right, b, a), slot, maybe_tied)
}

/// How many servers hold a node's least key (the low 32 bits), and the first of them in
/// index order (the high 32 bits): one word, which a walk compares, moves and stores
/// whole (as two `u32` fields, the walk's compare and store were two each, and the
/// compare first packed the two: 6 instructions more a level).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held(u64);

impl Held {
    const NONE: Held = Held::new(0, u32::MAX);

    const fn new(count: u32, first: u32) -> Held {
        Held(count as u64 | (first as u64) << 32)
    }

    fn count(self) -> u32 {
        self.0 as u32
    }

    fn first(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The same first holder, `count` holders.
    fn with_count(self, count: u32) -> Held {
        Held(self.0 & !u64::from(u32::MAX) | u64::from(count))
    }
}

/// The least key of a set of servers, how many servers hold it, and the first of them in
/// index order (`count` 0, [`Least::NONE`]: no server, all down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Least {
    key: u64,
    count: u32,
    first: u32,
}

impl Least {
    const NONE: Least = Least {
        key: DOWN_KEY,
        count: 0,
        first: u32::MAX,
    };

    /// The least of consecutive keys, the first of which is server `base`'s.
    fn of_keys(keys: &[u64; FANOUT], base: usize) -> Least {
        let (key, slot, maybe_tied) = least_slot(keys);
        if key == DOWN_KEY {
            return Least::NONE;
        }
        let count = if maybe_tied {
            keys.iter().filter(|&&k| k == key).count() as u32
        } else {
            1
        };
        Least {
            key,
            count,
            first: (base + slot) as u32,
        }
    }
}

/// [`FANOUT`] consecutive nodes of one level of [`ScoreIndex`]: their keys, and how many
/// servers hold each and the first of them. A group is the
/// children of one node of the level above, and one cache line: a walk up the tree reads
/// and writes one line a level.
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
struct Group {
    keys: [u64; FANOUT],
    held: [Held; FANOUT],
}

impl Group {
    const NONE: Group = Group {
        keys: [DOWN_KEY; FANOUT],
        held: [Held::NONE; FANOUT],
    };

    /// Entry `slot` (below [`FANOUT`]).
    fn get(&self, slot: usize) -> Least {
        let held = self.held[slot];
        Least {
            key: self.keys[slot],
            count: held.count(),
            first: held.first(),
        }
    }

    /// [`Group::least_held`] as a [`Least`].
    #[cfg(test)]
    fn least(&self) -> Least {
        let (key, held) = self.least_held();
        Least {
            key,
            count: held.count(),
            first: held.first(),
        }
    }

    /// The least of the entries, their parent node, as its key and holders: the first
    /// slot holding the least key ([`least_slot`]) gives the first server, and its count
    /// unless another slot may hold the key too (then the holders' counts are summed).
    ///
    /// A group of nodes over servers all down needs no case of its own: a node of
    /// [`DOWN_KEY`] is [`Least::NONE`] (a padding node, one over keys all down
    /// ([`Least::of_keys`]), and by induction one over such nodes), so the first slot
    /// holds it, the count summed over the whole group is 0 servers and the first of them
    /// `u32::MAX`: the least is [`Least::NONE`] again.
    #[inline(always)]
    fn least_held(&self) -> (u64, Held) {
        let (key, slot, maybe_tied) = least_slot(&self.keys);
        let held = self.held[slot];
        if maybe_tied {
            let count = (0..FANOUT)
                .filter(|&j| self.keys[j] == key)
                .map(|j| self.held[j].count())
                .sum();
            return (key, held.with_count(count));
        }
        (key, held)
    }
}

/// The indexed variant's scores: per server a key (up and within its rate: its score;
/// up and over its rate: its score above all of those; down: none, see [`within_key`]),
/// so that the least key is the server that C3 picks: the least score within rate, else
/// the least overall. Over the keys a tree of [`FANOUT`] children per node, each node the
/// [`Least`] key of the servers under it.
///
/// Level 1 has a node per [`FANOUT`] servers, level `j + 1` a node per [`Group`] of level
/// `j`, up to a level of one group, whose least is the root. A change of a server's key
/// is carried up one level at a time, as the least of the keys or group it changed, and
/// stops at the first node that is unchanged: nothing above it changes either. The
/// servers' keys are a table of their own, 8 bytes a server, not [`Group`]s (the
/// count and first of one server are known): 945 instructions a pick at 10,000 servers
/// with them in groups, 903 apart.
#[derive(Debug)]
struct ScoreIndex {
    /// Servers indexed (the view's length when built).
    n: usize,
    /// Per server its key; [`DOWN_KEY`] beyond `n` up to a whole number of groups.
    keys: Vec<u64>,
    /// Every level's groups of nodes, level after level (padded with [`Least::NONE`] to
    /// whole groups); level 1 has a node per [`FANOUT`] servers.
    groups: Vec<Group>,
    /// Where each level of nodes starts in `groups`, from level 1: node `e` of a level is
    /// slot `e % FANOUT` of group `starts[k] + e / FANOUT`, and node `e` of the level
    /// above is the least of group `starts[k] + e` (of level 1, the least of servers
    /// `FANOUT·e` on). No level when [`FANOUT`] servers or fewer: the root is their least.
    starts: Vec<usize>,
    /// The least of the last level's group (or of the servers, with no level): the least
    /// key of all.
    root: Least,
    /// Servers whose entry is stale: an event touched them since the last pick.
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
    /// Servers over their rate when last refreshed: in again at the next interval.
    over: Vec<u32>,
    is_over: Vec<bool>,
    /// The rate interval (`now / rate_interval`) of the last pick.
    interval: u64,
}

impl ScoreIndex {
    /// An index over `n` servers, every entry stale.
    fn new(n: usize) -> ScoreIndex {
        // Groups per level of nodes, up to the one group of the last.
        let servers = n.div_ceil(FANOUT).max(1);
        let mut widths = Vec::new();
        let mut entries = servers;
        while entries > 1 {
            entries = entries.div_ceil(FANOUT);
            widths.push(entries);
        }
        let starts = widths
            .iter()
            .scan(0, |start, &w| {
                let at = *start;
                *start += w;
                Some(at)
            })
            .collect();
        ScoreIndex {
            n,
            keys: vec![DOWN_KEY; servers * FANOUT],
            groups: vec![Group::NONE; widths.iter().sum()],
            starts,
            root: Least::NONE,
            dirty: (0..n as u32).rev().collect(),
            is_dirty: vec![true; n],
            over: Vec::new(),
            is_over: vec![false; n],
            interval: u64::MAX,
        }
    }

    fn touch(&mut self, i: usize) {
        if i < self.n && !self.is_dirty[i] {
            self.is_dirty[i] = true;
            self.dirty.push(i as u32);
        }
    }

    /// The least key of all, how many servers hold it and the first of them.
    fn root(&self) -> Least {
        self.root
    }

    /// Sets server `i`'s key, then its ancestors, up to the first that does not change.
    fn set(&mut self, i: usize, key: u64) {
        let old = std::mem::replace(&mut self.keys[i], key);
        if old == key {
            return;
        }
        let mut entry = i / FANOUT;
        let keys = self.keys[entry * FANOUT..][..FANOUT].try_into();
        let leaf = Least::of_keys(keys.expect("whole groups"), entry * FANOUT);
        let (mut key, mut held) = (leaf.key, Held::new(leaf.count, leaf.first));
        for &start in &self.starts {
            let group = &mut self.groups[start + entry / FANOUT];
            let slot = entry % FANOUT;
            if group.keys[slot] == key && group.held[slot] == held {
                return;
            }
            group.keys[slot] = key;
            group.held[slot] = held;
            (key, held) = group.least_held();
            entry /= FANOUT;
        }
        self.root = Least {
            key,
            count: held.count(),
            first: held.first(),
        };
    }

    /// The server holding the `rank`-th (from 0, in index order) least key.
    fn select(&self, mut rank: u32) -> usize {
        let root = self.root;
        debug_assert!(rank < root.count, "rank {rank} of {}", root.count);
        if rank == 0 {
            return root.first as usize;
        }
        // Down from the root: into the entry whose holders include the rank-th.
        let mut entry = 0;
        for &start in self.starts.iter().rev() {
            let group = &self.groups[start + entry];
            let mut held = (0..FANOUT)
                .map(|slot| (slot, group.get(slot)))
                .filter(|(_, e)| e.key == root.key);
            let slot = loop {
                let (slot, e) = held.next().expect("the tree counts the tied servers");
                if rank < e.count {
                    break slot;
                }
                rank -= e.count;
            };
            entry = entry * FANOUT + slot;
        }
        let keys = &self.keys[entry * FANOUT..(entry + 1) * FANOUT];
        let mut tied = keys.iter().enumerate().filter(|&(_, &k)| k == root.key);
        let (c, _) = tied
            .nth(rank as usize)
            .expect("the tree counts the tied servers");
        entry * FANOUT + c
    }
}

/// The C3 balancer of one client.
#[derive(Debug)]
pub struct C3 {
    cfg: C3Config,
    /// Per server its feedback and limiter ([`Peer`]), and its cubic's state.
    peers: Vec<Peer>,
    cubics: Vec<Cubic>,
    rng: SimRng,
    /// The indexed variant's scores (built at its first pick); boxed, so that taking it
    /// out for a pick moves a pointer, not the whole index (that copy showed in profiles).
    index: Option<Box<ScoreIndex>>,
}

impl C3 {
    /// C3 over `n` backends (grows on demand), ties drawn from `rng`.
    pub fn new(cfg: C3Config, n: usize, rng: SimRng) -> C3 {
        let mut c = C3 {
            cfg,
            peers: Vec::new(),
            cubics: Vec::new(),
            rng,
            index: None,
        };
        c.grow(n);
        c
    }

    /// Makes room for `n` servers: the test inline, the growth out of line (every event
    /// asks; inlined, the growth's code gave each handler a large stack frame).
    #[inline(always)]
    fn grow(&mut self, n: usize) {
        if self.peers.len() < n {
            self.grow_to(n);
        }
    }

    #[cold]
    #[inline(never)]
    fn grow_to(&mut self, n: usize) {
        let peer = Peer {
            feedback: Feedback::default(),
            limiter: Limiter {
                srate: self.cfg.s_max,
                rrate: 0.0,
                window: Nanos::ZERO,
                sent: 0,
                received: 0,
            },
        };
        let mut cubic = Cubic {
            r0: 0.0,
            decreased: Nanos::ZERO,
            k: 0.0,
        };
        cubic.set_r0(self.cfg.s_max, &self.cfg);
        self.peers.resize(n, peer);
        self.cubics.resize(n, cubic);
    }

    /// Server `i`'s score Ψ given `os` requests of this client outstanding there.
    ///
    /// Always finite and never below +0.0 (the index's keys rely on it, see
    /// `within_key`): every input is a count or a time, so `R̄`, `1/μ̄` and `q̄` are
    /// at least 0 and `q̂ ≥ 1`; rounding is monotonic, so `R̄ − 1/μ̄ ≥ −1/μ̄` and
    /// `q̂³/μ̄ ≥ 1/μ̄`, and their sum is at least 0 (an exact 0 is +0.0). It stays
    /// below 10⁸⁰ (`q̂ < 2·10¹⁹` from u32 counts, `1/μ̄ < 2·10¹⁹` ns).
    pub fn score(&self, i: usize, os: u32) -> f64 {
        let f = self.peers.get(i).map(|p| p.feedback).unwrap_or_default();
        if !f.seen {
            return 0.0;
        }
        let q = 1.0 + f64::from(os) * f64::from(self.cfg.clients) + f.queue;
        f.response - f.service + q * q * q * f.service
    }

    /// Moves server `i`'s limiter to the interval holding `now`.
    fn roll(&mut self, i: usize, now: Nanos) {
        let dt = self.cfg.rate_interval.0.max(1);
        let l = &mut self.peers[i].limiter;
        if now.0 >= l.window.0 + dt {
            let elapsed = (now.0 - l.window.0) / dt;
            l.rrate = if elapsed == 1 {
                f64::from(l.received)
            } else {
                0.0
            };
            l.window = Nanos(l.window.0 + elapsed * dt);
            l.sent = 0;
            l.received = 0;
        }
    }

    /// Whether server `i` may take one more request now.
    fn within_rate(&mut self, i: usize, now: Nanos) -> bool {
        if !self.cfg.rate_control {
            return true;
        }
        self.roll(i, now);
        let l = &self.peers[i].limiter;
        f64::from(l.sent) < l.srate
    }

    /// The cubic update on a reply from server `i`.
    fn adapt(&mut self, i: usize, now: Nanos) {
        self.roll(i, now);
        let cfg = self.cfg;
        let (l, c) = (&mut self.peers[i].limiter, &mut self.cubics[i]);
        l.received += 1;
        if l.srate < l.rrate {
            let dt_ms = (now - c.decreased).as_secs_f64() * 1e3;
            let cubic = cfg.gamma * (dt_ms - c.k).powi(3) + c.r0;
            l.srate = cubic.clamp(l.srate, l.srate + cfg.s_max);
        } else if l.srate > l.rrate && now.saturating_sub(c.decreased) >= cfg.hysteresis {
            c.set_r0(l.srate, &cfg);
            l.srate = ((1.0 - cfg.beta) * l.srate).max(1.0);
            c.decreased = now;
        }
    }

    /// The indexed variant's pick: refresh the stale keys, then the least key (the least
    /// score within rate, else the least overall), ties by one draw.
    ///
    /// Never inlined into [`Strategy::pick`]: inlined, the default variant's scan at 100
    /// servers took 1.11x the CPU time it took with the binary tree, out of line 1.05x
    /// (7 alternating pairs each).
    ///
    /// Measured and not kept (`benches/cost.rs`, `perf stat`, 9 alternating pairs, ratios
    /// to this code at 10 / 1,000 / 10,000 servers): each walk level combining the
    /// child's new node with the least of its siblings rather than rescanning the group
    /// (1.04 / 1.08 / 1.09); key and node groups aligned to cache lines (– / 1.03 /
    /// 1.02); reading `up` and `in_flight` rather than [`Backends::at`] (– / 1.02 /
    /// 1.00); the interval without a division and `os · clients` without the product
    /// for one client (1.00 / 1.00 / 0.99); stale servers listed without a flag
    /// (duplicates refreshed twice: 1.00 / 1.00 / 0.99); a hint from the engine to
    /// load a server's lines when its request ends, before the reply (`black_box`
    /// loads, no prefetch without `unsafe`: – / 1.04 / 0.99).
    ///
    /// Nor a smaller footprint per server (11 pairs, the order swapped every other
    /// pair, ratios at 1,000 / 10,000 servers): everything an event touches in the one
    /// line of [`Peer`] (fields flat, `rrate` as its `u32` count, the time of the last
    /// decrease and the stale and over marks moved in; the cubic's `R₀` and offset apart,
    /// read only when the rate moves) (1.02 / 0.99); the lowest level of nodes left out,
    /// its parents over 16 keys in 128-byte groups (0.97 / 0.95); reading `up` and
    /// `in_flight` alone (0.99 / 1.00). The three together took C3 indexed from 103 to
    /// 89 bytes a server and a reply from about 3.4 lines to 1, and its cost over round
    /// robin's at 10 / 100 / 1,000 / 10,000 servers from 1.40 / 1.17 / 1.42 / 1.46 to
    /// 1.40 / 1.19 / 1.42 / 1.44 (10 rounds), while round robin's unchanged code ran
    /// 0.96–0.99x between the two builds: noise. cachegrind (a 48 KB L1 and 2 MB L2
    /// simulated) tells why: at 10,000 servers C3 indexed runs 1.6x round robin's
    /// instructions (about 1,050 a pick: ~10 levels walked, ~6 groups rescanned) with
    /// no more simulated L2 misses than round robin, so the gap is the walk's
    /// instructions, not the footprint.
    ///
    /// The walk as it is (issue 14): each level one [`Group`] in one table, its least
    /// taken anew, the exit at the first node that does not change; before, the nodes
    /// were a table per level and each level first told the parent from the child's
    /// change (four cases), rescanning only when it could not. Counted with callgrind
    /// (`cost c3_indexed N 1`): at 10,000 servers 1,071 instructions a pick before,
    /// 903 after (10.4 levels walked a pick, about 58 instructions each: the picked
    /// server's key rises, so its whole path to the root changes, and the completed
    /// server's key falls, about 3.4 levels), the whole run 636 M instructions before,
    /// 607 M after (round robin: 401 M); at 10 / 100 / 1,000 servers the run took 1.0 /
    /// 1.8 / 3.3 % fewer. CPU time moved little against the noise between two builds
    /// (9 alternating pairs, C3 indexed over round robin at 10 / 100 / 1,000 / 10,000
    /// servers: 1.44 / 1.18 / 1.43 / 1.45 before, 1.39 / 1.19 / 1.40 / 1.44 after, at a
    /// load average of 5 on 2 cores; round robin's unchanged code ran 1.01–1.03x
    /// between the two binaries). Counted and not kept (instructions a pick at 10,000
    /// servers, 1,071 then): the four cases kept, nodes in one table of keys and one of
    /// counts (1,123); the four cases on [`Group`]s (1,087); 8 entries a group, 128
    /// bytes (1,133). Nor can an early exit skip more: the picked server was the least
    /// of every group on its path, so each of them changes, and one that does not change
    /// is where the walk stops already.
    ///
    /// Nor a different structure (issue 14, helper c3heap; the code is in the branch
    /// history): an indexed 4-ary min-heap of the keys, the risen root sunk only as far
    /// as its key and a reply's lower key raised from its slot, ties kept exact by a
    /// set of the servers at one key (bits with counts per block, rebuilt from the tied
    /// subtree at the root when a tie is at another key: at 10,000 servers 15% of picks
    /// tie, among about 4,900 servers not yet heard from on average). Byte-identical
    /// outputs, and fewer instructions a run (callgrind, `cost c3_indexed N 1`, at 10 /
    /// 100 / 1,000 / 10,000 servers: 1.00 / 0.976 / 0.958 / 0.935 of this code's, 186
    /// fewer a pick at 10,000, 8 entries moved a pick), but more mispredicted branches
    /// (cachegrind: 2.9 / 1.6 / 1.2 / 0.45 more a pick: how far a sift goes depends on
    /// the keys, where this walk's length barely varies), and each level of a sift waits
    /// on the load of the group it chose. CPU time over this code's, 9 alternating
    /// pairs (load 5): 1.067 / 1.040 / 1.003 / 0.995. Tried with it: 8 children (the
    /// same instructions at 10,000), a group's keys and servers in one 64-byte line
    /// (more instructions), and the reply's server swapped into the picked one's slot
    /// before both are sifted (40% fewer entries moved, the same instructions).
    ///
    /// Nor fewer mispredicted branches or a shorter chain of dependent work (issue 14,
    /// helper c3sift; benches/README.md has the numbers; CPU time over this code's at 10 /
    /// 1,000 / 10,000 servers, 7–9 alternating pairs): the draw among tied servers without
    /// a branch (1.004 / 0.989 / 1.006: noise); with it a group's least by selects, fewer
    /// instructions (−1.1 / −2.2 / −2.8% a run) but 1.057 / 1.027 / 0.987; every walk to
    /// the root, no early exit, 1.057 / 1.064 / 1.069; each level the child merged with its
    /// siblings' least read ahead, 1.086 / 1.145 / 1.161; the stale servers in the order
    /// they were touched, 1.023 / 0.997 / 0.987.
    ///
    /// A group's least (issue 14, helper c3walk, the session after): the least key and its
    /// first slot in one tournament of conditional moves ([`least_slot`]: two pairs, then
    /// their least, the slot carried along), where the least was taken first and its
    /// holders found after it by comparing each key with it (a mask, then its lowest bit);
    /// whether another slot holds the key is a superset test beside it, off the chain, the
    /// counts summed only when it is set; a node's holders one 8-byte word ([`Held`]).
    /// callgrind (`cost c3_indexed N 1`): 106.5 / 132.0 / 574.9 M instructions a run at
    /// 10 / 1,000 / 10,000 servers before, 104.7 / 128.0 / 555.2 M after (round robin
    /// 370.0 M at 10,000). CPU time over the code before (`benches/cost.rs`, `perf stat`,
    /// 9 alternating pairs, load 4.6–5.4): 0.993 / 0.967 / 0.939 at 10 / 100 / 1,000, 0.948
    /// at 10,000 (25 pairs; round robin's unchanged code 0.978 in 11). Measured and not kept
    /// (instructions a run at 10,000 servers, against 555.2 M): the tournament's last step
    /// a branch (`if`, which the compiler kept as one) 538.8 M but 1.13–1.18x the CPU time
    /// (a mispredicted branch a level); its tie test by selects 568.8 M; 8 children a node
    /// with the same tournament 598.0 M; [`ScoreIndex::set`] out of line 557.3 M, the
    /// index's build out of line 559.7 M (the walk still kept its tables' addresses on the
    /// stack); the picked server's walk without the test for an unchanged node (every
    /// ancestor of the least's holder changes) 556.1 M, 1.004x the CPU time; a node's
    /// holders chosen by conditional moves beside its key rather than loaded by the slot
    /// found 560.3 M, 0.99x at 10,000 servers and 1.01x at 10 (noise). Nor a prefetch of what the next events read (the `prefetch-index` crate:
    /// the picked server's [`Peer`], key and nodes at the pick; the replied server's at the
    /// start of the engine's completion, through a hint from the engine; the dispatch
    /// counted in its limiter at the next pick, so that no handler waits for the line):
    /// the handlers' stalls left the profile, but 20 M instructions more a run (575 → 595 M)
    /// and 0.98–1.02x the CPU time (9–15 pairs): the stalls were already overlapped.
    #[inline(never)]
    fn pick_indexed(&mut self, backends: &Backends, now: Nanos) -> Option<usize> {
        let mut ix = match self.index.take() {
            Some(ix) if ix.n == backends.len() => ix,
            _ => Box::new(ScoreIndex::new(backends.len())),
        };
        if self.cfg.rate_control {
            let interval = now.0 / self.cfg.rate_interval.0.max(1);
            if interval != ix.interval {
                ix.interval = interval;
                for i in std::mem::take(&mut ix.over) {
                    ix.is_over[i as usize] = false;
                    ix.touch(i as usize);
                }
            }
        }
        while let Some(i) = ix.dirty.pop() {
            let i = i as usize;
            ix.is_dirty[i] = false;
            let b = backends.at(i);
            let key = if b.up {
                let s = self.score(i, b.in_flight);
                if self.within_rate(i, now) {
                    within_key(s)
                } else {
                    if !ix.is_over[i] {
                        ix.is_over[i] = true;
                        ix.over.push(i as u32);
                    }
                    over_key(s)
                }
            } else {
                DOWN_KEY
            };
            ix.set(i, key);
        }
        let picked = match ix.root().count {
            0 => None,
            1 => Some(ix.select(0)),
            t => Some(ix.select(self.rng.random_range(0..t))),
        };
        self.index = Some(ix);
        picked
    }

    fn touch(&mut self, i: usize) {
        if let Some(ix) = &mut self.index {
            ix.touch(i);
        }
    }

    /// The load server `i` reported on a reply, into its EWMAs (`i` grown into).
    fn note_load(&mut self, i: usize, load: &ServerLoad) {
        let alpha = self.cfg.alpha;
        let f = &mut self.peers[i].feedback;
        let first = !f.seen;
        f.service = ewma(f.service, load.service_time.0 as f64, alpha, first);
        f.queue = ewma(f.queue, f64::from(load.queued), alpha, first);
    }

    /// The end of a request to server `i`: a success's response time into its EWMA and
    /// the reply into its rate limiter (`i` grown into).
    fn note_end(&mut self, i: usize, latency: Nanos, outcome: Outcome, now: Nanos) {
        if outcome != Outcome::Ok {
            return;
        }
        let f = &mut self.peers[i].feedback;
        let first = !f.seen;
        f.response = ewma(f.response, latency.0 as f64, self.cfg.alpha, first);
        f.seen = true;
        if self.cfg.rate_control {
            self.adapt(i, now);
        }
    }

    /// Server `i`'s sending rate (requests per interval), for tests and traces.
    pub fn send_rate(&self, i: usize) -> f64 {
        self.peers.get(i).map_or(0.0, |p| p.limiter.srate)
    }
}

fn ewma(old: f64, sample: f64, alpha: f64, first: bool) -> f64 {
    if first {
        sample
    } else {
        alpha * old + (1.0 - alpha) * sample
    }
}

impl Strategy for C3 {
    fn pick(&mut self, backends: &Backends, ctx: &PickContext<'_>) -> Option<usize> {
        self.grow(backends.len());
        if self.cfg.indexed {
            return self.pick_indexed(backends, ctx.now);
        }
        // Best within its rate, else best overall (no backpressure queue, see above).
        let mut best: [Option<(f64, usize)>; 2] = [None, None];
        let mut ties = [0u32; 2];
        for (i, b) in backends.iter().enumerate().filter(|(_, b)| b.up) {
            let s = self.score(i, b.in_flight);
            let within = self.within_rate(i, ctx.now);
            for (k, on) in [(0, within), (1, true)] {
                if !on {
                    continue;
                }
                match best[k] {
                    Some((v, _)) if s > v => {}
                    Some((v, _)) if s == v => {
                        ties[k] += 1;
                        if self.rng.random_range(0..ties[k]) == 0 {
                            best[k] = Some((s, i));
                        }
                    }
                    _ => {
                        best[k] = Some((s, i));
                        ties[k] = 1;
                    }
                }
            }
        }
        best[0].or(best[1]).map(|(_, i)| i)
    }

    fn on_dispatch(&mut self, backend: usize, now: Nanos) {
        self.grow(backend + 1);
        self.touch(backend);
        if self.cfg.rate_control {
            self.roll(backend, now);
            self.peers[backend].limiter.sent += 1;
        }
    }

    fn on_complete(&mut self, backend: usize, latency: Nanos, outcome: Outcome, now: Nanos) {
        self.grow(backend + 1);
        self.touch(backend);
        self.note_end(backend, latency, outcome, now);
    }

    fn indexes_view(&self) -> bool {
        self.cfg.indexed
    }

    fn indexes_in_flight(&self) -> bool {
        // A change of requests in flight comes with `on_dispatch` or `on_complete`, which
        // mark the server stale already: only up and down need `on_view`.
        false
    }

    fn on_view(&mut self, backend: usize, _view: &Backend) {
        self.touch(backend);
    }

    fn signals(&self) -> Signals {
        Signals {
            probes: false,
            reply_loads: true,
            // Reads the queue and the service time alone.
            reply_latency: false,
        }
    }

    fn on_reply_load(&mut self, backend: usize, load: &ServerLoad, _now: Nanos) {
        self.grow(backend + 1);
        self.touch(backend);
        self.note_load(backend, load);
    }

    fn on_reply(
        &mut self,
        backend: usize,
        load: &ServerLoad,
        latency: Nanos,
        outcome: Outcome,
        now: Nanos,
    ) {
        // As `on_reply_load` then `on_complete`, growing and marking stale once.
        self.grow(backend + 1);
        self.touch(backend);
        self.note_load(backend, load);
        self.note_end(backend, latency, outcome, now);
    }
}

/// Parameters of `kind = "c3"` (see the module documentation for their sources).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct C3Params {
    /// Weight of the history in each EWMA. Default 0.9 (the paper's).
    pub alpha: f64,
    /// Clients sharing the servers (n in q̂ = 1 + os·n + q). Default 1.
    pub clients: u32,
    /// Cubic rate control on. Default true.
    pub rate_control: bool,
    /// Rate interval δ, seconds. Default 0.02 (the paper's).
    pub rate_interval: f64,
    /// Multiplicative decrease β, in (0, 1). Default 0.2 (the paper's).
    pub beta: f64,
    /// Cubic growth γ, requests per interval per ms³. Default 4e-6.
    pub gamma: f64,
    /// Largest rate increase per step, requests per interval. Default 10 (the paper's).
    pub s_max: f64,
    /// Least time between two decreases, seconds. Default 0.04.
    pub hysteresis: f64,
    /// Pick from an index of scores, O(log n), ties broken with one draw, rather than by
    /// a full scan with reservoir sampling over the ties (the default). Same rule and
    /// distribution, other draws. Default false.
    pub indexed: bool,
}

impl Default for C3Params {
    fn default() -> C3Params {
        let c = C3Config::default();
        C3Params {
            alpha: c.alpha,
            clients: c.clients,
            rate_control: c.rate_control,
            rate_interval: c.rate_interval.as_secs_f64(),
            beta: c.beta,
            gamma: c.gamma,
            s_max: c.s_max,
            hysteresis: c.hysteresis.as_secs_f64(),
            indexed: c.indexed,
        }
    }
}

impl Kind for C3 {
    type Params = C3Params;
    const ABOUT: About = About {
        kind: "c3",
        aliases: &[],
        follows: "C3 (Suresh et al., NSDI 2015): rank by R − 1/μ + (1 + os·n + q)³/μ from reply feedback, cubic rate control per server (indexed: O(log n) picks, other draws)",
        knobs: &[
            Knob::new("alpha", Ty::Float).meaning("EWMA history weight"),
            Knob::new("clients", Ty::Int),
            Knob::new("rate_control", Ty::Bool),
            Knob::seconds("rate_interval"),
            Knob::new("beta", Ty::Float),
            Knob::new("gamma", Ty::Float).meaning("per ms³"),
            Knob::new("s_max", Ty::Float).meaning("requests per interval"),
            Knob::seconds("hysteresis"),
            Knob::new("indexed", Ty::Bool),
        ],
        reads: Reads {
            reply_loads: true,
            ..Reads::NOTHING
        },
        split: Split::Dynamic,
    };
    fn validate(p: &C3Params, _: usize) -> Result<(), SpecError> {
        if !(0.0..1.0).contains(&p.alpha) {
            return Err(SpecError::new(
                "alpha",
                format!("is {}", p.alpha),
                "use a weight in [0, 1), e.g. 0.9 (the paper's)",
            ));
        }
        if p.clients == 0 {
            return Err(SpecError::new("clients", "is 0", "use 1 or more clients"));
        }
        if !(p.beta > 0.0 && p.beta < 1.0) {
            return Err(SpecError::new(
                "beta",
                format!("is {}", p.beta),
                "use a decrease in (0, 1), e.g. 0.2 (the paper's)",
            ));
        }
        for (field, v) in [("gamma", p.gamma), ("s_max", p.s_max)] {
            if !(v.is_finite() && v > 0.0 && v <= 1e9) {
                return Err(SpecError::new(
                    field,
                    format!("is {v}"),
                    format!("use a positive `{field}` up to 1e9 (defaults: gamma 4e-6, s_max 10)"),
                ));
            }
        }
        SpecError::seconds("rate_interval", p.rate_interval, false)?;
        if p.rate_interval < crate::scenario::cost::MIN_INTERVAL {
            return Err(SpecError::new(
                "rate_interval",
                format!("is {}", p.rate_interval),
                "use 1e-6 s or more (the paper's is 0.02)",
            ));
        }
        SpecError::seconds("hysteresis", p.hysteresis, true)
    }
    fn build(p: &C3Params, n: usize, rng: SimRng) -> C3 {
        C3::new(
            C3Config {
                alpha: p.alpha,
                clients: p.clients,
                rate_control: p.rate_control,
                rate_interval: Nanos::from_secs_f64(p.rate_interval),
                beta: p.beta,
                gamma: p.gamma,
                s_max: p.s_max,
                hysteresis: Nanos::from_secs_f64(p.hysteresis),
                indexed: p.indexed,
            },
            n,
            rng,
        )
    }
    fn cost(p: &C3Params) -> PickCost {
        if p.indexed {
            PickCost::CONSTANT
        } else {
            PickCost::SCAN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Stream, stream_rng};
    use crate::strategy::Balancer;
    use crate::strategy::testing::Lockstep;
    use proptest::prelude::{
        Just, ProptestConfig, any, prop_assert, prop_assert_eq, prop_oneof, proptest,
    };
    use proptest::strategy::Strategy as Gen;

    fn c3(cfg: C3Config, n: usize) -> C3 {
        C3::new(cfg, n, stream_rng(1, 0, Stream::Strategy, 0))
    }

    fn reply(c: &mut C3, i: usize, queued: u32, service_us: u64, latency_us: u64, t: u64) {
        let load = ServerLoad {
            in_flight: queued + 1,
            queued,
            service_time: Nanos(service_us * 1000),
            latency: Nanos::ZERO,
        };
        c.on_reply_load(i, &load, Nanos(t));
        c.on_complete(i, Nanos(latency_us * 1000), Outcome::Ok, Nanos(t));
    }

    fn no_rate() -> C3Config {
        C3Config {
            rate_control: false,
            ..C3Config::default()
        }
    }

    #[test]
    fn score_is_the_cubic_queue_estimate() {
        let mut c = c3(
            C3Config {
                clients: 3,
                ..no_rate()
            },
            2,
        );
        reply(&mut c, 0, 2, 4, 30, 0);
        // R = 30 µs, 1/μ = 4 µs, q̂ = 1 + 2·3 + 2 = 9: Ψ = 30 − 4 + 729 · 4 µs.
        assert_eq!(c.score(0, 2), 30_000.0 - 4_000.0 + 729.0 * 4_000.0);
        // EWMAs: weight 0.9 on the history.
        reply(&mut c, 0, 0, 14, 130, 1);
        let (r, s, q) = (0.9 * 30e3 + 0.1 * 130e3, 0.9 * 4e3 + 0.1 * 14e3, 0.9 * 2.0);
        let qh: f64 = 1.0 + q;
        assert!((c.score(0, 0) - (r - s + qh.powi(3) * s)).abs() < 1e-6);
        assert_eq!(c.score(1, 5), 0.0, "no feedback yet");
    }

    #[test]
    fn ranks_by_queue_cubed_over_a_faster_server() {
        let mut c = c3(no_rate(), 3);
        // Server 0 serves in 1 ms but has 4 waiting; server 1 serves in 3 ms with none:
        // Ψ₀ = 5 − 1 + 125·1 = 129 ms, Ψ₁ = 3 − 3 + 1·3 = 3 ms. Server 2 is down.
        reply(&mut c, 0, 4, 1000, 5000, 0);
        reply(&mut c, 1, 0, 3000, 3000, 0);
        reply(&mut c, 2, 0, 1, 1, 0);
        let mut b = Backends::new(&[1; 3]);
        b.set_up(2, false);
        let ctx = PickContext::new(Nanos(1), 0);
        assert_eq!(c.pick(&b, &ctx), Some(1));
        // Three of our own requests outstanding at server 1: q̂ = 4, Ψ₁ = 192 ms > Ψ₀.
        b.set_in_flight(1, 3);
        assert_eq!(c.pick(&b, &ctx), Some(0));
        b.set_up(0, false);
        b.set_up(1, false);
        assert_eq!(c.pick(&b, &ctx), None);
    }

    /// With one of four servers heard from, `c` picks only the three it has not heard
    /// from (score 0), each often: ties are broken at random.
    fn assert_unexplored_first_ties_at_random(mut c: C3) {
        reply(&mut c, 0, 0, 1, 1, 0);
        let b = Backends::new(&[1; 4]);
        let mut seen = [0; 4];
        for t in 0..300 {
            seen[c.pick(&b, &PickContext::new(Nanos(t), 0)).unwrap()] += 1;
        }
        assert_eq!(seen[0], 0);
        assert!(seen[1..].iter().all(|&k| k > 50), "{seen:?}");
    }

    #[test]
    fn unexplored_servers_first_ties_at_random() {
        assert_unexplored_first_ties_at_random(c3(no_rate(), 4));
    }

    /// One step of a workout of a C3 balancer.
    #[derive(Clone, Debug)]
    enum Step {
        Route,
        /// Complete the outstanding request at this position (modulo their number):
        /// latency and service time in µs, queue size, failed when the flag is set.
        Complete(usize, u16, u16, u8, bool),
        /// Mark a server (modulo their number) down or up.
        SetUp(usize, bool),
        /// Let time pass (µs).
        Wait(u16),
    }

    fn step() -> impl Gen<Value = Step> {
        prop_oneof![
            5 => Just(Step::Route),
            4 => (any::<usize>(), 1u16.., 1u16.., 0u8..8, proptest::bool::weighted(0.1))
                .prop_map(|(k, l, s, q, f)| Step::Complete(k, l, s, q, f)),
            1 => (any::<usize>(), any::<bool>()).prop_map(|(i, up)| Step::SetUp(i, up)),
            1 => (0u16..20_000).prop_map(Step::Wait),
        ]
    }

    /// A long random workout drawn from `rng` (as [`step`] draws them).
    fn workout(rng: &mut SimRng, len: usize) -> Vec<Step> {
        (0..len)
            .map(|_| match rng.random_range(0..11) {
                0..5 => Step::Route,
                5..9 => Step::Complete(
                    rng.random::<u32>() as usize,
                    rng.random_range(1..u16::MAX),
                    rng.random_range(1..u16::MAX),
                    rng.random_range(0..8),
                    rng.random_range(0..10) == 0,
                ),
                9 => Step::SetUp(rng.random::<u32>() as usize, rng.random_range(0..3) > 0),
                _ => Step::Wait(rng.random_range(0..20_000)),
            })
            .collect()
    }

    /// Runs `steps` on C3 with `cfg` over `n` servers, by scan and indexed (same stream),
    /// and returns every pick of each. With `heard`, every server first replies once
    /// (distinct feedback: no two scores tie, so the two must pick alike); without, the
    /// servers start unheard (tied at 0).
    fn scan_and_index(
        cfg: C3Config,
        n: usize,
        heard: bool,
        steps: &[Step],
    ) -> (Vec<Option<usize>>, Vec<Option<usize>>) {
        let build =
            |indexed| Balancer::new(Box::new(c3(C3Config { indexed, ..cfg }, n)), &vec![1; n]);
        let mut run = Lockstep::new(build(false), build(true));
        let mut t = 1u64;
        if heard {
            // Feedback drawn from a wide range, so that no two scores coincide.
            let mut rng = stream_rng(14, 0, Stream::Strategy, 1);
            for i in 0..n {
                let load = ServerLoad {
                    queued: rng.random_range(0..4),
                    service_time: Nanos(rng.random_range(1_000..1_000_000_000)),
                    ..ServerLoad::default()
                };
                let latency = Nanos(rng.random_range(1_000..1_000_000_000));
                for x in run.both() {
                    x.reply_load(i, &load, Nanos(t));
                    x.complete(i, latency, Outcome::Ok, Nanos(t));
                }
            }
        }
        for s in steps {
            t += 1;
            let now = Nanos(t);
            match *s {
                Step::Route => run.route(now),
                Step::Complete(k, latency, service, queued, failed) => {
                    let Some(i) = run.take(k) else { continue };
                    let outcome = if failed { Outcome::Failed } else { Outcome::Ok };
                    let load = ServerLoad {
                        in_flight: u32::from(queued) + 1,
                        queued: u32::from(queued),
                        service_time: Nanos(u64::from(service) * 1000),
                        latency: Nanos::ZERO,
                    };
                    for x in run.both() {
                        if !failed {
                            x.reply_load(i, &load, now);
                        }
                        x.complete(i, Nanos(u64::from(latency) * 1000), outcome, now);
                    }
                }
                Step::SetUp(i, up) => run.set_up(i, up),
                Step::Wait(us) => t += u64::from(us) * 1000,
            }
        }
        run.picks()
    }

    /// Knobs the workouts try: rate control off, the defaults, and a tight rate (one
    /// request per 0.1 ms interval) that keeps servers over their rate.
    fn configs() -> [C3Config; 3] {
        [
            no_rate(),
            C3Config::default(),
            C3Config {
                rate_interval: Nanos(100_000),
                s_max: 1.0,
                hysteresis: Nanos(200_000),
                clients: 2,
                ..C3Config::default()
            },
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn index_picks_what_the_scan_picks_without_ties(
            cfg in 0usize..3,
            n in 1usize..12,
            steps in proptest::collection::vec(step(), 1..300),
        ) {
            let (scan, index) = scan_and_index(configs()[cfg], n, true, &steps);
            prop_assert_eq!(scan, index);
        }

        #[test]
        fn index_picks_a_least_score_within_rate(
            cfg in 0usize..3,
            n in 1usize..12,
            steps in proptest::collection::vec(step(), 1..300),
        ) {
            // Unheard servers tie at 0: the two draw differently, so compare the rule
            // on the indexed balancer's own state, pick by pick.
            let mut c = c3(C3Config { indexed: true, ..configs()[cfg] }, n);
            let mut view = Backends::new(&vec![1; n]);
            let mut t = 1u64;
            let mut outstanding = Vec::new();
            for s in &steps {
                t += 1;
                let now = Nanos(t);
                match *s {
                    Step::Route => {
                        let picked = c.pick(&view, &PickContext::new(now, 0));
                        let up: Vec<usize> = (0..n).filter(|&i| view.up(i)).collect();
                        let within: Vec<usize> =
                            up.iter().copied().filter(|&i| c.within_rate(i, now)).collect();
                        let pool = if within.is_empty() { &up } else { &within };
                        let least = pool
                            .iter()
                            .map(|&i| c.score(i, view.in_flight(i)))
                            .fold(f64::INFINITY, f64::min);
                        match picked {
                            None => prop_assert!(up.is_empty()),
                            Some(i) => {
                                prop_assert!(pool.contains(&i), "{i} not in {pool:?}");
                                prop_assert_eq!(c.score(i, view.in_flight(i)), least);
                                view.set_in_flight(i, view.in_flight(i) + 1);
                                c.on_view(i, &view.at(i));
                                c.on_dispatch(i, now);
                                outstanding.push(i);
                            }
                        }
                    }
                    Step::Complete(k, latency, service, queued, failed) if !outstanding.is_empty() => {
                        let i = outstanding.swap_remove(k % outstanding.len());
                        view.set_in_flight(i, view.in_flight(i) - 1);
                        c.on_view(i, &view.at(i));
                        if !failed {
                            reply(&mut c, i, u32::from(queued), service.into(), latency.into(), t);
                        } else {
                            c.on_complete(i, Nanos(1), Outcome::Failed, now);
                        }
                    }
                    Step::Complete(..) => {}
                    Step::SetUp(i, up) => {
                        view.set_up(i % n, up);
                        c.on_view(i % n, &view.at(i % n));
                    }
                    Step::Wait(us) => t += u64::from(us) * 1000,
                }
            }
        }
    }

    #[test]
    fn long_runs_index_picks_what_the_scan_picks() {
        let mut rng = stream_rng(14, 0, Stream::Strategy, 3);
        for (cfg, n) in configs().into_iter().zip([1000, 300, 1000]) {
            let steps = workout(&mut rng, 20_000);
            let (scan, index) = scan_and_index(cfg, n, true, &steps);
            assert_eq!(scan.len(), index.len());
            let differ = scan.iter().zip(&index).position(|(a, b)| a != b);
            assert_eq!(differ, None, "{cfg:?}, {n} servers");
        }
    }

    /// The index serves small clusters too: among the tied unheard servers it draws
    /// otherwise than the scan, from two servers up.
    #[test]
    fn indexed_draws_otherwise_among_ties_at_any_size() {
        let mut rng = stream_rng(14, 0, Stream::Strategy, 4);
        for cfg in configs() {
            let steps = workout(&mut rng, 5_000);
            for n in [2, 10, 49] {
                let (scan, index) = scan_and_index(cfg, n, false, &steps);
                assert_ne!(scan, index, "{cfg:?}, {n} servers");
            }
        }
    }

    /// Keys drawn from a few values, so that many servers tie: within or over their
    /// rate, scores 0 to 3 (and the down key).
    fn some_key() -> impl Gen<Value = u64> {
        prop_oneof![
            4 => (0u8..4).prop_map(|s| within_key(f64::from(s))),
            2 => (0u8..4).prop_map(|s| over_key(f64::from(s))),
            1 => Just(DOWN_KEY),
        ]
    }

    /// [`least_slot`] on every group of 4 keys drawn from 4 values (equal keys, ties of
    /// 2, 3 and 4, the down key): the least key, the first slot holding it, and a tie
    /// flag that is set whenever another slot holds the least key (it may be set
    /// otherwise).
    #[test]
    fn least_slot_is_the_least_its_first_slot_and_never_misses_a_tie() {
        let values = [0, 1, within_key(2.5), DOWN_KEY];
        for code in 0..values.len().pow(4) {
            let keys: [u64; FANOUT] =
                std::array::from_fn(|j| values[code / values.len().pow(j as u32) % values.len()]);
            let least = *keys.iter().min().unwrap();
            let first = keys.iter().position(|&k| k == least).unwrap();
            let holders = keys.iter().filter(|&&k| k == least).count();
            let (key, slot, maybe_tied) = least_slot(&keys);
            assert_eq!((key, slot), (least, first), "{keys:?}");
            assert!(maybe_tied || holders == 1, "a tie missed: {keys:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// After any sets, the index's root is the least key of a plain list (how many
        /// hold it, the first of them) and `select` finds every holder in index order.
        #[test]
        fn score_index_agrees_with_a_plain_list(
            n in prop_oneof![1usize..40, 40usize..700, 4000usize..4200],
            sets in proptest::collection::vec((any::<usize>(), some_key()), 1..400),
        ) {
            let mut ix = ScoreIndex::new(n);
            let mut model = vec![DOWN_KEY; n];
            for (i, key) in sets {
                let i = i % n;
                ix.set(i, key);
                model[i] = key;
                let least = model.iter().copied().min().unwrap_or(DOWN_KEY);
                let holders: Vec<usize> = (0..n)
                    .filter(|&j| model[j] == least && least != DOWN_KEY)
                    .collect();
                let root = ix.root();
                prop_assert_eq!(root.count as usize, holders.len());
                if !holders.is_empty() {
                    prop_assert_eq!((root.key, root.first as usize), (least, holders[0]));
                }
                for (rank, &j) in holders.iter().enumerate() {
                    prop_assert_eq!(ix.select(rank as u32), j, "rank {}", rank);
                }
            }
        }

        /// Whatever the changes (keys that rise or fall by a little or a lot, that join
        /// or leave a tie, servers down and up), every entry of [`ScoreIndex`] is what a
        /// build from scratch gives: each server's own, each node the least of its group,
        /// the root the least of the last group. So the walk's early exit (an entry that
        /// did not change, nothing above it changes) never leaves a stale node behind,
        /// counts of tied servers included.
        #[test]
        fn score_index_walk_stops_only_where_nothing_changes(
            n in prop_oneof![1usize..20, 60usize..80, 250usize..270],
            changes in proptest::collection::vec((any::<usize>(), any::<usize>(), 0u8..6), 1..300),
        ) {
            let mut ix = ScoreIndex::new(n);
            let mut model = vec![DOWN_KEY; n];
            for (i, other, change) in changes {
                let (i, other) = (i % n, other % n);
                let key = match (change, model[i]) {
                    // Up from down, to a score servers tie at.
                    (_, DOWN_KEY) => within_key(1.0),
                    // Rise or fall by one step of the key's float: out of a tie or in.
                    (0, k) => k + 1,
                    (1, k) => k.saturating_sub(1),
                    // Tie with another server, or its key and a little more or less.
                    (2, _) => model[other],
                    (3, _) if model[other] == DOWN_KEY => DOWN_KEY,
                    (3, _) => model[other] ^ 1,
                    // Over the rate, or down.
                    (4, k) => k | 1 << 63,
                    _ => DOWN_KEY,
                };
                ix.set(i, key);
                model[i] = key;
                let built = {
                    let mut b = ScoreIndex::new(n);
                    for (j, &k) in model.iter().enumerate() {
                        b.set(j, k);
                    }
                    b
                };
                prop_assert_eq!(&ix.keys[..n], &model[..]);
                let of_servers = |e: usize| {
                    Least::of_keys(ix.keys[e * FANOUT..][..FANOUT].try_into().unwrap(), e * FANOUT)
                };
                for e in 0..ix.keys.len() / FANOUT {
                    let least = of_servers(e);
                    match ix.starts.first() {
                        Some(&start) => prop_assert_eq!(ix.groups[start + e / FANOUT].get(e % FANOUT), least),
                        None => prop_assert_eq!(ix.root(), least),
                    }
                }
                for (level, pair) in ix.starts.windows(2).enumerate() {
                    for e in 0..pair[1] - pair[0] {
                        let node = ix.groups[pair[1] + e / FANOUT].get(e % FANOUT);
                        prop_assert_eq!(node, ix.groups[pair[0] + e].least(), "level {} node {}", level + 2, e);
                    }
                }
                if let Some(&last) = ix.starts.last() {
                    prop_assert_eq!(ix.root(), ix.groups[last].least());
                }
                prop_assert_eq!(ix.root(), built.root());
                prop_assert_eq!(&ix.groups.iter().map(|g| (g.keys, g.held)).collect::<Vec<_>>(),
                    &built.groups.iter().map(|g| (g.keys, g.held)).collect::<Vec<_>>());
            }
        }

        /// Scores are finite and at least +0.0 (the index's keys rely on it), whatever
        /// the feedback.
        #[test]
        fn scores_are_finite_and_never_below_zero(
            clients in 1u32..,
            alpha in 0.0f64..1.0,
            replies in proptest::collection::vec(
                (any::<u32>(), any::<u64>(), any::<u64>(), any::<u32>()), 1..20),
        ) {
            let mut c = c3(C3Config { clients, alpha, ..no_rate() }, 1);
            for (queued, service, latency, os) in replies {
                let load = ServerLoad { queued, service_time: Nanos(service), ..ServerLoad::default() };
                c.on_reply_load(0, &load, Nanos(1));
                c.on_complete(0, Nanos(latency), Outcome::Ok, Nanos(1));
                for os in [0, os, u32::MAX] {
                    let s = c.score(0, os);
                    prop_assert!(s.is_finite() && s.is_sign_positive(), "{}", s);
                }
            }
        }
    }

    proptest! {
        /// One `on_reply` is `on_reply_load` then `on_complete`: the same state after any
        /// workout (failures, waits past rate intervals, servers beyond those built), and
        /// the same picks, indexed or not.
        #[test]
        fn on_reply_is_the_load_then_the_completion(
            cfg in 0usize..3,
            indexed in any::<bool>(),
            steps in proptest::collection::vec(step(), 1..300),
        ) {
            let n = 6;
            let cfg = C3Config { indexed, ..configs()[cfg] };
            let (mut two, mut one) = (c3(cfg, n - 1), c3(cfg, n - 1));
            let mut view = Backends::new(&vec![1; n]);
            let mut outstanding = Vec::new();
            let mut t = 1u64;
            for s in &steps {
                t += 1;
                let now = Nanos(t);
                match *s {
                    Step::Route => {
                        let ctx = PickContext::new(now, 0);
                        let picked = two.pick(&view, &ctx);
                        prop_assert_eq!(picked, one.pick(&view, &ctx));
                        if let Some(i) = picked {
                            view.set_in_flight(i, view.in_flight(i) + 1);
                            two.on_dispatch(i, now);
                            one.on_dispatch(i, now);
                            outstanding.push(i);
                        }
                    }
                    Step::Complete(k, latency, service, queued, failed) if !outstanding.is_empty() => {
                        let i = outstanding.swap_remove(k % outstanding.len());
                        view.set_in_flight(i, view.in_flight(i) - 1);
                        let load = ServerLoad {
                            queued: u32::from(queued),
                            service_time: Nanos(u64::from(service) * 1000),
                            ..ServerLoad::default()
                        };
                        let outcome = if failed { Outcome::Failed } else { Outcome::Ok };
                        let latency = Nanos(u64::from(latency) * 1000);
                        two.on_reply_load(i, &load, now);
                        two.on_complete(i, latency, outcome, now);
                        one.on_reply(i, &load, latency, outcome, now);
                    }
                    Step::Complete(..) => {}
                    Step::SetUp(i, up) => {
                        view.set_up(i % n, up);
                        two.on_view(i % n, &view.at(i % n));
                        one.on_view(i % n, &view.at(i % n));
                    }
                    Step::Wait(us) => t += u64::from(us) * 1000,
                }
                prop_assert_eq!(&two.peers, &one.peers);
                prop_assert_eq!(&two.cubics, &one.cubics);
            }
        }
    }

    #[test]
    fn indexed_unexplored_servers_first_ties_at_random() {
        let c = c3(
            C3Config {
                indexed: true,
                ..no_rate()
            },
            4,
        );
        assert_unexplored_first_ties_at_random(c);
    }

    proptest! {
        /// Each limiter's cubic offset is `∛(β R₀ / γ)` of its current `R₀`, whatever
        /// the dispatches and replies (decreases from rates other than the first).
        #[test]
        fn the_cubic_offset_follows_r0(
            steps in proptest::collection::vec((any::<bool>(), 0usize..3, 0u64..30), 0..200),
        ) {
            let cfg = C3Config::default();
            let mut c = c3(cfg, 3);
            let mut t = 0;
            for (dispatch, i, dt) in steps {
                t += dt * 1_000_000;
                if dispatch {
                    c.on_dispatch(i, Nanos(t));
                } else {
                    reply(&mut c, i, 0, 1000, 1000, t);
                }
                for l in &c.cubics {
                    prop_assert_eq!(l.k, (cfg.beta * l.r0 / cfg.gamma).cbrt());
                }
            }
        }
    }

    #[test]
    fn rate_control_decreases_then_grows_cubically() {
        let mut c = c3(C3Config::default(), 2);
        let ms = |x: f64| Nanos::from_secs_f64(x * 1e-3);
        // Interval 0: 10 sent (the initial rate), none back.
        for _ in 0..10 {
            c.on_dispatch(0, ms(1.0));
        }
        // Server 0 is at its rate: only server 1 may take the next request.
        assert!(!c.within_rate(0, ms(2.0)) && c.within_rate(1, ms(2.0)));
        // At 45 ms (two intervals on, so nothing received in the last one): rrate 0 <
        // srate 10, decrease to (1 − β) · 10 = 8.
        reply(&mut c, 0, 0, 1000, 1000, ms(45.0).0);
        assert_eq!(c.send_rate(0), 8.0);
        assert_eq!(c.cubics[0].r0, 10.0);
        // Within the hysteresis: no second decrease.
        reply(&mut c, 0, 0, 1000, 1000, ms(50.0).0);
        assert_eq!(c.send_rate(0), 8.0);
        // Interval 60–80 ms: nine replies (rrate of 40–60 ms was 2 < 8, but the last
        // decrease is under 40 ms old: no change).
        for k in 0..9 {
            reply(&mut c, 0, 0, 1000, 1000, ms(61.0 + f64::from(k)).0);
        }
        assert_eq!(c.send_rate(0), 8.0);
        // At 85 ms rrate = 9 > srate = 8: cubic growth, 40 ms after the decrease, from
        // R₀ = 10, capped at s_max = 10 above the current rate.
        reply(&mut c, 0, 0, 1000, 1000, ms(85.0).0);
        let k = (0.2_f64 * 10.0 / 4e-6).cbrt();
        let cubic = 4e-6 * (40.0 - k).powi(3) + 10.0;
        assert!((cubic - 9.756).abs() < 1e-3, "{cubic}");
        assert!((c.send_rate(0) - cubic).abs() < 1e-9, "{}", c.send_rate(0));
    }
}
