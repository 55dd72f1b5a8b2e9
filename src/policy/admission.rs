//! Server-side admission control (`[servers.admission]`): what a server does with its
//! queue when a worker frees — a queue timeout, CoDel in folly's variant, adaptive LIFO
//! ("Fail at Scale", Maurer, ACM Queue 13(8), 2015). Written once, over a queue of any
//! [`Waiting`] item, for both sides: the simulated servers ([`crate::sim::server`], whose
//! queue holds jobs in scenario time) and the live Rust backends
//! ([`crate::live::server`], whose queue holds waiting calls in wall-clock time, the
//! durations scaled by the replay's time scale: [`QueueControl::scaled`]).
//!
//! ```text
//!  worker frees at `now` ─► QueueControl::next(queue, nonempty_since, now, shed)
//!      ├─ adaptive LIFO congested? newest first (expired oldest dropped on the way)
//!      ├─ waited > queue_timeout, or CoDel overloaded and waited > 2 × target: ─► shed
//!      └─ else ─► served
//! ```

use std::collections::VecDeque;

use crate::time::Nanos;

/// A request waiting in a server's queue, as admission control sees it.
pub trait Waiting {
    /// When it joined the queue.
    fn since(&self) -> Nanos;
}

/// Server-side admission control of one server's queue (`[servers.admission]`), applied
/// as a freed worker takes its next request — where Thrift's `ThreadManager` checks a
/// task's expiration and asks folly's `Codel` whether to shed it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueControl {
    /// A request that waited longer is dropped (server-side deadline, "Fail at Scale").
    pub queue_timeout: Option<Nanos>,
    /// CoDel's state, when set.
    pub codel: Option<Codel>,
    /// Adaptive LIFO: newest first once the queue has not been empty for this long.
    pub lifo_after: Option<Nanos>,
}

impl QueueControl {
    /// The control a group's `[servers.admission]` asks for.
    pub fn new(spec: &crate::scenario::AdmissionSpec) -> QueueControl {
        QueueControl {
            queue_timeout: spec.queue_timeout.map(Nanos::from_secs_f64),
            codel: spec.codel.map(|c| {
                Codel::new(
                    Nanos::from_secs_f64(c.target),
                    Nanos::from_secs_f64(c.interval),
                )
            }),
            lifo_after: spec.adaptive_lifo.map(|l| Nanos::from_secs_f64(l.after)),
        }
    }

    /// The control `spec` asks for, every duration `k` times as long: a live backend's,
    /// in wall-clock time at time scale `k` (its service is `k` times the scenario's).
    pub fn scaled(spec: &crate::scenario::AdmissionSpec, k: f64) -> QueueControl {
        let at = |secs: f64| Nanos::from_secs_f64(secs * k);
        QueueControl {
            queue_timeout: spec.queue_timeout.map(at),
            codel: spec.codel.map(|c| Codel::new(at(c.target), at(c.interval))),
            lifo_after: spec.adaptive_lifo.map(|l| at(l.after)),
        }
    }

    /// A request went into service at `now` without waiting: CoDel sees a delay of 0
    /// (not overloaded).
    pub fn served_at_once(&mut self, now: Nanos) {
        if let Some(c) = self.codel.as_mut() {
            c.drops(now, Nanos::ZERO);
        }
    }

    /// The next waiting request a freed worker serves at `now`, from `queue` (oldest
    /// first, non-empty since `nonempty_since` when it holds someone): the oldest — or,
    /// under adaptive LIFO while the queue has stayed non-empty for `lifo_after`, the
    /// newest — that is not dropped. Dropped requests go to `shed`, in the order dropped.
    pub fn next<T: Waiting>(
        &mut self,
        queue: &mut VecDeque<T>,
        nonempty_since: Nanos,
        now: Nanos,
        shed: &mut Vec<T>,
    ) -> Option<T> {
        loop {
            let lifo = self
                .lifo_after
                .is_some_and(|after| !queue.is_empty() && now - nonempty_since >= after);
            if lifo {
                // Expired work behind the newest is dropped as it expires, not left to
                // wait until the congestion ends.
                while let Some(j) = queue.front() {
                    let delay = now - j.since();
                    let expired = self.queue_timeout.is_some_and(|t| delay > t)
                        || self.codel.as_ref().is_some_and(|c| c.expired(delay));
                    if !expired {
                        break;
                    }
                    shed.extend(queue.pop_front());
                }
            }
            let j = if lifo {
                queue.pop_back()
            } else {
                queue.pop_front()
            }?;
            let delay = now - j.since();
            if self.queue_timeout.is_some_and(|t| delay > t)
                || self.codel.as_mut().is_some_and(|c| c.drops(now, delay))
            {
                shed.push(j);
                continue;
            }
            return Some(j);
        }
    }
}

