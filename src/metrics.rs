//! Streaming metrics of one run (one replication of one strategy).
//!
//! Memory does not grow with run length: latencies go into an HDR histogram, queue lengths
//! and utilisation into time integrals. [`RunMetrics::summarize`] reduces a run to the
//! figures listed in [`METRICS`] (one definition per [`Metric`]), which the statistics
//! layer then combines across replications: means as the mean of per-replication values, percentiles from the pooled
//! distribution of every replication ([`Estimator`]).

use hdrhistogram::Histogram;

use crate::stats::quantile::Cdf;
use crate::time::Nanos;

mod pool;
pub use pool::{Pooled, PooledSource, ServerPool};

/// Which direction of a metric is better (used by comparisons and regression checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Smaller values are better (latency, rejections, imbalance).
    Lower,
    /// Larger values are better (throughput, fairness).
    Higher,
    /// Neither: a descriptive figure.
    Neither,
}

impl Better {
    /// The word used in reports and the README: `lower`, `higher` or `neither`.
    pub fn word(self) -> &'static str {
        match self {
            Better::Lower => "lower",
            Better::Higher => "higher",
            Better::Neither => "neither",
        }
    }
}

/// Declares the [`Metric`] enum and, from the same list, [`Metric::ALL`] (every variant, in
/// order) and [`Metric::COUNT`]: a metric added to the list is in both, with no second list
/// to keep in step.
macro_rules! metric_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident, )+
        }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// How many metrics there are.
            pub const COUNT: usize = [$( $name::$variant ),+].len();

            /// Every metric, in the order of every CSV.
            pub const ALL: [$name; $name::COUNT] = [$( $name::$variant ),+];
        }
    };
}

metric_enum! {
/// A metric reported per strategy. Each variant has one definition in [`METRICS`] (name,
/// unit, meaning, better direction, how replications combine, default `check`
/// tolerance); every CSV, plot, table, `check` and the live verdict read it from there.
///
/// ```
/// use lbsim::metrics::{Better, Metric};
/// let m: Metric = "latency_p99".parse().unwrap();
/// assert_eq!(m, Metric::LatencyP99);
/// assert_eq!((m.unit(), m.better()), ("s", Better::Lower));
/// assert!("latency_p42".parse::<Metric>().unwrap_err().to_string().contains("latency_p99"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// `latency_mean`.
    LatencyMean,
    /// `latency_p50`.
    LatencyP50,
    /// `latency_p90`.
    LatencyP90,
    /// `latency_p95`.
    LatencyP95,
    /// `latency_p99`.
    LatencyP99,
    /// `latency_p999`.
    LatencyP999,
    /// `latency_max`.
    LatencyMax,
    /// `wait_mean`.
    WaitMean,
    /// `wait_p99`.
    WaitP99,
    /// `waited_fraction`.
    WaitedFraction,
    /// `throughput`.
    Throughput,
    /// `rejected_fraction`.
    RejectedFraction,
    /// `error_fraction`.
    ErrorFraction,
    /// `utilization_mean`.
    UtilizationMean,
    /// `utilization_max`.
    UtilizationMax,
    /// `utilization_cv`.
    UtilizationCv,
    /// `utilization_max_over_mean`.
    UtilizationMaxOverMean,
    /// `jain_index`.
    JainIndex,
    /// `queue_mean`.
    QueueMean,
    /// `queue_max`.
    QueueMax,
    /// `in_system_mean`.
    InSystemMean,
    /// `accepted_rate`.
    AcceptedRate,
    /// `in_system_growth`.
    InSystemGrowth,
    /// `probes_per_request` (optional: see [`Metric::reported`]).
    ProbesPerRequest,
    /// `success_rate`.
    SuccessRate,
    /// `attempts_per_request`.
    AttemptsPerRequest,
    /// `retry_rate`.
    RetryRate,
    /// `hedge_rate`.
    HedgeRate,
    /// `timeout_fraction`.
    TimeoutFraction,
    /// `wasted_fraction`.
    WastedFraction,
    /// `overflow_fraction` (optional: see [`Metric::reported`]).
    OverflowFraction,
    /// `ejections` (optional: see [`Shown::WithOutlierDetection`]).
    Ejections,
    /// `time_to_recover` (optional: see [`Shown::AfterFaults`]).
    TimeToRecover,
    /// `recovered_fraction` (optional: see [`Shown::AfterFaults`]).
    RecoveredFraction,
    /// `shed_fraction` (optional: see [`Shown::WithAdmission`]).
    ShedFraction,
}
}

/// The definition of a [`Metric`].
#[derive(Clone, Copy, Debug)]
pub struct MetricDef {
    /// The metric defined.
    pub metric: Metric,
    /// Name in CSV files, reports and flags.
    pub name: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// What it measures.
    pub doc: &'static str,
    /// Which direction is better.
    pub better: Better,
    /// How replications combine into the reported figure.
    pub estimator: Estimator,
    /// Default relative tolerance of `lbsim check` (overridden by `--tolerance`).
    pub tolerance: f64,
    /// Where it is reported (CSV files, tables, plots and `check`).
    pub shown: Shown,
}

impl MetricDef {
    /// The same definition, reported only where `shown` says.
    const fn shown(self, shown: Shown) -> MetricDef {
        MetricDef { shown, ..self }
    }
}

/// Where a metric is reported: the one rule behind [`Metric::listed`] and
/// [`Metric::reported`], so that a metric added later keeps other outputs as they were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    /// For every scenario and strategy.
    Always,
    /// For scenarios where some strategy has a client policy.
    WithPolicies,
    /// For strategies whose estimate is not exactly 0 (e.g. probes: strategies that never
    /// probe keep the rows they had before the metric existed).
    WhenNonZero,
    /// For scenarios where some strategy has outlier detection (`[strategies.policy.outlier]`).
    WithOutlierDetection,
    /// For scenarios whose time to recover is defined ([`recovery_spec`]): every fault
    /// ends inside the measured window, and the window has a fault-free start.
    AfterFaults,
    /// For scenarios where some server group has admission control
    /// (`[servers.admission]`).
    WithAdmission,
}

/// What a scenario has that decides which metrics apply to it ([`Shown`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applies {
    /// Some strategy has a client policy.
    pub policies: bool,
    /// Some strategy has outlier detection.
    pub outlier_detection: bool,
    /// The time to recover is defined ([`recovery_spec`]).
    pub recovery: bool,
    /// Some server group has admission control.
    pub admission: bool,
}

impl Applies {
    /// What `scenario` has.
    pub fn of(scenario: &crate::scenario::Scenario) -> Applies {
        Applies {
            policies: scenario.has_policies(),
            outlier_detection: scenario
                .strategies
                .iter()
                .any(|e| e.policy.as_ref().is_some_and(|p| p.outlier.is_some())),
            recovery: recovery_spec(scenario).is_some(),
            admission: scenario.groups.iter().any(|g| g.admission.is_some()),
        }
    }
}

/// How a metric's replications combine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Estimator {
    /// The mean of per-replication values, with a Student-t interval.
    Mean,
    /// The `p` quantile of a pooled distribution (one of [`RunMetrics::source`], by
    /// index), with the interval of [`crate::stats::quantile`].
    Pooled {
        /// Index of the distribution: [`SOURCE_LATENCY`], [`SOURCE_WAIT`], or
        /// [`SOURCE_SERVERS`] + server.
        source: usize,
        /// The quantile.
        p: f64,
    },
}

/// Pooled distribution of response times (see [`RunMetrics::source`]).
pub const SOURCE_LATENCY: usize = 0;
/// Pooled distribution of waiting times.
pub const SOURCE_WAIT: usize = 1;
/// Pooled distribution of server `i`'s response times is source `SOURCE_SERVERS + i`.
pub const SOURCE_SERVERS: usize = 2;
/// The quantile of each server's pooled response times that `servers.csv` reports.
pub const SERVER_QUANTILE: f64 = 0.99;

const fn def(
    metric: Metric,
    name: &'static str,
    unit: &'static str,
    better: Better,
    tolerance: f64,
    doc: &'static str,
) -> MetricDef {
    MetricDef {
        metric,
        name,
        unit,
        doc,
        better,
        estimator: Estimator::Mean,
        tolerance,
        shown: Shown::Always,
    }
}

const fn pooled(
    metric: Metric,
    name: &'static str,
    source: usize,
    p: f64,
    tolerance: f64,
    doc: &'static str,
) -> MetricDef {
    MetricDef {
        estimator: Estimator::Pooled { source, p },
        ..def(metric, name, "s", Better::Lower, tolerance, doc)
    }
}

/// The definition of every [`Metric`], in the order of the enum (the order of every CSV).
pub const METRICS: [MetricDef; Metric::COUNT] = {
    use Better::{Higher, Lower, Neither};
    use Metric::*;
    [
        def(
            LatencyMean,
            "latency_mean",
            "s",
            Lower,
            0.05,
            "mean response time (queueing + service) of requests served",
        ),
        pooled(
            LatencyP50,
            "latency_p50",
            SOURCE_LATENCY,
            0.5,
            0.05,
            "median response time (of all replications' requests pooled)",
        ),
        pooled(
            LatencyP90,
            "latency_p90",
            SOURCE_LATENCY,
            0.9,
            0.05,
            "90th percentile response time (pooled)",
        ),
        pooled(
            LatencyP95,
            "latency_p95",
            SOURCE_LATENCY,
            0.95,
            0.05,
            "95th percentile response time (pooled)",
        ),
        pooled(
            LatencyP99,
            "latency_p99",
            SOURCE_LATENCY,
            0.99,
            0.05,
            "99th percentile response time (pooled)",
        ),
        pooled(
            LatencyP999,
            "latency_p999",
            SOURCE_LATENCY,
            0.999,
            0.10,
            "99.9th percentile response time (pooled)",
        ),
        def(
            LatencyMax,
            "latency_max",
            "s",
            Lower,
            0.25,
            "largest response time (mean over replications of each one's largest)",
        ),
        def(
            WaitMean,
            "wait_mean",
            "s",
            Lower,
            0.05,
            "mean waiting time (queueing before service starts) of requests served",
        ),
        pooled(
            WaitP99,
            "wait_p99",
            SOURCE_WAIT,
            0.99,
            0.05,
            "99th percentile waiting time (pooled)",
        ),
        def(
            WaitedFraction,
            "waited_fraction",
            "1",
            Lower,
            0.05,
            "fraction of served requests that waited for a worker, P(wait > 0)",
        ),
        def(
            Throughput,
            "throughput",
            "req/s",
            Higher,
            0.02,
            "requests that arrived in the measured window and were served, per second",
        ),
        def(
            RejectedFraction,
            "rejected_fraction",
            "1",
            Lower,
            0.10,
            "fraction of requests refused (queue full or no server up)",
        ),
        def(
            ErrorFraction,
            "error_fraction",
            "1",
            Lower,
            0.10,
            "fraction of requests that failed (their server crashed, or was down and not yet detected)",
        ),
        def(
            UtilizationMean,
            "utilization_mean",
            "1",
            Neither,
            0.05,
            "mean over servers of busy worker-time / (workers × window)",
        ),
        def(
            UtilizationMax,
            "utilization_max",
            "1",
            Lower,
            0.05,
            "utilisation of the busiest server",
        ),
        def(
            UtilizationCv,
            "utilization_cv",
            "1",
            Lower,
            0.05,
            "coefficient of variation of per-server utilisation (0 = even)",
        ),
        def(
            UtilizationMaxOverMean,
            "utilization_max_over_mean",
            "1",
            Lower,
            0.05,
            "busiest server's utilisation over the mean (1 = even)",
        ),
        def(
            JainIndex,
            "jain_index",
            "1",
            Higher,
            0.01,
            "Jain's fairness index of per-server utilisation (1 = even, 1/n = one server does all)",
        ),
        def(
            QueueMean,
            "queue_mean",
            "requests",
            Lower,
            0.10,
            "time-average number waiting, averaged over servers",
        ),
        def(
            QueueMax,
            "queue_max",
            "requests",
            Lower,
            0.10,
            "largest number waiting at any server",
        ),
        def(
            InSystemMean,
            "in_system_mean",
            "requests",
            Neither,
            0.05,
            "time-average number in the whole system (waiting + in service), L in Little's law",
        ),
        def(
            AcceptedRate,
            "accepted_rate",
            "req/s",
            Neither,
            0.02,
            "requests accepted per second of window, λ in Little's law",
        ),
        def(
            InSystemGrowth,
            "in_system_growth",
            "requests",
            Neither,
            0.05,
            "growth of the number in system over the window (least-squares line through its time-average in 10 equal slices, end minus start): near 0 in steady state, about the excess arrival rate × window when unstable",
        ),
        def(
            ProbesPerRequest,
            "probes_per_request",
            "1",
            Lower,
            0.05,
            "probes sent in the measured window per request arrived (strategies that probe servers, such as prequal; reported only for them)",
        )
        .shown(Shown::WhenNonZero),
        def(
            SuccessRate,
            "success_rate",
            "1",
            Higher,
            0.05,
            "fraction of requests served (goodput over offered load); reported when a strategy has a client policy",
        )
        .shown(Shown::WithPolicies),
        def(
            AttemptsPerRequest,
            "attempts_per_request",
            "1",
            Lower,
            0.05,
            "attempts sent per request, retries and hedges included (amplification); reported with client policies",
        )
        .shown(Shown::WithPolicies),
        def(
            RetryRate,
            "retry_rate",
            "1",
            Lower,
            0.05,
            "retries per request; reported with client policies",
        )
        .shown(Shown::WithPolicies),
        def(
            HedgeRate,
            "hedge_rate",
            "1",
            Neither,
            0.05,
            "hedged copies per request; reported with client policies",
        )
        .shown(Shown::WithPolicies),
        def(
            TimeoutFraction,
            "timeout_fraction",
            "1",
            Lower,
            0.05,
            "fraction of requests that ended timed out (per-try or overall deadline); reported with client policies",
        )
        .shown(Shown::WithPolicies),
        def(
            WastedFraction,
            "wasted_fraction",
            "1",
            Lower,
            0.05,
            "share of the server time spent on attempts nobody waited for any more (timed out, or lost a hedge race); reported with client policies",
        )
        .shown(Shown::WithPolicies),
        def(
            OverflowFraction,
            "overflow_fraction",
            "1",
            Lower,
            0.05,
            "share of attempts the balancer's circuit breakers refused at once (Envoy's overflow: max_requests or max_pending_requests reached); reported for strategies whose breakers tripped",
        )
        .shown(Shown::WhenNonZero),
        def(
            Ejections,
            "ejections",
            "1",
            Neither,
            0.10,
            "hosts ejected by outlier detection over the whole run (warm-up included), every balancer's; reported when a strategy has outlier detection",
        )
        .shown(Shown::WithOutlierDetection),
        def(
            TimeToRecover,
            "time_to_recover",
            "s",
            Lower,
            0.25,
            "from the end of the last fault until the end of the first time-series window (run length / 200, on the time series' grid) whose p99 response time, of the requests that arrived in it (unserved ones counting as slower than any served), is within 10% of the p99 before the first fault; a run that never recovers counts the time to its end (censored: the mean is then a lower bound, see recovered_fraction); reported when every fault ends inside the window after a fault-free start",
        )
        .shown(Shown::AfterFaults),
        def(
            RecoveredFraction,
            "recovered_fraction",
            "1",
            Higher,
            0.10,
            "fraction of replications whose time_to_recover ended before the run did (1: recovered, 0: censored at run end); reported with time_to_recover",
        )
        .shown(Shown::AfterFaults),
        def(
            ShedFraction,
            "shed_fraction",
            "1",
            Lower,
            0.10,
            "attempts dropped by their server's admission control (queue timeout or CoDel, `[servers.admission]`) per request arrived; without a client policy each is a refused request, counted in rejected_fraction too; reported when some server group has admission control",
        )
        .shown(Shown::WithAdmission),
    ]
};

