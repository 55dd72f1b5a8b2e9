//! Time to recover after a fault (issue 11): when it applies, what it is on a case checkable
//! by hand, and the metastable failure it measures (a retry storm without a budget never
//! recovers, with one it does), each judged by the run's own intervals.

mod common;

use common::{reported, run_default, scenario};
use lbsim::metrics::{Applies, Metric, recovery_spec};
use lbsim::scenario::Scenario;
use lbsim::time::Nanos;

/// 16 servers of 64 workers at 5% load with deterministic 10 ms services: no request ever
/// waits, so every response time is 10 ms exactly, and one server crashes from 20 s to
/// 30 s with instant detection. Requests sent to it while it is down fail; after it comes
/// back nothing is left of the fault.
fn crash_without_queueing(fault: &str) -> Scenario {
    scenario(&format!(
        r#"
name = "crash-no-queueing"
seed = 5
duration = 45
warmup = 5
replications = 5
[arrivals]
process = "poisson"
rate = 5120
[[servers]]
name = "s"
count = 16
workers = 64
service = {{ dist = "deterministic", value = 0.01 }}
{fault}
[[strategies]]
kind = "round_robin"
[[strategies]]
kind = "least_connections"
"#
    ))
}

const CRASH: &str = "[[faults]]\nserver = \"s-3\"\nkind = \"crash\"\nat = 20\nduration = 10\n";

#[test]
fn a_crash_without_queueing_recovers_in_the_first_window() {
    let s = crash_without_queueing(CRASH);
    let spec = recovery_spec(&s).expect("defined");
    // Windows of 50 s / 200 = 0.25 s; the fault ends on the grid (30 s), so the first
    // window after it is [30, 30.25).
    assert_eq!(spec.every, Nanos(250_000_000));
    assert_eq!(spec.first_window(), Nanos::from_secs_f64(30.0));
    let r = run_default(&s);
    for k in 0..2 {
        let ttr = reported(&r, k, Metric::TimeToRecover);
        println!("{}: time to recover {ttr:?}", s.strategies[k].label());
        // Every replication: exactly one window.
        for v in [ttr.low, ttr.mean, ttr.high] {
            assert!((v - 0.25).abs() < 1e-9, "{ttr:?}");
        }
        let ok = reported(&r, k, Metric::RecoveredFraction);
        assert_eq!(ok.mean, 1.0);
    }
}

#[test]
fn time_to_recover_applies_only_after_faults_that_end_inside_the_window() {
    let applies = |fault: &str| Applies::of(&crash_without_queueing(fault)).recovery;
    assert!(applies(CRASH));
    // No fault; a fault without an end; a fault that starts before the measured window; a
    // fault that ends with the run.
    assert!(!applies(""));
    assert!(!applies(
        "[[faults]]\nserver = \"s-3\"\nkind = \"crash\"\nat = 20\n"
    ));
    assert!(!applies(
        "[[faults]]\nserver = \"s-3\"\nkind = \"crash\"\nat = 2\nduration = 10\n"
    ));
    assert!(!applies(
        "[[faults]]\nserver = \"s-3\"\nkind = \"crash\"\nat = 20\nduration = 30\n"
    ));
    // Reported only where it applies.
    let listed = |fault: &str| {
        Metric::listed_in(Applies::of(&crash_without_queueing(fault)))
            .any(|m| m == Metric::TimeToRecover)
    };
    assert!(listed(CRASH) && !listed(""));
}

#[test]
fn retry_storm_never_recovers_without_a_budget_and_recovers_with_one() {
    let mut s = Scenario::load(std::path::Path::new("scenarios/retry-storm.toml")).unwrap();
    s.replications = 4;
    let r = run_default(&s);
    let spec = recovery_spec(&s).expect("defined");
    let censored = (Nanos::from_secs_f64(s.end()) - spec.fault_end).as_secs_f64();
    let est = |k: usize, m: Metric| {
        let e = reported(&r, k, m);
        println!("{} {m}: {e:?}", s.strategies[k].label());
        e
    };
    // Unbudgeted retries: no replication recovers before the run ends, 40 s later.
    let storm = est(1, Metric::TimeToRecover);
    assert_eq!(est(1, Metric::RecoveredFraction).mean, 0.0);
    assert!((storm.mean - censored).abs() < 1e-9, "{storm:?}");
    // Without retries, with a Finagle budget and with gRPC throttling every replication
    // recovers, and well before the run ends (judged by the interval).
    for k in [0, 2, 3] {
        assert_eq!(est(k, Metric::RecoveredFraction).mean, 1.0);
        let e = est(k, Metric::TimeToRecover);
        assert!(e.high < 0.5 * censored, "{e:?}");
    }
    // The budget recovers more slowly than not retrying at all (it still retries 20%).
    assert!(est(2, Metric::TimeToRecover).low > est(0, Metric::TimeToRecover).high);
}
