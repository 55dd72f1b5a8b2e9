//! Runs that measure nothing fail closed (exit 2, reason and fix, no NaN files); one
//! replication gives figures without intervals and says so; `--precision` that misses its
//! target exits 3 naming the strategy and metric that held it back (issue 9).

use std::process::Command;

const BASE: &str = r#"
name = "m"
seed = 2
replications = 3
duration = 1
warmup = 0.5
[arrivals]
process = "poisson"
rate = 200
[[servers]]
name = "s"
count = 2
service = { dist = "exponential", mean = 0.002 }
[[strategies]]
kind = "round_robin"
[[strategies]]
kind = "random"
"#;

/// Runs `lbsim run FILE ARGS` on `src` (and extra files); returns (status, stdout, stderr,
/// output folder).
fn run(
    src: &str,
    extra: &[(&str, &str)],
    args: &[&str],
) -> (i32, String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.toml");
    std::fs::write(&path, src).unwrap();
    for (name, content) in extra {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .arg("run")
        .arg(&path)
        .args(["--out", dir.path().join("out").to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        dir,
    )
}

fn nothing_measured(src: &str, extra: &[(&str, &str)], field: &str) {
    let (code, _, stderr, dir) = run(src, extra, &[]);
    assert_eq!(code, 2, "{stderr}");
    for needle in ["case.toml", "nothing measured", field, "fix:"] {
        assert!(stderr.contains(needle), "no `{needle}` in: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!dir.path().join("out/summary.csv").exists(), "no NaN files");
}

#[test]
fn trace_entirely_in_the_warm_up_is_an_error() {
    let src = BASE.replace(
        "process = \"poisson\"\nrate = 200",
        "process = \"trace\"\npath = \"t.csv\"",
    );
    nothing_measured(&src, &[("t.csv", "time\n0.1\n0.2\n0.3\n")], "warmup");
}

#[test]
fn no_arrival_in_the_window_is_an_error() {
    let src = BASE
        .replace("rate = 200", "rate = 0.001")
        .replace("duration = 1", "duration = 0.01");
    nothing_measured(&src, &[], "duration");
}

#[test]
fn servers_never_busy_is_an_error() {
    nothing_measured(
        &BASE.replace("mean = 0.002", "mean = 1e-12"),
        &[],
        "service",
    );
}

#[test]
fn one_replication_gives_figures_without_intervals_and_says_so() {
    let (code, stdout, stderr, dir) = run(BASE, &[], &["--replications", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("one replication"), "{stderr}");
    assert!(stdout.contains("one replication"), "{stdout}");
    assert!(!stdout.contains('±'), "no intervals: {stdout}");
    let report = std::fs::read_to_string(dir.path().join("out/report.md")).unwrap();
    assert!(report.contains("**One replication:**"), "{report}");
}

#[test]
fn missed_precision_target_exits_3_naming_strategy_and_metric() {
    let (code, _, stderr, dir) = run(
        BASE,
        &[],
        &[
            "--precision",
            "0.0001",
            "--max-replications",
            "4",
            "--metric",
            "latency_mean",
        ],
    );
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("precision target missed"), "{stderr}");
    assert!(stderr.contains("latency_mean"), "{stderr}");
    assert!(
        stderr.contains("`round_robin`") || stderr.contains("`random`"),
        "{stderr}"
    );
    assert!(
        dir.path().join("out/summary.csv").exists(),
        "reports still written"
    );
    // Reached: exit 0.
    let (code, _, stderr, _) = run(
        BASE,
        &[],
        &["--precision", "0.5", "--metric", "latency_mean"],
    );
    assert_eq!(code, 0, "{stderr}");
}

/// Issue 8: a metric the user names must exist; the error lists the valid names.
#[test]
fn unknown_precision_metric_is_bad_input_listing_the_metrics() {
    let (code, _, stderr, dir) = run(
        BASE,
        &[],
        &["--precision", "0.1", "--metric", "latency_p98"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--metric"), "{stderr}");
    assert!(stderr.contains("no metric `latency_p98`"), "{stderr}");
    for m in lbsim::metrics::Metric::ALL {
        assert!(stderr.contains(m.name()), "{m} not listed: {stderr}");
    }
    assert!(!dir.path().join("out/summary.csv").exists(), "nothing ran");
}
