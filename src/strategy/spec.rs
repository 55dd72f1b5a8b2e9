//! Strategies as written in scenario files (`[[strategies]]`), the catalogue that
//! `lbsim strategies` prints, and construction of a running [`Strategy`].

use serde::{Deserialize, Serialize};

use super::{
    Aperture, ApertureConfig, BoundedLoadHash, EdfWeightedRoundRobin, First,
    GrpcWeightedRoundRobin, GrpcWrrConfig, JoinIdleQueue, LeastConnections, LeastRequest,
    LeastResponseTime, Leastconn, Maglev, PeakEwmaP2c, PowerOfD, RandomChoice, RingHash,
    RoundRobin, ShortestQueue, SmoothWeightedRoundRobin, StaticRr, Strategy, WeightedRandom,
};
use crate::rng::SimRng;
use crate::time::Nanos;

/// One `[[strategies]]` entry: a label and the strategy with its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StrategyEntry {
    /// Name used in reports; defaults to the kind.
    #[serde(default)]
    pub label: Option<String>,
    /// The strategy and its parameters.
    #[serde(flatten)]
    pub spec: StrategySpec,
    /// The client policy of every balancer running this entry (`[strategies.policy]`):
    /// timeouts, retries, budgets, hedging. Absent: none (one attempt, no timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::PolicySpec>,
}

impl StrategyEntry {
    /// The label used in reports.
    pub fn label(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| self.spec.kind().to_string())
    }
}

/// A strategy and its parameters (`kind = "..."` in a scenario file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StrategySpec {
    /// See [`RoundRobin`].
    RoundRobin,
    /// See [`SmoothWeightedRoundRobin`].
    #[serde(alias = "weighted_round_robin")]
    SmoothWeightedRoundRobin,
    /// See [`LeastConnections`].
    LeastConnections {
        /// Compare `in_flight / weight` (nginx `least_conn` with weights). Default false.
        #[serde(default)]
        weighted: bool,
    },
    /// See [`RandomChoice`].
    Random,
    /// See [`WeightedRandom`].
    WeightedRandom,
    /// See [`PowerOfD`]: `d` random candidates, the one with the fewest in flight.
    PowerOfD {
        /// Candidates per pick (1 ≤ d ≤ backends). Default 2.
        #[serde(default = "two")]
        d: usize,
        /// Draw candidates with replacement (Envoy, gRPC) rather than distinct (Finagle,
        /// tower, Linkerd). Default false.
        #[serde(default)]
        replacement: bool,
    },
    /// See [`LeastRequest`] (Envoy `LEAST_REQUEST`).
    LeastRequest {
        /// Hosts drawn per pick with equal weights (≥ 2). Default 2.
        #[serde(default = "two")]
        choice_count: usize,
        /// Exponent of `(active + 1)` dividing the weight with unequal weights. Default 1.0.
        #[serde(default = "one_f64")]
        active_request_bias: f64,
    },
    /// See [`PeakEwmaP2c`] (Finagle `p2cPeakEwma`, tower `PeakEwma`).
    PeakEwma {
        /// Decay time of the RTT estimate, seconds. Default 10 (Finagle).
        #[serde(default = "ten")]
        decay_time: f64,
        /// RTT estimate before the first sample, seconds. Default 0.030 (Linkerd).
        #[serde(default = "default_rtt")]
        default_rtt: f64,
    },
    /// See [`ShortestQueue`]: join the shortest queue.
    Jsq {
        /// Pick among tied backends with one draw from an index of the queues kept as the
        /// view changes (O(1) per pick), rather than by reservoir sampling over a full scan
        /// (the default). Same distribution, other draws. Default false.
        #[serde(default, skip_serializing_if = "is_false")]
        indexed: bool,
    },
    /// See [`LeastResponseTime`] (NGINX Plus `least_time`-like).
    LeastResponseTime {
        /// EWMA smoothing factor of latencies, in (0, 1]. Default 0.1.
        #[serde(default = "alpha")]
        alpha: f64,
    },
    /// See [`JoinIdleQueue`] (Lu et al. 2011).
    Jiq,
    /// See [`RingHash`] (Ketama / Envoy `RING_HASH`).
    RingHash {
        /// Fewest points on the ring. Default 1024 (Envoy).
        #[serde(default = "min_ring_size")]
        min_ring_size: u64,
        /// Most points on the ring. Default 8388608 (Envoy).
        #[serde(default = "max_ring_size")]
        max_ring_size: u64,
    },
    /// See [`Maglev`] (Envoy `MAGLEV`).
    Maglev {
        /// Lookup table size, a prime. Default 65537 (Envoy).
        #[serde(default = "table_size")]
        table_size: u64,
    },
    /// See [`BoundedLoadHash`] (HAProxy `hash-balance-factor`).
    BoundedLoadHash {
        /// Most load a server may take, in percent of the average (> 100). Default 125.
        #[serde(default = "balance_factor")]
        hash_balance_factor: u32,
        /// Fewest points on the ring. Default 1024.
        #[serde(default = "min_ring_size")]
        min_ring_size: u64,
    },
    /// See [`First`] (HAProxy `balance first`).
    First {
        /// Requests each server takes before the next one is used. Default: the server's
        /// reported worker count.
        #[serde(default)]
        maxconn: Option<u32>,
    },
    /// See [`EdfWeightedRoundRobin`] (Envoy `ROUND_ROBIN` with weights).
    EdfWrr,
    /// See [`GrpcWeightedRoundRobin`] (gRPC `weighted_round_robin`, gRFC A58).
    GrpcWrr {
        /// Seconds between weight recomputations (≥ 0.1). Default 1.
        #[serde(default = "one_f64")]
        weight_update_period: f64,
        /// Seconds a backend must report load before its weight counts. Default 10.
        #[serde(default = "ten")]
        blackout_period: f64,
        /// Seconds a weight stays valid without a new report. Default 180.
        #[serde(default = "expiration")]
        weight_expiration_period: f64,
    },
    /// See [`Leastconn`] (HAProxy `balance leastconn`).
    Leastconn {
        /// Use the backends' weights; false counts every weight as 1. Default false.
        #[serde(default)]
        weighted: bool,
    },
    /// See [`StaticRr`] (HAProxy `balance static-rr`).
    StaticRr,
    /// See [`Aperture`] (Finagle aperture).
    Aperture {
        /// Narrow the aperture at or below this load per member. Default 0.5.
        #[serde(default = "low_load")]
        low_load: f64,
        /// Widen the aperture at or above this load per member. Default 2.0.
        #[serde(default = "high_load")]
        high_load: f64,
        /// Smallest aperture. Default 1.
        #[serde(default = "one_usize")]
        min_aperture: usize,
        /// Time constant of the load average, seconds. Default 5 (Finagle).
        #[serde(default = "smooth_win")]
        smooth_win: f64,
    },
}

