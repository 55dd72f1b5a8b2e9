//! The `lbsim` command line: run, validate and list strategies.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use lbsim::report::{summary_table, write_servers_csv, write_summary_csv};
use lbsim::runner::{RunOptions, run};
use lbsim::scenario::{Scenario, ScenarioError};
use lbsim::strategy::CATALOGUE;

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
    },
    /// Check a scenario file without running it, and show the offered load per server group.
    Validate {
        /// Scenario file (TOML).
        scenario: PathBuf,
    },
    /// List the strategies, their parameters and the system each follows.
    Strategies,
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
        } => cmd_run(
            &scenario,
            out,
            RunOptions {
                replications,
                seed,
                threads,
                ..Default::default()
            },
        ),
        Command::Validate { scenario } => cmd_validate(&scenario),
        Command::Strategies => {
            cmd_strategies();
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let bad_input = e.downcast_ref::<ScenarioError>().is_some();
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

fn cmd_run(path: &Path, out: Option<PathBuf>, mut opts: RunOptions) -> anyhow::Result<ExitCode> {
    let scenario = load(path)?;
    if opts.replications == Some(0) {
        return Err(ScenarioError::Invalid {
            path: path.to_path_buf(),
            line: None,
            field: "--replications".into(),
            problem: "is 0".into(),
            fix: "use 2 or more replications".into(),
        }
        .into());
    }
    let replications = opts.replications.unwrap_or(scenario.replications);
    let out = out.unwrap_or_else(|| PathBuf::from("reports").join(&scenario.name));

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
        let bar = ProgressBar::new(u64::from(replications));
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} replications, ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(scenario.name.clone());
        opts.progress = Some(bar);
    }
    eprintln!(
        "{}: {} strategies × {} replications, {} s measured after {} s warm-up",
        scenario.name,
        scenario.strategies.len(),
        replications,
        scenario.duration,
        scenario.warmup
    );
    let results = run(&scenario, &opts)?;
    if let Some(bar) = &opts.progress {
        bar.finish_and_clear();
    }

    print!("{}", summary_table(&results));
    let summary = write_summary_csv(&out, &scenario, &results)?;
    let servers = write_servers_csv(&out, &scenario, &results)?;
    println!("\nwrote {} and {}", summary.display(), servers.display());
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
