//! The command line as a user meets it: `validate` on many files, `--strategy` subsets,
//! `check` with its default baseline, shell completions and the man page, and `lbsim live`'s
//! exit status when it gives no verdict.

use std::path::Path;
use std::process::{Command, Output};

fn lbsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .args(args)
        .output()
        .expect("run lbsim")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn validate_checks_every_file_and_reports_a_peak() {
    let out = lbsim(&[
        "validate",
        "scenarios/extra/spike-16.toml",
        "scenarios/no-such-file.toml",
        "scenarios/bursty.toml",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "one file is missing: {t}");
    // The files after the bad one are still checked.
    assert!(t.contains("scenarios/bursty.toml: valid"), "{t}");
    assert!(
        t.contains("no-such-file.toml") && t.contains("1 of 3 files invalid"),
        "{t}"
    );
    assert!(
        t.contains("time-varying rate: peak 7920.0 req/s at 16 s (110% of capacity"),
        "{t}"
    );
    assert!(t.contains("peak 2000.0 req/s in the high state"), "{t}");
    let out = lbsim(&["validate", "scenarios/mm1.toml", "scenarios/crash.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// `summary.csv` rows of one strategy.
fn rows_of(dir: &Path, strategy: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join("summary.csv"))
        .unwrap()
        .lines()
        .filter(|l| l.split(',').nth(1) == Some(strategy))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_strategy_subset_gives_the_same_figures_as_the_full_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, one) = (tmp.path().join("all"), tmp.path().join("one"));
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "run",
            "scenarios/slow-server.toml",
            "--replications",
            "2",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = lbsim(&args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    };
    run(&all, &[]);
    run(&one, &["--strategy", "least_connections"]);
    let kept = rows_of(&one, "least_connections");
    assert!(!kept.is_empty());
    assert_eq!(kept, rows_of(&all, "least_connections"));
    assert!(rows_of(&one, "round_robin").is_empty());
    let md = std::fs::read_to_string(one.join("report.md")).unwrap();
    assert!(
        md.contains("--strategy least_connections"),
        "reproducible: {md}"
    );

    let o = lbsim(&["run", "scenarios/slow-server.toml", "--strategy", "nope"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("no strategy labelled `nope`") && t.contains("round_robin"),
        "{t}"
    );
}

#[test]
fn check_defaults_to_the_committed_baseline() {
    let o = lbsim(&["check", "scenarios/mm1.toml"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.starts_with("## lbsim check: ✅ no regression (1 scenario checked)"),
        "{t}"
    );
    let o = lbsim(&[
        "check",
        "scenarios/load-sweep.toml",
        "--strategy",
        "least_connections",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("sweep points not checked: `load-sweep` (5 points)"),
        "{t}"
    );
}

#[test]
fn completions_and_man_page_come_from_the_parser() {
    let o = lbsim(&["completions", "bash"]);
    let t = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0));
    assert!(t.contains("_lbsim()") && t.contains("--baseline"), "{t}");
    let o = lbsim(&["man"]);
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.starts_with(".ie") || t.contains(".TH lbsim"), "{t}");
    let dir = tempfile::tempdir().unwrap();
    let o = lbsim(&["man", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for page in ["lbsim.1", "lbsim-run.1", "lbsim-check.1", "lbsim-live.1"] {
        assert!(dir.path().join(page).exists(), "{page}");
    }
}

#[test]
fn live_without_a_verdict_exits_3_and_draws_png() {
    // A lag threshold no machine meets: the run completes, the comparison is refused.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("live");
    let o = lbsim(&[
        "live",
        "scenarios/live-smoke.toml",
        "--strategy",
        "round_robin",
        "--replications",
        "2",
        "--max-lag",
        "1e-9",
        "--png",
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(
        t.contains("no verdict") && t.contains("exit status 3"),
        "{t}"
    );
    let png = std::fs::read(out.join("cdf.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(!out.join("cdf.svg").exists());
}
