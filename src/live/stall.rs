//! Stalls: moments of a replay when the machine kept one of its threads from running for
//! a sizeable part of a service time, recorded with *when* they happened, and the pauses
//! that reproduce them in the simulator.
//!
//! Why their times: a busy machine does not only make every sleeper a little late (the
//! mean that `super::machine` measures and the verdict's reference "as the machine
//! ran" adds to every call); now and then it stalls a thread for tens of milliseconds.
//! One such stall builds a backlog: beside two `yes` loops on 2 cores (load average 4–9),
//! `crash-live` replays (10 ms services at time scale 2, 2 workers per backend, 70% load)
//! had a backend's workers wake late by at most 4–120 ms (median 18 ms; p90 2.3 ms) and
//! the dispatcher by up to 132 ms, and 11 matched replays of 30 failed: server queues
//! 25–146% above the simulation, server and phase response times 18–106%. A constant
//! added to every service cannot build such a backlog, since queues grow with the
//! variance of services, not only their mean; the same lateness *at its times* does. So the verdict's reference as the machine ran simulates the stalls as
//! `pause` faults ([`pauses`]), and only a row that agrees with that simulation is
//! refused (not judged), never passed.
//!
//! What is a stall: a backend's worker that woke at least [`WORKER_STALL_FRACTION`] of its
//! server's declared mean service time past its service's end (`Reply.woke_late_ns`), or
//! a dispatcher that woke at least [`DISPATCHER_STALL_FRACTION`] of the shortest declared
//! mean service time late (scenario time; the requests due meanwhile go out together,
//! late). How each becomes a pause:
//! - a worker of a server of `c` workers held `w` longer costs the server `w` of worker
//!   time, which a pause of the whole server for `w / c` costs too (overlapping stalls of
//!   one server add up, within their span: `c` workers stalled together pause it whole);
//! - the dispatcher late by `d` holds back every request due meanwhile, which then
//!   arrive together: every server paused for `d` holds them back alike. This
//!   overstates the stall by the work the servers had in progress (it stalls too), at
//!   most `c` services per server: a reference that errs towards refusing, which is why
//!   only a dispatcher late by a quarter of a service counts (the lag gate judges the
//!   rest of its lateness).
//!
//! Each pause is a `pause` fault whose start and end lie on a grid of [`PHASE_GRID`]
//! steps over the run ([`with_pauses`]), the pause itself at its own time: a fault's
//! start and end split the simulated run's phases, each of which takes a histogram of
//! 264 kB, so a grid bounds them however many pauses there are ([`coarsen_phases`]
//! merges them back into the scenario's phases).

use crate::metrics::{PhaseAccumulator, RunMetrics};
use crate::scenario::{Fault, FaultKind, Scenario};
use crate::time::Nanos;
use crate::workload::Dist;

/// Shortest lateness of a backend's worker that counts as a stall, as a fraction of its
/// server's declared mean service time: 5%. Shorter ones change a service by less than
/// its own spread does; the mean added to every call stands for them.
pub const WORKER_STALL_FRACTION: f64 = 0.05;

/// Shortest lateness of the dispatcher that counts as a stall, as a fraction of the
/// shortest declared mean service time: a quarter (see the module's documentation).
pub const DISPATCHER_STALL_FRACTION: f64 = 0.25;

/// Most pauses simulated (the longest, by the worker time they cost): a bound on the
/// simulation's work, far above what a replay records (beside two `yes` loops on 2 cores
/// and a load average of 4–9, 109–475 stalls in a `crash-live` replay of 12 s).
pub const MAX_PAUSES: usize = 4096;

/// Steps of the grid the pauses' faults start and end on: at most this many phases more
/// in the simulated run.
pub const PHASE_GRID: u32 = 32;

/// One stall, in scenario time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stall {
    /// The backend whose worker woke late, or `None`: the dispatcher.
    pub server: Option<usize>,
    /// When the thread should have run (scenario seconds).
    pub at: f64,
    /// How late it ran (scenario seconds).
    pub length: f64,
}

/// Most stalls a replay keeps whole: the longest, 4 × [`MAX_PAUSES`] of them (48 bytes
/// each, 786 kB at most), so that memory stays flat however long a replay runs on a
/// stalling machine. The rest are counted and summed ([`Stalls`]) but not simulated:
/// leaving out the shortest stalls makes the reference as the machine ran *less* stalled,
/// which can only excuse fewer rows (the check fails closed). Four times the pauses
/// simulated, since overlapping stalls of one server merge into one pause.
pub const MAX_STALLS_KEPT: usize = 4 * MAX_PAUSES;

