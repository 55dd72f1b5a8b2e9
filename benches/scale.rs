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

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lbsim::rng::{Stream, stream_rng};
use lbsim::scenario::Scenario;
use lbsim::sim::simulate;
use lbsim::strategy::{Balancer, LoadReport, LoadTable, Outcome, STRATEGIES, StrategySpec};
use lbsim::time::Nanos;
use rand::RngExt;

/// Mean service time, seconds.
const SERVICE: f64 = 0.001;
/// Offered load per server.
const LOAD: f64 = 0.8;

/// A scenario of `n` one-worker servers at [`LOAD`] with about `requests` arrivals,
/// `balancers` balancers and one strategy (TOML lines).
fn scenario(n: usize, balancers: usize, requests: u64, strategy: &str) -> Scenario {
    let rate = LOAD * n as f64 / SERVICE;
    let duration = requests as f64 / rate;
    let src = format!(
        "name = \"scale\"\nseed = 1\nreplications = 1\nduration = {duration}\nwarmup = 0\n\
         balancers = {balancers}\n\
         [arrivals]\nprocess = \"poisson\"\nrate = {rate}\n\
         [[servers]]\nname = \"s\"\ncount = {n}\n\
         service = {{ dist = \"exponential\", mean = {SERVICE} }}\n\
         [[strategies]]\n{strategy}\n"
    );
    Scenario::from_source(Path::new("scale.toml"), &src).expect("valid bench scenario")
}

/// Requests a measurement simulates at `n` servers: enough for the cluster to fill.
fn requests(n: usize) -> u64 {
    (20 * n as u64).max(50_000)
}

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

/// A completion in the bare loop: (time, sequence, server, balancer, arrival time).
type Completion = (u64, u64, u32, u32, u64);

/// The bare loop over `n` servers and `balancers` balancers (an arrival goes to one drawn
/// uniformly): returns the number of requests served (to keep it observable).
fn bare(n: usize, balancers: usize, spec: &StrategySpec, requests: u64) -> u64 {
    let rate = LOAD * n as f64 / SERVICE;
    let mut rng = stream_rng(1, 0, Stream::Arrivals, 0);
    let mut exp = move |mean: f64| -> u64 {
        let u: f64 = rng.random::<f64>();
        (-mean * (1.0 - u).ln() * 1e9) as u64
    };
    let weights = vec![1; n];
    let mut b: Vec<Balancer> = (0..balancers)
        .map(|k| {
            Balancer::new(
                spec.build(n, stream_rng(1, 0, Stream::Strategy, k as u64)),
                &weights,
            )
        })
        .collect();
    let mut routing = stream_rng(1, 0, Stream::Routing, 0);
    let mut table = spec.reads_load_reports().then(|| {
        if spec.indexes_load_reports() {
            LoadTable::with_queue_index(n)
        } else {
            LoadTable::new(n)
        }
    });
    let mut in_system = vec![0u32; n];
    let mut heap: BinaryHeap<Reverse<Completion>> = BinaryHeap::new();
    let (mut seq, mut served) = (0u64, 0u64);
    let mut next_arrival = exp(1.0 / rate);
    let mut arrived = 0u64;
    // Per server, arrival times waiting (FIFO): only the count matters without metrics,
    // but the latency reported to the balancer needs the arrival time.
    let mut waiting: Vec<std::collections::VecDeque<(u32, u64)>> = vec![Default::default(); n];
    let publish = |table: &mut Option<LoadTable>, i: usize, q: u32, now: u64| {
        if let Some(t) = table {
            t.publish(
                i,
                LoadReport {
                    at: Nanos(now),
                    in_system: q,
                    workers: 1,
                    ..LoadReport::default()
                },
            );
        }
    };
    loop {
        let arrival_first =
            arrived < requests && heap.peek().is_none_or(|Reverse((t, ..))| next_arrival < *t);
        if arrival_first {
            let now = next_arrival;
            arrived += 1;
            next_arrival += exp(1.0 / rate);
            let k = if balancers == 1 {
                0
            } else {
                routing.random_range(0..balancers)
            };
            let Some(i) = b[k].route_with(Nanos(now), arrived, table.as_ref()) else {
                continue;
            };
            in_system[i] += 1;
            if in_system[i] == 1 {
                heap.push(Reverse((now + exp(SERVICE), seq, i as u32, k as u32, now)));
                seq += 1;
            } else {
                waiting[i].push_back((k as u32, now));
            }
            publish(&mut table, i, in_system[i], now);
        } else if let Some(Reverse((now, _, i, k, arrival))) = heap.pop() {
            let i = i as usize;
            in_system[i] -= 1;
            served += 1;
            b[k as usize].complete(i, Nanos(now - arrival), Outcome::Ok, Nanos(now));
            if let Some((k, a)) = waiting[i].pop_front() {
                heap.push(Reverse((now + exp(SERVICE), seq, i as u32, k, a)));
                seq += 1;
            }
            publish(&mut table, i, in_system[i], now);
        } else {
            return served;
        }
    }
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
criterion_main!(benches);
