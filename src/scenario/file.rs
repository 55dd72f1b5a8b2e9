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
    /// Simulated time discarded before measuring: seconds, or `"auto"` to choose it from
    /// pilot runs ([`crate::steady::choose_warmup`]).
    #[serde(default)]
    pub warmup: WarmupSetting,
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
    /// One parameter, or a grid of two, varied over lists of values (see [`super::sweep`]).
    #[serde(default)]
    pub sweep: Option<super::sweep::SweepFile>,
    /// Connection-level (L4) balancing: clients hold persistent connections and the
    /// strategy picks a server per connection. Absent: request-level balancing.
    #[serde(default)]
    pub connections: Option<ConnectionSpec>,
    /// Faults injected during the run.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// How probes of strategies that send them travel and what they cost servers.
    #[serde(default)]
    pub probes: Option<ProbeSpec>,
    /// A Kubernetes HPA-style control loop scaling one server group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerSpec>,
}

/// `[autoscaler]`: the Kubernetes Horizontal Pod Autoscaler's loop over one group, whose
/// `count` is the maximum number of replicas. Defaults are Kubernetes' (see
/// <https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/>).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscalerSpec {
    /// The group scaled.
    pub group: String,
    /// Target mean utilisation of its servers' workers, in (0, 1].
    pub target: f64,
    /// Fewest replicas (`minReplicas`, default 1).
    #[serde(default)]
    pub min_replicas: Option<u32>,
    /// Replicas at the start of the run (default `min_replicas`).
    #[serde(default)]
    pub initial: Option<u32>,
    /// Seconds between two decisions (`--horizontal-pod-autoscaler-sync-period`, 15).
    #[serde(default)]
    pub sync_period: Option<f64>,
    /// No change while |utilisation / target − 1| is at most this
    /// (`--horizontal-pod-autoscaler-tolerance`, 0.1).
    #[serde(default)]
    pub tolerance: Option<f64>,
    /// Scale-down stabilisation window, seconds (`behavior.scaleDown.stabilizationWindowSeconds`,
    /// 300): the largest recommendation of the window is used.
    #[serde(default)]
    pub stabilization: Option<f64>,
    /// Seconds from a scale-up decision until the new server is ready and joins (pod
    /// scheduling, image pull, start-up, readiness probe; default 10).
    #[serde(default)]
    pub startup: Option<f64>,
    /// Cold start of new servers: seconds to warm up (absent: they join warm).
    #[serde(default)]
    pub warmup: Option<f64>,
    /// Fraction of its speed a new server starts at (with `warmup`, default 0.1).
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Longest drain of a server scaled in (default 30 s).
    #[serde(default)]
    pub drain_timeout: Option<f64>,
}

/// Probes (`[probes]`): out-of-band questions a strategy (prequal) sends servers about
/// their load. Absent: probes are answered at once and cost servers nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    /// Round trip of a probe (seconds): the server answers after half of it, and the
    /// balancer reads the answer after the other half. Default 0.
    #[serde(default)]
    pub delay: f64,
    /// Server time one probe takes (seconds of work at speed 1): it occupies a worker, and
    /// waits behind requests when every worker is busy. Default 0: free.
    #[serde(default)]
    pub cost: f64,
}

/// `warmup` as written: a number of seconds or the word `"auto"`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WarmupSetting {
    /// Seconds of simulated time discarded before measuring.
    Seconds(f64),
    /// Chosen from the data (MSER on pilot runs' batch means).
    Auto,
}

impl Default for WarmupSetting {
    fn default() -> WarmupSetting {
        WarmupSetting::Seconds(0.0)
    }
}

