//! `lbsim check`: regression check of scenarios against a committed baseline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use lbsim::metrics::Metric;
use lbsim::report::check::CheckedScenario;
use lbsim::report::output::Folder;
use lbsim::report::{check, write_summary_csv};
use lbsim::runner::{RunOptions, run};

use super::{
    CostFlags, ThreadFlags, bad_flag, check_cost, check_out, check_threads, load_selected,
};

/// `lbsim check`'s arguments.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Scenario files (TOML).
    #[arg(required = true)]
    pub scenarios: Vec<PathBuf>,
    /// Baseline folder, holding `<scenario name>/summary.csv`.
    #[arg(long, default_value = "reports/baseline")]
    pub baseline: PathBuf,
    /// Rewrite the baseline from this run instead of comparing.
    #[arg(long)]
    pub update: bool,
    /// Print JSON (every finding) instead of Markdown.
    #[arg(long)]
    pub json: bool,
    /// Accept strategies and metrics the baseline has no row for (listed as new);
    /// without it they are an error (exit 2), since nothing would be compared.
    #[arg(long)]
    pub allow_new: bool,
    /// Relative tolerances, e.g. `latency_p99=0.1,throughput=2%` (`*=0.1` for all).
    #[arg(long, long_help = tolerance_help())]
    pub tolerance: Vec<String>,
    /// Replications per scenario [default: the scenario's]. Use the same number for
    /// the baseline and the check.
    #[arg(long)]
    pub replications: Option<u32>,
    #[command(flatten)]
    pub threads: ThreadFlags,
    /// Check only the strategy with this label; repeat for several [default: all].
    /// Baseline rows of the other strategies are then not reported missing.
    #[arg(long = "strategy", value_name = "LABEL")]
    pub strategies: Vec<String>,
    #[command(flatten)]
    pub cost: CostFlags,
}

/// `check --tolerance`'s long help, from the same rules the check applies.
fn tolerance_help() -> String {
    format!(
        "Relative tolerances, e.g. `latency_p99=0.1,throughput=2%` (`*=0.1` for all).\n\nDefaults: {}.",
        check::DEFAULT_TOLERANCES
    )
}

pub fn cmd_check(flags: CheckArgs) -> anyhow::Result<ExitCode> {
    let (paths, baseline) = (flags.scenarios.as_slice(), flags.baseline.as_path());
    let opts = RunOptions {
        replications: flags.replications,
        threads: flags.threads.threads,
        ..Default::default()
    };
    let tolerance = check::tolerances(&flags.tolerance)?;
    if let (true, Some(first)) = (flags.update && !flags.strategies.is_empty(), paths.first()) {
        return Err(bad_flag(
            first,
            "--strategy",
            "with --update would drop the other strategies from the baseline",
            "update whole scenarios (no --strategy)",
        ));
    }
    let first = paths
        .first()
        .map_or(Path::new("lbsim check"), PathBuf::as_path);
    if opts.replications.is_some_and(|r| r < 2) {
        return Err(bad_flag(
            first,
            "--replications",
            "is below 2",
            "use 2 or more replications (confidence intervals need 2), the same as the baseline's",
        ));
    }
    check_threads(first, opts.threads)?;
    // Every scenario is loaded and priced before any runs: a bad one fails at once.
    let mut scenarios = Vec::new();
    for path in paths {
        let scenario = load_selected(path, &flags.strategies)?;
        let reps = opts.replications.unwrap_or(scenario.replications);
        check_cost(&scenario, reps, opts.threads, &flags.cost, false)?;
        if flags.update {
            check_out(path, "--baseline", &baseline.join(&scenario.name))?;
        }
        scenarios.push(scenario);
    }
    let mut findings = Vec::new();
    let mut ran = Vec::new();
    for scenario in &mut scenarios {
        super::resolve_warmup(scenario, &opts)?;
        let scenario = &*scenario;
        let results = run(scenario, &opts)?;
        ran.push(CheckedScenario {
            name: scenario.name.clone(),
            replications: results.finished.len(),
            sweep_points: scenario.sweep.as_ref().map_or(0, |s| s.len()),
        });
        if flags.update {
            let dir = baseline.join(&scenario.name);
            let file = write_summary_csv(&Folder::new(&dir), scenario, &results)?;
            eprintln!("updated {}", file.display());
            continue;
        }
        let mut rows = check::read_baseline(baseline, &scenario.name)?;
        if !flags.strategies.is_empty() {
            rows.retain(|b| flags.strategies.contains(&b.strategy));
        }
        if let Some(b) = rows
            .first()
            .filter(|b| b.replications != results.finished.len())
        {
            eprintln!(
                "warning: {}: baseline has {} replications, this run {}: pass the same --replications as when the baseline was made",
                scenario.name,
                b.replications,
                results.finished.len()
            );
        }
        let compared = check::compare_with_baseline(scenario, &results, &rows, &tolerance);
        check::require_complete(baseline, &scenario.name, &compared, flags.allow_new)?;
        findings.extend(compared);
    }
    if flags.update {
        return Ok(ExitCode::SUCCESS);
    }
    let failed = findings.iter().any(check::Finding::fails);
    if flags.json {
        let doc = serde_json::json!({
            "passed": !failed,
            "scenarios": ran,
            "sweep_points_checked": false,
            "tolerances": Metric::ALL
                .into_iter()
                .map(|m| (m.name().to_string(), serde_json::json!(tolerance[m])))
                .collect::<serde_json::Map<_, _>>(),
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
