//! Live replay of connection-level scenarios (`[connections]`, an L4 proxy in front of the
//! servers): the driver holds the scenario's `clients × pool_size` persistent connections
//! and sends each request over its client's next connection, exactly as the simulator
//! does.
//!
//! ```text
//!  RequestStream ─► dispatcher: client = routing draw (the simulator's stream), its next
//!                   connection in turn ─► pipelined write ─► connection ─► backend
//!                   (or the proxy, which picked a backend when the connection opened)
//!  expiries ──────► close (after its calls are answered) and reopen: a new pick
//!                                      ◄─ Done ◄─ reader thread per connection (answers
//!                                                 matched by sequence number, any order)
//! ```
//!
//! Who picks the server of a connection:
//! - [`Target::Direct`]: the scenario's strategy, through the same [`Balancer`](crate::strategy::Balancer) as the
//!   simulator, when a connection opens (key = its slot), told when it closes: the
//!   simulator's connection-level topology, replayed;
//! - [`Target::Proxy`]: a real proxy (nginx, HAProxy; see [`super::proxy`]) that the
//!   connections go through. The driver learns the backend of each connection from a
//!   `ping` answered through it, so that a request's size becomes the work of the group
//!   it lands on, and attributes every answer by the server id in the reply.
//!
//! The same random streams as the simulator drive everything the driver decides: which
//! client sends each request (`Stream::Routing` 0) and each connection's lifetime
//! (`Stream::Routing` 1, drawn at each open in the same order). Calls are pipelined: a
//! connection carries every call sent on it at once, and the backends serve a
//! connection's calls concurrently (`ServerConfig::pipelined`), as the simulated topology
//! assumes.
//!
//! Expiry: the simulator stops counting an expired connection at once (its calls still
//! complete) and opens the replacement. A proxy counts a connection until it is closed,
//! so through a proxy whose algorithm reads connection counts
//! ([`proxy::counts_connections`]) an expired connection that still carries calls keeps
//! carrying its slot's calls until its next idle moment, is closed then (the driver waits
//! for the proxy to end the session), and only then is the replacement opened: the proxy
//! balances it on the counts the simulator has. Otherwise the replacement opens at once
//! and the old connection closes once its calls are answered. (Opening the replacement
//! first through nginx `least_conn` — what a client that rotates connections without
//! waiting does — moved the mean latency of the shortened `l4-persistent-connections`
//! by +61%: the old server still counted the draining connection, so the new one went
//! elsewhere and connection counts drifted to 5/6/7.)
//!
//! Faults (`[[faults]]`) are played by the request-level driver's
//! `FaultPlayer`, between requests at their time-scaled
//! times, with the simulator's connection-level effects: a crash breaks every connection
//! to the backend at once (the balancer is told each ended `Failed`) and a leave closes
//! them (`Ok`) — the simulator's `connections_broken` and `connections_closed` — and each
//! slot reconnects on its next request with a new pick. A pick of a backend that is down
//! but not yet detected fails that request (the backend closes or refuses the
//! connection), as the simulator's `Admission::Down`. The health checks mark backends down
//! and up in the balancer's `Views`. Through a proxy only the faults it forwards
//! unchanged are replayed ([`proxy::check_faults`]).

use std::collections::{BinaryHeap, HashMap};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::RngExt;
use thrift::protocol::{
    TFieldIdentifier, TInputProtocol, TMessageIdentifier, TMessageType, TOutputProtocol,
    TSerializable, TStructIdentifier, TType,
};
use thrift::{ProtocolError, ProtocolErrorKind};

use super::calibrate::{BackendCalibration, Calibration, LoadedCost, median};
use super::client::{CallOutcome, ClientConfig, ClientError, classify};
use super::control::Injector;
use super::faults::FaultPlayer;
use super::machine::MachineProbe;
use super::options::{LiveError, LiveOptions};
use super::pool::CANCEL_POLL;
use super::proto::{Call, Pong};
use super::proxy::{self, ProxyKind, RunningProxy};
use super::run::{Clock, LiveRun, ReplayStart, StrategyReplay, add_service, record_served};
use super::transport::{InputProtocol, OutputProtocol, protocol_stack};
use super::views::Views;
use crate::metrics::{RunMetrics, latency_histogram};
use crate::rng::{SimRng, Stream, stream_rng};
use crate::scenario::Scenario;
use crate::strategy::{Outcome, StrategyEntry};
use crate::time::Nanos;
use crate::workload::RequestStream;

/// Stack size of reader threads: they only decode small messages.
const READER_STACK: usize = 256 * 1024;

/// Where the connections go.
#[derive(Clone, Debug)]
pub enum Target {
    /// Straight to the backends (scenario server order); the strategy picks per connection.
    Direct(Vec<SocketAddr>),
    /// Through a proxy at this address, which picks the backend of each connection.
    Proxy(SocketAddr),
}

/// A call written on a connection and not yet answered.
#[derive(Clone, Copy, Debug)]
struct Pending {
    id: u64,
    scheduled: Instant,
    sent: Instant,
    measured: bool,
    /// Work asked (wall-clock ns at speed 1), for the cost under load.
    work_ns: f64,
    /// Backend the connection reaches (as known when the call was sent).
    backend: usize,
}

/// Calls in flight on one connection, shared by the dispatcher and the reader.
#[derive(Debug, Default)]
struct InFlight {
    calls: HashMap<i32, Pending>,
    /// The reader has stopped: calls can no longer be answered.
    closed: bool,
}

/// A call that ended.
#[derive(Debug)]
struct Done {
    conn: usize,
    call: Pending,
    finished: Instant,
    result: Result<CallOutcome, ClientError>,
}

