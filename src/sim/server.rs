//! A simulated Thrift server: `workers` requests in service at once, the rest waiting in
//! FIFO order up to `queue_capacity`; a request of work `w` is served in `w / speed`.
//! A server can crash (dropping every request it holds) and recover, or slow down.
//!
//! Admission control (`[servers.admission]`, [`QueueControl`], shared with the live
//! backends in [`crate::policy::admission`]) sheds queued work when a worker frees and
//! takes its next request: a queue timeout, CoDel as Facebook's servers run it, and
//! adaptive LIFO. Dropped requests are left in [`Server::shed`] for the engine to answer.

use std::collections::VecDeque;

use crate::policy::admission::Waiting;
pub use crate::policy::admission::{Codel, QueueControl};
use crate::strategy::LoadReport;
use crate::time::Nanos;

/// A request held by a server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Job {
    /// Request id (unique within a run).
    pub id: u64,
    /// When the request reached the balancer.
    pub arrival: Nanos,
    /// Its work in seconds at speed 1; the service time is fixed when service starts.
    pub work: f64,
    /// Which balancer sent it.
    pub balancer: u32,
    /// Whether it arrived inside the measured window.
    pub measured: bool,
    /// When a worker started serving it (set by the server).
    pub start: Nanos,
    /// When its service ends (set by the server when it starts; pushed back by pauses).
    pub end: Nanos,
}

impl Job {
    /// Request `id`'s job as balancer `balancer` sends it at `now`, before a server takes
    /// it: the server sets `start` and `end` when a worker serves it.
    pub fn sent(
        id: u64,
        arrival: Nanos,
        work: f64,
        balancer: u32,
        measured: bool,
        now: Nanos,
    ) -> Job {
        Job {
            id,
            arrival,
            work,
            balancer,
            measured,
            start: now,
            end: Nanos::ZERO,
        }
    }
}

impl Waiting for Job {
    /// A queued job's `start` is when it was sent, until a worker takes it.
    fn since(&self) -> Nanos {
        self.start
    }
}

/// What happened to a request offered to a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A worker was free: the request is in service for the returned time.
    Started(Nanos),
    /// All workers busy: the request waits.
    Queued,
    /// The waiting room is full: the request is refused.
    Rejected,
    /// The server is down (crashed): the connection is refused.
    Down,
}

/// A waiting request a freed worker starts serving, with its service time.
pub type Started = (Job, Nanos);

/// One server's state.
///
/// Laid out (`repr(C)`, aligned) so that an arrival or a completion on the usual path
/// reads two 64-byte lines: the first holds the requests (in service and waiting) and the
/// group, the second the counters and what starting a service reads. A pause, a warm-up
/// and live mode's calibrated overhead are read through one pointer (`extra`, set by
/// [`Server::pause`], [`Server::set_warm`] and [`Server::set_overhead`]), `None` on the
/// usual path; the other faults' fields and what admission control sheds lie in the third
/// line. At 10,000 servers the state is out of the core's cache; laid out by the compiler
/// (232 bytes, the fields read at each event spread over all of them) a server cost 4–5
/// lines an event.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
pub struct Server {
    /// Requests in service (at most `workers`).
    pub in_service: Vec<Job>,
    /// Requests waiting, oldest first.
    pub queue: VecDeque<Job>,
    /// Index of the server group (for its service-time distribution).
    pub group: usize,
    // The second line.
    /// Busy worker-nanoseconds since the start of the run, up to `last_change`.
    pub busy_time: u64,
    /// Time of the last state change.
    pub last_change: Nanos,
    /// Requests completed since the start of the run.
    pub completed: u64,
    /// Current speed factor (changed by slow-down faults).
    pub speed: f64,
    /// Admission control of the queue (`[servers.admission]`); `None`: plain FIFO.
    pub control: Option<Box<QueueControl>>,
    /// What changes a service's start or length besides the speed (a pause, a warm-up,
    /// live mode's overhead); `None` while nothing does.
    extra: Option<Box<Extra>>,
    /// Workers.
    pub workers: u32,
    /// Whether the server is crashed.
    pub down: bool,
    /// Waiting-room size (`None`: unbounded).
    pub queue_capacity: Option<u32>,
    // The third line: what only faults and admission control read.
    /// Added round trip (`delay` faults): each answer reaches its client this much later.
    pub delay: Nanos,
    /// While an `error` fault lasts: the fraction of requests answered with an error,
    /// the time to answer, and whether the answer is a refusal.
    pub error: Option<(f64, Nanos, bool)>,
    /// Requests dropped by admission control since the engine last took them.
    pub shed: Vec<Job>,
    /// Since when the queue has held someone (meaningful while it is not empty, and kept
    /// only under admission control, its one reader).
    nonempty_since: Nanos,
}

