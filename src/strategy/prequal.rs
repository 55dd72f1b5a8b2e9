//! Prequal: Wydrowski, Kleinberg, Rumble, "Load is not what you should balance:
//! Introducing Prequal", NSDI 2024 (arXiv:2312.10172), YouTube's load balancer.
//!
//! Power of d choices with *asynchronous, reusable* probes: the balancer keeps a pool of
//! recent probe answers, each giving a server's requests in flight (RIF) and its estimate
//! of the latency a new request would see, and picks from the pool without waiting for a
//! probe on the request's path. The rule, as the paper gives it:
//!
//! - **Probing.** Each query triggers `probe_rate` probes (r_probe; fractional rates
//!   accumulate) of servers drawn uniformly at random; answers join the pool when they
//!   arrive (after the scenario's `[probes] delay`).
//! - **Pool.** At most `pool_size` probes (16 in the paper); a new answer evicts the
//!   oldest when full. A probe older than `max_age` is dropped. A probe serves at most
//!   `reuse` queries (b_reuse); each use adds one to its RIF, since the query just sent is
//!   now in flight there. Each query also removes `remove_rate` (r_remove) of the worst
//!   probes: the hottest (highest RIF) when any probe is hot, else the slowest.
//! - **Hot-cold lexicographic (HCL) selection.** A probe is *hot* when its RIF exceeds the
//!   `q_rif` quantile of the RIF of recent probe answers (the last `4 × pool_size`). If
//!   every probe in the pool is hot, pick the one of lowest RIF; otherwise the cold probe
//!   of lowest estimated latency. Ties go to the oldest probe in the pool.
//! - **Fallback.** With no usable probe, a server drawn uniformly among those up.
//!
//! Defaults: `pool_size` = 16 is the paper's; `probe_rate` = 3, `remove_rate` = 1,
//! `q_rif` = 0.8 (inside the 0.6–0.9 range the paper recommends) and `max_age` = 1 s are
//! lbsim's choices among the values the paper explores, and `reuse` defaults to the
//! budget that keeps the pool's inflow and outflow in balance,
//! `max(1, ⌈1 / (probe_rate − remove_rate)⌉)` (unbounded when `probe_rate ≤ remove_rate`).
//! Left out: probing when idle (the paper also probes on a timer when queries are rare),
//! and the server's latency estimate is lbsim's model (see [`crate::sim::probe`]), not
//! the paper's per-RIF latency histogram.
//!
//! A consequence of that model, kept as is: a server's estimate while a worker is free is
//! the mean service time of the requests it last started, which only new requests
//! refresh. A server whose last requests drew long services (or ran slowed) is never the
//! cold probe of lowest latency while other servers are cold, so it may get no further
//! request and its estimate stays high: 4 balancers over 8 identical servers at 50% load
//! leave 1–2 servers without requests in every replication. Live backends report the
//! same estimate and starve the same way. The paper estimates from recent queries at each
//! RIF and gives no rule for ageing an unused server's estimate; lbsim invents none.

use rand::RngExt;

use super::random::uniform_up;
use super::registry::{About, Kind, Knob, PickCost, Reads, Scanned, Split, Ty};
use super::spec::SpecError;
use super::{Backends, PickContext, ServerLoad, Signals, Strategy};
use crate::rng::SimRng;
use crate::time::Nanos;

/// Prequal's knobs (see the module documentation for their sources).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrequalConfig {
    /// Most probes in the pool.
    pub pool_size: usize,
    /// Probes sent per query (r_probe).
    pub probe_rate: f64,
    /// Worst probes removed per query (r_remove).
    pub remove_rate: f64,
    /// Probes older than this are dropped.
    pub max_age: Nanos,
    /// Queries one probe may serve (b_reuse); `None`: the balanced budget.
    pub reuse: Option<u32>,
    /// Quantile of recent probes' RIF above which a probe is hot.
    pub q_rif: f64,
}

impl Default for PrequalConfig {
    fn default() -> Self {
        PrequalConfig {
            pool_size: 16,
            probe_rate: 3.0,
            remove_rate: 1.0,
            max_age: Nanos::from_secs_f64(1.0),
            reuse: None,
            q_rif: 0.8,
        }
    }
}

impl PrequalConfig {
    /// The reuse budget: `reuse` if given, otherwise `⌈1 / (probe_rate − remove_rate)⌉`
    /// (at least 1), the number of uses that makes probes leave the pool as fast as they
    /// come in; unbounded when probes come no faster than they are removed.
    pub fn reuse_budget(&self) -> u32 {
        match self.reuse {
            Some(b) => b.max(1),
            None if self.probe_rate > self.remove_rate => {
                (1.0 / (self.probe_rate - self.remove_rate)).ceil().max(1.0) as u32
            }
            None => u32::MAX,
        }
    }
}

