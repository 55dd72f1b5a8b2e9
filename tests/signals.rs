//! Out-of-band signals in the simulator (`[probes]`, `Strategy::probes`, reply loads):
//! probes are counted, cost what the scenario says, change nothing for strategies that do
//! not probe, and the two strategies built on them (prequal, C3) steer away from slowed
//! servers that balancers counting only their own requests miss.

mod common;

use common::{scenario, values};
use lbsim::metrics::Metric;
use lbsim::runner::{RunOptions, run};
use lbsim::sim::simulate;

/// Two single-worker servers, exponential service of mean 10 ms, 100 requests/s.
fn small(strategy: &str, probes: &str) -> String {
    format!(
        r#"
name = "signals"
seed = 11
replications = 8
duration = 40
warmup = 2
{probes}
[arrivals]
process = "poisson"
rate = 100
[[servers]]
name = "s"
count = 2
service = {{ dist = "exponential", mean = 0.010 }}
[[strategies]]
{strategy}
"#
    )
}

#[test]
fn probes_are_counted_and_cost_server_time() {
    let probes = "[probes]\ndelay = 0.001\ncost = 0.001";
    let s = scenario(&small("kind = \"prequal\"\nprobe_rate = 3", probes));
    let r = run(&s, &RunOptions::default()).unwrap();
    // Three probes per request, sent while routing each measured request.
    for v in values(&r, 0, Metric::ProbesPerRequest) {
        assert!((v - 3.0).abs() < 1e-3, "{v}");
    }
    // Utilisation: requests 100/s × 10 ms / 2 workers = 0.5, probes 300/s × 1 ms / 2 =
    // 0.15. The 99.9% interval of the replications' mean must hold 0.65.
    common::assert_agrees(
        "utilization with probe cost",
        &values(&r, 0, Metric::UtilizationMean),
        0.65,
    );
    // Free probes: the requests' 0.5 alone.
    let free = scenario(&small(
        "kind = \"prequal\"\nprobe_rate = 3",
        "[probes]\ndelay = 0.001",
    ));
    let r = run(&free, &RunOptions::default()).unwrap();
    common::assert_agrees(
        "utilization with free probes",
        &values(&r, 0, Metric::UtilizationMean),
        0.5,
    );
}

#[test]
fn strategies_that_do_not_probe_run_as_before_with_probes_configured() {
    for kind in [
        "power_of_d",
        "peak_ewma",
        "least_request",
        "jsq",
        "round_robin",
    ] {
        let strategy = format!("kind = \"{kind}\"");
        let plain = scenario(&small(&strategy, ""));
        let probed = scenario(&small(&strategy, "[probes]\ndelay = 0.001\ncost = 0.002"));
        let a = simulate(&plain, &plain.strategies[0].spec, 0, 11).summarize();
        let b = simulate(&probed, &probed.strategies[0].spec, 0, 11).summarize();
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{kind}");
        assert_eq!(a.values[Metric::ProbesPerRequest], 0.0);
    }
    // The fingerprint of a scenario without `[probes]` is what it was before the table
    // existed; with it, another.
    let plain = scenario(&small("kind = \"round_robin\"", ""));
    let probed = scenario(&small("kind = \"round_robin\"", "[probes]\ncost = 0.002"));
    assert_ne!(plain.fingerprint(), probed.fingerprint());
}

#[test]
fn bad_probe_settings_name_the_field() {
    for (probes, field) in [
        ("[probes]\ndelay = -1", "probes.delay"),
        ("[probes]\ncost = 1e-9", "probes.cost"),
        ("[probes]\nrtt = 1", "rtt"),
    ] {
        let src = small("kind = \"prequal\"", probes);
        let e = lbsim::scenario::Scenario::from_source(std::path::Path::new("p.toml"), &src)
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{probes}: {e}");
    }
}

/// The shipped antagonists scenario, shortened: prequal and C3 both beat P2C's p99, with
/// paired replications (same arrivals, same slow-downs).
#[test]
fn prequal_and_c3_beat_p2c_under_antagonists() {
    let mut s = lbsim::scenario::Scenario::load(std::path::Path::new("scenarios/antagonists.toml"))
        .unwrap();
    s.set_run_length(6.0, 30.0);
    s.replications = 4;
    let r = run(&s, &RunOptions::default()).unwrap();
    let p99 = |label: &str| {
        let k = s
            .strategies
            .iter()
            .position(|e| e.label() == label)
            .unwrap();
        let v = values(&r, k, Metric::LatencyP99);
        v.iter().sum::<f64>() / v.len() as f64
    };
    let p2c = p99("p2c");
    for label in ["prequal", "c3"] {
        let x = p99(label);
        // Measured about 0.10 s (prequal) and 0.12 s (C3) against 0.20 s.
        assert!(x < 0.8 * p2c, "{label}: p99 {x} vs p2c {p2c}");
    }
}
