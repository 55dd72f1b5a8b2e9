//! Cluster membership in the engine: servers that join (scale out), leave (scale in,
//! draining), restart one by one (rolling deploys), warm up after a cold start, and answer
//! through an added network delay.
//!
//! A server *becomes available to balancers* only through [`Event::Health`] with `up`,
//! the event a crash recovery sends once health checks see the server again: joins,
//! returns from a leave and restarts of a deploy all schedule it, so whatever the engine
//! does when a server comes back (e.g. a balancer's slow start) applies to them too. A
//! server leaves balancers' views through the same event with `up = false`.
//!
//! Draining follows Kubernetes' pod termination: the endpoint is removed (balancers stop
//! sending new requests at once), the server finishes what it holds (in service and
//! queued), and after `drain_timeout` (the pod's `terminationGracePeriodSeconds`, default
//! 30 s) what is left is killed: those requests fail, as in a crash. A rolling deploy
//! restarts the servers of its fault in index order with Kubernetes' `maxSurge = 0`,
//! `maxUnavailable = 1`: the next server starts draining when the previous one is back.
//!
//! A server that is not a member (before its join, after its leave) is *absent*: it is
//! down in every balancer's view, refuses what still reaches it (a connection-level client
//! reconnects elsewhere), and a late health-check event cannot bring it back.

use super::{Event, Sim};
use crate::scenario::{ColdStart, FaultKind};
use crate::sim::server::Warmup;
use crate::strategy::Outcome;
use crate::time::Nanos;

/// A membership step of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Balancers have stopped sending to the server: it drains.
    Drain,
    /// The drain of generation `arg` has lasted `drain_timeout`: what is left is killed.
    DrainTimeout,
    /// The restart of a deploy (fault `arg`) is over: the server is back.
    Back,
    /// The autoscaler decides (see [`super::autoscaler`]).
    Sync,
    /// A server the autoscaler started (its start `arg`) is ready and joins.
    Ready,
}

/// What follows a drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum After {
    /// The server stays out.
    Gone,
    /// The server restarts (deploy fault `fault`, its `pos`-th server).
    Restart { fault: u32, pos: u32 },
}

/// Every server's membership state.
pub(super) struct Members {
    /// Per server: not a member (before its join, after its leave).
    absent: Vec<bool>,
    /// Per server, while it is leaving: what follows its drain (set at the leave, the drain
    /// starting once balancers have stopped sending).
    leaving: Vec<Option<After>>,
    /// Per server: whether it drains now.
    draining: Vec<bool>,
    /// Per server: drains begun, so that a late drain timeout is ignored.
    generation: Vec<u32>,
    /// Per deploy fault: position of the server being restarted.
    deploy_pos: Vec<u32>,
    /// The autoscaler's state, if the scenario has one.
    pub(super) hpa: Option<super::autoscaler::Hpa>,
}

impl Members {
    /// Membership for `servers` servers, if some fault changes it; `None` otherwise, so
    /// that a scenario without such faults pays nothing.
    pub(super) fn new(scenario: &crate::scenario::Scenario) -> Option<Box<Members>> {
        let n = scenario.servers().len();
        let changes = scenario.autoscaler.is_some()
            || scenario.faults.iter().any(|f| {
                matches!(
                    f.kind,
                    FaultKind::Join | FaultKind::Leave | FaultKind::Deploy
                )
            });
        changes.then(|| {
            let mut m = Members {
                absent: vec![false; n],
                leaving: vec![None; n],
                draining: vec![false; n],
                generation: vec![0; n],
                deploy_pos: vec![0; scenario.faults.len()],
                hpa: scenario
                    .autoscaler
                    .as_ref()
                    .map(|a| super::autoscaler::Hpa::new(a, n)),
            };
            if let Some(a) = &scenario.autoscaler {
                for &i in &a.servers[a.initial as usize..] {
                    m.absent[i] = true;
                }
            }
            for f in &scenario.faults {
                if f.kind == FaultKind::Join {
                    for &i in &f.servers {
                        m.absent[i] = true;
                    }
                }
            }
            Box::new(m)
        })
    }

    /// Whether server `i` is absent (or leaving): health checks cannot bring it back.
    #[inline]
    pub(super) fn absent(&self, i: usize) -> bool {
        self.absent[i]
    }
}

