//! HAProxy `balance source` (HAProxy 2.6, `src/backend.c` `get_server_sh`): the client's
//! IPv4 address, as a 32-bit number in host order (the XOR of the address's 32-bit words,
//! which for IPv4 is the one word), optionally through Bob Jenkins' full-avalanche integer
//! hash (`hash-type … avalanche`, `full_hash`), then looked up as `hash-type` says:
//!
//! - **`map-based`** (HAProxy's default; `src/lb_map.c` `map_get_server_hash`):
//!   `map.srv[hash % tot_weight]` in the very map `static-rr` walks ([`super::StaticRr`]),
//!   rebuilt over the servers still up when one goes down or comes back, so that a
//!   server's failure moves most clients, not only its own.
//! - **`consistent`** (`src/lb_chash.c`): every server up places `16 × weight` points at
//!   `full_hash(puid × 4096 + j)` (`puid`: its 1-based position in the configuration), and
//!   the hash goes to the server of the *nearest* point on either side (`dp <= dn` picks the
//!   point before). With `hash-balance-factor F` (Mirrokni, Thorup and Zadimoghaddam's
//!   consistent hashing with bounded loads, as `chash_server_is_eligible` adapts it to
//!   weights) a server already serving its share of `⌈(served + 1) · F / 100⌉` connections
//!   is passed over for the next point clockwise. Points with equal keys keep the order of
//!   their servers (HAProxy keeps insertion order; the two differ only after servers went
//!   down and up, with odds of a collision near n²/2³³ for n points).
//!
//! Without `avalanche`, consistent hashing of the raw address clusters: loopback clients
//! `127.1.x.y` are 2¹⁶ consecutive values in a ring of 2³², so they share a few points —
//! HAProxy's behaviour, which the documentation's advice to add `avalanche` is about.
//!
//! **The key.** A connection's client address is [`super::hash::client_address`] of the
//! key: at connection level (`[connections]`) the connection's slot, whose connections
//! live mode opens from exactly that loopback address, so a replay `--via haproxy` sends
//! every connection where the simulator does. `served` is the balancer's count in flight
//! (at connection level, the connections open to each server).
//!
//! **Cost.** The map and the ring are rebuilt only after the balancer tells of a server
//! going up or down ([`Strategy::on_view`]), and `served` is kept as the counts change
//! (only with a balance factor, the one case that reads counts): no pick scans the view.
//! The map is `static_rr`'s, built by levels of slots owed ([`StaticRr::map`]) in
//! O((slots + servers) · log₆₄ servers), slot for slot HAProxy's O(slots × servers) loop:
//! 0.74 ms instead of 0.5 s at 10,000 servers of weights 1 to 4, where a run cost 12 times
//! round robin's before (it was fast only with equal weights).
//! A consistent lookup reads an index of the ring's key ranges (about one point a range)
//! rather than binary-searching the ring (0.84x / 0.90x its CPU time at 1,000 / 10,000
//! servers), and a walk past saturated servers takes an idle one without dividing (its
//! bound is at least one). The walk itself is HAProxy's: without `avalanche`, loopback
//! addresses share one arc of the ring, so with a balance factor a walk passes over the
//! arc's busy servers, tens to hundreds of points a pick at 1,000–10,000 servers.

use serde::{Deserialize, Serialize};

use super::SpecError;
use super::hash::client_address;
use super::registry::{About, Kind, Knob, PickCost, Reads, Split, Ty};
use super::{Backend, Backends, BuiltFor, PickContext, StaticRr, Strategy};

/// Parameters of `kind = "haproxy_source"`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaproxySourceParams {
    /// `hash-type consistent` instead of `map-based` (HAProxy's default). Default false.
    pub consistent: bool,
    /// The `avalanche` modifier: hash the address with `full_hash` first. Default false.
    pub avalanche: bool,
    /// `hash-balance-factor`, percent: 0 (off, the default) or more than 100; consistent
    /// hashing only.
    pub hash_balance_factor: u32,
}

/// HAProxy `balance source`.
#[derive(Debug, Default)]
pub struct HaproxySource {
    params: HaproxySourceParams,
    map: StaticRr,
    ring: Ring,
    /// Each backend's requests in flight as last told, and their sum (`served`, wrapping
    /// as HAProxy's unsigned counter would): kept only with a balance factor. Empty until
    /// the first pick, which fills it from the view (as after the backends change).
    flight: Vec<u32>,
    served: u32,
}

