//! Shared pieces of the hashing strategies: a deterministic 64-bit hash, Envoy's ring
//! construction, tracking of the backend set a structure was built over, and the tables
//! that balancers over the same backends share (`shared`).
//!
//! The hash is the SplitMix64 finaliser ([`crate::rng::mix64`]) with fixed salts: a
//! bijection on 64-bit values with full avalanche, identical on every platform and run.
//! Envoy hashes address strings with xxHash64; lbsim's backends and keys are integers, so
//! an integer mixer gives the same statistical behaviour without a dependency.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::sync::{Arc, Weak};

use super::{Backend, Backends};
use crate::rng::mix64;

const KEY_SALT: u64 = 0x6b65_795f_6861_7368; // "key_hash"

/// The hash of a request key.
#[inline]
pub fn key_hash(key: u64) -> u64 {
    mix64(key ^ KEY_SALT)
}

/// The loopback IPv4 address the client of key `key` connects from: `127.1.0.0 + key`,
/// wrapping within `127.1.0.0 ..= 127.255.255.254`. The hashing strategies that follow a
/// proxy's source-address hash (`nginx_hash`, `haproxy_source`) hash this address; live
/// mode binds each connection of slot `key` to it, so a real proxy hashes the same one.
pub fn client_address(key: u64) -> std::net::Ipv4Addr {
    const FIRST: u32 = 0x7f01_0000;
    const SPAN: u64 = 0x7fff_fffe - FIRST as u64 + 1;
    std::net::Ipv4Addr::from(FIRST + (key % SPAN) as u32)
}

/// The hash of point `replica` of backend `backend` under `salt` (distinct inputs give
/// distinct outputs, so no two points collide).
#[inline]
pub fn point_hash(backend: usize, replica: u64, salt: u64) -> u64 {
    mix64(mix64(salt ^ backend as u64).wrapping_add(replica))
}

/// A table built on this thread and still held by some strategy, with what it was built
/// from: its type, its builder, the builder's parameters and the weights.
struct Built {
    kind: TypeId,
    builder: &'static str,
    params: [u64; 2],
    weights: Vec<u32>,
    table: Weak<dyn Any + Send + Sync>,
}

/// How many builds [`shared`] remembers a thread (the most recent ones).
const REMEMBERED: usize = 4;

thread_local! {
    static BUILT: RefCell<Vec<Built>> = const { RefCell::new(Vec::new()) };
}

/// The table `build` makes from `weights` (with `params`, which it captures), shared with every strategy on this
/// thread that holds the same one: a table is a function of its type, its builder (named
/// by `builder`: two builders of one type are two functions), the parameters and the
/// weights alone, so the balancers of a run over the same servers need one, not one each.
/// A run of 1,000 Maglev balancers over 1,000 servers built 1,000 tables of 65,537
/// entries, 1.75 ms each; the balancers that follow the first now take its table (Maglev,
/// ring hash and bounded-load hash tables, HAProxy's static map of `static-rr` and
/// `balance source`). The tables are remembered weakly: one lives while a strategy holds
/// it, and a thread keeps no table once its runs end.
pub(crate) fn shared<T: Any + Send + Sync>(
    builder: &'static str,
    params: [u64; 2],
    weights: &[u32],
    build: impl FnOnce(&[u32]) -> T,
) -> Arc<T> {
    let kind = TypeId::of::<T>();
    let found = BUILT.with_borrow(|built| {
        built
            .iter()
            .filter(|b| {
                (b.kind, b.builder, b.params) == (kind, builder, params) && b.weights == weights
            })
            .find_map(|b| b.table.upgrade()?.downcast::<T>().ok())
    });
    if let Some(table) = found {
        return table;
    }
    let table = Arc::new(build(weights));
    let held: Arc<dyn Any + Send + Sync> = table.clone();
    BUILT.with_borrow_mut(|built| {
        built.retain(|b| b.table.strong_count() > 0);
        if built.len() == REMEMBERED {
            built.remove(0);
        }
        built.push(Built {
            kind,
            builder,
            params,
            weights: weights.to_vec(),
            table: Arc::downgrade(&held),
        });
    });
    table
}

