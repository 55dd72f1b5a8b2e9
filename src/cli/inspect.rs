//! `lbsim validate` and `lbsim strategies`: look at a scenario or the strategy registry without
//! running anything.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use lbsim::report::plots::tick;
use lbsim::scenario::Scenario;
use lbsim::strategy::registry;

use super::{CostFlags, EXIT_BAD_INPUT, bad_flag, check_cost, load};

/// `lbsim validate`'s arguments.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Scenario files (TOML).
    #[arg(required = true)]
    pub scenarios: Vec<PathBuf>,
    /// Replications to estimate the cost of [default: each scenario's].
    #[arg(long)]
    pub replications: Option<u32>,
    #[command(flatten)]
    pub cost: CostFlags,
    /// Exit with status 1 on any warning (for CI), not only on errors.
    #[arg(long)]
    pub strict: bool,
}

/// `lbsim strategies`' arguments.
#[derive(Args, Debug)]
pub struct StrategiesArgs {
    /// Print the Markdown table the READMEs hold (to regenerate them).
    #[arg(long)]
    pub markdown: bool,
}

/// `lbsim completions`' arguments.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// Shell: bash, elvish, fish, powershell or zsh.
    pub shell: clap_complete::Shell,
}

/// `lbsim man`'s arguments.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Folder to write `lbsim.1` and `lbsim-<subcommand>.1` into.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `lbsim validate FILE...`: every file is checked, and the cost of running it estimated;
/// the exit status is 2 when any is invalid or beyond the cost limits (each error is
/// printed, then the next file is checked), and with `strict` 1 when any has a warning.
pub fn cmd_validate(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let (paths, replications, cost, strict) = (
        args.scenarios.as_slice(),
        args.replications,
        &args.cost,
        args.strict,
    );
    if let (Some(0), Some(first)) = (replications, paths.first()) {
        return Err(bad_flag(
            first,
            "--replications",
            "is 0",
            "use 2 or more replications",
        ));
    }
    let (mut bad, mut warnings) = (0, 0);
    for path in paths {
        let checked = load(path).and_then(|scenario| {
            let reps = replications.unwrap_or(scenario.replications);
            let estimate = check_cost(&scenario, reps, None, cost, false)?;
            Ok((scenario, estimate))
        });
        match checked {
            Ok((scenario, estimate)) => {
                warnings += describe(path, &scenario);
                println!("  estimated cost: {}", estimate.describe());
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                bad += 1;
            }
        }
    }
    if bad > 0 {
        if paths.len() > 1 {
            eprintln!("{bad} of {} files invalid", paths.len());
        }
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    if strict && warnings > 0 {
        eprintln!("--strict: {warnings} warning(s) above; exit status 1");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints what `scenario` offers each group; returns its number of warnings. The verdict
/// line says `unstable` when a strategy's static split overloads a group.
fn describe(path: &Path, scenario: &Scenario) -> usize {
    let rate = scenario.mean_rate();
    let capacity = scenario.capacity();
    let unstable: Vec<String> = (0..scenario.strategies.len())
        .filter_map(|k| {
            lbsim::stability::static_overload(scenario, k)
                .map(|why| format!("`{}` {why}", scenario.strategies[k].label()))
        })
        .collect();
    let warnings = scenario.warnings().len();
    println!(
        "{}: valid{}",
        path.display(),
        match (unstable.is_empty(), warnings) {
            (false, _) => format!(", but unstable: {}", unstable.join("; ")),
            (true, 0) => String::new(),
            (true, 1) => " (1 warning)".to_string(),
            (true, n) => format!(" ({n} warnings)"),
        }
    );
    println!(
        "  {} server{} in {} group{}, mean arrival rate {:.1} req/s, capacity {:.1} req/s (overall load {:.0}%)",
        scenario.servers().len(),
        if scenario.servers().len() == 1 {
            ""
        } else {
            "s"
        },
        scenario.groups.len(),
        if scenario.groups.len() == 1 { "" } else { "s" },
        rate,
        capacity,
        100.0 * rate / capacity
    );
    if let Some((peak, at)) = scenario.peak_rate() {
        println!(
            "  time-varying rate: peak {:.1} req/s {} ({:.0}% of capacity{})",
            peak,
            at.map_or("in the high state".to_string(), |t| format!(
                "at {} s",
                tick(t)
            )),
            100.0 * peak / capacity,
            if peak >= capacity {
                ": queues grow while it lasts"
            } else {
                ""
            }
        );
    }
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
    if let Some(sweep) = &scenario.sweep {
        println!(
            "  sweep: {} points over {}{}",
            sweep.len(),
            sweep.first.name(),
            sweep
                .by
                .as_ref()
                .map_or(String::new(), |b| format!(" × {}", b.name()))
        );
    }
    warnings
}

/// `lbsim man`: the man page on standard output, or every page into `out`.
pub fn cmd_man(cmd: clap::Command, args: &ManArgs) -> anyhow::Result<ExitCode> {
    match args.out.as_deref() {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("cannot write man pages into `{}`", dir.display()))?;
            println!("wrote man pages into {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `lbsim strategies`: the registry, as a listing or as the READMEs' Markdown table.
pub fn cmd_strategies(args: &StrategiesArgs) {
    if args.markdown {
        print!("{}", registry::markdown_table());
    } else {
        print!("{}", registry::listing());
    }
}
