//! Tidy CSV files: `summary.csv` (one row per strategy and metric), `servers.csv` (one
//! row per strategy and server) and `replications.csv` (one row per replication, strategy
//! and metric, for users' own statistics). Times are in seconds.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Report, ReportError, ReportInput, csv_err};
use crate::metrics::{Metric, SERVER_METRICS, SERVER_QUANTILE, SOURCE_SERVERS};
use crate::runner::RunResults;
use crate::scenario::Scenario;
use crate::stats::estimate;

/// A row of `summary.csv`.
#[derive(Debug, Serialize)]
pub struct SummaryRow<'a> {
    /// Scenario name.
    pub scenario: &'a str,
    /// Strategy label.
    pub strategy: &'a str,
    /// Metric name.
    pub metric: Metric,
    /// Unit of the metric.
    pub unit: &'static str,
    /// Mean over replications.
    pub mean: f64,
    /// Lower end of the 95% CI.
    pub ci95_low: f64,
    /// Upper end of the 95% CI.
    pub ci95_high: f64,
    /// Replications behind the figure.
    pub replications: usize,
    /// The strategy has no steady state ([`crate::stability`]): its figures grow with the
    /// run length and describe this run only.
    pub unstable: bool,
}

/// A row of `servers.csv`: each figure with its 95% CI.
#[derive(Debug, Serialize)]
pub struct ServerRow<'a> {
    /// Scenario name.
    pub scenario: &'a str,
    /// Strategy label.
    pub strategy: &'a str,
    /// Server name (`<group>-<i>`).
    pub server: &'a str,
    /// Server group.
    pub group: &'a str,
    /// Mean requests accepted per replication.
    pub requests: f64,
    /// 95% CI of the requests.
    pub requests_ci95_low: f64,
    /// 95% CI of the requests.
    pub requests_ci95_high: f64,
    /// Mean share of accepted requests.
    pub share: f64,
    /// 95% CI of the share.
    pub share_ci95_low: f64,
    /// 95% CI of the share.
    pub share_ci95_high: f64,
    /// Mean utilisation.
    pub utilization: f64,
    /// 95% CI of the utilisation.
    pub utilization_ci95_low: f64,
    /// 95% CI of the utilisation.
    pub utilization_ci95_high: f64,
    /// Mean time-average queue length.
    pub queue_mean: f64,
    /// 95% CI of the queue length.
    pub queue_mean_ci95_low: f64,
    /// 95% CI of the queue length.
    pub queue_mean_ci95_high: f64,
    /// Mean over replications of the largest queue length.
    pub queue_max: f64,
    /// 95% CI of the largest queue length.
    pub queue_max_ci95_low: f64,
    /// 95% CI of the largest queue length.
    pub queue_max_ci95_high: f64,
    /// Mean response time of the requests this server served (seconds).
    pub latency_mean: f64,
    /// 95% CI of the mean response time.
    pub latency_mean_ci95_low: f64,
    /// 95% CI of the mean response time.
    pub latency_mean_ci95_high: f64,
    /// 99th percentile response time at this server, pooled over replications.
    pub latency_p99: f64,
    /// 95% CI of the p99.
    pub latency_p99_ci95_low: f64,
    /// 95% CI of the p99.
    pub latency_p99_ci95_high: f64,
    /// Replications behind the figures.
    pub replications: usize,
}

fn create(path: &Path) -> Result<csv::Writer<super::output::AtomicFile>, ReportError> {
    super::csv_writer(path)
}

/// Writes `summary.csv` into `dir` and returns its path.
pub fn write_summary_csv(
    dir: &Path,
    scenario: &Scenario,
    results: &RunResults,
) -> Result<PathBuf, ReportError> {
    let path = dir.join("summary.csv");
    let mut w = create(&path)?;
    for s in &results.strategies {
        for m in Metric::listed_in(crate::metrics::Applies::of(scenario)) {
            let e = s.estimate(m);
            if !m.reported(e.mean) {
                continue;
            }
            w.serialize(SummaryRow {
                scenario: &scenario.name,
                strategy: &s.label,
                metric: m,
                unit: m.unit(),
                mean: e.mean,
                ci95_low: e.low,
                ci95_high: e.high,
                replications: e.n,
                unstable: s.unstable.is_some(),
            })
            .map_err(csv_err(&path))?;
        }
    }
    super::finish_csv(w, &path)?;
    Ok(path)
}

