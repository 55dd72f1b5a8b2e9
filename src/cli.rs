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

use clap::Args;

use lbsim::scenario::cost::{DEFAULT_MAX_EVENTS, DEFAULT_MAX_MEMORY};
use lbsim::scenario::{Cost, Limits, Scenario, ScenarioError};

/// Exit status for bad input (scenario errors, bad flags, a run beyond the cost limits).
pub const EXIT_BAD_INPUT: u8 = 2;

/// Most worker threads `--threads` may ask for.
pub const MAX_THREADS: usize = 1024;

/// Limits on what a run may cost (see `lbsim::scenario::cost`).
#[derive(Args, Clone, Copy, Debug)]
pub struct CostFlags {
    /// Refuse a run estimated to simulate more events than this (requests × 2 ×
    /// replications × strategies × sweep points, plus timers and scans).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_EVENTS, value_parser = parse_amount)]
    pub max_events: f64,
    /// Refuse a run estimated to need more memory than this, in bytes (suffixes k, M, G).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_MEMORY, value_parser = parse_amount)]
    pub max_memory: f64,
}

impl CostFlags {
    /// The limits these flags set.
    pub fn limits(&self) -> Limits {
        Limits {
            max_events: self.max_events,
            max_memory: self.max_memory,
        }
    }
}

/// A positive number, optionally with a k/M/G suffix (powers of 1000) or in
/// scientific notation: `1e11`, `8G`.
fn parse_amount(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'm' | 'M')) => (&t[..i], 1e6),
        Some((i, 'g' | 'G')) => (&t[..i], 1e9),
        Some((i, 't' | 'T')) => (&t[..i], 1e12),
        _ => (t, 1.0),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v * mult),
        _ => Err(format!(
            "`{s}` is not a positive number (e.g. 1e11, or 8G for bytes)"
        )),
    }
}

/// Estimates what running `scenario` costs, prints it on stderr when `announce`, and
/// refuses it beyond the limits (a [`lbsim::scenario::CostError`], exit status 2).
pub fn check_cost(
    scenario: &Scenario,
    replications: u32,
    threads: Option<usize>,
    flags: &CostFlags,
    announce: bool,
) -> anyhow::Result<Cost> {
    let threads = threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let cost = scenario.cost(replications, threads);
    if announce {
        eprintln!("{}: estimated cost: {}", scenario.name, cost.describe());
    }
    cost.check(&scenario.path.display().to_string(), &flags.limits())?;
    Ok(cost)
}

/// With `warmup = "auto"`, chooses the warm-up from pilot runs (with the run's seed and
/// threads) and says what it chose on stderr, with the warnings of strategies that never
/// settled; a scenario where none settles is bad input (exit status 2).
pub fn resolve_warmup(
    scenario: &mut Scenario,
    opts: &lbsim::runner::RunOptions,
) -> anyhow::Result<()> {
    if !scenario.warmup_auto || scenario.auto_warmup.is_some() {
        return Ok(());
    }
    let seed = opts.seed.unwrap_or(scenario.seed);
    match lbsim::steady::resolve_warmup(scenario, seed, opts.threads, Some(&opts.cancel)) {
        Ok(()) => {}
        Err(lbsim::runner::RunError::Scenario(e)) => return Err(e.into()),
        Err(e) => return Err(e.into()),
    }
    if let Some(a) = &scenario.auto_warmup {
        eprintln!("{}: {}", scenario.name, a.describe());
        for w in a.warnings() {
            eprintln!("warning: {w}");
        }
    }
    Ok(())
}

/// Refuses `--threads 0` and absurd thread counts.
pub fn check_threads(path: &Path, threads: Option<usize>) -> anyhow::Result<()> {
    match threads {
        Some(t) if t == 0 || t > MAX_THREADS => Err(bad_flag(
            path,
            "--threads",
            &format!("is {t}"),
            &format!("use 1 to {MAX_THREADS} threads, or omit it for one per core"),
        )),
        _ => Ok(()),
    }
}

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

/// Checks before any work that reports can be written into `out` (creating it); an
/// unwritable folder is bad input (exit status 2) naming `--out`.
pub fn check_out(path: &Path, flag: &str, out: &Path) -> anyhow::Result<()> {
    lbsim::report::output::check_writable(out).map_err(|e| {
        let problem = e.to_string();
        bad_flag(
            path,
            flag,
            problem.lines().next().unwrap_or("cannot be written"),
            "pass a folder you can write to (it is created if missing)",
        )
    })
}
