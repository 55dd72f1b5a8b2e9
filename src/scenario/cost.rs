//! What a run will cost, estimated before it starts, and the limits a scenario must fit.
//!
//! Two kinds of bound keep every input finite:
//! - **Per field** (the constants below): each value must be one the simulator can
//!   represent and step through — times within the nanosecond clock's range, intervals of
//!   recurring events no shorter than [`MIN_INTERVAL`], counts that fit the engine's
//!   indices. [`super::Scenario::load`] enforces them, so a file's validation costs time
//!   linear in its size whatever the numbers in it.
//! - **Per run** ([`Cost`]): the events a run will simulate (requests × replications ×
//!   strategies × sweep points, plus timers and scan costs) and the memory it will hold at
//!   once. `lbsim validate` and `lbsim run` print the estimate and refuse a run beyond
//!   [`Limits`] (`--max-events`, `--max-memory` raise them).

use crate::strategy::StrategySpec;
use crate::strategy::registry::{Scanned, Table};
use crate::workload::ArrivalSpec;

use super::Scenario;

/// Most servers in a scenario (all groups together, and at any sweep point).
pub const MAX_SERVERS: u64 = 100_000;
/// Most workers per server.
pub const MAX_WORKERS: u32 = 100_000;
/// Most client-side balancers.
pub const MAX_BALANCERS: u32 = 100_000;
/// Most persistent connections (`clients × pool_size`).
pub const MAX_CONNECTIONS: u64 = 10_000_000;
/// Most replications.
pub const MAX_REPLICATIONS: u32 = 1_000_000;
/// Most strategies in a scenario.
pub const MAX_STRATEGIES: usize = 1_000;
/// Most points of a sweep (the product of both lists with `[sweep.by]`).
pub const MAX_SWEEP_POINTS: usize = 1_000;
/// Longest time in a scenario (seconds, about 31 years): warm-up plus duration, fault
/// times, trace times and work. The simulated clock counts integer nanoseconds and covers
/// 584 years, so requests that start near the end still finish inside it.
pub const MAX_TIME: f64 = 1e9;
/// Shortest interval of a recurring event (seconds): load reports, connection lifetimes,
/// MMPP and on/off sojourns. Shorter ones would not advance the nanosecond clock, or would
/// flood the run with timer events.
pub const MIN_INTERVAL: f64 = 1e-6;
/// Largest trace file (bytes).
pub const MAX_TRACE_BYTES: u64 = 1 << 30;
/// Most candidates a sampling strategy draws per pick (`choice_count`).
pub const MAX_CHOICES: usize = 1_000;

/// Default of `--max-events`: about an hour of simulation on two cores (the engine runs
/// about 16 million events per second per core).
pub const DEFAULT_MAX_EVENTS: f64 = 1e11;
/// Default of `--max-memory` (bytes).
pub const DEFAULT_MAX_MEMORY: f64 = 4e9;

/// Bytes per request held in a queue or in service (job record and queue slot).
const JOB_BYTES: f64 = 64.0;
/// Bytes of one server's simulation state, without its jobs.
const SERVER_BYTES: f64 = 256.0;
/// Bytes of one backend's state in one balancer.
const BACKEND_BYTES: f64 = 96.0;
/// Bytes of one latency histogram (1 ns to about 73 minutes, 3 significant digits).
const HISTOGRAM_BYTES: f64 = 200_000.0;
/// Resident bytes a replication in progress holds per server for its response-time
/// histogram ([`crate::metrics::server_histogram`], up to
/// [`crate::metrics::MAX_SERVER_HISTOGRAMS`] servers): its counts grow as larger values
/// come, and the allocator keeps what the growth freed. Measured: one replication of
/// 10, 100 and 200 servers at 50% load (10 ms service) peaked at 15.8, 52.2 and 95.4 MB
/// (`/usr/bin/time -v lbsim run`, 2026-11-26): 0.41–0.43 MB a server.
const SERVER_HISTOGRAM_BYTES: f64 = 420_000.0;
/// Bytes a finished replication keeps per strategy (metric values, 100 batch sums) and per
/// server (its figures), beyond its compact distributions ([`cdf_bytes`]); allocator
/// overhead included (checked against a measurement in the tests below).
const RUN_BYTES: f64 = 3300.0;
const RUN_SERVER_BYTES: f64 = 64.0;

/// Bytes of one replication's compact distribution ([`crate::stats::quantile::Cdf`]) of
/// `values` values: 2–3 bytes per non-empty bucket, at most 128 buckets an octave (1,500
/// for twelve octaves, e.g. 0.1 ms to 0.4 s), plus its fixed part.
fn cdf_bytes(values: f64) -> f64 {
    130.0 + 2.5 * values.clamp(0.0, 1500.0)
}

