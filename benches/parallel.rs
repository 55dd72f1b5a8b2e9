//! Parallel efficiency of Monte Carlo replications: the same 8 replications of the default
//! scenario with 1 and with 2 worker threads. Efficiency = t(1) / (2 · t(2)).
//!
//! `cargo bench --bench parallel`

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use lbsim::runner::{RunOptions, run};
use lbsim::scenario::Scenario;

fn parallel(c: &mut Criterion) {
    let s = Scenario::load(Path::new("scenarios/heterogeneous.toml")).expect("shipped scenario");
    let mut group = c.benchmark_group("replications");
    group.sample_size(10);
    for threads in [1, 2] {
        let opts = RunOptions {
            replications: Some(8),
            threads: Some(threads),
            ..Default::default()
        };
        group.bench_function(format!("8 replications, {threads} thread(s)"), |b| {
            b.iter(|| black_box(run(&s, &opts).expect("run")))
        });
    }
    group.finish();
}

criterion_group!(benches, parallel);
criterion_main!(benches);
