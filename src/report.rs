//! Reports: what a run writes for people (terminal table, `report.md`, plots) and for tools
//! (tidy CSV).
//!
//! As in criterion, each output is one implementation of the small [`Report`] interface
//! and a run forwards its results to the enabled ones ([`standard_reports`],
//! [`write_reports`]).

pub mod check;
pub mod comparisons;
pub mod csv_files;
pub mod markdown;
pub mod plots;
pub mod sweep;
pub mod table;
pub mod timeseries;

use std::path::{Path, PathBuf};

pub use comparisons::{ComparisonsCsv, PairComparison, Ranking, compare, rank};
pub use csv_files::{
    ReplicationsCsv, ServersCsv, SummaryCsv, write_replications_csv, write_servers_csv,
    write_summary_csv,
};
pub use markdown::MarkdownReport;
pub use plots::{ImageFormat, Plots};
pub use table::summary_table;

use crate::runner::RunResults;
use crate::scenario::Scenario;

/// An error writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file or folder could not be written.
    #[error("cannot write `{}`: {source}\n  fix: check that the folder is writable (or pass another --out)", .path.display())]
    Write {
        /// The file or folder.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// CSV serialisation failed.
    #[error("cannot write CSV `{}`: {source}", .path.display())]
    Csv {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        source: csv::Error,
    },
    /// A plot could not be drawn.
    #[error("cannot draw `{}`: {message}\n  fix: check that the folder is writable; for PNG, that a system font is installed (or drop --png)", .path.display())]
    Plot {
        /// The file.
        path: std::path::PathBuf,
        /// What the plotting backend said.
        message: String,
    },
}

/// What every report is given.
#[derive(Clone, Copy, Debug)]
pub struct ReportInput<'a> {
    /// The scenario that was run.
    pub scenario: &'a Scenario,
    /// Its results.
    pub results: &'a RunResults,
    /// The command line that reproduces the run (for `report.md`).
    pub command: &'a str,
    /// Image format of plots.
    pub format: ImageFormat,
    /// A sweep's results, when the scenario has a `[sweep]`.
    pub sweep: Option<&'a crate::sweep::SweepResults>,
}

/// One output of a run.
pub trait Report {
    /// Short name, for messages.
    fn name(&self) -> &'static str;
    /// Writes the output into `dir` and returns the files written.
    fn write(&self, dir: &Path, input: &ReportInput<'_>) -> Result<Vec<PathBuf>, ReportError>;
}

/// The reports `lbsim run` writes, in order (plots before `report.md`, which links them).
pub fn standard_reports() -> Vec<Box<dyn Report>> {
    standard_reports_with(timeseries::Timeseries::default())
}

/// [`standard_reports`] with the given time-series report (e.g. one holding the traces
/// recorded during the run, [`timeseries::Timeseries::recorded`]).
pub fn standard_reports_with(timeseries: timeseries::Timeseries) -> Vec<Box<dyn Report>> {
    vec![
        Box::new(SummaryCsv),
        Box::new(ServersCsv),
        Box::new(ReplicationsCsv),
        Box::new(ComparisonsCsv),
        Box::new(sweep::SweepCsv),
        Box::new(Plots),
        Box::new(timeseries),
        Box::new(MarkdownReport),
    ]
}

/// Forwards `input` to every report in turn; returns every file written.
pub fn write_reports(
    dir: &Path,
    input: &ReportInput<'_>,
    reports: &[Box<dyn Report>],
) -> Result<Vec<PathBuf>, ReportError> {
    let mut files = Vec::new();
    for r in reports {
        files.extend(r.write(dir, input)?);
    }
    Ok(files)
}

/// Creates `path`'s folder and a CSV writer on it.
pub(crate) fn csv_writer(path: &Path) -> Result<csv::Writer<std::fs::File>, ReportError> {
    create_parent(path)?;
    csv::Writer::from_path(path).map_err(|source| ReportError::Csv {
        path: path.to_path_buf(),
        source,
    })
}

/// Flushes a CSV writer.
pub(crate) fn finish_csv(
    mut w: csv::Writer<std::fs::File>,
    path: &Path,
) -> Result<(), ReportError> {
    w.flush().map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates the folder `path` lives in.
pub(crate) fn create_parent(path: &Path) -> Result<(), ReportError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Writes a text file, creating its folder.
pub(crate) fn write_text(path: &Path, text: &str) -> Result<(), ReportError> {
    create_parent(path)?;
    std::fs::write(path, text).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// `v` in `unit`, scaled for people: seconds as ms, fractions as %.
pub fn human(v: f64, unit: &str) -> String {
    if v.is_nan() {
        return "-".to_string();
    }
    match unit {
        "s" => format!("{} ms", sig(v * 1e3)),
        _ => sig(v),
    }
}

/// Three significant digits, without scientific notation for everyday magnitudes.
pub fn sig(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let mag = v.abs().log10().floor() as i32;
    let decimals = (2 - mag).clamp(0, 6) as usize;
    format!("{v:.decimals$}")
}
