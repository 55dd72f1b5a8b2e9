//! The simulator against queueing theory: M/M/1, M/M/c (Erlang C), M/D/1, M/G/1
//! (Pollaczek–Khinchine), random splitting into independent M/M/1 queues, Little's law, and
//! weighted random over servers of unequal speed.
//!
//! Times are scaled so that a mean service time is 1 ms; warm-ups are many relaxation times
//! long so that the initial empty state does not bias the means.

mod common;

use common::{assert_agrees, assert_covers, reported, run_default, scenario, values};
use lbsim::metrics::Metric;
use lbsim::stats::{estimate, paired_difference};

/// A one-group scenario with Poisson arrivals.
fn single_group(
    rate: f64,
    count: u32,
    workers: u32,
    service: &str,
    strategy: &str,
    duration: f64,
    warmup: f64,
) -> String {
    format!(
        r#"
name = "theory"
seed = 11
replications = 20
duration = {duration}
warmup = {warmup}
[arrivals]
process = "poisson"
rate = {rate}
[[servers]]
name = "s"
count = {count}
workers = {workers}
service = {service}
[[strategies]]
kind = "{strategy}"
"#
    )
}

const EXP_1MS: &str = r#"{ dist = "exponential", mean = 0.001 }"#;

#[test]
fn mm1_at_half_load() {
    // λ = 500/s, μ = 1000/s: W = 1/(μ−λ) = 2 ms; response time is exponential, so
    // p99 = ln(100)/(μ−λ).
    let s = scenario(&single_group(
        500.0,
        1,
        1,
        EXP_1MS,
        "round_robin",
        20.0,
        2.0,
    ));
    let r = run_default(&s);
    assert_agrees(
        "M/M/1 ρ=0.5 mean",
        &values(&r, 0, Metric::LatencyMean),
        0.002,
    );
    assert_agrees(
        "M/M/1 ρ=0.5 p99",
        &values(&r, 0, Metric::LatencyP99),
        100f64.ln() * 0.002,
    );
    assert_agrees(
        "M/M/1 ρ=0.5 utilisation",
        &values(&r, 0, Metric::UtilizationMean),
        0.5,
    );
}

#[test]
fn mm1_at_ninety_percent_load() {
    // W = 1/(1000−900) = 10 ms. Relaxation time ≈ 1/(μ(1−√ρ)²) ≈ 0.4 s: warm up 10 s.
    let s = scenario(&single_group(
        900.0,
        1,
        1,
        EXP_1MS,
        "round_robin",
        100.0,
        10.0,
    ));
    let r = run_default(&s);
    assert_agrees(
        "M/M/1 ρ=0.9 mean",
        &values(&r, 0, Metric::LatencyMean),
        0.010,
    );
}

/// Erlang C: probability that an arrival waits in M/M/c with offered load `a = λ/μ`.
fn erlang_c(c: u32, a: f64) -> f64 {
    let mut term = 1.0;
    let mut sum = 1.0; // k = 0
    for k in 1..c {
        term *= a / f64::from(k);
        sum += term;
    }
    let last = term * a / f64::from(c) * f64::from(c) / (f64::from(c) - a);
    last / (sum + last)
}

#[test]
fn mmc_with_four_workers_matches_erlang_c() {
    // One server with c = 4 workers is an M/M/4 queue. λ = 3200/s, μ = 1000/s, a = 3.2.
    let (c, lambda, mu) = (4, 3200.0, 1000.0);
    let s = scenario(&single_group(
        lambda,
        1,
        c,
        EXP_1MS,
        "round_robin",
        20.0,
        2.0,
    ));
    let r = run_default(&s);
    let w = erlang_c(c, lambda / mu) / (f64::from(c) * mu - lambda) + 1.0 / mu;
    assert_agrees(
        "M/M/4 mean (Erlang C)",
        &values(&r, 0, Metric::LatencyMean),
        w,
    );
    // P(wait) is Erlang C itself (0.5964 here); the mean wait is C / (cμ − λ).
    assert_agrees(
        "M/M/4 P(wait) (Erlang C)",
        &values(&r, 0, Metric::WaitedFraction),
        erlang_c(c, lambda / mu),
    );
    assert_agrees(
        "M/M/4 mean wait",
        &values(&r, 0, Metric::WaitMean),
        erlang_c(c, lambda / mu) / (f64::from(c) * mu - lambda),
    );
}

