//! Out-of-band signals in the simulator: probes in flight and what servers answer.
//!
//! A strategy that asks for probes ([`crate::strategy::Strategy::probes`]) has each probe
//! travel to its server in half the scenario's `[probes] delay`, where the server answers
//! with its [`ServerLoad`] at that instant, and the answer travel back in the other half.
//! A probe costs the server `[probes] cost` seconds of work (a worker busy, queued behind
//! requests when all are busy) when the scenario says so. Probes in flight live in a slab
//! indexed by the events, so the engine's events stay 16 bytes.
//!
//! Fewer events than legs, with the same order of everything a strategy sees:
//!
//! - **One event per send.** The probes one pick asks for leave together, so their
//!   outbound legs are due at the same instant with consecutive scheduling sequence
//!   numbers: no other event can come between them. They travel as one event, a chain
//!   of slots ([`InFlight::next`]), answered in the order sent.
//! - **Answers without events.** An answer only changes its balancer's strategy, which
//!   nothing reads until the engine next calls it. Answers wait in
//!   `Signals::replies`, in order of their (time, sequence) key (a sequence number
//!   reserved when the server answers, where the event used to be scheduled), and the
//!   engine hands every answer due strictly before the next event's key to its
//!   balancer before running that event: each strategy gets the same calls, in the same
//!   order, with the same arguments as when answers were events.
//!
//! - **Answers at once, when nothing comes between.** With a zero delay and free probes
//!   (`[probes] delay = 0`, `cost = 0`), a send waits beside the queue
//!   ([`Signals::hold_send`]) with the sequence number its event would have had. When the
//!   engine next looks for an event and the next one is due later than the send, the
//!   send's event would have been the next, and its answers held until that later event:
//!   nothing can come between, so the servers answer and the balancer gets the answers
//!   at once (after any answer held from before, which was due earlier), with the same
//!   sequence numbers taken. Otherwise (another event due at the same instant, or a
//!   second send) the send becomes its event, with its own sequence number.
//!
//! Servers' answers, and the load reports carried on replies, use each server's recent
//! mean service time: an exponentially weighted moving average over the service times of
//! the requests it starts, weight [`SERVICE_EWMA_WEIGHT`] on each new one. Nothing here
//! draws random numbers, so runs without probing strategies are bit for bit unchanged.

use std::collections::VecDeque;

use crate::strategy::{ServerLoad, Signals as WantedSignals};
use crate::time::Nanos;

/// Weight of each new service time in a server's mean service time.
pub const SERVICE_EWMA_WEIGHT: f64 = 0.1;

/// Jobs of probe cost carry ids from here up (request ids count up from 0).
pub const PROBE_JOB_BASE: u64 = 1 << 62;

/// End of a chain of probes ([`InFlight::next`]).
pub const NO_SLOT: u32 = u32::MAX;

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
    /// The next probe sent with this one ([`NO_SLOT`]: the last).
    pub next: u32,
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
    /// Mean service time of each server (nanoseconds), 0 until its first request; kept
    /// only when read (probe answers, reply loads' latency estimates), else empty.
    mean_service: Vec<f64>,
    /// Next id of a probe-cost job.
    next_job: u64,
    /// Buffer the balancers' probes are taken into.
    pub asked: Vec<usize>,
    /// Answers on their way back, as ((time, sequence), slot), in increasing key order.
    replies: VecDeque<((Nanos, u64), u32)>,
    /// Whether answers and legs are events of their own (one per leg), as before they
    /// were batched and held here: the reference the tests compare with.
    eager: bool,
    /// Whether sends may wait to be answered at once: no delay, no cost.
    at_once: bool,
    /// The send waiting to be answered at once or to become its event, if any.
    held: Option<Send>,
    /// The servers it probes, in the order asked.
    sent_to: Vec<u32>,
    /// Buffer of the answers to a send answered at once, handed over together.
    pub answers: Vec<(usize, ServerLoad)>,
}

/// A send of probes waiting beside the event queue ([`Signals::hold_send`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Send {
    /// Balancer that sent it.
    pub balancer: u32,
    /// When it was sent (and, with no delay, when its probes reach their servers).
    pub sent: Nanos,
    /// Sequence number of its event.
    pub seq: u64,
}

impl Signals {
    /// Signals for `servers` servers with the given probe round trip and cost (seconds),
    /// as a strategy wants them.
    pub fn new(servers: usize, delay: f64, cost: f64, wanted: WantedSignals) -> Signals {
        let means = wanted.probes || (wanted.reply_loads && wanted.reply_latency);
        Signals {
            half_delay: Nanos::from_secs_f64(delay / 2.0),
            cost,
            probes: wanted.probes,
            reply_loads: wanted.reply_loads,
            slots: Vec::new(),
            free: Vec::new(),
            mean_service: if means {
                vec![0.0; servers]
            } else {
                Vec::new()
            },
            next_job: PROBE_JOB_BASE,
            asked: Vec::new(),
            replies: VecDeque::new(),
            eager: false,
            at_once: delay == 0.0 && cost == 0.0,
            held: None,
            sent_to: Vec::new(),
            answers: Vec::new(),
        }
    }

