//! Client policies in the simulator (issue 11): budgets bound retries under total failure
//! to what their parameters allow, hedging trades load for tail latency, timeouts count
//! wasted work, and every request ends exactly once.

mod common;

use common::{all_fail_toml, reported, run_default, scenario};
use lbsim::metrics::{Metric, RunMetrics};
use lbsim::scenario::Scenario;
use lbsim::sim::Run;
use lbsim::stats::estimate;

/// Runs replication `rep` of strategy entry `k` with its policy.
fn sim(s: &Scenario, k: usize, rep: u64) -> RunMetrics {
    Run::entry(s, &s.strategies[k], rep).metrics()
}

/// Every measured request ended exactly one way.
fn assert_ends_once(m: &RunMetrics) {
    let ended = m.latency.len() + m.rejected + m.unroutable + m.failed + m.client.timed_out;
    assert_eq!(m.arrived, ended, "arrived vs ended: {m:?}", m = m.client);
}

/// Both servers are down for the whole run and no health check ever notices, so every
/// attempt fails at once: only the policy bounds the attempts.
fn total_failure(policy: &str) -> Scenario {
    scenario(&format!(
        r#"
name = "total-failure"
duration = 20
warmup = 0
replications = 2
[arrivals]
process = "poisson"
rate = 100
[[servers]]
name = "s"
count = 2
service = {{ dist = "exponential", mean = 0.005 }}
[[faults]]
server = "s"
kind = "crash"
at = 0
detection = 1000
[[strategies]]
kind = "round_robin"
{policy}
"#
    ))
}

const RETRY5: &str = "[strategies.policy.retry]\nmax_attempts = 5\nbase_interval = 0.001\n";

#[test]
fn without_a_budget_every_request_makes_max_attempts() {
    let s = total_failure(RETRY5);
    let m = sim(&s, 0, 0);
    assert_ends_once(&m);
    assert!(m.arrived > 1500);
    assert_eq!(m.failed, m.arrived);
    assert_eq!(m.client.attempts, 5 * m.arrived);
    assert_eq!(m.client.retries, 4 * m.arrived);
}

#[test]
fn finagle_budget_bounds_retries_to_percent_plus_reserve() {
    // percent_can_retry 0.2 and 10 retries/s over a 10 s ttl: in steady state the budget
    // is spent as fast as it fills, so retries per second are 0.2 × rate + 10, i.e.
    // 0.2 + 10/100 = 0.3 retries per request.
    let s = total_failure(&format!(
        "{RETRY5}[strategies.policy.budget]\nkind = \"finagle\"\n"
    ));
    for rep in 0..2 {
        let m = sim(&s, 0, rep);
        assert_ends_once(&m);
        let n = m.arrived as f64;
        let per_request = m.client.attempts as f64 / n;
        // What the parameters allow, with no assumption of steady state: in every aligned
        // ttl window, withdrawals ≤ 0.2 × deposits of that window and the one before, plus
        // the reserve — at most 0.4 × n + 10 × ttl × (windows + 1) retries in all.
        let rigorous = 1.0 + (0.4 * n + 10.0 * 10.0 * 3.0) / n;
        println!(
            "replication {rep}: {per_request} attempts per request (rigorous bound {rigorous})"
        );
        assert!(per_request <= rigorous, "{per_request} > {rigorous}");
        // And the steady-state figure, within the Poisson noise of n ≈ 2000 arrivals
        // (the deposits' relative sd is 1/√2000 ≈ 2 %, so 0.2 × n varies by ±0.5 %
        // of the total; 2 % of slack).
        assert!(
            (per_request - 1.3).abs() < 0.026,
            "attempts per request {per_request}, expected 1.3"
        );
    }
}

#[test]
fn grpc_throttling_stops_retries_after_half_the_tokens() {
    // max_tokens 10: each failure takes a token, retries stop at 5 tokens and, without a
    // success, never resume. So exactly 4 retries (the first request's 5 attempts take
    // tokens 10 → 6 before the retry check at 6, 5 fails) in the whole run.
    let s = total_failure(&format!(
        "{RETRY5}[strategies.policy.budget]\nkind = \"grpc\"\nmax_tokens = 10\ntoken_ratio = 0.1\n"
    ));
    let m = sim(&s, 0, 0);
    assert_ends_once(&m);
    assert!(m.client.retries <= 5, "retries {}", m.client.retries);
    assert_eq!(m.client.retries, 4);
    assert_eq!(m.client.attempts, m.arrived + 4);
}

