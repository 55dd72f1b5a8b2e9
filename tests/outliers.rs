//! Outlier ejection beyond consecutive errors (issue 11): Envoy's success-rate and
//! failure-percentage detectors and Finagle's failure accrual take a fail-fast node (a
//! black hole) out of least connections' rotation, judged by the run's own confidence
//! intervals, and never take out more servers than their cap allows.

mod common;

use common::{all_fail_toml, run_default, scenario};
use lbsim::metrics::{Metric, RunMetrics};
use lbsim::scenario::Scenario;
use lbsim::sim::Run;
use lbsim::stats::estimate;

fn sim(s: &Scenario, k: usize, rep: u64) -> RunMetrics {
    Run::entry(s, &s.strategies[k], rep).metrics()
}

fn assert_ends_once(m: &RunMetrics) {
    let ended = m.latency.len() + m.rejected + m.unroutable + m.failed + m.client.timed_out;
    assert_eq!(m.arrived, ended, "arrived vs ended: {:?}", m.client);
}

/// `scenarios/black-hole.toml`'s shape, smaller: ten servers at 60 % load, `s-3` answers
/// every request with an error from 10 s on while passing health checks; least connections
/// plain, then under each `policies` entry.
fn black_hole(policies: &[&str]) -> Scenario {
    let mut src = String::from(
        r#"
name = "black-hole-small"
seed = 21
replications = 4
warmup = 5
duration = 25
[arrivals]
process = "poisson"
rate = 1200
[[servers]]
name = "s"
count = 10
workers = 2
service = { dist = "lognormal", mean = 0.01, cv = 1.0 }
[[faults]]
server = "s-3"
kind = "error"
at = 10
error_latency = 0.001
[[strategies]]
kind = "least_connections"
"#,
    );
    for (k, p) in policies.iter().enumerate() {
        src += &format!("[[strategies]]\nlabel = \"p{k}\"\nkind = \"least_connections\"\n{p}");
    }
    scenario(&src)
}

/// With Envoy's request volume (100 a second) the nine healthy servers, which least
/// connections starves, would not count: 20.
const SUCCESS_RATE: &str = "[strategies.policy.outlier]\nkind = \"envoy\"\nconsecutive_5xx = 1000000\ninterval = 1\nenforcing_success_rate = 100\nsuccess_rate_request_volume = 20\n";
const FAILURE_PERCENTAGE: &str = "[strategies.policy.outlier]\nkind = \"envoy\"\nconsecutive_5xx = 1000000\ninterval = 1\nenforcing_failure_percentage = 100\n";
const FINAGLE: &str = "[strategies.policy.outlier]\nkind = \"finagle\"\n";

#[test]
fn each_detector_takes_the_black_hole_out() {
    let s = black_hole(&[SUCCESS_RATE, FAILURE_PERCENTAGE, FINAGLE]);
    let r = run_default(&s);
    let err = |k: usize| estimate(&common::values(&r, k, Metric::ErrorFraction));
    let plain = err(0);
    println!("plain {plain:?}");
    // Least connections sends the idle-looking black hole far more than its tenth.
    assert!(plain.low > 0.15, "{plain:?}");
    for k in 1..=3 {
        let e = err(k);
        println!("{}: {e:?}", s.strategies[k].label());
        // Envoy's detectors need one 1 s interval of answers (then the host returns for
        // an interval after each ejection of 30 s × times); Finagle needs 5 errors, then
        // fails one probe per backoff. Either way the errors are a few percent at most.
        assert!(e.high < 0.06, "{}: {e:?}", s.strategies[k].label());
        for rep in 0..2 {
            let m = sim(&s, k, rep);
            assert_ends_once(&m);
            assert!(m.client.ejections >= 1, "{:?}", m.client);
            // Envoy's default cap: 10 % of 10 servers, one at a time. Finagle has no
            // cap but here only one server fails.
            assert_eq!(m.client.max_ejected, 1, "{:?}", m.client);
        }
    }
}

#[test]
fn success_rate_and_failure_percentage_never_exceed_max_ejection_percent() {
    // Every server fails 90 % of requests: every one is an outlier by failure percentage,
    // only the cap stops ejections. 30 % of 10 servers is 3. Finagle, uncapped, keeps the
    // last one in (it fails open).
    let src = |policy: &str| all_fail_toml(30.0, Some(0.9), policy);
    for (policy, cap) in [
        (
            "[strategies.policy.outlier]\nkind = \"envoy\"\ninterval = 1\nconsecutive_5xx = 1000000\nmax_ejection_percent = 30\nenforcing_failure_percentage = 100\nbase_ejection_time = 2\n",
            3,
        ),
        (
            "[strategies.policy.outlier]\nkind = \"envoy\"\ninterval = 1\nmax_ejection_percent = 30\nenforcing_failure_percentage = 100\nenforcing_success_rate = 100\nbase_ejection_time = 2\n",
            3,
        ),
        (
            "[strategies.policy.outlier]\nkind = \"finagle\"\nconsecutive_failures = 2\nmark_dead_for = 0.5\n",
            9,
        ),
    ] {
        let s = scenario(&src(policy));
        for rep in 0..2 {
            let m = sim(&s, 0, rep);
            assert_ends_once(&m);
            assert!(m.client.ejections > 5, "{policy}: {:?}", m.client);
            assert!(m.client.max_ejected <= cap, "{policy}: {:?}", m.client);
            assert!(
                m.client.max_ejected >= cap.min(3),
                "{policy}: {:?}",
                m.client
            );
        }
    }
}
