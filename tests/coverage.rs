//! Do the confidence intervals mean what they say? On M/M/1, where the true mean response
//! time is known, the 95% CI of independent runs (each with its own seed) should contain it
//! 95% of the time. Over 1000 runs the count is binomial(1000, 0.95): mean 950, standard
//! deviation 6.9, so a correct interval lands within 3 standard deviations, [929, 971], with
//! probability 0.997. An interval that used the normal quantile 1.96 instead of Student's
//! t(9) = 2.26 for 10 replications would cover P(|T₉| < 1.96) ≈ 91.8% (918 runs) and fail;
//! one that ignored between-replication variance would cover far less.
//!
//! The same for the pooled p99 (`T ~ Exp(μ − λ)`, p99 = ln 100 / (μ − λ) = 9.21 ms) and its
//! interval (Woodruff's, with Kish's effective degrees of freedom: `lbsim::stats::quantile`).
//! Measured: 964 of 1000 (Woodruff with `t(b − 1)`, the previous interval: 939; the
//! sectioning interval, per-replication p99s centred on the pooled one: 915).
//!
//! **At ρ = 0.9** (p99 = ln 100 / 100 s = 46.05 ms; 3 s warm-up, seeds 1…; measured with
//! `examples/p99_coverage`). Coverage of the true p99 by the 95% interval, with the previous
//! interval (Woodruff, `t(b − 1)`) and this one (`t(n_eff − 1)`), and mean widths relative
//! to the truth:
//!
//! | window (service times) | replications | runs | `t(b − 1)` | width | `t(n_eff − 1)` | width |
//! |---:|---:|---:|---:|---:|---:|---:|
//! | 50,000 | 20 | 300 | 280 | 0.19 | 281 | 0.21 |
//! | 10,000 | 20 | 300 | 274 | 0.55 | 282 | 0.76 |
//! | 1,000 | 400 | 100 | 92 | 0.26 | 95 | 0.31 |
//! | 1,000 | 100 | 300 | 261 | 0.62 | 283 | 0.82 |
//! | 1,000 | 20 | 1,000 | 792 | 0.49 | 890 | 0.74 |
//! | 1,000 at ρ = 0.5 | 20 | 1,000 | 935 | 0.32 | 954 | 0.41 |
//!
//! **Why 1,000 × 20 cannot reach 95%.** Requests beyond p99 arrive in bursts (one long
//! queue excursion each), and 20 windows of 1 s hold very few: the exceedances of the
//! pooled p99 sit in the equivalent of 2.1 windows on average (Kish's effective number
//! `(Σxᵢ)² / Σxᵢ²` of the windows' exceedance counts `xᵢ`), and the pooled fraction of
//! requests beyond the true p99 has a relative standard deviation of 117% over runs. In
//! 106 of the 1,000 runs *no* request of the 18,000 exceeds the true p99: an interval
//! bounded by the observed values misses the truth in every one of them, so none can cover
//! more than 89.4%. The interval reaches 89.0%: 4 misses in the 894 runs whose data reach
//! the truth (`t(b − 1)`: 102). With `t(b − 1)`, the spread of 20 counts of which 18 are
//! near zero passed for 19 degrees of freedom, and when a run missed a burst both the
//! quantile and its spread came out low.
//!
//! Every method tried, on those 1,000 runs of 20 windows of 1 s (covered; truth below /
//! above the interval; mean width over the truth):
//!
//! | method | covered | below / above | width |
//! |---|---:|---|---:|
//! | Woodruff, `t(b − 1)` (previous) | 792 | 78 / 130 | 0.49 |
//! | Woodruff on the log of the exceedance fraction | 649 | 6 / 345 | 0.49 |
//! | Woodruff, `t(n_eff − 1)`, Kish (this one) | 890 | 1 / 109 | 0.74 |
//! | Woodruff, Satterthwaite df from the sample kurtosis | 849 | 34 / 117 | 0.56 |
//! | quasi-binomial score test inverted (dispersion at each candidate) | 655 | 33 / 312 | 0.41 |
//! | scaled Poisson (Garwood) with the dispersion at `Q̂` | 834 | 52 / 114 | 2.90 |
//! | Johnson's skewness-corrected t (1978), moments at `Q̂`, inverted | 872 | 127 / 1 | 3.31 |
//! | Hall's monotone transform (1992), moments at `Q̂`, inverted | 865 | 133 / 2 | 3.30 |
//! | sectioning (Nakayama 2014) | 592 | 66 / 342 | 0.40 |
//! | sectioning-jackknife | 693 | 12 / 295 | 0.72 |
//! | bootstrap percentile over replications (999) | 593 | 0 / 407 | 0.43 |
//! | bootstrap-t of the exceedance fraction at `Q̂`, inverted | 741 | 141 / 118 | 0.39 |
//! | bootstrap-t of the quantile (Woodruff's standard error) | 793 | 123 / 84 | 5.84 |
//!
//! Johnson's and Hall's corrections point the right way (they lengthen the side the
//! studentised mean's long left tail needs) but at a skewness of the mean near 1 (sample
//! skewness 3 over √20) the correction leaves the upper end unbounded (the width of the
//! whole search range) and the lower end too high. At 50,000 × 20 every method covers 267
//! to 282 of 300. A run with a window short against the correlation time and fewer than
//! 100 replications also gets a warning that the percentiles' intervals are not reliable
//! (`lbsim::steady::warnings`); from 100 on the interval covers 95% (283 and 289 of 300
//! runs; CI checks 120 runs below).