// An event's usual path reads the first two lines.
const _: () = assert!(std::mem::offset_of!(Server, busy_time) == 64);
const _: () = assert!(std::mem::offset_of!(Server, delay) == 128);

/// Seconds to serve `work` at `speed`. At full speed (most servers) the division, exact by
/// 1, is skipped: its latency delays the completion's scheduling.
#[inline(always)]
fn seconds(work: f64, speed: f64) -> f64 {
    if speed == 1.0 { work } else { work / speed }
}

/// What changes a service's start or length besides the server's speed. Each at its
/// neutral value changes nothing, bit for bit: `now.max(0)` is `now`, a factor of 1 is
/// no warm-up, and `secs + 0.0` is `secs`.
#[derive(Clone, Debug, Default)]
struct Extra {
    /// Until when the server is paused (stop-the-world): no work progresses before.
    paused_until: Nanos,
    /// While the server warms up after a cold start: its speed factor over time.
    warm: Option<Warmup>,
    /// Seconds added to every service time, whatever the speed (live mode's calibrated
    /// per-request server overhead).
    overhead: f64,
}

/// A linear warm-up: from `from` to `until` the server runs at `fraction` of its speed,
/// rising linearly to all of it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Warmup {
    /// When the cold start began.
    pub from: Nanos,
    /// When the server is warm.
    pub until: Nanos,
    /// Speed factor at `from`.
    pub fraction: f64,
}

impl Warmup {
    /// A warm-up starting at `from`, lasting `secs`, from `fraction` of the speed.
    pub fn new(from: Nanos, secs: f64, fraction: f64) -> Warmup {
        Warmup {
            from,
            until: from + Nanos::from_secs_f64(secs),
            fraction,
        }
    }

    /// The speed factor at `now`: `fraction` at `from`, 1 from `until` on, linear between.
    pub fn factor(&self, now: Nanos) -> f64 {
        if now >= self.until {
            return 1.0;
        }
        let done = (now.saturating_sub(self.from)).0 as f64 / (self.until - self.from).0 as f64;
        self.fraction + (1.0 - self.fraction) * done
    }
}

impl Server {
    /// An idle server.
    pub fn new(workers: u32, speed: f64, queue_capacity: Option<u32>, group: usize) -> Server {
        Server {
            in_service: Vec::with_capacity(workers as usize),
            queue: VecDeque::new(),
            group,
            busy_time: 0,
            last_change: Nanos::ZERO,
            completed: 0,
            speed,
            control: None,
            extra: None,
            workers,
            down: false,
            queue_capacity,
            delay: Nanos::ZERO,
            error: None,
            shed: Vec::new(),
            nonempty_since: Nanos::ZERO,
        }
    }

    /// What changes a service besides the speed, made to be changed.
    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Starts a warm-up (a cold start): from now on the server serves at its speed times
    /// the warm-up's factor.
    pub fn set_warm(&mut self, warm: Warmup) {
        self.extra_mut().warm = Some(warm);
    }

    /// Sets the seconds added to every service time (live mode's calibrated overhead).
    pub fn set_overhead(&mut self, overhead: f64) {
        if overhead != 0.0 || self.extra.is_some() {
            self.extra_mut().overhead = overhead;
        }
    }

