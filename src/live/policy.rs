//! Client policies live: the dispatcher drives a strategy entry's [`Policy`] (timeouts,
//! retries and their budgets, hedging, outlier ejection, slow start) through the same
//! calls the simulator makes ([`crate::sim`]'s client), with real calls for attempts and
//! one timer heap for the policy's timers.
//!
//! ```text
//!  arrival ─► LiveClient::arrival ─► attempt: Views::route_in ─► Pool::send (tag = attempt)
//!                │                      │                          │
//!                │  timers (one heap):  ├─ per-try / overall timeout ◄┘ Done ─► on_done:
//!                │  Timeout, Retry,     │   → Policy::on_failure        served → request ends once
//!                └─ Hedge, Sweep,       │   (retry_on, max_attempts,    error / rejected →
//!                   Uneject             │    budget, back-off jitter)   Policy::on_failure
//!                                       └─ Detector → Views::eject (per balancer)
//! ```
//!
//! The bookkeeping is the simulator's, so that every request ends exactly once: a request
//! slot lives from arrival to its end and changes generation when freed (a timer of an
//! ended request finds another generation); an attempt is *live* while its client waits
//! for it and *at the server* while its call is out, and its slot is freed only when it is
//! neither; the call's tag carries slot and generation.
//!
//! What differs from the simulator:
//! - **No cancellation.** Thrift has no cancel on the wire, so an abandoned attempt (timed
//!   out, or a hedge that lost) runs to its end at the server; its answer is counted as
//!   wasted work, as the simulator counts it. `cancel = true` and hedging with
//!   `cancel_losers = true` are refused (see [`refusal`]): closing the connection would
//!   not stop the server's worker either (the backend finishes the call and finds the
//!   socket closed), so it would only cost a reconnect and change nothing measured.
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
use std::collections::BinaryHeap;

use rand::RngExt;

use super::client::CallOutcome;
use super::driver::Replay;
use super::pool::{Done, Job, Pool};
use super::run::{add_service, record_served};
use crate::policy::{
    Budget, Cause, ClientState, Detector, Ejection, Next, Policy, PolicySpec, RequestState,
};
use crate::rng::{SimRng, Stream, stream_rng};
use crate::strategy::{Outcome, RampKind, ServerLoad, StrategyEntry};
use crate::time::Nanos;
use crate::workload::dist::open_unit;
use crate::workload::{Request, Size};

/// Why live mode cannot apply `entry`'s policy as simulated, if it cannot.
pub(crate) fn refusal(entry: &StrategyEntry) -> Option<String> {
    let p = entry.policy.as_ref()?;
    if p.hedge
        .as_ref()
        .is_some_and(|h| matches!(h.delay, crate::policy::HedgeDelay::Percentile(_)))
    {
        return Some(format!(
            "strategy `{}` has a client policy whose hedge.delay is a percentile of recent latencies, which the live driver does not track yet (it hedges after a fixed delay)\n  fix: replay a copy with a fixed hedge.delay in seconds",
            entry.label()
        ));
    }
    if p.circuit_breakers.is_some() {
        return Some(format!(
            "strategy `{}` has a client policy with [strategies.policy.circuit_breakers], which the live driver does not apply yet (the simulator refuses overflowing attempts at the balancer; live would send them)\n  fix: replay a copy without circuit_breakers",
            entry.label()
        ));
    }
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

/// What a policy timer is for (as in the simulator).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Timeout,
    Retry,
    Hedge,
    Sweep,
    Uneject,
}

/// A timer in the heap: (due, order of scheduling, what for, slot, generation).
type Due = Reverse<(Nanos, u64, Timer, u32, u32)>;

/// One request under the policy.
#[derive(Debug)]
struct Req {
    st: RequestState,
    key: u64,
    size: Size,
    balancer: u32,
    measured: bool,
    generation: u32,
    unroutable: bool,
    /// Attempts sent: (slot, generation, server).
    sent: Vec<(u32, u32, u32)>,
}