mod common;

use common::{mm1_toml, scenario, seeded_runs, values};
use lbsim::metrics::Metric;
use lbsim::stats::estimate;

/// The true p99 response time of M/M/1 at ρ = 0.9 (λ = 900/s, μ = 1000/s): ln 100 / 100 s.
fn p99_at_rho_0_9() -> f64 {
    100f64.ln() / 100.0
}

#[test]
fn ci95_covers_the_true_mm1_mean_about_95_percent_of_the_time() {
    // λ = 500/s, μ = 1000/s: W = 1/(μ − λ) = 2 ms. Short runs, so each CI is wide.
    let s = scenario(&mm1_toml("coverage", 500.0, 10, 2.0, "0.2"));
    let truth = 0.002;
    let runs = 1000;
    let covered = seeded_runs(&s, 1_000, runs)
        .filter(|r| estimate(&values(r, 0, Metric::LatencyMean)).contains(truth))
        .count();
    println!("the 95% CI covered the true mean in {covered} of {runs} runs");
    assert!((929..=971).contains(&covered), "coverage {covered}/{runs}");
}

#[test]
fn pooled_p99_interval_covers_the_true_mm1_p99_about_95_percent_of_the_time() {
    let s = scenario(&mm1_toml("coverage-p99", 500.0, 10, 2.0, "0.2"));
    let truth = 100f64.ln() / 500.0;
    let runs = 1000;
    let covered = seeded_runs(&s, 1_000, runs)
        .filter(|r| r.strategies[0].estimate(Metric::LatencyP99).contains(truth))
        .count();
    println!("the pooled p99's 95% interval covered the truth in {covered} of {runs} runs");
    assert!((929..=971).contains(&covered), "coverage {covered}/{runs}");
}

/// The pooled p99's interval at ρ = 0.9 with windows of 50,000 service times (50 s), 10
/// replications each: M/M/1 with λ = 900/s, μ = 1000/s. A 95% interval covers
/// Binomial(150, 0.95) times: 134 or fewer with probability 0.36%, so the test accepts
/// 135 to 150; an interval that covers 88% passes only with probability 0.19 (90%: 0.46).
/// Measured 146 of 150 here.
#[test]
fn pooled_p99_interval_covers_at_rho_0_9_over_long_windows() {
    let s = scenario(&mm1_toml("coverage-p99-rho-0.9", 900.0, 10, 50.0, "3.0"));
    let truth = p99_at_rho_0_9();
    let runs = 150;
    let covered = seeded_runs(&s, 50_000, runs)
        .filter(|r| r.strategies[0].estimate(Metric::LatencyP99).contains(truth))
        .count();
    println!(
        "at ρ = 0.9, the pooled p99's 95% interval covered the truth in {covered} of {runs} runs"
    );
    assert!((135..=150).contains(&covered), "coverage {covered}/{runs}");
}

