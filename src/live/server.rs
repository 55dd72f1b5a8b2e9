//! A Thrift `Backend` server that behaves like one scenario server.
//!
//! `workers` calls are in service at once; later calls wait in strict FIFO
//! order in a queue of `queue_capacity` places (unbounded if `None`), and a
//! call that finds the queue full gets the `Rejected` exception. Service is
//! emulated by sleeping `work_ns / speed`, so one small machine can host
//! dozens of servers.
//!
//! The thrift crate's `TServer` is not used: it ties each connection to one
//! pool thread, so connections beyond the pool size stall. Here every
//! connection gets its own thread that reads calls and runs the generated
//! processor, and the worker slots are a shared FIFO ticket semaphore
//! (`Admission`), so the number of connections and the number of workers
//! are independent, as they are in the simulator.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use thrift::server::TProcessor;
use thrift::{ApplicationError, ApplicationErrorKind};

use super::proto::{BackendSyncHandler, BackendSyncProcessor, Call, Pong, Rejected, Reply};
use super::transport::{Protocol, Transport, protocol_stack};

mod pipelined;

/// Stack size of connection threads: they only decode small messages.
const CONNECTION_STACK: usize = 256 * 1024;

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
    /// Serve the calls of one connection concurrently and answer each as it finishes
    /// (out of order, by sequence number) instead of one at a time; see
    /// `server/pipelined.rs`. Needed where clients pipeline calls on persistent
    /// connections (the `[connections]` topology).
    pub pipelined: bool,
}

impl ServerConfig {
    /// One worker, speed 1, unbounded queue, binary protocol, framed transport.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            workers: 1,
            speed: 1.0,
            queue_capacity: None,
            protocol: Protocol::Binary,
            transport: Transport::Framed,
            pipelined: false,
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
}

/// Counters of a running server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerStats {
    /// Calls served to completion.
    pub served: u64,
    /// Calls turned away with `Rejected`.
    pub rejected: u64,
    /// Connections accepted since start.
    pub connections: u64,
}

/// Outcome of asking for a worker slot.
#[derive(Debug)]
pub(crate) enum Admit<'a> {
    /// A slot is held until the permit is dropped.
    Admitted(Permit<'a>),
    /// The waiting queue was full; it held this many calls.
    Rejected { queue_len: u32 },
    /// The server is shutting down.
    Closed,
}

/// Worker slots with a strictly FIFO waiting queue.
///
/// A call that arrives while a slot is free and nobody waits starts at once.
/// Otherwise it takes a ticket and waits on its own condition variable; a
/// finishing call hands its slot straight to the oldest ticket, so arrivals
/// never overtake waiters and no thread is woken for nothing.
#[derive(Debug)]
pub(crate) struct Admission {
    workers: u32,
    capacity: Option<u32>,
    inner: Mutex<AdmissionState>,
}

#[derive(Debug, Default)]
struct AdmissionState {
    in_service: u32,
    /// One condition variable per waiting call, oldest first.
    queue: VecDeque<Arc<Condvar>>,
    /// Ticket of the next call to queue.
    next_ticket: u64,
    /// Every ticket below this has been handed a slot.
    granted_below: u64,
    closed: bool,
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
            inner: Mutex::new(AdmissionState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, AdmissionState> {
        // No code panics while holding the lock, so a poisoned state is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a slot, in arrival order, unless the queue is full.
    pub(crate) fn acquire(&self) -> Admit<'_> {
        let mut state = self.lock();
        if state.closed {
            return Admit::Closed;
        }
        if state.in_service < self.workers && state.queue.is_empty() {
            state.in_service += 1;
            return Admit::Admitted(Permit(self));
        }
        let waiting = u32::try_from(state.queue.len()).unwrap_or(u32::MAX);
        if self.capacity.is_some_and(|cap| waiting >= cap) {
            return Admit::Rejected { queue_len: waiting };
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        let signal = Arc::new(Condvar::new());
        state.queue.push_back(Arc::clone(&signal));
        while ticket >= state.granted_below && !state.closed {
            state = signal.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        if state.closed {
            Admit::Closed
        } else {
            Admit::Admitted(Permit(self))
        }
    }

    fn release(&self) {
        let mut state = self.lock();
        if let Some(next) = state.queue.pop_front() {
            // The slot passes to the oldest waiter: `in_service` is unchanged.
            state.granted_below += 1;
            next.notify_one();
        } else {
            state.in_service = state.in_service.saturating_sub(1);
        }
    }

    /// Wakes every waiter with `Closed`; later arrivals get `Closed` too.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        for waiter in state.queue.drain(..) {
            waiter.notify_one();
        }
    }

    /// Calls waiting for a slot.
    pub(crate) fn waiting(&self) -> usize {
        self.lock().queue.len()
    }
}

/// A stop flag that sleeping calls can be woken from.
#[derive(Debug, Default)]
struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    fn lock(&self) -> MutexGuard<'_, bool> {
        self.stopped.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stop(&self) {
        *self.lock() = true;
        self.wake.notify_all();
    }

