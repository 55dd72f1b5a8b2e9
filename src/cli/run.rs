//! `lbsim run` and `lbsim merge`: simulate a scenario (optionally a shard of it, or to a
//! precision target) and write its reports.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use lbsim::metrics::Metric;
use lbsim::report::output::Staging;
use lbsim::report::timeseries::{Timeseries, trace_spec};
use lbsim::report::{
    ImageFormat, ReportInput, standard_reports_with, summary_table, write_reports_into,
};
use lbsim::runner::{RunOptions, RunResults, TraceSink, run_batch, run_with_idle};
use lbsim::scenario::Scenario;
use lbsim::sequential::{Precision, run_to_precision};
use lbsim::shard::{self, ShardFile, ShardSpec};
use lbsim::sweep::SweepResults;
use lbsim::sweep::run_sweep;

use super::signals::Interrupt;
use super::{
    CostFlags, EXIT_PRECISION_MISSED, ThreadFlags, bad_flag, check_cost, check_out, check_threads,
    load, load_selected,
};
use lbsim::scenario::cost::MAX_REPLICATIONS;

/// `lbsim run`'s arguments.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Scenario file (TOML).
    pub scenario: PathBuf,
    #[command(flatten)]
    pub output: OutputFlags,
    /// Replications per strategy [default: the scenario's].
    #[arg(long)]
    pub replications: Option<u32>,
    /// Master seed [default: the scenario's].
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub threads: ThreadFlags,
    /// Sequential stopping: add replications until the 95% CI half-width of --metric
    /// is below this fraction of the mean for every strategy (e.g. 0.01).
    #[arg(long)]
    pub precision: Option<f64>,
    /// Metric for --precision.
    #[arg(long, default_value = "latency_p99")]
    pub metric: String,
    /// Cap on replications for --precision.
    #[arg(long, default_value_t = 1000)]
    pub max_replications: u32,
    /// Run only replications i with i % N == K and write `shard-K-of-N.json` into
    /// --out; combine the shards with `lbsim merge`.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<ShardSpec>,
    /// Run only the strategy with this label; repeat for several [default: all].
    /// A strategy's figures do not depend on which others run.
    #[arg(long = "strategy", value_name = "LABEL")]
    pub strategies: Vec<String>,
    /// Record every server in `timeseries.csv` and the queue-over-time plot; by default
    /// a cluster of more than 64 servers shows a sample of each group.
    #[arg(long)]
    pub full_timeseries: bool,
    #[command(flatten)]
    pub cost: CostFlags,
}

/// `lbsim merge`'s arguments.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Folders holding shard-K-of-N.json files (or the files).
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// Scenario file [default: the path recorded in the shards].
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputFlags,
}

/// `--out` and `--png`, shared by the commands that write a run's reports.
#[derive(Args, Clone, Debug)]
pub struct OutputFlags {
    /// Output folder [default: reports/<scenario name>/].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Draw plots as PNG instead of SVG.
    #[arg(long)]
    pub png: bool,
}

impl OutputFlags {
    /// The folder the reports go to: `--out`, or `reports/<scenario name>/`.
    fn dir(&self, scenario: &Scenario) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("reports").join(&scenario.name))
    }

    /// These flags as they were typed, for the command line a report records.
    fn typed(&self) -> String {
        let out = self
            .out
            .as_ref()
            .map_or(String::new(), |o| format!(" --out {}", o.display()));
        out + if self.png { " --png" } else { "" }
    }

    fn format(&self) -> ImageFormat {
        if self.png {
            ImageFormat::Png
        } else {
            ImageFormat::Svg
        }
    }
}

