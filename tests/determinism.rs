//! Same scenario and seed → bit-identical results, whatever the thread count; and common
//! random numbers: every strategy in a replication sees the same requests.

mod common;

use std::path::Path;

use common::{run_default, scenario};
use lbsim::runner::{RunOptions, run};
use lbsim::scenario::Scenario;
use lbsim::workload::{RequestStream, Size};

fn bits(r: &lbsim::runner::RunResults) -> Vec<u64> {
    r.strategies
        .iter()
        .flat_map(|s| s.runs.iter())
        .flat_map(|run| {
            run.values
                .values()
                .copied()
                .chain(run.servers.iter().flat_map(|sv| sv.as_array()))
                .map(f64::to_bits)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn bit_identical_across_thread_counts() {
    let s = Scenario::load(Path::new("scenarios/heterogeneous.toml")).unwrap();
    let opts = |threads| RunOptions {
        replications: Some(6),
        threads: Some(threads),
        ..Default::default()
    };
    let one = run(&s, &opts(1)).unwrap();
    let two = run(&s, &opts(2)).unwrap();
    let three = run(&s, &opts(3)).unwrap();
    assert_eq!(bits(&one), bits(&two));
    assert_eq!(bits(&one), bits(&three));
    for (a, b) in one.strategies.iter().zip(&two.strategies) {
        assert_eq!(
            a.pooled, b.pooled,
            "merged histograms differ for {}",
            a.label
        );
    }
    // A different seed gives different results (the check above can fail).
    let other = run(
        &s,
        &RunOptions {
            seed: Some(99),
            ..opts(2)
        },
    )
    .unwrap();
    assert_ne!(bits(&one), bits(&other));
}

const SHORT_RUNS: &str = r#"
name = "many"
seed = 11
replications = 2
duration = 0.5
warmup = 0.1
[arrivals]
process = "poisson"
rate = 300
[[servers]]
name = "s"
count = 3
service = { dist = "exponential", mean = 0.008 }
[[strategies]]
kind = "round_robin"
[[strategies]]
kind = "power_of_d"
[[strategies]]
kind = "least_connections"
"#;

#[test]
fn many_replications_are_bit_identical_across_thread_counts_and_in_order() {
    // Replications finish out of order and are staged, pooled per rayon fold and put back
    // in order: with many short ones on 1, 2 and 4 threads the splits and steals differ
    // from run to run, and every figure, distribution and batch must still match.
    let s = scenario(SHORT_RUNS);
    let opts = |threads| RunOptions {
        replications: Some(600),
        threads: Some(threads),
        ..Default::default()
    };
    let one = run(&s, &opts(1)).unwrap();
    assert_eq!(one.finished, (0..600).collect::<Vec<u64>>());
    for threads in [2, 4] {
        let other = run(&s, &opts(threads)).unwrap();
        assert_eq!(one.finished, other.finished);
        assert_eq!(bits(&one), bits(&other), "{threads} threads");
        for (a, b) in one.strategies.iter().zip(&other.strategies) {
            assert_eq!(a.pooled, b.pooled, "pooled histograms, {threads} threads");
            assert_eq!(
                a.runs, b.runs,
                "per-replication summaries, {threads} threads"
            );
        }
    }
    // Each kept summary is its own replication's: the same as running that one alone.
    for rep in [0u64, 1, 299, 599] {
        let alone = lbsim::runner::run_replications(&s, &[rep], &opts(2)).unwrap();
        for (a, b) in one.strategies.iter().zip(&alone.strategies) {
            assert_eq!(a.runs[rep as usize], b.runs[0], "replication {rep}");
        }
    }
    // The pooled histogram holds every kept replication's requests, once.
    for s in &one.strategies {
        let total: u64 = s
            .runs
            .iter()
            .map(|r| r.cdfs[lbsim::metrics::SOURCE_LATENCY].total())
            .sum();
        assert_eq!(s.latency().len(), total, "{}", s.label);
    }
}

#[test]
fn two_parameter_sweep_is_bit_identical_across_thread_counts() {
    let mut s = Scenario::load(Path::new("scenarios/load-by-balancers.toml")).unwrap();
    s.set_run_length(0.5, 3.0);
    let opts = |threads| RunOptions {
        replications: Some(3),
        threads: Some(threads),
        ..Default::default()
    };
    let sweep_bits = |threads| {
        let sw = lbsim::sweep::run_sweep(&s, &opts(threads))
            .unwrap()
            .unwrap();
        let coords: Vec<(u64, Option<u64>)> = sw
            .points
            .iter()
            .map(|p| (p.x.to_bits(), p.by.map(f64::to_bits)))
            .collect();
        let results: Vec<Vec<u64>> = sw.points.iter().map(|p| bits(&p.results)).collect();
        (coords, results)
    };
    let one = sweep_bits(1);
    assert_eq!(one.0.len(), 9);
    assert_eq!(one, sweep_bits(2));
    assert_eq!(one, sweep_bits(3));
}

const ONE_SERVER: &str = r#"
name = "crn"
seed = 3
replications = 3
duration = 5
warmup = 0.5
[arrivals]
process = "mmpp"
rates = [200, 900]
mean_sojourn = [0.5, 0.2]
[[servers]]
name = "only"
workers = 2
service = { dist = "lognormal", mean = 0.002, cv = 1.2 }
[[strategies]]
kind = "round_robin"
[[strategies]]
kind = "random"
[[strategies]]
kind = "least_connections"
"#;

#[test]
fn every_strategy_sees_the_same_requests() {
    // With one server every strategy must route identically; if any strategy's own random
    // draws (random consumes its stream, round robin does not) leaked into the arrival or
    // size streams, the results would differ.
    let r = run_default(&scenario(ONE_SERVER));
    let runs: Vec<_> = r.strategies.iter().map(|s| &s.runs).collect();
    assert_eq!(runs[0], runs[1]);
    assert_eq!(runs[0], runs[2]);
}

#[test]
fn a_request_is_equally_large_on_every_server_group() {
    // The size travels with the request as a quantile: the same request maps to the same
    // quantile of each group's distribution, so a request that is large on one group is
    // large on every group.
    let s = scenario(&ONE_SERVER.replace(
        "[[strategies]]\nkind = \"round_robin\"",
        "[[servers]]\nname = \"other\"\nservice = { dist = \"weibull\", shape = 0.7, scale = 0.001 }\n[[strategies]]\nkind = \"round_robin\"",
    ));
    let reqs: Vec<_> = RequestStream::new(&s.workload, s.seed, 0)
        .take(2000)
        .collect();
    let a: Vec<f64> = reqs
        .iter()
        .map(|r| r.size.work(&s.groups[0].service))
        .collect();
    let b: Vec<f64> = reqs
        .iter()
        .map(|r| r.size.work(&s.groups[1].service))
        .collect();
    for i in 0..reqs.len() {
        for j in (i + 1)..reqs.len().min(i + 50) {
            assert_eq!(
                a[i] < a[j],
                b[i] < b[j],
                "requests {i} and {j} are ordered differently"
            );
        }
    }
    assert!(
        reqs.iter()
            .all(|r| matches!(r.size, Size::Quantile(u) if u > 0.0 && u < 1.0))
    );
}
