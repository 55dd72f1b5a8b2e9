//! Live mode over real loopback sockets: wire settings, queueing semantics,
//! killed backends, and interoperability with a thriftpy2 peer.
//!
//! Every test is bounded in time: clients use I/O timeouts and every wait
//! has a deadline, so a regression fails instead of hanging.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::peer::{python_peer, require_thriftpy2};
use lbsim::live::server::{self, ServerConfig, ServerHandle};
use lbsim::live::{CallOutcome, ClientConfig, ClientError, Connection, Protocol, Transport};

const MS: i64 = 1_000_000;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn client_cfg(protocol: Protocol, transport: Transport) -> ClientConfig {
    ClientConfig {
        io_timeout: Some(Duration::from_secs(5)),
        ..ClientConfig::new(protocol, transport)
    }
}

fn rust_server(id: &str, workers: u32, protocol: Protocol, transport: Transport) -> ServerHandle {
    let cfg = ServerConfig {
        workers,
        protocol,
        transport,
        ..ServerConfig::new(id)
    };
    server::spawn(loopback(), cfg).expect("spawn server")
}

fn wire_combinations() -> impl Iterator<Item = (Protocol, Transport)> {
    Protocol::ALL
        .into_iter()
        .flat_map(|p| Transport::ALL.into_iter().map(move |t| (p, t)))
}

/// Checks a served outcome and returns (queued_ns, served_ns).
fn served(outcome: CallOutcome, server_id: &str) -> (u64, u64) {
    match outcome {
        CallOutcome::Served {
            server_id: id,
            queued_ns,
            served_ns,
            ..
        } => {
            assert_eq!(id, server_id);
            (queued_ns, served_ns)
        }
        other => panic!("expected a served call, got {other:?}"),
    }
}

/// Exercises calls (with and without key and payload) and pings on one connection.
fn round_trip(addr: SocketAddr, cfg: &ClientConfig, server_id: &str) {
    let mut conn = Connection::connect(addr, cfg).expect("connect");
    for id in 0..20 {
        let key = (id % 2 == 0).then_some(id * 7);
        let payload = (id % 3 == 0).then(|| vec![id as u8; 1000 * id as usize]);
        let outcome = conn
            .call_with_payload(id, 10_000, key, payload)
            .unwrap_or_else(|e| panic!("{} {}: {e}", cfg.protocol, cfg.transport));
        let (queued, service) = served(outcome, server_id);
        assert!(
            queued < 50 * MS as u64,
            "queued {queued} ns on an idle server"
        );
        assert!(service >= 9_000, "10 µs of work served in {service} ns");
    }
    let pong = conn.ping().expect("ping");
    assert_eq!(pong.server_id, server_id);
}

#[test]
fn every_protocol_and_transport_round_trips() {
    for (protocol, transport) in wire_combinations() {
        let id = format!("rs-{protocol}-{transport}");
        let server = rust_server(&id, 1, protocol, transport);
        round_trip(server.local_addr(), &client_cfg(protocol, transport), &id);
        assert_eq!(server.served(), 20);
    }
}

#[test]
fn mismatched_wire_settings_fail_without_hanging() {
    let server = rust_server("rs", 1, Protocol::Binary, Transport::Buffered);
    let cfg = ClientConfig {
        io_timeout: Some(Duration::from_millis(500)),
        ..ClientConfig::new(Protocol::Compact, Transport::Framed)
    };
    let mut conn = Connection::connect(server.local_addr(), &cfg).expect("connect");
    let started = Instant::now();
    let err = conn.call(1, 0, None).expect_err("mismatched wire settings");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(err.addr(), server.local_addr());
}

