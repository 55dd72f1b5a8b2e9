//! Running a scenario's `[sweep]`: every point through the Monte Carlo runner, with the
//! same seed (common random numbers across points as well as across strategies).

use crate::runner::{RunError, RunOptions, RunResults, run};
use crate::scenario::Scenario;

/// One point of a sweep.
#[derive(Clone, Debug)]
pub struct SweepPoint {
    /// The swept parameter's value.
    pub x: f64,
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
    /// Points in file order.
    pub points: Vec<SweepPoint>,
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
    let mut points = Vec::with_capacity(sweep.values.len());
    for (j, &x) in sweep.values.iter().enumerate() {
        if opts
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        {
            break;
        }
        let s = scenario.at_sweep_point(j);
        let results = run(&s, opts)?;
        points.push(SweepPoint {
            x,
            offered_load: s.mean_rate() / s.capacity(),
            results,
        });
    }
    Ok(Some(SweepResults {
        parameter: sweep.name(),
        axis: sweep.axis_label(),
        points,
    }))
}