/// The dispatcher's half of one connection.
struct Conn {
    addr: SocketAddr,
    stream: TcpStream,
    out: OutputProtocol,
    in_flight: Arc<Mutex<InFlight>>,
    reader: Option<JoinHandle<()>>,
    seq: i32,
    /// Calls written and not yet reported.
    outstanding: usize,
    /// Backend it reaches (picked by the balancer, or learned through the proxy).
    backend: usize,
    /// No new calls; closed when `outstanding` reaches 0.
    retiring: bool,
}

/// Longest wait for the peer to close its side after ours.
const CLOSE_WAIT: Duration = Duration::from_millis(100);

impl Conn {
    /// Closes the connection. With `wait_peer`, closes our side first and waits (at most
    /// [`CLOSE_WAIT`]) for the peer to close its side: through a proxy, that is the proxy
    /// ending the session, after which it no longer counts the connection, so the
    /// replacement opened next is balanced on the counts the simulator has. Otherwise
    /// the reader is handed back, to be joined at the end, and the dispatcher goes on.
    fn close(&mut self, wait_peer: bool) -> Option<JoinHandle<()>> {
        let r = self.reader.take();
        if !wait_peer {
            let _ = self.stream.shutdown(Shutdown::Both);
            return r;
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        if let Some(r) = r {
            let deadline = Instant::now() + CLOSE_WAIT;
            while !r.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_micros(20));
            }
            let _ = self.stream.shutdown(Shutdown::Both);
            let _ = r.join();
        }
        None
    }
}

/// Connections of one replay, indexed by opening order.
struct Conns {
    cfg: ClientConfig,
    /// Close connections waiting for the peer to close its side ([`Conn::close`]).
    wait_peer: bool,
    /// Readers of connections closed without waiting, joined at the end.
    closed_readers: Vec<JoinHandle<()>>,
    names: Vec<String>,
    conns: Vec<Option<Conn>>,
    done_tx: Sender<Done>,
    done_rx: Receiver<Done>,
    in_flight: usize,
}

fn protocol_error(message: String) -> thrift::Error {
    thrift::Error::Protocol(ProtocolError::new(ProtocolErrorKind::InvalidData, message))
}

impl Conns {
    fn new(cfg: ClientConfig, names: Vec<String>) -> Conns {
        let (done_tx, done_rx) = mpsc::channel();
        Conns {
            cfg,
            wait_peer: false,
            closed_readers: Vec::new(),
            names,
            conns: Vec::new(),
            done_tx,
            done_rx,
            in_flight: 0,
        }
    }

    /// Opens a connection to `addr` from `source` (the system's choice when `None`);
    /// through a proxy (`backend` = `None`), asks which backend it reaches with a ping.
    /// Returns its index.
    fn open(
        &mut self,
        addr: SocketAddr,
        source: Option<std::net::Ipv4Addr>,
        backend: Option<usize>,
    ) -> Result<usize, ClientError> {
        let cfg = self.cfg;
        let connect_err = |source| ClientError::Connect { addr, source };
        // Reads time out only while asking a proxy which backend it reached (below).
        let stream = cfg.dial_from(addr, source)?;
        stream.set_read_timeout(None).map_err(connect_err)?;
        // The protocol stack's halves share a clone (socket options are the socket's).
        let shared = std::sync::Arc::new(stream.try_clone().map_err(connect_err)?);
        let (mut input, mut out) = protocol_stack(&shared, cfg.protocol, cfg.transport);
        let backend = match backend {
            Some(i) => i,
            None => {
                // Bounded: the proxy or backend must answer within the I/O timeout.
                stream
                    .set_read_timeout(cfg.io_timeout)
                    .map_err(connect_err)?;
                let id = ping(&mut *input, &mut *out)
                    .map_err(|e| classify(addr, cfg.io_timeout, e).0)?;
                stream.set_read_timeout(None).map_err(connect_err)?;
                self.names
                    .iter()
                    .position(|n| *n == id)
                    .ok_or_else(|| ClientError::Application {
                        addr,
                        detail: format!(
                            "the proxy reached a backend named {id:?}, which is not a server of the scenario"
                        ),
                    })?
            }
        };
        let in_flight = Arc::new(Mutex::new(InFlight::default()));
        let id = self.conns.len();
        let reader = {
            let in_flight = Arc::clone(&in_flight);
            let done = self.done_tx.clone();
            thread::Builder::new()
                .name(format!("lbsim-l4-recv-{id}"))
                .stack_size(READER_STACK)
                .spawn(move || reader(id, addr, cfg, input, &in_flight, &done))
                .map_err(connect_err)?
        };
        self.conns.push(Some(Conn {
            addr,
            stream,
            out,
            in_flight,
            reader: Some(reader),
            seq: 0,
            outstanding: 0,
            backend,
            retiring: false,
        }));
        Ok(id)
    }