    /// Makes every leg and every answer an event of its own (the engine as it was, for
    /// tests comparing the two).
    #[cfg(test)]
    pub fn set_eager(&mut self, eager: bool) {
        self.eager = eager;
    }

    /// Whether every leg and answer is an event of its own (`Signals::set_eager`).
    #[inline]
    pub fn eager(&self) -> bool {
        self.eager
    }

    /// Whether a send may wait to be answered at once ([`Signals::hold_send`]): probes
    /// take no time and cost nothing, and legs are not events of their own.
    #[inline]
    pub fn at_once(&self) -> bool {
        self.at_once && !self.eager
    }

    /// Whether a send is waiting ([`Signals::hold_send`]).
    #[inline]
    pub fn has_send(&self) -> bool {
        self.held.is_some()
    }

    /// The send waiting, if any ([`Signals::hold_send`]).
    #[inline]
    pub fn held_send(&self) -> Option<Send> {
        self.held
    }

    /// Holds a send of probes to `servers` (none: nothing held), whose event would be
    /// keyed `(send.sent, send.seq)`, until the engine answers it at once or makes it
    /// its event ([`Signals::take_send`]). One send at a time: take the one held first.
    pub fn hold_send(&mut self, send: Send, servers: impl IntoIterator<Item = u32>) {
        self.send_buffer().extend(servers);
        self.hold_filled(send);
    }

    /// Starts a send to hold ([`Signals::hold_send`]) by filling the buffer this returns
    /// (cleared) with the servers it probes, in the order asked; then
    /// [`Signals::hold_filled`]. The same as `hold_send`, without an iterator between.
    #[inline]
    pub fn send_buffer(&mut self) -> &mut Vec<u32> {
        debug_assert!(self.held.is_none() && self.at_once());
        self.sent_to.clear();
        &mut self.sent_to
    }

    /// Holds `send`, to the servers in the buffer [`Signals::send_buffer`] returned (none:
    /// nothing held).
    #[inline]
    pub fn hold_filled(&mut self, send: Send) {
        if !self.sent_to.is_empty() {
            self.held = Some(send);
        }
    }

    /// Takes the send held, if any, and the servers it probes (to give back with
    /// [`Signals::give_back`] once read).
    #[inline]
    pub fn take_send(&mut self) -> Option<(Send, Vec<u32>)> {
        let send = self.held.take()?;
        Some((send, std::mem::take(&mut self.sent_to)))
    }

    /// Gives back the buffer [`Signals::take_send`] took, to be reused.
    #[inline]
    pub fn give_back(&mut self, mut servers: Vec<u32>) {
        servers.clear();
        self.sent_to = servers;
    }

    /// Holds the answer of probe `slot`, due at `key` (time, sequence), until
    /// [`Signals::reply_due`] hands it over. Keys come in increasing order (answers are
    /// due a constant half delay after their server answered); one that does not is
    /// placed in order all the same.
    #[inline]
    pub fn hold_reply(&mut self, key: (Nanos, u64), slot: u32) {
        match self.replies.back() {
            Some(&(last, _)) if last > key => {
                let at = self.replies.partition_point(|&(k, _)| k < key);
                self.replies.insert(at, (key, slot));
            }
            _ => self.replies.push_back((key, slot)),
        }
    }

    /// Whether any answer is held.
    #[inline]
    pub fn has_replies(&self) -> bool {
        !self.replies.is_empty()
    }

    /// Takes the earliest answer held if it is due strictly before `before` (any, if
    /// `None`): its time and slot (still to be released).
    #[inline]
    pub fn reply_due(&mut self, before: Option<(Nanos, u64)>) -> Option<(Nanos, u32)> {
        let &(key, slot) = self.replies.front()?;
        if before.is_some_and(|b| key >= b) {
            return None;
        }
        self.replies.pop_front();
        Some((key.0, slot))
    }