/// Runs one call per connection, all released at once; returns outcomes and wall time.
fn concurrent_calls(
    addr: SocketAddr,
    cfg: &ClientConfig,
    calls: usize,
    work_ns: i64,
) -> (Vec<Result<CallOutcome, ClientError>>, Duration) {
    let mut conns: Vec<Connection> = (0..calls)
        .map(|_| Connection::connect(addr, cfg).expect("connect"))
        .collect();
    let start = Arc::new(Barrier::new(calls + 1));
    let threads: Vec<_> = conns
        .drain(..)
        .enumerate()
        .map(|(i, mut conn)| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                conn.call(i as i64, work_ns, None)
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let outcomes = threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect();
    (outcomes, began.elapsed())
}

/// Work of each call in [`check_two_workers_four_calls`]: long beside how far apart a busy
/// machine lets four calls released at once reach the server. Beside two `yes > /dev/null`
/// loops on 2 cores, the third of four 50 ms calls arrived up to 19 ms after the first two
/// started, so it waited 31 ms, not the 35+ ms this check asked (2 failures in 14 runs of
/// this file, on the Rust server and the thriftpy2 peer alike): the check assumed the calls
/// arrive together, which the machine does not promise. At 200 ms, arrivals may spread by
/// up to 60 ms (and the batch be late by 300 ms) before a correct server fails it, while
/// one worker (800 ms), three (a call never waits) or four still do.
const ROUND: i64 = 200 * MS;

/// Two workers, four simultaneous calls of [`ROUND`]: two wait for the first two, so the
/// batch takes about two rounds (not one as with four workers, not four as with one).
fn check_two_workers_four_calls(addr: SocketAddr, cfg: &ClientConfig, server_id: &str) {
    let (outcomes, elapsed) = concurrent_calls(addr, cfg, 4, ROUND);
    let round = Duration::from_nanos(ROUND as u64);
    assert!(
        elapsed >= round * 19 / 10 && elapsed < round * 7 / 2,
        "4 calls of {round:?} on 2 workers took {elapsed:?}"
    );
    let mut queued: Vec<u64> = outcomes
        .into_iter()
        .map(|o| served(o.expect("call"), server_id).0)
        .collect();
    queued.sort_unstable();
    assert!(queued[1] < 20 * MS as u64, "first two queued {queued:?}");
    assert!(
        queued[2] > (ROUND * 7 / 10) as u64,
        "last two queued {queued:?}"
    );
}

#[test]
fn two_workers_serve_four_calls_in_two_rounds() {
    let server = rust_server("rs", 2, Protocol::Binary, Transport::Framed);
    let cfg = client_cfg(Protocol::Binary, Transport::Framed);
    check_two_workers_four_calls(server.local_addr(), &cfg, "rs");
}

#[test]
fn more_connections_than_workers_do_not_stall() {
    let server = rust_server("rs", 2, Protocol::Compact, Transport::Framed);
    let cfg = client_cfg(Protocol::Compact, Transport::Framed);
    // 24 connections on 2 workers, 10 ms each: 12 rounds, about 120 ms.
    let (outcomes, elapsed) = concurrent_calls(server.local_addr(), &cfg, 24, 10 * MS);
    for outcome in outcomes {
        served(outcome.expect("call"), "rs");
    }
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    // Every connection is still served after the burst.
    let mut conns: Vec<Connection> = (0..24)
        .map(|_| Connection::connect(server.local_addr(), &cfg).expect("connect"))
        .collect();
    for (i, conn) in conns.iter_mut().enumerate() {
        served(conn.call(i as i64, 0, None).expect("call"), "rs");
    }
    assert_eq!(server.served(), 48);
    assert_eq!(server.stats().connections, 48);
}

#[test]
fn bounded_queue_rejects_excess_calls() {
    let cfg = ServerConfig {
        workers: 1,
        queue_capacity: Some(2),
        ..ServerConfig::new("small")
    };
    let server = server::spawn(loopback(), cfg).expect("spawn");
    let client = client_cfg(Protocol::Binary, Transport::Framed);
    // 6 simultaneous calls: 1 in service, 2 waiting, 3 rejected.
    let (outcomes, _) = concurrent_calls(server.local_addr(), &client, 6, ROUND);
    let rejected = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(CallOutcome::Rejected { queue_len: 2, .. })))
        .count();
    assert_eq!(rejected, 3, "{outcomes:?}");
    assert_eq!((server.served(), server.rejected()), (3, 3));
}

#[test]
fn killed_server_fails_calls_in_flight_and_new_connections() {
    let server = rust_server("victim", 2, Protocol::Binary, Transport::Buffered);
    let addr = server.local_addr();
    let cfg = client_cfg(Protocol::Binary, Transport::Buffered);
    // 6 calls of 2 s: 2 in service and 4 waiting when the server dies.
    let (tx, rx) = mpsc::channel();
    for i in 0..6 {
        let mut conn = Connection::connect(addr, &cfg).expect("connect");
        let tx = tx.clone();
        thread::spawn(move || {
            let _ = tx.send(conn.call(i, 2_000 * MS, None));
        });
    }
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.waiting() < 4 {
        assert!(Instant::now() < deadline, "calls never queued");
        thread::sleep(Duration::from_millis(1));
    }
    let killed = Instant::now();
    server.shutdown();
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "shutdown took {:?}",
        killed.elapsed()
    );
    for _ in 0..6 {
        let result = rx
            .recv_timeout(Duration::from_secs(3))
            .expect("a client hung after the server died");
        let err = result.expect_err("call survived the server");
        assert_eq!(err.addr(), addr);
        assert!(
            matches!(err, ClientError::Closed { .. } | ClientError::Io { .. }),
            "{err:?}"
        );
    }
    assert!(killed.elapsed() < Duration::from_secs(2));
    assert_eq!(server.served(), 0);
    let err = Connection::connect(addr, &cfg).expect_err("connected to a dead server");
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    drop(server); // a second shutdown is a no-op
}

#[test]
#[cfg_attr(
    not(python_peer),
    ignore = "python3 cannot import thriftpy2: run `sh scripts/setup-python.sh` (installs it from PyPI), then cargo test again"
)]
fn rust_client_drives_thriftpy2_server() {
    require_thriftpy2();
    for (protocol, transport) in wire_combinations() {
        let id = format!("py-{protocol}-{transport}");
        let peer = python_peer(&[
            "--id",
            &id,
            "--protocol",
            protocol.as_str(),
            "--transport",
            transport.as_str(),
        ]);
        round_trip(peer.addr, &client_cfg(protocol, transport), &id);
    }
}

#[test]
#[cfg_attr(
    not(python_peer),
    ignore = "python3 cannot import thriftpy2: run `sh scripts/setup-python.sh` (installs it from PyPI), then cargo test again"
)]
fn thriftpy2_server_has_the_same_queueing_semantics() {
    require_thriftpy2();
    let cfg = client_cfg(Protocol::Compact, Transport::Framed);
    let peer = python_peer(&["--id", "py", "--workers", "2", "--protocol", "compact"]);
    check_two_workers_four_calls(peer.addr, &cfg, "py");

    let peer = python_peer(&[
        "--id",
        "py1",
        "--queue-capacity",
        "0",
        "--protocol",
        "compact",
    ]);
    // Calls of a round: the two later ones reach the server while the first is in service
    // even when a busy machine spreads their arrivals (see `ROUND`).
    let (outcomes, _) = concurrent_calls(peer.addr, &cfg, 3, ROUND);
    let rejected: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(CallOutcome::Rejected { .. })))
        .collect();
    assert_eq!(rejected.len(), 2, "{outcomes:?}");
    assert!(matches!(
        rejected[0],
        Ok(CallOutcome::Rejected { server_id, queue_len: 0, shed: false }) if server_id == "py1"
    ));
}
