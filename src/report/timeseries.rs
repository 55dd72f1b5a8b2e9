//! `timeseries.csv` and the queue-over-time plot: every server's queue length, requests in
//! service and the balancer's in-flight count, sampled over time in replication 0 of each
//! strategy (the same requests for every strategy); `rates.csv` and the rates-over-time
//! plot: per sample interval, offered load (arrivals, and attempts including retries and
//! hedges), goodput and the requests that failed, timed out or were refused.
//!
//! Reports never simulate: the engine records replication 0 while it runs it (a
//! [`crate::runner::TraceSink`] in the run options, handed here with
//! [`Timeseries::recorded`]); `lbsim merge` reads it from the shard that ran replication 0.
//! A strategy without a recording (a run interrupted before its replication 0 finished,
//! a merge without shard 0) is left out, and without any recording nothing is written.

use std::path::PathBuf;
use std::sync::Mutex;

use super::columns::*;
use super::output::Folder;
use super::plots::{ImageFormat, queue_over_time, rates_over_time};
use super::{Report, ReportError, ReportInput};
use crate::scenario::Scenario;
use crate::sim::{Trace, TraceSpec};
use crate::time::Nanos;

/// Samples per strategy over the run: enough to see bursts, few enough that the CSV stays
/// small (samples × servers rows per strategy).
pub const SAMPLES: u64 = 200;

/// Most servers the time series shows unless asked for all (`--full-timeseries`): a larger
/// cluster shows a sample of each group, so that `timeseries.csv` and the plot stay
/// readable and bounded (at 10,000 servers, every server is 2 million rows per strategy).
pub const MAX_SERVERS: usize = 64;

/// What the time series records of `scenario`: [`SAMPLES`] points over the run; every
/// server when `full` or when there are at most [`MAX_SERVERS`], else [`sample_servers`].
pub fn trace_spec(scenario: &Scenario, full: bool) -> TraceSpec {
    let groups: Vec<usize> = scenario.servers().iter().map(|s| s.group).collect();
    TraceSpec {
        every: Nanos((Nanos::from_secs_f64(scenario.end()).0 / SAMPLES).max(1)),
        servers: if full || groups.len() <= MAX_SERVERS {
            (0..groups.len()).collect()
        } else {
            sample_servers(&groups, MAX_SERVERS)
        },
    }
}

/// About `max` servers, ascending, given each server's group: every group gets its share
/// of `max` in proportion to its size (at least one server), evenly spaced through the
/// group and starting with its first server.
pub fn sample_servers(groups: &[usize], max: usize) -> Vec<usize> {
    let n = groups.len();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, &g) in groups.iter().enumerate() {
        if members.len() <= g {
            members.resize_with(g + 1, Vec::new);
        }
        members[g].push(i);
    }
    let mut picked: Vec<usize> = members
        .iter()
        .filter(|m| !m.is_empty())
        .flat_map(|m| {
            let c = m.len();
            let k = ((max * c + n / 2) / n).clamp(1, c);
            (0..k).map(move |j| m[j * c / k])
        })
        .collect();
    picked.sort_unstable();
    picked
}

/// The recorded state of each strategy's replication 0, as (label, trace), in scenario
/// order; strategies without a recording in `recorded` (by strategy index) are left out.
pub fn recorded_traces(
    input: &ReportInput<'_>,
    recorded: &[Option<Trace>],
) -> Vec<(String, Trace)> {
    labelled(input.scenario, recorded)
}

fn labelled(scenario: &Scenario, recorded: &[Option<Trace>]) -> Vec<(String, Trace)> {
    scenario
        .strategies
        .iter()
        .zip(recorded)
        .filter_map(|(e, t)| Some((e.label(), t.clone()?)))
        .collect()
}

