//! Live mode against the simulator, on loopback: agreement on the shipped live-smoke
//! scenario, an independent thriftpy2 peer driven with `--backends`, a backend killed
//! mid-run, and an unreachable backend.
//!
//! Bounded in time: every replay runs on its own thread and is awaited with a deadline,
//! sockets have I/O timeouts, and the Python peers die with the test (stdin EOF).
//! Timing-sensitive tests take a lock so that they never run concurrently with each other.
//!
//! Robustness on a busy 2-core machine: the comparison is paired (live against the
//! simulation of the same replication, same requests), so sampling noise largely cancels
//! and the default tolerances (10% mean/median, 20% p99, 2 points of share) hold with a
//! wide margin (observed differences 0–4%). Time scale 2 makes OS jitter (tens of µs)
//! smaller against service times of 8 ms. If the driver itself cannot keep to the
//! schedule (another job hogs the CPUs), the verdict is *refused* by design — then the
//! latency checks are skipped with a message, after one retry, and the shares are still
//! checked; no test asserts speed.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::peer::{PythonPeer, python_peer, require_thriftpy2};
use lbsim::live::verdict::{self, CompareOptions, Figure, Verdict};
use lbsim::live::{Cluster, LiveError, LiveOptions, LiveRun, Protocol, Transport, replay};
use lbsim::scenario::Scenario;