fn is_false(b: &bool) -> bool {
    !b
}
fn two() -> usize {
    2
}
fn one_usize() -> usize {
    1
}
fn one_f64() -> f64 {
    1.0
}
fn ten() -> f64 {
    10.0
}
fn default_rtt() -> f64 {
    0.030
}
fn alpha() -> f64 {
    0.1
}
fn min_ring_size() -> u64 {
    1024
}
fn max_ring_size() -> u64 {
    8 << 20
}
fn table_size() -> u64 {
    65537
}
fn balance_factor() -> u32 {
    125
}
fn expiration() -> f64 {
    180.0
}
fn low_load() -> f64 {
    0.5
}
fn high_load() -> f64 {
    2.0
}
fn smooth_win() -> f64 {
    5.0
}

/// A strategy parameter the simulator cannot use.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("`{field}`: {problem} (fix: {fix})")]
pub struct SpecError {
    /// The parameter, as written in the scenario file.
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

fn bad(field: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> SpecError {
    SpecError {
        field,
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Longest time a strategy parameter may be (seconds): the scenario's longest run
/// ([`crate::scenario::cost::MAX_TIME`]).
const MAX_SECONDS: f64 = crate::scenario::cost::MAX_TIME;

fn seconds(field: &'static str, v: f64, zero_ok: bool) -> Result<(), SpecError> {
    if v.is_finite() && v <= MAX_SECONDS && (v > 0.0 || (zero_ok && v == 0.0)) {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("is {v}"),
            format!(
                "give `{field}` in seconds, {} and at most {MAX_SECONDS:e}",
                if zero_ok {
                    "0 or more"
                } else {
                    "greater than 0"
                }
            ),
        ))
    }
}

fn is_prime(m: u64) -> bool {
    m >= 2
        && (2..)
            .take_while(|d| d * d <= m)
            .all(|d| !m.is_multiple_of(d))
}

/// What `lbsim strategies` prints about one strategy kind.
#[derive(Clone, Copy, Debug)]
pub struct StrategyInfo {
    /// The `kind` to write in a scenario file.
    pub kind: &'static str,
    /// Parameters with their defaults.
    pub params: &'static str,
    /// The system whose published semantics it follows.
    pub follows: &'static str,
    /// Whether it uses backend weights.
    pub weighted: bool,
}

/// Every strategy kind lbsim knows. `params` gives each parameter's default *with its
/// unit* (seconds are written `s`; a scenario file gives the bare number).
pub const CATALOGUE: &[StrategyInfo] = &[
    StrategyInfo {
        kind: "round_robin",
        params: "",
        follows: "nginx / HAProxy roundrobin with equal weights",
        weighted: false,
    },
    StrategyInfo {
        kind: "smooth_weighted_round_robin",
        params: "",
        follows: "nginx smooth weighted round robin (upstream default)",
        weighted: true,
    },
    StrategyInfo {
        kind: "least_connections",
        params: "weighted = false",
        follows: "nginx least_conn (ties by weighted round robin)",
        weighted: false,
    },
    StrategyInfo {
        kind: "random",
        params: "",
        follows: "Envoy RANDOM / HAProxy random, equal weights",
        weighted: false,
    },
    StrategyInfo {
        kind: "weighted_random",
        params: "",
        follows: "HAProxy random with weights",
        weighted: true,
    },
    StrategyInfo {
        kind: "power_of_d",
        params: "d = 2 (backends sampled), replacement = false",
        follows: "power of d choices, fewest in flight: Finagle/tower/Linkerd (distinct), Envoy/gRPC (replacement)",
        weighted: false,
    },
    StrategyInfo {
        kind: "least_request",
        params: "choice_count = 2 (backends sampled), active_request_bias = 1.0 (exponent)",
        follows: "Envoy LEAST_REQUEST (P2C with replacement; weight/(active+1)^bias EDF if weights differ)",
        weighted: true,
    },
    StrategyInfo {
        kind: "peak_ewma",
        params: "decay_time = 10 s, default_rtt = 0.030 s",
        follows: "Finagle p2cPeakEwma / tower PeakEwma / Linkerd: P2C on rtt estimate x (in flight + 1)",
        weighted: false,
    },
    StrategyInfo {
        kind: "jsq",
        params: "indexed = false",
        follows: "join the shortest queue: full scan of server-reported queue (else in flight), random ties (indexed: O(1) picks, other draws)",
        weighted: false,
    },
    StrategyInfo {
        kind: "least_response_time",
        params: "alpha = 0.1 (EWMA weight of each new latency, in (0, 1])",
        follows: "NGINX Plus least_time-like: lowest EWMA latency x (in flight + 1), full scan",
        weighted: false,
    },
    StrategyInfo {
        kind: "jiq",
        params: "",
        follows: "join the idle queue (Lu et al. 2011): idle servers first, else random",
        weighted: false,
    },
    StrategyInfo {
        kind: "ring_hash",
        params: "min_ring_size = 1024 points, max_ring_size = 8388608 points",
        follows: "Ketama / Envoy RING_HASH on the request key",
        weighted: true,
    },
    StrategyInfo {
        kind: "maglev",
        params: "table_size = 65537 entries (a prime)",
        follows: "Maglev (NSDI 2016) / Envoy MAGLEV on the request key",
        weighted: true,
    },
    StrategyInfo {
        kind: "bounded_load_hash",
        params: "hash_balance_factor = 125 (% of the mean load a server may take), min_ring_size = 1024 points",
        follows: "HAProxy hash-balance-factor: consistent hashing with bounded loads",
        weighted: true,
    },
    StrategyInfo {
        kind: "first",
        params: "maxconn = workers (requests in flight per server)",
        follows: "HAProxy balance first: fill servers in order up to maxconn",
        weighted: false,
    },
    StrategyInfo {
        kind: "edf_wrr",
        params: "",
        follows: "Envoy ROUND_ROBIN with weights (EDF schedule)",
        weighted: true,
    },
    StrategyInfo {
        kind: "grpc_wrr",
        params: "weight_update_period = 1 s, blackout_period = 10 s, weight_expiration_period = 180 s",
        follows: "gRPC weighted_round_robin (gRFC A58): weight = qps / utilization from server reports",
        weighted: false,
    },
    StrategyInfo {
        kind: "aperture",
        params: "low_load = 0.5, high_load = 2.0 (requests in flight per backend in the aperture), min_aperture = 1 backend, smooth_win = 5 s",
        follows: "Finagle aperture (deterministic window, P2C least loaded inside)",
        weighted: false,
    },
    StrategyInfo {
        kind: "leastconn",
        params: "weighted = false",
        follows: "HAProxy balance leastconn (idle first, then (conns+1)/weight; ties to the least recently re-queued)",
        weighted: false,
    },
    StrategyInfo {
        kind: "static_rr",
        params: "",
        follows: "HAProxy balance static-rr (HAProxy's static weighted map, walked in a circle)",
        weighted: true,
    },
];

impl StrategySpec {
    /// Parameters of `kind` left out of its serialized form at their default value
    /// (`skip_serializing_if`), so that scenario validation still knows them.
    pub fn optional_keys(kind: &str) -> &'static [&'static str] {
        match kind {
            "jsq" => &["indexed"],
            _ => &[],
        }
    }

    /// The strategy of kind `kind` with every parameter at its default, as a scenario file
    /// with only `kind = "..."` gives it; `None` for an unknown kind.
    pub fn with_defaults(kind: &str) -> Option<StrategySpec> {
        toml::from_str(&format!("kind = \"{kind}\"")).ok()
    }

    /// The `kind` string of this strategy.
    pub fn kind(&self) -> &'static str {
        match self {
            StrategySpec::RoundRobin => "round_robin",
            StrategySpec::SmoothWeightedRoundRobin => "smooth_weighted_round_robin",
            StrategySpec::LeastConnections { .. } => "least_connections",
            StrategySpec::Random => "random",
            StrategySpec::WeightedRandom => "weighted_random",
            StrategySpec::PowerOfD { .. } => "power_of_d",
            StrategySpec::LeastRequest { .. } => "least_request",
            StrategySpec::PeakEwma { .. } => "peak_ewma",
            StrategySpec::Jsq { .. } => "jsq",
            StrategySpec::LeastResponseTime { .. } => "least_response_time",
            StrategySpec::Jiq => "jiq",
            StrategySpec::RingHash { .. } => "ring_hash",
            StrategySpec::Maglev { .. } => "maglev",
            StrategySpec::BoundedLoadHash { .. } => "bounded_load_hash",
            StrategySpec::First { .. } => "first",
            StrategySpec::EdfWrr => "edf_wrr",
            StrategySpec::GrpcWrr { .. } => "grpc_wrr",
            StrategySpec::Aperture { .. } => "aperture",
            StrategySpec::Leastconn { .. } => "leastconn",
            StrategySpec::StaticRr => "static_rr",
        }
    }

