//! Client policies live: the dispatcher drives a strategy entry's [`Policy`] (timeouts,
//! retries and their budgets, hedging, outlier ejection, slow start) through the one
//! driving core the simulator uses ([`crate::policy::client`]): this file is the core's
//! [`Host`] for live mode — real calls for attempts, one timer heap for the policy's
//! timers — and hands the core what calls end with.
//!
//! ```text
//!  arrival ─► LiveClient::arrival ─► core::arrival ─► Host::route: Views::route_in
//!                                         │            Host::dispatch: Pool::send (tag = attempt id)
//!  timers (one heap, Host::schedule) ─────┤
//!  Done ─► LiveClient::on_done ─► server figures, then core::served / core::attempt_failed
//! ```
//!
//! The core's bookkeeping makes every request end exactly once (see
//! [`crate::policy::client`]). What differs from the simulator:
//! - **No cancellation.** Thrift has no cancel on the wire, so an abandoned attempt (timed
//!   out, or a hedge that lost) runs to its end at the server; its answer is counted as
//!   wasted work, as the simulator counts it. `cancel = true` and hedging with
//!   `cancel_losers = true` are refused (see [`refusal`]): closing the connection would
//!   not stop the server's worker either (the backend finishes the call and finds the
//!   socket closed), so it would only cost a reconnect and change nothing measured.
//! - **Circuit breakers** count what the simulator counts: attempts outstanding per
//!   balancer (the core's own counts), and pending ones, which wait in a server's queue.
//!   Live the driver cannot see a backend's queue, so it keeps its own picture: an attempt
//!   sent while the calls it has at that backend (sent, not yet answered, abandoned ones
//!   included) fill every worker is pending ([`Host::would_wait`]), and leaves the count as
//!   a FIFO server would start it (see `LiveClient::left_server`).
//! - **Percentile hedge delays** read the core's latency windows, which the core feeds in
//!   [`core::served`] with each request's latency at the answer's scenario time, as the
//!   simulator's host does: nothing live-specific.
//! - **Random draws.** Back-off jitter, the service quantile of retries and hedges and the
//!   detector's draws come from the simulator's policy stream (`Stream::Policy` 0 of the
//!   replication), in the same order of calls; a live decision taken at a slightly
//!   different time (a timeout that fires after an answer that came first in the
//!   simulation) shifts the draws after it, so individual requests may differ while the
//!   rates agree.
//! - **Time.** Decisions read the replay's clock (scenario time of the moment the
//!   dispatcher handles the event); timers are due at their scenario time, and fire within
//!   the dispatcher's wake-up lag.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::client::CallOutcome;
use super::driver::Replay;
use super::pool::{Done, Job, Pool};
use super::run::{add_service, add_shed_wait, record_served};
use crate::metrics::RunMetrics;
use crate::policy::client::{self as core, Avoid, Client, Dispatch, Dispatched, Host, Timer};
use crate::policy::{Cause, PolicySpec};
use crate::rng::{Stream, stream_rng};
use crate::strategy::{Outcome, Ramp, StrategyEntry};
use crate::time::Nanos;
use crate::workload::Request;

/// Why live mode cannot apply `entry`'s policy as simulated, if it cannot.
pub(crate) fn refusal(entry: &StrategyEntry) -> Option<String> {
    let p = entry.policy.as_ref()?;
    let hedge_cancels = p.hedge.as_ref().is_some_and(|h| h.cancel_losers);
    (p.cancel || hedge_cancels).then(|| {
        let field = if p.cancel {
            "cancel = true"
        } else {
            "[hedge] cancel_losers = true (the default)"
        };
        format!(
            "strategy `{}` has a client policy with {field}: real Thrift has no cancellation on the wire, and closing the call's connection would not stop the server's worker (it finishes the call and finds the socket closed), so live it cannot withdraw abandoned attempts as simulated\n  fix: set cancel = false (and cancel_losers = false under [strategies.policy.hedge]): the server then finishes abandoned attempts, counted as wasted work on both sides",
            entry.label()
        )
    })
}

/// A timer in the heap: (due, order of scheduling, what for, slot, generation).
type Due = Reverse<(Nanos, u64, Timer, u32, u32)>;

/// The policy's timers, earliest first (ties in the order they were set).
#[derive(Default)]
struct Timers {
    heap: BinaryHeap<Due>,
    order: u64,
}

/// Every balancer's client-side state under one policy, and the policy's timers.
pub(crate) struct LiveClient {
    /// The shared core's state: requests, attempts, budgets, detectors, policy stream.
    c: Client,
    timers: Timers,
    /// Under circuit breakers, per backend, the attempts sent while it had no free worker
    /// (by the driver's count), oldest first: what its queue holds, as far as the driver
    /// knows (empty without circuit breakers, which alone read it).
    waiting: Vec<VecDeque<u64>>,
    /// End of the measured window (sweeps stop after it unless a host is ejected).
    to: Nanos,
}

