//! Signals keep what finished: an interrupted (SIGINT) or terminated (SIGTERM, what
//! Slurm and Kubernetes send) `lbsim run` stops inside the replication under way within a
//! bounded time and writes the replications that completed (and says how many), also
//! with `--shard`; an interrupted `lbsim live` writes the strategies it replayed. Exit
//! status 128 + the signal: 130 for SIGINT, 143 for SIGTERM. A second Ctrl-C loses
//! nothing, and a closed stdout (`| head -1`) neither panics nor stops the files.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::process::{Watched, lbsim};

use lbsim::cancel::Cancel;
use lbsim::live::server::ServerHandle;
use lbsim::scenario::Scenario;
use lbsim::sim::{Run, simulate};
use lbsim::workload::RequestStream;

/// The replications column of the first row of `summary.csv`.
fn replications_written(dir: &Path) -> usize {
    let summary = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    let mut lines = summary.lines();
    let column = lines
        .next()
        .unwrap()
        .split(',')
        .position(|c| c == "replications")
        .expect("a replications column");
    lines
        .next()
        .unwrap()
        .split(',')
        .nth(column)
        .unwrap()
        .parse()
        .unwrap()
}

/// mm1.toml with replications of `duration` simulated seconds (800 requests a second).
fn long_mm1(dir: &Path, duration: f64) -> std::path::PathBuf {
    let text = std::fs::read_to_string("scenarios/mm1.toml").unwrap();
    let text = text.replace("duration = 30.0", &format!("duration = {duration:.1}"));
    assert!(text.contains(&format!("duration = {duration:.1}")));
    let path = dir.join("long-mm1.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `scenarios/heterogeneous.toml` with a 2 s window after a 0.5 s warm-up: a replication
/// takes milliseconds, so a signal 3 s in finds some finished even on a loaded machine
/// (with the shipped 60 s window none had finished at a load average of 13).
fn short_heterogeneous(dir: &Path) -> String {
    let text = std::fs::read_to_string("scenarios/heterogeneous.toml").unwrap();
    let short = text
        .replace("duration = 60.0 ", "duration = 2.0 ")
        .replace("warmup = 10.0 ", "warmup = 0.5 ");
    assert!(short.contains("duration = 2.0 ") && short.contains("warmup = 0.5 "));
    let path = dir.join("heterogeneous-short.toml");
    std::fs::write(&path, short).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Long enough for anything a test waits on to happen, however loaded the machine: it
/// only bounds a hang.
const LONG: Duration = Duration::from_secs(120);

/// CPU time a long run spends before the first signal: hundreds of its replications (a
/// few milliseconds each) finish in it, however slowly a loaded machine lets it run.
const WORK_BEFORE_SIGNAL: Duration = Duration::from_millis(500);

/// What `lbsim run` says on stderr when it has handled its first and second stop signal.
const ANSWERS: [&str; 2] = [": stopping", "still stopping"];

/// `lbsim run` of [`short_heterogeneous`] asking for 100,000 replications (far beyond the
/// default cost limits, events and memory, on purpose: a signal stops it) with `extra`
/// flags, writing into `dir`, stopped by `signals`; it must end within 10 s of the first.
///
/// Each step waits for a state, not a time (a loaded machine stretches times: with these
/// tests in parallel at a load average of 13–15, a signal 1.5 s in found no replication
/// finished in one run of three, and two signals sent 20 ms apart arrived as one):
/// - the first signal goes once the run has said on stderr that it started (its handlers
///   are installed before) and has then used [`WORK_BEFORE_SIGNAL`] of CPU time;
/// - each further signal once the process has answered the one before on stderr
///   ([`ANSWERS`]): a signal sent while another of its kind is still pending is lost.
fn signal_a_long_run(dir: &Path, extra: &[&str], signals: &[&str]) -> (i32, String) {
    let scenario = short_heterogeneous(dir);
    let mut cmd = lbsim();
    cmd.args([
        "run",
        &scenario,
        "--replications",
        "100000",
        "--max-events",
        "1e13",
        "--max-memory",
        "1000G",
    ])
    .args(extra)
    .arg("--out")
    .arg(dir);
    let mut run = Watched::spawn(cmd);
    run.wait_for_line("measured after", LONG);
    let started = run.cpu_time();
    run.wait_for_cpu(started + WORK_BEFORE_SIGNAL, LONG);
    let first = Instant::now();
    for (sig, answer) in signals.iter().zip(ANSWERS) {
        run.signal(sig);
        run.wait_for_line(answer, LONG);
    }
    run.finish(Duration::from_secs(10).saturating_sub(first.elapsed()))
}

/// Asserts that `dir` holds the reports of some, but not all, of `total` replications.
fn assert_some_written(dir: &Path, total: usize) {
    let reps = replications_written(dir);
    assert!((1..total).contains(&reps), "{reps} of {total}");
    assert!(dir.join("report.md").exists());
}

#[test]
fn interrupted_run_writes_the_replications_that_finished() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = signal_a_long_run(dir.path(), &["--threads", "1"], &["INT"]);
    assert_eq!(code, 130, "{stderr}");
    assert!(
        stderr.contains("interrupted:") && stderr.contains("of 100000 replications"),
        "{stderr}"
    );
    assert_some_written(dir.path(), 100_000);
}

#[test]
fn interrupted_live_run_writes_the_strategies_replayed() {
    let dir = tempfile::tempdir().unwrap();
    // live-smoke at 4.5 s a strategy, replayed against backends started here, so that the
    // test sees how far the replay got by the calls they served: the signal goes once the
    // first strategy has been replayed and the second has had 1,000 of its calls (about
    // 1 s of its 4.5 s). The second stops at once (well before its own end) and is
    // dropped; the first is compared and written, and the last two are not started.
    let text = std::fs::read_to_string("scenarios/live-smoke.toml").unwrap();
    let text = text.replace("duration = 5.0 ", "duration = 3.5 ");
    assert!(text.contains("duration = 3.5 "));
    let path = dir.path().join("live-smoke-4s.toml");
    std::fs::write(&path, text).unwrap();
    let scenario = Scenario::load(&path).unwrap();
    let calls = RequestStream::new(&scenario.workload, scenario.seed, 0).count() as u64;
    let backends = common::cluster_for(&scenario, |_, _| {});
    let served = || backends.iter().map(ServerHandle::served).sum::<u64>();
    let addrs: Vec<String> = backends
        .iter()
        .map(|b| b.local_addr().to_string())
        .collect();
    let mut cmd = lbsim();
    cmd.arg("live")
        .arg(&path)
        .args(["--calibration-calls", "10", "--backends", &addrs.join(",")])
        .arg("--out")
        .arg(dir.path().join("out"));
    let mut live = Watched::spawn(cmd);
    // Calibration's calls come on top: this is more than the first strategy alone sends.
    live.wait_until(
        "the second strategy under way",
        || served() > calls + 1000,
        LONG,
    );
    live.signal("INT");
    let (code, stderr) = live.finish(LONG);
    assert_eq!(code, 130, "{stderr}");
    let total = served();
    assert!(
        total < 2 * calls,
        "the second strategy ran to its end: {total} calls served, {calls} a strategy"
    );
    assert!(
        stderr.contains("interrupted: 1 of 4 strategies replayed"),
        "{stderr}"
    );
    let summary = std::fs::read_to_string(dir.path().join("out").join("summary.csv")).unwrap();
    let strategies: std::collections::BTreeSet<&str> = summary
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(1))
        .collect();
    assert_eq!(strategies.len(), 1, "{strategies:?}");
}

#[test]
fn sigterm_stops_inside_a_replication() {
    let dir = tempfile::tempdir().unwrap();
    // 20,000 simulated seconds: 16 million requests, several seconds of CPU a replication
    // even on a fast core. SIGTERM once the run has started and used 0.2 s of CPU lands
    // inside the first replication; ending after less than 1 s more of CPU shows the
    // replication was abandoned rather than finished.
    let scenario = long_mm1(dir.path(), 20_000.0);
    let mut cmd = lbsim();
    cmd.arg("run")
        .arg(&scenario)
        .args(["--replications", "3", "--threads", "1", "--out"])
        .arg(dir.path().join("out"));
    let mut run = Watched::spawn(cmd);
    run.wait_for_line("measured after", LONG);
    let started = run.cpu_time();
    run.wait_for_cpu(started + Duration::from_millis(200), LONG);
    run.signal("TERM");
    let signalled = run.cpu_time();
    let (code, stderr, cpu) = run.finish_with_cpu(LONG);
    assert_eq!(code, 143, "{stderr}");
    assert!(
        cpu < signalled + Duration::from_secs(1),
        "{cpu:?} of CPU at the end, {signalled:?} at the signal: {stderr}"
    );
    assert!(
        stderr.contains("SIGTERM") && stderr.contains("nothing to write"),
        "{stderr}"
    );
    assert!(!dir.path().join("out").join("summary.csv").exists());
}

#[test]
fn sigterm_writes_the_replications_that_finished() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = signal_a_long_run(dir.path(), &["--threads", "2"], &["TERM"]);
    assert_eq!(code, 143, "{stderr}");
    assert!(
        stderr.contains("of 100000 replications finished"),
        "{stderr}"
    );
    assert_some_written(dir.path(), 100_000);
}

