//! Faults live at connection level (issue 13, "live parity"): a `[connections]` scenario
//! replayed by the driver's own balancer with a crash and a slow-down injected into real
//! backends at their time-scaled times, judged phase by phase (before, during, after the
//! fault window); the same faults applied 2 s late fail the verdict. Through a proxy
//! (`--via`), faults the proxy's own health checks or server list would have to follow
//! are refused with the knob that differs.
//!
//! The scenario is `scenarios/l4-persistent-connections.toml` made small: 2 fast servers
//! (speed 1.5) and 4 slow ones of 4 workers, 20 ms lognormal work (cv 1.5), 12 clients × 2
//! persistent connections living 3 s on average, Poisson arrivals at 480/s (a sixth of
//! them per server under round robin: utilisation 0.27 fast, 0.4 slow), 1 s of warm-up
//! and 5 measured seconds. From 2.5 s to 4 s `slow-1` is crashed (detected after 0.25 s)
//! and `fast-0` serves 2 times slower (utilisation 0.64 with the crashed server's share).
//! Time scale 2: about 12 s of wall-clock time per replay.
//!
//! What the simulator does at connection level, and live must do the same: at the crash
//! every connection to `slow-1` breaks (its calls fail, the balancer is told the
//! connection ended `Failed`) and each slot reconnects on its next request, with a new
//! pick; until the health checks mark `slow-1` down a pick may land on it again, and that
//! request fails. Round robin's picks do not depend on timing, so the live connections
//! reach the same servers as in the replayed simulated replication, and the failures are
//! the same requests: the error fractions are compared whatever the driver's lag.
//!
//! The planted mismatch: every fault 2 s late (`LiveOptions::fault_delay`): `slow-1`
//! crashes at 4.5 s, in the "after" phase, where the model fails nothing
//! (`phase_error_fraction:after[4-6s]`, simulated 0, judged whatever the lag).

mod common;

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use lbsim::live::verdict::Verdict;
use lbsim::live::{LiveOptions, LiveRun, ProxyError, ProxyKind};
use lbsim::scenario::Scenario;

/// One replay at a time: two at once on a small machine make the driver lag.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const SCENARIO: &str = r#"
name = "l4-faults-live"
seed = 7
replications = 10
duration = 5.0
warmup = 1.0

[arrivals]
process = "poisson"
rate = 480.0

[connections]
clients = 12
pool_size = 2
lifetime = 1.0

[[servers]]
name = "fast"
count = 2
workers = 4
speed = 1.5
service = { dist = "lognormal", mean = 0.020, cv = 1.5 }

[[servers]]
name = "slow"
count = 4
workers = 4
service = { dist = "lognormal", mean = 0.020, cv = 1.5 }

[[faults]]
server = "slow-1"
kind = "crash"
at = 2.5
duration = 1.5
detection = 1.0

[[faults]]
server = "fast-0"
kind = "slow"
at = 2.5
duration = 1.5
factor = 2.0

[[strategies]]
kind = "round_robin"
"#;

const PHASES: [&str; 3] = ["before[1-2.5s]", "during[2.5-4s]", "after[4-6s]"];

fn scenario() -> Scenario {
    Scenario::from_source(Path::new("l4-faults-live.toml"), SCENARIO)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// [`SCENARIO`] with `slow-1`'s crash replaced by `fault` (the keys after `server`),
/// named `<name>.toml` in errors.
fn with_fault(name: &str, fault: &str) -> Scenario {
    let src = SCENARIO.replace(
        "kind = \"crash\"\nat = 2.5\nduration = 1.5\ndetection = 1.0",
        fault,
    );
    Scenario::from_source(Path::new(&format!("{name}.toml")), &src)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Replays with every fault `delay` seconds late, within a minute.
fn live(s: &Scenario, delay: f64) -> LiveRun {
    common::replay_scaled(s, 2.0, delay, Duration::from_secs(60)).expect("replay")
}

/// The logged fault events of `server`, in order.
fn events_of<'a>(run: &'a LiveRun, server: &str) -> Vec<&'a str> {
    run.strategies[0]
        .faults
        .iter()
        .map(|e| e.what.as_str())
        .filter(|w| w.ends_with(server))
        .collect()
}