/// Serialises the timing-sensitive tests.
fn timing_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// live-smoke with a shorter run (`duration` measured seconds after `warmup`).
fn live_smoke(duration: f64, warmup: f64, rate: Option<f64>) -> Scenario {
    let path = repo("scenarios/live-smoke.toml");
    let mut src = std::fs::read_to_string(&path).expect("read live-smoke");
    src = src
        .replace("duration = 5.0", &format!("duration = {duration:?}"))
        .replace("warmup = 1.0", &format!("warmup = {warmup:?}"));
    if let Some(r) = rate {
        src = src.replace("rate = 1100.0", &format!("rate = {r:?}"));
    }
    Scenario::from_source(&path, &src).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `replay` on its own thread; panics if it takes longer than `limit`.
fn replay_within(
    scenario: &Scenario,
    opts: &LiveOptions,
    limit: Duration,
) -> Result<LiveRun, LiveError> {
    let (tx, rx) = mpsc::channel();
    let (s, o) = (scenario.clone(), opts.clone());
    thread::spawn(move || {
        let _ = tx.send(replay(&s, &o));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("replay did not finish within {limit:?}"))
}

fn compare(scenario: &Scenario, run: &LiveRun) -> Verdict {
    verdict::compare(scenario, run, &CompareOptions::default()).expect("compare")
}

#[test]
fn live_smoke_agrees_with_the_simulation() {
    let _guard = timing_lock();
    // 3 s of scenario time at scale 2: 6 s per strategy, ~2,700 measured requests each.
    let scenario = live_smoke(2.5, 0.5, None);
    let opts = LiveOptions {
        time_scale: 2.0,
        ..LiveOptions::default()
    };
    let mut verdict = None;
    for attempt in 0..2 {
        let run = replay_within(&scenario, &opts, Duration::from_secs(90)).expect("replay");
        for s in &run.strategies {
            assert_eq!(s.errors, 0, "{}: {:?}", s.label, s.first_error);
        }
        let v = compare(&scenario, &run);
        print!("attempt {attempt}\n{}", verdict::table(&v));
        let refused = v.refusal().is_some();
        verdict = Some(v);
        if !refused {
            break;
        }
    }
    let v = verdict.expect("one attempt ran");
    let labels: Vec<&str> = v.live.strategies.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels,
        ["round_robin", "least_connections", "random", "p2c"]
    );
    let latency_checked = match v.refusal() {
        Some(why) => {
            println!("SKIPPED latency checks (the machine is too busy to measure): {why}");
            false
        }
        None => true,
    };
    for r in &v.rows {
        if r.figure == Figure::Share || latency_checked {
            assert!(
                r.passed(),
                "{} {}: sim {} live {} ({:+.4}, tolerance {:?})",
                r.strategy,
                r.metric(),
                r.sim_replayed,
                r.live,
                r.difference(),
                r.tolerance
            );
        }
    }
}

#[test]
fn backend_killed_mid_run_is_routed_around() {
    let _guard = timing_lock();
    let mut scenario = live_smoke(2.0, 0.5, None);
    scenario
        .strategies
        .retain(|e| e.label() == "least_connections");
    let cluster = Cluster::start(
        &scenario,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        None,
        Protocol::Binary,
        Transport::Framed,
    )
    .expect("start servers");
    let opts = LiveOptions {
        backends: Some(cluster.addrs()),
        io_timeout: Duration::from_secs(5),
        // No calibration: its calls would count at the servers, and a busy machine
        // measures a backend again (up to three rounds), so how many there are varies.
        calibration_calls: 0,
        ..LiveOptions::default()
    };
    let (tx, rx) = mpsc::channel();
    let (s, o) = (scenario.clone(), opts.clone());
    thread::spawn(move || {
        let _ = tx.send(replay(&s, &o));
    });
    // Kill slow-0 (backend 1) about half-way through the 2.5 s run.
    thread::sleep(Duration::from_millis(1500));
    let victim = &cluster.servers[1];
    let served_before = victim.served();
    victim.shutdown();
    let others_before: Vec<u64> = cluster.servers.iter().map(|s| s.served()).collect();
    let started = Instant::now();
    let run = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the replay hung after a backend died")
        .expect("replay");
    println!("finished {:?} after the kill", started.elapsed());
    let s = &run.strategies[0];
    println!(
        "errors {} per backend {:?}, down {:?}, first error {:?}",
        s.errors, s.errors_per_backend, s.marked_down, s.first_error
    );
    assert!(
        served_before > 0,
        "the victim served nothing before the kill"
    );
    assert!(
        s.errors > 0,
        "requests in flight on the killed backend were not counted"
    );
    assert_eq!(s.marked_down, vec![1]);
    assert_eq!(s.errors, s.errors_per_backend[1]);
    // Everything else was served, and the survivors kept taking traffic after the kill.
    // A call the victim's worker finished as it died may have lost its answer with the
    // connection: served at the server and an error at the client, so the two counts
    // may exceed the calls sent by at most one call a worker of the victim (seen once
    // in a fresh-clone CI run: 2,734 ended against 2,733 sent).
    let served: u64 = cluster.servers.iter().map(|x| x.served()).sum();
    let (sent, ended) = (s.sent, s.errors + served);
    let workers = u64::from(scenario.groups[scenario.servers()[1].group].workers);
    assert!(
        sent <= ended && ended <= sent + workers,
        "{sent} calls sent, {ended} ended (errors {} + served {served}); the victim has {workers} workers",
        s.errors
    );
    for (k, server) in cluster.servers.iter().enumerate() {
        if k != 1 {
            assert!(
                server.served() > others_before[k],
                "{} got nothing after the kill",
                server.id()
            );
        }
    }
    // The report still builds; the killed backend's share is below an even quarter.
    let v = compare(&scenario, &run);
    let live = &v.live.strategies[0].runs[0];
    assert!(
        live.servers[1].share < 0.2,
        "share of the killed backend {}",
        live.servers[1].share
    );
    let errors = v.row("least_connections", "error_fraction").unwrap();
    assert!(errors.live > 0.0 && !errors.passed(), "{errors:?}");
    print!("{}", verdict::table(&v));
}

#[test]
fn unreachable_backend_exits_2_naming_it() {
    let scenario = live_smoke(1.0, 0.5, None);
    let cluster = Cluster::start(
        &scenario,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        None,
        Protocol::Binary,
        Transport::Framed,
    )
    .expect("start servers");
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut addrs: Vec<String> = cluster.addrs().iter().map(SocketAddr::to_string).collect();
    addrs[2] = dead.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .arg("live")
        .arg(repo("scenarios/live-smoke.toml"))
        .args(["--backends", &addrs.join(",")])
        .arg("--out")
        .arg(std::env::temp_dir().join("lbsim-unreachable"))
        .output()
        .expect("run lbsim");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&dead.to_string()) && stderr.contains("slow-1"),
        "{stderr}"
    );
}

