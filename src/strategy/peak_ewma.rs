//! Peak-EWMA load (Finagle `Balancers.p2cPeakEwma`, tower `load::PeakEwma`, Linkerd's
//! default balancer): an estimate of round-trip time that jumps to any higher sample and
//! otherwise decays towards new samples with weight `exp(-elapsed / decay_time)`; the load
//! is `estimate × (in_flight + 1)`.
//!
//! Exactly as tower: the estimate starts at `default_rtt` (Linkerd uses 30 ms); reading
//! the load first decays the estimate towards 0 for the time elapsed since it was last
//! touched (tower's `decay`, Finagle's `observe(0.0)` in `get`), so an idle backend's
//! estimate fades; every completion (whatever its outcome, as in tower and Finagle) is a
//! sample of `latency`. Time comes only from the `now` values passed in.

use super::SpecError;
use super::load::Load;
use super::power_of_d::PowerOfD;
use super::registry::{About, Kind, Knob, PickCost, Reads, Split};
use super::{Backends, Outcome};
use crate::rng::SimRng;
use crate::time::Nanos;

/// P2C over peak-EWMA costs: Finagle `p2cPeakEwma`, tower `p2c::Balance<PeakEwma>`.
pub type PeakEwmaP2c = PowerOfD<PeakEwma>;

impl PeakEwmaP2c {
    /// Power of two choices without replacement over peak-EWMA costs.
    pub fn peak_ewma(decay_time: Nanos, default_rtt: Nanos, n: usize, rng: SimRng) -> PeakEwmaP2c {
        PowerOfD::with_load(2, false, PeakEwma::new(decay_time, default_rtt, n), rng)
    }
}

#[derive(Clone, Copy, Debug)]
struct Estimate {
    /// RTT estimate in nanoseconds.
    rtt: f64,
    /// When the estimate was last updated.
    at: Nanos,
}

/// The peak-EWMA load measure.
#[derive(Clone, Debug)]
pub struct PeakEwma {
    decay_ns: f64,
    default_rtt: f64,
    estimates: Vec<Estimate>,
}

impl PeakEwma {
    /// A measure over `n` backends (grows on demand) with the given decay time and
    /// initial estimate.
    pub fn new(decay_time: Nanos, default_rtt: Nanos, n: usize) -> PeakEwma {
        let default_rtt = default_rtt.0 as f64;
        PeakEwma {
            decay_ns: (decay_time.0 as f64).max(1.0),
            default_rtt,
            estimates: vec![
                Estimate {
                    rtt: default_rtt,
                    at: Nanos::ZERO
                };
                n
            ],
        }
    }

    fn estimate(&mut self, i: usize) -> &mut Estimate {
        if i >= self.estimates.len() {
            let e = Estimate {
                rtt: self.default_rtt,
                at: Nanos::ZERO,
            };
            self.estimates.resize(i + 1, e);
        }
        &mut self.estimates[i]
    }

    /// tower's `RttEstimate::update`: a higher sample replaces the estimate, a lower one
    /// is blended in with weight `1 − exp(−elapsed / decay)`.
    fn observe(&mut self, i: usize, sample: f64, now: Nanos) -> f64 {
        let decay_ns = self.decay_ns;
        let e = self.estimate(i);
        if e.rtt < sample {
            e.rtt = sample;
        } else {
            let elapsed = (now - e.at).0 as f64;
            let w = exp_neg(elapsed / decay_ns);
            e.rtt = e.rtt * w + sample * (1.0 - w);
        }
        e.at = e.at.max(now);
        e.rtt
    }

    /// The current RTT estimate of backend `i` (nanoseconds), without decaying it.
    pub fn rtt_estimate(&self, i: usize) -> f64 {
        self.estimates.get(i).map_or(self.default_rtt, |e| e.rtt)
    }
}

/// `exp(-x)` for `x ≥ 0`. Elapsed times between reads are usually a tiny fraction of the
/// decay time, where a cubic Taylor polynomial is exact to under 1e-13 relative (error
/// below x⁴/24 for x < 1e-3) and several times cheaper than `exp`, which keeps a pick
/// (two reads and one sample) within budget.
#[inline]
fn exp_neg(x: f64) -> f64 {
    if x < 1e-3 {
        1.0 - x * (1.0 - x * (0.5 - x / 6.0))
    } else {
        (-x).exp()
    }
}

impl Load for PeakEwma {
    #[inline]
    fn cost(&mut self, i: usize, backends: &Backends, now: Nanos) -> f64 {
        let rtt = self.observe(i, 0.0, now);
        rtt * f64::from(backends.in_flight(i) + 1)
    }