    /// Writes call `call` on connection `c` (stamping its send time); a failure is
    /// reported as a [`Done`] like an answer.
    fn send(&mut self, c: usize, mut call: Pending, work_ns: i64, key: u64) {
        self.in_flight += 1;
        call.sent = Instant::now();
        let Some(conn) = self.conns[c].as_mut() else {
            return self.fail_now(c, call, SocketAddr::from(([0, 0, 0, 0], 0)));
        };
        conn.outstanding += 1;
        conn.seq = conn.seq.wrapping_add(1);
        let seq = conn.seq;
        let addr = conn.addr;
        {
            let mut f = conn
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if f.closed {
                drop(f);
                return self.fail_now(c, call, addr);
            }
            f.calls.insert(seq, call);
        }
        let body = Call::new(call.id as i64, work_ns, Some(key as i64), None);
        if super::wire::write_call(&mut *conn.out, seq, &body).is_err() {
            // The reader fails this call and every other in flight once it sees the
            // connection shut.
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
    }

    fn fail_now(&mut self, c: usize, call: Pending, addr: SocketAddr) {
        let _ = self.done_tx.send(Done {
            conn: c,
            call,
            finished: Instant::now(),
            result: Err(ClientError::Closed {
                addr,
                detail: "the connection was already closed".into(),
            }),
        });
    }

    /// Books a finished call; closes its connection if it was retiring and is now idle.
    fn finish(&mut self, done: &Done) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(Some(conn)) = self.conns.get_mut(done.conn) {
            conn.outstanding = conn.outstanding.saturating_sub(1);
            if conn.retiring && conn.outstanding == 0 {
                let reader = conn.close(self.wait_peer);
                self.closed_readers.extend(reader);
                self.conns[done.conn] = None;
            }
        }
    }

    /// Retires connection `c`: no new calls; closed once its calls are answered.
    fn retire(&mut self, c: usize) {
        if let Some(conn) = self.conns[c].as_mut() {
            conn.retiring = true;
            if conn.outstanding == 0 {
                let reader = conn.close(self.wait_peer);
                self.closed_readers.extend(reader);
                self.conns[c] = None;
            }
        }
    }

