//! The `lbsim` command line: run, validate and list strategies.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use lbsim::metrics::metric_index;
use lbsim::report::{
    ImageFormat, ReportInput, check, standard_reports, summary_table, write_reports,
    write_summary_csv,
};
use lbsim::runner::{RunOptions, RunResults, run, run_replications};
use lbsim::scenario::{Scenario, ScenarioError};
use lbsim::sequential::{Precision, run_to_precision};
use lbsim::shard::{self, ShardFile, ShardSpec};
use lbsim::strategy::CATALOGUE;
use lbsim::sweep::SweepResults;
use lbsim::sweep::run_sweep;

/// Choose a load-balancing strategy for Thrift services before rollout.
#[derive(Parser)]
#[command(name = "lbsim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate every strategy of a scenario and report figures with 95% confidence intervals.
    Run {
        /// Scenario file (TOML).
        scenario: PathBuf,
        /// Output folder [default: reports/<scenario name>/].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replications per strategy [default: the scenario's].
        #[arg(long)]
        replications: Option<u32>,
        /// Master seed [default: the scenario's].
        #[arg(long)]
        seed: Option<u64>,
        /// Worker threads [default: one per core]. Results do not depend on it.
        #[arg(long)]
        threads: Option<usize>,
        /// Draw plots as PNG instead of SVG.
        #[arg(long)]
        png: bool,
        /// Sequential stopping: add replications until the 95% CI half-width of --metric
        /// is below this fraction of the mean for every strategy (e.g. 0.01).
        #[arg(long)]
        precision: Option<f64>,
        /// Metric for --precision.
        #[arg(long, default_value = "latency_p99")]
        metric: String,
        /// Cap on replications for --precision.
        #[arg(long, default_value_t = 1000)]
        max_replications: u32,
        /// Run only replications i with i % N == K and write `shard-K-of-N.json` into
        /// --out; combine the shards with `lbsim merge`.
        #[arg(long, value_name = "K/N")]
        shard: Option<ShardSpec>,
    },
    /// Combine shard files (`lbsim run --shard K/N`) into the reports a single run writes.
    Merge {
        /// Folders holding shard-K-of-N.json files (or the files).
        #[arg(required = true)]
        shards: Vec<PathBuf>,
        /// Scenario file [default: the path recorded in the shards].
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Output folder [default: reports/<scenario name>/].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Draw plots as PNG instead of SVG.
        #[arg(long)]
        png: bool,
    },
    /// Check a scenario file without running it, and show the offered load per server group.
    Validate {
        /// Scenario file (TOML).
        scenario: PathBuf,
    },
    /// List the strategies, their parameters and the system each follows.
    Strategies,
    /// Regression check for CI: run scenarios with their pinned seeds and compare every
    /// metric of every strategy with a baseline. Exit status: 0 pass, 1 regression,
    /// 2 bad input (no baseline, bad tolerance, bad scenario).
    Check {
        /// Scenario files (TOML).
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// Baseline folder, holding `<scenario name>/summary.csv`.
        #[arg(long)]
        baseline: PathBuf,
        /// Rewrite the baseline from this run instead of comparing.
        #[arg(long)]
        update: bool,
        /// Print JSON (every finding) instead of Markdown.
        #[arg(long)]
        json: bool,
        /// Relative tolerances, e.g. `latency_p99=0.1,throughput=2%` (`*=0.1` for all).
        /// Defaults: 5% for latencies (10% p99.9, 25% max), 2% throughput, 1% Jain, 10% queues and rejections, 5% otherwise.
        #[arg(long)]
        tolerance: Vec<String>,
        /// Replications per scenario [default: the scenario's]. Use the same number for
        /// the baseline and the check.
        #[arg(long)]
        replications: Option<u32>,
        /// Worker threads [default: one per core]. Results do not depend on it.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Start a scenario's servers (or one server) as real Thrift backends, until Ctrl-C.
    Serve(live_cli::ServeArgs),
    /// Replay a scenario against real Thrift backends and compare with the simulation.
    Live(live_cli::LiveArgs),
}