// The table is indexed by the enum: a definition out of place does not compile.
const _: () = {
    let mut k = 0;
    while k < Metric::COUNT {
        assert!(METRICS[k].metric as usize == k, "METRICS out of enum order");
        k += 1;
    }
};

impl Metric {
    /// Whether this metric describes client policies, and is reported only for scenarios
    /// where some strategy has one (so that other scenarios' outputs stay as they were).
    pub const fn of_client_policies(self) -> bool {
        matches!(self.def().shown, Shown::WithPolicies)
    }

    /// The metrics reported for a scenario without outlier detection or a time to recover:
    /// all but those, and but those of client policies unless `with_policies`
    /// ([`Metric::listed_in`] for any scenario).
    pub fn listed(with_policies: bool) -> impl Iterator<Item = Metric> {
        Metric::listed_in(Applies {
            policies: with_policies,
            ..Applies::default()
        })
    }

    /// The metrics reported for a scenario that has what `applies` says (see [`Shown`]).
    pub fn listed_in(applies: Applies) -> impl Iterator<Item = Metric> {
        Metric::ALL.into_iter().filter(move |m| m.applies(applies))
    }

    /// Whether this metric is reported for a scenario that has what `applies` says.
    pub const fn applies(self, applies: Applies) -> bool {
        match self.def().shown {
            Shown::Always | Shown::WhenNonZero => true,
            Shown::WithPolicies => applies.policies,
            Shown::WithOutlierDetection => applies.outlier_detection,
            Shown::AfterFaults => applies.recovery,
            Shown::WithAdmission => applies.admission,
        }
    }

    /// Its definition.
    pub const fn def(self) -> &'static MetricDef {
        &METRICS[self as usize]
    }

    /// Its position in [`Metric::ALL`] and every CSV.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Name in CSV files, reports and flags, e.g. `latency_p99`.
    pub const fn name(self) -> &'static str {
        self.def().name
    }

    /// Unit (`s`, `1`, `req/s`, `requests`).
    pub const fn unit(self) -> &'static str {
        self.def().unit
    }

    /// What it measures.
    pub const fn doc(self) -> &'static str {
        self.def().doc
    }

    /// Which direction is better.
    pub const fn better(self) -> Better {
        self.def().better
    }

    /// How replications combine.
    pub const fn estimator(self) -> Estimator {
        self.def().estimator
    }

    /// Default relative tolerance of `lbsim check`.
    pub const fn tolerance(self) -> f64 {
        self.def().tolerance
    }

    /// The metric named `name`, or an error listing the valid names.
    pub fn from_name(name: &str) -> Result<Metric, UnknownMetric> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| UnknownMetric(name.to_string()))
    }

    /// Whether this metric is reported for a strategy whose estimate (mean over
    /// replications) is `mean`: always, except a [`Shown::WhenNonZero`] metric
    /// (`probes_per_request`) at exactly 0, which `summary.csv` and `check` leave out so
    /// that strategies which never probe have the same rows as before the metric existed.
    pub fn reported(self, mean: f64) -> bool {
        !(self.def().shown == Shown::WhenNonZero && mean == 0.0)
    }

    /// Every metric's name, comma-separated (for error messages and help).
    pub fn names() -> String {
        Metric::ALL.map(Metric::name).join(", ")
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Metric {
    type Err = UnknownMetric;

    fn from_str(s: &str) -> Result<Metric, UnknownMetric> {
        Metric::from_name(s)
    }
}

impl serde::Serialize for Metric {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A metric name that lbsim does not compute.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no metric `{0}`; the metrics are {names}", names = Metric::names())]
pub struct UnknownMetric(pub String);

/// One value per [`Metric`], indexed by it.
#[derive(Clone, Copy, Debug)]
pub struct PerMetric<T>(pub [T; Metric::COUNT]);

/// Figures are equal when they are the same value, bit for bit: results are compared for
/// determinism, and an undefined figure (NaN, e.g. `time_to_recover` in a run without
/// faults) must equal itself for two identical runs to compare equal.
impl PartialEq for PerMetric<f64> {
    fn eq(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(&other.0)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl<T> PerMetric<T> {
    /// The value of each metric, from `f`.
    pub fn from_fn(mut f: impl FnMut(Metric) -> T) -> PerMetric<T> {
        PerMetric(Metric::ALL.map(&mut f))
    }

    /// Each metric with its value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (Metric, &T)> {
        Metric::ALL.into_iter().zip(&self.0)
    }

    /// The values in order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }
}

impl<T: Copy> PerMetric<T> {
    /// The values of a slice holding one per metric in order, or `None` when its length
    /// is not [`Metric::COUNT`].
    pub fn from_slice(values: &[T]) -> Option<PerMetric<T>> {
        <[T; Metric::COUNT]>::try_from(values).ok().map(PerMetric)
    }
}

impl<T> std::ops::Index<Metric> for PerMetric<T> {
    type Output = T;

    fn index(&self, m: Metric) -> &T {
        &self.0[m as usize]
    }
}

impl<T> std::ops::IndexMut<Metric> for PerMetric<T> {
    fn index_mut(&mut self, m: Metric) -> &mut T {
        &mut self.0[m as usize]
    }
}

/// The README's metric table (Markdown), generated from [`METRICS`]; `tests/docs.rs` keeps
/// the README in step.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| metric | unit | better | `check` tolerance | meaning |\n| --- | --- | --- | --- | --- |\n",
    );
    for d in &METRICS {
        out.push_str(&format!(
            "| `{}` | {} | {} | {}% | {} |\n",
            d.name,
            d.unit,
            d.better.word(),
            (d.tolerance * 1000.0).round() / 10.0,
            d.doc
        ));
    }
    out
}

/// Slices of the window for [`ServerAccumulator::slices`] (the drift test).
pub const SLICES: usize = 10;

/// Batches of the window, by arrival time, for [`RunMetrics::batches`] (steady-state
/// diagnostics: MSER truncation and the correlation of batch means).
pub const BATCHES: usize = 100;

/// A divisor fixed for a whole run, with its reciprocal, so that the per-event slice and
/// batch indices cost a multiplication instead of a hardware division (tens of cycles,
/// several times per request). [`Divisor::quotient`] is exact: the float estimate is
/// corrected to `x / d`.
#[derive(Clone, Copy, Debug)]
struct Divisor {
    d: u64,
    inv: f64,
}

impl Divisor {
    fn new(d: u64) -> Divisor {
        let d = d.max(1);
        Divisor {
            d,
            inv: 1.0 / d as f64,
        }
    }

    /// `x / d`, rounded down, exactly.
    #[inline]
    fn quotient(self, x: u64) -> u64 {
        // Within one of the truth while `x` < 2^53 (runs are at most 1e9 s = 1e18 ns, so
        // the loops also cover the rest).
        let mut q = (x as f64 * self.inv) as u64;
        while q > 0 && q.saturating_mul(self.d) > x {
            q -= 1;
        }
        while (q + 1).checked_mul(self.d).is_some_and(|m| m <= x) {
            q += 1;
        }
        q
    }
}

/// Time integrals of one server over the measured window.
///
/// What every event reads and writes is the first 64-byte line (`repr(C)`, aligned): the
/// integrals, the time of the last call, where the current slice ends and its integral so
/// far, the requests counted and the largest queue. The slices' array and the window's
/// bounds are read only when the state crosses a slice (ten times a run). At 10,000
/// servers these are out of the core's cache, and the struct laid out by the compiler
/// (184 bytes, slices in the middle) cost 2–3 lines an event.
#[derive(Clone, Debug, Default)]
#[repr(C, align(64))]
pub struct ServerAccumulator {
    last: Nanos,
    /// Where slice `slice` ends (`u64::MAX` for the last one; 0 until the first slice is
    /// known).
    slice_end: u64,
    /// ∫ busy workers dt over the window (worker-nanoseconds).
    pub busy_area: f64,
    /// ∫ queue length dt over the window (request-nanoseconds).
    pub queue_area: f64,
    /// ∫ (busy + queued) dt over slice `slice` so far: `slices[slice]`, held here between
    /// crossings and written back at each ([`ServerAccumulator::slices`] reads it).
    current: f64,
    /// Measured requests accepted by this server.
    pub requests: u64,
    /// Measured requests it served.
    pub served: u64,
    /// Largest queue length seen during the window.
    pub queue_max: u32,
    /// The slice of `last` (below [`SLICES`]).
    slice: u32,
    // The second line on: a completion's sum, then what only a crossing reads.
    /// Sum of the served requests' response times (seconds).
    pub latency_sum: f64,
    /// Worker count (for utilisation).
    pub workers: u32,
    /// The slice length of the window `window` (set by [`ServerAccumulator::advance`]
    /// when it sees a new window).
    slice_len: u64,
    window: (Nanos, Nanos),
    /// ∫ (busy + queued) dt over each of [`SLICES`] equal slices of the window, but for
    /// slice `slice`, held in `current`.
    slices: [f64; SLICES],
}

// What every event touches fills the first line, and only that line.
const _: () = assert!(std::mem::offset_of!(ServerAccumulator, latency_sum) == 64);

impl ServerAccumulator {
    /// An accumulator for a server with `workers` workers.
    pub fn new(workers: u32) -> ServerAccumulator {
        ServerAccumulator {
            workers,
            ..Default::default()
        }
    }

    /// ∫ (busy + queued) dt over each of [`SLICES`] equal slices of the window (the
    /// drift test).
    pub fn slices(&self) -> [f64; SLICES] {
        let mut slices = self.slices;
        slices[self.slice as usize] = self.current;
        slices
    }

    /// Accounts for the state `(busy, queued)` having held from the last call until `now`,
    /// clipped to the window `[from, to)` (the same window at every call).
    #[inline]
    pub fn advance(&mut self, now: Nanos, busy: u32, queued: u32, from: Nanos, to: Nanos) {
        let a = self.last.max(from);
        let b = now.min(to);
        if b > a {
            let dt = (b.0 - a.0) as f64;
            self.busy_area += f64::from(busy) * dt;
            self.queue_area += f64::from(queued) * dt;
            let n = f64::from(busy + queued);
            if a.0 < self.slice_end && b.0 <= self.slice_end {
                // Within the current slice (most events): what `cross` does then. An
                // idle server (`n` = 0) adds 0.0 to a sum that is never -0.0, which
                // leaves it unchanged, bit for bit: no branch on whether the server was
                // idle (at random, as arrivals find it, so often mispredicted). The
                // window is the one `cross` saw (`slice_end` is 0 until it sees one).
                debug_assert_eq!(self.window, (from, to), "one window a run");
                self.current += n * dt;
            } else if n > 0.0 {
                self.cross(a, b, n, from, to);
            }
        }
        if now > from && self.last < to && queued > self.queue_max {
            self.queue_max = queued;
        }
        self.last = now;
    }

    /// [`ServerAccumulator::advance`]'s integral over `[a, b)` of `n` in system, across
    /// slices (or on the first call in a window).
    #[inline(never)]
    fn cross(&mut self, a: Nanos, b: Nanos, n: f64, from: Nanos, to: Nanos) {
        self.slices[self.slice as usize] = self.current;
        if self.window != (from, to) {
            self.window = (from, to);
            self.slice_len = ((to.0 - from.0) / SLICES as u64).max(1);
            self.slice = 0;
        }
        // Slice `k` ends at `from + (k + 1)·len` (the last one at `to`). `a` never
        // decreases from call to call (event times are monotone), so the current slice
        // only moves forward: no division per event.
        let len = self.slice_len;
        let slice_end = |k: u32| from.0 + (u64::from(k) + 1) * len;
        let last = SLICES as u32 - 1;
        while self.slice < last && a.0 >= slice_end(self.slice) {
            self.slice += 1;
        }
        let mut t = a.0;
        while t < b.0 {
            let k = self.slice;
            let end = if k == last {
                b.0
            } else {
                slice_end(k).min(b.0)
            };
            self.slices[k as usize] += n * (end - t) as f64;
            t = end;
            if t < b.0 {
                self.slice += 1;
            }
        }
        self.slice_end = if self.slice == last {
            u64::MAX
        } else {
            slice_end(self.slice)
        };
        self.current = self.slices[self.slice as usize];
    }
}

/// Everything measured in one run.
#[derive(Clone, Debug)]
pub struct RunMetrics {
    /// Response times of measured requests (nanoseconds).
    pub latency: Histogram<u64>,
    /// Exact sum of measured response times (seconds), for an exact mean.
    pub latency_sum: f64,
    /// Largest measured response time.
    pub latency_max: Nanos,
    /// Waiting times (arrival to start of service) of measured requests, where known (the
    /// simulator; live mode sees only response times).
    pub wait: Histogram<u64>,
    /// Exact sum of measured waiting times (seconds).
    pub wait_sum: f64,
    /// Measured requests that waited (wait > 0).
    pub waited: u64,
    /// Per server (up to [`MAX_SERVER_HISTOGRAMS`]): response times of the measured
    /// requests it served, as compact bucket counts (2 bytes a bucket, growing to the
    /// largest value recorded). Read as a histogram with [`RunMetrics::server_latency`];
    /// pooled, summarized and added into [`RunMetrics::latency`] from the counts
    /// themselves. A run used to hold an `hdrhistogram` of 8-byte counts per server
    /// besides: allocated, zeroed and page-faulted in at every run's end, it was a third
    /// of a 50,000-request run's time at 100 servers.
    server_counts: Vec<BucketCounts>,
    /// Per batch of [`BATCHES`] equal slices of the window, by arrival time: the sum of
    /// the response times (seconds) of the measured requests served, and their number.
    pub batches: Vec<[f64; 2]>,
    /// Requests that arrived in the window.
    pub arrived: u64,
    /// Of those, refused because the chosen server's queue was full.
    pub rejected: u64,
    /// Of those, refused because no server was up.
    pub unroutable: u64,
    /// Of those, failed because their server crashed (or was down when they reached it).
    pub failed: u64,
    /// Attempts dropped by their server's admission control (`[servers.admission]`:
    /// queue timeout or CoDel), as refusals: without a policy each is also counted in
    /// `rejected`; under one, its request may be retried.
    pub shed: u64,
    /// Probes sent in the window ([`crate::strategy::Strategy::probes`]).
    pub probes: u64,
    /// Per server.
    pub servers: Vec<ServerAccumulator>,
    /// What client policies did (all zero without a policy).
    pub client: ClientCounters,
    /// Per phase of the window (before, during and after fault windows), by arrival
    /// time; empty unless set with [`RunMetrics::with_phases`].
    pub phases: Vec<PhaseAccumulator>,
    /// Where phases start, after the first (strictly inside the window, increasing).
    phase_edges: Vec<Nanos>,
    /// The windows of the time to recover; `None` unless set with
    /// [`RunMetrics::with_recovery`].
    pub recovery: Option<Box<RecoveryAccumulator>>,
    /// Start of the window.
    pub from: Nanos,
    /// End of the window.
    pub to: Nanos,
    /// The length of a batch of [`RunMetrics::batches`].
    batch: Divisor,
    /// The batch of the last request recorded, as (index, first offset from `from`, end
    /// offset): requests are recorded nearly in arrival order, so most fall in the batch of
    /// the one before and need no division.
    last_batch: (usize, u64, u64),
    /// Response times recorded by [`RunMetrics::record_served`], and waits by
    /// [`RunMetrics::record_service`], not yet in [`RunMetrics::latency`] and
    /// [`RunMetrics::wait`] (see [`RunMetrics::flush`] and [`BucketCounts`]).
    pending_latency: BucketCounts,
    pending_wait: BucketCounts,
    /// Whether [`RunMetrics::latency`] still lacks exactly what the per-server counts
    /// hold: while it does, [`RunMetrics::record_served`] records a response time once, in
    /// its server's counts, and [`RunMetrics::flush`] adds those counts into
    /// [`RunMetrics::latency`] (exact: the same buckets, see [`server_histogram`]). Any
    /// other record into either first makes the two separate
    /// ([`RunMetrics::latency_apart`]); runs beyond [`MAX_SERVER_HISTOGRAMS`]
    /// servers, which have no per-server histograms, never defer.
    latency_in_servers: bool,
}

/// What client policies (timeouts, retries, hedging) did in one run, counted over the
/// requests that arrived in the measured window. A request ends exactly once: served
/// (its latency is recorded), rejected, unroutable, failed, or timed out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientCounters {
    /// Attempts sent (the first included; every retry and hedge adds one).
    pub attempts: u64,
    /// Of those, retries.
    pub retries: u64,
    /// Of those, hedges (copies sent while an earlier one was still out).
    pub hedges: u64,
    /// Requests that ended by a timeout (per-try or overall) without being served.
    pub timed_out: u64,
    /// Attempts the client stopped waiting for (timed out, or lost a hedge race).
    pub abandoned: u64,
    /// Of those, withdrawn from their server before they finished.
    pub cancelled: u64,
    /// Worker time spent serving these requests' attempts (seconds).
    pub work: f64,
    /// Of that, time spent on attempts nobody waited for any more (seconds).
    pub wasted: f64,
    /// Ejections by outlier detection (every balancer's, over the whole run).
    pub ejections: u64,
    /// Most servers one balancer had ejected at once.
    pub max_ejected: u32,
    /// Attempts refused at once by the balancer's circuit breakers (counted in
    /// `attempts`; a request whose only attempt overflowed ends refused).
    pub overflowed: u64,
}