/// Starts one thriftpy2 peer per server of live-smoke (1.5 measured seconds at 400
/// req/s), each with its declared workers and speed changed by `speed_factor(index)`,
/// runs `lbsim live` against them with `args`, and returns (exit status, stdout, output
/// folder). Panics after 90 s.
fn live_against_thriftpy2(
    speed_factor: impl Fn(usize) -> f64,
    args: &[&str],
) -> (Option<i32>, String, tempfile::TempDir) {
    let scenario = live_smoke(1.5, 0.5, Some(400.0));
    let peers: Vec<PythonPeer> = scenario
        .servers()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            python_peer(&[
                "--id",
                &s.name,
                "--workers",
                &s.workers.to_string(),
                "--speed",
                &(s.speed * speed_factor(i)).to_string(),
                "--protocol",
                "compact",
                "--transport",
                "buffered",
            ])
        })
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("py-smoke.toml");
    let src = std::fs::read_to_string(repo("scenarios/live-smoke.toml"))
        .unwrap()
        .replace("duration = 5.0", "duration = 1.5")
        .replace("warmup = 1.0", "warmup = 0.5")
        .replace("rate = 1100.0", "rate = 400.0");
    std::fs::write(&file, src).unwrap();
    let backends: Vec<String> = peers.iter().map(|p| p.addr.to_string()).collect();
    let out_dir = dir.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .arg("live")
        .arg(&file)
        .args(["--backends", &backends.join(",")])
        .args(["--protocol", "compact", "--transport", "buffered"])
        .args(["--replications", "5", "--io-timeout", "5"])
        .args(args)
        .arg("--out")
        .arg(&out_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lbsim");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait lbsim") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("lbsim live against thriftpy2 peers did not finish within 90 s");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read;
    let _ = child.stdout.take().unwrap().read_to_string(&mut stdout);
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    println!("{stdout}\n{stderr}");
    (status.code(), stdout, dir)
}

/// The thriftpy2 server is a user-facing backend (README, "Python backends"): a cluster
/// of them started as the scenario declares passes at the time scale `auto` picks from
/// calibration (its per-request cost is ~0.2 ms of Python, which fails the calibration
/// bound at scale 1), or gives no verdict if the machine is too busy. It fails only by
/// saying that a Python peer's own cost under load exceeded the calibration bound (seen at
/// load 8-10 here: 10.6% at the auto scale 7, the second and last one `auto` tries); any
/// other failure fails the test.
#[test]
#[cfg_attr(
    not(python_peer),
    ignore = "python3 cannot import thriftpy2: run `sh scripts/setup-python.sh` (installs it from PyPI), then cargo test again"
)]
fn thriftpy2_backends_driven_with_backends_flag() {
    require_thriftpy2();
    let _guard = timing_lock();
    let (status, stdout, dir) = live_against_thriftpy2(
        |_| 1.0,
        &[
            "--strategy",
            "round_robin",
            "--strategy",
            "least_connections",
            "--time-scale",
            "auto",
        ],
    );
    let out_dir = dir.path().join("out");
    // 0: agrees; 3: no verdict (the lag gate kept response times from being judged);
    // 1 only with a peer's cost under load beyond the bound named in the verdict.
    let verdict = stdout
        .lines()
        .find(|l| l.starts_with("verdict: "))
        .unwrap_or_default();
    let peer_cost = verdict.contains("calibration_under_load:");
    assert!(
        matches!(status, Some(0 | 3)) || (status == Some(1) && peer_cost),
        "status {status:?}: {verdict}"
    );
    assert!(stdout.contains("(auto, from calibration)"), "{stdout}");
    // One summary line per strategy and replay ("sent N, served (measured) M, errors 0,
    // ..."; `auto` may replay once more at a larger scale), each without errors.
    let summaries = stdout.matches(", served (measured) ").count();
    assert!(summaries == 2 || summaries == 4, "{stdout}");
    assert_eq!(stdout.matches(", errors 0,").count(), summaries, "{stdout}");
    // Requests were served and the shares are sane: every peer got some, round robin exactly a quarter.
    let mut reader = csv::Reader::from_path(out_dir.join("servers.csv")).expect("servers.csv");
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (strategy, requests, share) = (col("strategy"), col("requests"), col("share"));
    let mut rows = 0;
    for rec in reader.records() {
        let rec = rec.unwrap();
        let (req, sh): (f64, f64) = (rec[requests].parse().unwrap(), rec[share].parse().unwrap());
        assert!(req > 0.0, "{rec:?}");
        if &rec[strategy] == "round_robin" {
            assert!((sh - 0.25).abs() < 0.01, "{rec:?}");
        } else {
            assert!((0.1..0.5).contains(&sh), "{rec:?}");
        }
        rows += 1;
    }
    assert_eq!(rows, 8);
    for f in ["comparison.csv", "calibration.csv", "cdf.svg"] {
        assert!(out_dir.join(f).exists(), "{f}");
    }
}

