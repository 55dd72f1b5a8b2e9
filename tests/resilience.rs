//! Resilience policies beyond retries (issue 11): circuit breakers bound what a balancer
//! holds and refuse the rest as queueing theory's loss systems do.

mod common;

use common::{assert_agrees, run_default, scenario, values};
use lbsim::metrics::{Metric, RunMetrics};
use lbsim::scenario::Scenario;
use lbsim::sim::{Run, TraceSpec};
use lbsim::time::Nanos;

/// Runs replication `rep` of strategy entry `k` with its policy.
fn sim(s: &Scenario, k: usize, rep: u64) -> RunMetrics {
    Run::entry(s, &s.strategies[k], rep).metrics()
}

/// Every measured request ended exactly one way.
fn assert_ends_once(m: &RunMetrics) {
    let ended = m.latency.len() + m.rejected + m.unroutable + m.failed + m.client.timed_out;
    assert_eq!(m.arrived, ended, "arrived vs ended: {:?}", m.client);
}

/// One server with one worker (exponential service, mean 10 ms) behind one balancer at
/// arrival rate `rate`, under `policy`.
fn one_server(rate: f64, policy: &str) -> Scenario {
    scenario(&format!(
        r#"
name = "mm1k"
duration = 200
warmup = 5
replications = 8
[arrivals]
process = "poisson"
rate = {rate}
[[servers]]
name = "s"
service = {{ dist = "exponential", mean = 0.01 }}
[[strategies]]
kind = "round_robin"
[strategies.policy.circuit_breakers]
{policy}
"#
    ))
}

/// M/M/1/K's blocking probability: (1 − ρ) ρ^K / (1 − ρ^(K+1)).
fn mm1k_blocking(rho: f64, k: i32) -> f64 {
    (1.0 - rho) * rho.powi(k) / (1.0 - rho.powi(k + 1))
}

#[test]
fn max_requests_over_one_server_is_mm1k() {
    // With at most K attempts in flight and one worker, the server holds at most K: an
    // M/M/1/K queue, and an arrival overflows exactly when it would be blocked (PASTA).
    for (rate, k) in [(80.0, 4), (120.0, 3)] {
        let s = one_server(rate, &format!("max_requests = {k}\n"));
        let r = run_default(&s);
        let theory = mm1k_blocking(rate / 100.0, k);
        assert_agrees(
            &format!("overflow at rho {} K {k}", rate / 100.0),
            &values(&r, 0, Metric::OverflowFraction),
            theory,
        );
        // Refusals are the overflows: nothing else refuses.
        let m = sim(&s, 0, 0);
        assert_ends_once(&m);
        assert_eq!(m.rejected, m.client.overflowed);
        assert_eq!(m.client.attempts, m.arrived);
    }
}

#[test]
fn max_pending_zero_over_one_server_is_erlang_loss() {
    // No attempt may wait: M/M/1/1, blocking ρ / (1 + ρ).
    let s = one_server(80.0, "max_pending_requests = 0\n");
    let r = run_default(&s);
    assert_agrees(
        "overflow with max_pending_requests 0",
        &values(&r, 0, Metric::OverflowFraction),
        mm1k_blocking(0.8, 1),
    );
    let m = sim(&s, 0, 0);
    assert_eq!(m.wait_sum, 0.0, "nothing ever waited");
}

#[test]
fn in_flight_per_balancer_never_exceeds_max_requests() {
    // Offered three times the capacity of two single-worker servers; each of three
    // balancers may hold 5 attempts. Sampled every 100 µs: balancer 0 never has more
    // than 5 in flight, and the servers never hold more than 3 × 5.
    let s = scenario(
        r#"
name = "saturated"
duration = 20
warmup = 1
replications = 1
balancers = 3
[arrivals]
process = "poisson"
rate = 600
[[servers]]
name = "s"
count = 2
queue_capacity = 1000
service = { dist = "exponential", mean = 0.01 }
[[strategies]]
kind = "least_request"
[strategies.policy.circuit_breakers]
max_requests = 5
[strategies.policy.retry]
max_attempts = 3
retry_on = ["rejected"]
"#,
    );
    let spec = TraceSpec {
        every: Nanos(100_000),
        servers: vec![0, 1],
    };
    let out = Run::entry(&s, &s.strategies[0], 0)
        .trace(Some(&spec))
        .simulate()
        .unwrap();
    let trace = out.trace.unwrap();
    let mut most = 0;
    let mut most_held = 0;
    for sample in &trace.samples {
        let in_flight: u32 = sample.in_flight.iter().sum();
        let held: u32 = sample.queued.iter().chain(&sample.in_service).sum();
        assert!(in_flight <= 5, "{sample:?}");
        assert!(held <= 15, "{sample:?}");
        most = most.max(in_flight);
        most_held = most_held.max(held);
    }
    // Saturated: the limits are reached, and most of the offered load overflows.
    assert_eq!((most, most_held), (5, 15));
    let m = out.metrics;
    assert_ends_once(&m);
    assert!(
        m.client.overflowed * 2 > m.client.attempts,
        "{:?}",
        m.client
    );
    // Envoy never retries an overflow: the only retries follow refusals by servers,
    // which never refuse here (their queues never fill).
    assert_eq!(m.client.retries, 0, "{:?}", m.client);
}

