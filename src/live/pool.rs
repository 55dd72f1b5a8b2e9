//! Persistent connections to the backends, one sender thread per connection.
//!
//! The driver hands each request to an idle connection of the chosen backend, or opens a
//! new one when all are busy, so a request in flight never waits for a connection: the
//! pool grows to the largest number of requests in flight per backend and reuses
//! connections from then on. Each connection has its own thread that blocks in the call;
//! when the answer (or an error) comes back the thread reports a [`Done`] on one channel
//! shared by all connections, which the driver reads. A connection that failed is not
//! reused (its stream position is unknown): its thread ends.

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use super::client::{CallOutcome, ClientConfig, ClientError, Connection};

/// Stack size of sender threads: they only encode and decode small messages.
const SENDER_STACK: usize = 256 * 1024;

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
    /// When the sender thread started writing the call.
    pub sent: Instant,
    /// When the answer (or the error) came back.
    pub finished: Instant,
    /// What happened.
    pub result: Result<CallOutcome, ClientError>,
    worker: usize,
    reusable: bool,
}

struct Worker {
    tx: Sender<Job>,
    backend: usize,
}

/// Connections to every backend, with their sender threads.
pub(crate) struct Pool {
    addrs: Vec<SocketAddr>,
    cfg: ClientConfig,
    workers: Vec<Option<Worker>>,
    /// Idle workers per backend (a stack: the most recently used first, its thread is warm).
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
            workers: Vec::new(),
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
            let conn = Connection::connect(self.addrs[backend], &self.cfg)?;
            let w = self.spawn(backend, Some(conn));
            self.idle[backend].push(w);
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

    /// Hands `job` to an idle connection of its backend, opening one if none is idle
    /// (the new thread connects, so the caller never blocks on a handshake).
    pub(crate) fn send(&mut self, job: Job) {
        self.in_flight += 1;
        let mut job = job;
        while let Some(w) = self.idle[job.backend].pop() {
            match self.workers[w].as_ref().map(|wk| wk.tx.send(job)) {
                Some(Ok(())) => return,
                // The thread has gone: forget it and try the next idle one.
                Some(Err(mpsc::SendError(j))) => {
                    job = j;
                    self.workers[w] = None;
                }
                None => {}
            }
        }
        let w = self.spawn(job.backend, None);
        let sent = match self.workers.get(w) {
            Some(Some(worker)) => worker.tx.send(job).map_err(|mpsc::SendError(j)| j),
            // No thread could be started for it.
            _ => Err(job),
        };
        // A fresh thread holds its receiver until it reports, so only a failed spawn gets
        // here: report the job failed rather than lose it.
        if let Err(j) = sent {
            let now = Instant::now();
            let _ = self.done_tx.send(Done {
                job: j,
                sent: now,
                finished: now,
                result: Err(ClientError::Broken {
                    addr: self.addrs[j.backend],
                }),
                worker: w,
                reusable: false,
            });
        }
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
        if done.reusable {
            if let Some(Some(worker)) = self.workers.get(done.worker) {
                self.idle[worker.backend].push(done.worker);
            }
        } else if let Some(slot) = self.workers.get_mut(done.worker) {
            *slot = None;
        }
        done
    }

    /// Closes the idle connections of `backend` (their threads end).
    pub(crate) fn close_idle(&mut self, backend: usize) {
        for w in std::mem::take(&mut self.idle[backend]) {
            self.workers[w] = None;
        }
    }

    fn spawn(&mut self, backend: usize, conn: Option<Connection>) -> usize {
        let (tx, rx) = mpsc::channel::<Job>();
        let id = self.workers.len();
        let done_tx = self.done_tx.clone();
        let (addr, cfg) = (self.addrs[backend], self.cfg);
        let spawned = thread::Builder::new()
            .name(format!("lbsim-send-{backend}"))
            .stack_size(SENDER_STACK)
            .spawn(move || sender(id, addr, cfg, conn, &rx, &done_tx));
        self.opened += 1;
        // Without a thread the worker slot stays empty and `send` reports the job failed.
        self.workers
            .push(spawned.ok().map(|_| Worker { tx, backend }));
        id
    }
}

/// A sender thread: connects if needed, then sends each job it is given and reports it.
fn sender(
    id: usize,
    addr: SocketAddr,
    cfg: ClientConfig,
    mut conn: Option<Connection>,
    jobs: &Receiver<Job>,
    done: &Sender<Done>,
) {
    super::server::precise_sleeps();
    while let Ok(job) = jobs.recv() {
        let connection = match conn.as_mut() {
            Some(c) => Ok(c),
            None => Connection::connect(addr, &cfg).map(|c| conn.insert(c)),
        };
        let sent = Instant::now();
        let (result, reusable) = match connection {
            Ok(c) => {
                let key = job.key;
                let r = c.call(job.id as i64, job.work_ns, key);
                let ok = !c.is_broken();
                (r, ok)
            }
            Err(e) => (Err(e), false),
        };
        let finished = Instant::now();
        let report = Done {
            job,
            sent,
            finished,
            result,
            worker: id,
            reusable,
        };
        if done.send(report).is_err() || !reusable {
            return;
        }
    }
}
