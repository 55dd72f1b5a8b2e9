//! The verdict: does the live replay agree with the simulation, metric by metric?
//!
//! The simulated side runs the scenario with the calibrated overheads
//! ([`Calibration::apply`](super::calibrate::Calibration::apply)), same seed: every
//! replication for the mean and its 95% CI, and the replayed replication on its own. Live
//! replays exactly that replication's requests (common random numbers), so by default the
//! live value is compared with the simulated value *of the same replication*
//! ([`Reference::Replayed`]): the difference is then the model error alone, not model
//! error plus the spread between replications, which for a 99th percentile of a few
//! thousand requests is itself ±10%. [`Reference::Mean`] compares with the mean instead.
//!
//! Before any verdict the driver's schedule lag is checked: a send that is late by a
//! sizeable fraction of a response time makes live latencies wrong whatever the model,
//! so the comparison is refused when lag p99 exceeds `max_lag_fraction` (5%) of the
//! simulated median response time (scaled to wall-clock time). At 5% of the median, lag
//! can move the mean and median by at most half of their 10% tolerance, and the 99th
//! percentile (≥ the median) by at most a quarter of its 20%; its typical part (the
//! median lag) is in the calibrated extra latency anyway.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::driver::LiveRun;
use crate::metrics::{Metric, RunMetrics};
use crate::report::{ReportError, write_servers_csv, write_summary_csv};
use crate::runner::{RunError, RunOptions, RunResults, StrategyResult, run};
use crate::scenario::Scenario;
use crate::sim::simulate;
use crate::stats::{Estimate, estimate};

/// What the live value is compared with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reference {
    /// The simulated value of the replayed replication (same requests).
    #[default]
    Replayed,
    /// The simulated mean over replications.
    Mean,
}

impl FromStr for Reference {
    type Err = VerdictError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "replayed" => Ok(Reference::Replayed),
            "mean" => Ok(Reference::Mean),
            _ => Err(VerdictError::Reference(s.to_string())),
        }
    }
}

/// Tolerances: relative for latencies, absolute (fraction of requests) for shares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerances {
    /// Mean response time, relative.
    pub latency_mean: f64,
    /// Median, relative.
    pub latency_p50: f64,
    /// 99th percentile, relative.
    pub latency_p99: f64,
    /// Per-server share of requests, absolute (0.02 = 2 percentage points).
    pub share: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            latency_mean: 0.10,
            latency_p50: 0.10,
            latency_p99: 0.20,
            share: 0.02,
        }
    }
}

impl Tolerances {
    /// Applies overrides written `name=value,...` (names: latency_mean, latency_p50,
    /// latency_p99, share).
    pub fn with_overrides(mut self, spec: &str) -> Result<Tolerances, VerdictError> {
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || VerdictError::Tolerance(part.to_string());
            let (name, value) = part.split_once('=').ok_or_else(bad)?;
            let v: f64 = value.trim().parse().map_err(|_| bad())?;
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad());
            }
            match name.trim() {
                "latency_mean" => self.latency_mean = v,
                "latency_p50" => self.latency_p50 = v,
                "latency_p99" => self.latency_p99 = v,
                "share" => self.share = v,
                _ => return Err(bad()),
            }
        }
        Ok(self)
    }
}

/// How to compare.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Simulated replications for the mean and CI (default: the scenario's).
    pub replications: Option<u32>,
    /// Tolerances.
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

/// An error comparing or writing the verdict.
#[derive(Debug, thiserror::Error)]
pub enum VerdictError {
    /// A `--tolerance` entry that cannot be read.
    #[error(
        "bad tolerance {0:?}\n  fix: write name=value pairs separated by commas, names latency_mean, latency_p50, latency_p99, share, values ≥ 0 (e.g. latency_p99=0.2,share=0.02)"
    )]
    Tolerance(String),
    /// An unknown `--against`.
    #[error("unknown reference {0:?}\n  fix: use `replayed` or `mean`")]
    Reference(String),
    /// The simulation could not run.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A report could not be written.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// The plot could not be drawn.
    #[error("cannot draw `{}`: {message}", .path.display())]
    Plot {
        /// The file.
        path: PathBuf,
        /// What plotters reported.
        message: String,
    },
}

