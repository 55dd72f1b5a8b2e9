//! The fault-control channel of `lbsim serve`: how `lbsim live --backends` injects a
//! scenario's `[[faults]]` into backends running in other processes.
//!
//! ```text
//!  lbsim live --backends … --fault-control 127.0.0.1:9100      lbsim serve … --fault-control 9100
//!  FaultPlayer ──► Injector::Remote ── "node-1 crash\n" ──────► control listener (loopback only)
//!                                   ◄── "ok\n" ─────────────── FaultControl of server `node-1`
//! ```
//!
//! **Safety.** A fault crashes, stalls or slows a backend, so nothing on the network may
//! ask for one unless the operator enabled it: the channel is off unless `lbsim serve` is
//! given `--fault-control PORT`, it listens on the loopback address only (whatever
//! `--host` says) and closes any connection whose peer is not a loopback address, and it
//! is a separate port from the Thrift service, which no client can use to inject a fault.
//! Every local user of the machine can reach a loopback port: enable the channel on
//! machines whose users you trust, for the length of a run. Lines are at most
//! [`MAX_LINE`] bytes, at most [`MAX_CONTROLLERS`] connections are served at once, and
//! every value is checked (finite, within bounds) before it is applied.
//!
//! **Protocol.** One command per line, `<server id> <command> [arguments]`, answered by
//! one line, `ok` or `error: <why>`; `ids` lists the servers' ids, space-separated. Times
//! are wall-clock seconds (the driver scales them). Commands: `crash`, `recover`,
//! `slow <factor>`, `error <fraction> <latency> <failed|rejected>`, `error off`,
//! `pause <length>`, `cold <warmup> <fraction>`, `delay <seconds>`,
//! `unreachable <on|off>`. The driver waits for each answer, so a fault is in force when
//! its action returns (a loopback round trip late, reported as its lateness).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::server::{ErrorMode, FaultControl};

/// Longest command line, in bytes.
pub const MAX_LINE: usize = 256;

/// Most control connections served at once.
pub const MAX_CONTROLLERS: usize = 4;

/// Longest pause, delay or error latency a command may set (wall-clock seconds).
const MAX_SECONDS: f64 = 3600.0;

