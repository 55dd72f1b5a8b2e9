//! Reproducible random streams.
//!
//! Every random stream in a run is seeded from `(scenario seed, replication, purpose)`, so
//! that (a) results never depend on thread count or scheduling, and (b) every strategy in a
//! replication sees the same arrivals and the same requests (common random numbers).

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

/// The generator used everywhere: Xoshiro256++, a named algorithm whose output is fixed
/// by its specification (unlike `SmallRng`, which may change between `rand` releases).
pub type SimRng = Xoshiro256PlusPlus;

/// What a random stream is used for. Each purpose gets an independent stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum Stream {
    /// Interarrival times (and the state changes of modulated arrival processes).
    Arrivals = 1,
    /// Request sizes (service-time quantiles).
    Sizes = 2,
    /// Request keys (for hashing strategies).
    Keys = 3,
    /// A strategy's own choices (random, power of d, ...). Offset by the strategy's index.
    Strategy = 4,
    /// Splitting arrivals among balancers or clients.
    Routing = 5,
    /// Fault injection.
    Faults = 6,
    /// Client policies' draws (retry back-off jitter), offset by the balancer's index: a
    /// stream of its own, so that runs without policies draw exactly as before.
    Policy = 7,
}

/// SplitMix64 finaliser: a bijective mixer with good avalanche, used to derive seeds.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of stream `stream` (with sub-index `index`, e.g. a strategy's position) in
/// replication `replication` of a scenario whose seed is `seed`.
pub fn derive_seed(seed: u64, replication: u64, stream: Stream, index: u64) -> u64 {
    let mut h = mix64(seed);
    h = mix64(h ^ replication);
    h = mix64(h ^ stream as u64);
    mix64(h ^ index)
}

/// A generator for one stream of one replication.
pub fn stream_rng(seed: u64, replication: u64, stream: Stream, index: u64) -> SimRng {
    SimRng::seed_from_u64(derive_seed(seed, replication, stream, index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a1 = stream_rng(7, 3, Stream::Arrivals, 0).next_u64();
        let a2 = stream_rng(7, 3, Stream::Arrivals, 0).next_u64();
        let b = stream_rng(7, 3, Stream::Sizes, 0).next_u64();
        let c = stream_rng(7, 4, Stream::Arrivals, 0).next_u64();
        let d = stream_rng(8, 3, Stream::Arrivals, 0).next_u64();
        assert_eq!(a1, a2);
        assert!(a1 != b && a1 != c && a1 != d && b != c);
    }
}