/// One probe answer in the pool.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Probe {
    backend: usize,
    /// RIF the server reported, plus the queries sent on this probe since.
    rif: u32,
    latency: Nanos,
    /// When the probe was sent (its age counts from there).
    sent: Nanos,
    uses: u32,
}

/// The Prequal balancer of one client.
#[derive(Debug)]
pub struct Prequal {
    cfg: PrequalConfig,
    reuse: u32,
    pool: Vec<Probe>,
    /// RIF of the latest answers, a ring of `4 × pool_size`.
    history: Vec<u32>,
    next_history: usize,
    /// The rank of the `q_rif` quantile among `history.len()` values (nearest rank):
    /// computed while the ring fills, fixed once it is full (a `ceil` per answer
    /// showed in profiles).
    rank: u32,
    /// Fractional probes and removals owed.
    probe_credit: f64,
    remove_credit: f64,
    backends: usize,
    rng: SimRng,
    /// `history` counted by value, with its `q_rif` quantile kept as answers come.
    recent: Recent,
    /// Whether `pool` is in order of `sent` (non-decreasing), as it is whenever answers
    /// come back in the order their probes left (a constant delay, as in the simulator):
    /// then the oldest probe is the first, and the probes too old are a prefix.
    in_order: bool,
}

impl Prequal {
    /// Prequal with the given knobs, drawing probe targets and fallbacks from `rng`.
    pub fn new(cfg: PrequalConfig, rng: SimRng) -> Prequal {
        Prequal {
            reuse: cfg.reuse_budget(),
            pool: Vec::with_capacity(cfg.pool_size),
            history: Vec::with_capacity(4 * cfg.pool_size),
            next_history: 0,
            rank: 1,
            probe_credit: 0.0,
            remove_credit: 0.0,
            backends: 0,
            rng,
            recent: Recent::default(),
            in_order: true,
            cfg,
        }
    }

    /// Drops the probes older than `max_age` at `now`, keeping the others in order.
    fn drop_old(&mut self, now: Nanos) {
        let max_age = self.cfg.max_age;
        let young = |p: &Probe| now.saturating_sub(p.sent) <= max_age;
        if self.in_order {
            // Oldest first: the old ones are a prefix, usually empty.
            let old = self.pool.iter().take_while(|p| !young(p)).count();
            if old > 0 {
                self.pool.drain(..old);
            }
        } else {
            self.pool.retain(young);
        }
        if self.pool.is_empty() {
            self.in_order = true;
        }
    }

    /// Index of the oldest probe of a non-empty pool (the first of equals).
    fn oldest(&self) -> usize {
        if self.in_order {
            return 0;
        }
        (0..self.pool.len())
            .min_by_key(|&k| self.pool[k].sent)
            .unwrap_or(0)
    }

    /// The RIF above which a probe is hot: the `q_rif` quantile of recent answers
    /// (nearest rank), or `None` before any answer.
    fn hot_threshold(&self) -> Option<u32> {
        if self.history.is_empty() {
            return None;
        }
        Some(self.recent.at)
    }

    /// Index in the pool of the probe HCL selects among those of up backends, given the
    /// hot threshold ([`Prequal::hot_threshold`]).
    ///
    /// One pass finds the first cold probe of least latency and the first probe of least
    /// RIF in the whole pool; when the one HCL would take is of an up backend, it is also
    /// the first minimum among usable probes (an earlier usable tie would be an earlier
    /// tie of the whole pool), so the pick reads one backend's state instead of every
    /// probe's. Otherwise (a backend down) the pick is the filtered scan
    /// ([`Prequal::select_usable`]).
    fn select(&self, backends: &Backends, threshold: Option<u32>) -> Option<usize> {
        let threshold = threshold?;
        let mut cold: Option<(usize, Nanos)> = None;
        let mut any: Option<(usize, u32)> = None;
        for (k, p) in self.pool.iter().enumerate() {
            if p.rif <= threshold && cold.is_none_or(|(_, l)| p.latency < l) {
                cold = Some((k, p.latency));
            }
            if any.is_none_or(|(_, r)| p.rif < r) {
                any = Some((k, p.rif));
            }
        }
        let usable = |k: usize| backends.get(self.pool[k].backend).is_some_and(|b| b.up);
        match (cold, any) {
            (Some((k, _)), _) if usable(k) => Some(k),
            (None, Some((k, _))) if usable(k) => Some(k),
            (_, None) => None,
            _ => self.select_usable(backends, threshold),
        }
    }

    /// [`Prequal::select`] by filtering: the first cold usable probe of least latency,
    /// else the first usable probe of least RIF.
    fn select_usable(&self, backends: &Backends, threshold: u32) -> Option<usize> {
        let usable = |p: &Probe| backends.get(p.backend).is_some_and(|b| b.up);
        let cold = self
            .pool
            .iter()
            .enumerate()
            .filter(|(_, p)| usable(p) && p.rif <= threshold)
            .min_by_key(|(_, p)| p.latency)
            .map(|(k, _)| k);
        cold.or_else(|| {
            self.pool
                .iter()
                .enumerate()
                .filter(|(_, p)| usable(p))
                .min_by_key(|(_, p)| p.rif)
                .map(|(k, _)| k)
        })
    }

