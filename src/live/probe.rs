//! Probes in live mode: the `probe` call of `thrift/lbsim.thrift`, sent off the
//! dispatcher's path, with the scenario's `[probes] delay` and `cost` played time-scaled.
//!
//! A strategy that probes ([`crate::strategy::Strategy::probes`]) asks for probes while
//! the dispatcher routes; the dispatcher hands each to the prober thread of that backend
//! (one connection each, opened on first use) and goes on. As in the simulator
//! ([`crate::sim::probe`]):
//!
//! - **delay**: a probe reaches its server half the scenario's `[probes] delay` (× the
//!   time scale) after it was asked for, and its answer reaches the strategy the whole
//!   delay after. The prober sleeps until the probe is due to leave (the due time less half
//!   the real round trip it measures, an EWMA), and the dispatcher holds the answer until
//!   its due time ([`HeldAnswers`]), or takes it when it really arrives if that is later
//!   (counted in [`Prober::late`]: the loopback's real round trip is part of the delay, so
//!   a scenario delay shorter than it cannot be played). Asks are first in, first out per
//!   backend, so due times are monotone and nothing serialises beyond the call itself.
//! - **cost**: the probe carries `[probes] cost` (× the time scale) as its `cost_ns`; the
//!   server answers with its load as the probe arrived, then runs a job of that work that
//!   holds a worker, queued first in, first out behind calls (`server/costs.rs`). The
//!   answers carry what those jobs took in total, from which the dispatcher adds them to
//!   the server's busy and queue figures (the simulator counts probe jobs in both, and in
//!   no request count).
//!
//! The dispatcher drains answers whenever it wakes (before routing a request and between
//! completions), so an answer due before a request is routed reaches the strategy before
//! it, stamped with its due time, as in the simulator, where answers arrive between
//! events. A probe that fails (connection refused, timeout) is never answered, as a
//! crashed server's in the simulator.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::client::{ClientConfig, Connection, ReplyLoad};

/// A probe's answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer {
    /// Backend probed.
    pub backend: usize,
    /// Balancer that asked for it.
    pub balancer: usize,
    /// When it was asked for.
    pub asked: Instant,
    /// When it reaches the strategy: the scenario's delay after `asked`, or when it
    /// really came if later.
    pub due: Instant,
    /// When it really came.
    pub received: Instant,
    /// The backend's load as the probe arrived.
    pub load: ReplyLoad,
    /// What the backend's probe-cost jobs that ended so far took, (waited, served)
    /// wall-clock nanoseconds in total, if it runs them.
    pub costs: Option<(u64, u64)>,
}

/// How probes travel and what they cost, wall-clock at the replay's time scale.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ProbeTiming {
    /// The scenario's `[probes] delay` × the time scale: from ask to answer.
    pub round_trip: Duration,
    /// The scenario's `[probes] cost` × the time scale, in nanoseconds of work at speed
    /// 1 (`None`: free).
    pub cost_ns: Option<i64>,
}

impl ProbeTiming {
    /// The timing of `probes` at time scale `scale`.
    pub(crate) fn new(probes: &crate::scenario::ProbeSpec, scale: f64) -> ProbeTiming {
        let cost = probes.cost * 1e9 * scale;
        ProbeTiming {
            round_trip: Duration::from_secs_f64((probes.delay * scale).max(0.0)),
            cost_ns: (cost > 0.0).then(|| cost.round().min(i64::MAX as f64) as i64),
        }
    }
}

/// One prober thread per backend.
pub(crate) struct Prober {
    ask: Vec<Sender<(usize, Instant)>>,
    answers: Receiver<Answer>,
    threads: Vec<JoinHandle<()>>,
    /// Probes whose real round trip exceeded the scenario's (time-scaled) delay.
    late: Arc<AtomicU64>,
}

impl Prober {
    /// Probers for `addrs`, connecting with `cfg`, playing `timing`.
    pub(crate) fn new(addrs: &[SocketAddr], cfg: &ClientConfig, timing: ProbeTiming) -> Prober {
        let (tx, answers) = mpsc::channel();
        let late = Arc::new(AtomicU64::new(0));
        let mut ask = Vec::new();
        let mut threads = Vec::new();
        for (i, &addr) in addrs.iter().enumerate() {
            let (atx, arx) = mpsc::channel::<(usize, Instant)>();
            let tx = tx.clone();
            let cfg = *cfg;
            let late = Arc::clone(&late);
            let spawned = thread::Builder::new()
                .name(format!("lbsim-probe-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || {
                    super::server::precise_sleeps();
                    probe_loop(i, addr, &cfg, timing, &arx, &tx, &late);
                });
            if let Ok(t) = spawned {
                threads.push(t);
            }
            // Without a thread the sender's receiver is gone: probes of it are lost.
            ask.push(atx);
        }
        Prober {
            ask,
            answers,
            threads,
            late,
        }
    }