/// CoDel (Nichols & Jacobson, "Controlling Queue Delay", ACM Queue 10(5), 2012) in the
/// variant of folly's `Codel` (`folly/executors/Codel.cpp`), which Thrift servers and
/// "Fail at Scale" (Maurer, ACM Queue 13(8), 2015) use: time runs in intervals; the queue
/// is *overloaded* during an interval when the smallest queueing delay seen in the
/// previous one exceeded `target` (no request got through quickly: a standing queue, not
/// a burst). While overloaded, a request that waited more than twice `target` (folly's
/// slough timeout) is dropped. The first request of each interval is never dropped and
/// starts its minimum. Unlike CoDel proper, there is no drop rate rising with the square
/// root of the drop count: folly's authors found sloughing worked better for RPC servers.
#[derive(Clone, Debug, PartialEq)]
pub struct Codel {
    target: Nanos,
    interval: Nanos,
    /// End of the current interval.
    interval_end: Nanos,
    /// Smallest delay seen in the current interval.
    min_delay: Nanos,
    /// The next delay seen starts a new minimum.
    reset: bool,
    overloaded: bool,
}

impl Codel {
    /// CoDel with `target` and `interval`, before any request (at time 0: the first
    /// interval ends at `interval`, where folly's ends at the first request after it is
    /// built).
    pub fn new(target: Nanos, interval: Nanos) -> Codel {
        Codel {
            target,
            interval,
            interval_end: interval,
            min_delay: Nanos::ZERO,
            reset: true,
            overloaded: false,
        }
    }

    /// A request that waited `delay` is about to be served at `now`: whether to drop it
    /// instead (folly `Codel::overloaded`).
    pub fn drops(&mut self, now: Nanos, delay: Nanos) -> bool {
        if now > self.interval_end && !self.reset {
            self.reset = true;
            self.interval_end = now + self.interval;
            self.overloaded = self.min_delay > self.target;
        }
        if self.reset {
            self.reset = false;
            self.min_delay = delay;
            return false;
        }
        self.min_delay = self.min_delay.min(delay);
        self.overloaded && delay > self.slough()
    }

    /// Whether a request that waited `delay` would be dropped now, without counting it
    /// as seen: for work expired behind the newest under adaptive LIFO.
    fn expired(&self, delay: Nanos) -> bool {
        self.overloaded && delay > self.slough()
    }

    /// folly's slough timeout: twice the target.
    fn slough(&self) -> Nanos {
        Nanos(self.target.0.saturating_mul(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codel_drops_beyond_twice_the_target_only_after_an_interval_without_short_waits() {
        // folly's Codel: target 5, interval 100 (ns here).
        let mut c = Codel::new(Nanos(5), Nanos(100));
        // The first delay starts the interval's minimum; nothing is dropped while the
        // previous interval's minimum is unknown or below the target.
        assert!(!c.drops(Nanos(1), Nanos(50)));
        assert!(!c.drops(Nanos(50), Nanos(30)));
        // A new interval: the last one's minimum (30) exceeds 5, so the queue is
        // overloaded; the first request of the interval still goes through.
        assert!(!c.drops(Nanos(102), Nanos(40)));
        assert!(c.overloaded);
        assert!(c.drops(Nanos(103), Nanos(11)));
        assert!(!c.drops(Nanos(104), Nanos(10)), "10 is not beyond 2 × 5");
        // A short wait in this interval ends the overload at the next one.
        assert!(!c.drops(Nanos(105), Nanos(2)));
        assert!(!c.drops(Nanos(210), Nanos(90)));
        assert!(!c.overloaded);
        assert!(!c.drops(Nanos(211), Nanos(90)));
    }

    /// A queued item that joined at a time.
    impl Waiting for (u64, Nanos) {
        fn since(&self) -> Nanos {
            self.1
        }
    }

    #[test]
    fn scaled_durations_are_the_scenarios_times_the_scale() {
        let spec = crate::scenario::AdmissionSpec {
            queue_timeout: Some(0.01),
            codel: None,
            adaptive_lifo: Some(crate::scenario::LifoSpec { after: 0.5 }),
        };
        let c = QueueControl::scaled(&spec, 2.0);
        assert_eq!(c.queue_timeout, Some(Nanos(20_000_000)));
        assert_eq!(c.lifo_after, Some(Nanos(1_000_000_000)));
        assert_eq!(QueueControl::scaled(&spec, 1.0), QueueControl::new(&spec));
    }

    #[test]
    fn a_queue_of_any_item_sheds_what_waited_too_long() {
        let mut c = QueueControl {
            queue_timeout: Some(Nanos(10)),
            ..QueueControl::default()
        };
        let mut q: VecDeque<(u64, Nanos)> = [(1, Nanos(0)), (2, Nanos(3)), (3, Nanos(8))].into();
        let mut shed = Vec::new();
        assert_eq!(
            c.next(&mut q, Nanos(0), Nanos(12), &mut shed),
            Some((2, Nanos(3)))
        );
        assert_eq!(shed, vec![(1, Nanos(0))]);
        assert_eq!(c.next(&mut q, Nanos(0), Nanos(30), &mut shed), None);
        assert_eq!(shed.len(), 2);
    }
}