/// Most servers whose response times get a distribution of their own (for the per-server
/// p99 in `servers.csv`). A run in flight holds 2-byte bucket counts per server (about
/// 30 kB for a millisecond-scale server), and every strategy's pool a [`ServerPool`] per
/// server (10 bytes a bucket with a count, at most 4 bytes a bucket up to the largest:
/// about 68 kB; until 2026-11-28 a whole [`latency_histogram`], 264 kB): beyond this many
/// servers the per-server p99 is not measured (reported as NaN), so memory stays bounded
/// at 10,000 servers.
pub const MAX_SERVER_HISTOGRAMS: usize = 256;

/// Largest latency the histogram resolves (about 73 minutes); longer ones saturate.
pub const LATENCY_HIGH_NS: u64 = 1 << 42;

/// An empty latency histogram: 1 ns to [`LATENCY_HIGH_NS`], 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_HIGH_NS, 3).expect("valid histogram bounds")
}

/// An empty per-server latency histogram: the buckets of [`latency_histogram`] (1 ns, 3
/// significant digits, so every figure read from it is the same), but its counts grow
/// only up to the largest value recorded (a millisecond-scale server's holds about 130 kB
/// instead of 264 kB). [`RunMetrics::server_latency`] makes one from a server's counts on
/// request; a run does not hold them. Values are clamped to [`LATENCY_HIGH_NS`] before
/// recording, as [`latency_histogram`] saturates.
pub fn server_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 2, 3).expect("valid histogram bounds");
    h.auto(true);
    h
}

/// The first value a [`latency_histogram`] cannot count in a bucket of its own (its
/// counts end with the octave of [`LATENCY_HIGH_NS`]): `saturating_record` counts it, and
/// every larger one, at [`LATENCY_HIGH_NS`].
const LATENCY_UNTRACKABLE_NS: u64 = LATENCY_HIGH_NS << 1;

/// A response time (nanoseconds) as `latency_histogram().saturating_record(v.max(1))`
/// counts it: at least 1 ns, and [`LATENCY_HIGH_NS`] from [`LATENCY_UNTRACKABLE_NS`] on.
#[inline]
fn clamped(v: u64) -> u64 {
    if v >= LATENCY_UNTRACKABLE_NS {
        LATENCY_HIGH_NS
    } else {
        v.max(1)
    }
}

/// Half the sub-buckets of an octave of a [`latency_histogram`], as a power of two (3
/// significant digits: 2,048 sub-buckets, the upper 1,024 used above the first octave).
const HALF_MAGNITUDE: u32 = 10;

/// The index of `v` (in `1..LATENCY_UNTRACKABLE_NS`) among the counts of a
/// [`latency_histogram`]: hdrhistogram's `index_for` for 1 ns units and 3 significant
/// digits (checked against the crate in the tests).
#[inline]
fn bucket_index(v: u64) -> usize {
    let sub_mask = (1u64 << (HALF_MAGNITUDE + 1)) - 1;
    let octave = 64 - (HALF_MAGNITUDE + 1) - (v | sub_mask).leading_zeros();
    (((octave + 1) as usize) << HALF_MAGNITUDE) + (v >> octave) as usize - (1 << HALF_MAGNITUDE)
}

/// The lowest value counted at `index` of a [`latency_histogram`] (hdrhistogram's
/// `value_for`): recording it counts at `index`.
fn bucket_value(index: usize) -> u64 {
    let half = 1usize << HALF_MAGNITUDE;
    match (index >> HALF_MAGNITUDE).checked_sub(1) {
        None => index as u64,
        Some(octave) => (((index & (half - 1)) + half) as u64) << octave,
    }
}

/// Counts of response times in the buckets of a [`latency_histogram`]: a server's response
/// times for the whole run, and the run's response and waiting times until
/// [`RunMetrics::flush`] adds them into their histograms ([`BucketCounts::drain_into`]).
/// They are read in place ([`BucketCounts::iter`] skips empty blocks of buckets), so
/// a run's end touches 2 bytes a bucket per server, not the 8 of a histogram. Recording into an
/// `hdrhistogram` directly costs a call, a bounds check and min, max and total updates per
/// value, and its 8-byte counts miss the cache once a few servers' histograms are in use
/// (a fifth of the engine's time on 10 servers); here a record is an index computation and
/// the increment of a 2-byte count (a count reaching 2^16 moves to [`BucketCounts::full`]),
/// so 10 servers' counts fit a core's cache. The counts grow to the largest value recorded.
#[derive(Clone, Debug, Default)]
struct BucketCounts {
    counts: Vec<u16>,
    /// Per index whose count passed 2^16: what passed, in multiples of 2^16 (one entry per
    /// index, so memory stays bounded whatever the run's length).
    full: Vec<(u32, u64)>,
}

