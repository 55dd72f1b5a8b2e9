//! What `scale.rs` and `cost.rs` share: the benches' cluster (one-worker servers at offered
//! load 0.8, exponential service of 1 ms, Poisson arrivals) as a scenario, and the bare
//! event loop that is the practical limit of simulating it (a `BinaryHeap` of completions,
//! the same dispatch through [`Balancer`], no metrics).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;

use lbsim::rng::{Stream, stream_rng};
use lbsim::scenario::Scenario;
use lbsim::strategy::{Balancer, LoadReport, LoadTable, Outcome, StrategySpec};
use lbsim::time::Nanos;
use rand::RngExt;
/// Mean service time, seconds.
const SERVICE: f64 = 0.001;
/// Offered load per server.
const LOAD: f64 = 0.8;

/// A scenario of `n` one-worker servers at [`LOAD`] with about `requests` arrivals,
/// `balancers` balancers and one strategy (TOML lines).
pub fn scenario(n: usize, balancers: usize, requests: u64, strategy: &str) -> Scenario {
    let servers = format!(
        "[[servers]]\nname = \"s\"\ncount = {n}\n\
         service = {{ dist = \"exponential\", mean = {SERVICE} }}\n"
    );
    build(n, balancers, requests, &servers, strategy)
}

/// As [`scenario`], on a cluster of unequal weights: four groups of about `n / 4` servers
/// (at least one each) of weight and speed 1, 2, 3 and 4, at the same arrival rate as
/// [`scenario`]'s. Round robin loads the groups 0.8 / 0.4 / 0.27 / 0.2 and a strategy that
/// follows the weights 0.32 each: every strategy's servers are stable.
#[allow(
    dead_code,
    reason = "cost.rs's `w/` labels; scale.rs measures equal weights"
)]
pub fn weighted_scenario(n: usize, balancers: usize, requests: u64, strategy: &str) -> Scenario {
    assert!(n >= 4, "a weighted cluster has four groups");
    let servers: String = (1..=4)
        .map(|w| {
            let count = if w == 4 { n - 3 * (n / 4) } else { n / 4 };
            format!(
                "[[servers]]\nname = \"w{w}\"\ncount = {count}\nweight = {w}\nspeed = {w}\n\
                 service = {{ dist = \"exponential\", mean = {SERVICE} }}\n"
            )
        })
        .collect();
    build(n, balancers, requests, &servers, strategy)
}

/// The scenario of `n` servers (their TOML tables) at [`LOAD`] of `n` unit-speed servers.
fn build(n: usize, balancers: usize, requests: u64, servers: &str, strategy: &str) -> Scenario {
    let rate = LOAD * n as f64 / SERVICE;
    let duration = requests as f64 / rate;
    let src = format!(
        "name = \"scale\"\nseed = 1\nreplications = 1\nduration = {duration}\nwarmup = 0\n\
         balancers = {balancers}\n\
         [arrivals]\nprocess = \"poisson\"\nrate = {rate}\n\
         {servers}\
         [[strategies]]\n{strategy}\n"
    );
    Scenario::from_source(Path::new("scale.toml"), &src).expect("valid bench scenario")
}

/// Requests a measurement simulates at `n` servers: enough for the cluster to fill.
pub fn requests(n: usize) -> u64 {
    (20 * n as u64).max(50_000)
}
/// A completion in the bare loop: (time, sequence, server, balancer, arrival time).
type Completion = (u64, u64, u32, u32, u64);

/// The bare loop over `n` servers and `balancers` balancers (an arrival goes to one drawn
/// uniformly): returns the number of requests served (to keep it observable).
pub fn bare(n: usize, balancers: usize, spec: &StrategySpec, requests: u64) -> u64 {
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
