//! Steady-state hygiene from the data: choosing the warm-up (`warmup = "auto"`), checking
//! a fixed one, and checking that the window is long against the output's correlation time.
//!
//! Each replication records the mean response time of the requests arriving in each of
//! [`BATCHES`] equal slices of the measured window ([`crate::metrics::RunMetrics::batches`]):
//! batch means, which keep memory flat whatever the run length.
//!
//! - **Choosing the warm-up** ([`choose_warmup`]). MSER, the marginal standard error rule
//!   (White 1997, "An effective truncation heuristic for bias reduction in simulation
//!   output", Simulation 69(6)), applied to batch means as MSER-5 does (White, Cobb &
//!   Spratt 2000, "A comparison of five steady-state truncation heuristics for simulation",
//!   Winter Simulation Conference): the truncation `d` minimising
//!   `Σ_{i≥d} (x_i − x̄_d)² / (n − d)²`. The series is the mean response time per batch
//!   averaged over [`PILOTS`] pilot replications per strategy (averaging replications
//!   before truncating, as Hoad, Robinson & Davies 2010 recommend for MSER-5, "Automating
//!   warm-up length estimation", JORS 61). Pilots run from an empty system with no
//!   warm-up, for one window (`duration`), then 2 and 4 windows while the truncation falls
//!   in the last half of the pilot — MSER's sign that the pilot is too short to hold the
//!   transient (Franklin & White 2008, "Stationarity tests and MSER-5", Winter Simulation
//!   Conference). The warm-up used is the largest truncation over strategies, so every
//!   strategy is measured over the same window and paired comparisons keep their common
//!   random numbers. A strategy that never settles (its output drifts: no steady state) is
//!   left out, with a warning; when none settles the run is refused. Pilots use their own
//!   replication indices ([`PILOT_BASE`]`+ i`) and the run's seed, so the choice is the same
//!   for any thread count, shard or `--precision` round.
//! - **Checking a fixed warm-up.** MSER on the measured batch means averaged over
//!   replications, searched over the first half: a `d` of 10% of the window or more says
//!   the transient outlasted the warm-up.
//! - **Correlation.** The lag-1 autocorrelation of 20 batch means per replication
//!   (batches of 5 slices, as in MSER-5), averaged over replications. Above 0.3 the
//!   window is short against the correlation time: each replication sees few independent
//!   stretches, its figures lean on its start, and per-replication percentiles are biased
//!   (reported percentiles are pooled, see [`crate::stats::quantile`]). With fewer than
//!   [`TAIL_REPLICATIONS`] replications the warning also says that the pooled percentiles'
//!   intervals are not reliable there: the requests beyond a tail quantile come in a few
//!   long bursts, the replications' exceedance counts are then few and very skewed, and a
//!   95% interval from a handful of them undercovers (measured in `tests/coverage.rs`).

use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::metrics::BATCHES;
use crate::runner::{RunError, RunResults, StrategyResult, in_pool};
use crate::scenario::{Scenario, ScenarioError};
use crate::sim::Run;

/// The MSER truncation point of `x`: the `d` in `0..=n/2` minimising the squared standard
/// error of the mean of `x[d..]`, `Σ (x_i − x̄_d)² / (n − d)²`.
pub fn mser(x: &[f64]) -> usize {
    mser_up_to(x, x.len() / 2)
}