fn judge(s: &Scenario, run: &LiveRun) -> Verdict {
    let v = common::verdict_of(s, run, 10);
    let r = &run.strategies[0];
    common::print_faults(run);
    println!(
        "connections opened {}, errors per backend {:?}",
        r.connections, r.errors_per_backend
    );
    v
}

/// Replays `s` with `replay` and judges the run, again (at most 3 times in all) while the
/// verdict is refused for schedule lag; `check` asserts on every run before it is judged.
fn judged_retrying(
    s: &Scenario,
    replay: impl FnMut() -> LiveRun,
    check: impl Fn(&LiveRun),
) -> Verdict {
    common::judged_retrying(replay, check, |run| judge(s, run))
}

#[test]
fn a_crash_and_a_slow_down_replay_at_connection_level_and_agree_phase_by_phase() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = scenario();
    let v = judged_retrying(
        &s,
        || live(&s, 0.0),
        |run| {
            let r = &run.strategies[0];
            let what: Vec<&str> = r.faults.iter().map(|e| e.what.as_str()).collect();
            assert_eq!(
                what,
                [
                    "crash slow-1",
                    "slow fast-0",
                    "down slow-1",
                    "recover slow-1",
                    "end fast-0",
                    "up slow-1"
                ],
                "{:?}",
                r.faults
            );
            let at: Vec<f64> = r.faults.iter().map(|e| e.at).collect();
            assert_eq!(at, [2.5, 2.5, 3.5, 4.0, 4.0, 5.0]);
            // Failures on the crashed backend only: its connections broke and the picks
            // that landed on it before detection failed; the slots reconnected elsewhere.
            assert!(r.errors > 0 && r.metrics.failed > 0, "no failure counted");
            assert_eq!(
                r.errors_per_backend[3], r.errors,
                "{:?}",
                r.errors_per_backend
            );
            assert!(
                r.connections > 24,
                "the broken connections reconnected: {} opened",
                r.connections
            );
        },
    );
    for p in PHASES {
        for f in ["phase_latency_mean", "phase_error_fraction"] {
            let metric = format!("{f}:{p}");
            assert!(v.row("round_robin", &metric).is_some(), "no row {metric}");
        }
    }
    common::assert_crash_phases(&v, 0.003);
    common::assert_passed_or_lagged(&v);
}

#[test]
fn a_leave_and_a_join_replay_at_connection_level() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // `slow-1` leaves at 2.5 s (its connections close cleanly, its calls in flight are
    // answered while it drains) and joins again at 4 s; `fast-0` slows down meanwhile.
    let s = with_fault(
        "l4-leave-live",
        "kind = \"leave\"\nat = 2.5\nduration = 1.5",
    );
    let v = judged_retrying(
        &s,
        || live(&s, 0.0),
        |run| {
            let r = &run.strategies[0];
            // (The drain may end at once, before the slow-down of the same instant is logged.)
            assert_eq!(
                events_of(run, "slow-1"),
                ["leave slow-1", "drained slow-1", "join slow-1"],
                "{:?}",
                r.faults
            );
            let at: Vec<f64> = r.faults.iter().map(|e| e.at).collect();
            assert!((at[0] - 2.5).abs() < 1e-9 && (at[at.len() - 1] - 4.0).abs() < 1e-9);
            // A clean leave: nothing fails.
            assert_eq!(r.errors, 0, "{:?}", r.first_error);
        },
    );
    // Out of the rotation for 1.5 s of the 5 measured: about 0.7 of a sixth of the calls
    // (shares are fractions).
    let share = v.row("round_robin", "share:slow-1").expect("row");
    assert!(
        share.sim_replayed < 0.14 && (share.live - share.sim_replayed).abs() < 0.005,
        "{share:?}"
    );
    common::assert_no_failure(&v);
}