impl BucketCounts {
    /// Counts response time `v` (nanoseconds) where `saturating_record(v.max(1))` into a
    /// [`latency_histogram`] would.
    #[inline]
    fn record(&mut self, v: u64) {
        let i = bucket_index(clamped(v));
        if i >= self.counts.len() {
            self.grow(i);
        }
        let c = &mut self.counts[i];
        if *c == u16::MAX {
            *c = 0;
            self.overflow(i);
        } else {
            *c += 1;
        }
    }

    /// 2^16 more values at index `i`.
    #[cold]
    #[inline(never)]
    fn overflow(&mut self, i: usize) {
        match self.full.iter_mut().find(|(k, _)| *k as usize == i) {
            Some((_, n)) => *n += 1 << 16,
            None => self.full.push((i as u32, 1 << 16)),
        }
    }

    /// Makes room for index `i` (a whole octave at a time).
    #[cold]
    #[inline(never)]
    fn grow(&mut self, i: usize) {
        let len = (i | ((1 << HALF_MAGNITUDE) - 1)) + 1;
        self.counts.resize(len, 0);
    }

    /// Every index with a count, as `(index, count)`, in increasing order (the 2-byte
    /// count and what passed 2^16 together).
    fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        // Only after 2^16 values in one bucket (a long run) is `full` not empty; then no
        // block is skipped, and each index looks its overflow up.
        let mut full = self.full.clone();
        full.sort_unstable();
        let skip_empty = full.is_empty();
        // Most counts are 0 in a short run (a few hundred values over some 15,000 buckets):
        // a block of them is skipped with one test of their OR (a vector instruction or two).
        self.counts
            .chunks(BLOCK)
            .enumerate()
            .filter(move |(_, block)| !skip_empty || block.iter().fold(0, |a, &c| a | c) != 0)
            .flat_map(|(b, block)| {
                block
                    .iter()
                    .enumerate()
                    .map(move |(k, &c)| (b * BLOCK + k, u64::from(c)))
            })
            .filter_map(move |(i, c)| {
                let more = match full.binary_search_by_key(&(i as u32), |&(k, _)| k) {
                    Ok(at) => full[at].1,
                    Err(_) => 0,
                };
                let n = c + more;
                (n != 0).then_some((i, n))
            })
    }

    /// The largest index with a count, if any.
    fn last_index(&self) -> Option<usize> {
        let block = self
            .counts
            .chunks(BLOCK)
            .rposition(|b| b.iter().fold(0, |a, &c| a | c) != 0);
        let counted = block.and_then(|b| {
            let from = b * BLOCK;
            Some(from + self.counts[from..].iter().rposition(|&c| c != 0)?)
        });
        let full = self.full.iter().map(|&(i, _)| i as usize).max();
        counted.max(full)
    }

    /// How many values were counted.
    fn total(&self) -> u64 {
        let counted: u64 = self.counts.iter().map(|&c| u64::from(c)).sum();
        counted + self.full.iter().map(|&(_, n)| n).sum::<u64>()
    }

    /// Adds every count into `h` (a [`latency_histogram`] or a [`server_histogram`]).
    /// Exact: each is recorded at its bucket's lowest value, which counts in the same
    /// bucket, so the counts, total, `max()` and `min_nz()` of `h` are what recording
    /// each value gives.
    fn add_into(&self, h: &mut Histogram<u64>) {
        // Cannot fail: the value is within a latency histogram's range, and a server
        // histogram resizes up to it.
        for (i, n) in self.iter() {
            let _ = h.record_n(bucket_value(i), n);
        }
    }

    /// [`BucketCounts::add_into`] `h`, and starts again from none.
    fn drain_into(&mut self, h: &mut Histogram<u64>) {
        self.add_into(h);
        self.counts.fill(0);
        self.full.clear();
    }

    /// The counts as a [`server_histogram`]: what recording each value into one gives.
    /// Sized once, to the largest value, before anything is counted (grown value by value
    /// it would reallocate, copying what it holds, an octave at a time); it ends the
    /// same, as its length, bucket count and highest trackable value depend only on the
    /// largest value it resized for.
    fn histogram(&self) -> Histogram<u64> {
        let mut h = server_histogram();
        if let Some(last) = self.last_index() {
            // A count of 0 at the largest value: `h` resizes to hold it and takes it as its
            // max (and min), which the count recorded there below does anyway.
            let _ = h.record_n(bucket_value(last), 0);
            self.add_into(&mut h);
        }
        h
    }

    /// `histogram().value_at_quantile(q)` (`q` in `(0, 1]`) without making the
    /// histogram; `None` when nothing was counted. The same steps as hdrhistogram's:
    /// the first index where the running count reaches `ceil(q × total)` (at least 1),
    /// read as its bucket's highest equivalent value.
    fn value_at_quantile(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let target = ((q.min(1.0) * total as f64).ceil() as u64).max(1);
        let mut below = 0u64;
        let found = self.iter().find_map(|(i, n)| {
            below += n;
            (below >= target).then_some(i)
        });
        // Always found (`target` is at most `total`); hdrhistogram reads 0 otherwise.
        Some(found.map_or(0, |i| layout().highest_equivalent(bucket_value(i))))
    }

    /// `Cdf::from_histogram(&histogram())` without making the histogram: every index
    /// with a count, at the median equivalent value of what hdrhistogram's recorded
    /// iteration yields for it (its highest equivalent value).
    fn cdf(&self) -> Cdf {
        let h = layout();
        Cdf::from_medians(self.iter().map(|(i, n)| {
            (
                h.median_equivalent(h.highest_equivalent(bucket_value(i))),
                n,
            )
        }))
    }
}

/// Counts per block that [`BucketCounts`] tests at once for any value.
const BLOCK: usize = 16;

/// A histogram of the buckets of a [`latency_histogram`], for reading them: its
/// equivalent-value ranges depend only on its lowest discernible value and precision.
fn layout() -> &'static Histogram<u64> {
    static LAYOUT: std::sync::OnceLock<Histogram<u64>> = std::sync::OnceLock::new();
    LAYOUT.get_or_init(server_histogram)
}

impl RunMetrics {
    /// Empty metrics for servers with the given worker counts, measuring `[from, to)`.
    pub fn new(workers: &[u32], from: Nanos, to: Nanos) -> RunMetrics {
        RunMetrics {
            latency: latency_histogram(),
            latency_sum: 0.0,
            latency_max: Nanos::ZERO,
            wait: latency_histogram(),
            wait_sum: 0.0,
            waited: 0,
            server_counts: if workers.len() <= MAX_SERVER_HISTOGRAMS {
                workers.iter().map(|_| BucketCounts::default()).collect()
            } else {
                Vec::new()
            },
            batches: vec![[0.0; 2]; BATCHES],
            arrived: 0,
            rejected: 0,
            unroutable: 0,
            failed: 0,
            shed: 0,
            probes: 0,
            client: ClientCounters::default(),
            phases: Vec::new(),
            phase_edges: Vec::new(),
            recovery: None,
            servers: workers.iter().map(|&w| ServerAccumulator::new(w)).collect(),
            from,
            to,
            batch: Divisor::new((to.0.saturating_sub(from.0)) / BATCHES as u64),
            last_batch: (0, 0, 0),
            pending_latency: BucketCounts::default(),
            pending_wait: BucketCounts::default(),
            latency_in_servers: workers.len() <= MAX_SERVER_HISTOGRAMS,
        }
    }

    /// Records per phase too: phases start at the window's start and at each of `edges`
    /// (those strictly inside the window count; see [`phase_edges`]).
    pub fn with_phases(mut self, edges: &[Nanos]) -> RunMetrics {
        self.phase_edges = edges
            .iter()
            .copied()
            .filter(|&e| e > self.from && e < self.to)
            .collect();
        self.phase_edges.sort_unstable();
        self.phase_edges.dedup();
        self.phases = if self.phase_edges.is_empty() {
            Vec::new()
        } else {
            (0..=self.phase_edges.len())
                .map(|_| PhaseAccumulator::default())
                .collect()
        };
        self
    }

    /// Records the windows of the time to recover too (see [`recovery_spec`]; `None`
    /// records nothing).
    pub fn with_recovery(mut self, spec: Option<RecoverySpec>) -> RunMetrics {
        self.recovery =
            spec.map(|spec| Box::new(RecoveryAccumulator::new(spec, self.from, self.to)));
        self
    }

    /// The phase of a request that arrived at `arrival`, if phases are recorded.
    #[inline]
    fn phase(&mut self, arrival: Nanos) -> Option<&mut PhaseAccumulator> {
        if self.phases.is_empty() {
            return None;
        }
        let k = self.phase_edges.partition_point(|&e| e <= arrival);
        self.phases.get_mut(k)
    }

    /// A measured request arrived at `arrival` (per phase; [`RunMetrics::arrived`] is
    /// counted by the caller).
    #[inline]
    pub fn phase_arrived(&mut self, arrival: Nanos) {
        if let Some(p) = self.phase(arrival) {
            p.arrived += 1;
        }
    }

    /// A measured request that arrived at `arrival` ended unserved: failed, rejected,
    /// unroutable or timed out (per phase; the cluster counters are the caller's).
    #[inline]
    pub fn phase_unserved(&mut self, arrival: Nanos) {
        if let Some(r) = self.recovery.as_deref_mut() {
            r.unserved(arrival);
        }
        if let Some(p) = self.phase(arrival) {
            p.unserved += 1;
        }
    }

    /// A measured request that arrived at `arrival` was served in `latency` (per phase;
    /// [`RunMetrics::record_service`] calls it).
    #[inline]
    pub fn phase_served(&mut self, arrival: Nanos, latency: Nanos) {
        if let Some(r) = self.recovery.as_deref_mut() {
            r.served(arrival, latency);
        }
        if let Some(p) = self.phase(arrival) {
            p.latency.saturating_record(latency.0.max(1));
            p.latency_sum += latency.as_secs_f64();
        }
    }

    /// The phases' bounds: `(start, end)` of each, in order (empty without phases).
    pub fn phase_bounds(&self) -> Vec<(Nanos, Nanos)> {
        if self.phases.is_empty() {
            return Vec::new();
        }
        let mut cuts = vec![self.from];
        cuts.extend(&self.phase_edges);
        cuts.push(self.to);
        cuts.windows(2).map(|w| (w[0], w[1])).collect()
    }

    /// Records a measured request's response time.
    #[inline]
    pub fn record_latency(&mut self, latency: Nanos) {
        self.latency_apart();
        self.latency.saturating_record(latency.0.max(1));
        self.latency_sum += latency.as_secs_f64();
        self.latency_max = self.latency_max.max(latency);
    }

    /// [`RunMetrics::record_latency`] and [`RunMetrics::record_service`] in one: the
    /// simulator's path for a measured request served. The response time is recorded once,
    /// into its server's histogram, and [`RunMetrics::latency`] is built from those at
    /// [`RunMetrics::flush`] (when there are per-server histograms; otherwise it is
    /// batched into [`RunMetrics::latency`] until then).
    #[inline]
    pub fn record_served(&mut self, server: usize, arrival: Nanos, latency: Nanos, wait: Nanos) {
        if !self.latency_in_servers {
            self.pending_latency.record(latency.0);
        }
        self.latency_sum += latency.as_secs_f64();
        self.latency_max = self.latency_max.max(latency);
        self.record_service_of(server, arrival, latency, wait);
    }

    /// Records what only the simulator knows of a measured request served by `server`
    /// (besides [`RunMetrics::record_latency`]): its waiting time and which server served it.
    /// Its wait is counted in [`RunMetrics::wait`] by [`RunMetrics::flush`] (a wait of 0 at
    /// 1 ns, the histogram's lowest value).
    #[inline]
    pub fn record_service(&mut self, server: usize, arrival: Nanos, latency: Nanos, wait: Nanos) {
        self.latency_apart();
        self.record_service_of(server, arrival, latency, wait);
    }

    /// [`RunMetrics::record_service`] without separating the latency histograms.
    #[inline]
    fn record_service_of(&mut self, server: usize, arrival: Nanos, latency: Nanos, wait: Nanos) {
        self.phase_served(arrival, latency);
        let secs = latency.as_secs_f64();
        let k = self.batch_of(arrival.0.saturating_sub(self.from.0));
        self.batches[k][0] += secs;
        self.batches[k][1] += 1.0;
        // No branch on whether the request waited (at load 0.8 one in five did not, at
        // random: a mispredicted branch a fifth of the time). A wait of 0 is counted at 1
        // ns ([`clamped`]), as `saturating_record(0.max(1))` counts it; adding its 0.0 to
        // `wait_sum` (never -0.0) leaves the sum unchanged, bit for bit.
        self.pending_wait.record(wait.0);
        self.wait_sum += wait.as_secs_f64();
        self.waited += u64::from(wait > Nanos::ZERO);
        if let Some(p) = self.server_counts.get_mut(server) {
            p.record(latency.0);
        }
        let s = &mut self.servers[server];
        s.served += 1;
        s.latency_sum += secs;
    }

