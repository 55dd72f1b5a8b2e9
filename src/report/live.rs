//! The live verdict as a report: does a live replay agree with the simulation, figure by
//! figure, and with the *declared* scenario?
//!
//! [`crate::live::verdict::compare`] runs the simulator (with the calibrated overheads,
//! each capped by the calibration bound) and hands this module what to judge; nothing
//! here simulates. Every comparison is a [`Comparison`] of one [`Figure`]: the cluster's
//! response-time mean, median and 99th percentile and its error fraction; per server its
//! share of requests, utilisation, mean queue and mean response time (so a 30%-slower
//! server or a missing worker fails even where global latency barely moves); and per
//! backend what calibration absorbed, idle and under the replay's load, against the
//! declared scenario (which adds nothing: the fraction of the declared service time must
//! stay within the bound). The outcome is an [`Outcome`]: pass, fail (naming each figure),
//! or no verdict (with the reason), which `lbsim live` maps to exit statuses 0, 1 and 3.
//!
//! The driver's schedule lag is checked beside the verdict ([`LagCheck`]): a send that is
//! late by a sizeable fraction of a response time makes live response times wrong whatever
//! the model, so a strategy's response times are not judged when its lag p99 exceeds
//! `max_lag_fraction` (5%) of the simulated median response time (scaled to wall-clock
//! time). At 5% of the median, lag can move the mean and median by at most half of their
//! 10% tolerance, and the 99th percentile (≥ the median) by at most a quarter of its 20%.
//! The figures the lag does not move ([`Figure::timed_by_driver`]) are judged anyway: one
//! outside tolerance fails the run; if they all pass and some response times could not be
//! judged, the outcome is "no verdict". A dispatcher lag far beyond the gate
//! ([`LAG_BUNCHING_FACTOR`] × it: a stall, after which the driver sends a bunch) also moves
//! queues, utilisations, shedding and circuit-breaker overflows
//! ([`Figure::moved_by_bunching`]); those are then not judged either (calls that waited for
//! a connection to a busy backend do not count there: [`Verdict::judged`]). Every row not judged
//! says so, on the terminal and in `comparison.csv` (`judged`, and the verdict `not
//! judged (lag)`).
//!
//! A busy machine lengthens the backends' services themselves: an emulated service is a
//! sleep, and a machine whose cores other work takes wakes every sleeper late. A thread
//! sleeping beside the backends during the replay measures how late
//! ([`crate::live::StrategyReplay::machine`]), and emulated backends say how late their
//! own workers woke (`Reply.woke_late_ns`, which comes first where present). A row that
//! fails but agrees with a simulation whose backends also took that much longer
//! ([`Comparison::machine`]) is not judged either (`not judged (machine busy)`): the
//! machine, not the model, explains it, and the outcome is "no verdict", never a pass. A
//! row that fails even then is judged. Queues and response times are compared with that
//! simulation with the replay's stalls as well, at their times ([`crate::live::stall`]:
//! a worker or the dispatcher late by a part of a service time, as a pause of its server
//! or of every server); [`LagCheck`] says how many there were, the longest and their sum.
//!
//! Tolerances use `check`'s syntax ([`super::tolerance`]); each figure has one primary
//! tolerance (relative or absolute) and per-server queues also an absolute floor. The
//! per-server figures and response times of a strategy whose picks depend on timing (it
//! reads load) widen with the spread of the simulated replications ([`spread_allowance`]):
//! live, such a strategy routes the replayed requests as another replication would, not
//! as the simulated one did, so a fixed percentage would fail identical servers on chance,
//! and a run whose course those picks change (JSQ herding on stale reports, gRPC WRR's
//! weights learnt from 100 ms of rates) on its response times.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Serialize;

use super::output::Folder;
use super::tolerance::{BadEntry, parse_entries};
use super::{ImageFormat, ReportError, csv_err, finish_csv, write_servers_csv, write_summary_csv};
use crate::metrics::{Metric, RunMetrics, RunSummary};
use crate::runner::RunResults;
use crate::scenario::Scenario;
use crate::stats::{Estimate, estimate};

/// Default largest fraction of a backend's declared mean service time that calibration
/// may absorb (service overhead + extra latency): 10%. Loopback round trips and a sleep's
/// overshoot are 1–3% of the millisecond service times the live scenarios declare (or
/// become so at a time scale), while a backend 2 ms costlier on 8 ms is 25% — and a
/// scenario that holds only after adding 10% to every service time does not describe its
/// servers. The same fraction is applied under load. `--tolerance calibration=X` sets it.
pub const DEFAULT_CALIBRATION_BOUND: f64 = 0.10;

/// What the live value is compared with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reference {
    /// The simulated value of the replayed replication (same requests).
    #[default]
    Replayed,
    /// The simulated mean over replications.
    Mean,
}

impl Reference {
    /// As written on the command line and in `comparison.csv`.
    pub fn name(self) -> &'static str {
        match self {
            Reference::Replayed => "replayed",
            Reference::Mean => "mean",
        }
    }
}

/// An unknown `--against`.
#[derive(Debug, thiserror::Error)]
#[error("unknown reference {0:?}\n  fix: use `replayed` or `mean`")]
pub struct BadReference(pub String);

impl FromStr for Reference {
    type Err = BadReference;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "replayed" => Ok(Reference::Replayed),
            "mean" => Ok(Reference::Mean),
            _ => Err(BadReference(s.to_string())),
        }
    }
}

/// A figure the live verdict judges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Figure {
    /// A cluster metric of the strategy's run, under that metric's name and unit: the
    /// response-time mean, median and 99th percentile and the error fraction (without
    /// faults the simulated scenario has no failures, so any is a disagreement); under a
    /// client policy the attempts, retries and hedges per request and the timed-out and
    /// wasted fractions; the circuit breakers' overflow fraction (strategies with
    /// `[strategies.policy.circuit_breakers]`) and admission control's shed fraction
    /// (scenarios with `[servers.admission]`). [`Figure::ALL`] lists them.
    Cluster(Metric),
    /// A server's share of the requests.
    Share,
    /// A server's utilisation (busy worker-time over workers × window; live from the
    /// backend's own service times).
    ServerUtilization,
    /// A server's time-average number waiting for a worker.
    ServerQueueMean,
    /// A server's mean response time.
    ServerLatencyMean,
    /// What calibration measured on an idle backend beyond the declared scenario
    /// (service overhead + extra latency), as a fraction of its declared mean service time.
    Calibration,
    /// The same, measured on the replay's own calls, under load.
    CalibrationUnderLoad,
    /// Mean response time of the requests that arrived in one phase of a scenario with
    /// faults (before, during, after each fault window; see
    /// [`crate::metrics::phase_edges`]), so that a disagreement during a fault is not
    /// averaged away over the run.
    PhaseLatencyMean,
    /// 99th percentile response time of one phase's requests.
    PhaseLatencyP99,
    /// Fraction of one phase's requests that ended unserved.
    PhaseErrorFraction,
}

/// Whether a figure's primary tolerance is relative to the reference or absolute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// |live − reference| ≤ tolerance × |reference|.
    Relative,
    /// |live − reference| ≤ tolerance.
    Absolute,
}

impl Figure {
    /// Every figure, in the order rows are written.
    pub const ALL: [Figure; 20] = [
        Figure::Cluster(Metric::LatencyMean),
        Figure::Cluster(Metric::LatencyP50),
        Figure::Cluster(Metric::LatencyP99),
        Figure::Cluster(Metric::ErrorFraction),
        Figure::Share,
        Figure::ServerUtilization,
        Figure::ServerQueueMean,
        Figure::ServerLatencyMean,
        Figure::Calibration,
        Figure::CalibrationUnderLoad,
        Figure::PhaseLatencyMean,
        Figure::PhaseLatencyP99,
        Figure::PhaseErrorFraction,
        Figure::Cluster(Metric::AttemptsPerRequest),
        Figure::Cluster(Metric::RetryRate),
        Figure::Cluster(Metric::HedgeRate),
        Figure::Cluster(Metric::TimeoutFraction),
        Figure::Cluster(Metric::WastedFraction),
        Figure::Cluster(Metric::OverflowFraction),
        Figure::Cluster(Metric::ShedFraction),
    ];

