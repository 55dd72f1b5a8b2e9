//! `lbsim check`: passes on its own baseline, fails on a deliberately degraded strategy,
//! and prints Markdown or JSON.

use std::path::Path;
use std::process::Command;

/// A short copy of the shipped heterogeneous scenario in `dir`, with `edit` applied.
fn scenario(dir: &Path, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let src = std::fs::read_to_string("scenarios/heterogeneous.toml")
        .unwrap()
        .replace("duration = 60.0", "duration = 10.0")
        .replace("warmup = 10.0", "warmup = 2.0");
    let path = dir.join("heterogeneous.toml");
    std::fs::write(&path, edit(src)).unwrap();
    path
}

fn check(scenario: &Path, baseline: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .arg("check")
        .arg(scenario)
        .arg("--baseline")
        .arg(baseline)
        .args(["--replications", "5"])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn passes_on_baseline_and_fails_on_degraded_strategy() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("baseline");
    let good = scenario(tmp.path(), |s| s);
    let (code, out) = check(&good, &base, &["--update"]);
    assert_eq!(code, 0, "{out}");
    assert!(base.join("heterogeneous/summary.csv").exists());

    let (code, out) = check(&good, &base, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no regression"), "{out}");

    // least_connections secretly becomes random: same label, worse balancing.
    let bad_dir = tmp.path().join("bad");
    std::fs::create_dir(&bad_dir).unwrap();
    let bad = scenario(&bad_dir, |s| {
        s.replacen(
            "[[strategies]]\nkind = \"least_connections\"",
            "[[strategies]]\nlabel = \"least_connections\"\nkind = \"random\"",
            1,
        )
    });
    let (code, out) = check(&bad, &base, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("| ❌ | heterogeneous | least_connections | `latency_p99`"),
        "{out}"
    );
    assert!(
        !out.contains("| ❌ | heterogeneous | round_robin |"),
        "{out}"
    );

    // A huge tolerance lets it through; JSON says the same.
    let (code, out) = check(&bad, &base, &["--tolerance", "*=100", "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["passed"], true);
}

#[test]
fn missing_baseline_says_how_to_create_it() {
    let tmp = tempfile::tempdir().unwrap();
    let good = scenario(tmp.path(), |s| s);
    let (code, out) = check(&good, &tmp.path().join("none"), &[]);
    assert_eq!(code, 2, "bad input, not a regression: {out}");
    assert!(out.contains("--update"), "{out}");
}

/// Regression (issue 10): a baseline that is empty, header-only, a folder, of another
/// scenario, or missing strategies/metrics is an error (exit 2), never "no regression".
#[test]
fn an_incomplete_baseline_is_an_error_not_a_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("baseline");
    let good = scenario(tmp.path(), |s| s);
    let (code, out) = check(&good, &base, &["--update"]);
    assert_eq!(code, 0, "{out}");
    let file = base.join("heterogeneous/summary.csv");
    let full = std::fs::read_to_string(&file).unwrap();
    let header = full.lines().next().unwrap().to_string();
    let without = |needle: &str| -> String {
        full.lines()
            .filter(|l| !l.contains(needle))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("header only", format!("{header}\n")),
        ("a strategy missing", without(",random,")),
        ("a metric missing", without(",latency_p99,")),
        ("another scenario", full.replace("heterogeneous,", "other,")),
    ];
    for (what, content) in cases {
        std::fs::write(&file, &content).unwrap();
        let (code, out) = check(&good, &base, &[]);
        assert_eq!(code, 2, "{what}: {out}");
        assert!(!out.contains("no regression"), "{what}: {out}");
        assert!(out.contains("--update"), "{what}: {out}");
    }
    // New strategies/metrics are accepted only when asked, and listed.
    std::fs::write(&file, without(",random,")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .arg("check")
        .arg(&good)
        .arg("--baseline")
        .arg(&base)
        .args(["--replications", "5", "--allow-new", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let new: Vec<&serde_json::Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "new")
        .collect();
    assert!(!new.is_empty() && new.iter().all(|f| f["strategy"] == "random"));
    // summary.csv a folder.
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    let (code, out) = check(&good, &base, &[]);
    assert_eq!(code, 2, "{out}");
}

/// Regression (issue 10): `--replications 0` (or 1) is bad input, not 90 regressions.
#[test]
fn too_few_replications_are_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let good = scenario(tmp.path(), |s| s);
    for n in ["0", "1"] {
        let out = Command::new(env!("CARGO_BIN_EXE_lbsim"))
            .arg("check")
            .arg(&good)
            .args(["--baseline", "reports/baseline", "--replications", n])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(text.contains("--replications"), "{text}");
    }
}

/// Regression (issue 10): `--update` replaces the baseline atomically: an update that
/// fails (here: a file-size limit, as a full disk) leaves the old baseline whole, and
/// says so with a non-zero exit.
#[cfg(unix)]
#[test]
fn a_failed_update_leaves_the_old_baseline() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("baseline");
    let good = scenario(tmp.path(), |s| s);
    let (code, out) = check(&good, &base, &["--update"]);
    assert_eq!(code, 0, "{out}");
    let file = base.join("heterogeneous/summary.csv");
    let before = std::fs::read(&file).unwrap();
    // 1 kB file-size limit, SIGXFSZ ignored: writes fail with EFBIG.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 1; trap '' XFSZ; exec '{}' check '{}' --baseline '{}' --replications 5 --update",
            env!("CARGO_BIN_EXE_lbsim"),
            good.display(),
            base.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("cannot write"), "{text}");
    assert_eq!(std::fs::read(&file).unwrap(), before, "baseline changed");
    let (code, out) = check(&good, &base, &[]);
    assert_eq!(code, 0, "{out}");
}

/// Issue 8: an unknown metric in `--tolerance` is bad input (exit 2) listing the valid
/// names, before anything runs.
#[test]
fn unknown_tolerance_metric_lists_the_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let good = scenario(tmp.path(), |s| s);
    let (code, out) = check(
        &good,
        &tmp.path().join("none"),
        &["--tolerance", "latency_p98=0.1"],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no metric `latency_p98`"), "{out}");
    for m in lbsim::metrics::Metric::ALL {
        assert!(out.contains(m.name()), "{m} not listed: {out}");
    }
}