    /// The batch of a request that arrived `x` after the start of the window:
    /// `min(x / batch length, BATCHES - 1)`.
    #[inline]
    fn batch_of(&mut self, x: u64) -> usize {
        let (k, lo, hi) = self.last_batch;
        if x >= lo && x < hi {
            return k;
        }
        let k = (self.batch.quotient(x) as usize).min(BATCHES - 1);
        let lo = (k as u64).saturating_mul(self.batch.d);
        let hi = if k == BATCHES - 1 {
            u64::MAX
        } else {
            lo.saturating_add(self.batch.d)
        };
        self.last_batch = (k, lo, hi);
        k
    }

    /// Records a response time of server `server` at once (live mode; the simulator's
    /// [`RunMetrics::record_service`] records it with the rest of the request).
    pub fn record_server_latency(&mut self, server: usize, latency: Nanos) {
        self.latency_apart();
        if let Some(c) = self.server_counts.get_mut(server) {
            c.record(latency.0);
        }
    }

    /// Records what [`RunMetrics::record_served`] and [`RunMetrics::record_service`]
    /// deferred. The simulator calls it when a run ends; call it before reading
    /// [`RunMetrics::latency`] or [`RunMetrics::wait`] after recording by hand.
    pub fn flush(&mut self) {
        self.latency_apart();
        self.pending_latency.drain_into(&mut self.latency);
        self.pending_wait.drain_into(&mut self.wait);
    }

    /// Ends the sharing of response times between [`RunMetrics::latency`] and the
    /// per-server counts (see `latency_in_servers`): what the servers hold so far is
    /// counted into [`RunMetrics::latency`] once, and from then on every response time is
    /// recorded in both. Exact: the per-server counts have the buckets of a
    /// [`latency_histogram`] and its saturation, so each count lands where a direct
    /// record would.
    fn latency_apart(&mut self) {
        if !std::mem::take(&mut self.latency_in_servers) {
            return;
        }
        for c in &self.server_counts {
            c.add_into(&mut self.latency);
        }
    }

    /// Servers with response times of their own (all of them up to
    /// [`MAX_SERVER_HISTOGRAMS`], none beyond).
    pub fn measured_servers(&self) -> usize {
        self.server_counts.len()
    }

    /// Server `server`'s response times as a [`server_histogram`] (made on each call:
    /// what a histogram recording each one would hold, bit for bit); `None` beyond
    /// [`RunMetrics::measured_servers`].
    pub fn server_latency(&self, server: usize) -> Option<Histogram<u64>> {
        self.server_counts.get(server).map(BucketCounts::histogram)
    }

    /// How many distributions [`RunMetrics::source`] has.
    pub fn source_count(&self) -> usize {
        SOURCE_SERVERS + self.server_counts.len()
    }

    /// The distributions that percentiles pool across replications, indexed as
    /// [`SOURCE_LATENCY`], [`SOURCE_WAIT`] and [`SOURCE_SERVERS`] + server (a server's is
    /// made on each call, as [`RunMetrics::server_latency`]; [`RunMetrics::pool_into`]
    /// and [`RunMetrics::summarize`] read the counts without making it).
    pub fn source(&self, i: usize) -> Option<std::borrow::Cow<'_, Histogram<u64>>> {
        use std::borrow::Cow;
        match i {
            SOURCE_LATENCY => Some(Cow::Borrowed(&self.latency)),
            SOURCE_WAIT => Some(Cow::Borrowed(&self.wait)),
            _ => self.server_latency(i - SOURCE_SERVERS).map(Cow::Owned),
        }
    }

    /// Adds every distribution of [`RunMetrics::source`] into `pooled` (the same order):
    /// what `Histogram::add` of each source gives, the servers' counted straight from
    /// their bucket counts ([`Pooled::add_run`]).
    pub fn pool_into(&self, pooled: &mut Pooled) {
        pooled.add_run(self);
    }

    /// Least-squares growth of the number in system across the window's [`SLICES`] slices
    /// (fitted end minus fitted start).
    pub fn in_system_growth(&self) -> f64 {
        let len = ((self.to.0 - self.from.0) / SLICES as u64).max(1);
        let last = (self.to.0 - self.from.0) - len * (SLICES as u64 - 1);
        let y: Vec<f64> = (0..SLICES)
            .map(|k| {
                let width = if k == SLICES - 1 { last } else { len };
                self.servers.iter().map(|s| s.slices()[k]).sum::<f64>() / width.max(1) as f64
            })
            .collect();
        let n = SLICES as f64;
        let xm = (n - 1.0) / 2.0;
        let ym = y.iter().sum::<f64>() / n;
        let (sxy, sxx) = y.iter().enumerate().fold((0.0, 0.0), |(a, b), (k, v)| {
            let dx = k as f64 - xm;
            (a + dx * (v - ym), b + dx * dx)
        });
        sxy / sxx * (n - 1.0)
    }

    /// Reduces the run to its figures.
    pub fn summarize(&self) -> RunSummary {
        self.summarize_with(
            |i| self.server_counts[i].value_at_quantile(SERVER_QUANTILE),
            self.server_counts.iter().map(BucketCounts::cdf),
        )
    }

    /// [`RunMetrics::summarize`], with each measured server's p99 (`None` when it served
    /// nothing) and compact distribution given.
    fn summarize_with(
        &self,
        server_p99: impl Fn(usize) -> Option<u64>,
        server_cdfs: impl Iterator<Item = Cdf>,
    ) -> RunSummary {
        let window = (self.to - self.from).as_secs_f64();
        let window_ns = (self.to - self.from).0 as f64;
        let served = self.latency.len();
        let waits = self.wait.len();
        let q = |p: f64| {
            if served == 0 {
                f64::NAN
            } else {
                self.latency.value_at_quantile(p) as f64 * 1e-9
            }
        };
        let utils: Vec<f64> = self
            .servers
            .iter()
            .map(|s| s.busy_area / (f64::from(s.workers) * window_ns))
            .collect();
        let n = utils.len() as f64;
        let mean_u = utils.iter().sum::<f64>() / n;
        let max_u = utils.iter().copied().fold(0.0, f64::max);
        let var_u = utils.iter().map(|u| (u - mean_u).powi(2)).sum::<f64>() / n;
        let sum_sq = utils.iter().map(|u| u * u).sum::<f64>();
        let jain = if sum_sq > 0.0 {
            utils.iter().sum::<f64>().powi(2) / (n * sum_sq)
        } else {
            f64::NAN
        };
        let accepted: u64 = self.servers.iter().map(|s| s.requests).sum();
        let in_system = self
            .servers
            .iter()
            .map(|s| s.busy_area + s.queue_area)
            .sum::<f64>()
            / window_ns;
        let undefined_unless = |defined: bool, v: f64| if defined { v } else { f64::NAN };
        let arrived = self.arrived as f64;
        let recovery = self
            .recovery
            .as_ref()
            .and_then(|r| r.time_to_recover(self.to));
        let values = PerMetric::from_fn(|m| match m {
            Metric::LatencyMean => undefined_unless(served > 0, self.latency_sum / served as f64),
            Metric::LatencyP50 => q(0.5),
            Metric::LatencyP90 => q(0.9),
            Metric::LatencyP95 => q(0.95),
            Metric::LatencyP99 => q(0.99),
            Metric::LatencyP999 => q(0.999),
            Metric::LatencyMax => undefined_unless(served > 0, self.latency_max.as_secs_f64()),
            Metric::WaitMean => undefined_unless(waits > 0, self.wait_sum / waits as f64),
            Metric::WaitP99 => {
                undefined_unless(waits > 0, self.wait.value_at_quantile(0.99) as f64 * 1e-9)
            }
            Metric::WaitedFraction => {
                undefined_unless(waits > 0, self.waited as f64 / waits as f64)
            }
            Metric::Throughput => served as f64 / window,
            Metric::RejectedFraction => {
                if self.arrived == 0 {
                    0.0
                } else {
                    (self.rejected + self.unroutable) as f64 / self.arrived as f64
                }
            }
            Metric::ErrorFraction => {
                if self.arrived == 0 {
                    0.0
                } else {
                    self.failed as f64 / self.arrived as f64
                }
            }
            Metric::UtilizationMean => mean_u,
            Metric::UtilizationMax => max_u,
            Metric::UtilizationCv => undefined_unless(mean_u > 0.0, var_u.sqrt() / mean_u),
            Metric::UtilizationMaxOverMean => undefined_unless(mean_u > 0.0, max_u / mean_u),
            Metric::JainIndex => jain,
            Metric::QueueMean => {
                self.servers.iter().map(|s| s.queue_area).sum::<f64>() / (n * window_ns)
            }
            Metric::QueueMax => {
                f64::from(self.servers.iter().map(|s| s.queue_max).max().unwrap_or(0))
            }
            Metric::InSystemMean => in_system,
            Metric::AcceptedRate => accepted as f64 / window,
            Metric::InSystemGrowth => self.in_system_growth(),
            Metric::ProbesPerRequest => {
                if self.arrived == 0 {
                    0.0
                } else {
                    self.probes as f64 / self.arrived as f64
                }
            }
            Metric::SuccessRate => undefined_unless(self.arrived > 0, served as f64 / arrived),
            Metric::AttemptsPerRequest => {
                undefined_unless(self.arrived > 0, self.client.attempts as f64 / arrived)
            }
            Metric::RetryRate => {
                undefined_unless(self.arrived > 0, self.client.retries as f64 / arrived)
            }
            Metric::HedgeRate => {
                undefined_unless(self.arrived > 0, self.client.hedges as f64 / arrived)
            }
            Metric::TimeoutFraction => {
                undefined_unless(self.arrived > 0, self.client.timed_out as f64 / arrived)
            }
            Metric::WastedFraction => {
                if self.client.wasted == 0.0 {
                    0.0
                } else {
                    self.client.wasted / self.client.work
                }
            }
            Metric::OverflowFraction => {
                if self.client.overflowed == 0 {
                    0.0
                } else {
                    self.client.overflowed as f64 / self.client.attempts as f64
                }
            }
            Metric::Ejections => self.client.ejections as f64,
            Metric::TimeToRecover => recovery.map_or(f64::NAN, |r| r.0),
            Metric::RecoveredFraction => recovery.map_or(f64::NAN, |r| f64::from(u8::from(r.1))),
            Metric::ShedFraction => undefined_unless(self.arrived > 0, self.shed as f64 / arrived),
        });
        let servers = self
            .servers
            .iter()
            .zip(&utils)
            .enumerate()
            .map(|(i, (s, &u))| (s, u, (i < self.server_counts.len()).then_some(i)))
            .map(|(s, u, h)| ServerSummary {
                requests: s.requests as f64,
                share: if accepted == 0 {
                    0.0
                } else {
                    s.requests as f64 / accepted as f64
                },
                utilization: u,
                queue_mean: s.queue_area / window_ns,
                queue_max: f64::from(s.queue_max),
                latency_mean: if s.served == 0 {
                    f64::NAN
                } else {
                    s.latency_sum / s.served as f64
                },
                latency_p99: match h.and_then(&server_p99) {
                    Some(v) => v as f64 * 1e-9,
                    None => f64::NAN,
                },
            })
            .collect();
        RunSummary {
            values,
            servers,
            cdfs: [&self.latency, &self.wait]
                .into_iter()
                .map(Cdf::from_histogram)
                .chain(server_cdfs)
                .collect(),
            batches: self.batches.clone(),
            phases: self
                .phases
                .iter()
                .map(PhaseAccumulator::summarize)
                .collect(),
        }
    }
}

/// Where a scenario's phases start (besides the window's start): every fault's start and
/// end. The phases are then before, during and after each fault window, so that a
/// disagreement during a fault is not averaged away over the run (the live verdict
/// compares them one by one).
pub fn phase_edges(scenario: &crate::scenario::Scenario) -> Vec<Nanos> {
    scenario
        .faults
        .iter()
        .flat_map(|f| std::iter::once(f.at).chain(f.until))
        .map(Nanos::from_secs_f64)
        .collect()
}

/// The windows a scenario's time to recover is measured on ([`Metric::TimeToRecover`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoverySpec {
    /// Start of the first fault: the requests that arrived in the measured window before it
    /// give the p99 to recover to.
    pub fault_start: Nanos,
    /// End of the last fault: the time to recover counts from here.
    pub fault_end: Nanos,
    /// Window length: the time series' sampling period (run length /
    /// [`crate::report::timeseries::SAMPLES`]), windows lying on its grid `k × every`.
    pub every: Nanos,
}

/// A window is recovered when its p99 is at most this many times the p99 before the fault.
pub const RECOVERED_WITHIN: f64 = 1.1;