    /// Name in `comparison.csv` (before `:server`) and in `--tolerance`.
    pub fn name(self) -> &'static str {
        match self {
            Figure::Cluster(m) => m.name(),
            Figure::Share => "share",
            Figure::ServerUtilization => "server_utilization",
            Figure::ServerQueueMean => "server_queue_mean",
            Figure::ServerLatencyMean => "server_latency_mean",
            Figure::Calibration => "calibration",
            Figure::CalibrationUnderLoad => "calibration_under_load",
            Figure::PhaseLatencyMean => "phase_latency_mean",
            Figure::PhaseLatencyP99 => "phase_latency_p99",
            Figure::PhaseErrorFraction => "phase_error_fraction",
        }
    }

    /// The cluster metric it compares, for the cluster figures (whose name and unit are
    /// that metric's).
    pub fn metric(self) -> Option<Metric> {
        match self {
            Figure::Cluster(m) => Some(m),
            _ => None,
        }
    }

    /// Unit of its values.
    pub fn unit(self) -> &'static str {
        match self {
            Figure::Cluster(m) => m.unit(),
            Figure::ServerLatencyMean | Figure::PhaseLatencyMean | Figure::PhaseLatencyP99 => "s",
            Figure::ServerQueueMean => "requests",
            _ => "1",
        }
    }

    /// One value per server (else one for the cluster, or per phase).
    pub fn per_server(self) -> bool {
        self.metric().is_none() && !self.per_phase()
    }

    /// One value per phase of a scenario with faults ([`crate::metrics::phase_edges`]).
    pub fn per_phase(self) -> bool {
        matches!(
            self,
            Figure::PhaseLatencyMean | Figure::PhaseLatencyP99 | Figure::PhaseErrorFraction
        )
    }

    /// Whether `--tolerance NAME=x` is relative or absolute.
    pub fn kind(self) -> Kind {
        match self {
            Figure::Cluster(
                Metric::LatencyMean
                | Metric::LatencyP50
                | Metric::LatencyP99
                | Metric::AttemptsPerRequest,
            )
            | Figure::ServerUtilization
            | Figure::ServerQueueMean
            | Figure::ServerLatencyMean
            | Figure::PhaseLatencyMean
            | Figure::PhaseLatencyP99 => Kind::Relative,
            _ => Kind::Absolute,
        }
    }

    /// The default tolerance, and why (for the README).
    pub fn default_tolerance(self) -> Tolerance {
        let rel = |r| Tolerance {
            relative: r,
            absolute: 0.0,
        };
        let abs = |a| Tolerance {
            relative: 0.0,
            absolute: a,
        };
        match self {
            Figure::Cluster(Metric::LatencyMean | Metric::LatencyP50) => rel(0.10),
            Figure::Cluster(Metric::LatencyP99) => rel(0.20),
            // Without faults the simulated fraction is 0 and any failure disagrees. With
            // them, 10% of the simulated fraction: a call failing fast takes a loopback
            // round trip live (~0.1 ms) and no time simulated, so strategies that count
            // requests in flight see the failing backend slightly busier live; and at
            // least [`IN_FLIGHT_FLOOR`] (added where the scenario has faults).
            Figure::Cluster(Metric::ErrorFraction) => Tolerance {
                relative: 0.10,
                absolute: 0.0,
            },
            Figure::Share => abs(0.02),
            Figure::ServerUtilization => rel(0.10),
            // A queue that is nearly empty in the model has no meaningful relative error:
            // below 0.05 requests waiting on average the floor decides.
            Figure::ServerQueueMean => Tolerance {
                relative: 0.25,
                absolute: 0.05,
            },
            Figure::ServerLatencyMean => rel(0.15),
            Figure::Calibration | Figure::CalibrationUnderLoad => abs(DEFAULT_CALIBRATION_BOUND),
            // A phase is a fraction of the run, so its figures are noisier than the run's:
            // the run's tolerances, half as wide again.
            Figure::PhaseLatencyMean => rel(0.15),
            Figure::PhaseLatencyP99 => rel(0.30),
            // Plus a floor of 0.2% ([`IN_FLIGHT_FLOOR`]).
            Figure::PhaseErrorFraction => Tolerance {
                relative: 0.15,
                absolute: IN_FLIGHT_FLOOR,
            },
            // Client policies: each row's tolerance is widened to the replications' spread
            // (see [`POLICY_SPREAD`]); these are the floors. Attempts per request within 5%
            // (a retry for one request in 20); rates within 0.02 per request, the wasted
            // share within 0.02 of the server time.
            Figure::Cluster(Metric::AttemptsPerRequest) => rel(0.05),
            Figure::Cluster(_) => abs(0.02),
        }
    }

    fn from_name(name: &str) -> Option<Figure> {
        Figure::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// How far a live value may be from its reference: the larger of `relative` × |reference|
/// and `absolute`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Tolerance {
    /// Relative part.
    pub relative: f64,
    /// Absolute part (in the figure's unit).
    pub absolute: f64,
}

impl Tolerance {
    /// Largest accepted |live − reference|.
    pub fn allowed(self, reference: f64) -> f64 {
        (self.relative * reference.abs()).max(self.absolute)
    }
}

/// Tolerances of every [`Figure`].
#[derive(Clone, Debug, PartialEq)]
pub struct Tolerances(Vec<(Figure, Tolerance)>);

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances(
            Figure::ALL
                .into_iter()
                .map(|f| (f, f.default_tolerance()))
                .collect(),
        )
    }
}

/// A `--tolerance` of `lbsim live` that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "--tolerance `{}`: {}\n  fix: write name=value pairs separated by commas, values fractions or percentages (e.g. latency_p99=20%,share=0.02); names: {}",
    .0.entry, .0.problem, Figure::ALL.map(Figure::name).join(", ")
)]
pub struct BadTolerance(pub BadEntry);

impl Tolerances {
    /// The defaults overridden by `spec` (the syntax of `check --tolerance`): each name
    /// sets its figure's primary part ([`Figure::kind`]); `*` sets every figure's.
    pub fn parse(spec: &[String]) -> Result<Tolerances, BadTolerance> {
        let mut t = Tolerances::default();
        for e in parse_entries(spec).map_err(BadTolerance)? {
            let figures: Vec<Figure> = if e.name == "*" {
                Figure::ALL.to_vec()
            } else {
                vec![
                    Figure::from_name(&e.name)
                        .ok_or_else(|| BadTolerance(e.bad(format!("no figure `{}`", e.name))))?,
                ]
            };
            for f in figures {
                t.set(f, e.value);
            }
        }
        Ok(t)
    }

    /// Sets the primary part of `figure`'s tolerance.
    pub fn set(&mut self, figure: Figure, value: f64) {
        for (f, t) in &mut self.0 {
            if *f == figure {
                match f.kind() {
                    Kind::Relative => t.relative = value,
                    Kind::Absolute => t.absolute = value,
                }
            }
        }
    }

    /// The tolerance of `figure`.
    pub fn get(&self, figure: Figure) -> Tolerance {
        self.0
            .iter()
            .find(|(f, _)| *f == figure)
            .map_or(figure.default_tolerance(), |(_, t)| *t)
    }

    /// The calibration bound: the largest fraction of a backend's declared mean service
    /// time that calibration may absorb.
    pub fn calibration_bound(&self) -> f64 {
        self.get(Figure::Calibration).absolute
    }
}

/// One judged comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// Strategy label (`calibration` for the idle calibration rows, which precede every
    /// strategy).
    pub strategy: String,
    /// What is compared.
    pub figure: Figure,
    /// The server, for per-server figures; the phase (e.g. `during[20-35s]`), for
    /// per-phase ones.
    pub server: Option<String>,
    /// Simulated mean over replications and its 95% CI (the declared 0 for calibration).
    pub sim: Estimate,
    /// Simulated value of the replayed replication.
    pub sim_replayed: f64,
    /// Live value.
    pub live: f64,
    /// What `live` is compared with.
    pub reference: Reference,
    /// Accepted distance.
    pub tolerance: Tolerance,
    /// The reference as the machine ran, where the machine was measured busy and the row
    /// fails: the same figure of a simulation whose backends' calibrated costs may also
    /// include how late a thread sleeping beside them woke (the bound still holds each
    /// backend's own share; for a `calibration_under_load` row, that overrun itself). A
    /// failing row within tolerance of it is not judged ([`Comparison::explained_by_machine`]).
    pub machine: Option<f64>,
}

impl Comparison {
    /// `figure` or `figure:server`.
    pub fn metric(&self) -> String {
        match &self.server {
            Some(s) => format!("{}:{s}", self.figure.name()),
            None => self.figure.name().to_string(),
        }
    }

    /// The simulated value compared with.
    pub fn base(&self) -> f64 {
        match self.reference {
            Reference::Replayed => self.sim_replayed,
            Reference::Mean => self.sim.mean,
        }
    }

    /// live − base.
    pub fn difference(&self) -> f64 {
        self.live - self.base()
    }

    /// (live − base) / base (NaN or infinite when the base is 0).
    pub fn relative_difference(&self) -> f64 {
        self.difference() / self.base()
    }

    /// Within tolerance (NaN — nothing served on one side — fails; nothing served on
    /// either side, e.g. the mean response time of a backend that fails every call under
    /// an error fault, agrees).
    pub fn passed(&self) -> bool {
        if self.live.is_nan() && self.base().is_nan() {
            return true;
        }
        self.difference().abs() <= self.tolerance.allowed(self.base())
    }

    /// Whether the machine, not the model, explains this row's disagreement: it fails,
    /// and it passes against the reference as the machine ran ([`Comparison::machine`]).
    /// Such a row is not judged ([`Verdict::judged`]): the outcome is then "no verdict",
    /// never a pass.
    pub fn explained_by_machine(&self) -> bool {
        !self.passed()
            && self
                .machine
                .is_some_and(|m| (self.live - m).abs() <= self.tolerance.allowed(m))
    }
}

