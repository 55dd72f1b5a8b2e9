//! Microbenchmark (ignored by default): loopback round trip of a zero-work call.
//!
//! Run with `cargo test --test live_bench -- --ignored --nocapture`. Prints
//! the median and 99th percentile per protocol and transport, one client
//! connection calling one server back to back. Not an assertion: the numbers
//! tell how much of a live-mode latency is the harness itself.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lbsim::live::server::{self, ServerConfig};
use lbsim::live::{ClientConfig, Connection, Protocol, Transport};

const WARMUP: usize = 2_000;
const CALLS: usize = 20_000;

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn zero_work_round_trip() {
    println!("protocol transport   median µs   p99 µs   calls/s");
    for protocol in Protocol::ALL {
        for transport in Transport::ALL {
            let cfg = ServerConfig {
                protocol,
                transport,
                ..ServerConfig::new("bench")
            };
            let server = server::spawn(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).expect("spawn");
            let mut conn =
                Connection::connect(server.local_addr(), &ClientConfig::new(protocol, transport))
                    .expect("connect");
            for id in 0..WARMUP {
                conn.call(id as i64, 0, None).expect("call");
            }
            let mut samples = Vec::with_capacity(CALLS);
            let began = Instant::now();
            for id in 0..CALLS {
                let t = Instant::now();
                conn.call(id as i64, 0, Some(id as i64)).expect("call");
                samples.push(t.elapsed());
            }
            let rate = CALLS as f64 / began.elapsed().as_secs_f64();
            samples.sort_unstable();
            println!(
                "{protocol:<8} {transport:<9} {:>10.1} {:>8.1} {:>9.0}",
                percentile(&samples, 0.5),
                percentile(&samples, 0.99),
                rate
            );
        }
    }
}
