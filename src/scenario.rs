//! Scenarios: parsing a TOML file and validating it into a [`Scenario`] the engine trusts.
//!
//! Two stages, as ripgrep configures itself: [`file::ScenarioFile`] mirrors what the user
//! wrote and is only checked for shape by serde; [`Scenario::load`] then checks every
//! value, loads referenced files (traces) and expands server groups into servers.

pub mod cost;
pub mod error;
mod fault_check;
pub mod file;
pub mod sweep;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use cost::{Cost, CostError, Limits};
pub use error::ScenarioError;
pub use file::{
    AdmissionSpec, CodelSpec, ConnectionSpec, ErrorStatus, FaultKind, FaultSpec, LifoSpec,
    ProbeSpec, ScenarioFile, ServerGroup, WarmupSetting,
};
pub use sweep::{Sweep, SweepFile, SweepParameter};
use validate::Validator;

use crate::strategy::StrategyEntry;
use crate::workload::{Dist, Workload};

/// A validated scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Where it was read from.
    pub path: PathBuf,
    /// Name (from the file, or the file stem).
    pub name: String,
    /// Description.
    pub description: String,
    /// Master seed.
    pub seed: u64,
    /// Replications per strategy.
    pub replications: u32,
    /// Measured simulated time (seconds).
    pub duration: f64,
    /// Warm-up (seconds). With `warmup = "auto"`, 0 until [`crate::steady::resolve_warmup`]
    /// sets the chosen value.
    pub warmup: f64,
    /// Whether the file says `warmup = "auto"`.
    pub warmup_auto: bool,
    /// With `warmup = "auto"`, the choice once made (see [`crate::steady::choose_warmup`]).
    pub auto_warmup: Option<crate::steady::AutoWarmup>,
    /// Number of client-side balancers.
    pub balancers: u32,
    /// Seconds between load reports (`None`: exact, continuous).
    pub load_report_interval: Option<f64>,
    /// The request stream definition.
    pub workload: Workload,
    /// Server groups, as written. [`Scenario::servers`] is derived from them at
    /// validation (and again by sweeps that change a group's count).
    pub groups: Vec<ServerGroup>,
    /// Strategies, as written.
    pub strategies: Vec<StrategyEntry>,
    /// Connection-level balancing, when set.
    pub connections: Option<ConnectionSpec>,
    /// Faults, resolved to server indices.
    pub faults: Vec<Fault>,
    /// The `[sweep]`, if any (see [`sweep`]).
    pub sweep: Option<Sweep>,
    /// Every server with its group's properties resolved, built once from `groups`.
    servers: Vec<ServerInfo>,
    /// How probes travel and what they cost (`[probes]`; zeros when absent).
    pub probes: ProbeSpec,
    /// The `[autoscaler]`, if any.
    pub autoscaler: Option<Autoscaler>,
}

/// A validated `[autoscaler]`: the Kubernetes HPA loop over one group (see
/// [`file::AutoscalerSpec`] for the fields' meaning and defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct Autoscaler {
    /// The group's servers, by index, in order: the first `initial` start as members.
    pub servers: Vec<usize>,
    /// Target mean utilisation.
    pub target: f64,
    /// Fewest replicas.
    pub min_replicas: u32,
    /// Replicas at the start.
    pub initial: u32,
    /// Seconds between decisions.
    pub sync_period: f64,
    /// Tolerance on utilisation / target.
    pub tolerance: f64,
    /// Scale-down stabilisation window (seconds).
    pub stabilization: f64,
    /// Seconds from a scale-up decision until the server joins.
    pub startup: f64,
    /// Cold start of new servers.
    pub cold: Option<ColdStart>,
    /// Longest drain of a server scaled in (seconds).
    pub drain_timeout: f64,
}