#[test]
fn mm1_waiting_time_tail() {
    // M/M/1, λ = 900/s, μ = 1000/s: P(W > t) = ρ·e^{−(μ−λ)t}, so P(wait) = ρ = 0.9 and the
    // p99 of the waiting time is ln(100ρ)/(μ − λ) = 45.0 ms; response time T ~ Exp(μ − λ),
    // p95 = ln(20)/(μ − λ). Percentiles are judged by their own (pooled) interval.
    let s = scenario(&single_group(
        900.0,
        1,
        1,
        EXP_1MS,
        "round_robin",
        50.0,
        5.0,
    ));
    let r = run_default(&s);
    assert_agrees(
        "M/M/1 ρ=0.9 P(wait)",
        &values(&r, 0, Metric::WaitedFraction),
        0.9,
    );
    assert_covers(
        "M/M/1 ρ=0.9 wait p99",
        &reported(&r, 0, Metric::WaitP99),
        90f64.ln() / 100.0,
    );
    assert_covers(
        "M/M/1 ρ=0.9 p95",
        &reported(&r, 0, Metric::LatencyP95),
        20f64.ln() / 100.0,
    );
}

#[test]
fn md1_matches_pollaczek_khinchine() {
    // Deterministic 1 ms service, ρ = 0.8: Wq = ρ/(2μ(1−ρ)) = 2 ms, W = 3 ms.
    let s = scenario(&single_group(
        800.0,
        1,
        1,
        r#"{ dist = "deterministic", value = 0.001 }"#,
        "round_robin",
        20.0,
        2.0,
    ));
    let r = run_default(&s);
    assert_agrees("M/D/1 mean", &values(&r, 0, Metric::LatencyMean), 0.003);
}

#[test]
fn mg1_lognormal_matches_pollaczek_khinchine() {
    // Lognormal service, mean 1 ms, cv 2: E[S²] = m²(1+cv²). ρ = 0.7.
    let (lambda, m, cv) = (700.0, 0.001, 2.0);
    let s = scenario(&single_group(
        lambda,
        1,
        1,
        r#"{ dist = "lognormal", mean = 0.001, cv = 2.0 }"#,
        "round_robin",
        60.0,
        5.0,
    ));
    let r = run_default(&s);
    let rho = lambda * m;
    let es2 = m * m * (1.0 + cv * cv);
    let w = lambda * es2 / (2.0 * (1.0 - rho)) + m;
    assert_agrees(
        "M/G/1 lognormal mean",
        &values(&r, 0, Metric::LatencyMean),
        w,
    );
}

#[test]
fn mg1_gamma_matches_pollaczek_khinchine() {
    // Gamma service, mean 1 ms, cv 0.5 (a regression: small-mean gamma quantiles once
    // came out near 2^42 ns). ρ = 0.8.
    let (lambda, m, cv) = (800.0, 0.001, 0.5);
    let s = scenario(&single_group(
        lambda,
        1,
        1,
        r#"{ dist = "gamma", mean = 0.001, cv = 0.5 }"#,
        "round_robin",
        20.0,
        2.0,
    ));
    let r = run_default(&s);
    let w = lambda * m * m * (1.0 + cv * cv) / (2.0 * (1.0 - lambda * m)) + m;
    assert_agrees("M/G/1 gamma mean", &values(&r, 0, Metric::LatencyMean), w);
}

