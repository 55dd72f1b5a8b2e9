//! Persistent connections to the backends: the dispatcher writes, one reader thread per
//! connection waits for the answer.
//!
//! The driver hands each request to an idle connection of the chosen backend, or, when all
//! are busy, queues it and has a new connection opened, so the pool grows to the largest
//! number of requests in flight per backend and reuses connections from then on. The
//! *dispatcher* writes the call itself, at its scheduled time, so no thread wake-up sits
//! between the schedule and the send; the connection's reader thread, told of the call
//! just after, waits for the answer and reports a [`Done`] on one channel shared by all
//! connections. A connection that failed is not reused (its stream position is unknown).
//!
//! One bad backend never delays the others: connections are opened on their own thread
//! (which then becomes the reader), spawned by an opener thread, never by the dispatcher
//! (a spawn costs it up to half a millisecond in a process of a thousand threads), and each backend has at
//! most `max_per_backend` connections, open or opening. Requests beyond that wait for one
//! of them, in order; when a backend fails (a call times out or the connection breaks, or
//! it cannot be connected to), the requests waiting for it fail at once instead of
//! waiting for a connection that will not come. A frozen backend therefore costs at most
//! `max_per_backend` sockets and threads and one I/O timeout.

use std::collections::VecDeque;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use super::client::{CallOutcome, ClientConfig, ClientError, classify};
use super::proto::Call;
use super::transport::{InputProtocol, OutputProtocol, protocol_stack};
use super::wire::{read_call_answer, write_call};
use crate::cancel::Cancel;

/// Stack size of reader threads: they only decode small messages.
const READER_STACK: usize = 256 * 1024;

/// Default most connections (open or opening) per backend. A call holds its connection
/// until answered, so a backend with more calls in flight than this makes the rest wait in
/// the driver instead of in the server's queue, which the simulator does not do: an
/// overloaded server of `load-sweep` at 90% holds up to ~94 calls, a hot key's server of
/// `cache-affinity` over 205, and at 64 both replays lagged by 0.5–0.7 s (p99), "no
/// verdict". At 512 both pass. The servers' own limit ([`super::server::ServerLimits`],
/// `lbsim serve --max-connections`, 1,024) stays above it.
pub(crate) const DEFAULT_MAX_PER_BACKEND: usize = 512;

/// Most requests waiting for a connection per backend; beyond, requests fail at once.
const MAX_WAITING: usize = 100_000;

/// An idle connection unused for longer is closed rather than reused: servers close idle
/// connections (`lbsim serve` after 300 s by default), and a call written on one the
/// server has closed would fail and mark a healthy backend down.
const MAX_IDLE_REUSE: Duration = Duration::from_secs(60);

/// A call to send on a backend's connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Job {
    /// Request id, sent to the backend and echoed back.
    pub id: u64,
    /// Backend index.
    pub backend: usize,
    /// When the call should have been sent (latency and lag are measured from it).
    pub scheduled: Instant,
    /// Work in nanoseconds at speed 1.
    pub work_ns: i64,
    /// Request key.
    pub key: Option<i64>,
    /// Caller's tag, returned unchanged in [`Done`].
    pub tag: u64,
}

/// A call that ended, with its timings.
#[derive(Debug)]
pub(crate) struct Done {
    /// The job.
    pub job: Job,
    /// When the call started to be written; `None` if it never was (no connection).
    pub sent: Option<Instant>,
    /// When the answer (or the error) came back.
    pub finished: Instant,
    /// What happened.
    pub result: Result<CallOutcome, ClientError>,
    conn: usize,
    reusable: bool,
}

/// What the reader thread needs to know of a call written on its connection.
struct Pending {
    job: Job,
    seq: i32,
    sent: Instant,
}

/// The dispatcher's half of one connection.
struct Conn {
    backend: usize,
    out: OutputProtocol,
    pending: Sender<Pending>,
    seq: i32,
    /// To close the connection (which ends its reader thread) when the pool drops it.
    stream: Arc<TcpStream>,
    /// When it last became idle.
    idle_since: Instant,
}

/// A connection slot.
enum Slot {
    /// Its thread is connecting.
    Opening,
    Open(Conn),
    Closed,
}

/// What connection threads tell the dispatcher.
enum Event {
    Done(Done),
    /// Connection `conn` to `backend` is open, or could not be opened.
    Opened {
        conn: usize,
        backend: usize,
        result: Result<Conn, ClientError>,
    },
}

