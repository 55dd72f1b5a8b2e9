//! Do the confidence intervals mean what they say? On M/M/1, where the true mean response
//! time is known, the 95% CI of independent runs (each with its own seed) should contain it
//! 95% of the time. Over 1000 runs the count is binomial(1000, 0.95): mean 950, standard
//! deviation 6.9, so a correct interval lands within 3 standard deviations, [929, 971], with
//! probability 0.997. An interval that used the normal quantile 1.96 instead of Student's
//! t(9) = 2.26 for 10 replications would cover P(|T₉| < 1.96) ≈ 91.8% (918 runs) and fail;
//! one that ignored between-replication variance would cover far less.

mod common;

use common::{scenario, values};
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
            estimate(&values(&r, 0, "latency_mean")).contains(truth)
        })
        .count();
    println!("the 95% CI covered the true mean in {covered} of {runs} runs");
    assert!((929..=971).contains(&covered), "coverage {covered}/{runs}");
}