#[test]
fn a_server_joining_later_takes_no_connection_before_its_join() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // `slow-1` joins at 2.5 s: absent (down in the balancer's view, its backend stopped)
    // before the connections open at time 0, as simulated, so none reaches it and nothing
    // fails; after its join, reconnecting slots pick it again.
    let s = with_fault("l4-join-live", "kind = \"join\"\nat = 2.5");
    let v = judged_retrying(
        &s,
        || live(&s, 0.0),
        |run| {
            let r = &run.strategies[0];
            let what = events_of(run, "slow-1");
            assert_eq!(what, ["absent slow-1", "join slow-1"], "{:?}", r.faults);
            assert_eq!(r.errors, 0, "{:?}", r.first_error);
        },
    );
    let share = v.row("round_robin", "share:slow-1").expect("row");
    assert!(
        share.sim_replayed > 0.01 && (share.live - share.sim_replayed).abs() < 0.005,
        "{share:?}"
    );
    common::assert_no_failure(&v);
}

#[test]
fn an_error_fault_keeps_its_connections_at_connection_level() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Every call to `slow-1` answered with an error from 2.5 s to 4 s (every one: the
    // simulator draws which calls err, the live backend takes an equidistributed
    // sequence, so only a fraction of 1 is the same calls on both sides): an application
    // error leaves the connection usable, so no slot re-picks (as simulated) and the
    // connections reach the same servers as in the replayed replication.
    let s = with_fault(
        "l4-error-live",
        "kind = \"error\"\nat = 2.5\nduration = 1.5\nfraction = 1.0",
    );
    let v = judged_retrying(
        &s,
        || live(&s, 0.0),
        |run| {
            let r = &run.strategies[0];
            assert!(r.errors > 20, "errors answered: {}", r.errors);
            assert_eq!(
                r.errors_per_backend[3], r.errors,
                "{:?}",
                r.errors_per_backend
            );
        },
    );
    for i in ["fast-0", "fast-1", "slow-0", "slow-1", "slow-2", "slow-3"] {
        let share = v.row("round_robin", &format!("share:{i}")).expect("row");
        assert!(
            (share.live - share.sim_replayed).abs() < 0.005,
            "the same connections: {share:?}"
        );
    }
    common::assert_no_failure(&v);
}

#[test]
fn faults_applied_late_at_connection_level_fail() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = scenario();
    let run = live(&s, 2.0);
    let v = judge(&s, &run);
    common::assert_late_crash_fails(&run, &v, 0.003);
}