    /// Whether the strategy's long-run traffic split is fixed by weights alone: then
    /// returns each backend's expected share, used to warn about overloaded groups.
    /// Adaptive strategies (least connections, ...) return `None`.
    pub fn static_shares(&self, weights: &[u32]) -> Option<Vec<f64>> {
        let n = weights.len() as f64;
        match self {
            StrategySpec::RoundRobin | StrategySpec::Random => Some(vec![1.0 / n; weights.len()]),
            StrategySpec::SmoothWeightedRoundRobin
            | StrategySpec::WeightedRandom
            | StrategySpec::EdfWrr
            | StrategySpec::StaticRr => {
                let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
                Some(weights.iter().map(|&w| f64::from(w) / total).collect())
            }
            // Adaptive, or (hashing) decided by the keys.
            _ => None,
        }
    }

    /// Whether the strategy reads servers' load reports ([`super::Backend::load`]). The
    /// simulator maintains reports only for those that do.
    pub fn reads_load_reports(&self) -> bool {
        matches!(
            self,
            StrategySpec::Jsq { .. } | StrategySpec::First { .. } | StrategySpec::GrpcWrr { .. }
        )
    }

    /// Whether the strategy wants the simulator's table of load reports indexed by queue
    /// length ([`super::LoadTable::with_queue_index`]): indexed JSQ.
    pub fn indexes_load_reports(&self) -> bool {
        matches!(self, StrategySpec::Jsq { indexed: true })
    }

