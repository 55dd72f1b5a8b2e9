//! `sweep.csv`: one row per sweep point, strategy and metric, with the 95% CI and the rank
//! (ties for statistically indistinguishable strategies) at that point. A 2-D sweep fills
//! the last two columns, `parameter2` and `value2` (empty otherwise, so 1-D files keep
//! their columns in place).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::comparisons::rank;
use super::{Report, ReportError, ReportInput, csv_err, csv_writer, finish_csv};
use crate::metrics::{Metric, PerMetric};

/// A row of `sweep.csv`.
#[derive(Debug, Serialize)]
pub struct SweepRow<'a> {
    /// Scenario name.
    pub scenario: &'a str,
    /// Swept parameter.
    pub parameter: &'a str,
    /// Its value at this point.
    pub value: f64,
    /// Offered load at this point (mean arrival rate / capacity).
    pub offered_load: f64,
    /// Strategy label.
    pub strategy: &'a str,
    /// Metric name.
    pub metric: Metric,
    /// Unit.
    pub unit: &'static str,
    /// Mean over replications.
    pub mean: f64,
    /// Lower end of the 95% CI.
    pub ci95_low: f64,
    /// Upper end of the 95% CI.
    pub ci95_high: f64,
    /// Rank at this point (empty for metrics without a better direction).
    pub rank: Option<usize>,
    /// Replications.
    pub replications: usize,
    /// Second swept parameter (empty for a 1-D sweep).
    pub parameter2: Option<&'a str>,
    /// Its value at this point.
    pub value2: Option<f64>,
}

/// `sweep.csv`, written only when the scenario has a `[sweep]`.
pub struct SweepCsv;

impl Report for SweepCsv {
    fn name(&self) -> &'static str {
        "sweep.csv"
    }

    fn write(&self, dir: &Path, input: &ReportInput<'_>) -> Result<Vec<PathBuf>, ReportError> {
        let Some(sweep) = input.sweep else {
            return Ok(Vec::new());
        };
        let path = dir.join("sweep.csv");
        let mut w = csv_writer(&path)?;
        for p in &sweep.points {
            let ranks = PerMetric::from_fn(|m| rank(&p.results, m));
            for (si, s) in p.results.strategies.iter().enumerate() {
                for m in Metric::listed_in(crate::metrics::Applies::of(input.scenario)) {
                    let e = s.estimate(m);
                    w.serialize(SweepRow {
                        scenario: &input.scenario.name,
                        parameter: &sweep.parameter,
                        value: p.x,
                        offered_load: p.offered_load,
                        strategy: &s.label,
                        metric: m,
                        unit: m.unit(),
                        mean: e.mean,
                        ci95_low: e.low,
                        ci95_high: e.high,
                        rank: ranks[m].as_ref().map(|r| r.rank_of(si)),
                        replications: e.n,
                        parameter2: sweep.by.as_ref().map(|b| b.parameter.as_str()),
                        value2: p.by,
                    })
                    .map_err(csv_err(&path))?;
                }
            }
        }
        finish_csv(w, &path)?;
        Ok(vec![path])
    }
}
