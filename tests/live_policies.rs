//! Client policies live (issues 11 and 13): timeouts, retries with budgets, hedging and
//! outlier ejection replayed on real backends through the driver, with the faults the
//! backends inject (error, slow), and judged against the simulator by the live verdict
//! (`attempts_per_request`, `retry_rate`, `hedge_rate`, `timeout_fraction`,
//! `wasted_fraction`, with tolerances widened to the replications' spread).
//!
//! Every scenario is small (4 backends of 2 workers, 10 ms mean work, 4 to 5 measured
//! seconds) and replayed at time scale 2, about 12 s of wall-clock time each. Round robin
//! is used where the test is about a policy's arithmetic, since its picks do not depend on
//! timing: live then sends the same requests to the same backends as the replayed
//! simulated replication, and the policy's decisions are what differs.
//!
//! The planted mismatch replays the budgeted scenario with its budget removed (a client
//! that retries more than the scenario says) and judges it against the declared scenario:
//! the verdict must fail on the policy figures.

mod common;

use std::time::Duration;

use common::LiveCluster;
use lbsim::live::verdict::{self, Outcome, Verdict};
use lbsim::live::{LiveError, LiveRun};
use lbsim::metrics::RunMetrics;
use lbsim::scenario::Scenario;

/// Replays `s` at time scale 2, within 90 s.
fn live(s: &Scenario) -> Result<LiveRun, LiveError> {
    common::replay_scaled(s, 2.0, 0.0, Duration::from_secs(90))
}

fn judge(s: &Scenario, run: &LiveRun) -> Verdict {
    common::verdict_of(s, run, 10)
}

/// What every policy test does: replays `s` (its one strategy labelled `label`), checks
/// the live figures with `check`, judges the run, asserts that each of `metrics` passes
/// (where judged) and that no policy figure fails; returns the verdict for the test's
/// own rows.
fn replay_and_judge(
    s: &Scenario,
    label: &str,
    metrics: &[&str],
    check: impl Fn(&RunMetrics),
) -> Verdict {
    let run = live(s).expect("replay");
    check(&run.strategies[0].metrics);
    let v = judge(s, &run);
    for metric in metrics {
        passes(&v, label, metric);
    }
    no_policy_failure(&v);
    v
}

/// The row of `metric` for the only strategy, which must exist.
fn row<'a>(v: &'a Verdict, label: &str, metric: &str) -> &'a verdict::Comparison {
    v.row(label, metric)
        .unwrap_or_else(|| panic!("no row {label} {metric}"))
}

/// Asserts that no judged policy figure fails. Other rows are printed, not asserted:
/// per-server figures move with which backend each copy lands on (round robin's cycle
/// shifts with every retry or hedge, and a live decision a few microseconds off the
/// simulated one shifts it differently), and `calibration_under_load` counts a `slow`
/// fault's extra service as overhead; `tests/live_verdict.rs` and `tests/live_faults.rs`
/// judge those.
fn no_policy_failure(v: &Verdict) {
    let failed: Vec<String> = v
        .failures()
        .filter(|r| r.figure.metric().is_some_and(|m| m.of_client_policies()))
        .map(|r| format!("{} {}", r.strategy, r.metric()))
        .collect();
    assert!(failed.is_empty(), "policy figures failed: {failed:?}");
    if let Outcome::Fail { failed } = v.outcome() {
        println!("other rows outside tolerance: {failed:?}");
    }
}

/// Asserts a judged row passes (a row not judged because the driver lagged is printed).
fn passes(v: &Verdict, label: &str, metric: &str) {
    let r = row(v, label, metric);
    if v.judged(r) {
        assert!(r.passed(), "{label} {metric}: {r:?}");
    } else {
        println!("{label} {metric} not judged (driver lag): {r:?}");
    }
}

/// Node-1 answers every call with an error from the start; round robin retries on
/// failures to another host, under a Finagle budget of 10% plus 2 retries per second.
const RETRY: &str = r#"
[[faults]]
server = "node-1"
kind = "error"
at = 0.0
error_latency = 0.001