#[test]
fn through_a_proxy_health_and_membership_faults_are_refused_with_the_knob_that_differs() {
    let s = scenario();
    for kind in ProxyKind::ALL {
        let Err(e) = lbsim::live::proxy::check_faults(kind, &s) else {
            panic!("{} accepted a crash", kind.name())
        };
        assert!(matches!(e, ProxyError::Faults { .. }), "{e:?}");
        let msg = e.to_string();
        println!("{msg}");
        assert!(
            msg.contains("`crash` fault (on slow-1)") && msg.contains("fix:"),
            "{msg}"
        );
        let knob = match kind {
            ProxyKind::Nginx => "max_fails",
            ProxyKind::Haproxy => "fall",
        };
        assert!(msg.contains(knob), "{msg}");
    }
    // The whole replay refuses before starting anything.
    let dir = std::env::temp_dir().join(format!("lbsim-l4-faults-{}", std::process::id()));
    let opts = LiveOptions {
        time_scale: 2.0,
        ..LiveOptions::default()
    };
    match lbsim::live::replay_via(&s, &opts, Some((ProxyKind::Haproxy, &dir))) {
        Err(e) => assert!(e.to_string().contains("--via haproxy"), "{e}"),
        Ok(_) => panic!("replayed a crash through HAProxy"),
    }
    // `lbsim live --via` refuses it as bad input: exit status 2.
    let path = dir.with_extension("toml");
    std::fs::write(&path, SCENARIO).expect("write the scenario");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .args(["live", path.to_str().unwrap(), "--via", "nginx", "--out"])
        .arg(&dir)
        .output()
        .expect("run lbsim live");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("does not replay") && stderr.contains("max_fails"),
        "{stderr}"
    );
    // Faults that only change how a backend serves pass through an L4 proxy unchanged.
    for (kind, extra) in [
        ("slow", "factor = 2.0"),
        (
            "pause",
            "interval = { dist = \"exponential\", mean = 0.5 }\npause = { dist = \"exponential\", mean = 0.01 }",
        ),
        ("delay", "delay = 0.002"),
        ("error", "fraction = 0.1"),
    ] {
        let s = with_fault(
            &format!("l4-{kind}-live"),
            &format!("kind = \"{kind}\"\nat = 2.5\nduration = 1.5\n{extra}"),
        );
        for proxy in ProxyKind::ALL {
            assert!(
                lbsim::live::proxy::check_faults(proxy, &s).is_ok(),
                "{kind} through {}",
                proxy.name()
            );
        }
    }
    for (kind, extra) in [("leave", ""), ("join", ""), ("unreachable", "")] {
        let s = with_fault(
            &format!("l4-{kind}-live"),
            &format!("kind = \"{kind}\"\nat = 2.5\nduration = 1.5\n{extra}"),
        );
        for proxy in ProxyKind::ALL {
            let e = lbsim::live::proxy::check_faults(proxy, &s).expect_err(kind);
            assert!(e.to_string().contains(&format!("`{kind}` fault")), "{e}");
        }
    }
}

/// Installs the proxies through the repository's script (as `tests/live_proxies.rs`).
fn install_proxies() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-proxies.sh");
    let out = std::process::Command::new("sh")
        .arg(&script)
        .output()
        .expect("run scripts/install-proxies.sh");
    assert!(
        out.status.success(),
        "scripts/install-proxies.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_slow_down_replays_through_haproxy_and_agrees_phase_by_phase() {
    install_proxies();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The slow-down alone: HAProxy forwards it unchanged.
    let src = SCENARIO.replace(
        "[[faults]]\nserver = \"slow-1\"\nkind = \"crash\"\nat = 2.5\nduration = 1.5\ndetection = 1.0\n",
        "",
    );
    let s = Scenario::from_source(Path::new("l4-slow-live.toml"), &src)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.faults.len(), 1, "only the slow-down is left");
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = LiveOptions {
        time_scale: 2.0,
        io_timeout: Duration::from_secs(5),
        ..LiveOptions::default()
    };
    let v = judged_retrying(
        &s,
        || {
            let (tx, rx) = std::sync::mpsc::channel();
            let (s2, o2, dir) = (s.clone(), opts.clone(), tmp.path().join("proxy"));
            std::thread::spawn(move || {
                let _ = tx.send(lbsim::live::replay_via(
                    &s2,
                    &o2,
                    Some((ProxyKind::Haproxy, dir.as_path())),
                ));
            });
            rx.recv_timeout(Duration::from_secs(90))
                .expect("the replay finished within 90 s")
                .unwrap_or_else(|e| panic!("{e}"))
        },
        |run| {
            let what: Vec<&str> = run.strategies[0]
                .faults
                .iter()
                .map(|e| e.what.as_str())
                .collect();
            assert_eq!(what, ["slow fast-0", "end fast-0"]);
            assert_eq!(run.strategies[0].errors, 0);
        },
    );
    for p in PHASES {
        let metric = format!("phase_latency_mean:{p}");
        assert!(v.row("round_robin", &metric).is_some(), "no row {metric}");
    }
    common::assert_no_failure(&v);
}
