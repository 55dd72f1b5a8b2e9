//! Out-of-band signals in live mode: the `probe` call and the load report on replies of
//! `thrift/lbsim.thrift`, answered by `lbsim serve`'s server, and prequal and C3 replayed
//! against real backends through the same `Balancer` code as the simulator.
//!
//! Bounded in time: every client has an I/O timeout and every replay a deadline.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use lbsim::live::server::ServerConfig;
use lbsim::live::{CallOutcome, ClientConfig, Connection, LiveOptions, Protocol, Transport};
use lbsim::metrics::Metric;
use lbsim::scenario::Scenario;

const MS: i64 = 1_000_000;

fn cfg() -> ClientConfig {
    ClientConfig {
        io_timeout: Some(Duration::from_secs(5)),
        ..ClientConfig::new(Protocol::Binary, Transport::Framed)
    }
}

/// Waits until `cond` holds (at most 5 s).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn probes_and_replies_report_the_servers_load() {
    let s = common::backend(ServerConfig {
        workers: 1,
        ..ServerConfig::new("p0")
    });
    let addr = s.local_addr();
    let mut probe = Connection::connect(addr, &cfg()).unwrap();
    let idle = probe.probe().unwrap();
    assert_eq!((idle.in_flight, idle.queued), (0, 0));
    // Three calls of 200 ms on one worker: one in service, two waiting.
    let (tx, rx) = mpsc::channel();
    for id in 0..3 {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut c = Connection::connect(addr, &cfg()).unwrap();
            let _ = tx.send(c.call(id, 200 * MS, None).unwrap());
        });
    }
    eventually("three calls at the server", || {
        probe.probe().unwrap().in_flight == 3
    });
    let busy = probe.probe().unwrap();
    assert_eq!(busy.queued, 2);
    // The simulator's estimate, mean service × (1 + (queued + 1) / workers): the mean
    // of the call started, 200 ms, times (1 + 3 / 1).
    assert_eq!(busy.latency_ns, 800 * MS as u64, "{busy:?}");
    // The first reply carries the load as the call ends: two others left, one waiting.
    let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let CallOutcome::Served {
        load, served_ns, ..
    } = first
    else {
        panic!("{first:?}")
    };
    let load = load.expect("the rust server reports its load on replies");
    assert_eq!((load.in_flight, load.queued), (2, 1), "{load:?}");
    // Then: the mean service time is that of the calls started (200 ms each, the EWMA of
    // equal values), and the worker is busy with one waiting: (1 + 2 / 1) means.
    assert!(served_ns >= 200 * MS as u64, "{served_ns}");
    assert_eq!(load.latency_ns, 600 * MS as u64, "{load:?}");
    for _ in 0..2 {
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }
    let after = probe.probe().unwrap();
    assert_eq!((after.in_flight, after.queued), (0, 0));
    assert!(after.service_ns >= 200 * MS as u64, "{after:?}");
}

/// A probe with a cost: answered at once with the load as it arrived, then its cost job
/// holds the worker (a call arriving next waits for it) and, once ended, is reported in
/// the cost totals of later answers, never in the call counters; a full queue turns the
/// job away, and a probe without a cost costs nothing.
#[test]
fn a_probe_cost_holds_a_worker_like_a_call() {
    let s = common::backend(ServerConfig {
        workers: 1,
        queue_capacity: Some(1),
        ..ServerConfig::new("c0")
    });
    let addr = s.local_addr();
    let mut probe = Connection::connect(addr, &cfg()).unwrap();
    let (idle, totals) = probe.probe_at_cost(Some(300 * MS)).unwrap();
    assert_eq!(
        (idle.in_flight, idle.queued),
        (0, 0),
        "the load before its job"
    );
    assert_eq!(
        totals,
        Some((0, 0)),
        "the server runs cost jobs, none ended yet"
    );
    // The job holds the only worker: the next probe sees it, a call waits for it, and a
    // second costed probe finds the queue (1 place) full behind the call: turned away.
    let (busy, _) = probe.probe_at_cost(None).unwrap();
    assert_eq!((busy.in_flight, busy.queued), (1, 0), "{busy:?}");
    let waiter = thread::spawn(move || {
        let mut c = Connection::connect(addr, &cfg()).unwrap();
        c.call(1, 0, None).unwrap()
    });
    eventually("the call waiting", || s.waiting() == 1);
    let (full, _) = probe.probe_at_cost(Some(300 * MS)).unwrap();
    assert_eq!((full.in_flight, full.queued), (2, 1), "{full:?}");
    let CallOutcome::Served { queued_ns, .. } = waiter.join().unwrap() else {
        panic!("the call is served")
    };
    assert!(
        (250 * MS as u64..600 * MS as u64).contains(&queued_ns),
        "the call waited for the cost job: {queued_ns} ns"
    );
    // Only the first job ran: 300 ms in service, no wait; the call counted, no probe.
    let (after, totals) = probe.probe_at_cost(None).unwrap();
    assert_eq!((after.in_flight, after.queued), (0, 0), "{after:?}");
    let (waited, served) = totals.unwrap();
    assert!(waited < 5 * MS as u64, "{waited}");
    assert!(
        (300 * MS as u64..400 * MS as u64).contains(&served),
        "one job of 300 ms: {served}"
    );
    assert_eq!(s.stats().served, 1);
    // Bad costs are refused like bad calls.
    assert!(probe.probe_at_cost(Some(-1)).is_err());
}