/// A running control listener; dropping it stops it.
#[derive(Debug)]
pub struct ControlServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Listens on loopback port `port` (0: a free one) for commands to the servers
    /// `controls` (id, control).
    pub fn start(port: u16, controls: Vec<(String, FaultControl)>) -> io::Result<ControlServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let controls: Arc<HashMap<String, FaultControl>> = Arc::new(controls.into_iter().collect());
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("lbsim-fault-control".into())
                .spawn(move || accept(&listener, &controls, &stop))?
        };
        Ok(ControlServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept(
    listener: &TcpListener,
    controls: &Arc<HashMap<String, FaultControl>>,
    stop: &AtomicBool,
) {
    let serving = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(_) => {
                thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        // Loopback only (the listener is bound there; checked again).
        if !peer.ip().is_loopback() || serving.load(Ordering::SeqCst) >= MAX_CONTROLLERS {
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        serving.fetch_add(1, Ordering::SeqCst);
        let (controls, serving2) = (Arc::clone(controls), Arc::clone(&serving));
        let spawned = thread::Builder::new()
            .name("lbsim-fault-control-conn".into())
            .spawn(move || {
                let _ = serve_controller(stream, &controls);
                serving2.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            serving.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn serve_controller(stream: TcpStream, controls: &HashMap<String, FaultControl>) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    // An idle controller is closed after an hour; a line must come whole.
    stream.set_read_timeout(Some(Duration::from_secs(3600)))?;
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    let mut line = Vec::with_capacity(MAX_LINE);
    loop {
        line.clear();
        let n = (&mut input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            writeln!(
                out,
                "error: a command is one line of at most {MAX_LINE} bytes"
            )?;
            return Ok(());
        }
        let answer = match std::str::from_utf8(&line) {
            Ok(text) => match command(text.trim(), controls) {
                Ok(ok) => ok,
                Err(why) => format!("error: {why}"),
            },
            Err(_) => "error: not UTF-8".to_string(),
        };
        writeln!(out, "{answer}")?;
    }
}

/// Parses and applies one command; the answer line (without `ok`'s) or why not.
fn command(line: &str, controls: &HashMap<String, FaultControl>) -> Result<String, String> {
    let words: Vec<&str> = line.split_ascii_whitespace().collect();
    if words == ["ids"] {
        let mut ids: Vec<&str> = controls.keys().map(String::as_str).collect();
        ids.sort_unstable();
        return Ok(ids.join(" "));
    }
    let [id, cmd, args @ ..] = words.as_slice() else {
        return Err("expected `<server id> <command> [arguments]` or `ids`".into());
    };
    let c = controls
        .get(*id)
        .ok_or_else(|| format!("no server `{id}` here"))?;
    let number = |k: usize, what: &str, lo: f64, hi: f64| -> Result<f64, String> {
        let v: f64 = args
            .get(k)
            .ok_or_else(|| format!("`{cmd}` needs {what}"))?
            .parse()
            .map_err(|_| format!("{what} is not a number"))?;
        if v.is_finite() && v >= lo && v <= hi {
            Ok(v)
        } else {
            Err(format!("{what} must be within [{lo}, {hi}], got {v}"))
        }
    };
    let seconds =
        |k: usize, what: &str| number(k, what, 0.0, MAX_SECONDS).map(Duration::from_secs_f64);
    match (*cmd, args.len()) {
        ("crash", 0) => c.crash(),
        ("recover", 0) => c.recover(),
        ("slow", 1) => c.set_slow(number(0, "the factor", 1e-3, 1e6)?),
        ("error", 1) if args[0] == "off" => c.set_error(None),
        ("error", 3) => {
            let rejected = match args[2] {
                "failed" => false,
                "rejected" => true,
                other => return Err(format!("status `{other}`: use failed or rejected")),
            };
            c.set_error(Some(ErrorMode {
                fraction: number(0, "the fraction", 0.0, 1.0)?,
                latency: seconds(1, "the latency")?,
                rejected,
            }));
        }
        ("pause", 1) => c.pause(seconds(0, "the length")?),
        ("cold", 2) => c.cold(
            seconds(0, "the warm-up")?,
            number(1, "the fraction", 0.0, 1.0)?,
        ),
        ("delay", 1) => c.set_delay(seconds(0, "the delay")?),
        ("unreachable", 1) => match args[0] {
            "on" => c.set_unreachable(true),
            "off" => c.set_unreachable(false),
            other => return Err(format!("`unreachable {other}`: use on or off")),
        },
        _ => {
            return Err(format!(
                "unknown command `{}`: crash, recover, slow F, error FRACTION LATENCY failed|rejected, error off, pause S, cold S FRACTION, delay S, unreachable on|off",
                words[1..].join(" ")
            ));
        }
    }
    Ok("ok".into())
}

/// A connection to one `lbsim serve` control listener, shared by the servers it controls.
#[derive(Debug)]
struct Channel {
    addr: SocketAddr,
    out: TcpStream,
    input: BufReader<TcpStream>,
}

impl Channel {
    fn connect(addr: SocketAddr) -> io::Result<Channel> {
        let out = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        out.set_nodelay(true)?;
        out.set_read_timeout(Some(Duration::from_secs(5)))?;
        let input = BufReader::new(out.try_clone()?);
        Ok(Channel { addr, out, input })
    }

    /// Sends `line`, returns the answer (without the newline).
    fn ask(&mut self, line: &str) -> io::Result<String> {
        writeln!(self.out, "{line}")?;
        let mut answer = String::new();
        (&mut self.input)
            .take(MAX_LINE as u64 * 64)
            .read_line(&mut answer)?;
        if answer.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the control channel closed",
            ));
        }
        Ok(answer.trim_end().to_string())
    }
}

/// The fault control of one backend in another process, through its `lbsim serve`
/// control channel.
#[derive(Clone, Debug)]
pub struct RemoteControl {
    id: String,
    channel: Arc<Mutex<Channel>>,
}

/// Why the control channels cannot drive a scenario's backends.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A control address cannot be reached.
    #[error(
        "cannot reach the fault control at {addr}: {source}\n  fix: start the backends with `lbsim serve … --fault-control PORT` and give those ports to --fault-control"
    )]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A faulted server is served by none of the control channels.
    #[error(
        "server `{server}` has [[faults]] but no --fault-control channel serves it (they serve: {served})\n  fix: give the control port of the `lbsim serve` that runs `{server}` (its id must be the scenario's server name: `--id {server}` for one server)"
    )]
    Missing {
        /// The scenario server.
        server: String,
        /// The ids the channels serve.
        served: String,
    },
}