/// The backends a hash structure was built over: the up backends of positive weight,
/// with those weights. A structure is rebuilt when it is [`Membership::stale`] (the
/// number of backends changed, or a backend left out came back) or when a lookup lands
/// on a backend that is now down or has a new weight ([`Membership::changed`]), so that
/// a pick costs no scan of every backend.
///
/// Whether a backend left out came back is asked of the view only after the balancer
/// told of such a backend's change ([`Membership::told`], from [`super::Strategy::on_view`];
/// a strategy keeping a `Membership` indexes the view, and its balancer tells it of every
/// backend going up or down): walking every backend left out at every pick made ring hash
/// 13.5× round robin's pick with 5,000 weight-0 servers beside 10,000.
#[derive(Clone, Debug, Default)]
pub(crate) struct Membership {
    weights: Vec<u32>,
    excluded: Vec<usize>,
    /// Sum of `weights`, kept at the build: bounded-load hashing reads it for every ring
    /// point it passes over, and summing 10,000 weights each time made its picks 10×
    /// round robin's at 10,000 servers.
    total: u64,
    /// The balancer told that a backend left out of the build is up with a weight since
    /// the build or the last look at `excluded`: the next [`Membership::stale`] looks.
    revived: bool,
}

impl Membership {
    /// Records the set of a build and returns the weights to build with (0: left out).
    pub fn record(&mut self, backends: &Backends) -> &[u32] {
        self.weights.clear();
        self.weights
            .extend(backends.iter().map(|b| if b.up { b.weight } else { 0 }));
        self.excluded.clear();
        self.excluded
            .extend((0..backends.len()).filter(|&i| self.weights[i] == 0));
        self.total = self.weights.iter().map(|&w| u64::from(w)).sum();
        self.revived = false;
        &self.weights
    }

    /// Whether a rebuild is due before looking up: the backends are new, or some backend
    /// left out is up with a weight. The backends left out are looked at only after
    /// [`Membership::told`] heard of one coming back: a backend left out was not eligible
    /// at the build, so it is eligible now only if the balancer told of it since (and the
    /// look still finds it eligible; it may have gone again).
    #[inline]
    pub fn stale(&mut self, backends: &Backends) -> bool {
        if self.weights.len() != backends.len() {
            return true;
        }
        if !std::mem::take(&mut self.revived) {
            return false;
        }
        self.excluded
            .iter()
            .any(|&i| backends.up(i) && backends.weight(i) > 0)
    }

    /// The balancer told that entry `backend` of the view is now `view`: if the build left
    /// it out and it is now eligible, the next [`Membership::stale`] looks at the view. A
    /// change to a backend in the build needs no telling: a lookup landing on it sees it
    /// ([`Membership::changed`]).
    #[inline]
    pub fn told(&mut self, backend: usize, view: &Backend) {
        if self.weights.get(backend) == Some(&0) && view.up && view.weight > 0 {
            self.revived = true;
        }
    }

    /// Makes the next [`Membership::stale`] look at every backend left out, as it did at
    /// every pick before the balancer's tells were kept (tests: the rescanning oracle).
    #[cfg(test)]
    pub fn suspect(&mut self) {
        self.revived = true;
    }

    /// Whether backend `i`, found by a lookup, differs from the build.
    #[inline]
    pub fn changed(&self, backends: &Backends, i: usize) -> bool {
        !backends.up(i) || backends.weight(i) != self.weights[i]
    }

    /// Sum of the weights built over. O(1).
    #[inline]
    pub fn total_weight(&self) -> u64 {
        self.total
    }

    /// Weight of backend `i` at the build (0 if left out).
    pub fn weight(&self, i: usize) -> u32 {
        self.weights[i]
    }

    /// A pick from `table`, a structure built over the members: `lookup` names the
    /// backend it maps the request to (`None`: the table is empty). A stale table, or one
    /// whose backend changed since its build, is rebuilt by `build` from the weights of
    /// [`Membership::record`] and looked up once more, as Envoy rebuilds on host changes.
    #[inline]
    pub fn pick<T>(
        &mut self,
        table: &mut T,
        backends: &Backends,
        lookup: impl Fn(&T) -> Option<usize>,
        build: impl Fn(&[u32]) -> T,
    ) -> Option<usize> {
        if self.stale(backends) {
            *table = build(self.record(backends));
        }
        for _ in 0..2 {
            let i = lookup(table)?;
            if !self.changed(backends, i) {
                return Some(i);
            }
            *table = build(self.record(backends));
        }
        None
    }
}

/// A consistent-hash ring (Ketama / Envoy `RING_HASH`): points sorted by hash.
#[derive(Clone, Debug, Default)]
pub struct Ring {
    points: Vec<(u64, u32)>,
    /// For each value of a hash's top [`Ring::bits`] bits, the position of the first point
    /// at or above the smallest hash with those bits: a lookup then searches only between
    /// two neighbouring entries (about one point), not the whole ring, whose binary search
    /// misses the cache at every step once the ring outgrows it (10,000 points at 10,000
    /// servers). The same position as a search of the whole ring.
    starts: Vec<u32>,
    bits: u32,
}

