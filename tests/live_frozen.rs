//! The live driver with one backend frozen (issue 10, class 7): a spawned `lbsim serve`
//! stopped with SIGSTOP accepts TCP connections (the kernel completes handshakes) but
//! never answers. The run must complete and count the errors, the healthy backends'
//! latency must not suffer (the dispatcher never blocks on the frozen one: it used to
//! delay healthy requests by 0.95 s), and the sockets and threads it costs are bounded.
//!
//! Bounded in time (a few seconds); loopback only.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use lbsim::live::server::{self, ServerConfig};
use lbsim::live::{LiveOptions, replay};
use lbsim::scenario::Scenario;

/// 4 servers of 2 workers, 2 ms services, 800 requests a second, round robin: 2 s.
const SCENARIO: &str = r#"
name = "frozen"
seed = 3
replications = 4
duration = 1.5
warmup = 0.5
[arrivals]
process = "poisson"
rate = 800.0
[[servers]]
name = "s"
count = 4
workers = 2
service = { dist = "deterministic", value = 0.002 }
[[strategies]]
kind = "round_robin"
"#;

/// A spawned `lbsim serve`, stopped with SIGSTOP; resumed and killed when dropped.
struct Frozen {
    child: Child,
    addr: SocketAddr,
}

fn kill(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

impl Frozen {
    fn start() -> Frozen {
        let (child, addr) = common::process::spawn_serve(&[]);
        // It answers before it is frozen.
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("serve is up");
        kill("-STOP", child.id());
        Frozen { child, addr }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        kill("-CONT", self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn threads_of_this_process() -> u64 {
    common::process::proc_status("self", "Threads").unwrap_or(0)
}

#[test]
fn frozen_backend_neither_delays_the_others_nor_costs_unbounded_threads() {
    let scenario = Scenario::from_source(Path::new("frozen.toml"), SCENARIO).expect("scenario");
    let frozen = Frozen::start();
    let healthy: Vec<_> = (0..3)
        .map(|i| {
            server::spawn(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                ServerConfig {
                    workers: 2,
                    ..ServerConfig::new(format!("s-{}", i + 1))
                },
            )
            .expect("spawn")
        })
        .collect();
    let mut backends = vec![frozen.addr];
    backends.extend(healthy.iter().map(|s| s.local_addr()));
    let opts = LiveOptions {
        backends: Some(backends),
        io_timeout: Duration::from_secs(1),
        // Calibration would (rightly) refuse a backend that does not answer.
        calibration_calls: 0,
        ..LiveOptions::default()
    };
    let max_per_backend = opts.max_connections_per_backend;
    // Threads of this process, sampled every 10 ms while the replay runs.
    let (done, peak) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let sampler = {
        let (done, peak) = (Arc::clone(&done), Arc::clone(&peak));
        thread::spawn(move || {
            for _ in 0..3000 {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                peak.fetch_max(threads_of_this_process(), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let before = threads_of_this_process();
    let run = replay(&scenario, &opts).expect("the replay completes");
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let s = &run.strategies[0];
    let p99 = s.metrics.latency.value_at_quantile(0.99) as f64 * 1e-9;
    let lag_p99 = s.lag.value_at_quantile(0.99) as f64 * 1e-9;
    println!(
        "errors {} per backend {:?}, down {:?}, connections {}, waits {}, served p99 {p99:.4} s, lag p99 {lag_p99:.4} s, threads {before} -> peak {}",
        s.errors,
        s.errors_per_backend,
        s.marked_down,
        s.connections,
        s.connection_waits,
        peak.load(Ordering::Relaxed)
    );
    // The frozen backend's calls failed and were counted; nobody else's did.
    assert!(s.errors > 0 && s.errors == s.errors_per_backend[0], "{s:?}");
    assert_eq!(s.marked_down, vec![0]);
    // Healthy backends served every other request, promptly: 2 ms services at 27-36%
    // load; the frozen backend used to add 0.95 s. The bounds sit far below that and
    // above what a busy machine does on its own: beside other jobs on 2 cores it stalls
    // the dispatcher for up to 132 ms (see `live::stall`), and a CI check with a build
    // beside it once measured a schedule lag p99 of 63 ms here.
    assert!(s.metrics.latency.len() > 500);
    assert!(p99 < 0.3, "healthy p99 {p99} s");
    assert!(lag_p99 < 0.25, "schedule lag p99 {lag_p99} s");
    // Sockets and threads: at most the per-backend limit for the frozen one, plus what
    // the healthy ones need: the connections opened ahead (2 workers + 16 each) and a
    // handful more on demand; a thread per connection on each side for those.
    let healthy = 3 * (2 + 16 + 6);
    assert!(
        s.connections <= max_per_backend + healthy,
        "{} connections",
        s.connections
    );
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak <= before + (max_per_backend + 2 * healthy) as u64,
        "{peak} threads at the peak (from {before})"
    );
}
