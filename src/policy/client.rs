//! The one driving core of client policies, shared by the simulator and the live driver:
//! what a client does with a request under a [`Policy`] — attempts, retries, hedges,
//! timeouts, budgets, outlier ejection, circuit breakers, wasted work and the request's
//! one end — written once, over a small [`Host`] trait for what differs between the two
//! (routing, sending an attempt, timers, withdrawing an attempt, the balancers' views).
//!
//! ```text
//!  host event                    core (this file)                      host call
//!  arrival ───────────────────► arrival ─► send_attempt ─► route ────► Host::route
//!                                              │ circuit / Finagle     Host::set_ejected
//!                                              └─► dispatch ─────────► Host::dispatch
//!  timer (Host::schedule) ────► timer: Timeout / Retry / Hedge / Sweep / Uneject
//!  answer / error / crash ────► served / attempt_failed ─► Policy::on_failure ─► follow
//!                                  └─► end_request (exactly once) ─► withdraw ─► Host::withdraw
//! ```
//!
//! Bookkeeping that keeps "every request ends exactly once" true:
//! - a request slot lives from arrival until it ends (served, rejected, unroutable,
//!   failed or timed out), and its generation changes when it is freed, so a timer of an
//!   ended request finds a different generation and does nothing;
//! - an attempt is *live* while its client waits for it, and *at the server* while a
//!   server holds it; its slot is freed only when it is neither, and its id
//!   ([`Client::job_id`]) carries the slot's generation, so that an answer to an attempt
//!   given up never finishes a later attempt reusing the slot;
//! - when a request ends, its other live attempts are abandoned (the balancer is told at
//!   once) and, if the policy cancels, withdrawn from their servers; otherwise their
//!   servers finish them and the time is counted as wasted work.
//!
//! Random draws (back-off jitter, the service quantile of retries and hedges, the outlier
//! detectors' draws) all come from the client's one stream, in the order of the calls
//! below: the simulator and a live replay of the same seed draw alike as long as events
//! come in the same order.

use rand::RngExt;

use super::{
    Budget, Cause, ClientState, Detector, Ejection, Next, Outstanding, Policy, PolicySpec,
    RequestState,
};
use crate::metrics::RunMetrics;
use crate::rng::SimRng;
use crate::strategy::{Outcome, Ramp, RampKind};
use crate::time::Nanos;
use crate::workload::dist::open_unit;
use crate::workload::{Request, Size};

/// What a policy timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// An attempt's timeout (per try, or the request's deadline): `slot` is the attempt.
    Timeout,
    /// A retry's back-off is over: `slot` is the request.
    Retry,
    /// A hedge's delay is over: `slot` is the request.
    Hedge,
    /// Envoy's outlier sweep of balancer `slot`.
    Sweep,
    /// nginx / Finagle: server `generation`'s time out of balancer `slot` is over.
    Uneject,
}

/// One attempt as the host sends it.
#[derive(Clone, Copy, Debug)]
pub struct Dispatch {
    /// The request's slot.
    pub request: u32,
    /// The attempt's slot and generation.
    pub attempt: (u32, u32),
    /// The attempt's id ([`Client::job_id`]): what its answer names.
    pub id: u64,
    /// The balancer that routed it.
    pub balancer: usize,
    /// The server it goes to.
    pub server: usize,
    /// When its request arrived.
    pub arrival: Nanos,
    /// The request's key.
    pub key: u64,
    /// The request's size as it arrived (see [`Client::attempt_size`]).
    pub size: Size,
    /// A retry or hedge.
    pub extra: bool,
    /// Its request is measured.
    pub measured: bool,
}

/// What became of an attempt the host sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatched {
    /// A server holds it (`queued`: waiting in the server's queue); its answer comes later.
    Held {
        /// It waits in its server's queue (pending, for the circuit breakers).
        queued: bool,
    },
    /// Refused at once, for this cause.
    Refused(Cause),
    /// An error answer is on its way back, without the server holding it (an `error`
    /// fault in the simulator): no timeout is set, the answer comes as a failure.
    Answering,
}

/// Servers a retry avoids (Envoy's `previous_hosts`), with how many times the balancer
/// may pick again; `None`: any server.
pub type Avoid<'a> = Option<(&'a dyn Fn(usize) -> bool, u32)>;

