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

// ---- Issue 10: inputs that validated but could not be simulated, cost, silent input ----

/// Runs `lbsim ARGS case.toml` with a time limit; returns (status, stderr). A hang fails.
fn bounded(args: &[&str], src: &str, extra: &[(&str, &str)], fifo: bool) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.toml");
    std::fs::write(&path, src).unwrap();
    for (name, content) in extra {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    if fifo {
        let made = Command::new("mkfifo")
            .arg(dir.path().join("fifo"))
            .status()
            .unwrap();
        assert!(made.success());
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .args(&args[..1])
        .arg(&path)
        .args(&args[1..])
        .args(
            ["--out", dir.path().join("out").to_str().unwrap()]
                .iter()
                .filter(|_| args[0] == "run"),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("err")).unwrap())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("lbsim {args:?} did not finish within 60 s on:\n{src}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let stderr = std::fs::read_to_string(dir.path().join("err")).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (status.code().unwrap_or(-1), stderr)
}

fn refused_fast(src: &str, needles: &[&str]) {
    refused_fast_with(src, needles, &[], false);
}

fn refused_fast_with(src: &str, needles: &[&str], extra: &[(&str, &str)], fifo: bool) {
    for cmd in ["validate", "run"] {
        let (code, stderr) = bounded(&[cmd], src, extra, fifo);
        assert_eq!(code, 2, "{cmd}: exit {code}:\n{stderr}");
        assert!(stderr.contains("fix"), "{cmd}: no fix in:\n{stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{cmd}: `{n}` missing from:\n{stderr}");
        }
    }
}

fn with_arrivals(arrivals: &str) -> String {
    GOOD.replace("process = \"poisson\"\nrate = 100\n", arrivals)
}

/// Class 2: every event source advances simulated time or ends.
#[test]
fn traffic_that_stops_finishes() {
    let src = with_arrivals(
        "process = \"piecewise\"\npoints = [{ at = 0, rate = 100 }, { at = 1, rate = 0 }]\n",
    );
    let (code, stderr) = bounded(&["run"], &src, &[], false);
    assert_eq!(code, 0, "{stderr}");
}

/// Class 2: timers too short to advance the clock, or too long to mean anything, and a
/// gamma too narrow to compute, are refused with the bound and the fix.
#[test]
fn fields_are_bounded_to_what_can_be_simulated() {
    let cases: Vec<(String, &[&str])> = vec![
        (
            with_arrivals("process = \"on_off\"\nrate = 200\nmean_on = 1\nmean_off = 1e300\n"),
            &["arrivals.mean_off", "1e9"],
        ),
        (
            with_arrivals("process = \"mmpp\"\nrates = [100, 10]\nmean_sojourn = [1e-300, 1]\n"),
            &["arrivals.mean_sojourn", "1e-6"],
        ),
        (
            GOOD.replace(
                "[[strategies]]",
                "[connections]\nclients = 4\nlifetime = 1e-9\n[[strategies]]",
            ),
            &["connections.lifetime", "1e-6"],
        ),
        (
            GOOD.replace(
                "replications = 2",
                "replications = 2\nload_report_interval = 1e-300",
            ),
            &["load_report_interval"],
        ),
        (
            GOOD.replace(
                "dist = \"exponential\", mean = 0.005",
                "dist = \"gamma\", mean = 0.005, cv = 1e-200",
            ),
            &["servers[0].service", "0.01", "deterministic"],
        ),
        (
            GOOD.replace(
                "dist = \"exponential\", mean = 0.005",
                "dist = \"gamma\", mean = 0.005, cv = 0.001",
            ),
            &["servers[0].service", "cv"],
        ),
        (
            GOOD.replace("duration = 2", "duration = 1e12"),
            &["duration", "1e9"],
        ),
    ];
    for (src, needles) in cases {
        refused_fast(&src, needles);
    }
}