/// The pooled p99's interval at ρ = 0.9 with windows of 1,000 service times (1 s), 20
/// replications: too short for any interval to cover 95% (see the module doc). In 10.6% of
/// such runs no request of the 18,000 exceeds the true p99, and an interval bounded by the
/// observed values cannot reach it; the test checks that the interval misses *only* there.
/// Measured over 1,000 runs: 4 misses in the 894 runs whose largest value reaches the
/// truth (Woodruff with `t(b − 1)`: 102). Over 150 runs about 134 reach it: a mean of 0.6
/// misses, and 5 or more has probability 3·10⁻⁴; the `t(b − 1)` interval would miss about
/// 15 of them, and 4 or fewer has probability 10⁻³.
#[test]
fn pooled_p99_interval_at_a_short_window_misses_only_where_the_data_cannot_reach() {
    let s = scenario(&mm1_toml(
        "coverage-p99-short-window",
        900.0,
        20,
        1.0,
        "3.0",
    ));
    let truth = p99_at_rho_0_9();
    let runs = 150;
    let (mut covered, mut reachable, mut missed_reachable) = (0, 0, 0);
    for r in seeded_runs(&s, 70_000, runs) {
        let st = &r.strategies[0];
        let hit = st.estimate(Metric::LatencyP99).contains(truth);
        let reaches = st.latency().max() as f64 * 1e-9 >= truth;
        covered += usize::from(hit);
        reachable += usize::from(reaches);
        missed_reachable += usize::from(reaches && !hit);
    }
    println!(
        "windows of 1,000 service times: covered {covered} of {runs}; {reachable} runs reach the truth, {missed_reachable} of them missed"
    );
    assert!(
        reachable >= 110,
        "only {reachable} of {runs} runs reach the truth"
    );
    assert!(
        missed_reachable <= 4,
        "{missed_reachable} of {reachable} missed"
    );
}

/// The pooled p99's interval at ρ = 0.9 with windows of 1,000 service times (1 s) and 100
/// replications, where the issue asks for about 95% (the run's warnings do not call these
/// intervals unreliable from 100 replications on: `lbsim::steady::TAIL_REPLICATIONS`).
///
/// 120 runs (seeds 90,000…), each with a 2 s warm-up (5.2 relaxation times of 0.38 s:
/// what is left of the empty start decays as e^(−5.2) ≈ 0.6%, against a half-width of
/// about 35% of the truth; 3 s, as in the table above, costs a third more). A 95%
/// interval covers Binomial(120, 0.95) times: 105 or fewer with probability 9.9·10⁻⁴, so
/// the test accepts 106 to 120 and a true 95% interval passes with probability 0.999. An
/// interval covering 85% passes with probability 0.19 (fails 0.81), 87% (Woodruff with
/// `t(b − 1)` here) with 0.39, 90% with 0.78. 150 runs would fail the 85% one with 0.88
/// and 200 with 0.96, but cost 25 s and 33 s on the loaded 2-core machine where 120 took
/// about 20 s. The mean width must stay below the truth (0.71 of it here), so an
/// interval cannot pass by being wide. Measured over 300 such runs (seeds 90,000…90,299):
/// 289 covered (truth below 1, above 10); over these 120: 113 (below 0, above 7).
#[test]
fn pooled_p99_interval_covers_at_rho_0_9_over_many_short_windows() {
    let s = scenario(&mm1_toml(
        "coverage-p99-100-short-windows",
        900.0,
        100,
        1.0,
        "2.0",
    ));
    let truth = p99_at_rho_0_9();
    let runs = 120;
    let (mut covered, mut below, mut above, mut width) = (0, 0, 0, 0.0);
    for r in seeded_runs(&s, 90_000, runs) {
        let e = r.strategies[0].estimate(Metric::LatencyP99);
        covered += usize::from(e.contains(truth));
        below += usize::from(truth < e.low);
        above += usize::from(truth > e.high);
        width += (e.high - e.low) / truth / runs as f64;
    }
    println!(
        "100 windows of 1,000 service times: covered {covered} of {runs} (truth below {below}, above {above}), mean width {width:.2} of the truth"
    );
    assert!((106..=120).contains(&covered), "coverage {covered}/{runs}");
    assert!(width < 1.0, "mean width {width} of the truth");
}