/// Connections to every backend.
pub(crate) struct Pool {
    addrs: Vec<SocketAddr>,
    cfg: ClientConfig,
    max_per_backend: usize,
    conns: Vec<Slot>,
    /// Idle connections per backend (a stack: the most recently used first).
    idle: Vec<Vec<usize>>,
    /// Requests waiting for a connection, per backend, oldest first.
    waiting: Vec<VecDeque<Job>>,
    /// Connections open or opening, per backend.
    live: Vec<usize>,
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
    /// Calls handed out and not yet reported.
    in_flight: usize,
    /// Connections opened since the pool was made.
    opened: usize,
    /// Requests that found no idle connection and waited for one.
    waited: u64,
    /// To the opener thread ([`opener`]): connections to open.
    opener: Sender<Open>,
}

/// A connection for the opener thread to open: slot `conn` of `backend` at `addr`.
struct Open {
    conn: usize,
    backend: usize,
    addr: SocketAddr,
    cfg: ClientConfig,
}

/// The opener thread: spawns each connection's thread (which connects, then reads), so
/// the dispatcher never does. A thread costs 0.1–0.5 ms to spawn in a process holding a
/// thousand of them; a backend whose calls in flight outgrow its connections while the
/// dispatcher is behind needs hundreds at once, and the dispatcher spawning them itself
/// fell further behind with each one (`antagonists`: 1,500–2,300 connections opened in
/// a second, the dispatcher on the CPU throughout, every send late by up to 1 s). Ends
/// when the pool drops its sender.
fn opener(jobs: &Receiver<Open>, events: &Sender<Event>) {
    while let Ok(Open {
        conn,
        backend,
        addr,
        cfg,
    }) = jobs.recv()
    {
        let tx = events.clone();
        let spawned = thread::Builder::new()
            .name(format!("lbsim-recv-{backend}"))
            .stack_size(READER_STACK)
            .spawn(move || open_and_read(conn, backend, addr, cfg, &tx));
        if let Err(source) = spawned {
            let result = Err(ClientError::Connect { addr, source });
            let _ = events.send(Event::Opened {
                conn,
                backend,
                result,
            });
        }
    }
}

impl Pool {
    /// A pool over `addrs`, with no connection yet, and at most `max_per_backend`
    /// connections (at least 1) to each backend.
    pub(crate) fn new(addrs: Vec<SocketAddr>, cfg: ClientConfig, max_per_backend: usize) -> Pool {
        let (events_tx, events_rx) = mpsc::channel();
        let (opener_tx, jobs) = mpsc::channel();
        let events = events_tx.clone();
        // Without a thread for it, connections are opened as if the backend refused them.
        let _ = thread::Builder::new()
            .name("lbsim-opener".into())
            .spawn(move || opener(&jobs, &events));
        let n = addrs.len();
        Pool {
            idle: vec![Vec::new(); n],
            waiting: vec![VecDeque::new(); n],
            live: vec![0; n],
            addrs,
            cfg,
            max_per_backend: max_per_backend.max(1),
            conns: Vec::new(),
            events_tx,
            events_rx,
            in_flight: 0,
            opened: 0,
            waited: 0,
            opener: opener_tx,
        }
    }

    /// Backend addresses, in backend order.
    pub(crate) fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Opens connections to `backend` (here, blocking) until it has `n` idle ones, within
    /// the per-backend limit; fails on the first connection that cannot be opened.
    pub(crate) fn warm(&mut self, backend: usize, n: usize) -> Result<(), ClientError> {
        let n = n.min(self.max_per_backend);
        while self.idle[backend].len() < n {
            let addr = self.addrs[backend];
            let (conn, half) = dial(addr, self.cfg, backend)?;
            let c = self.conns.len();
            let (cfg, events) = (self.cfg, self.events_tx.clone());
            thread::Builder::new()
                .name(format!("lbsim-recv-{backend}"))
                .stack_size(READER_STACK)
                .spawn(move || reader(c, addr, cfg, half, &events))
                .map_err(|source| ClientError::Connect { addr, source })?;
            self.conns.push(Slot::Open(conn));
            self.live[backend] += 1;
            self.opened += 1;
            self.idle[backend].push(c);
        }
        Ok(())
    }

