//! `lbsim serve` against hostile clients on loopback (issue 10, class 6): frame headers
//! announcing huge frames, strings announcing gigabytes, idle and one-byte-at-a-time
//! connections, connection floods and calls asking for centuries of work. After each
//! attack a normal Thrift client must still be served promptly, and the server's memory
//! (VmRSS of a spawned `lbsim serve`) and threads must stay bounded.
//!
//! Every loop here is bounded in count and in time; everything is on loopback.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use lbsim::live::server::{self, ServerConfig, ServerLimits};
use lbsim::live::{CallOutcome, ClientConfig, ClientError, Connection, Transport};

/// A spawned `lbsim serve` (one server), killed when dropped.
struct Served {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `lbsim serve --workers 2 --port 0 EXTRA...` and reads the address it prints.
fn serve(extra: &[&str]) -> Served {
    let (child, addr) = common::process::spawn_serve(extra);
    Served { child, addr }
}

/// A field of /proc/PID/status (VmRSS in kB, Threads).
fn status(pid: u32, field: &str) -> u64 {
    common::process::proc_status(&pid.to_string(), field)
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn client_cfg(transport: Transport) -> ClientConfig {
    ClientConfig {
        transport,
        io_timeout: Some(Duration::from_secs(5)),
        ..ClientConfig::default()
    }
}

/// A normal client's 1 ms call; returns how long it took from connecting.
fn normal_call(addr: SocketAddr, transport: Transport) -> Result<Duration, ClientError> {
    let started = Instant::now();
    let mut conn = Connection::connect(addr, &client_cfg(transport))?;
    match conn.call(1, 1_000_000, None)? {
        CallOutcome::Served { .. } => Ok(started.elapsed()),
        other => panic!("normal call not served: {other:?}"),
    }
}

/// Asserts that a normal client's 1 ms call (`what`) is served within `ms` milliseconds.
fn assert_served_within(addr: SocketAddr, transport: Transport, ms: u64, what: &str) {
    let took = normal_call(addr, transport).expect(what);
    assert!(
        took < Duration::from_millis(ms),
        "normal call ({what}) took {took:?}"
    );
}

/// Waits (at most `within`) for the server to close `s`: a read returns 0 or an error.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect")
}

#[test]
fn oversized_frames_and_strings_allocate_nothing() {
    let framed = serve(&[]);
    let pid = framed.child.id();
    normal_call(framed.addr, Transport::Framed).expect("warm-up call");
    let rss_before = status(pid, "VmRSS");
    // 40 frame headers of 16 MB (under the thrift crate's own limit) took 608 MB before;
    // add 2 GB and negative sizes.
    let mut hostile = Vec::new();
    for k in 0..60u32 {
        let mut s = connect(framed.addr);
        let header: [u8; 4] = match k % 3 {
            0 => 16_000_000u32.to_be_bytes(),
            1 => 0x7fff_ffffu32.to_be_bytes(),
            _ => 0xffff_ffffu32.to_be_bytes(),
        };
        s.write_all(&header).unwrap();
        s.write_all(&[0x80, 0x01, 0x00, 0x01]).unwrap();
        hostile.push(s);
    }
    for s in &mut hostile {
        assert!(
            closed_within(s, Duration::from_secs(3)),
            "oversized frame left open"
        );
    }
    assert_served_within(framed.addr, Transport::Framed, 500, "normal client served");
    let rss_after = status(pid, "VmRSS");
    assert!(
        rss_after < rss_before + 16 * 1024,
        "VmRSS grew from {rss_before} kB to {rss_after} kB"
    );

    // Unframed: a binary message whose name announces 2 GB, and one announcing a 1 MB
    // string that it then sends: both close the connection, neither is held in memory.
    let buffered = serve(&["--transport", "buffered"]);
    let pid = buffered.child.id();
    normal_call(buffered.addr, Transport::Buffered).expect("warm-up call");
    let rss_before = status(pid, "VmRSS");
    for _ in 0..20 {
        let mut s = connect(buffered.addr);
        s.write_all(&[0x80, 0x01, 0x00, 0x01]).unwrap();
        s.write_all(&0x7fff_fff0u32.to_be_bytes()).unwrap();
        assert!(closed_within(&mut s, Duration::from_secs(3)));
    }
    let mut s = connect(buffered.addr);
    s.write_all(&[0x80, 0x01, 0x00, 0x01]).unwrap();
    s.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..16 {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    assert!(closed_within(&mut s, Duration::from_secs(3)));
    assert_served_within(
        buffered.addr,
        Transport::Buffered,
        500,
        "normal client served",
    );
    let rss_after = status(pid, "VmRSS");
    assert!(
        rss_after < rss_before + 16 * 1024,
        "VmRSS grew from {rss_before} kB to {rss_after} kB"
    );
}

#[test]
fn idle_and_slow_connections_cannot_exhaust_the_server() {
    let served = serve(&[
        "--max-connections",
        "16",
        "--message-timeout",
        "0.5",
        "--idle-timeout",
        "3",
    ]);
    let pid = served.child.id();
    let threads_before = status(pid, "Threads");
    // 16 idle connections fill the server...
    let mut idle: Vec<TcpStream> = (0..16).map(|_| connect(served.addr)).collect();
    thread::sleep(Duration::from_millis(100));
    // ...so a new client is refused at once, with an error that says why.
    let refused = normal_call(served.addr, Transport::Framed).expect_err("refused at the limit");
    assert!(
        refused
            .to_string()
            .contains("connection limit (16 connections)"),
        "{refused}"
    );
    // A flood of 200 more connections is refused too, without a thread each.
    let flood: Vec<TcpStream> = (0..200).map(|_| connect(served.addr)).collect();
    thread::sleep(Duration::from_millis(200));
    let threads = status(pid, "Threads");
    assert!(
        threads <= threads_before + 16 + 8 + 2,
        "{threads} threads (from {threads_before}) with 216 connections open"
    );
    drop(flood);
    // Once the idle ones have been idle for a second, a normal client displaces one.
    thread::sleep(Duration::from_millis(1100));
    assert_served_within(served.addr, Transport::Framed, 500, "served by eviction");
    // Slowloris: a frame trickling one byte every 100 ms is cut at the 0.5 s message
    // timeout, well before it completes.
    let mut slow = connect(served.addr);
    let started = Instant::now();
    let frame = [0u8, 0, 0, 40];
    let mut closed = false;
    for k in 0..40 {
        if slow
            .write_all(&[frame.get(k).copied().unwrap_or(0)])
            .is_err()
        {
            closed = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    assert!(
        closed || closed_within(&mut slow, Duration::from_secs(1)),
        "slow sender not cut off"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // The idle ones time out (3 s) or were evicted: all closed by the server.
    for s in &mut idle {
        assert!(
            closed_within(s, Duration::from_secs(4)),
            "idle connection kept"
        );
    }
    assert_served_within(served.addr, Transport::Framed, 500, "normal client served");
}

#[test]
fn enormous_or_negative_work_is_refused_and_counted() {
    let server = server::spawn(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        ServerConfig {
            workers: 2,
            ..ServerConfig::new("s")
        },
    )
    .expect("spawn");
    let mut conn =
        Connection::connect(server.local_addr(), &client_cfg(Transport::Framed)).expect("connect");
    for work in [i64::MAX, i64::MAX, -5, 61_000_000_000] {
        let started = Instant::now();
        let err = conn.call(1, work, None).expect_err("refused");
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(
            matches!(err, ClientError::Application { .. }) && err.to_string().contains("work_ns"),
            "{err}"
        );
    }
    // The connection stays usable, workers are free, and the server is healthy.
    assert!(conn.ping().is_ok());
    assert_served_within(server.local_addr(), Transport::Framed, 200, "served");
    let stats = server.stats();
    assert_eq!(stats.invalid_calls, 4);
    assert_eq!(stats.served, 1);
}

#[test]
fn ping_fails_while_new_calls_would_wait_too_long() {
    let server = server::spawn(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        ServerConfig {
            limits: ServerLimits {
                max_wait: Duration::from_millis(300),
                ..ServerLimits::default()
            },
            ..ServerConfig::new("busy")
        },
    )
    .expect("spawn");
    let addr = server.local_addr();
    let mut probe = Connection::connect(addr, &client_cfg(Transport::Framed)).unwrap();
    assert!(probe.ping().is_ok(), "idle server unhealthy");
    // One worker, four calls of 200 ms: 800 ms of service ahead of a new call.
    let calls: Vec<_> = (0..4)
        .map(|i| {
            thread::spawn(move || {
                let mut c = Connection::connect(addr, &client_cfg(Transport::Framed)).unwrap();
                c.call(i, 200_000_000, None)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.waiting() < 3 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let err = probe.ping().expect_err("overloaded server answered ping");
    assert!(err.to_string().contains("overloaded"), "{err}");
    for c in calls {
        assert!(matches!(c.join().unwrap(), Ok(CallOutcome::Served { .. })));
    }
    let mut probe = Connection::connect(addr, &client_cfg(Transport::Framed)).unwrap();
    assert!(
        probe.ping().is_ok(),
        "healthy again once the backlog is served"
    );
}