/// Exit status for bad input (scenario errors, bad flags).
const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            scenario,
            out,
            replications,
            seed,
            threads,
            png,
            precision,
            metric,
            max_replications,
            shard,
        } => cmd_run(
            &scenario,
            RunFlags {
                out,
                png,
                precision,
                metric,
                max_replications,
                shard,
            },
            RunOptions {
                replications,
                seed,
                threads,
                ..Default::default()
            },
        ),
        Command::Validate { scenario } => cmd_validate(&scenario),
        Command::Merge {
            shards,
            scenario,
            out,
            png,
        } => cmd_merge(&shards, scenario, out, png),
        Command::Check {
            scenarios,
            baseline,
            update,
            json,
            tolerance,
            replications,
            threads,
        } => cmd_check(
            &scenarios,
            &baseline,
            update,
            json,
            &tolerance,
            RunOptions {
                replications,
                threads,
                ..Default::default()
            },
        ),
        Command::Strategies => {
            cmd_strategies();
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => live_cli::serve(&args),
        Command::Live(args) => live_cli::live(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let bad_input = e.downcast_ref::<ScenarioError>().is_some()
                || e.downcast_ref::<check::CheckError>().is_some()
                || e.downcast_ref::<shard::ShardError>().is_some();
            eprintln!("error: {e:#}");
            ExitCode::from(if bad_input { EXIT_BAD_INPUT } else { 1 })
        }
    }
}

fn load(path: &Path) -> anyhow::Result<Scenario> {
    let scenario = Scenario::load(path)?;
    for w in scenario.warnings() {
        eprintln!("warning: {}: {w}", path.display());
    }
    Ok(scenario)
}

/// `lbsim run` flags beyond the run options.
struct RunFlags {
    out: Option<PathBuf>,
    png: bool,
    precision: Option<f64>,
    metric: String,
    max_replications: u32,
    shard: Option<ShardSpec>,
}