    /// Removes the worst probe: the hottest if any is hot, else the slowest, given the hot
    /// threshold ([`Prequal::hot_threshold`]).
    fn remove_worst(&mut self, threshold: Option<u32>) {
        let Some(threshold) = threshold else {
            return;
        };
        // One pass: the last probe of highest RIF and the last of highest latency (as
        // `max_by_key` picks); some probe is hot exactly when the highest RIF is.
        let mut hottest: Option<(usize, u32)> = None;
        let mut slowest: Option<(usize, Nanos)> = None;
        for (k, p) in self.pool.iter().enumerate() {
            if hottest.is_none_or(|(_, r)| p.rif >= r) {
                hottest = Some((k, p.rif));
            }
            if slowest.is_none_or(|(_, l)| p.latency >= l) {
                slowest = Some((k, p.latency));
            }
        }
        let worst = match hottest {
            Some((k, rif)) if rif > threshold => Some(k),
            _ => slowest.map(|(k, _)| k),
        };
        if let Some(k) = worst {
            self.pool.remove(k);
        }
    }

    /// Probes in the pool, as (backend, RIF, uses), oldest first (for tests and traces).
    pub fn pool(&self) -> Vec<(usize, u32, u32)> {
        self.pool
            .iter()
            .map(|p| (p.backend, p.rif, p.uses))
            .collect()
    }
}

impl Strategy for Prequal {
    fn pick(&mut self, backends: &Backends, ctx: &PickContext<'_>) -> Option<usize> {
        self.backends = backends.len();
        self.drop_old(ctx.now);
        // Only probe answers change the threshold: one computation serves the pick.
        let threshold = self.hot_threshold();
        let picked = match self.select(backends, threshold) {
            Some(k) => {
                let p = &mut self.pool[k];
                p.uses += 1;
                p.rif = p.rif.saturating_add(1);
                let backend = p.backend;
                if p.uses >= self.reuse {
                    self.pool.remove(k);
                }
                Some(backend)
            }
            None => uniform_up(backends, &mut self.rng),
        };
        self.remove_credit += self.cfg.remove_rate;
        while self.remove_credit >= 1.0 {
            self.remove_credit -= 1.0;
            self.remove_worst(threshold);
        }
        picked
    }

    fn signals(&self) -> Signals {
        Signals {
            probes: true,
            ..Signals::default()
        }
    }

    fn probes(&mut self, _now: Nanos, out: &mut Vec<usize>) {
        if self.backends == 0 {
            return;
        }
        self.probe_credit += self.cfg.probe_rate;
        while self.probe_credit >= 1.0 {
            self.probe_credit -= 1.0;
            out.push(self.rng.random_range(0..self.backends));
        }
    }

    fn on_probe(&mut self, backend: usize, load: &ServerLoad, sent: Nanos, now: Nanos) {
        if now.saturating_sub(sent) > self.cfg.max_age {
            return;
        }
        self.remember(load.in_flight);
        if self.cfg.pool_size > 0 {
            self.insert(backend, load, sent);
        }
    }

    /// The answers of one send, as [`Prequal::on_probe`] for each in turn, with the checks
    /// made once: the recent RIFs take every answer (nothing there reads the pool), then
    /// the pool takes them in one step when it is in order and they are not older than
    /// its newest probe (the usual case): it keeps the last `pool_size` of its probes
    /// followed by the answers, which is what evicting the oldest for each answer leaves,
    /// with one move of the probes kept instead of one an eviction. Against a call an
    /// answer, 0.965x Prequal's CPU time at 10 servers, 0.985x at 1,000.
    fn on_probes(&mut self, answers: &[(usize, ServerLoad)], sent: Nanos, now: Nanos) {
        if now.saturating_sub(sent) > self.cfg.max_age {
            return;
        }
        for (_, load) in answers {
            self.remember(load.in_flight);
        }
        let cap = self.cfg.pool_size;
        if cap == 0 {
            return;
        }
        if !(self.in_order && self.pool.last().is_none_or(|p| p.sent <= sent)) {
            for (backend, load) in answers {
                self.insert(*backend, load, sent);
            }
            return;
        }
        let probe = |&(backend, load): &(usize, ServerLoad)| Probe {
            backend,
            rif: load.in_flight,
            latency: load.latency,
            sent,
            uses: 0,
        };
        let total = self.pool.len() + answers.len();
        if total > cap {
            let evicted = total - cap;
            if evicted >= self.pool.len() {
                self.pool.clear();
                self.pool
                    .extend(answers[answers.len() - cap..].iter().map(probe));
                return;
            }
            self.pool.drain(..evicted);
        }
        self.pool.extend(answers.iter().map(probe));
    }
}

