//! Sequential stopping: add replications in batches until the relative 95% CI half-width
//! of one metric is below a target for every strategy, or a cap is reached.
//!
//! Each batch continues the replication indices (`n..n'`), so the run is the same as a
//! fixed run of the final size, and the stopping decision depends only on results:
//! deterministic for any thread count. The next size extrapolates the half-width's
//! `1/√n` law, `n' = n · (h/target)²`, clamped to `[n + 2, 4n]` and the cap.

use crate::metrics::Metric;
use crate::runner::{RunError, RunOptions, RunResults, run_batch};
use crate::scenario::Scenario;
use crate::shard::combine;

/// The stopping rule.
#[derive(Clone, Copy, Debug)]
pub struct Precision {
    /// Target relative half-width (e.g. 0.01 for ±1%).
    pub target: f64,
    /// The metric whose interval must narrow.
    pub metric: Metric,
    /// Most replications to run.
    pub max_replications: u32,
}

/// How a sequential run ended.
#[derive(Clone, Debug)]
pub struct SequentialRun {
    /// All replications run.
    pub results: RunResults,
    /// Whether every strategy reached the target.
    pub reached: bool,
    /// The largest relative half-width over strategies at the end.
    pub worst: f64,
    /// Replications after each batch.
    pub batches: Vec<usize>,
}

/// The largest relative half-width of `metric` over the strategies (∞ if undefined).
pub fn worst_relative_half_width(results: &RunResults, metric: Metric) -> f64 {
    worst_strategy(results, metric).map_or(0.0, |w| w.1)
}

/// The strategy (index) with the largest relative half-width of `metric`, and that
/// half-width (∞ if undefined): the one holding a sequential run back.
pub fn worst_strategy(results: &RunResults, metric: Metric) -> Option<(usize, f64)> {
    results
        .strategies
        .iter()
        .map(|s| {
            let e = s.estimate(metric);
            if e.mean == 0.0 && e.half_width() == 0.0 {
                0.0
            } else {
                let r = e.half_width() / e.mean.abs();
                if r.is_nan() { f64::INFINITY } else { r }
            }
        })
        .enumerate()
        .fold(None, |acc: Option<(usize, f64)>, (k, r)| match acc {
            Some((_, w)) if w >= r => acc,
            _ => Some((k, r)),
        })
}

/// Runs `scenario` until `precision` is met. Starts with `opts.replications` (default:
/// the scenario's, at least 2).
pub fn run_to_precision(
    scenario: &Scenario,
    opts: &RunOptions,
    precision: Precision,
) -> Result<SequentialRun, RunError> {
    let cap = precision.max_replications.max(2);
    let mut n = opts
        .replications
        .unwrap_or(scenario.replications)
        .clamp(2, cap);
    let first: Vec<u64> = (0..u64::from(n)).collect();
    let mut results = run_batch(scenario, &first, opts)?;
    let mut batches = vec![results.finished.len()];
    loop {
        let worst = worst_relative_half_width(&results, precision.metric);
        if worst <= precision.target || n >= cap || results.is_partial() {
            return Ok(SequentialRun {
                reached: worst <= precision.target,
                results,
                worst,
                batches,
            });
        }
        let want = (f64::from(n) * (worst / precision.target).powi(2)).ceil();
        let next = (want.min(f64::from(4 * n)) as u32).max(n + 2).min(cap);
        if let Some(p) = &opts.progress {
            p.set_length(u64::from(next));
        }
        let more: Vec<u64> = (u64::from(n)..u64::from(next)).collect();
        let extra = run_batch(scenario, &more, opts)?;
        results = combine(vec![results, extra]);
        crate::stability::assess(scenario, &mut results);
        n = next;
        batches.push(results.finished.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn stops_once_precise_and_matches_a_fixed_run() {
        let rest = testing::servers("s", 2, "", &testing::exponential(0.01))
            + &testing::kinds(&["round_robin"]);
        let s = testing::scenario("duration = 5\nwarmup = 1\nreplications = 3", 50.0, &rest);
        let p = Precision {
            target: 0.02,
            metric: Metric::LatencyMean,
            max_replications: 200,
        };
        let seq = run_to_precision(&s, &RunOptions::default(), p).unwrap();
        assert!(seq.reached, "{:?}", seq.batches);
        assert!(seq.worst <= 0.02);
        let n = seq.results.finished.len();
        assert_eq!(seq.results.finished, (0..n as u64).collect::<Vec<_>>());
        // Same as a fixed run of that size.
        let fixed = crate::runner::run(
            &s,
            &RunOptions {
                replications: Some(n as u32),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(fixed.strategies[0].runs, seq.results.strategies[0].runs);
    }
}
