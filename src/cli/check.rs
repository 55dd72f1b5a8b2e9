//! `lbsim check`: regression check of scenarios against a committed baseline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lbsim::metrics::Metric;
use lbsim::report::check::CheckedScenario;
use lbsim::report::{check, write_summary_csv};
use lbsim::runner::{RunOptions, run};

use super::{CostFlags, bad_flag, check_cost, check_out, check_threads, load_selected};

/// `lbsim check` flags beyond the run options.
pub struct CheckFlags {
    /// Rewrite the baseline instead of comparing.
    pub update: bool,
    /// JSON instead of Markdown.
    pub json: bool,
    /// `--tolerance` entries.
    pub tolerance: Vec<String>,
    /// `--strategy` labels (empty: all).
    pub strategies: Vec<String>,
    /// Accept figures the baseline has no row for (else an error).
    pub allow_new: bool,
    /// `--max-events`, `--max-memory`.
    pub cost: CostFlags,
}

pub fn cmd_check(
    paths: &[PathBuf],
    baseline: &Path,
    flags: CheckFlags,
    opts: RunOptions,
) -> anyhow::Result<ExitCode> {
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
    for scenario in &scenarios {
        let results = run(scenario, &opts)?;
        ran.push(CheckedScenario {
            name: scenario.name.clone(),
            replications: results.finished.len(),
            sweep_points: scenario.sweep.as_ref().map_or(0, |s| s.len()),
        });
        if flags.update {
            let dir = baseline.join(&scenario.name);
            let file = write_summary_csv(&dir, scenario, &results)?;
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