/// The chance that a matched pair fails a verdict by the spread rule alone
/// ([`spread_allowance`]): 0.27%, the normal's 3 standard deviations, for the whole
/// verdict (every strategy and server of one replay, or of one sweep point), not per row.
///
/// The paired comparison replays the simulated replication's requests, so a strategy
/// whose picks do not depend on timing (round robin, weighted, random, …: `Split::Equal`
/// or `Split::Weights` in the registry) routes every request live exactly as simulated,
/// and its per-server figures keep their fixed tolerances. A strategy that reads load
/// (least connections, P2C, JSQ, peak EWMA, …) picks among near-equal servers on timing
/// differences of microseconds, so live and simulated runs route the same requests
/// differently: per server, the live run is at worst another replication of the same
/// requests. Two independent replications differ by √2 × the standard deviation across
/// replications (σ). σ is estimated from the n simulated replications, so the difference
/// over √2 × the sample standard deviation follows Student's t with n − 1 degrees of
/// freedom, not the normal. The paired runs share arrivals and work, so they differ less.
///
/// A verdict judges m such rows (4 per server and 3 response times per adaptive
/// strategy: 255 for `antagonists`, 550 for `many-balancers`), and at 0.27% each a matched
/// cluster would fail about one in four hundred of them by chance — most verdicts of a
/// large scenario. So the chance is shared out (Bonferroni, valid however the rows
/// depend on each other): each row gets 0.27% / m, two-sided, and the allowance is t's
/// 1 − 0.0027 / (2m) quantile × √2 × s: at n = 10, 4.09 for one row, 7.80 for m = 100,
/// 8.77 for 255, 9.63 for 550; at n = 3, 19.2, 192, 307 and 451 (three values say little
/// of σ: the verdict simulates at least [`MIN_SPREAD_REPLICATIONS`]).
pub const SPREAD_FALSE_ALARM: f64 = 0.0027;

/// Fewest simulated replications a verdict with adaptive strategies runs
/// (`crate::live::verdict::compare`, unless `--replications` says otherwise): t's
/// quantile at the per-row false-alarm rate falls from 307 at n = 3 to 8.77 at n = 10
/// (m = 255), so below 10 an adaptive strategy's per-server rows could hardly fail.
pub const MIN_SPREAD_REPLICATIONS: u32 = 10;

/// The absolute allowance a figure of an adaptive strategy gets from the spread of its
/// simulated replications `runs`, when the verdict judges `family` such rows: the
/// two-sided [`SPREAD_FALSE_ALARM`] / `family` quantile of Student's t with n − 1 degrees
/// of freedom × √2 × their sample standard deviation (0 with fewer than two finite
/// values).
pub fn spread_allowance(runs: &[f64], family: usize) -> f64 {
    let finite: Vec<f64> = runs.iter().copied().filter(|v| v.is_finite()).collect();
    let n = finite.len();
    if n < 2 {
        return 0.0;
    }
    let mean = finite.iter().sum::<f64>() / n as f64;
    let var = finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let per_row = SPREAD_FALSE_ALARM / family.max(1) as f64;
    crate::stats::t_quantile(1.0 - per_row / 2.0, n - 1) * std::f64::consts::SQRT_2 * var.sqrt()
}

/// How many rows of a verdict on `scenario`'s strategies `labels` the spread rule
/// applies to ([`spread_allowance`]): per adaptive strategy, its response-time mean, p50
/// and p99 and four figures per server.
pub fn spread_family<'a>(scenario: &Scenario, labels: impl IntoIterator<Item = &'a str>) -> usize {
    let per = 3 + 4 * scenario.servers().len();
    labels.into_iter().filter(|l| adaptive(scenario, l)).count() * per
}

/// Whether the picks of the strategy labelled `label` in `scenario` depend on timing
/// (load-aware or key-and-load strategies: `Split::Dynamic`), so that its per-server
/// figures and response times get [`spread_allowance`]. Unknown labels count as adaptive.
pub fn adaptive(scenario: &Scenario, label: &str) -> bool {
    scenario
        .strategies
        .iter()
        .find(|e| e.label() == label)
        .is_none_or(|e| e.spec.about().split == crate::strategy::registry::Split::Dynamic)
}

/// The absolute floor of an error fraction's tolerance where faults fail requests: the
/// requests a crash or an error fault catches in flight (or that fail before an outlier
/// detector ejects the backend) are a handful — one is 0.06% of a 3 s phase at 560 req/s;
/// 5 simulated against 7 live of 1,547 in an Envoy ejection replay — and which of them are
/// still in flight at the instant of the fault or of the ejection is timing, not model.
pub const IN_FLIGHT_FLOOR: f64 = 0.002;

/// How far beyond the response-time lag gate a replay may lag before the figures that
/// bunched sends move ([`Figure::moved_by_bunching`]) are not judged either. Sends that
/// fall far behind leave in a bunch when the driver catches up: the backends' queues
/// lengthen (measured: 3–50× the simulated queues at a lag p99 of 6 ms, where the gate was
/// 0), admission control sheds more (0.27 against 0.19 at a lag p99 of 3.9 ms, 7.8× its
/// gate), a load-aware strategy routes the bunch on its instantaneous counts, and work
/// moves in time, into or out of a fault's window or past the end of the measured window
/// (`antagonists`, C3 with one stall of 0.95 s, lag p99 0.68 s: utilisations 0.77 and
/// 0.75 live against 0.91 and 0.90 on the two slowed servers). A lag near the gate does
/// none of this: it shifts work by a few milliseconds in a window of seconds (the planted
/// one-worker-fewer mismatch is found at 1.1× the gate, and the matched cluster passes
/// there). Measured over 107 strategy replays of `antagonists` at time scales 1 and 4
/// under a load average of 5–30: of the queue, utilisation and share rows, 1 of 1,620 was
/// outside tolerance with the lag p99 within 4× the gate (45 replays), 255 of 2,232 beyond
/// it (62 replays): 247 queues and 8 utilisations, no share. (Those were send lags; the
/// factor now applies to the dispatcher's own lag, never larger: [`Verdict::judged`].)
pub const LAG_BUNCHING_FACTOR: f64 = 4.0;

/// The schedule lag of one strategy's replay against its threshold.
#[derive(Clone, Debug, Serialize)]
pub struct LagCheck {
    /// Strategy label.
    pub strategy: String,
    /// Median lag (wall-clock seconds).
    pub p50: f64,
    /// 99th percentile lag (wall-clock seconds).
    pub p99: f64,
    /// Largest lag (wall-clock seconds).
    pub max: f64,
    /// 99th percentile of the dispatcher's own lag (wall-clock seconds): from the scheduled
    /// time to the dispatcher waking for the request. Unlike `p99`, without the wait of a
    /// call that found every connection to its backend busy ([`Verdict::judged`] reads it
    /// for the figures that bunched sends move).
    pub dispatch_p99: f64,
    /// Largest accepted p99 (wall-clock seconds).
    pub threshold: f64,
    /// Whether p99 ≤ threshold.
    pub ok: bool,
    /// How late the machine woke the threads that served the calls, mean (wall-clock
    /// seconds): the backends' workers past their services' ends where the backends say,
    /// else a thread sleeping beside them (NaN where neither measured). What the verdict
    /// may refuse rows for (`not judged (machine busy)`).
    pub woke_late_mean: f64,
    /// Its 99th percentile (wall-clock seconds; NaN where not measured).
    pub woke_late_p99: f64,
    /// Stalls recorded: a backend's worker late by at least
    /// [`WORKER_STALL_FRACTION`](crate::live::stall::WORKER_STALL_FRACTION) of its
    /// declared mean service time, or the dispatcher by
    /// [`DISPATCHER_STALL_FRACTION`](crate::live::stall::DISPATCHER_STALL_FRACTION) of
    /// the shortest ([`crate::live::stall`]). The verdict's reference as the machine ran
    /// simulates them at their times, for the rows they move.
    pub stalls: u64,
    /// The longest stall (wall-clock seconds; 0 without any).
    pub stall_max: f64,
    /// When the longest stall began (scenario seconds; NaN without any).
    pub stall_max_at: f64,
    /// The stalls' lengths summed (wall-clock seconds; stalls of several threads at once
    /// count once each).
    pub stall_total: f64,
}

/// What calibration measured on one backend and what the simulated side added (a row of
/// `calibration.csv`; wall-clock seconds).
#[derive(Clone, Debug, Serialize)]
pub struct CalibrationRow {
    /// Scenario server.
    pub server: String,
    /// Median ping round trip.
    pub ping_rtt: f64,
    /// Service overhead (occupies a worker).
    pub service_overhead: f64,
    /// Extra latency (occupies nothing).
    pub extra_latency: f64,
    /// Declared mean service time at the replay's time scale.
    pub declared_service: f64,
    /// (overhead + extra) / declared.
    pub fraction: f64,
    /// The bound on `fraction`.
    pub bound: f64,
    /// What the simulated side added, as a fraction of the declared service (≤ bound).
    pub applied_fraction: f64,
}

/// The outcome of a live comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every comparison within tolerance.
    Pass,
    /// Some comparisons outside tolerance: `strategy metric` of each.
    Fail {
        /// The failed comparisons.
        failed: Vec<String>,
    },
    /// The measurement cannot be trusted, so nothing is judged.
    NoVerdict {
        /// Why, and what to do.
        reason: String,
    },
}

/// Everything a live comparison produced.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// The calibrated scenario the simulator ran.
    pub calibrated: Scenario,
    /// Simulated replications (calibrated), replayed strategies only.
    pub sim: RunResults,
    /// Simulated replayed replication, per replayed strategy.
    pub sim_replayed: Vec<RunMetrics>,
    /// Live figures as a one-replication run (for the simulator's CSV schema).
    pub live: RunResults,
    /// Every comparison.
    pub rows: Vec<Comparison>,
    /// Lag checks, one per strategy.
    pub lag: Vec<LagCheck>,
    /// Live requests that failed, per strategy.
    pub errors: Vec<u64>,
    /// Per backend: what calibration measured and what was applied.
    pub calibration: Vec<CalibrationRow>,
    /// Time scale of the replay.
    pub time_scale: f64,
}

