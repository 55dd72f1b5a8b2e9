//! The scenario file as written: serde structs that mirror the TOML, checked only for shape.
//! [`super::Scenario::load`] turns them into a validated scenario.

use serde::{Deserialize, Serialize};

use crate::strategy::StrategyEntry;
use crate::workload::{ArrivalSpec, Dist, KeySpec};

/// A scenario file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Scenario name, used in reports and as the default output folder. Defaults to the
    /// file name without extension.
    #[serde(default)]
    pub name: Option<String>,
    /// One or two sentences on what the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Master seed of every random stream.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Independent replications per strategy.
    #[serde(default = "default_replications")]
    pub replications: u32,
    /// Measured simulated time (seconds), after the warm-up.
    pub duration: f64,
    /// Simulated time discarded before measuring (seconds).
    #[serde(default)]
    pub warmup: f64,
    /// Number of independent client-side balancers the arrivals are split among.
    #[serde(default = "default_balancers")]
    pub balancers: u32,
    /// Seconds between server load reports seen by balancers (stale information). Absent:
    /// balancers see each server's load exactly, at all times.
    #[serde(default)]
    pub load_report_interval: Option<f64>,
    /// The arrival process.
    pub arrivals: ArrivalSpec,
    /// The distribution of request keys.
    #[serde(default)]
    pub keys: KeySpec,
    /// Server groups.
    pub servers: Vec<ServerGroup>,
    /// Strategies to compare.
    pub strategies: Vec<StrategyEntry>,
    /// One parameter varied over a list of values (see [`super::sweep`]).
    #[serde(default)]
    pub sweep: Option<super::sweep::SweepFile>,
}

/// A group of identical servers (`[[servers]]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerGroup {
    /// Group name; servers are named `<name>-<i>`.
    pub name: String,
    /// Number of servers in the group.
    #[serde(default = "one")]
    pub count: u32,
    /// Requests each server serves at once (worker threads).
    #[serde(default = "one")]
    pub workers: u32,
    /// Speed factor: a request of work `w` takes `w / speed` seconds.
    #[serde(default = "unit")]
    pub speed: f64,
    /// Requests that may wait for a worker; a request arriving to a full queue is rejected.
    /// Unbounded when absent.
    #[serde(default)]
    pub queue_capacity: Option<u32>,
    /// Balancing weight (for weighted strategies).
    #[serde(default = "one")]
    pub weight: u32,
    /// Service demand at speed 1 (seconds).
    pub service: Dist,
}

fn default_seed() -> u64 {
    1
}
fn default_replications() -> u32 {
    10
}
fn default_balancers() -> u32 {
    1
}
fn one() -> u32 {
    1
}
fn unit() -> f64 {
    1.0
}