/// The stalls of one replay: the longest [`MAX_STALLS_KEPT`] kept whole, and the count
/// and sum of all of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stalls {
    /// The longest stalls, at most [`MAX_STALLS_KEPT`], in order of their start.
    pub kept: Vec<Stall>,
    /// Every stall recorded.
    pub count: u64,
    /// Those of the dispatcher.
    pub dispatcher: u64,
    /// Their summed lengths (scenario seconds).
    pub total: f64,
}

impl Stalls {
    /// Whether no stall was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The longest stall of all (always kept); the earliest among equals.
    pub fn longest(&self) -> Option<Stall> {
        self.kept
            .iter()
            .copied()
            .reduce(|a, b| if b.length > a.length { b } else { a })
    }
}

impl FromIterator<Stall> for Stalls {
    /// `stalls` as a recorder keeps them (the longest whole, all counted).
    fn from_iter<I: IntoIterator<Item = Stall>>(stalls: I) -> Stalls {
        let mut kept = Longest::default();
        for s in stalls {
            kept.push(s);
        }
        kept.finish()
    }
}

/// A stall ranked for [`Longest`]: by length, then the later recorded first out.
#[derive(Clone, Copy, Debug)]
struct Ranked {
    stall: Stall,
    seq: u64,
}

impl Ranked {
    fn key(&self) -> (f64, std::cmp::Reverse<u64>) {
        (self.stall.length, std::cmp::Reverse(self.seq))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Ranked) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Ranked) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Ranked) -> std::cmp::Ordering {
        let ((a, sa), (b, sb)) = (self.key(), other.key());
        a.total_cmp(&b).then(sa.cmp(&sb))
    }
}

/// The longest [`MAX_STALLS_KEPT`] stalls seen, in a heap whose root is the shortest kept
/// (the one a longer newcomer replaces), with the count and sum of all.
#[derive(Clone, Debug, Default)]
struct Longest {
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Ranked>>,
    seen: Stalls,
}

impl Longest {
    fn push(&mut self, stall: Stall) {
        let seen = &mut self.seen;
        let ranked = Ranked {
            stall,
            seq: seen.count,
        };
        seen.count += 1;
        seen.dispatcher += u64::from(stall.server.is_none());
        seen.total += stall.length;
        if self.heap.len() < MAX_STALLS_KEPT {
            self.heap.push(std::cmp::Reverse(ranked));
        } else if let Some(mut shortest) = self.heap.peek_mut()
            && ranked > shortest.0
        {
            *shortest = std::cmp::Reverse(ranked);
        }
    }

    fn finish(self) -> Stalls {
        let mut kept: Vec<Ranked> = self.heap.into_iter().map(|r| r.0).collect();
        kept.sort_unstable_by(|a, b| a.stall.at.total_cmp(&b.stall.at).then(a.seq.cmp(&b.seq)));
        Stalls {
            kept: kept.into_iter().map(|r| r.stall).collect(),
            ..self.seen
        }
    }
}

/// Records the stalls of one replay (see the module's documentation), in memory that
/// stays flat however long it runs ([`MAX_STALLS_KEPT`]).
#[derive(Clone, Debug)]
pub(crate) struct StallRecorder {
    /// Per server, the shortest lateness of a worker recorded (scenario seconds).
    floors: Vec<f64>,
    /// The shortest lateness of the dispatcher recorded (scenario seconds).
    dispatcher_floor: f64,
    /// The dispatcher's last stall, which sends late after it may still extend.
    open: Option<Stall>,
    stalls: Longest,
}

impl StallRecorder {
    /// A recorder for `scenario`'s servers.
    pub(crate) fn new(scenario: &Scenario) -> StallRecorder {
        let declared: Vec<f64> = scenario
            .servers()
            .iter()
            .map(|s| {
                let g = &scenario.groups[s.group];
                g.service.mean() / g.speed
            })
            .collect();
        let shortest = declared.iter().copied().fold(f64::INFINITY, f64::min);
        StallRecorder {
            floors: declared.iter().map(|d| WORKER_STALL_FRACTION * d).collect(),
            dispatcher_floor: DISPATCHER_STALL_FRACTION * shortest,
            open: None,
            stalls: Longest::default(),
        }
    }

