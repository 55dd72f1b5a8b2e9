//! Engine throughput: simulated requests per second for one replication on one core,
//! 16 heterogeneous servers, all metrics on.
//!
//! `cargo bench --bench engine` — criterion reports time per replication and, through
//! `Throughput::Elements`, requests per second. The `engine_policy` group runs the same
//! cluster under client policies (timeouts, retries with a budget, outlier ejection,
//! hedging): the path of the shared client core ([`lbsim::policy::client`]).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group};
use lbsim::scenario::Scenario;
use lbsim::sim::{Run, simulate};

// What the binary does first (`src/heap.rs`): each run reuses the pages the run before freed.
#[path = "../src/heap.rs"]
mod heap;

const SCENARIO: &str = r#"
name = "bench"
seed = 1
replications = 1
duration = 20.0
warmup = 2.0
[arrivals]
process = "poisson"
rate = 10000.0
[[servers]]
name = "fast"
count = 4
workers = 4
speed = 2.0
weight = 2
service = { dist = "lognormal", mean = 0.004, cv = 1.5 }
[[servers]]
name = "slow"
count = 12
workers = 4
speed = 1.0
service = { dist = "exponential", mean = 0.004 }
[[strategies]]
kind = "round_robin"
[[strategies]]
kind = "least_connections"
[[strategies]]
kind = "random"
"#;

/// The same cluster under client policies (per-try timeout and retries with a Finagle
/// budget and Envoy outlier ejection; hedging).
const POLICY_STRATEGIES: &str = r#"
[[strategies]]
label = "retries"
kind = "least_request"
[strategies.policy]
timeout = 1.0
per_try_timeout = 0.05
[strategies.policy.retry]
max_attempts = 3
[strategies.policy.budget]
kind = "finagle"
[strategies.policy.outlier]
kind = "envoy"
interval = 1.0
[[strategies]]
label = "hedging"
kind = "least_request"
[strategies.policy]
timeout = 1.0
[strategies.policy.hedge]
delay = 0.02
max_attempts = 2
cancel_losers = false
"#;

fn engine(c: &mut Criterion) {
    let s = Scenario::from_source(Path::new("bench.toml"), SCENARIO).expect("valid bench scenario");
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    for entry in &s.strategies {
        // Requests per replication, counted once, so criterion reports requests/s.
        let n = simulate(&s, &entry.spec, 0, s.seed).arrived as f64 / s.duration * s.end();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("16 servers, {}", entry.label()), |b| {
            b.iter(|| black_box(simulate(&s, &entry.spec, 0, s.seed).summarize()))
        });
    }
    group.finish();
}

fn engine_policy(c: &mut Criterion) {
    let cluster = SCENARIO.split("[[strategies]]").next().expect("a cluster");
    let text = format!("{cluster}{POLICY_STRATEGIES}");
    let s = Scenario::from_source(Path::new("bench.toml"), &text).expect("valid bench scenario");
    let mut group = c.benchmark_group("engine_policy");
    group.sample_size(10);
    for entry in &s.strategies {
        let run = || Run::entry(&s, entry, 0).simulate().expect("not cancelled");
        let n = run().metrics.arrived as f64 / s.duration * s.end();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("16 servers, {}", entry.label()), |b| {
            b.iter(|| black_box(run().metrics.summarize()))
        });
    }
    group.finish();
}

criterion_group!(benches, engine, engine_policy);
// `criterion_main!(benches)`, after what the binary does first: each run reuses the pages
// the run before freed (`src/heap.rs`).
fn main() {
    heap::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