/// What [`judge`] compares: the simulated and live results of the replayed strategies (in
/// the same order) and the fractions calibration measured.
#[derive(Clone, Copy, Debug)]
pub struct Judged<'a> {
    /// The scenario (its servers name the per-server rows).
    pub scenario: &'a Scenario,
    /// Simulated replications.
    pub sim: &'a RunResults,
    /// The simulated replayed replication, summarised, per strategy.
    pub sim_replayed: &'a [RunSummary],
    /// Live, one replication per strategy.
    pub live: &'a RunResults,
    /// Per backend, the idle calibration's fraction of the declared service time.
    pub idle: &'a [f64],
    /// Per strategy, per backend, the same under load (empty: not measured).
    pub under_load: &'a [Vec<f64>],
    /// The phases' bounds (scenario time), in order; empty without faults
    /// ([`RunMetrics::phase_bounds`]).
    pub phases: &'a [(crate::time::Nanos, crate::time::Nanos)],
}

/// Names of phases with bounds `bounds`: `before`, `during` or `after` the scenario's
/// fault windows (`between` two of them), with the phase's span in seconds, e.g.
/// `during[20-35s]`.
pub fn phase_names(
    scenario: &Scenario,
    bounds: &[(crate::time::Nanos, crate::time::Nanos)],
) -> Vec<String> {
    let windows: Vec<(f64, f64)> = scenario
        .faults
        .iter()
        .map(|f| (f.at, f.until.unwrap_or(f64::INFINITY)))
        .collect();
    bounds
        .iter()
        .map(|&(a, b)| {
            let (a, b) = (a.as_secs_f64(), b.as_secs_f64());
            let mid = 0.5 * (a + b);
            let kind = if windows.iter().any(|&(s, e)| s <= mid && mid < e) {
                "during"
            } else if windows.iter().all(|&(s, _)| mid < s) {
                "before"
            } else if windows.iter().all(|&(_, e)| mid >= e) {
                "after"
            } else {
                "between"
            };
            format!("{kind}[{}-{}s]", trim(a), trim(b))
        })
        .collect()
}

/// A number of seconds as short as exact: `20`, `2.5`.
fn trim(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// How many standard deviations of the simulated replications a client-policy figure's
/// tolerance is widened to: a live run and the replayed simulated run are two runs, whose
/// difference has a standard deviation of up to √2 of one run's, so 3 of them is about
/// 2.1 standard deviations of the difference (a 4% chance of failing a matched pair by
/// noise alone, per figure, with normal errors).
pub const POLICY_SPREAD: f64 = 3.0;

/// Sample standard deviation (0 with fewer than two values, or with NaNs).
fn std_dev(x: &[f64]) -> f64 {
    let x: Vec<f64> = x.iter().copied().filter(|v| v.is_finite()).collect();
    if x.len() < 2 {
        return 0.0;
    }
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// The comparisons of `j` with tolerances `tol` against `reference`.
pub fn judge(j: &Judged<'_>, tol: &Tolerances, reference: Reference) -> Vec<Comparison> {
    let servers = j.scenario.servers();
    let declared = Estimate {
        mean: 0.0,
        low: 0.0,
        high: 0.0,
        n: 1,
    };
    let mut rows = Vec::new();
    let family = spread_family(
        j.scenario,
        j.sim.strategies.iter().map(|s| s.label.as_str()),
    );
    let push = |rows: &mut Vec<Comparison>,
                strategy: &str,
                figure,
                server: Option<String>,
                sim,
                replayed,
                live,
                spread: f64| {
        let mut tolerance = tol.get(figure);
        tolerance.absolute = tolerance.absolute.max(spread);
        rows.push(Comparison {
            strategy: strategy.to_string(),
            figure,
            server,
            sim,
            sim_replayed: replayed,
            live,
            reference,
            tolerance,
            machine: None,
        });
    };
    for (i, &f) in j.idle.iter().enumerate() {
        push(
            &mut rows,
            "calibration",
            Figure::Calibration,
            Some(servers[i].name.clone()),
            declared,
            0.0,
            f,
            0.0,
        );
    }
    for (k, sim_k) in j.sim.strategies.iter().enumerate() {
        let label = sim_k.label.as_str();
        let replayed = &j.sim_replayed[k];
        let live = &j.live.strategies[k].runs[0];
        let policy = j
            .scenario
            .strategies
            .iter()
            .any(|e| e.label() == label && e.policy.is_some());
        let circuit = j.scenario.strategies.iter().any(|e| {
            e.label() == label
                && e.policy
                    .as_ref()
                    .is_some_and(|p| p.circuit_breakers.is_some())
        });
        let admission = j.scenario.groups.iter().any(|g| g.admission.is_some());
        let adaptive = adaptive(j.scenario, label);
        for figure in Figure::ALL {
            let Figure::Cluster(m) = figure else { continue };
            // Overflows and shedding are judged where something can cause them.
            let shown = match m {
                Metric::OverflowFraction => circuit,
                Metric::ShedFraction => admission,
                _ => policy || !m.of_client_policies(),
            };
            if !shown {
                continue;
            }
            push(
                &mut rows,
                label,
                figure,
                None,
                sim_k.estimate(m),
                replayed.values[m],
                live.values[m],
                0.0,
            );
            if m == Metric::ErrorFraction && !j.scenario.faults.is_empty() {
                let t = &mut rows.last_mut().expect("just pushed").tolerance;
                t.absolute = t.absolute.max(IN_FLIGHT_FLOOR);
            }
            if m.of_client_policies()
                || matches!(m, Metric::OverflowFraction | Metric::ShedFraction)
            {
                // One live run against one simulated one: they differ by about the
                // spread of single runs, which the floor may not cover.
                let runs: Vec<f64> = sim_k.runs.iter().map(|r| r.values[m]).collect();
                let spread = POLICY_SPREAD * std_dev(&runs);
                let last = rows.last_mut().expect("just pushed");
                let t = &mut last.tolerance;
                match figure.kind() {
                    Kind::Relative if last.sim_replayed.abs() > 0.0 => {
                        t.relative = t.relative.max(spread / last.sim_replayed.abs());
                    }
                    _ => t.absolute = t.absolute.max(spread),
                }
            }
            if adaptive
                && matches!(
                    m,
                    Metric::LatencyMean | Metric::LatencyP50 | Metric::LatencyP99
                )
            {
                // A strategy whose picks turn on timing routes the replayed requests
                // differently live; where that changes the run's course (herding on
                // stale reports, weights learnt from rates), the live run is at worst
                // another replication ([`spread_allowance`]).
                let runs: Vec<f64> = sim_k.runs.iter().map(|r| r.values[m]).collect();
                let t = &mut rows.last_mut().expect("just pushed").tolerance;
                t.absolute = t.absolute.max(spread_allowance(&runs, family));
            }
        }
        for (i, server) in servers.iter().enumerate() {
            for figure in [
                Figure::Share,
                Figure::ServerUtilization,
                Figure::ServerQueueMean,
                Figure::ServerLatencyMean,
            ] {
                let get = |s: &crate::metrics::ServerSummary| match figure {
                    Figure::Share => s.share,
                    Figure::ServerUtilization => s.utilization,
                    Figure::ServerQueueMean => s.queue_mean,
                    _ => s.latency_mean,
                };
                let runs: Vec<f64> = sim_k.runs.iter().map(|r| get(&r.servers[i])).collect();
                push(
                    &mut rows,
                    label,
                    figure,
                    Some(server.name.clone()),
                    estimate(&runs),
                    get(&replayed.servers[i]),
                    get(&live.servers[i]),
                    if adaptive {
                        spread_allowance(&runs, family)
                    } else {
                        0.0
                    },
                );
            }
        }
        let bounds = j.phases;
        for (p, name) in phase_names(j.scenario, bounds).into_iter().enumerate() {
            for figure in [
                Figure::PhaseLatencyMean,
                Figure::PhaseLatencyP99,
                Figure::PhaseErrorFraction,
            ] {
                let get = |r: &RunSummary| {
                    r.phases.get(p).map_or(f64::NAN, |s| match figure {
                        Figure::PhaseLatencyMean => s.latency_mean,
                        Figure::PhaseLatencyP99 => s.latency_p99,
                        _ => s.error_fraction,
                    })
                };
                let runs: Vec<f64> = sim_k.runs.iter().map(get).collect();
                push(
                    &mut rows,
                    label,
                    figure,
                    Some(name.clone()),
                    estimate(&runs),
                    get(replayed),
                    get(live),
                    0.0,
                );
            }
        }
        if let Some(loaded) = j.under_load.get(k).filter(|v| !v.is_empty()) {
            // A backend that served nothing in the replay (every call failed) has nothing
            // measured under load: no row, as for a replay that measures none.
            for (i, &f) in loaded.iter().enumerate().filter(|(_, f)| !f.is_nan()) {
                push(
                    &mut rows,
                    label,
                    Figure::CalibrationUnderLoad,
                    Some(servers[i].name.clone()),
                    declared,
                    0.0,
                    f,
                    0.0,
                );
            }
        }
    }
    rows
}

impl Figure {
    /// Whether the driver's schedule lag moves it: response times are measured from the
    /// scheduled time, so a late send adds to them. Shares, utilisations, queues (from the
    /// backends' own times, but see [`Figure::moved_by_bunching`]), errors and the idle
    /// calibration do not depend on it.
    pub fn timed_by_driver(self) -> bool {
        matches!(
            self,
            Figure::Cluster(
                Metric::LatencyMean
                    | Metric::LatencyP50
                    | Metric::LatencyP99
                    | Metric::HedgeRate
                    | Metric::TimeoutFraction
                    | Metric::WastedFraction
            ) | Figure::ServerLatencyMean
                | Figure::CalibrationUnderLoad
                | Figure::PhaseLatencyMean
                | Figure::PhaseLatencyP99
        )
    }

    /// Whether sends bunched by a lag far beyond the gate ([`LAG_BUNCHING_FACTOR`]) move
    /// it: a server's queue and utilisation, what admission control sheds and circuit
    /// breakers refuse. Shares do not, even a load-aware strategy's: over 107 replays of
    /// `antagonists` (5 load-aware strategies, 12 servers), |live − replayed| had a median
    /// of 0.0015 and a largest value of 0.019 with the lag p99 within 4× the gate, 0.0021
    /// and 0.020 beyond it, where queues moved 16× as much in the median (0.079 → 1.30
    /// requests) and utilisations 2.5× (0.008 → 0.020).
    pub fn moved_by_bunching(self) -> bool {
        matches!(
            self,
            Figure::ServerQueueMean
                | Figure::ServerUtilization
                | Figure::Cluster(Metric::ShedFraction | Metric::OverflowFraction)
        )
    }
}

impl Verdict {
    /// Why some rows cannot be judged, if so: the response times of strategies whose
    /// driver lagged too much, and rows the machine's own lateness explains
    /// ([`Comparison::explained_by_machine`]).
    pub fn refusal(&self) -> Option<String> {
        let lag = self.lag_refusal();
        let busy = self.machine_refusal();
        match (lag, busy) {
            (Some(a), Some(b)) => Some(format!("{a}\n{b}")),
            (a, b) => a.or(b),
        }
    }

    /// Why some rows are not judged because the machine was too busy (rows that fail
    /// but agree with the simulation as the machine ran), if so.
    fn machine_refusal(&self) -> Option<String> {
        let busy: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.explained_by_machine())
            .map(|r| format!("{} {}", r.strategy, r.metric()))
            .collect();
        (!busy.is_empty()).then(|| {
            format!(
                "no verdict: the machine was too busy ({}: they disagree with the simulation only as much as the backends' threads woke late, or the machine stalled them and the dispatcher, at the times it did); the backends' services are not the scenario's.\n  fix: run on a quieter machine (CPU-bound work beside `lbsim live` lengthens every emulated service), or run that work at a lower priority (`nice`)",
                busy.join(", ")
            )
        })
    }

    /// Why the response times of some strategies cannot be judged because the driver
    /// lagged, if so.
    fn lag_refusal(&self) -> Option<String> {
        let late: Vec<String> = self
            .lag
            .iter()
            .filter(|l| !l.ok)
            .map(|l| {
                format!(
                    "{}: lag p99 {:.0} µs > {:.0} µs",
                    l.strategy,
                    l.p99 * 1e6,
                    l.threshold * 1e6
                )
            })
            .collect();
        (!late.is_empty()).then(|| {
            format!(
                "no verdict: the driver could not keep to the schedule ({}); response times measured are not the servers'.\n  fix: run on a quieter machine, raise --time-scale (or use --time-scale auto), or lower the load",
                late.join("; ")
            )
        })
    }

    /// Whether row `r` is judged: not when it is a response time of a strategy whose
    /// replay lagged beyond the gate ([`Figure::timed_by_driver`]), nor a figure that
    /// bunched sends move ([`Figure::moved_by_bunching`]) when the *dispatcher's* lag p99
    /// exceeds [`LAG_BUNCHING_FACTOR`] × the gate.
    ///
    /// The dispatcher's lag, because a bunch comes from a stall of the dispatcher. A call
    /// that waits for a connection instead (every connection to its backend holds a call:
    /// as many as the simulated replication needed, and at least the backend's workers +
    /// 16 in clusters of up to 40 servers) moves no figure of that list: its backend stays
    /// busy while it waits, and it joins the backend's queue later rather than longer, so
    /// a queue can only look *shorter* for it. (The exception: a backend that restarts has
    /// its connections reopened while its first calls arrive, which then wait for a
    /// millisecond or two, a handful in windows of seconds.) Those waits made the
    /// planted one-worker-fewer backend unjudged on a loaded machine: its queue of 50–70
    /// (simulated 0.07) held 60–120 calls in the driver while connections opened, which
    /// put the send lag p99 at 0.5–4.3 ms (4× the gate was 1.4 ms) while the dispatcher's
    /// was 20–130 µs in 6 replays of 9 (at most 1.6 ms; 2 yes loops on 2 cores).
    ///
    /// An error fraction the simulation expects above 0 (a scenario with faults) is timed
    /// too: how many requests a strategy sends to a failing backend depends on how fast
    /// failures come back, which a late driver changes. One the simulation expects at 0
    /// is judged whatever the lag: any failure disagrees.
    pub fn judged(&self, r: &Comparison) -> bool {
        if r.explained_by_machine() {
            return false;
        }
        let Some(lag) = self.lag.iter().find(|l| l.strategy == r.strategy) else {
            return true;
        };
        if r.figure.moved_by_bunching() {
            return lag.dispatch_p99 <= LAG_BUNCHING_FACTOR * lag.threshold;
        }
        let timed = r.figure.timed_by_driver()
            || (matches!(
                r.figure,
                Figure::Cluster(Metric::ErrorFraction) | Figure::PhaseErrorFraction
            ) && r.base() > 0.0);
        !timed || lag.ok
    }

    /// The word of `r`'s verdict, as printed and in `comparison.csv`: `pass`, `fail`,
    /// `not judged (machine busy)` or `not judged (lag)`.
    pub fn word(&self, r: &Comparison) -> &'static str {
        match (self.judged(r), r.passed()) {
            (false, _) if r.explained_by_machine() => "not judged (machine busy)",
            (false, _) => "not judged (lag)",
            (true, true) => "pass",
            (true, false) => "fail",
        }
    }

    /// The judged comparisons outside tolerance.
    pub fn failures(&self) -> impl Iterator<Item = &Comparison> {
        self.rows.iter().filter(|r| self.judged(r) && !r.passed())
    }

    /// Whether every judged comparison passes (see [`Verdict::outcome`]).
    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// Fail if any judged comparison is outside tolerance (naming each): a lag-free figure
    /// that disagrees is a disagreement whatever the lag. Otherwise no verdict if the lag
    /// kept some response times from being judged, else pass.
    pub fn outcome(&self) -> Outcome {
        let failed: Vec<String> = self
            .failures()
            .map(|r| format!("{} {}", r.strategy, r.metric()))
            .collect();
        if !failed.is_empty() {
            return Outcome::Fail { failed };
        }
        match self.refusal() {
            Some(reason) => Outcome::NoVerdict { reason },
            None => Outcome::Pass,
        }
    }

    /// The comparison of `strategy`'s `metric` (as in `comparison.csv`).
    pub fn row(&self, strategy: &str, metric: &str) -> Option<&Comparison> {
        self.rows
            .iter()
            .find(|r| r.strategy == strategy && r.metric() == metric)
    }
}

