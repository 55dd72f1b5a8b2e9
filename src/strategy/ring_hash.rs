//! Ring hash (Ketama; Envoy `RING_HASH`): each backend owns points on a 64-bit ring in
//! proportion to its weight (Envoy's sizing: at least `min_ring_size` points, default
//! 1024, at most `max_ring_size`, default 8M); a request goes to the owner of the first
//! point at or after the hash of its key. As in Envoy the ring is built over the up
//! backends only and rebuilt when that set changes; since the sizing depends on the set,
//! removing one of N backends moves its own keys plus the few taken by the survivors'
//! extra points. See [`super::hash`] for the hash function.

use std::sync::Arc;

use super::SpecError;
use super::hash::{Membership, Ring, key_hash, shared};
use super::registry::{About, Kind, Knob, PickCost, Reads, Split, Table, Ty};
use super::{Backend, Backends, PickContext, Strategy};

/// Envoy ring hash.
#[derive(Debug)]
pub struct RingHash {
    min_ring_size: u64,
    max_ring_size: u64,
    /// Shared with the other balancers that built the same ring ([`shared`]).
    ring: Arc<Ring>,
    members: Membership,
}

impl RingHash {
    /// A ring of at least `min_ring_size` and at most `max_ring_size` points.
    pub fn new(min_ring_size: u64, max_ring_size: u64) -> RingHash {
        RingHash {
            min_ring_size,
            max_ring_size,
            ring: Arc::default(),
            members: Membership::default(),
        }
    }
}

impl Strategy for RingHash {
    fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
        let h = key_hash(ctx.key);
        let (min, max) = (self.min_ring_size, self.max_ring_size);
        self.members.pick(
            &mut self.ring,
            backends,
            |r: &Arc<Ring>| (!r.is_empty()).then(|| r.backend_at(r.position(h))),
            |weights| {
                shared("Ring::build", [min, max], weights, |w| {
                    Ring::build(w, min, max)
                })
            },
        )
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

/// Parameters of `kind = "ring_hash"`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RingHashParams {
    /// Fewest points on the ring. Default 1024 (Envoy).
    pub min_ring_size: u64,
    /// Most points on the ring. Default 8388608 (Envoy).
    pub max_ring_size: u64,
}

impl Default for RingHashParams {
    fn default() -> RingHashParams {
        RingHashParams {
            min_ring_size: 1024,
            max_ring_size: MAX_RING_SIZE,
        }
    }
}

/// Envoy's largest ring (points).
pub const MAX_RING_SIZE: u64 = 8 << 20;

impl Kind for RingHash {
    type Params = RingHashParams;
    const ABOUT: About = About {
        kind: "ring_hash",
        aliases: &[],
        follows: "Ketama / Envoy RING_HASH on the request key",
        knobs: &[
            Knob::new("min_ring_size", Ty::Int).unit("points"),
            Knob::new("max_ring_size", Ty::Int).unit("points"),
        ],
        reads: Reads::WEIGHTS,
        split: Split::Dynamic,
    };
    fn validate(p: &RingHashParams, _: usize) -> Result<(), SpecError> {
        let (min, max) = (p.min_ring_size, p.max_ring_size);
        if min == 0 || min > max || max > MAX_RING_SIZE {
            return Err(SpecError::new(
                "min_ring_size",
                format!("min_ring_size {min}, max_ring_size {max}"),
                "use 1 ≤ min_ring_size ≤ max_ring_size ≤ 8388608 (Envoy's bounds)",
            ));
        }
        Ok(())
    }
    fn build(p: &RingHashParams, _: usize, _: crate::rng::SimRng) -> RingHash {
        RingHash::new(p.min_ring_size, p.max_ring_size)
    }
    fn cost(p: &RingHashParams) -> PickCost {
        PickCost {
            table: Some(Table::Ring {
                min_points: p.min_ring_size,
                max_points: p.max_ring_size,
            }),
            ..PickCost::CONSTANT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Balancer;
    use crate::time::Nanos;

    fn ring() -> Box<RingHash> {
        Box::new(RingHash::new(1024, 8 << 20))
    }

    #[test]
    fn same_key_same_backend_and_weights_respected() {
        let mut b = Balancer::new(ring(), &[3, 1]);
        let first: Vec<usize> = (0..1000).map(|k| b.route(Nanos(0), k).unwrap()).collect();
        let again: Vec<usize> = (0..1000).map(|k| b.route(Nanos(0), k).unwrap()).collect();
        assert_eq!(first, again);
        let zero = first.iter().filter(|&&i| i == 0).count();
        // Three quarters of the ring, give or take the arcs' spread.
        assert!((650..850).contains(&zero), "{zero}");
    }

    #[test]
    fn down_backend_keys_move_and_come_back() {
        let mut b = Balancer::new(ring(), &[1, 1, 1]);
        let before: Vec<usize> = (0..600).map(|k| b.route(Nanos(0), k).unwrap()).collect();
        b.set_up(1, false);
        let during: Vec<usize> = (0..600).map(|k| b.route(Nanos(0), k).unwrap()).collect();
        assert!(during.iter().all(|&i| i != 1));
        b.set_up(1, true);
        let after: Vec<usize> = (0..600).map(|k| b.route(Nanos(0), k).unwrap()).collect();
        assert_eq!(before, after);
        for i in 0..3 {
            b.set_up(i, false);
        }
        assert_eq!(b.route(Nanos(0), 7), None);
    }

    /// The ring rebuilt when told of a backend coming back picks what it picks when it
    /// looks at every backend left out at every pick, through up/down (balancer-driven
    /// workouts) and weight changes (views changed directly).
    #[test]
    fn a_told_ring_picks_as_a_rescan() {
        use crate::strategy::hash::told::{pair, views_agree};
        use crate::strategy::testing::{index_agrees_with_scan, weights};
        let build = |&min: &u64| {
            let ring = || RingHash::new(min, 8 << 20);
            pair(ring(), ring(), |s| s.members.suspect())
        };
        index_agrees_with_scan(1u64..200, weights(), build);
        views_agree(1u64..200, build);
    }
}
