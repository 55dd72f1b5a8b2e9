//! Do the confidence intervals mean what they say? On M/M/1, where the true mean response
//! time is known, the 95% CI of independent runs (each with its own seed) should contain it
//! 95% of the time. Over 1000 runs the count is binomial(1000, 0.95): mean 950, standard
//! deviation 6.9, so a correct interval lands within 3 standard deviations, [929, 971], with
//! probability 0.997. An interval that used the normal quantile 1.96 instead of Student's
//! t(9) = 2.26 for 10 replications would cover P(|T₉| < 1.96) ≈ 91.8% (918 runs) and fail;
//! one that ignored between-replication variance would cover far less.
//!
//! The same for the pooled p99 (`T ~ Exp(μ − λ)`, p99 = ln 100 / (μ − λ) = 9.21 ms) and its
//! Woodruff interval. Measured: 939 of 1000 (the sectioning interval, per-replication p99s
//! centred on the pooled one, 915). At ρ = 0.9 with windows of 1,000 service times the
//! interval undercovers (245 of 300 runs with 20 replications, 55 of 60 with 400; sectioning
//! 174 of 300 and 31 of 60): tail exceedances come in rare bursts there, and a handful of
//! replications underestimates their spread.

mod common;

use common::{scenario, values};
use lbsim::metrics::Metric;
use lbsim::runner::{RunOptions, run};
use lbsim::stats::estimate;

#[test]
fn ci95_covers_the_true_mm1_mean_about_95_percent_of_the_time() {
    // λ = 500/s, μ = 1000/s: W = 1/(μ − λ) = 2 ms. Short runs, so each CI is wide.
    let s = scenario(
        r#"
name = "coverage"
replications = 10
duration = 2.0
warmup = 0.2
[arrivals]
process = "poisson"
rate = 500
[[servers]]
name = "s"
service = { dist = "exponential", mean = 0.001 }
[[strategies]]
kind = "round_robin"
"#,
    );
    let truth = 0.002;
    let runs = 1000;
    let covered = (0..runs)
        .filter(|&seed| {
            let r = run(
                &s,
                &RunOptions {
                    seed: Some(1_000 + seed),
                    ..Default::default()
                },
            )
            .unwrap();
            estimate(&values(&r, 0, Metric::LatencyMean)).contains(truth)
        })
        .count();
    println!("the 95% CI covered the true mean in {covered} of {runs} runs");
    assert!((929..=971).contains(&covered), "coverage {covered}/{runs}");
}

#[test]
fn pooled_p99_interval_covers_the_true_mm1_p99_about_95_percent_of_the_time() {
    let s = scenario(
        r#"
name = "coverage-p99"
replications = 10
duration = 2.0
warmup = 0.2
[arrivals]
process = "poisson"
rate = 500
[[servers]]
name = "s"
service = { dist = "exponential", mean = 0.001 }
[[strategies]]
kind = "round_robin"
"#,
    );
    let truth = 100f64.ln() / 500.0;
    let runs = 1000;
    let covered = (0..runs)
        .filter(|&seed| {
            let r = run(
                &s,
                &RunOptions {
                    seed: Some(1_000 + seed),
                    ..Default::default()
                },
            )
            .unwrap();
            r.strategies[0].estimate(Metric::LatencyP99).contains(truth)
        })
        .count();
    println!("the pooled p99's 95% interval covered the truth in {covered} of {runs} runs");
    assert!((929..=971).contains(&covered), "coverage {covered}/{runs}");
}
