//! Experiment harness for the coverage of the pooled p99's interval (issue 9), not run in
//! CI. Two modes:
//!
//! `cargo run --release --example p99_coverage -- dump RHO WINDOW REPS RUNS WARMUP FILE`
//! simulates M/M/1 (μ = 1000/s, λ = 1000·ρ) `RUNS` times with seeds 1..=RUNS, each with
//! `REPS` replications of `WINDOW` seconds after `WARMUP` seconds, and writes every
//! replication's compact distribution (the tail above a quarter of the true p99) to `FILE`.
//!
//! `cargo run --release --example p99_coverage -- eval RHO FILE...` reads such files and
//! prints, for each interval method, how many runs' 95% intervals covered the true p99
//! `ln 100 / (μ − λ)` and their mean width relative to the truth (`ONLY=text` keeps the
//! methods whose name contains `text`). The methods are in `methods.rs`; the library's
//! interval is "woodruff t(Kish df)".
//!
//! `cargo run --release --example p99_coverage -- diag RHO FILE` prints per run: Q̂/ξ,
//! the pooled exceedance fraction of the true p99 over 1%, Woodruff's standard error over
//! 1%, Kish's effective number at Q̂, the skewness there, Kish's number and the standard
//! error at the truth.
//!
//! The tables this produced are in `tests/coverage.rs`.

use std::io::{BufRead, Write};
use std::path::Path;

use lbsim::runner::{RunOptions, run};
use lbsim::scenario::Scenario;
use lbsim::stats::quantile::Cdf;

pub fn truth(rho: f64) -> f64 {
    100f64.ln() / (1000.0 - 1000.0 * rho)
}

fn dump(rho: f64, window: f64, reps: u32, runs: u64, warmup: f64, file: &str) {
    let src = format!(
        r#"
name = "p99-coverage"
replications = {reps}
duration = {window}
warmup = {warmup}
[arrivals]
process = "poisson"
rate = {rate}
[[servers]]
name = "s"
service = {{ dist = "exponential", mean = 0.001 }}
[[strategies]]
kind = "round_robin"
"#,
        rate = 1000.0 * rho
    );
    let s = Scenario::from_source(Path::new("p99.toml"), &src).expect("scenario");
    let cut = truth(rho) * 0.25e9;
    let mut out = std::io::BufWriter::new(std::fs::File::create(file).expect("file"));
    for seed in 1..=runs {
        let r = run(
            &s,
            &RunOptions {
                seed: Some(seed),
                ..Default::default()
            },
        )
        .expect("run");
        writeln!(out, "run {seed}").unwrap();
        for c in r.strategies[0].cdfs(lbsim::metrics::SOURCE_LATENCY) {
            let pairs = c.to_pairs();
            // Keep the last bucket below the cut (the count below) and everything above.
            let first = pairs
                .iter()
                .position(|p| p[0] >= bucket_floor(cut))
                .unwrap_or(pairs.len())
                .saturating_sub(1);
            let line: Vec<String> = pairs[first..]
                .iter()
                .map(|p| format!("{}:{}", p[0], p[1]))
                .collect();
            writeln!(out, "{} {}", c.total(), line.join(" ")).unwrap();
        }
        if seed % 20 == 0 {
            eprintln!("{seed}/{runs}");
        }
    }
}

/// A bucket index at or below the value `v` (bucket of v, as in stats::quantile).
fn bucket_floor(v: f64) -> u64 {
    let v = v as u64;
    if v < 128 {
        return v;
    }
    let e = 63 - v.leading_zeros();
    let m = (v >> (e - 7)) & 127;
    u64::from(e - 7 + 1) * 128 + m
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let f = |i: usize| a[i].parse::<f64>().expect("number");
    match a[0].as_str() {
        "dump" => dump(f(1), f(2), f(3) as u32, f(4) as u64, f(5), &a[6]),
        "eval" => eval(f(1), &a[2..]),
        "diag" => diag(f(1), &a[2]),
        _ => panic!("dump or eval"),
    }
}

/// One run: each replication's total and distribution.
pub struct Run {
    pub reps: Vec<(f64, Cdf)>,
}

pub fn read(file: &str) -> Vec<Run> {
    let mut runs = Vec::new();
    for line in std::io::BufReader::new(std::fs::File::open(file).expect("open")).lines() {
        let line = line.unwrap();
        if line.starts_with("run ") {
            runs.push(Run { reps: Vec::new() });
            continue;
        }
        let mut it = line.split_whitespace();
        let n: f64 = it.next().unwrap().parse().unwrap();
        let pairs: Vec<[u64; 2]> = it
            .map(|p| {
                let (b, c) = p.split_once(':').unwrap();
                [b.parse().unwrap(), c.parse().unwrap()]
            })
            .collect();
        let cdf = Cdf::from_pairs(&pairs).expect("pairs");
        runs.last_mut().unwrap().reps.push((n, cdf));
    }
    runs
}

mod methods;
use methods::{diag, eval};
