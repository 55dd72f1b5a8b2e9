//! Steady-state diagnostics from the data: is the warm-up long enough, and is the window
//! long against the output's correlation time?
//!
//! Each replication records the mean response time of the requests arriving in each of
//! [`BATCHES`] equal slices of the measured window ([`crate::metrics::RunMetrics::batches`]).
//!
//! - **Transient.** MSER (marginal standard error rule; White 1997, "An effective
//!   truncation heuristic for bias reduction in simulation output", Simulation 69(6);
//!   Franklin & White 2008, "Stationarity tests and MSER-5", Winter Simulation
//!   Conference) on the batch means averaged over replications: the truncation `d` that
//!   minimises `Σ_{i≥d} (x_i − x̄_d)² / (n − d)²` over the first half. A `d` of 10% of the
//!   window or more says the transient outlasted the warm-up.
//! - **Correlation.** The lag-1 autocorrelation of 20 batch means per replication
//!   (batches of 5 slices, as in MSER-5), averaged over replications. Above 0.3 the
//!   window is short against the correlation time: each replication sees few independent
//!   stretches, its figures lean on its start, and per-replication percentiles are biased
//!   (reported percentiles are pooled, see [`crate::stats::quantile`]).

use crate::metrics::BATCHES;
use crate::runner::{RunResults, StrategyResult};
use crate::scenario::Scenario;

/// The MSER truncation point of `x`: the `d` in `0..=n/2` minimising the squared standard
/// error of the mean of `x[d..]`, `Σ (x_i − x̄_d)² / (n − d)²`.
pub fn mser(x: &[f64]) -> usize {
    let n = x.len();
    let mut best = (0, f64::INFINITY);
    for d in 0..=n / 2 {
        let tail = &x[d..];
        let m = tail.iter().sum::<f64>() / tail.len() as f64;
        let ss = tail.iter().map(|v| (v - m).powi(2)).sum::<f64>();
        let stat = ss / (tail.len() as f64).powi(2);
        if stat < best.1 {
            best = (d, stat);
        }
    }
    best.0
}

/// The lag-1 autocorrelation of `x` (NaN with fewer than 3 values or no variance).
pub fn lag1(x: &[f64]) -> f64 {
    let n = x.len();
    if n < 3 {
        return f64::NAN;
    }
    let m = x.iter().sum::<f64>() / n as f64;
    let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>();
    let cov = x.windows(2).map(|w| (w[0] - m) * (w[1] - m)).sum::<f64>();
    cov / var
}

/// What the data say about one strategy's steady state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SteadyState {
    /// MSER truncation into the window (seconds): how long the transient lasted after
    /// the warm-up.
    pub transient: f64,
    /// Mean over replications of the lag-1 autocorrelation of 20 batch means.
    pub lag1: f64,
}

/// The diagnostics of `s`, whose windows last `window` seconds (`None` without batch data,
/// e.g. live runs).
pub fn diagnose(s: &StrategyResult, window: f64) -> Option<SteadyState> {
    let mut pooled = vec![[0.0f64; 2]; BATCHES];
    let mut lags = Vec::new();
    for r in &s.runs {
        if r.batches.len() != BATCHES {
            continue;
        }
        for (p, b) in pooled.iter_mut().zip(&r.batches) {
            p[0] += b[0];
            p[1] += b[1];
        }
        let coarse: Vec<f64> = r
            .batches
            .chunks(5)
            .filter(|c| c.iter().map(|b| b[1]).sum::<f64>() > 0.0)
            .map(|c| c.iter().map(|b| b[0]).sum::<f64>() / c.iter().map(|b| b[1]).sum::<f64>())
            .collect();
        let l = lag1(&coarse);
        if l.is_finite() {
            lags.push(l);
        }
    }
    let means: Vec<f64> = pooled
        .iter()
        .filter(|p| p[1] > 0.0)
        .map(|p| p[0] / p[1])
        .collect();
    if means.len() < 10 {
        return None;
    }
    let d = mser(&means);
    Some(SteadyState {
        transient: d as f64 * window / means.len() as f64,
        lag1: if lags.is_empty() {
            f64::NAN
        } else {
            lags.iter().sum::<f64>() / lags.len() as f64
        },
    })
}

/// Warnings for the run's report: a transient longer than the warm-up, a window short
/// against the correlation time. Each names the fix.
pub fn warnings(scenario: &Scenario, results: &RunResults) -> Vec<String> {
    let window = scenario.duration;
    let mut out = Vec::new();
    for s in results.strategies.iter().filter(|s| s.unstable.is_none()) {
        let Some(d) = diagnose(s, window) else {
            continue;
        };
        if d.transient >= 0.1 * window {
            out.push(format!(
                "`{}`: the mean response time settles only about {:.3} s into the measured window (MSER truncation): the warm-up of {} s is shorter than the transient; raise `warmup` to at least {:.3}",
                s.label,
                d.transient,
                scenario.warmup,
                scenario.warmup + d.transient
            ));
        }
        if d.lag1 > 0.3 {
            out.push(format!(
                "`{}`: batch means of {:.3} s are strongly correlated (lag-1 autocorrelation {:.2}): the {window} s window is short against the output's correlation time; lengthen `duration` (e.g. tenfold) for means that do not lean on each window's start",
                s.label,
                window / 20.0,
                d.lag1
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mser_cuts_an_initial_ramp_and_not_a_flat_series() {
        let wobble = |i: usize| if i.is_multiple_of(2) { 0.1 } else { -0.1 };
        let ramp: Vec<f64> = (0..100)
            .map(|i| if i < 20 { i as f64 / 20.0 } else { 1.0 } + wobble(i))
            .collect();
        let d = mser(&ramp);
        assert!((15..=25).contains(&d), "{d}");
        let flat: Vec<f64> = (0..100).map(|i| 1.0 + wobble(i)).collect();
        assert!(mser(&flat) <= 2, "{}", mser(&flat));
    }

    #[test]
    fn lag1_of_alternating_and_smooth_series() {
        let alt: Vec<f64> = (0..20)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert!(lag1(&alt) < -0.9);
        let smooth: Vec<f64> = (0..20).map(|i| (i as f64 / 6.0).sin()).collect();
        assert!(lag1(&smooth) > 0.6, "{}", lag1(&smooth));
        assert!(lag1(&[1.0, 2.0]).is_nan());
    }
}