/// The verdict has power against an independent implementation too: the thriftpy2 peer
/// standing for the fast server runs 30% slower, and `lbsim live` exits 1 naming its
/// utilisation.
#[test]
#[cfg_attr(
    not(python_peer),
    ignore = "python3 cannot import thriftpy2: run `sh scripts/setup-python.sh` (installs it from PyPI), then cargo test again"
)]
fn thriftpy2_backend_30_percent_slower_fails() {
    require_thriftpy2();
    let _guard = timing_lock();
    let (status, stdout, _dir) = live_against_thriftpy2(
        |i| if i == 0 { 1.0 / 1.3 } else { 1.0 },
        &["--strategy", "round_robin", "--time-scale", "auto"],
    );
    assert_eq!(status, Some(1), "{stdout}");
    let verdict = stdout
        .lines()
        .find(|l| l.starts_with("verdict: FAIL"))
        .expect("a verdict line");
    assert!(
        verdict.contains("round_robin server_utilization:fast-0"),
        "{verdict}"
    );
}

#[test]
fn calibrated_overheads_shift_simulated_latencies() {
    // One server, deterministic 10 ms service, arrivals 1 s apart: nothing ever queues,
    // so every response time is exactly service + overhead + extra latency.
    let src = r#"
name = "shift"
duration = 20.0
warmup = 1.0
[arrivals]
process = "deterministic"
rate = 1.0
[[servers]]
name = "s"
service = { dist = "deterministic", value = 0.010 }
[[strategies]]
kind = "round_robin"
"#;
    let s = Scenario::from_source(Path::new("shift.toml"), src).unwrap();
    let spec = s.strategies[0].spec.clone();
    let base = lbsim::sim::simulate(&s, &spec, 0, 1).summarize();
    // Passed to the engine with the run: the scenario stays as written.
    let overheads = lbsim::sim::Overheads::uniform(1, 0.000_050, 0.000_100);
    let calibrated = |o| {
        lbsim::sim::Run::new(&s, &spec, 0)
            .seed(1)
            .overheads(o)
            .metrics()
    };
    let shifted = calibrated(&overheads).summarize();
    let none = calibrated(&Default::default());
    assert_eq!(none.summarize(), base, "no overheads is the plain run");
    let m = lbsim::metrics::Metric::LatencyMean;
    assert!((base.values[m] - 0.010).abs() < 1e-9, "{}", base.values[m]);
    assert!(
        (shifted.values[m] - 0.010_150).abs() < 1e-9,
        "{}",
        shifted.values[m]
    );
    // The overhead occupies the worker; the extra latency does not.
    let u = lbsim::metrics::Metric::UtilizationMean;
    assert!(
        shifted.values[u] > base.values[u] * 1.004,
        "{} vs {}",
        shifted.values[u],
        base.values[u]
    );
}

#[test]
fn every_protocol_and_transport_replays() {
    let _guard = timing_lock();
    let mut scenario = live_smoke(0.3, 0.1, Some(300.0));
    scenario.strategies.retain(|e| e.label() == "round_robin");
    for protocol in Protocol::ALL {
        for transport in Transport::ALL {
            let opts = LiveOptions {
                protocol,
                transport,
                calibration_calls: 3,
                ..LiveOptions::default()
            };
            let run = replay_within(&scenario, &opts, Duration::from_secs(30)).expect("replay");
            let s = &run.strategies[0];
            assert_eq!(s.errors, 0, "{protocol}/{transport}: {:?}", s.first_error);
            assert!(s.sent > 50, "{protocol}/{transport}: sent {}", s.sent);
            assert_eq!(
                s.metrics.latency.len(),
                s.metrics.arrived,
                "{protocol}/{transport}"
            );
        }
    }
}