/// A row of `comparison.csv`.
#[derive(Clone, Debug, Serialize)]
pub struct ComparisonRow {
    /// Strategy label.
    pub strategy: String,
    /// `latency_mean`, `latency_p50`, `latency_p99`, `share:<server>` or `error_fraction`
    /// (measured requests that failed over those that arrived; tolerance 0).
    pub metric: String,
    /// `s` or `1`.
    pub unit: &'static str,
    /// Simulated mean over replications.
    pub sim_mean: f64,
    /// Lower end of its 95% CI.
    pub sim_ci95_low: f64,
    /// Upper end of its 95% CI.
    pub sim_ci95_high: f64,
    /// Simulated value of the replayed replication.
    pub sim_replayed: f64,
    /// Live value.
    pub live: f64,
    /// `replayed` or `mean`: which simulated value `difference` is taken against.
    pub against: &'static str,
    /// (live − sim) / sim for latencies; live − sim for shares.
    pub difference: f64,
    /// `relative` or `absolute`.
    pub kind: &'static str,
    /// Largest accepted |difference|.
    pub tolerance: f64,
    /// `pass` or `fail`.
    pub verdict: &'static str,
}

/// The schedule lag of one strategy's replay against its threshold.
#[derive(Clone, Debug, Serialize)]
pub struct LagCheck {
    /// Strategy label.
    pub strategy: String,
    /// Median lag (wall-clock seconds).
    pub p50: f64,
    /// 99th percentile lag (wall-clock seconds).
    pub p99: f64,
    /// Largest lag (wall-clock seconds).
    pub max: f64,
    /// Largest accepted p99 (wall-clock seconds).
    pub threshold: f64,
    /// Whether p99 ≤ threshold.
    pub ok: bool,
}

/// The outcome of a comparison.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// The calibrated scenario the simulator ran.
    pub calibrated: Scenario,
    /// Simulated replications (calibrated), replayed strategies only.
    pub sim: RunResults,
    /// Simulated replayed replication, per replayed strategy.
    pub sim_replayed: Vec<RunMetrics>,
    /// Live figures as a one-replication run (for the simulator's CSV schema).
    pub live: RunResults,
    /// Comparison rows.
    pub rows: Vec<ComparisonRow>,
    /// Lag checks, one per strategy.
    pub lag: Vec<LagCheck>,
    /// Live requests that failed, per strategy.
    pub errors: Vec<u64>,
}

impl Verdict {
    /// Why no verdict can be given, if the driver lagged too much.
    pub fn refusal(&self) -> Option<String> {
        let late: Vec<String> = self
            .lag
            .iter()
            .filter(|l| !l.ok)
            .map(|l| {
                format!(
                    "{}: lag p99 {:.0} µs > {:.0} µs",
                    l.strategy,
                    l.p99 * 1e6,
                    l.threshold * 1e6
                )
            })
            .collect();
        (!late.is_empty()).then(|| {
            format!(
                "no verdict: the driver could not keep to the schedule ({}); latencies measured are not the servers'.\n  fix: run on a quieter machine, raise --time-scale, or lower the load",
                late.join("; ")
            )
        })
    }

    /// Whether every comparison passes.
    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.verdict == "pass")
    }
}

