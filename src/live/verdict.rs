//! Runs the simulated side of a live comparison; the judgement is a report
//! ([`crate::report::live`]).
//!
//! The simulated side runs the scenario with each backend's calibrated overheads, capped
//! at the calibration bound ([`Calibration::overheads`](super::calibrate::Calibration::overheads)),
//! same seed: every replication for the mean and its 95% CI, and the replayed replication
//! on its own. Live replays exactly that replication's requests (common random numbers),
//! so by default the live value is compared with the simulated value *of the same
//! replication* ([`Reference::Replayed`]): the difference is then the model error alone,
//! not model error plus the spread between replications, which for a 99th percentile of
//! a few thousand requests is itself ±10%. [`Reference::Mean`] compares with the mean
//! instead.

use hdrhistogram::Histogram;

use super::run::LiveRun;
use crate::metrics::RunMetrics;
pub use crate::report::live::{
    BadReference, BadTolerance, CalibrationRow, Comparison, Figure, LagCheck, Outcome, Reference,
    Tolerance, Tolerances, Verdict, table, write_reports,
};
use crate::report::live::{Judged, MIN_SPREAD_REPLICATIONS, judge, spread_family};
use crate::runner::{RunError, RunOptions, RunResults, StrategyResult, run};
use crate::scenario::Scenario;
use crate::sim::Run;

/// How to compare.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Simulated replications for the mean and CI (default: the scenario's).
    pub replications: Option<u32>,
    /// Tolerances (the calibration bound among them).
    pub tolerances: Tolerances,
    /// What live values are compared with.
    pub reference: Reference,
    /// Largest lag p99 accepted, as a fraction of the simulated median response time.
    pub max_lag_fraction: f64,
    /// Worker threads for the simulated replications (default: one per core).
    pub threads: Option<usize>,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            replications: None,
            tolerances: Tolerances::default(),
            reference: Reference::Replayed,
            max_lag_fraction: 0.05,
            threads: None,
        }
    }
}

/// An error comparing.
#[derive(Debug, thiserror::Error)]
pub enum VerdictError {
    /// The simulation could not run.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Simulates the calibrated scenario and compares it with `live`.
pub fn compare(
    scenario: &Scenario,
    live: &LiveRun,
    opts: &CompareOptions,
) -> Result<Verdict, VerdictError> {
    let bound = opts.tolerances.calibration_bound();
    let mut calibrated = scenario.clone();
    let labels: Vec<&str> = live.strategies.iter().map(|s| s.label.as_str()).collect();
    calibrated
        .strategies
        .retain(|e| labels.contains(&e.label().as_str()));
    // Each strategy is simulated with what the backends added under *its* replay's load
    // (the idle calibration where that was not measured), capped by the bound.
    let mut sim = RunResults {
        seed: live.seed,
        requested: 0,
        finished: Vec::new(),
        strategies: Vec::new(),
    };
    let mut sim_replayed = Vec::new();
    // An adaptive strategy's rows are judged with the replications' spread, whose
    // allowance needs enough of them to have power (`MIN_SPREAD_REPLICATIONS`).
    let replications = opts.replications.or_else(|| {
        (spread_family(scenario, labels.iter().copied()) > 0)
            .then_some(scenario.replications.max(MIN_SPREAD_REPLICATIONS))
    });
    for (replay, entry) in live.strategies.iter().zip(&calibrated.strategies) {
        let overheads = live
            .calibration
            .under_load(&replay.under_load)
            .overheads(live.time_scale, bound);
        let mut one = scenario.clone();
        one.strategies = vec![entry.clone()];
        let r = run(
            &one,
            &RunOptions {
                replications,
                seed: Some(live.seed),
                threads: opts.threads,
                overheads: overheads.clone(),
                ..Default::default()
            },
        )?;
        (sim.requested, sim.finished) = (r.requested, r.finished);
        sim.strategies.extend(r.strategies);
        sim_replayed.push(
            Run::entry(&one, entry, live.replication)
                .seed(live.seed)
                .overheads(&overheads)
                .metrics(),
        );
    }
    let live_results = RunResults {
        seed: live.seed,
        requested: 1,
        finished: vec![live.replication],
        strategies: live
            .strategies
            .iter()
            .map(|s| StrategyResult::from_runs(s.label.clone(), std::slice::from_ref(&s.metrics)))
            .collect(),
    };
    let backends = &live.calibration.backends;
    let idle: Vec<f64> = backends.iter().map(|b| b.fraction()).collect();
    // Under load, the fraction of the declared service time (wall-clock at the replay's
    // scale) that a served call took beyond its queueing and declared service: the mean
    // overhead plus the median extra latency, as the simulated side adds.
    let under_load: Vec<Vec<f64>> = live
        .strategies
        .iter()
        .map(|s| {
            s.under_load
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let declared =
                        super::calibrate::declared_service_ns(scenario, i, live.time_scale);
                    if l.overhead.is_empty() {
                        f64::NAN
                    } else {
                        (l.overhead.mean() + l.extra.value_at_quantile(0.5) as f64) / declared
                    }
                })
                .collect()
        })
        .collect();
    let summaries: Vec<_> = sim_replayed.iter().map(RunMetrics::summarize).collect();
    let rows = judge(
        &Judged {
            scenario,
            sim: &sim,
            sim_replayed: &summaries,
            live: &live_results,
            idle: &idle,
            under_load: &under_load,
            phases: &live
                .strategies
                .first()
                .map(|s| s.metrics.phase_bounds())
                .unwrap_or_default(),
        },
        &opts.tolerances,
        opts.reference,
    );
    let p50 = crate::metrics::Metric::LatencyP50;
    let lag = live
        .strategies
        .iter()
        .zip(&sim.strategies)
        .map(|(replay, sim_k)| {
            let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 * 1e-9;
            let p99 = q(&replay.lag, 0.99);
            let threshold = opts.max_lag_fraction * sim_k.estimate(p50).mean * live.time_scale;
            LagCheck {
                strategy: replay.label.clone(),
                p50: q(&replay.lag, 0.5),
                p99,
                max: replay.lag.max() as f64 * 1e-9,
                dispatch_p99: q(&replay.dispatch_lag, 0.99),
                threshold,
                // An undefined threshold (nothing served) refuses too.
                ok: p99 <= threshold,
            }
        })
        .collect();
    let calibration = backends
        .iter()
        .enumerate()
        .map(|(i, b)| CalibrationRow {
            server: b.server.clone(),
            ping_rtt: b.ping_rtt_ns * 1e-9,
            service_overhead: b.service_overhead_ns * 1e-9,
            extra_latency: b.extra_latency_ns * 1e-9,
            declared_service: b.declared_service_ns * 1e-9,
            fraction: b.fraction(),
            bound,
            applied_fraction: live.calibration.applied_fraction(i, bound),
        })
        .collect();
    Ok(Verdict {
        calibrated,
        sim,
        sim_replayed,
        live: live_results,
        rows,
        lag,
        errors: live.strategies.iter().map(|s| s.errors).collect(),
        calibration,
        time_scale: live.time_scale,
    })
}
