//! Client policies in the engine: a request becomes one or more attempts (retries,
//! hedges), each routed by the request's balancer and held by a server as a [`Job`],
//! under the timeouts and budget of [`crate::policy`].
//!
//! Bookkeeping that keeps "every request ends exactly once" true:
//! - a request slot lives from arrival until it ends (served, rejected, unroutable,
//!   failed or timed out), and its generation changes when it is freed, so a timer of an
//!   ended request finds a different generation and does nothing;
//! - an attempt is *live* while its client waits for it, and *at the server* while a
//!   server holds it; its slot is freed only when it is neither, and its job id carries
//!   the slot's generation, so that a completion scheduled before a cancellation never
//!   finishes a later attempt reusing the slot;
//! - when a request ends, its other live attempts are abandoned (the balancer is told
//!   at once) and, if the policy cancels, withdrawn from their servers; otherwise their
//!   servers finish them and the time is counted as wasted work.
//!
//! Retries and hedges are fresh executions: their service-time quantile is drawn anew
//! from the policy stream ([`Stream::Policy`](crate::rng::Stream)), as when the time a
//! request takes comes from the server (garbage collection, caches, contention) more than
//! from the request. Trace-driven requests keep their recorded work.

use rand::RngExt;

use super::{Event, Sim};
use crate::policy::{
    Budget, Cause, ClientState, Detector, Ejection, Next, Outstanding, Policy, PolicySpec,
    RequestState,
};
use crate::rng::SimRng;
use crate::sim::server::{Admission, Job};
use crate::strategy::{Outcome, RampKind};
use crate::time::Nanos;
use crate::workload::dist::open_unit;
use crate::workload::{Request, Size};

/// What a policy timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    /// An attempt's timeout (per try, or the request's deadline).
    Timeout,
    /// A retry's back-off is over.
    Retry,
    /// A hedge's delay is over.
    Hedge,
    /// Envoy's outlier sweep of balancer `slot`.
    Sweep,
    /// nginx: server `generation`'s time out of balancer `slot` is over.
    Uneject,
}

/// One request under a policy.
#[derive(Debug)]
struct Req {
    st: RequestState,
    key: u64,
    size: Size,
    balancer: u32,
    measured: bool,
    generation: u32,
    /// Whether the last attempt found no server up.
    unroutable: bool,
    /// Attempts sent: (slot, generation, server).
    sent: Vec<(u32, u32, u32)>,
}

/// One attempt.
#[derive(Debug)]
struct Attempt {
    request: u32,
    server: u32,
    sent: Nanos,
    /// A retry or hedge (counted in the budget's "retries in flight").
    extra: bool,
    /// The client waits for it.
    live: bool,
    /// A server holds it.
    at_server: bool,
    /// It waits in its server's queue (pending, for the circuit breakers).
    queued: bool,
    generation: u32,
}

/// Every balancer's client-side state under one policy.
pub(super) struct Client {
    policy: Policy,
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
    /// Per server, whether health checks see it up (ejection hides it on top of that).
    healthy: Vec<bool>,
    /// Per balancer, its live attempts waiting in a server queue (Envoy's pending
    /// requests, read by the circuit breakers).
    pending: Vec<u32>,
    /// Per balancer, its recent latencies when the hedge delay is a percentile of them
    /// (empty otherwise).
    hedge_windows: Vec<crate::policy::LatencyWindow>,
}

impl Client {
    pub(super) fn new(spec: &PolicySpec, balancers: usize, servers: usize, rng: SimRng) -> Client {
        let policy = Policy::from_spec(spec);
        Client {
            outliers: match &policy.outlier {
                Some(o) => (0..balancers).map(|_| Detector::new(o, servers)).collect(),
                None => Vec::new(),
            },
            healthy: vec![true; servers],
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
        }
    }

    fn new_request(&mut self, now: Nanos, req: &Request, balancer: u32, measured: bool) -> u32 {
        let state = |generation, sent| Req {
            st: RequestState::new(now),
            key: req.key,
            size: req.size,
            balancer,
            measured,
            generation,
            unroutable: false,
            sent,
        };
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
    }