/// Bob Jenkins' full-avalanche 32-bit integer hash, times a prime near ¾ of 2³² (HAProxy's
/// `__full_hash`, `include/haproxy/intops.h`).
pub fn full_hash(mut a: u32) -> u32 {
    a = a.wrapping_add(0x7ed5_5d16).wrapping_add(a << 12);
    a = (a ^ 0xc761_c23c) ^ (a >> 19);
    a = a.wrapping_add(0x1656_67b1).wrapping_add(a << 5);
    a = a.wrapping_add(0xd3a2_646c) ^ (a << 9);
    a = a.wrapping_add(0xfd70_46c5).wrapping_add(a << 3);
    a = (a ^ 0xb55a_4f09) ^ (a >> 16);
    a.wrapping_mul(3_221_225_473)
}

/// HAProxy's weight scale for consistent hashing (`BE_WEIGHT_SCALE`): points per weight.
const WEIGHT_SCALE: u32 = 16;
/// `SRV_EWGHT_RANGE` (256 user weights × the scale): the stride of a server's point inputs.
const EWEIGHT_RANGE: u32 = 256 * WEIGHT_SCALE;

/// The consistent-hash tree: the points of the servers up, sorted by key.
#[derive(Debug, Default)]
struct Ring {
    /// (key, server), sorted by key, then server.
    points: Vec<(u32, u32)>,
    /// Where each range of keys starts in `points`: entry `b` is the first point whose key
    /// is at least `b << shift` (the last entry is `points.len()`), so a lookup searches
    /// only the points of its hash's range, about one, instead of binary-searching the
    /// ring (which missed the cache at every step at 1,000 servers and more).
    starts: Vec<u32>,
    /// 32 minus the bits of a key that name its range.
    shift: u32,
    /// The view it was built for, and whether a server went up or down since.
    built_for: BuiltFor,
    /// Each server's effective weight (16 × weight when up, else 0).
    eweight: Vec<u32>,
    /// Σ eweights of the servers before each (`cumulative_weight`).
    cumulative: Vec<u32>,
    /// Σ eweights (`tot_weight`).
    total: u32,
}

impl Ring {
    fn refresh(&mut self, backends: &Backends) {
        if !self.built_for.changed(backends) {
            return;
        }
        self.points.clear();
        self.eweight.clear();
        self.cumulative.clear();
        self.total = 0;
        for (i, b) in backends.iter().enumerate() {
            let e = if b.up { b.weight * WEIGHT_SCALE } else { 0 };
            let puid = i as u32 + 1;
            self.points.extend((0..e).map(|j| {
                (
                    full_hash(puid.wrapping_mul(EWEIGHT_RANGE).wrapping_add(j)),
                    i as u32,
                )
            }));
            self.cumulative.push(self.total);
            self.eweight.push(e);
            self.total += e;
        }
        self.points.sort_unstable();
        self.index();
        self.built_for.built(backends);
    }

    /// Builds [`Ring::starts`]: about one range per point (2^⌊log2 points⌋ ranges, at least
    /// 2 and at most 2^22, a 16 MB index, reached past 4 million points).
    fn index(&mut self) {
        let bits = self.points.len().max(2).ilog2().min(22);
        self.shift = 32 - bits;
        self.starts.clear();
        self.starts.reserve((1 << bits) + 1);
        let mut at = 0;
        for b in 0..1u64 << bits {
            let from = b << self.shift;
            while at < self.points.len() && u64::from(self.points[at].0) < from {
                at += 1;
            }
            self.starts.push(at as u32);
        }
        self.starts.push(self.points.len() as u32);
    }

    /// The first point whose key is at least `hash` (`points.len()` if none): the
    /// ring's `partition_point`, searched within `hash`'s range only.
    fn first_at_or_after(&self, hash: u32) -> usize {
        let b = (hash >> self.shift) as usize;
        let (lo, hi) = (self.starts[b] as usize, self.starts[b + 1] as usize);
        lo + self.points[lo..hi]
            .iter()
            .take_while(|&&(k, _)| k < hash)
            .count()
    }

    /// `chash_server_is_eligible`: whether server `s`, serving `own` connections, serves
    /// fewer than its bounded share of `served + 1` times `factor` percent (`share`:
    /// [`Ring::share`] of the two). An idle server is always eligible (its share is at
    /// least one), which spares the divisions for the servers a walk usually ends on.
    fn eligible(&self, s: usize, own: u32, (per_weight, remainder): (u32, u32)) -> bool {
        if own == 0 {
            return true;
        }
        let (e, cum) = (self.eweight[s], self.cumulative[s]);
        let mut slots = e.wrapping_mul(per_weight);
        slots = slots.wrapping_add(
            (cum + e).wrapping_mul(remainder) / self.total
                - cum.wrapping_mul(remainder) / self.total,
        );
        own < slots.max(1)
    }