    /// The next waiting request a freed worker serves at `now`, after admission control:
    /// the oldest (or, under adaptive LIFO while the queue is congested, the newest) that
    /// is not dropped. Dropped requests move to [`Server::shed`].
    ///
    /// Inlined into every completion, with admission control out of line: most servers
    /// have none, and with it inlined the whole function was sometimes left out of line,
    /// a call per completion.
    #[inline(always)]
    fn next_waiting(&mut self, now: Nanos) -> Option<Job> {
        match self.control.is_some() {
            false => self.queue.pop_front(),
            true => self.next_controlled(now),
        }
    }

    /// [`Server::next_waiting`] under admission control.
    #[inline(never)]
    fn next_controlled(&mut self, now: Nanos) -> Option<Job> {
        let c = self.control.as_deref_mut()?;
        c.next(&mut self.queue, self.nonempty_since, now, &mut self.shed)
    }

    /// Workers busy.
    #[inline]
    pub fn busy(&self) -> u32 {
        self.in_service.len() as u32
    }

    /// Number waiting.
    #[inline]
    pub fn queued(&self) -> u32 {
        self.queue.len() as u32
    }

    /// Integrates busy time up to `now` (call before every state change).
    #[inline]
    fn touch(&mut self, now: Nanos) {
        self.busy_time += u64::from(self.busy()) * (now - self.last_change).0;
        self.last_change = now;
    }

    /// Starts serving `job` at `now`: sets its start and end (after any pause under way)
    /// and returns the time until it ends.
    #[inline]
    fn start(&self, job: &mut Job, now: Nanos) -> Nanos {
        job.start = now;
        let Some(extra) = &self.extra else {
            // What the general case below computes with nothing extra (bit for bit: see
            // `Extra`).
            job.end = now + Nanos::from_secs_f64(seconds(job.work, self.speed));
            return job.end - now;
        };
        // A cold server serves at the speed of the moment service starts.
        let speed = match &extra.warm {
            None => self.speed,
            Some(w) => self.speed * w.factor(now),
        };
        let secs = seconds(job.work, speed);
        job.end = now.max(extra.paused_until) + Nanos::from_secs_f64(secs + extra.overhead);
        job.end - now
    }

    /// The server's load report at `now`.
    pub fn report(&self, now: Nanos) -> LoadReport {
        LoadReport {
            at: now,
            in_system: self.busy() + self.queued(),
            workers: self.workers,
            completed: self.completed,
            busy_time: self.busy_time + u64::from(self.busy()) * (now - self.last_change).0,
        }
    }

    /// Offers a request at time `now`.
    #[inline]
    pub fn admit(&mut self, mut job: Job, now: Nanos) -> Admission {
        if self.down {
            Admission::Down
        } else if self.busy() < self.workers {
            if let Some(c) = self.control.as_deref_mut() {
                c.served_at_once(now);
            }
            self.touch(now);
            let service = self.start(&mut job, now);
            self.in_service.push(job);
            Admission::Started(service)
        } else if self
            .queue_capacity
            .is_some_and(|c| self.queue.len() >= c as usize)
        {
            Admission::Rejected
        } else {
            if self.queue.is_empty() && self.control.is_some() {
                self.nonempty_since = now;
            }
            self.queue.push_back(job);
            Admission::Queued
        }
    }

    /// Request `id` finished at `now`: returns it, and the next waiting request with its
    /// service time, which a worker starts serving.
    #[inline(always)]
    pub fn finish(&mut self, id: u64, now: Nanos) -> (Option<Job>, Option<(Job, Nanos)>) {
        // A completion scheduled before a pause pushed the job's end back finds it still
        // running (`end` differs), one scheduled before a crash or cancellation finds nothing.
        let Some(pos) = self
            .in_service
            .iter()
            .position(|j| j.id == id && j.end == now)
        else {
            return (None, None);
        };
        self.touch(now);
        self.completed += 1;
        let done = self.in_service.swap_remove(pos);
        let next = self.next_waiting(now).map(|mut j| {
            let service = self.start(&mut j, now);
            self.in_service.push(j);
            (j, service)
        });
        (Some(done), next)
    }