/// What the core asks of live mode, for the span of one event.
struct Live<'a> {
    c: &'a mut Client,
    timers: &'a mut Timers,
    waiting: &'a mut [VecDeque<u64>],
    r: &'a mut Replay,
    pool: &'a mut Pool,
    to: Nanos,
}

impl Host for Live<'_> {
    fn client(&mut self) -> &mut Client {
        self.c
    }

    fn metrics(&mut self) -> &mut RunMetrics {
        &mut self.r.metrics
    }

    fn schedule(&mut self, at: Nanos, timer: Timer, slot: u32, generation: u32) {
        let t = &mut *self.timers;
        t.order += 1;
        t.heap.push(Reverse((at, t.order, timer, slot, generation)));
    }

    fn route(&mut self, b: usize, now: Nanos, key: u64, avoid: Avoid<'_>) -> Option<usize> {
        self.r.views.route_in(b, now, key, avoid)
    }

    fn send_probes(&mut self, b: usize, now: Nanos, measured: bool) {
        self.r.send_probes(b, now, measured);
    }

    fn would_wait(&self, i: usize) -> bool {
        self.r.views.would_wait(i)
    }

    fn not_sent(&mut self, _b: usize, i: usize, now: Nanos) {
        // Counted at the server from the pick on (`Views::route_in`): no longer.
        self.r.views.server_done(i, None, now);
    }

    fn dispatch(&mut self, now: Nanos, d: Dispatch) -> Dispatched {
        let (r, i) = (&mut *self.r, d.server);
        let size = self.c.attempt_size(d.size, d.extra);
        if d.measured {
            r.note_queue(i);
        }
        // Pending for the circuit breakers while the driver's count says it waits.
        let queued = !self.waiting.is_empty() && r.views.would_wait(i);
        if queued {
            self.waiting[i].push_back(d.id);
        }
        let work = size.work(&r.dists[i]) * 1e9 * r.clock.scale;
        self.pool.send(Job {
            id: u64::from(d.request),
            backend: i,
            // An arrival's first attempt is late from its due time (the dispatcher may
            // have woken after it); a retry or hedge from the timer's.
            scheduled: r.due.take().unwrap_or_else(|| r.clock.at(now)),
            work_ns: work.round().min(i64::MAX as f64) as i64,
            key: Some(d.key as i64),
            tag: d.id,
        });
        r.sent += 1;
        Dispatched::Held { queued }
    }

    fn tell(&mut self, b: usize, i: usize, latency: Nanos, outcome: Outcome, now: Nanos) {
        self.r.views.tell(b, i, latency, outcome, now);
    }

    fn set_ejected(&mut self, b: usize, i: usize, out: bool) -> bool {
        self.r.views.eject(b, i, out);
        !out && self.r.views.healthy(i)
    }

    fn available(&mut self, b: usize, i: usize, now: Nanos) {
        self.r.views.get(b).available(i, now);
    }

    fn balancers(&self) -> usize {
        self.r.views.all().len()
    }

    fn set_slow_start(&mut self, b: usize, ramp: Ramp) {
        // Validation refuses slow start for strategies that do not apply it.
        self.r.views.get(b).set_slow_start(ramp);
    }

    fn withdraw(&mut self, _i: usize, _id: u64, _now: Nanos) -> bool {
        // Policies that cancel are refused live (see `refusal`): the server finishes.
        false
    }

    fn arrivals_end(&self) -> Nanos {
        self.to
    }
}

impl LiveClient {
    /// The client state of `spec` for `balancers` balancers over `servers` servers, with
    /// the simulator's policy stream of the replication.
    pub(crate) fn new(
        spec: &PolicySpec,
        balancers: usize,
        servers: usize,
        seed: u64,
        replication: u64,
        to: Nanos,
    ) -> LiveClient {
        let rng = stream_rng(seed, replication, Stream::Policy, 0);
        let c = Client::new(spec, balancers, servers, rng);
        let waiting = match c.policy.circuit {
            Some(_) => vec![VecDeque::new(); servers],
            None => Vec::new(),
        };
        LiveClient {
            c,
            timers: Timers::default(),
            waiting,
            to,
        }
    }

