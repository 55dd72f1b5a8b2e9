//! Running a scenario's `[sweep]`: every point (of one parameter, or of the grid of two)
//! through the Monte Carlo runner, with the same seed (common random numbers across points
//! as well as across strategies).

use crate::runner::{RunError, RunOptions, RunResults, run};
use crate::scenario::Scenario;

/// One point of a sweep.
#[derive(Clone, Debug)]
pub struct SweepPoint {
    /// The (first) swept parameter's value.
    pub x: f64,
    /// The second parameter's value, in a 2-D sweep.
    pub by: Option<f64>,
    /// Offered load at this point (mean arrival rate over capacity).
    pub offered_load: f64,
    /// Results at this point.
    pub results: RunResults,
}

/// A whole sweep.
#[derive(Clone, Debug)]
pub struct SweepResults {
    /// Parameter name, e.g. `load` or `servers.slow.count`.
    pub parameter: String,
    /// Axis label for plots.
    pub axis: String,
    /// The second parameter of a 2-D sweep.
    pub by: Option<SweepBy>,
    /// Points in file order, the first parameter varying fastest.
    pub points: Vec<SweepPoint>,
}

/// The second parameter of a 2-D sweep.
#[derive(Clone, Debug)]
pub struct SweepBy {
    /// Parameter name, e.g. `balancers`.
    pub parameter: String,
    /// Its values, in file order (one plot panel each).
    pub values: Vec<f64>,
    /// Points per value: the length of the first parameter's list.
    pub stride: usize,
}

impl SweepResults {
    /// The points grouped by the second parameter, as (its value, points in the first
    /// parameter's order); a 1-D sweep is one group without a value. Groups of an
    /// interrupted sweep may be short or empty.
    pub fn panels(&self) -> Vec<(Option<f64>, &[SweepPoint])> {
        let Some(by) = &self.by else {
            return vec![(None, &self.points[..])];
        };
        let stride = by.stride.max(1);
        by.values
            .iter()
            .enumerate()
            .map(|(j, &y)| {
                let lo = (j * stride).min(self.points.len());
                let hi = ((j + 1) * stride).min(self.points.len());
                (Some(y), &self.points[lo..hi])
            })
            .collect()
    }
}

impl SweepResults {
    /// Axis label for plots.
    pub fn axis_label(&self) -> String {
        self.axis.clone()
    }

    /// Whether the parameter is the offered load.
    pub fn is_load(&self) -> bool {
        self.parameter == "load"
    }
}

/// Runs every point of `scenario`'s sweep (`None` if it has none). Stops early, keeping the
/// points that finished, when `opts.cancel` is set.
pub fn run_sweep(scenario: &Scenario, opts: &RunOptions) -> Result<Option<SweepResults>, RunError> {
    let Some(sweep) = &scenario.sweep else {
        return Ok(None);
    };
    let mut points = Vec::with_capacity(sweep.len());
    for j in 0..sweep.len() {
        if opts.cancel.is_cancelled() {
            break;
        }
        let s = scenario.at_sweep_point(j);
        let results = run(&s, opts)?;
        if results.is_partial() {
            // Interrupted inside this point: keep only the points that finished.
            break;
        }
        let (x, by) = sweep.values_at(j);
        points.push(SweepPoint {
            x,
            by,
            offered_load: s.mean_rate() / s.capacity(),
            results,
        });
    }
    Ok(Some(SweepResults {
        parameter: sweep.first.name(),
        axis: sweep.first.axis_label(),
        by: sweep.by.as_ref().map(|b| SweepBy {
            parameter: b.name(),
            values: b.values.clone(),
            stride: sweep.first.values.len(),
        }),
        points,
    }))
}
