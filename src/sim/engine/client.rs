//! Client policies in the engine: the simulator's side of the shared driving core
//! ([`crate::policy::client`]). The core decides (attempts, retries, hedges, timeouts,
//! budgets, ejection, the request's one end); this file is the [`Host`] it asks to route,
//! send an attempt to a server (a [`Job`]), set a timer (an [`Event::Policy`]) and
//! withdraw an attempt, and it hands the core what servers do: answers, error answers,
//! crashes, health checks.
//!
//! An attempt is a job whose id is the core's attempt id ([`Client::job_id`]): slot and
//! generation, so that a completion scheduled before a cancellation never finishes a later
//! attempt reusing the slot. Retries and hedges are fresh executions
//! ([`Client::attempt_size`]).

use super::{Event, Sim};
use crate::metrics::RunMetrics;
use crate::policy::Cause;
use crate::policy::PolicySpec;
use crate::policy::client::{self as core, Avoid, Client, Dispatch, Dispatched, Host};
use crate::rng::SimRng;
use crate::sim::server::{Admission, Job};
use crate::strategy::{Outcome, Ramp};
use crate::time::Nanos;
use crate::workload::Request;

pub(super) use crate::policy::client::Timer;

/// Every balancer's client-side state under one policy, and what health checks see.
pub(super) struct Clients {
    core: Client,
    /// Per server, whether health checks see it up (ejection hides it on top of that).
    healthy: Vec<bool>,
}

impl Clients {
    pub(super) fn new(spec: &PolicySpec, balancers: usize, servers: usize, rng: SimRng) -> Clients {
        Clients {
            core: Client::new(spec, balancers, servers, rng),
            healthy: vec![true; servers],
        }
    }

    /// The server started job `id`, which waited in its queue (a probe's, or an attempt's).
    pub(super) fn started_from_queue(&mut self, id: u64) {
        self.core.started_from_queue(id);
    }
}

impl Host for Sim<'_> {
    fn client(&mut self) -> &mut Client {
        &mut self
            .client
            .as_mut()
            .expect("called on the policy path only")
            .core
    }

    fn metrics(&mut self) -> &mut RunMetrics {
        &mut self.m
    }

    fn schedule(&mut self, at: Nanos, timer: Timer, slot: u32, generation: u32) {
        self.events.push(
            at,
            Event::Policy {
                timer,
                slot,
                generation,
            },
        );
    }

    fn route(&mut self, b: usize, now: Nanos, key: u64, avoid: Avoid<'_>) -> Option<usize> {
        let loads = self.loads.as_ref();
        match avoid {
            Some((avoid, repicks)) => {
                self.balancers[b].route_avoiding(now, key, loads, avoid, repicks)
            }
            None => self.balancers[b].route_with(now, key, loads),
        }
    }

    fn send_probes(&mut self, b: usize, now: Nanos, _measured: bool) {
        Sim::send_probes(self, b, now);
    }

    fn would_wait(&self, i: usize) -> bool {
        let server = &self.servers[i];
        !server.down && server.busy() >= server.workers
    }

    fn dispatch(&mut self, now: Nanos, d: Dispatch) -> Dispatched {
        let i = d.server;
        if let Some(rejected) = self.answers_error(i) {
            self.send_error(now, i, d.balancer, d.measured, rejected, Some(d.attempt));
            return Dispatched::Answering;
        }
        let size = self.client().attempt_size(d.size, d.extra);
        let work = size.work(&self.dists[self.servers[i].group]);
        let job = Job::sent(d.id, d.arrival, work, d.balancer as u32, d.measured, now);
        match self.offer(now, i, job) {
            Admission::Started(service) => {
                if let Some(s) = &mut self.signals {
                    s.started(i, service);
                }
                Dispatched::Held { queued: false }
            }
            Admission::Queued => Dispatched::Held { queued: true },
            Admission::Rejected => Dispatched::Refused(Cause::Rejected),
            Admission::Down => Dispatched::Refused(Cause::Failed),
        }
    }

    fn dispatched(&mut self, i: usize, now: Nanos) {
        if self.exact_reports {
            self.publish_load(i, now);
        }
    }

    fn tell(&mut self, b: usize, i: usize, latency: Nanos, outcome: Outcome, now: Nanos) {
        self.balancers[b].complete(i, latency, outcome, now);
    }

    fn set_ejected(&mut self, b: usize, i: usize, out: bool) -> bool {
        let up = !out && self.client.as_ref().is_some_and(|c| c.healthy[i]);
        self.balancers[b].set_up(i, up);
        up
    }

    fn available(&mut self, b: usize, i: usize, now: Nanos) {
        self.balancers[b].available(i, now);
    }

    fn balancers(&self) -> usize {
        self.balancers.len()
    }

    fn set_slow_start(&mut self, b: usize, ramp: Ramp) {
        let applied = self.balancers[b].set_slow_start(ramp);
        debug_assert!(applied, "validation refuses slow start for this strategy");
    }

    /// Withdraws job `id` from server `i`: the server's integrals advance, the next job
    /// starts, and the time the job spent in service is wasted work.
    fn withdraw(&mut self, i: usize, id: u64, now: Nanos) -> bool {
        let server = &mut self.servers[i];
        let before = (server.busy(), server.queued());
        let Some((job, in_service, next)) = server.cancel(id, now) else {
            return false;
        };
        if let Some((next, _)) = &next {
            self.client
                .as_mut()
                .expect("policy path")
                .started_from_queue(next.id);
        }
        self.job_left(now, i, before, next);
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
        true
    }

    fn arrivals_end(&self) -> Nanos {
        self.to
    }

    fn counted(&mut self, now: Nanos, what: Option<Option<Cause>>) {
        if let Some(t) = &mut self.tally {
            match what {
                None => t.attempt(now),
                Some(cause) => t.ended(now, cause.into()),
            }
        }
    }
}