    fn host<'a>(&'a mut self, r: &'a mut Replay, pool: &'a mut Pool) -> Live<'a> {
        Live {
            c: &mut self.c,
            timers: &mut self.timers,
            waiting: &mut self.waiting,
            r,
            pool,
            to: self.to,
        }
    }

    /// Call `id` at backend `i` ended (`served`: a worker served it). Under circuit
    /// breakers, the backend's queue as the driver sees it moves as a FIFO server's does:
    /// a served call and every call queued before it have started, and its worker takes
    /// the next waiting call; a call not served (refused, shed, failed) leaves the queue.
    /// Those that started leave their balancer's pending count.
    fn left_server(&mut self, i: usize, id: u64, served: bool) {
        let Some(q) = self.waiting.get_mut(i) else {
            return;
        };
        let started = match q.iter().position(|&x| x == id) {
            Some(k) if served => k + 2,
            Some(k) => {
                q.remove(k);
                0
            }
            None if served => 1,
            None => 0,
        };
        for id in q.drain(..started.min(q.len())) {
            self.c.started_from_queue(id);
        }
    }

    /// Requests not yet ended.
    pub(crate) fn open(&self) -> usize {
        self.c.open()
    }

    /// When the earliest timer is due.
    pub(crate) fn next_timer(&self) -> Option<Nanos> {
        self.timers.heap.peek().map(|Reverse(t)| t.0)
    }

    /// Before the first request: slow start in every balancer and the first outlier
    /// sweeps, as in the simulator.
    pub(crate) fn start(&mut self, r: &mut Replay, pool: &mut Pool) {
        core::start(&mut self.host(r, pool));
    }

    /// Request `req` arrived (scheduled at `req.arrival`, handled at `now`).
    pub(crate) fn arrival(
        &mut self,
        r: &mut Replay,
        pool: &mut Pool,
        now: Nanos,
        req: &Request,
        measured: bool,
    ) {
        let b = r.views.pick_balancer();
        core::arrival(&mut self.host(r, pool), now, req, b, measured);
    }

    /// A call of the policy path ended: its server's figures, then the client's decision.
    pub(crate) fn on_done(&mut self, r: &mut Replay, pool: &mut Pool, done: Done) {
        let job = done.job;
        let i = job.backend;
        let now = r.clock.now(done.finished);
        let Some(a) = self.c.attempt_of(job.tag) else {
            // Every call out holds its attempt's slot, so this does not happen.
            return;
        };
        let served = matches!(done.result, Ok(CallOutcome::Served { .. }));
        self.left_server(i, job.tag, served);
        self.c.off_server(a);
        let att = self.c.attempt(a);
        let (live, measured, b) = (att.live, att.measured, att.balancer as usize);
        let cause = match done.result {
            Ok(CallOutcome::Served {
                queued_ns,
                served_ns,
                load,
                woke_late_ns,
                ..
            }) => {
                r.record_cost(&job, done.finished, queued_ns, served_ns, woke_late_ns);
                let served = r.clock.scenario_ns(served_ns);
                let queued = r.clock.scenario_ns(queued_ns);
                r.reply_load(b, i, load.filter(|_| live), served, now);
                r.views.server_done(i, Some(served), now);
                add_service(&mut r.metrics, i, now, queued, served);
                if measured {
                    r.metrics.client.work += served.as_secs_f64();
                    if !live {
                        // Counted where the simulator counts them: calls a worker took
                        // (the winner's in `record_served`).
                        r.metrics.servers[i].requests += 1;
                        r.metrics.client.wasted += served.as_secs_f64();
                    }
                }
                None
            }
            Ok(CallOutcome::Rejected { shed, .. }) => {
                if shed {
                    // Counted whether or not their client still waits, as the simulator
                    // counts the jobs its servers drop.
                    r.metrics.shed += u64::from(measured);
                    let sent = done.sent.unwrap_or(job.scheduled);
                    let waited = r
                        .clock
                        .scenario(done.finished.saturating_duration_since(sent));
                    add_shed_wait(&mut r.metrics, i, now, waited);
                }
                r.views.server_done(i, None, now);
                Some(Cause::Rejected)
            }
            Err(e) => {
                r.first_error.get_or_insert_with(|| e.to_string());
                r.errors += 1;
                r.errors_per_backend[i] += 1;
                r.views.server_done(i, None, now);
                if r.down_on_error && r.views.set_down(i) {
                    r.marked_down.push(i);
                }
                Some(Cause::Failed)
            }
        };
        if !live {
            return self.c.release_attempt(a);
        }
        let arrival = self.c.request(self.c.attempt(a).request).st.arrival;
        let at = done.finished;
        let mut h = self.host(r, pool);
        match cause {
            Some(cause) => core::attempt_failed(&mut h, now, a, cause),
            None => core::served(&mut h, now, a, |h| {
                if measured {
                    // From the scheduled arrival: a late send counts against the measurement.
                    let r = &mut *h.r;
                    let latency = r
                        .clock
                        .scenario(at.saturating_duration_since(r.clock.at(arrival)));
                    r.metrics.phase_served(arrival, latency);
                    record_served(&mut r.metrics, i, latency);
                }
            }),
        }
    }

    /// Fires every timer due by `until` (scenario time), each handled at `now`.
    pub(crate) fn fire_due(&mut self, r: &mut Replay, pool: &mut Pool, until: Nanos, now: Nanos) {
        while let Some(&Reverse((at, _, timer, slot, generation))) = self.timers.heap.peek() {
            if at > until {
                break;
            }
            self.timers.heap.pop();
            core::timer(
                &mut self.host(r, pool),
                now.max(at),
                timer,
                slot,
                generation,
            );
        }
    }
}