    /// Closes every connection (their unanswered calls fail) and waits for the readers.
    fn close_all(&mut self) {
        for conn in self.conns.iter_mut().flatten() {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        for conn in self.conns.iter_mut().flatten() {
            if let Some(r) = conn.reader.take() {
                let _ = r.join();
            }
        }
        for r in self.closed_readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Conns {
    fn drop(&mut self) {
        self.close_all();
    }
}

/// Pings through a fresh connection; returns the id of the backend that answered.
fn ping(inp: &mut dyn TInputProtocol, out: &mut dyn TOutputProtocol) -> thrift::Result<String> {
    out.write_message_begin(&TMessageIdentifier::new("ping", TMessageType::Call, 0))?;
    out.write_struct_begin(&TStructIdentifier::new("ping_args"))?;
    out.write_field_begin(&TFieldIdentifier::new("sent_ns", TType::I64, 1))?;
    out.write_i64(0)?;
    out.write_field_end()?;
    out.write_field_stop()?;
    out.write_struct_end()?;
    out.write_message_end()?;
    out.flush()?;
    let ident = inp.read_message_begin()?;
    if ident.name != "ping" || ident.message_type != TMessageType::Reply {
        return Err(protocol_error(format!("answer {} to a ping", ident.name)));
    }
    inp.read_struct_begin()?;
    let mut pong = None;
    loop {
        let field = inp.read_field_begin()?;
        if field.field_type == TType::Stop {
            break;
        }
        match field.id {
            Some(0) => pong = Some(Pong::read_from_in_protocol(inp)?),
            _ => inp.skip(field.field_type)?,
        }
        inp.read_field_end()?;
    }
    inp.read_struct_end()?;
    inp.read_message_end()?;
    pong.map(|p| p.server_id)
        .ok_or_else(|| protocol_error("ping answered with no result".into()))
}

/// Reads the next answer to a `call`, whatever its sequence number: `(seq, id, outcome)`;
/// an application exception is `Err` for that call only (the stream stays usable).
type Answer = (i32, Result<(i64, CallOutcome), thrift::Error>);

fn read_answer(inp: &mut dyn TInputProtocol) -> thrift::Result<Answer> {
    let ident = inp.read_message_begin()?;
    let seq = ident.sequence_number;
    if ident.name != "call" {
        return Err(protocol_error(format!("answer {} #{seq}", ident.name)));
    }
    if ident.message_type == TMessageType::Exception {
        let e = thrift::Error::read_application_error_from_in_protocol(inp)?;
        inp.read_message_end()?;
        return Ok((seq, Err(thrift::Error::Application(e))));
    }
    Ok((
        seq,
        match super::wire::read_call_result(inp)? {
            Some((id, outcome)) => Ok((id.unwrap_or(-1), outcome)),
            None => Err(protocol_error("call answered with no result".into())),
        },
    ))
}

/// A reader thread: reports each answer as it comes, in any order; when the connection
/// fails or closes, fails every call still in flight on it and stops.
fn reader(
    conn: usize,
    addr: SocketAddr,
    cfg: ClientConfig,
    mut input: InputProtocol,
    in_flight: &Mutex<InFlight>,
    done: &Sender<Done>,
) {
    let lock = || in_flight.lock().unwrap_or_else(PoisonError::into_inner);
    let error = loop {
        let (seq, answer) = match read_answer(&mut *input) {
            Ok(a) => a,
            Err(e) => break classify(addr, cfg.io_timeout, e).0,
        };
        let Some(call) = lock().calls.remove(&seq) else {
            break classify(
                addr,
                cfg.io_timeout,
                protocol_error(format!("answer #{seq} to no call in flight")),
            )
            .0;
        };
        let result = match answer {
            Ok((id, outcome)) if id == call.id as i64 || id == -1 => Ok(outcome),
            Ok((id, _)) => Err(classify(
                addr,
                cfg.io_timeout,
                protocol_error(format!("reply for call {id} received for call {}", call.id)),
            )
            .0),
            Err(e) => Err(classify(addr, cfg.io_timeout, e).0),
        };
        let report = Done {
            conn,
            call,
            finished: Instant::now(),
            result,
        };
        if done.send(report).is_err() {
            return;
        }
    };
    let calls: Vec<Pending> = {
        let mut f = lock();
        f.closed = true;
        f.calls.drain().map(|(_, c)| c).collect()
    };
    let finished = Instant::now();
    for call in calls {
        let result = Err(match &error {
            ClientError::Closed { addr, detail } => ClientError::Closed {
                addr: *addr,
                detail: detail.clone(),
            },
            other => ClientError::Closed {
                addr,
                detail: other.to_string(),
            },
        });
        let _ = done.send(Done {
            conn,
            call,
            finished,
            result,
        });
    }
}

/// The next completion before `due`, sleeping on the completion channel in between and
/// spinning for the last `spin`; `None` once `due` has passed with none waiting.
fn next_done(rx: &Receiver<Done>, due: Instant, spin: Duration) -> Option<Done> {
    loop {
        if let Ok(done) = rx.try_recv() {
            return Some(done);
        }
        let now = Instant::now();
        if now >= due {
            return None;
        }
        let left = due - now;
        if left <= spin {
            std::hint::spin_loop();
        } else if let Ok(done) = rx.recv_timeout(left - spin) {
            return Some(done);
        }
    }
}

/// Times `calls` calls, one at a time, on one connection to `addr` (through the proxy when
/// `backend` is `None`): the medians of (latency − queued − served) and (served − asked),
/// and the median ping-free round trip is not measured here. Returns `(extra, overhead,
/// probe_ns, backend reached)`.
fn time_calls(
    scenario: &Scenario,
    cfg: ClientConfig,
    addr: SocketAddr,
    backend: Option<usize>,
    calls: usize,
    opts: &LiveOptions,
) -> Result<(f64, f64, f64, usize), ClientError> {
    let names: Vec<String> = scenario.servers().iter().map(|s| s.name.clone()).collect();
    let mut conns = Conns::new(cfg, names);
    let c = conns.open(addr, None, backend)?;
    let reached = conns.conns[c].as_ref().map_or(0, |conn| conn.backend);
    let g = &scenario.servers()[reached];
    // As in the request-level calibration: a service time like the scenario's, capped.
    let probe_ns = (g.service.mean() * 1e9 * opts.time_scale).clamp(100e3, 2e6);
    let (mut extra, mut over) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    for k in 0..calls {
        let due = Instant::now() + Duration::from_micros(300);
        while let Some(done) = next_done(&conns.done_rx, due, opts.spin) {
            conns.finish(&done);
        }
        let call = Pending {
            id: k as u64,
            scheduled: due,
            sent: Instant::now(),
            measured: false,
            work_ns: probe_ns * g.speed,
            backend: reached,
        };
        conns.send(c, call, (probe_ns * g.speed).round() as i64, 0);
        let done = conns
            .done_rx
            .recv_timeout(opts.io_timeout + Duration::from_secs(1))
            .map_err(|_| ClientError::Timeout {
                addr,
                timeout: opts.io_timeout,
            })?;
        conns.finish(&done);
        match done.result? {
            CallOutcome::Served {
                queued_ns,
                served_ns,
                ..
            } => {
                let latency = done.finished.saturating_duration_since(due).as_nanos() as f64;
                extra.push(latency - (queued_ns + served_ns) as f64);
                over.push(served_ns as f64 - probe_ns);
            }
            CallOutcome::Rejected { .. } => {}
        }
    }
    Ok((median(extra), median(over), probe_ns, reached))
}

/// Calibration over the L4 path: per backend, calls one at a time on a direct
/// connection; the extra latency is measured over the path the replay uses (through the
/// proxy, if any, which adds its hop).
pub(super) fn calibrate(
    scenario: &Scenario,
    cfg: ClientConfig,
    backends: &[SocketAddr],
    proxy: Option<SocketAddr>,
    opts: &LiveOptions,
) -> Result<Calibration, LiveError> {
    let mut out = Calibration::default();
    let calls = opts.calibration_calls;
    if calls == 0 {
        return Ok(out);
    }
    super::server::precise_sleeps();
    let servers = scenario.servers();
    for (i, info) in servers.iter().enumerate() {
        let unreachable = |source| LiveError::Unreachable {
            addr: backends[i],
            server: info.name.clone(),
            source,
        };
        let rtt = {
            let mut c =
                super::client::Connection::connect(backends[i], &cfg).map_err(unreachable)?;
            median(
                (0..calls.min(10))
                    .map(|_| c.ping().map(|p| p.rtt.as_nanos() as f64))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(unreachable)?,
            )
        };
        let declared = super::calibrate::declared_service_ns(scenario, i, opts.time_scale);
        let (extra, over, probe_ns) =
            super::calibrate::best_of_rounds(opts.calibration_bound * declared, || {
                time_calls(scenario, cfg, backends[i], Some(i), calls, opts)
                    .map(|(extra, over, probe_ns, _)| (extra, over, probe_ns))
            })
            .map_err(unreachable)?;
        out.backends.push(BackendCalibration {
            server: info.name.clone(),
            ping_rtt_ns: rtt,
            extra_latency_ns: extra,
            service_overhead_ns: over,
            probe_ns,
            declared_service_ns: declared,
        });
    }
    // Through a proxy every backend is reached over the proxy's hop: its extra latency is
    // measured over that path (the proxy picks the backend, so per backend it cannot be).
    if let Some(addr) = proxy {
        let (extra, ..) = time_calls(scenario, cfg, addr, None, calls, opts).map_err(|source| {
            LiveError::Unreachable {
                addr,
                server: "(the proxy)".into(),
                source,
            }
        })?;
        for b in &mut out.backends {
            b.extra_latency_ns = extra.max(0.0);
        }
    }
    Ok(out)
}

/// A connection's scheduled end.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Expiry {
    /// Reversed for the max-heap: earliest first, then first scheduled.
    key: std::cmp::Reverse<(Nanos, u64)>,
    slot: usize,
    generation: u32,
}

/// State of one strategy's replay, owned by the dispatcher.
struct Replay<'a> {
    target: &'a Target,
    conns: Conns,
    clock: Clock,
    /// The scenario's one balancer (`balancers > 1` is refused at connection level), and
    /// the health and membership view the fault player changes.
    views: Views,
    metrics: RunMetrics,
    /// Servers the health checks marked down (faults).
    marked_down: Vec<usize>,
    lag: Histogram<u64>,
    errors: u64,
    errors_per_backend: Vec<u64>,
    first_error: Option<String>,
    /// Per slot (`client * pool_size + k`): its open connection, if any.
    slot_conn: Vec<Option<usize>>,
    /// Per slot: when its connection opened (scenario time).
    opened: Vec<Nanos>,
    generation: Vec<u32>,
    /// Per slot: its lifetime is over, and it closes (and reopens) at its next idle
    /// moment.
    expired: Vec<bool>,
    /// Per connection: the slot it serves.
    conn_slot: Vec<usize>,
    /// Arrivals are over: expired connections close without reopening.
    draining: bool,
    /// The last connection that could not open: address, backend, error.
    open_error: Option<(SocketAddr, Option<usize>, ClientError)>,
    /// An expired connection with calls in flight closes at its next idle moment, and
    /// its replacement opens then (through a proxy that counts connections); otherwise
    /// the replacement opens at once and the old connection closes once idle.
    defer_expiry: bool,
    expiries: BinaryHeap<Expiry>,
    expiry_seq: u64,
    lifetime: Option<f64>,
    life_rng: SimRng,
    to: Nanos,
    /// Declared speed per backend, for the declared service of a call.
    speeds: Vec<f64>,
    /// Per backend, what it added to each served call under the replay's load.
    under_load: Vec<LoadedCost>,
    /// The stalls of the dispatcher and the backends' workers ([`super::stall`]).
    stalls: super::stall::StallRecorder,
    /// Per backend, the windows in which a fault alters its service
    /// ([`super::faults::altered_windows`]): no cost under load is measured there.
    altered: Vec<Vec<(Nanos, Nanos)>>,
}

impl Replay<'_> {
    /// Handles completions until `due`, sleeping on the completion channel in between
    /// and spinning for the last `spin`.
    fn wait_until(&mut self, due: Instant, spin: Duration) {
        while let Some(done) = next_done(&self.conns.done_rx, due, spin) {
            self.on_done(done);
        }
    }