impl Serialize for WarmupSetting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WarmupSetting::Seconds(v) => s.serialize_f64(*v),
            WarmupSetting::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for WarmupSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WarmupSetting, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = WarmupSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of seconds (e.g. `warmup = 5`) or `warmup = \"auto\"`")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<WarmupSetting, E> {
                Ok(WarmupSetting::Seconds(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<WarmupSetting, E> {
                Ok(WarmupSetting::Seconds(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<WarmupSetting, E> {
                Ok(WarmupSetting::Seconds(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WarmupSetting, E> {
                if v == "auto" {
                    Ok(WarmupSetting::Auto)
                } else {
                    Err(E::custom(format!(
                        "`{v}` is neither a number of seconds nor \"auto\": write e.g. `warmup = 5` (seconds) or `warmup = \"auto\"` (chosen from the data)"
                    )))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Persistent connections (`[connections]`), as behind an L4 proxy (nginx `stream`, HAProxy
/// `mode tcp`, kube-proxy).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSpec {
    /// Number of clients; arrivals are split uniformly among them.
    pub clients: u32,
    /// Connections each client holds; its requests use them in turn.
    #[serde(default = "one")]
    pub pool_size: u32,
    /// Mean connection lifetime (seconds, exponential); a closed connection is reopened at
    /// once and the strategy picks its server again. Absent: connections last the whole run.
    #[serde(default)]
    pub lifetime: Option<f64>,
}

/// What goes wrong in a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The server crashes: requests it holds fail, new ones are refused until it recovers.
    Crash,
    /// The server serves `factor` times slower.
    Slow,
    /// The server answers a `fraction` of requests (all by default) with an error after
    /// `error_latency`, without serving them: a black hole that fails fast, or with
    /// `status = "rejected"` a rate limiter answering "429".
    Error,
    /// Stop-the-world pauses (garbage collection): every `interval` (a distribution) the
    /// server stalls for `pause` (a distribution); work in progress stalls with it.
    Pause,
    /// Cold start: the server's speed drops to `fraction` of its own and warms up linearly
    /// back to it over `warmup` seconds (JIT compilation, empty caches, connection pools).
    Cold,
    /// The server is absent from the start of the run until `at` (scale out), then joins,
    /// cold when `warmup` is set; with `duration` it leaves again, draining.
    Join,
    /// The server leaves at `at` (scale in): balancers stop sending to it, the requests it
    /// holds finish (drain, at most `drain_timeout`); with `duration` it joins again.
    Leave,
    /// A rolling deploy over the servers named: one at a time, each is drained, down for
    /// `restart` seconds and back (cold when `warmup` is set), before the next one starts.
    Deploy,
    /// Network delay: every answer of the server reaches its client `delay` seconds later
    /// (an added round trip).
    Delay,
    /// The server cannot be reached: a connection attempt fails after `connect_timeout`;
    /// health checks mark it down after `detection`.
    Unreachable,
}

impl FaultKind {
    /// The kind as written in a scenario file (`kind = "..."`).
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::Slow => "slow",
            FaultKind::Error => "error",
            FaultKind::Pause => "pause",
            FaultKind::Cold => "cold",
            FaultKind::Join => "join",
            FaultKind::Leave => "leave",
            FaultKind::Deploy => "deploy",
            FaultKind::Delay => "delay",
            FaultKind::Unreachable => "unreachable",
        }
    }

    /// Whether `lbsim live` injects this kind into the backends it starts (`None`), or why
    /// not. Each kind says so here, so a new kind cannot be forgotten by live mode.
    pub fn live_refusal(self) -> Option<&'static str> {
        match self {
            FaultKind::Crash
            | FaultKind::Slow
            | FaultKind::Error
            | FaultKind::Pause
            | FaultKind::Cold
            | FaultKind::Join
            | FaultKind::Leave
            | FaultKind::Deploy
            | FaultKind::Delay
            | FaultKind::Unreachable => None,
        }
    }
}

/// How a fail-fast error is answered (`status` of an `error` fault).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorStatus {
    /// A server error ("5xx", Thrift `TApplicationException`): counted in `error_fraction`.
    #[default]
    Failed,
    /// A refusal ("429 Too Many Requests", "503 overloaded"): counted in
    /// `rejected_fraction`.
    Rejected,
}

/// A fault (`[[faults]]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// A server (`<group>-<i>`) or a whole group (`<group>`).
    pub server: String,
    /// What happens.
    pub kind: FaultKind,
    /// When it starts (seconds from the start of the run, warm-up included).
    pub at: f64,
    /// How long it lasts (seconds); absent: until the end of the run.
    #[serde(default)]
    pub duration: Option<f64>,
    /// For `slow`: service takes `factor` times longer.
    #[serde(default)]
    pub factor: Option<f64>,
    /// For `crash`: seconds until balancers' health checks mark the server down (and, after
    /// recovery, up again). Default 0: at once.
    #[serde(default)]
    pub detection: f64,
    /// For `error`: the fraction of requests answered with an error (0 to 1). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// For `error`: seconds until the error answer. Default 0.001.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_latency: Option<f64>,
    /// For `error`: `"failed"` (default) or `"rejected"` (a 429-style refusal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ErrorStatus>,
    /// For `pause`: time from the end of one pause to the start of the next (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Dist>,
    /// For `pause`: how long each pause lasts (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Dist>,
    /// Cold start (seconds over which the speed rises linearly from `fraction` of the
    /// server's own to all of it): required for `cold`; for `join`, `leave`, `deploy` and
    /// `crash`, the servers come back cold when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<f64>,
    /// For `join`, `leave` and `deploy`: seconds a leaving server may take to finish what it
    /// holds (Kubernetes `terminationGracePeriodSeconds`, default 30); what is left then fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<f64>,
    /// For `deploy`: seconds each server is down between its drain and its return (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<f64>,
    /// For `delay`: seconds added to the round trip of every request the server answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<f64>,
    /// For `unreachable`: seconds until a connection attempt fails (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<f64>,
}

/// A group of identical servers (`[[servers]]`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
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
    /// Server-side admission control of the group's queues (`[servers.admission]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<AdmissionSpec>,
}

// By hand, to name `admission` only when set: scenario fingerprints hash this text, and
// those of groups without admission control stay what they were before it existed.
impl std::fmt::Debug for ServerGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("ServerGroup");
        d.field("name", &self.name)
            .field("count", &self.count)
            .field("workers", &self.workers)
            .field("speed", &self.speed)
            .field("queue_capacity", &self.queue_capacity)
            .field("weight", &self.weight)
            .field("service", &self.service);
        if let Some(a) = &self.admission {
            d.field("admission", a);
        }
        d.finish()
    }
}

/// `[servers.admission]`: what a server does with requests that wait in its queue, as
/// servers shed load they cannot serve in time. Each part is optional; at least one is
/// set. Applied when a worker frees and takes its next request (as Thrift and Finagle
/// servers check a queued task's deadline when they dequeue it), so a dropped request
/// stays in the queue until then.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionSpec {
    /// Queue timeout (seconds): a request that waited longer is dropped — answered at
    /// once with a refusal instead of being served (Finagle's and gRPC's server-side
    /// deadline, Thrift's task expiration; "Fail at Scale" (Maurer, ACM Queue 13(8),
    /// 2015): drop work its client has given up on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<f64>,
    /// CoDel (`codel = { target, interval }`), in the variant Facebook runs (folly's
    /// `Codel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codel: Option<CodelSpec>,
    /// Adaptive LIFO (`adaptive_lifo = { after }`): newest first while the queue is
    /// congested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_lifo: Option<LifoSpec>,
}

