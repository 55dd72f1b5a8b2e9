//! Child processes the tests start and watch: the `lbsim` binary, `lbsim serve`, signals
//! sent to them, and what /proc says about a process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
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

/// A started command whose stderr a thread of its own reads line by line (stdout is
/// drained by another), so that a test can wait for what the process *says* or *has
/// done* (a line, CPU time spent) instead of for a time, which a loaded machine stretches.
pub struct Watched {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// The stderr lines received so far, each with its newline.
    stderr: String,
    stdout: Option<thread::JoinHandle<()>>,
}

impl Watched {
    /// Starts `cmd` with stdout and stderr piped.
    pub fn spawn(mut cmd: Command) -> Watched {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the command");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Drained so that the child never blocks on a full pipe.
        let mut stdout = child.stdout.take().expect("piped stdout");
        let stdout = Some(thread::spawn(move || {
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        }));
        Watched {
            child,
            lines,
            stderr: String::new(),
            stdout,
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Takes the stderr lines that have arrived, waiting at most `wait` for one; false
    /// once stderr has closed (the process ended).
    fn receive(&mut self, wait: Duration) -> bool {
        let first = match self.lines.recv_timeout(wait) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => return true,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Not at once: callers poll the process's state while it ends.
                thread::sleep(wait.min(Duration::from_millis(10)));
                return false;
            }
        };
        for line in std::iter::once(first).chain(self.lines.try_iter()) {
            self.stderr.push_str(&line);
            self.stderr.push('\n');
        }
        true
    }

    /// Takes the rest of stderr after the process ended (at most `wait` for each line:
    /// stderr closes when the process ends, unless a child of its own holds it).
    fn drain(&mut self, wait: Duration) {
        while let Ok(line) = self.lines.recv_timeout(wait) {
            self.stderr.push_str(&line);
            self.stderr.push('\n');
        }
    }

    /// Waits until a line of stderr contains `needle` (lines already seen count); fails
    /// the test, killing the process, if it has not within `within` or stderr closed first.
    pub fn wait_for_line(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.stderr.lines().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.fail(&format!("no line with {needle:?} within {within:?}"));
            }
            if !self.receive(left) {
                self.fail(&format!("ended without a line with {needle:?}"));
            }
        }
    }

    /// CPU time the process has used so far ([`cpu_time_of`]).
    pub fn cpu_time(&self) -> Duration {
        cpu_time_of(self.id())
    }

    /// Whether the process has ended (a zombie: not yet waited for, so its CPU time can
    /// still be read).
    fn ended(&self) -> bool {
        proc_stat(self.id())
            .first()
            .is_some_and(|state| state == "Z")
    }

    /// Waits until `done()` holds (a state of the world the process changes: CPU time
    /// spent, calls its backends served), reading stderr meanwhile; fails the test,
    /// killing the process, saying it waited for `what`, after `within` or if the process
    /// ends first.
    pub fn wait_until(&mut self, what: &str, done: impl Fn() -> bool, within: Duration) {
        let deadline = Instant::now() + within;
        while !done() {
            if self.ended() {
                self.fail(&format!("ended before {what}"));
            }
            if Instant::now() >= deadline {
                self.fail(&format!("no {what} within {within:?}"));
            }
            self.receive(Duration::from_millis(10));
        }
    }

    /// Waits until the process has used `cpu` of CPU time in all: work done, however
    /// slowly a loaded machine lets it run ([`Watched::wait_until`]).
    pub fn wait_for_cpu(&mut self, cpu: Duration, within: Duration) {
        let pid = self.id();
        let what = format!("{cpu:?} of CPU time used");
        self.wait_until(&what, || cpu_time_of(pid) >= cpu, within);
    }

    /// Sends signal `sig` (a kill name, e.g. "INT") through the shell's `kill`.
    pub fn signal(&self, sig: &str) {
        let script = format!("kill -{sig} {}", self.id());
        let sent = Command::new("sh")
            .args(["-c", &script])
            .status()
            .expect("sh");
        assert!(sent.success(), "{script}");
    }

    /// Waits for the process to end; fails the test, killing it, unless it ends within
    /// `within`. Returns the exit status (−1 when killed by a signal) and all of stderr.
    pub fn finish(self, within: Duration) -> (i32, String) {
        let (code, stderr, _) = self.finish_with_cpu(within);
        (code, stderr)
    }

    /// [`Watched::finish`], also returning the CPU time the process used in all.
    pub fn finish_with_cpu(mut self, within: Duration) -> (i32, String, Duration) {
        let deadline = Instant::now() + within;
        while !self.ended() {
            if Instant::now() >= deadline {
                self.fail(&format!("still running {within:?} later"));
            }
            self.receive(Duration::from_millis(10));
        }
        let cpu = self.cpu_time();
        let status = self.child.wait().expect("wait");
        self.drain(Duration::from_secs(5));
        if let Some(t) = self.stdout.take() {
            let _ = t.join();
        }
        (
            status.code().unwrap_or(-1),
            std::mem::take(&mut self.stderr),
            cpu,
        )
    }

    /// Kills the process and fails the test with `why` and the stderr seen so far.
    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.drain(Duration::from_secs(1));
        panic!("{why}; stderr so far:\n{}", self.stderr)
    }
}

impl Drop for Watched {
    /// Kills the process if it is still running (a test failed before waiting for it).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The fields of `/proc/PID/stat` after the command name (which is in parentheses and
/// may hold spaces): the state first, utime and stime 12th and 13th; none once the
/// process has been waited for.
fn proc_stat(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after.split_whitespace().map(str::to_owned).collect()
}

/// CPU time process `pid` has used so far, all its threads (utime + stime of
/// `/proc/PID/stat`, in clock ticks of 10 ms: Linux reports them in USER_HZ = 100).
pub fn cpu_time_of(pid: u32) -> Duration {
    let ticks: u64 = proc_stat(pid)
        .iter()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    Duration::from_millis(10 * ticks)
}