/// Class 3: absurd sizes are refused at once, without allocating for them, and a run
/// beyond the cost limit is refused with the flag that raises it.
#[test]
fn absurd_sizes_are_refused_before_any_allocation() {
    let cases: Vec<(String, &[&str])> = vec![
        (
            GOOD.replace("count = 2", "count = 1000000000"),
            &["servers", "100000"],
        ),
        (
            GOOD.replace("workers = 1", "workers = 4000000000"),
            &["servers[0].workers"],
        ),
        (
            GOOD.replace("replications = 2", "replications = 4000000000"),
            &["replications"],
        ),
        (
            GOOD.replace(
                "[[strategies]]",
                "[connections]\nclients = 4000000000\npool_size = 4000000000\n[[strategies]]",
            ),
            &["connections.clients"],
        ),
        (
            format!("{GOOD}[sweep]\nload = [{}]\n", vec!["0.5"; 5000].join(", ")),
            &["sweep", "1000"],
        ),
        (
            GOOD.replace(
                "kind = \"weighted_random\"",
                "kind = \"maglev\"\ntable_size = 18446744073709551557",
            ),
            &["table_size"],
        ),
        (
            GOOD.replace(
                "kind = \"weighted_random\"",
                "kind = \"least_request\"\nchoice_count = 9223372036854775807",
            ),
            &["choice_count"],
        ),
        (
            GOOD.replace("duration = 2", "duration = 5e8")
                .replace("rate = 100", "rate = 300"),
            &["events", "--max-events"],
        ),
    ];
    for (src, needles) in cases {
        refused_fast(&src, needles);
    }
    // The limit is a flag: raised, the same file validates (and says what it would cost).
    let big = GOOD
        .replace("duration = 2", "duration = 5e8")
        .replace("rate = 100", "rate = 300");
    let (code, stderr) = bounded(&["validate", "--max-events", "1e13"], &big, &[], false);
    assert_eq!(code, 0, "{stderr}");
    // Absurd thread counts are bad flags.
    for t in ["0", "100000"] {
        let (code, stderr) = bounded(&["run", "--threads", t], GOOD, &[], false);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("--threads"), "{stderr}");
    }
}

/// Class 3: `validate` prints the estimated cost.
#[test]
fn validate_prints_the_estimated_cost() {
    let (code, stdout, _) = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("case.toml");
        std::fs::write(&path, GOOD).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_lbsim"))
            .arg("validate")
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            (),
        )
    };
    assert_eq!(code, Some(0));
    // 100 req/s for 2.5 s: 250 requests, 2 events each, 2 replications.
    assert!(
        stdout.contains("about 1000 events (250 requests per replication)"),
        "{stdout}"
    );
}

/// Class 8: input that used to be ignored or mishandled without a word.
#[test]
fn silently_ignored_input_is_an_error() {
    let cases: Vec<(String, &[&str])> = vec![
        (
            GOOD.replace("kind = \"weighted_random\"", "kind = \"jiq\"\nd = 3"),
            &["strategies[0].d", "no parameter"],
        ),
        (
            GOOD.replace(
                "kind = \"weighted_random\"",
                "kind = \"round_robin\"\nweighted = true",
            ),
            &["strategies[0].weighted"],
        ),
        (
            GOOD.replace(
                "kind = \"weighted_random\"",
                "kind = \"power_of_d\"\nchoices = 3",
            ),
            &["choices", "expected `d` or `replacement`"],
        ),
        (
            GOOD.replace(
                "kind = \"weighted_random\"",
                "kind = \"random\"\nlabel = \"\"",
            ),
            &["strategies[0].label"],
        ),
        (GOOD.replace("name = \"ok\"", "name = \"..\""), &["name"]),
        (GOOD.replace("name = \"ok\"", "name = \".\""), &["name"]),
    ];
    for (src, needles) in cases {
        refused_fast(&src, needles);
    }
}

/// Class 8: a trace that is a device or a FIFO is refused at once (it used to grow
/// memory until a crash, or block for ever); work beyond the clock's range is an error,
/// not clamped.
#[cfg(unix)]
#[test]
fn traces_must_be_regular_files_of_simulable_values() {
    refused_fast(
        &with_arrivals("process = \"trace\"\npath = \"/dev/zero\"\n"),
        &["regular file"],
    );
    refused_fast_with(
        &with_arrivals("process = \"trace\"\npath = \"fifo\"\n"),
        &["regular file"],
        &[],
        true,
    );
    refused_fast_with(
        &with_arrivals("process = \"trace\"\npath = \"t.csv\"\n"),
        &["t.csv:3", "work", "1e9"],
        &[("t.csv", "time,work\n0.1,0.01\n0.2,1e30\n")],
        false,
    );
}

/// Class 8: response times beyond the latency histogram's range are said, not clamped
/// silently.
#[test]
fn clamped_percentiles_are_reported() {
    let src = GOOD
        .replace("rate = 100", "rate = 0.1")
        .replace("duration = 2", "duration = 100")
        .replace("workers = 1", "workers = 1000")
        .replace(
            "dist = \"exponential\", mean = 0.005",
            "dist = \"deterministic\", value = 5000",
        );
    let (code, stderr) = bounded(&["run"], &src, &[], false);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("beyond the") && stderr.contains("latency histogram"),
        "{stderr}"
    );
}
