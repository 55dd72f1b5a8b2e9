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
//!
//! The same crash under Envoy round robin with slow start alone (no client, live as in the
//! simulator): the returning backend ramps live as simulated (planted: live ignoring the
//! ramp sends node-1 437 requests where 346 are simulated and 345 came live; the test
//! allows 18).

mod common;

use std::time::Duration;

use lbsim::live::LiveRun;
use lbsim::live::verdict::Verdict;
use lbsim::scenario::Scenario;

/// Node-1 crashes at 2.5 s for 1.5 s, detected after 0.25 s.
const CRASH: &str = r#"
[[faults]]
server = "node-1"
kind = "crash"
at = 2.5
duration = 1.5
detection = 0.25
"#;

/// The crash under round robin.
fn scenario() -> Scenario {
    common::LiveCluster::new("crash-live", 7, 560.0).scenario(&format!(
        "{CRASH}\n[[strategies]]\nkind = \"round_robin\"\n"
    ))
}

/// The crash, the mark-down, the recovery and the mark-up, at their times.
fn assert_crash_logged(run: &LiveRun) {
    let r = &run.strategies[0];
    let what: Vec<&str> = r.faults.iter().map(|e| e.what.as_str()).collect();
    assert_eq!(
        what,
        ["crash node-1", "down node-1", "recover node-1", "up node-1"],
        "{:?}",
        r.faults
    );
    let at: Vec<f64> = r.faults.iter().map(|e| e.at).collect();
    assert_eq!(at, [2.5, 2.75, 4.0, 4.25]);
}

/// Replays with every fault `delay` seconds late, within a minute.
fn live(s: &Scenario, delay: f64) -> LiveRun {
    common::replay_scaled(s, 2.0, delay, Duration::from_secs(60)).expect("replay")
}

fn judge(s: &Scenario, run: &LiveRun) -> Verdict {
    let v = common::verdict_of(s, run, 10);
    common::print_faults(run);
    v
}

#[test]
fn a_crash_replays_live_and_agrees_phase_by_phase() {
    let s = scenario();
    let v = common::judged_retrying(
        || live(&s, 0.0),
        |run| {
            assert_crash_logged(run);
            let r = &run.strategies[0];
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
    common::assert_crash_phases(&v, 0.01);
    // Every judged row passes; rows not judged (driver lag) are reported, not hidden.
    common::assert_passed_or_lagged(&v);
}

#[test]
fn a_backend_crashing_later_than_declared_fails() {
    let s = scenario();
    let run = live(&s, 2.0);
    let v = judge(&s, &run);
    common::assert_late_crash_fails(&run, &v, 0.01);
}

/// Envoy round robin with slow start alone (a policy that runs without a client, live as
/// simulated): after the crash, node-1 ramps from 10 % of its weight over 1.5 s once
/// health checks see it back at 4.25 s.
const SLOW_START: &str = r#"
[[strategies]]
kind = "edf_wrr"
[strategies.policy.slow_start]
kind = "envoy"
slow_start_window = 1.5
"#;

#[test]
fn slow_start_alone_ramps_a_returning_backend_live_as_simulated() {
    // EDF round robin's picks depend on time only through the ramp's weight, read at the
    // replay's clock: live sends node-1 what the replayed replication sends it, within a
    // few picks. Without the ramp (measured: the simulation without slow start) node-1
    // takes about 90 more of the window's requests, so a live run that ignored slow
    // start would be far outside the allowance.
    let s = common::LiveCluster::new("slow-start-live", 7, 560.0)
        .scenario(&format!("{CRASH}{SLOW_START}"));
    let simulated = |s: &Scenario| {
        lbsim::sim::Run::entry(s, &s.strategies[0], 0)
            .seed(s.seed)
            .metrics()
            .servers[1]
            .requests as f64
    };
    let ramped = simulated(&s);
    let mut plain = s.clone();
    plain.strategies[0].policy = None;
    let full = simulated(&plain);
    assert!(full - ramped > 60.0, "ramped {ramped}, full {full}");
    common::judged_retrying(
        || live(&s, 0.0),
        assert_crash_logged,
        |run| {
            let live = run.strategies[0].metrics.servers[1].requests as f64;
            println!("node-1 requests: live {live}, simulated {ramped}, without slow start {full}");
            assert!(
                (live - ramped).abs() <= 0.2 * (full - ramped),
                "node-1 took {live} requests live, {ramped} simulated ({full} without slow start)"
            );
            judge(&s, run)
        },
    );
}