/// A row of `comparison.csv`.
#[derive(Serialize)]
struct ComparisonRow<'a> {
    strategy: &'a str,
    /// `figure` or `figure:server`.
    metric: String,
    unit: &'static str,
    sim_mean: f64,
    sim_ci95_low: f64,
    sim_ci95_high: f64,
    sim_replayed: f64,
    live: f64,
    against: &'static str,
    difference: f64,
    relative_difference: f64,
    tolerance_relative: f64,
    tolerance_absolute: f64,
    allowed: f64,
    /// Whether the row counts in the outcome (not when the driver's lag moved it:
    /// [`Verdict::judged`]).
    judged: bool,
    /// `pass`, `fail`, `not judged (machine busy)` or `not judged (lag)`
    /// ([`Verdict::word`]).
    verdict: &'static str,
}

impl<'a> ComparisonRow<'a> {
    fn new(v: &Verdict, c: &'a Comparison) -> Self {
        ComparisonRow {
            strategy: &c.strategy,
            metric: c.metric(),
            unit: c.figure.unit(),
            sim_mean: c.sim.mean,
            sim_ci95_low: c.sim.low,
            sim_ci95_high: c.sim.high,
            sim_replayed: c.sim_replayed,
            live: c.live,
            against: c.reference.name(),
            difference: c.difference(),
            relative_difference: c.relative_difference(),
            tolerance_relative: c.tolerance.relative,
            tolerance_absolute: c.tolerance.absolute,
            allowed: c.tolerance.allowed(c.base()),
            judged: v.judged(c),
            verdict: v.word(c),
        }
    }
}

