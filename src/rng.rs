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

/// `rng.random_range(0..n)`, inlined: the same value from the same draws (one `u32`,
/// rarely two), by `rand`'s algorithm for a `usize` range below 2³² (Canon's method on a
/// `u32`: the high half of `draw × n`, plus one when the low half would overflow with the
/// high half of a second draw, drawn only when the low half is within `n` of 2³²).
/// `random_range` was a call of 45 instructions a draw (callgrind); with this, Prequal's
/// `probes` takes 52 instructions a probe instead of 72. Ranges of 2³² and up take
/// `random_range`. Panics on an empty range, as `random_range` does.
#[inline(always)]
pub fn index_below(rng: &mut SimRng, n: usize) -> usize {
    use rand::Rng;
    if n == 0 || n > u32::MAX as usize {
        return rand::RngExt::random_range(rng, 0..n);
    }
    let range = n as u32;
    let wide = u64::from(rng.next_u32()) * u64::from(range);
    let (mut hi, lo) = ((wide >> 32) as u32, wide as u32);
    if lo > range.wrapping_neg() {
        let again = ((u64::from(rng.next_u32()) * u64::from(range)) >> 32) as u32;
        hi += u32::from(lo.checked_add(again).is_none());
    }
    hi as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// `index_below` draws what `random_range` draws, and leaves the generator where it
    /// does, over ranges that take the second draw often (near 2³¹ and 2³²) or rarely.
    #[test]
    fn index_below_is_random_range() {
        use rand::RngExt;
        let mut pick = stream_rng(3, 0, Stream::Strategy, 9);
        for case in 0..20_000u64 {
            let n = match case % 4 {
                0 => pick.random_range(1..20),
                1 => pick.random_range(1..100_000),
                2 => (1usize << 31) + pick.random_range(0..1000),
                _ => u32::MAX as usize - pick.random_range(0..1000),
            };
            let mut a = stream_rng(case, 0, Stream::Strategy, 1);
            let mut b = a.clone();
            for _ in 0..8 {
                assert_eq!(index_below(&mut a, n), b.random_range(0..n), "n {n}");
            }
            assert_eq!(a.next_u64(), b.next_u64(), "n {n}: the same draws taken");
        }
        let mut a = stream_rng(1, 0, Stream::Strategy, 1);
        let mut b = a.clone();
        let big = u32::MAX as usize + 7;
        assert_eq!(index_below(&mut a, big), b.random_range(0..big));
    }

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