    /// The dispatcher woke `late` after a request due at `due`. Sends late after one
    /// stall (the bunch it leaves behind) extend that stall rather than add one.
    pub(crate) fn dispatcher(&mut self, due: Nanos, late: Nanos) {
        let (at, length) = (due.as_secs_f64(), late.as_secs_f64());
        if length < self.dispatcher_floor {
            return;
        }
        match &mut self.open {
            Some(s) if at <= s.at + s.length => s.length = s.length.max(at + length - s.at),
            open => {
                let stall = Stall {
                    server: None,
                    at,
                    length,
                };
                if let Some(done) = open.replace(stall) {
                    self.stalls.push(done);
                }
            }
        }
    }

    /// A worker of backend `i` woke `late` past its service's end, and its answer came
    /// at `answered`.
    pub(crate) fn worker(&mut self, i: usize, answered: Nanos, late: Nanos) {
        let length = late.as_secs_f64();
        if self.floors.get(i).is_none_or(|&f| length < f) {
            return;
        }
        self.stalls.push(Stall {
            server: Some(i),
            at: (answered.as_secs_f64() - length).max(0.0),
            length,
        });
    }

    /// What was recorded.
    pub(crate) fn finish(mut self) -> Stalls {
        if let Some(done) = self.open.take() {
            self.stalls.push(done);
        }
        self.stalls.finish()
    }
}

/// A pause to simulate: server `server` stops from `at` for `length` (scenario seconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pause {
    /// The server.
    pub server: usize,
    /// Start (scenario seconds).
    pub at: f64,
    /// Length (scenario seconds).
    pub length: f64,
}

/// The pauses that reproduce `stalls` in `scenario`'s simulation (see the module's
/// documentation), at most [`MAX_PAUSES`], in order of their start; and per server the
/// worker time (scenario seconds) its own workers' stalls among them cost, which the
/// mean lateness added to every call then no longer needs to include.
pub fn pauses(scenario: &Scenario, stalls: &[Stall]) -> (Vec<Pause>, Vec<f64>) {
    let servers = scenario.servers();
    let mut all = Vec::new();
    for (i, info) in servers.iter().enumerate() {
        let mut own: Vec<Stall> = stalls
            .iter()
            .filter(|s| s.server == Some(i))
            .copied()
            .collect();
        own.sort_by(|a, b| a.at.total_cmp(&b.at));
        let workers = f64::from(info.workers.max(1));
        for (at, span, worker_time) in merged(&own) {
            all.push((
                Pause {
                    server: i,
                    at,
                    length: (worker_time / workers).min(span),
                },
                worker_time,
            ));
        }
    }
    let mut dispatcher: Vec<Stall> = stalls
        .iter()
        .filter(|s| s.server.is_none())
        .copied()
        .collect();
    dispatcher.sort_by(|a, b| a.at.total_cmp(&b.at));
    for (at, span, _) in merged(&dispatcher) {
        for server in 0..servers.len() {
            all.push((
                Pause {
                    server,
                    at,
                    length: span,
                },
                0.0,
            ));
        }
    }
    // The longest by the worker time they cost (a server's pause stops all its workers).
    let cost = |p: &Pause| p.length * f64::from(servers[p.server].workers.max(1));
    all.sort_by(|a, b| cost(&b.0).total_cmp(&cost(&a.0)));
    all.retain(|(p, _)| p.length > 0.0);
    all.truncate(MAX_PAUSES);
    let mut absorbed = vec![0.0; servers.len()];
    for (p, worker_time) in &all {
        absorbed[p.server] += worker_time;
    }
    let mut kept: Vec<Pause> = all.into_iter().map(|(p, _)| p).collect();
    kept.sort_by(|a, b| a.at.total_cmp(&b.at).then(a.server.cmp(&b.server)));
    (kept, absorbed)
}

/// `stalls` (sorted by start) merged where they overlap: (start, span, summed lengths).
fn merged(stalls: &[Stall]) -> Vec<(f64, f64, f64)> {
    let mut out: Vec<(f64, f64, f64)> = Vec::new();
    for s in stalls {
        match out.last_mut() {
            Some((at, span, sum)) if s.at <= *at + *span => {
                *span = span.max(s.at + s.length - *at);
                *sum += s.length;
            }
            _ => out.push((s.at, s.length, s.length)),
        }
    }
    out
}

