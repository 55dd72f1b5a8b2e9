//! Probes in live mode: the `probe` call of `thrift/lbsim.thrift`, sent off the
//! dispatcher's path.
//!
//! A strategy that probes ([`crate::strategy::Strategy::probes`]) asks for probes while
//! the dispatcher routes; the dispatcher hands each to the prober thread of that backend
//! (one connection each, opened on first use) and goes on; answers come back on one
//! channel, which the dispatcher drains whenever it wakes (before routing a request and
//! between completions), so an answer reaches the strategy at the latest when the next
//! request is routed — as in the simulator, where answers arrive between events. A probe
//! that fails (connection refused, timeout) is never answered, as a crashed server's in the
//! simulator. Probes cost what the real server spends answering them (no emulated work)
//! and travel the real network: the scenario's `[probes]` applies to the simulator only.

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use super::client::{ClientConfig, Connection, ReplyLoad};

/// A probe's answer: backend, the balancer that sent the probe, when it was sent, when
/// the answer came, the load.
pub(crate) type Answer = (usize, usize, Instant, Instant, ReplyLoad);

/// One prober thread per backend.
pub(crate) struct Prober {
    ask: Vec<Sender<(usize, Instant)>>,
    answers: Receiver<Answer>,
    threads: Vec<JoinHandle<()>>,
}

impl Prober {
    /// Probers for `addrs`, connecting with `cfg`.
    pub(crate) fn new(addrs: &[SocketAddr], cfg: &ClientConfig) -> Prober {
        let (tx, answers) = mpsc::channel();
        let mut ask = Vec::new();
        let mut threads = Vec::new();
        for (i, &addr) in addrs.iter().enumerate() {
            let (atx, arx) = mpsc::channel::<(usize, Instant)>();
            let tx = tx.clone();
            let cfg = *cfg;
            let spawned = thread::Builder::new()
                .name(format!("lbsim-probe-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || probe_loop(i, addr, &cfg, &arx, &tx));
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
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.ask.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn probe_loop(
    i: usize,
    addr: SocketAddr,
    cfg: &ClientConfig,
    asked: &Receiver<(usize, Instant)>,
    answers: &Sender<Answer>,
) {
    let mut conn: Option<Connection> = None;
    while let Ok((b, sent)) = asked.recv() {
        if conn.as_ref().is_none_or(Connection::is_broken) {
            conn = Connection::connect(addr, cfg).ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        if let Ok(load) = c.probe()
            && answers.send((i, b, sent, Instant::now(), load)).is_err()
        {
            return;
        }
    }
}