    /// Has connections to `backend` opened, each on its own thread as [`Pool::send`] does,
    /// until it has `n` open or opening (within the per-backend limit); returns at once.
    /// For a backend that has just (re)started: its calls then find a connection ready.
    pub(crate) fn prewarm(&mut self, backend: usize, n: usize) {
        while self.live[backend] < n.min(self.max_per_backend) {
            self.open_async(backend);
        }
    }

    /// Calls handed out and not yet reported.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Connections opened since the pool was made.
    pub(crate) fn opened(&self) -> usize {
        self.opened
    }

    /// Requests so far that found no idle connection and waited for one.
    pub(crate) fn waited(&self) -> u64 {
        self.waited
    }

    /// Writes `job` on an idle connection of its backend; if none is idle, queues it and
    /// has a connection opened (within the limit) without waiting for it. A failure is
    /// reported as a [`Done`] like any other.
    pub(crate) fn send(&mut self, job: Job) {
        self.in_flight += 1;
        let b = job.backend;
        // The most recently used first: once one is stale, so are the rest.
        while let Some(c) = self.idle[b].pop() {
            match &self.conns[c] {
                Slot::Open(conn) if conn.idle_since.elapsed() < MAX_IDLE_REUSE => {
                    return self.write(c, job);
                }
                _ => self.close(c),
            }
        }
        if self.waiting[b].len() >= MAX_WAITING {
            let reason = format!("{MAX_WAITING} requests already wait for a connection");
            return self.abandon(job, &reason);
        }
        self.waited += 1;
        self.waiting[b].push_back(job);
        if self.live[b] < self.max_per_backend {
            self.open_async(b);
        }
    }

    /// Writes `job` on open connection `c`.
    fn write(&mut self, c: usize, job: Job) {
        let addr = self.addrs[job.backend];
        let Some(Slot::Open(conn)) = self.conns.get_mut(c) else {
            return self.report_now(job, None, Err(ClientError::Broken { addr }), c);
        };
        conn.seq = conn.seq.wrapping_add(1);
        let seq = conn.seq;
        let call = Call::new(job.id as i64, job.work_ns, job.key, None);
        let sent = Instant::now();
        let written = write_call(&mut *conn.out, seq, &call);
        let told = conn.pending.send(Pending { job, seq, sent });
        match (written, told) {
            (Ok(()), Ok(())) => {}
            (Err(e), _) => {
                let (error, _) = classify(addr, self.cfg.io_timeout, e);
                self.close(c);
                self.report_now(job, Some(sent), Err(error), c);
                self.fail_waiting(job.backend, "an earlier call to it failed");
            }
            // The reader has gone (it saw the connection fail while idle).
            (Ok(()), Err(_)) => {
                self.close(c);
                self.report_now(job, Some(sent), Err(ClientError::Broken { addr }), c);
            }
        }
    }

    fn report_now(
        &mut self,
        job: Job,
        sent: Option<Instant>,
        result: Result<CallOutcome, ClientError>,
        conn: usize,
    ) {
        // The pool holds the receiver, so this cannot fail.
        let _ = self.events_tx.send(Event::Done(Done {
            job,
            sent,
            finished: Instant::now(),
            result,
            conn,
            reusable: false,
        }));
    }

    /// Fails `job` without sending it.
    fn abandon(&mut self, job: Job, reason: &str) {
        let addr = self.addrs[job.backend];
        let error = ClientError::NotSent {
            addr,
            reason: reason.to_owned(),
        };
        self.report_now(job, None, Err(error), usize::MAX);
    }

    /// Fails every request waiting for a connection to `backend`.
    fn fail_waiting(&mut self, backend: usize, reason: &str) {
        for job in std::mem::take(&mut self.waiting[backend]) {
            self.abandon(job, reason);
        }
    }

