//! Faults live: a scenario's `[[faults]]` applied to real backends at their scheduled
//! (time-scaled) times, and health checking and membership as the simulator models them.
//!
//! ```text
//!  scenario faults ──► FaultPlayer (owned by the dispatcher thread) ──► Injector of each backend
//!  (start, end,        applies every action when due, between          (in-process, or `lbsim
//!   pauses drawn        requests, on the replay's clock                 serve` through its fault-
//!   as the simulator)        ▲                                          control channel)
//!                            └── Health thread: pings each backend that can crash or become
//!                                unreachable; a change seen at t marks it down (or up) for
//!                                the balancer at t + detection
//! ```
//!
//! - **Timing.** Every action runs on the dispatcher thread, which already sleeps until
//!   each request is due: an action due before the next request is waited for exactly as a
//!   request is, so a crash happens at its scaled time within the dispatcher's wake-up lag
//!   (reported per replay as [`FaultEvent::late`]).
//! - **Control.** Faults reach the backends through an [`Injector`]: the in-process
//!   [`FaultControl`](super::server::FaultControl) of the servers this process started, or,
//!   for backends of `lbsim serve` processes (`--backends`), their fault-control channel
//!   ([`super::control`]), which an operator must enable and which only loopback can reach:
//!   nothing on the network can crash or slow a backend.
//!   Which kinds live mode injects is declared on the kind ([`FaultKind::live_refusal`]).
//! - **Pauses** are drawn from the fault stream of the replication (the simulator's
//!   `fault_rng`), in the simulator's order (time, then scheduling order), so the live
//!   backends pause at the simulated times and for the simulated lengths.
//! - **Health checking.** As in the simulator, the balancer marks a crashed (or
//!   unreachable) backend down `detection` after the fault and up `detection` after it
//!   ends — provided the driver's health checks (pings every [`health_interval`]) agree by
//!   then. If they do not (the backend is still answering at crash + detection, or still
//!   silent at recovery + detection), nothing changes until they do, and the change reaches
//!   the balancer `detection` after the checks see it; a change the schedule does not
//!   explain (a backend failing on its own) too. So a backend that behaves as declared is
//!   marked down and up at the simulated instants (same requests routed on both sides), and
//!   one that crashes late (or never) is marked down late (or never). A failed call never
//!   marks a backend down in a scenario with faults: failures are counted, as the
//!   simulator counts them.
//! - **Membership** (`join`, `leave`, `deploy`), as the simulator's
//!   `sim/engine/membership.rs`: a server that joins later is down in every balancer's
//!   view from the start (and its backend crashed: it answers nothing); at its join it
//!   recovers (cold when `warmup` is set) and every view marks it up at once, through the
//!   same path as a health check (so a balancer's slow start applies). A leaving server is
//!   marked down in every view at once, then drains: the driver watches its calls in
//!   flight (every [`DRAIN_POLL`] of scenario time) and, when none is left or
//!   `drain_timeout` has passed, the backend is stopped (crashed: the calls it still holds
//!   fail, as killed in the simulator). A rolling deploy restarts the servers of its
//!   fault one at a time: drain, `restart` seconds down, back (cold when set), then the
//!   next. A server that is not a member is never brought back by a health check.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::RngExt;

use super::client::{ClientConfig, Connection};
use super::control::Injector;
use super::run::Clock;
use super::server::ErrorMode;
use super::views::Views;
use crate::rng::{SimRng, Stream, stream_rng};
use crate::scenario::{ColdStart, ErrorStatus, Fault, FaultKind, Scenario};
use crate::strategy::Outcome;
use crate::time::Nanos;
use crate::workload::dist::open_unit;

/// One fault action, as applied.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultEvent {
    /// Scenario time it was due (seconds).
    pub at: f64,
    /// How late it was applied (wall-clock seconds).
    pub late: f64,
    /// What happened, e.g. `crash node-3`, `down node-3` (health check).
    pub what: String,
}