    /// The slots per unit of weight and the slots left over, of `served + 1` connections
    /// times `factor` percent: what every server's bound in [`Ring::eligible`] shares, so
    /// computed once a pick.
    fn share(&self, served: u32, factor: u32) -> (u32, u32) {
        // C unsigned arithmetic, wrapping included (not `div_ceil`).
        let tot_slots = served.wrapping_add(1).wrapping_mul(factor).wrapping_add(99) / 100;
        (tot_slots / self.total, tot_slots % self.total)
    }

    /// `chash_get_server_hash` without a server to avoid.
    fn pick(&self, hash: u32, backends: &Backends, factor: u32, served: u32) -> Option<usize> {
        let n = self.points.len();
        if n == 0 {
            return None;
        }
        let next = self.first_at_or_after(hash) % n;
        let prev = (next + n - 1) % n;
        let dp = hash.wrapping_sub(self.points[prev].0);
        let dn = self.points[next].0.wrapping_sub(hash);
        let mut at = if dp <= dn { prev } else { next };
        if factor == 0 {
            return Some(self.points[at].1 as usize);
        }
        // Clockwise past saturated servers, around the ring at most once more.
        let share = self.share(served, factor);
        let mut wraps = 0;
        loop {
            let s = self.points[at].1 as usize;
            if self.eligible(s, backends.in_flight(s), share) {
                return Some(s);
            }
            at += 1;
            if at == n {
                at = 0;
                wraps += 1;
                if wraps > 1 {
                    return Some(self.points[at].1 as usize);
                }
            }
        }
    }
}

impl Strategy for HaproxySource {
    fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
        let mut hash = u32::from(client_address(ctx.key));
        if self.params.avalanche {
            hash = full_hash(hash);
        }
        if self.params.consistent {
            self.ring.refresh(backends);
            let factor = self.params.hash_balance_factor;
            let served = if factor == 0 {
                0
            } else {
                self.served(backends)
            };
            return self.ring.pick(hash, backends, factor, served);
        }
        let map = self.map.slots(backends);
        if map.is_empty() {
            return None;
        }
        Some(map[(hash as usize) % map.len()])
    }

    fn indexes_view(&self) -> bool {
        true
    }

    /// Counts are read only by the balance factor's bound.
    fn indexes_in_flight(&self) -> bool {
        self.counts()
    }

    /// The map and the ring are rebuilt only after a server's health changed (see
    /// [`StaticRr`]); `served` follows the counts.
    fn on_view(&mut self, backend: usize, view: &Backend) {
        self.map.on_view(backend, view);
        self.ring.built_for.told(backend, view);
        if let Some(f) = self.flight.get_mut(backend) {
            self.served = self.served.wrapping_sub(*f).wrapping_add(view.in_flight);
            *f = view.in_flight;
        }
    }
}

impl HaproxySource {
    /// Whether the bound of a balance factor reads the counts.
    fn counts(&self) -> bool {
        self.params.consistent && self.params.hash_balance_factor > 0
    }

    /// The balancer's requests in flight (HAProxy's `served`): kept as the balancer tells
    /// of each change, taken from the view when the backends are new.
    fn served(&mut self, backends: &Backends) -> u32 {
        if self.flight.len() != backends.len() {
            self.flight = backends.iter().map(|b| b.in_flight).collect();
            self.served = self.flight.iter().fold(0, |a, &f| a.wrapping_add(f));
        }
        debug_assert_eq!(
            self.served,
            backends
                .iter()
                .fold(0u32, |a, b| a.wrapping_add(b.in_flight)),
            "served drifted from the view"
        );
        self.served
    }
}

