//! Instability as a result: a strategy whose backlog grows over the window has no steady
//! state, and its figures only grow with the run length. Such a strategy is marked
//! `unstable` in every output and left out of "best" and of ranks.
//!
//! Two checks, either suffices:
//! - **static**: the strategy splits by weights only (round robin, random, hashing
//!   aside) and sends some server group at least what it can serve, on unbounded queues
//!   ([`Scenario::group_loads`] at the mean arrival rate);
//! - **drift**: the number in system grows across the window. Each replication fits a
//!   least-squares line through the time-average number in system over 10 equal slices
//!   (`in_system_growth`, end minus start); the strategy is unstable when, over
//!   replications, the growth is positive at the 99.9% level, larger than half the
//!   window's mean number in system, and faster than 1% of the accepted rate. A stable
//!   queue's growth is noise around 0; one whose warm-up was too short rises towards its
//!   level but not by that much that fast, which the warm-up checks report instead.

use crate::metrics::Metric;
use crate::runner::{RunResults, StrategyResult};
use crate::scenario::Scenario;
use crate::stats::{estimate, t_quantile};

/// Why strategy `entry` of `scenario` overloads a group at the mean arrival rate, if it
/// does (static split onto unbounded queues).
pub fn static_overload(scenario: &Scenario, index: usize) -> Option<String> {
    let entry = scenario.strategies.get(index)?;
    scenario
        .group_loads(entry)?
        .into_iter()
        .find(|load| {
            load.utilization >= 1.0
                && scenario
                    .groups
                    .iter()
                    .find(|g| g.name == load.group)
                    .is_some_and(|g| g.queue_capacity.is_none())
        })
        .map(|load| {
            format!(
                "sends group `{}` {:.0}% of what it can serve (static split)",
                load.group,
                100.0 * load.utilization
            )
        })
}

/// Why the replications of `s` (windows of `window` seconds) show a growing backlog, if
/// they do.
pub fn drift(s: &StrategyResult, window: f64) -> Option<String> {
    let growth = estimate(&s.metric(Metric::InSystemGrowth));
    let level = estimate(&s.metric(Metric::InSystemMean)).mean;
    let rate = estimate(&s.metric(Metric::AcceptedRate)).mean;
    if !(growth.mean.is_finite() && level.is_finite()) {
        return None;
    }
    let significant = if growth.n >= 2 {
        let k = t_quantile(0.9995, growth.n - 1) / t_quantile(0.975, growth.n - 1);
        growth.mean - k * growth.half_width() > 0.0
    } else {
        true
    };
    (significant && growth.mean > 0.5 * level && growth.mean / window > 0.01 * rate).then(|| {
        format!(
            "requests in system grow by {:.1} over the {window} s window (mean {:.1}): no steady state",
            growth.mean, level
        )
    })
}

/// Sets [`StrategyResult::unstable`] for every strategy of `results`.
pub fn assess(scenario: &Scenario, results: &mut RunResults) {
    for (k, s) in results.strategies.iter_mut().enumerate() {
        s.unstable = static_overload(scenario, k).or_else(|| drift(s, scenario.duration));
    }
}
