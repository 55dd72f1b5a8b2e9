//! Percentiles that hold at any run length. On M/M/1 at ρ = 0.9 (λ = 900/s, μ = 1000/s) the
//! response time is exponential with rate μ − λ = 100/s, so its p50 is ln 2 / 100 = 6.93 ms and
//! its p99 ln 100 / 100 = 46.05 ms. A window of 1,000 mean service times (1 s) is about 2.6
//! relaxation times (1/(μ(1 − √ρ)²) ≈ 0.38 s): each replication's own p99 averages about 29 ms
//! there, 37% low, and more replications only narrow an interval around that wrong value. The
//! reported percentile pools every replication's requests and must converge to the truth at a
//! fixed short window, with an interval that covers it (judged here at 99.9%, by the run's
//! own interval; `tests/coverage.rs` checks the 95% coverage), and runs with too few such
//! windows for a reliable tail interval say so.
//!
//! Sizes: a 5 s warm-up (13 relaxation times) makes the initial bias negligible; 1,600
//! replications of 1 s and 20 of 50 s are each about 1.5 M requests after the warm-up
//! (about 10 s of one core in release in all).

mod common;

use common::{assert_covers, mm1_toml, reported, scenario, values};
use lbsim::metrics::Metric;
use lbsim::runner::{RunOptions, run};
use lbsim::stats::estimate;

const P50: f64 = std::f64::consts::LN_2 / 100.0;

fn p99() -> f64 {
    100f64.ln() / 100.0
}

/// M/M/1 at ρ = 0.9 with a window of `window` seconds (1,000 service times per second).
fn mm1(window: f64, warmup: f64, replications: u32) -> lbsim::scenario::Scenario {
    let toml = mm1_toml(
        "mm1-window",
        900.0,
        replications,
        window,
        &warmup.to_string(),
    );
    scenario(&format!("seed = 5\n{toml}"))
}

#[test]
fn pooled_percentiles_converge_at_a_short_window() {
    let mut half_widths = Vec::new();
    for b in [100, 1600] {
        let r = run(&mm1(1.0, 5.0, b), &RunOptions::default()).unwrap();
        let e = reported(&r, 0, Metric::LatencyP99);
        assert_covers(&format!("p99, {b} windows of 1 s"), &e, p99());
        assert_covers(
            &format!("p50, {b} windows of 1 s"),
            &reported(&r, 0, Metric::LatencyP50),
            P50,
        );
        half_widths.push(e.half_width());
        // The window is short against the correlation time: the run says so (and with
        // these many replications, not that the intervals are unreliable: see below).
        let warnings = lbsim::steady::warnings(&mm1(1.0, 5.0, b), &r).join("\n");
        assert!(warnings.contains("strongly correlated"), "{warnings}");
        assert!(!warnings.contains("not reliable"), "{b}: {warnings}");
        if b == 1600 {
            // The old estimator (mean of per-window p99s) is far off here, so this window
            // is short enough to tell the two apart.
            let old = estimate(&values(&r, 0, Metric::LatencyP99));
            println!("mean of per-window p99: {old:?}");
            assert!(old.high < 0.8 * p99(), "{old:?}");
        }
    }
    // 16 times the replications: about a quarter of the half-width (1/√16).
    let ratio = half_widths[1] / half_widths[0];
    println!("half-width ratio {ratio:.3}");
    assert!((0.15..0.4).contains(&ratio), "{half_widths:?}");
}

#[test]
fn pooled_percentiles_at_a_long_window() {
    let r = run(&mm1(50.0, 5.0, 20), &RunOptions::default()).unwrap();
    assert_covers(
        "p99, 20 windows of 50 s",
        &reported(&r, 0, Metric::LatencyP99),
        p99(),
    );
    assert_covers(
        "p50, 20 windows of 50 s",
        &reported(&r, 0, Metric::LatencyP50),
        P50,
    );
}

/// Below `TAIL_REPLICATIONS` (100) replications of a window short against the correlation
/// time, the warning also says that the tail percentiles' intervals are not reliable, with
/// the coverage measured in `tests/coverage.rs` and the fix; from 100 on it does not (the
/// p99 interval covered 283 and 289 of 300 runs there).
#[test]
fn short_window_warning_names_unreliable_tail_intervals_below_100_replications() {
    assert_eq!(lbsim::steady::TAIL_REPLICATIONS, 100);
    for b in [99, 100] {
        let s = mm1(1.0, 2.0, b);
        let r = run(&s, &RunOptions::default()).unwrap();
        let warnings = lbsim::steady::warnings(&s, &r).join("\n");
        println!("{b} replications: {warnings}");
        assert!(warnings.contains("strongly correlated"), "{warnings}");
        if b < 100 {
            for part in [
                "intervals are not reliable",
                "with 99 replications",
                "890 of 1,000 runs with 20 replications",
                "283 and 289 of 300 with 100",
                "lengthen `duration` or run 100 or more replications",
            ] {
                assert!(warnings.contains(part), "{part}: {warnings}");
            }
        } else {
            assert!(!warnings.contains("not reliable"), "{warnings}");
        }
    }
}
