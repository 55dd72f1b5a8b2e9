//! The engine at scale, against the practical limit.
//!
//! - `limit/*`: the engine (`sim::simulate`, every metric on) and a bare event loop — a
//!   `BinaryHeap` of completions, Poisson arrivals, exponential services, one worker per
//!   server, the same dispatch (`Balancer::route_with` / `complete`, and a shared
//!   `LoadTable` published on every change for strategies that read reports) and no
//!   metrics — on the same cluster, in the same run: their ratio is the engine's
//!   overhead.
//! - `size/<strategy>/<servers>`: simulated requests per second on one core at 10, 100,
//!   1,000 and 10,000 servers, for every strategy of the catalogue (plus indexed JSQ and C3, and aperture at its steady width),
//!   offered load 0.8; round robin is the yardstick of cost per request at each size.
//!   Each engine measurement is followed at once by the bare loop's on the same cluster
//!   (`size/<strategy>/bare/<servers>`), so each pair shares the machine's state.
//! - `balancers/<strategy>/<balancers>`: P2C over 1,000 servers and JSQ on exact load
//!   reports over 100 servers, with 1, 10, 100 and 1,000 balancers (arrivals split
//!   uniformly), each followed by the bare loop with as many balancers.
//!
//! Every figure is requests/s (`Throughput::Elements`). The full grid takes a while:
//! filter, e.g. `cargo bench --bench scale -- 'size/.*/10000'`. The machine matters:
//! compare ratios measured in one run.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use lbsim::sim::simulate;
use lbsim::strategy::STRATEGIES;

// What the binary does first (`src/heap.rs`): each run reuses the pages the run before freed.
#[path = "../src/heap.rs"]
mod heap;

mod common;
use common::{bare, requests, scenario};

/// Like [`requests`], but fewer for a strategy that scans every server at each pick
/// (JSQ's and C3's exact reservoir sampling cost milliseconds a pick at 10,000 servers):
/// its cost per request is the scan's, whatever the cluster's fill.
fn requests_for(label: &str, n: usize) -> u64 {
    if (label == "jsq" || label == "c3") && n >= 1000 {
        20_000
    } else {
        requests(n)
    }
}

/// Every strategy at its defaults, as (label, TOML lines), plus indexed JSQ and C3, and
/// aperture with a load average of 1 ms: at its default 5 s the aperture is still a few
/// backends wide when a bench run ends, so only this row measures it at its steady width
/// (most of the cluster at offered load 0.8).
fn strategies() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = STRATEGIES
        .iter()
        .map(|d| d.about().kind)
        .map(|k| (k.to_string(), format!("kind = \"{k}\"")))
        .collect();
    v.push((
        "jsq_indexed".into(),
        "kind = \"jsq\"\nindexed = true".into(),
    ));
    v.push(("c3_indexed".into(), "kind = \"c3\"\nindexed = true".into()));
    v.push((
        "aperture_steady".into(),
        "kind = \"aperture\"\nsmooth_win = 0.001".into(),
    ));
    v
}

fn quick(c: &mut Criterion) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group("scale");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    g
}

/// Engine vs bare loop, same cluster, same strategy.
fn limit(c: &mut Criterion) {
    let mut g = quick(c);
    for n in [10usize, 16, 1000] {
        for kind in [
            "round_robin",
            "random",
            "power_of_d",
            "jsq",
            "least_connections",
        ] {
            let requests = requests(n);
            let s = scenario(n, 1, requests, &format!("kind = \"{kind}\""));
            let spec = s.strategies[0].spec.clone();
            g.throughput(Throughput::Elements(requests));
            g.bench_function(BenchmarkId::new(format!("limit/engine/{kind}"), n), |b| {
                b.iter(|| black_box(simulate(&s, &spec, 0, 1).arrived))
            });
            g.bench_function(BenchmarkId::new(format!("limit/bare/{kind}"), n), |b| {
                b.iter(|| black_box(bare(n, 1, &spec, requests)))
            });
        }
    }
    g.finish();
}

/// Every strategy at every size, each engine measurement paired with the bare loop's.
fn size(c: &mut Criterion) {
    let mut g = quick(c);
    for (label, toml) in strategies() {
        for n in [10usize, 100, 1000, 10_000] {
            let requests = requests_for(&label, n);
            let s = scenario(n, 1, requests, &toml);
            let spec = s.strategies[0].spec.clone();
            g.throughput(Throughput::Elements(requests));
            g.bench_function(BenchmarkId::new(format!("size/{label}"), n), |b| {
                b.iter(|| black_box(simulate(&s, &spec, 0, 1).arrived))
            });
            g.bench_function(BenchmarkId::new(format!("size/{label}/bare"), n), |b| {
                b.iter(|| black_box(bare(n, 1, &spec, requests)))
            });
        }
    }
    g.finish();
}

/// Many balancers.
fn balancers(c: &mut Criterion) {
    let mut g = quick(c);
    for (label, toml, n) in [
        ("p2c", "kind = \"power_of_d\"", 1000usize),
        ("jsq_exact_reports", "kind = \"jsq\"", 100),
    ] {
        for b in [1usize, 10, 100, 1000] {
            let requests = requests(n);
            let s = scenario(n, b, requests, toml);
            let spec = s.strategies[0].spec.clone();
            g.throughput(Throughput::Elements(requests));
            g.bench_function(
                BenchmarkId::new(format!("balancers/{label}/{n}_servers"), b),
                |bench| bench.iter(|| black_box(simulate(&s, &spec, 0, 1).arrived)),
            );
            g.bench_function(
                BenchmarkId::new(format!("balancers/{label}/{n}_servers/bare"), b),
                |bench| bench.iter(|| black_box(bare(n, b, &spec, requests))),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, limit, size, balancers);
// `criterion_main!(benches)`, after what the binary does first: each run reuses the pages
// the run before freed (`src/heap.rs`).
fn main() {
    heap::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
