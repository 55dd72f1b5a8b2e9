//! What a live replay produces ([`StrategyReplay`], [`LiveRun`]) and what the request-level
//! driver and the connection-level replay ([`super::l4`]) share to produce it: the
//! wall-clock ↔ scenario [`Clock`], the balancer each replay starts from, real-time
//! priority and the per-server service integrals.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::calibrate::{Calibration, LoadedCost};
use crate::metrics::RunMetrics;
use crate::scenario::Scenario;
use crate::time::Nanos;
use crate::workload::Dist;

/// What was measured replaying one strategy.
#[derive(Clone, Debug)]
pub struct StrategyReplay {
    /// Strategy label.
    pub label: String,
    /// Figures in scenario units, as the simulator reports them. Per-server busy and
    /// queue integrals come from the backends' own reports (time in service and time
    /// queued of each measured request); `queue_max` is the client's estimate (requests
    /// in flight beyond the workers).
    pub metrics: RunMetrics,
    /// Requests that failed (connection closed or reset, timeout): counted as
    /// `Outcome::Failed` to the balancer, which then marks the backend down.
    pub errors: u64,
    /// Requests sent.
    pub sent: u64,
    /// Schedule lag of every send (wall-clock nanoseconds, not scaled): from the scheduled
    /// time to the dispatcher starting to write the call.
    pub lag: Histogram<u64>,
    /// The dispatcher's wake-up part of the lag: from the scheduled time to the routing
    /// decision; the rest of `lag` is routing and encoding.
    pub dispatch_lag: Histogram<u64>,
    /// Wall-clock time from the first scheduled request to the last answer.
    pub wall: Duration,
    /// Backends marked down during the run (index), in the order they failed.
    pub marked_down: Vec<usize>,
    /// Per backend: requests that failed on it.
    pub errors_per_backend: Vec<u64>,
    /// Connections opened in total by the end of this strategy.
    pub connections: usize,
    /// Requests of this strategy that found no idle connection to their backend and
    /// waited for one to open or free up (the wait counts in their latency).
    pub connection_waits: u64,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    /// Probes whose real round trip exceeded the scenario's `[probes] delay` × the time
    /// scale: their answers reached the strategy late (`super::probe`).
    pub probes_late: u64,
    /// Whether the dispatcher ran at real-time priority ([`LiveOptions::realtime`](super::options::LiveOptions::realtime)).
    pub realtime: bool,
    /// Per backend, what it added to each served call *under the replay's load*: the
    /// idle calibration's service overhead and extra latency, measured on the replay's
    /// calls (request-level and connection-level replays alike).
    pub under_load: Vec<LoadedCost>,
    /// Per server group, by how much a thread sleeping the group's declared mean service
    /// time beside the replay overran its sleeps (wall-clock ns, at least 1): how late the
    /// machine itself woke threads, apart from any backend (`super::machine`). Empty where
    /// not measured.
    pub machine: Vec<Histogram<u64>>,
    /// Fault actions applied to the backends and health changes seen by the balancer,
    /// in order, each with how late it was applied ([`super::faults`]); empty without
    /// faults.
    pub faults: Vec<super::faults::FaultEvent>,
    /// When the machine stalled the dispatcher or a backend's worker for a sizeable part
    /// of a service time: the longest whole, all counted ([`super::stall`]); empty
    /// where not measured.
    pub stalls: super::stall::Stalls,
}

/// The replay of every strategy.
#[derive(Clone, Debug)]
pub struct LiveRun {
    /// Seed used.
    pub seed: u64,
    /// Replication replayed.
    pub replication: u64,
    /// Time scale used.
    pub time_scale: f64,
    /// Backend addresses, in scenario server order.
    pub backends: Vec<SocketAddr>,
    /// What the calibration measured.
    pub calibration: Calibration,
    /// One per replayed strategy, in scenario order.
    pub strategies: Vec<StrategyReplay>,
}

/// Converts between wall-clock and scenario time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    pub start: Instant,
    pub scale: f64,
}

impl Clock {
    /// Wall-clock instant of scenario time `t`.
    pub fn at(&self, t: Nanos) -> Instant {
        self.start + Duration::from_nanos((t.0 as f64 * self.scale).round() as u64)
    }

    /// A wall-clock duration in scenario units.
    pub fn scenario(&self, d: Duration) -> Nanos {
        Nanos((d.as_nanos() as f64 / self.scale).round() as u64)
    }

    /// A wall-clock duration of `ns` nanoseconds (as a server reports it) in scenario units.
    pub fn scenario_ns(&self, ns: u64) -> Nanos {
        self.scenario(Duration::from_nanos(ns))
    }

    /// Scenario time of a wall-clock instant.
    pub fn now(&self, t: Instant) -> Nanos {
        self.scenario(t.saturating_duration_since(self.start))
    }
}

/// Real-time scheduling of the calling thread for as long as the value lives.
///
/// Best effort and without `unsafe`: asks `chrt` (util-linux) to give this thread
/// `SCHED_FIFO` priority 10, and back to `SCHED_OTHER` on drop. Refused without the
/// privilege (`CAP_SYS_NICE`, or an `RLIMIT_RTPRIO` allowance) or without `chrt`; the
/// replay then runs at normal priority and the lag gate judges the result. The dispatcher
/// sleeps between requests and spins at most a quarter of each gap, and the kernel's
/// real-time throttling keeps 5% of every core for other threads, so it cannot starve the
/// machine.
pub(crate) struct Realtime {
    tid: Option<String>,
}