[[strategies]]
label = "rr+retry"
kind = "round_robin"
[strategies.policy.retry]
max_attempts = 3
retry_on = ["failed"]
base_interval = 0.005
previous_hosts = true
"#;

const BUDGET: &str = r#"[strategies.policy.budget]
kind = "finagle"
ttl = 1.0
min_retries_per_sec = 2
percent_can_retry = 0.1
"#;

/// The retry scenario's cluster: 400 requests a second.
fn retry_cluster() -> LiveCluster<'static> {
    LiveCluster::new("retry-budget-live", 11, 400.0)
}

#[test]
fn retries_under_a_budget_agree_live_and_the_budget_bounds_them() {
    let s = retry_cluster().scenario(&format!("{RETRY}{BUDGET}"));
    let metrics = [
        "attempts_per_request",
        "retry_rate",
        "error_fraction",
        "timeout_fraction",
        "wasted_fraction",
    ];
    let v = replay_and_judge(&s, "rr+retry", &metrics, |m| {
        let n = m.arrived as f64;
        let retries = m.client.retries as f64;
        // Finagle's bound whatever the timing: in each 1 s window, withdrawals ≤ 10% of
        // the deposits of that window and the one before, plus the reserve of 2 × ttl: at
        // most 0.2 × n + 2 × 1 × (windows + 1) over the run's 6 s (counted over all
        // arrivals, so over the measured ones too).
        let bound = 0.2 * n + 2.0 * 7.0;
        println!(
            "live: {n} requests, {retries} retries ({:.3} per request), bound {bound}",
            retries / n
        );
        assert!(n > 1000.0, "{n} requests");
        assert!(retries > 0.0, "node-1 fails a quarter of first attempts");
        assert!(retries <= bound, "{retries} retries > {bound}");
        // The budget binds: unbudgeted, a quarter of the requests would retry.
        assert!(retries / n < 0.2, "{} retries per request", retries / n);
    });
    let apr = row(&v, "rr+retry", "attempts_per_request");
    assert!(
        apr.sim_replayed > 1.05 && apr.live > 1.05,
        "retries on both sides: {apr:?}"
    );
}