/// What differs between the simulator and the live driver: everything the core asks of
/// the world around the client.
pub trait Host {
    /// The clients' state.
    fn client(&mut self) -> &mut Client;
    /// The run's figures.
    fn metrics(&mut self) -> &mut RunMetrics;
    /// Policy timer `timer` for (`slot`, `generation`) is due at `at`.
    fn schedule(&mut self, at: Nanos, timer: Timer, slot: u32, generation: u32);
    /// Balancer `b` routes a request of key `key` at `now`; with `avoid`, it picks again
    /// (at most its count of times) while the pick is a server `avoid` rejects.
    fn route(&mut self, b: usize, now: Nanos, key: u64, avoid: Avoid<'_>) -> Option<usize>;
    /// Balancer `b` routed an attempt at `now`: probes it asked for go out.
    fn send_probes(&mut self, b: usize, now: Nanos, measured: bool);
    /// Whether a request sent to server `i` now would wait in its queue (circuit breakers).
    fn would_wait(&self, i: usize) -> bool;
    /// Sends an attempt to its server.
    fn dispatch(&mut self, now: Nanos, d: Dispatch) -> Dispatched;
    /// After an attempt went to server `i` (held or refused), once the client reacted.
    fn dispatched(&mut self, _i: usize, _now: Nanos) {}
    /// Balancer `b`'s pick of server `i` at `now` overflowed its circuit breakers: the
    /// attempt was not sent (the live driver counts calls at a server from the pick on).
    fn not_sent(&mut self, _b: usize, _i: usize, _now: Nanos) {}
    /// Balancer `b`'s attempt to server `i` ended for its client at `now`, after `latency`.
    fn tell(&mut self, b: usize, i: usize, latency: Nanos, outcome: Outcome, now: Nanos);
    /// Balancer `b` ejects server `i` (`out`) or takes it back; returns whether the server
    /// is now up in that balancer (health checks see it up and it is not ejected).
    fn set_ejected(&mut self, b: usize, i: usize, out: bool) -> bool;
    /// Server `i` becomes available in balancer `b` at `now` (slow start begins).
    fn available(&mut self, b: usize, i: usize, now: Nanos);
    /// Balancers, each with its client.
    fn balancers(&self) -> usize;
    /// Sets slow start in balancer `b` (validation made sure its strategy applies it).
    fn set_slow_start(&mut self, b: usize, ramp: Ramp);
    /// Withdraws attempt `id` from server `i` at `now`; returns whether the server still
    /// held it.
    fn withdraw(&mut self, i: usize, id: u64, now: Nanos) -> bool;
    /// End of arrivals in the measured window: sweeps stop after it unless a host is out.
    fn arrivals_end(&self) -> Nanos;
    /// An attempt was sent (`None`) or a request ended (`Some(how)`: served is
    /// `Some(None)`) at `now`, measured or not: the simulator's rates over time count them.
    fn counted(&mut self, _now: Nanos, _what: Option<Option<Cause>>) {}
}

/// One request under a policy.
#[derive(Debug)]
pub struct Req {
    /// What the policy tracks of it.
    pub st: RequestState,
    /// Its key.
    pub key: u64,
    /// Its size.
    pub size: Size,
    /// The balancer it went through.
    pub balancer: u32,
    /// Whether it is measured.
    pub measured: bool,
    /// The slot's generation.
    pub generation: u32,
    /// Whether the last attempt found no server up.
    pub unroutable: bool,
    /// Attempts sent: (slot, generation, server).
    pub sent: Vec<(u32, u32, u32)>,
}

/// One attempt.
#[derive(Debug)]
pub struct Attempt {
    /// Its request's slot.
    pub request: u32,
    /// The server it went to.
    pub server: u32,
    /// The balancer that routed it.
    pub balancer: u32,
    /// When it was sent.
    pub sent: Nanos,
    /// A retry or hedge (counted in the budget's "retries in flight").
    pub extra: bool,
    /// Its request is measured (the request may end, and its slot be reused, before the
    /// attempt's answer comes).
    pub measured: bool,
    /// The client waits for it.
    pub live: bool,
    /// A server holds it.
    pub at_server: bool,
    /// It waits in its server's queue (pending, for the circuit breakers).
    pub queued: bool,
    /// The slot's generation.
    pub generation: u32,
}

/// Every balancer's client-side state under one policy.
pub struct Client {
    /// The policy.
    pub policy: Policy,
    budgets: Vec<Budget>,
    in_flight: Vec<u32>,
    /// Retries and hedges in flight, plus retries waiting out their back-off (Envoy
    /// holds a retry's budget from the decision to retry until the retry ends).
    extra_in_flight: Vec<u32>,
    rng: SimRng,
    requests: Vec<Req>,
    free_requests: Vec<u32>,
    attempts: Vec<Attempt>,
    free_attempts: Vec<u32>,
    /// Per balancer, its outlier detector (empty without outlier ejection).
    outliers: Vec<Detector>,
    /// Per balancer, its live attempts waiting in a server queue (Envoy's pending
    /// requests, read by the circuit breakers).
    pending: Vec<u32>,
    /// Per balancer, its recent latencies when the hedge delay is a percentile of them
    /// (empty otherwise).
    hedge_windows: Vec<crate::policy::LatencyWindow>,
    /// Requests not yet ended.
    open: usize,
}

impl Client {
    /// The client state of `spec` for `balancers` balancers over `servers` servers,
    /// drawing from `rng` (the replication's policy stream).
    pub fn new(spec: &PolicySpec, balancers: usize, servers: usize, rng: SimRng) -> Client {
        let policy = Policy::from_spec(spec);
        Client {
            outliers: match &policy.outlier {
                Some(o) => (0..balancers).map(|_| Detector::new(o, servers)).collect(),
                None => Vec::new(),
            },
            hedge_windows: match policy.hedge.and_then(|h| h.percentile) {
                Some(p) => vec![crate::policy::LatencyWindow::new(&p); balancers],
                None => Vec::new(),
            },
            budgets: (0..balancers)
                .map(|_| Budget::new(policy.budget.as_ref()))
                .collect(),
            policy,
            in_flight: vec![0; balancers],
            pending: vec![0; balancers],
            extra_in_flight: vec![0; balancers],
            rng,
            requests: Vec::new(),
            free_requests: Vec::new(),
            attempts: Vec::new(),
            free_attempts: Vec::new(),
            open: 0,
        }
    }