/// A full scan of this many backends costs about one event (measured in
/// `benches/strategies.rs`: ~2.5 ns per backend against ~60 ns per event).
const BACKENDS_PER_EVENT: f64 = 25.0;

/// The estimated cost of a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    /// Requests per replication (expected), at the largest sweep point.
    pub requests: f64,
    /// Simulation events in the whole run (all strategies, replications and sweep
    /// points), scans of many backends counted as events.
    pub events: f64,
    /// Peak memory (bytes).
    pub memory: f64,
}

/// The most a run may cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Most events ([`Cost::events`]).
    pub max_events: f64,
    /// Most memory (bytes).
    pub max_memory: f64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_events: DEFAULT_MAX_EVENTS,
            max_memory: DEFAULT_MAX_MEMORY,
        }
    }
}

/// A run whose estimated cost exceeds the limits.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {what}\n  fix: {fix}", .scenario)]
pub struct CostError {
    /// The scenario (its file).
    pub scenario: String,
    /// What is too large.
    pub what: String,
    /// How to fix it.
    pub fix: String,
}

impl Cost {
    /// One line for people: `1.2e8 events, 35 MB`.
    pub fn describe(&self) -> String {
        format!(
            "about {} events ({} requests per replication), {} of memory",
            short(self.events),
            short(self.requests),
            bytes(self.memory)
        )
    }

    /// Refuses a cost beyond `limits`, with the fix. NaN counts as too large.
    pub fn check(&self, scenario: &str, limits: &Limits) -> Result<(), CostError> {
        if self.events.is_nan() || self.events > limits.max_events {
            return Err(CostError {
                scenario: scenario.to_string(),
                what: format!(
                    "the run would simulate {} events, above the limit of {}",
                    short(self.events),
                    short(limits.max_events)
                ),
                fix: "shorten `duration`, lower the arrival rate, use fewer replications, strategies or sweep points (or lengthen the shortest timer), or raise the limit with --max-events".into(),
            });
        }
        if self.memory.is_nan() || self.memory > limits.max_memory {
            return Err(CostError {
                scenario: scenario.to_string(),
                what: format!(
                    "the run would need about {} of memory, above the limit of {}",
                    bytes(self.memory),
                    bytes(limits.max_memory)
                ),
                fix: "use fewer servers, workers, balancers, connections or replications, smaller hash tables, fewer --threads, or a bounded `queue_capacity`; or raise the limit with --max-memory".into(),
            });
        }
        Ok(())
    }
}

fn short(v: f64) -> String {
    if v.is_finite() && v < 1e5 {
        format!("{v:.0}")
    } else {
        format!("{v:.1e}")
    }
}

fn bytes(v: f64) -> String {
    match v {
        v if !v.is_finite() => format!("{v}"),
        v if v < 1e6 => format!("{:.0} kB", v / 1e3),
        v if v < 1e9 => format!("{:.0} MB", v / 1e6),
        v => format!("{:.1} GB", v / 1e9),
    }
}

impl Scenario {
    /// The estimated cost of running this scenario with `replications` replications on
    /// `threads` threads (replications in progress at once), its sweep included.
    pub fn cost(&self, replications: u32, threads: usize) -> Cost {
        let reps = f64::from(replications);
        let concurrent = (threads.max(1) as f64).min(reps.max(1.0));
        let mut total = Cost {
            requests: 0.0,
            events: 0.0,
            memory: 0.0,
        };
        let points: Vec<Scenario> = match &self.sweep {
            None => vec![self.clone()],
            // The base run, then every point.
            Some(s) => {
                let mut base = self.clone();
                base.sweep = None;
                std::iter::once(base)
                    .chain((0..s.len()).map(|p| self.at_sweep_point(p)))
                    .collect()
            }
        };
        for p in &points {
            let one = p.replication_cost();
            total.requests = total.requests.max(one.requests);
            total.events += one.events * reps;
            // Replications in progress hold their state; finished ones keep summaries.
            let servers = p.server_count() as f64;
            // Each replication keeps the distributions of its response and waiting times
            // and of each server's response times (up to the servers that have one).
            let with_histogram = servers.min(crate::metrics::MAX_SERVER_HISTOGRAMS as f64);
            let per_run = RUN_BYTES
                + RUN_SERVER_BYTES * servers
                + 2.0 * cdf_bytes(one.requests)
                + with_histogram * cdf_bytes(one.requests / servers.max(1.0));
            let kept = reps * p.strategies.len() as f64 * per_run
                + p.strategies.len() as f64 * HISTOGRAM_BYTES;
            total.memory = total.memory.max(concurrent * one.memory + kept);
        }
        if self.warmup_auto && self.auto_warmup.is_none() {
            // The pilots of `warmup = "auto"` (crate::steady): every strategy over the
            // pilot lengths in the worst case.
            let mut pilot = self.clone();
            pilot.sweep = None;
            let windows: f64 = crate::steady::PILOT_LENGTHS.iter().sum();
            pilot.set_run_length(0.0, windows * self.duration);
            total.events += pilot.replication_cost().events * crate::steady::PILOTS as f64;
        }
        if let Some(t) = &self.workload.trace {
            let per = if t.work.is_some() { 16.0 } else { 8.0 };
            total.memory += per * t.times.len() as f64;
        }
        total
    }