impl Kind for HaproxySource {
    type Params = HaproxySourceParams;
    const ABOUT: About = About {
        kind: "haproxy_source",
        aliases: &[],
        follows: "HAProxy balance source (backend.c get_server_sh, HAProxy 2.6): the client's IPv4 address, modulo the static-rr map (hash-type map-based) or to the nearest of 16 × weight points (consistent, lb_chash.c, with hash-balance-factor)",
        knobs: &[
            Knob::new("consistent", Ty::Bool).meaning("hash-type consistent"),
            Knob::new("avalanche", Ty::Bool).meaning("full_hash the address first"),
            Knob::new("hash_balance_factor", Ty::Int)
                .unit("%")
                .meaning("0: unbounded"),
        ],
        reads: Reads::WEIGHTS,
        split: Split::Dynamic,
    };
    fn validate(p: &HaproxySourceParams, _: usize) -> Result<(), SpecError> {
        if p.hash_balance_factor != 0 && p.hash_balance_factor <= 100 {
            return Err(SpecError::new(
                "hash_balance_factor",
                format!("is {}", p.hash_balance_factor),
                "use 0 (no bound) or more than 100, as HAProxy requires (e.g. 150: no server above 1.5 × its share)",
            ));
        }
        if p.hash_balance_factor != 0 && !p.consistent {
            return Err(SpecError::new(
                "hash_balance_factor",
                "is set with map-based hashing",
                "set consistent = true: HAProxy bounds loads only for hash-type consistent",
            ));
        }
        Ok(())
    }
    fn build(p: &HaproxySourceParams, _: usize, _: crate::rng::SimRng) -> HaproxySource {
        HaproxySource {
            params: p.clone(),
            ..HaproxySource::default()
        }
    }
    fn cost(_: &HaproxySourceParams) -> PickCost {
        PickCost::SCAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Balancer;
    use crate::time::Nanos;

    /// 127.1.0.0 is 0x7f01_0000 = 2130771968; the map of weights 3:3:2:2:2:2:2:2 has 18
    /// slots (`a b c d e a b f g h c a b d e f g h`), and 2130771968 % 18 = 8: slot 8 is server g.
    #[test]
    fn the_address_modulo_the_static_rr_map() {
        let mut b = Balancer::new(
            Box::new(HaproxySource::default()),
            &[3, 3, 2, 2, 2, 2, 2, 2],
        );
        assert_eq!(2_130_771_968u64 % 18, 8);
        assert_eq!(b.route(Nanos(0), 0), Some(6));
        let map = StaticRr::map(&[3, 3, 2, 2, 2, 2, 2, 2]);
        for k in 0..200u64 {
            let h = u64::from(u32::from(client_address(k)));
            assert_eq!(b.route(Nanos(0), k), Some(map[(h % 18) as usize]));
        }
    }

    fn consistent(avalanche: bool, factor: u32) -> HaproxySource {
        HaproxySource {
            params: HaproxySourceParams {
                consistent: true,
                avalanche,
                hash_balance_factor: factor,
            },
            ..HaproxySource::default()
        }
    }

    /// Values of HAProxy's `__full_hash`, its C compiled with gcc.
    #[test]
    fn full_hash_matches_haproxy() {
        assert_eq!(full_hash(0), 0xab4e_d927);
        assert_eq!(full_hash(4096), 0x49c2_008b);
        assert_eq!(full_hash(0x7f01_0005), 0xd5f6_044a);
    }

    #[test]
    fn consistent_hashing_goes_to_the_nearest_point_and_moves_only_the_lost_servers_keys() {
        let mut b = Balancer::new(Box::new(consistent(true, 0)), &[1, 1, 1, 1]);
        let before: Vec<_> = (0..400).map(|k| b.route(Nanos(0), k).unwrap()).collect();
        let mut seen = before.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, [0, 1, 2, 3]);
        b.set_up(2, false);
        for (k, &was) in before.iter().enumerate() {
            let now = b.route(Nanos(0), k as u64).unwrap();
            assert_ne!(now, 2);
            if was != 2 {
                assert_eq!(now, was, "key {k} moved although its server is up");
            }
        }
        // The nearest point, on either side: a hash just past a point goes back to it.
        let mut r = Ring::default();
        let view = Backends::new(&[1; 2]);
        r.refresh(&view);
        for w in r.points.windows(2) {
            let (a, b) = (w[0], w[1]);
            if b.0 - a.0 > 2 {
                assert_eq!(r.pick(a.0 + 1, &view, 0, 0), Some(a.1 as usize));
                assert_eq!(r.pick(b.0 - 1, &view, 0, 0), Some(b.1 as usize));
            }
        }
    }

