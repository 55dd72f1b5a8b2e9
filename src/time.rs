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

impl Nanos {
    /// Zero nanoseconds.
    pub const ZERO: Nanos = Nanos(0);
    /// The largest representable time.
    pub const MAX: Nanos = Nanos(u64::MAX);

    /// Converts seconds to nanoseconds, rounding to the nearest nanosecond and
    /// saturating at [`Nanos::MAX`]. Negative or NaN inputs become zero.
    pub fn from_secs_f64(secs: f64) -> Nanos {
        let ns = (secs * 1e9).round();
        if ns.is_nan() || ns <= 0.0 {
            Nanos::ZERO
        } else if ns >= u64::MAX as f64 {
            Nanos::MAX
        } else {
            Nanos(ns as u64)
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

    #[test]
    fn subtraction_saturates() {
        assert_eq!(Nanos(3) - Nanos(5), Nanos::ZERO);
    }
}
