//! Output folders (issue 10, classes 1 and 9): checked before any work, written
//! atomically, never mixed between runs, and free of stale files from another scenario.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lbsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// A shipped scenario copied into `dir` with a shorter run.
fn short(dir: &Path, name: &str) -> PathBuf {
    let src = std::fs::read_to_string(format!("scenarios/{name}.toml"))
        .unwrap()
        .replace("duration = 30.0", "duration = 3.0")
        .replace("duration = 10.0", "duration = 3.0")
        .replace("warmup = 2.0", "warmup = 0.5")
        .replace("warmup = 3.0", "warmup = 0.5");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, src).unwrap();
    path
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The scenario names in a CSV's `scenario` column.
fn scenarios_in(csv: &Path) -> Vec<String> {
    let mut r = csv::Reader::from_path(csv).unwrap();
    let col = r.headers().unwrap().iter().position(|h| h == "scenario");
    let mut names: Vec<String> = r
        .records()
        .map(|rec| rec.unwrap()[col.unwrap()].to_string())
        .collect();
    names.dedup();
    names
}

#[test]
fn a_reused_out_holds_no_stale_files_from_another_scenario() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.md"), "mine").unwrap();
    let sweep = short(tmp.path(), "load-by-balancers");
    let o = lbsim(&[
        "run",
        sweep.to_str().unwrap(),
        "--replications",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(out.join("sweep.csv").exists() && out.join("sweep_p99.svg").exists());

    let mm1 = short(tmp.path(), "mm1");
    let o = lbsim(&[
        "run",
        mm1.to_str().unwrap(),
        "--replications",
        "2",
        "--png",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let left = files(&out);
    assert!(!left.iter().any(|f| f.starts_with("sweep")), "{left:?}");
    assert!(!left.iter().any(|f| f.ends_with(".svg")), "{left:?}");
    assert!(
        !left
            .iter()
            .any(|f| f.contains("staging") || f.contains(".tmp")),
        "{left:?}"
    );
    assert!(
        left.contains(&"notes.md".to_string()),
        "a file lbsim did not write was removed"
    );
    for csv in ["summary.csv", "servers.csv"] {
        assert_eq!(scenarios_in(&out.join(csv)), vec!["mm1"], "{csv}");
    }
}

#[test]
fn concurrent_runs_into_one_out_do_not_mix() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let a = short(tmp.path(), "mm1");
    let b = short(tmp.path(), "load-by-balancers");
    let spawn = |s: &PathBuf| {
        Command::new(env!("CARGO_BIN_EXE_lbsim"))
            .args(["run", s.to_str().unwrap(), "--replications", "2", "--out"])
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut x, mut y) = (spawn(&a), spawn(&b));
    assert!(x.wait().unwrap().success() && y.wait().unwrap().success());
    // Whichever finished last, every file is from that one run.
    let name = scenarios_in(&out.join("summary.csv"));
    assert_eq!(name.len(), 1, "{name:?}");
    for csv in ["servers.csv", "comparisons.csv"] {
        assert_eq!(scenarios_in(&out.join(csv)), name, "{csv}");
    }
    assert_eq!(
        out.join("sweep.csv").exists(),
        name[0] == "load-by-balancers"
    );
}

#[test]
fn an_unwritable_out_fails_before_the_simulation() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let mm1 = short(tmp.path(), "mm1");
    for out in [file.clone(), file.join("below")] {
        let o = lbsim(&["run", mm1.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{t}");
        assert!(t.contains("--out") && t.contains("fix:"), "{t}");
        // Refused before the run started (which announces its strategies).
        assert!(!t.contains("strategies ×"), "{t}");
    }
}

/// A write that fails part-way (a file-size limit, as a full disk) is an error, and the
/// previous run's files stay whole.
#[cfg(unix)]
#[test]
fn a_short_write_fails_loudly_and_keeps_the_previous_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mm1 = short(tmp.path(), "mm1");
    let o = lbsim(&[
        "run",
        mm1.to_str().unwrap(),
        "--replications",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let before = std::fs::read(out.join("summary.csv")).unwrap();
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 4; trap '' XFSZ; exec '{}' run '{}' --replications 3 --out '{}'",
            env!("CARGO_BIN_EXE_lbsim"),
            mm1.display(),
            out.display()
        ))
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("error: cannot") && t.contains("File too large"),
        "{t}"
    );
    assert_eq!(std::fs::read(out.join("summary.csv")).unwrap(), before);
    let left = files(&out);
    assert!(
        !left
            .iter()
            .any(|f| f.contains("staging") || f.contains(".tmp")),
        "{left:?}"
    );
}
