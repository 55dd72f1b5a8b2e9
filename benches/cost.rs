//! A fixed amount of simulation, for `perf stat`: CPU time per request of one strategy at
//! one cluster size, on the clusters of `benches/scale.rs` (`size/*`: one-worker servers
//! at offered load 0.8, exponential service of 1 ms, one balancer).
//!
//! criterion measures for a set time, so its processes do different amounts of work; this
//! one simulates the same requests every time, so `perf stat -e task-clock` over a process
//! divided by [`Cost::requests`] is the CPU time per request, and paired, alternating runs
//! of two builds (or two strategies) give a ratio that shares the machine's load:
//!
//! ```text
//! cargo bench --no-run --bench cost
//! perf stat -e task-clock -x, target/release/deps/cost-HASH c3_indexed 1000 50
//! ```
//!
//! Arguments: a label (a strategy's kind at its defaults, or `jsq_indexed` / `c3_indexed` /
//! `aperture_steady` / `nginx_hash_consistent` / `edf_wrr_slow_start` /
//! `least_request_slow_start`, or `prequal_rR` for Prequal at `probe_rate = R`), the number
//! of servers, and how many times to simulate the run. It prints the requests simulated (arrivals), to
//! keep the work observable.

use std::path::Path;

use lbsim::scenario::Scenario;
use lbsim::sim::Run;

/// Mean service time, seconds.
const SERVICE: f64 = 0.001;
/// Offered load per server.
const LOAD: f64 = 0.8;

/// `scale.rs`'s cluster of `n` servers with about `requests` arrivals and one strategy.
fn scenario(n: usize, requests: u64, strategy: &str) -> Scenario {
    let rate = LOAD * n as f64 / SERVICE;
    let duration = requests as f64 / rate;
    let src = format!(
        "name = \"cost\"\nseed = 1\nreplications = 1\nduration = {duration}\nwarmup = 0\n\
         [arrivals]\nprocess = \"poisson\"\nrate = {rate}\n\
         [[servers]]\nname = \"s\"\ncount = {n}\n\
         service = {{ dist = \"exponential\", mean = {SERVICE} }}\n\
         [[strategies]]\n{strategy}\n"
    );
    Scenario::from_source(Path::new("cost.toml"), &src).expect("valid cost scenario")
}

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
            None => format!("kind = \"{label}\""),
        },
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter is not used.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [label, n, runs] = args.as_slice() else {
        eprintln!("usage: cost LABEL SERVERS RUNS (e.g. cost c3_indexed 1000 20)");
        return;
    };
    let n: usize = n.parse().expect("servers: a number");
    let runs: u64 = runs.parse().expect("runs: a number");
    // As scale.rs's `requests`: enough for the cluster to fill.
    let requests = (20 * n as u64).max(50_000);
    let s = scenario(n, requests, &strategy(label));
    // The entry, policy included (`simulate` would run its strategy alone: the slow-start
    // labels would cost what their strategies do without it).
    let entry = &s.strategies[0];
    let arrived: u64 = (0..runs)
        .map(|_| Run::entry(&s, entry, 0).seed(1).metrics().arrived)
        .sum();
    println!("{arrived}");
}