/// Simulates the calibrated scenario and compares it with `live`.
pub fn compare(
    scenario: &Scenario,
    live: &LiveRun,
    opts: &CompareOptions,
) -> Result<Verdict, VerdictError> {
    let mut calibrated = live.calibration.apply(scenario, live.time_scale);
    let labels: Vec<&str> = live.strategies.iter().map(|s| s.label.as_str()).collect();
    calibrated
        .strategies
        .retain(|e| labels.contains(&e.label().as_str()));
    let sim = run(
        &calibrated,
        &RunOptions {
            replications: opts.replications,
            seed: Some(live.seed),
            threads: opts.threads,
            ..Default::default()
        },
    )?;
    let sim_replayed: Vec<RunMetrics> = calibrated
        .strategies
        .iter()
        .map(|e| simulate(&calibrated, &e.spec, live.replication, live.seed))
        .collect();
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
    let tol = opts.tolerances;
    let servers = scenario.servers();
    let mut rows = Vec::new();
    let mut lag = Vec::new();
    for (k, replay) in live.strategies.iter().enumerate() {
        let sim_k = &sim.strategies[k];
        let replayed = sim_replayed[k].summarize();
        let live_k = &live_results.strategies[k].runs[0];
        for (m, t) in [
            (Metric::LatencyMean, tol.latency_mean),
            (Metric::LatencyP50, tol.latency_p50),
            (Metric::LatencyP99, tol.latency_p99),
        ] {
            rows.push(row(
                &replay.label,
                m.name().to_string(),
                m.unit(),
                sim_k.estimate(m),
                replayed.values[m],
                live_k.values[m],
                opts.reference,
                t,
                true,
            ));
        }
        for (i, info) in servers.iter().enumerate() {
            let shares: Vec<f64> = sim_k.runs.iter().map(|r| r.servers[i].share).collect();
            rows.push(row(
                &replay.label,
                format!("share:{}", info.name),
                "1",
                estimate(&shares),
                replayed.servers[i].share,
                live_k.servers[i].share,
                opts.reference,
                tol.share,
                false,
            ));
        }
        // The simulated scenario has no failures: any live error is a disagreement.
        let e = Metric::ErrorFraction;
        rows.push(row(
            &replay.label,
            e.name().to_string(),
            e.unit(),
            sim_k.estimate(e),
            replayed.values[e],
            live_k.values[e],
            opts.reference,
            0.0,
            false,
        ));
        let p50 = sim_k.estimate(Metric::LatencyP50);
        let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 * 1e-9;
        let p99 = q(&replay.lag, 0.99);
        let threshold = opts.max_lag_fraction * p50.mean * live.time_scale;
        lag.push(LagCheck {
            strategy: replay.label.clone(),
            p50: q(&replay.lag, 0.5),
            p99,
            max: replay.lag.max() as f64 * 1e-9,
            threshold,
            // An undefined threshold (nothing served) refuses too.
            ok: p99 <= threshold,
        });
    }
    Ok(Verdict {
        calibrated,
        sim,
        sim_replayed,
        live: live_results,
        rows,
        lag,
        errors: live.strategies.iter().map(|s| s.errors).collect(),
    })
}

#[allow(clippy::too_many_arguments)]
fn row(
    strategy: &str,
    metric: String,
    unit: &'static str,
    sim: Estimate,
    replayed: f64,
    live: f64,
    reference: Reference,
    tolerance: f64,
    relative: bool,
) -> ComparisonRow {
    let base = match reference {
        Reference::Replayed => replayed,
        Reference::Mean => sim.mean,
    };
    let difference = if relative {
        (live - base) / base
    } else {
        live - base
    };
    ComparisonRow {
        strategy: strategy.to_string(),
        metric,
        unit,
        sim_mean: sim.mean,
        sim_ci95_low: sim.low,
        sim_ci95_high: sim.high,
        sim_replayed: replayed,
        live,
        against: match reference {
            Reference::Replayed => "replayed",
            Reference::Mean => "mean",
        },
        difference,
        kind: if relative { "relative" } else { "absolute" },
        tolerance,
        // NaN (nothing served on one side) fails.
        verdict: if difference.abs() <= tolerance {
            "pass"
        } else {
            "fail"
        },
    }
}

/// Writes `summary.csv` and `servers.csv` (live, simulator schema), `sim/summary.csv` and
/// `sim/servers.csv` (calibrated simulation), `comparison.csv`, `lag.csv` and `cdf.svg`
/// (`cdf.png` for [`ImageFormat::Png`](crate::report::ImageFormat)) into `dir`; returns the
/// paths written.
pub fn write_reports(
    dir: &Path,
    scenario: &Scenario,
    verdict: &Verdict,
    format: crate::report::ImageFormat,
) -> Result<Vec<PathBuf>, VerdictError> {
    let mut written = vec![
        write_summary_csv(dir, scenario, &verdict.live)?,
        write_servers_csv(dir, scenario, &verdict.live)?,
        write_summary_csv(&dir.join("sim"), &verdict.calibrated, &verdict.sim)?,
        write_servers_csv(&dir.join("sim"), &verdict.calibrated, &verdict.sim)?,
    ];
    written.push(write_rows(&dir.join("comparison.csv"), &verdict.rows)?);
    written.push(write_rows(&dir.join("lag.csv"), &verdict.lag)?);
    let svg = dir.join(format!("cdf.{}", format.ext()));
    let curves: Vec<_> = verdict
        .live
        .strategies
        .iter()
        .zip(&verdict.sim_replayed)
        .map(|(l, s)| (l.label.as_str(), &s.latency, l.latency()))
        .collect();
    super::plot::cdf_plot(&svg, format, &scenario.name, &curves).map_err(|message| {
        VerdictError::Plot {
            path: svg.clone(),
            message,
        }
    })?;
    written.push(svg);
    Ok(written)
}

