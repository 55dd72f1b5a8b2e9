//! Faults live (issue 13, "live parity"): a crash replayed on real backends at its
//! time-scaled time, judged per phase (before, during, after the fault window), and a
//! backend that crashes later than the scenario says fails the verdict.
//!
//! The scenario is a small copy of `scenarios/crash.toml`: 4 servers of 2 workers, 10 ms
//! lognormal work at 70% load, `node-1` crashed from 2.5 s to 4 s, detected after 0.25 s,
//! 5 measured seconds, round robin, at time scale 2 (about 12 s of wall-clock time per
//! replay). Round robin's choices do not depend on timing, so when the backend crashes
//! and is marked down and up at the simulated instants, live routes every request as the
//! replayed simulated replication does, and the failures (requests in flight at the crash
//! and those sent to it before detection) are the same requests: the error fractions are
//! compared with the simulated ones whatever the driver's lag.
//!
//! The planted mismatch: every fault 2 s late (`LiveOptions::fault_delay`). `node-1` then
//! crashes at 4.5 s, after the declared window, so requests arriving in the "after" phase
//! fail where the model has none (`phase_error_fraction:after[4-6s]`, a simulated 0,
//! judged whatever the lag) and the "during" phase loses its failures.

mod common;

use std::path::Path;
use std::time::Duration;

use lbsim::live::verdict::{Outcome, Verdict};
use lbsim::live::{LiveOptions, LiveRun};
use lbsim::scenario::Scenario;

const SCENARIO: &str = r#"
name = "crash-live"
seed = 7
replications = 10
duration = 5.0
warmup = 1.0

[arrivals]
process = "poisson"
rate = 560.0

[[servers]]
name = "node"
count = 4
workers = 2
service = { dist = "lognormal", mean = 0.010, cv = 1.0 }

[[faults]]
server = "node-1"
kind = "crash"
at = 2.5
duration = 1.5
detection = 0.25

[[strategies]]
kind = "round_robin"
"#;

fn scenario() -> Scenario {
    Scenario::from_source(Path::new("crash-live.toml"), SCENARIO).unwrap_or_else(|e| panic!("{e}"))
}

/// Replays with every fault `delay` seconds late, within a minute.
fn live(s: &Scenario, delay: f64) -> LiveRun {
    let opts = LiveOptions {
        time_scale: 2.0,
        io_timeout: Duration::from_secs(5),
        fault_delay: delay,
        ..LiveOptions::default()
    };
    common::replay_within(s, &opts, Duration::from_secs(60)).expect("replay")
}

fn judge(s: &Scenario, run: &LiveRun) -> Verdict {
    let v = common::verdict_of(s, run, 10);
    for e in &run.strategies[0].faults {
        println!("{:.3} s {} (late {:.0} µs)", e.at, e.what, e.late * 1e6);
    }
    v
}

#[test]
fn a_crash_replays_live_and_agrees_phase_by_phase() {
    let s = scenario();
    let v = common::judged_retrying(
        || live(&s, 0.0),
        |run| {
            let r = &run.strategies[0];
            // The crash, the mark-down, the recovery and the mark-up, at their times.
            let what: Vec<&str> = r.faults.iter().map(|e| e.what.as_str()).collect();
            assert_eq!(
                what,
                ["crash node-1", "down node-1", "recover node-1", "up node-1"],
                "{:?}",
                r.faults
            );
            let at: Vec<f64> = r.faults.iter().map(|e| e.at).collect();
            assert_eq!(at, [2.5, 2.75, 4.0, 4.25]);
            // Failed calls are counted, on the crashed backend only.
            assert!(r.errors > 0 && r.metrics.failed > 0, "no failure counted");
            assert_eq!(
                r.errors_per_backend[1], r.errors,
                "{:?}",
                r.errors_per_backend
            );
        },
        |run| judge(&s, run),
    );
    let phases = ["before[1-2.5s]", "during[2.5-4s]", "after[4-6s]"];
    for p in phases {
        for f in [
            "phase_latency_mean",
            "phase_latency_p99",
            "phase_error_fraction",
        ] {
            let metric = format!("{f}:{p}");
            assert!(v.row("round_robin", &metric).is_some(), "no row {metric}");
        }
    }
    let during = v
        .row("round_robin", "phase_error_fraction:during[2.5-4s]")
        .expect("row");
    assert!(
        during.sim_replayed > 0.01 && during.live > 0.01,
        "the crash fails requests on both sides: {during:?}"
    );
    let after = v
        .row("round_robin", "phase_error_fraction:after[4-6s]")
        .expect("row");
    assert_eq!(after.sim_replayed, 0.0, "no failure after recovery");
    // Every judged row passes; rows not judged (driver lag) are reported, not hidden.
    let failed: Vec<String> = v.failures().map(|r| r.metric()).collect();
    assert!(failed.is_empty(), "failed: {failed:?}");
    match v.outcome() {
        Outcome::Pass => {}
        Outcome::NoVerdict { reason } => {
            println!("the driver lagged in 3 attempts; judged rows all passed: {reason}")
        }
        Outcome::Fail { failed } => panic!("{failed:?}"),
    }
}

#[test]
fn a_backend_crashing_later_than_declared_fails() {
    let s = scenario();
    let run = live(&s, 2.0);
    let at: Vec<f64> = run.strategies[0].faults.iter().map(|e| e.at).collect();
    assert_eq!(at[0], 4.5, "the crash is applied 2 s late");
    let v = judge(&s, &run);
    let after = v
        .row("round_robin", "phase_error_fraction:after[4-6s]")
        .expect("row");
    assert_eq!(after.sim_replayed, 0.0);
    assert!(
        after.live > 0.01 && !after.passed() && v.judged(after),
        "{after:?}"
    );
    match v.outcome() {
        Outcome::Fail { failed } => assert!(
            failed
                .iter()
                .any(|f| f == "round_robin phase_error_fraction:after[4-6s]"),
            "{failed:?}"
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
}