#[test]
fn sigterm_on_a_shard_writes_its_finished_replications() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = signal_a_long_run(dir.path(), &["--shard", "1/2"], &["TERM"]);
    assert_eq!(code, 143, "{stderr}");
    assert!(
        stderr.contains("of 50000 replications of this shard finished"),
        "{stderr}"
    );
    let shard = dir.path().join("shard-1-of-2.json");
    assert!(shard.exists(), "{stderr}");
    // What was written merges (as an incomplete run: shard 0 is missing).
    let merged = dir.path().join("merged");
    let out = lbsim()
        .arg("merge")
        .arg(&shard)
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("incomplete"), "{stderr}");
    assert_some_written(&merged, 50_000);
}

#[test]
fn second_ctrl_c_keeps_what_finished() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = signal_a_long_run(dir.path(), &["--threads", "1"], &["INT", "INT"]);
    assert_eq!(code, 130, "{stderr}");
    assert!(stderr.contains("still stopping"), "{stderr}");
    assert_some_written(dir.path(), 100_000);
}

#[test]
fn closed_stdout_neither_panics_nor_stops_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = lbsim()
        .args(["run", "scenarios/mm1.toml", "--replications", "3", "--out"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // As `| true` does: the reading end closes before anything is read.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(replications_written(dir.path()), 3);
    assert!(dir.path().join("report.md").exists());
}

#[test]
fn cancellable_simulation_matches_and_stops() {
    let scenario = Scenario::load(Path::new("scenarios/mm1.toml")).unwrap();
    let spec = &scenario.strategies[0].spec;
    let never = Cancel::default();
    let full = Run::new(&scenario, spec, 3).cancel(&never).simulate();
    assert_eq!(
        full.unwrap().metrics.summarize().values,
        simulate(&scenario, spec, 3, scenario.seed)
            .summarize()
            .values
    );
    let set = Cancel::default();
    set.cancel();
    assert!(
        Run::new(&scenario, spec, 3)
            .cancel(&set)
            .simulate()
            .is_none()
    );
}