    fn new_attempt(&mut self, request: u32, server: u32, sent: Nanos, extra: bool) -> u32 {
        let attempt = |generation| Attempt {
            request,
            server,
            sent,
            extra,
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
    fn release_attempt(&mut self, a: u32) {
        let att = &mut self.attempts[a as usize];
        if !att.live && !att.at_server {
            att.generation = att.generation.wrapping_add(1);
            self.free_attempts.push(a);
        }
    }

    /// Job id of attempt `a`: slot and generation, unique among the jobs of a run.
    fn job_id(&self, a: u32) -> u64 {
        u64::from(self.attempts[a as usize].generation) << 32 | u64::from(a)
    }

    /// The attempt a job id names, if it is still that attempt.
    fn attempt_of(&self, id: u64) -> Option<u32> {
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
    pub(super) fn started_from_queue(&mut self, id: u64) {
        if let Some(a) = self.attempt_of(id) {
            self.leave_pending(a);
        }
    }

    /// Request `r`'s state with what a policy decision reads of its balancer's client
    /// (budget, attempts in flight) and the policy stream: split borrows of one client.
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

    /// The hedge delay balancer `b` applies at `now` (`None`: no copy), fixed or a
    /// percentile of its recent latencies.
    fn hedge_delay(&mut self, b: usize, now: Nanos) -> Option<Nanos> {
        let h = self.policy.hedge?;
        match self.hedge_windows.get_mut(b) {
            Some(w) => w.delay(now),
            None => Some(h.delay),
        }
    }

    /// Whether abandoned attempts of a request that ended are withdrawn from servers.
    fn cancels_losers(&self) -> bool {
        self.policy.timeouts.cancel || self.policy.hedge.is_some_and(|h| h.cancel_losers)
    }
}

impl Sim<'_> {
    fn client(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("called on the policy path only")
    }

    /// An arrival under a client policy.
    pub(super) fn arrival_with_policy(&mut self, now: Nanos, req: Request) {
        let measured = self.measured(now);
        self.m.arrived += u64::from(measured);
        if measured {
            self.m.phase_arrived(now);
        }
        let b = self.pick_balancer();
        let c = self.client();
        let r = c.new_request(now, &req, b as u32, measured);
        c.budgets[b].on_request(now);
        let generation = c.requests[r as usize].generation;
        let hedge = c.hedge_delay(b, now);
        self.send_attempt(now, r, false);
        if let Some(delay) = hedge {
            self.events.push(
                now + delay,
                Event::Policy {
                    timer: Timer::Hedge,
                    slot: r,
                    generation,
                },
            );
        }
    }

    /// Sends an attempt of request `r` (`extra`: a retry or hedge).
    fn send_attempt(&mut self, now: Nanos, r: u32, extra: bool) {
        let Some(c) = self.client.as_mut() else {
            return;
        };
        let hedging = c.policy.hedge.is_some();
        let req = &mut c.requests[r as usize];
        c.policy.on_send(&mut req.st);
        let (b, measured) = (req.balancer as usize, req.measured);
        self.m.client.attempts += u64::from(measured);
        if extra && hedging {
            self.m.client.hedges += u64::from(measured);
        } else if extra {
            self.m.client.retries += u64::from(measured);
        }
        let avoid = c.policy.retry.filter(|p| p.previous_hosts && extra);
        let target = match avoid {
            Some(p) => {
                let tried = &req.sent;
                self.balancers[b].route_avoiding(
                    now,
                    req.key,
                    self.loads.as_ref(),
                    |i| tried.iter().any(|t| t.2 as usize == i),
                    p.reselect,
                )
            }
            None => self.balancers[b].route_with(now, req.key, self.loads.as_ref()),
        };
        let Some(i) = target else {
            req.unroutable = true;
            let next = c.on_failure(r, Cause::Failed, now);
            return self.follow(now, r, next);
        };
        req.unroutable = false;
        if let Some(cb) = c.policy.circuit {
            let server = &self.servers[i];
            let o = Outstanding {
                requests: c.in_flight[b],
                pending: c.pending[b],
                would_wait: !server.down && server.busy() >= server.workers,
            };
            if cb.overflows(o) {
                // Refused by the balancer itself, at once: the strategy saw its pick, and
                // now a refusal; nothing reaches the server.
                self.balancers[b].complete(i, Nanos::ZERO, Outcome::Rejected, now);
                self.m.client.overflowed += u64::from(measured);
                self.send_probes(b, now);
                let c = self.client.as_mut().expect("policy path");
                let next = c.policy.on_overflow(&mut c.requests[r as usize].st);
                return self.follow(now, r, next);
            }
        }
        // Finagle's probe: a host that came back takes one request, then waits for it.
        if let Some(d) = c.outliers.get_mut(b)
            && d.on_dispatch(i)
        {
            self.balancers[b].set_up(i, false);
        }
        let (arrival, key_size) = (req.st.arrival, req.size);
        let a = c.new_attempt(r, i as u32, now, extra);
        let generation = c.attempts[a as usize].generation;
        c.requests[r as usize].sent.push((a, generation, i as u32));
        c.in_flight[b] += 1;
        c.extra_in_flight[b] += u32::from(extra);
        self.send_probes(b, now);
        if let Some(rejected) = self.answers_error(i) {
            return self.send_error(now, i, b, measured, rejected, Some((a, generation)));
        }
        let c = self.client.as_mut().expect("policy path");
        let size = match key_size {
            Size::Quantile(_) if extra => Size::Quantile(open_unit(c.rng.random::<u64>())),
            s => s,
        };
        let id = c.job_id(a);
        let deadline = c.policy.timeouts.attempt_deadline(arrival, now);
        let work = size.work(&self.dists[self.servers[i].group]);
        let job = Job::sent(id, arrival, work, b as u32, measured, now);
        let admission = self.offer(now, i, job);
        match admission {
            Admission::Started(_) | Admission::Queued => {
                if let Admission::Started(service) = admission
                    && let Some(s) = &mut self.signals
                {
                    s.started(i, service);
                }
                let c = self.client();
                c.attempts[a as usize].at_server = true;
                if admission == Admission::Queued {
                    c.attempts[a as usize].queued = true;
                    c.pending[b] += 1;
                }
                if let Some(t) = deadline {
                    self.events.push(
                        t,
                        Event::Policy {
                            timer: Timer::Timeout,
                            slot: a,
                            generation,
                        },
                    );
                }
            }
            Admission::Rejected => self.attempt_failed(now, a, Cause::Rejected),
            Admission::Down => self.attempt_failed(now, a, Cause::Failed),
        }
        if self.exact_reports {
            self.publish_load(i, now);
        }
    }

    /// The client stops waiting for live attempt `a`, which failed by `cause`, and decides
    /// what follows for its request.
    fn attempt_failed(&mut self, now: Nanos, a: u32, cause: Cause) {
        let c = self.client.as_mut().expect("policy path");
        c.leave_pending(a);
        let att = &mut c.attempts[a as usize];
        debug_assert!(att.live);
        att.live = false;
        let (r, i, sent, extra) = (att.request, att.server as usize, att.sent, att.extra);
        let req = &mut c.requests[r as usize];
        let b = req.balancer as usize;
        let outcome = match cause {
            Cause::Rejected => Outcome::Rejected,
            Cause::Failed | Cause::Timeout => Outcome::Failed,
        };
        self.balancers[b].complete(i, now - sent, outcome, now);
        c.in_flight[b] -= 1;
        c.extra_in_flight[b] -= u32::from(extra);
        // Outlier detection counts errors and local failures (timeouts), not refusals.
        let rng = &mut c.rng;
        let ejection = match (cause, c.outliers.get_mut(b)) {
            (Cause::Failed | Cause::Timeout, Some(d)) => {
                d.on_result(i, false, now, &mut || open_unit(rng.random::<u64>()))
            }
            _ => None,
        };
        if cause == Cause::Timeout {
            self.m.client.abandoned += u64::from(req.measured);
        }
        // gRPC's throttle counts the failures its policy would retry (every one for hedging).
        if c.policy.retry.is_none_or(|p| p.retries(cause)) {
            c.budgets[b].on_attempt_end(false);
        }
        let next = c.on_failure(r, cause, now);
        c.release_attempt(a);
        if let Some(e) = ejection {
            self.ejected(b, i, e, now);
        }
        self.follow(now, r, next);
    }

    /// Balancer `b`'s detector ejected server `i` at `now` (or, Finagle, took it back).
    fn ejected(&mut self, b: usize, i: usize, e: Ejection, now: Nanos) {
        let Ejection::Until(until) = e else {
            return self.unejected(b, i, now);
        };
        self.balancers[b].set_up(i, false);
        let c = self.client.as_mut().expect("policy path");
        self.m.client.ejections += 1;
        self.m.client.max_ejected = self.m.client.max_ejected.max(c.outliers[b].ejected());
        if c.outliers[b].interval().is_none() {
            self.events.push(
                until,
                Event::Policy {
                    timer: Timer::Uneject,
                    slot: b as u32,
                    generation: i as u32,
                },
            );
        }
    }

    /// Server `i` is back in balancer `b`'s view at `now` (as far as health checks
    /// allow). nginx's slow start ramps a server back from a time out ("when the server
    /// becomes available after a period of time it was considered unavailable"); Envoy's
    /// counts from the last health-check pass, which an ejection does not change.
    fn unejected(&mut self, b: usize, i: usize, now: Nanos) {
        let c = self.client();
        let up = c.healthy[i];
        let ramp = c
            .policy
            .slow_start
            .is_some_and(|r| r.kind() == RampKind::Nginx);
        self.balancers[b].set_up(i, up);
        if up && ramp {
            self.balancers[b].available(i, now);
        }
    }

    /// Health checks see server `i` up or down at `now`: balancers that ejected it keep
    /// it out. A server that comes back up starts its slow start, if any, in every
    /// balancer (Envoy: from the health-check pass, even while ejected).
    pub(super) fn health(&mut self, i: usize, up: bool, now: Nanos) {
        let c = self.client.as_mut().expect("policy path");
        let back = up && !c.healthy[i];
        c.healthy[i] = up;
        let ramp = c.policy.slow_start.is_some();
        for (b, balancer) in self.balancers.iter_mut().enumerate() {
            let ejected = c.outliers.get(b).is_some_and(|d| d.is_ejected(i));
            balancer.set_up(i, up && !ejected);
            if back && ramp {
                balancer.available(i, now);
            }
        }
    }

    /// Sets up what a policy needs in the balancers before the run: slow start in every
    /// balancer (validation made sure the strategy applies it), and every balancer's first
    /// outlier sweep (Envoy), one interval in.
    pub(super) fn start_policy(&mut self) {
        let Some(c) = self.client.as_ref() else {
            return;
        };
        if let Some(ramp) = c.policy.slow_start {
            for b in &mut self.balancers {
                let applied = b.set_slow_start(ramp);
                debug_assert!(applied, "validation refuses slow start for this strategy");
            }
        }
        for (b, d) in c.outliers.iter().enumerate() {
            if let Some(dt) = d.interval() {
                self.events.push(
                    dt,
                    Event::Policy {
                        timer: Timer::Sweep,
                        slot: b as u32,
                        generation: 0,
                    },
                );
            }
        }
    }

    /// Carries out a policy decision for request `r`.
    fn follow(&mut self, now: Nanos, r: u32, next: Next) {
        match next {
            Next::Send(Nanos::ZERO) => self.send_attempt(now, r, true),
            Next::Send(wait) => {
                let c = self.client();
                let generation = c.requests[r as usize].generation;
                // Held until the retry is sent (see `Client::extra_in_flight`).
                c.extra_in_flight[c.requests[r as usize].balancer as usize] += 1;
                self.events.push(
                    now + wait,
                    Event::Policy {
                        timer: Timer::Retry,
                        slot: r,
                        generation,
                    },
                );
            }
            Next::Wait => {}
            Next::Fail(cause) => self.end_request(now, r, Some(cause)),
        }
    }

    /// Request `r` ends: served (`None`) or not, for `cause`. Its other live attempts are
    /// abandoned, and withdrawn from their servers if the policy cancels.
    fn end_request(&mut self, now: Nanos, r: u32, cause: Option<Cause>) {
        let c = self.client.as_mut().expect("policy path");
        let req = &mut c.requests[r as usize];
        debug_assert!(!req.st.done, "a request ends once");
        req.st.done = true;
        let (b, measured) = (req.balancer as usize, u64::from(req.measured));
        if cause.is_some() && req.measured {
            self.m.phase_unserved(req.st.arrival);
        }
        match cause {
            None => {}
            Some(Cause::Timeout) => self.m.client.timed_out += measured,
            Some(Cause::Rejected) => self.m.rejected += measured,
            Some(Cause::Failed) if req.unroutable => self.m.unroutable += measured,
            Some(Cause::Failed) => self.m.failed += measured,
        }
        let sent = std::mem::take(&mut req.sent);
        let cancel = c.cancels_losers();
        for &(a, generation, i) in &sent {
            let c = self.client.as_mut().expect("policy path");
            let att = &c.attempts[a as usize];
            if att.generation != generation || !att.live {
                continue;
            }
            c.leave_pending(a);
            let att = &mut c.attempts[a as usize];
            att.live = false;
            self.balancers[b].complete(i as usize, now - att.sent, Outcome::Failed, now);
            c.in_flight[b] -= 1;
            c.extra_in_flight[b] -= u32::from(att.extra);
            self.m.client.abandoned += measured;
            if cancel {
                self.cancel_at_server(now, a);
            }
            self.client().release_attempt(a);
        }
        let c = self.client();
        c.requests[r as usize].sent = sent;
        c.free_request(r);
    }

    /// Withdraws attempt `a` from its server, if the server still holds it.
    fn cancel_at_server(&mut self, now: Nanos, a: u32) {
        let c = self.client.as_mut().expect("policy path");
        let id = c.job_id(a);
        let att = &mut c.attempts[a as usize];
        if !att.at_server {
            return;
        }
        let i = att.server as usize;
        let server = &mut self.servers[i];
        let (busy, queued) = (server.busy(), server.queued());
        let Some((job, in_service, next)) = server.cancel(id, now) else {
            return;
        };
        att.at_server = false;
        c.leave_pending(a);
        if let Some((next, _)) = &next {
            c.started_from_queue(next.id);
        }
        self.m.servers[i].advance(now, busy, queued, self.from, self.to);
        if let Some((next, service)) = next {
            self.events.push(
                now + service,
                Event::Done {
                    server: i as u32,
                    job: next.id,
                },
            );
        }
        if job.measured {
            self.m.client.cancelled += 1;
            if in_service {
                let spent = (now - job.start).as_secs_f64();
                self.m.client.work += spent;
                self.m.client.wasted += spent;
            }
        }
        self.shed_jobs(now, i);
        if self.members.is_some() {
            self.drained_if_empty(now, i);
        }
        if self.exact_reports {
            self.publish_load(i, now);
        }
    }

    /// Server `i`'s admission control dropped job `id` (see `shed_jobs`): the attempt is
    /// refused at once, if its client still waits for it.
    pub(super) fn attempt_shed(&mut self, now: Nanos, id: u64) {
        let c = self.client();
        let Some(a) = c.attempt_of(id) else {
            return;
        };
        c.attempts[a as usize].at_server = false;
        c.leave_pending(a);
        if c.attempts[a as usize].live {
            self.attempt_failed(now, a, Cause::Rejected);
        } else {
            c.release_attempt(a);
        }
    }

    /// Server `i` finished job `id` (policy path).
    pub(super) fn attempt_done(&mut self, now: Nanos, i: usize, id: u64) {
        // A completion scheduled before a crash or a cancellation finds nothing.
        let Some(job) = self.finish_job(now, i, id) else {
            return;
        };
        let service = (now - job.start).as_secs_f64();
        if job.measured {
            self.m.client.work += service;
        }
        let c = self.client.as_mut().expect("policy path");
        let a = c
            .attempt_of(id)
            .expect("a job held by a server is a known attempt");
        let att = &mut c.attempts[a as usize];
        att.at_server = false;
        let delay = self.servers[i].delay;
        if delay != Nanos::ZERO && att.live {
            self.delay_reply(now, i, job, delay);
        } else {
            self.attempt_answered(now, i, job);
        }
        if self.exact_reports {
            self.publish_load(i, now);
        }
    }

    /// The answer to attempt `job`, served by server `i`, reaches its client: the request
    /// is served if the client still waits for it; otherwise the work was wasted.
    pub(super) fn attempt_answered(&mut self, now: Nanos, i: usize, job: Job) {
        let service = (job.end - job.start).as_secs_f64();
        let extra_latency = self.extra_latency.get(i).copied().unwrap_or_default();
        let c = self.client.as_mut().expect("policy path");
        // An answer delayed on the wire may find its attempt given up (and its slot reused).
        let Some(a) = c.attempt_of(job.id) else {
            if job.measured {
                self.m.client.wasted += service;
            }
            return;
        };
        let att = &mut c.attempts[a as usize];
        if att.live {
            att.live = false;
            let (r, sent, extra) = (att.request, att.sent, att.extra);
            let req = &c.requests[r as usize];
            let b = req.balancer as usize;
            let arrival = req.st.arrival;
            // The load carried on the reply reaches the balancer before the completion,
            // as on the one-attempt path.
            if let Some(s) = self.signals.as_ref().filter(|s| s.reply_loads) {
                let server = &self.servers[i];
                let load = s.load(
                    i,
                    server.workers,
                    server.busy(),
                    server.queued(),
                    Some(job.end - job.start),
                );
                self.balancers[b].reply_load(i, &load, now);
            }
            self.balancers[b].complete(i, now - sent, Outcome::Ok, now);
            if let Some(w) = c.hedge_windows.get_mut(b) {
                // The request's latency, from its arrival: with a copy sent after d, the
                // answer comes after min(L1, d + L2), beyond d exactly when the first
                // attempt's L1 is, so the percentile tracked is the first attempts'.
                w.record(now, now - req.st.arrival);
            }
            c.in_flight[b] -= 1;
            c.extra_in_flight[b] -= u32::from(extra);
            c.budgets[b].on_attempt_end(true);
            let rng = &mut c.rng;
            let back = c
                .outliers
                .get_mut(b)
                .and_then(|d| d.on_result(i, true, now, &mut || open_unit(rng.random::<u64>())));
            c.release_attempt(a);
            if let Some(e) = back {
                self.ejected(b, i, e, now);
            }
            let latency = now - arrival + extra_latency;
            if job.measured {
                self.m.record_latency(latency);
                self.m.record_service(i, arrival, latency, job.start - sent);
            }
            self.end_request(now, r, None);
        } else {
            if job.measured {
                self.m.client.wasted += service;
            }
            c.release_attempt(a);
        }
    }

    /// An error answer to attempt `attempt` reached its client (if the client still
    /// waits for it: it may have timed out meanwhile).
    pub(super) fn attempt_error(
        &mut self,
        now: Nanos,
        attempt: Option<(u32, u32)>,
        rejected: bool,
    ) {
        let Some((a, generation)) = attempt else {
            return;
        };
        let att = &self.client().attempts[a as usize];
        if att.generation != generation || !att.live {
            return;
        }
        let cause = if rejected {
            Cause::Rejected
        } else {
            Cause::Failed
        };
        self.attempt_failed(now, a, cause);
    }

    /// Attempts held by server `i` when it crashed: each live one fails (and may be
    /// retried); the others are forgotten.
    pub(super) fn attempts_lost(&mut self, now: Nanos, _i: usize, lost: Vec<Job>) {
        for job in lost {
            let c = self.client();
            let Some(a) = c.attempt_of(job.id) else {
                continue;
            };
            c.attempts[a as usize].at_server = false;
            if c.attempts[a as usize].live {
                self.attempt_failed(now, a, Cause::Failed);
            } else {
                c.release_attempt(a);
            }
        }
    }

    /// A policy timer fired.
    pub(super) fn policy_timer(&mut self, now: Nanos, timer: Timer, slot: u32, generation: u32) {
        let c = self.client();
        match timer {
            Timer::Timeout => {
                let att = &c.attempts[slot as usize];
                if att.generation != generation || !att.live {
                    return;
                }
                if c.policy.timeouts.cancel {
                    self.cancel_at_server(now, slot);
                }
                self.attempt_failed(now, slot, Cause::Timeout);
            }
            Timer::Retry => {
                let req = &c.requests[slot as usize];
                if req.generation != generation || req.st.done {
                    return;
                }
                c.extra_in_flight[req.balancer as usize] -= 1;
                if c.policy.expired(&req.st, now) {
                    self.end_request(now, slot, Some(Cause::Timeout));
                } else {
                    self.send_attempt(now, slot, true);
                }
            }
            Timer::Sweep => {
                let b = slot as usize;
                let rng = &mut c.rng;
                let mut out = Vec::new();
                let back =
                    c.outliers[b].sweep(now, &mut || open_unit(rng.random::<u64>()), &mut out);
                for i in back {
                    self.unejected(b, i, now);
                }
                for (i, e, _) in out {
                    self.ejected(b, i, e, now);
                }
                let c = self.client();
                let (more, dt) = (c.outliers[b].ejected() > 0, c.outliers[b].interval());
                // Sweeps go on while arrivals do, and after while a host is still out.
                if let Some(dt) = dt.filter(|_| now < self.to || more) {
                    self.events.push(
                        now + dt,
                        Event::Policy {
                            timer: Timer::Sweep,
                            slot,
                            generation,
                        },
                    );
                }
            }
            Timer::Uneject => {
                let (b, i) = (slot as usize, generation as usize);
                if c.outliers[b].on_timer(i, now) {
                    self.unejected(b, i, now);
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
                self.send_attempt(now, slot, true);
                let c = self.client();
                let req = &c.requests[slot as usize];
                if req.generation == generation
                    && !req.st.done
                    && req.st.sent < c.policy.max_attempts()
                {
                    let b = req.balancer as usize;
                    let Some(delay) = c.hedge_delay(b, now) else {
                        return;
                    };
                    self.events.push(
                        now + delay,
                        Event::Policy {
                            timer: Timer::Hedge,
                            slot,
                            generation,
                        },
                    );
                }
            }
        }
    }
}
