//! Fault injection: crashes (with health-check detection delay) and slow-downs.

mod common;

use common::{run_default, scenario, values};
use lbsim::metrics::Metric;
use lbsim::sim::simulate;
use lbsim::stats::estimate;

const BASE: &str = r#"
name = "faults"
seed = 4
replications = 8
duration = 20
warmup = 2
[arrivals]
process = "poisson"
rate = 1000
[[servers]]
name = "s"
count = 4
workers = 2
service = { dist = "exponential", mean = 0.004 }
[[strategies]]
kind = "round_robin"
[[strategies]]
kind = "least_connections"
"#;

#[test]
fn a_crash_fails_what_the_server_held_and_traffic_moves_away() {
    let src = format!(
        "{BASE}\n[[faults]]\nserver = \"s-2\"\nkind = \"crash\"\nat = 6.0\nduration = 8.0\ndetection = 0.5\n"
    );
    let s = scenario(&src);
    let r = run_default(&s);
    for k in 0..2 {
        let err = estimate(&values(&r, k, Metric::ErrorFraction));
        // Round robin keeps sending a quarter of the traffic to the dead server until the
        // health check notices (0.5 s): about 0.25 × 1000 × 0.5 = 125 failures out of 20 000.
        assert!(
            err.mean > 0.0 && err.mean < 0.02,
            "{}: {err:?}",
            r.strategies[k].label
        );
        // The crashed server is out for 8 s of the 20 s window: its share drops to about
        // (12/20) × 1/4 = 0.15 under round robin.
        let share = estimate(
            &r.strategies[k]
                .runs
                .iter()
                .map(|run| run.servers[2].share)
                .collect::<Vec<_>>(),
        );
        assert!(
            share.mean < 0.2,
            "{}: share {share:?}",
            r.strategies[k].label
        );
    }
    // Conservation: every measured request is served, rejected or failed.
    let m = simulate(&s, &s.strategies[0].spec, 0, s.seed);
    assert_eq!(
        m.arrived,
        m.latency.len() + m.rejected + m.unroutable + m.failed
    );
    assert!(m.failed > 50, "{}", m.failed);
}

#[test]
fn least_connections_moves_traffic_away_from_a_slowed_server() {
    let src =
        format!("{BASE}\n[[faults]]\nserver = \"s-0\"\nkind = \"slow\"\nat = 0.0\nfactor = 10.0\n");
    let r = run_default(&scenario(&src));
    let share = |k: usize| {
        estimate(
            &r.strategies[k]
                .runs
                .iter()
                .map(|run| run.servers[0].share)
                .collect::<Vec<_>>(),
        )
    };
    let (rr, lc) = (share(0), share(1));
    // Round robin ignores load: a quarter of the requests still go to the slow server.
    assert!((rr.mean - 0.25).abs() < 0.01, "{rr:?}");
    // Least connections sees its requests pile up and sends it far fewer.
    assert!(lc.high < 0.15, "{lc:?}");
}

#[test]
fn fault_errors_name_the_field() {
    let bad = format!("{BASE}\n[[faults]]\nserver = \"nope\"\nkind = \"crash\"\nat = 1.0\n");
    let e = lbsim::scenario::Scenario::from_source(std::path::Path::new("f.toml"), &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("faults[0].server") && e.contains("s-0"), "{e}");
    let bad = format!("{BASE}\n[[faults]]\nserver = \"s\"\nkind = \"slow\"\nat = 1.0\n");
    let e = lbsim::scenario::Scenario::from_source(std::path::Path::new("f.toml"), &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("faults[0].factor") && e.contains("fix"), "{e}");
}

