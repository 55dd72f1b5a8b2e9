//! Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, SODA 2018;
//! HAProxy `hash-balance-factor`, Vimeo's implementation): walk the hash ring from the
//! key's point and take the first backend that is under its capacity.
//!
//! Capacity, as HAProxy's `chash_server_is_eligible` with `factor` in percent: a backend
//! of weight `w` (out of total up weight `W`) may take the request when
//! `in_flight + 1 ≤ ceil(factor/100 × (T + 1) × w / W)`, `T` being this balancer's
//! requests in flight (the one being placed counts, so some backend always qualifies);
//! with equal weights that is `ceil(factor/100 × average)`. HAProxy's default factor is 0
//! (off); lbsim's default is 125, the value the paper and Vimeo recommend (`factor` must
//! exceed 100). The ring is Envoy's ([`super::hash::Ring`], `min_ring_size` 1024), built
//! over the up backends; a backend's points are passed over when it is full.

use std::sync::Arc;

use super::SpecError;
use super::hash::{Membership, Ring, key_hash, shared};
use super::registry::{About, Kind, Knob, PickCost, Reads, Scanned, Split, Table, Ty};
use super::{Backend, Backends, Outcome, PickContext, Strategy};
use crate::time::Nanos;

/// Ring hash with HAProxy's bounded loads.
#[derive(Debug)]
pub struct BoundedLoadHash {
    factor: u32,
    min_ring_size: u64,
    /// Shared with the other balancers that built the same ring ([`shared`]).
    ring: Arc<Ring>,
    members: Membership,
    total_in_flight: u64,
}

impl BoundedLoadHash {
    /// Bounded-load hashing with `factor` (percent, > 100) over a ring of at least
    /// `min_ring_size` points.
    pub fn new(factor: u32, min_ring_size: u64) -> BoundedLoadHash {
        BoundedLoadHash {
            factor,
            min_ring_size,
            ring: Arc::default(),
            members: Membership::default(),
            total_in_flight: 0,
        }
    }

    /// The most requests backend `i` may hold once the next one is placed.
    pub fn capacity(&self, i: usize) -> u64 {
        let w = u64::from(self.members.weight(i));
        let total_w = self.members.total_weight().max(1);
        // ceil(factor × (T + 1) × w / (100 × W)), in integers.
        let num = u64::from(self.factor) * (self.total_in_flight + 1) * w;
        num.div_ceil(100 * total_w)
    }

    fn rebuild(&mut self, backends: &Backends) {
        let weights = self.members.record(backends);
        let min = self.min_ring_size;
        self.ring = shared("Ring::build", [min, 8 << 20], weights, |w| {
            Ring::build(w, min, 8 << 20)
        });
    }
}

impl Strategy for BoundedLoadHash {
    fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
        if self.members.stale(backends) {
            self.rebuild(backends);
        }
        let start = self.ring.position(key_hash(ctx.key));
        let mut k = 0;
        while k < self.ring.len() {
            let i = self.ring.backend_at(start + k);
            if self.members.changed(backends, i) {
                self.rebuild(backends);
                return self.pick(backends, ctx);
            }
            if u64::from(backends.in_flight(i)) < self.capacity(i) {
                return Some(i);
            }
            k += 1;
        }
        // Only reachable when requests of backends now down are still counted: the least
        // loaded up backend.
        (0..backends.len())
            .filter(|&i| backends.up(i) && backends.weight(i) > 0)
            .min_by_key(|&i| backends.in_flight(i))
    }

    fn on_dispatch(&mut self, _backend: usize, _now: Nanos) {
        self.total_in_flight += 1;
    }

    fn on_complete(&mut self, _backend: usize, _latency: Nanos, _outcome: Outcome, _now: Nanos) {
        self.total_in_flight = self.total_in_flight.saturating_sub(1);
    }

    /// The table is rebuilt when a backend left out of it comes back: the balancer tells
    /// of every backend going up or down (`Membership::told`).
    fn indexes_view(&self) -> bool {
        true
    }

    /// Counts are not kept (only up/down is told).
    fn indexes_in_flight(&self) -> bool {
        false
    }

    fn on_view(&mut self, backend: usize, view: &Backend) {
        self.members.told(backend, view);
    }
}

/// Parameters of `kind = "bounded_load_hash"`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoundedLoadHashParams {
    /// Most load a server may take, in percent of the average (> 100). Default 125.
    pub hash_balance_factor: u32,
    /// Fewest points on the ring. Default 1024.
    pub min_ring_size: u64,
}

