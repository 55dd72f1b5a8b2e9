//! The `[autoscaler]`: the Kubernetes Horizontal Pod Autoscaler's control loop over one
//! server group, as documented in
//! <https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/> and
//! implemented in `pkg/controller/podautoscaler` (`replica_calculator.go`,
//! `horizontal.go`):
//!
//! - every `sync_period` (15 s) it measures the utilisation of each *ready* server over
//!   the last period (busy worker-time over worker-time, the CPU utilisation the HPA
//!   reads from metrics-server);
//! - `ratio = mean utilisation / target`; within `tolerance` (0.1) of 1 nothing changes;
//! - servers started but not yet ready count as using 0% when the ratio says scale up
//!   (the HPA's conservative treatment of not-yet-ready pods), and are set aside when it
//!   says scale down; if counting them flips the direction, nothing changes;
//! - `desired = ceil(Σ utilisation of ready servers / target)`, i.e.
//!   `ceil(current × ratio)` over the servers counted;
//! - scale-down stabilisation: the replicas used are the largest recommendation of the
//!   last `stabilization` seconds (300 s); scale-up has no window (Kubernetes' default
//!   `behavior`);
//! - scale-up rate: at most `max(2 × current, current + 4)` per decision (the default
//!   policies "100% or 4 pods per 15 s, whichever is more"); scale-down: 100% per period;
//! - then `[min_replicas, count]`.
//!
//! A scale-up starts the lowest-numbered absent servers: each joins, cold if configured,
//! `startup` seconds later (through [`Sim::join`], the health-check path). A scale-down
//! cancels servers still starting first (a ReplicaSet deletes unready pods first), then
//! drains the highest-numbered members ([`Sim::leave`]). The loop runs while arrivals do.

use std::collections::VecDeque;

use super::membership::{After, Step};
use super::{Event, Sim};
use crate::scenario::Autoscaler;
use crate::time::Nanos;

/// The autoscaler's state.
pub(super) struct Hpa {
    /// Per position in the group: started and not yet ready.
    starting: Vec<bool>,
    /// Per position: starts so far, so that the readiness of a cancelled start is ignored.
    generation: Vec<u32>,
    /// Per position: busy worker-nanoseconds at the last decision (or at its join).
    last_busy: Vec<u64>,
    /// Per position: when the last measurement began (the last decision, or its join).
    since: Vec<Nanos>,
    /// Recommendations of the stabilisation window: (when, replicas).
    recent: VecDeque<(Nanos, u32)>,
}

impl Hpa {
    pub(super) fn new(a: &Autoscaler, _servers: usize) -> Hpa {
        let n = a.servers.len();
        Hpa {
            starting: vec![false; n],
            generation: vec![0; n],
            last_busy: vec![0; n],
            since: vec![Nanos::ZERO; n],
            recent: VecDeque::new(),
        }
    }
}

/// The HPA's replica calculation from the utilisations of ready servers (`sum` over
/// `ready` of them) with `starting` more not yet ready and `current` in all; returns the
/// recommendation before stabilisation and limits.
pub(super) fn recommend(a: &Autoscaler, sum: f64, ready: u32, starting: u32, current: u32) -> u32 {
    if ready == 0 {
        return current;
    }
    let ratio = sum / f64::from(ready) / a.target;
    if (ratio - 1.0).abs() <= a.tolerance {
        return current;
    }
    if ratio > 1.0 && starting > 0 {
        // Not-yet-ready servers count at 0% when scaling up.
        let counted = ready + starting;
        let ratio = sum / f64::from(counted) / a.target;
        if ratio <= 1.0 + a.tolerance {
            return current;
        }
        return ((ratio * f64::from(counted)).ceil() as u32).max(current);
    }
    let desired = (ratio * f64::from(ready)).ceil() as u32;
    if ratio > 1.0 {
        desired.max(current)
    } else {
        desired.min(current)
    }
}