/// Writes `timeseries.csv`, `queue_over_time.{svg,png}`, `rates.csv` and
/// `rates_over_time.{svg,png}` from recorded traces; never simulates.
///
/// The files depend on the scenario and the traces only, not on the run's results, so
/// they can be written before the run ends ([`Timeseries::write_files`], e.g. by a thread
/// of the run that has no simulation left, [`crate::runner::run_with_idle`]) and handed
/// to the other reports as written ([`Timeseries::written`]).
#[derive(Debug, Default)]
pub struct Timeseries {
    recorded: Vec<Option<Trace>>,
    /// What [`Timeseries::write_files`] gave, when the files were written already (taken
    /// by the first [`Report::write`]).
    written: Option<Mutex<Option<Written>>>,
}

type Written = Result<Vec<PathBuf>, ReportError>;

impl Timeseries {
    /// A report of the traces recorded during the run, by strategy index (see
    /// [`crate::runner::TraceSink::take`]).
    pub fn recorded(traces: Vec<Option<Trace>>) -> Timeseries {
        Timeseries {
            recorded: traces,
            written: None,
        }
    }

    /// A report whose files [`Timeseries::write_files`] wrote already, into the folder the
    /// other reports are written to, with this outcome: its [`Report::write`] gives the
    /// outcome once (and no file after).
    pub fn written(outcome: Result<Vec<PathBuf>, ReportError>) -> Timeseries {
        Timeseries {
            recorded: Vec::new(),
            written: Some(Mutex::new(Some(outcome))),
        }
    }

    /// Writes the files into `dir` (what [`Report::write`] writes), from the scenario
    /// and the image format alone; nothing when no strategy has a recording. Returns the
    /// files written.
    pub fn write_files(
        &self,
        dir: &Folder<'_>,
        scenario: &Scenario,
        format: ImageFormat,
    ) -> Result<Vec<PathBuf>, ReportError> {
        let traces = labelled(scenario, &self.recorded);
        if traces.is_empty() {
            return Ok(Vec::new());
        }
        let traces = traces.as_slice();
        let plot = format!("queue_over_time.{}", format.ext());
        let rates_plot = format!("rates_over_time.{}", format.ext());
        // Four files, drawn and written in parallel; the first failure in the order of
        // the files is the one returned.
        let ((a, b), (c, d)) = rayon::join(
            || {
                rayon::join(
                    || write_timeseries_csv(dir, scenario, traces),
                    || dir.write_with(&plot, |p| queue_over_time(p, scenario, traces, format)),
                )
            },
            || {
                rayon::join(
                    || write_rates_csv(dir, scenario, traces),
                    || {
                        dir.write_with(&rates_plot, |p| {
                            rates_over_time(p, scenario, traces, format)
                        })
                    },
                )
            },
        );
        Ok(vec![a?, b?, c?, d?])
    }
}

impl Report for Timeseries {
    fn name(&self) -> &'static str {
        "timeseries"
    }

    fn write(
        &self,
        dir: &Folder<'_>,
        input: &ReportInput<'_>,
    ) -> Result<Vec<PathBuf>, ReportError> {
        match &self.written {
            Some(written) => written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| Ok(Vec::new())),
            None => self.write_files(dir, input.scenario, input.format),
        }
    }
}

/// Writes `timeseries.csv`: every sample of every recorded server, strategy by strategy.
fn write_timeseries_csv(
    dir: &Folder<'_>,
    scenario: &Scenario,
    traces: &[(String, Trace)],
) -> Result<PathBuf, ReportError> {
    let servers = scenario.servers();
    let servers = &servers;
    let rows = traces.iter().flat_map(|(label, trace)| {
        trace.samples.iter().flat_map(move |sample| {
            trace.servers.iter().enumerate().map(move |(k, &i)| {
                [
                    (SCENARIO, (&scenario.name).into()),
                    (STRATEGY, label.into()),
                    (REPLICATION, 0_u64.into()),
                    (TIME, sample.time.as_secs_f64().into()),
                    (SERVER, (&servers[i].name).into()),
                    (QUEUED, sample.queued[k].into()),
                    (IN_SERVICE, sample.in_service[k].into()),
                    (IN_FLIGHT, sample.in_flight[k].into()),
                ]
            })
        })
    });
    TIMESERIES.write(dir, rows)
}