const RING_SALT: u64 = 0x7269_6e67_5f68_6173; // "ring_has"

impl Ring {
    /// Envoy's `RingHashLoadBalancer::Ring::Ring`: with weights normalised to sum 1,
    /// `scale = min(ceil(min_w × min_ring_size) / min_w, max_ring_size)`, and backend `i`
    /// gets points until the running count reaches the running target `Σ scale × w_j`
    /// (so about `scale × w_i` points, in proportion to weight, at least `min_ring_size`
    /// in all). Backends of weight 0 get none.
    pub fn build(weights: &[u32], min_ring_size: u64, max_ring_size: u64) -> Ring {
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        let mut points = Vec::new();
        if total > 0.0 {
            let min_w = weights
                .iter()
                .filter(|&&w| w > 0)
                .map(|&w| f64::from(w) / total)
                .fold(f64::INFINITY, f64::min);
            let scale = ((min_w * min_ring_size as f64).ceil() / min_w).min(max_ring_size as f64);
            points.reserve(scale.ceil() as usize + 1);
            let (mut current, mut target) = (0.0f64, 0.0f64);
            for (i, &w) in weights.iter().enumerate() {
                if w == 0 {
                    continue;
                }
                target += scale * f64::from(w) / total;
                let mut replica = 0u64;
                while current < target {
                    points.push((point_hash(i, replica, RING_SALT), i as u32));
                    replica += 1;
                    current += 1.0;
                }
            }
        }
        points.sort_unstable();
        // About one point per entry, at most 2^20 entries.
        let bits = (points.len().max(1).next_power_of_two().trailing_zeros()).min(20);
        let starts = if bits == 0 {
            Vec::new()
        } else {
            let mut starts = Vec::with_capacity((1 << bits) + 1);
            let mut p = 0;
            for prefix in 0..(1u64 << bits) {
                let low = prefix << (64 - bits);
                while p < points.len() && points[p].0 < low {
                    p += 1;
                }
                starts.push(p as u32);
            }
            starts.push(points.len() as u32);
            starts
        };
        Ring {
            points,
            starts,
            bits,
        }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether the ring has no point.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Position of the first point at or after hash `h`, wrapping (Ketama's lookup).
    #[inline]
    pub fn position(&self, h: u64) -> usize {
        let p = if self.bits == 0 {
            self.points.partition_point(|&(x, _)| x < h)
        } else {
            // Every point below `lo` has a hash below `h`'s prefix, every point from `hi`
            // on one above it: the first point at or after `h` is in `lo..=hi`.
            let prefix = (h >> (64 - self.bits)) as usize;
            let (lo, hi) = (
                self.starts[prefix] as usize,
                self.starts[prefix + 1] as usize,
            );
            lo + self.points[lo..hi].partition_point(|&(x, _)| x < h)
        };
        if p == self.points.len() { 0 } else { p }
    }

    /// Backend of the point at `position` (taken modulo the ring size).
    #[inline]
    pub fn backend_at(&self, position: usize) -> usize {
        self.points[position % self.points.len()].1 as usize
    }
}

/// Test helpers for structures kept between picks and told of the view's changes
/// ([`Membership`], [`super::edf::WeightsSeen`]): each is checked against itself looking
/// at the whole view at every pick, as before it was told.
#[cfg(test)]
pub(crate) mod told {
    use super::super::testing::Pair;
    use super::super::{Backend, Backends, Outcome, PickContext, Strategy};
    use crate::rng::mix64;
    use crate::time::Nanos;
    use proptest::prelude::{Just, any, prop_oneof};
    use proptest::strategy::Strategy as _;

    /// A strategy whose picks hash keys drawn from a counter (the workouts of
    /// [`super::super::testing`] route every request with key 0, which would land every
    /// lookup of a hash table on one slot), and which, as the oracle (`rescan`), is made to
    /// look at the whole view before every pick. Everything else is passed on.
    pub struct Probe<S> {
        inner: S,
        picks: u64,
        rescan: Option<fn(&mut S)>,
    }

    /// `fast` and the same strategy made to rescan by `suspect` at every pick.
    pub fn pair<S: Strategy + 'static>(fast: S, oracle: S, suspect: fn(&mut S)) -> Pair {
        (
            Box::new(Probe {
                inner: fast,
                picks: 0,
                rescan: None,
            }),
            Box::new(Probe {
                inner: oracle,
                picks: 0,
                rescan: Some(suspect),
            }),
        )
    }

    impl<S: Strategy> Strategy for Probe<S> {
        fn pick(&mut self, backends: &Backends, ctx: &PickContext<'_>) -> Option<usize> {
            if let Some(suspect) = self.rescan {
                suspect(&mut self.inner);
            }
            self.picks += 1;
            let ctx = PickContext {
                key: mix64(self.picks),
                ..*ctx
            };
            self.inner.pick(backends, &ctx)
        }
        fn on_dispatch(&mut self, backend: usize, now: Nanos) {
            self.inner.on_dispatch(backend, now);
        }
        fn on_complete(&mut self, backend: usize, latency: Nanos, outcome: Outcome, now: Nanos) {
            self.inner.on_complete(backend, latency, outcome, now);
        }
        fn indexes_view(&self) -> bool {
            self.inner.indexes_view()
        }
        fn indexes_in_flight(&self) -> bool {
            self.inner.indexes_in_flight()
        }
        fn on_view(&mut self, backend: usize, view: &Backend) {
            self.inner.on_view(backend, view);
        }
    }

    /// One step of [`views_agree`]: a pick, or a change to one backend (modulo their
    /// number) of the view.
    #[derive(Clone, Debug)]
    pub enum Change {
        Pick,
        Up(usize, bool),
        Weight(usize, u32),
        InFlight(usize, u32),
    }

    fn change() -> impl proptest::strategy::Strategy<Value = Change> {
        prop_oneof![
            4 => Just(Change::Pick),
            2 => (any::<usize>(), any::<bool>()).prop_map(|(i, up)| Change::Up(i, up)),
            2 => (any::<usize>(), 0u32..4).prop_map(|(i, w)| Change::Weight(i, w)),
            1 => (any::<usize>(), 0u32..4).prop_map(|(i, n)| Change::InFlight(i, n)),
        ]
    }

    /// The property behind the balancer-driven workouts, with weights that change too
    /// (which no balancer does: a run's weights are fixed, [`Backends`]): over 200 random
    /// sequences of changes to a view, each told to the fast strategy as a balancer
    /// indexing the view would tell it, the fast strategy (`.0` of `pair`) picks what its
    /// oracle (`.1`) picks.
    pub fn views_agree<P: std::fmt::Debug>(
        params: impl proptest::strategy::Strategy<Value = P>,
        pair: impl Fn(&P) -> Pair,
    ) {
        use proptest::test_runner::{Config, TestCaseError, TestRunner};
        let config = Config {
            source_file: Some(file!()),
            ..Config::with_cases(200)
        };
        let weights = proptest::collection::vec(0u32..4, 1..12);
        let changes = proptest::collection::vec(change(), 1..200);
        let result = TestRunner::new(config).run(&(params, weights, changes), |(p, w, changes)| {
            let (mut fast, mut oracle) = pair(&p);
            let mut model: Vec<Backend> = w.iter().map(|&w| Backend::new(w)).collect();
            for (t, change) in changes.iter().enumerate() {
                let n = model.len();
                let i = match *change {
                    Change::Pick => {
                        let view: Backends = model.iter().copied().collect();
                        let ctx = PickContext::new(Nanos(t as u64), 0);
                        let (x, y) = (fast.pick(&view, &ctx), oracle.pick(&view, &ctx));
                        if x != y {
                            return Err(TestCaseError::fail(format!("step {t}: {x:?} != {y:?}")));
                        }
                        continue;
                    }
                    Change::Up(i, up) => {
                        model[i % n].up = up;
                        i % n
                    }
                    Change::Weight(i, w) => {
                        model[i % n].weight = w;
                        i % n
                    }
                    Change::InFlight(i, f) => {
                        model[i % n].in_flight = f;
                        i % n
                    }
                };
                let counts_only = matches!(change, Change::InFlight(..));
                for s in [&mut fast, &mut oracle] {
                    if s.indexes_view() && (!counts_only || s.indexes_in_flight()) {
                        s.on_view(i, &model[i]);
                    }
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`shared`] gives one table for one type, builder, parameters and weights while a
    /// holder lives, and builds anew for another type, builder, parameters or weights, or
    /// once every holder is gone.
    #[test]
    fn a_table_is_shared_exactly_while_held_and_alike() {
        let builds = std::cell::Cell::new(0);
        let build = |x: u32| {
            builds.set(builds.get() + 1);
            vec![x]
        };
        let w = [1, 2, 3];
        let a = shared("test", [5, 0], &w, |_| build(1));
        let b = shared("test", [5, 0], &w, |_| build(2));
        assert!(
            Arc::ptr_eq(&a, &b) && builds.get() == 1,
            "the same inputs: one build"
        );
        let other_weights = shared("test", [5, 0], &[1, 2, 0], |_| build(3));
        let other_params = shared("test", [5, 1], &w, |_| build(4));
        let other_type = shared("test", [5, 0], &w, |_| 7u64);
        let other_builder = shared("other", [5, 0], &w, |_| build(6));
        assert_eq!(
            builds.get(),
            4,
            "other weights, parameters or builders build their own"
        );
        assert_eq!((other_weights[0], other_params[0], *other_type), (3, 4, 7));
        assert_eq!(other_builder[0], 6);
        assert_eq!((a[0], b[0]), (1, 1));
        drop((a, b));
        let c = shared("test", [5, 0], &w, |_| build(5));
        assert_eq!((c[0], builds.get()), (5, 5), "no holder left: built again");
        // Older builds than the last few are forgotten, never mixed up.
        let held: Vec<_> = (0..2 * REMEMBERED as u32)
            .map(|k| shared("test", [9, 0], &[k], |_| build(k)))
            .collect();
        for (k, t) in held.iter().enumerate() {
            assert_eq!(t[0], k as u32);
            let again = shared("test", [9, 0], &[k as u32], |_| build(u32::MAX))[0];
            assert!(again == k as u32 || again == u32::MAX, "{k}: {again}");
        }
    }

    #[test]
    fn client_addresses_stay_on_loopback_and_wrap() {
        assert_eq!(client_address(0).to_string(), "127.1.0.0");
        assert_eq!(client_address(257).to_string(), "127.1.1.1");
        let last = 0x7fff_fffe - 0x7f01_0000;
        assert_eq!(client_address(last).to_string(), "127.255.255.254");
        assert_eq!(client_address(last + 1), client_address(0));
        assert!(client_address(u64::MAX).is_loopback());
    }

    #[test]
    fn ring_sizes_follow_envoy() {
        // Equal weights over 10: ceil(0.1 × 1024) / 0.1 = 1030 points, 103 each.
        let r = Ring::build(&[1; 10], 1024, 8 << 20);
        assert_eq!(r.len(), 1030);
        // Weights 3:1: min_w = 0.25, scale = 256 / 0.25 = 1024: 768 and 256.
        let r = Ring::build(&[3, 1], 1024, 8 << 20);
        let ones = r.points.iter().filter(|p| p.1 == 1).count();
        assert_eq!((r.len(), ones), (1024, 256));
        // The max ring size caps the scale.
        assert_eq!(Ring::build(&[1; 3], 10_000, 4096).len(), 4096);
        assert!(Ring::build(&[0, 0], 1024, 4096).is_empty());
    }

    proptest::proptest! {
        /// The indexed lookup finds what a search of the whole ring finds.
        #[test]
        fn indexed_position_is_the_binary_search(
            weights in proptest::collection::vec(0u32..4, 1..60),
            min in 1u64..3000,
            hashes in proptest::collection::vec(proptest::prelude::any::<u64>(), 1..50),
        ) {
            let r = Ring::build(&weights, min, 8 << 20);
            let mut probes = hashes;
            probes.extend(r.points.iter().flat_map(|p| [p.0, p.0.wrapping_sub(1), p.0.wrapping_add(1)]));
            probes.extend([0, u64::MAX]);
            for h in probes {
                let p = r.points.partition_point(|&(x, _)| x < h);
                let want = if p == r.points.len() { 0 } else { p };
                proptest::prop_assert_eq!(r.position(h), want, "hash {}", h);
            }
        }
    }

    /// A planted bug: an index one point off (each entry past its first point) is told
    /// from the search of the whole ring by the same comparison as the property test.
    #[test]
    fn an_index_one_point_off_is_caught() {
        let mut r = Ring::build(&[1; 100], 1024, 8 << 20);
        for s in &mut r.starts {
            *s = (*s + 1).min(r.points.len() as u32);
        }
        let wrong = r.points.iter().any(|p| {
            let want = r.points.partition_point(|&(x, _)| x < p.0) % r.points.len();
            r.position(p.0) != want
        });
        assert!(wrong);
    }

    #[test]
    fn lookup_wraps() {
        let r = Ring::build(&[1, 1], 4, 100);
        let last = r.points.last().unwrap().0;
        assert_eq!(r.position(last.wrapping_add(1)), 0);
        assert_eq!(r.position(0), 0);
        assert_eq!(r.position(last), r.len() - 1);
    }
}
