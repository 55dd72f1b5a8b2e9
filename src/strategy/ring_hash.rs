//! Ring hash (Ketama; Envoy `RING_HASH`): each backend owns points on a 64-bit ring in
//! proportion to its weight (Envoy's sizing: at least `min_ring_size` points, default
//! 1024, at most `max_ring_size`, default 8M); a request goes to the owner of the first
//! point at or after the hash of its key. As in Envoy the ring is built over the up
//! backends only and rebuilt when that set changes; since the sizing depends on the set,
//! removing one of N backends moves its own keys plus the few taken by the survivors'
//! extra points. See [`super::hash`] for the hash function.

use super::hash::{Membership, Ring, key_hash};
use super::{Backend, PickContext, Strategy};

/// Envoy ring hash.
#[derive(Debug)]
pub struct RingHash {
    min_ring_size: u64,
    max_ring_size: u64,
    ring: Ring,
    members: Membership,
}

impl RingHash {
    /// A ring of at least `min_ring_size` and at most `max_ring_size` points.
    pub fn new(min_ring_size: u64, max_ring_size: u64) -> RingHash {
        RingHash {
            min_ring_size,
            max_ring_size,
            ring: Ring::default(),
            members: Membership::default(),
        }
    }

    fn rebuild(&mut self, backends: &[Backend]) {
        let weights = self.members.record(backends);
        self.ring = Ring::build(weights, self.min_ring_size, self.max_ring_size);
    }
}

impl Strategy for RingHash {
    fn pick(&mut self, backends: &[Backend], ctx: &PickContext) -> Option<usize> {
        if self.members.stale(backends) {
            self.rebuild(backends);
        }
        let h = key_hash(ctx.key);
        for _ in 0..2 {
            if self.ring.is_empty() {
                return None;
            }
            let i = self.ring.backend_at(self.ring.position(h));
            if !self.members.changed(backends, i) {
                return Some(i);
            }
            self.rebuild(backends);
        }
        None
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
}