/// A fault resolved against the scenario's servers.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// Indices of the affected servers.
    pub servers: Vec<usize>,
    /// What happens.
    pub kind: FaultKind,
    /// Start (seconds).
    pub at: f64,
    /// End (seconds), if it ends.
    pub until: Option<f64>,
    /// Slow-down factor (1 for crashes).
    pub factor: f64,
    /// Health-check detection delay (seconds).
    pub detection: f64,
    /// For `error` faults: what the server answers, and how.
    pub error: Option<ErrorFault>,
    /// For `pause` faults: (interval between pauses, pause length).
    pub pauses: Option<(Dist, Dist)>,
    /// Cold start: for `cold` faults, and servers that join or come back (`join`,
    /// `leave` with a duration, `deploy`, `crash`) when `warmup` is set.
    pub cold: Option<ColdStart>,
    /// For `join`, `leave` and `deploy`: longest drain (seconds), after which what a
    /// leaving server still holds fails.
    pub drain_timeout: f64,
    /// For `deploy`: seconds each server is down between its drain and its return.
    pub restart: f64,
    /// For `delay`: seconds added to the round trip of each answer (0 otherwise).
    pub delay: f64,
}

impl Fault {
    /// Its longest drain of server `i` (seconds), if it is a membership fault (`join`,
    /// `leave` or `deploy`) of that server; the simulator and live mode both read it.
    pub fn drain_of(&self, i: usize) -> Option<f64> {
        let membership = matches!(
            self.kind,
            FaultKind::Join | FaultKind::Leave | FaultKind::Deploy
        );
        (membership && self.servers.contains(&i)).then_some(self.drain_timeout)
    }
}

/// A cold start: the speed of a server starts at `fraction` of its own and rises linearly
/// to all of it over `warmup` seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColdStart {
    /// Fraction of its speed a cold server starts at, in (0, 1].
    pub fraction: f64,
    /// Seconds until it is warm.
    pub warmup: f64,
}

/// How a server in an `error` fault answers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorFault {
    /// Fraction of requests answered with an error.
    pub fraction: f64,
    /// Seconds until the answer.
    pub latency: f64,
    /// Error or refusal.
    pub status: ErrorStatus,
}

/// One server, after expanding groups: its group's properties resolved, so that nothing
/// downstream looks them up in [`Scenario::groups`].
#[derive(Clone, Debug, PartialEq)]
pub struct ServerInfo {
    /// `<group>-<i>`.
    pub name: String,
    /// Index of its group in [`Scenario::groups`].
    pub group: usize,
    /// Its group's name.
    pub group_name: Arc<str>,
    /// Requests it serves at once (worker threads).
    pub workers: u32,
    /// Speed factor: a request of work `w` takes `w / speed` seconds.
    pub speed: f64,
    /// Requests that may wait for a worker (`None`: unbounded).
    pub queue_capacity: Option<u32>,
    /// Balancing weight.
    pub weight: u32,
    /// Service demand at speed 1 (seconds), shared by the servers of its group.
    pub service: Arc<Dist>,
}

/// Every server of `groups`, in order: group by group.
fn expand_servers(groups: &[ServerGroup]) -> Vec<ServerInfo> {
    groups
        .iter()
        .enumerate()
        .flat_map(|(g, group)| {
            let (group_name, service) = (
                Arc::<str>::from(group.name.as_str()),
                Arc::new(group.service.clone()),
            );
            (0..group.count).map(move |i| ServerInfo {
                name: format!("{}-{}", group.name, i),
                group: g,
                group_name: group_name.clone(),
                workers: group.workers,
                speed: group.speed,
                queue_capacity: group.queue_capacity,
                weight: group.weight,
                service: service.clone(),
            })
        })
        .collect()
}

/// Offered load on one server group under a strategy with a static split.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupLoad {
    /// Group name.
    pub group: String,
    /// Arrival rate to each server of the group (requests/s).
    pub rate_per_server: f64,
    /// Utilisation each server would see: rate × mean service time / workers.
    pub utilization: f64,
}

