//! A fixed amount of simulation, for `perf stat`: CPU time per request of one strategy at
//! one cluster size, on the clusters of `benches/scale.rs` (`size/*`: one-worker servers
//! at offered load 0.8, exponential service of 1 ms, one balancer).
//!
//! criterion measures for a set time, so its processes do different amounts of work; this
//! one simulates the same requests every time, so `perf stat -e task-clock` over a process
//! divided by the requests it prints is the CPU time per request, and paired, alternating runs
//! of two builds (or two strategies) give a ratio that shares the machine's load:
//!
//! ```text
//! cargo bench --no-run --bench cost
//! perf stat -e task-clock -x, target/release/deps/cost-HASH c3_indexed 1000 50
//! ```
//!
//! Arguments: a label (a strategy's kind at its defaults, or `jsq_indexed` / `c3_indexed` /
//! `aperture_steady` / `nginx_hash_consistent` / `edf_wrr_slow_start` /
//! `least_request_slow_start`, or `prequal_rR` for Prequal at `probe_rate = R`, or
//! `KIND:key=value:...` for a kind with parameters (`least_connections:weighted=true`), or
//! `bare_KIND` for the bare event loop of `scale.rs` with strategy KIND; prefixed `w/`, on
//! a cluster of weights and speeds 1 to 4 at the same arrival rate; prefixed `bN/` (before
//! any `w/`), with N balancers that arrivals are split among uniformly), the number of
//! servers, how many times to simulate the run, and optionally the requests a run
//! simulates (by default scale.rs's: 20 a server, at least 50,000). It prints the requests
//! simulated, to keep the work observable. The CPU time of two run lengths, differenced,
//! is the cost per request without the process's and the runs' fixed costs:
//!
//! ```text
//! perf stat -e task-clock -x, target/release/deps/cost-HASH bare_round_robin 10000 1 2000000
//! ```

use lbsim::sim::Run;

// What the binary does first (`src/heap.rs`): each run reuses the pages the run before freed.
#[path = "../src/heap.rs"]
mod heap;

mod common;
use common::{bare, requests, scenario, weighted_scenario};

/// A label's TOML lines.
fn strategy(label: &str) -> String {
    match label {
        "jsq_indexed" => "kind = \"jsq\"\nindexed = true".into(),
        "c3_indexed" => "kind = \"c3\"\nindexed = true".into(),
        // Aperture at its steady width within the run (scale.rs's row of that name).
        "aperture_steady" => "kind = \"aperture\"\nsmooth_win = 0.001".into(),
        // nginx `hash ... consistent`: the ring of points nginx builds.
        "nginx_hash_consistent" => "kind = \"nginx_hash\"\nconsistent = true".into(),
        // Envoy slow start (a client policy) on EDF WRR and on least request; no server
        // joins during the run, so no host ramps.
        "edf_wrr_slow_start" | "least_request_slow_start" => format!(
            "kind = \"{}\"\n[strategies.policy.slow_start]\nkind = \"envoy\"\n\
             slow_start_window = 10",
            label.trim_end_matches("_slow_start")
        ),
        label => match label.strip_prefix("prequal_r") {
            // Prequal at another probe rate: the cost of a probe, by difference.
            Some(rate) => format!("kind = \"prequal\"\nprobe_rate = {rate}"),
            // `KIND:key=value:...`: a kind with parameters (TOML values), e.g.
            // `least_connections:weighted=true`.
            None => {
                let mut parts = label.split(':');
                let kind = parts.next().unwrap_or_default();
                let mut toml = format!("kind = \"{kind}\"");
                for p in parts {
                    let (key, value) = p.split_once('=').expect("a parameter: key=value");
                    toml += &format!("\n{key} = {value}");
                }
                toml
            }
        },
    }
}

fn main() {
    // As the binary does: each run reuses the pages the run before freed.
    heap::keep_freed_memory();
    // `cargo bench` passes `--bench`; a filter is not used.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (label, n, runs, length) = match args.as_slice() {
        [label, n, runs] => (label, n, runs, None),
        [label, n, runs, length] => (label, n, runs, Some(length)),
        _ => {
            eprintln!("usage: cost LABEL SERVERS RUNS [REQUESTS] (e.g. cost c3_indexed 1000 20)");
            return;
        }
    };
    let n: usize = n.parse().expect("servers: a number");
    let runs: u64 = runs.parse().expect("runs: a number");
    // As scale.rs's `requests`: enough for the cluster to fill.
    let requests = length.map_or(requests(n), |l| l.parse().expect("requests: a number"));
    // `bN/LABEL`: N balancers (arrivals split uniformly) instead of one.
    let (label, balancers) = label
        .strip_prefix('b')
        .and_then(|l| l.split_once('/'))
        .and_then(|(count, label)| Some((label, count.parse::<usize>().ok()?)))
        .unwrap_or((label.as_str(), 1));
    // `w/LABEL`: the same on the cluster of unequal weights and speeds.
    let (label, weighted) = match label.strip_prefix("w/") {
        Some(label) => (label, true),
        None => (label, false),
    };
    let scenario = if weighted {
        weighted_scenario
    } else {
        scenario
    };
    let arrived: u64 = match label.strip_prefix("bare_") {
        // The bare loop (scale.rs's `limit/bare`) with the strategy at its defaults: it
        // counts requests served, which are every request arrived.
        Some(kind) => {
            assert!(
                !weighted,
                "the bare loop's servers are all alike: no `w/bare_*`"
            );
            let s = scenario(n, balancers, requests, &strategy(kind));
            let spec = &s.strategies[0].spec;
            (0..runs).map(|_| bare(n, balancers, spec, requests)).sum()
        }
        None => {
            let s = scenario(n, balancers, requests, &strategy(label));
            // The entry, policy included (`simulate` would run its strategy alone: the
            // slow-start labels would cost what their strategies do without it).
            let entry = &s.strategies[0];
            (0..runs)
                .map(|_| Run::entry(&s, entry, 0).seed(1).metrics().arrived)
                .sum()
        }
    };
    println!("{arrived}");
}
