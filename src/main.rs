//! The `lbsim` command line. Each subcommand lives in `src/cli/`; this file parses the
//! arguments, dispatches, and maps errors to exit statuses (2 for bad input).

#[macro_use]
mod cli;
mod heap;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use lbsim::report::check;
use lbsim::scenario::ScenarioError;
use lbsim::shard;

use cli::{
    EXIT_BAD_INPUT,
    check::{CheckArgs, cmd_check},
    inspect::{
        CompletionsArgs, ManArgs, StrategiesArgs, ValidateArgs, cmd_strategies, cmd_validate,
    },
    live as live_cli,
    run::{MergeArgs, RunArgs, cmd_merge, cmd_run},
};

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
    Run(RunArgs),
    /// Combine shard files (`lbsim run --shard K/N`) into the reports a single run writes.
    Merge(MergeArgs),
    /// Check scenario files without running them, and show the offered load (mean and,
    /// for a time-varying rate, peak) per server group. Exit status 2 if any is invalid.
    Validate(ValidateArgs),
    /// List the strategies, their parameters (defaults, with units), what each reads and
    /// the system each follows.
    Strategies(StrategiesArgs),
    /// Regression check for CI: run scenarios with their pinned seeds and compare every
    /// metric of every strategy with a baseline. Exit status: 0 pass, 1 regression,
    /// 2 bad input (no baseline, bad tolerance, bad scenario).
    Check(CheckArgs),
    /// Print a shell completion script, e.g. `lbsim completions bash >
    /// ~/.local/share/bash-completion/completions/lbsim`.
    Completions(CompletionsArgs),
    /// Print the man page (roff), e.g. `lbsim man > ~/.local/share/man/man1/lbsim.1`, or
    /// write one page per subcommand with --out.
    Man(ManArgs),
    /// Start a scenario's servers (or one server) as real Thrift backends, until Ctrl-C.
    Serve(live_cli::ServeArgs),
    /// Replay a scenario against real Thrift backends and compare with the simulation.
    Live(live_cli::LiveArgs),
}

fn main() -> ExitCode {
    // Each run reuses the pages the run before freed (see the module's doc).
    heap::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cmd_run(args),
        Command::Validate(args) => cmd_validate(&args),
        Command::Merge(args) => cmd_merge(args),
        Command::Check(args) => cmd_check(args),
        Command::Strategies(args) => {
            cmd_strategies(&args);
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions(args) => {
            let shell = args.shell;
            clap_complete::generate(shell, &mut Cli::command(), "lbsim", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man(args) => cli::inspect::cmd_man(Cli::command(), &args),
        Command::Serve(args) => live_cli::serve(&args),
        Command::Live(args) => live_cli::live(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let bad_input = e.downcast_ref::<ScenarioError>().is_some()
                || e.downcast_ref::<check::CheckError>().is_some()
                || e.downcast_ref::<shard::ShardError>().is_some()
                || e.downcast_ref::<lbsim::scenario::CostError>().is_some();
            eprintln!("error: {e:#}");
            ExitCode::from(if bad_input { EXIT_BAD_INPUT } else { 1 })
        }
    }
}