/// `scenario` with `pauses` added as `pause` faults, one pause each, at its own time.
///
/// A `pause` fault from `at` to `until` pauses its server after each interval (here a
/// fixed `offset`) for the pause's length, and again `offset` after that pause ends if
/// that is before `until`. Its `at` and `until` lie on the grid of [`PHASE_GRID`] steps
/// over the run (they split the phases; see the module's documentation): `at` a grid
/// point at least one step before the pause (or 0), `offset` the rest of the way to the
/// pause, `until` the first grid point after the pause's start. The pause then starts
/// before `until`, and the next one would start at `pause + length + offset`, which is
/// more than a step after the pause's start (`offset` is at least a step), so after
/// `until` by at least `length` (far more than rounding to nanoseconds): never. A pause
/// less than a step into the run, where `offset` may be shorter, ends its fault at
/// `pause + offset + length / 2` at the latest (off the grid) for the same reason.
pub fn with_pauses(scenario: &Scenario, pauses: &[Pause]) -> Scenario {
    let step = scenario.end() / f64::from(PHASE_GRID);
    let mut s = scenario.clone();
    s.faults.extend(pauses.iter().map(|p| {
        let k = (p.at / step).floor();
        let at = if k >= 1.0 { (k - 1.0) * step } else { 0.0 };
        let offset = p.at - at;
        let until = ((k + 1.0) * step).min(p.at + offset + 0.5 * p.length);
        Fault {
            servers: vec![p.server],
            kind: FaultKind::Pause,
            at,
            until: Some(until),
            factor: 1.0,
            detection: 0.0,
            error: None,
            pauses: Some((
                Dist::Deterministic { value: offset },
                Dist::Deterministic { value: p.length },
            )),
            cold: None,
            drain_timeout: 0.0,
            restart: 0.0,
            delay: 0.0,
        }
    }));
    s
}