    /// Withdraws request `id` at `now` (its client cancelled it): returns it and whether it
    /// was in service, and — when it freed a worker — the next waiting request with its
    /// service time, which the worker starts serving. `None` if the server does not hold it.
    pub fn cancel(&mut self, id: u64, now: Nanos) -> Option<(Job, bool, Option<Started>)> {
        if let Some(pos) = self.queue.iter().position(|j| j.id == id) {
            return self.queue.remove(pos).map(|j| (j, false, None));
        }
        let pos = self.in_service.iter().position(|j| j.id == id)?;
        self.touch(now);
        let gone = self.in_service.swap_remove(pos);
        let next = self.next_waiting(now).map(|mut j| {
            let service = self.start(&mut j, now);
            self.in_service.push(j);
            (j, service)
        });
        Some((gone, true, next))
    }

    /// Pauses the server from `now` for `length` (stop the world): work in service stops
    /// and resumes after the pause, so its end moves back by the part of the pause not
    /// already under way. Returns the requests in service with their new ends, whose
    /// completions the caller schedules again.
    pub fn pause(&mut self, now: Nanos, length: Nanos) -> Vec<(u64, Nanos)> {
        let until = now + length;
        let paused_until = &mut self.extra_mut().paused_until;
        let added = until.saturating_sub(now.max(*paused_until));
        *paused_until = (*paused_until).max(until);
        if added == Nanos::ZERO {
            return Vec::new();
        }
        self.in_service
            .iter_mut()
            .map(|j| {
                j.end += added;
                (j.id, j.end)
            })
            .collect()
    }

    /// Crashes the server at `now`: every request it holds is lost and returned.
    pub fn crash(&mut self, now: Nanos) -> Vec<Job> {
        self.touch(now);
        self.down = true;
        let mut lost: Vec<Job> = self.in_service.drain(..).collect();
        lost.extend(self.queue.drain(..));
        lost
    }

    /// Brings a crashed server back, empty.
    pub fn recover(&mut self, now: Nanos) {
        self.touch(now);
        self.down = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64) -> Job {
        Job {
            id,
            arrival: Nanos(id),
            work: 1e-9,
            balancer: 0,
            measured: true,
            start: Nanos::ZERO,
            end: Nanos::ZERO,
        }
    }

    #[test]
    fn fifo_with_bounded_queue() {
        // Work of 10 ns at speed 1; completions come at each job's end, as the engine
        // schedules them.
        let ten = |id| Job {
            work: 10e-9,
            ..job(id)
        };
        let mut s = Server::new(1, 1.0, Some(2), 0);
        assert_eq!(s.admit(ten(1), Nanos(1)), Admission::Started(Nanos(10)));
        assert_eq!(s.admit(ten(2), Nanos(2)), Admission::Queued);
        assert_eq!(s.admit(ten(3), Nanos(3)), Admission::Queued);
        assert_eq!(s.admit(ten(4), Nanos(4)), Admission::Rejected);
        assert_eq!(s.report(Nanos(5)).in_system, 3);
        // Not yet its end: nothing finishes.
        assert_eq!(s.finish(1, Nanos(10)), (None, None));
        let (done, next) = s.finish(1, Nanos(11));
        assert_eq!((done.unwrap().id, next.unwrap().0.id), (1, 2));
        assert_eq!(s.finish(2, Nanos(21)).1.unwrap().0.id, 3);
        // Job 3 waited until job 2 finished at 21.
        let started = Job {
            start: Nanos(21),
            end: Nanos(31),
            ..ten(3)
        };
        assert_eq!(s.finish(3, Nanos(31)), (Some(started), None));
        assert_eq!(s.busy(), 0);
        let r = s.report(Nanos(40));
        assert_eq!((r.completed, r.busy_time, r.in_system), (3, 30, 0));
    }

    /// Job `id` of 10 ns of work, sent at `at`.
    fn ten_at(id: u64, at: u64) -> Job {
        Job {
            work: 10e-9,
            start: Nanos(at),
            ..job(id)
        }
    }