impl AdmissionSpec {
    /// Whether it drops requests that wait too long, which bounds the queue under
    /// overload (adaptive LIFO alone reorders, it drops nothing).
    pub fn drops(&self) -> bool {
        self.queue_timeout.is_some() || self.codel.is_some()
    }
}

/// CoDel's parameters (Nichols & Jacobson, "Controlling Queue Delay", ACM Queue 10(5),
/// 2012), as folly's `Codel` uses them: the queue is overloaded over an interval when no
/// request of the previous interval waited less than `target`; while it is, requests that
/// waited more than twice `target` are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodelSpec {
    /// Acceptable standing queue delay (seconds). Default 0.005 (folly
    /// `codel_target_delay`, 5 ms).
    #[serde(default = "codel_target")]
    pub target: f64,
    /// Window over which the smallest queue delay is tracked (seconds). Default 0.1
    /// (folly `codel_interval`, 100 ms).
    #[serde(default = "codel_interval")]
    pub interval: f64,
}

/// Adaptive LIFO ("Fail at Scale"): first in, first out while the queue drains; once it
/// has not been empty for `after`, the newest request is served first, as it is the one
/// most likely still awaited.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifoSpec {
    /// Seconds the queue must have been non-empty before service turns newest first.
    /// Default 0.1 (the 100 ms of "Fail at Scale"'s controlled delay).
    #[serde(default = "codel_interval")]
    pub after: f64,
}

fn codel_target() -> f64 {
    0.005
}
fn codel_interval() -> f64 {
    0.1
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