impl Realtime {
    /// Raises this thread's priority if `wanted` and permitted.
    pub(crate) fn enter(wanted: bool) -> Realtime {
        #[cfg(target_os = "linux")]
        {
            if wanted {
                let tid = rustix::thread::gettid().as_raw_nonzero().to_string();
                // `-R` (SCHED_RESET_ON_FORK): the threads it spawns — connections opened
                // while the pool grows — run at normal priority, like those opened before
                // the replay. Without it they inherited SCHED_FIFO, and a burst of a
                // thousand of them starved the backends' accept loops and workers (normal
                // priority) until the kernel's real-time throttling cut in, ~0.95 s later.
                if chrt(&["-f", "-R", "-p", "10", &tid]) {
                    return Realtime { tid: Some(tid) };
                }
            }
        }
        let _ = wanted;
        Realtime { tid: None }
    }

    /// Whether this thread runs at real-time priority.
    pub(crate) fn active(&self) -> bool {
        self.tid.is_some()
    }
}

impl Drop for Realtime {
    fn drop(&mut self) {
        if let Some(tid) = &self.tid {
            chrt(&["-o", "-p", "0", tid]);
        }
    }
}

fn chrt(args: &[&str]) -> bool {
    std::process::Command::new("chrt")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Adds a served call's time in service and time queued to server `i`'s integrals, as
/// the simulator integrates them: whatever request it was, only the part inside the
/// measured window (its service ended at about `end`, the answer's arrival; times in
/// scenario units). A saturated server's backlog served after the window therefore does
/// not count, and its utilisation stays at most 1.
pub(crate) fn add_service(m: &mut RunMetrics, i: usize, end: Nanos, queued: Nanos, served: Nanos) {
    let (from, to) = (m.from.0 as f64, m.to.0 as f64);
    let overlap = |a: f64, b: f64| (b.min(to) - a.max(from)).max(0.0);
    let end = end.0 as f64;
    let start = end - served.0 as f64;
    let s = &mut m.servers[i];
    s.busy_area += overlap(start, end);
    s.queue_area += overlap(start - queued.0 as f64, start);
}

/// A call that server `i`'s admission control dropped (`Rejected` with `shed`), answered
/// at `now` after a round trip of `round_trip` (scenario time): it waited in the queue
/// until a worker freed and dropped it, as the simulator's shed jobs do, so its wait counts
/// in the server's queue. The answer carries no times; the round trip (a loopback network
/// hop more than the wait) stands for the wait.
pub(crate) fn add_shed_wait(m: &mut RunMetrics, i: usize, now: Nanos, round_trip: Nanos) {
    add_service(m, i, now, round_trip, Nanos::ZERO);
}

/// Records a measured call that server `i` served, as live mode knows it from the answer:
/// its response time, overall and on that server, and one more request served by `i`.
/// (The simulator's [`RunMetrics::record_service`] knows the wait too; live mode takes the
/// server's own figures into [`add_service`].)
pub(crate) fn record_served(m: &mut RunMetrics, i: usize, latency: Nanos) {
    m.record_latency(latency);
    m.record_server_latency(i, latency);
    let s = &mut m.servers[i];
    s.requests += 1;
    s.served += 1;
    s.latency_sum += latency.as_secs_f64();
}

/// What every replay of a strategy starts from, request-level or connection-level: each
/// server's workers and service distribution, the measured window, and the dispatching
/// thread's timing (the balancers are built as the simulator builds them by
/// [`super::views::Views`]).
pub(super) struct ReplayStart {
    pub workers: Vec<u32>,
    pub dists: Vec<Dist>,
    pub from: Nanos,
    pub to: Nanos,
    /// The calling thread's real-time priority, for as long as the replay holds it.
    pub realtime: Realtime,
}

impl ReplayStart {
    /// Prepares the calling thread, which dispatches the replay, and reads what the replay
    /// needs from `scenario`: precise timed waits ([`super::server::precise_sleeps`]) and
    /// real-time priority if `realtime` asks for it (and the system permits it).
    pub(super) fn begin(scenario: &Scenario, realtime: bool) -> ReplayStart {
        super::server::precise_sleeps();
        let realtime = Realtime::enter(realtime);
        let servers = scenario.servers();
        ReplayStart {
            workers: servers.iter().map(|s| s.workers).collect(),
            dists: servers.iter().map(|s| (*s.service).clone()).collect(),
            from: Nanos::from_secs_f64(scenario.warmup),
            to: Nanos::from_secs_f64(scenario.end()),
            realtime,
        }
    }

    /// The figures a replay records, over the measured window, with the scenario's fault
    /// phases.
    pub(super) fn metrics(&self, scenario: &Scenario) -> RunMetrics {
        RunMetrics::new(&self.workers, self.from, self.to)
            .with_phases(&crate::metrics::phase_edges(scenario))
    }
}