    /// Requests not yet ended.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Attempt `a` (a slot named by [`Client::attempt_of`]).
    pub fn attempt(&self, a: u32) -> &Attempt {
        &self.attempts[a as usize]
    }

    /// Request `r`.
    pub fn request(&self, r: u32) -> &Req {
        &self.requests[r as usize]
    }

    /// Balancer `b`'s outlier detector, if any.
    pub fn detector(&self, b: usize) -> Option<&Detector> {
        self.outliers.get(b)
    }

    fn new_request(&mut self, req: &Request, balancer: u32, measured: bool) -> u32 {
        let state = |generation, sent| Req {
            st: RequestState::new(req.arrival),
            key: req.key,
            size: req.size,
            balancer,
            measured,
            generation,
            unroutable: false,
            sent,
        };
        self.open += 1;
        match self.free_requests.pop() {
            Some(r) => {
                let old = &mut self.requests[r as usize];
                let sent = std::mem::take(&mut old.sent);
                *old = state(old.generation, sent);
                r
            }
            None => {
                self.requests.push(state(0, Vec::new()));
                (self.requests.len() - 1) as u32
            }
        }
    }

    fn free_request(&mut self, r: u32) {
        let req = &mut self.requests[r as usize];
        req.generation = req.generation.wrapping_add(1);
        req.sent.clear();
        self.free_requests.push(r);
        self.open -= 1;
    }

    fn new_attempt(&mut self, r: u32, server: u32, sent: Nanos, extra: bool) -> u32 {
        let req = &self.requests[r as usize];
        let attempt = |generation| Attempt {
            request: r,
            server,
            balancer: req.balancer,
            sent,
            extra,
            measured: req.measured,
            live: true,
            at_server: false,
            queued: false,
            generation,
        };
        match self.free_attempts.pop() {
            Some(a) => {
                let g = self.attempts[a as usize].generation;
                self.attempts[a as usize] = attempt(g);
                a
            }
            None => {
                self.attempts.push(attempt(0));
                (self.attempts.len() - 1) as u32
            }
        }
    }

    /// Frees attempt `a` once the client no longer waits for it and no server holds it.
    pub fn release_attempt(&mut self, a: u32) {
        let att = &mut self.attempts[a as usize];
        if !att.live && !att.at_server {
            att.generation = att.generation.wrapping_add(1);
            self.free_attempts.push(a);
        }
    }

    /// Id of attempt `a`: slot and generation, unique among the attempts of a run.
    pub fn job_id(&self, a: u32) -> u64 {
        u64::from(self.attempts[a as usize].generation) << 32 | u64::from(a)
    }

    /// The attempt an id names, if it is still that attempt.
    pub fn attempt_of(&self, id: u64) -> Option<u32> {
        let a = id as u32;
        (self.attempts.get(a as usize)?.generation == (id >> 32) as u32).then_some(a)
    }

    /// Attempt `a` no longer waits in its server's queue (it started, left the server, or
    /// its client stopped waiting for it): it leaves its balancer's pending count.
    fn leave_pending(&mut self, a: u32) {
        let att = &mut self.attempts[a as usize];
        if att.queued {
            att.queued = false;
            if att.live {
                let b = self.requests[att.request as usize].balancer as usize;
                self.pending[b] -= 1;
            }
        }
    }

    /// The server started job `id`, which waited in its queue (a probe's, or an attempt's).
    pub fn started_from_queue(&mut self, id: u64) {
        if let Some(a) = self.attempt_of(id) {
            self.leave_pending(a);
        }
    }

    /// The size an attempt of a request of `size` carries: retries and hedges are fresh
    /// executions, whose service-time quantile is drawn anew from the policy stream (the
    /// time a request takes comes from the server — garbage collection, caches,
    /// contention — more than from the request); trace-driven requests keep their
    /// recorded work.
    pub fn attempt_size(&mut self, size: Size, extra: bool) -> Size {
        match size {
            Size::Quantile(_) if extra => Size::Quantile(open_unit(self.rng.random::<u64>())),
            s => s,
        }
    }

    /// Attempt `a`'s server no longer holds it (it answered, or its answer is on the
    /// wire): once its client stops waiting too, [`Client::release_attempt`] frees it.
    pub fn off_server(&mut self, a: u32) {
        self.attempts[a as usize].at_server = false;
    }

    /// Request `r`'s state with what a policy decision reads of its balancer's client
    /// (budget, attempts in flight): split borrows of one client.
    fn decision(&mut self, r: u32) -> (&Policy, &mut RequestState, ClientState<'_>, &mut SimRng) {
        let req = &mut self.requests[r as usize];
        let b = req.balancer as usize;
        let client = ClientState {
            budget: &mut self.budgets[b],
            in_flight: self.in_flight[b],
            retries_in_flight: self.extra_in_flight[b],
        };
        (&self.policy, &mut req.st, client, &mut self.rng)
    }

    /// What follows for request `r` when an attempt of it fails by `cause` at `now`.
    fn on_failure(&mut self, r: u32, cause: Cause, now: Nanos) -> Next {
        let (policy, st, client, rng) = self.decision(r);
        policy.on_failure(st, cause, now, client, || open_unit(rng.random::<u64>()))
    }

