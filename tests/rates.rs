//! Issue 11: offered load (with retries) and goodput over time, from `rates.csv`. The
//! metastable failure of `scenarios/retry-storm.toml` shows in it: without a budget the
//! attempts sent stay far above goodput long after the slowdown ends; a retry budget or
//! throttling brings goodput back to the offered load.

use std::process::Command;

/// `scenarios/retry-storm.toml` made shorter: warm-up 5 s, the 2× slowdown from 10 s to
/// 15 s, the measured window ending at 45 s; the strategies and policies are the file's.
fn short_retry_storm(dir: &std::path::Path) -> String {
    let src = std::fs::read_to_string("scenarios/retry-storm.toml").unwrap();
    for line in ["warmup = 10\n", "duration = 60\n", "at = 25\n"] {
        assert!(src.contains(line), "retry-storm.toml changed: {line}");
    }
    let src = src
        .replace("warmup = 10\n", "warmup = 5\n")
        .replace("duration = 60\n", "duration = 40\n")
        .replace("at = 25\n", "at = 10\n");
    let path = dir.join("retry-storm.toml");
    std::fs::write(&path, src).unwrap();
    path.to_string_lossy().into_owned()
}

/// Mean rates of `strategy` over the intervals starting in `[from, to)`, as
/// (offered, attempts, goodput) in requests/s.
fn mean_rates(csv: &str, strategy: &str, from: f64, to: f64) -> (f64, f64, f64) {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (s, t, o, a, g) = (
        col("strategy"),
        col("time"),
        col("offered"),
        col("attempts"),
        col("goodput"),
    );
    let mut sum = (0.0, 0.0, 0.0);
    let mut n = 0.0;
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let time: f64 = f[t].parse().unwrap();
        if f[s] == strategy && time >= from && time < to {
            sum.0 += f[o].parse::<f64>().unwrap();
            sum.1 += f[a].parse::<f64>().unwrap();
            sum.2 += f[g].parse::<f64>().unwrap();
            n += 1.0;
        }
    }
    assert!(n >= 10.0, "{strategy}: {n} intervals in [{from}, {to})");
    (sum.0 / n, sum.1 / n, sum.2 / n)
}

/// Before the slowdown every strategy serves what arrives with no retries; in the last
/// 10 s (20 s after the slowdown ended) unbudgeted retries still send several attempts per
/// request and serve almost nothing, while the budgeted strategies serve the offered load
/// again. Over 10 s about 28,000 requests arrive (Poisson: 0.6% relative noise), so the
/// 10% margins are noise-proof, and the collapse they tell apart is a factor of four.
#[test]
fn retry_storm_rates_show_the_metastable_failure_and_the_budgets_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = short_retry_storm(tmp.path());
    let out = tmp.path().join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .args(["run", &scenario, "--replications", "2", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let csv = std::fs::read_to_string(out.join("rates.csv")).unwrap();
    assert!(
        csv.starts_with(
            "scenario,strategy,replication,time,interval,offered,attempts,goodput,failed,timed_out,rejected\n"
        ),
        "{}",
        &csv[..200]
    );
    let strategies = [
        "no-retries",
        "retries",
        "retries+finagle-budget",
        "retries+grpc-throttling",
    ];
    for s in strategies {
        let (offered, attempts, goodput) = mean_rates(&csv, s, 5.0, 10.0);
        assert!((offered - 2800.0).abs() < 280.0, "{s}: offered {offered}");
        assert!(attempts < 1.1 * offered, "{s}: attempts {attempts}");
        assert!(goodput > 0.9 * offered, "{s}: goodput {goodput}");
    }
    let (offered, attempts, goodput) = mean_rates(&csv, "retries", 35.0, 45.0);
    assert!(
        attempts > 3.0 * offered && goodput < 0.1 * offered,
        "retries still collapsed 20 s after the trigger: offered {offered}, attempts {attempts}, goodput {goodput}"
    );
    for s in ["retries+finagle-budget", "retries+grpc-throttling"] {
        let (offered, attempts, goodput) = mean_rates(&csv, s, 35.0, 45.0);
        assert!(
            goodput > 0.9 * offered && attempts < 1.1 * offered,
            "{s} recovered: offered {offered}, attempts {attempts}, goodput {goodput}"
        );
    }
    // The plot is drawn beside the CSV, with the slowdown shaded.
    let svg = std::fs::read_to_string(out.join("rates_over_time.svg")).unwrap();
    assert!(svg.contains("goodput") && svg.contains("slow 10 servers"));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("](rates_over_time.svg)"), "{md}");
}