    fn on_complete(&mut self, i: usize, latency: Nanos, _outcome: Outcome, now: Nanos) {
        self.observe(i, latency.0 as f64, now);
    }
}

/// Parameters of `kind = "peak_ewma"`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeakEwmaParams {
    /// Decay time of the RTT estimate, seconds. Default 10 (Finagle).
    pub decay_time: f64,
    /// RTT estimate before the first sample, seconds. Default 0.030 (Linkerd).
    pub default_rtt: f64,
}

impl Default for PeakEwmaParams {
    fn default() -> PeakEwmaParams {
        PeakEwmaParams {
            decay_time: 10.0,
            default_rtt: 0.030,
        }
    }
}

impl Kind for PeakEwmaP2c {
    type Params = PeakEwmaParams;
    const ABOUT: About = About {
        kind: "peak_ewma",
        aliases: &[],
        follows: "Finagle p2cPeakEwma / tower PeakEwma / Linkerd: P2C on rtt estimate x (in flight + 1)",
        knobs: &[Knob::seconds("decay_time"), Knob::seconds("default_rtt")],
        reads: Reads::NOTHING,
        split: Split::Dynamic,
    };
    fn validate(p: &PeakEwmaParams, _: usize) -> Result<(), SpecError> {
        SpecError::seconds("decay_time", p.decay_time, false)?;
        SpecError::seconds("default_rtt", p.default_rtt, true)
    }
    fn build(p: &PeakEwmaParams, n: usize, rng: SimRng) -> PeakEwmaP2c {
        PeakEwmaP2c::peak_ewma(
            Nanos::from_secs_f64(p.decay_time),
            Nanos::from_secs_f64(p.default_rtt),
            n,
            rng,
        )
    }
    fn cost(_: &PeakEwmaParams) -> PickCost {
        PickCost::CONSTANT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Stream, stream_rng};
    use crate::strategy::{Balancer, Strategy};

    const MS: u64 = 1_000_000;

    #[test]
    fn estimate_jumps_up_and_decays_down() {
        let mut m = PeakEwma::new(Nanos(10 * MS), Nanos(30 * MS), 1);
        // A higher sample is taken at once.
        m.on_complete(0, Nanos(100 * MS), Outcome::Ok, Nanos(0));
        assert_eq!(m.rtt_estimate(0), 1e8);
        // A lower sample one decay time later: weight exp(-1) on the old estimate.
        m.on_complete(0, Nanos(0), Outcome::Ok, Nanos(10 * MS));
        let expect = 1e8 * (-1f64).exp();
        assert!(
            (m.rtt_estimate(0) - expect).abs() < 1.0,
            "{}",
            m.rtt_estimate(0)
        );
        // Cost multiplies by in_flight + 1.
        let mut b = Backends::new(&[1]);
        b.set_in_flight(0, 2);
        let c = m.cost(0, &b, Nanos(10 * MS));
        assert!((c - 3.0 * expect).abs() < 3.0);
    }

    #[test]
    fn fast_exp_matches_exp() {
        for x in [0.0, 1e-9, 1e-6, 5e-4, 0.000_999, 1e-3, 0.5, 3.0] {
            assert!((exp_neg(x) - (-x).exp()).abs() <= 1e-13 * (-x).exp(), "{x}");
        }
    }

    #[test]
    fn default_rtt_before_the_first_sample() {
        let mut m = PeakEwma::new(Nanos(10 * MS), Nanos(30 * MS), 2);
        assert_eq!(m.cost(1, &Backends::new(&[1; 2]), Nanos::ZERO), 30e6);
    }

    #[test]
    fn avoids_a_backend_with_high_latency() {
        let rng = stream_rng(1, 0, Stream::Strategy, 0);
        let s = PeakEwmaP2c::peak_ewma(Nanos(10 * MS), Nanos(30 * MS), 2, rng);
        let mut b = Balancer::new(Box::new(s), &[1, 1]);
        // Backend 1 answers in 100 ms, backend 0 in 1 ms: after one sample each, every
        // pick (two candidates out of two) goes to 0.
        b.complete(1, Nanos(100 * MS), Outcome::Ok, Nanos(0));
        b.complete(0, Nanos(MS), Outcome::Ok, Nanos(0));
        for k in 1..20u64 {
            let i = b.route(Nanos(k), 0).unwrap();
            assert_eq!(i, 0);
            b.complete(i, Nanos(MS), Outcome::Ok, Nanos(k));
        }
        let _: &dyn Strategy =
            &PeakEwmaP2c::peak_ewma(Nanos(1), Nanos(1), 1, stream_rng(1, 0, Stream::Strategy, 0));
    }
}