impl Scenario {
    /// Reads, parses and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let source = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            target: path.to_path_buf(),
            source,
        })?;
        Scenario::from_source(path, &source)
    }

    /// Parses and validates scenario text; `path` names it in errors and anchors relative
    /// paths (traces).
    pub fn from_source(path: &Path, source: &str) -> Result<Scenario, ScenarioError> {
        let v = Validator { path, source };
        v.unknown_strategy_keys(source)?;
        let file: ScenarioFile = toml::from_str(source).map_err(|e| ScenarioError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
            fix:
                "correct the field named above; every field is documented in scenarios/README.md, \
                  and `lbsim strategies` lists the strategy kinds"
                    .to_string(),
        })?;
        v.validate(file)
    }

    /// Every server, in order (group by group), with its group's properties.
    pub fn servers(&self) -> &[ServerInfo] {
        &self.servers
    }

    /// Rebuilds [`Scenario::servers`] after `groups` changed (sweeps).
    pub(crate) fn expand_servers(&mut self) {
        self.servers = expand_servers(&self.groups);
    }

    /// Each server's weight, in server order.
    pub fn weights(&self) -> Vec<u32> {
        self.servers.iter().map(|s| s.weight).collect()
    }

    /// Changes the warm-up and the measured duration (seconds), keeping the request
    /// stream's horizon (`warmup + duration`) consistent with them. For quick variants of a
    /// shipped scenario, e.g. in tests.
    pub fn set_run_length(&mut self, warmup: f64, duration: f64) {
        self.warmup_auto = false;
        self.auto_warmup = None;
        self.warmup = warmup;
        self.duration = duration;
        self.workload.horizon = warmup + duration;
    }

    /// A fingerprint of everything that shapes this scenario's results — run length,
    /// arrivals (a trace's contents too), keys, servers, strategies, topology, faults —
    /// but not where the file lives, its description, seed or replication count (shards
    /// record those separately). 16 hex digits of a 64-bit FNV-1a hash: stable across runs
    /// and machines, so shards and `lbsim merge` can tell an edited scenario.
    pub fn fingerprint(&self) -> String {
        use std::fmt::Write as _;
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        let _ = write!(
            h,
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.name,
            self.duration.to_bits(),
            self.warmup.to_bits(),
            self.balancers,
            self.load_report_interval.map(f64::to_bits),
            self.workload.arrivals,
            self.workload.keys,
            self.groups,
            self.strategies,
            self.connections,
            self.faults,
            self.sweep,
        );
        if self.warmup_auto {
            // The chosen warm-up is in `warmup` above once resolved.
            let _ = write!(h, "|warmup=auto");
        }
        // Only when set, so that scenarios without `[probes]` keep their fingerprints.
        if self.probes != ProbeSpec::default() {
            let _ = write!(
                h,
                "|probes {:?} {:?}",
                self.probes.delay.to_bits(),
                self.probes.cost.to_bits()
            );
        }
        // Only when set, so that other scenarios keep their fingerprints.
        if let Some(a) = &self.autoscaler {
            let _ = write!(h, "|autoscaler {a:?}");
        }
        if let Some(t) = &self.workload.trace {
            for x in &t.times {
                let _ = write!(h, "{},", x.to_bits());
            }
            for x in t.work.iter().flatten() {
                let _ = write!(h, "{},", x.to_bits());
            }
        }
        format!("{:016x}", h.0)
    }

    /// Whether some strategy entry has a client policy (`[strategies.policy]`): the
    /// metrics of client policies are reported only then.
    pub fn has_policies(&self) -> bool {
        self.strategies.iter().any(|e| e.policy.is_some())
    }

    /// Time at which measurement ends and arrivals stop (seconds).
    pub fn end(&self) -> f64 {
        self.warmup + self.duration
    }

    /// The mean arrival rate (requests/s) over the run.
    pub fn mean_rate(&self) -> f64 {
        self.workload
            .arrivals
            .mean_rate(self.end(), self.workload.trace.as_deref())
    }

    /// The peak of a time-varying arrival rate over the run, as (requests per second,
    /// when in seconds if it has a time); `None` for a constant rate.
    pub fn peak_rate(&self) -> Option<(f64, Option<f64>)> {
        self.workload
            .arrivals
            .peak_rate(self.end(), self.workload.trace.as_deref())
    }

    /// Requests per second the whole cluster can serve.
    pub fn capacity(&self) -> f64 {
        self.groups
            .iter()
            .map(|g| f64::from(g.count) * f64::from(g.workers) * g.speed / g.service.mean())
            .sum()
    }

    /// Offered load per group for a strategy whose split is static (weights only), or
    /// `None` for adaptive strategies.
    pub fn group_loads(&self, entry: &StrategyEntry) -> Option<Vec<GroupLoad>> {
        self.group_loads_at(entry, self.mean_rate())
    }

    /// [`Scenario::group_loads`] at arrival rate `rate`.
    pub fn group_loads_at(&self, entry: &StrategyEntry, rate: f64) -> Option<Vec<GroupLoad>> {
        let shares = entry.spec.static_shares(&self.weights())?;
        let servers = self.servers();
        Some(
            self.groups
                .iter()
                .enumerate()
                .map(|(g, group)| {
                    // Servers of a group share equally under a static split.
                    let share = servers
                        .iter()
                        .zip(&shares)
                        .find(|(s, _)| s.group == g)
                        .map_or(0.0, |(_, &sh)| sh);
                    let r = rate * share;
                    GroupLoad {
                        group: group.name.clone(),
                        rate_per_server: r,
                        utilization: r * group.service.mean()
                            / (group.speed * f64::from(group.workers)),
                    }
                })
                .collect(),
        )
    }

    /// Human-readable warnings: strategies whose static split overloads a group (at the
    /// mean rate, or at the peak of a time-varying rate), and a peak rate above capacity.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let (mean, capacity) = (self.mean_rate(), self.capacity());
        let peak = self.peak_rate().map_or(mean, |p| p.0);
        if peak > mean * (1.0 + 1e-9) {
            if peak >= capacity {
                out.push(format!(
                    "at its peak the arrival rate ({peak:.1} req/s) exceeds what the servers together serve ({capacity:.1} req/s): queues grow while the peak lasts"
                ));
            }
            for entry in &self.strategies {
                let mean_ok = self
                    .group_loads(entry)
                    .is_some_and(|l| l.iter().all(|g| g.utilization < 1.0));
                for load in self.group_loads_at(entry, peak).unwrap_or_default() {
                    if mean_ok && load.utilization >= 1.0 {
                        out.push(format!(
                            "strategy `{}` would send group `{}` {:.0}% of what it can serve at the peak arrival rate ({peak:.1} req/s): its queues grow while the peak lasts",
                            entry.label(),
                            load.group,
                            100.0 * load.utilization
                        ));
                    }
                }
            }
        }
        for entry in &self.strategies {
            for load in self.group_loads(entry).unwrap_or_default() {
                if load.utilization >= 1.0 {
                    let unbounded = self
                        .groups
                        .iter()
                        .find(|g| g.name == load.group)
                        .is_some_and(|g| g.queue_capacity.is_none());
                    out.push(format!(
                        "strategy `{}` would send group `{}` {:.0}% of what it can serve{}",
                        entry.label(),
                        load.group,
                        100.0 * load.utilization,
                        if unbounded {
                            ": its queues grow without bound and its figures depend on the run length"
                        } else {
                            ": expect rejections"
                        }
                    ));
                }
            }
        }
        out
    }
}