fn bad_flag(path: &Path, field: &str, problem: &str, fix: &str) -> anyhow::Error {
    ScenarioError::Invalid {
        path: path.to_path_buf(),
        line: None,
        field: field.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
    .into()
}

fn cmd_run(path: &Path, flags: RunFlags, mut opts: RunOptions) -> anyhow::Result<ExitCode> {
    let scenario = load(path)?;
    if opts.replications == Some(0) {
        return Err(bad_flag(
            path,
            "--replications",
            "is 0",
            "use 2 or more replications",
        ));
    }
    let metric = metric_index(&flags.metric).ok_or_else(|| {
        bad_flag(
            path,
            "--metric",
            &format!("no metric `{}`", flags.metric),
            "use a column of summary.csv, e.g. latency_p99 or latency_mean",
        )
    })?;
    if let Some(p) = flags.precision {
        if !(p.is_finite() && p > 0.0) {
            return Err(bad_flag(
                path,
                "--precision",
                "must be greater than 0",
                "e.g. --precision 0.01 for ±1%",
            ));
        }
        if flags.shard.is_some() {
            return Err(bad_flag(
                path,
                "--precision",
                "cannot be combined with --shard",
                "shard a fixed number of replications (--replications N)",
            ));
        }
    }
    if flags.shard.is_some() && scenario.sweep.is_some() {
        return Err(bad_flag(
            path,
            "--shard",
            "sharding a [sweep] is not supported yet",
            "run each sweep point as its own scenario, or run the sweep unsharded",
        ));
    }
    let replications = opts.replications.unwrap_or(scenario.replications);
    let out = flags
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join(&scenario.name));
    let points = scenario.sweep.as_ref().map_or(0, |s| s.len()) as u64;
    let shard_indices = flags.shard.map(|s| s.indices(replications));

    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        // A second Ctrl-C while the first is being honoured kills the process as usual.
        let _ = ctrlc::set_handler(move || {
            if cancel.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }
    opts.cancel = Some(cancel.clone());
    if std::io::stderr().is_terminal() {
        let first = shard_indices
            .as_ref()
            .map_or(u64::from(replications), |i| i.len() as u64);
        let bar = ProgressBar::new(first * (1 + points));
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} replications, ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(scenario.name.clone());
        opts.progress = Some(bar);
    }
    eprintln!(
        "{}: {} strategies × {} replications{}, {} s measured after {} s warm-up",
        scenario.name,
        scenario.strategies.len(),
        replications,
        match (flags.shard, flags.precision) {
            (Some(s), _) => format!(
                " (shard {}/{}: {} of them)",
                s.index,
                s.count,
                shard_indices.as_ref().map_or(0, Vec::len)
            ),
            (_, Some(p)) => format!(" to start, more until ±{}% on {}", 100.0 * p, flags.metric),
            _ => String::new(),
        },
        scenario.duration,
        scenario.warmup
    );

    if let (Some(spec), Some(indices)) = (flags.shard, &shard_indices) {
        let results = run_replications(&scenario, indices, &opts)?;
        if let Some(bar) = &opts.progress {
            bar.finish_and_clear();
        }
        let file = ShardFile::new(&results, &scenario, replications, spec).write(&out)?;
        println!(
            "wrote {} ({} replications); combine the shards with `lbsim merge`",
            file.display(),
            results.finished.len()
        );
        return Ok(if results.is_partial() {
            eprintln!(
                "interrupted: {} of {} replications of this shard finished; the file holds those",
                results.finished.len(),
                results.requested
            );
            ExitCode::from(130)
        } else {
            ExitCode::SUCCESS
        });
    }

    let results = match flags.precision {
        Some(target) => {
            let seq = run_to_precision(
                &scenario,
                &opts,
                Precision {
                    target,
                    metric,
                    max_replications: flags.max_replications,
                },
            )?;
            eprintln!(
                "precision: {} replications ({}) give ±{:.2}% on {} for every strategy{}",
                seq.results.finished.len(),
                seq.batches
                    .iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join(" → "),
                100.0 * seq.worst,
                flags.metric,
                if seq.reached {
                    String::new()
                } else {
                    format!(
                        ": target ±{}% NOT reached within --max-replications {}",
                        100.0 * target,
                        flags.max_replications
                    )
                }
            );
            seq.results
        }
        None => run(&scenario, &opts)?,
    };
    let sweep_opts = RunOptions {
        replications: Some(results.finished.len().max(2) as u32),
        ..opts.clone()
    };
    let sweep = run_sweep(&scenario, &sweep_opts)?;
    if let Some(bar) = &opts.progress {
        bar.finish_and_clear();
    }
    let command = format!(
        "lbsim run {} --seed {} --replications {}{}{}",
        path.display(),
        results.seed,
        results.finished.len(),
        flags
            .out
            .as_ref()
            .map_or(String::new(), |o| format!(" --out {}", o.display())),
        if flags.png { " --png" } else { "" },
    );
    print!("{}", summary_table(&results));
    write_all(
        &out,
        &scenario,
        &results,
        sweep.as_ref(),
        &command,
        flags.png,
    )?;
    if results.is_partial() {
        eprintln!(
            "interrupted: {} of {} replications finished; the files above hold those",
            results.finished.len(),
            results.requested
        );
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}

fn write_all(
    out: &Path,
    scenario: &Scenario,
    results: &RunResults,
    sweep: Option<&SweepResults>,
    command: &str,
    png: bool,
) -> anyhow::Result<()> {
    let input = ReportInput {
        scenario,
        results,
        command,
        format: if png {
            ImageFormat::Png
        } else {
            ImageFormat::Svg
        },
        sweep,
    };
    let files = write_reports(out, &input, &standard_reports())?;
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    println!("\nwrote {}: {}", out.display(), names.join(", "));
    Ok(())
}

fn cmd_merge(
    shards: &[PathBuf],
    scenario: Option<PathBuf>,
    out: Option<PathBuf>,
    png: bool,
) -> anyhow::Result<ExitCode> {
    let (results, head, missing) = shard::merge(shards)?;
    let path = scenario.unwrap_or_else(|| head.scenario_path.clone());
    let scenario = load(&path)?;
    if scenario.name != head.scenario {
        anyhow::bail!(
            "{} is scenario `{}` but the shards are of `{}`\n  fix: pass the scenario the shards were run from with --scenario",
            path.display(),
            scenario.name,
            head.scenario
        );
    }
    let command = format!(
        "lbsim run {} --seed {} --replications {}{}{}",
        path.display(),
        results.seed,
        head.replications,
        out.as_ref()
            .map_or(String::new(), |o| format!(" --out {}", o.display())),
        if png { " --png" } else { "" },
    );
    let out = out.unwrap_or_else(|| PathBuf::from("reports").join(&scenario.name));
    print!("{}", summary_table(&results));
    write_all(&out, &scenario, &results, None, &command, png)?;
    if !missing.is_empty() || results.is_partial() {
        eprintln!(
            "incomplete: {} of {} replications ({} shard{} missing: {:?}); the files above hold those",
            results.finished.len(),
            head.replications,
            missing.len(),
            if missing.len() == 1 { "" } else { "s" },
            missing
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_check(
    paths: &[PathBuf],
    baseline: &Path,
    update: bool,
    json: bool,
    tolerance: &[String],
    opts: RunOptions,
) -> anyhow::Result<ExitCode> {
    let tolerance = check::tolerances(tolerance)?;
    let mut findings = Vec::new();
    let mut ran = Vec::new();
    for path in paths {
        let scenario = load(path)?;
        let results = run(&scenario, &opts)?;
        ran.push((scenario.name.clone(), results.finished.len()));
        if update {
            let dir = baseline.join(&scenario.name);
            let file = write_summary_csv(&dir, &scenario, &results)?;
            eprintln!("updated {}", file.display());
            continue;
        }
        let rows = check::read_baseline(baseline, &scenario.name)?;
        if let Some(b) = rows
            .first()
            .filter(|b| b.replications != results.finished.len())
        {
            {
                eprintln!(
                    "warning: {}: baseline has {} replications, this run {}: pass the same --replications as when the baseline was made",
                    scenario.name,
                    b.replications,
                    results.finished.len()
                );
            }
        }
        findings.extend(check::compare_with_baseline(
            &scenario, &results, &rows, &tolerance,
        ));
    }
    if update {
        return Ok(ExitCode::SUCCESS);
    }
    let failed = findings.iter().any(check::Finding::fails);
    if json {
        let doc = serde_json::json!({
            "passed": !failed,
            "scenarios": ran.iter().map(|(n, r)| serde_json::json!({"name": n, "replications": r})).collect::<Vec<_>>(),
            "findings": findings,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", check::markdown(&findings, &ran));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn cmd_validate(path: &Path) -> anyhow::Result<ExitCode> {
    let scenario = load(path)?;
    let rate = scenario.mean_rate();
    let capacity = scenario.capacity();
    println!("{}: valid", path.display());
    println!(
        "  {} servers in {} groups, mean arrival rate {:.1} req/s, capacity {:.1} req/s (overall load {:.0}%)",
        scenario.servers().len(),
        scenario.groups.len(),
        rate,
        capacity,
        100.0 * rate / capacity
    );
    for entry in &scenario.strategies {
        match scenario.group_loads(entry) {
            Some(loads) => {
                let parts: Vec<String> = loads
                    .iter()
                    .map(|l| {
                        format!(
                            "{} {:.1} req/s each ({:.0}% busy)",
                            l.group,
                            l.rate_per_server,
                            100.0 * l.utilization
                        )
                    })
                    .collect();
                println!("  {:<28} {}", entry.label(), parts.join(", "));
            }
            None => println!(
                "  {:<28} adaptive: the split depends on the servers' state",
                entry.label()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_strategies() {
    for s in CATALOGUE {
        println!("{}", s.kind);
        println!("    follows:    {}", s.follows);
        if !s.params.is_empty() {
            println!("    parameters: {}", s.params);
        }
    }
    println!(
        "\nUse in a scenario: [[strategies]] kind = \"<kind>\" plus parameters (see scenarios/README.md)."
    );
}

// ---------------------------------------------------------------------------------------
// Live mode: `lbsim serve` and `lbsim live` (src/live/). Kept in this one module.
// ---------------------------------------------------------------------------------------
mod live_cli {
    use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use anyhow::{Context, bail};
    use clap::Args;

    use lbsim::live::server::{self, ServerConfig};
    use lbsim::live::verdict::{self, CompareOptions, Reference, Tolerances};
    use lbsim::live::{Cluster, LiveError, LiveOptions, Protocol, Transport, replay};

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
        /// Thrift protocol: binary or compact.
        #[arg(long, default_value = "binary")]
        protocol: Protocol,
        /// Thrift transport: framed or buffered.
        #[arg(long, default_value = "framed")]
        transport: Transport,
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
        /// scenario units).
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
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
        #[arg(long = "strategy")]
        strategies: Vec<String>,
        /// Thrift protocol: binary or compact.
        #[arg(long, default_value = "binary")]
        protocol: Protocol,
        /// Thrift transport: framed or buffered.
        #[arg(long, default_value = "framed")]
        transport: Transport,
        /// Tolerances, e.g. latency_mean=0.1,latency_p50=0.1,latency_p99=0.2,share=0.02.
        #[arg(long)]
        tolerance: Option<String>,
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
    }

    fn wait_for_ctrl_c() -> anyhow::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        ctrlc::set_handler(move || {
            let _ = tx.send(());
        })
        .context("cannot install the Ctrl-C handler")?;
        let _ = rx.recv();
        Ok(())
    }

    pub fn serve(a: &ServeArgs) -> anyhow::Result<ExitCode> {
        if let Some(path) = &a.scenario {
            let scenario = load(path)?;
            let cluster = Cluster::start(&scenario, a.host, a.port_base, a.protocol, a.transport)?;
            for (name, addr) in cluster.names.iter().zip(cluster.addrs()) {
                println!("{name} {addr}");
            }
            eprintln!(
                "serving {} servers ({} protocol, {} transport); Ctrl-C stops",
                cluster.servers.len(),
                a.protocol,
                a.transport
            );
            wait_for_ctrl_c()?;
            cluster.shutdown();
            return Ok(ExitCode::SUCCESS);
        }
        let Some(workers) = a.workers else {
            bail!("give a scenario file, or --workers (with --speed and --port) for one server");
        };
        let cfg = ServerConfig {
            workers,
            speed: a.speed,
            queue_capacity: a.queue_capacity,
            protocol: a.protocol,
            transport: a.transport,
            ..ServerConfig::new(a.id.clone())
        };
        let addr = SocketAddr::new(a.host, a.port.unwrap_or(0));
        let handle =
            server::spawn(addr, cfg).with_context(|| format!("cannot start a server on {addr}"))?;
        println!("{} {}", handle.id(), handle.local_addr());
        eprintln!("serving; Ctrl-C stops");
        wait_for_ctrl_c()?;
        handle.shutdown();
        Ok(ExitCode::SUCCESS)
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
        // Ctrl-C: finish the strategy being replayed, start no other, and write what
        // finished. A second Ctrl-C exits at once.
        let cancel = Arc::new(AtomicBool::new(false));
        {
            let cancel = cancel.clone();
            let _ = ctrlc::set_handler(move || {
                if cancel.swap(true, Ordering::SeqCst) {
                    std::process::exit(130);
                }
                eprintln!(
                    "interrupt: finishing the strategy being replayed, then writing what finished"
                );
            });
        }
        let tolerances =
            Tolerances::default().with_overrides(a.tolerance.as_deref().unwrap_or(""))?;
        let reference: Reference = a.against.parse()?;
        let opts = LiveOptions {
            backends: a.backends.as_deref().map(resolve).transpose()?,
            time_scale: a.time_scale,
            replication: a.replication,
            seed: a.seed,
            protocol: a.protocol,
            transport: a.transport,
            io_timeout: Duration::from_secs_f64(a.io_timeout.max(0.001)),
            calibration_calls: a.calibration_calls,
            only: a.strategies.clone(),
            spin: Duration::from_micros(a.spin_us),
            cancel: Some(cancel.clone()),
        };
        eprintln!(
            "{}: replaying replication {} of {} strategies at time scale {} ({:.0} s of wall-clock time each)",
            scenario.name,
            a.replication,
            if a.strategies.is_empty() {
                scenario.strategies.len()
            } else {
                a.strategies.len()
            },
            a.time_scale,
            scenario.end() * a.time_scale
        );
        let run = match replay(&scenario, &opts) {
            Ok(run) => run,
            Err(
                e @ (LiveError::Unreachable { .. }
                | LiveError::BackendCount { .. }
                | LiveError::TimeScale(_)
                | LiveError::NoStrategy(_)
                | LiveError::Unsupported(_)),
            ) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
            Err(e) => return Err(e.into()),
        };
        if run.strategies.is_empty() {
            eprintln!("interrupted before any strategy finished: nothing to write");
            return Ok(ExitCode::from(130));
        }
        let c = &run.calibration;
        println!(
            "calibration: extra latency {:.1} µs, service overhead {:.1} µs (wall-clock, medians); ping {}",
            c.extra_latency_ns * 1e-3,
            c.service_overhead_ns * 1e-3,
            c.backends
                .iter()
                .map(|b| format!("{:.0}", b.ping_rtt_ns * 1e-3))
                .collect::<Vec<_>>()
                .join("/")
                + " µs"
        );
        for s in &run.strategies {
            let served = s.metrics.latency.len();
            let down: Vec<String> = s
                .marked_down
                .iter()
                .map(|&i| scenario.servers()[i].name.clone())
                .collect();
            println!(
                "{:<20} sent {}, served (measured) {}, errors {}{}, {:.1} s wall, {} connections",
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
                s.connections
            );
            if let Some(e) = &s.first_error {
                println!("{:<20} first error: {e}", "");
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
        let verdict = verdict::compare(
            &scenario,
            &run,
            &CompareOptions {
                replications: a.replications,
                tolerances,
                reference,
                max_lag_fraction: a.max_lag,
            },
        )?;
        let out = a
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("reports").join(&scenario.name).join("live"));
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create `{}`", out.display()))?;
        print!("{}", verdict::table(&verdict));
        let written = verdict::write_reports(&out, &scenario, &verdict)?;
        println!(
            "wrote {}",
            written
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if cancel.load(Ordering::SeqCst) {
            eprintln!(
                "interrupted: {} of {} strategies replayed; the files above hold those",
                run.strategies.len(),
                if a.strategies.is_empty() {
                    scenario.strategies.len()
                } else {
                    a.strategies.len()
                }
            );
            return Ok(ExitCode::from(130));
        }
        if let Some(why) = verdict.refusal() {
            eprintln!("{why}");
            return Ok(ExitCode::from(1));
        }
        if verdict.passed() {
            println!("verdict: live agrees with the simulation within tolerance");
            Ok(ExitCode::SUCCESS)
        } else {
            let failed = verdict.rows.iter().filter(|r| r.verdict != "pass").count();
            println!("verdict: {failed} comparison(s) outside tolerance");
            Ok(ExitCode::from(1))
        }
    }
}