    fn is_stopped(&self) -> bool {
        *self.lock()
    }

    /// Sleeps for `duration`; returns false if stopped first.
    fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let mut stopped = self.lock();
        loop {
            if *stopped {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            stopped = self
                .wake
                .wait_timeout(stopped, deadline - now)
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
    admission: Admission,
    stop: StopSignal,
    served: AtomicU64,
    rejected: AtomicU64,
    connections: AtomicU64,
    /// Connections are served pipelined ([`ServerConfig::pipelined`]).
    pipelined: bool,
    /// Open connections (so shutdown can close them) and their threads.
    open: Mutex<OpenConnections>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    next_id: u64,
    streams: HashMap<u64, TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

impl Shared {
    fn open(&self) -> MutexGuard<'_, OpenConnections> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleep time for `work_ns` of work; negative work counts as none.
    fn service_time(&self, work_ns: i64) -> Duration {
        let work = work_ns.max(0) as f64;
        // `as` saturates, and `speed` is finite and positive (validated).
        Duration::from_nanos((work / self.speed) as u64)
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

fn saturating_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl BackendSyncHandler for Handler {
    fn handle_call(&self, req: Call) -> thrift::Result<Reply> {
        let shared = &self.0;
        let arrived = Instant::now();
        match shared.admission.acquire() {
            Admit::Closed => Err(shutting_down()),
            Admit::Rejected { queue_len } => {
                shared.rejected.fetch_add(1, Ordering::Relaxed);
                let queue_len = i32::try_from(queue_len).unwrap_or(i32::MAX);
                Err(Rejected::new(shared.id.clone(), queue_len).into())
            }
            Admit::Admitted(permit) => {
                let started = Instant::now();
                let completed = shared.stop.sleep(shared.service_time(req.work_ns));
                let finished = Instant::now();
                drop(permit);
                if !completed {
                    return Err(shutting_down());
                }
                shared.served.fetch_add(1, Ordering::Relaxed);
                Ok(Reply::new(
                    req.id,
                    shared.id.clone(),
                    saturating_ns(started - arrived),
                    saturating_ns(finished - started),
                ))
            }
        }
    }

    fn handle_ping(&self, sent_ns: i64) -> thrift::Result<Pong> {
        Ok(Pong::new(self.0.id.clone(), sent_ns))
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
    let shared = Arc::new(Shared {
        id: cfg.id.clone(),
        speed: cfg.speed,
        admission: Admission::new(cfg.workers, cfg.queue_capacity),
        stop: StopSignal::default(),
        served: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        pipelined: cfg.pipelined,
        open: Mutex::new(OpenConnections::default()),
    });
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
        let Ok(registered) = stream.try_clone() else {
            continue;
        };
        let mut open = shared.open();
        // Checked under the lock that shutdown takes, so no connection slips past it.
        if shared.stop.is_stopped() {
            let _ = stream.shutdown(Shutdown::Both);
            break;
        }
        let conn_id = open.next_id;
        open.next_id += 1;
        let thread = {
            let shared = Arc::clone(shared);
            let processor = Arc::clone(processor);
            thread::Builder::new()
                .name(format!("lbsim-{}-conn", shared.id))
                .stack_size(CONNECTION_STACK)
                .spawn(move || {
                    precise_sleeps();
                    if shared.pipelined {
                        pipelined::serve(&stream, &shared, protocol, transport);
                    } else {
                        serve_connection(&stream, &processor, protocol, transport);
                    }
                    shared.open().streams.remove(&conn_id);
                })
        };
        match thread {
            Ok(thread) => {
                shared.connections.fetch_add(1, Ordering::Relaxed);
                open.streams.insert(conn_id, registered);
                open.threads.retain(|t| !t.is_finished());
                open.threads.push(thread);
            }
            // No thread for it: close the connection so the client sees an error.
            Err(_) => {
                let _ = registered.shutdown(Shutdown::Both);
            }
        }
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

/// Serves calls on one connection until it closes or the server stops.
fn serve_connection(
    stream: &TcpStream,
    processor: &Processor,
    protocol: Protocol,
    transport: Transport,
) {
    let Ok((mut input, mut output)) = protocol_stack(stream, protocol, transport) else {
        return;
    };
    // Any error (end of stream, reset, bad bytes) ends the connection: after a
    // transport or framing error the stream position is unknown.
    while processor.process(&mut *input, &mut *output).is_ok() {}
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
        ServerStats {
            served: self.served(),
            rejected: self.rejected(),
            connections: self.shared.connections.load(Ordering::Relaxed),
        }
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
            for stream in open.streams.values() {
                let _ = stream.shutdown(Shutdown::Both);
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
                queue_len: 0
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