#[test]
fn envoy_budget_bounds_retries_waiting_or_in_flight() {
    // With every attempt failing at once, attempts in flight are ~0, so the floor of
    // min_retry_concurrency = 1 retry at a time holds: one retry per back-off (uniform
    // on [0, 1 ms) then [0, 3 ms) …) at most, far below the 4 per request unbudgeted.
    let s = total_failure(&format!(
        "{RETRY5}[strategies.policy.budget]\nkind = \"envoy\"\nmin_retry_concurrency = 1\n"
    ));
    let m = sim(&s, 0, 0);
    assert_ends_once(&m);
    let per_request = m.client.attempts as f64 / m.arrived as f64;
    assert!(per_request > 1.0 && per_request < 4.0, "{per_request}");
}

fn heavy_tail() -> Scenario {
    scenario(
        r#"
name = "heavy-tail"
duration = 30
warmup = 3
replications = 8
[arrivals]
process = "poisson"
rate = 300
[[servers]]
name = "s"
count = 8
service = { dist = "lognormal", mean = 0.01, cv = 3.0 }
[[strategies]]
kind = "power_of_d"
label = "p2c"
[[strategies]]
kind = "power_of_d"
label = "p2c-hedged"
[strategies.policy.hedge]
delay = 0.025
max_attempts = 2
cancel_losers = false
"#,
    )
}

#[test]
fn hedging_lowers_p99_on_heavy_tailed_servers_at_a_measured_load_cost() {
    let s = heavy_tail();
    let r = run_default(&s);
    let (plain, hedged) = (
        reported(&r, 0, Metric::LatencyP99),
        reported(&r, 1, Metric::LatencyP99),
    );
    println!("p99 plain {plain:?}\np99 hedged {hedged:?}");
    assert!(
        hedged.high < plain.low,
        "hedged p99 {hedged:?} not below plain {plain:?}"
    );
    // The cost: losers run to the end (cancel_losers = false), so servers work more.
    let (u0, u1) = (
        reported(&r, 0, Metric::UtilizationMean),
        reported(&r, 1, Metric::UtilizationMean),
    );
    println!("utilisation plain {u0:?}\nutilisation hedged {u1:?}");
    assert!(u1.low > u0.high, "hedging costs load: {u1:?} vs {u0:?}");
    // Measured per replication: hedges per request, with its interval, above 0 and
    // below 1 (at most one hedge per request, sent only when the first is slow).
    let rates: Vec<f64> = (0..4)
        .map(|rep| {
            let m = sim(&s, 1, rep);
            assert_ends_once(&m);
            assert!(m.client.wasted > 0.0);
            m.client.hedges as f64 / m.arrived as f64
        })
        .collect();
    let e = estimate(&rates);
    println!("hedges per request {e:?}");
    assert!(e.low > 0.0 && e.high < 1.0);
}

#[test]
fn timeouts_count_wasted_work_and_cancellation_withdraws_it() {
    let src = |cancel: bool| {
        format!(
            r#"
name = "timeouts"
duration = 10
warmup = 1
replications = 2
[arrivals]
process = "poisson"
rate = 150
[[servers]]
name = "s"
count = 2
service = {{ dist = "lognormal", mean = 0.01, cv = 2.0 }}
[[strategies]]
kind = "least_connections"
[strategies.policy]
timeout = 0.05
per_try_timeout = 0.02
cancel = {cancel}
[strategies.policy.retry]
max_attempts = 3
retry_on = ["timeout"]
"#
        )
    };
    let kept = sim(&scenario(&src(false)), 0, 0);
    let cancelled = sim(&scenario(&src(true)), 0, 0);
    for m in [&kept, &cancelled] {
        assert_ends_once(m);
        assert!(
            m.client.abandoned > 0 && m.client.retries > 0,
            "{:?}",
            m.client
        );
        assert!(m.client.wasted <= m.client.work);
    }
    assert_eq!(kept.client.cancelled, 0);
    assert!(cancelled.client.cancelled > 0);
    // Without cancellation servers finish every abandoned attempt; with it they stop.
    assert!(
        kept.client.wasted / kept.client.work > cancelled.client.wasted / cancelled.client.work,
        "{:?} vs {:?}",
        kept.client,
        cancelled.client
    );
}