/// A scheduled action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    /// Fault `index` starts (`true`) or ends.
    Fault { index: usize, start: bool },
    /// Server `server` starts a pause of fault `fault`.
    Pause { server: usize, fault: usize },
    /// The balancer sees `server` up or down (health check): as the schedule says
    /// (`scheduled`, applied only if the checks agree), or as the checks saw.
    Health {
        server: usize,
        up: bool,
        scheduled: bool,
    },
    /// Server `server` is absent from the start (it joins later).
    Absent { server: usize },
    /// Whether the drain `generation` of `server` is over (nothing left in flight, or its
    /// `drain_timeout` passed).
    DrainCheck { server: usize, generation: u32 },
    /// The restart of deploy fault `fault` is over: `server` is back.
    Back { server: usize, fault: usize },
}

/// What follows a drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    /// The server stays out.
    Gone,
    /// The server restarts (deploy fault `fault`).
    Restart { fault: usize },
}

/// How often a draining server's calls in flight are looked at (scenario time): the end
/// of a drain is seen at most this late.
pub const DRAIN_POLL: Nanos = Nanos(1_000_000);

/// Every server's membership, as the simulator keeps it.
#[derive(Debug, Default)]
struct Members {
    /// Not a member (before its join, after its leave): health checks cannot bring it
    /// back.
    absent: Vec<bool>,
    /// While leaving: what follows its drain.
    leaving: Vec<Option<After>>,
    /// Draining now, since when.
    draining: Vec<Option<Nanos>>,
    /// Drains begun, so that a stale check is ignored.
    generation: Vec<u32>,
    /// Per deploy fault: position of the server being restarted.
    deploy_pos: Vec<usize>,
}

/// Health-check interval for a detection delay (scenario time): a hundredth of it,
/// so that observing a change late by up to one interval moves the time a backend is
/// marked down or up by at most 1% of the detection delay; between 1 ms and 50 ms of
/// wall-clock time at `scale`.
pub fn health_interval(detection: f64, scale: f64) -> Duration {
    Duration::from_secs_f64((detection * scale / 100.0).clamp(0.001, 0.05))
}

/// Plays a scenario's faults during one strategy's replay.
pub(crate) struct FaultPlayer<'a> {
    faults: &'a [Fault],
    names: Vec<String>,
    controls: Vec<Injector>,
    queue: BinaryHeap<Reverse<(Nanos, u64, Action)>>,
    seq: u64,
    rng: SimRng,
    /// End of arrivals: pauses stop there, as in the simulator.
    to: Nanos,
    /// Per server, the detection delay of its crash faults (`None`: it cannot crash).
    detection: Vec<Option<Nanos>>,
    /// Per server, up or down as the health checks last saw it.
    seen_up: Vec<bool>,
    /// Per server, a health change the schedule has queued (applied at its time if the
    /// checks agree then).
    scheduled: Vec<Option<bool>>,
    health: Option<Health>,
    members: Members,
    scale: f64,
    /// Scenario time and lateness of the action being applied, for the log.
    applying: (Nanos, f64),
    /// Servers stopped by a membership change since the driver last asked: their pooled
    /// connections are dead ([`FaultPlayer::take_stopped`]).
    stopped: Vec<usize>,
    /// Servers started again (a join, or a crash's recovery) since the driver last asked:
    /// it opens their connections ahead of the calls ([`FaultPlayer::take_started`]).
    started: Vec<usize>,
    /// Servers whose connections end since the driver last asked, and how: a crash breaks
    /// them (`Failed`), a leave closes them once balancers stop sending (`Ok`), as the
    /// simulator's connection-level topology does ([`FaultPlayer::take_cut`]).
    cut: Vec<(usize, Outcome)>,
    /// Every action applied, in order.
    pub log: Vec<FaultEvent>,
}