    /// Servers in all groups.
    pub fn server_count(&self) -> u64 {
        self.groups.iter().map(|g| u64::from(g.count)).sum()
    }

    /// Events and memory of one replication of every strategy (memory: the largest
    /// strategy, since a replication runs its strategies one after the other).
    fn replication_cost(&self) -> Cost {
        // `warmup = "auto"` not chosen yet: at most twice the window (half of the
        // longest pilot).
        let horizon = if self.warmup_auto && self.auto_warmup.is_none() {
            let longest = crate::steady::PILOT_LENGTHS[crate::steady::PILOT_LENGTHS.len() - 1];
            (1.0 + longest / 2.0) * self.duration
        } else {
            self.end()
        };
        let n = self.server_count() as f64;
        let balancers = f64::from(self.balancers);
        let requests = match &self.workload.arrivals {
            ArrivalSpec::Trace { .. } => self
                .workload
                .trace
                .as_ref()
                .map_or(0.0, |t| t.times.len() as f64),
            // A heavy tail (Pareto with shape near 1) packs far more renewals into a
            // finite run than the mean rate says: count with the truncated mean.
            ArrivalSpec::Renewal { interarrival } => {
                horizon / truncated_mean(interarrival, horizon)
            }
            _ => self.mean_rate() * horizon,
        };
        // Draws that are not requests: thinning candidates and state switches.
        let process = match &self.workload.arrivals {
            // Thinning candidates, each looking its rate up among the points.
            ArrivalSpec::Piecewise { points, .. } => {
                points.iter().map(|p| p.rate).fold(0.0, f64::max)
                    * horizon
                    * (1.0 + points.len() as f64 / BACKENDS_PER_EVENT)
            }
            ArrivalSpec::Mmpp { mean_sojourn, .. } => {
                2.0 * horizon / (mean_sojourn[0] + mean_sojourn[1])
            }
            ArrivalSpec::OnOff {
                mean_on, mean_off, ..
            } => 2.0 * horizon / (mean_on + mean_off),
            _ => 0.0,
        };
        let slots = self
            .connections
            .as_ref()
            .map_or(0.0, |c| f64::from(c.clients) * f64::from(c.pool_size));
        let churn = self.connections.as_ref().map_or(0.0, |c| match c.lifetime {
            Some(l) => slots * horizon / l,
            None => 0.0,
        });
        let workers: f64 = self
            .groups
            .iter()
            .map(|g| f64::from(g.count) * f64::from(g.workers))
            .sum();
        let rate = self.mean_rate();
        let capacity = self.capacity();
        let mut cost = Cost {
            requests,
            events: 0.0,
            memory: 0.0,
        };
        for entry in &self.strategies {
            let spec = &entry.spec;
            // Requests held at once: everything that arrives beyond capacity when
            // overloaded (bounded by what the queues hold), else a few per worker.
            let backlog = if rate >= capacity {
                let attempts = rate * f64::from(max_attempts(entry.policy.as_ref()));
                let queues: f64 = self.groups.iter().map(|g| queue_bound(g, attempts)).sum();
                ((rate - capacity) * horizon).min(queues)
            } else {
                0.0
            };
            // Arrival and completion per request, plus the pick's scan.
            let picks = requests + slots + churn;
            let mut events = 2.0 * requests + process + churn + picks * scan_events(spec, n);
            if spec.reads_load_reports() {
                events += match self.load_report_interval {
                    // Each report publishes every server's load to every balancer.
                    Some(dt) => horizon / dt * (1.0 + n * balancers / BACKENDS_PER_EVENT),
                    None => 2.0 * requests * balancers / BACKENDS_PER_EVENT,
                };
            }
            if spec.reads().probes {
                // Each probe reaches its server and comes back (and, when probes cost
                // server time, ends its work): prequal's rate, else one per pick.
                let rate = spec
                    .params::<crate::strategy::Prequal>()
                    .map_or(1.0, |p| p.probe_rate);
                let per_probe = if self.probes.cost > 0.0 { 3.0 } else { 2.0 };
                events += picks * rate * per_probe;
            }
            cost.events += events;
            let memory = n * SERVER_BYTES
                + workers * JOB_BYTES
                + backlog * JOB_BYTES
                + slots * 32.0
                + balancers * (n * BACKEND_BYTES + table_bytes(spec, self))
                + 2.0 * HISTOGRAM_BYTES
                + n.min(crate::metrics::MAX_SERVER_HISTOGRAMS as f64) * SERVER_HISTOGRAM_BYTES;
            cost.memory = cost.memory.max(memory);
        }
        cost
    }
}