    /// Records a probe leaving `balancer` for `server` at `sent`, sent with the chain
    /// starting at `next` ([`NO_SLOT`]: alone); returns its slot.
    pub fn send(&mut self, balancer: usize, server: usize, sent: Nanos, next: u32) -> u32 {
        let p = InFlight {
            balancer: balancer as u32,
            server: server as u32,
            sent,
            answer: ServerLoad::default(),
            next,
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

    /// Server `i` started a request of service time `service` (nothing to do when no
    /// mean service time is read).
    #[inline]
    pub fn started(&mut self, i: usize, service: Nanos) {
        let Some(m) = self.mean_service.get_mut(i) else {
            return;
        };
        let s = service.0 as f64;
        *m = if *m == 0.0 {
            s
        } else {
            *m + SERVICE_EWMA_WEIGHT * (s - *m)
        };
    }

    /// What server `i`, with `workers` workers, `busy` of them busy and `queued` requests
    /// waiting, says of its load. `service` is the service time of the request replied
    /// to, or `None` for a probe answer (then its mean service time). Without mean
    /// service times (nobody reads them, see [`Signals::new`]) the latency is 0.
    ///
    /// A probe answer always finds a mean service time: the engine sends probes only
    /// when the strategy wants them (`probes`), [`Signals::new`] then keeps a mean for
    /// every server, and probes go only to servers that exist. Were that ever broken, a
    /// debug build stops here; a release build answers with a service time of 0.
    pub fn load(
        &self,
        i: usize,
        workers: u32,
        busy: u32,
        queued: u32,
        service: Option<Nanos>,
    ) -> ServerLoad {
        let Some(&mean) = self.mean_service.get(i) else {
            debug_assert!(service.is_some(), "probe answers keep mean service times");
            return ServerLoad {
                in_flight: busy + queued,
                queued,
                service_time: service.unwrap_or(Nanos::ZERO),
                latency: Nanos::ZERO,
            };
        };
        ServerLoad {
            in_flight: busy + queued,
            queued,
            service_time: service.unwrap_or(Nanos(round_ns(mean))),
            latency: Nanos(round_ns(estimated_latency(mean, workers, busy, queued))),
        }
    }
}

/// `x.round() as u64` (nanoseconds), without the call to `round` that targets without
/// SSE 4.1 make: from 0 to 2⁶³, the integer part plus one when the fraction is at least
/// one half, in signed conversions (one instruction each way). Exact: below 2⁵³ the
/// fraction `x − ⌊x⌋` is computed without rounding, and from 2⁵² up every `f64` is an
/// integer. Anything else (negative, NaN, huge) takes `round`.
#[inline]
pub fn round_ns(x: f64) -> u64 {
    if (0.0..9.0e18).contains(&x) {
        let whole = x as i64;
        (whole + i64::from(x - whole as f64 >= 0.5)) as u64
    } else {
        x.round() as u64
    }
}

/// A server's estimate of the response time (nanoseconds) of a request arriving now: its
/// mean service time if a worker is free, otherwise that plus the wait for the requests
/// ahead of it, `(queued + 1) / workers` mean service times (FIFO, all workers busy).
pub fn estimated_latency(mean_service: f64, workers: u32, busy: u32, queued: u32) -> f64 {
    if busy < workers {
        mean_service
    } else {
        mean_service * (1.0 + requests_per_worker(queued + 1, workers))
    }
}

/// `requests / workers` (at least one worker), without the division for one worker: `x / 1`
/// is `x` exactly, and a division was the longest step of a probe's answer.
#[inline]
fn requests_per_worker(requests: u32, workers: u32) -> f64 {
    if workers <= 1 {
        f64::from(requests)
    } else {
        f64::from(requests) / f64::from(workers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Prequal wants.
    fn probing() -> WantedSignals {
        WantedSignals {
            probes: true,
            ..WantedSignals::default()
        }
    }

    #[test]
    fn slots_are_reused_and_ids_do_not_collide_with_requests() {
        let mut s = Signals::new(2, 0.001, 0.0, probing());
        assert_eq!(s.half_delay, Nanos(500_000));
        let a = s.send(0, 1, Nanos(5), NO_SLOT);
        let b = s.send(0, 0, Nanos(6), a);
        assert_ne!(a, b);
        assert_eq!(s.get_mut(b).next, a);
        assert_eq!(s.release(a).server, 1);
        assert_eq!(s.send(1, 0, Nanos(7), NO_SLOT), a);
        assert!(s.job_id() > PROBE_JOB_BASE);
    }

    /// Sends wait aside only without delay and cost, one at a time, and not when empty.
    #[test]
    fn sends_are_held_aside_without_delay_and_cost() {
        for (delay, cost, at_once) in [(0.0, 0.0, true), (0.001, 0.0, false), (0.0, 0.1, false)] {
            assert_eq!(Signals::new(2, delay, cost, probing()).at_once(), at_once);
        }
        let mut s = Signals::new(3, 0.0, 0.0, probing());
        let send = Send {
            balancer: 1,
            sent: Nanos(9),
            seq: 4,
        };
        s.hold_send(send, []);
        assert!(!s.has_send(), "nothing sent, nothing held");
        s.hold_send(send, [2, 0, 2]);
        assert_eq!(s.held_send(), Some(send));
        let (got, servers) = s.take_send().expect("held");
        assert_eq!((got, servers.as_slice()), (send, &[2, 0, 2][..]));
        assert!(!s.has_send() && s.take_send().is_none());
        s.give_back(servers);
        s.set_eager(true);
        assert!(!s.at_once(), "legs are events of their own");
    }

    #[test]
    fn replies_come_out_in_key_order_when_due() {
        let mut s = Signals::new(1, 0.0, 0.0, probing());
        s.hold_reply((Nanos(5), 1), 10);
        s.hold_reply((Nanos(5), 4), 11);
        // Out of order (cannot happen in the engine): placed in order all the same.
        s.hold_reply((Nanos(5), 2), 12);
        s.hold_reply((Nanos(9), 6), 13);
        assert_eq!(s.reply_due(Some((Nanos(5), 1))), None, "strictly before");
        assert_eq!(s.reply_due(Some((Nanos(5), 3))), Some((Nanos(5), 10)));
        assert_eq!(s.reply_due(Some((Nanos(5), 3))), Some((Nanos(5), 12)));
        assert_eq!(s.reply_due(Some((Nanos(5), 3))), None);
        assert_eq!(s.reply_due(None), Some((Nanos(5), 11)));
        assert_eq!(s.reply_due(Some((Nanos(10), 0))), Some((Nanos(9), 13)));
        assert!(!s.has_replies());
    }

    proptest::proptest! {
        /// The rounding without `round` rounds as `round` does, halves included.
        #[test]
        fn round_ns_is_round(
            whole in proptest::prop_oneof![0u64..10_000, 0u64..(1u64 << 60)],
            frac in proptest::prop_oneof![
                proptest::prelude::Just(0.5),
                proptest::prelude::Just(0.0),
                0.0f64..1.0,
                proptest::prelude::Just(0.49999999999999994),
            ],
            bits in proptest::prelude::any::<u64>(),
        ) {
            let x = whole as f64 + frac;
            proptest::prop_assert_eq!(round_ns(x), x.round() as u64, "{}", x);
            let y = f64::from_bits(bits);
            proptest::prop_assert_eq!(round_ns(y), y.round() as u64, "{}", y);
            let z = y.abs();
            proptest::prop_assert_eq!(round_ns(z), z.round() as u64, "{}", z);
        }
    }

    #[test]
    fn load_reads_the_mean_service_time_and_the_queue() {
        let mut s = Signals::new(1, 0.0, 0.0, probing());
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

    /// A probe answer without mean service times (never asked by the engine): a debug
    /// build stops, a release build answers with a service time of 0.
    #[test]
    fn a_probe_answer_without_mean_service_times_is_caught_in_debug_builds() {
        let replies = WantedSignals {
            reply_loads: true,
            ..WantedSignals::default()
        };
        let s = Signals::new(1, 0.0, 0.0, replies);
        let got = std::panic::catch_unwind(|| s.load(0, 1, 1, 2, None));
        if cfg!(debug_assertions) {
            assert!(got.is_err());
        } else {
            let load = got.expect("a release build answers");
            assert_eq!((load.in_flight, load.service_time), (3, Nanos::ZERO));
        }
    }

    /// Without the division for one worker (or none, counted as one), the estimate is
    /// the formula's to the bit.
    #[test]
    fn the_latency_estimate_is_the_formula() {
        for workers in 0..5u32 {
            for queued in [0u32, 1, 2, 7, 1000, u32::MAX - 1] {
                for mean in [0.0, 1.0, 1234.5678, 1.0e6 / 3.0, 9.9e17] {
                    let formula = mean * (1.0 + f64::from(queued + 1) / f64::from(workers.max(1)));
                    let got = estimated_latency(mean, workers, workers, queued);
                    assert_eq!(
                        got.to_bits(),
                        formula.to_bits(),
                        "{workers} {queued} {mean}"
                    );
                    if workers > 0 {
                        assert_eq!(estimated_latency(mean, workers, workers - 1, queued), mean);
                    }
                }
            }
        }
    }

    /// Mean service times are kept for probes and for reply loads' latency estimates,
    /// and only then: reply loads without them carry the rest, and a latency of 0.
    #[test]
    fn mean_service_times_only_when_read() {
        let replies = |reply_latency| WantedSignals {
            probes: false,
            reply_loads: true,
            reply_latency,
        };
        for (wanted, kept) in [
            (probing(), true),
            (replies(true), true),
            (replies(false), false),
        ] {
            let mut s = Signals::new(1, 0.0, 0.0, wanted);
            s.started(0, Nanos(1000));
            let load = s.load(0, 1, 1, 2, Some(Nanos(700)));
            assert_eq!((load.in_flight, load.queued), (3, 2));
            assert_eq!(load.service_time, Nanos(700));
            let latency = if kept { Nanos(4000) } else { Nanos::ZERO };
            assert_eq!(load.latency, latency, "{wanted:?}");
        }
    }
}
