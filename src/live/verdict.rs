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
//!
//! Where a strategy's rows fail and the machine was measured busy during its replay (a
//! thread sleeping beside the backends woke late: [`StrategyReplay::machine`]), the
//! strategy is simulated once more with each backend's cap raised by that lateness, and
//! each failing row gets its reference as the machine ran ([`Comparison::machine`]): a row
//! that agrees with it is not judged (no verdict), one that still disagrees fails.
//! Queues and response times, which depend on *when* the machine was late, are compared
//! with the replayed replication simulated with the replay's stalls too, each as a pause
//! of its server at its time ([`super::stall`]): a mean added to every call cannot build
//! the backlog one stall of a few services does.

use hdrhistogram::Histogram;

use super::calibrate::LoadedCost;
use super::machine::MachineProbe;
use super::run::{LiveRun, StrategyReplay};
use super::stall;
use crate::metrics::Metric;
use crate::metrics::RunMetrics;
pub use crate::report::live::{
    BadReference, BadTolerance, CalibrationRow, Comparison, Figure, LagCheck, Outcome, Reference,
    Tolerance, Tolerances, Verdict, table, write_reports,
};
use crate::report::live::{Judged, MIN_SPREAD_REPLICATIONS, judge, spread_family};
use crate::runner::{RunError, RunOptions, RunResults, StrategyResult, run};
use crate::scenario::Scenario;
use crate::sim::Overheads;
use crate::sim::Run;
use crate::strategy::StrategyEntry;

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
    let simulate = |entry: &StrategyEntry, overheads: &Overheads| {
        simulate_one(scenario, entry, live, overheads, replications, opts.threads)
    };
    for (replay, entry) in live.strategies.iter().zip(&calibrated.strategies) {
        let overheads = live
            .calibration
            .under_load(&replay.under_load)
            .overheads(live.time_scale, bound);
        let (result, replayed, requested, finished) = simulate(entry, &overheads)?;
        (sim.requested, sim.finished) = (requested, finished);
        sim.strategies.push(result);
        sim_replayed.push(replayed);
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
    let phases = live
        .strategies
        .first()
        .map(|s| s.metrics.phase_bounds())
        .unwrap_or_default();
    let mut rows = judge(
        &Judged {
            scenario,
            sim: &sim,
            sim_replayed: &summaries,
            live: &live_results,
            idle: &idle,
            under_load: &under_load,
            phases: &phases,
        },
        &opts.tolerances,
        opts.reference,
    );
    // Failing rows of a strategy replayed beside a busy machine: their reference as the
    // machine ran, from the strategy simulated with each backend's cap raised by it.
    for (k, (replay, entry)) in live
        .strategies
        .iter()
        .zip(&calibrated.strategies)
        .enumerate()
    {
        let shares = machine_shares(
            scenario,
            &replay.machine,
            &replay.under_load,
            live.time_scale,
        );
        let failing = |r: &Comparison| r.strategy == replay.label && !r.passed();
        let calm = shares.iter().all(|&m| m <= 0.0) && replay.stalls.is_empty();
        if calm || !rows.iter().any(failing) {
            continue;
        }
        let (as_machine_ran, raised) = live.calibration.under_machine(&replay.under_load, &shares);
        let overheads = as_machine_ran.overheads_beside(live.time_scale, bound, &raised);
        let (result, replayed, requested, finished) = simulate(entry, &overheads)?;
        let as_ran = RunResults {
            seed: live.seed,
            requested,
            finished,
            strategies: vec![result],
        };
        let live_k = RunResults {
            strategies: vec![live_results.strategies[k].clone()],
            ..live_results.clone()
        };
        let replayed_summary = replayed.summarize();
        let machine_judged = Judged {
            scenario,
            sim: &as_ran,
            sim_replayed: std::slice::from_ref(&replayed_summary),
            live: &live_k,
            idle: &[],
            under_load: std::slice::from_ref(&under_load[k]),
            phases: &phases,
        };
        let machine_rows = judge(&machine_judged, &opts.tolerances, opts.reference);
        // The rows stalls move, against the same simulation with the stalls as pauses
        // (the replayed replication only: the stalls happened at its requests' times).
        let stalled = match opts.reference {
            Reference::Replayed => {
                simulate_stalled(scenario, entry, live, replay, &shares, bound, &phases)
            }
            Reference::Mean => None,
        };
        let stalled_rows = stalled.as_ref().map(|m| {
            judge(
                &Judged {
                    sim_replayed: std::slice::from_ref(&m.summarize()),
                    ..machine_judged
                },
                &opts.tolerances,
                opts.reference,
            )
        });
        let overrun = lateness(replay, |l| &l.late_path);
        for r in rows.iter_mut().filter(|r| failing(r)) {
            let (reference, reference_rows) = match (&stalled, &stalled_rows) {
                (Some(m), Some(rows)) if moved_by_stalls(r.figure) => (m, rows),
                _ => (&replayed, &machine_rows),
            };
            let percentile = match r.figure {
                Figure::Cluster(Metric::LatencyP50) => Some(0.5),
                Figure::Cluster(Metric::LatencyP99) => Some(0.99),
                _ => None,
            };
            r.machine = if r.figure == Figure::CalibrationUnderLoad {
                // What the machine alone made a sleeping thread overrun.
                let i = servers_index(scenario, r.server.as_deref());
                i.map(|i| shares[i])
            } else if let Some(q) = percentile.filter(|_| opts.reference == Reference::Replayed) {
                Some(quantile_beside(
                    &reference.latency,
                    &overrun,
                    live.time_scale,
                    q,
                ))
            } else {
                reference_rows
                    .iter()
                    .find(|m| m.figure == r.figure && m.server == r.server)
                    .map(Comparison::base)
            };
        }
    }
    let p50 = Metric::LatencyP50;
    let lag = live
        .strategies
        .iter()
        .zip(&sim.strategies)
        .map(|(replay, sim_k)| {
            let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 * 1e-9;
            let p99 = q(&replay.lag, 0.99);
            let threshold = opts.max_lag_fraction * sim_k.estimate(p50).mean * live.time_scale;
            let late = lateness(replay, |l| &l.woke_late);
            let longest = replay.stalls.longest();
            let (woke_late_mean, woke_late_p99) = match late.is_empty() {
                true => (f64::NAN, f64::NAN),
                false => (late.mean() * 1e-9, q(&late, 0.99)),
            };
            LagCheck {
                strategy: replay.label.clone(),
                p50: q(&replay.lag, 0.5),
                p99,
                max: replay.lag.max() as f64 * 1e-9,
                dispatch_p99: q(&replay.dispatch_lag, 0.99),
                threshold,
                // An undefined threshold (nothing served) refuses too.
                ok: p99 <= threshold,
                woke_late_mean,
                woke_late_p99,
                stalls: replay.stalls.count,
                stall_max: longest.map_or(0.0, |s| s.length * live.time_scale),
                stall_max_at: longest.map_or(f64::NAN, |s| s.at),
                stall_total: replay.stalls.total * live.time_scale,
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

/// One strategy of `scenario` simulated with `overheads`: its replications and the
/// replayed replication alone, with the run's requested and finished replications.
fn simulate_one(
    scenario: &Scenario,
    entry: &StrategyEntry,
    live: &LiveRun,
    overheads: &Overheads,
    replications: Option<u32>,
    threads: Option<usize>,
) -> Result<(StrategyResult, RunMetrics, u32, Vec<u64>), VerdictError> {
    let mut one = scenario.clone();
    one.strategies = vec![entry.clone()];
    let r = run(
        &one,
        &RunOptions {
            replications,
            seed: Some(live.seed),
            threads,
            overheads: overheads.clone(),
            ..Default::default()
        },
    )?;
    let replayed = Run::entry(&one, entry, live.replication)
        .seed(live.seed)
        .overheads(overheads)
        .metrics();
    let result = r
        .strategies
        .into_iter()
        .next()
        .expect("one strategy simulated");
    Ok((result, replayed, r.requested, r.finished))
}

/// Whether the machine's stalls move `figure` beyond what their mean lateness, added to
/// every call, does: queues and response times grow with the spread of service times and
/// with bunched arrivals, so they depend on *when* the machine stalled
/// ([`super::stall`]). Utilisations do not (they integrate the time in service, whose
/// mean the lateness added to every call already includes), nor shares, error fractions
/// or what calibration absorbed.
fn moved_by_stalls(figure: Figure) -> bool {
    matches!(
        figure,
        Figure::Cluster(Metric::LatencyMean | Metric::LatencyP50 | Metric::LatencyP99)
            | Figure::ServerQueueMean
            | Figure::ServerLatencyMean
            | Figure::PhaseLatencyMean
            | Figure::PhaseLatencyP99
    )
}

/// The replayed replication of `entry` as the machine ran it, stalls included: the
/// reference of [`compare`]'s rows the stalls move, `None` when `replay` recorded no
/// stall. The stalls are simulated as pauses ([`stall::pauses`]); the mean lateness
/// added to every call (`shares`, fractions of each server's declared service) then
/// leaves out what its backend's own stalls among the pauses account for, so that no
/// lateness counts twice. Phases are those of `phases` (the scenario's).
fn simulate_stalled(
    scenario: &Scenario,
    entry: &StrategyEntry,
    live: &LiveRun,
    replay: &StrategyReplay,
    shares: &[f64],
    bound: f64,
    phases: &[(crate::time::Nanos, crate::time::Nanos)],
) -> Option<RunMetrics> {
    let (pauses, absorbed) = stall::pauses(scenario, &replay.stalls.kept);
    if pauses.is_empty() {
        return None;
    }
    let shares: Vec<f64> = shares
        .iter()
        .enumerate()
        .map(|(i, &share)| {
            let calls = replay.under_load.get(i).map_or(0, |l| l.woke_late.len());
            if calls < super::machine::MIN_SLEEPS {
                return share;
            }
            let declared = super::calibrate::declared_service_ns(scenario, i, live.time_scale);
            let per_call = absorbed[i] * 1e9 * live.time_scale / calls as f64;
            (share - per_call / declared).max(0.0)
        })
        .collect();
    let (as_ran, raised) = live.calibration.under_machine(&replay.under_load, &shares);
    let overheads = as_ran.overheads_beside(live.time_scale, bound, &raised);
    let mut paused = stall::with_pauses(scenario, &pauses);
    paused.strategies = vec![entry.clone()];
    let mut metrics = Run::entry(&paused, entry, live.replication)
        .seed(live.seed)
        .overheads(&overheads)
        .metrics();
    stall::coarsen_phases(&mut metrics, phases);
    Some(metrics)
}

/// Per server of `scenario`, how late the machine woke its worker threads during
/// `replay`, as a fraction of its declared mean service time (0 where not measured): what
/// the backend itself said of its workers
/// ([`LoadedCost::woke_late`]) where it said it
/// of at least [`MIN_SLEEPS`](super::machine::MIN_SLEEPS) calls, else what the thread
/// sleeping beside the backends measured for its group ([`MachineProbe::share`]).
///
/// The backend's own first, because the machine does not wake every thread alike: beside
/// two `yes` loops on 2 cores, one backend's workers woke late by a mean of 570–750 µs
/// (p90 1.5–1.9 ms) in replays where the probe's sleeps overran by 110–230 µs (p90 under
/// 60 µs) and the other backends' by 80–300 µs, and in others the probe overran by
/// 1,000–1,200 µs where every backend's workers did by 330–480 µs. A backend's own
/// lateness is measured past its service's end, so its costs (a slower speed, added
/// work, fewer workers) do not move it.
fn machine_shares(
    scenario: &Scenario,
    probe: &[Histogram<u64>],
    loaded: &[LoadedCost],
    time_scale: f64,
) -> Vec<f64> {
    scenario
        .servers()
        .iter()
        .enumerate()
        .map(|(i, info)| {
            let declared = super::calibrate::declared_service_ns(scenario, i, time_scale);
            match loaded.get(i).map(|l| &l.woke_late) {
                Some(own) if own.len() >= super::machine::MIN_SLEEPS => {
                    MachineProbe::share(std::slice::from_ref(own), 0, declared)
                }
                _ => MachineProbe::share(probe, info.group, declared),
            }
        })
        .collect()
}

/// How late the machine woke the threads serving `replay`'s calls, one value per call
/// where the backends said it of at least [`MIN_SLEEPS`](super::machine::MIN_SLEEPS)
/// calls (`part` of their [`LoadedCost`]: the worker alone,
/// or the whole path); the probe's sleeps otherwise (backends that do not say: real
/// services, other Thrift stacks).
fn lateness(replay: &StrategyReplay, part: fn(&LoadedCost) -> &Histogram<u64>) -> Histogram<u64> {
    let mut backends = crate::metrics::latency_histogram();
    for l in &replay.under_load {
        add_saturating(&mut backends, part(l));
    }
    if backends.len() >= super::machine::MIN_SLEEPS {
        backends
    } else {
        pooled(&replay.machine)
    }
}

/// Every group's overruns in one histogram.
fn pooled(overruns: &[Histogram<u64>]) -> Histogram<u64> {
    let mut all = crate::metrics::latency_histogram();
    for h in overruns {
        add_saturating(&mut all, h);
    }
    all
}

/// Adds `from`'s counts to `into`, values beyond `into`'s range at its highest value.
///
/// The histograms added here are [`crate::metrics::latency_histogram`]s recorded with
/// `saturating_record`, so `add` succeeds (it fails only on a value beyond `into`'s
/// range); but [`LoadedCost`]'s fields are public, and a histogram built otherwise must
/// not make the verdict panic: its values are then recorded one by one, clamped.
pub(crate) fn add_saturating(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    if into.add(from).is_err() {
        for v in from.iter_recorded() {
            into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// The `q` quantile (seconds) of a response time drawn from `latency` (scenario ns) plus,
/// independently, an overrun drawn from `overrun` (wall-clock ns, divided by
/// `time_scale`) less the overruns' mean: response times as the machine ran. A busy
/// machine wakes a few % of sleepers milliseconds late; that tail moves the percentiles,
/// which a constant overhead per call cannot. The simulated side already adds the
/// machine's mean to every call (its cap is raised by it), so only the spread around
/// the mean is added here. From 1,000 evenly spaced quantiles of the first and 200 of the
/// second, every sum; `latency`'s own quantile without overruns.
fn quantile_beside(
    latency: &Histogram<u64>,
    overrun: &Histogram<u64>,
    time_scale: f64,
    q: f64,
) -> f64 {
    if overrun.is_empty() || latency.is_empty() {
        return latency.value_at_quantile(q) as f64 * 1e-9;
    }
    let grid = |h: &Histogram<u64>, n: usize, scale: f64| -> Vec<f64> {
        (0..n)
            .map(|i| h.value_at_quantile((i as f64 + 0.5) / n as f64) as f64 * scale)
            .collect()
    };
    let xs = grid(latency, 1000, 1e-9);
    let mean = overrun.mean() * 1e-9 / time_scale;
    let ys: Vec<f64> = grid(overrun, 200, 1e-9 / time_scale)
        .into_iter()
        .map(|y| y - mean)
        .collect();
    let mut sums: Vec<f64> = xs
        .iter()
        .flat_map(|x| ys.iter().map(move |y| x + y))
        .collect();
    sums.sort_by(f64::total_cmp);
    let k = ((q * sums.len() as f64).ceil() as usize).clamp(1, sums.len()) - 1;
    sums[k]
}

/// The index of the server named `name` in `scenario`.
fn servers_index(scenario: &Scenario, name: Option<&str>) -> Option<usize> {
    let name = name?;
    scenario.servers().iter().position(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = crate::metrics::latency_histogram();
        for v in values {
            h.record(v).unwrap();
        }
        h
    }

    /// A backend that says how late its workers woke is taken at its word (the probe
    /// saw the machine elsewhere); one that does not, or of too few calls, gets the
    /// probe's measure for its group. What it added to its calls itself (`overhead`:
    /// a slower or costlier backend) never counts.
    #[test]
    fn a_backend_s_own_lateness_comes_before_the_probe_s() {
        let src = r#"
name = "two-groups"
duration = 1.0
[arrivals]
process = "poisson"
rate = 100
[[servers]]
name = "fast"
speed = 2.0
service = { dist = "exponential", mean = 0.004 }
[[servers]]
name = "slow"
count = 2
service = { dist = "exponential", mean = 0.004 }
[[strategies]]
kind = "round_robin"
"#;
        let s = Scenario::from_source(std::path::Path::new("t.toml"), src).unwrap();
        // At time scale 2: fast-0 sleeps 4 ms wall-clock, slow-0 and slow-1 8 ms.
        let probe = vec![
            histogram(std::iter::repeat_n(1_000_000, 40)),
            histogram(std::iter::repeat_n(400_000, 40)),
        ];
        let loaded = |late: &[u64], n: usize| {
            let mut l = LoadedCost::default();
            for _ in 0..n {
                // A backend 2 ms costlier than declared, whatever the machine did.
                for &w in late {
                    l.record(2e6 + w as f64, 50e3, Some(w));
                }
            }
            l
        };
        let busy = [
            loaded(&[200_000], 40),
            loaded(&[1_600_000], 40),
            loaded(&[1_600_000], 10),
        ];
        let shares = machine_shares(&s, &probe, &busy, 2.0);
        // fast-0: its own 200 µs of 4 ms; slow-0: its own 1.6 ms of 8 ms; slow-1 said it
        // of 10 calls only: the probe's 400 µs of 8 ms.
        let expected = [0.05, 0.2, 0.05];
        for (share, want) in shares.iter().zip(expected) {
            assert!((share - want).abs() < 1e-3, "{shares:?}");
        }
        // Backends that never say: the probe alone.
        let silent = [LoadedCost::default(), LoadedCost::default()];
        let shares = machine_shares(&s, &probe, &silent, 2.0);
        let expected = [0.25, 0.05, 0.05];
        for (share, want) in shares.iter().zip(expected) {
            assert!((share - want).abs() < 1e-3, "{shares:?}");
        }
    }

    /// Two servers `a-0` and `b-0` of 2 workers, 10 ms services, 300 requests a second
    /// (75% load), 3 measured seconds after 0.5 s, round robin; `a-0` with `a_workers`.
    fn stalled_cluster(a_workers: u32) -> Scenario {
        let src = r#"
name = "stalled"
seed = 11
replications = 4
duration = 3.0
warmup = 0.5
[arrivals]
process = "poisson"
rate = 300
[[servers]]
name = "a"
workers = 2
service = { dist = "lognormal", mean = 0.010, cv = 1.0 }
[[servers]]
name = "b"
workers = 2
service = { dist = "lognormal", mean = 0.010, cv = 1.0 }
[[strategies]]
kind = "round_robin"
"#;
        let mut s = Scenario::from_source(std::path::Path::new("t.toml"), src).unwrap();
        // Set after validation, which refuses a cluster that cannot keep up.
        s.groups[0].workers = a_workers;
        s.expand_servers();
        s
    }

    /// A live run of `scenario`'s replication 0 that measured what `cluster` (the same
    /// servers as declared, or not) gave with the machine stalling as `stalls` say: its
    /// figures are those of `cluster` simulated with the stalls as pauses, but for the
    /// servers' busy time (a stalled dispatcher leaves them idle, where a paused server
    /// holds its workers), and it recorded `recorded` (a perfect replay, at time scale 1,
    /// without calibration).
    fn replayed_beside(
        scenario: &Scenario,
        cluster: &Scenario,
        stalls: &[stall::Stall],
        recorded: stall::Stalls,
    ) -> LiveRun {
        let (pauses, _) = stall::pauses(cluster, stalls);
        let paused = stall::with_pauses(cluster, &pauses);
        let entry = &paused.strategies[0];
        let mut metrics = Run::entry(&paused, entry, 0).seed(scenario.seed).metrics();
        stall::coarsen_phases(&mut metrics, &[]);
        let plain = Run::entry(cluster, entry, 0).seed(scenario.seed).metrics();
        for (m, p) in metrics.servers.iter_mut().zip(&plain.servers) {
            m.busy_area = p.busy_area;
        }
        let servers = scenario.servers().len();
        LiveRun {
            seed: scenario.seed,
            replication: 0,
            time_scale: 1.0,
            backends: Vec::new(),
            calibration: super::super::Calibration::default(),
            strategies: vec![StrategyReplay {
                label: entry.label(),
                metrics,
                errors: 0,
                sent: 0,
                lag: crate::metrics::latency_histogram(),
                dispatch_lag: crate::metrics::latency_histogram(),
                wall: std::time::Duration::ZERO,
                marked_down: Vec::new(),
                errors_per_backend: vec![0; servers],
                connections: 0,
                connection_waits: 0,
                first_error: None,
                probes_late: 0,
                realtime: false,
                under_load: Vec::new(),
                machine: Vec::new(),
                faults: Vec::new(),
                stalls: recorded,
            }],
        }
    }

    /// The dispatcher stalled 150 ms at 1.5 s and 120 ms at 2.8 s, and both workers of
    /// `a-0` 60 ms at 2.2 s.
    fn stalls() -> Vec<stall::Stall> {
        let at = |server, at, length| stall::Stall { server, at, length };
        vec![
            at(None, 1.5, 0.15),
            at(Some(0), 2.2, 0.06),
            at(Some(0), 2.2, 0.06),
            at(None, 2.8, 0.12),
        ]
    }

    fn verdict(live: &LiveRun, scenario: &Scenario) -> Verdict {
        let opts = CompareOptions {
            threads: Some(1),
            ..CompareOptions::default()
        };
        compare(scenario, live, &opts).unwrap()
    }

    /// Stalls explain what they do, and only that: a cluster as declared, whose replay
    /// the machine stalled, fails queues and response times against the simulation, and
    /// those rows are refused (no verdict) when the replay recorded the stalls, judged
    /// (a failure) when it did not; a cluster with a worker fewer fails its queue even
    /// beside the same stalls.
    #[test]
    fn stalls_excuse_the_backlog_they_build_and_nothing_more() {
        let s = stalled_cluster(2);
        let unexcused = verdict(
            &replayed_beside(&s, &s, &stalls(), stall::Stalls::default()),
            &s,
        );
        let failed = match unexcused.outcome() {
            Outcome::Fail { failed } => failed,
            other => panic!("the stalls move no row: {other:?}"),
        };
        assert!(
            failed.contains(&"round_robin server_queue_mean:a-0".to_string()),
            "{failed:?}"
        );
        let excused = verdict(
            &replayed_beside(&s, &s, &stalls(), stalls().into_iter().collect()),
            &s,
        );
        match excused.outcome() {
            Outcome::NoVerdict { reason } => {
                assert!(reason.contains("machine was too busy"), "{reason}")
            }
            other => panic!("{other:?}\n{}", table(&excused)),
        }
        for r in excused.rows.iter().filter(|r| !r.passed()) {
            assert_eq!(excused.word(r), "not judged (machine busy)", "{r:?}");
        }
        let lag = &excused.lag[0];
        assert_eq!(lag.stalls, 4);
        assert!((lag.stall_max - 0.15).abs() < 1e-9 && (lag.stall_max_at - 1.5).abs() < 1e-9);
        assert!((lag.stall_total - 0.39).abs() < 1e-9);
        assert!(table(&excused).contains("stalls: 4"));
        // One worker fewer on a-0 (offered 0.75 erlangs: it saturates), beside the
        // same stalls, recorded: its queue fails, judged.
        let planted = verdict(
            &replayed_beside(
                &s,
                &stalled_cluster(1),
                &stalls(),
                stalls().into_iter().collect(),
            ),
            &s,
        );
        let row = planted.row("round_robin", "server_queue_mean:a-0").unwrap();
        assert!(planted.judged(row) && !row.passed(), "{row:?}");
        assert!(matches!(planted.outcome(), Outcome::Fail { .. }));
    }

    #[test]
    fn percentiles_beside_a_late_machine_take_its_tail() {
        // Response times of 10 ms (the machine's mean among them); the machine wakes 1
        // sleeper in 20 late by 8 ms (wall-clock, at time scale 2: 4 ms of scenario
        // time), the rest by 20 µs: a mean of 0.2095 ms of scenario time.
        let latency = histogram(std::iter::repeat_n(10_000_000, 1000));
        let overrun = histogram((0..1000).map(|i| if i % 20 == 0 { 8_000_000 } else { 20_000 }));
        let p50 = quantile_beside(&latency, &overrun, 2.0, 0.5);
        let p99 = quantile_beside(&latency, &overrun, 2.0, 0.99);
        assert!((p50 - (10.01e-3 - 0.2095e-3)).abs() < 0.02e-3, "{p50}");
        assert!((p99 - (14e-3 - 0.2095e-3)).abs() < 0.02e-3, "{p99}");
        // A machine late by the same every time adds nothing beyond its mean.
        let even = histogram(std::iter::repeat_n(4_000_000, 100));
        let p50 = quantile_beside(&latency, &even, 2.0, 0.5);
        assert!((p50 - 10e-3).abs() < 0.01e-3, "{p50}");
        // Nothing measured: the response times' own percentile.
        let none = crate::metrics::latency_histogram();
        assert!((quantile_beside(&latency, &none, 2.0, 0.99) - 10e-3).abs() < 0.01e-3);
        // Groups pool.
        assert_eq!(pooled(&[overrun.clone(), overrun]).len(), 2000);
        // A histogram of a narrower kind adds as usual; one of values beyond the
        // latency histogram's range adds them at its top, without panicking.
        let mut narrow = Histogram::<u64>::new_with_bounds(1, 1_000_000, 2).unwrap();
        narrow.record(500).unwrap();
        let mut wide = Histogram::<u64>::new_with_bounds(1, u64::MAX / 2, 3).unwrap();
        wide.record_n(u64::MAX / 4, 3).unwrap();
        let mut all = crate::metrics::latency_histogram();
        add_saturating(&mut all, &narrow);
        add_saturating(&mut all, &wide);
        assert_eq!(all.len(), 4);
        assert_eq!(all.max(), all.highest_equivalent(all.high()));
    }
}
