//! Probes' cost jobs: the work a probe costs its server, as the simulator's
//! [`crate::sim::probe`] plays `[probes] cost`.
//!
//! A probe sent with `cost_ns` is answered at once with the load as it arrived; then a
//! job of that much work (`cost_ns / speed`, slowed by a slow-down or a cold start as a
//! call starting then would be, behind a pause under way) enters the server's
//! [`Admission`](super::Admission) as a call would: it starts if a worker is free and
//! nobody waits, otherwise it waits its turn in the same queue, first in, first out (or as
//! admission control picks), and a full queue turns it away. No thread waits for it: the
//! slot it is given goes to the server's one cost thread, which holds it for the job's
//! service and then releases it (handing it to the next waiter, call or cost job). Jobs
//! that a crash interrupts end at once and count for nothing.
//!
//! A cost job counts in the load the server reports (in service or waiting, and in the
//! backlog `ping` estimates) but in none of its call counters, as the simulator's probe
//! jobs count in a server's queue and busy workers but are no request. What the ended
//! jobs took (waiting and in service, in total) goes back on every probe answer, from
//! which the driver adds them to the server's utilisation and queue, as the simulator's
//! integrals count probe jobs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use super::Shared;

/// How long the cost thread sleeps with no job in service before checking that its
/// server still exists.
const IDLE_CHECK: Duration = Duration::from_millis(200);

/// A probe's cost job, from its arrival.
#[derive(Debug, Clone, Copy)]
pub(super) struct CostJob {
    /// Its service before faults alter it (`cost_ns / speed`).
    service: Duration,
    /// When the probe arrived.
    arrived: Instant,
    /// The server's crash count then: a crash since abandons the job.
    crashes: u64,
}

/// What the admission tells the cost thread.
#[derive(Debug)]
pub(super) enum CostEvent {
    /// The job was given a worker at this instant.
    Started(CostJob, Instant),
    /// Admission control dropped the waiting job.
    Dropped(CostJob),
}

/// Sends `event` to the cost thread, if it runs (otherwise no cost job is admitted).
pub(super) fn send(costs: &Option<Sender<CostEvent>>, event: CostEvent) {
    if let Some(tx) = costs {
        let _ = tx.send(event);
    }
}

/// Waiting and service time of the cost jobs that ended (nanoseconds, in total).
#[derive(Debug, Default)]
pub(super) struct CostTotals {
    queued: AtomicU64,
    served: AtomicU64,
}

impl CostTotals {
    /// (waited, served), both in nanoseconds, as `i64` for the wire.
    pub(super) fn get(&self) -> (i64, i64) {
        let get = |a: &AtomicU64| i64::try_from(a.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        (get(&self.queued), get(&self.served))
    }

    fn add(&self, queued: Duration, served: Duration) {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.queued.fetch_add(ns(queued), Ordering::Relaxed);
        self.served.fetch_add(ns(served), Ordering::Relaxed);
    }
}

/// Starts `shared`'s cost thread; without one, cost jobs are refused and probe answers
/// say the server does not run them.
pub(super) fn start(shared: &Arc<Shared>) {
    let (tx, rx) = mpsc::channel();
    let weak = Arc::downgrade(shared);
    let spawned = thread::Builder::new()
        .name(format!("lbsim-{}-costs", shared.id))
        .stack_size(super::CONNECTION_STACK)
        .spawn(move || {
            super::precise_sleeps();
            run(&weak, &rx);
        });
    if spawned.is_ok() {
        shared.admission.set_costs(Some(tx));
    }
}

/// Offers the cost job of a probe asking `cost_ns` of work (none for `None` or 0);
/// returns whether this server runs cost jobs (the answer says so), or the error of a
/// cost it refuses to serve (negative, or beyond `max_service`).
pub(super) fn offer(shared: &Shared, cost_ns: Option<i64>) -> thrift::Result<bool> {
    let runs = shared.admission.runs_costs();
    let Some(work) = cost_ns.filter(|&c| c != 0) else {
        return Ok(runs);
    };
    let service = shared.service_time(work).map_err(|why| {
        shared.invalid.fetch_add(1, Ordering::Relaxed);
        thrift::Error::Application(thrift::ApplicationError::new(
            thrift::ApplicationErrorKind::Unknown,
            format!("probe cost: {why}"),
        ))
    })?;
    if !runs || shared.faults.crashed() {
        return Ok(runs);
    }
    let ns = u64::try_from(service.as_nanos()).unwrap_or(u64::MAX);
    shared.backlog_ns.fetch_add(ns, Ordering::Relaxed);
    let job = CostJob {
        service,
        arrived: Instant::now(),
        crashes: shared.stop.crashes(),
    };
    if !shared.admission.offer_cost(job) {
        shared.backlog_ns.fetch_sub(ns, Ordering::Relaxed);
    }
    Ok(runs)
}

/// A cost job holding a worker.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Running {
    /// When its service ends.
    end: Instant,
    started: Instant,
    arrived: Instant,
    crashes: u64,
    /// Its service as first asked, counted in the backlog until it ends.
    backlog_ns: u64,
}

/// The cost thread: takes the jobs given a worker, and releases each worker when its
/// job's service ends (or a crash abandons it). Ends with its server.
fn run(shared: &Weak<Shared>, events: &mpsc::Receiver<CostEvent>) {
    let mut running: BinaryHeap<Reverse<Running>> = BinaryHeap::new();
    loop {
        let wait = running.peek().map_or(IDLE_CHECK, |Reverse(r)| {
            r.end.saturating_duration_since(Instant::now())
        });
        let event = events.recv_timeout(wait);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.stop.is_stopped() {
            return;
        }
        let unback = |job: &CostJob| {
            let ns = u64::try_from(job.service.as_nanos()).unwrap_or(u64::MAX);
            shared.backlog_ns.fetch_sub(ns, Ordering::Relaxed);
        };
        match event {
            Ok(CostEvent::Started(job, at)) => {
                // As a call starting now: slowed by a slow-down or a cold start, after a
                // pause under way.
                let factor = shared.faults.slow() / shared.faults.warm_factor(at);
                let service = if factor == 1.0 {
                    job.service
                } else {
                    job.service.mul_f64(factor)
                };
                let begin = shared.faults.pauses().until.map_or(at, |u| u.max(at));
                running.push(Reverse(Running {
                    end: begin + service,
                    started: at,
                    arrived: job.arrived,
                    crashes: job.crashes,
                    backlog_ns: u64::try_from(job.service.as_nanos()).unwrap_or(u64::MAX),
                }));
            }
            Ok(CostEvent::Dropped(job)) => unback(&job),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let crashes = shared.stop.crashes();
        let now = Instant::now();
        while running
            .peek()
            .is_some_and(|Reverse(r)| r.end <= now || r.crashes != crashes)
        {
            let Some(Reverse(r)) = running.pop() else {
                break;
            };
            shared.admission.release();
            shared.backlog_ns.fetch_sub(r.backlog_ns, Ordering::Relaxed);
            if r.crashes == crashes {
                shared.cost_totals.add(
                    r.started - r.arrived,
                    now.saturating_duration_since(r.started),
                );
            }
        }
    }
}
