//! A Thrift `Backend` server that behaves like one scenario server.
//!
//! `workers` calls are in service at once; later calls wait in strict FIFO
//! order in a queue of `queue_capacity` places (unbounded if `None`), and a
//! call that finds the queue full gets the `Rejected` exception. With admission
//! control ([`ServerHandle::set_admission`], the simulator's
//! [`crate::policy::admission::QueueControl`]) a freed worker takes the call it
//! picks, and calls it drops get `Rejected` with `shed` set. Service is
//! emulated by sleeping `work_ns / speed`, so one small machine can host
//! dozens of servers.
//!
//! The thrift crate's `TServer` is not used: it ties each connection to one
//! pool thread, so connections beyond the pool size stall. Here every
//! connection gets its own thread that reads calls and runs the generated
//! processor, and the worker slots are a shared FIFO ticket semaphore
//! (`Admission`), so the number of connections and the number of workers
//! are independent, as they are in the simulator.
//!
//! Clients are not trusted ([`ServerLimits`]): connections, and so threads, are
//! bounded (when full, the connection idle longest makes room, else the new one is
//! refused with an application error naming the limit); frames and messages are size
//! limited before anything is allocated; idle connections and messages that trickle in
//! time out; a call asking for more service than a bound, or negative work, is refused
//! and counted; and `ping` fails while a new call would wait too long for a worker, so
//! a health check sees an overloaded server.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use thrift::protocol::{TMessageIdentifier, TMessageType, TType};
use thrift::server::TProcessor;
use thrift::{ApplicationError, ApplicationErrorKind, ProtocolErrorKind};

use super::proto::{BackendSyncHandler, BackendSyncProcessor, Call, Load, Pong, Rejected, Reply};
use super::transport::{
    DEFAULT_MAX_MESSAGE_BYTES, MessageGuard, Phase, Protocol, Transport, Tripped,
    protocol_stack_guarded,
};

mod costs;
mod faults;
mod pipelined;

pub use faults::{ErrorMode, FaultControl};

/// Stack size of connection threads: they only decode small messages.
const CONNECTION_STACK: usize = 256 * 1024;

/// A connection idle (or stuck inside a message) at least this long may be closed to
/// make room for a new one when the server is at its connection limit.
pub const EVICT_AFTER: Duration = Duration::from_secs(1);

/// Refused connections answered at once (each on a short-lived thread, for at most a
/// second); beyond, refused connections are closed without an answer.
const MAX_REFUSERS: usize = 8;

/// What one client may cost a server. `lbsim serve` faces clients it does not control;
/// these bound the memory, threads and worker time any number of them can take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerLimits {
    /// Most connections served at once (each has a thread). When full, a new connection
    /// closes the one idle (or stuck inside a message) longest, if for at least
    /// [`EVICT_AFTER`]; otherwise it is refused: its first call is answered with an
    /// application error naming the limit, then it is closed.
    pub max_connections: usize,
    /// Largest frame or message, in bytes; a larger one ends its connection.
    pub max_message_bytes: usize,
    /// A connection with no message for this long is closed.
    pub idle_timeout: Duration,
    /// A message must arrive whole within this time of its first byte (and a reply be
    /// taken by the client within it).
    pub message_timeout: Duration,
    /// Longest service one call may ask for (`work_ns / speed`); a longer one, or
    /// negative work, is refused with an application error and counted.
    pub max_service: Duration,
    /// `ping` fails ("overloaded") while a new call would wait longer than this for a
    /// worker, estimated from the service asked by the calls in service and queued.
    pub max_wait: Duration,
}

impl Default for ServerLimits {
    /// 1,024 connections, 64 KiB messages, 300 s idle, 10 s per message, 60 s of service
    /// per call, 60 s of estimated wait.
    fn default() -> Self {
        ServerLimits {
            max_connections: 1024,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            idle_timeout: Duration::from_secs(300),
            message_timeout: Duration::from_secs(10),
            max_service: Duration::from_secs(60),
            max_wait: Duration::from_secs(60),
        }
    }
}

/// How one backend behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Server id reported in every reply.
    pub id: String,
    /// Calls in service at once (at least 1).
    pub workers: u32,
    /// Work done per nanosecond: a call sleeps `work_ns / speed` (finite, > 0).
    pub speed: f64,
    /// Places in the waiting queue; `None` is unbounded.
    pub queue_capacity: Option<u32>,
    /// Thrift protocol spoken on every connection.
    pub protocol: Protocol,
    /// Thrift transport spoken on every connection.
    pub transport: Transport,
    /// What one client may cost the server.
    pub limits: ServerLimits,
    /// Serve the calls of one connection concurrently and answer each as it finishes
    /// (out of order, by sequence number) instead of one at a time; see
    /// `server/pipelined.rs`. Needed where clients pipeline calls on persistent
    /// connections (the `[connections]` topology).
    pub pipelined: bool,
    /// Fixed time added to every call's service, inside its worker slot (a per-request
    /// cost the scenario does not declare: a backend that does more than it should).
    /// Zero by default; `lbsim serve --extra-delay` sets it to test that the live verdict
    /// catches such a backend.
    pub extra_delay: Duration,
}

impl ServerConfig {
    /// One worker, speed 1, unbounded queue, binary protocol, framed transport, default
    /// limits.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            workers: 1,
            speed: 1.0,
            queue_capacity: None,
            protocol: Protocol::Binary,
            transport: Transport::Framed,
            limits: ServerLimits::default(),
            pipelined: false,
            extra_delay: Duration::ZERO,
        }
    }

    /// Checks the settings that `spawn` relies on.
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.workers == 0 {
            return Err(ServerError::NoWorkers {
                id: self.id.clone(),
            });
        }
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return Err(ServerError::BadSpeed {
                id: self.id.clone(),
                speed: self.speed,
            });
        }
        let l = &self.limits;
        let too_small = [
            ("max_connections", l.max_connections == 0),
            ("max_message_bytes", l.max_message_bytes < 64),
            ("idle_timeout", l.idle_timeout.is_zero()),
            ("message_timeout", l.message_timeout.is_zero()),
            ("max_wait", l.max_wait.is_zero()),
        ];
        if let Some((limit, _)) = too_small.iter().find(|(_, bad)| *bad) {
            return Err(ServerError::BadLimit {
                id: self.id.clone(),
                limit,
            });
        }
        Ok(())
    }
}

