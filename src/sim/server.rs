//! A simulated Thrift server: `workers` requests in service at once, the rest waiting in
//! FIFO order up to `queue_capacity`; a request of work `w` is served in `w / speed`.

use std::collections::VecDeque;

use crate::strategy::LoadReport;
use crate::time::Nanos;

/// A request held by a server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Job {
    /// When the request reached the balancer.
    pub arrival: Nanos,
    /// Its service time on this server.
    pub service: Nanos,
    /// Which balancer sent it.
    pub balancer: u32,
    /// Whether it arrived inside the measured window.
    pub measured: bool,
}

/// What happened to a request offered to a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A worker was free: the request is in service and completes after its service time.
    Started,
    /// All workers busy: the request waits.
    Queued,
    /// The waiting room is full: the request is refused.
    Rejected,
}

/// One server's state.
#[derive(Clone, Debug)]
pub struct Server {
    /// Workers.
    pub workers: u32,
    /// Speed factor.
    pub speed: f64,
    /// Waiting-room size (`None`: unbounded).
    pub queue_capacity: Option<u32>,
    /// Index of the server group (for its service-time distribution).
    pub group: usize,
    /// Workers currently serving.
    pub busy: u32,
    /// Requests waiting, oldest first.
    pub queue: VecDeque<Job>,
    /// Requests completed since the start of the run.
    pub completed: u64,
    /// Busy worker-nanoseconds since the start of the run, up to `last_change`.
    pub busy_time: u64,
    /// Time of the last state change.
    pub last_change: Nanos,
}

impl Server {
    /// An idle server.
    pub fn new(workers: u32, speed: f64, queue_capacity: Option<u32>, group: usize) -> Server {
        Server {
            workers,
            speed,
            queue_capacity,
            group,
            busy: 0,
            queue: VecDeque::new(),
            completed: 0,
            busy_time: 0,
            last_change: Nanos::ZERO,
        }
    }

    /// Integrates busy time up to `now` (call before every state change).
    #[inline]
    fn touch(&mut self, now: Nanos) {
        self.busy_time += u64::from(self.busy) * (now - self.last_change).0;
        self.last_change = now;
    }

    /// The server's load report at `now`.
    pub fn report(&self, now: Nanos) -> LoadReport {
        LoadReport {
            at: now,
            in_system: self.busy + self.queued(),
            workers: self.workers,
            completed: self.completed,
            busy_time: self.busy_time + u64::from(self.busy) * (now - self.last_change).0,
        }
    }

    /// Offers a request at time `now`.
    #[inline]
    pub fn admit(&mut self, job: Job, now: Nanos) -> Admission {
        if self.busy < self.workers {
            self.touch(now);
            self.busy += 1;
            Admission::Started
        } else if self
            .queue_capacity
            .is_some_and(|c| self.queue.len() >= c as usize)
        {
            Admission::Rejected
        } else {
            self.queue.push_back(job);
            Admission::Queued
        }
    }

    /// A worker finished at `now`: returns the next waiting request, which it starts serving.
    #[inline]
    pub fn finish(&mut self, now: Nanos) -> Option<Job> {
        self.completed += 1;
        match self.queue.pop_front() {
            Some(job) => Some(job),
            None => {
                self.touch(now);
                self.busy -= 1;
                None
            }
        }
    }

    /// Number waiting.
    #[inline]
    pub fn queued(&self) -> u32 {
        self.queue.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(t: u64) -> Job {
        Job {
            arrival: Nanos(t),
            service: Nanos(1),
            balancer: 0,
            measured: true,
        }
    }

    #[test]
    fn fifo_with_bounded_queue() {
        let mut s = Server::new(1, 1.0, Some(2), 0);
        assert_eq!(s.admit(job(1), Nanos(1)), Admission::Started);
        assert_eq!(s.admit(job(2), Nanos(2)), Admission::Queued);
        assert_eq!(s.admit(job(3), Nanos(3)), Admission::Queued);
        assert_eq!(s.admit(job(4), Nanos(4)), Admission::Rejected);
        assert_eq!(s.report(Nanos(5)).in_system, 3);
        assert_eq!(s.finish(Nanos(10)).unwrap().arrival, Nanos(2));
        assert_eq!(s.finish(Nanos(20)).unwrap().arrival, Nanos(3));
        assert_eq!(s.finish(Nanos(30)), None);
        assert_eq!(s.busy, 0);
        let r = s.report(Nanos(40));
        assert_eq!((r.completed, r.busy_time, r.in_system), (3, 29, 0));
    }
}