    fn on_done(&mut self, done: Done) {
        let backend = self.conns.conns[done.conn].as_ref().map(|c| c.backend);
        self.conns.finish(&done);
        let slot = self.conn_slot[done.conn];
        let idle = self.conns.conns[done.conn]
            .as_ref()
            .is_some_and(|c| c.outstanding == 0);
        // An application error (an `error` fault's answer) leaves the connection usable;
        // any other error means it is gone.
        let broken =
            matches!(&done.result, Err(e) if !matches!(e, ClientError::Application { .. }));
        if !broken && idle && self.expired[slot] && self.slot_conn[slot] == Some(done.conn) {
            // Its lifetime ended while calls were in flight: it closes now that the
            // last is answered, and its slot reopens at once.
            let now = self.clock.now(done.finished);
            self.close_slot(slot, now, Outcome::Ok);
            if !self.draining {
                self.open_slot(slot, now);
            }
        }
        let latency = self
            .clock
            .scenario(done.finished.saturating_duration_since(done.call.scheduled));
        let lag = done
            .call
            .sent
            .saturating_duration_since(done.call.scheduled);
        self.lag
            .saturating_record(u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX).max(1));
        let measured = done.call.measured;
        let arrival = self.clock.now(done.call.scheduled);
        let end = self.clock.now(done.finished);
        match done.result {
            Ok(CallOutcome::Served {
                server_id,
                queued_ns,
                served_ns,
                woke_late_ns,
                ..
            }) => {
                let server = self.conns.names.iter().position(|n| *n == server_id);
                match server {
                    Some(i) if measured => record_served(&mut self.metrics, i, latency),
                    None if measured => self.metrics.record_latency(latency),
                    _ => {}
                }
                if measured {
                    self.metrics.phase_served(arrival, latency);
                }
                let served = self.clock.scenario_ns(served_ns);
                self.views.server_done(done.call.backend, Some(served), end);
                // Not from a call that a fault slowed, paused or delayed while it was out
                // (as at request level).
                let altered = |i: usize| {
                    self.altered[i]
                        .iter()
                        .any(|&(a, b)| a <= end && arrival < b)
                };
                if let Some(i) = server.filter(|&i| !altered(i)) {
                    // As the request-level driver measures it: served beyond the declared
                    // service, and the response time beyond queued + served.
                    let wall = done
                        .finished
                        .saturating_duration_since(done.call.scheduled)
                        .as_nanos() as f64;
                    let (q, sv) = (queued_ns as f64, served_ns as f64);
                    if let Some(late) = woke_late_ns {
                        self.stalls.worker(i, end, self.clock.scenario_ns(late));
                    }
                    self.under_load[i].record(
                        sv - done.call.work_ns / self.speeds[i],
                        wall - q - sv,
                        woke_late_ns,
                    );
                }
                if let Some(i) = server {
                    let queued = self.clock.scenario_ns(queued_ns);
                    add_service(&mut self.metrics, i, end, queued, served);
                }
            }
            Ok(CallOutcome::Rejected { .. }) => {
                self.views.server_done(done.call.backend, None, end);
                self.metrics.rejected += u64::from(measured);
                if measured {
                    self.metrics.phase_unserved(arrival);
                }
            }
            Err(e) => {
                self.views.server_done(done.call.backend, None, end);
                self.first_error.get_or_insert_with(|| e.to_string());
                self.errors += 1;
                self.metrics.failed += u64::from(measured);
                if measured {
                    self.metrics.phase_unserved(arrival);
                }
                if let Some(i) = backend {
                    self.errors_per_backend[i] += 1;
                }
                // The connection is broken: its slot reconnects on next use, as the
                // simulator's clients do.
                if broken && self.slot_conn[slot] == Some(done.conn) {
                    let now = self.clock.now(done.finished);
                    self.close_slot(slot, now, Outcome::Failed);
                }
            }
        }
    }

    /// Applies the fault actions due at or before scenario time `t`; the connections of a
    /// server that crashed break (the balancer is told `Failed`) and those of a server
    /// that leaves close (`Ok`), as the simulator's `connections_broken` and
    /// `connections_closed` do: their slots reconnect, with a new pick, on next use.
    fn apply_faults(&mut self, f: &mut FaultPlayer<'_>, t: Nanos) {
        f.poll_health(&self.clock);
        f.apply_due(t, &self.clock, &mut self.views, &mut self.marked_down);
        for (i, outcome) in f.take_cut() {
            for slot in 0..self.slot_conn.len() {
                let reaches = self.slot_conn[slot]
                    .and_then(|c| self.conns.conns[c].as_ref())
                    .is_some_and(|c| c.backend == i);
                if reaches {
                    self.close_slot(slot, t, outcome);
                }
            }
        }
        // The request-level driver's pool bookkeeping: nothing to do here, connections
        // (re)open on use.
        let _ = (f.take_stopped(), f.take_started());
    }

    /// Closes the connection of `slot` at scenario time `now`: the balancer is told (as
    /// the simulator tells it), and the connection takes no new call and closes once its
    /// calls are answered.
    fn close_slot(&mut self, slot: usize, now: Nanos, outcome: Outcome) {
        self.expired[slot] = false;
        let Some(c) = self.slot_conn[slot].take() else {
            return;
        };
        if let (Target::Direct(_), Some(conn)) = (self.target, self.conns.conns[c].as_ref()) {
            let age = now - self.opened[slot];
            self.views.get(0).complete(conn.backend, age, outcome, now);
        }
        self.conns.retire(c);
    }

    /// Opens a connection for `slot` at scenario time `now`, as the simulator does: the
    /// strategy (or the proxy) picks its server, and its lifetime is drawn.
    fn open_slot(&mut self, slot: usize, now: Nanos) {
        let (addr, source, backend) = match self.target {
            Target::Direct(addrs) => {
                // The key of a connection is its slot, as in the simulator.
                match self.views.get(0).route(now, slot as u64) {
                    Some(i) => (addrs[i], None, Some(i)),
                    None => return,
                }
            }
            // Each slot's connections come from the slot's own loopback address, the
            // client address the simulated source-hashing strategies hash.
            Target::Proxy(addr) => (
                *addr,
                Some(crate::strategy::hash::client_address(slot as u64)),
                None,
            ),
        };
        match self.conns.open(addr, source, backend) {
            Ok(c) => {
                self.slot_conn[slot] = Some(c);
                self.conn_slot.resize(c + 1, usize::MAX);
                self.conn_slot[c] = slot;
            }
            Err(e) => {
                self.first_error.get_or_insert_with(|| e.to_string());
                self.open_error = Some((addr, backend, e));
                if let Some(i) = backend {
                    self.views
                        .get(0)
                        .complete(i, Nanos::ZERO, Outcome::Failed, now);
                }
                return;
            }
        }
        self.opened[slot] = now;
        self.generation[slot] += 1;
        if let Some(mean) = self.lifetime {
            let u = crate::workload::dist::open_unit(self.life_rng.random::<u64>());
            let life = -mean * (-u).ln_1p();
            // Connections stop churning once arrivals have stopped, as in the simulator.
            if now < self.to {
                self.expiry_seq += 1;
                self.expiries.push(Expiry {
                    key: std::cmp::Reverse((now + Nanos::from_secs_f64(life), self.expiry_seq)),
                    slot,
                    generation: self.generation[slot],
                });
            }
        }
    }

    /// Runs the connection expiries due at or before scenario time `t`, each at its time.
    fn expire_until(&mut self, t: Nanos, spin: Duration) {
        while let Some(e) = self.expiries.peek() {
            let at = e.key.0.0;
            if at > t {
                break;
            }
            let Some(e) = self.expiries.pop() else { break };
            if self.generation[e.slot] != e.generation {
                continue;
            }
            self.wait_until(self.clock.at(at), spin);
            let busy = self.slot_conn[e.slot]
                .and_then(|c| self.conns.conns[c].as_ref())
                .is_some_and(|c| c.outstanding > 0);
            if busy && self.defer_expiry {
                // Closed at its next idle moment (see `on_done`): a proxy counts a
                // connection until it closes, so opening the next one first would find
                // the old one still counted.
                self.expired[e.slot] = true;
            } else {
                self.close_slot(e.slot, at, Outcome::Ok);
                self.open_slot(e.slot, at);
            }
        }
    }
}

