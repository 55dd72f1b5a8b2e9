//! Out-of-band signals in the simulator: probes in flight and what servers answer.
//!
//! A strategy that asks for probes ([`crate::strategy::Strategy::probes`]) has each probe
//! travel to its server in half the scenario's `[probes] delay`, where the server answers
//! with its [`ServerLoad`] at that instant, and the answer travel back in the other half.
//! A probe costs the server `[probes] cost` seconds of work (a worker busy, queued behind
//! requests when all are busy) when the scenario says so. Probes in flight live in a slab
//! indexed by the events, so the engine's events stay 16 bytes.
//!
//! Servers' answers, and the load reports carried on replies, use each server's recent
//! mean service time: an exponentially weighted moving average over the service times of
//! the requests it starts, weight [`SERVICE_EWMA_WEIGHT`] on each new one. Nothing here
//! draws random numbers, so runs without probing strategies are bit for bit unchanged.

use crate::strategy::ServerLoad;
use crate::time::Nanos;

/// Weight of each new service time in a server's mean service time.
pub const SERVICE_EWMA_WEIGHT: f64 = 0.1;

/// Jobs of probe cost carry ids from here up (request ids count up from 0).
pub const PROBE_JOB_BASE: u64 = 1 << 62;

/// A probe on its way to its server or back.
#[derive(Clone, Copy, Debug)]
pub struct InFlight {
    /// Balancer that sent it.
    pub balancer: u32,
    /// Server probed.
    pub server: u32,
    /// When it was sent.
    pub sent: Nanos,
    /// The server's answer, once it reached the server.
    pub answer: ServerLoad,
}

/// Probes in flight and servers' mean service times.
#[derive(Debug)]
pub struct Signals {
    /// Half the round trip of a probe.
    pub half_delay: Nanos,
    /// Work a probe costs its server (seconds at speed 1); 0: free.
    pub cost: f64,
    /// Whether the strategy sends probes.
    pub probes: bool,
    /// Whether the strategy reads the loads carried on replies.
    pub reply_loads: bool,
    slots: Vec<InFlight>,
    free: Vec<u32>,
    /// Mean service time of each server (nanoseconds), 0 until its first request.
    mean_service: Vec<f64>,
    /// Next id of a probe-cost job.
    next_job: u64,
    /// Buffer the balancers' probes are taken into.
    pub asked: Vec<usize>,
}

impl Signals {
    /// Signals for `servers` servers with the given probe round trip and cost (seconds).
    pub fn new(servers: usize, delay: f64, cost: f64, probes: bool, reply_loads: bool) -> Signals {
        Signals {
            half_delay: Nanos::from_secs_f64(delay / 2.0),
            cost,
            probes,
            reply_loads,
            slots: Vec::new(),
            free: Vec::new(),
            mean_service: vec![0.0; servers],
            next_job: PROBE_JOB_BASE,
            asked: Vec::new(),
        }
    }

    /// Records a probe leaving `balancer` for `server` at `sent`; returns its slot.
    pub fn send(&mut self, balancer: usize, server: usize, sent: Nanos) -> u32 {
        let p = InFlight {
            balancer: balancer as u32,
            server: server as u32,
            sent,
            answer: ServerLoad::default(),
        };
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = p;
                slot
            }
            None => {
                self.slots.push(p);
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// The probe in `slot`.
    pub fn get_mut(&mut self, slot: u32) -> &mut InFlight {
        &mut self.slots[slot as usize]
    }

    /// Frees `slot` (its answer arrived, or it was lost) and returns the probe.
    pub fn release(&mut self, slot: u32) -> InFlight {
        self.free.push(slot);
        self.slots[slot as usize]
    }

    /// A fresh id for a probe-cost job.
    pub fn job_id(&mut self) -> u64 {
        self.next_job += 1;
        self.next_job
    }

    /// Server `i` started a request of service time `service`.
    #[inline]
    pub fn started(&mut self, i: usize, service: Nanos) {
        let m = &mut self.mean_service[i];
        let s = service.0 as f64;
        *m = if *m == 0.0 {
            s
        } else {
            *m + SERVICE_EWMA_WEIGHT * (s - *m)
        };
    }

    /// What server `i`, with `workers` workers, `busy` of them busy and `queued` requests
    /// waiting, says of its load. `service` is the service time of the request replied
    /// to, or `None` for a probe answer (then its mean service time).
    pub fn load(
        &self,
        i: usize,
        workers: u32,
        busy: u32,
        queued: u32,
        service: Option<Nanos>,
    ) -> ServerLoad {
        let mean = self.mean_service[i];
        ServerLoad {
            in_flight: busy + queued,
            queued,
            service_time: service.unwrap_or(Nanos(mean.round() as u64)),
            latency: Nanos(estimated_latency(mean, workers, busy, queued).round() as u64),
        }
    }
}

/// A server's estimate of the response time (nanoseconds) of a request arriving now: its
/// mean service time if a worker is free, otherwise that plus the wait for the requests
/// ahead of it, `(queued + 1) / workers` mean service times (FIFO, all workers busy).
pub fn estimated_latency(mean_service: f64, workers: u32, busy: u32, queued: u32) -> f64 {
    if busy < workers {
        mean_service
    } else {
        mean_service * (1.0 + f64::from(queued + 1) / f64::from(workers.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_ids_do_not_collide_with_requests() {
        let mut s = Signals::new(2, 0.001, 0.0, true, false);
        assert_eq!(s.half_delay, Nanos(500_000));
        let a = s.send(0, 1, Nanos(5));
        let b = s.send(0, 0, Nanos(6));
        assert_ne!(a, b);
        assert_eq!(s.release(a).server, 1);
        assert_eq!(s.send(1, 0, Nanos(7)), a);
        assert!(s.job_id() > PROBE_JOB_BASE);
    }

    #[test]
    fn load_reads_the_mean_service_time_and_the_queue() {
        let mut s = Signals::new(1, 0.0, 0.0, true, true);
        s.started(0, Nanos(1000));
        s.started(0, Nanos(2000));
        // 1000 + 0.1 × (2000 − 1000).
        let idle = s.load(0, 2, 1, 0, None);
        assert_eq!(
            (idle.in_flight, idle.service_time, idle.latency),
            (1, Nanos(1100), Nanos(1100))
        );
        // Both workers busy, 3 waiting: wait for (3 + 1) / 2 services, then one.
        let busy = s.load(0, 2, 2, 3, Some(Nanos(700)));
        assert_eq!((busy.in_flight, busy.queued), (5, 3));
        assert_eq!((busy.service_time, busy.latency), (Nanos(700), Nanos(3300)));
    }
}