/// Writes `servers.csv` into `dir` and returns its path.
pub fn write_servers_csv(
    dir: &Path,
    scenario: &Scenario,
    results: &RunResults,
) -> Result<PathBuf, ReportError> {
    let path = dir.join("servers.csv");
    let mut w = create(&path)?;
    let servers = scenario.servers();
    for s in &results.strategies {
        for (i, info) in servers.iter().enumerate() {
            let col = |k: usize| -> Vec<f64> {
                s.runs.iter().map(|r| r.servers[i].as_array()[k]).collect()
            };
            let [req, share, util, qmean, qmax, lmean] =
                [0, 1, 2, 3, 4, 5].map(|k| estimate(&col(k)));
            let p99 = s.pooled_estimate(SOURCE_SERVERS + i, SERVER_QUANTILE);
            debug_assert_eq!(SERVER_METRICS.len(), 7);
            w.serialize(ServerRow {
                scenario: &scenario.name,
                strategy: &s.label,
                server: &info.name,
                group: &info.group_name,
                requests: req.mean,
                requests_ci95_low: req.low,
                requests_ci95_high: req.high,
                share: share.mean,
                share_ci95_low: share.low,
                share_ci95_high: share.high,
                utilization: util.mean,
                utilization_ci95_low: util.low,
                utilization_ci95_high: util.high,
                queue_mean: qmean.mean,
                queue_mean_ci95_low: qmean.low,
                queue_mean_ci95_high: qmean.high,
                queue_max: qmax.mean,
                queue_max_ci95_low: qmax.low,
                queue_max_ci95_high: qmax.high,
                latency_mean: lmean.mean,
                latency_mean_ci95_low: lmean.low,
                latency_mean_ci95_high: lmean.high,
                latency_p99: p99.mean,
                latency_p99_ci95_low: p99.low,
                latency_p99_ci95_high: p99.high,
                replications: share.n,
            })
            .map_err(csv_err(&path))?;
        }
    }
    super::finish_csv(w, &path)?;
    Ok(path)
}

/// A row of `replications.csv`.
#[derive(Debug, Serialize)]
pub struct ReplicationRow<'a> {
    /// Scenario name.
    pub scenario: &'a str,
    /// Strategy label.
    pub strategy: &'a str,
    /// Replication index (its random streams derive from the seed and this index; every
    /// strategy of a replication saw the same requests).
    pub replication: u64,
    /// Metric name.
    pub metric: Metric,
    /// Unit of the metric.
    pub unit: &'static str,
    /// This replication's value (percentiles: of this replication's requests alone; empty
    /// when undefined, e.g. no request served).
    pub value: Option<f64>,
}

/// Writes `replications.csv` into `dir` and returns its path.
pub fn write_replications_csv(
    dir: &Path,
    scenario: &Scenario,
    results: &RunResults,
) -> Result<PathBuf, ReportError> {
    let path = dir.join("replications.csv");
    let mut w = create(&path)?;
    let applies = crate::metrics::Applies::of(scenario);
    for s in &results.strategies {
        for (run, &replication) in s.runs.iter().zip(&results.finished) {
            for (m, &v) in run.values.iter() {
                if !m.applies(applies) {
                    continue;
                }
                w.serialize(ReplicationRow {
                    scenario: &scenario.name,
                    strategy: &s.label,
                    replication,
                    metric: m,
                    unit: m.unit(),
                    value: v.is_finite().then_some(v),
                })
                .map_err(csv_err(&path))?;
            }
        }
    }
    super::finish_csv(w, &path)?;
    Ok(path)
}

/// `replications.csv` as a [`Report`].
pub struct ReplicationsCsv;

impl Report for ReplicationsCsv {
    fn name(&self) -> &'static str {
        "replications.csv"
    }
    fn write(&self, dir: &Path, input: &ReportInput<'_>) -> Result<Vec<PathBuf>, ReportError> {
        Ok(vec![write_replications_csv(
            dir,
            input.scenario,
            input.results,
        )?])
    }
}

/// `summary.csv` as a [`Report`].
pub struct SummaryCsv;

impl Report for SummaryCsv {
    fn name(&self) -> &'static str {
        "summary.csv"
    }
    fn write(&self, dir: &Path, input: &ReportInput<'_>) -> Result<Vec<PathBuf>, ReportError> {
        Ok(vec![write_summary_csv(dir, input.scenario, input.results)?])
    }
}

/// `servers.csv` as a [`Report`].
pub struct ServersCsv;

impl Report for ServersCsv {
    fn name(&self) -> &'static str {
        "servers.csv"
    }
    fn write(&self, dir: &Path, input: &ReportInput<'_>) -> Result<Vec<PathBuf>, ReportError> {
        Ok(vec![write_servers_csv(dir, input.scenario, input.results)?])
    }
}
