//! Microbenchmark (ignored by default): loopback round trip of a zero-work call.
//!
//! Run with `cargo test --release --test live_bench -- --ignored --nocapture`. Prints
//! the median and 99th percentile per protocol and transport, one client
//! connection calling one server back to back. Not an assertion: the numbers
//! tell how much of a live-mode latency is the harness itself.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use lbsim::live::proto::{BackendSyncClient, Call, TBackendSyncClient};
use lbsim::live::server::{self, ServerConfig};
use lbsim::live::{CallOutcome, ClientConfig, Connection, Protocol, Transport};
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::transport::{TFramedReadTransport, TFramedWriteTransport};

const WARMUP: usize = 2_000;
const CALLS: usize = 20_000;

/// Median and p99 in µs, and calls per second, of `CALLS` calls of `call`.
fn measure(mut call: impl FnMut(i64)) -> (f64, f64, f64) {
    for id in 0..WARMUP {
        call(id as i64);
    }
    let mut samples = Vec::with_capacity(CALLS);
    let began = Instant::now();
    for id in 0..CALLS {
        let t = Instant::now();
        call(id as i64);
        samples.push(t.elapsed());
    }
    let rate = CALLS as f64 / began.elapsed().as_secs_f64();
    samples.sort_unstable();
    (percentile(&samples, 0.5), percentile(&samples, 0.99), rate)
}

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
            let (median, p99, rate) = measure(|id| {
                conn.call(id, 0, Some(id)).expect("call");
            });
            println!("{protocol:<8} {transport:<9} {median:>10.1} {p99:>8.1} {rate:>9.0}");
        }
    }

    // For comparison: the thrift crate's stock client stack, framed transport
    // straight on the socket (length and body written by separate syscalls).
    let server = server::spawn(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        ServerConfig::new("bench"),
    )
    .expect("spawn");
    let stream = TcpStream::connect(server.local_addr()).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let read = TFramedReadTransport::new(stream.try_clone().expect("clone"));
    let write = TFramedWriteTransport::new(stream);
    let mut client = BackendSyncClient::new(
        TBinaryInputProtocol::new(read, true),
        TBinaryOutputProtocol::new(write, true),
    );
    let (median, p99, rate) = measure(|id| {
        client.call(Call::new(id, 0, Some(id), None)).expect("call");
    });
    println!("binary   framed (stock client) {median:>4.1} {p99:>8.1} {rate:>9.0}");

    // Sleep overshoot: how much longer than asked a 1 ms service takes, as
    // the server reports it (timer slack and wake-up latency).
    let mut conn =
        Connection::connect(server.local_addr(), &ClientConfig::default()).expect("connect");
    let mut over: Vec<Duration> = (0..500)
        .map(|id| match conn.call(id, 1_000_000, None).expect("call") {
            CallOutcome::Served { served_ns, .. } => {
                Duration::from_nanos(served_ns.saturating_sub(1_000_000))
            }
            other => panic!("{other:?}"),
        })
        .collect();
    over.sort_unstable();
    println!(
        "1 ms service overshoot: median {:.1} µs, p99 {:.1} µs",
        percentile(&over, 0.5),
        percentile(&over, 0.99)
    );
}
