//! Persistent connections to the backends: the dispatcher writes, one reader thread per
//! connection waits for the answer.
//!
//! The driver hands each request to an idle connection of the chosen backend, or opens a
//! new one when all are busy, so a request in flight never waits for a connection: the
//! pool grows to the largest number of requests in flight per backend and reuses
//! connections from then on. The *dispatcher* writes the call itself, at its scheduled
//! time, so no thread wake-up sits between the schedule and the send; the connection's
//! reader thread, told of the call just after, waits for the answer and reports a
//! [`Done`] on one channel shared by all connections. A connection that failed is not
//! reused (its stream position is unknown).

use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use super::client::{CallOutcome, ClientConfig, ClientError, classify};
use super::proto::Call;
use super::transport::{InputProtocol, OutputProtocol, protocol_stack};
use super::wire::{read_call_answer, write_call};

/// Stack size of reader threads: they only decode small messages.
const READER_STACK: usize = 256 * 1024;

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
    /// When the call started to be written.
    pub sent: Instant,
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
}

/// Connections to every backend.
pub(crate) struct Pool {
    addrs: Vec<SocketAddr>,
    cfg: ClientConfig,
    conns: Vec<Option<Conn>>,
    /// Idle connections per backend (a stack: the most recently used first).
    idle: Vec<Vec<usize>>,
    done_tx: Sender<Done>,
    done_rx: Receiver<Done>,
    /// Calls handed out and not yet reported.
    in_flight: usize,
    /// Connections opened since the pool was made.
    opened: usize,
}

impl Pool {
    /// A pool over `addrs`, with no connection yet.
    pub(crate) fn new(addrs: Vec<SocketAddr>, cfg: ClientConfig) -> Pool {
        let (done_tx, done_rx) = mpsc::channel();
        Pool {
            idle: vec![Vec::new(); addrs.len()],
            addrs,
            cfg,
            conns: Vec::new(),
            done_tx,
            done_rx,
            in_flight: 0,
            opened: 0,
        }
    }

    /// Backend addresses, in backend order.
    pub(crate) fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Opens connections to `backend` until it has `n` idle ones; fails on the first
    /// connection that cannot be opened.
    pub(crate) fn warm(&mut self, backend: usize, n: usize) -> Result<(), ClientError> {
        while self.idle[backend].len() < n {
            let c = self.open(backend)?;
            self.idle[backend].push(c);
        }
        Ok(())
    }

    /// Calls handed out and not yet reported.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Connections opened since the pool was made.
    pub(crate) fn opened(&self) -> usize {
        self.opened
    }

    /// Writes `job` on an idle connection of its backend, opening one if none is idle
    /// (on loopback a handshake costs tens of µs; the pool is warmed beforehand so this
    /// is rare). A failure is reported as a [`Done`] like any other.
    pub(crate) fn send(&mut self, job: Job) {
        self.in_flight += 1;
        let conn = match self.idle[job.backend].pop() {
            Some(c) => Ok(c),
            None => self.open(job.backend),
        };
        let c = match conn {
            Ok(c) => c,
            Err(e) => return self.report_now(job, Instant::now(), Err(e), usize::MAX),
        };
        let Some(conn) = self.conns[c].as_mut() else {
            return self.report_now(
                job,
                Instant::now(),
                Err(ClientError::Broken {
                    addr: self.addrs[job.backend],
                }),
                c,
            );
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
                let (error, _) = classify(self.addrs[job.backend], self.cfg.io_timeout, e);
                self.conns[c] = None;
                self.report_now(job, sent, Err(error), c);
            }
            // The reader has gone (it saw the connection fail while idle).
            (Ok(()), Err(_)) => {
                self.conns[c] = None;
                self.report_now(
                    job,
                    sent,
                    Err(ClientError::Broken {
                        addr: self.addrs[job.backend],
                    }),
                    c,
                );
            }
        }
    }

    fn report_now(
        &mut self,
        job: Job,
        sent: Instant,
        result: Result<CallOutcome, ClientError>,
        conn: usize,
    ) {
        // The pool holds the receiver, so this cannot fail.
        let _ = self.done_tx.send(Done {
            job,
            sent,
            finished: Instant::now(),
            result,
            conn,
            reusable: false,
        });
    }

    /// Waits up to `timeout` for a call to end; `None` on timeout.
    pub(crate) fn recv_timeout(&mut self, timeout: Duration) -> Option<Done> {
        match self.done_rx.recv_timeout(timeout) {
            Ok(done) => Some(self.finish(done)),
            // The pool holds a sender, so the channel never disconnects.
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// A call that has already ended, if any.
    pub(crate) fn try_recv(&mut self) -> Option<Done> {
        self.done_rx.try_recv().ok().map(|done| self.finish(done))
    }

    fn finish(&mut self, done: Done) -> Done {
        self.in_flight = self.in_flight.saturating_sub(1);
        match self.conns.get_mut(done.conn) {
            Some(Some(conn)) if done.reusable => self.idle[conn.backend].push(done.conn),
            Some(slot) => *slot = None,
            None => {}
        }
        done
    }

    /// Closes the idle connections of `backend` (their threads end).
    pub(crate) fn close_idle(&mut self, backend: usize) {
        for c in std::mem::take(&mut self.idle[backend]) {
            self.conns[c] = None;
        }
    }

    /// Opens a connection to `backend` with its reader thread; returns its index.
    fn open(&mut self, backend: usize) -> Result<usize, ClientError> {
        let addr = self.addrs[backend];
        let cfg = self.cfg;
        let connect_err = |source| ClientError::Connect { addr, source };
        let stream = TcpStream::connect_timeout(&addr, cfg.connect_timeout).map_err(connect_err)?;
        stream.set_nodelay(true).map_err(connect_err)?;
        stream
            .set_read_timeout(cfg.io_timeout)
            .map_err(connect_err)?;
        stream
            .set_write_timeout(cfg.io_timeout)
            .map_err(connect_err)?;
        let (input, out) =
            protocol_stack(&stream, cfg.protocol, cfg.transport).map_err(connect_err)?;
        let (pending, pending_rx) = mpsc::channel();
        let id = self.conns.len();
        let done = self.done_tx.clone();
        thread::Builder::new()
            .name(format!("lbsim-recv-{backend}"))
            .stack_size(READER_STACK)
            .spawn(move || reader(id, addr, cfg, stream, input, &pending_rx, &done))
            .map_err(connect_err)?;
        self.opened += 1;
        self.conns.push(Some(Conn {
            backend,
            out,
            pending,
            seq: 0,
        }));
        Ok(id)
    }
}

/// A reader thread: for each call written on its connection, waits for the answer and
/// reports it. Ends when the connection fails or the pool drops it.
fn reader(
    id: usize,
    addr: SocketAddr,
    cfg: ClientConfig,
    stream: TcpStream,
    mut input: InputProtocol,
    pending: &Receiver<Pending>,
    done: &Sender<Done>,
) {
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
            sent: p.sent,
            finished: Instant::now(),
            result,
            conn: id,
            reusable,
        };
        if done.send(report).is_err() || !reusable {
            break;
        }
    }
    // Closes the connection now, so the backend's connection thread ends too.
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