fn write_rows<T: Serialize>(path: &Path, rows: &[T]) -> Result<PathBuf, VerdictError> {
    let csv_err = |source| ReportError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut w = csv::Writer::from_path(path).map_err(csv_err)?;
    for r in rows {
        w.serialize(r).map_err(csv_err)?;
    }
    w.flush().map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(path.to_path_buf())
}

/// A compact terminal table of the comparison (times in milliseconds, shares in %).
pub fn table(verdict: &Verdict) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<22} {:>16} {:>10} {:>10} {:>8} {:>7}  verdict",
        "strategy", "metric", "sim mean ±95%", "sim rep.", "live", "diff", "tol"
    );
    for r in &verdict.rows {
        let (f, unit) = if r.unit == "s" { (1e3, "") } else { (1e2, "") };
        let diff = if r.kind == "relative" {
            format!("{:+.1}%", 100.0 * r.difference)
        } else {
            format!("{:+.1}pp", 100.0 * r.difference)
        };
        let tol = if r.kind == "relative" {
            format!("{:.0}%", 100.0 * r.tolerance)
        } else {
            format!("{:.1}pp", 100.0 * r.tolerance)
        };
        let half = 0.5 * (r.sim_ci95_high - r.sim_ci95_low);
        let _ = writeln!(
            out,
            "{:<20} {:<22} {:>16} {:>10.3} {:>10.3} {:>8} {:>7}  {}{unit}",
            r.strategy,
            r.metric,
            format!("{:.3}±{:.3}", r.sim_mean * f, half * f),
            r.sim_replayed * f,
            r.live * f,
            diff,
            tol,
            if r.verdict == "pass" { "ok" } else { "FAIL" }
        );
    }
    let _ = writeln!(out, "(latencies in ms of scenario time, shares in %)");
    for (l, errors) in verdict.lag.iter().zip(&verdict.errors) {
        let _ = writeln!(
            out,
            "{:<20} schedule lag p50 {:.0} µs, p99 {:.0} µs (limit {:.0} µs), max {:.2} ms; errors {}",
            l.strategy,
            l.p50 * 1e6,
            l.p99 * 1e6,
            l.threshold * 1e6,
            l.max * 1e3,
            errors
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_overrides() {
        let t = Tolerances::default()
            .with_overrides("latency_p99=0.3, share=0.05")
            .unwrap();
        assert_eq!((t.latency_p99, t.share, t.latency_mean), (0.3, 0.05, 0.1));
        for bad in ["latency_p99", "p99=0.1", "share=-1", "share=x"] {
            assert!(Tolerances::default().with_overrides(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rows_compare_against_the_chosen_reference() {
        let sim = Estimate {
            mean: 1.0,
            low: 0.9,
            high: 1.1,
            n: 10,
        };
        let r = row(
            "s",
            "m".into(),
            "s",
            sim,
            2.0,
            2.1,
            Reference::Replayed,
            0.1,
            true,
        );
        assert!((r.difference - 0.05).abs() < 1e-12 && r.verdict == "pass");
        let r = row(
            "s",
            "m".into(),
            "s",
            sim,
            2.0,
            2.1,
            Reference::Mean,
            0.1,
            true,
        );
        assert_eq!(r.verdict, "fail");
        let r = row(
            "s",
            "m".into(),
            "1",
            sim,
            0.25,
            0.26,
            Reference::Replayed,
            0.02,
            false,
        );
        assert!((r.difference - 0.01).abs() < 1e-12 && r.verdict == "pass");
        let r = row(
            "s",
            "m".into(),
            "1",
            sim,
            f64::NAN,
            0.26,
            Reference::Replayed,
            0.02,
            false,
        );
        assert_eq!(r.verdict, "fail");
    }
}
