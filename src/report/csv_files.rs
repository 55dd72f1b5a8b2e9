//! Tidy CSV files: `summary.csv` (one row per strategy and metric), `servers.csv` (one
//! row per strategy and server) and `replications.csv` (one row per replication, strategy
//! and metric, for users' own statistics). Times are in seconds. Their columns are defined
//! in [`super::columns`].

use std::path::PathBuf;

use super::columns::*;
use super::output::Folder;
use super::{Report, ReportError, ReportInput};
use crate::metrics::{Applies, Metric, SERVER_METRICS, SERVER_QUANTILE, SOURCE_SERVERS};
use crate::runner::RunResults;
use crate::scenario::Scenario;
use crate::stats::estimate;

/// Writes `summary.csv` into `dir` and returns its path.
pub fn write_summary_csv(
    dir: &Folder<'_>,
    scenario: &Scenario,
    results: &RunResults,
) -> Result<PathBuf, ReportError> {
    let listed: Vec<Metric> = Metric::listed_in(Applies::of(scenario)).collect();
    let rows = results.strategies.iter().flat_map(|s| {
        listed.iter().filter_map(move |&m| {
            let e = s.estimate(m);
            m.reported(e.mean).then(|| {
                [
                    (SCENARIO, (&scenario.name).into()),
                    (STRATEGY, (&s.label).into()),
                    (METRIC, m.into()),
                    (UNIT, m.unit().into()),
                    (MEAN, e.into()),
                    (REPLICATIONS, e.n.into()),
                    (UNSTABLE, s.unstable.is_some().into()),
                ]
            })
        })
    });
    SUMMARY.write(dir, rows)
}

/// Writes `servers.csv` into `dir` and returns its path.
pub fn write_servers_csv(
    dir: &Folder<'_>,
    scenario: &Scenario,
    results: &RunResults,
) -> Result<PathBuf, ReportError> {
    let servers = scenario.servers();
    let rows = results.strategies.iter().flat_map(|s| {
        servers.iter().enumerate().map(move |(i, info)| {
            let col = |k: usize| -> Vec<f64> {
                s.runs.iter().map(|r| r.servers[i].as_array()[k]).collect()
            };
            let [req, share, util, qmean, qmax, lmean] =
                [0, 1, 2, 3, 4, 5].map(|k| estimate(&col(k)));
            let p99 = s.pooled_estimate(SOURCE_SERVERS + i, SERVER_QUANTILE);
            debug_assert_eq!(SERVER_METRICS.len(), 7);
            [
                (SCENARIO, (&scenario.name).into()),
                (STRATEGY, (&s.label).into()),
                (SERVER, (&info.name).into()),
                (GROUP, (&*info.group_name).into()),
                (REQUESTS, req.into()),
                (SHARE, share.into()),
                (UTILIZATION, util.into()),
                (QUEUE_MEAN, qmean.into()),
                (QUEUE_MAX, qmax.into()),
                (LATENCY_MEAN, lmean.into()),
                (LATENCY_P99, p99.into()),
                (REPLICATIONS, share.n.into()),
            ]
        })
    });
    SERVERS.write(dir, rows)
}

/// Writes `replications.csv` into `dir` and returns its path.
pub fn write_replications_csv(
    dir: &Folder<'_>,
    scenario: &Scenario,
    results: &RunResults,
) -> Result<PathBuf, ReportError> {
    let applies = Applies::of(scenario);
    let rows = results.strategies.iter().flat_map(|s| {
        s.runs
            .iter()
            .zip(&results.finished)
            .flat_map(move |(run, &replication)| {
                run.values
                    .iter()
                    .filter(move |(m, _)| m.applies(applies))
                    .map(move |(m, &v)| {
                        [
                            (SCENARIO, (&scenario.name).into()),
                            (STRATEGY, (&s.label).into()),
                            (REPLICATION, replication.into()),
                            (METRIC, m.into()),
                            (UNIT, m.unit().into()),
                            (REPLICATION_VALUE, v.is_finite().then_some(v).into()),
                        ]
                    })
            })
    });
    REPLICATIONS_CSV.write(dir, rows)
}

/// `replications.csv` as a [`Report`].
pub struct ReplicationsCsv;

impl Report for ReplicationsCsv {
    fn name(&self) -> &'static str {
        "replications.csv"
    }
    fn write(
        &self,
        dir: &Folder<'_>,
        input: &ReportInput<'_>,
    ) -> Result<Vec<PathBuf>, ReportError> {
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
    fn write(
        &self,
        dir: &Folder<'_>,
        input: &ReportInput<'_>,
    ) -> Result<Vec<PathBuf>, ReportError> {
        Ok(vec![write_summary_csv(dir, input.scenario, input.results)?])
    }
}

/// `servers.csv` as a [`Report`].
pub struct ServersCsv;

impl Report for ServersCsv {
    fn name(&self) -> &'static str {
        "servers.csv"
    }
    fn write(
        &self,
        dir: &Folder<'_>,
        input: &ReportInput<'_>,
    ) -> Result<Vec<PathBuf>, ReportError> {
        Ok(vec![write_servers_csv(dir, input.scenario, input.results)?])
    }
}