impl Sim<'_> {
    /// Schedules the autoscaler's first decision, one sync period in.
    pub(super) fn start_autoscaler(&mut self) {
        if let Some(a) = &self.scenario.autoscaler {
            self.events.push(
                Nanos::from_secs_f64(a.sync_period),
                Event::Member {
                    server: 0,
                    step: Step::Sync,
                    arg: 0,
                },
            );
        }
    }

    /// Busy worker-nanoseconds of server `i` since the start of the run.
    fn busy_ns(&self, i: usize, now: Nanos) -> u64 {
        self.servers[i].report(now).busy_time
    }

    /// One decision of the autoscaler.
    pub(super) fn autoscale(&mut self, now: Nanos) {
        let Some(a) = self.scenario.autoscaler.as_ref() else {
            return;
        };
        let busy: Vec<u64> = a.servers.iter().map(|&i| self.busy_ns(i, now)).collect();
        let Some(m) = self.members.as_mut() else {
            return;
        };
        let absent: Vec<bool> = a.servers.iter().map(|&i| m.absent(i)).collect();
        let Some(h) = m.hpa.as_mut() else {
            return;
        };
        let (mut sum, mut ready, mut starting) = (0.0, 0u32, 0u32);
        for (k, &i) in a.servers.iter().enumerate() {
            if h.starting[k] {
                starting += 1;
            } else if !absent[k] {
                ready += 1;
                let span = (now - h.since[k]).0 as f64;
                if span > 0.0 {
                    let workers = f64::from(self.servers[i].workers);
                    sum += (busy[k] - h.last_busy[k].min(busy[k])) as f64 / (workers * span);
                }
            }
            h.last_busy[k] = busy[k];
            h.since[k] = now;
        }
        let current = ready + starting;
        let desired = recommend(a, sum, ready, starting, current);
        let max = a.servers.len() as u32;
        let desired = desired.clamp(a.min_replicas, max);
        // Scale-down stabilisation: the largest recommendation of the window.
        let window = Nanos::from_secs_f64(a.stabilization);
        h.recent.push_back((now, desired));
        while h.recent.front().is_some_and(|&(t, _)| now - t > window) {
            h.recent.pop_front();
        }
        let down = h.recent.iter().map(|&(_, r)| r).max().unwrap_or(desired);
        let mut replicas = current.max(desired).min(down);
        // Scale-up policies: 100% or 4 servers per period, whichever is more.
        replicas = replicas.min((2 * current).max(current + 4));
        let replicas = replicas.clamp(a.min_replicas, max);
        if replicas > current {
            let mut more = replicas - current;
            for (k, &out) in absent.iter().enumerate() {
                if more == 0 {
                    break;
                }
                if out && !h.starting[k] {
                    h.starting[k] = true;
                    h.generation[k] = h.generation[k].wrapping_add(1);
                    more -= 1;
                    self.events.push(
                        now + Nanos::from_secs_f64(a.startup),
                        Event::Member {
                            server: a.servers[k] as u32,
                            step: Step::Ready,
                            arg: h.generation[k],
                        },
                    );
                }
            }
        } else if replicas < current {
            let mut fewer = current - replicas;
            // Servers still starting go first, the newest first.
            for k in (0..a.servers.len()).rev() {
                if fewer > 0 && h.starting[k] {
                    h.starting[k] = false;
                    h.generation[k] = h.generation[k].wrapping_add(1);
                    fewer -= 1;
                }
            }
            let leaving: Vec<usize> = (0..a.servers.len())
                .rev()
                .filter(|&k| !absent[k] && !h.starting[k])
                .take(fewer as usize)
                .map(|k| a.servers[k])
                .collect();
            for i in leaving {
                self.leave(now, i, After::Gone);
            }
        }
        if now < self.to {
            self.events.push(
                now + Nanos::from_secs_f64(a.sync_period),
                Event::Member {
                    server: 0,
                    step: Step::Sync,
                    arg: 0,
                },
            );
        }
    }

    /// Server `i`, started by the autoscaler (start `generation`), is ready: it joins.
    pub(super) fn ready(&mut self, now: Nanos, i: usize, generation: u32) {
        let Some(a) = self.scenario.autoscaler.as_ref() else {
            return;
        };
        let Some(k) = a.servers.iter().position(|&s| s == i) else {
            return;
        };
        let busy = self.busy_ns(i, now);
        let Some(h) = self.members.as_mut().and_then(|m| m.hpa.as_mut()) else {
            return;
        };
        if !h.starting[k] || h.generation[k] != generation {
            return;
        }
        h.starting[k] = false;
        h.last_busy[k] = busy;
        h.since[k] = now;
        self.join(now, i, a.cold);
    }
}

#[cfg(test)]
mod tests {
    use super::recommend;
    use crate::scenario::Autoscaler;

    fn hpa() -> Autoscaler {
        Autoscaler {
            servers: (0..10).collect(),
            target: 0.5,
            min_replicas: 1,
            initial: 2,
            sync_period: 15.0,
            tolerance: 0.1,
            stabilization: 300.0,
            startup: 10.0,
            cold: None,
            drain_timeout: 30.0,
        }
    }

    #[test]
    fn replica_calculation_follows_the_hpa() {
        let a = hpa();
        // 2 servers at 90% for a 50% target: ceil(2 × 0.9 / 0.5) = 4.
        assert_eq!(recommend(&a, 1.8, 2, 0, 2), 4);
        // Within the 10% tolerance (ratio 1.08): no change.
        assert_eq!(recommend(&a, 1.08, 2, 0, 2), 2);
        // 4 servers at 20%: ceil(4 × 0.4) = 2.
        assert_eq!(recommend(&a, 0.8, 4, 0, 4), 2);
        // 2 ready at 90% and 2 starting: counted at 0%, ratio 0.9 < 1.1: no change.
        assert_eq!(recommend(&a, 1.8, 2, 2, 4), 4);
        // 2 ready at 100% and 1 starting: ratio 2/3/0.5 = 1.33, ceil(3 × 1.33) = 4.
        assert_eq!(recommend(&a, 2.0, 2, 1, 3), 4);
        // No ready server: no metrics, no change.
        assert_eq!(recommend(&a, 0.0, 0, 2, 2), 2);
    }
}