impl Default for BoundedLoadHashParams {
    fn default() -> BoundedLoadHashParams {
        BoundedLoadHashParams {
            hash_balance_factor: 125,
            min_ring_size: 1024,
        }
    }
}

impl Kind for BoundedLoadHash {
    type Params = BoundedLoadHashParams;
    const ABOUT: About = About {
        kind: "bounded_load_hash",
        aliases: &[],
        follows: "HAProxy hash-balance-factor: consistent hashing with bounded loads",
        knobs: &[
            Knob::new("hash_balance_factor", Ty::Int)
                .meaning("% of the mean load a server may take"),
            Knob::new("min_ring_size", Ty::Int).unit("points"),
        ],
        reads: Reads::WEIGHTS,
        split: Split::Dynamic,
    };
    fn validate(p: &BoundedLoadHashParams, _: usize) -> Result<(), SpecError> {
        if p.hash_balance_factor <= 100 {
            return Err(SpecError::new(
                "hash_balance_factor",
                format!("is {}", p.hash_balance_factor),
                "use a percentage above 100, e.g. 125 (a server may take 25% more than the average)",
            ));
        }
        if p.min_ring_size == 0 || p.min_ring_size > super::ring_hash::MAX_RING_SIZE {
            return Err(SpecError::new(
                "min_ring_size",
                format!("is {}", p.min_ring_size),
                "use 1 to 8388608 (1024 is Envoy's default)",
            ));
        }
        Ok(())
    }
    fn build(p: &BoundedLoadHashParams, _: usize, _: crate::rng::SimRng) -> BoundedLoadHash {
        BoundedLoadHash::new(p.hash_balance_factor, p.min_ring_size)
    }
    fn cost(p: &BoundedLoadHashParams) -> PickCost {
        PickCost {
            scanned: Scanned::All,
            table: Some(Table::Ring {
                min_points: p.min_ring_size,
                max_points: super::ring_hash::MAX_RING_SIZE,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Balancer;
    use proptest::prelude::*;

    #[test]
    fn a_hot_key_spills_to_the_next_backends() {
        let mut b = Balancer::new(Box::new(BoundedLoadHash::new(125, 1024)), &[1; 4]);
        // The same key 40 times, nothing completing: capacity ceil(1.25 × (T+1) / 4).
        for _ in 0..40 {
            b.route(Nanos(0), 42).unwrap();
        }
        let f: Vec<u32> = b.backends().iter().map(|x| x.in_flight).collect();
        assert!(f.iter().all(|&x| x <= 13), "{f:?}");
        assert_eq!(f.iter().sum::<u32>(), 40);
    }

    proptest! {
        /// At every pick, the chosen backend holds at most ceil(factor × average), the
        /// average counting the request being placed.
        #[test]
        fn never_exceeds_the_bound(
            n in 1usize..12,
            factor in 101u32..300,
            ops in prop::collection::vec((0u64..20, any::<bool>()), 1..300),
        ) {
            let mut b = Balancer::new(Box::new(BoundedLoadHash::new(factor, 64)), &vec![1; n]);
            let mut live: Vec<usize> = Vec::new();
            for (key, complete) in ops {
                if complete && !live.is_empty() {
                    let i = live.remove((key as usize) % live.len());
                    b.complete(i, Nanos(1), Outcome::Ok, Nanos(0));
                    continue;
                }
                let total: u64 = live.len() as u64 + 1;
                let i = b.route(Nanos(0), key).unwrap();
                let bound = (u64::from(factor) * total).div_ceil(100 * n as u64);
                prop_assert!(u64::from(b.backends().in_flight(i)) <= bound);
                live.push(i);
            }
        }
    }

    /// The ring rebuilt when told of a backend coming back picks what it picks when it
    /// looks at every backend left out at every pick, through up/down (balancer-driven
    /// workouts, with requests in flight) and weight changes (views changed directly).
    #[test]
    fn a_told_ring_picks_as_a_rescan() {
        use crate::strategy::hash::told::{pair, views_agree};
        use crate::strategy::testing::{index_agrees_with_scan, weights};
        let params = || (101u32..300, 1u64..200);
        let build = |&(factor, min): &(u32, u64)| {
            let ring = || BoundedLoadHash::new(factor, min);
            pair(ring(), ring(), |s| s.members.suspect())
        };
        index_agrees_with_scan(params(), weights(), build);
        views_agree(params(), build);
    }
}