/// Where `scenario`'s time to recover is measured, or `None` when it is not defined: no
/// fault, a fault without an end (no `duration`, or `cold` and `deploy`, whose ends depend on
/// the run), the first fault starting before the measured window does (no p99 before the
/// fault to recover to), or the last ending less than one window before the run does.
pub fn recovery_spec(scenario: &crate::scenario::Scenario) -> Option<RecoverySpec> {
    let first = scenario.faults.iter().map(|f| f.at).reduce(f64::min)?;
    let last = scenario
        .faults
        .iter()
        .map(|f| f.until)
        .try_fold(f64::NEG_INFINITY, |a, u| u.map(|u| a.max(u)))?;
    let end = Nanos::from_secs_f64(scenario.end());
    let every = Nanos((end.0 / crate::report::timeseries::SAMPLES).max(1));
    let spec = RecoverySpec {
        fault_start: Nanos::from_secs_f64(first),
        fault_end: Nanos::from_secs_f64(last),
        every,
    };
    let from = Nanos::from_secs_f64(scenario.warmup);
    (spec.fault_start > from && spec.first_window() + every <= end).then_some(spec)
}

impl RecoverySpec {
    /// Start of the first window: the first grid point at or after the fault's end.
    pub fn first_window(&self) -> Nanos {
        Nanos(self.fault_end.0.div_ceil(self.every.0) * self.every.0)
    }
}

/// The requests of one window of [`RecoveryAccumulator`], by arrival time.
#[derive(Clone, Debug)]
pub struct WindowTail {
    /// Requests that ended unserved (failed, refused, timed out).
    pub unserved: u64,
    /// Response times of those served (2 significant digits: a window is judged at 10%).
    pub latency: Histogram<u32>,
}

impl WindowTail {
    fn new() -> WindowTail {
        WindowTail {
            unserved: 0,
            latency: Histogram::new_with_bounds(1_000, LATENCY_HIGH_NS, 2)
                .expect("valid histogram bounds"),
        }
    }

    /// The p99 response time of the requests that ended, those unserved counting as slower
    /// than any served: infinite when more than 1% ended unserved, `None` when none ended.
    pub fn p99(&self) -> Option<f64> {
        let served = self.latency.len();
        let ended = served + self.unserved;
        if ended == 0 {
            return None;
        }
        // The rank of the p99 among all that ended, 1-based.
        let rank = (0.99 * ended as f64).ceil().max(1.0) as u64;
        Some(if rank > served {
            f64::INFINITY
        } else {
            self.latency
                .value_at_quantile(rank as f64 / served as f64)
                .max(1) as f64
                * 1e-9
        })
    }
}

/// The requests of a run around its faults, for the time to recover: those that arrived
/// in the measured window before the first fault, and those of each window from the end of
/// the last fault to the end of the run. Memory: at most
/// [`crate::report::timeseries::SAMPLES`] windows of about 14 kB, whatever the run length.
#[derive(Clone, Debug)]
pub struct RecoveryAccumulator {
    spec: RecoverySpec,
    from: Nanos,
    first: Nanos,
    /// Before the first fault.
    pub before: WindowTail,
    /// The windows after the last fault, in order.
    pub windows: Vec<WindowTail>,
}

impl RecoveryAccumulator {
    /// Empty windows for a run measuring `[from, to)`.
    pub fn new(spec: RecoverySpec, from: Nanos, to: Nanos) -> RecoveryAccumulator {
        let first = spec.first_window();
        let n = to.0.saturating_sub(first.0) / spec.every.0;
        RecoveryAccumulator {
            spec,
            from,
            first,
            before: WindowTail::new(),
            windows: (0..n).map(|_| WindowTail::new()).collect(),
        }
    }

    /// The window of a request that arrived at `arrival`, if any.
    #[inline]
    fn window(&mut self, arrival: Nanos) -> Option<&mut WindowTail> {
        if arrival < self.spec.fault_start {
            (arrival >= self.from).then_some(&mut self.before)
        } else if arrival >= self.first {
            let k = (arrival.0 - self.first.0) / self.spec.every.0;
            self.windows.get_mut(k as usize)
        } else {
            None
        }
    }

    /// A measured request that arrived at `arrival` ended unserved.
    #[inline]
    pub fn unserved(&mut self, arrival: Nanos) {
        if let Some(w) = self.window(arrival) {
            w.unserved += 1;
        }
    }

    /// A measured request that arrived at `arrival` was served in `latency`.
    #[inline]
    pub fn served(&mut self, arrival: Nanos, latency: Nanos) {
        if let Some(w) = self.window(arrival) {
            w.latency.saturating_record(latency.0.max(1));
        }
    }

    /// The time to recover (seconds) and whether the run recovered, for a run ending at
    /// `to`; `None` when the p99 before the fault is not defined (no request ended before
    /// it, or more than 1% unserved). Recovered: the end of the first window whose p99 is
    /// at most [`RECOVERED_WITHIN`] × the p99 before the fault, minus the fault's end.
    /// Never: `to` minus the fault's end (censored).
    pub fn time_to_recover(&self, to: Nanos) -> Option<(f64, bool)> {
        let before = self.before.p99().filter(|p| p.is_finite())?;
        let end = self.spec.fault_end;
        let recovered = self
            .windows
            .iter()
            .position(|w| w.p99().is_some_and(|p| p <= RECOVERED_WITHIN * before));
        Some(match recovered {
            Some(k) => {
                let window_end = self.first + Nanos(self.spec.every.0 * (k as u64 + 1));
                ((window_end - end).as_secs_f64(), true)
            }
            None => ((to - end).as_secs_f64(), false),
        })
    }
}

/// What one phase of a run recorded (requests by arrival time in the phase).
#[derive(Clone, Debug)]
pub struct PhaseAccumulator {
    /// Measured requests that arrived.
    pub arrived: u64,
    /// Of those, ended unserved (failed, rejected, unroutable, timed out).
    pub unserved: u64,
    /// Response times of those served.
    pub latency: Histogram<u64>,
    /// Exact sum of those response times (seconds).
    pub latency_sum: f64,
}

impl Default for PhaseAccumulator {
    fn default() -> Self {
        PhaseAccumulator {
            arrived: 0,
            unserved: 0,
            latency: latency_histogram(),
            latency_sum: 0.0,
        }
    }
}

impl PhaseAccumulator {
    /// Its figures.
    pub fn summarize(&self) -> PhaseSummary {
        let served = self.latency.len();
        let q = |p: f64| {
            if served == 0 {
                f64::NAN
            } else {
                self.latency.value_at_quantile(p) as f64 * 1e-9
            }
        };
        PhaseSummary {
            arrived: self.arrived as f64,
            latency_mean: if served == 0 {
                f64::NAN
            } else {
                self.latency_sum / served as f64
            },
            latency_p50: q(0.5),
            latency_p99: q(0.99),
            error_fraction: if self.arrived == 0 {
                f64::NAN
            } else {
                self.unserved as f64 / self.arrived as f64
            },
        }
    }
}

/// The figures of one phase of one run (seconds, fractions).
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseSummary {
    /// Measured requests that arrived in it.
    pub arrived: f64,
    /// Mean response time of those served.
    pub latency_mean: f64,
    /// Their median response time.
    pub latency_p50: f64,
    /// Their 99th percentile response time.
    pub latency_p99: f64,
    /// Fraction of those arrived that ended unserved.
    pub error_fraction: f64,
}

/// The figures of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    /// One value per metric (NaN when undefined, e.g. no request served).
    pub values: PerMetric<f64>,
    /// Per server, in server order.
    pub servers: Vec<ServerSummary>,
    /// Each of [`RunMetrics::source`], compactly, for the intervals of pooled percentiles.
    pub cdfs: Vec<Cdf>,
    /// [`RunMetrics::batches`] (empty where not measured, e.g. live mode).
    pub batches: Vec<[f64; 2]>,
    /// Per phase ([`RunMetrics::with_phases`]; empty without phases).
    pub phases: Vec<PhaseSummary>,
}