/// Writes `summary.csv` and `servers.csv` (live, simulator schema), `sim/summary.csv` and
/// `sim/servers.csv` (calibrated simulation), `comparison.csv`, `calibration.csv`,
/// `lag.csv` and `cdf.svg` (or `.png`) into `dir`; returns the paths written.
pub fn write_reports(
    dir: &Folder<'_>,
    scenario: &Scenario,
    verdict: &Verdict,
    format: ImageFormat,
) -> Result<Vec<PathBuf>, ReportError> {
    let sim = dir.sub("sim");
    let mut written = vec![
        write_summary_csv(dir, scenario, &verdict.live)?,
        write_servers_csv(dir, scenario, &verdict.live)?,
        write_summary_csv(&sim, &verdict.calibrated, &verdict.sim)?,
        write_servers_csv(&sim, &verdict.calibrated, &verdict.sim)?,
    ];
    let rows: Vec<ComparisonRow<'_>> = verdict
        .rows
        .iter()
        .map(|c| ComparisonRow::new(verdict, c))
        .collect();
    written.push(write_rows(dir, "comparison.csv", &rows)?);
    written.push(write_rows(dir, "calibration.csv", &verdict.calibration)?);
    written.push(write_rows(dir, "lag.csv", &verdict.lag)?);
    let curves: Vec<_> = verdict
        .live
        .strategies
        .iter()
        .zip(&verdict.sim_replayed)
        .map(|(l, s)| (l.label.as_str(), &s.latency, l.latency()))
        .collect();
    written.push(dir.write_with(format!("cdf.{}", format.ext()), |p| {
        super::plots::live_latency_ccdf(p, format, &scenario.name, &curves)
    })?);
    Ok(written)
}

/// Writes `rows` into the CSV file `name` in `dir`.
fn write_rows<T: Serialize>(
    dir: &Folder<'_>,
    name: &str,
    rows: &[T],
) -> Result<PathBuf, ReportError> {
    let file = dir.create(name)?;
    let path = file.path().to_path_buf();
    let mut w = csv::Writer::from_writer(file);
    for r in rows {
        w.serialize(r).map_err(csv_err(&path))?;
    }
    finish_csv(w, &path)?;
    Ok(path)
}

/// A value of `unit` for the terminal: times in ms, fractions in %.
fn show(v: f64, unit: &str) -> String {
    match unit {
        "s" => format!("{:.3}", v * 1e3),
        "1" => format!("{:.2}", v * 1e2),
        _ => format!("{v:.3}"),
    }
}

