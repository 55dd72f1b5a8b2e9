//! Live mode: `lbsim serve` and `lbsim live` (see `src/live/`).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use lbsim::live::control::ControlServer;
use lbsim::live::server::{self, ServerConfig, ServerLimits};
use lbsim::live::verdict::{self, CompareOptions, Outcome, Reference, Tolerances};
use lbsim::live::{
    Cluster, LiveError, LiveOptions, Protocol, ProxyError, ProxyKind, Transport, replay_via,
};
use lbsim::report::ImageFormat;

use super::signals::Interrupt;
use super::{EXIT_BAD_INPUT, load};

/// `lbsim serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Scenario file: start every server of it, one port each. Without it, start one
    /// server from --workers/--speed/--port.
    scenario: Option<PathBuf>,
    /// First port: scenario server i listens on port-base + i [default: free ports].
    #[arg(long)]
    port_base: Option<u16>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Workers of the single server.
    #[arg(long, conflicts_with = "scenario")]
    workers: Option<u32>,
    /// Speed of the single server.
    #[arg(long, default_value_t = 1.0, conflicts_with = "scenario")]
    speed: f64,
    /// Port of the single server.
    #[arg(long, conflicts_with = "scenario")]
    port: Option<u16>,
    /// Waiting places of the single server [default: unbounded].
    #[arg(long, conflicts_with = "scenario")]
    queue_capacity: Option<u32>,
    /// Id the single server reports.
    #[arg(long, default_value = "server", conflicts_with = "scenario")]
    id: String,
    /// Serve a connection's calls concurrently, answering each when done (as the backends
    /// of a `[connections]` scenario always do), for clients that pipeline calls.
    #[arg(long, conflicts_with = "scenario")]
    pipelined: bool,
    /// Seconds added to every call's service inside its worker slot: a backend costlier
    /// than declared, to check that `lbsim live` fails it.
    #[arg(long, default_value_t = 0.0, conflicts_with = "scenario")]
    extra_delay: f64,
    /// Thrift protocol: binary or compact.
    #[arg(long, default_value = "binary")]
    protocol: Protocol,
    /// Thrift transport: framed or buffered.
    #[arg(long, default_value = "framed")]
    transport: Transport,
    /// Most connections per server; when full, the connection idle longest (at least 1 s)
    /// is closed to make room, else new ones are refused with an error naming the limit.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Largest frame or message in bytes; a larger one closes its connection.
    #[arg(long, default_value_t = 65536)]
    max_message_bytes: usize,
    /// Seconds a connection may stay idle between messages.
    #[arg(long, default_value_t = 300.0)]
    idle_timeout: f64,
    /// Seconds a message may take to arrive from its first byte (slow senders).
    #[arg(long, default_value_t = 10.0)]
    message_timeout: f64,
    /// Longest service in seconds one call may ask (work_ns / speed); longer calls and
    /// negative work are refused with an error and counted.
    #[arg(long, default_value_t = 60.0)]
    max_service: f64,
    /// `ping` fails ("overloaded") while a new call would wait longer than this many
    /// seconds for a worker.
    #[arg(long, default_value_t = 60.0)]
    max_wait: f64,
    /// Let `lbsim live --fault-control` inject faults (crash, slow, errors, pauses, cold
    /// starts, delay, unreachable) into these servers through a line protocol on this
    /// loopback port (0: a free one, printed as `fault-control ADDR`). Off by default:
    /// only loopback can reach it, and any local user could then crash the servers.
    #[arg(long)]
    fault_control: Option<u16>,
    /// Apply the scenario's [servers.admission] (queue timeout, CoDel, adaptive LIFO) with
    /// its durations in wall-clock time at this time scale: the --time-scale of the
    /// `lbsim live --backends-apply-admission` that replays against these servers
    /// [default: 1].
    #[arg(long, conflicts_with_all = ["workers", "port", "speed", "queue_capacity", "id", "pipelined", "extra_delay"])]
    time_scale: Option<f64>,
}