/// Replays one strategy of a connection-level scenario against `target`; the scenario's
/// faults go to the backends through `faults`' controls (one per backend, whose
/// addresses the health checks ping; `None`: it has none).
pub(crate) fn replay_strategy(
    scenario: &Scenario,
    entry: &StrategyEntry,
    target: &Target,
    cfg: ClientConfig,
    seed: u64,
    opts: &LiveOptions,
    faults: Option<(&[Injector], &[SocketAddr])>,
) -> Result<StrategyReplay, LiveError> {
    let Some(spec) = &scenario.connections else {
        return Err(LiveError::Unsupported(
            "it has no [connections] table: proxies balance connections\n  fix: add a [connections] table".into(),
        ));
    };
    let start = ReplayStart::begin(scenario, opts.realtime);
    let (from, to) = (start.from, start.to);
    let servers = scenario.servers();
    let n = servers.len();
    let names: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
    let clients = spec.clients as usize;
    let pool = spec.pool_size as usize;
    let slots = clients * pool;
    let defer_expiry = matches!(target, Target::Proxy(_)) && proxy::counts_connections(&entry.spec);
    let mut conns = Conns::new(cfg, names);
    conns.wait_peer = defer_expiry;
    let mut r = Replay {
        target,
        conns,
        clock: Clock {
            start: Instant::now(),
            scale: opts.time_scale,
        },
        views: Views::new(scenario, entry, seed, opts.replication),
        metrics: start.metrics(scenario),
        marked_down: Vec::new(),
        lag: latency_histogram(),
        errors: 0,
        errors_per_backend: vec![0; n],
        first_error: None,
        slot_conn: vec![None; slots],
        opened: vec![Nanos::ZERO; slots],
        generation: vec![0; slots],
        expired: vec![false; slots],
        conn_slot: Vec::new(),
        draining: false,
        open_error: None,
        defer_expiry,
        expiries: BinaryHeap::new(),
        expiry_seq: 0,
        lifetime: spec.lifetime,
        life_rng: stream_rng(seed, opts.replication, Stream::Routing, 1),
        to,
        speeds: servers.iter().map(|s| s.speed).collect(),
        under_load: vec![LoadedCost::default(); n],
        stalls: super::stall::StallRecorder::new(scenario),
        altered: super::faults::altered_windows(scenario, opts.fault_delay),
    };
    let mut faults = faults.map(|(controls, addrs)| {
        FaultPlayer::new(
            scenario,
            controls.to_vec(),
            addrs,
            cfg,
            seed,
            opts.replication,
            opts.time_scale,
            opts.fault_delay,
        )
    });
    // Servers that join later are down in every view before the connections open, as
    // simulated.
    if let Some(f) = &mut faults {
        f.apply_absent(&mut r.views);
    }
    // Every connection opens at time 0, in slot order, before the first request; a
    // connection that cannot open now is a setup failure, not a measurement.
    for slot in 0..slots {
        r.open_slot(slot, Nanos::ZERO);
        if let (None, Some((addr, backend, source))) = (r.slot_conn[slot], r.open_error.take()) {
            return Err(LiveError::Unreachable {
                addr,
                server: backend
                    .map_or_else(|| "(the proxy)".to_string(), |i| servers[i].name.clone()),
                source,
            });
        }
    }
    // A short lead so the first request is not late because of the set-up.
    r.clock.start = Instant::now() + Duration::from_millis(20);
    let clock = r.clock;
    let mut routing = stream_rng(seed, opts.replication, Stream::Routing, 0);
    let mut next = vec![0usize; clients];
    let mut sent = 0u64;
    let mut dispatch_lag = latency_histogram();
    let mean_gap = Duration::from_secs_f64(opts.time_scale / scenario.mean_rate().max(1e-9));
    let spin = opts.spin.min(mean_gap / 4);
    let machine = MachineProbe::start(MachineProbe::sleeps_for(scenario, opts.time_scale));
    for req in RequestStream::new(&scenario.workload, seed, opts.replication) {
        // Fault actions due first, each at its own time (and the expiries before it).
        while let Some(f) = &mut faults {
            f.poll_health(&clock);
            let Some(t) = f.next_due().filter(|&t| t <= req.arrival) else {
                break;
            };
            r.expire_until(t, spin);
            r.wait_until(clock.at(t), spin);
            r.apply_faults(f, t);
        }
        r.expire_until(req.arrival, spin);
        let due = clock.at(req.arrival);
        r.wait_until(due, spin);
        let late = Instant::now().saturating_duration_since(due);
        r.stalls.dispatcher(req.arrival, clock.scenario(late));
        let late = late.as_nanos();
        dispatch_lag.saturating_record(u64::try_from(late).unwrap_or(u64::MAX).max(1));
        let measured = req.arrival >= from && req.arrival < to;
        r.metrics.arrived += u64::from(measured);
        if measured {
            r.metrics.phase_arrived(req.arrival);
        }
        // The simulator's draw: a uniform client, then that client's next connection.
        let client = routing.random_range(0..clients);
        let k = next[client];
        next[client] = (k + 1) % pool;
        let slot = client * pool + k;
        if r.slot_conn[slot].is_none() {
            r.open_slot(slot, req.arrival);
        }
        let Some(c) = r.slot_conn[slot] else {
            match r.open_error.take() {
                // The strategy picked a server that took no connection: a request sent
                // to a server that is down, failed (the simulator's `Admission::Down`).
                Some((_, Some(i), _)) => {
                    r.errors += 1;
                    r.errors_per_backend[i] += 1;
                    r.metrics.failed += u64::from(measured);
                }
                _ => r.metrics.unroutable += u64::from(measured),
            }
            if measured {
                r.metrics.phase_unserved(req.arrival);
            }
            continue;
        };
        let backend = r.conns.conns[c].as_ref().map_or(0, |conn| conn.backend);
        let work = req.size.work(&start.dists[backend]) * 1e9 * opts.time_scale;
        let call = Pending {
            id: req.id,
            scheduled: due,
            sent: due,
            measured,
            work_ns: work,
            backend,
        };
        r.views.call_sent(backend, req.arrival);
        r.conns
            .send(c, call, work.round().min(i64::MAX as f64) as i64, req.key);
        sent += 1;
    }
    // Drain: every call is answered, or fails when its connection is shut down.
    r.draining = true;
    let waited_from = Instant::now();
    let limit = opts.io_timeout + Duration::from_secs(5);
    let mut shut = false;
    while r.conns.in_flight > 0 {
        let left = limit.saturating_sub(waited_from.elapsed());
        let mut wait = left.max(Duration::from_millis(1));
        if let Some(f) = &mut faults {
            // Faults go on while calls drain (a recovery, a drain's end), as simulated.
            let now = clock.now(Instant::now());
            r.apply_faults(f, now);
            if let Some(t) = f.next_due() {
                wait = wait.min(clock.at(t).saturating_duration_since(Instant::now()));
            }
            wait = wait.clamp(Duration::from_micros(100), CANCEL_POLL);
        }
        match r.conns.done_rx.recv_timeout(wait) {
            Ok(done) => r.on_done(done),
            Err(_) if faults.is_some() && waited_from.elapsed() < limit => {}
            Err(_) if !shut => {
                // Unanswered within the I/O timeout: the calls fail.
                r.conns.close_all();
                shut = true;
            }
            Err(_) => {
                return Err(LiveError::Stuck {
                    in_flight: r.conns.in_flight,
                    waited: waited_from.elapsed(),
                });
            }
        }
    }
    let wall = Instant::now().saturating_duration_since(clock.start);
    let machine = machine.stop();
    let connections = r.conns.conns.len();
    r.conns.close_all();
    let fault_log = faults
        .map(|mut f| std::mem::take(&mut f.log))
        .unwrap_or_default();
    Ok(StrategyReplay {
        label: entry.label(),
        metrics: r.metrics,
        errors: r.errors,
        sent,
        lag: r.lag,
        dispatch_lag,
        wall,
        marked_down: r.marked_down,
        errors_per_backend: r.errors_per_backend,
        connections,
        connection_waits: 0,
        first_error: r.first_error,
        probes_late: 0,
        realtime: start.realtime.active(),
        under_load: r.under_load,
        machine,
        faults: fault_log,
        stalls: r.stalls.finish(),
    })
}

