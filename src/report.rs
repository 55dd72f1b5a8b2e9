//! Reports: what a run writes for people (terminal table, `report.md`, plots) and for tools
//! (tidy CSV).
//!
//! As in criterion, each output is one implementation of the small [`Report`] interface
//! and a run forwards its results to the enabled ones ([`standard_reports`],
//! [`write_reports`]).

pub mod check;
pub mod columns;
pub mod comparisons;
pub mod csv_files;
pub mod live;
pub mod markdown;
pub mod output;
pub mod plots;
pub mod sweep;
pub mod table;
pub mod timeseries;
pub mod tolerance;

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
use output::Folder;

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

/// One output of a run. Reports are written in parallel ([`write_reports`]), so each
/// writes only its own files.
pub trait Report: Send + Sync {
    /// Short name, for messages.
    fn name(&self) -> &'static str;
    /// Writes the output into `dir` and returns the files written.
    fn write(&self, dir: &Folder<'_>, input: &ReportInput<'_>)
    -> Result<Vec<PathBuf>, ReportError>;
    /// Whether the output reads what the other reports wrote into `dir` (`report.md` links
    /// the plots that exist): it is then written after them.
    fn reads_others(&self) -> bool {
        false
    }
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

/// Forwards `input` to every report; returns every file written, in the order of
/// `reports`.
///
/// The reports are independent, so they are written in parallel (on the current rayon
/// pool: `--threads` applies), those that [`Report::reads_others`] after the rest; each
/// file's content does not depend on the order, and the first failure in the order of
/// `reports` is the one returned.
///
/// The reports are written into a staging folder inside `dir` and moved into `dir`
/// together once all succeeded ([`output::publish`]): a failure leaves the previous
/// files as they were, two runs into one folder do not mix, and files of the previous
/// run that this one does not write are removed.
pub fn write_reports(
    dir: &Path,
    input: &ReportInput<'_>,
    reports: &[Box<dyn Report>],
) -> Result<Vec<PathBuf>, ReportError> {
    write_reports_into(output::Staging::new(dir)?, input, reports)
}

/// [`write_reports`] into a staging folder made beforehand (reports written into it
/// before, e.g. [`timeseries::Timeseries::written`], go with the others), published into
/// its output folder.
pub fn write_reports_into(
    staging: output::Staging,
    input: &ReportInput<'_>,
    reports: &[Box<dyn Report>],
) -> Result<Vec<PathBuf>, ReportError> {
    input.results.fit_percentiles();
    let files = write_each(&staging.folder(), input, reports)?;
    output::publish(staging, &files)
}

/// Writes every report into `dir`, in parallel, those that [`Report::reads_others`]
/// after the rest; returns every file written, in the order of `reports`, or the first
/// failure in that order.
fn write_each(
    dir: &Folder<'_>,
    input: &ReportInput<'_>,
    reports: &[Box<dyn Report>],
) -> Result<Vec<PathBuf>, ReportError> {
    use rayon::prelude::*;
    // The reports of one pass, in parallel. The outcomes are collected first and the
    // first failure taken in order: collected straight into a `Result`, rayon would give
    // whichever failure a thread met first.
    let pass = |last: bool| -> Result<Vec<Vec<PathBuf>>, ReportError> {
        let outcomes: Vec<_> = reports
            .par_iter()
            .map(|r| {
                if r.reads_others() == last {
                    r.write(dir, input)
                } else {
                    Ok(Vec::new())
                }
            })
            .collect();
        outcomes.into_iter().collect()
    };
    // Stop at the first failure, before the reports that read the others' files.
    let first = pass(false)?;
    let last = pass(true)?;
    // Each report wrote in one pass only: its files in report order.
    Ok(first
        .into_iter()
        .zip(last)
        .flat_map(|(a, b)| a.into_iter().chain(b))
        .collect())
}

/// The error of writing a row to the CSV file `path`.
pub(crate) fn csv_err(path: &Path) -> impl Fn(csv::Error) -> ReportError + '_ {
    move |source| ReportError::Csv {
        path: path.to_path_buf(),
        source,
    }
}