impl ServeArgs {
    /// The limits given, or a message naming the flag that is not a duration.
    fn limits(&self) -> Result<ServerLimits, String> {
        let seconds = |flag: &str, v: f64| {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("--{flag} must be a number of seconds above 0, got {v}"))
        };
        Ok(ServerLimits {
            max_connections: self.max_connections,
            max_message_bytes: self.max_message_bytes,
            idle_timeout: seconds("idle-timeout", self.idle_timeout)?,
            message_timeout: seconds("message-timeout", self.message_timeout)?,
            max_service: seconds("max-service", self.max_service)?,
            max_wait: seconds("max-wait", self.max_wait)?,
        })
    }
}

/// `lbsim live`.
#[derive(Args)]
pub struct LiveArgs {
    /// Scenario file (TOML).
    scenario: PathBuf,
    /// Running backends, HOST:PORT separated by commas, one per scenario server in
    /// order [default: start the scenario's servers in this process, on loopback].
    #[arg(long, value_delimiter = ',')]
    backends: Option<Vec<String>>,
    /// Stretch every scenario time by this factor on the wire (reports stay in
    /// scenario units); `auto` picks the smallest whole factor at which every backend's
    /// calibrated overhead is at most half the calibration bound.
    #[arg(long, default_value = "1", value_parser = parse_time_scale)]
    time_scale: TimeScale,
    /// Output folder [default: reports/<scenario name>/live/].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replication whose requests are replayed.
    #[arg(long, default_value_t = 0)]
    replication: u64,
    /// Simulated replications for the means and CIs [default: the scenario's].
    #[arg(long)]
    replications: Option<u32>,
    /// Master seed [default: the scenario's].
    #[arg(long)]
    seed: Option<u64>,
    /// Replay only this strategy (label); repeat for several [default: all].
    #[arg(long = "strategy", value_name = "LABEL")]
    strategies: Vec<String>,
    /// Thrift protocol: binary or compact.
    #[arg(long, default_value = "binary")]
    protocol: Protocol,
    /// Thrift transport: framed or buffered.
    #[arg(long, default_value = "framed")]
    transport: Transport,
    /// Tolerances, as for `check`: name=fraction or name=percent, e.g.
    /// latency_p99=20%,share=0.02,calibration=10% (names: the `metric` column of
    /// comparison.csv before any `:server`); repeatable.
    #[arg(long)]
    tolerance: Vec<String>,
    /// Compare live values with the simulated `replayed` replication or the `mean`.
    #[arg(long, default_value = "replayed")]
    against: String,
    /// Largest schedule-lag p99 accepted, as a fraction of the simulated median latency.
    #[arg(long, default_value_t = 0.05)]
    max_lag: f64,
    /// Seconds to wait for one answer before counting the request failed.
    #[arg(long, default_value_t = 10.0)]
    io_timeout: f64,
    /// Calibration calls (and pings) per backend; 0 models no overhead.
    #[arg(long, default_value_t = 40)]
    calibration_calls: usize,
    /// Microseconds the dispatcher spins before each send instead of sleeping (timer
    /// wake-ups are late by tens of µs); at most a quarter of the mean request gap.
    #[arg(long, default_value_t = 50)]
    spin_us: u64,
    /// Print the driver's schedule lag and rates in detail.
    #[arg(long)]
    report_lag: bool,
    /// Most connections (and reader threads) to one backend; requests beyond wait for
    /// one, so a frozen backend costs no more than this.
    #[arg(long, default_value_t = 512)]
    max_connections_per_backend: usize,
    /// Keep the dispatcher at normal priority (by default it asks for real-time priority,
    /// `SCHED_FIFO` 10 through `chrt`, where permitted, so that a loaded machine delays
    /// its sends less).
    #[arg(long)]
    no_realtime: bool,
    /// Apply every fault of the scenario this many seconds (scenario time) late: a
    /// backend that crashes later than declared, to check that the verdict catches it
    /// [default: 0].
    #[arg(long, default_value_t = 0.0)]
    fault_delay: f64,
    /// Fault-control channels (HOST:PORT, comma-separated) of the `lbsim serve` processes
    /// given to --backends, started with `--fault-control PORT`: how a scenario's
    /// [[faults]] reach them. Each serves the servers whose ids match scenario names.
    #[arg(long, value_delimiter = ',', requires = "backends")]
    fault_control: Option<Vec<String>>,
    /// The backends given to --backends apply the scenario's [servers.admission] at this
    /// --time-scale (started with `lbsim serve SCENARIO --time-scale K`); without it such
    /// a scenario is refused on backends not started here.
    #[arg(long, requires = "backends")]
    backends_apply_admission: bool,
    /// Draw the CDF plot as PNG instead of SVG.
    #[arg(long)]
    png: bool,
    /// Worker threads for the simulated replications [default: one per core]. Results do
    /// not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Send every connection through a real proxy started on loopback, `nginx` (stream
    /// module) or `haproxy` (mode tcp), configured from the scenario; needs a
    /// `[connections]` scenario. Its files go to OUT/proxy/<strategy>/.
    #[arg(long, value_parser = parse_proxy)]
    via: Option<ProxyKind>,
}

