//! `lbsim check`: regression check of scenarios against a committed baseline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lbsim::report::{check, write_summary_csv};
use lbsim::runner::{RunOptions, run};

use super::{CostFlags, bad_flag, check_cost, check_out, check_threads, load};

/// `lbsim check` flags beyond the scenarios, the baseline and the run options.
pub struct CheckFlags {
    pub update: bool,
    pub json: bool,
    pub allow_new: bool,
    pub tolerance: Vec<String>,
    pub cost: CostFlags,
}

pub fn cmd_check(
    paths: &[PathBuf],
    baseline: &Path,
    flags: &CheckFlags,
    opts: RunOptions,
) -> anyhow::Result<ExitCode> {
    let (update, json, allow_new, cost) = (flags.update, flags.json, flags.allow_new, &flags.cost);
    let tolerance = &flags.tolerance;
    let tolerance = check::tolerances(tolerance)?;
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
        let scenario = load(path)?;
        let reps = opts.replications.unwrap_or(scenario.replications);
        check_cost(&scenario, reps, opts.threads, cost, false)?;
        if update {
            check_out(path, "--baseline", &baseline.join(&scenario.name))?;
        }
        scenarios.push(scenario);
    }
    let mut findings = Vec::new();
    let mut ran = Vec::new();
    for scenario in &scenarios {
        let results = run(scenario, &opts)?;
        ran.push((scenario.name.clone(), results.finished.len()));
        if update {
            let dir = baseline.join(&scenario.name);
            let file = write_summary_csv(&dir, scenario, &results)?;
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
        let compared = check::compare_with_baseline(scenario, &results, &rows, &tolerance);
        check::require_complete(baseline, &scenario.name, &compared, allow_new)?;
        findings.extend(compared);
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
