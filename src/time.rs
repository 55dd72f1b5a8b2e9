//! Simulated time as an explicit value: integer nanoseconds since the start of a run.
//!
//! Strategies never read a clock; the simulator and the live driver pass the current
//! [`Nanos`] in, which is what lets one strategy implementation serve both modes.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// A point in time or a duration, in integer nanoseconds.
///
/// Integer time makes event ordering exact (no floating-point ties that differ between
/// machines) and 64 bits cover about 584 years.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub u64);

/// 2^63: below it a double converts to and from `i64` exactly as to and from `u64`.
const I64_LIMIT: f64 = 9_223_372_036_854_775_808.0;

impl Nanos {
    /// Zero nanoseconds.
    pub const ZERO: Nanos = Nanos(0);
    /// The largest representable time.
    pub const MAX: Nanos = Nanos(u64::MAX);

    /// Converts seconds to nanoseconds, rounding to the nearest nanosecond and
    /// saturating at [`Nanos::MAX`]. Negative or NaN inputs become zero.
    ///
    /// Exactly `(secs * 1e9).round()` (half away from zero), computed without `f64::round`:
    /// that is a libm call on baseline x86-64, and the simulator converts every sampled
    /// service time and gap with this function.
    #[inline]
    pub fn from_secs_f64(secs: f64) -> Nanos {
        let x = secs * 1e9;
        // `round(x) <= 0` exactly when `x < 0.5`.
        if x.is_nan() || x < 0.5 {
            Nanos::ZERO
        } else if x < I64_LIMIT {
            // The common case (below 292 years): as below, with the signed conversions,
            // one instruction each where the unsigned ones take several on x86-64.
            let t = x as i64;
            Nanos(t as u64 + u64::from(x - t as f64 >= 0.5))
        } else if x >= u64::MAX as f64 {
            // `round(x) >= 2^64` exactly when `x >= 2^64`: doubles there are integers.
            Nanos::MAX
        } else {
            // `x` in [0.5, 2^64): the cast truncates, and `x - t` is exact (below 2^52
            // `t` is within 1 of `x`; from 2^52 on `x` is an integer and the difference 0).
            let t = x as u64;
            Nanos(t + u64::from(x - t as f64 >= 0.5))
        }
    }

    /// This time in seconds.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 * 1e-9
    }

    /// `self - other`, or zero when `other` is later.
    pub fn saturating_sub(self, other: Nanos) -> Nanos {
        Nanos(self.0.saturating_sub(other.0))
    }
}

impl Add for Nanos {
    type Output = Nanos;
    fn add(self, rhs: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Nanos {
    fn add_assign(&mut self, rhs: Nanos) {
        *self = *self + rhs;
    }
}

impl Sub for Nanos {
    type Output = Nanos;
    fn sub(self, rhs: Nanos) -> Nanos {
        self.saturating_sub(rhs)
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6}s", self.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_trip() {
        assert_eq!(Nanos::from_secs_f64(1.5), Nanos(1_500_000_000));
        assert_eq!(Nanos::from_secs_f64(-1.0), Nanos::ZERO);
        assert_eq!(Nanos::from_secs_f64(f64::NAN), Nanos::ZERO);
        assert_eq!(Nanos::from_secs_f64(1e30), Nanos::MAX);
        assert!((Nanos(2_500_000).as_secs_f64() - 0.0025).abs() < 1e-15);
    }

    /// The reference: what `from_secs_f64` computed with `f64::round`.
    fn by_round(secs: f64) -> Nanos {
        let ns = (secs * 1e9).round();
        if ns.is_nan() || ns <= 0.0 {
            Nanos::ZERO
        } else if ns >= u64::MAX as f64 {
            Nanos::MAX
        } else {
            Nanos(ns as u64)
        }
    }

    #[test]
    fn rounding_matches_f64_round_at_the_edges() {
        let two = |e: i32| 2f64.powi(e);
        let mut xs = vec![
            0.0,
            -0.0,
            0.5,
            0.49999999999999994,
            1.5,
            2.5,
            f64::MIN_POSITIVE,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            two(52) - 0.5,
            two(52) + 1.0,
            two(53),
            two(63),
            two(64),
            u64::MAX as f64,
        ];
        for e in -2..64 {
            let x = two(e);
            xs.extend([x, x + 0.5, x - 0.5, x.next_up(), x.next_down()]);
            xs.extend([x.next_up() + 0.5, x.next_down() + 0.5]);
        }
        for x in xs {
            let secs = x / 1e9;
            assert_eq!(Nanos::from_secs_f64(secs), by_round(secs), "{x} ns");
        }
    }

    proptest::proptest! {
        #[test]
        fn rounding_matches_f64_round(bits: u64, secs in 0.0..1e6f64, k in 0u64..1 << 53) {
            let any = f64::from_bits(bits);
            proptest::prop_assert_eq!(Nanos::from_secs_f64(any), by_round(any));
            proptest::prop_assert_eq!(Nanos::from_secs_f64(secs), by_round(secs));
            let half = (k as f64 + 0.5) / 1e9;
            proptest::prop_assert_eq!(Nanos::from_secs_f64(half), by_round(half));
        }
    }

    #[test]
    fn subtraction_saturates() {
        assert_eq!(Nanos(3) - Nanos(5), Nanos::ZERO);
    }
}