/// `--time-scale`: a factor, or `auto`.
#[derive(Clone, Copy, Debug)]
pub enum TimeScale {
    /// This factor.
    Fixed(f64),
    /// Chosen from calibration.
    Auto,
}

fn parse_time_scale(s: &str) -> Result<TimeScale, String> {
    if s == "auto" {
        return Ok(TimeScale::Auto);
    }
    s.parse()
        .map(TimeScale::Fixed)
        .map_err(|_| format!("`{s}` is neither a number nor `auto`"))
}

fn parse_proxy(s: &str) -> Result<ProxyKind, String> {
    s.parse().map_err(|e: ProxyError| e.to_string())
}

/// Exit status of `lbsim live` when no verdict can be given: the driver could not keep to
/// the schedule, so the latencies measured are not the servers'. Distinct from 1 (live
/// disagrees with the simulation) so that CI can retry instead of failing.
pub const EXIT_NO_VERDICT: u8 = 3;

pub fn serve(a: &ServeArgs) -> anyhow::Result<ExitCode> {
    let interrupt = Interrupt::install("stopping the servers")?;
    let limits = match a.limits() {
        Ok(limits) => limits,
        Err(why) => {
            eprintln!("error: {why}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    if let Some(path) = &a.scenario {
        let scenario = load(path)?;
        let probe = ServerConfig {
            limits,
            ..ServerConfig::new("limits")
        };
        if let Err(e) = probe.validate() {
            eprintln!("error: {e}\n  fix: use limits above 0");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
        let time_scale = a.time_scale.unwrap_or(1.0);
        if !(time_scale.is_finite() && time_scale > 0.0) {
            eprintln!(
                "error: --time-scale must be a number above 0, got {time_scale}\n  fix: give the --time-scale of the `lbsim live` that replays against these servers"
            );
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
        let cluster = Cluster::start_with_limits(
            &scenario,
            a.host,
            a.port_base,
            a.protocol,
            a.transport,
            limits,
        )?;
        cluster.set_admission(&scenario, time_scale);
        for (name, addr) in cluster.names.iter().zip(cluster.addrs()) {
            println!("{name} {addr}");
        }
        let _control = match a.fault_control {
            Some(port) => {
                let controls = cluster
                    .names
                    .iter()
                    .cloned()
                    .zip(cluster.servers.iter().map(|h| h.faults()))
                    .collect();
                Some(start_control(port, controls)?)
            }
            None => None,
        };
        eprintln!(
            "serving {} servers ({} protocol, {} transport); Ctrl-C stops",
            cluster.servers.len(),
            a.protocol,
            a.transport
        );
        interrupt.wait();
        cluster.shutdown();
        return Ok(ExitCode::SUCCESS);
    }
    if a.time_scale.is_some() {
        eprintln!(
            "error: --time-scale applies a scenario's [servers.admission]; a single server has none\n  fix: give a scenario file, or leave out --time-scale"
        );
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    let Some(workers) = a.workers else {
        eprintln!(
            "error: nothing to serve\n  fix: give a scenario file, or --workers (with --speed and --port) for one server"
        );
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    };
    let cfg = ServerConfig {
        workers,
        speed: a.speed,
        queue_capacity: a.queue_capacity,
        protocol: a.protocol,
        transport: a.transport,
        limits,
        pipelined: a.pipelined,
        extra_delay: match Duration::try_from_secs_f64(a.extra_delay) {
            Ok(d) => d,
            Err(_) => {
                eprintln!(
                    "error: --extra-delay must be a number of seconds, 0 or more, got {}",
                    a.extra_delay
                );
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
        },
        ..ServerConfig::new(a.id.clone())
    };
    if let Err(e) = cfg.validate() {
        eprintln!(
            "error: {e}\n  fix: use --workers 1 or more, a --speed above 0 and limits above 0"
        );
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    let addr = SocketAddr::new(a.host, a.port.unwrap_or(0));
    let handle =
        server::spawn(addr, cfg).with_context(|| format!("cannot start a server on {addr}"))?;
    println!("{} {}", handle.id(), handle.local_addr());
    let _control = match a.fault_control {
        Some(port) => Some(start_control(
            port,
            vec![(handle.id().to_string(), handle.faults())],
        )?),
        None => None,
    };
    eprintln!("serving; Ctrl-C stops");
    interrupt.wait();
    handle.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// Starts the fault-control channel of `lbsim serve --fault-control PORT` and prints its
/// address (`fault-control ADDR`).
fn start_control(
    port: u16,
    controls: Vec<(String, server::FaultControl)>,
) -> anyhow::Result<ControlServer> {
    let c = ControlServer::start(port, controls)
        .with_context(|| format!("cannot start the fault control on loopback port {port}"))?;
    println!("fault-control {}", c.local_addr());
    eprintln!(
        "fault control enabled on {} (loopback only): `lbsim live --fault-control` may crash, slow or pause these servers",
        c.local_addr()
    );
    Ok(c)
}

fn resolve(list: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    list.iter()
        .map(|s| {
            s.trim()
                .to_socket_addrs()
                .ok()
                .and_then(|mut it| it.next())
                .with_context(|| format!("--backends: `{s}` is not a HOST:PORT address"))
        })
        .collect()
}

pub fn live(a: &LiveArgs) -> anyhow::Result<ExitCode> {
    let scenario = load(&a.scenario)?;
    if scenario.warmup_auto {
        return Err(lbsim::scenario::ScenarioError::Invalid {
            path: a.scenario.clone(),
            line: None,
            field: "warmup".into(),
            problem: "`warmup = \"auto\"` chooses the warm-up from simulated pilot runs; a live replay needs it fixed".into(),
            fix: "set `warmup` to a number of seconds, e.g. the one `lbsim run` chose for this scenario (it prints it)".into(),
        }
        .into());
    }
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join(&scenario.name).join("live"));
    // An unwritable --out fails now, not after the whole replay.
    super::check_out(&a.scenario, "--out", &out)?;
    // SIGINT / SIGTERM: the strategy being replayed stops within a few milliseconds and
    // is dropped; the strategies replayed before it are compared and written.
    let interrupt =
        Interrupt::install("stopping the replay; writing the strategies that finished")?;
    let Some(sweep) = &scenario.sweep else {
        return replay_one(a, &scenario, out, &interrupt).map(ExitCode::from);
    };
    // A sweep is one scenario per point: every point is replayed and judged on its own,
    // into OUT/point-J/; the exit status is the worst (bad input 2, fail 1, no verdict 3).
    let mut worst = 0u8;
    for j in 0..sweep.len() {
        let point = scenario.at_sweep_point(j);
        let dir = out.join(format!("point-{j}"));
        println!(
            "sweep point {} of {}: {} ({})",
            j + 1,
            sweep.len(),
            sweep.describe(j),
            dir.display()
        );
        let status = replay_one(a, &point, dir, &interrupt)?;
        let rank = |s: u8| match s {
            0 => 0,
            3 => 1,
            1 => 2,
            2 => 3,
            _ => 4,
        };
        if rank(status) > rank(worst) {
            worst = status;
        }
        if interrupt.is_set() || status == EXIT_BAD_INPUT {
            // Stopped, or the scenario cannot be replayed: the other points cannot either.
            return Ok(ExitCode::from(status));
        }
    }
    println!(
        "sweep: {} points replayed; {}",
        sweep.len(),
        match worst {
            0 => "every point passes".to_string(),
            1 => "some point FAILS (see each point's verdict above)".to_string(),
            s => format!("exit status {s} (see each point's verdict above)"),
        }
    );
    Ok(ExitCode::from(worst))
}

/// Replays one scenario (one sweep point) into `out`; the exit status.
fn replay_one(
    a: &LiveArgs,
    scenario: &lbsim::scenario::Scenario,
    out: PathBuf,
    interrupt: &Interrupt,
) -> anyhow::Result<u8> {
    let scenario = scenario.clone();
    let tolerances = Tolerances::parse(&a.tolerance)?;
    let reference: Reference = a.against.parse()?;
    let (time_scale, auto_time_scale) = match a.time_scale {
        TimeScale::Fixed(k) => (k, false),
        TimeScale::Auto => (1.0, true),
    };
    anyhow::ensure!(
        a.fault_delay.is_finite() && a.fault_delay >= 0.0,
        "--fault-delay must be a number of seconds, 0 or more, got {}\n  fix: use e.g. --fault-delay 2",
        a.fault_delay
    );
    let opts = LiveOptions {
        backends: a.backends.as_deref().map(resolve).transpose()?,
        time_scale,
        auto_time_scale,
        calibration_bound: tolerances.calibration_bound(),
        realtime: !a.no_realtime,
        replication: a.replication,
        seed: a.seed,
        protocol: a.protocol,
        transport: a.transport,
        io_timeout: Duration::from_secs_f64(a.io_timeout.max(0.001)),
        calibration_calls: a.calibration_calls,
        only: a.strategies.clone(),
        spin: Duration::from_micros(a.spin_us),
        cancel: interrupt.flag(),
        max_connections_per_backend: a.max_connections_per_backend,
        fault_delay: a.fault_delay,
        fault_control: a
            .fault_control
            .as_deref()
            .map(resolve)
            .transpose()?
            .unwrap_or_default(),
        backends_apply_admission: a.backends_apply_admission,
    };
    eprintln!(
        "{}: replaying replication {} of {} strategies at time scale {} ({:.0} s of wall-clock time each at that scale)",
        scenario.name,
        a.replication,
        if a.strategies.is_empty() {
            scenario.strategies.len()
        } else {
            a.strategies.len()
        },
        if auto_time_scale {
            "auto".to_string()
        } else {
            time_scale.to_string()
        },
        scenario.end() * time_scale
    );
    let proxy_dir = out.join("proxy");
    let via = a.via.map(|kind| (kind, proxy_dir.as_path()));
    if let Some(kind) = a.via {
        eprintln!(
            "through {kind} on loopback (configuration and logs in {})",
            proxy_dir.display()
        );
    }
    // `auto`: the scale comes from idle calibration; a backend's per-call cost under the
    // replay's load can be several times its idle cost (thread wake-ups on a loaded
    // machine: mm1 at 80% load, 2 ms wall-clock services, cost 6.8% idle, 13.9% loaded,
    // mean +27% at scale 2; at 6, 6.0% and +6.5%). When it exceeds half the bound, the
    // replay is done once more at the scale that brings it there.
    let mut opts = opts;
    let mut retried = false;
    let (run, verdict) = loop {
        let run = match replay_via(&scenario, &opts, via) {
            Ok(run) => run,
            Err(
                e @ (LiveError::Unreachable { .. }
                | LiveError::BackendCount { .. }
                | LiveError::TimeScale(_)
                | LiveError::NoStrategy(_)
                | LiveError::Unsupported(_)
                | LiveError::Proxy(
                    ProxyError::UnknownProxy(_)
                    | ProxyError::NotInstalled { .. }
                    | ProxyError::NotConnectionLevel { .. }
                    | ProxyError::NoEquivalent { .. }
                    | ProxyError::Faults { .. }
                    | ProxyError::Weight { .. },
                )),
            ) => {
                eprintln!("error: {e}");
                return Ok(EXIT_BAD_INPUT);
            }
            Err(e) => return Err(e.into()),
        };
        if run.strategies.is_empty() {
            eprintln!("interrupted before any strategy finished: nothing to write");
            return Ok(interrupt.status());
        }
        for s in &run.strategies {
            let served = s.metrics.latency.len();
            let down: Vec<String> = s
                .marked_down
                .iter()
                .map(|&i| scenario.servers()[i].name.clone())
                .collect();
            println!(
                "{:<20} sent {}, served (measured) {}, errors {}{}, {:.1} s wall, {} connections{}; dispatcher at {} priority",
                s.label,
                s.sent,
                served,
                s.errors,
                if down.is_empty() {
                    String::new()
                } else {
                    format!(" (marked down: {})", down.join(", "))
                },
                s.wall.as_secs_f64(),
                s.connections,
                if s.connection_waits > 0 {
                    format!(", {} requests waited for a connection", s.connection_waits)
                } else {
                    String::new()
                },
                if s.realtime { "real-time" } else { "normal" }
            );
            if let Some(e) = &s.first_error {
                println!("{:<20} first error: {e}", "");
            }
            if s.probes_late > 0 {
                println!(
                    "{:<20} {} probes came back later than the scenario's [probes] delay × the time scale ({:.0} µs): the loopback's real round trip is longer; raise --time-scale",
                    "",
                    s.probes_late,
                    scenario.probes.delay * run.time_scale * 1e6
                );
            }
            if a.report_lag {
                let q = |p: f64| s.lag.value_at_quantile(p) as f64 * 1e-3;
                println!(
                    "{:<20} offered {:.0} req/s wall-clock; schedule lag µs: p50 {:.1}, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1}",
                    "",
                    s.sent as f64 / (scenario.end() * run.time_scale),
                    q(0.5),
                    q(0.9),
                    q(0.99),
                    q(0.999),
                    s.lag.max() as f64 * 1e-3
                );
                let d = |p: f64| s.dispatch_lag.value_at_quantile(p) as f64 * 1e-3;
                println!(
                    "{:<20} of which dispatcher wake-up µs: p50 {:.1}, p90 {:.1}, p99 {:.1} (the rest is writing the call)",
                    "",
                    d(0.5),
                    d(0.9),
                    d(0.99)
                );
            }
        }
        for s in run.strategies.iter().filter(|s| !s.faults.is_empty()) {
            // Every fault action and health change, with how late it reached the backends
            // or the balancer: the timing the per-phase verdict relies on.
            let events: Vec<String> = s
                .faults
                .iter()
                .map(|e| format!("{:.3} s {} (+{:.0} µs)", e.at, e.what, e.late * 1e6))
                .collect();
            println!("{:<20} faults: {}", s.label, events.join("; "));
        }
        let verdict = verdict::compare(
            &scenario,
            &run,
            &CompareOptions {
                replications: a.replications,
                tolerances: tolerances.clone(),
                reference,
                max_lag_fraction: a.max_lag,
                threads: a.threads,
            },
        )?;
        if auto_time_scale
            && !retried
            && !interrupt.is_set()
            && let Some((scale, why)) =
                rescale(&verdict, run.time_scale, tolerances.calibration_bound())
        {
            println!(
                "time scale {}: {why}; replaying at time scale {scale}",
                run.time_scale,
            );
            opts.time_scale = scale;
            opts.auto_time_scale = false;
            retried = true;
            continue;
        }
        break (run, verdict);
    };
    if auto_time_scale {
        println!("time scale {} (auto, from calibration)", run.time_scale);
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create `{}`", out.display()))?;
    print!("{}", verdict::table(&verdict));
    let format = if a.png {
        ImageFormat::Png
    } else {
        ImageFormat::Svg
    };
    // Staged and moved into --out together, as `lbsim run` does: never half-written.
    let staging = lbsim::report::output::Staging::new(&out)?;
    let staged = verdict::write_reports(&staging.folder(), &scenario, &verdict, format)?;
    let written = lbsim::report::output::publish(staging, &staged)?;
    println!(
        "wrote {}",
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if interrupt.is_set() {
        eprintln!(
            "interrupted: {} of {} strategies replayed; the files above hold those",
            run.strategies.len(),
            if a.strategies.is_empty() {
                scenario.strategies.len()
            } else {
                a.strategies.len()
            }
        );
        return Ok(interrupt.status());
    }
    match verdict.outcome() {
        Outcome::NoVerdict { reason } => {
            eprintln!("{reason}");
            eprintln!(
                "  exit status {EXIT_NO_VERDICT}: no verdict (not a disagreement); `--report-lag` shows the lag, `--strategy LABEL` replays fewer strategies, `chrt -f 10 lbsim live ...` shields the driver"
            );
            Ok(EXIT_NO_VERDICT)
        }
        Outcome::Pass => {
            println!("verdict: pass — live agrees with the simulation within tolerance");
            Ok(0)
        }
        Outcome::Fail { failed } => {
            println!(
                "verdict: FAIL — {} comparison(s) outside tolerance: {}",
                failed.len(),
                failed.join(", ")
            );
            Ok(1)
        }
    }
}

/// The larger time scale to replay at once more, if the scale can still grow, and why:
/// the scale at which the worst per-call cost under load (a fraction of the declared
/// service time, at `scale`) would be half of `bound`, if it is above that; and the scale
/// at which the worst schedule lag p99 would be 4/5 of the lag gate, if a strategy's lag
/// exceeded it (the driver's lag is wall-clock jitter, about the same at any scale, while
/// the gate is a fraction of response times, which grow with the scale: a connection-level
/// replay at load 15 lagged 1.8 ms against a 1.2 ms gate at scale 1). The larger of the two.
fn rescale(v: &verdict::Verdict, scale: f64, bound: f64) -> Option<(f64, String)> {
    let max = lbsim::live::calibrate::MAX_AUTO_TIME_SCALE;
    if scale >= max {
        return None;
    }
    let worst = v
        .rows
        .iter()
        .filter(|r| r.figure == verdict::Figure::CalibrationUnderLoad && r.live.is_finite())
        .map(|r| r.live)
        .fold(0.0f64, f64::max);
    let cost = (worst > 0.5 * bound).then(|| {
        (
            scale * worst / (0.5 * bound),
            format!(
                "calibration under load {:.1}% of a declared service time, above half the bound ({:.1}%)",
                worst * 100.0,
                bound * 50.0
            ),
        )
    });
    let late = v
        .lag
        .iter()
        .filter(|l| !l.ok && l.threshold > 0.0 && l.p99.is_finite())
        .max_by(|a, b| (a.p99 / a.threshold).total_cmp(&(b.p99 / b.threshold)));
    let lag = late.map(|l| {
        (
            scale * l.p99 / (0.8 * l.threshold),
            format!(
                "{}: schedule lag p99 {:.0} µs above the gate ({:.0} µs)",
                l.strategy,
                l.p99 * 1e6,
                l.threshold * 1e6
            ),
        )
    });
    // At most 4 times larger: a cost far beyond the bound (calls that waited for a
    // connection behind a stalled backend) is not a fixed cost that a scale hides, nor is
    // a driver stalled for seconds one that a scale outruns.
    [cost, lag]
        .into_iter()
        .flatten()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(s, why)| (s.ceil().min(4.0 * scale).min(max), why))
        .filter(|&(s, _)| s > scale)
}
