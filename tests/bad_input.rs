//! Bad scenario files: each gets a message naming the file, the field (and line where it can
//! be known) and the fix, with exit status 2 and never a panic.

use std::path::Path;
use std::process::Command;

const GOOD: &str = r#"name = "ok"
duration = 2
warmup = 0.5
replications = 2
[arrivals]
process = "poisson"
rate = 100
[[servers]]
name = "s"
count = 2
workers = 1
weight = 1
service = { dist = "exponential", mean = 0.005 }
[[strategies]]
kind = "weighted_random"
"#;

/// Runs `lbsim ARGS` on `src` written to a temp file; returns (status, stderr, file path).
fn lbsim(args: &[&str], src: &str, extra: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.toml");
    std::fs::write(&path, src).unwrap();
    for (name, content) in extra {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .args(args)
        .arg(&path)
        .args(
            ["--out", dir.path().join("out").to_str().unwrap()]
                .iter()
                .filter(|_| args[0] == "run"),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        out.status.code().unwrap_or(-1),
        stderr,
        path.display().to_string(),
    )
}

/// Asserts that `src` is refused with exit 2 and a message naming the file and `needles`.
fn refused(src: &str, needles: &[&str]) {
    refused_with(src, needles, &[]);
}

fn refused_with(src: &str, needles: &[&str], extra: &[(&str, &str)]) {
    for cmd in ["validate", "run"] {
        let (code, stderr, path) = lbsim(&[cmd], src, extra);
        assert_eq!(code, 2, "{cmd}: exit {code}, stderr:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.contains(&path) || stderr.contains("case.toml"),
            "no file name in:\n{stderr}"
        );
        assert!(stderr.contains("fix"), "no fix in:\n{stderr}");
        for n in needles {
            assert!(stderr.contains(n), "`{n}` missing from:\n{stderr}");
        }
    }
}

#[test]
fn the_good_file_is_accepted() {
    let (code, stderr, _) = lbsim(&["validate"], GOOD, &[]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr, _) = lbsim(&["run"], GOOD, &[]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn unknown_field() {
    refused(
        &GOOD.replace("workers = 1", "wrokers = 1"),
        &["wrokers", "line 11"],
    );
}

#[test]
fn unknown_strategy() {
    refused(
        &GOOD.replace("weighted_random\"", "fastest\""),
        &["fastest", "round_robin"],
    );
}

#[test]
fn wrong_type() {
    refused(
        &GOOD.replace("count = 2", "count = \"two\""),
        &["count", "line 10"],
    );
}

#[test]
fn negative_rate() {
    refused(
        &GOOD.replace("rate = 100", "rate = -5"),
        &["arrivals.rate", "case.toml:7"],
    );
}

#[test]
fn zero_rate() {
    refused(&GOOD.replace("rate = 100", "rate = 0"), &["arrivals.rate"]);
}

#[test]
fn zero_workers() {
    refused(
        &GOOD.replace("workers = 1", "workers = 0"),
        &["servers[0].workers", "case.toml:11"],
    );
}

#[test]
fn zero_servers() {
    refused(
        &GOOD.replace("count = 2", "count = 0"),
        &["servers[0].count", "case.toml:10"],
    );
}

#[test]
fn all_weights_zero() {
    refused(
        &GOOD.replace("weight = 1", "weight = 0"),
        &["weight", "weighted"],
    );
}

#[test]
fn negative_warmup() {
    refused(
        &GOOD.replace("warmup = 0.5", "warmup = -1"),
        &["warmup", "case.toml:3"],
    );
}

#[test]
fn warmup_longer_than_the_measured_window_is_accepted() {
    // `duration` is measured after the warm-up: a long warm-up before a short window is
    // legitimate (issue 9).
    let src = GOOD.replace("warmup = 0.5", "warmup = 20");
    lbsim::scenario::Scenario::from_source(std::path::Path::new("case.toml"), &src)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn unstable_configuration() {
    refused(
        &GOOD.replace("rate = 100", "rate = 500"),
        &["unstable", "400.0"],
    );
}

#[test]
fn infinite_mean_service() {
    refused(
        &GOOD.replace(
            "{ dist = \"exponential\", mean = 0.005 }",
            "{ dist = \"pareto\", shape = 0.9, scale = 0.001 }",
        ),
        &["servers[0].service", "shape"],
    );
}

const TRACE: &str = "[arrivals]\nprocess = \"trace\"\npath = \"arrivals.csv\"\n";

fn with_trace() -> String {
    GOOD.replace("[arrivals]\nprocess = \"poisson\"\nrate = 100\n", TRACE)
}

#[test]
fn trace_replay_works() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("case.toml"), with_trace()).unwrap();
    std::fs::write(
        dir.path().join("arrivals.csv"),
        "time,work\n0.6,0.004\n0.7,0.002\n1.5,0.001\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .args([
            "run",
            dir.path().join("case.toml").to_str().unwrap(),
            "--out",
        ])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = std::fs::read_to_string(dir.path().join("out/summary.csv")).unwrap();
    // Three requests in 2 s of window: throughput 1.5 req/s in every replication.
    assert!(
        summary.contains("ok,weighted_random,throughput,req/s,1.5,"),
        "{summary}"
    );
}

#[test]
fn empty_trace() {
    refused_with(
        &with_trace(),
        &["no arrivals", "arrivals.csv"],
        &[("arrivals.csv", "time\n")],
    );
}

#[test]
fn unreadable_trace() {
    refused(&with_trace(), &["cannot read", "arrivals.csv"]);
}

#[test]
fn malformed_trace_line() {
    refused_with(
        &with_trace(),
        &["arrivals.csv:3", "not a number"],
        &[("arrivals.csv", "time\n0.1\nsoon\n")],
    );
}

#[test]
fn missing_scenario_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .args(["validate", "does/not/exist.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does/not/exist.toml") && stderr.contains("fix"),
        "{stderr}"
    );
}

#[test]
fn scenario_path_is_not_a_toml() {
    let _ = Path::new("unused");
    refused("this is not toml", &["line 1"]);
}
