//! The discrete-event engine: one replication of one strategy.
//!
//! Events are arrivals (one pending at a time, generated lazily from the request stream)
//! and completions. On arrival a balancer (chosen uniformly when there are several) routes
//! the request; the server starts it, queues it or refuses it. Arrivals stop at the end of
//! the measured window and the system then drains, so every measured request completes.

use rand::RngExt;

use super::event_queue::EventQueue;
use super::server::{Admission, Job, Server};
use crate::metrics::RunMetrics;
use crate::rng::{Stream, stream_rng};
use crate::scenario::Scenario;
use crate::strategy::{Balancer, Outcome, StrategySpec};
use crate::time::Nanos;
use crate::workload::{Request, RequestStream};

enum Event {
    Arrival(Request),
    Done {
        server: u32,
        job: Job,
    },
    /// Periodic load reports to every balancer (stale-information topology).
    Report,
}

/// Simulates replication `replication` of `scenario` under `strategy`, with master seed
/// `seed`, and returns what was measured.
pub fn simulate(
    scenario: &Scenario,
    strategy: &StrategySpec,
    replication: u64,
    seed: u64,
) -> RunMetrics {
    let servers_info = scenario.servers();
    let weights = scenario.weights();
    let mut servers: Vec<Server> = servers_info
        .iter()
        .map(|s| {
            let g = &scenario.groups[s.group];
            Server::new(g.workers, g.speed, g.queue_capacity, s.group)
        })
        .collect();
    let dists: Vec<_> = scenario.groups.iter().map(|g| g.service.clone()).collect();
    // Live-mode calibration constants (both 0 for scenarios read from files).
    let overhead = scenario.service_overhead.max(0.0);
    let extra_latency = Nanos::from_secs_f64(scenario.extra_latency);
    let mut balancers: Vec<Balancer> = (0..scenario.balancers)
        .map(|b| {
            let rng = stream_rng(seed, replication, Stream::Strategy, u64::from(b));
            Balancer::new(strategy.build(servers.len(), rng), &weights)
        })
        .collect();
    let mut routing = stream_rng(seed, replication, Stream::Routing, 0);

    let from = Nanos::from_secs_f64(scenario.warmup);
    let to = Nanos::from_secs_f64(scenario.end());
    let workers: Vec<u32> = servers.iter().map(|s| s.workers).collect();
    let mut m = RunMetrics::new(&workers, from, to);

    let mut requests = RequestStream::new(&scenario.workload, seed, replication);
    let mut events: EventQueue<Event> = EventQueue::default();
    if let Some(r) = requests.next() {
        events.push(r.arrival, Event::Arrival(r));
    }
    let report_every = scenario.load_report_interval.map(Nanos::from_secs_f64);
    if let Some(dt) = report_every {
        events.push(dt, Event::Report);
    }
    let exact_reports = report_every.is_none();

    while let Some((now, event)) = events.pop() {
        match event {
            Event::Arrival(req) => {
                if let Some(next) = requests.next() {
                    events.push(next.arrival, Event::Arrival(next));
                }
                let measured = now >= from && now < to;
                m.arrived += u64::from(measured);
                let b = if balancers.len() == 1 {
                    0
                } else {
                    routing.random_range(0..balancers.len())
                };
                let Some(i) = balancers[b].route(now, req.key) else {
                    m.unroutable += u64::from(measured);
                    continue;
                };
                let server = &mut servers[i];
                let work = req.size.work(&dists[server.group]);
                let job = Job {
                    arrival: req.arrival,
                    service: Nanos::from_secs_f64(work / server.speed + overhead),
                    balancer: b as u32,
                    measured,
                };
                m.servers[i].advance(now, server.busy, server.queued(), from, to);
                let admission = server.admit(job, now);
                if exact_reports {
                    let report = server.report(now);
                    balancers.iter_mut().for_each(|b| b.set_load(i, report));
                }
                match admission {
                    Admission::Started => {
                        events.push(
                            now + job.service,
                            Event::Done {
                                server: i as u32,
                                job,
                            },
                        );
                        m.servers[i].requests += u64::from(measured);
                    }
                    Admission::Queued => m.servers[i].requests += u64::from(measured),
                    Admission::Rejected => {
                        m.rejected += u64::from(measured);
                        balancers[b].complete(i, Nanos::ZERO, Outcome::Rejected, now);
                    }
                }
            }
            Event::Done { server: i, job } => {
                let i = i as usize;
                let server = &mut servers[i];
                m.servers[i].advance(now, server.busy, server.queued(), from, to);
                if let Some(next) = server.finish(now) {
                    events.push(
                        now + next.service,
                        Event::Done {
                            server: i as u32,
                            job: next,
                        },
                    );
                }
                let latency = now - job.arrival + extra_latency;
                if job.measured {
                    m.record_latency(latency);
                }
                balancers[job.balancer as usize].complete(i, latency, Outcome::Ok, now);
            }
            Event::Report => {
                for (i, server) in servers.iter().enumerate() {
                    let report = server.report(now);
                    balancers.iter_mut().for_each(|b| b.set_load(i, report));
                }
                if let Some(dt) = report_every.filter(|_| now < to) {
                    events.push(now + dt, Event::Report);
                }
            }
        }
    }
    let end = to;
    for (acc, s) in m.servers.iter_mut().zip(&servers) {
        acc.advance(end, s.busy, s.queued(), from, to);
    }
    m
}