/// Merges `metrics`' phases (split further by the pauses' faults) into the phases of
/// `bounds` (the scenario's own, in order; none: no phases): each into the one its start
/// lies in. Counts and response times add up, so the merged figures are those the
/// coarser phases would have recorded.
pub fn coarsen_phases(metrics: &mut RunMetrics, bounds: &[(Nanos, Nanos)]) {
    let fine = metrics.phase_bounds();
    let mut merged = vec![PhaseAccumulator::default(); bounds.len()];
    for ((start, _), phase) in fine.iter().zip(&metrics.phases) {
        let Some(k) = bounds.iter().position(|&(a, b)| a <= *start && *start < b) else {
            continue;
        };
        let into = &mut merged[k];
        into.arrived += phase.arrived;
        into.unserved += phase.unserved;
        into.latency_sum += phase.latency_sum;
        super::verdict::add_saturating(&mut into.latency, &phase.latency);
    }
    metrics.phases = merged;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metric;
    use crate::sim::Run;

    /// Two servers of 2 workers, 10 ms services (a stall counts from 2.5 ms), 100
    /// requests a second, measured from 0.5 s to 2.5 s, a crash of `s-1` from 1 s to
    /// 1.5 s (three phases).
    fn scenario() -> Scenario {
        let src = r#"
name = "stalls"
seed = 5
duration = 2.0
warmup = 0.5
[arrivals]
process = "poisson"
rate = 100
[[servers]]
name = "s"
count = 2
workers = 2
service = { dist = "deterministic", value = 0.010 }
[[faults]]
server = "s-1"
kind = "crash"
at = 1.0
duration = 0.5
detection = 0.05
[[strategies]]
kind = "round_robin"
"#;
        Scenario::from_source(std::path::Path::new("t.toml"), src).unwrap()
    }

    fn ms(x: f64) -> Nanos {
        Nanos::from_secs_f64(x * 1e-3)
    }

    /// A worker late by 5% of its service or more, the dispatcher by 25%.
    #[test]
    fn only_lateness_of_a_part_of_a_service_is_a_stall() {
        let mut r = StallRecorder::new(&scenario());
        r.worker(0, ms(800.0), ms(0.4));
        r.worker(0, ms(800.0), ms(2.4));
        r.worker(1, ms(900.0), ms(30.0));
        r.worker(7, ms(900.0), ms(30.0));
        r.dispatcher(ms(600.0), ms(2.0));
        // A bunch: the dispatcher 40 ms late at 1 s, then the sends due meanwhile, each
        // less late; a stall after it, apart.
        r.dispatcher(ms(1000.0), ms(40.0));
        r.dispatcher(ms(1010.0), ms(30.5));
        r.dispatcher(ms(1030.0), ms(12.0));
        r.dispatcher(ms(1100.0), ms(3.0));
        let stalls = r.finish();
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        let want = [
            (Some(0), 0.7976, 0.0024),
            (Some(1), 0.870, 0.030),
            (None, 1.0, 0.042),
            (None, 1.1, 0.003),
        ];
        assert_eq!(stalls.kept.len(), want.len(), "{stalls:?}");
        assert_eq!((stalls.count, stalls.dispatcher), (4, 2));
        for (s, (server, at, length)) in stalls.kept.iter().zip(want) {
            assert_eq!(s.server, server, "{stalls:?}");
            assert!(near(s.at, at) && near(s.length, length), "{s:?}");
        }
    }

    /// However many stalls a replay records, the recorder keeps the longest
    /// [`MAX_STALLS_KEPT`] (in order of their start) and counts and sums every one.
    #[test]
    fn a_long_replay_keeps_the_longest_stalls_and_counts_them_all() {
        let mut r = StallRecorder::new(&scenario());
        let n = 3 * MAX_STALLS_KEPT as u64;
        // Lengths 3–12.99 ms in a scrambled order (7919 is prime to n), each at its own
        // time; the dispatcher stalls 200 ms once, half-way.
        let length = |k: u64| 3.0 + (k * 7919 % n) as f64 * 10.0 / n as f64;
        let mut total = 0.2;
        for k in 0..n {
            let at = 1.0 + k as f64;
            r.worker((k % 2) as usize, ms(at + length(k)), ms(length(k)));
            total += length(k) * 1e-3;
            if k == n / 2 {
                r.dispatcher(ms(at + 0.5), ms(200.0));
            }
        }
        // Last, ten of the shortest of all (a kept set that takes in the newest would
        // keep them).
        for k in 0..10 {
            r.worker(0, ms((2 * n + k) as f64), ms(1.0));
            total += 1e-3;
        }
        let stalls = r.finish();
        assert_eq!((stalls.count, stalls.dispatcher), (n + 11, 1));
        assert!(
            (stalls.total - total).abs() < 1e-6 * total,
            "{}",
            stalls.total
        );
        let l = stalls.longest().unwrap();
        assert_eq!((l.server, l.length), (None, 0.2));
        assert_eq!(stalls.kept.len(), MAX_STALLS_KEPT);
        // The longest: every stall kept is at least as long as every one left out.
        let mut lengths: Vec<f64> = (0..n).map(|k| length(k) * 1e-3).collect();
        lengths.sort_by(|a, b| b.total_cmp(a));
        let cut = lengths[MAX_STALLS_KEPT - 2];
        // (Lengths pass through whole nanoseconds; neighbours are 203 ns apart.)
        assert!(stalls.kept.iter().all(|s| s.length > cut - 2e-9));
        assert!(stalls.kept.iter().any(|s| s.server.is_none()));
        assert!(stalls.kept.is_sorted_by(|a, b| a.at <= b.at));
    }

    /// The longest stall is derived from those kept: the longest of all, the earliest
    /// among equals, whatever order they were recorded in.
    #[test]
    fn the_longest_stall_is_the_earliest_of_the_longest() {
        let stall = |server, at, length| Stall { server, at, length };
        let stalls: Stalls = [
            stall(Some(1), 5.0, 0.3),
            stall(Some(0), 1.0, 0.1),
            stall(None, 2.0, 0.3),
            stall(Some(2), 9.0, 0.2),
        ]
        .into_iter()
        .collect();
        assert_eq!(stalls.longest(), Some(stall(None, 2.0, 0.3)));
        assert_eq!(Stalls::default().longest(), None);
    }

    #[test]
    fn stalls_become_pauses_worth_the_worker_time_they_cost() {
        let s = scenario();
        let worker = |i, at, length| Stall {
            server: Some(i),
            at,
            length,
        };
        let stalls = [
            // s-0: one worker 20 ms late, then both together 30 ms (overlapping).
            worker(0, 1.20, 0.020),
            worker(0, 0.70, 0.030),
            worker(0, 0.71, 0.030),
            // s-1: one worker 8 ms late.
            worker(1, 2.00, 0.008),
            // The dispatcher 50 ms late at 1.9 s: every server.
            Stall {
                server: None,
                at: 1.9,
                length: 0.050,
            },
        ];
        let (kept, absorbed) = pauses(&s, &stalls);
        let want = [
            (0, 0.70, 0.030), // 60 ms of worker time over 2 workers, within the 40 ms span
            (0, 1.20, 0.010),
            (0, 1.90, 0.050),
            (1, 1.90, 0.050),
            (1, 2.00, 0.004),
        ];
        assert_eq!(kept.len(), want.len(), "{kept:?}");
        for (p, (server, at, length)) in kept.iter().zip(want) {
            assert_eq!(p.server, server, "{kept:?}");
            assert!(
                (p.at - at).abs() < 1e-9 && (p.length - length).abs() < 1e-9,
                "{p:?}"
            );
        }
        // The workers' own lateness, which the mean added to every call leaves out.
        assert!((absorbed[0] - 0.080).abs() < 1e-9 && (absorbed[1] - 0.008).abs() < 1e-9);
        // At most MAX_PAUSES, the longest.
        let many: Vec<Stall> = (0..2 * MAX_PAUSES)
            .map(|k| worker(0, k as f64 * 10.0, 0.001 * (1 + k) as f64))
            .collect();
        let (kept, absorbed) = pauses(&s, &many);
        assert_eq!(kept.len(), MAX_PAUSES);
        assert!(kept.iter().all(|p| p.length > 0.0005 * MAX_PAUSES as f64));
        let longest: f64 = (MAX_PAUSES + 1..=2 * MAX_PAUSES)
            .map(|k| 0.001 * k as f64)
            .sum();
        assert!((absorbed[0] - longest).abs() < 1e-9, "{absorbed:?}");
        assert_eq!(pauses(&s, &[]), (Vec::new(), vec![0.0, 0.0]));
    }

    /// A pause holds its server once, for its length, and the phases come back as the
    /// scenario's: a stall of 100 ms at 2 s on a server of 2 workers builds the backlog
    /// of 5 requests and ~5 × 50 ms of waiting it should, not more.
    #[test]
    fn a_pause_builds_one_backlog_and_the_phases_stay_the_scenario_s() {
        let s = scenario();
        let entry = &s.strategies[0];
        let plain = Run::entry(&s, entry, 0).seed(5).metrics();
        let paused = with_pauses(
            &s,
            &[Pause {
                server: 0,
                at: 2.0,
                length: 0.1,
            }],
        );
        assert_eq!(paused.faults.len(), 2);
        let mut m = Run::entry(&paused, entry, 0).seed(5).metrics();
        // Two more edges, on the grid of 2.5 s / 32 around the pause: 1.875 s, 2.03125 s.
        let f = &paused.faults[1];
        assert_eq!((f.at, f.until), (1.875, Some(2.03125)));
        assert_eq!(m.phases.len(), 5);
        let bounds = plain.phase_bounds();
        coarsen_phases(&mut m, &bounds);
        let (a, b) = (plain.summarize(), m.summarize());
        assert_eq!(b.phases.len(), 3);
        for (p, q) in a.phases.iter().zip(&b.phases) {
            assert_eq!(p.arrived, q.arrived);
            assert_eq!(p.error_fraction, q.error_fraction);
        }
        // The first two phases end before the pause: unchanged.
        assert_eq!(a.phases[..2], b.phases[..2]);
        // The same requests: about 5 of them wait ~50 ms more (the last phase has
        // ~150 served), some more behind them: its mean grows by 1.5–5 ms; held twice
        // or for the rest of the run it would grow by far more.
        let grew = b.phases[2].latency_mean - a.phases[2].latency_mean;
        assert!((1.5e-3..5e-3).contains(&grew), "{grew}");
        assert!(b.values[Metric::LatencyMean] > a.values[Metric::LatencyMean]);
        // Pauses everywhere, one in each 10 ms from 0 on: at most PHASE_GRID more
        // phases, and each pause once (the work they hold back is their total length).
        let many: Vec<Pause> = (0..250)
            .map(|k| Pause {
                server: k % 2,
                at: 0.01 * k as f64,
                length: 0.002,
            })
            .collect();
        let everywhere = with_pauses(&s, &many);
        for (f, p) in everywhere.faults[1..].iter().zip(&many) {
            let until = f.until.unwrap();
            let Some((Dist::Deterministic { value: offset }, _)) = f.pauses else {
                panic!("{f:?}")
            };
            assert!(f.at <= p.at && (f.at + offset - p.at).abs() < 1e-9, "{f:?}");
            assert!(
                p.at < until && until < p.at + p.length + offset,
                "{f:?} {p:?}"
            );
        }
        let m2 = Run::entry(&everywhere, entry, 0).seed(5).metrics();
        assert!(
            m2.phases.len() <= 3 + PHASE_GRID as usize,
            "{}",
            m2.phases.len()
        );
        // Without phases, none.
        coarsen_phases(&mut m, &[]);
        assert!(m.phases.is_empty());
    }
}