/// Most attempts a request makes under `policy` (retries or hedges), 1 without one.
fn max_attempts(policy: Option<&crate::policy::PolicySpec>) -> u32 {
    policy.map_or(1, |p| match (&p.retry, &p.hedge) {
        (Some(r), _) => r.max_attempts.max(1),
        (None, Some(h)) => h.max_attempts.max(1),
        (None, None) => 1,
    })
}

/// Most requests group `g`'s queues hold at once when attempts arrive at `attempts` per
/// second (all of them, at worst, to this group): its queues' capacity, or, where
/// admission control drops requests that waited too long, those that arrive over the
/// longest wait it lets through, whichever is smaller; unbounded otherwise (adaptive LIFO
/// alone drops nothing).
///
/// Drops happen as a worker frees (see [`super::AdmissionSpec`]), so a dropped request
/// may wait a little longer: one mean service time is added to the queue timeout (at
/// least one of the group's workers frees within about that under overload). Under
/// CoDel (folly's variant) a request that waited over twice `target` is dropped while
/// the queue is overloaded, which it learns at most an `interval` late.
fn queue_bound(g: &super::ServerGroup, attempts: f64) -> f64 {
    let capacity = f64::from(g.count) * g.queue_capacity.map_or(f64::INFINITY, f64::from);
    let wait = g.admission.map_or(f64::INFINITY, |a| {
        let timeout = a
            .queue_timeout
            .map_or(f64::INFINITY, |t| t + g.service.mean() / g.speed);
        let codel = a
            .codel
            .map_or(f64::INFINITY, |c| 2.0 * c.target + c.interval);
        timeout.min(codel)
    });
    capacity.min(attempts * wait)
}

/// `E[min(X, t)]` for `X ~ d`, by the trapezoid rule over the quantile function on a grid
/// of `1 − u` from 1e-16 to 1, geometric so that a heavy tail's far quantiles count.
/// For a renewal process, `t / E[min(X, t)]` is the order of the renewals in `[0, t]`
/// (Wald's identity bounds them by twice that), even where the mean is dominated by
/// values far beyond `t`.
fn truncated_mean(d: &crate::workload::Dist, t: f64) -> f64 {
    const STEPS: i32 = 400;
    let v = |k: i32| 10f64.powf(-16.0 * f64::from(k) / f64::from(STEPS));
    // v runs from 1 (k = 0) down to 1e-16; the quantile at u = 1 − v.
    let q = |v: f64| d.quantile((1.0 - v).clamp(1e-300, 1.0 - 1e-16)).min(t);
    let mut total = 0.0;
    for k in 0..STEPS {
        let (a, b) = (v(k), v(k + 1));
        total += 0.5 * (q(a) + q(b)) * (a - b);
    }
    // Above u = 1 − 1e-16 the value is at most t.
    total += 1e-16 * t;
    total
}

/// Events' worth of work a strategy spends per pick beyond the pick itself.
fn scan_events(spec: &StrategySpec, n: f64) -> f64 {
    match spec.cost().scanned {
        Scanned::All => n / BACKENDS_PER_EVENT,
        Scanned::Few(k) => k as f64 / BACKENDS_PER_EVENT,
    }
}

