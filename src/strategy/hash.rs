//! Shared pieces of the hashing strategies: a deterministic 64-bit hash, Envoy's ring
//! construction, and tracking of the backend set a structure was built over.
//!
//! The hash is the SplitMix64 finaliser ([`crate::rng::mix64`]) with fixed salts: a
//! bijection on 64-bit values with full avalanche, identical on every platform and run.
//! Envoy hashes address strings with xxHash64; lbsim's backends and keys are integers, so
//! an integer mixer gives the same statistical behaviour without a dependency.

use super::Backend;
use crate::rng::mix64;

const KEY_SALT: u64 = 0x6b65_795f_6861_7368; // "key_hash"

/// The hash of a request key.
#[inline]
pub fn key_hash(key: u64) -> u64 {
    mix64(key ^ KEY_SALT)
}

/// The hash of point `replica` of backend `backend` under `salt` (distinct inputs give
/// distinct outputs, so no two points collide).
#[inline]
pub fn point_hash(backend: usize, replica: u64, salt: u64) -> u64 {
    mix64(mix64(salt ^ backend as u64).wrapping_add(replica))
}

/// The backends a hash structure was built over: the up backends of positive weight,
/// with those weights. A structure is rebuilt when it is [`Membership::stale`] (the
/// number of backends changed, or a backend left out came back) or when a lookup lands
/// on a backend that is now down or has a new weight ([`Membership::changed`]), so that
/// a pick costs no scan of every backend.
#[derive(Clone, Debug, Default)]
pub(crate) struct Membership {
    weights: Vec<u32>,
    excluded: Vec<usize>,
}

impl Membership {
    /// Records the set of a build and returns the weights to build with (0: left out).
    pub fn record(&mut self, backends: &[Backend]) -> &[u32] {
        self.weights.clear();
        self.weights
            .extend(backends.iter().map(|b| if b.up { b.weight } else { 0 }));
        self.excluded.clear();
        self.excluded
            .extend((0..backends.len()).filter(|&i| self.weights[i] == 0));
        &self.weights
    }

    /// Whether a rebuild is due before looking up.
    #[inline]
    pub fn stale(&self, backends: &[Backend]) -> bool {
        self.weights.len() != backends.len()
            || self
                .excluded
                .iter()
                .any(|&i| backends[i].up && backends[i].weight > 0)
    }

    /// Whether backend `i`, found by a lookup, differs from the build.
    #[inline]
    pub fn changed(&self, backends: &[Backend], i: usize) -> bool {
        !backends[i].up || backends[i].weight != self.weights[i]
    }

    /// Sum of the weights built over.
    pub fn total_weight(&self) -> u64 {
        self.weights.iter().map(|&w| u64::from(w)).sum()
    }

    /// Weight of backend `i` at the build (0 if left out).
    pub fn weight(&self, i: usize) -> u32 {
        self.weights[i]
    }
}

/// A consistent-hash ring (Ketama / Envoy `RING_HASH`): points sorted by hash.
#[derive(Clone, Debug, Default)]
pub struct Ring {
    points: Vec<(u64, u32)>,
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
        Ring { points }
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
        let p = self.points.partition_point(|&(x, _)| x < h);
        if p == self.points.len() { 0 } else { p }
    }

    /// Backend of the point at `position` (taken modulo the ring size).
    #[inline]
    pub fn backend_at(&self, position: usize) -> usize {
        self.points[position % self.points.len()].1 as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn lookup_wraps() {
        let r = Ring::build(&[1, 1], 4, 100);
        let last = r.points.last().unwrap().0;
        assert_eq!(r.position(last.wrapping_add(1)), 0);
        assert_eq!(r.position(0), 0);
        assert_eq!(r.position(last), r.len() - 1);
    }
}