pub fn cmd_run(flags: RunArgs) -> anyhow::Result<ExitCode> {
    let path = flags.scenario.as_path();
    let mut opts = RunOptions {
        replications: flags.replications,
        seed: flags.seed,
        threads: flags.threads.threads,
        ..Default::default()
    };
    let mut scenario = load_selected(path, &flags.strategies)?;
    if opts.replications == Some(0) {
        return Err(bad_flag(
            path,
            "--replications",
            "is 0",
            "use 2 or more replications",
        ));
    }
    let metric = Metric::from_name(&flags.metric).map_err(|e| {
        bad_flag(
            path,
            "--metric",
            &e.to_string(),
            "use one of those names (columns of summary.csv), e.g. latency_p99",
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
    if flags.shard.is_some() && !flags.strategies.is_empty() {
        return Err(bad_flag(
            path,
            "--strategy",
            "cannot be combined with --shard (`lbsim merge` reads every strategy of the scenario file)",
            "shard the whole scenario, or write a scenario file with only the strategies to run",
        ));
    }
    if flags.shard.is_some() && scenario.sweep.is_some() {
        return Err(bad_flag(
            path,
            "--shard",
            "sharding a [sweep] is not supported yet",
            "run each sweep point as its own scenario, or run the sweep unsharded",
        ));
    }
    if let Some(r) = opts.replications.filter(|&r| r > MAX_REPLICATIONS) {
        return Err(bad_flag(
            path,
            "--replications",
            &format!("is {r}, above {MAX_REPLICATIONS}"),
            &format!("use at most {MAX_REPLICATIONS} replications"),
        ));
    }
    check_threads(path, opts.threads)?;
    let replications = opts.replications.unwrap_or(scenario.replications);
    // With --precision, replications are added up to --max-replications: that is the cost.
    let most = match flags.precision {
        Some(_) => flags.max_replications.max(replications),
        None => flags
            .shard
            .map_or(replications, |s| s.indices(replications).len() as u32),
    };
    check_cost(&scenario, most, opts.threads, &flags.cost, true)?;
    let out = flags.output.dir(&scenario);
    // An unwritable --out fails now, not after the simulation.
    check_out(path, "--out", &out)?;
    let points = scenario.sweep.as_ref().map_or(0, |s| s.len()) as u64;
    let shard_indices = flags.shard.map(|s| s.indices(replications));

    // SIGINT / SIGTERM: replications under way stop within a millisecond or so; the
    // ones that finished are written, and the exit status is 130 / 143.
    let interrupt = Interrupt::install("stopping; writing the replications that finished")?;
    opts.cancel = interrupt.flag();
    super::resolve_warmup(&mut scenario, &opts)?;
    if interrupt.is_set() {
        eprintln!("interrupted while choosing the warm-up: nothing to write");
        return Ok(interrupt.exit_code());
    }
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

    // Replication 0's time series is recorded while it runs (no second simulation, and
    // reports never simulate): by a single run, or by the shard that runs replication 0,
    // which stores it for `lbsim merge`.
    let sink = TraceSink::new(trace_spec(&scenario, flags.full_timeseries));
    opts.trace = Some(sink.clone());
    if let (Some(spec), Some(indices)) = (flags.shard, &shard_indices) {
        let results = run_batch(&scenario, indices, &opts)?;
        if let Some(bar) = &opts.progress {
            bar.finish_and_clear();
        }
        if results.finished.is_empty() && !indices.is_empty() {
            eprintln!(
                "interrupted before any replication of this shard finished: nothing to write"
            );
            return Ok(interrupt.exit_code());
        }
        let file = ShardFile::new(&results, &scenario, replications, spec)
            .with_timeseries(&sink.take())
            .write(&out)?;
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
            interrupt.exit_code()
        } else {
            ExitCode::SUCCESS
        });
    }

    // One pool for the run and the reports (as rayon's global pool, when --threads is
    // not given): a thread that drew a plot during the run keeps what it loaded for it
    // (the fonts, loaded once per thread), and no second pool is started.
    let threads = opts.threads.take();
    lbsim::runner::in_pool(threads, || {
        run_and_write(
            &flags, path, &scenario, &opts, &sink, &out, &interrupt, metric,
        )
    })?
}

/// Runs `scenario` (to a precision, when asked) with its sweep, and writes the reports
/// into `out`: the end of `lbsim run` but for a shard, on the current pool.
#[allow(clippy::too_many_arguments)]
fn run_and_write(
    flags: &RunArgs,
    path: &Path,
    scenario: &Scenario,
    opts: &RunOptions,
    sink: &TraceSink,
    out: &Path,
    interrupt: &Interrupt,
    metric: Metric,
) -> anyhow::Result<ExitCode> {
    // The reports are staged in `out` from here on. The time series needs only the
    // traces (recorded as replication 0 runs), not the results: the first thread that
    // finds no simulation left to start writes it, while the others end their last
    // ones, instead of after the run (`run_with_idle`).
    let staging = Staging::new(out)?;
    let early_timeseries = Mutex::new(None);
    let write_timeseries = || {
        if let Some(traces) = sink.take_complete(scenario.strategies.len()) {
            let written = Timeseries::recorded(traces).write_files(
                &staging.folder(),
                scenario,
                flags.output.format(),
            );
            *early_timeseries.lock().unwrap_or_else(|e| e.into_inner()) = Some(written);
        }
    };
    let (results, missed) = match flags.precision {
        Some(target) => run_precise(scenario, opts, flags, target, metric)?,
        None => (run_with_idle(scenario, opts, &write_timeseries)?, None),
    };
    if results.finished.is_empty() && interrupt.is_set() {
        if let Some(bar) = &opts.progress {
            bar.finish_and_clear();
        }
        eprintln!("interrupted before any replication finished: nothing to write");
        return Ok(interrupt.exit_code());
    }
    lbsim::runner::check_measured(scenario, &results)?;
    for w in lbsim::steady::warnings(scenario, &results) {
        eprintln!("warning: {w}");
    }
    if results.finished.len() == 1 {
        eprintln!(
            "note: one replication: figures without confidence intervals, strategies not told apart; run 2 or more (--replications) for intervals"
        );
    }
    let sweep_opts = RunOptions {
        replications: Some(results.finished.len().max(2) as u32),
        trace: None,
        ..opts.clone()
    };
    let sweep = run_sweep(scenario, &sweep_opts)?;
    if let Some(bar) = &opts.progress {
        bar.finish_and_clear();
    }
    let command = format!(
        "lbsim run {} --seed {} --replications {}{}{}{}",
        path.display(),
        results.seed,
        results.finished.len(),
        flags.output.typed(),
        flags
            .strategies
            .iter()
            .map(|l| format!(" --strategy {l}"))
            .collect::<String>(),
        if flags.full_timeseries {
            " --full-timeseries"
        } else {
            ""
        },
    );
    let timeseries = match early_timeseries
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
    {
        Some(written) => Timeseries::written(written),
        // Not written during the run (interrupted before every strategy's replication
        // 0 ended, or run to a precision): written with the other reports.
        None => Timeseries::recorded(sink.take()),
    };
    // On the run's threads: the reports are written in parallel.
    write_all(
        staging,
        scenario,
        &results,
        sweep.as_ref(),
        &command,
        flags.output.format(),
        timeseries,
    )?;
    if results.is_partial() || interrupt.is_set() {
        eprintln!(
            "interrupted: {} of {} replications finished{}; the files above hold those",
            results.finished.len(),
            results.requested,
            match (&scenario.sweep, &sweep) {
                (Some(all), Some(done)) => {
                    format!(", and {} of {} sweep points", done.points.len(), all.len())
                }
                _ => String::new(),
            }
        );
        return Ok(interrupt.exit_code());
    }
    if let Some(m) = missed {
        eprintln!("{m}");
        return Ok(ExitCode::from(EXIT_PRECISION_MISSED));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `scenario` adding replications until `target` precision on `metric` (or
/// `--max-replications`), and says how far it got. Returns the results and, when a
/// complete run missed the target, what to say at the end.
fn run_precise(
    scenario: &Scenario,
    opts: &RunOptions,
    flags: &RunArgs,
    target: f64,
    metric: Metric,
) -> anyhow::Result<(RunResults, Option<String>)> {
    let seq = run_to_precision(
        scenario,
        opts,
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
    let missed = (!seq.reached && !seq.results.is_partial()).then(|| {
        let (k, w) =
            lbsim::sequential::worst_strategy(&seq.results, metric).unwrap_or((0, f64::INFINITY));
        format!(
            "precision target missed: `{}` holds {} at ±{:.2}% (target ±{}%) after {} replications; raise --max-replications, or lengthen `duration` to narrow each replication's spread (exit status {EXIT_PRECISION_MISSED})",
            seq.results
                .strategies
                .get(k)
                .map_or("?", |s| s.label.as_str()),
            flags.metric,
            100.0 * w,
            100.0 * target,
            seq.results.finished.len()
        )
    });
    Ok((seq.results, missed))
}

/// Prints the summary table (and warns of clamped values), then writes every report into
/// `staging` and publishes them into its output folder.
fn write_all(
    staging: Staging,
    scenario: &Scenario,
    results: &RunResults,
    sweep: Option<&SweepResults>,
    command: &str,
    format: ImageFormat,
    timeseries: Timeseries,
) -> anyhow::Result<()> {
    let out = staging.out.clone();
    let input = ReportInput {
        scenario,
        results,
        command,
        format,
        sweep,
    };
    // The table is printed before the reports are written, as it is computed while they
    // are (the two are independent).
    let (table, files) = rayon::join(
        || summary_table(results),
        || write_reports_into(staging, &input, &standard_reports_with(timeseries)),
    );
    print!("{table}");
    warn_clamped(&scenario.name, results);
    let files = files?;
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    println!("\nwrote {}: {}", out.display(), names.join(", "));
    Ok(())
}

pub fn cmd_merge(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let MergeArgs {
        shards,
        scenario,
        output,
    } = args;
    let shards = shards.as_slice();
    let shard::Merged {
        mut results,
        head,
        head_path,
        missing,
        timeseries,
    } = shard::merge(shards)?;
    let recorded = scenario.is_none();
    let path = scenario.unwrap_or_else(|| head.scenario_path.clone());
    let mut scenario = anyhow::Context::with_context(load(&path), || {
        if recorded {
            format!(
                "the scenario `{}` recorded (pass the scenario with --scenario)",
                head_path.display()
            )
        } else {
            "the scenario given with --scenario".into()
        }
    })?;
    // The shards chose an automatic warm-up from the same pilots: choose it again (same
    // seed, same result) so that the fingerprints match and the reports say it.
    super::resolve_warmup(
        &mut scenario,
        &RunOptions {
            seed: Some(results.seed),
            ..Default::default()
        },
    )?;
    lbsim::stability::assess(&scenario, &mut results);
    if scenario.name != head.scenario {
        return Err(shard::ShardError::Mismatch(format!(
            "{} is scenario `{}` but the shards (`{}`, ...) are of `{}`; pass the scenario the shards were run from with --scenario",
            path.display(),
            scenario.name,
            head_path.display(),
            head.scenario
        ))
        .into());
    }
    head.check_scenario(&head_path, &scenario, &path)?;
    let command = format!(
        "lbsim run {} --seed {} --replications {}{}",
        path.display(),
        results.seed,
        head.replications,
        output.typed(),
    );
    let out = output.dir(&scenario);
    check_out(&path, "--out", &out)?;
    // Replication 0's time series comes from the shard that ran it: nothing simulates.
    write_all(
        Staging::new(&out)?,
        &scenario,
        &results,
        None,
        &command,
        output.format(),
        Timeseries::recorded(timeseries),
    )?;
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

/// Says when response times went beyond the latency histogram's range: percentiles above
/// it are reported at the range's top, while the mean and the maximum stay exact.
fn warn_clamped(name: &str, results: &RunResults) {
    let top = lbsim::metrics::LATENCY_HIGH_NS as f64 * 1e-9;
    for s in &results.strategies {
        let max = s
            .runs
            .iter()
            .map(|r| r.values[Metric::LatencyMax])
            .fold(0.0, f64::max);
        if max > top {
            eprintln!(
                "warning: {name}: strategy `{}`: response times reach {max:.0} s, beyond the {top:.0} s range of the latency histogram: percentiles above {top:.0} s are reported as {top:.0} s (latency_mean and latency_max are exact)",
                s.label
            );
        }
    }
}
