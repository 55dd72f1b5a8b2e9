//! Faults on `lbsim serve` processes (issue 13, "a control channel drives both in-process
//! backends and `lbsim serve` processes"): two `lbsim serve` children started with
//! `--fault-control 0`, replayed with `--backends` and their control channels; the
//! scenario's crash and slow-down reach them at their scaled times and the verdict passes
//! phase by phase. Without the channel, a scenario with faults is refused naming the fix;
//! the channel listens on loopback only and checks every command.
//!
//! Scenario: 2 servers of 2 workers, 10 ms lognormal work at utilisation 0.5, round
//! robin; `node-1` crashes from 1.5 s to 2.5 s (detected after 0.2 s) and `node-0` is 1.5×
//! slower over the same window; 0.5 s of warm-up, 4 measured seconds, time scale 2.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use lbsim::live::verdict::Outcome;
use lbsim::live::{LiveError, LiveOptions, LiveRun, replay};
use lbsim::scenario::Scenario;

const SCENARIO: &str = r#"
name = "serve-faults"
seed = 7
replications = 10
duration = 4.0
warmup = 0.5

[arrivals]
process = "poisson"
rate = 200.0

[[servers]]
name = "node"
count = 2
workers = 2
service = { dist = "lognormal", mean = 0.010, cv = 1.0 }

[[faults]]
server = "node-1"
kind = "crash"
at = 1.5
duration = 1.0
detection = 0.2

[[faults]]
server = "node-0"
kind = "slow"
at = 1.5
duration = 1.0
factor = 1.5

[[strategies]]
kind = "round_robin"
"#;

/// A spawned `lbsim serve` of one server, killed when dropped.
struct Serve {
    child: Child,
    addr: SocketAddr,
    control: Option<SocketAddr>,
}

impl Serve {
    fn start(id: &str, control: bool) -> Serve {
        let mut args = vec!["serve", "--workers", "2", "--port", "0", "--id", id];
        if control {
            args.extend(["--fault-control", "0"]);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_lbsim"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start lbsim serve");
        let stdout = child.stdout.take().expect("stdout");
        let lines = if control { 2 } else { 1 };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            for _ in 0..lines {
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let _ = tx.send(line);
            }
        });
        let next = || {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("lbsim serve printed its addresses");
            let mut w = line.split_whitespace();
            let (name, addr) = (w.next().unwrap_or_default().to_string(), w.next());
            let addr: SocketAddr = addr
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no address in {line:?}"));
            (name, addr)
        };
        let (name, addr) = next();
        assert_eq!(name, id);
        let control = control.then(|| {
            let (what, addr) = next();
            assert_eq!(what, "fault-control");
            assert!(addr.ip().is_loopback(), "{addr}");
            addr
        });
        Serve {
            child,
            addr,
            control,
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn options(backends: &[&Serve]) -> LiveOptions {
    LiveOptions {
        backends: Some(backends.iter().map(|s| s.addr).collect()),
        fault_control: backends.iter().filter_map(|s| s.control).collect(),
        time_scale: 2.0,
        io_timeout: Duration::from_secs(5),
        ..LiveOptions::default()
    }
}

fn live(s: &Scenario, opts: LiveOptions) -> LiveRun {
    let (tx, rx) = mpsc::channel();
    let s = s.clone();
    thread::spawn(move || {
        let _ = tx.send(replay(&s, &opts));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the replay did not finish within 60 s")
        .expect("replay")
}

#[test]
fn faults_reach_lbsim_serve_processes_through_their_control_channel() {
    let s = Scenario::from_source(Path::new("serve-faults.toml"), SCENARIO).expect("scenario");
    let (a, b) = (Serve::start("node-0", true), Serve::start("node-1", true));
    let v = common::judged_retrying(
        || live(&s, options(&[&a, &b])),
        |run| {
            let r = &run.strategies[0];
            for e in &r.faults {
                println!("{:.3} s {} (late {:.0} µs)", e.at, e.what, e.late * 1e6);
            }
            let want = [
                ("crash node-1", 1.5),
                ("slow node-0", 1.5),
                ("down node-1", 1.7),
                ("recover node-1", 2.5),
                ("end node-0", 2.5),
                ("up node-1", 2.7),
            ];
            let what: Vec<&str> = r.faults.iter().map(|e| e.what.as_str()).collect();
            assert_eq!(what, want.map(|w| w.0), "{:?}", r.faults);
            for (e, (_, at)) in r.faults.iter().zip(want) {
                assert!((e.at - at).abs() < 1e-6, "{e:?}");
            }
            // The crash failed calls at node-1 only, as in the simulator.
            assert!(r.errors > 0, "no failure");
            assert_eq!(
                r.errors_per_backend[1], r.errors,
                "{:?}",
                r.errors_per_backend
            );
        },
        |run| common::verdict_of(&s, run, 10),
    );
    let during = v
        .row("round_robin", "phase_error_fraction:during[1.5-2.5s]")
        .expect("row");
    assert!(
        during.sim_replayed > 0.01 && during.live > 0.01,
        "{during:?}"
    );
    let failed: Vec<String> = v.failures().map(|r| r.metric()).collect();
    assert!(failed.is_empty(), "failed: {failed:?}");
    if let Outcome::NoVerdict { reason } = v.outcome() {
        println!("the driver lagged in 3 attempts; judged rows all passed: {reason}");
    }
}

#[test]
fn faults_on_backends_without_a_control_channel_are_refused() {
    let s = Scenario::from_source(Path::new("serve-faults.toml"), SCENARIO).expect("scenario");
    let (a, b) = (Serve::start("node-0", false), Serve::start("node-1", false));
    match replay(&s, &options(&[&a, &b])) {
        Err(LiveError::Unsupported(why)) => {
            assert!(why.contains("--fault-control"), "{why}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    // A channel that serves another server's id: the faulted one is named.
    let c = Serve::start("other", true);
    let opts = LiveOptions {
        fault_control: vec![c.control.expect("control")],
        ..options(&[&a, &b])
    };
    match replay(&s, &opts) {
        Err(e @ LiveError::Control(_)) => {
            let text = e.to_string();
            assert!(text.contains("node-0") || text.contains("node-1"), "{text}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn the_control_channel_checks_every_command() {
    let serve = Serve::start("node-0", true);
    let stream = TcpStream::connect(serve.control.expect("control")).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut out = stream.try_clone().expect("clone");
    let mut input = BufReader::new(stream);
    let mut ask = |line: &str| {
        writeln!(out, "{line}").expect("write");
        let mut answer = String::new();
        input.read_line(&mut answer).expect("answer");
        answer.trim_end().to_string()
    };
    assert_eq!(ask("ids"), "node-0");
    assert!(ask("node-9 crash").starts_with("error: no server `node-9`"));
    assert!(ask("node-0 slow -1").starts_with("error: the factor must be within"));
    assert!(ask("node-0 slow NaN").starts_with("error:"));
    assert!(ask("node-0 pause 1e9").starts_with("error: the length must be within"));
    assert!(ask("node-0 error 2 0.1 failed").starts_with("error: the fraction"));
    assert!(ask("node-0 reboot").starts_with("error: unknown command"));
    assert_eq!(ask("node-0 slow 2"), "ok");
    assert_eq!(ask("node-0 slow 1"), "ok");
    // A line longer than the limit closes the channel.
    let long = format!("node-0 {}", "x".repeat(400));
    assert!(ask(&long).starts_with("error: a command is one line"));
}