    /// Whether the strategy reads backend weights.
    pub fn uses_weights(&self) -> bool {
        match self {
            StrategySpec::LeastConnections { weighted } | StrategySpec::Leastconn { weighted } => {
                *weighted
            }
            other => CATALOGUE
                .iter()
                .any(|info| info.kind == other.kind() && info.weighted),
        }
    }

    /// Checks the parameters for a cluster of `n` backends.
    pub fn validate(&self, n: usize) -> Result<(), SpecError> {
        match *self {
            StrategySpec::PowerOfD { d, .. } if d == 0 || d > n => Err(bad(
                "d",
                format!("is {d} with {n} backends"),
                format!("use 1 ≤ d ≤ {n} (2 is the classic power of two choices)"),
            )),
            StrategySpec::LeastRequest {
                choice_count,
                active_request_bias,
            } => {
                let most = crate::scenario::cost::MAX_CHOICES;
                if !(2..=most).contains(&choice_count) {
                    return Err(bad(
                        "choice_count",
                        format!("is {choice_count}"),
                        format!(
                            "Envoy requires choice_count ≥ 2 (default 2); lbsim allows at most {most}"
                        ),
                    ));
                }
                if !(active_request_bias.is_finite() && active_request_bias >= 0.0) {
                    return Err(bad(
                        "active_request_bias",
                        format!("is {active_request_bias}"),
                        "use 0 or more (1.0 is Envoy's default, 0 ignores active requests)",
                    ));
                }
                Ok(())
            }
            StrategySpec::PeakEwma {
                decay_time,
                default_rtt,
            } => {
                seconds("decay_time", decay_time, false)?;
                seconds("default_rtt", default_rtt, true)
            }
            StrategySpec::LeastResponseTime { alpha } if !(alpha > 0.0 && alpha <= 1.0) => {
                Err(bad(
                    "alpha",
                    format!("is {alpha}"),
                    "use a smoothing factor in (0, 1], e.g. 0.1",
                ))
            }
            StrategySpec::RingHash {
                min_ring_size,
                max_ring_size,
            } => {
                if min_ring_size == 0 || min_ring_size > max_ring_size || max_ring_size > 8 << 20 {
                    return Err(bad(
                        "min_ring_size",
                        format!("min_ring_size {min_ring_size}, max_ring_size {max_ring_size}"),
                        "use 1 ≤ min_ring_size ≤ max_ring_size ≤ 8388608 (Envoy's bounds)",
                    ));
                }
                Ok(())
            }
            StrategySpec::Maglev { table_size } => {
                // Size first: testing a huge number for primality takes minutes.
                if table_size > 5_000_011 || (table_size as usize) < n || !is_prime(table_size) {
                    return Err(bad(
                        "table_size",
                        format!("is {table_size} with {n} backends"),
                        "use a prime at least the number of backends and at most 5000011 \
                         (65537 is Envoy's default; Maglev wants M ≫ N, e.g. M > 100 N)",
                    ));
                }
                Ok(())
            }
            StrategySpec::BoundedLoadHash {
                hash_balance_factor,
                min_ring_size,
            } => {
                if hash_balance_factor <= 100 {
                    return Err(bad(
                        "hash_balance_factor",
                        format!("is {hash_balance_factor}"),
                        "use a percentage above 100, e.g. 125 (a server may take 25% more than the average)",
                    ));
                }
                if min_ring_size == 0 || min_ring_size > 8 << 20 {
                    return Err(bad(
                        "min_ring_size",
                        format!("is {min_ring_size}"),
                        "use 1 to 8388608 (1024 is Envoy's default)",
                    ));
                }
                Ok(())
            }
            StrategySpec::First { maxconn: Some(0) } => Err(bad(
                "maxconn",
                "is 0: no server could take a request",
                "use 1 or more, or remove it to use each server's worker count",
            )),
            StrategySpec::GrpcWrr {
                weight_update_period,
                blackout_period,
                weight_expiration_period,
            } => {
                if !(weight_update_period.is_finite()
                    && (0.1..=MAX_SECONDS).contains(&weight_update_period))
                {
                    return Err(bad(
                        "weight_update_period",
                        format!("is {weight_update_period}"),
                        "use 0.1 s or more (gRFC A58's minimum; default 1)",
                    ));
                }
                seconds("blackout_period", blackout_period, true)?;
                seconds("weight_expiration_period", weight_expiration_period, false)
            }
            StrategySpec::Aperture {
                low_load,
                high_load,
                min_aperture,
                smooth_win,
            } => {
                if !(low_load.is_finite()
                    && high_load.is_finite()
                    && 0.0 <= low_load
                    && low_load < high_load)
                {
                    return Err(bad(
                        "low_load",
                        format!("low_load {low_load}, high_load {high_load}"),
                        "use 0 ≤ low_load < high_load (Finagle: 0.5 and 2.0)",
                    ));
                }
                if min_aperture == 0 || min_aperture > n {
                    return Err(bad(
                        "min_aperture",
                        format!("is {min_aperture} with {n} backends"),
                        format!("use 1 ≤ min_aperture ≤ {n}"),
                    ));
                }
                seconds("smooth_win", smooth_win, false)
            }
            _ => Ok(()),
        }
    }

