//! `warmup = "auto"` (issue 9): the warm-up chosen from the data by MSER on pilot runs'
//! batch means (`lbsim::steady::choose_warmup`).
//!
//! The transient is built in: M/M/1 (μ = 1000/s) whose arrival rate is 2000/s for the first
//! 0.5 s and 900/s after, so about 500 requests are queued at 0.5 s and drain at
//! μ − λ = 100/s, for about 5 s, before the queue reaches its steady state at ρ = 0.9
//! (mean response time 1/(μ − λ) = 10 ms). Measuring from t = 0 over a 50 s window counts
//! the drain's long waits (the mean comes out about three times the truth); the automatic
//! warm-up must cut them and give a mean whose 99.9% interval contains 10 ms.

mod common;

use common::process::lbsim_output;
use common::{assert_agrees, mm1_toml, scenario, values};
use lbsim::metrics::Metric;
use lbsim::runner::{RunOptions, run};
use lbsim::scenario::Scenario;
use lbsim::stats::estimate;
use lbsim::steady::resolve_warmup;

/// A fault that makes the server of [`mm1_toml`] three times slower for its first second.
const SLOW_FIRST_SECOND: &str = r#"[[faults]]
server = "s"
kind = "slow"
at = 0
duration = 1
factor = 3
"#;

/// M/M/1 at ρ = 0.9 (1 s windows, `warmup = "auto"`) whose server runs three times slower
/// for its first second: a backlog of about 570 requests, drained at 100/s until about
/// 6.7 s. `name` as given (the scenario's name only labels reports).
fn slow_start(name: &str) -> String {
    mm1_toml(name, 900.0, 10, 1.0, "\"auto\"") + SLOW_FIRST_SECOND
}

fn backlog(warmup: &str, duration: f64) -> Scenario {
    scenario(&format!(
        r#"
name = "backlog"
seed = 3
replications = 20
duration = {duration}
warmup = {warmup}
[arrivals]
process = "piecewise"
interpolation = "step"
points = [{{ at = 0, rate = 2000 }}, {{ at = 0.5, rate = 900 }}]
[[servers]]
name = "s"
service = {{ dist = "exponential", mean = 0.001 }}
[[strategies]]
kind = "round_robin"
[[strategies]]
kind = "random"
"#
    ))
}