impl<'a> FaultPlayer<'a> {
    /// A player for `scenario`'s faults on the backends `controls` (scenario order) at
    /// `addrs`, replaying replication `replication` with master seed `seed`; every fault
    /// `delay` seconds late ([`super::LiveOptions::fault_delay`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        scenario: &'a Scenario,
        controls: Vec<Injector>,
        addrs: &[SocketAddr],
        cfg: ClientConfig,
        seed: u64,
        replication: u64,
        scale: f64,
        delay: f64,
    ) -> FaultPlayer<'a> {
        let n = scenario.servers().len();
        let mut detection: Vec<Option<Nanos>> = vec![None; n];
        for f in scenario
            .faults
            .iter()
            .filter(|f| matches!(f.kind, FaultKind::Crash | FaultKind::Unreachable))
        {
            for &i in &f.servers {
                let d = Nanos::from_secs_f64(f.detection);
                detection[i] = Some(detection[i].map_or(d, |e| e.min(d)));
            }
        }
        let watched: Vec<(usize, SocketAddr)> = (0..n)
            .filter(|&i| detection[i].is_some())
            .map(|i| (i, addrs[i]))
            .collect();
        let health = (!watched.is_empty()).then(|| {
            let shortest = detection
                .iter()
                .flatten()
                .min()
                .copied()
                .unwrap_or_default();
            Health::start(watched, cfg, health_interval(shortest.as_secs_f64(), scale))
        });
        let mut p = FaultPlayer {
            faults: &scenario.faults,
            names: scenario.servers().iter().map(|s| s.name.clone()).collect(),
            controls,
            queue: BinaryHeap::new(),
            seq: 0,
            rng: stream_rng(seed, replication, Stream::Faults, 0),
            to: Nanos::from_secs_f64(scenario.end()),
            detection,
            seen_up: vec![true; n],
            scheduled: vec![None; n],
            health,
            members: Members {
                absent: vec![false; n],
                leaving: vec![None; n],
                draining: vec![None; n],
                generation: vec![0; n],
                deploy_pos: vec![0; scenario.faults.len()],
            },
            scale,
            applying: (Nanos::ZERO, 0.0),
            stopped: Vec::new(),
            started: Vec::new(),
            cut: Vec::new(),
            log: Vec::new(),
        };
        // Servers that join later are absent from the start, before the first request.
        for f in scenario.faults.iter().filter(|f| f.kind == FaultKind::Join) {
            for &server in &f.servers {
                if !p.members.absent[server] {
                    p.members.absent[server] = true;
                    p.push(Nanos::ZERO, Action::Absent { server });
                }
            }
        }
        // As the simulator schedules them: every start, then its end, in file order.
        let late = |t: f64| Nanos::from_secs_f64(t + delay.max(0.0));
        for (index, f) in scenario.faults.iter().enumerate() {
            p.push(late(f.at), Action::Fault { index, start: true });
            if let Some(until) = f.until {
                p.push(
                    late(until),
                    Action::Fault {
                        index,
                        start: false,
                    },
                );
            }
        }
        p
    }

    fn push(&mut self, at: Nanos, action: Action) {
        self.queue.push(Reverse((at, self.seq, action)));
        self.seq += 1;
    }

    /// Scenario time of the next action, if any.
    pub(crate) fn next_due(&self) -> Option<Nanos> {
        self.queue.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Takes in what the health checks saw: a change the schedule has queued is left to
    /// it; one it awaited, or did not announce, reaches the balancer `detection` after it
    /// was seen.
    pub(crate) fn poll_health(&mut self, clock: &Clock) {
        let Some(h) = &self.health else { return };
        let seen: Vec<(usize, bool, Instant)> = h.rx.try_iter().collect();
        for (i, up, at) in seen {
            if up == self.seen_up[i] {
                continue;
            }
            self.seen_up[i] = up;
            if self.scheduled[i] == Some(up) || self.members.absent[i] {
                continue;
            }
            let d = self.detection[i].unwrap_or_default();
            self.push(
                clock.now(at) + d,
                Action::Health {
                    server: i,
                    up,
                    scheduled: false,
                },
            );
        }
    }

    /// Applies every action due at or before `now` (scenario time) in order; `now_wall`
    /// is the wall-clock instant, for the lateness. Health changes go to every balancer's
    /// view in `views`, and servers marked down to `marked_down`.
    pub(crate) fn apply_due(
        &mut self,
        now: Nanos,
        clock: &Clock,
        views: &mut Views,
        marked_down: &mut Vec<usize>,
    ) {
        while let Some(&Reverse((t, _, action))) = self.queue.peek() {
            if t > now {
                break;
            }
            self.queue.pop();
            let late = Instant::now()
                .saturating_duration_since(clock.at(t))
                .as_secs_f64();
            self.applying = (t, late);
            match action {
                Action::Health {
                    server,
                    up,
                    scheduled,
                } => {
                    if scheduled {
                        self.scheduled[server] = None;
                        if self.seen_up[server] != up {
                            // The checks do not see it yet: the change reaches the
                            // balancer `detection` after they do (`poll_health`).
                            continue;
                        }
                    }
                    // A server that is not a member stays out whatever the checks say.
                    if self.members.absent[server] || !views.set_health(server, up) {
                        continue;
                    }
                    if !up {
                        marked_down.push(server);
                    }
                    let what = format!("{} {}", if up { "up" } else { "down" }, self.names[server]);
                    self.note(what);
                }
                Action::Pause { server, fault } => {
                    if let Some(what) = self.pause(t, server, fault) {
                        self.note(what);
                    }
                }
                Action::Fault { index, start } => self.fault(t, index, start, views),
                Action::Absent { server } => self.absent(server, views),
                Action::DrainCheck { server, generation } => {
                    self.drain_check(t, server, generation, views);
                }
                Action::Back { server, fault } => {
                    self.join(server, self.faults[fault].cold, views);
                    let pos = self.members.deploy_pos[fault];
                    self.deploy_from(t, fault, pos + 1, views);
                }
            }
        }
    }

    /// Logs a control that failed (a fault channel to another process gone): the fault
    /// was not applied, which the verdict will show.
    fn check(&mut self, r: Result<(), String>) {
        if let Err(e) = r {
            self.note(format!("control failed: {e}"));
        }
    }

    /// Logs `what` at the action being applied.
    fn note(&mut self, what: String) {
        let (at, late) = self.applying;
        self.log.push(FaultEvent {
            at: at.as_secs_f64(),
            late,
            what,
        });
    }

    /// Servers stopped by a membership change (a drain's end, or absent from the start)
    /// since the last call: the driver closes its idle connections to them, dead now.
    pub(crate) fn take_stopped(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.stopped)
    }

    /// Servers started again since the last call (a join, or a crash's recovery): the
    /// driver opens connections to them before the calls that will need them, so that no
    /// call waits for a connection to be opened (which the simulator does not model).
    pub(crate) fn take_started(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.started)
    }

    /// Servers whose connections ended since the last call, in order, with the outcome the
    /// balancer is told when a connection-level driver closes them: `Failed` for a crash
    /// (the simulator's `connections_broken`), `Ok` for a leave (its
    /// `connections_closed`, at the start of the drain).
    pub(crate) fn take_cut(&mut self) -> Vec<(usize, Outcome)> {
        std::mem::take(&mut self.cut)
    }

    /// Applies the actions due at the very start that come before anything else in the
    /// simulator: servers absent until they join are down in every view before the
    /// connection-level driver opens its connections (the simulator's
    /// `initial_membership`, which runs before it opens them).
    /// Only those: a fault due at time 0 comes after the connections open, as simulated.
    pub(crate) fn apply_absent(&mut self, views: &mut Views) {
        while let Some(&Reverse((t, _, Action::Absent { server }))) = self.queue.peek() {
            self.queue.pop();
            self.applying = (t, 0.0);
            self.absent(server, views);
        }
    }

    /// Server `i` is absent from the start (it joins later): down in every view, its
    /// backend stopped.
    fn absent(&mut self, i: usize, views: &mut Views) {
        views.set_health(i, false);
        self.stop(i);
        let what = format!("absent {}", self.names[i]);
        self.note(what);
    }

    /// Stops backend `i` (a drain's end, or absent): it answers nothing until it joins.
    fn stop(&mut self, i: usize) {
        self.check(self.controls[i].crash());
        self.stopped.push(i);
    }

    /// Server `i` becomes a member now (`cold`: starting cold) and every balancer's view
    /// marks it up, as a health check does (slow start applies).
    fn join(&mut self, i: usize, cold: Option<ColdStart>, views: &mut Views) {
        let m = &mut self.members;
        m.absent[i] = false;
        m.leaving[i] = None;
        if m.draining[i].take().is_some() {
            // Back before its drain ended: the drain is over.
            m.generation[i] = m.generation[i].wrapping_add(1);
        }
        let c = self.controls[i].clone();
        self.check(c.recover());
        self.started.push(i);
        if let Some(cold) = cold {
            let warmup = Duration::from_secs_f64(cold.warmup * self.scale);
            self.check(c.cold(warmup, cold.fraction));
        }
        views.set_health(i, true);
        let what = format!("join {}", self.names[i]);
        self.note(what);
    }

    /// Server `i` leaves at `t`: every view marks it down at once, then it drains; `after`
    /// says what follows.
    fn leave(&mut self, t: Nanos, i: usize, after: After, views: &mut Views) {
        let m = &mut self.members;
        if m.absent[i] {
            return;
        }
        m.absent[i] = true;
        m.leaving[i] = Some(after);
        m.draining[i] = Some(t);
        m.generation[i] = m.generation[i].wrapping_add(1);
        let generation = m.generation[i];
        views.set_health(i, false);
        self.cut.push((i, Outcome::Ok));
        let what = format!("leave {}", self.names[i]);
        self.note(what);
        self.drain_check(t, i, generation, views);
    }

    /// Whether drain `generation` of server `i` is over at `t`: nothing in flight to it,
    /// or its `drain_timeout` passed (what it holds is killed); else looked at again.
    fn drain_check(&mut self, t: Nanos, i: usize, generation: u32, views: &mut Views) {
        let m = &self.members;
        let Some(since) = m.draining[i].filter(|_| m.generation[i] == generation) else {
            return;
        };
        let held = views.in_system(i);
        let deadline = since + Nanos::from_secs_f64(self.drain_timeout(i));
        if held > 0 && t < deadline {
            self.push(
                (t + DRAIN_POLL).min(deadline),
                Action::DrainCheck {
                    server: i,
                    generation,
                },
            );
            return;
        }
        let m = &mut self.members;
        m.draining[i] = None;
        m.generation[i] = m.generation[i].wrapping_add(1);
        self.stop(i);
        let what = if held > 0 {
            format!("killed {} ({held} in flight)", self.names[i])
        } else {
            format!("drained {}", self.names[i])
        };
        self.note(what);
        if let Some(After::Restart { fault }) = self.members.leaving[i].take() {
            let restart = Nanos::from_secs_f64(self.faults[fault].restart);
            self.push(t + restart, Action::Back { server: i, fault });
        }
    }

    /// The longest drain of server `i` among its membership faults (the simulator's).
    fn drain_timeout(&self, i: usize) -> f64 {
        self.faults
            .iter()
            .filter_map(|f| f.drain_of(i))
            .fold(0.0, f64::max)
    }

    /// Starts the rolling deploy of fault `index` at its `pos`-th server (skipping servers
    /// that are not members), or ends it.
    fn deploy_from(&mut self, t: Nanos, index: usize, pos: usize, views: &mut Views) {
        let faults = self.faults;
        let servers = &faults[index].servers;
        let Some(k) = (pos..servers.len()).find(|&k| !self.members.absent[servers[k]]) else {
            return;
        };
        self.members.deploy_pos[index] = k;
        self.leave(t, servers[k], After::Restart { fault: index }, views);
    }

    /// Fault `index` starts or ends at `t` on each of its servers.
    fn fault(&mut self, t: Nanos, index: usize, start: bool, views: &mut Views) {
        let faults = self.faults;
        let f = &faults[index];
        let scale = self.scale;
        let who: Vec<&str> = f.servers.iter().map(|&i| self.names[i].as_str()).collect();
        let kind = match (f.kind, start) {
            (FaultKind::Crash, true) => "crash",
            (FaultKind::Crash, false) => "recover",
            (kind, true) => kind.name(),
            (_, false) => "end",
        };
        // A join or leave logs its own steps (`join`, `leave`, `drained`).
        if !matches!(f.kind, FaultKind::Join | FaultKind::Leave) {
            let what = format!("{kind} {}", who.join(","));
            self.note(what);
        }
        let wall = |secs: f64| Duration::from_secs_f64(secs * scale);
        for k in 0..f.servers.len() {
            let i = f.servers[k];
            let c = self.controls[i].clone();
            match (f.kind, start) {
                (FaultKind::Crash, start) => {
                    let up = !start;
                    if start {
                        self.check(c.crash());
                        self.cut.push((i, Outcome::Failed));
                    } else if self.members.absent[i] {
                        // A server that left meanwhile stays out.
                        continue;
                    } else {
                        self.check(c.recover());
                        self.started.push(i);
                        if let Some(cold) = f.cold {
                            self.check(c.cold(wall(cold.warmup), cold.fraction));
                        }
                    }
                    self.health_after_detection(t, i, up);
                }
                (FaultKind::Slow, true) => self.check(c.set_slow(f.factor)),
                (FaultKind::Slow, false) => self.check(c.set_slow(1.0)),
                (FaultKind::Error | FaultKind::Unreachable, true) => {
                    self.check(c.set_error(f.error.map(|e| ErrorMode {
                        fraction: e.fraction,
                        latency: wall(e.latency),
                        rejected: e.status == ErrorStatus::Rejected,
                    })));
                    if f.kind == FaultKind::Unreachable {
                        self.check(c.set_unreachable(true));
                        self.health_after_detection(t, i, false);
                    }
                }
                (FaultKind::Error, false) => self.check(c.set_error(None)),
                (FaultKind::Unreachable, false) => {
                    self.check(c.set_error(None));
                    self.check(c.set_unreachable(false));
                    self.health_after_detection(t, i, true);
                }
                (FaultKind::Pause, true) => {
                    if let Some((interval, _)) = &f.pauses {
                        let first = Nanos::from_secs_f64(
                            interval.quantile(open_unit(self.rng.random::<u64>())),
                        );
                        self.push(
                            t + first,
                            Action::Pause {
                                server: i,
                                fault: index,
                            },
                        );
                    }
                }
                (FaultKind::Pause, false) => {}
                (FaultKind::Cold, true) => {
                    if let Some(cold) = f.cold {
                        self.check(c.cold(wall(cold.warmup), cold.fraction));
                    }
                }
                (FaultKind::Cold, false) => {}
                (FaultKind::Delay, true) => self.check(c.set_delay(wall(f.delay))),
                (FaultKind::Delay, false) => self.check(c.set_delay(Duration::ZERO)),
                (FaultKind::Join, true) | (FaultKind::Leave, false) => {
                    if self.members.absent[i] {
                        self.join(i, f.cold, views);
                    }
                }
                (FaultKind::Join, false) | (FaultKind::Leave, true) => {
                    self.leave(t, i, After::Gone, views);
                }
                // One server at a time, from the fault's first: started once per fault.
                (FaultKind::Deploy, true) => {
                    if k == 0 {
                        self.deploy_from(t, index, 0, views);
                    }
                }
                (FaultKind::Deploy, false) => {}
            }
        }
    }

    /// The balancer sees server `i` up (or down) `detection` after `t`, if the health
    /// checks agree then ([`FaultPlayer::apply_due`]).
    fn health_after_detection(&mut self, t: Nanos, i: usize, up: bool) {
        let d = self.detection[i].unwrap_or_default();
        self.scheduled[i] = Some(up);
        self.push(
            t + d,
            Action::Health {
                server: i,
                up,
                scheduled: true,
            },
        );
    }

    /// Server `i` pauses at `t` (fault `index`), and the next pause is scheduled: the
    /// simulator's rule and draws ([`crate::sim`]'s `pause`).
    fn pause(&mut self, t: Nanos, i: usize, index: usize) -> Option<String> {
        let f = &self.faults[index];
        let until = f
            .until
            .map_or(self.to, |u| Nanos::from_secs_f64(u).min(self.to));
        let (interval, length) = f.pauses.as_ref()?;
        if t >= until {
            return None;
        }
        let length = Nanos::from_secs_f64(length.quantile(open_unit(self.rng.random::<u64>())));
        self.check(
            self.controls[i].pause(Duration::from_secs_f64(length.as_secs_f64() * self.scale)),
        );
        let next = t
            + length
            + Nanos::from_secs_f64(interval.quantile(open_unit(self.rng.random::<u64>())));
        if next < until {
            self.push(
                next,
                Action::Pause {
                    server: i,
                    fault: index,
                },
            );
        }
        Some(format!(
            "pause {} {:.3} ms",
            self.names[i],
            length.as_secs_f64() * 1e3
        ))
    }

    /// Ends every fault on every backend (the next replay starts from healthy servers).
    pub(crate) fn clear(&self) {
        for c in &self.controls {
            if matches!(c, Injector::None) {
                continue;
            }
            // Best effort: a control channel gone now changes nothing measured.
            let _ = c.recover();
            let _ = c.set_slow(1.0);
            let _ = c.set_error(None);
            let _ = c.set_unreachable(false);
            let _ = c.set_delay(Duration::ZERO);
            let _ = c.cold(Duration::ZERO, 1.0);
        }
    }
}