impl RemoteControl {
    /// Connects to every control address and finds, for each of `names`, the channel
    /// serving it (`None` for a server no channel serves); `needed` names those that must
    /// be found.
    pub fn connect_all(
        addrs: &[SocketAddr],
        names: &[String],
        needed: &[bool],
    ) -> Result<Vec<Option<RemoteControl>>, ControlError> {
        let mut by_id: HashMap<String, Arc<Mutex<Channel>>> = HashMap::new();
        for &addr in addrs {
            let mut ch =
                Channel::connect(addr).map_err(|source| ControlError::Connect { addr, source })?;
            let ids = ch
                .ask("ids")
                .map_err(|source| ControlError::Connect { addr, source })?;
            let ch = Arc::new(Mutex::new(ch));
            for id in ids.split_ascii_whitespace() {
                by_id
                    .entry(id.to_string())
                    .or_insert_with(|| Arc::clone(&ch));
            }
        }
        let mut served: Vec<&String> = by_id.keys().collect();
        served.sort();
        let served = served
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        names
            .iter()
            .zip(needed)
            .map(|(name, &needed)| match by_id.get(name) {
                Some(ch) => Ok(Some(RemoteControl {
                    id: name.clone(),
                    channel: Arc::clone(ch),
                })),
                None if needed => Err(ControlError::Missing {
                    server: name.clone(),
                    served: served.clone(),
                }),
                None => Ok(None),
            })
            .collect()
    }

    /// Sends one command; an error is returned as text (the fault log records it).
    fn send(&self, cmd: &str) -> Result<(), String> {
        let mut ch = self.channel.lock().unwrap_or_else(PoisonError::into_inner);
        let addr = ch.addr;
        match ch.ask(&format!("{} {cmd}", self.id)) {
            Ok(a) if a == "ok" => Ok(()),
            Ok(a) => Err(format!("{addr}: {a}")),
            Err(e) => Err(format!("{addr}: {e}")),
        }
    }
}

/// Applies faults to a backend: in this process, or through a control channel.
#[derive(Clone, Debug)]
pub enum Injector {
    /// A backend this process started.
    Local(FaultControl),
    /// A backend of an `lbsim serve` process with `--fault-control`.
    Remote(RemoteControl),
    /// A backend no fault touches.
    None,
}

impl Injector {
    fn remote(&self, cmd: impl FnOnce() -> String) -> Result<(), String> {
        match self {
            Injector::Remote(r) => r.send(&cmd()),
            _ => Ok(()),
        }
    }

    /// See [`FaultControl::crash`].
    pub fn crash(&self) -> Result<(), String> {
        if let Injector::Local(c) = self {
            c.crash();
        }
        self.remote(|| "crash".into())
    }

    /// See [`FaultControl::recover`].
    pub fn recover(&self) -> Result<(), String> {
        if let Injector::Local(c) = self {
            c.recover();
        }
        self.remote(|| "recover".into())
    }

    /// See [`FaultControl::set_slow`].
    pub fn set_slow(&self, factor: f64) -> Result<(), String> {
        if let Injector::Local(c) = self {
            c.set_slow(factor);
        }
        self.remote(|| format!("slow {factor}"))
    }

    /// See [`FaultControl::set_error`].
    pub fn set_error(&self, mode: Option<ErrorMode>) -> Result<(), String> {
        if let Injector::Local(c) = self {
            c.set_error(mode);
        }
        self.remote(|| match mode {
            None => "error off".into(),
            Some(m) => format!(
                "error {} {} {}",
                m.fraction,
                m.latency.as_secs_f64(),
                if m.rejected { "rejected" } else { "failed" }
            ),
        })
    }

    /// See [`FaultControl::pause`].
    pub fn pause(&self, length: Duration) -> Result<(), String> {
        if let Injector::Local(c) = self {
            c.pause(length);
        }
        self.remote(|| format!("pause {}", length.as_secs_f64()))
    }

    /// See [`FaultControl::cold`].
    pub fn cold(&self, warmup: Duration, fraction: f64) -> Result<(), String> {
        if let Injector::Local(c) = self {
            c.cold(warmup, fraction);
        }
        self.remote(|| format!("cold {} {fraction}", warmup.as_secs_f64()))
    }

    /// See [`FaultControl::set_delay`].
    pub fn set_delay(&self, delay: Duration) -> Result<(), String> {
        if let Injector::Local(c) = self {
            c.set_delay(delay);
        }
        self.remote(|| format!("delay {}", delay.as_secs_f64()))
    }

    /// See [`FaultControl::set_unreachable`].
    pub fn set_unreachable(&self, on: bool) -> Result<(), String> {
        if let Injector::Local(c) = self {
            c.set_unreachable(on);
        }
        self.remote(|| format!("unreachable {}", if on { "on" } else { "off" }))
    }
}