/// Bytes of a strategy's lookup table in one balancer (hash rings, Maglev tables).
fn table_bytes(spec: &StrategySpec, s: &Scenario) -> f64 {
    let ring = |min_ring: u64, max_ring: u64| {
        // Envoy's sizing (`strategy::hash::Ring::build`): the smallest weight share gets
        // ceil(share × min) points, scaled up for the others, at most `max`.
        let total: f64 = s
            .groups
            .iter()
            .map(|g| f64::from(g.count) * f64::from(g.weight))
            .sum();
        let min_w = s
            .groups
            .iter()
            .filter(|g| g.weight > 0)
            .map(|g| f64::from(g.weight) / total)
            .fold(f64::INFINITY, f64::min);
        let scale = if min_w.is_finite() {
            ((min_w * min_ring as f64).ceil() / min_w).min(max_ring as f64)
        } else {
            0.0
        };
        16.0 * (scale + s.server_count() as f64)
    };
    match spec.cost().table {
        Some(Table::Ring {
            min_points,
            max_points,
        }) => ring(min_points, max_points),
        Some(Table::Slots(slots)) => 8.0 * slots as f64,
        None => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::scenario::Scenario;
    use crate::testing;

    #[test]
    fn the_memory_estimate_covers_what_a_replication_keeps() {
        // 4 one-worker servers, 120 requests a replication, one strategy.
        let head = "name = \"mem\"\nseed = 7\nreplications = 10\nduration = 0.5\nwarmup = 0.1";
        let rest = testing::servers("s", 4, "", &testing::exponential(0.01))
            + &testing::kinds(&["least_connections"]);
        let s = testing::scenario(head, 200.0, &rest);
        let per_replication =
            (s.cost(100_000, 2).memory - s.cost(1_000, 2).memory) / f64::from(99_000);
        // `lbsim run` of this scenario peaked at 50.4 MB RSS with 10,000 replications and
        // 383.8 MB with 100,000 (/usr/bin/time -v, 2026-11-26): 3.70 kB a replication,
        // summaries, distributions and allocator overhead included (5.2 kB before the
        // runner stopped copying them at the end of a run). The estimate it had before,
        // 592 bytes, let runs 6–9 times larger than announced past `--max-memory`.
        assert!(
            (3_700.0..10_000.0).contains(&per_replication),
            "{per_replication} bytes a replication"
        );
        // A million of them are refused at the default limit (4 GB).
        assert!(s.cost(1_000_000, 2).memory > super::DEFAULT_MAX_MEMORY);
    }

    /// Twice the capacity for ten minutes: with queues of a million requests a server, 6
    /// million requests pile up, unless admission control drops them (validation refuses
    /// an overload that nothing bounds).
    fn overloaded(queues: &str, policy: &str) -> Scenario {
        let src = format!(
            r#"
duration = 600
warmup = 0
replications = 1
[arrivals]
process = "poisson"
rate = 20000
[[servers]]
name = "s"
count = 100
service = {{ dist = "exponential", mean = 0.01 }}
{queues}
[[strategies]]
kind = "round_robin"
{policy}
"#
        );
        Scenario::from_source(Path::new("over.toml"), &src).unwrap()
    }

    #[test]
    fn admission_control_bounds_the_backlog_of_an_overload() {
        let job = super::JOB_BYTES;
        let memory = |queues: &str, policy: &str| overloaded(queues, policy).cost(1, 1).memory;
        let deep = "queue_capacity = 1000000\n";
        let grown = memory(deep, "");
        // (20,000 − 10,000)/s × 600 s held at once.
        assert!(grown > 6e6 * job, "{grown}");
        let timeout = memory(
            &format!("{deep}[servers.admission]\nqueue_timeout = 0.1"),
            "",
        );
        // 20,000/s × (100 ms + one 10 ms service).
        let held = (grown - timeout) / job;
        assert!((6e6 - 2_200.0 - held).abs() < 1.0, "{held}");
        // Retries multiply the attempts that may wait.
        let retried = memory(
            &format!("{deep}[servers.admission]\nqueue_timeout = 0.1"),
            "[strategies.policy.retry]\nmax_attempts = 3",
        );
        let more = (retried - timeout) / job;
        assert!((more - 2.0 * 2_200.0).abs() < 1.0, "{more}");
        // CoDel: 20,000/s × (2 × 5 ms + 100 ms), its defaults.
        let codel = memory(&format!("{deep}[servers.admission]\ncodel = {{}}"), "");
        assert!(((codel - timeout) / job).abs() < 1.0);
        // Queues tighter than the timeout win; adaptive LIFO drops nothing.
        let small = memory(
            "queue_capacity = 10\n[servers.admission]\nqueue_timeout = 0.1",
            "",
        );
        assert!(((small - timeout) / job + 2_200.0 - 1_000.0).abs() < 1.0);
        let lifo = memory(
            &format!("{deep}[servers.admission]\nadaptive_lifo = {{}}"),
            "",
        );
        assert_eq!(lifo, grown);
    }
}