impl Sim<'_> {
    /// Marks the servers absent at the start (those that join later, those the
    /// autoscaler has not started) down in every view, before the first event, and
    /// schedules the autoscaler's first decision.
    pub(super) fn initial_membership(&mut self) {
        self.start_autoscaler();
        let Some(m) = self.members.as_ref() else {
            return;
        };
        let absent: Vec<usize> = (0..m.absent.len()).filter(|&i| m.absent[i]).collect();
        for i in absent {
            self.servers[i].down = true;
            self.set_view(i, false, Nanos::ZERO);
        }
    }

    /// Every balancer's view (and the shared load table) sees server `i` up or down at
    /// `now`: what a health-check event does.
    pub(super) fn set_view(&mut self, i: usize, up: bool, now: Nanos) {
        self.health(i, up, now);
        if let Some(t) = &mut self.loads {
            t.set_up(i, up);
        }
    }

    /// Fault `index` starts or ends on server `i`: a membership, cold-start or delay
    /// change (other kinds are the engine's).
    pub(super) fn membership_fault(&mut self, now: Nanos, index: usize, i: usize, start: bool) {
        let fault = &self.scenario.faults[index];
        match (fault.kind, start) {
            (FaultKind::Cold, true) => {
                if let Some(c) = fault.cold {
                    self.servers[i].set_warm(Warmup::new(now, c.warmup, c.fraction));
                }
            }
            (FaultKind::Cold, false) => {}
            (FaultKind::Join, true) | (FaultKind::Leave, false) => {
                let cold = fault.cold;
                self.join(now, i, cold);
            }
            (FaultKind::Join, false) | (FaultKind::Leave, true) => {
                self.leave(now, i, After::Gone);
            }
            // One server at a time, from the fault's first: started once per fault.
            (FaultKind::Deploy, true) if fault.servers.first() == Some(&i) => {
                self.deploy_from(now, index, 0);
            }
            (FaultKind::Delay, true) => self.servers[i].delay = Nanos::from_secs_f64(fault.delay),
            (FaultKind::Delay, false) => self.servers[i].delay = Nanos::ZERO,
            _ => {}
        }
    }

    /// Server `i` becomes a member at `now` (`cold`: starting cold) and is made available
    /// to balancers through the health-check path.
    pub(super) fn join(&mut self, now: Nanos, i: usize, cold: Option<ColdStart>) {
        let Some(m) = self.members.as_mut() else {
            return;
        };
        m.absent[i] = false;
        m.leaving[i] = None;
        if m.draining[i] {
            // Back before its drain ended: the drain is over.
            m.draining[i] = false;
            m.generation[i] = m.generation[i].wrapping_add(1);
        }
        let server = &mut self.servers[i];
        self.m.servers[i].advance(now, server.busy(), server.queued(), self.from, self.to);
        server.recover(now);
        if let Some(c) = cold {
            server.set_warm(Warmup::new(now, c.warmup, c.fraction));
        }
        self.events.push(
            now,
            Event::Health {
                server: i as u32,
                up: true,
            },
        );
    }

    /// Server `i` leaves at `now`: balancers stop sending to it (the health-check path),
    /// then it drains; `after` says what follows.
    pub(super) fn leave(&mut self, now: Nanos, i: usize, after: After) {
        let Some(m) = self.members.as_mut() else {
            return;
        };
        if m.absent[i] {
            return;
        }
        m.absent[i] = true;
        m.leaving[i] = Some(after);
        self.events.push(
            now,
            Event::Health {
                server: i as u32,
                up: false,
            },
        );
        // After the health event (same time, scheduled later): balancers no longer send.
        self.events.push(
            now,
            Event::Member {
                server: i as u32,
                step: Step::Drain,
                arg: 0,
            },
        );
    }

    /// Starts the rolling deploy of fault `index` at its `pos`-th server (skipping servers
    /// that are not members), or ends it.
    fn deploy_from(&mut self, now: Nanos, index: usize, pos: usize) {
        let servers = &self.scenario.faults[index].servers;
        let Some(m) = self.members.as_mut() else {
            return;
        };
        let Some(k) = (pos..servers.len()).find(|&k| !m.absent[servers[k]]) else {
            return;
        };
        m.deploy_pos[index] = k as u32;
        self.leave(
            now,
            servers[k],
            After::Restart {
                fault: index as u32,
                pos: k as u32,
            },
        );
    }

    /// A membership step of server `i`.
    pub(super) fn member_step(&mut self, now: Nanos, i: usize, step: Step, arg: u32) {
        let Some(m) = self.members.as_mut() else {
            return;
        };
        match step {
            Step::Drain => {
                if m.leaving[i].is_none() {
                    // Joined again before its drain began.
                    return;
                }
                m.draining[i] = true;
                m.generation[i] = m.generation[i].wrapping_add(1);
                let generation = m.generation[i];
                // Nothing new is accepted; what the server holds finishes.
                self.servers[i].down = true;
                self.connections_closed(i, now);
                if !self.drained_if_empty(now, i) {
                    let timeout = self.drain_timeout(i);
                    self.events.push(
                        now + Nanos::from_secs_f64(timeout),
                        Event::Member {
                            server: i as u32,
                            step: Step::DrainTimeout,
                            arg: generation,
                        },
                    );
                }
            }
            Step::DrainTimeout => {
                if !m.draining[i] || m.generation[i] != arg {
                    return;
                }
                // Killed at the end of the grace period: what is left fails.
                let server = &mut self.servers[i];
                self.m.servers[i].advance(now, server.busy(), server.queued(), self.from, self.to);
                self.crash(now, i);
                self.drained(now, i);
            }
            Step::Back => {
                let index = arg as usize;
                self.join(now, i, self.scenario.faults[index].cold);
                let pos = self.members.as_ref().map_or(0, |m| m.deploy_pos[index]);
                self.deploy_from(now, index, pos as usize + 1);
            }
            Step::Sync => return self.autoscale(now),
            Step::Ready => return self.ready(now, i, arg),
        }
        if self.exact_reports {
            self.publish_load(i, now);
        }
    }

    /// The longest drain of server `i`: that of the fault that made it leave (the
    /// largest of its faults' when several could have).
    fn drain_timeout(&self, i: usize) -> f64 {
        self.scenario
            .faults
            .iter()
            .filter_map(|f| f.drain_of(i))
            .chain(
                self.scenario
                    .autoscaler
                    .as_ref()
                    .filter(|a| a.servers.contains(&i))
                    .map(|a| a.drain_timeout),
            )
            .fold(0.0, f64::max)
    }

    /// After server `i` finished or dropped a request: if it drains and holds nothing
    /// more, its drain is over. Returns whether it was.
    pub(super) fn drained_if_empty(&mut self, now: Nanos, i: usize) -> bool {
        let Some(m) = self.members.as_ref() else {
            return false;
        };
        let server = &self.servers[i];
        if m.draining[i] && server.busy() == 0 && server.queued() == 0 {
            self.drained(now, i);
            true
        } else {
            false
        }
    }

    /// Server `i`'s drain is over: it is gone, or restarts.
    fn drained(&mut self, now: Nanos, i: usize) {
        let Some(m) = self.members.as_mut() else {
            return;
        };
        m.draining[i] = false;
        m.generation[i] = m.generation[i].wrapping_add(1);
        match m.leaving[i].take() {
            Some(After::Restart { fault, .. }) => {
                let restart = self.scenario.faults[fault as usize].restart;
                self.events.push(
                    now + Nanos::from_secs_f64(restart),
                    Event::Member {
                        server: i as u32,
                        step: Step::Back,
                        arg: fault,
                    },
                );
            }
            Some(After::Gone) | None => {}
        }
    }

    /// At connection level, closes every connection to server `i` (it leaves): they
    /// reopen elsewhere on next use. A clean close, not a failure.
    fn connections_closed(&mut self, i: usize, now: Nanos) {
        let super::Topology::Connections(conns) = &self.topology else {
            return;
        };
        let open: Vec<u32> = (0..conns.server.len() as u32)
            .filter(|&s| conns.server[s as usize] == Some(i))
            .collect();
        for slot in open {
            self.close_connection(slot, now, Outcome::Ok);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Sim;
    use crate::scenario::Scenario;
    use crate::testing;

    /// A rolling deploy of group `s` and a join-then-leave of `extra-0`, under four
    /// strategies and one with retries.
    fn scenario() -> Scenario {
        let service = testing::exponential(0.01);
        let rest = testing::servers("s", 4, "workers = 2", &service)
            + &testing::servers("extra", 1, "workers = 2", &service)
            + FAULTS
            + &testing::kinds(&["round_robin", "least_request", "peak_ewma", "maglev"])
            + RETRIES;
        testing::scenario("duration = 8", 400.0, &rest)
    }

    const FAULTS: &str = r#"
[[faults]]
server = "s"
kind = "deploy"
at = 1
restart = 0.5
warmup = 1
fraction = 0.5
[[faults]]
server = "extra-0"
kind = "join"
at = 2
duration = 3
"#;

    const RETRIES: &str = r#"
[[strategies]]
label = "retries"
kind = "least_request"
[strategies.policy.retry]
max_attempts = 3
"#;

    /// Steps every strategy through a rolling deploy and a join-then-leave, checking after
    /// every event that no server down in a balancer's view gained a request, that the
    /// deploy takes out one server at a time, and at the end that no request failed or
    /// was lost and that every server of the group restarted.
    #[test]
    fn membership_changes_never_route_to_absent_servers_nor_lose_requests() {
        let s = scenario();
        for entry in &s.strategies {
            let mut sim = Sim::new(&s, &entry.spec, entry.policy.as_ref(), 0, 7);
            let mut restarted = [false; 4];
            let mut accepted: Vec<u64> = sim.m.servers.iter().map(|a| a.requests).collect();
            while sim.step().is_some() {
                let view = sim.balancers[0].backends();
                for (i, acc) in sim.m.servers.iter().enumerate() {
                    assert!(
                        view.up(i) || acc.requests == accepted[i],
                        "{}: server {i} got a request while down in the view",
                        entry.label()
                    );
                }
                accepted = sim.m.servers.iter().map(|a| a.requests).collect();
                let members = sim.members.as_ref().unwrap();
                let out = (0..4).filter(|&i| members.absent(i)).count();
                assert!(out <= 1, "{}: {out} servers out at once", entry.label());
                for (i, r) in restarted.iter_mut().enumerate() {
                    *r |= members.absent(i);
                }
            }
            let m = sim.finish();
            assert!(
                restarted.iter().all(|&r| r),
                "{}: {restarted:?}",
                entry.label()
            );
            assert_eq!(m.failed, 0, "{}", entry.label());
            assert_eq!(
                m.arrived,
                m.latency.len() + m.rejected + m.unroutable + m.failed + m.client.timed_out,
                "{}",
                entry.label()
            );
            // The joining server served while it was a member, and only then.
            assert!(m.servers[4].requests > 0, "{}", entry.label());
        }
    }
}