#[test]
fn auto_warmup_cuts_a_built_in_transient() {
    let truth = 0.010;
    // Warm-up 0: the drain is measured, and the mean is far above the truth.
    let fixed = run(&backlog("0", 50.0), &RunOptions::default()).unwrap();
    let biased = estimate(&values(&fixed, 0, Metric::LatencyMean));
    println!("warmup = 0: latency_mean {biased:?}");
    assert!(biased.low > 2.0 * truth, "{biased:?}");
    // A fixed warm-up shorter than the transient: the run's warnings say so (MSER on the
    // measured batch means) and name the fix.
    let warned = lbsim::steady::warnings(&backlog("0", 50.0), &fixed).join("\n");
    println!("{warned}");
    assert!(
        warned.contains("settles only") && warned.contains("raise `warmup` to at least"),
        "{warned}"
    );

    let mut s = backlog("\"auto\"", 50.0);
    assert!(s.warmup_auto && s.auto_warmup.is_none());
    resolve_warmup(&mut s, 3, None, None).unwrap();
    let chosen = s.auto_warmup.clone().unwrap();
    println!("{}", chosen.describe());
    // The drain ends near 5.5 s; MSER truncates once the batch means stop falling.
    assert!((4.0..=15.0).contains(&s.warmup), "{chosen:?}");
    assert_eq!(s.warmup, s.end() - s.duration);
    assert!(chosen.strategies.iter().all(|c| c.truncation.is_some()));
    assert_eq!(
        Some(s.warmup),
        chosen
            .strategies
            .iter()
            .filter_map(|c| c.truncation)
            .reduce(f64::max)
    );
    let r = run(&s, &RunOptions::default()).unwrap();
    let warned = lbsim::steady::warnings(&s, &r).join("\n");
    assert!(!warned.contains("settles only"), "{warned}");
    for k in 0..2 {
        assert_agrees(
            &format!("auto warm-up, strategy {k}: latency_mean"),
            &values(&r, k, Metric::LatencyMean),
            truth,
        );
    }

    // Deterministic: the same choice whatever the thread count; and a run of the
    // unresolved scenario chooses the same warm-up itself.
    let mut one = backlog("\"auto\"", 50.0);
    resolve_warmup(&mut one, 3, Some(1), None).unwrap();
    assert_eq!(one.warmup.to_bits(), s.warmup.to_bits());
    let again = run(
        &backlog("\"auto\"", 50.0),
        &RunOptions {
            threads: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        values(&again, 0, Metric::LatencyMean),
        values(&r, 0, Metric::LatencyMean)
    );
}

#[test]
fn auto_warmup_refuses_a_transient_longer_than_its_pilots() {
    // The window is 1 s: pilots of 1, 2 and 4 s all end inside the drain.
    let mut s = scenario(&slow_start("slow-start"));
    let e = resolve_warmup(&mut s, 3, None, None).unwrap_err();
    let msg = e.to_string();
    println!("{msg}");
    assert!(msg.contains("warmup") && msg.contains("duration"), "{msg}");
    assert!(msg.contains("no end to the transient"), "{msg}");
}

#[test]
fn bad_warmup_values_are_refused_with_the_fix() {
    let src = |w: &str| {
        format!(
            "duration = 1\nwarmup = {w}\n[arrivals]\nprocess = \"poisson\"\nrate = 10\n[[servers]]\nname = \"s\"\nservice = {{ dist = \"exponential\", mean = 0.001 }}\n[[strategies]]\nkind = \"random\"\n"
        )
    };
    for (w, want) in [
        ("\"sometimes\"", "\"auto\""),
        ("true", "number of seconds"),
        ("-1", "0 or more"),
    ] {
        let e = Scenario::from_source(std::path::Path::new("w.toml"), &src(w)).unwrap_err();
        let msg = e.to_string();
        println!("warmup = {w}: {msg}");
        assert!(msg.contains("w.toml") && msg.contains("warmup"), "{msg}");
        assert!(msg.contains(want), "{msg}");
    }
    // Integers and floats are seconds.
    for w in ["2", "2.5"] {
        let s = Scenario::from_source(std::path::Path::new("w.toml"), &src(w)).unwrap();
        assert!(!s.warmup_auto && s.warmup >= 2.0);
    }
}

/// `lbsim run` says the warm-up it chose on the terminal and in report.md, and a scenario
/// whose transient never ends in the pilots exits with status 2, naming the field.
#[test]
fn run_reports_the_chosen_warmup() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auto.toml");
    std::fs::write(
        &file,
        r#"
name = "auto"
replications = 4
duration = 20
warmup = "auto"
[arrivals]
process = "piecewise"
interpolation = "step"
points = [{ at = 0, rate = 2000 }, { at = 0.5, rate = 900 }]
[[servers]]
name = "s"
service = { dist = "exponential", mean = 0.001 }
[[strategies]]
kind = "round_robin"
"#,
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let (file, out_dir) = (file.to_str().unwrap(), out_dir.to_str().unwrap());
    let (code, _, stderr) = lbsim_output(&["run", file, "--out", out_dir]);
    println!("{stderr}");
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("chosen by MSER"), "{stderr}");
    let report = std::fs::read_to_string(std::path::Path::new(out_dir).join("report.md")).unwrap();
    assert!(report.contains("`warmup = \"auto\"`"), "{report}");

    std::fs::write(file, slow_start("auto")).unwrap();
    let (code, _, stderr) = lbsim_output(&["run", file, "--out", out_dir]);
    println!("{stderr}");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("warmup") && stderr.contains("no end to the transient"),
        "{stderr}"
    );
}