impl Prequal {
    /// Counts an answer's RIF among the recent ones (the ring of `4 × pool_size` and its
    /// quantile).
    #[inline(always)]
    fn remember(&mut self, rif: u32) {
        let cap = 4 * self.cfg.pool_size.max(1);
        let old = if self.history.len() < cap {
            self.history.push(rif);
            let len = self.history.len();
            self.rank = ((self.cfg.q_rif * len as f64).ceil() as usize).clamp(1, len) as u32;
            None
        } else {
            Some(std::mem::replace(&mut self.history[self.next_history], rif))
        };
        self.recent.replace(old, rif, self.rank);
        // A wrap, not `% cap`: a division per answer showed in profiles.
        self.next_history += 1;
        if self.next_history >= cap {
            self.next_history = 0;
        }
    }

    /// Puts an answer into the pool (of a positive size), evicting the oldest probe when
    /// full.
    #[inline]
    fn insert(&mut self, backend: usize, load: &ServerLoad, sent: Nanos) {
        if self.pool.len() >= self.cfg.pool_size {
            // Evict the oldest.
            let oldest = self.oldest();
            self.pool.remove(oldest);
            if self.pool.is_empty() {
                self.in_order = true;
            }
        }
        if self.pool.last().is_some_and(|p| p.sent > sent) {
            self.in_order = false;
        }
        self.pool.push(Probe {
            backend,
            rif: load.in_flight,
            latency: load.latency,
            sent,
            uses: 0,
        });
    }
}

/// RIFs below this are counted in an array; larger ones (rare) kept in order.
const SMALL: u32 = 256;

/// A multiset of RIFs (the recent answers) and its `k`-th smallest, kept as values are
/// replaced: a replacement moves the `k`-th smallest to a neighbouring value, if at all,
/// where keeping them sorted moved every value in between (a binary search and a shift at
/// each answer, a fifth of Prequal's run).
#[derive(Debug, Default)]
struct Recent {
    /// How many values equal each RIF below [`SMALL`] (empty until the first).
    small: Vec<u16>,
    /// The values from [`SMALL`] up, increasing.
    large: Vec<u32>,
    /// The `k`-th smallest value (`k` as last given), when there is any value.
    at: u32,
    /// How many values are smaller than `at`.
    below: u32,
}

impl Recent {
    /// How many values equal `v`.
    fn count(&self, v: u32) -> u32 {
        if v < SMALL {
            u32::from(self.small[v as usize])
        } else {
            let from = self.large.partition_point(|&x| x < v);
            let to = self.large.partition_point(|&x| x <= v);
            (to - from) as u32
        }
    }

    /// The least value above `v`.
    fn above(&self, v: u32) -> Option<u32> {
        if v + 1 < SMALL
            && let Some(d) = self.small[v as usize + 1..].iter().position(|&c| c > 0)
        {
            return Some(v + 1 + d as u32);
        }
        let k = self.large.partition_point(|&x| x <= v);
        self.large.get(k).copied()
    }

    /// The greatest value below `v`.
    fn below_of(&self, v: u32) -> Option<u32> {
        let k = self.large.partition_point(|&x| x < v);
        if k > 0 {
            return Some(self.large[k - 1]);
        }
        let to = v.min(SMALL) as usize;
        self.small[..to]
            .iter()
            .rposition(|&c| c > 0)
            .map(|d| d as u32)
    }

    fn add(&mut self, v: u32, up: bool) {
        if v < SMALL {
            let c = &mut self.small[v as usize];
            *c = if up { *c + 1 } else { *c - 1 };
        } else {
            let k = self.large.partition_point(|&x| x < v);
            if up {
                self.large.insert(k, v);
            } else {
                self.large.remove(k);
            }
        }
        // Without a branch: whether `v` is below the quantile is a coin toss the branch
        // predictor lost (this and `replace` inlined: about 0.9x Prequal's CPU time at 10
        // servers).
        let less = u32::from(v < self.at);
        self.below = if up {
            self.below + less
        } else {
            self.below - less
        };
    }

    /// Adds `new`, removes `old` (a value held), and moves to the `k`-th smallest
    /// (`k` from 1 to the number of values).
    #[inline(always)]
    fn replace(&mut self, old: Option<u32>, new: u32, k: u32) {
        if self.small.is_empty() {
            self.small = vec![0; SMALL as usize];
            (self.at, self.below) = (new, 0);
        }
        self.add(new, true);
        if let Some(old) = old {
            self.add(old, false);
        }
        // Too many below: down to the next value held (`at` itself may be held no more).
        while self.below >= k {
            let Some(v) = self.below_of(self.at) else {
                break;
            };
            self.at = v;
            self.below -= self.count(v);
        }
        // Too few up to `at`: up to the next value held.
        while self.below + self.count(self.at) < k {
            let Some(v) = self.above(self.at) else {
                break;
            };
            self.below += self.count(self.at);
            self.at = v;
        }
    }
}