    /// Whether abandoned attempts of a request that ended are withdrawn from servers.
    /// The hedge delay balancer `b` applies at `now` (`None`: no copy), fixed or a
    /// percentile of its recent latencies.
    fn hedge_delay(&mut self, b: usize, now: Nanos) -> Option<Nanos> {
        let h = self.policy.hedge?;
        match self.hedge_windows.get_mut(b) {
            Some(w) => w.delay(now),
            None => Some(h.delay),
        }
    }

    fn cancels_losers(&self) -> bool {
        self.policy.timeouts.cancel || self.policy.hedge.is_some_and(|h| h.cancel_losers)
    }

    /// Balancer `b`'s detector takes a result of server `i` at `now`.
    fn detect(&mut self, b: usize, i: usize, ok: bool, now: Nanos) -> Option<Ejection> {
        let rng = &mut self.rng;
        self.outliers
            .get_mut(b)?
            .on_result(i, ok, now, &mut || open_unit(rng.random::<u64>()))
    }
}

/// Before the first request: slow start in every balancer, and every balancer's first
/// outlier sweep (Envoy), one interval in.
pub fn start<H: Host>(h: &mut H) {
    if let Some(ramp) = h.client().policy.slow_start {
        for b in 0..h.balancers() {
            h.set_slow_start(b, ramp);
        }
    }
    for b in 0..h.client().outliers.len() {
        if let Some(dt) = h.client().outliers[b].interval() {
            h.schedule(dt, Timer::Sweep, b as u32, 0);
        }
    }
}

/// Request `req` arrived through balancer `b` (handled at `now`; `measured`: it counts).
pub fn arrival<H: Host>(h: &mut H, now: Nanos, req: &Request, b: usize, measured: bool) {
    let c = h.client();
    let r = c.new_request(req, b as u32, measured);
    c.budgets[b].on_request(now);
    let generation = c.requests[r as usize].generation;
    let hedge = c.hedge_delay(b, now);
    send_attempt(h, now, r, false);
    if let Some(delay) = hedge {
        h.schedule(req.arrival + delay, Timer::Hedge, r, generation);
    }
}

/// Sends an attempt of request `r` (`extra`: a retry or hedge).
fn send_attempt<H: Host>(h: &mut H, now: Nanos, r: u32, extra: bool) {
    let c = h.client();
    let hedging = c.policy.hedge.is_some();
    let avoid = c.policy.retry.filter(|p| p.previous_hosts && extra);
    let req = &mut c.requests[r as usize];
    c.policy.on_send(&mut req.st);
    let (b, measured, key) = (req.balancer as usize, req.measured, req.key);
    // Routing borrows the host: the hosts tried are lent out meanwhile.
    let tried = std::mem::take(&mut req.sent);
    h.counted(now, None);
    let m = &mut h.metrics().client;
    m.attempts += u64::from(measured);
    if extra && hedging {
        m.hedges += u64::from(measured);
    } else if extra {
        m.retries += u64::from(measured);
    }
    let target = match avoid {
        Some(p) => {
            let avoid = |i: usize| tried.iter().any(|t| t.2 as usize == i);
            h.route(b, now, key, Some((&avoid, p.reselect)))
        }
        None => h.route(b, now, key, None),
    };
    let c = h.client();
    c.requests[r as usize].sent = tried;
    let Some(i) = target else {
        c.requests[r as usize].unroutable = true;
        let next = c.on_failure(r, Cause::Failed, now);
        return follow(h, now, r, next);
    };
    c.requests[r as usize].unroutable = false;
    if let Some(cb) = c.policy.circuit {
        let (requests, pending) = (c.in_flight[b], c.pending[b]);
        let o = Outstanding {
            requests,
            pending,
            would_wait: h.would_wait(i),
        };
        if cb.overflows(o) {
            // Refused by the balancer itself, at once: the strategy saw its pick, and
            // now a refusal; nothing reaches the server.
            h.not_sent(b, i, now);
            h.tell(b, i, Nanos::ZERO, Outcome::Rejected, now);
            h.metrics().client.overflowed += u64::from(measured);
            h.send_probes(b, now, measured);
            let c = h.client();
            let next = c.policy.on_overflow(&mut c.requests[r as usize].st);
            return follow(h, now, r, next);
        }
    }
    // Finagle's probe: a host that came back takes one request, then waits for it.
    let c = h.client();
    if c.outliers.get_mut(b).is_some_and(|d| d.on_dispatch(i)) {
        h.set_ejected(b, i, true);
    }
    let c = h.client();
    let a = c.new_attempt(r, i as u32, now, extra);
    let generation = c.attempts[a as usize].generation;
    let req = &mut c.requests[r as usize];
    req.sent.push((a, generation, i as u32));
    let (arrival, size) = (req.st.arrival, req.size);
    c.in_flight[b] += 1;
    c.extra_in_flight[b] += u32::from(extra);
    let id = c.job_id(a);
    let deadline = c.policy.timeouts.attempt_deadline(arrival, now);
    h.send_probes(b, now, measured);
    let d = Dispatch {
        request: r,
        attempt: (a, generation),
        id,
        balancer: b,
        server: i,
        arrival,
        key,
        size,
        extra,
        measured,
    };
    match h.dispatch(now, d) {
        Dispatched::Held { queued } => {
            let c = h.client();
            c.attempts[a as usize].at_server = true;
            if queued {
                c.attempts[a as usize].queued = true;
                c.pending[b] += 1;
            }
            if let Some(t) = deadline {
                h.schedule(t, Timer::Timeout, a, generation);
            }
        }
        Dispatched::Refused(cause) => attempt_failed(h, now, a, cause),
        Dispatched::Answering => return,
    }
    h.dispatched(i, now);
}

/// The client stops waiting for live attempt `a`, which failed by `cause` at `now`, and
/// decides what follows for its request.
pub fn attempt_failed<H: Host>(h: &mut H, now: Nanos, a: u32, cause: Cause) {
    let c = h.client();
    c.leave_pending(a);
    let att = &mut c.attempts[a as usize];
    debug_assert!(att.live);
    att.live = false;
    let (r, i, sent, extra) = (att.request, att.server as usize, att.sent, att.extra);
    let req = &c.requests[r as usize];
    let (b, measured) = (req.balancer as usize, req.measured);
    let outcome = match cause {
        Cause::Rejected => Outcome::Rejected,
        Cause::Failed | Cause::Timeout => Outcome::Failed,
    };
    h.tell(b, i, now.saturating_sub(sent), outcome, now);
    let c = h.client();
    c.in_flight[b] -= 1;
    c.extra_in_flight[b] -= u32::from(extra);
    // Outlier detection counts errors and local failures (timeouts), not refusals.
    let ejection = match cause {
        Cause::Failed | Cause::Timeout => c.detect(b, i, false, now),
        Cause::Rejected => None,
    };
    // gRPC's throttle counts the failures its policy would retry (every one for hedging).
    if c.policy.retry.is_none_or(|p| p.retries(cause)) {
        c.budgets[b].on_attempt_end(false);
    }
    let next = c.on_failure(r, cause, now);
    c.release_attempt(a);
    if cause == Cause::Timeout {
        h.metrics().client.abandoned += u64::from(measured);
    }
    if let Some(e) = ejection {
        ejected(h, b, i, e, now);
    }
    follow(h, now, r, next);
}

/// Attempt `a` left its server without an answer (the server crashed, or dropped it) at
/// `now`: if its client still waits for it, it fails by `cause` (and may be retried);
/// otherwise it is forgotten.
pub fn lost<H: Host>(h: &mut H, now: Nanos, a: u32, cause: Cause) {
    let c = h.client();
    c.attempts[a as usize].at_server = false;
    if c.attempts[a as usize].live {
        attempt_failed(h, now, a, cause);
    } else {
        c.leave_pending(a);
        c.release_attempt(a);
    }
}

/// The answer to live attempt `a` reached its client at `now`: its request is served.
/// `record` records the response time, after the balancer and the detector heard of the
/// answer and before the request's other attempts are abandoned.
pub fn served<H: Host>(h: &mut H, now: Nanos, a: u32, record: impl FnOnce(&mut H)) {
    let c = h.client();
    let att = &mut c.attempts[a as usize];
    debug_assert!(att.live);
    att.live = false;
    let (r, i, sent, extra) = (att.request, att.server as usize, att.sent, att.extra);
    let b = c.requests[r as usize].balancer as usize;
    h.tell(b, i, now.saturating_sub(sent), Outcome::Ok, now);
    let c = h.client();
    c.in_flight[b] -= 1;
    c.extra_in_flight[b] -= u32::from(extra);
    c.budgets[b].on_attempt_end(true);
    let back = c.detect(b, i, true, now);
    c.release_attempt(a);
    if let Some(w) = c.hedge_windows.get_mut(b) {
        // The request's latency, from its arrival: with a copy sent after d, the answer
        // comes after min(L1, d + L2), beyond d exactly when the first attempt's L1 is,
        // so the percentile tracked is the first attempts'.
        w.record(now, now - c.requests[r as usize].st.arrival);
    }
    if let Some(e) = back {
        ejected(h, b, i, e, now);
    }
    record(h);
    end_request(h, now, r, None);
}

/// Balancer `b`'s detector ejected server `i` at `now` (or, Finagle, took it back).
fn ejected<H: Host>(h: &mut H, b: usize, i: usize, e: Ejection, now: Nanos) {
    let Ejection::Until(until) = e else {
        return unejected(h, b, i, now);
    };
    h.set_ejected(b, i, true);
    let c = h.client();
    let (out, swept) = (c.outliers[b].ejected(), c.outliers[b].interval().is_some());
    let m = &mut h.metrics().client;
    m.ejections += 1;
    m.max_ejected = m.max_ejected.max(out);
    // Envoy's hosts come back at a sweep; nginx's and Finagle's when their time is over.
    if !swept {
        h.schedule(until, Timer::Uneject, b as u32, i as u32);
    }
}

/// Server `i` is back in balancer `b`'s view at `now` (as far as health checks allow).
/// nginx's slow start ramps a server back from a time out ("when the server becomes
/// available after a period of time it was considered unavailable"); Envoy's counts from
/// the last health-check pass, which an ejection does not change.
fn unejected<H: Host>(h: &mut H, b: usize, i: usize, now: Nanos) {
    let ramp = h
        .client()
        .policy
        .slow_start
        .is_some_and(|r| r.kind() == RampKind::Nginx);
    if h.set_ejected(b, i, false) && ramp {
        h.available(b, i, now);
    }
}

/// Carries out a policy decision for request `r`.
fn follow<H: Host>(h: &mut H, now: Nanos, r: u32, next: Next) {
    match next {
        Next::Send(Nanos::ZERO) => send_attempt(h, now, r, true),
        Next::Send(wait) => {
            let c = h.client();
            let req = &c.requests[r as usize];
            let generation = req.generation;
            // Held until the retry is sent (see `Client::extra_in_flight`).
            c.extra_in_flight[req.balancer as usize] += 1;
            h.schedule(now + wait, Timer::Retry, r, generation);
        }
        Next::Wait => {}
        Next::Fail(cause) => end_request(h, now, r, Some(cause)),
    }
}

/// Request `r` ends: served (`None`) or not, for `cause`. Its other live attempts are
/// abandoned, and withdrawn from their servers if the policy cancels.
fn end_request<H: Host>(h: &mut H, now: Nanos, r: u32, cause: Option<Cause>) {
    let c = h.client();
    let req = &mut c.requests[r as usize];
    debug_assert!(!req.st.done, "a request ends once");
    req.st.done = true;
    let (b, measured, unroutable, arrival) = (
        req.balancer as usize,
        req.measured,
        req.unroutable,
        req.st.arrival,
    );
    let sent = std::mem::take(&mut req.sent);
    let cancel = c.cancels_losers();
    h.counted(now, Some(cause));
    let m = h.metrics();
    if cause.is_some() && measured {
        m.phase_unserved(arrival);
    }
    let counted = u64::from(measured);
    match cause {
        None => {}
        Some(Cause::Timeout) => m.client.timed_out += counted,
        Some(Cause::Rejected) => m.rejected += counted,
        Some(Cause::Failed) if unroutable => m.unroutable += counted,
        Some(Cause::Failed) => m.failed += counted,
    }
    for &(a, generation, i) in &sent {
        let c = h.client();
        let att = &c.attempts[a as usize];
        if att.generation != generation || !att.live {
            continue;
        }
        c.leave_pending(a);
        let att = &mut c.attempts[a as usize];
        att.live = false;
        let (latency, extra) = (now.saturating_sub(att.sent), att.extra);
        h.tell(b, i as usize, latency, Outcome::Failed, now);
        let c = h.client();
        c.in_flight[b] -= 1;
        c.extra_in_flight[b] -= u32::from(extra);
        h.metrics().client.abandoned += counted;
        if cancel {
            withdraw(h, now, a);
        }
        h.client().release_attempt(a);
    }
    let c = h.client();
    c.requests[r as usize].sent = sent;
    c.free_request(r);
}

/// Withdraws attempt `a` from its server, if the server still holds it.
fn withdraw<H: Host>(h: &mut H, now: Nanos, a: u32) {
    let c = h.client();
    let att = &c.attempts[a as usize];
    if !att.at_server {
        return;
    }
    let (i, id) = (att.server as usize, c.job_id(a));
    if h.withdraw(i, id, now) {
        let c = h.client();
        c.attempts[a as usize].at_server = false;
        c.leave_pending(a);
    }
}

/// Policy timer `timer` for (`slot`, `generation`) fired at `now`.
pub fn timer<H: Host>(h: &mut H, now: Nanos, timer: Timer, slot: u32, generation: u32) {
    let c = h.client();
    match timer {
        Timer::Timeout => {
            let att = &c.attempts[slot as usize];
            if att.generation != generation || !att.live {
                return;
            }
            if c.policy.timeouts.cancel {
                withdraw(h, now, slot);
            }
            attempt_failed(h, now, slot, Cause::Timeout);
        }
        Timer::Retry => {
            let req = &c.requests[slot as usize];
            if req.generation != generation || req.st.done {
                return;
            }
            c.extra_in_flight[req.balancer as usize] -= 1;
            if c.policy.expired(&req.st, now) {
                end_request(h, now, slot, Some(Cause::Timeout));
            } else {
                send_attempt(h, now, slot, true);
            }
        }
        Timer::Sweep => {
            let b = slot as usize;
            let rng = &mut c.rng;
            let mut out = Vec::new();
            let back = c.outliers[b].sweep(now, &mut || open_unit(rng.random::<u64>()), &mut out);
            for i in back {
                unejected(h, b, i, now);
            }
            for (i, e, _) in out {
                ejected(h, b, i, e, now);
            }
            let c = h.client();
            let (more, dt) = (c.outliers[b].ejected() > 0, c.outliers[b].interval());
            // Sweeps go on while arrivals do, and after while a host is still out.
            if let Some(dt) = dt.filter(|_| now < h.arrivals_end() || more) {
                h.schedule(now + dt, Timer::Sweep, slot, generation);
            }
        }
        Timer::Uneject => {
            let (b, i) = (slot as usize, generation as usize);
            if c.outliers[b].on_timer(i, now) {
                unejected(h, b, i, now);
            }
        }
        Timer::Hedge => {
            let req = &c.requests[slot as usize];
            if req.generation != generation || req.st.done {
                return;
            }
            let (policy, st, client, _) = c.decision(slot);
            if !policy.on_hedge_timer(st, now, client) {
                return;
            }
            send_attempt(h, now, slot, true);
            let c = h.client();
            let req = &c.requests[slot as usize];
            if req.generation == generation && !req.st.done && req.st.sent < c.policy.max_attempts()
            {
                let b = req.balancer as usize;
                let Some(delay) = c.hedge_delay(b, now) else {
                    return;
                };
                h.schedule(now + delay, Timer::Hedge, slot, generation);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::rng::{Stream, stream_rng};

    /// A host of one balancer over `up.len()` servers that routes round robin and holds
    /// every attempt until the test answers it.
    struct Fake {
        c: Client,
        m: RunMetrics,
        timers: Vec<(Nanos, u64, Timer, u32, u32)>,
        order: u64,
        up: Vec<bool>,
        next: usize,
        held: Vec<(u64, usize)>,
        told: Vec<(usize, Outcome)>,
        withdrawn: Vec<u64>,
        served: u64,
    }

    impl Host for Fake {
        fn client(&mut self) -> &mut Client {
            &mut self.c
        }
        fn metrics(&mut self) -> &mut RunMetrics {
            &mut self.m
        }
        fn schedule(&mut self, at: Nanos, timer: Timer, slot: u32, generation: u32) {
            self.order += 1;
            self.timers.push((at, self.order, timer, slot, generation));
        }
        fn route(&mut self, _b: usize, _now: Nanos, _key: u64, avoid: Avoid<'_>) -> Option<usize> {
            let n = self.up.len();
            let i = (0..n)
                .map(|k| (self.next + k) % n)
                .find(|&i| self.up[i] && !avoid.is_some_and(|(f, _)| f(i)))?;
            self.next = i + 1;
            Some(i)
        }
        fn send_probes(&mut self, _b: usize, _now: Nanos, _measured: bool) {}
        fn would_wait(&self, _i: usize) -> bool {
            false
        }
        fn dispatch(&mut self, _now: Nanos, d: Dispatch) -> Dispatched {
            self.held.push((d.id, d.server));
            Dispatched::Held { queued: false }
        }
        fn tell(&mut self, _b: usize, i: usize, _latency: Nanos, outcome: Outcome, _now: Nanos) {
            self.told.push((i, outcome));
        }
        fn set_ejected(&mut self, _b: usize, i: usize, out: bool) -> bool {
            self.up[i] = !out;
            !out
        }
        fn available(&mut self, _b: usize, _i: usize, _now: Nanos) {}
        fn balancers(&self) -> usize {
            1
        }
        fn set_slow_start(&mut self, _b: usize, _ramp: Ramp) {}
        fn withdraw(&mut self, _i: usize, id: u64, _now: Nanos) -> bool {
            let Some(k) = self.held.iter().position(|h| h.0 == id) else {
                return false;
            };
            self.held.remove(k);
            self.withdrawn.push(id);
            true
        }
        fn arrivals_end(&self) -> Nanos {
            Nanos::from_secs_f64(1.0)
        }
    }

    fn fake(policy: &str, servers: usize) -> Fake {
        let spec: PolicySpec = toml::from_str(policy).unwrap();
        spec.check().unwrap();
        let workers = vec![1; servers];
        let mut f = Fake {
            c: Client::new(&spec, 1, servers, stream_rng(1, 0, Stream::Policy, 0)),
            m: RunMetrics::new(&workers, Nanos::ZERO, Nanos::from_secs_f64(1e6)),
            timers: Vec::new(),
            order: 0,
            up: vec![true; servers],
            next: 0,
            held: Vec::new(),
            told: Vec::new(),
            withdrawn: Vec::new(),
            served: 0,
        };
        start(&mut f);
        f
    }

    fn arrive(f: &mut Fake, id: u64, now: Nanos) {
        let req = Request {
            id,
            arrival: now,
            size: Size::Quantile(0.5),
            key: id,
        };
        arrival(f, now, &req, 0, true);
    }

    /// The server holding `held[k]` answers at `now`, served or failed.
    fn answer(f: &mut Fake, k: usize, ok: bool, now: Nanos) {
        let (id, _) = f.held.remove(k);
        let a = f.c.attempt_of(id).expect("a held attempt keeps its slot");
        if !ok {
            return lost(f, now, a, Cause::Failed);
        }
        f.c.off_server(a);
        if f.c.attempt(a).live {
            served(f, now, a, |f| f.served += 1);
        } else {
            f.c.release_attempt(a);
        }
    }

    /// Fires the earliest timer, at `now` or its time if later; returns that time.
    fn fire(f: &mut Fake, now: Nanos) -> Option<Nanos> {
        let k = (0..f.timers.len()).min_by_key(|&k| (f.timers[k].0, f.timers[k].1))?;
        let (at, _, t, slot, generation) = f.timers.remove(k);
        let at = at.max(now);
        timer(f, at, t, slot, generation);
        Some(at)
    }

    fn ms(v: u64) -> Nanos {
        Nanos(v * 1_000_000)
    }

    #[test]
    fn a_failed_attempt_is_retried_on_another_host_and_the_request_ends_once() {
        let mut f = fake("[retry]\nmax_attempts = 3\nprevious_hosts = true\n", 2);
        arrive(&mut f, 0, Nanos::ZERO);
        assert_eq!(f.held.len(), 1);
        assert_eq!(f.held[0].1, 0);
        answer(&mut f, 0, false, ms(1));
        assert!(f.held.is_empty(), "the retry waits out its back-off");
        fire(&mut f, ms(1)).expect("a retry timer");
        assert_eq!(f.held[0].1, 1, "previous_hosts: the retry avoids server 0");
        answer(&mut f, 0, true, ms(60));
        assert_eq!(f.told, vec![(0, Outcome::Failed), (1, Outcome::Ok)]);
        assert_eq!((f.m.client.attempts, f.m.client.retries), (2, 1));
        assert_eq!((f.served, f.m.failed, f.c.open()), (1, 0, 0));
        assert_eq!(f.c.in_flight[0] + f.c.extra_in_flight[0], 0);
    }

    #[test]
    fn a_timed_out_attempt_ends_its_request_and_its_late_answer_is_wasted() {
        let mut f = fake("per_try_timeout = 0.1\n", 1);
        arrive(&mut f, 0, Nanos::ZERO);
        let (id, _) = f.held[0];
        assert_eq!(fire(&mut f, Nanos::ZERO), Some(ms(100)));
        assert_eq!((f.m.client.timed_out, f.m.client.abandoned), (1, 1));
        assert_eq!(f.c.open(), 0);
        // The server still holds it: its slot is kept until the answer comes.
        answer(&mut f, 0, true, ms(150));
        assert_eq!(f.served, 0);
        assert_eq!(f.c.attempt_of(id), None, "freed, under a new generation");
        arrive(&mut f, 1, ms(200));
        assert_ne!(f.held[0].0, id, "the reused slot has another id");
    }

    #[test]
    fn the_first_answer_of_a_hedged_request_wins_and_the_loser_is_withdrawn() {
        let mut f = fake("[hedge]\ndelay = 0.01\nmax_attempts = 2\n", 2);
        arrive(&mut f, 0, Nanos::ZERO);
        assert_eq!(fire(&mut f, Nanos::ZERO), Some(ms(10)));
        assert_eq!(f.held.len(), 2);
        let loser = f.held[0].0;
        answer(&mut f, 1, true, ms(12));
        assert_eq!(f.withdrawn, vec![loser], "cancel_losers is the default");
        assert!(f.held.is_empty());
        assert_eq!(
            (f.m.client.hedges, f.m.client.abandoned, f.served),
            (1, 1, 1)
        );
        assert!(f.timers.is_empty(), "no third copy after max_attempts");
    }

    /// Policies the property below drives.
    const POLICIES: [&str; 7] = [
        "[retry]\nmax_attempts = 3\n",
        "per_try_timeout = 0.05\ntimeout = 0.2\n[retry]\nmax_attempts = 4\nprevious_hosts = true\n[budget]\nkind = \"grpc\"\n",
        "timeout = 0.3\n[hedge]\ndelay = 0.01\nmax_attempts = 3\n",
        "timeout = 0.3\n[hedge]\ndelay = 0.01\ncancel_losers = false\n",
        "per_try_timeout = 0.05\ncancel = true\n[retry]\nmax_attempts = 2\n[outlier]\nkind = \"nginx\"\n",
        "[retry]\n[outlier]\nkind = \"finagle\"\nconsecutive_failures = 1\n",
        "[retry]\nmax_attempts = 3\n[circuit_breakers]\nmax_requests = 2\n[outlier]\nkind = \"envoy\"\nconsecutive_5xx = 1\ninterval = 0.05\n",
    ];

    proptest! {
        /// Whatever answers, failures and timers come in whatever order, every request
        /// ends exactly once, and nothing stays counted in flight.
        #[test]
        fn every_request_ends_exactly_once(
            policy in 0..POLICIES.len(),
            servers in 1usize..4,
            ops in proptest::collection::vec((0u8..4, 0usize..8, 0u64..30), 1..120),
        ) {
            let mut f = fake(POLICIES[policy], servers);
            let (mut now, mut arrived) = (Nanos::ZERO, 0u64);
            for (op, k, dt) in ops {
                now += ms(dt);
                match op {
                    0 => {
                        arrive(&mut f, arrived, now);
                        arrived += 1;
                    }
                    1 | 2 if !f.held.is_empty() => {
                        let k = k % f.held.len();
                        answer(&mut f, k, op == 1, now);
                    }
                    _ => {
                        if let Some(at) = fire(&mut f, now) {
                            now = at;
                        }
                    }
                }
            }
            // Drain: servers answer, timers fire, until nothing is left.
            for _ in 0..100_000 {
                if !f.held.is_empty() {
                    answer(&mut f, 0, true, now);
                } else if let Some(at) = fire(&mut f, now) {
                    now = at;
                } else {
                    break;
                }
            }
            prop_assert!(f.held.is_empty() && f.timers.is_empty(), "drained");
            let m = &f.m;
            let ended = f.served + m.failed + m.rejected + m.unroutable + m.client.timed_out;
            prop_assert_eq!(ended, arrived);
            prop_assert_eq!(f.c.open(), 0);
            prop_assert_eq!(f.c.in_flight[0], 0);
            prop_assert_eq!(f.c.extra_in_flight[0], 0);
            prop_assert_eq!(f.c.pending[0], 0);
            prop_assert_eq!(f.c.free_attempts.len(), f.c.attempts.len(), "every attempt freed");
        }
    }
}
