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
//! centred on the pooled one, 915).
//!
//! **At ρ = 0.9** (p99 = ln 100 / 100 s = 46.05 ms, 300 runs each, 5 s warm-up; a 95%
//! interval covers 285 of 300, and 273 or fewer happens with probability 0.6%):
//!
//! | window (service times) | replications | covered | truth below / above the interval |
//! |---:|---:|---:|---|
//! | 50,000 | 20 | 286 | 6 / 8 |
//! | 50,000 | 10 | 284 | 7 / 9 |
//! | 10,000 | 20 | 276 | 7 / 17 |
//! | 1,000 | 400 | 285 | 4 / 11 |
//! | 1,000 | 100 | 273 | 12 / 15 |
//! | 1,000 | 20 | 234 | 24 / 42 |
//!
//! The cause at short windows, checked one by one: not the initial transient (5 s is 13
//! relaxation times; with no warm-up at all it drops to 227, with the pooled p99 10% low),
//! not the histograms' precision (buckets of 0.1–0.8% against half-widths of 10–25%), but
//! too few independent tail episodes. Requests beyond p99 arrive in bursts (one long queue
//! excursion each) that few windows of 1 s hold: the exceedances of 20 windows sit in the
//! equivalent of fewer than 5 of them in 296 of 300 runs (Kish's effective number
//! `(Σxᵢ)² / Σxᵢ²` of the windows' exceedance counts `xᵢ`), and in 177 of 300 runs even
//! with 100 windows. The counts are then mostly small and very skewed (sample skewness
//! −3 to −7), and when the sample misses a burst both the quantile and its spread come out
//! low (the misses are mostly "truth above"). Intervals built on the same
//! few clusters did not repair this (300 runs, 20 windows of 1 s): a skewness-corrected t
//! (Cornish–Fisher / Johnson 1978) 201, a bootstrap-t over replications 228, its symmetric
//! form 265 (at twice the width), test inversion with the spread evaluated at each
//! candidate 166. The interval is right once the replications sample many bursts (long
//! windows, or hundreds of short ones), and the report says so where it is not: a window
//! short against the correlation time with fewer than 400 replications gets a warning that
//! the percentiles' intervals are not reliable (`lbsim::steady::warnings`).

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

/// The pooled p99's interval at ρ = 0.9 with windows of 50,000 service times (50 s), 10
/// replications each: M/M/1 with λ = 900/s, μ = 1000/s. A 95% interval covers
/// Binomial(150, 0.95) times: 134 or fewer with probability 0.36%, so the test accepts
/// 135 to 150; an interval that covers 88% passes only with probability 0.19 (90%: 0.46).
/// Measured 284 of 300 in this configuration (see the table above).
#[test]
fn pooled_p99_interval_covers_at_rho_0_9_over_long_windows() {
    let s = scenario(
        r#"
name = "coverage-p99-rho-0.9"
replications = 10
duration = 50.0
warmup = 3.0
[arrivals]
process = "poisson"
rate = 900
[[servers]]
name = "s"
service = { dist = "exponential", mean = 0.001 }
[[strategies]]
kind = "round_robin"
"#,
    );
    let truth = 100f64.ln() / 100.0;
    let runs = 150;
    let covered = (0..runs)
        .filter(|&seed| {
            let r = run(
                &s,
                &RunOptions {
                    seed: Some(50_000 + seed),
                    ..Default::default()
                },
            )
            .unwrap();
            r.strategies[0].estimate(Metric::LatencyP99).contains(truth)
        })
        .count();
    println!(
        "at ρ = 0.9, the pooled p99's 95% interval covered the truth in {covered} of {runs} runs"
    );
    assert!((135..=150).contains(&covered), "coverage {covered}/{runs}");
}