/// Writes `rates.csv`: every sample interval's counts, per second, strategy by strategy.
fn write_rates_csv(
    dir: &Folder<'_>,
    scenario: &Scenario,
    traces: &[(String, Trace)],
) -> Result<PathBuf, ReportError> {
    let rows = traces.iter().flat_map(|(label, trace)| {
        let dt = trace.every.as_secs_f64();
        let per_s = move |n: u64| (n as f64 / dt).into();
        trace.counts.iter().enumerate().map(move |(k, c)| {
            [
                (SCENARIO, (&scenario.name).into()),
                (STRATEGY, label.into()),
                (REPLICATION, 0_u64.into()),
                (TIME, Nanos(trace.every.0 * k as u64).as_secs_f64().into()),
                (INTERVAL, dt.into()),
                (OFFERED, per_s(c.arrived)),
                (ATTEMPTS, per_s(c.attempts)),
                (GOODPUT, per_s(c.ok)),
                (FAILED, per_s(c.failed)),
                (TIMED_OUT, per_s(c.timed_out)),
                (REJECTED, per_s(c.rejected)),
            ]
        })
    });
    RATES.write(dir, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_written_before_the_results_are_those_the_report_writes() {
        use crate::runner::{RunOptions, TraceSink, run};
        use crate::testing;
        let rest = testing::servers("s", 3, "", &testing::exponential(0.01))
            + &testing::kinds(&["round_robin", "random"]);
        let scenario = testing::scenario("duration = 3\nwarmup = 0.5", 200.0, &rest);
        let sink = TraceSink::new(trace_spec(&scenario, false));
        let opts = RunOptions {
            replications: Some(2),
            trace: Some(sink.clone()),
            ..Default::default()
        };
        let results = run(&scenario, &opts).expect("run");
        let traces = sink.take();
        let input = ReportInput {
            scenario: &scenario,
            results: &results,
            command: "lbsim run",
            format: ImageFormat::Svg,
            sweep: None,
        };
        let (early, late) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let before = Timeseries::recorded(traces.clone()).write_files(
            &Folder::new(early.path()),
            &scenario,
            ImageFormat::Svg,
        );
        let files = before.as_ref().expect("written").clone();
        let after = Timeseries::recorded(traces).write(&Folder::new(late.path()), &input);
        let names = |files: &[PathBuf]| -> Vec<_> {
            files
                .iter()
                .map(|f| f.file_name().unwrap().to_owned())
                .collect()
        };
        assert_eq!(names(&files), names(&after.expect("written")));
        assert_eq!(files.len(), 4);
        for f in &files {
            let late = late.path().join(f.file_name().unwrap());
            let (a, b) = (std::fs::read(f).unwrap(), std::fs::read(&late).unwrap());
            assert!(a == b, "{} differs", f.display());
        }
        // Handed over as written: the same files, once, and nothing written.
        let written = Timeseries::written(before);
        let other = tempfile::tempdir().unwrap();
        let other_dir = Folder::new(other.path());
        assert_eq!(written.write(&other_dir, &input).expect("outcome"), files);
        assert!(written.write(&other_dir, &input).expect("once").is_empty());
        assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 0);
    }

    #[test]
    fn samples_every_group_in_proportion() {
        // 10,000 servers: 9,990 of group 0, then 10 of group 1.
        let groups: Vec<usize> = (0..10_000).map(|i| usize::from(i >= 9_990)).collect();
        let picked = sample_servers(&groups, MAX_SERVERS);
        assert!(picked.windows(2).all(|w| w[0] < w[1]), "{picked:?}");
        let small = picked.iter().filter(|&&i| i >= 9_990).count();
        assert_eq!(small, 1, "{picked:?}");
        assert_eq!(picked.len(), 65);
        // Each group starts with its first server (the plot's legend hangs on it).
        assert!(picked.contains(&0) && picked.contains(&9_990));
        // A small cluster is shown whole.
        assert_eq!(sample_servers(&[0, 0, 1], 64), vec![0, 1, 2]);
    }
}