    fn controlled(control: QueueControl) -> Server {
        let mut s = Server::new(1, 1.0, None, 0);
        s.control = Some(Box::new(control));
        s
    }

    #[test]
    fn a_queue_timeout_drops_what_waited_too_long_when_a_worker_frees() {
        let mut s = controlled(QueueControl {
            queue_timeout: Some(Nanos(12)),
            ..QueueControl::default()
        });
        assert_eq!(
            s.admit(ten_at(1, 0), Nanos(0)),
            Admission::Started(Nanos(10))
        );
        s.admit(ten_at(2, 0), Nanos(0));
        s.admit(ten_at(3, 5), Nanos(5));
        // At 10 job 2 has waited 10 ≤ 12: served.
        assert_eq!(s.finish(1, Nanos(10)).1.unwrap().0.id, 2);
        assert!(s.shed.is_empty());
        // At 20 job 3 has waited 15 > 12: dropped; job 4 (waited 1) is served instead.
        s.admit(ten_at(4, 19), Nanos(19));
        let (done, next) = s.finish(2, Nanos(20));
        assert_eq!((done.unwrap().id, next.unwrap().0.id), (2, 4));
        assert_eq!(s.shed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![3]);
        // A cancellation that frees the worker applies the timeout too.
        s.shed.clear();
        s.admit(ten_at(5, 21), Nanos(21));
        let (_, _, next) = s.cancel(4, Nanos(40)).unwrap();
        assert!(next.is_none());
        assert_eq!(s.shed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn adaptive_lifo_serves_the_newest_once_the_queue_stays_congested() {
        let mut s = controlled(QueueControl {
            lifo_after: Some(Nanos(15)),
            ..QueueControl::default()
        });
        s.admit(ten_at(1, 0), Nanos(0));
        // The queue holds someone from 1 on.
        for (id, at) in [(2, 1), (3, 2), (4, 3)] {
            s.admit(ten_at(id, at), Nanos(at));
        }
        // At 10 it has been non-empty for 9 < 15: oldest first.
        assert_eq!(s.finish(1, Nanos(10)).1.unwrap().0.id, 2);
        s.admit(ten_at(5, 12), Nanos(12));
        // At 20, non-empty for 19 ≥ 15: newest first.
        assert_eq!(s.finish(2, Nanos(20)).1.unwrap().0.id, 5);
        assert_eq!(s.finish(5, Nanos(30)).1.unwrap().0.id, 4);
        assert_eq!(s.finish(4, Nanos(40)).1.unwrap().0.id, 3);
        // Empty, then refilled: first in, first out again until it stays congested.
        assert_eq!(s.finish(3, Nanos(50)).1, None);
        s.admit(ten_at(6, 51), Nanos(51));
        s.admit(ten_at(7, 52), Nanos(52));
        s.admit(ten_at(8, 53), Nanos(53));
        assert_eq!(s.finish(6, Nanos(61)).1.unwrap().0.id, 7);
        assert!(s.shed.is_empty());
    }

    #[test]
    fn adaptive_lifo_drops_expired_work_behind_the_newest() {
        let mut s = controlled(QueueControl {
            queue_timeout: Some(Nanos(25)),
            lifo_after: Some(Nanos(0)),
            ..QueueControl::default()
        });
        s.admit(ten_at(1, 0), Nanos(0));
        for (id, at) in [(2, 1), (3, 2), (4, 20)] {
            s.admit(ten_at(id, at), Nanos(at));
        }
        // At 30 jobs 2 and 3 have waited more than 25: dropped though 4 is served first.
        assert_eq!(s.finish(1, Nanos(10)).1.unwrap().0.id, 4);
        assert!(s.shed.is_empty());
        assert_eq!(s.finish(4, Nanos(20)).1.unwrap().0.id, 3);
        s.admit(ten_at(5, 25), Nanos(25));
        assert_eq!(s.finish(3, Nanos(30)).1.unwrap().0.id, 5);
        assert_eq!(s.shed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn cancel_withdraws_from_queue_or_worker() {
        let mut s = Server::new(1, 1.0, None, 0);
        s.admit(job(1), Nanos(0));
        s.admit(job(2), Nanos(0));
        s.admit(job(3), Nanos(0));
        // Queued: leaves the queue, no worker freed.
        let (j, in_service, next) = s.cancel(3, Nanos(1)).unwrap();
        assert_eq!((j.id, in_service, next), (3, false, None));
        // In service: the worker takes the next waiting request.
        let (j, in_service, next) = s.cancel(1, Nanos(2)).unwrap();
        assert_eq!((j.id, in_service), (1, true));
        assert_eq!(next.unwrap().0.id, 2);
        assert_eq!((s.busy(), s.queued()), (1, 0));
        assert!(s.cancel(1, Nanos(3)).is_none());
        // Busy time counts the cancelled request's 2 ns of service.
        assert_eq!(s.report(Nanos(2)).busy_time, 2);
    }

    #[test]
    fn a_pause_stalls_work_in_service_and_delays_new_work() {
        // Work of 10 ns at speed 1.
        let big = |id| Job {
            work: 10e-9,
            ..job(id)
        };
        let mut s = Server::new(2, 1.0, None, 0);
        assert_eq!(s.admit(big(1), Nanos(0)), Admission::Started(Nanos(10)));
        // Paused at 4 for 5: job 1 ends at 15; its completion at 10 finds it running.
        assert_eq!(s.pause(Nanos(4), Nanos(5)), vec![(1, Nanos(15))]);
        assert_eq!(s.finish(1, Nanos(10)), (None, None));
        // A job started during the pause starts its work when the pause ends (9).
        assert_eq!(s.admit(big(2), Nanos(6)), Admission::Started(Nanos(13)));
        // A second pause overlapping the first only adds its own new part (9 to 11).
        assert_eq!(
            s.pause(Nanos(7), Nanos(4)),
            vec![(1, Nanos(17)), (2, Nanos(21))]
        );
        assert_eq!(s.finish(1, Nanos(17)).0.map(|j| j.id), Some(1));
        assert_eq!(s.finish(2, Nanos(21)).0.map(|j| j.id), Some(2));
    }

    #[test]
    fn crash_loses_everything_and_refuses_until_recovery() {
        let mut s = Server::new(1, 1.0, None, 0);
        s.admit(job(1), Nanos(0));
        s.admit(job(2), Nanos(0));
        let lost = s.crash(Nanos(5));
        assert_eq!(lost.iter().map(|j| j.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(s.admit(job(3), Nanos(6)), Admission::Down);
        // A completion scheduled before the crash finds nothing.
        assert_eq!(s.finish(1, Nanos(1)), (None, None));
        s.recover(Nanos(8));
        assert!(matches!(s.admit(job(4), Nanos(9)), Admission::Started(_)));
    }

    proptest::proptest! {
        /// A service started with nothing extra takes the short path; with every extra at
        /// its neutral value, the general one: the same ends, bit for bit, whatever the
        /// work, speed and time (a warm-up over and done is neutral too).
        #[test]
        fn nothing_extra_is_the_general_path(
            work in proptest::prop_oneof![0.0..1e-3, 0.0..1e3, proptest::prelude::Just(0.0)],
            speed in proptest::prop_oneof![proptest::prelude::Just(1.0), 0.01..100.0],
            now in 0u64..1 << 50,
            warm_over in proptest::prelude::any::<bool>(),
        ) {
            let plain = Server::new(1, speed, None, 0);
            let mut general = Server::new(1, speed, None, 0);
            general.extra = Some(Box::default());
            if warm_over {
                general.set_warm(Warmup::new(Nanos::ZERO, 0.0, 0.5));
            }
            let j = Job { work, ..job(1) };
            let (mut a, mut b) = (j, j);
            let ta = plain.start(&mut a, Nanos(now));
            let tb = general.start(&mut b, Nanos(now));
            proptest::prop_assert_eq!((ta, a), (tb, b));
        }
    }
}