/// Defines [`ServerSummary`], [`SERVER_METRICS`] and the array conversions from one list
/// of fields, so that a figure is named once and the orders cannot drift apart.
macro_rules! server_figures {
    ($($(#[doc = $doc:literal])* $field:ident,)*) => {
        /// The figures of one server in one run.
        #[derive(Clone, Debug, PartialEq)]
        pub struct ServerSummary {
            $($(#[doc = $doc])* pub $field: f64,)*
        }

        /// Names of the per-server figures, in the order of [`ServerSummary::as_array`].
        pub const SERVER_METRICS: [&str; 7] = [$(stringify!($field)),*];

        impl ServerSummary {
            /// The figures in the order of [`SERVER_METRICS`].
            pub fn as_array(&self) -> [f64; 7] {
                [$(self.$field),*]
            }

            /// The inverse of [`ServerSummary::as_array`].
            pub fn from_array(a: [f64; 7]) -> ServerSummary {
                let [$($field),*] = a;
                ServerSummary { $($field),* }
            }
        }
    };
}

server_figures! {
    /// Measured requests it accepted.
    requests,
    /// Its share of all accepted requests.
    share,
    /// Busy worker-time over workers × window.
    utilization,
    /// Time-average number waiting.
    queue_mean,
    /// Largest number waiting.
    queue_max,
    /// Mean response time of the measured requests it served (seconds).
    latency_mean,
    /// Their 99th percentile (this replication's; reports pool replications).
    latency_p99,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_p99_counts_unserved_as_slower_than_any_served() {
        let mut w = WindowTail::new();
        assert_eq!(w.p99(), None);
        for k in 1..=99u64 {
            w.latency.record(k * 1_000_000).unwrap();
        }
        // 100 requests, one unserved: the p99 is the 99th, the slowest served (99 ms).
        w.unserved = 1;
        let p = w.p99().unwrap();
        assert!((p - 0.099).abs() < 0.099 * 0.01, "{p}");
        // Two unserved of 101: the 100th of 101 is unserved, so the p99 is infinite.
        w.unserved = 2;
        assert_eq!(w.p99(), Some(f64::INFINITY));
    }

    #[test]
    fn time_to_recover_is_the_end_of_the_first_window_back_within_ten_percent() {
        let spec = RecoverySpec {
            fault_start: Nanos::from_secs_f64(10.0),
            fault_end: Nanos::from_secs_f64(20.5),
            every: Nanos::from_secs_f64(1.0),
        };
        assert_eq!(spec.first_window(), Nanos::from_secs_f64(21.0));
        let (from, to) = (Nanos::from_secs_f64(5.0), Nanos::from_secs_f64(30.0));
        let fill = |slow_until: f64| {
            let mut r = RecoveryAccumulator::new(spec, from, to);
            assert_eq!(r.windows.len(), 9);
            // 50 ms before the fault (and in warm-up, which does not count), 500 ms until
            // `slow_until`, then 54 ms (within 10%), one request every 10 ms.
            for i in 0..3_000u64 {
                let t = i as f64 * 0.01;
                let latency = if t < 10.0 {
                    if t < 5.0 { 9.0 } else { 0.05 }
                } else if t < slow_until {
                    0.5
                } else {
                    0.054
                };
                r.served(Nanos::from_secs_f64(t), Nanos::from_secs_f64(latency));
            }
            r
        };
        // Slow until 23.4 s: the window [23, 24) is not recovered, [24, 25) is: 25 − 20.5.
        let (t, ok) = fill(23.4).time_to_recover(to).unwrap();
        assert!(ok && (t - 4.5).abs() < 1e-9, "{t}");
        // Back at once: the first window on the grid, [21, 22).
        let (t, ok) = fill(20.5).time_to_recover(to).unwrap();
        assert!(ok && (t - 1.5).abs() < 1e-9, "{t}");
        // Never: censored at the end of the run.
        let (t, ok) = fill(99.0).time_to_recover(to).unwrap();
        assert!(!ok && (t - 9.5).abs() < 1e-9, "{t}");
        // A window with 2% unserved is not recovered, whatever its served requests' p99.
        let mut r = fill(20.5);
        r.windows[0].unserved = 3;
        assert!((r.time_to_recover(to).unwrap().0 - 2.5).abs() < 1e-9);
        // No p99 before the fault (nothing ended, or over 1% unserved): undefined.
        let mut r = fill(20.5);
        r.before.unserved = 1_000;
        assert_eq!(r.time_to_recover(to), None);
    }

    proptest::proptest! {
        #[test]
        fn divisor_quotient_is_exact(x in 0u64..(1 << 62), d in 1u64..(1 << 40)) {
            proptest::prop_assert_eq!(Divisor::new(d).quotient(x), x / d);
        }
    }

    /// The slices as the accumulator computed them with a division per event.
    fn slices_by_division(steps: &[(u64, u32)], from: u64, to: u64) -> [f64; SLICES] {
        let mut slices = [0.0; SLICES];
        let mut last = 0;
        for &(now, n) in steps {
            let (a, b) = (last.max(from), now.min(to));
            if b > a && n > 0 {
                let len = ((to - from) / SLICES as u64).max(1);
                let mut t = a;
                while t < b {
                    let k = (((t - from) / len) as usize).min(SLICES - 1);
                    let end = if k == SLICES - 1 {
                        b
                    } else {
                        (from + (k as u64 + 1) * len).min(b)
                    };
                    slices[k] += f64::from(n) * (end - t) as f64;
                    t = end;
                }
            }
            last = now;
        }
        slices
    }

    proptest::proptest! {
        #[test]
        fn slices_without_division_are_the_same(
            from in 0u64..1000,
            width in 1u64..5000,
            gaps in proptest::collection::vec((0u64..700, 0u32..4), 1..60),
        ) {
            let to = from + width;
            let mut now = 0;
            let steps: Vec<(u64, u32)> = gaps.iter().map(|&(g, n)| { now += g; (now, n) }).collect();
            let mut acc = ServerAccumulator::new(1);
            let mut state = 0u32;
            for &(t, n) in &steps {
                // `n` held since the previous call: the accumulator is told the old state.
                acc.advance(Nanos(t), state, 0, Nanos(from), Nanos(to));
                state = n;
            }
            // The reference takes the state that held until each time.
            let mut prev = 0u32;
            let shifted: Vec<(u64, u32)> = steps.iter().map(|&(t, n)| { let s = (t, prev); prev = n; s }).collect();
            // Bit for bit (an idle server's 0.0 is added within a slice).
            let bits = |s: [f64; SLICES]| s.map(f64::to_bits);
            proptest::prop_assert_eq!(bits(acc.slices()), bits(slices_by_division(&shifted, from, to)));
        }
    }

    proptest::proptest! {
        /// The batch kept from the last record changes nothing: arrivals in any order land
        /// in the batch a division gives.
        #[test]
        fn the_kept_batch_is_the_divided_one(
            width in 0u64..100_000,
            xs in proptest::collection::vec(
                proptest::prop_oneof![0u64..120_000, proptest::prelude::any::<u64>()],
                0..80,
            ),
        ) {
            let mut m = RunMetrics::new(&[1], Nanos(0), Nanos(width));
            let d = (width / BATCHES as u64).max(1);
            for &x in &xs {
                let want = usize::try_from(x / d).map_or(BATCHES - 1, |k| k.min(BATCHES - 1));
                proptest::prop_assert_eq!(m.batch_of(x), want, "{} / {}", x, d);
            }
        }
    }

    #[test]
    fn divisor_at_slice_edges() {
        for d in [1u64, 3, 7, 1000, 2_000_000_000, (1 << 40) + 1] {
            let div = Divisor::new(d);
            for k in [0u64, 1, 2, 9, 99, 1 << 20] {
                for x in [k * d, (k * d).saturating_sub(1), k * d + 1] {
                    assert_eq!(div.quotient(x), x / d, "{x} / {d}");
                }
            }
        }
    }

    /// Everything read from a histogram: what the reports and `check` see.
    fn readings(h: &Histogram<u64>) -> (u64, u64, u64, Vec<u64>, Cdf) {
        let qs = [0.0, 0.01, 0.5, 0.9, 0.99, 0.999, 1.0]
            .map(|p| h.value_at_quantile(p))
            .to_vec();
        (h.len(), h.max(), h.min_nz(), qs, Cdf::from_histogram(h))
    }

    proptest::proptest! {
        /// Batched, growing per-server histograms read as fixed ones recorded one by one,
        /// alone and pooled, edges of the range included (saturation above 2^43 ns).
        #[test]
        fn server_histograms_read_as_latency_histograms(
            values in proptest::collection::vec(
                proptest::prop_oneof![
                    0u64..3000,
                    0u64..50_000_000,
                    (LATENCY_HIGH_NS - 5)..(LATENCY_UNTRACKABLE_NS + 5),
                    proptest::prelude::any::<u64>(),
                ],
                1..300,
            ),
        ) {
            let mut m = RunMetrics::new(&[1, 1], Nanos(0), Nanos(1_000));
            let mut direct = [latency_histogram(), latency_histogram()];
            for (k, &v) in values.iter().enumerate() {
                let i = k % 2;
                m.record_service(i, Nanos(0), Nanos(v), Nanos::ZERO);
                direct[i].saturating_record(v.max(1));
            }
            m.flush();
            let mut pooled = latency_histogram();
            let mut pooled_direct = latency_histogram();
            for (i, d) in direct.iter().enumerate() {
                let h = m.server_latency(i).unwrap();
                proptest::prop_assert_eq!(readings(&h), readings(d));
                pooled.add(&h).unwrap();
                pooled_direct.add(d).unwrap();
            }
            proptest::prop_assert_eq!(readings(&pooled), readings(&pooled_direct));
        }
    }

    /// The batched path records what the direct one does, whatever the batch boundaries.
    #[test]
    fn record_served_is_record_latency_and_record_service() {
        for n in [0u64, 1, 63, 64, 65, 200] {
            let mut a = RunMetrics::new(&[1, 1], Nanos(0), Nanos(1_000_000));
            let mut b = a.clone();
            for k in 0..n {
                let (i, lat, wait) = ((k % 2) as usize, Nanos(k * 977 % 5000), Nanos(k % 3 * 40));
                a.record_served(i, Nanos(k), lat, wait);
                b.record_latency(lat);
                b.record_service(i, Nanos(k), lat, wait);
            }
            a.flush();
            b.flush();
            assert_eq!(a.latency, b.latency, "{n}");
            assert_eq!(a.wait, b.wait, "{n}");
            for i in 0..2 {
                assert_eq!(a.server_latency(i), b.server_latency(i), "{n}");
            }
            let (sa, sb) = (a.summarize(), b.summarize());
            assert_eq!(format!("{sa:?}"), format!("{sb:?}"), "{n}");
        }
    }

    /// The deferral of `record_served` stays exact whatever comes after it.
    #[derive(Clone, Debug)]
    enum Record {
        Served(usize, u64, u64),
        Latency(u64),
        Service(usize, u64),
        Server(usize, u64),
        Flush,
    }

    fn latency_value() -> impl proptest::strategy::Strategy<Value = u64> {
        proptest::prop_oneof![
            0u64..3000,
            0u64..50_000_000,
            (LATENCY_HIGH_NS - 5)..(LATENCY_UNTRACKABLE_NS + 5),
            proptest::prelude::any::<u64>(),
        ]
    }

    fn record_op() -> impl proptest::strategy::Strategy<Value = Record> {
        use proptest::strategy::Strategy as _;
        proptest::prop_oneof![
            8 => (0usize..3, latency_value(), 0u64..1000).prop_map(|(i, v, w)| Record::Served(i, v, w)),
            1 => latency_value().prop_map(Record::Latency),
            1 => (0usize..3, latency_value()).prop_map(|(i, v)| Record::Service(i, v)),
            1 => (0usize..3, latency_value()).prop_map(|(i, v)| Record::Server(i, v)),
            1 => proptest::strategy::Just(Record::Flush),
        ]
    }

    proptest::proptest! {
        /// `record_served` records a response time once (in its server's histogram) and
        /// `flush` builds the overall histogram from the servers': everything read from
        /// it is what recording each value into it directly gives, mixed with the other
        /// ways to record, flushed at any point, and edges of the range included.
        #[test]
        fn latency_built_from_servers_is_the_directly_recorded_one(
            ops in proptest::collection::vec(record_op(), 0..400),
        ) {
            let mut a = RunMetrics::new(&[1, 2, 1], Nanos(0), Nanos(1_000_000));
            let mut direct = latency_histogram();
            let mut servers = [latency_histogram(), latency_histogram(), latency_histogram()];
            for op in &ops {
                match *op {
                    Record::Served(i, v, w) => {
                        a.record_served(i, Nanos(w), Nanos(v), Nanos(w));
                        direct.saturating_record(v.max(1));
                        servers[i].saturating_record(v.max(1));
                    }
                    Record::Latency(v) => {
                        a.record_latency(Nanos(v));
                        direct.saturating_record(v.max(1));
                    }
                    Record::Service(i, v) => {
                        a.record_service(i, Nanos(0), Nanos(v), Nanos::ZERO);
                        servers[i].saturating_record(v.max(1));
                    }
                    Record::Server(i, v) => {
                        a.record_server_latency(i, Nanos(v));
                        servers[i].saturating_record(v.max(1));
                    }
                    Record::Flush => {
                        a.flush();
                        proptest::prop_assert_eq!(readings(&a.latency), readings(&direct));
                    }
                }
            }
            a.flush();
            proptest::prop_assert_eq!(&a.latency, &direct);
            proptest::prop_assert_eq!(readings(&a.latency), readings(&direct));
            for (i, d) in servers.iter().enumerate() {
                proptest::prop_assert_eq!(readings(&a.server_latency(i).unwrap()), readings(d));
            }
            a.flush();
            proptest::prop_assert_eq!(&a.latency, &direct);
        }
    }

    /// A server's counts against an eager histogram (each value recorded at its bucket's
    /// lowest value as it comes, as the batched path recorded them before; the exact
    /// values make the same histogram but for the raw max and min kept inside, which
    /// read back the same): what `server_latency` makes is that [`server_histogram`],
    /// every field (counts, length, bucket count, highest trackable value: `Debug` shows
    /// them all); its p99 and compact distribution read from the counts are the
    /// histogram's; and pooling the counts adds what `Histogram::add` of the eager
    /// histogram adds.
    fn check_counts_against_eager(
        m: &RunMetrics,
        eager: &[Histogram<u64>],
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let mut pooled = Pooled::new(eager.len());
        m.pool_into(&mut pooled);
        let mut pooled_eager = empty_pools(eager.len());
        pooled_eager[SOURCE_LATENCY].add(&m.latency).unwrap();
        pooled_eager[SOURCE_WAIT].add(&m.wait).unwrap();
        let summary = m.summarize();
        for (i, e) in eager.iter().enumerate() {
            let lazy = m.server_latency(i).unwrap();
            proptest::prop_assert_eq!(format!("{lazy:?}"), format!("{e:?}"), "server {}", i);
            proptest::prop_assert_eq!(&lazy, e);
            let p99 = (!e.is_empty()).then(|| e.value_at_quantile(SERVER_QUANTILE));
            proptest::prop_assert_eq!(m.server_counts[i].value_at_quantile(SERVER_QUANTILE), p99);
            for q in [0.001, 0.5, 0.9, 0.999, 1.0] {
                let v = (!e.is_empty()).then(|| e.value_at_quantile(q));
                proptest::prop_assert_eq!(m.server_counts[i].value_at_quantile(q), v, "q {}", q);
            }
            let p99 = p99.map_or(f64::NAN, |v| v as f64 * 1e-9);
            proptest::prop_assert_eq!(summary.servers[i].latency_p99.to_bits(), p99.to_bits());
            proptest::prop_assert_eq!(&summary.cdfs[SOURCE_SERVERS + i], &Cdf::from_histogram(e));
            pooled_eager[SOURCE_SERVERS + i].add(e).unwrap();
            proptest::prop_assert_eq!(&*m.source(SOURCE_SERVERS + i).unwrap(), e);
        }
        proptest::prop_assert_eq!(pooled.len(), pooled_eager.len());
        for (i, e) in pooled_eager.iter().enumerate() {
            // A server's pool, made into a histogram and added into a latency histogram,
            // is the eager pool whole (`pool::tests` checks its readings).
            let p = match pooled.source(i).unwrap() {
                PooledSource::Histogram(h) => h.clone(),
                PooledSource::Server(s) => {
                    let mut h = latency_histogram();
                    h.add(s.histogram()).unwrap();
                    h
                }
            };
            proptest::prop_assert_eq!(format!("{p:?}"), format!("{e:?}"));
        }
        Ok(())
    }

    /// Empty pools as the runner makes them: latency histograms.
    fn empty_pools(servers: usize) -> Vec<Histogram<u64>> {
        (0..SOURCE_SERVERS + servers)
            .map(|_| latency_histogram())
            .collect()
    }

    proptest::proptest! {
        /// Per-server response times kept as counts read, pool and summarize exactly as
        /// eager per-server histograms (each value recorded as it comes): values over the
        /// whole range, saturation past [`LATENCY_HIGH_NS`], servers that served nothing,
        /// through the simulator's path and live mode's, flushed or not.
        #[test]
        fn server_counts_are_the_eager_histograms(
            ops in proptest::collection::vec(
                (0usize..4, latency_value(), proptest::prelude::any::<bool>()),
                0..300,
            ),
            flush in proptest::prelude::any::<bool>(),
        ) {
            let mut m = RunMetrics::new(&[1, 2, 1, 1], Nanos(0), Nanos(1_000_000));
            let mut eager: Vec<Histogram<u64>> = (0..4).map(|_| server_histogram()).collect();
            let mut exact = eager.clone();
            for &(i, v, live) in &ops {
                // Server 3 never serves: an empty histogram, an undefined p99.
                let i = i % 3;
                if live {
                    m.record_server_latency(i, Nanos(v));
                } else {
                    m.record_served(i, Nanos(0), Nanos(v), Nanos::ZERO);
                }
                eager[i].record(layout().lowest_equivalent(clamped(v))).unwrap();
                exact[i].record(clamped(v)).unwrap();
            }
            if flush {
                m.flush();
            }
            check_counts_against_eager(&m, &eager)?;
            for (i, e) in exact.iter().enumerate() {
                let lazy = m.server_latency(i).unwrap();
                proptest::prop_assert_eq!(&lazy, e);
                proptest::prop_assert_eq!(readings(&lazy), readings(e));
            }
        }
    }

    /// The same past 2^16 values in one bucket (the counts' overflow, read through the
    /// merged walk), beside values in other buckets and at saturation.
    #[test]
    fn overflowed_counts_are_the_eager_histograms() {
        let mut m = RunMetrics::new(&[1, 1], Nanos(0), Nanos(1_000));
        let mut eager = [server_histogram(), server_histogram()];
        let n = 2 * (1u64 << 16) + 3;
        for k in 0..n {
            let v = match k % 1000 {
                0 => 3_000 + k,
                1 => u64::MAX,
                _ => 70_000,
            };
            m.record_served(0, Nanos(0), Nanos(v), Nanos::ZERO);
            eager[0]
                .record(layout().lowest_equivalent(clamped(v)))
                .unwrap();
        }
        m.record_served(1, Nanos(0), Nanos(5), Nanos::ZERO);
        eager[1].record(5).unwrap();
        assert_eq!(m.server_counts[0].full.len(), 1);
        check_counts_against_eager(&m, &eager).unwrap();
        m.flush();
        check_counts_against_eager(&m, &eager).unwrap();
    }

    /// Adding histograms reads as recording directly only for histograms of the same
    /// configuration: a server histogram of another precision would move the overall
    /// percentiles, and this comparison sees it (the check the tests above rely on).
    #[test]
    fn adding_histograms_of_another_precision_is_caught() {
        let values: Vec<u64> = (0..2000u64)
            .map(|k| 1_000 + k * 7_919 % 3_000_000)
            .collect();
        let mut direct = latency_histogram();
        let mut same = server_histogram();
        let mut coarse = Histogram::<u64>::new_with_bounds(1, 2, 2).unwrap();
        coarse.auto(true);
        for &v in &values {
            direct.record(v).unwrap();
            same.record(v).unwrap();
            coarse.record(v).unwrap();
        }
        let (mut from_same, mut from_coarse) = (latency_histogram(), latency_histogram());
        from_same.add(&same).unwrap();
        from_coarse.add(&coarse).unwrap();
        assert_eq!(readings(&from_same), readings(&direct));
        assert_eq!(from_same, direct);
        assert_ne!(readings(&from_coarse), readings(&direct));
        assert_ne!(from_coarse, direct);
    }

    /// Beyond [`MAX_SERVER_HISTOGRAMS`] servers there is nothing to build from: every
    /// response time is recorded directly.
    #[test]
    fn many_servers_record_latency_directly() {
        let workers = vec![1; MAX_SERVER_HISTOGRAMS + 1];
        let mut m = RunMetrics::new(&workers, Nanos(0), Nanos(1_000));
        let mut direct = latency_histogram();
        for k in 0..200u64 {
            m.record_served((k % 300) as usize, Nanos(0), Nanos(500 + k), Nanos::ZERO);
            direct.record(500 + k).unwrap();
        }
        m.flush();
        assert_eq!(m.measured_servers(), 0);
        assert_eq!(m.server_latency(0), None);
        assert_eq!(m.source_count(), SOURCE_SERVERS);
        assert_eq!(m.latency, direct);
    }

    #[test]
    fn server_latencies_need_no_flush() {
        let mut m = RunMetrics::new(&[1], Nanos(0), Nanos(1_000));
        for k in 0..67 {
            m.record_service(0, Nanos(0), Nanos(1000 + k), Nanos::ZERO);
        }
        assert_eq!(m.server_latency(0).unwrap().len(), 67);
        m.flush();
        assert_eq!(m.server_latency(0).unwrap().len(), 67);
        m.record_server_latency(0, Nanos(u64::MAX));
        assert_eq!(
            m.server_latency(0).unwrap().max(),
            latency_histogram().highest_equivalent(LATENCY_HIGH_NS)
        );
    }

    proptest::proptest! {
        /// The compact counts index values as hdrhistogram does: `bucket_index` gives the
        /// same bucket as the crate (the same lowest equivalent value) for every value a
        /// latency histogram counts, and `bucket_value` is that bucket's lowest value.
        #[test]
        fn bucket_index_is_the_histograms(v in latency_value()) {
            let h = latency_histogram();
            let v = clamped(v);
            let i = bucket_index(v);
            proptest::prop_assert_eq!(bucket_value(i), h.lowest_equivalent(v));
            proptest::prop_assert_eq!(bucket_index(bucket_value(i)), i);
            proptest::prop_assert_eq!(bucket_index(h.highest_equivalent(v)), i);
            if i > 0 {
                proptest::prop_assert_eq!(bucket_index(bucket_value(i) - 1), i - 1);
            }
        }
    }

    /// Every index of a latency histogram, and the values at its edges.
    #[test]
    fn bucket_index_covers_the_histogram() {
        let h = latency_histogram();
        let last = bucket_index(LATENCY_UNTRACKABLE_NS - 1);
        assert_eq!(
            bucket_index(LATENCY_HIGH_NS),
            bucket_index(clamped(u64::MAX))
        );
        for i in 0..=last {
            let v = bucket_value(i);
            assert_eq!(bucket_index(v), i, "{v}");
            assert_eq!(h.lowest_equivalent(v), v, "{i}");
        }
        assert_eq!(bucket_index(1), 1);
        assert_eq!(bucket_index(2047), 2047);
        assert_eq!(bucket_index(2048), 2048);
        assert_eq!(bucket_index(2049), 2048);
    }

    /// A count past 2^16 at one index is kept whole (two-byte counts spill over).
    #[test]
    fn counts_past_two_bytes_are_kept() {
        let n = 3 * (1u64 << 16) + 5;
        let mut m = RunMetrics::new(&[1, 1], Nanos(0), Nanos(1_000));
        let mut direct = latency_histogram();
        for k in 0..n {
            m.record_served(0, Nanos(0), Nanos(70_000), Nanos(k % 2 * 3));
            direct.record(70_000).unwrap();
        }
        assert_eq!(m.server_counts[0].full.len(), 1);
        m.flush();
        assert_eq!(m.latency, direct);
        assert_eq!(m.server_latency(0).unwrap().len(), n);
        assert_eq!(m.wait.len(), n);
        assert_eq!(m.wait.count_at(3), n / 2);
    }

    /// Waits of 0 go through the bucket counts at 1 ns, like any other wait, and past
    /// 2^16 of them (the count's overflow) they still make the histogram and sums that
    /// recording each wait directly makes.
    #[test]
    fn many_zero_waits_make_the_same_histogram() {
        let mut m = RunMetrics::new(&[1, 1], Nanos(0), Nanos(1 << 40));
        let mut direct = latency_histogram();
        let mut sum = 0.0;
        for i in 0..140_000u64 {
            let w = if i % 7 == 3 { i % 1000 } else { 0 };
            m.record_served((i % 2) as usize, Nanos(i), Nanos(50 + w), Nanos(w));
            direct.record(w.max(1)).unwrap();
            sum += Nanos(w).as_secs_f64();
        }
        m.flush();
        assert_eq!(m.wait, direct);
        assert_eq!(m.wait.count_at(1), direct.count_at(1));
        assert_eq!(
            m.waited,
            (0..140_000u64)
                .filter(|i| i % 7 == 3 && i % 1000 != 0)
                .count() as u64
        );
        assert_eq!(m.wait_sum.to_bits(), sum.to_bits());
    }

    #[test]
    fn deferred_zero_waits_make_the_same_histogram() {
        let mut m = RunMetrics::new(&[1], Nanos(0), Nanos(1_000));
        let mut direct = latency_histogram();
        for (i, w) in [0u64, 5, 0, 0, 17, 0].into_iter().enumerate() {
            m.record_service(0, Nanos(i as u64 * 100), Nanos(50 + w), Nanos(w));
            direct.record(w.max(1)).unwrap();
        }
        m.flush();
        assert_eq!(m.wait, direct);
        assert_eq!(m.waited, 2);
        assert_eq!(m.wait_sum, 22e-9);
        m.flush();
        assert_eq!(m.wait.len(), 6);
    }

    #[test]
    fn every_metric_parses_from_its_unique_name() {
        for m in Metric::ALL {
            assert_eq!(m.name().parse::<Metric>(), Ok(m));
            assert_eq!(m.to_string(), m.name());
            assert_eq!(METRICS[m.index()].metric, m);
            assert!(m.tolerance() > 0.0 && m.tolerance() < 1.0, "{m}");
        }
        let mut names: Vec<_> = Metric::ALL.map(Metric::name).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Metric::COUNT);
    }

    #[test]
    fn unknown_names_are_errors_listing_every_metric() {
        for bad in ["", "latency", "Latency_P99", "latency_p99 ", "p99"] {
            let e = bad.parse::<Metric>().unwrap_err().to_string();
            assert!(e.starts_with(&format!("no metric `{bad}`")), "{e}");
            assert!(Metric::ALL.iter().all(|m| e.contains(m.name())), "{e}");
        }
    }

    #[test]
    fn per_metric_values_index_by_metric() {
        let v = PerMetric::from_fn(|m| m.index() as f64);
        assert_eq!(v[Metric::JainIndex], Metric::JainIndex.index() as f64);
        assert!(v.iter().all(|(m, &x)| x == m.index() as f64));
        assert_eq!(PerMetric::from_slice(&v.0), Some(v));
        assert_eq!(PerMetric::<f64>::from_slice(&v.0[1..]), None);
        assert_eq!(
            serde_json::to_string(&Metric::LatencyP999).unwrap(),
            "\"latency_p999\""
        );
    }

    #[test]
    fn accumulator_clips_to_window() {
        let mut a = ServerAccumulator::new(2);
        let (from, to) = (Nanos(10), Nanos(20));
        // Each call reports the state that held since the previous call.
        a.advance(Nanos(5), 0, 0, from, to); // (0, 0) on [0, 5): outside the window
        a.advance(Nanos(15), 2, 3, from, to); // (2, 3) on [5, 15) → [10, 15)
        a.advance(Nanos(25), 1, 0, from, to); // (1, 0) on [15, 25) → [15, 20)
        assert_eq!(a.busy_area, 2.0 * 5.0 + 5.0);
        assert_eq!(a.queue_area, 3.0 * 5.0);
        assert_eq!(a.queue_max, 3);
        // 5 in system on [10, 15) → slices 0–4 of width 1; 1 on [15, 20) → slices 5–9.
        assert_eq!(
            a.slices(),
            [5.0, 5.0, 5.0, 5.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0]
        );
    }

    #[test]
    fn growth_of_a_linear_backlog() {
        let mut m = RunMetrics::new(&[1], Nanos(0), Nanos(1_000));
        // One more request in system every 100 ns: 0, 1, ..., 9 over the ten slices.
        for k in 0..10u64 {
            m.servers[0].advance(
                Nanos(100 * (k + 1)),
                1.min(k as u32),
                (k as u32).saturating_sub(1),
                Nanos(0),
                Nanos(1_000),
            );
        }
        assert!(
            (m.in_system_growth() - 9.0).abs() < 1e-9,
            "{}",
            m.in_system_growth()
        );
    }

    #[test]
    fn summary_of_an_even_cluster() {
        let mut m = RunMetrics::new(&[1, 1], Nanos(0), Nanos(1_000));
        for s in &mut m.servers {
            s.busy_area = 500.0;
            s.requests = 5;
        }
        m.record_latency(Nanos(100));
        m.record_latency(Nanos(300));
        m.arrived = 10;
        let s = m.summarize();
        let v = |m| s.values[m];
        assert!((v(Metric::LatencyMean) - 200e-9).abs() < 1e-15);
        assert_eq!(v(Metric::UtilizationMean), 0.5);
        assert_eq!(v(Metric::JainIndex), 1.0);
        assert_eq!(v(Metric::UtilizationCv), 0.0);
        assert_eq!(s.servers[0].share, 0.5);
    }
}