impl Sim<'_> {
    /// An arrival under a client policy.
    pub(super) fn arrival_with_policy(&mut self, now: Nanos, req: Request) {
        let measured = self.count_arrival(now);
        let b = self.pick_balancer();
        core::arrival(self, now, &req, b, measured);
    }

    /// Health checks see server `i` up or down at `now`: balancers that ejected it keep
    /// it out. A server that comes back up starts its slow start, if any, in every
    /// balancer (Envoy: from the health-check pass, even while ejected).
    pub(super) fn health(&mut self, i: usize, up: bool, now: Nanos) {
        let Some(c) = self.client.as_mut() else {
            return self.health_without_client(i, up, now);
        };
        let back = up && !c.healthy[i];
        c.healthy[i] = up;
        let ramp = c.core.policy.slow_start.is_some();
        for (b, balancer) in self.balancers.iter_mut().enumerate() {
            let ejected = c.core.detector(b).is_some_and(|d| d.is_ejected(i));
            balancer.set_up(i, up && !ejected);
            if back && ramp {
                balancer.available(i, now);
            }
        }
    }

    /// [`Sim::health`] without a client: nothing is ejected, so a balancer's view shows
    /// a server up exactly when health checks last saw it up, and a server comes back
    /// where its view shows it down. It then starts the policy's slow start, if any, as
    /// under a client.
    fn health_without_client(&mut self, i: usize, up: bool, now: Nanos) {
        for balancer in &mut self.balancers {
            let back = up && !balancer.backends().up(i);
            balancer.set_up(i, up);
            if back && self.slow_start.is_some() {
                balancer.available(i, now);
            }
        }
    }

    /// Sets up what a policy needs in the balancers before the run: [`core::start`]
    /// under a client; without one, the slow start of a policy of slow start alone, in
    /// every balancer, as [`core::start`] sets it.
    pub(super) fn start_policy(&mut self) {
        if self.client.is_some() {
            core::start(self);
        } else if let Some(ramp) = self.slow_start {
            for b in 0..self.balancers.len() {
                Host::set_slow_start(self, b, ramp);
            }
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
        let c = self.client();
        let a = c
            .attempt_of(id)
            .expect("a job held by a server is a known attempt");
        c.off_server(a);
        let live = c.attempt(a).live;
        let delay = self.servers[i].delay;
        if delay != Nanos::ZERO && live {
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
        let c = self.client();
        // An answer delayed on the wire may find its attempt given up (and its slot reused).
        let attempt = c.attempt_of(job.id);
        let Some(a) = attempt.filter(|&a| c.attempt(a).live) else {
            if let Some(a) = attempt {
                c.release_attempt(a);
            }
            if job.measured {
                self.m.client.wasted += service;
            }
            return;
        };
        let c = self.client();
        let att = c.attempt(a);
        let (b, sent) = (att.balancer as usize, att.sent);
        let arrival = c.request(att.request).st.arrival;
        self.reply_load(b, i, &job, now);
        core::served(self, now, a, |s| {
            let latency = now - arrival + extra_latency;
            if job.measured {
                s.m.record_served(i, arrival, latency, job.start - sent);
            }
        });
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
        let att = self.client().attempt(a);
        if att.generation != generation || !att.live {
            return;
        }
        let cause = if rejected {
            Cause::Rejected
        } else {
            Cause::Failed
        };
        core::attempt_failed(self, now, a, cause);
    }

    /// Attempts held by server `i` when it crashed: each live one fails (and may be
    /// retried); the others are forgotten.
    /// Server `i`'s admission control dropped job `id` (see `shed_jobs`): the attempt is
    /// refused at once, if its client still waits for it.
    pub(super) fn attempt_shed(&mut self, now: Nanos, id: u64) {
        if let Some(a) = self.client().attempt_of(id) {
            core::lost(self, now, a, Cause::Rejected);
        }
    }

    pub(super) fn attempts_lost(&mut self, now: Nanos, _i: usize, lost: Vec<Job>) {
        for job in lost {
            if let Some(a) = self.client().attempt_of(job.id) {
                core::lost(self, now, a, Cause::Failed);
            }
        }
    }

    /// A policy timer fired.
    pub(super) fn policy_timer(&mut self, now: Nanos, timer: Timer, slot: u32, generation: u32) {
        core::timer(self, now, timer, slot, generation);
    }
}