    /// A running instance of this strategy over `n` backends, with its own random stream.
    pub fn build(&self, n: usize, rng: SimRng) -> Box<dyn Strategy> {
        match self {
            StrategySpec::RoundRobin => Box::new(RoundRobin::default()),
            StrategySpec::SmoothWeightedRoundRobin => Box::new(SmoothWeightedRoundRobin::default()),
            StrategySpec::LeastConnections { weighted } => {
                Box::new(LeastConnections::for_backends(*weighted, n))
            }
            StrategySpec::Random => Box::new(RandomChoice::new(rng)),
            StrategySpec::WeightedRandom => Box::new(WeightedRandom::new(rng)),
            StrategySpec::PowerOfD { d, replacement } => {
                Box::new(PowerOfD::new(*d, *replacement, rng))
            }
            StrategySpec::LeastRequest {
                choice_count,
                active_request_bias,
            } => Box::new(LeastRequest::new(*choice_count, *active_request_bias, rng)),
            StrategySpec::PeakEwma {
                decay_time,
                default_rtt,
            } => Box::new(PeakEwmaP2c::peak_ewma(
                Nanos::from_secs_f64(*decay_time),
                Nanos::from_secs_f64(*default_rtt),
                n,
                rng,
            )),
            StrategySpec::Jsq { indexed: false } => Box::new(ShortestQueue::new(rng)),
            StrategySpec::Jsq { indexed: true } => Box::new(ShortestQueue::indexed(rng)),
            StrategySpec::LeastResponseTime { alpha } => {
                Box::new(LeastResponseTime::for_backends(*alpha, n))
            }
            StrategySpec::Jiq => Box::new(JoinIdleQueue::new(n, rng)),
            StrategySpec::RingHash {
                min_ring_size,
                max_ring_size,
            } => Box::new(RingHash::new(*min_ring_size, *max_ring_size)),
            StrategySpec::Maglev { table_size } => Box::new(Maglev::new(*table_size as usize)),
            StrategySpec::BoundedLoadHash {
                hash_balance_factor,
                min_ring_size,
            } => Box::new(BoundedLoadHash::new(*hash_balance_factor, *min_ring_size)),
            StrategySpec::First { maxconn } => Box::new(First::new(*maxconn)),
            StrategySpec::Leastconn { weighted } => Box::new(Leastconn::new(*weighted)),
            StrategySpec::StaticRr => Box::new(StaticRr::default()),
            StrategySpec::EdfWrr => Box::new(EdfWeightedRoundRobin::default()),
            StrategySpec::GrpcWrr {
                weight_update_period,
                blackout_period,
                weight_expiration_period,
            } => Box::new(GrpcWeightedRoundRobin::new(GrpcWrrConfig {
                weight_update_period: Nanos::from_secs_f64(*weight_update_period),
                blackout_period: Nanos::from_secs_f64(*blackout_period),
                weight_expiration_period: Nanos::from_secs_f64(*weight_expiration_period),
            })),
            StrategySpec::Aperture {
                low_load,
                high_load,
                min_aperture,
                smooth_win,
            } => Box::new(Aperture::new(
                ApertureConfig {
                    low_load: *low_load,
                    high_load: *high_load,
                    min_aperture: *min_aperture,
                    smooth_win: Nanos::from_secs_f64(*smooth_win),
                },
                n,
                rng,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        strategies: Vec<StrategyEntry>,
    }

    #[test]
    fn parses_entries_with_labels_and_parameters() {
        let doc: Doc = toml::from_str(
            r#"
            [[strategies]]
            kind = "round_robin"
            [[strategies]]
            label = "wlc"
            kind = "least_connections"
            weighted = true
            "#,
        )
        .unwrap();
        assert_eq!(doc.strategies[0].label(), "round_robin");
        assert_eq!(doc.strategies[1].label(), "wlc");
        assert_eq!(
            doc.strategies[1].spec,
            StrategySpec::LeastConnections { weighted: true }
        );
    }

    #[test]
    fn unknown_fields_and_kinds_are_errors() {
        let e = toml::from_str::<Doc>(
            "[[strategies]]\nkind = \"least_connections\"\nweigthed = true\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("weigthed"), "{e}");
        let e = toml::from_str::<Doc>("[[strategies]]\nkind = \"magic\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("magic") && e.contains("round_robin"), "{e}");
    }

    #[test]
    fn every_catalogue_kind_has_defaults() {
        for info in CATALOGUE {
            let spec = StrategySpec::with_defaults(info.kind).expect(info.kind);
            assert_eq!(spec.kind(), info.kind);
        }
        assert_eq!(StrategySpec::with_defaults("magic"), None);
    }

    #[test]
    fn catalogue_lists_every_kind() {
        for spec in [
            StrategySpec::RoundRobin,
            StrategySpec::SmoothWeightedRoundRobin,
            StrategySpec::LeastConnections { weighted: false },
            StrategySpec::Random,
            StrategySpec::WeightedRandom,
        ]
        .into_iter()
        .chain(every_new_kind())
        {
            assert!(CATALOGUE.iter().any(|i| i.kind == spec.kind()));
        }
        assert_eq!(CATALOGUE.len(), 5 + every_new_kind().len());
    }

    /// Each kind added by the catalogue issue, parsed from its bare `kind` (all defaults).
    fn every_new_kind() -> Vec<StrategySpec> {
        [
            "power_of_d",
            "least_request",
            "peak_ewma",
            "jsq",
            "least_response_time",
            "jiq",
            "ring_hash",
            "maglev",
            "bounded_load_hash",
            "first",
            "edf_wrr",
            "grpc_wrr",
            "aperture",
            "leastconn",
            "static_rr",
        ]
        .iter()
        .map(|k| {
            toml::from_str::<Doc>(&format!("[[strategies]]\nkind = \"{k}\"\n"))
                .unwrap()
                .strategies
                .remove(0)
                .spec
        })
        .collect()
    }

    #[test]
    fn defaults_are_the_followed_systems_and_valid() {
        let all = every_new_kind();
        assert_eq!(
            all[0],
            StrategySpec::PowerOfD {
                d: 2,
                replacement: false
            }
        );
        assert_eq!(
            all[2],
            StrategySpec::PeakEwma {
                decay_time: 10.0,
                default_rtt: 0.030
            }
        );
        assert_eq!(all[7], StrategySpec::Maglev { table_size: 65537 });
        for spec in &all {
            assert_eq!(spec.validate(10), Ok(()), "{}", spec.kind());
        }
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let cases = [
            (
                StrategySpec::PowerOfD {
                    d: 0,
                    replacement: false,
                },
                "d",
            ),
            (
                StrategySpec::PowerOfD {
                    d: 11,
                    replacement: true,
                },
                "d",
            ),
            (StrategySpec::Maglev { table_size: 65536 }, "table_size"),
            (StrategySpec::Maglev { table_size: 7 }, "table_size"),
            (
                StrategySpec::BoundedLoadHash {
                    hash_balance_factor: 100,
                    min_ring_size: 1024,
                },
                "hash_balance_factor",
            ),
            (
                StrategySpec::LeastRequest {
                    choice_count: 1,
                    active_request_bias: 1.0,
                },
                "choice_count",
            ),
            (StrategySpec::First { maxconn: Some(0) }, "maxconn"),
            (StrategySpec::LeastResponseTime { alpha: 0.0 }, "alpha"),
        ];
        for (spec, field) in cases {
            assert_eq!(spec.validate(10).unwrap_err().field, field, "{spec:?}");
        }
        assert!(is_prime(65537) && is_prime(2) && !is_prime(1) && !is_prime(65535));
    }
}
