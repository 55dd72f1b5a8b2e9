//! Child processes the tests start and watch: the `lbsim` binary, `lbsim serve`, signals
//! sent to them, and what /proc says about a process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The `lbsim` binary under test.
pub fn lbsim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lbsim"))
}

/// Runs `lbsim ARGS` to the end: (exit status, or −1 when killed; stdout; stderr).
pub fn lbsim_output(args: &[&str]) -> (i32, String, String) {
    let out = lbsim().args(args).output().expect("run lbsim");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The first line `child` prints on its piped stdout, waiting at most `within` (a reader
/// thread does the waiting, so a silent child cannot hang the test).
pub fn first_line(child: &mut Child, within: Duration) -> Option<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(within).ok()
}

/// Starts `lbsim serve --workers 2 --port 0 EXTRA...` (stderr discarded) and returns it with
/// the address it prints on its first line (at most 20 s; otherwise it is killed and the
/// test fails).
pub fn spawn_serve(extra: &[&str]) -> (Child, SocketAddr) {
    let mut child = lbsim()
        .args(["serve", "--workers", "2", "--port", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lbsim serve");
    let line = first_line(&mut child, Duration::from_secs(20)).unwrap_or_default();
    match line.split_whitespace().nth(1).and_then(|a| a.parse().ok()) {
        Some(addr) => (child, addr),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lbsim serve printed no address within 20 s (first line {line:?})")
        }
    }
}

/// A numeric field of `/proc/PID/status` (`pid` = "self" for this process): `VmRSS` in
/// kB, `Threads`. `None` when the file or the field is missing.
pub fn proc_status(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Starts `cmd` (stdout and stderr piped), sends `signals` (kill names, e.g. "INT")
/// `after` the start, 20 ms apart, and waits; fails unless the process ends within `bound`
/// of the first signal. Returns the exit status and stderr.
pub fn signal_after(
    mut cmd: Command,
    after: Duration,
    signals: &[&str],
    bound: Duration,
) -> (i32, String) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lbsim");
    sleep(after);
    let started = Instant::now();
    // One shell sends them all (`kill` is a shell builtin): 20 ms apart, well inside the
    // time the command takes to write its files, whatever the machine's load.
    let script = signals
        .iter()
        .map(|sig| format!("kill -{sig} {}", child.id()))
        .collect::<Vec<_>>()
        .join("; sleep 0.02; ");
    let killed = Command::new("sh")
        .args(["-c", &script])
        .status()
        .expect("sh");
    assert!(killed.success(), "{script}");
    let out = child.wait_with_output().expect("wait");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        took < bound,
        "took {took:?} (more than {bound:?}) to stop after {signals:?}: {stderr}"
    );
    (out.status.code().unwrap_or(-1), stderr)
}
