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
    let points = scenario.sweep.as_ref().map_or(0, |s| s.values.len()) as u64;
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