/// A server configuration that cannot be run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServerError {
    /// `workers` is 0.
    #[error("server {id:?}: workers must be at least 1")]
    NoWorkers {
        /// Server id.
        id: String,
    },
    /// `speed` is not a finite positive number.
    #[error("server {id:?}: speed must be a finite number above 0, got {speed}")]
    BadSpeed {
        /// Server id.
        id: String,
        /// The speed given.
        speed: f64,
    },
    /// A limit is zero (or, for `max_message_bytes`, too small for any message).
    #[error(
        "server {id:?}: limit {limit} is too small (0 connections, messages under 64 bytes and zero timeouts serve nothing)"
    )]
    BadLimit {
        /// Server id.
        id: String,
        /// The limit's field name.
        limit: &'static str,
    },
}

/// Counters of a running server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerStats {
    /// Calls served to completion.
    pub served: u64,
    /// Calls turned away with `Rejected`.
    pub rejected: u64,
    /// Of those, calls admission control dropped after they waited (`shed` set).
    pub shed: u64,
    /// Connections accepted since start.
    pub connections: u64,
    /// Connections refused at the connection limit.
    pub refused_connections: u64,
    /// Idle connections closed to make room for new ones at the connection limit.
    pub evicted_connections: u64,
    /// Connections closed for their idle or per-message timeout.
    pub timed_out_connections: u64,
    /// Connections closed for a frame, message, string or container above the limit.
    pub oversized_messages: u64,
    /// Calls refused for asking negative work or more service than the limit.
    pub invalid_calls: u64,
}

/// Outcome of asking for a worker slot.
#[derive(Debug)]
pub(crate) enum Admit<'a> {
    /// A slot is held until the permit is dropped.
    Admitted(Permit<'a>),
    /// The waiting queue was full; it held this many calls.
    Rejected { queue_len: u32 },
    /// The call waited and admission control dropped it when a worker freed (queue
    /// timeout, CoDel); the queue then held this many calls.
    Shed { queue_len: u32 },
    /// The server is shutting down.
    Closed,
}

/// A call waiting for a slot: its own condition variable, when it joined the queue, and
/// what became of it (set under the admission lock).
#[derive(Debug)]
struct Waiter {
    signal: Condvar,
    since: crate::time::Nanos,
    outcome: AtomicU8,
    /// A probe's cost job ([`costs`]), which no thread waits for: the slot granted to it
    /// goes to the cost thread instead of a signal.
    cost: Option<costs::CostJob>,
}

/// [`Waiter::outcome`] values.
const WAITING: u8 = 0;
const GRANTED: u8 = 1;
const SHED: u8 = 2;

impl crate::policy::admission::Waiting for Arc<Waiter> {
    fn since(&self) -> crate::time::Nanos {
        self.since
    }
}

/// Worker slots with a waiting queue, first in, first out unless admission control
/// ([`crate::policy::admission::QueueControl`], the simulator's, in wall-clock time) says
/// otherwise.
///
/// A call that arrives while a slot is free and nobody waits starts at once.
/// Otherwise it waits on its own condition variable; a finishing call hands its slot
/// straight to the next waiter (the oldest, or the one admission control picks, after
/// waking those it drops), so arrivals never overtake waiters and no thread is woken for
/// nothing.
#[derive(Debug)]
pub(crate) struct Admission {
    workers: u32,
    capacity: Option<u32>,
    /// Origin of the times admission control reads.
    origin: Instant,
    inner: Mutex<AdmissionState>,
}

/// Most waiters (calls and probe cost jobs) a server queues before it turns cost jobs
/// away. A call holds its connection until answered, so calls in the queue are bounded by
/// the connections; a cost job is queued after its probe is answered, so without a bound
/// one connection sending probes with a cost in a loop would grow the queue (and the time
/// the workers owe) without end. Under a replay, cost jobs are a probe's fraction of a
/// request's work, far from this.
pub const MAX_QUEUE_WITH_COSTS: usize = 4096;

#[derive(Debug, Default)]
struct AdmissionState {
    in_service: u32,
    /// The waiting calls, oldest first.
    queue: VecDeque<Arc<Waiter>>,
    /// Since when the queue has held someone (meaningful while it is not empty).
    nonempty_since: crate::time::Nanos,
    /// Admission control, if the server applies it.
    control: Option<crate::policy::admission::QueueControl>,
    /// Waiters admission control just dropped (emptied at once).
    shed: Vec<Arc<Waiter>>,
    closed: bool,
    /// Where cost jobs given a slot (or dropped) go: the server's cost thread.
    costs: Option<std::sync::mpsc::Sender<costs::CostEvent>>,
}