/// Both servers fail every request at once: only the policy bounds the attempts.
fn total_failure(policy: &str) -> Scenario {
    scenario(&format!(
        r#"
name = "total-failure"
duration = 10
warmup = 0
replications = 1
[arrivals]
process = "poisson"
rate = 100
[[servers]]
name = "s"
count = 2
service = {{ dist = "exponential", mean = 0.005 }}
[[faults]]
server = "s"
kind = "error"
at = 0
error_latency = 0.002
[[strategies]]
kind = "round_robin"
[strategies.policy.retry]
max_attempts = 5
base_interval = 0.001
{policy}
"#
    ))
}

#[test]
fn max_retries_bounds_parallel_retries_unless_an_envoy_budget_replaces_it() {
    let attempts = |policy: &str| {
        let m = sim(&total_failure(policy), 0, 0);
        assert_ends_once(&m);
        (m.arrived, m.client.attempts)
    };
    // max_retries 0: never a retry.
    let (n, a) = attempts("[strategies.policy.circuit_breakers]\nmax_retries = 0\n");
    assert_eq!(a, n);
    // Unbounded: 5 attempts per request.
    let (n, a) = attempts("");
    assert_eq!(a, 5 * n);
    // Envoy's default of 3 parallel retries: requests arrive every 10 ms and each retry
    // chain lasts about (2 + 0.5 + 2 + 1.5 + 2 + 3.5 + 2 + 7.5) ms, so a few overlap and
    // some retries are refused, but far from all.
    let (n, a) = attempts("[strategies.policy.circuit_breakers]\n");
    assert!(a < 5 * n && a > 3 * n, "{a} attempts for {n} requests");
    // A retry budget of Envoy's replaces max_retries (here with a floor of 100).
    let (n, a) = attempts(
        "[strategies.policy.circuit_breakers]\nmax_retries = 0\n[strategies.policy.budget]\nkind = \"envoy\"\nmin_retry_concurrency = 100\n",
    );
    assert_eq!(a, 5 * n);
}

#[test]
fn a_bad_circuit_breaker_names_file_field_and_fix() {
    let src = "duration = 5\n[arrivals]\nprocess = \"poisson\"\nrate = 10\n[[servers]]\nname = \"s\"\nservice = { dist = \"exponential\", mean = 0.01 }\n[[strategies]]\nkind = \"round_robin\"\n[strategies.policy.circuit_breakers]\nmax_requests = 0\n";
    let e = Scenario::from_source(std::path::Path::new("cb.toml"), src)
        .unwrap_err()
        .to_string();
    for part in [
        "cb.toml",
        "strategies[0].policy.circuit_breakers.max_requests",
        "1024",
    ] {
        assert!(e.contains(part), "{part} not in: {e}");
    }
    // Overloaded with unbounded queues: refused without breakers, or with breakers that
    // leave timed-out attempts at the servers; accepted with breakers that bound it.
    let overload = |policy: &str| {
        Scenario::from_source(
            std::path::Path::new("o.toml"),
            &format!("duration = 5\n[arrivals]\nprocess = \"poisson\"\nrate = 500\n[[servers]]\nname = \"s\"\nservice = {{ dist = \"exponential\", mean = 0.01 }}\n[[strategies]]\nkind = \"round_robin\"\n{policy}"),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    assert!(overload("").unwrap_err().contains("unstable"));
    assert!(overload("[strategies.policy.circuit_breakers]\n").is_ok());
    assert!(
        overload("[strategies.policy]\ntimeout = 1\n[strategies.policy.circuit_breakers]\n")
            .unwrap_err()
            .contains("unstable")
    );
}

/// A scenario running `kind` twice: as is, and under a client policy that changes nothing
/// (no retry, no timeout): every pick must be the same.
fn with_and_without_policy(kind: &str) -> Scenario {
    scenario(&format!(
        r#"
name = "feedback"
duration = 20
warmup = 1
replications = 1
balancers = 2
[arrivals]
process = "poisson"
rate = 700
[[servers]]
name = "fast"
count = 3
service = {{ dist = "exponential", mean = 0.005 }}
[[servers]]
name = "slow"
count = 2
service = {{ dist = "lognormal", mean = 0.012, cv = 2 }}
[probes]
delay = 0.001
cost = 0.0005
[[strategies]]
label = "plain"
kind = "{kind}"
[[strategies]]
label = "policy"
kind = "{kind}"
[strategies.policy]
cancel = false
"#
    ))
}

#[test]
fn probing_and_feedback_strategies_pick_the_same_under_a_policy_that_does_nothing() {
    // C3 reads reply loads and service starts, Prequal probes: under a policy they get
    // the same feedback as without, so the same seed gives the same picks — every
    // server's share and every latency.
    for kind in ["c3", "prequal"] {
        let s = with_and_without_policy(kind);
        let (plain, policy) = (sim(&s, 0, 0), sim(&s, 1, 0));
        assert_ends_once(&policy);
        let shares = |m: &RunMetrics| m.servers.iter().map(|s| s.requests).collect::<Vec<_>>();
        assert_eq!(shares(&plain), shares(&policy), "{kind}");
        assert_eq!(plain.latency_sum, policy.latency_sum, "{kind}");
        assert_eq!(plain.probes, policy.probes, "{kind}");
        assert!(plain.probes > 0 || kind == "c3", "{kind} probes");
    }
}
