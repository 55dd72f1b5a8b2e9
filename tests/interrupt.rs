//! Ctrl-C keeps what finished: an interrupted `lbsim run` writes the replications that
//! completed (and says how many), an interrupted `lbsim live` writes the strategies it
//! replayed. Both exit with status 130.

use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

fn interrupt_after(mut cmd: Command, after: Duration) -> (i32, String) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lbsim");
    sleep(after);
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let started = Instant::now();
    let out = child.wait_with_output().expect("wait");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "did not stop after Ctrl-C"
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn interrupted_run_writes_the_replications_that_finished() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lbsim"));
    cmd.args([
        "run",
        "scenarios/heterogeneous.toml",
        "--replications",
        "100000",
        "--threads",
        "1",
        "--out",
    ])
    .arg(dir.path());
    let (code, stderr) = interrupt_after(cmd, Duration::from_millis(1500));
    assert_eq!(code, 130, "{stderr}");
    assert!(
        stderr.contains("interrupted:") && stderr.contains("of 100000 replications"),
        "{stderr}"
    );
    let summary = std::fs::read_to_string(dir.path().join("summary.csv")).unwrap();
    // scenario,strategy,metric,unit,mean,ci95_low,ci95_high,replications,unstable
    let reps: usize = summary
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(7)
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..100_000).contains(&reps), "{reps}");
    assert!(dir.path().join("report.md").exists());
}

#[test]
fn interrupted_live_run_writes_the_strategies_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lbsim"));
    // Calibration takes well under a second and each strategy 2.5 s: interrupting after
    // 3.5 s lands in the second strategy, which finishes; the other two are not started.
    cmd.args([
        "live",
        "scenarios/live-smoke.toml",
        "--calibration-calls",
        "10",
        "--out",
    ])
    .arg(dir.path());
    let (code, stderr) = interrupt_after(cmd, Duration::from_millis(3500));
    assert_eq!(code, 130, "{stderr}");
    assert!(
        stderr.contains("interrupted:") && stderr.contains("of 4 strategies replayed"),
        "{stderr}"
    );
    let summary = std::fs::read_to_string(dir.path().join("summary.csv")).unwrap();
    let strategies: std::collections::BTreeSet<&str> = summary
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(1))
        .collect();
    assert!(
        !strategies.is_empty() && strategies.len() < 4,
        "{strategies:?}"
    );
}
