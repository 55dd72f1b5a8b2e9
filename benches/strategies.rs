//! Cost of one pick with its dispatch and completion callbacks, per strategy, at 10, 100
//! and 1000 backends, through `Balancer::route` and `Balancer::complete` (what the engine
//! and the live driver call). Each iteration routes one request and completes the
//! request routed 16 picks earlier, so every backend view carries some load. A strategy
//! that probes (prequal) is also asked for its probes after each pick, as the engine and
//! the live driver ask ([`Balancer::take_probes`]).
//!
//! Beside them, `static_rr_map`: building HAProxy's static map (`static_rr`, map-based
//! `haproxy_source`; at the first pick and at every server going down or up) for 10,000
//! servers of weights 1 to 4 and 1 to 256, by levels ([`StaticRr::map`]) and, for weights
//! 1 to 4, by HAProxy's own loop ([`StaticRr::map_walk`], 0.4 s a build).

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group};
use lbsim::rng::{Stream, stream_rng};
use lbsim::strategy::{Balancer, LoadReport, Outcome, STRATEGIES, StaticRr, StrategySpec};
use lbsim::time::Nanos;

// What the binary does first (`src/heap.rs`): each run reuses the pages the run before freed.
#[path = "../src/heap.rs"]
mod heap;

fn specs() -> Vec<StrategySpec> {
    STRATEGIES.iter().map(|d| d.defaults()).collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for spec in specs() {
        for n in [10usize, 100, 1000] {
            let rng = stream_rng(1, 0, Stream::Strategy, 0);
            let mut b = Balancer::new(spec.build(n, rng), &vec![1; n]);
            for i in 0..n {
                b.set_load(
                    i,
                    LoadReport {
                        at: Nanos(0),
                        in_system: (i % 3) as u32,
                        workers: 4,
                        completed: 0,
                        busy_time: 0,
                    },
                );
            }
            let mut outstanding: VecDeque<usize> = VecDeque::with_capacity(32);
            let probes = b.signals().probes;
            let mut asked: Vec<usize> = Vec::with_capacity(16);
            let mut t = 0u64;
            let mut key = 0x9E37_79B9_7F4A_7C15u64;
            group.bench_function(BenchmarkId::new(spec.kind(), n), |bench| {
                bench.iter(|| {
                    t += 1_000;
                    key = key
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let i = b.route(Nanos(t), black_box(key)).unwrap();
                    if probes {
                        b.take_probes(Nanos(t), &mut asked);
                        asked.clear();
                    }
                    outstanding.push_back(i);
                    if outstanding.len() > 16 {
                        let j = outstanding.pop_front().unwrap();
                        b.complete(j, Nanos(20_000), Outcome::Ok, Nanos(t));
                    }
                    i
                })
            });
        }
    }
    group.finish();
}

fn static_rr_map(c: &mut Criterion) {
    let mut group = c.benchmark_group("static_rr_map");
    group.sample_size(10);
    let n = 10_000u32;
    for top in [4u32, 256] {
        let weights: Vec<u32> = (0..n).map(|i| 1 + i * top / n).collect();
        let label = format!("{n}_weights_1_to_{top}");
        group.bench_function(BenchmarkId::new("levels", &label), |bench| {
            bench.iter(|| StaticRr::map(black_box(&weights)))
        });
        if top == 4 {
            group.bench_function(BenchmarkId::new("haproxy_loop", &label), |bench| {
                bench.iter(|| StaticRr::map_walk(black_box(&weights)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench, static_rr_map);
// `criterion_main!(benches)`, after what the binary does first: each run reuses the pages
// the run before freed (`src/heap.rs`).
fn main() {
    heap::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