/// A held worker slot; dropping it frees the slot or hands it to the next waiter.
#[derive(Debug)]
pub(crate) struct Permit<'a>(&'a Admission);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Admission {
    pub(crate) fn new(workers: u32, capacity: Option<u32>) -> Self {
        Self {
            workers: workers.max(1),
            capacity,
            origin: Instant::now(),
            inner: Mutex::new(AdmissionState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, AdmissionState> {
        // No code panics while holding the lock, so a poisoned state is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wall-clock time since the server started, as admission control reads it.
    fn now(&self) -> crate::time::Nanos {
        crate::time::Nanos(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// Applies `control` to the calls that queue from now on (`None`: first in, first
    /// out, dropping nothing).
    pub(crate) fn set_control(&self, control: Option<crate::policy::admission::QueueControl>) {
        self.lock().control = control;
    }

    /// Waits for a slot, unless the queue is full or admission control drops the call.
    pub(crate) fn acquire(&self) -> Admit<'_> {
        let mut state = self.lock();
        if state.closed {
            return Admit::Closed;
        }
        let now = self.now();
        if state.in_service < self.workers && state.queue.is_empty() {
            state.in_service += 1;
            if let Some(c) = state.control.as_mut() {
                c.served_at_once(now);
            }
            return Admit::Admitted(Permit(self));
        }
        let waiting = u32::try_from(state.queue.len()).unwrap_or(u32::MAX);
        if self.capacity.is_some_and(|cap| waiting >= cap) {
            return Admit::Rejected { queue_len: waiting };
        }
        let me = Arc::new(Waiter {
            signal: Condvar::new(),
            since: now,
            outcome: AtomicU8::new(WAITING),
            cost: None,
        });
        if state.queue.is_empty() {
            state.nonempty_since = now;
        }
        state.queue.push_back(Arc::clone(&me));
        while me.outcome.load(Ordering::Relaxed) == WAITING && !state.closed {
            state = me
                .signal
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        match me.outcome.load(Ordering::Relaxed) {
            _ if state.closed => Admit::Closed,
            GRANTED => Admit::Admitted(Permit(self)),
            _ => Admit::Shed {
                queue_len: u32::try_from(state.queue.len()).unwrap_or(u32::MAX),
            },
        }
    }

    fn release(&self) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let next = match state.control.as_mut() {
            None => state.queue.pop_front(),
            Some(c) => c.next(
                &mut state.queue,
                state.nonempty_since,
                self.now(),
                &mut state.shed,
            ),
        };
        for dropped in state.shed.drain(..) {
            dropped.outcome.store(SHED, Ordering::Relaxed);
            match dropped.cost {
                Some(job) => costs::send(&state.costs, costs::CostEvent::Dropped(job)),
                None => dropped.signal.notify_one(),
            }
        }
        match next {
            Some(w) => {
                // The slot passes to the waiter: `in_service` is unchanged.
                w.outcome.store(GRANTED, Ordering::Relaxed);
                match w.cost {
                    Some(job) => {
                        costs::send(&state.costs, costs::CostEvent::Started(job, Instant::now()))
                    }
                    None => w.signal.notify_one(),
                }
            }
            None => state.in_service = state.in_service.saturating_sub(1),
        }
    }

    /// Offers a probe's cost job: it starts at once if a worker is free and nobody waits,
    /// otherwise joins the queue as a call would (first in, first out, or as admission
    /// control picks); the cost thread holds its slot for its service. `false`: turned
    /// away (queue full, server closing), as the simulator drops a probe job its server
    /// refuses.
    fn offer_cost(&self, job: costs::CostJob) -> bool {
        let mut state = self.lock();
        if state.closed || state.costs.is_none() {
            return false;
        }
        let now = self.now();
        if state.in_service < self.workers && state.queue.is_empty() {
            state.in_service += 1;
            if let Some(c) = state.control.as_mut() {
                c.served_at_once(now);
            }
            costs::send(&state.costs, costs::CostEvent::Started(job, Instant::now()));
            return true;
        }
        let waiting = u32::try_from(state.queue.len()).unwrap_or(u32::MAX);
        if self.capacity.is_some_and(|cap| waiting >= cap)
            || state.queue.len() >= MAX_QUEUE_WITH_COSTS
        {
            return false;
        }
        if state.queue.is_empty() {
            state.nonempty_since = now;
        }
        state.queue.push_back(Arc::new(Waiter {
            signal: Condvar::new(),
            since: now,
            outcome: AtomicU8::new(WAITING),
            cost: Some(job),
        }));
        true
    }

    /// Whether cost jobs are taken (the server's cost thread runs).
    fn runs_costs(&self) -> bool {
        self.lock().costs.is_some()
    }

    /// Where cost jobs go once given a slot: `None` refuses them.
    fn set_costs(&self, costs: Option<std::sync::mpsc::Sender<costs::CostEvent>>) {
        self.lock().costs = costs;
    }

    /// Calls (and cost jobs) in service, and waiting, at one instant.
    fn occupancy(&self) -> (u32, u32) {
        let state = self.lock();
        let waiting = u32::try_from(state.queue.len()).unwrap_or(u32::MAX);
        (state.in_service, waiting)
    }

    /// Wakes every waiter with `Closed`; later arrivals get `Closed` too.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        for waiter in state.queue.drain(..) {
            waiter.signal.notify_one();
        }
    }

    /// Calls waiting for a slot.
    pub(crate) fn waiting(&self) -> usize {
        self.lock().queue.len()
    }
}

/// A stop flag that sleeping calls can be woken from, with a count of crashes: a crash
/// wakes every sleeping call, and a call that began before it is abandoned.
#[derive(Debug, Default)]
struct StopSignal {
    state: Mutex<SignalState>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct SignalState {
    stopped: bool,
    crashes: u64,
}

impl StopSignal {
    fn lock(&self) -> MutexGuard<'_, SignalState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stop(&self) {
        self.lock().stopped = true;
        self.wake.notify_all();
    }

    fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Crashes so far: a call remembers it when it arrives.
    fn crashes(&self) -> u64 {
        self.lock().crashes
    }

    /// A crash: every call sleeping now is abandoned.
    fn crash(&self) {
        self.lock().crashes += 1;
        self.wake.notify_all();
    }

    /// Sleeps until `deadline`; returns false, early, if the server stops or crashes
    /// (after crash count `crashes`).
    fn sleep_until(&self, deadline: Instant, crashes: u64) -> bool {
        let mut state = self.lock();
        loop {
            if state.stopped || state.crashes != crashes {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            state = self
                .wake
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// State shared by the accept loop, connection threads and the handle.
#[derive(Debug)]
struct Shared {
    id: String,
    speed: f64,
    extra_delay: Duration,
    workers: u32,
    limits: ServerLimits,
    admission: Admission,
    stop: StopSignal,
    served: AtomicU64,
    rejected: AtomicU64,
    /// Calls admission control dropped (also counted in `rejected`).
    shed: AtomicU64,
    connections: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    timed_out: AtomicU64,
    oversized: AtomicU64,
    invalid: AtomicU64,
    /// Service (ns) asked by the calls in service and waiting, for `ping`'s estimate of
    /// the wait a new call would have.
    backlog_ns: AtomicU64,
    /// Recent mean service time (ns, an `f64`'s bits): an EWMA over the calls started, weight
    /// [`crate::sim::probe::SERVICE_EWMA_WEIGHT`] on each, as the simulator's servers keep.
    mean_service: AtomicU64,
    /// What the probes' cost jobs that ended took ([`costs`]).
    cost_totals: costs::CostTotals,
    /// Refused connections being answered.
    refusers: AtomicUsize,
    /// Connections are served pipelined ([`ServerConfig::pipelined`]).
    pipelined: bool,
    /// Open connections (so shutdown can close them) and their threads.
    open: Mutex<OpenConnections>,
    /// Injected faults ([`faults`]).
    faults: faults::FaultState,
}

/// An open connection as the accept loop sees it.
#[derive(Debug)]
struct OpenConnection {
    stream: Arc<TcpStream>,
    guard: Arc<MessageGuard>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    next_id: u64,
    conns: HashMap<u64, OpenConnection>,
    threads: Vec<JoinHandle<()>>,
}

impl OpenConnections {
    /// Closes the connection idle (or stuck inside a message) longest, if for at least
    /// [`EVICT_AFTER`]; returns whether one was closed.
    fn evict_one(&mut self) -> bool {
        let oldest = self
            .conns
            .iter()
            .filter_map(|(&id, c)| match c.guard.phase() {
                (Phase::InCall, _) => None,
                (_, age) => (age >= EVICT_AFTER).then_some((age, id)),
            })
            .max();
        let Some((_, id)) = oldest else {
            return false;
        };
        if let Some(c) = self.conns.remove(&id) {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        true
    }
}

thread_local! {
    /// The guard of the connection this thread serves, so the handler can mark it busy.
    static CONNECTION: RefCell<Option<Arc<MessageGuard>>> = const { RefCell::new(None) };
}

/// Marks this thread's connection as serving a call (not idle, whatever the time).
fn mark_in_call() {
    CONNECTION.with(|c| {
        if let Some(guard) = c.borrow().as_ref() {
            guard.in_call();
        }
    });
}

/// Service asked by one call, counted in the backlog while the call lives.
struct Backlog<'a> {
    shared: &'a Shared,
    ns: u64,
}

impl<'a> Backlog<'a> {
    fn add(shared: &'a Shared, service: Duration) -> Self {
        let ns = u64::try_from(service.as_nanos()).unwrap_or(u64::MAX);
        shared.backlog_ns.fetch_add(ns, Ordering::Relaxed);
        Backlog { shared, ns }
    }
}

impl Drop for Backlog<'_> {
    fn drop(&mut self) {
        self.shared.backlog_ns.fetch_sub(self.ns, Ordering::Relaxed);
    }
}

impl Shared {
    fn open(&self) -> MutexGuard<'_, OpenConnections> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A crash ([`FaultControl::crash`]): under the lock the accept loop registers with,
    /// so no connection slips past it, every open connection closes and only then are
    /// the calls in service and waiting woken and abandoned, so none can answer.
    fn crash(&self) {
        let open = self.open();
        self.faults.set_crashed(true);
        for c in open.conns.values() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        self.stop.crash();
    }

    /// Sleep time for `work_ns` of work, or why the call is refused: negative work, or
    /// more service than `max_service`.
    fn service_time(&self, work_ns: i64) -> Result<Duration, String> {
        if work_ns < 0 {
            return Err(format!("work_ns {work_ns} is negative"));
        }
        // `speed` is finite and positive (validated).
        let seconds = work_ns as f64 * 1e-9 / self.speed;
        let max = self.limits.max_service.as_secs_f64();
        if seconds > max {
            return Err(format!(
                "work_ns {work_ns} asks for {seconds:.3e} s of service at speed {}; this server serves at most {max} s per call (lbsim serve --max-service)",
                self.speed
            ));
        }
        Ok(Duration::from_secs_f64(seconds) + self.extra_delay)
    }

    /// Folds the service time of a call starting into the mean, as the simulator's
    /// servers do when a request starts ([`crate::sim::probe::Signals::started`]).
    fn started_with(&self, service: Duration) {
        let s = service.as_nanos() as f64;
        let w = crate::sim::probe::SERVICE_EWMA_WEIGHT;
        let _ = self
            .mean_service
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let m = f64::from_bits(bits);
                Some(if m == 0.0 { s } else { m + w * (s - m) }.to_bits())
            });
    }

    /// This server's load now, as the simulator's servers report it
    /// ([`crate::sim::probe::Signals::load`]): requests in flight (in service and waiting,
    /// probes' cost jobs included, the call being answered not), waiting, its mean service
    /// time and its estimate of the response time of a call arriving now
    /// ([`crate::sim::probe::estimated_latency`]: the mean service time if a worker is
    /// free, plus the wait for those ahead of it if not).
    fn load(&self) -> (i32, i32, i64, i64) {
        let (busy, queued) = self.admission.occupancy();
        let mean = f64::from_bits(self.mean_service.load(Ordering::Relaxed));
        let latency = crate::sim::probe::estimated_latency(mean, self.workers, busy, queued);
        (
            i32::try_from(busy.saturating_add(queued)).unwrap_or(i32::MAX),
            i32::try_from(queued).unwrap_or(i32::MAX),
            mean.round() as i64,
            latency.round().min(i64::MAX as f64) as i64,
        )
    }

    /// Estimated wait of a new call for a worker: the service asked by the calls in
    /// service and waiting, spread over the workers.
    fn estimated_wait(&self) -> Duration {
        Duration::from_nanos(
            self.backlog_ns.load(Ordering::Relaxed) / u64::from(self.workers.max(1)),
        )
    }
}

/// The generated processor calls into this.
struct Handler(Arc<Shared>);

fn shutting_down() -> thrift::Error {
    thrift::Error::Application(ApplicationError::new(
        ApplicationErrorKind::InternalError,
        "server shutting down",
    ))
}

/// What a call abandoned by a crash returns: nothing reaches the client, whose
/// connection the crash has closed.
fn crashed() -> thrift::Error {
    thrift::Error::Application(ApplicationError::new(
        ApplicationErrorKind::InternalError,
        "server crashed",
    ))
}

fn saturating_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl BackendSyncHandler for Handler {
    fn handle_call(&self, req: Call) -> thrift::Result<Reply> {
        let shared = &self.0;
        let arrived = Instant::now();
        let crashes = shared.stop.crashes();
        mark_in_call();
        if shared.faults.crashed() {
            return Err(crashed());
        }
        let service = match shared.service_time(req.work_ns) {
            Ok(service) => service,
            Err(why) => {
                shared.invalid.fetch_add(1, Ordering::Relaxed);
                return Err(thrift::Error::Application(ApplicationError::new(
                    ApplicationErrorKind::Unknown,
                    why,
                )));
            }
        };
        if let Some(mode) = shared.faults.error_for_next() {
            // A fail-fast answer: after its latency (and any network delay), without a
            // worker.
            let delay = shared.faults.delay();
            if !shared
                .stop
                .sleep_until(arrived + mode.latency + delay, crashes)
            {
                return Err(crashed());
            }
            if mode.rejected {
                shared.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(Rejected::new(shared.id.clone(), 0, None).into());
            }
            return Err(thrift::Error::Application(ApplicationError::new(
                ApplicationErrorKind::InternalError,
                format!("server {}: injected error (error fault)", shared.id),
            )));
        }
        let backlog = Backlog::add(shared, service);
        match shared.admission.acquire() {
            Admit::Closed => Err(shutting_down()),
            Admit::Rejected { queue_len } => {
                shared.rejected.fetch_add(1, Ordering::Relaxed);
                let queue_len = i32::try_from(queue_len).unwrap_or(i32::MAX);
                Err(Rejected::new(shared.id.clone(), queue_len, None).into())
            }
            Admit::Shed { queue_len } => {
                // Answered at once, as the simulator's shedding server answers.
                shared.rejected.fetch_add(1, Ordering::Relaxed);
                shared.shed.fetch_add(1, Ordering::Relaxed);
                let queue_len = i32::try_from(queue_len).unwrap_or(i32::MAX);
                Err(Rejected::new(shared.id.clone(), queue_len, true).into())
            }
            Admit::Admitted(permit) => {
                let started = Instant::now();
                // A slow fault and a cold start set the service a call starts with; a
                // pause under way delays its start, and one starting later pushes its
                // end back.
                let factor = shared.faults.slow() / shared.faults.warm_factor(started);
                let service = if factor == 1.0 {
                    service
                } else {
                    service.mul_f64(factor)
                };
                shared.started_with(service);
                let before = shared.faults.pauses();
                let begin = before.until.map_or(started, |u| u.max(started));
                let mut due = begin + service;
                let completed = loop {
                    if !shared.stop.sleep_until(due, crashes) {
                        break false;
                    }
                    let pushed = shared.faults.pauses().pushed - before.pushed;
                    due = begin + service + pushed;
                    if Instant::now() >= due {
                        break true;
                    }
                };
                let finished = Instant::now();
                // The machine's share of the service: the service ends at `due`, and
                // the worker answers when the machine wakes it.
                let woke_late = finished.saturating_duration_since(due);
                drop(permit);
                if completed {
                    // Served (a delay fault may still lose the answer on the wire).
                    shared.served.fetch_add(1, Ordering::Relaxed);
                }
                let (in_flight, queued, _, latency) = shared.load();
                drop(backlog);
                // A delay fault holds the answer back on the wire, the server done with it.
                let delay = shared.faults.delay();
                let completed = completed
                    && (delay.is_zero() || shared.stop.sleep_until(finished + delay, crashes));
                if !completed {
                    return Err(if shared.stop.is_stopped() {
                        shutting_down()
                    } else {
                        crashed()
                    });
                }
                Ok(Reply::new(
                    req.id,
                    shared.id.clone(),
                    saturating_ns(started - arrived),
                    saturating_ns(finished - started),
                    in_flight,
                    queued,
                    latency,
                    saturating_ns(woke_late),
                ))
            }
        }
    }

    /// Answers while the server can serve: not shutting down, and a new call would not
    /// wait longer than `max_wait` for a worker.
    fn handle_ping(&self, sent_ns: i64) -> thrift::Result<Pong> {
        let shared = &self.0;
        if shared.stop.is_stopped() {
            return Err(shutting_down());
        }
        if shared.faults.unreachable() {
            // An `unreachable` fault: health checks fail (calls get the error fault's
            // answer after the connect timeout).
            return Err(thrift::Error::Application(ApplicationError::new(
                ApplicationErrorKind::InternalError,
                format!("server {}: unreachable (unreachable fault)", shared.id),
            )));
        }
        let wait = shared.estimated_wait();
        if wait > shared.limits.max_wait {
            return Err(thrift::Error::Application(ApplicationError::new(
                ApplicationErrorKind::InternalError,
                format!(
                    "overloaded: a new call would wait about {:.1} s for a worker (limit {} s)",
                    wait.as_secs_f64(),
                    shared.limits.max_wait.as_secs_f64()
                ),
            )));
        }
        Ok(Pong::new(shared.id.clone(), sent_ns))
    }

    /// A probe (prequal): the server's load as it arrives. Answered at once, whatever the
    /// load, while the server is not shutting down. With `cost_ns`, the probe then costs
    /// the server that much work, as the simulator's probes cost `[probes] cost`: a job
    /// that holds a worker, queued behind calls when all are busy ([`costs`]), counted in
    /// the load the server reports but in none of its call counters. The answer carries
    /// what the cost jobs that ended so far took, for the driver's server figures.
    fn handle_probe(&self, sent_ns: i64, cost_ns: Option<i64>) -> thrift::Result<Load> {
        let shared = &self.0;
        if shared.stop.is_stopped() {
            return Err(shutting_down());
        }
        let (in_flight, queued, service, latency) = shared.load();
        let runs_costs = costs::offer(shared, cost_ns)?;
        let (cost_queued, cost_served) = shared.cost_totals.get();
        Ok(Load::new(
            shared.id.clone(),
            sent_ns,
            in_flight,
            queued,
            service,
            latency,
            runs_costs.then_some(cost_queued),
            runs_costs.then_some(cost_served),
        ))
    }
}

type Processor = BackendSyncProcessor<Handler>;

/// A running server. Dropping it shuts the server down.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    protocol: Protocol,
    transport: Transport,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

/// Starts a server listening on `addr` (port 0 picks a free port).
///
/// Fails with `InvalidInput` if the configuration does not validate, or
/// with the error of binding the address.
pub fn spawn(addr: SocketAddr, cfg: ServerConfig) -> io::Result<ServerHandle> {
    cfg.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(addr)?;
    let local_addr = listener.local_addr()?;
    raise_fd_limit();
    let shared = Arc::new(Shared {
        id: cfg.id.clone(),
        speed: cfg.speed,
        extra_delay: cfg.extra_delay,
        workers: cfg.workers,
        limits: cfg.limits,
        admission: Admission::new(cfg.workers, cfg.queue_capacity),
        stop: StopSignal::default(),
        served: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        shed: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        evicted: AtomicU64::new(0),
        timed_out: AtomicU64::new(0),
        oversized: AtomicU64::new(0),
        invalid: AtomicU64::new(0),
        backlog_ns: AtomicU64::new(0),
        mean_service: AtomicU64::new(0),
        cost_totals: costs::CostTotals::default(),
        refusers: AtomicUsize::new(0),
        pipelined: cfg.pipelined,
        open: Mutex::new(OpenConnections::default()),
        faults: faults::FaultState::default(),
    });
    costs::start(&shared);
    let processor = Arc::new(BackendSyncProcessor::new(Handler(Arc::clone(&shared))));
    let accept = {
        let shared = Arc::clone(&shared);
        let (protocol, transport) = (cfg.protocol, cfg.transport);
        thread::Builder::new()
            .name(format!("lbsim-{}-accept", cfg.id))
            .spawn(move || accept_loop(&listener, &shared, &processor, protocol, transport))?
    };
    Ok(ServerHandle {
        local_addr,
        protocol: cfg.protocol,
        transport: cfg.transport,
        shared,
        accept: Mutex::new(Some(accept)),
    })
}

fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    processor: &Arc<Processor>,
    protocol: Protocol,
    transport: Transport,
) {
    for stream in listener.incoming() {
        if shared.stop.is_stopped() {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                ) {
                    thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
        };
        // Nagle would add up to 40 ms to small replies; a failure here only costs speed.
        let _ = stream.set_nodelay(true);
        let stream = Arc::new(stream);
        let mut open = shared.open();
        // Checked under the lock that shutdown takes, so no connection slips past it.
        if shared.stop.is_stopped() {
            let _ = stream.shutdown(Shutdown::Both);
            break;
        }
        // A crashed server answers nothing: the connection closes at once.
        if shared.faults.crashed() {
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        open.threads.retain(|t| !t.is_finished());
        if open.conns.len() >= shared.limits.max_connections {
            if open.evict_one() {
                shared.evicted.fetch_add(1, Ordering::Relaxed);
            } else {
                drop(open);
                refuse(stream, shared, protocol, transport);
                continue;
            }
        }
        let conn_id = open.next_id;
        open.next_id += 1;
        let limits = shared.limits;
        let guard = Arc::new(MessageGuard::new(
            limits.idle_timeout,
            limits.message_timeout,
            limits.max_message_bytes,
        ));
        let thread = {
            let shared = Arc::clone(shared);
            let processor = Arc::clone(processor);
            let (stream, guard) = (Arc::clone(&stream), Arc::clone(&guard));
            thread::Builder::new()
                .name(format!("lbsim-{}-conn", shared.id))
                .stack_size(CONNECTION_STACK)
                .spawn(move || {
                    precise_sleeps();
                    if shared.pipelined {
                        pipelined::serve(&stream, guard, &shared, protocol, transport);
                    } else {
                        serve_connection(&stream, guard, &processor, &shared, protocol, transport);
                    }
                    shared.open().conns.remove(&conn_id);
                })
        };
        match thread {
            Ok(thread) => {
                shared.connections.fetch_add(1, Ordering::Relaxed);
                open.conns.insert(conn_id, OpenConnection { stream, guard });
                open.threads.push(thread);
            }
            // No thread for it: close the connection so the client sees an error.
            Err(_) => {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Turns a connection away at the connection limit: its first call gets an application
/// error naming the limit (on a short-lived thread, at most [`MAX_REFUSERS`] at once,
/// each for at most a second), then the connection closes.
fn refuse(stream: Arc<TcpStream>, shared: &Arc<Shared>, protocol: Protocol, transport: Transport) {
    shared.refused.fetch_add(1, Ordering::Relaxed);
    if shared.refusers.fetch_add(1, Ordering::SeqCst) >= MAX_REFUSERS {
        shared.refusers.fetch_sub(1, Ordering::SeqCst);
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    let message = format!(
        "server {} is at its connection limit ({} connections); retry later (lbsim serve --max-connections)",
        shared.id, shared.limits.max_connections
    );
    let answer = {
        let shared = Arc::clone(shared);
        let stream = Arc::clone(&stream);
        move || {
            let second = Duration::from_secs(1);
            let _ = stream.set_write_timeout(Some(second));
            let guard = Arc::new(MessageGuard::new(second, second, 1024));
            let (mut input, mut output) =
                protocol_stack_guarded(&stream, protocol, transport, 1024, Some(guard));
            let answered = (|| -> thrift::Result<()> {
                let ident = input.read_message_begin()?;
                input.skip(TType::Struct)?;
                input.read_message_end()?;
                let error = ApplicationError::new(ApplicationErrorKind::InternalError, message);
                output.write_message_begin(&TMessageIdentifier::new(
                    ident.name,
                    TMessageType::Exception,
                    ident.sequence_number,
                ))?;
                thrift::Error::write_application_error_to_out_protocol(&error, &mut *output)?;
                output.write_message_end()?;
                output.flush()
            })();
            drop(answered);
            let _ = stream.shutdown(Shutdown::Both);
            shared.refusers.fetch_sub(1, Ordering::SeqCst);
        }
    };
    let spawned = thread::Builder::new()
        .name(format!("lbsim-{}-refuse", shared.id))
        .stack_size(CONNECTION_STACK)
        .spawn(answer);
    if spawned.is_err() {
        shared.refusers.fetch_sub(1, Ordering::SeqCst);
        let _ = stream.shutdown(Shutdown::Both);
    }
}

/// Raises this process's soft limit on open files to the hard limit, once: each
/// connection costs one file descriptor, and the usual soft limit (1024) would cap a
/// scenario's servers well below their connection limits. Best effort.
fn raise_fd_limit() {
    #[cfg(target_os = "linux")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            use rustix::process::{Resource, getrlimit, setrlimit};
            let mut limit = getrlimit(Resource::Nofile);
            if limit.current < limit.maximum {
                limit.current = limit.maximum;
                let _ = setrlimit(Resource::Nofile, limit);
            }
        });
    }
}

/// Asks the kernel to wake this thread's timed waits on time.
///
/// Linux lets a timed wait overrun by the thread's timer slack (50 µs by
/// default) to batch wake-ups; with the slack, a 1 ms emulated service took
/// about 68 µs too long. 1 ns brings that down to the wake-up latency alone.
/// Best effort: elsewhere, or if refused, waits are just less precise.
pub(crate) fn precise_sleeps() {
    #[cfg(target_os = "linux")]
    {
        let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
    }
}

/// Serves calls on one connection until it closes, breaks a limit, or the server stops.
fn serve_connection(
    stream: &Arc<TcpStream>,
    guard: Arc<MessageGuard>,
    processor: &Processor,
    shared: &Shared,
    protocol: Protocol,
    transport: Transport,
) {
    // A client that does not read its replies cannot block this thread for long.
    let _ = stream.set_write_timeout(Some(shared.limits.message_timeout));
    let (mut input, mut output) = protocol_stack_guarded(
        stream,
        protocol,
        transport,
        shared.limits.max_message_bytes,
        Some(Arc::clone(&guard)),
    );
    CONNECTION.with(|c| *c.borrow_mut() = Some(Arc::clone(&guard)));
    // Any error (end of stream, reset, bad bytes, a limit) ends the connection: after a
    // transport or framing error the stream position is unknown.
    let error = loop {
        guard.next_message();
        if let Err(e) = processor.process(&mut *input, &mut *output) {
            break e;
        }
    };
    CONNECTION.with(|c| *c.borrow_mut() = None);
    let size_limit =
        matches!(&error, thrift::Error::Protocol(p) if p.kind == ProtocolErrorKind::SizeLimit);
    let counter = match guard.tripped() {
        Some(Tripped::TimedOut) => Some(&shared.timed_out),
        Some(Tripped::TooLarge) => Some(&shared.oversized),
        None if size_limit => Some(&shared.oversized),
        None => None,
    };
    if let Some(counter) = counter {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    let _ = stream.shutdown(Shutdown::Both);
}

impl ServerHandle {
    /// Address the server listens on (with the port picked if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Server id reported in replies.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Protocol the server speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Transport the server speaks.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Calls served to completion so far.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }

    /// Calls rejected so far.
    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }

    /// All counters at once.
    pub fn stats(&self) -> ServerStats {
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let shared = &self.shared;
        ServerStats {
            served: self.served(),
            rejected: self.rejected(),
            shed: count(&shared.shed),
            connections: count(&shared.connections),
            refused_connections: count(&shared.refused),
            evicted_connections: count(&shared.evicted),
            timed_out_connections: count(&shared.timed_out),
            oversized_messages: count(&shared.oversized),
            invalid_calls: count(&shared.invalid),
        }
    }

    /// Applies admission control to the calls that queue from now on (`None`: first in,
    /// first out, dropping nothing): a scenario group's `[servers.admission]` at the
    /// replay's time scale ([`crate::policy::admission::QueueControl::scaled`]).
    pub fn set_admission(&self, control: Option<crate::policy::admission::QueueControl>) {
        self.shared.admission.set_control(control);
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open().conns.len()
    }

    /// The control that injects faults into this server (crash, slow-down, errors,
    /// pauses). In-process only: no call on the network reaches it.
    pub fn faults(&self) -> FaultControl {
        FaultControl(Arc::clone(&self.shared))
    }

    /// Forgets the server's recent mean service time (its load reports' estimate): the
    /// next call served sets it afresh, as a new simulated server's first request does.
    pub fn forget_service_times(&self) {
        self.shared.mean_service.store(0, Ordering::Relaxed);
    }

    /// Calls currently waiting for a worker.
    pub fn waiting(&self) -> usize {
        self.shared.admission.waiting()
    }

    /// Stops the server as if it were killed: stops accepting, closes every
    /// open connection (clients see end of stream or a reset), abandons calls
    /// in service or waiting, and joins all server threads. Idempotent.
    pub fn shutdown(&self) {
        let shared = &self.shared;
        let threads = {
            // Under the lock the accept loop registers with, so no new connection
            // slips in; sockets close before calls are woken, so an abandoned call
            // cannot answer (a killed server sends nothing).
            let mut open = shared.open();
            for c in open.conns.values() {
                let _ = c.stream.shutdown(Shutdown::Both);
            }
            shared.stop.stop();
            std::mem::take(&mut open.threads)
        };
        shared.admission.close();
        let accept = self
            .accept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(accept) = accept {
            // The accept loop blocks in `accept`: a connection wakes it to see the flag.
            let _ = TcpStream::connect_timeout(&wake_addr(self.local_addr), Duration::from_secs(1));
            let _ = accept.join();
        }
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// Where to connect to reach a listener bound to `addr` (which may be a wildcard).
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::client::{CallOutcome, ClientConfig, Connection};

    /// Waits (bounded) until `cond` holds.
    fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn waiters_are_admitted_in_arrival_order() {
        let admission = Arc::new(Admission::new(1, None));
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = admission.acquire();
        assert!(matches!(first, Admit::Admitted(_)));
        let mut threads = Vec::new();
        for i in 0..6 {
            let (shared, order) = (Arc::clone(&admission), Arc::clone(&order));
            threads.push(thread::spawn(move || {
                if let Admit::Admitted(_permit) = shared.acquire() {
                    order.lock().unwrap().push(i);
                }
            }));
            // Queue them one at a time so the arrival order is known.
            eventually("waiter to queue", || admission.waiting() == i + 1);
        }
        drop(first);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(admission.waiting(), 0);
        assert!(matches!(admission.acquire(), Admit::Admitted(_)));
    }

    #[test]
    fn arrival_does_not_overtake_waiters() {
        let admission = Arc::new(Admission::new(1, None));
        let held = admission.acquire();
        let waiter = {
            let admission = Arc::clone(&admission);
            thread::spawn(move || matches!(admission.acquire(), Admit::Admitted(_)))
        };
        eventually("waiter to queue", || admission.waiting() == 1);
        drop(held);
        // The freed slot went to the waiter, not to whoever asks next.
        assert!(waiter.join().unwrap());
        assert!(matches!(admission.acquire(), Admit::Admitted(_)));
    }

    #[test]
    fn full_queue_rejects() {
        let admission = Arc::new(Admission::new(2, Some(1)));
        let a = admission.acquire();
        let b = admission.acquire();
        assert!(matches!((&a, &b), (Admit::Admitted(_), Admit::Admitted(_))));
        let waiter = {
            let admission = Arc::clone(&admission);
            thread::spawn(move || matches!(admission.acquire(), Admit::Admitted(_)))
        };
        eventually("waiter to queue", || admission.waiting() == 1);
        assert!(matches!(
            admission.acquire(),
            Admit::Rejected { queue_len: 1 }
        ));
        drop(a);
        assert!(waiter.join().unwrap());
        drop(b);
    }

    #[test]
    fn zero_capacity_rejects_when_all_busy() {
        let admission = Admission::new(1, Some(0));
        let held = admission.acquire();
        assert!(matches!(
            admission.acquire(),
            Admit::Rejected { queue_len: 0 }
        ));
        drop(held);
        assert!(matches!(admission.acquire(), Admit::Admitted(_)));
    }

    #[test]
    fn admission_control_sheds_a_call_that_waited_too_long_when_a_worker_frees() {
        // The simulator's queue timeout, in wall-clock time: 20 ms.
        let admission = Arc::new(Admission::new(1, None));
        admission.set_control(Some(crate::policy::admission::QueueControl {
            queue_timeout: Some(crate::time::Nanos(20_000_000)),
            ..Default::default()
        }));
        let permit = match admission.acquire() {
            Admit::Admitted(p) => p,
            other => panic!("{other:?}"),
        };
        let waiter = {
            let a = Arc::clone(&admission);
            thread::spawn(move || matches!(a.acquire(), Admit::Shed { .. }))
        };
        eventually("a call waiting", || admission.waiting() == 1);
        // Still waiting after its timeout: dropped only when the worker frees.
        thread::sleep(Duration::from_millis(40));
        assert_eq!(admission.waiting(), 1);
        drop(permit);
        assert!(waiter.join().unwrap(), "shed");
        // The worker is free again: the next call starts at once.
        assert!(matches!(admission.acquire(), Admit::Admitted(_)));
    }

    #[test]
    fn close_wakes_waiters() {
        let admission = Arc::new(Admission::new(1, None));
        let _held = admission.acquire();
        let waiter = {
            let admission = Arc::clone(&admission);
            thread::spawn(move || matches!(admission.acquire(), Admit::Closed))
        };
        eventually("waiter to queue", || admission.waiting() == 1);
        admission.close();
        assert!(waiter.join().unwrap());
        assert!(matches!(admission.acquire(), Admit::Closed));
    }

    #[test]
    fn bad_config_is_invalid_input() {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut cfg = ServerConfig::new("s");
        cfg.workers = 0;
        let err = spawn(loopback, cfg).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("workers"), "{err}");
        for speed in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut cfg = ServerConfig::new("s");
            cfg.speed = speed;
            assert!(spawn(loopback, cfg).is_err(), "speed {speed} accepted");
        }
    }

    #[test]
    fn reply_reports_server_queue_and_service_time() {
        let mut cfg = ServerConfig::new("s7");
        cfg.speed = 2.0;
        let server = spawn(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).unwrap();
        let client_cfg = ClientConfig::default();
        let mut busy = Connection::connect(server.local_addr(), &client_cfg).unwrap();
        let mut second = Connection::connect(server.local_addr(), &client_cfg).unwrap();
        // 40 ms of work at speed 2 takes 20 ms.
        let first = thread::spawn(move || busy.call(1, 40_000_000, None));
        eventually("first call in service", || {
            server.shared.admission.lock().in_service == 1
        });
        let outcome = second.call(2, 0, Some(5)).unwrap();
        let CallOutcome::Served {
            server_id,
            queued_ns,
            served_ns,
            ..
        } = outcome
        else {
            panic!("rejected: {outcome:?}");
        };
        assert_eq!(server_id, "s7");
        assert!(
            queued_ns > 5_000_000,
            "queued {queued_ns} ns behind a 20 ms call"
        );
        assert!(served_ns < 5_000_000, "zero work served in {served_ns} ns");
        match first.join().unwrap().unwrap() {
            CallOutcome::Served { served_ns, .. } => {
                assert!((19_000_000..60_000_000).contains(&served_ns), "{served_ns}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(server.stats().served, 2);
        assert_eq!(server.stats().connections, 2);
    }

    /// How late the worker woke is measured past the end of the whole service: a server
    /// slower than declared (here 60 ms added to 20 ms of work) is not late, so its cost
    /// is never taken for the machine's (`LoadedCost::woke_late`).
    #[test]
    fn a_reply_says_how_late_the_worker_woke_past_its_whole_service() {
        let cfg = ServerConfig {
            extra_delay: Duration::from_millis(60),
            ..ServerConfig::new("late")
        };
        let server = spawn(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).unwrap();
        let mut conn = Connection::connect(server.local_addr(), &ClientConfig::default()).unwrap();
        let outcome = conn.call(1, 20_000_000, None).unwrap();
        let CallOutcome::Served {
            served_ns,
            woke_late_ns: Some(late),
            ..
        } = outcome
        else {
            panic!("no lateness: {outcome:?}");
        };
        assert!(served_ns >= 80_000_000, "served {served_ns} ns");
        // Beyond 80 ms only the machine's lateness: well under the 60 ms added.
        assert!(
            late <= served_ns - 79_000_000,
            "late {late} ns, served {served_ns} ns"
        );
        assert!(late < 30_000_000, "late {late} ns");
    }

    #[test]
    fn rejected_call_is_counted() {
        let mut cfg = ServerConfig::new("tiny");
        cfg.queue_capacity = Some(0);
        let server = spawn(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).unwrap();
        let client_cfg = ClientConfig::default();
        let mut busy = Connection::connect(server.local_addr(), &client_cfg).unwrap();
        let mut other = Connection::connect(server.local_addr(), &client_cfg).unwrap();
        let first = thread::spawn(move || busy.call(1, 200_000_000, None));
        eventually("first call in service", || {
            server.shared.admission.lock().in_service == 1
        });
        let outcome = other.call(2, 0, None).unwrap();
        assert_eq!(
            outcome,
            CallOutcome::Rejected {
                server_id: "tiny".into(),
                queue_len: 0,
                shed: false,
            }
        );
        // The connection stays usable after a rejection.
        assert!(other.ping().is_ok());
        assert!(matches!(
            first.join().unwrap(),
            Ok(CallOutcome::Served { .. })
        ));
        assert_eq!(server.rejected(), 1);
        assert_eq!(server.served(), 1);
    }
}
