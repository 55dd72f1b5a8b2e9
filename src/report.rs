//! Reports: what a run writes for people (terminal table) and for tools (tidy CSV).

pub mod csv_files;
pub mod table;

pub use csv_files::{write_servers_csv, write_summary_csv};
pub use table::summary_table;

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
}