impl Drop for FaultPlayer<'_> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The health-check thread: pings each watched backend every interval, and reports each
/// change (backend, up, when seen).
struct Health {
    rx: Receiver<(usize, bool, Instant)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Health {
    fn start(watched: Vec<(usize, SocketAddr)>, cfg: ClientConfig, every: Duration) -> Health {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        // A crashed backend closes the connection at once, so a crash is seen within an
        // interval; a silent one counts as down after a second, long enough that a loaded
        // machine's scheduling stalls (tens, even hundreds of ms) do not fake a crash.
        let cfg = ClientConfig {
            connect_timeout: Duration::from_secs(1),
            io_timeout: Some(Duration::from_secs(1)),
            ..cfg
        };
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("lbsim-health".into())
                .spawn(move || {
                    let mut conns: Vec<Option<Connection>> = watched.iter().map(|_| None).collect();
                    let mut up = vec![true; watched.len()];
                    while !stop.load(Ordering::Relaxed) {
                        for (k, &(i, addr)) in watched.iter().enumerate() {
                            let ok = match &mut conns[k] {
                                Some(c) => c.ping().is_ok(),
                                None => match Connection::connect(addr, &cfg) {
                                    Ok(mut c) => {
                                        let ok = c.ping().is_ok();
                                        conns[k] = Some(c);
                                        ok
                                    }
                                    Err(_) => false,
                                },
                            };
                            if !ok {
                                conns[k] = None;
                            }
                            if ok != up[k] {
                                up[k] = ok;
                                if tx.send((i, ok, Instant::now())).is_err() {
                                    return;
                                }
                            }
                        }
                        thread::sleep(every);
                    }
                })
                .ok()
        };
        Health { rx, stop, thread }
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Per backend, the windows of scenario time (faults applied `delay` seconds late) in
/// which a fault changes how it serves (slow, paused, delayed, erring, unreachable,
/// crashed, warming up after a cold start): its calls arriving then carry the fault, not
/// a cost under load to calibrate away. A server that comes back cold from a `join`,
/// `leave` or `deploy` (whose return time depends on its drain) counts from the fault's
/// start to the end of the run.
pub(crate) fn altered_windows(scenario: &Scenario, delay: f64) -> Vec<Vec<(Nanos, Nanos)>> {
    let mut w = vec![Vec::new(); scenario.servers().len()];
    let end = f64::INFINITY;
    for f in &scenario.faults {
        let at = f.at + delay.max(0.0);
        let until = f.until.map_or(end, |u| u + delay.max(0.0));
        let span = match f.kind {
            FaultKind::Crash if f.cold.is_some() => Some((at, end)),
            FaultKind::Crash
            | FaultKind::Slow
            | FaultKind::Error
            | FaultKind::Pause
            | FaultKind::Delay
            | FaultKind::Unreachable => Some((at, until)),
            FaultKind::Cold => f.cold.map(|c| (at, at + c.warmup)),
            FaultKind::Join | FaultKind::Leave | FaultKind::Deploy => {
                f.cold.is_some().then_some((at, end))
            }
        };
        if let Some((a, b)) = span {
            let b = if b.is_finite() {
                Nanos::from_secs_f64(b)
            } else {
                Nanos(u64::MAX)
            };
            for &i in &f.servers {
                w[i].push((Nanos::from_secs_f64(a), b));
            }
        }
    }
    w
}