/// 64-bit FNV-1a over text written into it.
struct Fnv(u64);

impl std::fmt::Write for Fnv {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for b in s.bytes() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    /// Two servers, exponential service of mean 50 ms, Poisson arrivals at 10 a second,
    /// round robin; shared with the sweep tests.
    pub(crate) fn minimal() -> String {
        let rest = testing::servers("s", 2, "", &testing::exponential(0.05))
            + &testing::kinds(&["round_robin"]);
        testing::scenario_text("name = \"t\"\nduration = 10\nwarmup = 1", 10.0, &rest)
    }

    fn load(src: &str) -> Result<Scenario, ScenarioError> {
        Scenario::from_source(Path::new("test.toml"), src)
    }

    #[test]
    fn servers_carry_their_groups_properties() {
        let src = minimal().replace(
            "[[strategies]]",
            "[[servers]]\nname = \"big\"\ncount = 3\nworkers = 4\nspeed = 2.5\nweight = 7\nqueue_capacity = 9\nservice = { dist = \"deterministic\", value = 0.01 }\n[[strategies]]",
        );
        let s = load(&src).unwrap();
        let v = s.servers();
        assert_eq!(v.len(), 5);
        let big = &v[2];
        assert_eq!((big.name.as_str(), &*big.group_name), ("big-0", "big"));
        assert_eq!((big.group, big.workers, big.weight), (1, 4, 7));
        assert_eq!((big.speed, big.queue_capacity), (2.5, Some(9)));
        assert_eq!(big.service.mean(), 0.01);
        assert_eq!(
            (v[0].workers, v[0].speed, v[0].queue_capacity),
            (1, 1.0, None)
        );
        assert_eq!(s.weights(), vec![1, 1, 7, 7, 7]);
        // Every server of a group shares one distribution.
        assert!(Arc::ptr_eq(&v[2].service, &v[4].service));
    }