/// One attempt (one call).
#[derive(Debug)]
struct Attempt {
    request: u32,
    server: u32,
    balancer: u32,
    sent: Nanos,
    extra: bool,
    measured: bool,
    live: bool,
    at_server: bool,
    generation: u32,
}

/// Every balancer's client-side state under one policy, and the policy's timers.
pub(crate) struct LiveClient {
    policy: Policy,
    budgets: Vec<Budget>,
    in_flight: Vec<u32>,
    extra_in_flight: Vec<u32>,
    rng: SimRng,
    requests: Vec<Req>,
    free_requests: Vec<u32>,
    attempts: Vec<Attempt>,
    free_attempts: Vec<u32>,
    outliers: Vec<Detector>,
    /// (due, order, timer, slot, generation), earliest first.
    timers: BinaryHeap<Due>,
    order: u64,
    /// Requests not yet ended.
    open: usize,
    /// End of the measured window (sweeps stop after it unless a host is ejected).
    to: Nanos,
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
        let policy = Policy::from_spec(spec);
        LiveClient {
            outliers: match &policy.outlier {
                Some(o) => (0..balancers).map(|_| Detector::new(o, servers)).collect(),
                None => Vec::new(),
            },
            budgets: (0..balancers)
                .map(|_| Budget::new(policy.budget.as_ref()))
                .collect(),
            policy,
            in_flight: vec![0; balancers],
            extra_in_flight: vec![0; balancers],
            rng: stream_rng(seed, replication, Stream::Policy, 0),
            requests: Vec::new(),
            free_requests: Vec::new(),
            attempts: Vec::new(),
            free_attempts: Vec::new(),
            timers: BinaryHeap::new(),
            order: 0,
            open: 0,
            to,
        }
    }

    /// Requests not yet ended.
    pub(crate) fn open(&self) -> usize {
        self.open
    }

    /// When the earliest timer is due.
    pub(crate) fn next_timer(&self) -> Option<Nanos> {
        self.timers.peek().map(|Reverse(t)| t.0)
    }

    fn push(&mut self, at: Nanos, timer: Timer, slot: u32, generation: u32) {
        self.order += 1;
        self.timers
            .push(Reverse((at, self.order, timer, slot, generation)));
    }

    /// Before the first request: slow start in every balancer and the first outlier
    /// sweeps, as the simulator's `start_policy`.
    pub(crate) fn start(&mut self, r: &mut Replay) {
        if let Some(ramp) = self.policy.slow_start {
            for b in 0..r.views.all().len() {
                // Validation refuses slow start for strategies that do not apply it.
                r.views.get(b).set_slow_start(ramp);
            }
        }
        for b in 0..self.outliers.len() {
            if let Some(dt) = self.outliers[b].interval() {
                self.push(dt, Timer::Sweep, b as u32, 0);
            }
        }
    }

    fn draw(rng: &mut SimRng) -> f64 {
        open_unit(rng.random::<u64>())
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
        let state = |generation, sent| Req {
            st: RequestState::new(req.arrival),
            key: req.key,
            size: req.size,
            balancer: b as u32,
            measured,
            generation,
            unroutable: false,
            sent,
        };
        let k = match self.free_requests.pop() {
            Some(k) => {
                let old = &mut self.requests[k as usize];
                let sent = std::mem::take(&mut old.sent);
                *old = state(old.generation, sent);
                k
            }
            None => {
                self.requests.push(state(0, Vec::new()));
                (self.requests.len() - 1) as u32
            }
        };
        self.open += 1;
        self.budgets[b].on_request(now);
        let generation = self.requests[k as usize].generation;
        self.send_attempt(r, pool, now, k, false);
        if let Some(h) = self.policy.hedge {
            self.push(req.arrival + h.delay, Timer::Hedge, k, generation);
        }
    }

    fn new_attempt(&mut self, a: Attempt) -> u32 {
        match self.free_attempts.pop() {
            Some(k) => {
                let generation = self.attempts[k as usize].generation;
                self.attempts[k as usize] = Attempt { generation, ..a };
                k
            }
            None => {
                self.attempts.push(a);
                (self.attempts.len() - 1) as u32
            }
        }
    }

    fn release_attempt(&mut self, a: u32) {
        let att = &mut self.attempts[a as usize];
        if !att.live && !att.at_server {
            att.generation = att.generation.wrapping_add(1);
            self.free_attempts.push(a);
        }
    }

    fn tag(&self, a: u32) -> u64 {
        u64::from(self.attempts[a as usize].generation) << 32 | u64::from(a)
    }

    fn attempt_of(&self, tag: u64) -> Option<u32> {
        let a = tag as u32;
        (self.attempts.get(a as usize)?.generation == (tag >> 32) as u32).then_some(a)
    }

    /// Sends an attempt of request `k` (`extra`: a retry or hedge).
    fn send_attempt(&mut self, r: &mut Replay, pool: &mut Pool, now: Nanos, k: u32, extra: bool) {
        let hedging = self.policy.hedge.is_some();
        let req = &mut self.requests[k as usize];
        self.policy.on_send(&mut req.st);
        let (b, measured) = (req.balancer as usize, req.measured);
        let m = &mut r.metrics.client;
        m.attempts += u64::from(measured);
        if extra && hedging {
            m.hedges += u64::from(measured);
        } else if extra {
            m.retries += u64::from(measured);
        }
        let avoid = self.policy.retry.filter(|p| p.previous_hosts && extra);
        let target = match avoid {
            Some(p) => {
                let tried = &req.sent;
                let avoid = |i: usize| tried.iter().any(|t| t.2 as usize == i);
                r.views
                    .route_in(b, now, req.key, Some((&avoid, p.reselect)))
            }
            None => r.views.route_in(b, now, req.key, None),
        };
        r.send_probes(b, measured);
        let Some(i) = target else {
            req.unroutable = true;
            let rng = &mut self.rng;
            let next = self.policy.on_failure(
                &mut req.st,
                Cause::Failed,
                now,
                ClientState {
                    budget: &mut self.budgets[b],
                    in_flight: self.in_flight[b],
                    retries_in_flight: self.extra_in_flight[b],
                },
                || Self::draw(rng),
            );
            return self.follow(r, pool, now, k, next);
        };
        req.unroutable = false;
        // Finagle's probe: a host that came back takes one request, then waits for it.
        if let Some(d) = self.outliers.get_mut(b)
            && d.on_dispatch(i)
        {
            r.views.eject(b, i, true);
        }
        let (arrival, size, key) = (req.st.arrival, req.size, req.key);
        let a = self.new_attempt(Attempt {
            request: k,
            server: i as u32,
            balancer: b as u32,
            sent: now,
            extra,
            measured,
            live: true,
            at_server: true,
            generation: 0,
        });
        let generation = self.attempts[a as usize].generation;
        self.requests[k as usize]
            .sent
            .push((a, generation, i as u32));
        self.in_flight[b] += 1;
        self.extra_in_flight[b] += u32::from(extra);
        let size = match size {
            Size::Quantile(_) if extra => Size::Quantile(Self::draw(&mut self.rng)),
            s => s,
        };
        if measured {
            r.note_queue(i);
        }
        let work = size.work(&r.dists[i]) * 1e9 * r.clock.scale;
        pool.send(Job {
            id: u64::from(k),
            backend: i,
            scheduled: r.clock.at(now),
            work_ns: work.round().min(i64::MAX as f64) as i64,
            key: Some(key as i64),
            tag: self.tag(a),
        });
        r.sent += 1;
        if let Some(t) = self.policy.timeouts.attempt_deadline(arrival, now) {
            self.push(t, Timer::Timeout, a, generation);
        }
    }

    /// The client stops waiting for live attempt `a`, which failed by `cause` at `now`.
    fn attempt_failed(
        &mut self,
        r: &mut Replay,
        pool: &mut Pool,
        now: Nanos,
        a: u32,
        cause: Cause,
    ) {
        let att = &mut self.attempts[a as usize];
        debug_assert!(att.live);
        att.live = false;
        let (k, i, sent, extra) = (att.request, att.server as usize, att.sent, att.extra);
        let req = &mut self.requests[k as usize];
        let b = req.balancer as usize;
        let outcome = match cause {
            Cause::Rejected => Outcome::Rejected,
            Cause::Failed | Cause::Timeout => Outcome::Failed,
        };
        r.views.tell(b, i, now.saturating_sub(sent), outcome, now);
        self.in_flight[b] -= 1;
        self.extra_in_flight[b] -= u32::from(extra);
        let rng = &mut self.rng;
        let ejection = match (cause, self.outliers.get_mut(b)) {
            (Cause::Failed | Cause::Timeout, Some(d)) => {
                d.on_result(i, false, now, &mut || Self::draw(rng))
            }
            _ => None,
        };
        if cause == Cause::Timeout {
            r.metrics.client.abandoned += u64::from(req.measured);
        }
        if self.policy.retry.is_none_or(|p| p.retries(cause)) {
            self.budgets[b].on_attempt_end(false);
        }
        let rng = &mut self.rng;
        let next = self.policy.on_failure(
            &mut req.st,
            cause,
            now,
            ClientState {
                budget: &mut self.budgets[b],
                in_flight: self.in_flight[b],
                retries_in_flight: self.extra_in_flight[b],
            },
            || Self::draw(rng),
        );
        self.release_attempt(a);
        if let Some(e) = ejection {
            self.ejected(r, b, i, e, now);
        }
        self.follow(r, pool, now, k, next);
    }

    /// Balancer `b`'s detector ejected server `i` (or, Finagle, took it back).
    fn ejected(&mut self, r: &mut Replay, b: usize, i: usize, e: Ejection, now: Nanos) {
        let Ejection::Until(until) = e else {
            return self.unejected(r, b, i, now);
        };
        r.views.eject(b, i, true);
        r.metrics.client.ejections += 1;
        let m = &mut r.metrics.client;
        m.max_ejected = m.max_ejected.max(self.outliers[b].ejected());
        if until != Nanos::MAX {
            self.push(until, Timer::Uneject, b as u32, i as u32);
        }
    }

    /// Server `i` is back in balancer `b`'s view (as far as health checks allow); nginx's
    /// slow start ramps it from there.
    fn unejected(&mut self, r: &mut Replay, b: usize, i: usize, now: Nanos) {
        r.views.eject(b, i, false);
        let ramp = self
            .policy
            .slow_start
            .is_some_and(|s| s.kind() == RampKind::Nginx);
        if r.views.healthy(i) && ramp {
            r.views.get(b).available(i, now);
        }
    }

    /// Health checks saw server `i` come back at `now`: its slow start begins in every
    /// balancer (Envoy: from the health-check pass, even while ejected).
    pub(crate) fn back(&mut self, r: &mut Replay, i: usize, now: Nanos) {
        if self.policy.slow_start.is_some() {
            for b in 0..r.views.all().len() {
                r.views.get(b).available(i, now);
            }
        }
    }

    /// Carries out a policy decision for request `k`.
    fn follow(&mut self, r: &mut Replay, pool: &mut Pool, now: Nanos, k: u32, next: Next) {
        match next {
            Next::Send(Nanos::ZERO) => self.send_attempt(r, pool, now, k, true),
            Next::Send(wait) => {
                let req = &self.requests[k as usize];
                let generation = req.generation;
                // Held until the retry is sent (Envoy holds a retry's budget from the
                // decision to retry until the retry ends).
                self.extra_in_flight[req.balancer as usize] += 1;
                self.push(now + wait, Timer::Retry, k, generation);
            }
            Next::Wait => {}
            Next::Fail(cause) => self.end_request(r, now, k, Some(cause)),
        }
    }

    /// Request `k` ends: served (`None`) or not, for `cause`; its other live attempts are
    /// abandoned (their servers finish them: wasted work).
    fn end_request(&mut self, r: &mut Replay, now: Nanos, k: u32, cause: Option<Cause>) {
        let req = &mut self.requests[k as usize];
        debug_assert!(!req.st.done, "a request ends once");
        req.st.done = true;
        self.open -= 1;
        let (b, measured) = (req.balancer as usize, u64::from(req.measured));
        if cause.is_some() && req.measured {
            r.metrics.phase_unserved(req.st.arrival);
        }
        let m = &mut r.metrics;
        match cause {
            None => {}
            Some(Cause::Timeout) => m.client.timed_out += measured,
            Some(Cause::Rejected) => m.rejected += measured,
            Some(Cause::Failed) if req.unroutable => m.unroutable += measured,
            Some(Cause::Failed) => m.failed += measured,
        }
        let sent = std::mem::take(&mut req.sent);
        for &(a, generation, i) in &sent {
            let att = &mut self.attempts[a as usize];
            if att.generation != generation || !att.live {
                continue;
            }
            att.live = false;
            r.views.tell(
                b,
                i as usize,
                now.saturating_sub(att.sent),
                Outcome::Failed,
                now,
            );
            self.in_flight[b] -= 1;
            self.extra_in_flight[b] -= u32::from(att.extra);
            r.metrics.client.abandoned += measured;
            self.release_attempt(a);
        }
        let req = &mut self.requests[k as usize];
        req.sent = sent;
        req.sent.clear();
        req.generation = req.generation.wrapping_add(1);
        self.free_requests.push(k);
    }

    /// A call of the policy path ended: its server's figures, then the client's decision.
    pub(crate) fn on_done(&mut self, r: &mut Replay, pool: &mut Pool, done: Done) {
        let job = done.job;
        let i = job.backend;
        let now = r.clock.now(done.finished);
        let Some(a) = self.attempt_of(job.tag) else {
            // Every call out holds its attempt's slot, so this does not happen.
            return;
        };
        self.attempts[a as usize].at_server = false;
        let (live, measured, b) = {
            let att = &self.attempts[a as usize];
            (att.live, att.measured, att.balancer as usize)
        };
        let cause = match done.result {
            Ok(CallOutcome::Served {
                queued_ns,
                served_ns,
                load,
                ..
            }) => {
                r.record_cost(&job, done.finished, queued_ns, served_ns);
                let served = r.clock.scenario_ns(served_ns);
                let queued = r.clock.scenario_ns(queued_ns);
                if let Some(l) = load.filter(|_| live && r.views.signals().reply_loads) {
                    let load = ServerLoad {
                        in_flight: l.in_flight,
                        queued: l.queued,
                        service_time: served,
                        latency: r.clock.scenario_ns(l.latency_ns),
                    };
                    r.views.get(b).reply_load(i, &load, now);
                }
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
            Ok(CallOutcome::Rejected { .. }) => {
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
            return self.release_attempt(a);
        }
        match cause {
            Some(cause) => self.attempt_failed(r, pool, now, a, cause),
            None => self.attempt_served(r, now, done.finished, a),
        }
    }

    /// The answer to live attempt `a` reached its client: the request is served.
    fn attempt_served(&mut self, r: &mut Replay, now: Nanos, at: std::time::Instant, a: u32) {
        let att = &mut self.attempts[a as usize];
        att.live = false;
        let (k, i, sent, extra) = (att.request, att.server as usize, att.sent, att.extra);
        let req = &self.requests[k as usize];
        let (b, arrival, measured) = (req.balancer as usize, req.st.arrival, req.measured);
        r.views
            .tell(b, i, now.saturating_sub(sent), Outcome::Ok, now);
        self.in_flight[b] -= 1;
        self.extra_in_flight[b] -= u32::from(extra);
        self.budgets[b].on_attempt_end(true);
        let rng = &mut self.rng;
        let back = self
            .outliers
            .get_mut(b)
            .and_then(|d| d.on_result(i, true, now, &mut || Self::draw(rng)));
        self.release_attempt(a);
        if let Some(e) = back {
            self.ejected(r, b, i, e, now);
        }
        if measured {
            // From the scheduled arrival: a late send counts against the measurement.
            let latency = r
                .clock
                .scenario(at.saturating_duration_since(r.clock.at(arrival)));
            r.metrics.phase_served(arrival, latency);
            record_served(&mut r.metrics, i, latency);
        }
        self.end_request(r, now, k, None);
    }

    /// Fires every timer due by `until` (scenario time), each handled at `now`.
    pub(crate) fn fire_due(&mut self, r: &mut Replay, pool: &mut Pool, until: Nanos, now: Nanos) {
        while let Some(&Reverse((at, _, timer, slot, generation))) = self.timers.peek() {
            if at > until {
                break;
            }
            self.timers.pop();
            self.fire(r, pool, now.max(at), timer, slot, generation);
        }
    }

    fn fire(
        &mut self,
        r: &mut Replay,
        pool: &mut Pool,
        now: Nanos,
        timer: Timer,
        slot: u32,
        generation: u32,
    ) {
        match timer {
            Timer::Timeout => {
                let att = &self.attempts[slot as usize];
                if att.generation != generation || !att.live {
                    return;
                }
                self.attempt_failed(r, pool, now, slot, Cause::Timeout);
            }
            Timer::Retry => {
                let req = &self.requests[slot as usize];
                if req.generation != generation || req.st.done {
                    return;
                }
                self.extra_in_flight[req.balancer as usize] -= 1;
                if self.policy.expired(&req.st, now) {
                    self.end_request(r, now, slot, Some(Cause::Timeout));
                } else {
                    self.send_attempt(r, pool, now, slot, true);
                }
            }
            Timer::Sweep => {
                let b = slot as usize;
                let rng = &mut self.rng;
                let mut out = Vec::new();
                let back = self.outliers[b].sweep(now, &mut || Self::draw(rng), &mut out);
                for i in back {
                    self.unejected(r, b, i, now);
                }
                for (i, e, _) in out {
                    self.ejected(r, b, i, e, now);
                }
                let (more, dt) = (self.outliers[b].ejected() > 0, self.outliers[b].interval());
                if let Some(dt) = dt.filter(|_| now < self.to || more) {
                    self.push(now + dt, Timer::Sweep, slot, generation);
                }
            }
            Timer::Uneject => {
                let (b, i) = (slot as usize, generation as usize);
                if self.outliers[b].on_timer(i, now) {
                    self.unejected(r, b, i, now);
                }
            }
            Timer::Hedge => {
                let req = &self.requests[slot as usize];
                if req.generation != generation || req.st.done {
                    return;
                }
                let b = req.balancer as usize;
                let go = self.policy.on_hedge_timer(
                    &req.st,
                    now,
                    ClientState {
                        budget: &mut self.budgets[b],
                        in_flight: self.in_flight[b],
                        retries_in_flight: self.extra_in_flight[b],
                    },
                );
                if !go {
                    return;
                }
                self.send_attempt(r, pool, now, slot, true);
                let req = &self.requests[slot as usize];
                if req.generation == generation
                    && !req.st.done
                    && req.st.sent < self.policy.max_attempts()
                {
                    let delay = self.policy.hedge.map_or(Nanos::ZERO, |h| h.delay);
                    self.push(now + delay, Timer::Hedge, slot, generation);
                }
            }
        }
    }
}