    /// Sends a probe of `backend` now, for balancer `balancer`.
    pub(crate) fn send(&self, backend: usize, balancer: usize, now: Instant) {
        if let Some(a) = self.ask.get(backend) {
            let _ = a.send((balancer, now));
        }
    }

    /// An answer that has come back, if any.
    pub(crate) fn try_recv(&self) -> Option<Answer> {
        self.answers.try_recv().ok()
    }

    /// Probes so far whose real round trip exceeded the scenario's delay × time scale.
    pub(crate) fn late(&self) -> u64 {
        self.late.load(AtomicOrdering::Relaxed)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.ask.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Weight of each new round trip in a prober's estimate.
const RTT_WEIGHT: f64 = 0.1;

fn probe_loop(
    i: usize,
    addr: SocketAddr,
    cfg: &ClientConfig,
    timing: ProbeTiming,
    asked: &Receiver<(usize, Instant)>,
    answers: &Sender<Answer>,
    late: &AtomicU64,
) {
    let mut conn: Option<Connection> = None;
    // The real round trip, estimated: half of it is taken off the way out.
    let mut rtt = Duration::ZERO;
    while let Ok((b, at)) = asked.recv() {
        if conn.as_ref().is_none_or(Connection::is_broken) {
            conn = Connection::connect(addr, cfg).ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        let leave = (at + timing.round_trip / 2)
            .checked_sub(rtt / 2)
            .unwrap_or(at);
        let now = Instant::now();
        if leave > now {
            thread::sleep(leave - now);
        }
        let sent = Instant::now();
        let Ok((load, costs)) = c.probe_at_cost(timing.cost_ns) else {
            continue;
        };
        let received = Instant::now();
        let took = received - sent;
        rtt = if rtt.is_zero() {
            took
        } else {
            rtt.mul_f64(1.0 - RTT_WEIGHT) + took.mul_f64(RTT_WEIGHT)
        };
        let due = at + timing.round_trip;
        if received > due && !timing.round_trip.is_zero() {
            late.fetch_add(1, AtomicOrdering::Relaxed);
        }
        let answer = Answer {
            backend: i,
            balancer: b,
            asked: at,
            due: due.max(received),
            received,
            load,
            costs,
        };
        if answers.send(answer).is_err() {
            return;
        }
    }
}

/// Answers that came back before their due time, held until it, earliest first.
#[derive(Default)]
pub(crate) struct HeldAnswers {
    held: BinaryHeap<Reverse<Held>>,
    next: u64,
}

struct Held(Instant, u64, Answer);

impl PartialEq for Held {
    fn eq(&self, other: &Held) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Held) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Held) -> Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

impl HeldAnswers {
    /// Holds `a` until its due time (ties in arrival order).
    pub(crate) fn hold(&mut self, a: Answer) {
        self.next += 1;
        self.held.push(Reverse(Held(a.due, self.next, a)));
    }

    /// The earliest answer due by `now`, if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Answer> {
        if self.held.peek().is_some_and(|Reverse(h)| h.0 <= now) {
            self.held.pop().map(|Reverse(h)| h.2)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(due: Instant, backend: usize) -> Answer {
        Answer {
            backend,
            balancer: 0,
            asked: due,
            due,
            received: due,
            load: ReplyLoad {
                in_flight: 0,
                queued: 0,
                service_ns: 0,
                latency_ns: 0,
            },
            costs: None,
        }
    }

    #[test]
    fn held_answers_come_out_at_their_due_time_earliest_first() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut h = HeldAnswers::default();
        h.hold(answer(t + ms(3), 0));
        h.hold(answer(t + ms(1), 1));
        h.hold(answer(t + ms(1), 2));
        assert!(h.pop_due(t).is_none());
        let order: Vec<usize> = std::iter::from_fn(|| h.pop_due(t + ms(2)))
            .map(|a| a.backend)
            .collect();
        assert_eq!(order, [1, 2]);
        assert_eq!(h.pop_due(t + ms(3)).map(|a| a.backend), Some(0));
    }

    #[test]
    fn timing_scales_the_delay_and_the_cost() {
        let spec = crate::scenario::ProbeSpec {
            delay: 0.0005,
            cost: 0.0001,
        };
        let t = ProbeTiming::new(&spec, 4.0);
        assert_eq!(t.round_trip, Duration::from_micros(2000));
        assert_eq!(t.cost_ns, Some(400_000));
        assert_eq!(
            ProbeTiming::new(&crate::scenario::ProbeSpec::default(), 4.0),
            ProbeTiming::default()
        );
    }
}
