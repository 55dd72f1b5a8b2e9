//! Prototyping a balancing policy without forking lbsim: a strategy written here, against
//! the public API only, run on a shipped scenario beside the scenario's own strategies,
//! on the same requests (common random numbers), with 95% confidence intervals.
//!
//! The policy, "P2C on reported queues": draw two servers among those up and send the
//! request to the one whose last reply reported the shorter queue (plus this balancer's
//! own requests in flight there, which the report cannot know of yet). It reads the load
//! report carried on every reply (`Signals::reply_loads`), as gRPC's ORCA delivers it.
//!
//! ```text
//! cargo run --release --example custom_strategy [-- SCENARIO [REPLICATIONS]]
//! ```
//!
//! (default: `scenarios/antagonists.toml`, 10 replications). `cargo test --release` runs
//! the test at the bottom, which runs it on a shortened version of that scenario.

use std::path::Path;

use lbsim::rng::SimRng;
use lbsim::scenario::Scenario;
use lbsim::sim::{Run, simulate};
use lbsim::stats::{Estimate, estimate, paired_difference};
use lbsim::strategy::{Backends, PickContext, ServerLoad, Signals, Strategy};
use rand::RngExt;

/// P2C on server-reported queue lengths plus own requests in flight.
struct ReportedP2c {
    /// Queue each server reported on its last reply (0 before any).
    queue: Vec<u32>,
    rng: SimRng,
}

impl ReportedP2c {
    fn new(n: usize, rng: SimRng) -> ReportedP2c {
        ReportedP2c {
            queue: vec![0; n],
            rng,
        }
    }

    fn cost(&self, i: usize, backends: &Backends) -> u32 {
        self.queue[i] + backends.in_flight(i)
    }
}

impl Strategy for ReportedP2c {
    fn pick(&mut self, backends: &Backends, _ctx: &PickContext<'_>) -> Option<usize> {
        let up: Vec<usize> = (0..backends.len()).filter(|&i| backends.up(i)).collect();
        match up.len() {
            0 => None,
            1 => Some(up[0]),
            n => {
                let a = up[self.rng.random_range(0..n)];
                let mut b = up[self.rng.random_range(0..n - 1)];
                if b == a {
                    b = up[n - 1];
                }
                let (ca, cb) = (self.cost(a, backends), self.cost(b, backends));
                Some(if cb < ca { b } else { a })
            }
        }
    }

    fn signals(&self) -> Signals {
        Signals {
            probes: false,
            reply_loads: true,
            // Reads `queued` alone: the simulator need not estimate latencies.
            reply_latency: false,
        }
    }

    fn on_reply_load(&mut self, backend: usize, load: &ServerLoad, _now: lbsim::time::Nanos) {
        if let Some(q) = self.queue.get_mut(backend) {
            *q = load.queued;
        }
    }
}

/// One strategy's figures over the replications: per-replication mean and p99 (seconds).
struct Row {
    label: String,
    mean: Vec<f64>,
    p99: Vec<f64>,
}

fn figures(label: &str, runs: Vec<lbsim::metrics::RunMetrics>) -> Row {
    Row {
        label: label.to_string(),
        mean: runs
            .iter()
            .map(|m| m.latency_sum / m.latency.len().max(1) as f64)
            .collect(),
        p99: runs
            .iter()
            .map(|m| m.latency.value_at_quantile(0.99) as f64 * 1e-9)
            .collect(),
    }
}

/// Runs the scenario's strategies and the custom one, `replications` each.
fn compare(s: &Scenario, replications: u64) -> Vec<Row> {
    let mut rows: Vec<Row> = s
        .strategies
        .iter()
        .map(|e| {
            let runs = (0..replications)
                .map(|r| simulate(s, &e.spec, r, s.seed))
                .collect();
            figures(&e.label(), runs)
        })
        .collect();
    let custom = |n: usize, rng: SimRng| Box::new(ReportedP2c::new(n, rng)) as Box<dyn Strategy>;
    let runs = (0..replications)
        .map(|r| Run::new(s, &custom, r).metrics())
        .collect();
    rows.push(figures("reported_p2c (custom)", runs));
    rows
}

fn ms(e: &Estimate) -> String {
    format!("{:8.2} ±{:.2}", e.mean * 1e3, e.half_width() * 1e3)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .map_or("scenarios/antagonists.toml", String::as_str);
    let replications: u64 = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(10);
    let s = Scenario::load(Path::new(path)).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let rows = compare(&s, replications);
    println!("{}: {replications} replications, 95% CIs", s.name);
    println!(
        "{:24} {:>16} {:>16} {:>22}",
        "strategy", "mean ms", "p99 ms", "p99 vs custom, ms"
    );
    let custom = rows.last().expect("the custom strategy ran");
    for r in &rows {
        let d = paired_difference(&custom.p99, &r.p99);
        println!(
            "{:24} {} {} {}",
            r.label,
            ms(&estimate(&r.mean)),
            ms(&estimate(&r.p99)),
            ms(&d)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example runs on the shipped scenario (shortened) and its strategy does what it
    /// says: it serves every request, and, reading real queues, beats plain P2C's p99 on
    /// paired replications.
    #[test]
    fn runs_on_the_shipped_antagonists_scenario() {
        let mut s = Scenario::load(Path::new("scenarios/antagonists.toml")).unwrap();
        s.set_run_length(4.0, 20.0);
        let rows = compare(&s, 3);
        assert_eq!(rows.len(), s.strategies.len() + 1);
        let custom = rows.last().unwrap();
        let p2c = rows.iter().find(|r| r.label == "p2c").unwrap();
        assert!(custom.mean.iter().all(|m| m.is_finite() && *m > 0.0));
        let d = paired_difference(&custom.p99, &p2c.p99);
        assert!(d.mean > 0.0, "p2c − custom p99: {d:?}");
        let custom =
            |n: usize, rng: SimRng| Box::new(ReportedP2c::new(n, rng)) as Box<dyn Strategy>;
        let m = Run::new(&s, &custom, 0).metrics();
        assert_eq!(m.arrived, m.latency.len() + m.rejected + m.failed);
    }
}