    /// Waits up to `timeout` for a call to end; `None` on timeout.
    pub(crate) fn recv_timeout(&mut self, timeout: Duration) -> Option<Done> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events_rx.recv_timeout(left) {
                Ok(event) => {
                    if let Some(done) = self.handle(event) {
                        return Some(done);
                    }
                }
                // The pool holds a sender, so the channel never disconnects.
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// A call that has already ended, if any.
    pub(crate) fn try_recv(&mut self) -> Option<Done> {
        while let Ok(event) = self.events_rx.try_recv() {
            if let Some(done) = self.handle(event) {
                return Some(done);
            }
        }
        None
    }

    fn handle(&mut self, event: Event) -> Option<Done> {
        match event {
            Event::Done(done) => Some(self.finish(done)),
            Event::Opened {
                conn,
                backend,
                result,
            } => {
                self.opened_now(conn, backend, result);
                None
            }
        }
    }

    /// Connection `c` has opened (or failed to): give it the oldest waiting request.
    fn opened_now(&mut self, c: usize, backend: usize, result: Result<Conn, ClientError>) {
        match result {
            Ok(conn) => {
                self.conns[c] = Slot::Open(conn);
                self.reuse(c, backend);
            }
            Err(e) => {
                self.conns[c] = Slot::Closed;
                self.live[backend] = self.live[backend].saturating_sub(1);
                if let Some(job) = self.waiting[backend].pop_front() {
                    self.report_now(job, None, Err(e), c);
                }
                self.fail_waiting(backend, "it could not be connected to");
            }
        }
    }

    /// Open connection `c` is free: the oldest waiting request goes on it, or it idles.
    fn reuse(&mut self, c: usize, backend: usize) {
        match self.waiting[backend].pop_front() {
            Some(job) => self.write(c, job),
            None => {
                if let Slot::Open(conn) = &mut self.conns[c] {
                    conn.idle_since = Instant::now();
                }
                self.idle[backend].push(c);
            }
        }
    }

    fn finish(&mut self, done: Done) -> Done {
        self.in_flight = self.in_flight.saturating_sub(1);
        let backend = done.job.backend;
        if done.conn < self.conns.len() {
            if done.reusable && matches!(self.conns[done.conn], Slot::Open(_)) {
                self.reuse(done.conn, backend);
            } else {
                self.close(done.conn);
                if done.result.is_err() {
                    self.fail_waiting(backend, "an earlier call to it failed");
                } else if !self.waiting[backend].is_empty()
                    && self.live[backend] < self.max_per_backend
                {
                    self.open_async(backend);
                }
            }
        }
        done
    }

    /// Closes connection `c` if open (its reader thread ends).
    fn close(&mut self, c: usize) {
        if let Slot::Open(conn) = std::mem::replace(&mut self.conns[c], Slot::Closed) {
            let _ = conn.stream.shutdown(Shutdown::Both);
            self.live[conn.backend] = self.live[conn.backend].saturating_sub(1);
        }
    }

    /// Closes the idle connections of `backend` (their threads end).
    pub(crate) fn close_idle(&mut self, backend: usize) {
        for c in std::mem::take(&mut self.idle[backend]) {
            self.close(c);
        }
    }

    /// Has a connection to `backend` opened on its own thread (spawned by the opener
    /// thread: [`opener`]), which then reads its answers; the dispatcher hears of it as
    /// an [`Event::Opened`].
    fn open_async(&mut self, backend: usize) {
        let c = self.conns.len();
        self.conns.push(Slot::Opening);
        self.live[backend] += 1;
        self.opened += 1;
        let open = Open {
            conn: c,
            backend,
            addr: self.addrs[backend],
            cfg: self.cfg,
        };
        if self.opener.send(open).is_err() {
            let source = std::io::Error::other("no thread to open connections");
            let addr = self.addrs[backend];
            self.opened_now(c, backend, Err(ClientError::Connect { addr, source }));
        }
    }
}

impl Drop for Pool {
    /// Closes every connection, so reader threads and the backends' connection threads
    /// end now rather than at their I/O timeout.
    fn drop(&mut self) {
        for slot in &self.conns {
            if let Slot::Open(conn) = slot {
                let _ = conn.stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// The reader thread's half of a connection.
struct ReadHalf {
    input: InputProtocol,
    pending: Receiver<Pending>,
    stream: Arc<TcpStream>,
}

/// Connects to `addr` (within the connect timeout) and splits the connection.
fn dial(
    addr: SocketAddr,
    cfg: ClientConfig,
    backend: usize,
) -> Result<(Conn, ReadHalf), ClientError> {
    let stream = Arc::new(cfg.dial(addr)?);
    let (input, out) = protocol_stack(&stream, cfg.protocol, cfg.transport);
    let (pending, pending_rx) = mpsc::channel();
    let conn = Conn {
        backend,
        out,
        pending,
        seq: 0,
        stream: Arc::clone(&stream),
        idle_since: Instant::now(),
    };
    let half = ReadHalf {
        input,
        pending: pending_rx,
        stream,
    };
    Ok((conn, half))
}

/// A connection thread: connects, tells the dispatcher, then reads answers.
fn open_and_read(
    c: usize,
    backend: usize,
    addr: SocketAddr,
    cfg: ClientConfig,
    events: &Sender<Event>,
) {
    match dial(addr, cfg, backend) {
        Ok((conn, half)) => {
            let opened = Event::Opened {
                conn: c,
                backend,
                result: Ok(conn),
            };
            if events.send(opened).is_ok() {
                reader(c, addr, cfg, half, events);
            } else {
                // The pool is gone.
                let _ = half.stream.shutdown(Shutdown::Both);
            }
        }
        Err(e) => {
            let _ = events.send(Event::Opened {
                conn: c,
                backend,
                result: Err(e),
            });
        }
    }
}

/// A reader thread: for each call written on its connection, waits for the answer and
/// reports it. Ends when the connection fails or the pool drops it.
fn reader(id: usize, addr: SocketAddr, cfg: ClientConfig, half: ReadHalf, done: &Sender<Event>) {
    let ReadHalf {
        mut input,
        pending,
        stream,
    } = half;
    while let Ok(p) = pending.recv() {
        let (result, reusable) = match read_call_answer(&mut *input, p.seq, p.job.id as i64) {
            Ok(outcome) => (Ok(outcome), true),
            Err(e) => {
                let (error, breaks) = classify(addr, cfg.io_timeout, e);
                (Err(error), !breaks)
            }
        };
        let report = Done {
            job: p.job,
            sent: Some(p.sent),
            finished: Instant::now(),
            result,
            conn: id,
            reusable,
        };
        if done.send(Event::Done(report)).is_err() || !reusable {
            break;
        }
    }
    // Closes the connection now, so the backend's connection thread ends too.
    let _ = stream.shutdown(Shutdown::Both);
}

/// Longest the dispatcher sleeps without looking at the cancel flag.
pub const CANCEL_POLL: Duration = Duration::from_millis(20);

/// Handles completions until `due`, sleeping on the completion channel in between, and
/// spinning for the last `spin`. Returns false, early, if `cancel` is set (looked at
/// every [`CANCEL_POLL`] at least).
pub(crate) fn wait_until(
    pool: &mut Pool,
    due: Instant,
    spin: Duration,
    cancel: Option<&Cancel>,
    mut on_done: impl FnMut(&mut Pool, Done),
) -> bool {
    loop {
        while let Some(done) = pool.try_recv() {
            on_done(pool, done);
        }
        if cancel.is_some_and(Cancel::is_cancelled) {
            return false;
        }
        let now = Instant::now();
        if now >= due {
            return true;
        }
        let left = due - now;
        if left <= spin {
            std::hint::spin_loop();
        } else if let Some(done) = pool.recv_timeout((left - spin).min(CANCEL_POLL)) {
            on_done(pool, done);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn job(id: u64, backend: usize) -> Job {
        Job {
            id,
            backend,
            scheduled: Instant::now(),
            work_ns: 0,
            key: None,
            tag: 0,
        }
    }

    #[test]
    fn a_silent_backend_costs_at_most_the_limit_and_fails_its_waiting_calls() {
        // Accepts connections (the kernel does) and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let cfg = ClientConfig {
            io_timeout: Some(Duration::from_millis(300)),
            ..ClientConfig::default()
        };
        let mut pool = Pool::new(vec![silent.local_addr().unwrap()], cfg, 4);
        let started = Instant::now();
        for id in 0..20 {
            pool.send(job(id, 0));
        }
        // Sending never waited for a connection.
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(pool.opened() <= 4, "{} connections", pool.opened());
        let mut results = Vec::new();
        while results.len() < 20 {
            let done = pool
                .recv_timeout(Duration::from_secs(5))
                .expect("every call ends");
            results.push(done.result);
        }
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(results.iter().all(Result::is_err));
        let not_sent = results
            .iter()
            .filter(|r| matches!(r, Err(ClientError::NotSent { .. })))
            .count();
        assert!(not_sent >= 16, "{not_sent} of 20 failed without being sent");
        assert_eq!(pool.in_flight(), 0);
        assert!(pool.opened() <= 4);
        drop(silent);
    }
}
