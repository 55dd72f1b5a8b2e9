//! `timeseries.csv` and the queue-over-time plot: every server's queue length, requests in
//! service and the balancer's in-flight count, sampled over time in replication 0 of each
//! strategy (the same requests for every strategy).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::plots::queue_over_time;
use super::{Report, ReportError, ReportInput, csv_writer, finish_csv};
use crate::sim::{Sample, simulate_traced};
use crate::time::Nanos;

/// Samples per strategy over the run: enough to see bursts, few enough that the CSV stays
/// small (samples × servers rows per strategy).
pub const SAMPLES: u64 = 200;

/// A row of `timeseries.csv`.
#[derive(Debug, Serialize)]
pub struct TimeseriesRow<'a> {
    /// Scenario name.
    pub scenario: &'a str,
    /// Strategy label.
    pub strategy: &'a str,
    /// Replication sampled.
    pub replication: u64,
    /// Simulated time (seconds from the start of the run, warm-up included).
    pub time: f64,
    /// Server name.
    pub server: &'a str,
    /// Requests waiting.
    pub queued: u32,
    /// Requests in service.
    pub in_service: u32,
    /// In flight to this server as the (first) balancer sees it.
    pub in_flight: u32,
}

/// The sampled state of each strategy's replication 0, as (label, samples).
pub fn trace_all(input: &ReportInput<'_>) -> Vec<(String, Vec<Sample>)> {
    let s = input.scenario;
    let every = Nanos((Nanos::from_secs_f64(s.end()).0 / SAMPLES).max(1));
    s.strategies
        .iter()
        .map(|e| {
            let (_, samples) = simulate_traced(s, &e.spec, 0, input.results.seed, every);
            (e.label(), samples)
        })
        .collect()
}

/// Writes `timeseries.csv` and `queue_over_time.{svg,png}`.
pub struct Timeseries;

impl Report for Timeseries {
    fn name(&self) -> &'static str {
        "timeseries"
    }

    fn write(&self, dir: &Path, input: &ReportInput<'_>) -> Result<Vec<PathBuf>, ReportError> {
        let traces = trace_all(input);
        let servers = input.scenario.servers();
        let path = dir.join("timeseries.csv");
        let mut w = csv_writer(&path)?;
        for (label, samples) in &traces {
            for sample in samples {
                for (i, info) in servers.iter().enumerate() {
                    w.serialize(TimeseriesRow {
                        scenario: &input.scenario.name,
                        strategy: label,
                        replication: 0,
                        time: sample.time.as_secs_f64(),
                        server: &info.name,
                        queued: sample.queued[i],
                        in_service: sample.in_service[i],
                        in_flight: sample.in_flight[i],
                    })
                    .map_err(|source| ReportError::Csv {
                        path: path.clone(),
                        source,
                    })?;
                }
            }
        }
        finish_csv(w, &path)?;
        let plot = dir.join(format!("queue_over_time.{}", input.format.ext()));
        queue_over_time(&plot, input.scenario, &traces, input.format)?;
        Ok(vec![path, plot])
    }
}