/// A hostile client sending probes with a cost in a loop, never waiting for their jobs:
/// the queue stops growing at the bound (each job is turned away beyond it), and the
/// server still answers probes.
#[test]
fn a_flood_of_costed_probes_is_bounded() {
    let s = common::backend(ServerConfig {
        workers: 1,
        ..ServerConfig::new("flood")
    });
    let mut probe = Connection::connect(s.local_addr(), &cfg()).unwrap();
    let bound = lbsim::live::server::MAX_QUEUE_WITH_COSTS as u32;
    for _ in 0..bound + 500 {
        probe.probe_at_cost(Some(1_000 * MS)).unwrap();
    }
    let (load, _) = probe.probe_at_cost(None).unwrap();
    assert_eq!(
        (load.in_flight, load.queued),
        (bound + 1, bound),
        "{load:?}"
    );
}

/// live-smoke, shortened, with prequal and C3: every request is served, prequal's probes
/// are sent and answered (counted in `probes_per_request`), and both keep a latency of
/// the simulator's order.
#[test]
fn prequal_and_c3_replay_live() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/live-smoke.toml");
    let src = std::fs::read_to_string(&path).unwrap();
    let head = &src[..src.find("[[strategies]]").unwrap()];
    let src = head
        .replace("duration = 5.0", "duration = 1.5")
        .replace("warmup = 1.0", "warmup = 0.3")
        + "[[strategies]]\nkind = \"prequal\"\n[[strategies]]\nkind = \"c3\"\n";
    let scenario = Scenario::from_source(&path, &src).unwrap();
    let opts = LiveOptions {
        io_timeout: Duration::from_secs(5),
        ..LiveOptions::default()
    };
    let run = common::replay_within(&scenario, &opts, Duration::from_secs(120)).expect("replay");
    assert_eq!(run.strategies.len(), 2);
    for r in &run.strategies {
        assert_eq!(r.errors, 0, "{}: {:?}", r.label, r.first_error);
        let m = &r.metrics;
        assert_eq!(
            m.arrived,
            m.latency.len(),
            "{}: every request served",
            r.label
        );
        let summary = m.summarize();
        let probes = summary.values[Metric::ProbesPerRequest];
        let mean = summary.values[Metric::LatencyMean];
        match r.label.as_str() {
            "prequal" => assert!((probes - 3.0).abs() < 0.01, "prequal: {probes}"),
            _ => assert_eq!(probes, 0.0),
        }
        // Service is 4 ms at speed 1 (2 ms on the fast server) at 44% load.
        assert!(mean > 0.001 && mean < 0.05, "{}: mean {mean}", r.label);
    }
}

/// Prequal with probes that cost 20% of a request's service and take 1 ms to come back
/// (`[probes]`), replayed live and judged: each request sends 3 probes, so probes add
/// 0.24 to the servers' utilisation of 0.40 from requests; live mode plays the cost as
/// jobs holding the backends' workers, and the delay, so every judged figure agrees with
/// the simulation (a replay whose driver lagged is retried twice; figures it cannot judge
/// are skipped, never failed). Without the cost jobs every server's utilisation was about
/// 0.40 against 0.64 simulated, and the verdict failed on utilisation and queues.
#[test]
fn prequal_with_costly_delayed_probes_agrees_live() {
    let src = r#"
        duration = 3.0
        warmup = 0.5
        seed = 11
        [arrivals]
        process = "poisson"
        rate = 240.0
        [probes]
        delay = 0.001
        cost = 0.002
        [[servers]]
        name = "s"
        count = 3
        workers = 2
        service = { dist = "exponential", mean = 0.010 }
        [[strategies]]
        kind = "prequal"
    "#;
    let scenario = Scenario::from_source("costly-probes.toml".as_ref(), src).unwrap();
    let opts = LiveOptions {
        io_timeout: Duration::from_secs(5),
        ..LiveOptions::default()
    };
    // Replayed again (three attempts at most) while the verdict refuses for lag.
    let v = common::judged_retrying(
        || common::replay_within(&scenario, &opts, Duration::from_secs(120)).expect("replay"),
        |_| {},
        |run| common::verdict_of(&scenario, run, 6),
    );
    for name in ["s-0", "s-1", "s-2"] {
        let row = v
            .row("prequal", &format!("server_utilization:{name}"))
            .expect("a utilisation row");
        // The simulated utilisation counts the probes' cost (0.40 from requests alone).
        assert!(row.base() > 0.55, "{name}: simulated {}", row.base());
    }
    let failed: Vec<String> = v
        .failures()
        .map(|r| format!("{} live {} vs {}", r.metric(), r.live, r.base()))
        .collect();
    assert!(failed.is_empty(), "outside tolerance: {failed:?}");
}