    #[test]
    fn minimal_scenario_loads_with_defaults() {
        let s = load(&minimal()).unwrap();
        assert_eq!(s.servers().len(), 2);
        assert_eq!(s.servers()[1].name, "s-1");
        assert_eq!(s.replications, 10);
        assert!((s.capacity() - 40.0).abs() < 1e-9);
    }

    /// `test.toml:<n>`, where `n` is the line of `src` that starts with `line`.
    fn at_line_of(src: &str, line: &str) -> String {
        let n = src.lines().position(|l| l.starts_with(line)).unwrap() + 1;
        format!("test.toml:{n}:")
    }

    #[test]
    fn errors_name_line_field_and_fix() {
        let src = minimal().replace("rate = 10", "rate = -3");
        let e = load(&src).unwrap_err().to_string();
        assert!(
            e.contains(&at_line_of(&src, "rate = -3"))
                && e.contains("arrivals.rate")
                && e.contains("fix:"),
            "{e}"
        );
        let src = minimal().replace("count = 2", "count = 2\nworkers = 0");
        let e = load(&src).unwrap_err().to_string();
        assert!(
            e.contains("servers[0].workers") && e.contains(&at_line_of(&src, "workers = 0")),
            "{e}"
        );
        let e = load(&minimal().replace("rate = 10", "rate = 100"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unstable"), "{e}");
    }

    #[test]
    fn bad_strategy_parameters_name_line_field_and_fix() {
        let src = minimal().replace(
            "kind = \"round_robin\"",
            "kind = \"maglev\"\ntable_size = 1000",
        );
        let e = load(&src).unwrap_err().to_string();
        assert!(
            e.contains(&at_line_of(&src, "table_size = 1000"))
                && e.contains("strategies[0].table_size")
                && e.contains("prime"),
            "{e}"
        );
    }

    #[test]
    fn static_split_overload_is_a_warning() {
        let src = minimal().replace(
            "[[strategies]]",
            "[[servers]]\nname = \"slow\"\nspeed = 0.1\nservice = { dist = \"exponential\", mean = 0.05 }\n[[strategies]]",
        );
        let s = load(&src).unwrap();
        let w = s.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("slow"));
    }
}
