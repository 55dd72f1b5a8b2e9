//! Slow start in the simulator (issue 11): a server that comes back from a crash gets a
//! share of the requests that follows Envoy's published ramp (`edf_wrr`, Envoy round robin)
//! or nginx's linear one (smooth weighted round robin) over the window, judged by the
//! confidence interval of independent replications; without slow start it gets its full
//! share at once.

mod common;

use common::scenario;
use lbsim::scenario::Scenario;
use lbsim::sim::Run;
use lbsim::stats::estimate;

/// Health checks see `s-0` up again at this time (s): it crashes at 1 s, recovers at 2 s,
/// and health checks take 0.5 s to notice each change.
const UP: f64 = 2.5;

/// Four equal servers at half load; `s-0` crashes and comes back; the measured window is
/// `[UP + from, UP + to)`.
fn cluster(kind: &str, policy: &str, from: f64, to: f64) -> Scenario {
    scenario(&format!(
        r#"
name = "comeback"
duration = {duration}
warmup = {warmup}
replications = 6
[arrivals]
process = "poisson"
rate = 2000
[[servers]]
name = "s"
count = 4
service = {{ dist = "exponential", mean = 0.001 }}
[[faults]]
server = "s-0"
kind = "crash"
at = 1
duration = 1
detection = 0.5
[[strategies]]
kind = "{kind}"
{policy}
"#,
        warmup = UP + from,
        duration = to - from,
    ))
}

/// Share of the window's attempts that `s-0` accepted, per replication.
fn shares(s: &Scenario) -> Vec<f64> {
    let e = &s.strategies[0];
    (0..u64::from(s.replications))
        .map(|rep| {
            let m = Run::entry(s, e, rep).metrics();
            let all: u64 = m.servers.iter().map(|v| v.requests).sum();
            m.servers[0].requests as f64 / all as f64
        })
        .collect()
}

/// The mean over `[from, to)` (seconds after `UP`) of `f / (3 + f)`: the share a server of
/// weight factor `f(t)` gets beside three warm ones, arrivals being uniform in time.
fn ramp_mean(f: impl Fn(f64) -> f64, from: f64, to: f64) -> f64 {
    let steps = 100_000;
    let dt = (to - from) / steps as f64;
    (0..steps)
        .map(|k| {
            let x = f(from + (k as f64 + 0.5) * dt);
            x / (3.0 + x)
        })
        .sum::<f64>()
        / steps as f64
}

/// Envoy's factor: `max((max(1 ms, t) / window)^(1/aggression), min_weight)`, t in whole ms.
fn envoy(t: f64, window: f64, aggression: f64, min_weight: f64) -> f64 {
    let ms = (t * 1000.0).floor();
    if ms >= window * 1000.0 {
        return 1.0;
    }
    (ms.max(1.0) / (window * 1000.0))
        .powf(1.0 / aggression)
        .max(min_weight)
}

/// Checks the measured share of `s-0` in each window against `expected(from, to)`: the
/// ramp's mean must lie within the replications' 95 % confidence interval widened by the
/// rounding of a deterministic schedule (two picks of `s-0` per window).
fn follows(kind: &str, policy: &str, expected: impl Fn(f64, f64) -> f64) {
    for (from, to) in [(0.0, 1.0), (1.0, 3.0), (3.0, 5.0), (5.0, 7.0), (7.0, 10.0)] {
        let s = cluster(kind, policy, from, to);
        let e = estimate(&shares(&s));
        let want = expected(from, to);
        let slack = 2.0 / (2000.0 * (to - from));
        println!("{kind} [{from}, {to}): measured {e:?}, ramp {want}");
        assert!(
            e.low - slack <= want && want <= e.high + slack,
            "{kind} [{from}, {to}): measured {e:?}, ramp {want}"
        );
    }
}

#[test]
fn envoy_round_robin_follows_the_published_ramp() {
    follows(
        "edf_wrr",
        "[strategies.policy.slow_start]\nkind = \"envoy\"\nslow_start_window = 10\n",
        |a, b| ramp_mean(|t| envoy(t, 10.0, 1.0, 0.1), a, b),
    );
    follows(
        "edf_wrr",
        "[strategies.policy.slow_start]\nkind = \"envoy\"\nslow_start_window = 8\naggression = 2\nmin_weight_percent = 5\n",
        |a, b| ramp_mean(|t| envoy(t, 8.0, 2.0, 0.05), a, b),
    );
}

#[test]
fn nginx_weighted_round_robin_ramps_linearly_from_zero() {
    follows(
        "smooth_weighted_round_robin",
        "[strategies.policy.slow_start]\nkind = \"nginx\"\nwindow = 10\n",
        |a, b| ramp_mean(|t| (t / 10.0).min(1.0), a, b),
    );
}

#[test]
fn without_slow_start_the_server_gets_its_share_at_once() {
    // The same comeback under a policy without slow start: a quarter from the first second,
    // which the ramp's 10 % floor (a share of 3.2 %) is far from.
    let s = cluster("edf_wrr", "[strategies.policy]\ntimeout = 100\n", 0.0, 1.0);
    let e = estimate(&shares(&s));
    assert!(e.low > 0.24 && e.high < 0.26, "{e:?}");
}

#[test]
fn a_strategy_that_does_not_ramp_weights_refuses_slow_start() {
    for (kind, ramp) in [
        (
            "least_connections",
            "kind = \"envoy\"\nslow_start_window = 10",
        ),
        ("round_robin", "kind = \"envoy\"\nslow_start_window = 10"),
        ("edf_wrr", "kind = \"nginx\"\nwindow = 10"),
        (
            "smooth_weighted_round_robin",
            "kind = \"envoy\"\nslow_start_window = 10",
        ),
    ] {
        let src = format!(
            "duration = 5\n[arrivals]\nprocess = \"poisson\"\nrate = 10\n[[servers]]\nname = \"s\"\ncount = 2\nservice = {{ dist = \"exponential\", mean = 0.01 }}\n[[strategies]]\nkind = \"{kind}\"\n[strategies.policy.slow_start]\n{ramp}\n"
        );
        let e = Scenario::from_source(std::path::Path::new("ramp.toml"), &src)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ramp.toml"), "{e}");
        assert!(e.contains("strategies[0].policy.slow_start"), "{e}");
        assert!(e.contains("`edf_wrr` (\"envoy\")"), "{e}");
        assert!(
            e.contains("`smooth_weighted_round_robin` (\"nginx\")"),
            "{e}"
        );
    }
}
