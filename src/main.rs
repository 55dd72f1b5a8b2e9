//! The `lbsim` command line. Each subcommand lives in `src/cli/`; this file parses the
//! arguments, dispatches, and maps errors to exit statuses (2 for bad input).

#[macro_use]
mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use lbsim::report::check;
use lbsim::runner::RunOptions;
use lbsim::scenario::ScenarioError;
use lbsim::shard::{self, ShardSpec};

use cli::{
    CostFlags, EXIT_BAD_INPUT,
    check::{CheckFlags, cmd_check},
    inspect::{cmd_strategies, cmd_validate},
    live as live_cli,
    run::{RunFlags, cmd_merge, cmd_run},
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
        /// Run only the strategy with this label; repeat for several [default: all].
        /// A strategy's figures do not depend on which others run.
        #[arg(long = "strategy", value_name = "LABEL")]
        strategies: Vec<String>,
        /// Record every server in `timeseries.csv` and the queue-over-time plot; by default
        /// a cluster of more than 64 servers shows a sample of each group.
        #[arg(long)]
        full_timeseries: bool,
        #[command(flatten)]
        cost: CostFlags,
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
    /// Check scenario files without running them, and show the offered load (mean and,
    /// for a time-varying rate, peak) per server group. Exit status 2 if any is invalid.
    Validate {
        /// Scenario files (TOML).
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// Replications to estimate the cost of [default: each scenario's].
        #[arg(long)]
        replications: Option<u32>,
        #[command(flatten)]
        cost: CostFlags,
        /// Exit with status 1 on any warning (for CI), not only on errors.
        #[arg(long)]
        strict: bool,
    },
    /// List the strategies, their parameters (defaults, with units), what each reads and
    /// the system each follows.
    Strategies {
        /// Print the Markdown table the READMEs hold (to regenerate them).
        #[arg(long)]
        markdown: bool,
    },
    /// Regression check for CI: run scenarios with their pinned seeds and compare every
    /// metric of every strategy with a baseline. Exit status: 0 pass, 1 regression,
    /// 2 bad input (no baseline, bad tolerance, bad scenario).
    Check {
        /// Scenario files (TOML).
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// Baseline folder, holding `<scenario name>/summary.csv`.
        #[arg(long, default_value = "reports/baseline")]
        baseline: PathBuf,
        /// Rewrite the baseline from this run instead of comparing.
        #[arg(long)]
        update: bool,
        /// Print JSON (every finding) instead of Markdown.
        #[arg(long)]
        json: bool,
        /// Accept strategies and metrics the baseline has no row for (listed as new);
        /// without it they are an error (exit 2), since nothing would be compared.
        #[arg(long)]
        allow_new: bool,
        /// Relative tolerances, e.g. `latency_p99=0.1,throughput=2%` (`*=0.1` for all).
        #[arg(long, long_help = tolerance_help())]
        tolerance: Vec<String>,
        /// Replications per scenario [default: the scenario's]. Use the same number for
        /// the baseline and the check.
        #[arg(long)]
        replications: Option<u32>,
        /// Worker threads [default: one per core]. Results do not depend on it.
        #[arg(long)]
        threads: Option<usize>,
        /// Check only the strategy with this label; repeat for several [default: all].
        /// Baseline rows of the other strategies are then not reported missing.
        #[arg(long = "strategy", value_name = "LABEL")]
        strategies: Vec<String>,
        #[command(flatten)]
        cost: CostFlags,
    },
    /// Print a shell completion script, e.g. `lbsim completions bash >
    /// ~/.local/share/bash-completion/completions/lbsim`.
    Completions {
        /// Shell: bash, elvish, fish, powershell or zsh.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `lbsim man > ~/.local/share/man/man1/lbsim.1`, or
    /// write one page per subcommand with --out.
    Man {
        /// Folder to write `lbsim.1` and `lbsim-<subcommand>.1` into.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Start a scenario's servers (or one server) as real Thrift backends, until Ctrl-C.
    Serve(live_cli::ServeArgs),
    /// Replay a scenario against real Thrift backends and compare with the simulation.
    Live(live_cli::LiveArgs),
}

/// `check --tolerance`'s long help, from the same rules the check applies.
fn tolerance_help() -> String {
    format!(
        "Relative tolerances, e.g. `latency_p99=0.1,throughput=2%` (`*=0.1` for all).\n\nDefaults: {}.",
        check::DEFAULT_TOLERANCES
    )
}

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
            strategies,
            full_timeseries,
            cost,
        } => cmd_run(
            &scenario,
            RunFlags {
                out,
                png,
                precision,
                metric,
                max_replications,
                shard,
                strategies,
                full_timeseries,
                cost,
            },
            RunOptions {
                replications,
                seed,
                threads,
                ..Default::default()
            },
        ),
        Command::Validate {
            scenarios,
            replications,
            cost,
            strict,
        } => cmd_validate(&scenarios, replications, &cost, strict),
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
            allow_new,
            tolerance,
            replications,
            threads,
            strategies,
            cost,
        } => cmd_check(
            &scenarios,
            &baseline,
            CheckFlags {
                update,
                json,
                tolerance,
                strategies,
                allow_new,
                cost,
            },
            RunOptions {
                replications,
                threads,
                ..Default::default()
            },
        ),
        Command::Strategies { markdown } => {
            cmd_strategies(markdown);
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "lbsim", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out } => cli::inspect::cmd_man(Cli::command(), out.as_deref()),
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