#[test]
fn a_client_retrying_beyond_its_budget_fails_the_verdict() {
    let declared = retry_cluster().scenario(&format!("{RETRY}{BUDGET}"));
    // Planted: the live client runs without the budget the scenario declares.
    let planted = retry_cluster().scenario(RETRY);
    let run = live(&planted).expect("replay");
    let v = judge(&declared, &run);
    let r = row(&v, "rr+retry", "retry_rate");
    assert!(v.judged(r), "retry_rate is not timed by the driver");
    assert!(
        !r.passed() && r.live > r.sim_replayed + 0.05,
        "unbudgeted retries must disagree: {r:?}"
    );
    match v.outcome() {
        Outcome::Fail { failed } => assert!(
            failed.iter().any(|f| f == "rr+retry retry_rate"),
            "{failed:?}"
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn per_try_timeouts_on_a_slow_backend_waste_work_on_both_sides() {
    // Node-1 serves 4 times slower (40 ms mean) for the whole run; a 50 ms per-try
    // timeout gives up on its slow calls and retries them elsewhere. The abandoned calls
    // run to their end (no cancellation): wasted work on both sides.
    let s = LiveCluster::new("timeout-live", 5, 100.0).scenario(
        r#"
[[faults]]
server = "node-1"
kind = "slow"
at = 0.0
factor = 4.0

[[strategies]]
label = "rr+timeout"
kind = "round_robin"
[strategies.policy]
per_try_timeout = 0.05
[strategies.policy.retry]
max_attempts = 2
retry_on = ["timeout"]
base_interval = 0.002
previous_hosts = true
"#,
    );
    let metrics = [
        "attempts_per_request",
        "retry_rate",
        "timeout_fraction",
        "wasted_fraction",
    ];
    let v = replay_and_judge(&s, "rr+timeout", &metrics, |m| {
        println!(
            "live: abandoned {}, retries {}, wasted {:.4} s of {:.4} s",
            m.client.abandoned, m.client.retries, m.client.wasted, m.client.work
        );
        assert!(m.client.abandoned > 0, "per-try timeouts fired live");
        assert!(m.client.retries > 0, "and were retried");
        assert!(m.client.wasted > 0.0, "abandoned calls ran to their end");
    });
    let w = row(&v, "rr+timeout", "wasted_fraction");
    assert!(
        w.sim_replayed > 0.0 && w.live > 0.0,
        "wasted work on both sides: {w:?}"
    );
}

/// Four backends of heavy-tailed work (lognormal, cv 3) at 200 requests a second, with
/// one round-robin strategy `label` hedging as `hedge` says (its
/// `[strategies.policy.hedge]` keys), the loser left to finish (`cancel_losers = false`:
/// Thrift has no cancel).
fn hedging(name: &str, label: &str, hedge: &str) -> Scenario {
    let cluster = LiveCluster {
        cv: 3.0,
        ..LiveCluster::new(name, 3, 200.0)
    };
    cluster.scenario(&format!(
        "[[strategies]]\nlabel = \"{label}\"\nkind = \"round_robin\"\n\
         [strategies.policy.hedge]\n{hedge}\nmax_attempts = 2\ncancel_losers = false\n"
    ))
}

#[test]
fn hedging_on_heavy_tailed_servers_agrees_on_hedge_rate_and_p99() {
    // A copy after 20 ms.
    let s = hedging("hedge-live", "rr+hedge", "delay = 0.02");
    let metrics = [
        "hedge_rate",
        "latency_p99",
        "wasted_fraction",
        "attempts_per_request",
    ];
    let v = replay_and_judge(&s, "rr+hedge", &metrics, |m| {
        println!("live: hedges {} of {} requests", m.client.hedges, m.arrived);
        assert!(m.client.hedges > 0, "hedges sent live");
    });
    let h = row(&v, "rr+hedge", "hedge_rate");
    assert!(h.sim_replayed > 0.02 && h.live > 0.02, "{h:?}");
}

#[test]
fn hedging_after_a_percentile_of_recent_latencies_agrees_live() {
    // As above, but the copy goes out after the p90 of the balancer's recent request
    // latencies (Finagle's windowed histogram: 1.5 s in 3 buckets, refreshed every
    // 0.25 s), which the live client feeds from its own answers through the shared core:
    // about one request in ten (a little more: copies add load) gets a copy on both sides.
    // With the window never fed (planted in `core::served`), no delay is ever known and
    // no copy goes out: the hedge count below is 0 and the test fails.
    let s = hedging(
        "hedge-percentile-live",
        "rr+hedge-p90",
        "delay = { percentile = 0.9, window = 1.5, refresh = 0.25 }",
    );
    let metrics = ["hedge_rate", "latency_p99", "attempts_per_request"];
    let v = replay_and_judge(&s, "rr+hedge-p90", &metrics, |m| {
        let rate = m.client.hedges as f64 / m.arrived as f64;
        println!(
            "live: hedges {} of {} requests ({rate:.4})",
            m.client.hedges, m.arrived
        );
        assert!(m.client.hedges > 0, "hedges sent live after the p90");
        // About one in ten; well off either way means the window is not what it should be.
        assert!(rate > 0.05 && rate < 0.2, "{rate} hedges per request");
    });
    let h = row(&v, "rr+hedge-p90", "hedge_rate");
    assert!(h.sim_replayed > 0.05 && h.live > 0.05, "{h:?}");
}

#[test]
fn circuit_breakers_overflow_live_as_simulated_and_as_mm1k() {
    // One single-worker backend (exponential service, mean 5 ms) at 140 requests a
    // second (ρ = 0.7) behind Envoy's breakers with max_pending_requests = 2: an attempt
    // that would wait while two already wait overflows, so the backend holds at most 3,
    // an M/M/1/3 queue, and the overflow fraction is its blocking probability
    // (1 − ρ) ρ³ / (1 − ρ⁴) = 0.135 (PASTA). Pending live is the driver's own count of
    // calls at the backend beyond its worker; with it planted to never wait
    // (`Host::would_wait` false), nothing overflows and the test fails.
    let s = common::scenario(
        r#"
name = "circuit-live"
seed = 21
replications = 10
duration = 6.0
warmup = 1.0

[arrivals]
process = "poisson"
rate = 140.0

[[servers]]
name = "s"
service = { dist = "exponential", mean = 0.005 }

[[strategies]]
label = "rr+breakers"
kind = "round_robin"
[strategies.policy.circuit_breakers]
max_pending_requests = 2
"#,
    );
    let v = replay_and_judge(&s, "rr+breakers", &["overflow_fraction"], |m| {
        println!(
            "live: {} overflowed of {} attempts ({} requests)",
            m.client.overflowed, m.client.attempts, m.arrived
        );
        assert!(m.client.overflowed > 0, "overflows live");
    });
    let r = row(&v, "rr+breakers", "overflow_fraction");
    let rho: f64 = 0.7;
    let theory = (1.0 - rho) * rho.powi(3) / (1.0 - rho.powi(4));
    // Within the verdict's own tolerance (3 standard deviations of the simulated
    // replications) of the closed form, on both sides.
    let allowed = r.tolerance.allowed(theory);
    println!("M/M/1/3 blocking {theory:.4}, allowed ±{allowed:.4}: {r:?}");
    assert!((r.live - theory).abs() <= allowed, "live {r:?} vs {theory}");
    assert!(
        (r.sim.mean - theory).abs() <= allowed,
        "sim {r:?} vs {theory}"
    );
}

#[test]
fn outlier_ejection_removes_a_failing_backend_live() {
    // From 2 s node-1 fails fast; least connections sees it idle and sends it more (a
    // black hole) until Envoy's detection (5 consecutive errors) ejects it for longer
    // than the run.
    let cluster = LiveCluster {
        duration: 4.0,
        ..LiveCluster::new("ejection-live", 9, 400.0)
    };
    let s = cluster.scenario(
        r#"
[[faults]]
server = "node-1"
kind = "error"
at = 2.0
error_latency = 0.001

[[strategies]]
label = "lc+ejection"
kind = "least_connections"
[strategies.policy.outlier]
kind = "envoy"
consecutive_5xx = 5
base_ejection_time = 30.0
max_ejection_percent = 50.0
"#,
    );
    let v = replay_and_judge(&s, "lc+ejection", &["error_fraction"], |m| {
        println!(
            "live: {} ejections, {} failed of {}",
            m.client.ejections, m.failed, m.arrived
        );
        assert!(m.client.ejections >= 1, "node-1 ejected live");
        assert_eq!(m.client.max_ejected, 1, "only the failing backend");
        // A handful of errors before the detection, none after: at most a few dozen.
        assert!(m.failed > 0 && m.failed < 40, "{} failed", m.failed);
    });
    let during = row(&v, "lc+ejection", "phase_error_fraction:during[2-5s]");
    assert!(
        during.live < 0.02 && during.sim_replayed < 0.02,
        "{during:?}"
    );
}

#[test]
fn cancellation_is_refused_live_with_the_reason() {
    let s = retry_cluster().scenario(&RETRY.replace(
        "[strategies.policy.retry]",
        "[strategies.policy]\ncancel = true\n[strategies.policy.retry]",
    ));
    let err = live(&s).expect_err("refused").to_string();
    assert!(
        err.contains("cancel = true") && err.contains("no cancellation") && err.contains("fix"),
        "{err}"
    );
}