/// The MSER truncation point of `x` searched over `d` in `0..=last` (at most `n − 1`).
pub fn mser_up_to(x: &[f64], last: usize) -> usize {
    let n = x.len();
    let mut best = (0, f64::INFINITY);
    for d in 0..=last.min(n.saturating_sub(1)) {
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

/// Pilot replications per strategy for `warmup = "auto"`.
pub const PILOTS: u64 = 5;

/// Replication index of the first pilot: pilots are replications `PILOT_BASE + i`, far
/// from the measured ones (`0, 1, …`), so that their random numbers are independent of
/// the measured replications' and the same in every process that runs the scenario.
pub const PILOT_BASE: u64 = 1 << 62;

/// Pilot lengths, in windows (`duration`): a longer pilot runs only when the shorter one's
/// truncation fell in its last half.
pub const PILOT_LENGTHS: [f64; 3] = [1.0, 2.0, 4.0];

/// Batch means kept out of the search at the end of a pilot: MSER's statistic over a few
/// batches is noise (it tends to pick the very end).
const MIN_TAIL: usize = 10;

/// The warm-up `warmup = "auto"` chose, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoWarmup {
    /// The warm-up used (seconds): the largest truncation over settled strategies.
    pub warmup: f64,
    /// Per strategy, in scenario order.
    pub strategies: Vec<PilotChoice>,
}

/// One strategy's pilot result.
#[derive(Clone, Debug, PartialEq)]
pub struct PilotChoice {
    /// Strategy label.
    pub label: String,
    /// Length of its last pilot (seconds).
    pub pilot: f64,
    /// MSER truncation (seconds), `None` when it fell in the last half of every pilot.
    pub truncation: Option<f64>,
}

impl AutoWarmup {
    /// One line for the terminal and the report.
    pub fn describe(&self) -> String {
        let per: Vec<String> = self
            .strategies
            .iter()
            .map(|c| match c.truncation {
                Some(t) => format!("{} {}", c.label, sig4(t)),
                None => format!(
                    "{} none (no end to the transient in {} s)",
                    c.label,
                    sig4(c.pilot)
                ),
            })
            .collect();
        format!(
            "warm-up {} s chosen by MSER over {PILOTS} pilot replications per strategy (truncation in s: {})",
            sig4(self.warmup),
            per.join(", ")
        )
    }

    /// Warnings: strategies whose pilots never settled.
    pub fn warnings(&self) -> Vec<String> {
        self.strategies
            .iter()
            .filter(|c| c.truncation.is_none())
            .map(|c| {
                format!(
                    "`{}`: warmup = \"auto\" found no end to its transient (the MSER truncation of its mean response time falls in the last half of pilots up to {} s long): its figures may still drift; it did not set the warm-up ({} s). Lengthen `duration`, or check its load (`lbsim validate`)",
                    c.label,
                    sig4(c.pilot),
                    sig4(self.warmup)
                )
            })
            .collect()
    }
}

fn sig4(x: f64) -> String {
    format!("{}", (x * 1e4).round() / 1e4)
}

/// The pooled batch means of some pilot runs: `(batch index, mean)` for batches that
/// served something.
fn pooled_means(runs: &[Vec<[f64; 2]>]) -> Vec<(usize, f64)> {
    let mut pooled = vec![[0.0f64; 2]; BATCHES];
    for r in runs {
        for (p, b) in pooled.iter_mut().zip(r) {
            p[0] += b[0];
            p[1] += b[1];
        }
    }
    pooled
        .iter()
        .enumerate()
        .filter(|(_, p)| p[1] > 0.0)
        .map(|(i, p)| (i, p[0] / p[1]))
        .collect()
}

/// The MSER truncation of a pilot of `length` seconds from its pooled batch means, or
/// `None` when it falls in the last half (or too few batches served anything).
fn pilot_truncation(means: &[(usize, f64)], length: f64) -> Option<f64> {
    let x: Vec<f64> = means.iter().map(|m| m.1).collect();
    if x.len() < 2 * MIN_TAIL {
        return None;
    }
    let d = mser_up_to(&x, x.len() - MIN_TAIL);
    (d <= x.len() / 2).then(|| means[d].0 as f64 * length / BATCHES as f64)
}

/// Chooses the warm-up of a `warmup = "auto"` scenario from pilot runs (see the module
/// doc), with master seed `seed` on `threads` threads. Pilots stop soon after `cancel` is
/// set (the result is then a warm-up of 0 that nothing will use). Fails when no strategy's
/// transient ends within the longest pilot.
pub fn choose_warmup(
    scenario: &Scenario,
    seed: u64,
    threads: Option<usize>,
    cancel: Option<&Cancel>,
) -> Result<AutoWarmup, RunError> {
    let n = scenario.strategies.len();
    let mut choices: Vec<PilotChoice> = scenario
        .strategies
        .iter()
        .map(|e| PilotChoice {
            label: e.label(),
            pilot: 0.0,
            truncation: None,
        })
        .collect();
    let mut pending: Vec<usize> = (0..n).collect();
    for &windows in &PILOT_LENGTHS {
        if pending.is_empty() {
            break;
        }
        let length = windows * scenario.duration;
        let mut pilot = scenario.clone();
        pilot.sweep = None;
        pilot.set_run_length(0.0, length);
        let tasks: Vec<(usize, u64)> = pending
            .iter()
            .flat_map(|&k| (0..PILOTS).map(move |i| (k, PILOT_BASE + i)))
            .collect();
        // Each pilot keeps only its batch means: memory is bounded by the runs in flight.
        let batches: Vec<Option<Vec<[f64; 2]>>> = in_pool(threads, || {
            tasks
                .par_iter()
                .map(|&(k, rep)| {
                    let mut run = Run::entry(&pilot, &pilot.strategies[k], rep).seed(seed);
                    if let Some(c) = cancel {
                        run = run.cancel(c);
                    }
                    Some(run.simulate()?.metrics.batches)
                })
                .collect()
        })?;
        if batches.iter().any(Option::is_none) {
            return Ok(AutoWarmup {
                warmup: 0.0,
                strategies: choices,
            });
        }
        let batches: Vec<Vec<[f64; 2]>> = batches.into_iter().flatten().collect();
        for (j, &k) in pending.iter().enumerate() {
            let runs = &batches[j * PILOTS as usize..(j + 1) * PILOTS as usize];
            choices[k].pilot = length;
            choices[k].truncation = pilot_truncation(&pooled_means(runs), length);
        }
        pending.retain(|&k| choices[k].truncation.is_none());
    }
    let Some(warmup) = choices.iter().filter_map(|c| c.truncation).reduce(f64::max) else {
        let longest = PILOT_LENGTHS[PILOT_LENGTHS.len() - 1] * scenario.duration;
        return Err(RunError::Scenario(ScenarioError::Invalid {
            path: scenario.path.clone(),
            line: None,
            field: "warmup".into(),
            problem: format!(
                "`warmup = \"auto\"` found no end to the transient: in pilot runs of up to {longest} s from an empty system, every strategy's mean response time still drifts (its MSER truncation falls in the last half of the pilot)"
            ),
            fix: "lengthen `duration` (pilots run 1, 2 and 4 windows), or set `warmup` to a number of seconds; if the load exceeds what the servers can serve there is no steady state (`lbsim validate` says so)".into(),
        }));
    };
    Ok(AutoWarmup {
        warmup,
        strategies: choices,
    })
}

/// With `warmup = "auto"` and no warm-up chosen yet, chooses it ([`choose_warmup`]) and
/// sets `scenario.warmup` (and the request stream's horizon) to it; otherwise does
/// nothing. A sweep point's scenario ([`Scenario::at_sweep_point`]) chooses its own.
pub fn resolve_warmup(
    scenario: &mut Scenario,
    seed: u64,
    threads: Option<usize>,
    cancel: Option<&Cancel>,
) -> Result<(), RunError> {
    if !scenario.warmup_auto || scenario.auto_warmup.is_some() {
        return Ok(());
    }
    let choice = choose_warmup(scenario, seed, threads, cancel)?;
    scenario.warmup = choice.warmup;
    scenario.workload.horizon = choice.warmup + scenario.duration;
    scenario.auto_warmup = Some(choice);
    Ok(())
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

/// Replications below which a window short against the correlation time also makes the
/// pooled percentiles' intervals unreliable (see [`warnings`] and `tests/coverage.rs`): on
/// M/M/1 at ρ = 0.9 with windows of 1,000 service times the p99 interval covered 890 of
/// 1,000 runs with 20 replications, and 283 and 289 of 300 (95%) with 100, the smallest
/// count measured to reach 95%.
pub const TAIL_REPLICATIONS: usize = 100;

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
            let b = s.runs.len();
            out.push(format!(
                "`{}`: batch means of {:.3} s are strongly correlated (lag-1 autocorrelation {:.2}): the {window} s window is short against the output's correlation time; lengthen `duration` (e.g. tenfold) for means that do not lean on each window's start{}",
                s.label,
                window / 20.0,
                d.lag1,
                if b < TAIL_REPLICATIONS {
                    format!(
                        ". The tail percentiles' intervals are not reliable at such windows with {b} replications: the requests beyond p99 come in a few long bursts, which few windows sample poorly (on M/M/1 at ρ = 0.9 with windows of 1,000 service times the 95% p99 interval covered the truth in 890 of 1,000 runs with 20 replications, and in 283 and 289 of 300 with 100; in 106 of those 1,000 runs of 20 such windows no request exceeded the true p99 at all); lengthen `duration` or run {TAIL_REPLICATIONS} or more replications"
                    )
                } else {
                    String::new()
                }
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