/// A compact terminal table of the comparison (times in ms of scenario time, fractions
/// in %), then the calibration and the schedule lag beside the verdict.
pub fn table(verdict: &Verdict) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<30} {:>16} {:>10} {:>10} {:>8} {:>8}  verdict",
        "strategy", "metric", "sim mean ±95%", "sim rep.", "live", "diff", "allowed"
    );
    for r in &verdict.rows {
        let unit = r.figure.unit();
        // Relative to a simulated 0 (an empty queue) means nothing: show the absolute floor.
        let relative = r.figure.kind() == Kind::Relative && r.base() != 0.0;
        let (diff, allowed) = match relative {
            true => (
                format!("{:+.1}%", 100.0 * r.relative_difference()),
                format!(
                    "{:.1}%",
                    100.0 * r.tolerance.allowed(r.base()) / r.base().abs()
                ),
            ),
            false => (
                show(r.difference(), unit),
                show(r.tolerance.allowed(r.base()), unit),
            ),
        };
        let half = 0.5 * (r.sim.high - r.sim.low);
        let _ = writeln!(
            out,
            "{:<20} {:<30} {:>16} {:>10} {:>10} {:>8} {:>8}  {}",
            r.strategy,
            r.metric(),
            format!("{}±{}", show(r.sim.mean, unit), show(half, unit)),
            show(r.sim_replayed, unit),
            show(r.live, unit),
            diff,
            allowed,
            match verdict.word(r) {
                "pass" => "ok",
                "fail" => "FAIL",
                other => other,
            }
        );
    }
    let _ = writeln!(
        out,
        "(latencies in ms of scenario time, shares, utilisations and calibration in %, queues in requests)"
    );
    let _ = writeln!(
        out,
        "calibration at time scale {} (wall-clock µs; the simulated side adds at most {:.0}% of each server's declared service time):",
        verdict.time_scale,
        100.0 * verdict.calibration.first().map_or(0.0, |c| c.bound)
    );
    for c in &verdict.calibration {
        let _ = writeln!(
            out,
            "  {:<18} overhead {:.1}, extra latency {:.1}, ping {:.1} = {:.1}% of {:.0} µs declared; applied {:.1}%",
            c.server,
            c.service_overhead * 1e6,
            c.extra_latency * 1e6,
            c.ping_rtt * 1e6,
            100.0 * c.fraction,
            c.declared_service * 1e6,
            100.0 * c.applied_fraction
        );
    }
    if verdict.time_scale > 1.0 {
        let _ = writeln!(
            out,
            "time scale {}: a backend's fixed wall-clock cost per request shows as 1/{} of it in scenario time; a cost the bound lets through at this scale is up to {:.0} µs wall-clock per request",
            verdict.time_scale,
            verdict.time_scale,
            verdict
                .calibration
                .iter()
                .map(|c| c.bound * c.declared_service)
                .fold(0.0, f64::max)
                * 1e6
        );
    }
    for (l, errors) in verdict.lag.iter().zip(&verdict.errors) {
        let _ = writeln!(
            out,
            "{:<20} schedule lag p50 {:.0} µs, p99 {:.0} µs (limit {:.0} µs{}), max {:.2} ms; errors {}",
            l.strategy,
            l.p50 * 1e6,
            l.p99 * 1e6,
            l.threshold * 1e6,
            if l.ok { "" } else { ": EXCEEDED" },
            l.max * 1e3,
            errors
        );
        if !l.woke_late_mean.is_nan() {
            let _ = writeln!(
                out,
                "{:<20} the machine woke serving threads late by {:.0} µs (mean), {:.0} µs (p99)",
                "",
                l.woke_late_mean * 1e6,
                l.woke_late_p99 * 1e6
            );
        }
        if l.stalls > 0 {
            let _ = writeln!(
                out,
                "{:<20} stalls: {} (a worker late by 5% of a service time or more, the dispatcher by 25%), longest {:.1} ms at {:.3} s, {:.1} ms in all; rows they explain are not judged (machine busy)",
                "",
                l.stalls,
                l.stall_max * 1e3,
                l.stall_max_at,
                l.stall_total * 1e3
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn row(figure: Figure, sim: f64, replayed: f64, live: f64, reference: Reference) -> Comparison {
        Comparison {
            strategy: "s".into(),
            figure,
            server: None,
            sim: Estimate {
                mean: sim,
                low: sim * 0.9,
                high: sim * 1.1,
                n: 10,
            },
            sim_replayed: replayed,
            live,
            reference,
            tolerance: figure.default_tolerance(),
            machine: None,
        }
    }

    #[test]
    fn tolerances_take_checks_syntax() {
        let t = Tolerances::parse(&["latency_p99=30%, share=0.05".into()]).unwrap();
        assert_eq!(t.get(Figure::Cluster(Metric::LatencyP99)).relative, 0.3);
        assert_eq!(t.get(Figure::Share).absolute, 0.05);
        assert_eq!(t.get(Figure::Cluster(Metric::LatencyMean)).relative, 0.1);
        let t = Tolerances::parse(&["calibration=5%".into()]).unwrap();
        assert!((t.calibration_bound() - 0.05).abs() < 1e-15);
        for bad in ["latency_p99", "p99=0.1", "share=-1", "share=x"] {
            let e = Tolerances::parse(&[bad.into()]).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("fix:"), "{e}");
        }
    }

    /// The figures' names (the rows of `comparison.csv` and the `--tolerance` names), units,
    /// tolerances and lag rules, in row order, as they were before the cluster figures
    /// became [`Figure::Cluster`] of a metric.
    #[test]
    fn every_figure_keeps_its_name_unit_tolerance_and_lag_rules() {
        use Kind::{Absolute as A, Relative as R};
        #[rustfmt::skip]
        let expected = [
            // name, unit, kind, relative, absolute, timed by driver, moved by bunching
            ("latency_mean", "s", R, 0.10, 0.0, true, false),
            ("latency_p50", "s", R, 0.10, 0.0, true, false),
            ("latency_p99", "s", R, 0.20, 0.0, true, false),
            ("error_fraction", "1", A, 0.10, 0.0, false, false),
            ("share", "1", A, 0.0, 0.02, false, false),
            ("server_utilization", "1", R, 0.10, 0.0, false, true),
            ("server_queue_mean", "requests", R, 0.25, 0.05, false, true),
            ("server_latency_mean", "s", R, 0.15, 0.0, true, false),
            ("calibration", "1", A, 0.0, 0.10, false, false),
            ("calibration_under_load", "1", A, 0.0, 0.10, true, false),
            ("phase_latency_mean", "s", R, 0.15, 0.0, true, false),
            ("phase_latency_p99", "s", R, 0.30, 0.0, true, false),
            ("phase_error_fraction", "1", A, 0.15, IN_FLIGHT_FLOOR, false, false),
            ("attempts_per_request", "1", R, 0.05, 0.0, false, false),
            ("retry_rate", "1", A, 0.0, 0.02, false, false),
            ("hedge_rate", "1", A, 0.0, 0.02, true, false),
            ("timeout_fraction", "1", A, 0.0, 0.02, true, false),
            ("wasted_fraction", "1", A, 0.0, 0.02, true, false),
            ("overflow_fraction", "1", A, 0.0, 0.02, false, true),
            ("shed_fraction", "1", A, 0.0, 0.02, false, true),
        ];
        assert_eq!(Figure::ALL.len(), expected.len());
        for (f, (name, unit, kind, relative, absolute, timed, bunched)) in
            Figure::ALL.into_iter().zip(expected)
        {
            assert_eq!((f.name(), f.unit(), f.kind()), (name, unit, kind), "{f:?}");
            let t = f.default_tolerance();
            assert_eq!((t.relative, t.absolute), (relative, absolute), "{f:?}");
            assert_eq!(
                (f.timed_by_driver(), f.moved_by_bunching()),
                (timed, bunched)
            );
            assert_eq!(Figure::from_name(name), Some(f));
            assert_eq!(f.metric().is_some(), !f.per_server() && !f.per_phase());
        }
    }

    #[test]
    fn rows_compare_against_the_chosen_reference() {
        let mean = Figure::Cluster(Metric::LatencyMean);
        let r = row(mean, 1.0, 2.0, 2.1, Reference::Replayed);
        assert!((r.relative_difference() - 0.05).abs() < 1e-12 && r.passed());
        let r = row(mean, 1.0, 2.0, 2.1, Reference::Mean);
        assert!(!r.passed());
        let r = row(Figure::Share, 0.25, 0.25, 0.26, Reference::Replayed);
        assert!((r.difference() - 0.01).abs() < 1e-12 && r.passed());
        let r = row(Figure::Share, 0.25, f64::NAN, 0.26, Reference::Replayed);
        assert!(!r.passed());
    }

    #[test]
    fn adaptive_strategies_widen_per_server_tolerances_with_the_spread() {
        // Fewer than two replications: no spread; identical values: none either.
        assert_eq!(spread_allowance(&[0.3], 1), 0.0);
        assert_eq!(spread_allowance(&[0.3, 0.3, f64::NAN, 0.3], 1), 0.0);
        // Sample standard deviation of 0, 1 and 2 is 1: t(2 df) × √2, and t(2 df) at
        // 0.99865 is 19.21 (tables); 10 values of standard deviation 1: t(9 df) = 4.09.
        let three = spread_allowance(&[0.0, 1.0, 2.0], 1) / std::f64::consts::SQRT_2;
        assert!((three - 19.21).abs() < 0.01, "{three}");
        let ten: Vec<f64> = (0..10)
            .map(|k| if k % 2 == 0 { 0.0 } else { 1.0 })
            .collect();
        let sd = (10.0 * 0.25 / 9.0_f64).sqrt();
        let t9 = spread_allowance(&ten, 1) / std::f64::consts::SQRT_2 / sd;
        assert!((t9 - 4.09).abs() < 0.01, "{t9}");
        // Shared among m rows (the verdict's family-wise rate stays 0.27%): t at
        // 1 − 0.0027 / (2m), here against a numerical integration of t's density
        // (Simpson's rule on 1/t, 200,000 steps; 3 decimals).
        for (m, t2, t9) in [
            (100, 192.446, 7.803),
            (255, 307.316, 8.766),
            (550, 451.334, 9.626),
        ] {
            let got2 = spread_allowance(&[0.0, 1.0, 2.0], m) / std::f64::consts::SQRT_2;
            let got9 = spread_allowance(&ten, m) / std::f64::consts::SQRT_2 / sd;
            assert!((got2 - t2).abs() < 2e-3 * t2, "m {m}: {got2} against {t2}");
            assert!((got9 - t9).abs() < 2e-3 * t9, "m {m}: {got9} against {t9}");
        }
        let rest = testing::servers("s", 2, "", &testing::exponential(0.01))
            + &testing::kinds(&["round_robin", "weighted_random"])
            + "[[strategies]]\nlabel = \"lc\"\nkind = \"least_connections\"\n"
            + &testing::kinds(&["power_of_d"]);
        let s = testing::scenario("duration = 5", 10.0, &rest);
        // Timing decides the picks of load-aware strategies only.
        assert!(!adaptive(&s, "round_robin") && !adaptive(&s, "weighted_random"));
        assert!(adaptive(&s, "lc") && adaptive(&s, "power_of_d"));
        // The family: 3 response times + 4 figures × 2 servers per adaptive strategy.
        let labels = ["round_robin", "weighted_random", "lc", "power_of_d"];
        assert_eq!(spread_family(&s, labels), 2 * (3 + 4 * 2));
    }

    #[test]
    fn adaptive_strategies_widen_response_time_tolerances_with_the_spread() {
        use crate::runner::{RunResults, StrategyResult};
        use crate::sim::Run;
        // JSQ on 0.2 s-old reports herds: its runs' response times spread widely. Round
        // robin's picks do not depend on timing, so its tolerance stays fixed.
        let rest = testing::servers("s", 4, "workers = 1", &testing::exponential(0.01))
            + &testing::kinds(&["round_robin", "jsq"]);
        let s = testing::scenario(
            "duration = 3\nwarmup = 0.5\nload_report_interval = 0.2",
            300.0,
            &rest,
        );
        let runs: Vec<Vec<RunMetrics>> = s
            .strategies
            .iter()
            .map(|e| (0..6).map(|r| Run::entry(&s, e, r).metrics()).collect())
            .collect();
        let results = |reps: &[usize]| RunResults {
            seed: s.seed,
            requested: reps.len() as u32,
            finished: reps.iter().map(|&r| r as u64).collect(),
            strategies: s
                .strategies
                .iter()
                .zip(&runs)
                .map(|(e, r)| {
                    let chosen: Vec<RunMetrics> = reps.iter().map(|&k| r[k].clone()).collect();
                    StrategyResult::from_runs(e.label().to_string(), &chosen)
                })
                .collect(),
        };
        let sim = results(&[0, 1, 2, 3, 4, 5]);
        // "Live" is replication 1, judged against replication 0 as the replayed one.
        let live = results(&[1]);
        let replayed: Vec<RunSummary> = runs.iter().map(|r| r[0].summarize()).collect();
        let idle = vec![0.0; 4];
        let rows = judge(
            &Judged {
                scenario: &s,
                sim: &sim,
                sim_replayed: &replayed,
                live: &live,
                idle: &idle,
                under_load: &[],
                phases: &[],
            },
            &Tolerances::default(),
            Reference::Replayed,
        );
        let mean = |label: &str| {
            rows.iter()
                .find(|r| r.strategy == label && r.figure == Figure::Cluster(Metric::LatencyMean))
                .expect("latency_mean row")
        };
        let fixed = Figure::Cluster(Metric::LatencyMean).default_tolerance();
        assert_eq!(mean("round_robin").tolerance, fixed);
        let jsq = mean("jsq");
        let spread: Vec<f64> = runs[1]
            .iter()
            .map(|m| m.summarize().values[Metric::LatencyMean])
            .collect();
        // One adaptive strategy on 4 servers: 3 + 16 rows share the false-alarm rate.
        assert!(spread_allowance(&spread, 19) > spread_allowance(&spread, 1));
        assert_eq!(jsq.tolerance.absolute, spread_allowance(&spread, 19));
        // Another replication of a herding strategy passes against the replayed one.
        assert!(jsq.passed(), "{jsq:?}");
    }

    /// A verdict over `rows` of round robin (`rr`) and least connections (`lc`), whose
    /// replays lagged `rr_lag` and `lc_lag` × the gate (1 ms).
    fn lagged(rows: Vec<Comparison>, rr_lag: f64, lc_lag: f64) -> Verdict {
        lagged_by(rows, (rr_lag, rr_lag), (lc_lag, lc_lag))
    }

    /// [`lagged`], with the send lag and the dispatcher's lag of each replay apart (× the
    /// gate): `(send, dispatcher)`.
    fn lagged_by(rows: Vec<Comparison>, rr: (f64, f64), lc: (f64, f64)) -> Verdict {
        let rest = testing::servers("s", 2, "", &testing::exponential(0.01))
            + "[[strategies]]\nlabel = \"rr\"\nkind = \"round_robin\"\n"
            + "[[strategies]]\nlabel = \"lc\"\nkind = \"least_connections\"\n";
        let calibrated = testing::scenario("duration = 5", 10.0, &rest);
        let empty = RunResults {
            seed: 1,
            requested: 0,
            finished: Vec::new(),
            strategies: Vec::new(),
        };
        let check = |strategy: &str, (send, dispatcher): (f64, f64)| LagCheck {
            strategy: strategy.into(),
            p50: 0.0,
            p99: send * 1e-3,
            max: send * 1e-3,
            dispatch_p99: dispatcher * 1e-3,
            threshold: 1e-3,
            ok: send <= 1.0,
            woke_late_mean: f64::NAN,
            woke_late_p99: f64::NAN,
            stalls: 0,
            stall_max: 0.0,
            stall_max_at: f64::NAN,
            stall_total: 0.0,
        };
        Verdict {
            calibrated,
            sim: empty.clone(),
            sim_replayed: Vec::new(),
            live: empty,
            rows,
            lag: vec![check("rr", rr), check("lc", lc)],
            errors: vec![0, 0],
            calibration: Vec::new(),
            time_scale: 1.0,
        }
    }

    /// A row of `strategy` for server `s-0` (per-server figures) that passes, or fails
    /// when `fails`; an error fraction is expected at `base`.
    fn of(strategy: &str, figure: Figure, base: f64, fails: bool) -> Comparison {
        let live = if fails { base + 1.0 } else { base };
        let mut r = row(figure, base, base, live, Reference::Replayed);
        r.strategy = strategy.into();
        r.server = figure.per_server().then(|| "s-0".to_string());
        r
    }

    #[test]
    fn a_lag_beyond_the_gate_leaves_only_the_timed_figures_unjudged() {
        // 2× the gate: response times (and an error fraction expected above 0) are not
        // judged; queues, utilisations, shares, shedding and a zero-expected error are.
        let rows = vec![
            of("lc", Figure::Cluster(Metric::LatencyMean), 0.01, true),
            of("lc", Figure::ServerLatencyMean, 0.01, true),
            of("lc", Figure::Cluster(Metric::ErrorFraction), 0.1, true),
            of("lc", Figure::ServerQueueMean, 0.5, false),
            of("lc", Figure::ServerUtilization, 0.5, false),
            of("lc", Figure::Share, 0.5, false),
            of("lc", Figure::Cluster(Metric::ShedFraction), 0.1, false),
            of("lc", Figure::Cluster(Metric::ErrorFraction), 0.0, false),
        ];
        let v = lagged(rows, 0.5, 2.0);
        let judged: Vec<bool> = v.rows.iter().map(|r| v.judged(r)).collect();
        assert_eq!(
            judged,
            [false, false, false, true, true, true, true, true],
            "{judged:?}"
        );
        assert!(v.passed());
        assert!(matches!(v.outcome(), Outcome::NoVerdict { .. }));
        // Without lag every row is judged.
        let v = lagged(v.rows.clone(), 0.5, 0.5);
        assert!(v.rows.iter().all(|r| v.judged(r)));
        assert!(matches!(v.outcome(), Outcome::Fail { failed } if failed.len() == 3));
    }

    #[test]
    fn a_lag_far_beyond_the_gate_leaves_the_bunched_figures_unjudged() {
        let bunched = [
            Figure::ServerQueueMean,
            Figure::ServerUtilization,
            Figure::Cluster(Metric::ShedFraction),
            Figure::Cluster(Metric::OverflowFraction),
        ];
        for factor in [LAG_BUNCHING_FACTOR, 1.01 * LAG_BUNCHING_FACTOR] {
            let far = factor > LAG_BUNCHING_FACTOR;
            let mut rows: Vec<Comparison> = bunched
                .iter()
                .flat_map(|&f| [of("rr", f, 0.5, true), of("lc", f, 0.5, true)])
                .collect();
            // Shares are judged under any lag, a load-aware strategy's too.
            rows.push(of("lc", Figure::Share, 0.5, true));
            rows.push(of("rr", Figure::Share, 0.5, true));
            let v = lagged(rows, factor, factor);
            let (bunch, shares) = v.rows.split_at(v.rows.len() - 2);
            for r in bunch {
                assert_eq!(v.judged(r), !far, "{} at {factor}×: {r:?}", v.word(r));
            }
            assert!(shares.iter().all(|r| v.judged(r)), "shares at {factor}×");
            let failed = match v.outcome() {
                Outcome::Fail { failed } => failed,
                other => panic!("{other:?}"),
            };
            assert_eq!(failed.len(), if far { 2 } else { 10 }, "{failed:?}");
        }
        // A failure the simulation does not expect fails the run under any lag, and so
        // does the idle calibration; a judged row's word is pass or fail.
        let rows = vec![
            of("lc", Figure::Cluster(Metric::ErrorFraction), 0.0, true),
            of("calibration", Figure::Calibration, 0.0, true),
            of("lc", Figure::ServerQueueMean, 0.5, true),
        ];
        let v = lagged(rows, 100.0, 100.0);
        let words: Vec<&str> = v.rows.iter().map(|r| v.word(r)).collect();
        assert_eq!(words, ["fail", "fail", "not judged (lag)"]);
        assert!(matches!(v.outcome(), Outcome::Fail { failed } if failed.len() == 2));
    }

    /// Calls that waited for a connection to a busy backend lag their sends, not the
    /// dispatcher: far beyond the gate they keep response times from being judged, but
    /// not the figures bunched sends move; a dispatcher that far behind does.
    #[test]
    fn connection_waits_alone_leave_the_bunched_figures_judged() {
        let rows = vec![
            of("rr", Figure::Cluster(Metric::LatencyMean), 0.01, false),
            of("rr", Figure::ServerQueueMean, 0.5, true),
            of("rr", Figure::ServerUtilization, 0.5, true),
        ];
        let far = 10.0 * LAG_BUNCHING_FACTOR;
        let waits = lagged_by(rows.clone(), (far, 0.5), (0.5, 0.5));
        let judged: Vec<bool> = waits.rows.iter().map(|r| waits.judged(r)).collect();
        assert_eq!(judged, [false, true, true]);
        assert!(matches!(waits.outcome(), Outcome::Fail { failed } if failed.len() == 2));
        let stalled = lagged_by(rows, (far, 1.01 * LAG_BUNCHING_FACTOR), (0.5, 0.5));
        assert!(stalled.rows.iter().all(|r| !stalled.judged(r)));
        assert!(matches!(stalled.outcome(), Outcome::NoVerdict { .. }));
    }

    #[test]
    fn comparison_csv_and_the_table_agree_on_rows_not_judged() {
        let rows = vec![
            of("lc", Figure::ServerQueueMean, 0.5, true),
            of("rr", Figure::ServerQueueMean, 0.5, true),
            of("rr", Figure::ServerUtilization, 0.5, false),
        ];
        let v = lagged(rows, 1.0, 10.0);
        let csv: Vec<(bool, &str)> = v
            .rows
            .iter()
            .map(|c| {
                let r = ComparisonRow::new(&v, c);
                (r.judged, r.verdict)
            })
            .collect();
        assert_eq!(
            csv,
            [(false, "not judged (lag)"), (true, "fail"), (true, "pass")]
        );
        let printed: Vec<&str> = table(&v)
            .lines()
            .filter(|l| l.contains("server_"))
            .map(|l| {
                ["not judged (lag)", "FAIL", "ok"]
                    .into_iter()
                    .find(|w| l.ends_with(w))
                    .expect("a verdict")
            })
            .collect();
        assert_eq!(printed, ["not judged (lag)", "FAIL", "ok"]);
    }

    #[test]
    fn a_row_the_busy_machine_explains_is_not_judged_and_never_passes() {
        // Utilisation 0.5 simulated, 0.6 live: +20% against 10%.
        let util = |machine: Option<f64>| {
            let mut r = of("rr", Figure::ServerUtilization, 0.5, false);
            (r.live, r.machine) = (0.6, machine);
            r
        };
        // As the machine ran, the simulation has 0.58: within 10% of it, the machine
        // explains the row. At 0.52 it does not, nor without a measurement.
        assert!(util(Some(0.58)).explained_by_machine());
        assert!(!util(Some(0.52)).explained_by_machine());
        assert!(!util(None).explained_by_machine());
        // A row that passes needs no explanation.
        let mut fine = util(Some(0.9));
        fine.live = 0.51;
        assert!(fine.passed() && !fine.explained_by_machine());
        // Calibration under load at 16% against the bound of 10%: the machine alone
        // overran sleeps by 9% (explained) or by 5% (the backend's own 11% fails).
        let loaded = |machine| {
            let mut r = of("rr", Figure::CalibrationUnderLoad, 0.0, false);
            (r.live, r.machine) = (0.16, Some(machine));
            r
        };
        assert!(loaded(0.09).explained_by_machine());
        assert!(!loaded(0.05).explained_by_machine());

        // Only explained rows fail: no verdict, naming them, never a pass.
        let v = lagged(vec![util(Some(0.58)), loaded(0.09), fine.clone()], 1.0, 1.0);
        let words: Vec<&str> = v.rows.iter().map(|r| v.word(r)).collect();
        assert_eq!(
            words,
            [
                "not judged (machine busy)",
                "not judged (machine busy)",
                "pass"
            ]
        );
        match v.outcome() {
            Outcome::NoVerdict { reason } => {
                assert!(reason.contains("machine was too busy"), "{reason}");
                assert!(reason.contains("rr server_utilization:s-0"), "{reason}");
                assert!(reason.contains("rr calibration_under_load:s-0"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // A row the machine does not explain fails the verdict, whatever the others.
        let v = lagged(vec![util(Some(0.58)), loaded(0.05), fine], 1.0, 1.0);
        assert_eq!(
            v.outcome(),
            Outcome::Fail {
                failed: vec!["rr calibration_under_load:s-0".into()]
            }
        );
        // With the driver's lag too, both reasons are given.
        let v = lagged(vec![util(Some(0.58))], 2.0, 1.0);
        let reason = v.refusal().expect("refused");
        assert!(reason.contains("lag p99") && reason.contains("machine was too busy"));
    }

    #[test]
    fn queue_has_a_floor_and_calibration_a_bound() {
        // 0.0014 simulated, 0.111 live: beyond the 0.05 floor.
        assert!(
            !row(
                Figure::ServerQueueMean,
                0.0014,
                0.0014,
                0.111,
                Reference::Replayed
            )
            .passed()
        );
        assert!(
            row(
                Figure::ServerQueueMean,
                0.0014,
                0.0014,
                0.04,
                Reference::Replayed
            )
            .passed()
        );
        // 1.0 vs 1.2 is within 25%.
        assert!(row(Figure::ServerQueueMean, 1.0, 1.0, 1.2, Reference::Replayed).passed());
        // Calibration against the declared 0: 3% passes, 25% (2 ms on 8 ms) fails.
        assert!(row(Figure::Calibration, 0.0, 0.0, 0.03, Reference::Replayed).passed());
        assert!(!row(Figure::Calibration, 0.0, 0.0, 0.25, Reference::Replayed).passed());
    }
}
