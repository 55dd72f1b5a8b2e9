//! Request rates over time for the trace of a run ([`super::Run::trace`]): per sample
//! interval, how many requests arrived (offered load), how many attempts were sent
//! (offered load including retries and hedges), and how many requests ended served,
//! failed, timed out or refused.
//!
//! Counters per interval, never per request: memory is one [`Counts`] per interval of the
//! trace's grid whatever the run's length. Every request of the run counts (warm-up and
//! drain included, measured or not), at the instant of its event: arrivals and attempts
//! when sent, ends when the client learns of them. Events at or after the end of the
//! grid (the drain after the measured window) go to one last bucket, so that the intervals
//! plus that bucket hold every request exactly once.

use serde::{Deserialize, Serialize};

use crate::policy::Cause;
use crate::strategy::Outcome;
use crate::time::Nanos;

/// What happened to requests in one interval of time (counts, not rates).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests that arrived (offered load).
    pub arrived: u64,
    /// Attempts sent: one per request, plus every retry and hedge (offered load including
    /// retries). An attempt refused at once (no server, circuit breaker) counts too.
    pub attempts: u64,
    /// Requests served (goodput).
    pub ok: u64,
    /// Requests that ended failed: server crashed or answered an error, or no server to
    /// route to.
    pub failed: u64,
    /// Requests that ended by a client timeout (client policies only).
    pub timed_out: u64,
    /// Requests that ended refused: full queue, admission control, "429" answers.
    pub rejected: u64,
}

impl Counts {
    /// Requests that ended, whatever the outcome.
    pub fn ended(&self) -> u64 {
        self.ok + self.failed + self.timed_out + self.rejected
    }

    /// Adds `other` in.
    pub fn add(&mut self, other: &Counts) {
        self.arrived += other.arrived;
        self.attempts += other.attempts;
        self.ok += other.ok;
        self.failed += other.failed;
        self.timed_out += other.timed_out;
        self.rejected += other.rejected;
    }
}

/// How a request ended, as the tally counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    Ok,
    Failed,
    TimedOut,
    Rejected,
}

impl From<Outcome> for End {
    fn from(o: Outcome) -> End {
        match o {
            Outcome::Ok => End::Ok,
            Outcome::Failed => End::Failed,
            Outcome::Rejected => End::Rejected,
        }
    }
}

impl From<Option<Cause>> for End {
    fn from(c: Option<Cause>) -> End {
        match c {
            None => End::Ok,
            Some(Cause::Timeout) => End::TimedOut,
            Some(Cause::Rejected) => End::Rejected,
            Some(Cause::Failed) => End::Failed,
        }
    }
}

/// The counters of a run being traced: `intervals` buckets of `every`, then one for
/// everything later.
#[derive(Clone, Debug)]
pub(crate) struct Tally {
    every: Nanos,
    /// One per interval `[k·every, (k+1)·every)`, then the bucket of all later events.
    counts: Vec<Counts>,
    /// The bucket of the last event, as (index, its start, its end): events come in time
    /// order, so most fall in the bucket of the one before and need no division.
    current: (usize, u64, u64),
}

impl Tally {
    /// Intervals of `every` (at least 1 ns) covering `[0, to)`, and a last bucket.
    pub(crate) fn new(every: Nanos, to: Nanos) -> Tally {
        let every = every.max(Nanos(1));
        let intervals = to.0.div_ceil(every.0) as usize;
        Tally {
            every,
            counts: vec![Counts::default(); intervals + 1],
            current: (0, 0, 0),
        }
    }

    /// The bucket of an event at `now`.
    #[inline]
    fn at(&mut self, now: Nanos) -> &mut Counts {
        let (_, start, end) = self.current;
        if now.0 < start || now.0 >= end {
            self.current = self.bucket(now);
        }
        &mut self.counts[self.current.0]
    }

    /// The bucket of `now`, as (index, start, end): the interval's bounds, or from the end
    /// of the grid on for the last bucket.
    #[cold]
    fn bucket(&self, now: Nanos) -> (usize, u64, u64) {
        let last = self.counts.len() - 1;
        let k = usize::try_from(now.0 / self.every.0).map_or(last, |k| k.min(last));
        let start = (k as u64).saturating_mul(self.every.0);
        let end = if k == last {
            u64::MAX
        } else {
            start.saturating_add(self.every.0)
        };
        (k, start, end)
    }

    /// A request arrived at `now`.
    #[inline]
    pub(crate) fn arrived(&mut self, now: Nanos) {
        self.at(now).arrived += 1;
    }

    /// An attempt was sent at `now`.
    #[inline]
    pub(crate) fn attempt(&mut self, now: Nanos) {
        self.at(now).attempts += 1;
    }

    /// A request ended at `now`.
    #[inline]
    pub(crate) fn ended(&mut self, now: Nanos, end: End) {
        let c = self.at(now);
        match end {
            End::Ok => c.ok += 1,
            End::Failed => c.failed += 1,
            End::TimedOut => c.timed_out += 1,
            End::Rejected => c.rejected += 1,
        }
    }