#[test]
fn policies_are_deterministic() {
    let s = heavy_tail();
    let a = sim(&s, 1, 3);
    let b = sim(&s, 1, 3);
    assert_eq!(a.client, b.client);
    assert_eq!(
        format!("{:?}", a.summarize()),
        format!("{:?}", b.summarize())
    );
}

/// Goodput after the trigger over goodput before it, in one replication: requests served
/// per 1 % slice of the window (by arrival) in the last 15 s, over the first 15 s (the
/// slow-down runs from 15 to 20 s into the 60 s window).
fn recovery(m: &RunMetrics) -> f64 {
    let served = |r: std::ops::Range<usize>| m.batches[r].iter().map(|b| b[1]).sum::<f64>();
    served(75..100) / served(0..25)
}

#[test]
fn retry_storm_stays_collapsed_without_a_budget_and_recovers_with_one() {
    let s = Scenario::load(std::path::Path::new("scenarios/retry-storm.toml")).unwrap();
    let label = |k: usize| s.strategies[k].label();
    let ratios = |k: usize| {
        let v: Vec<f64> = (0..4).map(|rep| recovery(&sim(&s, k, rep))).collect();
        let e = estimate(&v);
        println!("{}: goodput after / before the trigger {e:?}", label(k));
        e
    };
    // Without retries the backlog of the slow-down drains in seconds.
    assert!(ratios(0).low > 0.95);
    // Unbudgeted retries: still collapsed 25 s after the trigger ended.
    let storm = ratios(1);
    assert!(storm.high < 0.5, "{storm:?}");
    // A Finagle budget and gRPC throttling recover to the goodput of before.
    for k in [2, 3] {
        let e = ratios(k);
        assert!(e.low > 0.95, "{}: {e:?}", label(k));
    }
}

#[test]
fn ejection_removes_the_black_hole_within_max_ejection_percent() {
    let s = Scenario::load(std::path::Path::new("scenarios/black-hole.toml")).unwrap();
    let r = run_default(&s);
    let err = |k: usize| {
        let e = estimate(&common::values(&r, k, Metric::ErrorFraction));
        println!("{}: error fraction {e:?}", s.strategies[k].label());
        e
    };
    // Least connections sends the failing tenth of the cluster over a third of requests.
    let (plain, ejecting) = (err(0), err(2));
    assert!(plain.low > 0.3, "{plain:?}");
    // Ejection takes it out after 5 errors (and again after each return).
    assert!(ejecting.high < 0.001, "{ejecting:?}");
    for rep in 0..3 {
        let m = sim(&s, 2, rep);
        assert_ends_once(&m);
        assert!(m.client.ejections >= 1);
        // 10 % of 10 servers: one at a time.
        assert_eq!(m.client.max_ejected, 1, "{:?}", m.client);
        // Retries are needed far less once the black hole is out.
        let (with, without) = (sim(&s, 3, rep), sim(&s, 1, rep));
        assert_ends_once(&with);
        assert_ends_once(&without);
        assert!(
            with.client.retries * 20 < without.client.retries,
            "{:?} vs {:?}",
            with.client,
            without.client
        );
    }
}

#[test]
fn ejection_never_exceeds_max_ejection_percent() {
    // Every server fails fast: only the cap stops ejections. 25 % of 10 servers is 2.
    let src = |percent: f64| {
        all_fail_toml(
            60.0,
            None,
            &format!(
                "[strategies.policy.outlier]\nkind = \"envoy\"\nmax_ejection_percent = {percent}\nbase_ejection_time = 5\ninterval = 2\n"
            ),
        )
    };
    for (percent, cap) in [(25.0, 2), (10.0, 1), (5.0, 1), (50.0, 5)] {
        let s = scenario(&src(percent));
        let m = sim(&s, 0, 0);
        assert_ends_once(&m);
        assert_eq!(m.client.max_ejected, cap, "{percent} %: {:?}", m.client);
        // Hosts come back and are ejected again, within the cap each time.
        assert!(m.client.ejections > u64::from(cap), "{:?}", m.client);
    }
}
