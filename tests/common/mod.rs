//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod peer;
pub mod process;

use std::path::Path;

use lbsim::metrics::Metric;
use lbsim::runner::{RunOptions, RunResults, run};
use lbsim::scenario::Scenario;
use lbsim::stats::{estimate, t_quantile};

/// A scenario from TOML text (named `test.toml` in errors).
pub fn scenario(src: &str) -> Scenario {
    Scenario::from_source(Path::new("test.toml"), src).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a scenario with default options.
pub fn run_default(s: &Scenario) -> RunResults {
    run(s, &RunOptions::default()).expect("run")
}

/// Values of `metric` across replications for strategy `k`.
pub fn values(r: &RunResults, k: usize, metric: Metric) -> Vec<f64> {
    r.strategies[k].metric(metric)
}

/// Asserts that `theory` lies within the two-sided 99.9% Student-t confidence interval of the
/// mean of `values` (independent replications). With fixed seeds the test is deterministic;
/// the 99.9% level means a correct simulator fails such a check for one seed in a thousand,
/// while a modelling error of a few CI half-widths fails it.
pub fn assert_agrees(what: &str, values: &[f64], theory: f64) {
    let e = estimate(values);
    let hw999 = t_quantile(0.9995, e.n - 1) * (e.half_width() / t_quantile(0.975, e.n - 1));
    let dev = (e.mean - theory).abs();
    println!(
        "{what}: simulated {:.6} ±{:.6} (95%) ±{:.6} (99.9%), theory {theory:.6}, deviation {:.2}%",
        e.mean,
        e.half_width(),
        hw999,
        100.0 * dev / theory
    );
    assert!(
        dev <= hw999,
        "{what}: theory {theory} outside the 99.9% CI {} ± {hw999}",
        e.mean
    );
}

/// Asserts that `theory` lies within an estimate's own interval widened from 95% to 99.9%
/// (each side scaled by t(0.9995)/t(0.975), so asymmetric intervals stay asymmetric). For
/// figures whose interval is not a mean's, such as pooled percentiles.
pub fn assert_covers(what: &str, e: &lbsim::stats::Estimate, theory: f64) {
    let k = t_quantile(0.9995, e.n - 1) / t_quantile(0.975, e.n - 1);
    let (low, high) = (
        e.mean - k * (e.mean - e.low),
        e.mean + k * (e.high - e.mean),
    );
    println!(
        "{what}: simulated {:.6} [{:.6}, {:.6}] (95%) [{low:.6}, {high:.6}] (99.9%), theory {theory:.6}, deviation {:.2}%",
        e.mean,
        e.low,
        e.high,
        100.0 * (e.mean - theory) / theory
    );
    assert!(
        low <= theory && theory <= high,
        "{what}: theory {theory} outside the 99.9% interval [{low}, {high}] of {}",
        e.mean
    );
}

/// The reported estimate (pooled for percentiles) of `metric` for strategy `k`.
pub fn reported(r: &RunResults, k: usize, metric: Metric) -> lbsim::stats::Estimate {
    r.strategies[k].estimate(metric)
}

/// TOML of M/M/1 under round robin: Poisson arrivals at `rate` a second to one
/// single-worker server with exponential service of mean 1 ms (μ = 1000/s). `warmup` is
/// TOML (seconds, or `"\"auto\""`); tables such as `[[faults]]` may be appended, and
/// top-level keys (`seed = …`) prepended.
pub fn mm1_toml(name: &str, rate: f64, replications: u32, duration: f64, warmup: &str) -> String {
    format!(
        r#"
name = "{name}"
replications = {replications}
duration = {duration}
warmup = {warmup}
[arrivals]
process = "poisson"
rate = {rate}
[[servers]]
name = "s"
service = {{ dist = "exponential", mean = 0.001 }}
[[strategies]]
kind = "round_robin"
"#
    )
}

/// TOML of ten single-worker servers (exponential service of mean 5 ms) under 500 requests
/// a second, every one failing `fraction` of its requests from the start (`None`: every
/// request), with no warm-up, 2 replications and one round-robin strategy followed by
/// `policy` (its `[strategies.policy.*]` tables): only an outlier detector's cap stops it
/// from ejecting every server.
pub fn all_fail_toml(duration: f64, fraction: Option<f64>, policy: &str) -> String {
    let fraction = fraction.map_or(String::new(), |f| format!("fraction = {f}\n"));
    format!(
        r#"
name = "all-fail"
duration = {duration}
warmup = 0
replications = 2
[arrivals]
process = "poisson"
rate = 500
[[servers]]
name = "s"
count = 10
service = {{ dist = "exponential", mean = 0.005 }}
[[faults]]
server = "s"
kind = "error"
at = 0
{fraction}[[strategies]]
kind = "round_robin"
{policy}"#
    )
}

/// Runs `s` once for each seed `first`, `first + 1`, … (`runs` independent runs, in order).
pub fn seeded_runs(s: &Scenario, first: u64, runs: u64) -> impl Iterator<Item = RunResults> + '_ {
    (0..runs).map(move |k| {
        run(
            s,
            &RunOptions {
                seed: Some(first + k),
                ..Default::default()
            },
        )
        .expect("run")
    })
}

/// Replays `s` with `opts` on a thread of its own; panics if it has not finished within
/// `limit` (a hung replay fails its test instead of hanging the suite).
pub fn replay_within(
    s: &Scenario,
    opts: &lbsim::live::LiveOptions,
    limit: std::time::Duration,
) -> Result<lbsim::live::LiveRun, lbsim::live::LiveError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (s, opts) = (s.clone(), opts.clone());
    std::thread::spawn(move || {
        let _ = tx.send(lbsim::live::replay(&s, &opts));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("the replay did not finish within {limit:?}"))
}

/// The verdict on `run` against `replications` simulated replications, printed (outcome
/// and table) for the test's output.
pub fn verdict_of(
    s: &Scenario,
    run: &lbsim::live::LiveRun,
    replications: u32,
) -> lbsim::live::verdict::Verdict {
    use lbsim::live::verdict::{self, CompareOptions};
    let v = verdict::compare(
        s,
        run,
        &CompareOptions {
            replications: Some(replications),
            ..CompareOptions::default()
        },
    )
    .expect("compare");
    print!("{:?}\n{}", v.outcome(), verdict::table(&v));
    v
}

/// Replays with `replay`, checks each run with `check` and judges it with `judge`, again
/// (three attempts at most) while the verdict refuses to judge because the driver lagged
/// (a loaded machine); returns the last verdict.
pub fn judged_retrying(
    mut replay: impl FnMut() -> lbsim::live::LiveRun,
    check: impl Fn(&lbsim::live::LiveRun),
    judge: impl Fn(&lbsim::live::LiveRun) -> lbsim::live::verdict::Verdict,
) -> lbsim::live::verdict::Verdict {
    let mut v = None;
    for _ in 0..3 {
        let run = replay();
        check(&run);
        let verdict = judge(&run);
        let retry = verdict.refusal().is_some();
        v = Some(verdict);
        if !retry {
            break;
        }
    }
    v.expect("one attempt ran")
}