/// Parameters of `kind = "prequal"` (see the module documentation for their sources).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrequalParams {
    /// Most probes in the pool. Default 16 (the paper's).
    pub pool_size: usize,
    /// Probes sent per query (r_probe). Default 3.
    pub probe_rate: f64,
    /// Worst probes removed per query (r_remove). Default 1.
    pub remove_rate: f64,
    /// Probes older than this are dropped, seconds. Default 1.
    pub max_age: f64,
    /// Queries one probe may serve (b_reuse). Default ⌈1 / (probe_rate − remove_rate)⌉.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reuse: Option<u32>,
    /// Quantile of recent probes' RIF above which a probe is hot. Default 0.8.
    pub q_rif: f64,
}

impl Default for PrequalParams {
    fn default() -> PrequalParams {
        let c = PrequalConfig::default();
        PrequalParams {
            pool_size: c.pool_size,
            probe_rate: c.probe_rate,
            remove_rate: c.remove_rate,
            max_age: c.max_age.as_secs_f64(),
            reuse: c.reuse,
            q_rif: c.q_rif,
        }
    }
}

impl Kind for Prequal {
    type Params = PrequalParams;
    const ABOUT: About = About {
        kind: "prequal",
        aliases: &[],
        follows: "Prequal (Wydrowski, Kleinberg, Rumble, NSDI 2024): asynchronous reusable probes of RIF and latency, hot-cold lexicographic pick",
        knobs: &[
            Knob::new("pool_size", Ty::Int).unit("probes"),
            Knob::new("probe_rate", Ty::Float).meaning("probes per query"),
            Knob::new("remove_rate", Ty::Float).meaning("probes removed per query"),
            Knob::seconds("max_age"),
            Knob::new("reuse", Ty::Int)
                .unset("⌈1/(probe_rate − remove_rate)⌉")
                .meaning("queries per probe"),
            Knob::new("q_rif", Ty::Float).meaning("quantile of recent RIFs"),
        ],
        reads: Reads {
            probes: true,
            ..Reads::NOTHING
        },
        split: Split::Dynamic,
    };
    fn validate(p: &PrequalParams, _: usize) -> Result<(), SpecError> {
        if !(1..=1024).contains(&p.pool_size) {
            return Err(SpecError::new(
                "pool_size",
                format!("is {}", p.pool_size),
                "use 1 to 1024 probes (16 is the paper's)",
            ));
        }
        for (field, v) in [("probe_rate", p.probe_rate), ("remove_rate", p.remove_rate)] {
            if !(v.is_finite() && (0.0..=100.0).contains(&v)) {
                return Err(SpecError::new(
                    field,
                    format!("is {v}"),
                    format!("give `{field}` in probes per query, 0 to 100"),
                ));
            }
        }
        if p.probe_rate == 0.0 {
            return Err(SpecError::new(
                "probe_rate",
                "is 0: prequal would never probe and would pick at random",
                "use a positive rate, e.g. 3 probes per query",
            ));
        }
        if p.reuse == Some(0) {
            return Err(SpecError::new(
                "reuse",
                "is 0: no probe could be used",
                "use 1 or more, or remove it for the balanced budget",
            ));
        }
        if !(p.q_rif.is_finite() && p.q_rif > 0.0 && p.q_rif <= 1.0) {
            return Err(SpecError::new(
                "q_rif",
                format!("is {}", p.q_rif),
                "use a quantile in (0, 1], e.g. 0.8 (the paper recommends 0.6 to 0.9)",
            ));
        }
        SpecError::seconds("max_age", p.max_age, false)
    }
    fn build(p: &PrequalParams, _n: usize, rng: SimRng) -> Prequal {
        Prequal::new(
            PrequalConfig {
                pool_size: p.pool_size,
                probe_rate: p.probe_rate,
                remove_rate: p.remove_rate,
                max_age: Nanos::from_secs_f64(p.max_age),
                reuse: p.reuse,
                q_rif: p.q_rif,
            },
            rng,
        )
    }
    fn cost(p: &PrequalParams) -> PickCost {
        // Scans its pool (and sorts the recent RIFs, 4 × pool_size of them).
        PickCost {
            scanned: Scanned::Few(5 * p.pool_size),
            table: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Stream, stream_rng};
    use crate::strategy::Balancer;

    fn prequal(cfg: PrequalConfig) -> Prequal {
        Prequal::new(cfg, stream_rng(1, 0, Stream::Strategy, 0))
    }

    fn answer(p: &mut Prequal, backend: usize, rif: u32, latency_us: u64, t: u64) {
        let load = ServerLoad {
            in_flight: rif,
            queued: 0,
            service_time: Nanos(1000),
            latency: Nanos(latency_us * 1000),
        };
        p.on_probe(backend, &load, Nanos(t), Nanos(t));
    }

    #[test]
    fn the_hot_threshold_is_the_quantile_of_the_recent_answers() {
        use rand::RngExt;
        let mut rng = stream_rng(14, 0, Stream::Strategy, 5);
        for q_rif in [0.0, 0.5, 0.8, 1.0] {
            let mut p = prequal(PrequalConfig {
                pool_size: 4,
                q_rif,
                ..PrequalConfig::default()
            });
            assert_eq!(p.hot_threshold(), None);
            for t in 0..1_000 {
                // Mostly small RIFs, some beyond the counted ones.
                let rif = if rng.random_bool(0.8) {
                    rng.random_range(0..20)
                } else {
                    rng.random_range(0..2 * SMALL)
                };
                answer(&mut p, 0, rif, 1, t);
                // Nearest rank of the last 16 answers, by sorting them.
                let mut recent = p.history.clone();
                recent.sort_unstable();
                let k = ((q_rif * recent.len() as f64).ceil() as usize).clamp(1, recent.len());
                assert_eq!(
                    p.hot_threshold(),
                    Some(recent[k - 1]),
                    "q_rif {q_rif}, answer {t}"
                );
            }
        }
    }

    #[test]
    fn select_reads_one_backend_and_picks_as_the_filtered_scan() {
        use rand::RngExt;
        let mut rng = stream_rng(14, 0, Stream::Strategy, 6);
        for case in 0..2_000 {
            let n = rng.random_range(1..8);
            let mut p = prequal(PrequalConfig {
                pool_size: rng.random_range(1..10),
                ..PrequalConfig::default()
            });
            for t in 0..rng.random_range(0..14) {
                // Few distinct values: many ties.
                let (b, rif, lat) = (
                    rng.random_range(0..n + 1),
                    rng.random_range(0..4),
                    rng.random_range(1..4),
                );
                answer(&mut p, b, rif, lat, t);
            }
            let mut backends = up(n);
            for i in 0..n {
                backends.set_up(i, rng.random_bool(0.7));
            }
            for threshold in [None, Some(0), Some(1), Some(2), Some(5)] {
                let want = threshold.and_then(|t| p.select_usable(&backends, t));
                assert_eq!(p.select(&backends, threshold), want, "case {case}");
            }
        }
    }

    #[test]
    fn removal_in_one_pass_removes_what_two_scans_remove() {
        use rand::RngExt;
        let mut rng = stream_rng(14, 0, Stream::Strategy, 7);
        for case in 0..2_000 {
            let mut p = prequal(PrequalConfig {
                pool_size: rng.random_range(1..10),
                ..PrequalConfig::default()
            });
            for t in 0..rng.random_range(0..14) {
                let (rif, lat) = (rng.random_range(0..4), rng.random_range(1..4));
                answer(&mut p, t as usize, rif, lat, t);
            }
            let threshold = rng.random_range(0..5);
            // The rule as written: the hottest if any is hot, else the slowest; the last
            // of equals (`max_by_key`).
            let mut want = p.pool.clone();
            let worst = if want.iter().any(|x| x.rif > threshold) {
                want.iter().enumerate().max_by_key(|(_, x)| x.rif)
            } else {
                want.iter().enumerate().max_by_key(|(_, x)| x.latency)
            }
            .map(|(k, _)| k);
            if let Some(k) = worst {
                want.remove(k);
            }
            p.remove_worst(Some(threshold));
            assert_eq!(p.pool, want, "case {case}");
        }
    }

    #[test]
    fn the_oldest_and_the_old_are_found_as_by_scanning() {
        use rand::RngExt;
        let mut rng = stream_rng(14, 0, Stream::Strategy, 8);
        for case in 0..2_000 {
            let mut p = prequal(PrequalConfig {
                pool_size: rng.random_range(1..10),
                max_age: Nanos(rng.random_range(1..40)),
                ..PrequalConfig::default()
            });
            // Answers mostly in the order sent (as in the simulator), sometimes not
            // (live mode), with ties.
            let shuffled = rng.random_bool(0.3);
            let mut t = 0u64;
            for _ in 0..rng.random_range(0..30) {
                t += rng.random_range(0..3);
                let sent = if shuffled {
                    t.saturating_sub(rng.random_range(0..6))
                } else {
                    t
                };
                let load = ServerLoad {
                    in_flight: rng.random_range(0..4),
                    ..ServerLoad::default()
                };
                // Eviction when full: the first probe of least `sent`.
                let mut want = p.pool.clone();
                if want.len() >= p.cfg.pool_size {
                    let oldest = (0..want.len()).min_by_key(|&k| want[k].sent).unwrap();
                    want.remove(oldest);
                }
                p.on_probe(rng.random_range(0..5), &load, Nanos(sent), Nanos(sent));
                want.push(*p.pool.last().unwrap());
                assert_eq!(p.pool, want, "case {case}");
                if rng.random_bool(0.2) {
                    let now = Nanos(t + rng.random_range(0..20));
                    let mut want = p.pool.clone();
                    want.retain(|x| now.saturating_sub(x.sent) <= p.cfg.max_age);
                    p.drop_old(now);
                    assert_eq!(p.pool, want, "case {case}");
                }
                assert!(!p.in_order || p.pool.is_sorted_by_key(|x| x.sent));
            }
        }
    }

    /// The answers of one send taken together leave what each taken in turn leaves: the
    /// pool (in order, or not: live answers come out of order), the recent RIFs and their
    /// quantile, with batches larger than the pool, answers older than its newest probe
    /// and answers too old to keep.
    #[test]
    fn answers_together_are_answers_in_turn() {
        use rand::RngExt;
        let mut rng = stream_rng(14, 0, Stream::Strategy, 10);
        for case in 0..3_000 {
            let cfg = PrequalConfig {
                pool_size: rng.random_range(1..8),
                max_age: Nanos(rng.random_range(5..40)),
                ..PrequalConfig::default()
            };
            let (mut together, mut in_turn) = (prequal(cfg), prequal(cfg));
            let mut t = 0u64;
            for _ in 0..rng.random_range(1..25) {
                t += rng.random_range(0..4);
                let sent = Nanos(t.saturating_sub(rng.random_range(0..3) * rng.random_range(0..6)));
                let now = Nanos(t + rng.random_range(0..3) * rng.random_range(0..20));
                let answers: Vec<(usize, ServerLoad)> = (0..rng.random_range(0..10))
                    .map(|_| {
                        let load = ServerLoad {
                            in_flight: rng.random_range(0..6),
                            latency: Nanos(rng.random_range(1..5)),
                            ..ServerLoad::default()
                        };
                        (rng.random_range(0..5), load)
                    })
                    .collect();
                together.on_probes(&answers, sent, now);
                for (b, load) in &answers {
                    in_turn.on_probe(*b, load, sent, now);
                }
                assert_eq!(together.pool, in_turn.pool, "case {case}");
                assert_eq!(together.in_order, in_turn.in_order, "case {case}");
                assert_eq!(together.history, in_turn.history, "case {case}");
                assert_eq!(together.next_history, in_turn.next_history, "case {case}");
                assert_eq!(
                    together.hot_threshold(),
                    in_turn.hot_threshold(),
                    "case {case}"
                );
                if rng.random_bool(0.3) {
                    let backends = up(5);
                    let ctx = PickContext::new(now, 0);
                    assert_eq!(
                        together.pick(&backends, &ctx),
                        in_turn.pick(&backends, &ctx)
                    );
                }
            }
        }
    }

    fn up(n: usize) -> Backends {
        Backends::new(&vec![1; n])
    }

    fn once(cfg: PrequalConfig) -> PrequalConfig {
        PrequalConfig {
            reuse: Some(1),
            remove_rate: 0.0,
            ..cfg
        }
    }

    #[test]
    fn cold_probe_of_lowest_latency_wins_over_a_faster_hot_one() {
        let mut p = prequal(once(PrequalConfig::default()));
        // RIFs 1, 2, 2, 3, 9: the 0.8 quantile of five is the 4th smallest, 3, so only
        // backend 4 (RIF 9) is hot, though its latency is the lowest.
        for (b, rif, lat) in [
            (0, 1, 900),
            (1, 2, 500),
            (2, 2, 700),
            (3, 3, 800),
            (4, 9, 100),
        ] {
            answer(&mut p, b, rif, lat, 10);
        }
        let ctx = PickContext::new(Nanos(20), 0);
        assert_eq!(p.pick(&up(5), &ctx), Some(1));
        // Used once (reuse 1): gone; next best cold is backend 2.
        assert_eq!(p.pick(&up(5), &ctx), Some(2));
    }

    #[test]
    fn all_hot_picks_the_lowest_rif() {
        let mut p = prequal(PrequalConfig {
            pool_size: 2,
            reuse: Some(100),
            remove_rate: 0.0,
            ..PrequalConfig::default()
        });
        // Six answers of RIF 1 (the pool keeps the last two), then 3 and 2: recent RIFs
        // 1 ×6, 2, 3, whose 0.8 quantile (7th of 8) is 2.
        for b in 0..6 {
            answer(&mut p, b, 1, 100, 1);
        }
        answer(&mut p, 6, 3, 100, 5);
        answer(&mut p, 7, 2, 900, 6);
        assert_eq!(p.pool(), vec![(6, 3, 0), (7, 2, 0)]);
        let ctx = PickContext::new(Nanos(7), 0);
        // Backend 7 is the only cold probe, slow as it is; its RIF becomes 3.
        assert_eq!(p.pick(&up(8), &ctx), Some(7));
        // Both hot now: lowest RIF, the tie to the older probe (backend 6), whose RIF
        // becomes 4; then backend 7 has the lowest.
        assert_eq!(p.pick(&up(8), &ctx), Some(6));
        assert_eq!(p.pick(&up(8), &ctx), Some(7));
        assert_eq!(p.pool(), vec![(6, 4, 1), (7, 4, 2)]);
    }

    #[test]
    fn reuse_budget_and_rif_increment() {
        let mut p = prequal(PrequalConfig {
            reuse: Some(2),
            remove_rate: 0.0,
            ..PrequalConfig::default()
        });
        answer(&mut p, 3, 0, 100, 0);
        let ctx = PickContext::new(Nanos(1), 0);
        assert_eq!(p.pick(&up(4), &ctx), Some(3));
        assert_eq!(p.pool(), vec![(3, 1, 1)]);
        assert_eq!(p.pick(&up(4), &ctx), Some(3));
        assert!(p.pool().is_empty(), "used twice: removed");
        assert_eq!(PrequalConfig::default().reuse_budget(), 1);
        let slow = PrequalConfig {
            probe_rate: 1.25,
            ..PrequalConfig::default()
        };
        assert_eq!(slow.reuse_budget(), 4);
        let none = PrequalConfig {
            probe_rate: 1.0,
            ..PrequalConfig::default()
        };
        assert_eq!(none.reuse_budget(), u32::MAX);
    }

    #[test]
    fn old_probes_and_down_backends_are_not_used() {
        let mut p = prequal(once(PrequalConfig::default()));
        answer(&mut p, 1, 0, 100, 0);
        answer(&mut p, 2, 0, 100, 0);
        let mut b = up(3);
        b.set_up(2, false);
        // Backend 2 is down; backend 1's probe is fresh.
        assert_eq!(p.pick(&b, &PickContext::new(Nanos(5), 0)), Some(1));
        // Two seconds later backend 2's probe is too old: random among up backends.
        let late = Nanos::from_secs_f64(2.0);
        for _ in 0..20 {
            let got = p.pick(&b, &PickContext::new(late, 0)).unwrap();
            assert!(got < 2);
        }
        assert!(p.pool().is_empty());
    }

    #[test]
    fn removal_takes_the_hottest_then_the_slowest() {
        let mut p = prequal(PrequalConfig {
            reuse: Some(100),
            remove_rate: 1.0,
            ..PrequalConfig::default()
        });
        for (b, rif, lat) in [
            (0, 1, 100),
            (1, 1, 300),
            (2, 1, 200),
            (3, 1, 250),
            (4, 8, 50),
        ] {
            answer(&mut p, b, rif, lat, 0);
        }
        let ctx = PickContext::new(Nanos(1), 0);
        // Picks backend 0 (cold, fastest), then removes the hot backend 4.
        assert_eq!(p.pick(&up(5), &ctx), Some(0));
        let left: Vec<usize> = p.pool().iter().map(|x| x.0).collect();
        assert_eq!(left, vec![0, 1, 2, 3]);
        // Nothing hot (recent RIFs 0, 1, 1: threshold 1; the used probe's RIF becomes
        // 1): the slowest (backend 1) goes.
        let mut p = prequal(PrequalConfig {
            reuse: Some(100),
            remove_rate: 1.0,
            ..PrequalConfig::default()
        });
        for (b, rif, lat) in [(0, 0, 100), (1, 1, 300), (2, 1, 200)] {
            answer(&mut p, b, rif, lat, 0);
        }
        assert_eq!(p.pick(&up(3), &ctx), Some(0));
        assert_eq!(p.pool(), vec![(0, 1, 1), (2, 1, 0)]);
    }

    #[test]
    fn probes_per_query_follow_the_rate_and_a_full_pool_drops_the_oldest() {
        let mut bal = Balancer::new(
            Box::new(prequal(PrequalConfig {
                probe_rate: 1.5,
                pool_size: 2,
                ..PrequalConfig::default()
            })),
            &[1; 4],
        );
        let mut asked = Vec::new();
        for k in 0..10 {
            let i = bal.route(Nanos(k), 0).unwrap();
            bal.take_probes(Nanos(k), &mut asked);
            bal.complete(i, Nanos(1), crate::strategy::Outcome::Ok, Nanos(k));
        }
        assert_eq!(asked.len(), 15);
        assert!(asked.iter().all(|&i| i < 4));
        let mut p = prequal(PrequalConfig {
            pool_size: 2,
            ..PrequalConfig::default()
        });
        answer(&mut p, 0, 0, 1, 1);
        answer(&mut p, 1, 0, 1, 2);
        answer(&mut p, 2, 0, 1, 3);
        assert_eq!(p.pool(), vec![(1, 0, 0), (2, 0, 0)]);
    }
}
