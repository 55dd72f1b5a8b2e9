//! The `Strategy` trait: how a balancer chooses a backend for each request.
//!
//! One implementation serves both the simulator and live mode. A strategy sees a read-only
//! view of the backends ([`Backend`]) and the current time passed in ([`PickContext`]), and
//! is told of every dispatch and completion. It does no I/O, reads no clock and starts no
//! thread; its randomness comes from a seeded generator handed to it at construction.

mod aperture;
mod bounded_load;
mod edf;
mod edf_wrr;
mod first;
mod grpc_wrr;
pub mod hash;
mod jiq;
mod jsq;
mod least_conn;
mod least_request;
mod least_response_time;
mod leastconn;
pub mod load;
mod maglev;
mod peak_ewma;
mod power_of_d;
mod random;
mod ring_hash;
mod round_robin;
pub mod sample;
mod smooth_wrr;
mod spec;
mod static_rr;
mod weighted_random;

pub use aperture::{Aperture, ApertureConfig};
pub use bounded_load::BoundedLoadHash;
pub use edf::EdfScheduler;
pub use edf_wrr::EdfWeightedRoundRobin;
pub use first::First;
pub use grpc_wrr::{GrpcWeightedRoundRobin, GrpcWrrConfig};
pub use jiq::JoinIdleQueue;
pub use jsq::ShortestQueue;
pub use least_conn::LeastConnections;
pub use least_request::LeastRequest;
pub use least_response_time::LeastResponseTime;
pub use leastconn::Leastconn;
pub use load::{Load, PendingRequests};
pub use maglev::Maglev;
pub use peak_ewma::{PeakEwma, PeakEwmaP2c};
pub use power_of_d::PowerOfD;
pub use random::RandomChoice;
pub use ring_hash::RingHash;
pub use round_robin::RoundRobin;
pub use sample::Sampler;
pub use smooth_wrr::SmoothWeightedRoundRobin;
pub use spec::{CATALOGUE, SpecError, StrategyEntry, StrategyInfo, StrategySpec};
pub use static_rr::StaticRr;
pub use weighted_random::WeightedRandom;

use crate::time::Nanos;

/// What a strategy may see of one backend, from the point of view of its balancer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Requests this balancer has sent to the backend and not yet seen complete.
    pub in_flight: u32,
    /// Configured weight (0 means "never pick" for weighted strategies).
    pub weight: u32,
    /// Whether the backend is up (health-checked). A strategy must not pick a down backend.
    pub up: bool,
    /// Latency of the last request that completed on this backend, if any.
    pub last_latency: Option<Nanos>,
    /// The server's own report of its load (all balancers' requests), as of `load.at`.
    /// Exact when the scenario has no `load_report_interval`, otherwise refreshed every
    /// interval (stale in between). `None` until the first report, in live mode, and for
    /// strategies that do not read reports (`StrategySpec::reads_load_reports`).
    pub load: Option<LoadReport>,
}

/// A server's report of its load, as a server-side load reporter (ORCA, HAProxy agent
/// check) would send it. Counters are cumulative so that a strategy can difference two
/// reports to get a rate over its own period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// When the report was taken.
    pub at: Nanos,
    /// Requests at the server (waiting + in service), from every balancer.
    pub in_system: u32,
    /// Workers.
    pub workers: u32,
    /// Requests completed since the start of the run.
    pub completed: u64,
    /// Busy worker-time since the start of the run (worker-nanoseconds).
    pub busy_time: u64,
}

impl Backend {
    /// A backend that is up, idle and has the given weight.
    pub fn new(weight: u32) -> Backend {
        Backend {
            in_flight: 0,
            weight,
            up: true,
            last_latency: None,
            load: None,
        }
    }
}

/// What a strategy knows of the request it is placing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PickContext {
    /// Current time.
    pub now: Nanos,
    /// The request's key (for hashing strategies).
    pub key: u64,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Served.
    Ok,
    /// Refused by the backend because its queue was full.
    Rejected,
    /// Failed (connection error, backend crashed).
    Failed,
}

/// A load-balancing strategy.
pub trait Strategy: Send {
    /// Chooses the backend for a request, or `None` when no backend is eligible (all down).
    fn pick(&mut self, backends: &[Backend], ctx: &PickContext) -> Option<usize>;

    /// Told after the request has been sent to `backend`.
    fn on_dispatch(&mut self, _backend: usize, _now: Nanos) {}

    /// Told when a request sent to `backend` ends after `latency`.
    fn on_complete(&mut self, _backend: usize, _latency: Nanos, _outcome: Outcome, _now: Nanos) {}
}

/// A strategy with its view of the backends: what one client-side balancer holds.
///
/// The simulator and the live driver both route through this type, so the view a strategy
/// sees is maintained by one piece of code in both modes.
pub struct Balancer {
    strategy: Box<dyn Strategy>,
    backends: Vec<Backend>,
}

impl Balancer {
    /// A balancer over backends with the given weights, all up and idle.
    pub fn new(strategy: Box<dyn Strategy>, weights: &[u32]) -> Balancer {
        Balancer {
            strategy,
            backends: weights.iter().map(|&w| Backend::new(w)).collect(),
        }
    }

    /// The balancer's view of its backends.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Picks a backend for a request and records the dispatch.
    pub fn route(&mut self, now: Nanos, key: u64) -> Option<usize> {
        let i = self
            .strategy
            .pick(&self.backends, &PickContext { now, key })?;
        debug_assert!(self.backends[i].up, "strategy picked a down backend");
        self.backends[i].in_flight += 1;
        self.strategy.on_dispatch(i, now);
        Some(i)
    }

    /// Records the end of a request previously routed to `backend`.
    pub fn complete(&mut self, backend: usize, latency: Nanos, outcome: Outcome, now: Nanos) {
        let b = &mut self.backends[backend];
        b.in_flight = b.in_flight.saturating_sub(1);
        if outcome == Outcome::Ok {
            b.last_latency = Some(latency);
        }
        self.strategy.on_complete(backend, latency, outcome, now);
    }

    /// Updates the server-reported load of a backend.
    pub fn set_load(&mut self, backend: usize, report: LoadReport) {
        self.backends[backend].load = Some(report);
    }

    /// Marks a backend up or down.
    pub fn set_up(&mut self, backend: usize, up: bool) {
        self.backends[backend].up = up;
    }
}

/// Iterates over the indices of backends that are up, starting at `start` and wrapping.
pub(crate) fn up_from(backends: &[Backend], start: usize) -> impl Iterator<Item = usize> + '_ {
    let n = backends.len();
    (0..n)
        .map(move |k| (start + k) % n)
        .filter(move |&i| backends[i].up)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for strategy unit tests.
    use super::*;

    /// Routes `n` requests through `balancer`, completing each at once, and returns the picks.
    pub fn picks(balancer: &mut Balancer, n: usize) -> Vec<usize> {
        (0..n)
            .map(|k| {
                let i = balancer
                    .route(Nanos(k as u64), k as u64)
                    .expect("a backend is up");
                balancer.complete(i, Nanos(1), Outcome::Ok, Nanos(k as u64));
                i
            })
            .collect()
    }

    /// Counts of each backend in `picks`.
    pub fn counts(picks: &[usize], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &p in picks {
            c[p] += 1;
        }
        c
    }
}