#[test]
fn a_fail_fast_node_draws_more_traffic_under_least_connections() {
    // s-0 answers every request with an error after 1 ms: under round robin it gets its
    // quarter; least connections sees it always idle and sends it more (the black hole).
    let src = format!(
        "{BASE}\n[[faults]]\nserver = \"s-0\"\nkind = \"error\"\nat = 0.0\nerror_latency = 0.001\n"
    );
    let s = scenario(&src);
    let r = run_default(&s);
    let rr = estimate(&values(&r, 0, Metric::ErrorFraction));
    let lc = estimate(&values(&r, 1, Metric::ErrorFraction));
    println!("errors: round robin {rr:?}, least connections {lc:?}");
    assert!(rr.low < 0.25 && 0.25 < rr.high, "{rr:?}");
    assert!(
        lc.low > rr.high,
        "least connections {lc:?} vs round robin {rr:?}"
    );
    for k in 0..2 {
        let m = simulate(&s, &s.strategies[k].spec, 0, s.seed);
        assert_eq!(
            m.arrived,
            m.latency.len() + m.rejected + m.unroutable + m.failed
        );
        // Errors are not served: the node does no work.
        assert_eq!(m.servers[0].busy_area, 0.0);
    }
}

#[test]
fn a_rate_limiting_node_refuses_a_fraction() {
    let src = format!(
        "{BASE}\n[[faults]]\nserver = \"s-1\"\nkind = \"error\"\nat = 0.0\nfraction = 0.5\nstatus = \"rejected\"\n"
    );
    let r = run_default(&scenario(&src));
    // Round robin: a quarter of requests reach s-1 and half of those are refused.
    let rej = estimate(&values(&r, 0, Metric::RejectedFraction));
    assert!(rej.low < 0.125 && 0.125 < rej.high, "{rej:?}");
    assert_eq!(estimate(&values(&r, 0, Metric::ErrorFraction)).mean, 0.0);
}

#[test]
fn gc_pauses_stall_work_in_progress() {
    // Pauses of exactly 50 ms every ~1 s on every server: a request in service when a
    // pause starts waits it out, so the largest response times exceed 50 ms and the tail
    // grows; nothing is lost.
    let pauses = "\n[[faults]]\nserver = \"s\"\nkind = \"pause\"\nat = 0.0\ninterval = { dist = \"exponential\", mean = 1.0 }\npause = { dist = \"deterministic\", value = 0.05 }\n";
    let plain = run_default(&scenario(BASE));
    let paused_s = scenario(&format!("{BASE}{pauses}"));
    let paused = run_default(&paused_s);
    for k in 0..2 {
        let (a, b) = (
            common::reported(&plain, k, Metric::LatencyP99),
            common::reported(&paused, k, Metric::LatencyP99),
        );
        assert!(b.low > a.high, "p99 {b:?} vs {a:?}");
        let max = estimate(&values(&paused, k, Metric::LatencyMax));
        assert!(max.mean > 0.05, "{max:?}");
        let m = simulate(&paused_s, &paused_s.strategies[k].spec, 0, paused_s.seed);
        assert_eq!(m.arrived, m.latency.len() + m.rejected + m.failed);
    }
}

#[test]
fn fault_fields_belong_to_their_kind() {
    let bad = |extra: &str| {
        lbsim::scenario::Scenario::from_source(
            std::path::Path::new("f.toml"),
            &format!("{BASE}\n[[faults]]\nserver = \"s-0\"\nat = 0.0\n{extra}\n"),
        )
        .unwrap_err()
        .to_string()
    };
    let e = bad("kind = \"crash\"\nfraction = 0.5");
    assert!(
        e.contains("faults[0].fraction") && e.contains("fix:"),
        "{e}"
    );
    let e = bad("kind = \"error\"\nfraction = 1.5");
    assert!(e.contains("faults[0].fraction"), "{e}");
    let e = bad("kind = \"pause\"\ninterval = { dist = \"exponential\", mean = 1.0 }");
    assert!(e.contains("faults[0].pause"), "{e}");
    let e = bad("kind = \"error\"\ndetection = 1.0");
    assert!(e.contains("faults[0].detection"), "{e}");
}