    /// With a balance factor of 125 and 8 equal servers, no server holds more than
    /// ⌈(c + 1) · 1.25 / 8⌉ of c open connections at any time, while without it the
    /// busiest holds nearly all (from 40 connections on: the worst fraction on one server).
    #[test]
    fn balance_factor_bounds_every_servers_connections() {
        let busiest = |factor: u32| {
            let mut b = Balancer::new(Box::new(consistent(false, factor)), &[1; 8]);
            let mut open = [0u32; 8];
            let mut worst = 0.0f64;
            for k in 0..400u64 {
                let i = b.route(Nanos(0), k).unwrap();
                open[i] += 1;
                let c: u32 = open.iter().sum();
                if c >= 40 {
                    worst = worst.max(f64::from(open[i]) / f64::from(c));
                }
                if factor > 0 {
                    let cap = (f64::from(c) * f64::from(factor) / 100.0 / 8.0).ceil() + 1.0;
                    assert!(f64::from(open[i]) <= cap, "{open:?} at {c}");
                }
            }
            worst
        };
        // Without avalanche the raw loopback addresses sit in one narrow arc: one server.
        assert!(busiest(0) > 0.9);
        assert!(busiest(125) < 0.3);
    }

    /// The index finds the first point at or after any hash as a binary search of the
    /// whole ring does: at every point's key, beside it, at the ends of the key space and
    /// at random, over rings of 1 to 600 points of random weights, some servers down.
    #[test]
    fn the_index_finds_what_a_binary_search_finds() {
        use proptest::prelude::*;
        proptest!(|(
            weights in proptest::collection::vec(0u32..4, 1..12),
            down in any::<u16>(),
            hashes in proptest::collection::vec(any::<u32>(), 32),
        )| {
            let mut view = Backends::new(&weights);
            for i in 0..weights.len() {
                if down >> i & 1 == 1 {
                    view.set_up(i, false);
                }
            }
            let mut r = Ring::default();
            r.refresh(&view);
            let keys = r.points.iter().flat_map(|&(k, _)| {
                [k, k.wrapping_sub(1), k.wrapping_add(1)]
            });
            for h in keys.chain(hashes).chain([0, 1, u32::MAX, 1 << 31]) {
                let want = r.points.partition_point(|&(k, _)| k < h);
                prop_assert_eq!(r.first_at_or_after(h), want, "hash {}", h);
            }
        });
    }

    #[test]
    fn validation_follows_haproxy() {
        let p = |consistent, hash_balance_factor| HaproxySourceParams {
            consistent,
            avalanche: false,
            hash_balance_factor,
        };
        assert!(HaproxySource::validate(&p(true, 100), 4).is_err());
        assert!(HaproxySource::validate(&p(false, 150), 4).is_err());
        assert!(HaproxySource::validate(&p(true, 150), 4).is_ok());
        assert!(HaproxySource::validate(&p(false, 0), 4).is_ok());
    }

    #[test]
    fn a_down_server_rebuilds_the_map_over_the_others() {
        let mut b = Balancer::new(Box::new(HaproxySource::default()), &[1, 1, 1]);
        b.set_up(1, false);
        // The map is now `a c`: even addresses go to a, odd ones to c.
        for k in 0..50u64 {
            let odd = u32::from(client_address(k)) % 2 == 1;
            assert_eq!(b.route(Nanos(0), k), Some(if odd { 2 } else { 0 }));
        }
        b.set_up(0, false);
        b.set_up(2, false);
        assert_eq!(b.route(Nanos(0), 0), None);
    }

    /// `balance source` as before the balancer's changes were kept: the ring compared
    /// with the view and `served` summed over it at every pick.
    struct Rescan(HaproxySource);

    impl Strategy for Rescan {
        fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
            self.0.ring.built_for.suspect();
            self.0.flight.clear();
            self.0.pick(backends, ctx)
        }
        fn indexes_view(&self) -> bool {
            true
        }
        fn on_view(&mut self, backend: usize, view: &Backend) {
            self.0.on_view(backend, view);
        }
    }

    /// Keeping the ring and `served` between picks picks what rescanning the view picks,
    /// map-based and consistent, with and without avalanche and a balance factor.
    #[test]
    fn kept_ring_and_served_pick_as_a_rescan() {
        use crate::strategy::testing::{index_agrees_with_scan, weights};
        use proptest::prelude::*;
        let params = (
            any::<bool>(),
            any::<bool>(),
            prop_oneof![Just(0u32), 101u32..300],
        );
        index_agrees_with_scan(params, weights(), |&(consistent, avalanche, factor)| {
            let p = HaproxySourceParams {
                consistent,
                avalanche,
                hash_balance_factor: if consistent { factor } else { 0 },
            };
            let build = || HaproxySource {
                params: p.clone(),
                ..HaproxySource::default()
            };
            (Box::new(build()), Box::new(Rescan(build())))
        });
    }
}
