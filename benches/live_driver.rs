//! Live driver: per-request client overhead (strategy pick + bookkeeping, and the
//! hand-off to a sender thread) against a loopback Thrift round trip.
//!
//! `cargo bench --bench live_driver`. The driver's sustained rate is measured end to end
//! with `lbsim live benches/scenarios/live-rate.toml --report-lag` instead.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use lbsim::live::server::{self, ServerConfig};
use lbsim::live::{ClientConfig, Connection};
use lbsim::metrics::{RunMetrics, latency_histogram};
use lbsim::rng::{Stream, stream_rng};
use lbsim::strategy::{
    Balancer, LeastConnections, Outcome, RandomChoice, RoundRobin, StrategySpec,
};
use lbsim::time::Nanos;

// What the binary does first (`src/heap.rs`): each run reuses the pages the run before freed.
#[path = "../src/heap.rs"]
mod heap;

/// What the dispatcher does per request besides I/O: route, complete, record latency and lag.
fn bookkeeping(c: &mut Criterion) {
    let mut g = c.benchmark_group("client_overhead");
    for spec in [
        StrategySpec::default_of::<RoundRobin>(),
        StrategySpec::default_of::<LeastConnections>(),
        StrategySpec::default_of::<RandomChoice>(),
    ] {
        let rng = stream_rng(1, 0, Stream::Strategy, 0);
        let mut balancer = Balancer::new(spec.build(4, rng), &[1, 1, 1, 1]);
        let mut metrics = RunMetrics::new(&[2, 2, 2, 2], Nanos(0), Nanos(u64::MAX));
        let mut lag = latency_histogram();
        let mut t = 0u64;
        g.bench_function(format!("route_complete_record/{}", spec.kind()), |b| {
            b.iter(|| {
                t += 1000;
                let i = balancer.route(Nanos(t), t).expect("a backend is up");
                let now = Instant::now();
                balancer.complete(i, Nanos(3_000_000), Outcome::Ok, Nanos(t + 10));
                metrics.record_latency(Nanos(3_000_000 + (t & 0xffff)));
                metrics.servers[i].requests += 1;
                lag.saturating_record(black_box(now.elapsed().as_nanos() as u64).max(1));
            });
        });
    }
    // A hand-off to another thread and back (two channel sends, two wake-ups): what the
    // completion report costs, and what a dispatcher-to-sender-thread design would add
    // before every send (the driver writes from the dispatcher instead).
    let (to_tx, to_rx) = mpsc::channel::<u64>();
    let (back_tx, back_rx) = mpsc::channel::<u64>();
    let echo = thread::spawn(move || {
        while let Ok(x) = to_rx.recv() {
            if back_tx.send(x).is_err() {
                break;
            }
        }
    });
    g.bench_function("handoff_round_trip", |b| {
        b.iter(|| {
            to_tx.send(black_box(1)).expect("echo thread alive");
            back_rx.recv().expect("echo thread alive")
        });
    });
    drop(to_tx);
    let _ = echo.join();
    g.finish();
}

/// A zero-work call on one persistent loopback connection.
fn loopback(c: &mut Criterion) {
    let server = server::spawn(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        ServerConfig::new("bench"),
    )
    .expect("spawn server");
    let mut conn =
        Connection::connect(server.local_addr(), &ClientConfig::default()).expect("connect");
    let mut id = 0;
    c.bench_function("loopback/call_zero_work", |b| {
        b.iter(|| {
            id += 1;
            conn.call(id, 0, Some(id)).expect("call")
        });
    });
    server.shutdown();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bookkeeping, loopback
}
// `criterion_main!(benches)`, after what the binary does first: each run reuses the pages
// the run before freed (`src/heap.rs`).
fn main() {
    heap::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
