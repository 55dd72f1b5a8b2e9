//! The subcommands of the `lbsim` binary, one module each, and helpers they share.

pub mod check;
pub mod inspect;
pub mod live;
pub mod run;

use std::path::Path;

use lbsim::scenario::{Scenario, ScenarioError};

/// Exit status for bad input (scenario errors, bad flags, a run that measured nothing).
pub const EXIT_BAD_INPUT: u8 = 2;

/// Exit status of `lbsim run --precision` when the target was not reached within
/// `--max-replications` (the reports are written all the same).
pub const EXIT_PRECISION_MISSED: u8 = 3;

/// Loads and validates a scenario, printing its warnings.
pub fn load(path: &Path) -> anyhow::Result<Scenario> {
    let scenario = Scenario::load(path)?;
    for w in scenario.warnings() {
        eprintln!("warning: {}: {w}", path.display());
    }
    Ok(scenario)
}

/// Loads a scenario and keeps only the strategies labelled `labels` (all if empty), for
/// `--strategy LABEL`.
pub fn load_selected(path: &Path, labels: &[String]) -> anyhow::Result<Scenario> {
    let mut scenario = load(path)?;
    if let Err(label) = scenario.keep_strategies(labels) {
        let known: Vec<String> = scenario.strategies.iter().map(|e| e.label()).collect();
        return Err(bad_flag(
            path,
            "--strategy",
            &format!("no strategy labelled `{label}`"),
            &format!("use one of: {}", known.join(", ")),
        ));
    }
    Ok(scenario)
}

/// A bad command-line flag, reported like a scenario error (exit status 2).
pub fn bad_flag(path: &Path, field: &str, problem: &str, fix: &str) -> anyhow::Error {
    ScenarioError::Invalid {
        path: path.to_path_buf(),
        line: None,
        field: field.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
    .into()
}