/// Flushes a CSV writer and moves its file into place.
pub(crate) fn finish_csv(
    w: csv::Writer<output::AtomicFile<'_>>,
    path: &Path,
) -> Result<(), ReportError> {
    let file = w.into_inner().map_err(|e| ReportError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    file.commit().map(|_| ())
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

/// `v` in `unit`, scaled for people: seconds in µs, ms or s by magnitude
/// ([`plots::time_axis`]: `141 s`, not `141056 ms`).
pub fn human(v: f64, unit: &str) -> String {
    if v.is_nan() {
        return "-".to_string();
    }
    match unit {
        "s" => {
            let (scale, unit) = plots::time_axis(v);
            format!("{} {unit}", sig(v * scale))
        }
        _ => sig(v),
    }
}

/// A percentage for people: whole percent, except that a value just short of 100% keeps
/// the decimals that tell it from 100% (`99.9%`, not `100%`).
pub fn percent(fraction: f64) -> String {
    let p = 100.0 * fraction;
    if !p.is_finite() {
        return format!("{p}%");
    }
    for decimals in 0..6 {
        let s = format!("{p:.decimals$}");
        let rounds_to_whole_100 = s.trim_start_matches('-').parse::<f64>() == Ok(100.0);
        if !(rounds_to_whole_100 && p.abs() < 100.0) {
            return format!("{s}%");
        }
    }
    format!("{p}%")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A report that writes the file `file`, or fails naming it, in the pass `last` says.
    struct Fake {
        file: &'static str,
        last: bool,
        fails: bool,
    }

    impl Report for Fake {
        fn name(&self) -> &'static str {
            self.file
        }
        fn write(
            &self,
            dir: &Folder<'_>,
            _: &ReportInput<'_>,
        ) -> Result<Vec<PathBuf>, ReportError> {
            if self.fails {
                return Err(ReportError::Write {
                    path: dir.join(self.file),
                    source: std::io::Error::other("no space left"),
                });
            }
            Ok(vec![dir.write(self.file, b"x")?])
        }
        fn reads_others(&self) -> bool {
            self.last
        }
    }

    #[test]
    fn reports_give_their_files_and_first_failure_in_their_order() {
        let rest = crate::testing::servers("s", 1, "", &crate::testing::exponential(0.01))
            + &crate::testing::kinds(&["round_robin"]);
        let scenario = crate::testing::scenario("duration = 1", 10.0, &rest);
        let results = RunResults {
            seed: 1,
            requested: 0,
            finished: Vec::new(),
            strategies: Vec::new(),
        };
        let input = ReportInput {
            scenario: &scenario,
            results: &results,
            command: "lbsim run",
            format: ImageFormat::Svg,
            sweep: None,
        };
        let tmp = tempfile::tempdir().unwrap();
        let dir = Folder::new(tmp.path());
        let fake = |file, last, fails| -> Box<dyn Report> { Box::new(Fake { file, last, fails }) };
        let write = |reports: &[Box<dyn Report>]| write_each(&dir, &input, reports);
        let reports = [
            fake("a", true, false),
            fake("b", false, false),
            fake("c", true, false),
            fake("d", false, false),
        ];
        assert_eq!(
            write(&reports).unwrap(),
            ["a", "b", "c", "d"].map(|f| dir.join(f))
        );
        let failed = |reports: &[Box<dyn Report>]| match write(reports) {
            Err(ReportError::Write { path, .. }) => path,
            other => panic!("{other:?}"),
        };
        // The first failure in report order; a failure in the first pass stops before
        // the reports that read the others' files.
        let reports = [
            fake("e", true, false),
            fake("f", false, false),
            fake("g", false, true),
            fake("h", false, true),
        ];
        assert_eq!(failed(&reports), dir.join("g"));
        assert!(!dir.join("e").exists());
        let reports = [
            fake("i", true, true),
            fake("j", true, true),
            fake("k", false, false),
        ];
        assert_eq!(failed(&reports), dir.join("i"));
    }

    #[test]
    fn times_are_rescaled_by_magnitude() {
        assert_eq!(human(141.056, "s"), "141 s");
        assert_eq!(human(0.125, "s"), "125 ms");
        assert_eq!(human(0.000_045, "s"), "45.0 µs");
        assert_eq!(human(0.0, "s"), "0 ms");
        assert_eq!(human(0.5, "1"), "0.500");
        assert_eq!(human(f64::NAN, "s"), "-");
    }

    #[test]
    fn percentages_short_of_100_are_not_rounded_up() {
        assert_eq!(percent(0.58), "58%");
        assert_eq!(percent(0.999), "99.9%");
        assert_eq!(percent(0.99996), "99.996%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(-0.9996), "-99.96%");
        assert_eq!(percent(2.5), "250%");
    }
}