/// Longest wait for a proxy to listen.
const PROXY_START_WAIT: Duration = Duration::from_secs(5);

/// A folder name for a strategy label.
fn folder_name(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Replays `strategies` of a connection-level scenario against the backends `addrs`
/// (scenario server order): the strategy picks each connection's server, or, with `via`,
/// the proxy does (one proxy process per strategy, its files in `via`'s folder under the
/// strategy's label). The scenario's faults reach the backends through `controls` (one
/// per backend; empty when it has none).
pub(crate) fn replay(
    scenario: &Scenario,
    opts: &LiveOptions,
    addrs: Vec<SocketAddr>,
    strategies: &[&StrategyEntry],
    via: Option<(ProxyKind, &Path)>,
    controls: &[Injector],
) -> Result<LiveRun, LiveError> {
    // Refuse before anything runs.
    if let Some((kind, _)) = via {
        proxy::check_faults(kind, scenario)?;
        for entry in strategies {
            proxy::algorithm(kind, scenario, entry)?;
        }
        proxy::binary(kind)?;
    }
    let faults = (!controls.is_empty()).then_some((controls, addrs.as_slice()));
    let cfg = ClientConfig {
        io_timeout: Some(opts.io_timeout),
        ..ClientConfig::new(opts.protocol, opts.transport)
    };
    let seed = opts.seed.unwrap_or(scenario.seed);
    let direct = Target::Direct(addrs.clone());
    let mut calibration = None;
    let mut out = Vec::new();
    for entry in strategies {
        if opts.cancel.is_cancelled() {
            break;
        }
        let result = match via {
            None => {
                if calibration.is_none() {
                    calibration = Some(calibrate(scenario, cfg, &addrs, None, opts)?);
                }
                replay_strategy(scenario, entry, &direct, cfg, seed, opts, faults)?
            }
            Some((kind, dir)) => {
                let dir = dir.join(folder_name(&entry.label()));
                let start =
                    || RunningProxy::start(kind, scenario, entry, &addrs, &dir, PROXY_START_WAIT);
                // The proxy's hop is calibrated through a proxy of its own, so that the
                // calibration's connections move neither the round-robin position nor
                // the connection counts of the one replayed.
                if calibration.is_none() {
                    let mut probe = start()?;
                    let c = calibrate(scenario, cfg, &addrs, Some(probe.listen()), opts);
                    probe.stop();
                    calibration = Some(c?);
                }
                let mut running = start()?;
                let target = Target::Proxy(running.listen());
                let result = replay_strategy(scenario, entry, &target, cfg, seed, opts, faults);
                running.stop();
                result?
            }
        };
        out.push(result);
    }
    Ok(LiveRun {
        seed,
        replication: opts.replication,
        time_scale: opts.time_scale,
        backends: addrs,
        calibration: calibration.unwrap_or_default(),
        strategies: out,
    })
}