#[test]
fn random_split_is_independent_mm1_queues() {
    // Random dispatch of Poisson(λ) to N servers gives N independent M/M/1 queues with λ/N.
    let (n, lambda) = (4, 2800.0);
    let s = scenario(&single_group(lambda, n, 1, EXP_1MS, "random", 20.0, 2.0));
    let r = run_default(&s);
    let w = 1.0 / (1000.0 - lambda / f64::from(n));
    assert_agrees(
        "random to 4 × M/M/1 mean",
        &values(&r, 0, Metric::LatencyMean),
        w,
    );
    // Per server (`servers.csv`): each is M/M/1 with λ/N, so its response time is
    // Exp(μ − λ/N): mean w and p99 ln(100)·w, the p99 judged by its pooled interval.
    let st = &r.strategies[0];
    for i in 0..n as usize {
        let mean: Vec<f64> = st
            .runs
            .iter()
            .map(|run| run.servers[i].latency_mean)
            .collect();
        assert_agrees(&format!("server {i} mean"), &mean, w);
        assert_covers(
            &format!("server {i} p99"),
            &st.pooled_estimate(lbsim::metrics::SOURCE_SERVERS + i, 0.99),
            100f64.ln() * w,
        );
    }
}

#[test]
fn littles_law_holds_on_every_run() {
    // L (time-average number in system) = λ (accepted rate) × W (mean response time), per
    // run and strategy. The only discrepancy is requests straddling the window edges, whose
    // share is about W / duration ≈ 1e-3 here: allow 1%.
    let s = lbsim::scenario::Scenario::load(std::path::Path::new("scenarios/heterogeneous.toml"))
        .unwrap();
    let opts = lbsim::runner::RunOptions {
        replications: Some(4),
        ..Default::default()
    };
    let r = lbsim::runner::run(&s, &opts).unwrap();
    for (k, st) in r.strategies.iter().enumerate() {
        let l = values(&r, k, Metric::InSystemMean);
        let lambda = values(&r, k, Metric::AcceptedRate);
        let w = values(&r, k, Metric::LatencyMean);
        for i in 0..l.len() {
            let rel = (l[i] - lambda[i] * w[i]).abs() / l[i];
            assert!(
                rel < 0.01,
                "{} run {i}: L = {}, λW = {} ({rel})",
                st.label,
                l[i],
                lambda[i] * w[i]
            );
        }
    }
}

#[test]
fn weighted_random_in_proportion_to_speed_equalises_utilisation() {
    let src = r#"
name = "speeds"
seed = 5
replications = 20
duration = 20
warmup = 2
[arrivals]
process = "poisson"
rate = 1800
[[servers]]
name = "fast"
speed = 2.0
weight = 2
service = { dist = "exponential", mean = 0.001 }
[[servers]]
name = "slow"
speed = 1.0
weight = 1
service = { dist = "exponential", mean = 0.001 }
[[strategies]]
kind = "weighted_random"
"#;
    let r = run_default(&scenario(src));
    let util = |i: usize| -> Vec<f64> {
        r.strategies[0]
            .runs
            .iter()
            .map(|run| run.servers[i].utilization)
            .collect()
    };
    let (fast, slow) = (util(0), util(1));
    // Both should be at λ·share/(μ·speed) = 1800·(2/3)/2000 = 0.6 and 1800·(1/3)/1000 = 0.6.
    assert_agrees("fast utilisation", &fast, 0.6);
    assert_agrees("slow utilisation", &slow, 0.6);
    let d = paired_difference(&fast, &slow);
    assert!(
        d.low <= 0.0 && 0.0 <= d.high || d.mean.abs() < 0.005,
        "utilisations differ: {d:?}"
    );
    let share = estimate(
        &r.strategies[0]
            .runs
            .iter()
            .map(|run| run.servers[0].share)
            .collect::<Vec<_>>(),
    );
    assert!((share.mean - 2.0 / 3.0).abs() < 0.005, "{share:?}");
}
