//! The subcommands of the `lbsim` binary, one module each, and helpers they share.
//!
//! The print macros are replaced here for the whole binary: like std's, but a closed
//! stdout or stderr (`lbsim run ... | head -1`, `| true`) is ignored instead of
//! panicking with "Broken pipe", so a command still writes its files and ends quietly.

/// `print!` that ignores a closed stdout.
macro_rules! print {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// `println!` that ignores a closed stdout.
macro_rules! println {
    () => {{
        use std::io::Write as _;
        let _ = std::io::stdout().write_all(b"\n");
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that ignores a closed stderr.
macro_rules! eprintln {
    () => {{
        use std::io::Write as _;
        let _ = std::io::stderr().write_all(b"\n");
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod check;
pub mod inspect;
pub mod live;
pub mod run;
pub mod signals;

use std::path::Path;

use lbsim::scenario::{Scenario, ScenarioError};

/// Exit status for bad input (scenario errors, bad flags).
pub const EXIT_BAD_INPUT: u8 = 2;

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
