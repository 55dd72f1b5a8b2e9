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