    /// (interval length, counts per interval, counts of the later bucket).
    pub(crate) fn finish(mut self) -> (Nanos, Vec<Counts>, Counts) {
        let after = self.counts.pop().unwrap_or_default();
        (self.every, self.counts, after)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::scenario::Scenario;
    use crate::sim::{Run, TraceSpec};

    /// Every way a request ends, with and without a client policy: a crash (failed), an
    /// error fault answering half its requests "429" (rejected), full queues (rejected),
    /// retries, hedges and timeouts.
    const SRC: &str = r#"
duration = 6
[arrivals]
process = "poisson"
rate = 1500
[[servers]]
name = "s"
count = 4
workers = 2
queue_capacity = 8
service = { dist = "exponential", mean = 0.004 }
[[faults]]
server = "s-1"
kind = "crash"
at = 1
duration = 1
detection = 0.3
[[faults]]
server = "s-2"
kind = "error"
at = 2.5
duration = 1
fraction = 0.5
status = "rejected"
[[faults]]
server = "s"
kind = "slow"
at = 4
duration = 1
factor = 3.0
[[strategies]]
kind = "round_robin"
[[strategies]]
label = "retries"
kind = "least_request"
[strategies.policy]
timeout = 0.05
per_try_timeout = 0.02
[strategies.policy.retry]
max_attempts = 3
[[strategies]]
label = "hedged"
kind = "round_robin"
[strategies.policy]
timeout = 0.05
[strategies.policy.hedge]
delay = 0.01
max_attempts = 2
"#;

    /// The per-interval counts, plus the drain's, sum to the run's totals (no warm-up, so
    /// every request is measured): no request lost nor counted twice, each ends once; and
    /// tracing leaves the run bit for bit as it was.
    #[test]
    fn per_interval_counts_sum_to_the_runs_totals() {
        let s = Scenario::from_source(Path::new("t.toml"), SRC).unwrap();
        let spec = TraceSpec {
            every: Nanos::from_secs_f64(0.07),
            servers: vec![0, 1],
        };
        for entry in &s.strategies {
            let label = entry.label();
            let traced = Run::entry(&s, entry, 0)
                .trace(Some(&spec))
                .simulate()
                .unwrap();
            let plain = Run::entry(&s, entry, 0).metrics();
            let m = traced.metrics;
            assert_eq!(m.latency_sum, plain.latency_sum, "{label}");
            let trace = traced.trace.unwrap();
            assert_eq!(trace.every, spec.every);
            // 6 s / 70 ms: 85.7 intervals, the last one partly past the window.
            assert_eq!(trace.counts.len(), 86, "{label}");
            let mut total = trace.after;
            for c in &trace.counts {
                total.add(c);
            }
            assert_eq!(total.arrived, m.arrived, "{label}");
            assert_eq!(total.attempts, m.client.attempts, "{label}");
            assert_eq!(total.ok, m.latency.len(), "{label}");
            assert_eq!(total.failed, m.failed + m.unroutable, "{label}");
            assert_eq!(total.timed_out, m.client.timed_out, "{label}");
            assert_eq!(total.rejected, m.rejected, "{label}");
            assert_eq!(total.ended(), total.arrived, "{label}");
            // Every kind of end happened somewhere, so each sum above is tested.
            assert!(total.failed > 0 && total.rejected > 0, "{label}: {total:?}");
            if entry.policy.is_some() {
                assert!(total.attempts > total.arrived, "{label}: {total:?}");
                assert!(total.timed_out > 0, "{label}: {total:?}");
            }
            // Arrivals stop at the end of the window; only ends drain after it.
            assert_eq!(trace.after.arrived, 0, "{label}");
        }
    }

    #[test]
    fn events_fall_in_their_interval_and_late_ones_in_the_last_bucket() {
        let mut t = Tally::new(Nanos(10), Nanos(25));
        t.arrived(Nanos(0));
        t.attempt(Nanos(9));
        t.attempt(Nanos(10));
        t.ended(Nanos(29), End::Ok);
        t.ended(Nanos(30), End::Failed);
        t.ended(Nanos(u64::MAX), End::TimedOut);
        let (every, counts, after) = t.finish();
        assert_eq!(every, Nanos(10));
        assert_eq!(counts.len(), 3);
        assert_eq!((counts[0].arrived, counts[0].attempts), (1, 1));
        assert_eq!(counts[1].attempts, 1);
        assert_eq!(counts[2].ok, 1);
        assert_eq!((after.failed, after.timed_out, after.ended()), (1, 1, 2));
    }

    proptest::proptest! {
        /// The bucket kept from the last event changes nothing: events in any order (time
        /// order is the engine's, but any works) land where a division puts them.
        #[test]
        fn the_kept_bucket_is_the_divided_one(
            every in 1u64..50,
            to in 0u64..400,
            times in proptest::collection::vec(
                proptest::prop_oneof![0u64..500, proptest::prelude::any::<u64>()],
                0..60,
            ),
        ) {
            let mut t = Tally::new(Nanos(every), Nanos(to));
            let mut want = vec![0u64; t.counts.len()];
            for &x in &times {
                t.arrived(Nanos(x));
                let last = want.len() - 1;
                want[usize::try_from(x / every).map_or(last, |k| k.min(last))] += 1;
            }
            let got: Vec<u64> = t.counts.iter().map(|c| c.arrived).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
