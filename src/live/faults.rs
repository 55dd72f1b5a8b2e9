//! Faults live: a scenario's `[[faults]]` applied to real backends at their scheduled
//! (time-scaled) times, and health checking as the simulator models it.
//!
//! ```text
//!  scenario faults ──► FaultPlayer (owned by the dispatcher thread) ──► FaultControl of each
//!  (start, end,        applies every action when due, between          in-process backend
//!   pauses drawn        requests, on the replay's clock                 (crash, slow, error,
//!   as the simulator)        ▲                                          pause)
//!                            └── Health thread: pings each backend that can crash; a change
//!                                seen at t marks it down (or up) for the balancer at t + detection
//! ```
//!
//! - **Timing.** Every action runs on the dispatcher thread, which already sleeps until
//!   each request is due: an action due before the next request is waited for exactly as a
//!   request is, so a crash happens at its scaled time within the dispatcher's wake-up lag
//!   (reported per replay as [`FaultEvent::late`]).
//! - **Control.** Faults reach the backends through [`FaultControl`], an in-process handle
//!   of the servers this process started: nothing on the network can crash or slow a
//!   backend, so a hostile client cannot abuse it. Backends started elsewhere (`lbsim
//!   serve`, `--backends`) cannot be faulted, and a scenario with faults is refused there.
//! - **Pauses** are drawn from the fault stream of the replication (the simulator's
//!   `fault_rng`), in the simulator's order (time, then scheduling order), so the live
//!   backends pause at the simulated times and for the simulated lengths.
//! - **Health checking.** As in the simulator, the balancer marks a crashed backend down
//!   `detection` after the crash and up `detection` after it recovers — provided the
//!   driver's health checks (pings every [`health_interval`]) agree by then. If they do
//!   not (the backend is still answering at crash + detection, or still silent at
//!   recovery + detection), nothing changes until they do, and the change reaches the
//!   balancer `detection` after the checks see it; a change the schedule does not explain
//!   (a backend failing on its own) too. So a backend that behaves as declared is marked
//!   down and up at the simulated instants (same requests routed on both sides), and one
//!   that crashes late (or never) is marked down late (or never). A failed call never
//!   marks a backend down in a scenario with faults: failures are counted, as the
//!   simulator counts them.

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
use super::run::Clock;
use super::server::{ErrorMode, FaultControl};
use super::views::Views;
use crate::rng::{SimRng, Stream, stream_rng};
use crate::scenario::{ErrorStatus, Fault, FaultKind, Scenario};
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
    controls: Vec<FaultControl>,
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
    scale: f64,
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
        controls: Vec<FaultControl>,
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
            .filter(|f| f.kind == FaultKind::Crash)
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
            scale,
            log: Vec::new(),
        };
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
            if self.scheduled[i] == Some(up) {
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
            let log = |p: &mut Self, what: String| {
                p.log.push(FaultEvent {
                    at: t.as_secs_f64(),
                    late,
                    what,
                });
            };
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
                    if !views.set_health(server, up) {
                        continue;
                    }
                    if !up {
                        marked_down.push(server);
                    }
                    let what = format!("{} {}", if up { "up" } else { "down" }, self.names[server]);
                    log(self, what);
                }
                Action::Pause { server, fault } => {
                    if let Some(what) = self.pause(t, server, fault) {
                        log(self, what);
                    }
                }
                Action::Fault { index, start } => {
                    let what = self.fault(t, index, start);
                    log(self, what);
                }
            }
        }
    }

    /// Fault `index` starts or ends at `t` on each of its servers.
    fn fault(&mut self, t: Nanos, index: usize, start: bool) -> String {
        let f = &self.faults[index];
        let scale = self.scale;
        for &i in &f.servers {
            let c = self.controls[i].clone();
            match (f.kind, start) {
                (FaultKind::Crash, start) => {
                    let up = !start;
                    if start {
                        c.crash();
                    } else {
                        c.recover();
                    }
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
                (FaultKind::Slow, true) => c.set_slow(f.factor),
                (FaultKind::Slow, false) => c.set_slow(1.0),
                (FaultKind::Error, true) => c.set_error(f.error.map(|e| ErrorMode {
                    fraction: e.fraction,
                    latency: Duration::from_secs_f64(e.latency * scale),
                    rejected: e.status == ErrorStatus::Rejected,
                })),
                (FaultKind::Error, false) => c.set_error(None),
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
                (kind, _) => unreachable!("`{kind:?}` faults are refused by `replay_via`"),
            }
        }
        let who: Vec<&str> = f.servers.iter().map(|&i| self.names[i].as_str()).collect();
        let kind = match (f.kind, start) {
            (FaultKind::Crash, true) => "crash",
            (FaultKind::Crash, false) => "recover",
            (FaultKind::Slow, true) => "slow",
            (FaultKind::Error, true) => "error",
            (FaultKind::Pause, true) => "pauses",
            (_, false) => "end",
            (kind, true) => unreachable!("`{kind:?}` faults are refused by `replay_via`"),
        };
        format!("{kind} {}", who.join(","))
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
        self.controls[i].pause(Duration::from_secs_f64(length.as_secs_f64() * self.scale));
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
            c.recover();
            c.set_slow(1.0);
            c.set_error(None);
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

/// Whether live mode injects faults of this kind into the backends it starts; the others
/// (membership, network and cold-start faults) run in the simulator only.
pub(crate) fn injects(kind: FaultKind) -> bool {
    matches!(
        kind,
        FaultKind::Crash | FaultKind::Slow | FaultKind::Error | FaultKind::Pause
    )
}
