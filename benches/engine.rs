//! Engine throughput: simulated requests per second for one replication on one core,
//! 16 heterogeneous servers, all metrics on.
//!
//! `cargo bench --bench engine` — criterion reports time per replication and, through
//! `Throughput::Elements`, requests per second.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lbsim::scenario::Scenario;
use lbsim::sim::simulate;

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

criterion_group!(benches, engine);
criterion_main!(benches);
