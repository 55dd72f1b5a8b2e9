//! `sweep.csv`: one row per sweep point, strategy and metric, with the 95% CI and the rank
//! (ties for statistically indistinguishable strategies) at that point. A 2-D sweep fills
//! the last two columns, `parameter2` and `value2` (empty otherwise, so 1-D files keep
//! their columns in place).

use std::path::PathBuf;

use super::columns::*;
use super::comparisons::{Ranking, rank};
use super::output::Folder;
use super::{Report, ReportError, ReportInput};
use crate::metrics::{Applies, Metric, PerMetric};

/// `sweep.csv`, written only when the scenario has a `[sweep]`.
pub struct SweepCsv;

impl Report for SweepCsv {
    fn name(&self) -> &'static str {
        "sweep.csv"
    }

    fn write(
        &self,
        dir: &Folder<'_>,
        input: &ReportInput<'_>,
    ) -> Result<Vec<PathBuf>, ReportError> {
        let Some(sweep) = input.sweep else {
            return Ok(Vec::new());
        };
        let listed: Vec<Metric> = Metric::listed_in(Applies::of(input.scenario)).collect();
        let ranks: Vec<PerMetric<Option<Ranking>>> = sweep
            .points
            .iter()
            .map(|p| PerMetric::from_fn(|m| rank(&p.results, m)))
            .collect();
        let strategies = sweep.points.iter().zip(&ranks).flat_map(|(p, ranks)| {
            (p.results.strategies.iter().enumerate()).map(move |(si, s)| (p, ranks, si, s))
        });
        let rows = strategies.flat_map(|(p, ranks, si, s)| {
            listed.iter().map(move |&m| {
                let e = s.estimate(m);
                [
                    (SCENARIO, (&input.scenario.name).into()),
                    (PARAMETER, (&sweep.parameter).into()),
                    (PARAMETER_VALUE, p.x.into()),
                    (OFFERED_LOAD, p.offered_load.into()),
                    (STRATEGY, (&s.label).into()),
                    (METRIC, m.into()),
                    (UNIT, m.unit().into()),
                    (MEAN, e.into()),
                    (RANK, ranks[m].as_ref().map(|r| r.rank_of(si)).into()),
                    (REPLICATIONS, e.n.into()),
                    (
                        PARAMETER2,
                        sweep.by.as_ref().map(|b| b.parameter.as_str()).into(),
                    ),
                    (PARAMETER2_VALUE, p.by.into()),
                ]
            })
        });
        let path = SWEEP.write(dir, rows)?;
        Ok(vec![path])
    }
}
