//! The columns of the tidy CSV files, each defined once (header, unit, meaning) and shared
//! by every file that has it. A file is a [`Table`]: its columns in order. Its header and
//! each record are written from the table, and so is the README's column reference
//! ([`markdown`], pinned by `tests/docs.rs`).
//!
//! A record pairs each value with its column, and the table refuses a record whose columns
//! are not its own, so a file cannot drift from its documented schema. Values go through
//! the csv crate's serializer field by field, as the `#[derive(Serialize)]` rows did:
//! numbers keep their text (ryu's shortest round-trip form), an absent value is an empty
//! field, and a file without rows has no header.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::ser::{Error as _, Serialize, SerializeStruct, Serializer};

use super::output::Folder;
use super::{ReportError, csv_err, finish_csv};
use crate::metrics::Metric;
use crate::stats::Estimate;

/// One column of a CSV file; an estimate's column is three: its value, then the lower and
/// upper ends of its 95% CI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    /// Header.
    pub name: &'static str,
    /// Headers of the 95% CI's ends, for an estimate.
    pub ci95: Option<[&'static str; 2]>,
    /// Unit of its values (`metric` for the unit in the row's `unit` column).
    pub unit: &'static str,
    /// What it holds.
    pub doc: &'static str,
}

impl Column {
    const fn new(name: &'static str, unit: &'static str, doc: &'static str) -> Column {
        Column {
            name,
            ci95: None,
            unit,
            doc,
        }
    }

    const fn estimate(
        name: &'static str,
        ci95: [&'static str; 2],
        unit: &'static str,
        doc: &'static str,
    ) -> Column {
        Column {
            ci95: Some(ci95),
            ..Column::new(name, unit, doc)
        }
    }

    /// Its headers: one, or three for an estimate.
    pub fn headers(self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.name).chain(self.ci95.into_iter().flatten())
    }
}

/// The headers of the 95% CI of the estimate named `$name`: `$name_ci95_low`,
/// `$name_ci95_high`.
macro_rules! ci95_of {
    ($name:literal) => {
        [concat!($name, "_ci95_low"), concat!($name, "_ci95_high")]
    };
}

/// A per-server estimate of `servers.csv`.
macro_rules! server_figure {
    ($name:literal, $unit:literal, $doc:literal) => {
        Column::estimate($name, ci95_of!($name), $unit, $doc)
    };
}

/// Scenario name.
pub const SCENARIO: Column = Column::new("scenario", "", "scenario name");
/// Strategy label.
pub const STRATEGY: Column = Column::new("strategy", "", "strategy label");
/// Metric name.
pub const METRIC: Column = Column::new("metric", "", "metric name (the metric table above)");
/// Unit of the row's metric.
pub const UNIT: Column = Column::new(
    "unit",
    "",
    "unit of the row's metric, of its figures and of their difference",
);
/// The reported figure of a metric.
pub const MEAN: Column = Column::estimate(
    "mean",
    ["ci95_low", "ci95_high"],
    "metric",
    "the reported figure: mean over replications, or for percentiles the percentile of every replication's requests pooled; with its 95% CI",
);
/// Replications behind the figures.
pub const REPLICATIONS: Column = Column::new(
    "replications",
    "",
    "replications behind the figures (for a difference, the pairs)",
);
/// The strategy has no steady state.
pub const UNSTABLE: Column = Column::new(
    "unstable",
    "",
    "`true` for a strategy with no steady state: its figures grow with the run length and describe this run only",
);
/// Server name.
pub const SERVER: Column = Column::new("server", "", "server name (`<group>-<i>`)");
/// Server group.
pub const GROUP: Column = Column::new("group", "", "server group");
/// Requests a server accepted.
pub const REQUESTS: Column = server_figure!(
    "requests",
    "requests",
    "mean requests the server accepted per replication, with its 95% CI"
);
/// A server's share of the requests.
pub const SHARE: Column = server_figure!("share", "1", "mean share of accepted requests");
/// A server's utilisation.
pub const UTILIZATION: Column = server_figure!(
    "utilization",
    "1",
    "mean utilisation: busy worker-time / (workers × window)"
);
/// A server's time-average queue.
pub const QUEUE_MEAN: Column = server_figure!(
    "queue_mean",
    "requests",
    "mean time-average number waiting for a worker"
);
/// A server's largest queue.
pub const QUEUE_MAX: Column = server_figure!(
    "queue_max",
    "requests",
    "mean over replications of the largest number waiting"
);
/// A server's mean response time.
pub const LATENCY_MEAN: Column = server_figure!(
    "latency_mean",
    "s",
    "mean response time of the requests the server served"
);
/// A server's 99th percentile response time.
pub const LATENCY_P99: Column = server_figure!(
    "latency_p99",
    "s",
    "99th percentile response time at the server, of every replication's requests pooled"
);
/// Replication index.
pub const REPLICATION: Column = Column::new(
    "replication",
    "",
    "replication index: its random streams derive from the seed and this index, and every strategy of a replication saw the same requests",
);
/// One replication's value of a metric.
pub const REPLICATION_VALUE: Column = Column::new(
    "value",
    "metric",
    "this replication's value (percentiles: of its requests alone; empty when undefined, e.g. no request served)",
);
/// Which direction of the metric is better.
pub const BETTER: Column = Column::new(
    "better",
    "",
    "`lower`, `higher` or `neither`: which direction of the metric is better",
);
/// First strategy of a pair.
pub const STRATEGY_A: Column = Column::new("strategy_a", "", "first strategy of the pair");
/// Second strategy of a pair.
pub const STRATEGY_B: Column = Column::new(
    "strategy_b",
    "",
    "second strategy (after `strategy_a` in the scenario)",
);
/// Figure of `a`.
pub const MEAN_A: Column = Column::new("mean_a", "metric", "reported figure of `strategy_a`");
/// Figure of `b`.
pub const MEAN_B: Column = Column::new("mean_b", "metric", "reported figure of `strategy_b`");
/// Paired difference.
pub const DIFF: Column = Column::estimate(
    "diff",
    ci95_of!("diff"),
    "metric",
    "paired difference b − a over common-random-number replications, with its 95% CI",
);
/// Relative difference.
pub const RELATIVE_DIFF: Column = Column::new(
    "relative_diff",
    "1",
    "(b − a) / a (NaN when a is 0 or undefined)",
);
/// What an unpaired comparison would give.
pub const UNPAIRED_HALF_WIDTH: Column = Column::new(
    "unpaired_ci95_half_width",
    "metric",
    "half-width of the 95% CI an unpaired (Welch) comparison would give, for reference",
);
/// The paired CI contains 0.
pub const INDISTINGUISHABLE: Column = Column::new(
    "indistinguishable",
    "",
    "the paired 95% CI contains 0 (or cannot be computed)",
);
/// The better strategy of a pair.
pub const BETTER_STRATEGY: Column = Column::new(
    "better_strategy",
    "",
    "the better label, `tie` (indistinguishable), `unstable` (either has no steady state, so their figures do not compare) or empty (no better direction)",
);
/// `a` has no steady state.
pub const UNSTABLE_A: Column = Column::new("unstable_a", "", "`strategy_a` has no steady state");
/// `b` has no steady state.
pub const UNSTABLE_B: Column = Column::new("unstable_b", "", "`strategy_b` has no steady state");
/// Swept parameter.
pub const PARAMETER: Column = Column::new("parameter", "", "swept parameter");
/// Its value.
pub const PARAMETER_VALUE: Column = Column::new("value", "", "its value at this point");
/// Offered load.
pub const OFFERED_LOAD: Column = Column::new(
    "offered_load",
    "1",
    "offered load at this point (mean arrival rate / capacity)",
);
/// Rank at a sweep point.
pub const RANK: Column = Column::new(
    "rank",
    "",
    "rank at this point, 1 = best, shared by strategies the data cannot tell apart (0: unstable; empty for metrics without a better direction)",
);
/// Second swept parameter.
pub const PARAMETER2: Column = Column::new(
    "parameter2",
    "",
    "second swept parameter of a 2-D sweep (empty for a 1-D sweep)",
);
/// Its value.
pub const PARAMETER2_VALUE: Column = Column::new(
    "value2",
    "",
    "its value at this point (empty for a 1-D sweep)",
);

/// Simulated time of a sample.
pub const TIME: Column = Column::new(
    "time",
    "s",
    "simulated time from the start of the run, warm-up included: of the sample, or the start of the interval",
);
/// Requests waiting at a server.
pub const QUEUED: Column = Column::new("queued", "requests", "requests waiting for a worker");
/// Requests in service at a server.
pub const IN_SERVICE: Column = Column::new("in_service", "requests", "requests in service");
/// What the first balancer sees in flight to a server.
pub const IN_FLIGHT: Column = Column::new(
    "in_flight",
    "requests",
    "requests in flight to the server as the (first) balancer sees it",
);
/// Length of a sample interval.
pub const INTERVAL: Column = Column::new("interval", "s", "length of the interval");
/// Arrivals per second.
pub const OFFERED: Column = Column::new("offered", "req/s", "requests arriving (offered load)");
/// Attempts per second.
pub const ATTEMPTS: Column = Column::new(
    "attempts",
    "req/s",
    "attempts sent, retries and hedges included (the offered load servers see)",
);
/// Goodput.
pub const GOODPUT: Column = Column::new("goodput", "req/s", "requests served");
/// Failures per second.
pub const FAILED: Column = Column::new(
    "failed",
    "req/s",
    "requests that ended failed (crash, error answer, no server to route to)",
);
/// Timeouts per second.
pub const TIMED_OUT: Column = Column::new(
    "timed_out",
    "req/s",
    "requests that ended by a client timeout",
);
/// Refusals per second.
pub const REJECTED: Column = Column::new(
    "rejected",
    "req/s",
    "requests that ended refused (full queue, admission control, \"429\")",
);

/// A CSV file: its name, what a row is, and its columns in order.
#[derive(Debug)]
pub struct Table<const N: usize> {
    /// File name.
    pub file: &'static str,
    /// What one row is.
    pub rows: &'static str,
    /// Its columns.
    pub columns: [Column; N],
}

/// `summary.csv`.
pub const SUMMARY: Table<7> = Table {
    file: "summary.csv",
    rows: "strategy and metric",
    columns: [
        SCENARIO,
        STRATEGY,
        METRIC,
        UNIT,
        MEAN,
        REPLICATIONS,
        UNSTABLE,
    ],
};

/// `servers.csv`.
pub const SERVERS: Table<12> = Table {
    file: "servers.csv",
    rows: "strategy and server",
    columns: [
        SCENARIO,
        STRATEGY,
        SERVER,
        GROUP,
        REQUESTS,
        SHARE,
        UTILIZATION,
        QUEUE_MEAN,
        QUEUE_MAX,
        LATENCY_MEAN,
        LATENCY_P99,
        REPLICATIONS,
    ],
};

/// `replications.csv`.
pub const REPLICATIONS_CSV: Table<6> = Table {
    file: "replications.csv",
    rows: "replication, strategy and metric",
    columns: [
        SCENARIO,
        STRATEGY,
        REPLICATION,
        METRIC,
        UNIT,
        REPLICATION_VALUE,
    ],
};

/// `comparisons.csv`.
pub const COMPARISONS: Table<16> = Table {
    file: "comparisons.csv",
    rows: "metric and pair of strategies",
    columns: [
        SCENARIO,
        METRIC,
        UNIT,
        BETTER,
        STRATEGY_A,
        STRATEGY_B,
        MEAN_A,
        MEAN_B,
        DIFF,
        RELATIVE_DIFF,
        UNPAIRED_HALF_WIDTH,
        INDISTINGUISHABLE,
        BETTER_STRATEGY,
        REPLICATIONS,
        UNSTABLE_A,
        UNSTABLE_B,
    ],
};

/// `sweep.csv`.
pub const SWEEP: Table<12> = Table {
    file: "sweep.csv",
    rows: "sweep point, strategy and metric",
    columns: [
        SCENARIO,
        PARAMETER,
        PARAMETER_VALUE,
        OFFERED_LOAD,
        STRATEGY,
        METRIC,
        UNIT,
        MEAN,
        RANK,
        REPLICATIONS,
        PARAMETER2,
        PARAMETER2_VALUE,
    ],
};

/// `timeseries.csv`.
pub const TIMESERIES: Table<8> = Table {
    file: "timeseries.csv",
    rows: "strategy, sample and recorded server of replication 0",
    columns: [
        SCENARIO,
        STRATEGY,
        REPLICATION,
        TIME,
        SERVER,
        QUEUED,
        IN_SERVICE,
        IN_FLIGHT,
    ],
};

/// `rates.csv`.
pub const RATES: Table<11> = Table {
    file: "rates.csv",
    rows: "strategy and sample interval of replication 0 (counts per second)",
    columns: [
        SCENARIO,
        STRATEGY,
        REPLICATION,
        TIME,
        INTERVAL,
        OFFERED,
        ATTEMPTS,
        GOODPUT,
        FAILED,
        TIMED_OUT,
        REJECTED,
    ],
};

/// One value of a record.
#[derive(Clone, Copy, Debug)]
pub enum Cell<'a> {
    /// Text.
    Text(&'a str),
    /// A number.
    Number(f64),
    /// A count or an index.
    Count(u64),
    /// `true` or `false`.
    Flag(bool),
    /// An estimate: its mean, then its 95% CI (three fields).
    Estimate(Estimate),
    /// Empty.
    Empty,
}

impl<'a> From<&'a str> for Cell<'a> {
    fn from(s: &'a str) -> Self {
        Cell::Text(s)
    }
}

impl<'a> From<&'a String> for Cell<'a> {
    fn from(s: &'a String) -> Self {
        Cell::Text(s)
    }
}

impl From<Metric> for Cell<'_> {
    fn from(m: Metric) -> Self {
        Cell::Text(m.name())
    }
}

impl From<f64> for Cell<'_> {
    fn from(x: f64) -> Self {
        Cell::Number(x)
    }
}

impl From<usize> for Cell<'_> {
    fn from(n: usize) -> Self {
        Cell::Count(n as u64)
    }
}

impl From<u32> for Cell<'_> {
    fn from(n: u32) -> Self {
        Cell::Count(n.into())
    }
}

impl From<u64> for Cell<'_> {
    fn from(n: u64) -> Self {
        Cell::Count(n)
    }
}

impl From<bool> for Cell<'_> {
    fn from(b: bool) -> Self {
        Cell::Flag(b)
    }
}

impl From<Estimate> for Cell<'_> {
    fn from(e: Estimate) -> Self {
        Cell::Estimate(e)
    }
}

impl<'a, T: Into<Cell<'a>>> From<Option<T>> for Cell<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Cell::Empty, Into::into)
    }
}

/// One value, as the csv serializer writes the matching Rust value.
impl Serialize for Cell<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Cell::Text(t) => s.serialize_str(t),
            Cell::Number(x) => s.serialize_f64(x),
            Cell::Count(n) => s.serialize_u64(n),
            Cell::Flag(b) => s.serialize_bool(b),
            Cell::Empty => s.serialize_none(),
            Cell::Estimate(_) => Err(S::Error::custom("an estimate is three fields")),
        }
    }
}

/// A record of `table`: each value with its column.
struct Record<'t, 'a, const N: usize> {
    table: &'t Table<N>,
    cells: &'t [(Column, Cell<'a>); N],
}

/// A record is written as a struct whose fields are the columns' headers, so the csv
/// crate writes the header before the first record, as for a derived row.
impl<const N: usize> Serialize for Record<'_, '_, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fields = self.table.columns.iter().map(|c| c.headers().count()).sum();
        let mut row = s.serialize_struct("record", fields)?;
        for (want, (column, cell)) in self.table.columns.iter().zip(self.cells) {
            // By what shapes the file, its headers: the name and the CI's headers
            // (`names_make_the_headers`). Comparing whole columns compared their units and
            // docs too, once per cell: 7% of a merge's CPU time at 256 servers, most of
            // it writing `timeseries.csv` (benches/README.md, "Shard files guarded"). The
            // same constant's name is usually the same pointer.
            let same_name = std::ptr::eq(want.name, column.name) || want.name == column.name;
            if !(same_name && want.ci95 == column.ci95) {
                return Err(S::Error::custom(format!(
                    "{}: column `{}` given where the table has `{}`",
                    self.table.file, column.name, want.name
                )));
            }
            match (cell, column.ci95) {
                (Cell::Estimate(e), Some([low, high])) => {
                    row.serialize_field(column.name, &e.mean)?;
                    row.serialize_field(low, &e.low)?;
                    row.serialize_field(high, &e.high)?;
                }
                (Cell::Estimate(_), None) | (_, Some(_)) => {
                    return Err(S::Error::custom(format!(
                        "{}: column `{}` is {}an estimate",
                        self.table.file,
                        column.name,
                        if column.ci95.is_some() { "" } else { "not " }
                    )));
                }
                (cell, None) => row.serialize_field(column.name, cell)?,
            }
        }
        row.end()
    }
}

impl<const N: usize> Table<N> {
    /// Writes the file into `dir` with one row per record of `records`, and returns its
    /// path. A record whose columns are not the table's is an error.
    pub fn write<'a>(
        &self,
        dir: &Folder<'_>,
        records: impl IntoIterator<Item = [(Column, Cell<'a>); N]>,
    ) -> Result<PathBuf, ReportError> {
        let file = dir.create(self.file)?;
        let path = file.path().to_path_buf();
        let mut w = csv::Writer::from_writer(file);
        for cells in records {
            w.serialize(Record {
                table: self,
                cells: &cells,
            })
            .map_err(csv_err(&path))?;
        }
        finish_csv(w, &path)?;
        Ok(path)
    }

    /// Its header line.
    pub fn header(&self) -> String {
        let headers: Vec<&str> = self.columns.iter().flat_map(|c| c.headers()).collect();
        headers.join(",")
    }
}

/// The README's reference of the tidy CSV files: each file's header line, then every
/// column once, with the files that have it.
pub fn markdown() -> String {
    let tables: [(&str, &str, String, &[Column]); 7] = [
        (
            SUMMARY.file,
            SUMMARY.rows,
            SUMMARY.header(),
            &SUMMARY.columns,
        ),
        (
            SERVERS.file,
            SERVERS.rows,
            SERVERS.header(),
            &SERVERS.columns,
        ),
        (
            REPLICATIONS_CSV.file,
            REPLICATIONS_CSV.rows,
            REPLICATIONS_CSV.header(),
            &REPLICATIONS_CSV.columns,
        ),
        (
            COMPARISONS.file,
            COMPARISONS.rows,
            COMPARISONS.header(),
            &COMPARISONS.columns,
        ),
        (SWEEP.file, SWEEP.rows, SWEEP.header(), &SWEEP.columns),
        (
            TIMESERIES.file,
            TIMESERIES.rows,
            TIMESERIES.header(),
            &TIMESERIES.columns,
        ),
        (RATES.file, RATES.rows, RATES.header(), &RATES.columns),
    ];
    let mut out = String::new();
    for (file, rows, header, _) in &tables {
        let _ = writeln!(out, "- `{file}`, one row per {rows}: `{header}`");
    }
    out.push_str("\n| column | unit | in | meaning |\n| --- | --- | --- | --- |\n");
    let mut seen: Vec<Column> = Vec::new();
    for (_, _, _, columns) in &tables {
        for &c in columns.iter() {
            if seen.contains(&c) {
                continue;
            }
            seen.push(c);
            let files: Vec<&str> = tables
                .iter()
                .filter(|t| t.3.contains(&c))
                .map(|t| t.0.trim_end_matches(".csv"))
                .collect();
            let headers: Vec<String> = c.headers().map(|h| format!("`{h}`")).collect();
            let unit = match c.unit {
                "metric" => "the row's `unit`",
                u => u,
            };
            let _ = writeln!(
                out,
                "| {} | {unit} | {} | {} |",
                headers.join(", "),
                files.join(", "),
                c.doc
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_the_documented_ones() {
        assert_eq!(
            SUMMARY.header(),
            "scenario,strategy,metric,unit,mean,ci95_low,ci95_high,replications,unstable"
        );
        assert_eq!(
            REPLICATIONS_CSV.header(),
            "scenario,strategy,replication,metric,unit,value"
        );
        assert!(SERVERS.header().contains(
            "queue_max,queue_max_ci95_low,queue_max_ci95_high,latency_mean,latency_mean_ci95_low"
        ));
    }

    /// A record's columns are checked by their headers (name and CI): no table has a
    /// name twice, and a column and another of its name (`value` is two, documented for
    /// their files) write the same headers.
    #[test]
    fn names_make_the_headers() {
        let tables: [&[Column]; 7] = [
            &SUMMARY.columns,
            &SERVERS.columns,
            &REPLICATIONS_CSV.columns,
            &COMPARISONS.columns,
            &TIMESERIES.columns,
            &RATES.columns,
            &SWEEP.columns,
        ];
        let all: Vec<&Column> = tables.iter().flat_map(|t| t.iter()).collect();
        for a in &all {
            for b in &all {
                assert!(
                    a.name != b.name || a.ci95 == b.ci95,
                    "two columns named `{}`",
                    a.name
                );
            }
        }
        for t in tables {
            for (i, a) in t.iter().enumerate() {
                assert!(
                    t[..i].iter().all(|b| b.name != a.name),
                    "`{}` twice",
                    a.name
                );
            }
        }
    }

    #[test]
    fn a_record_must_follow_its_table() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Folder::new(tmp.path());
        let e = Estimate {
            mean: 0.5,
            low: 0.25,
            high: f64::NAN,
            n: 2,
        };
        let good = |unstable| {
            [
                (SCENARIO, "s".into()),
                (STRATEGY, "a,b".into()),
                (METRIC, Metric::LatencyMean.into()),
                (UNIT, "s".into()),
                (MEAN, e.into()),
                (REPLICATIONS, e.n.into()),
                (UNSTABLE, unstable),
            ]
        };
        let path = SUMMARY
            .write(&dir, [good(false.into()), good(None::<bool>.into())])
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "scenario,strategy,metric,unit,mean,ci95_low,ci95_high,replications,unstable\n\
             s,\"a,b\",latency_mean,s,0.5,0.25,NaN,2,false\n\
             s,\"a,b\",latency_mean,s,0.5,0.25,NaN,2,\n"
        );
        let mut swapped = good(true.into());
        swapped.swap(0, 1);
        let err = SUMMARY.write(&dir, [swapped]).unwrap_err().to_string();
        assert!(
            err.contains("column `strategy` given where the table has `scenario`"),
            "{err}"
        );
        let mut flat = good(true.into());
        flat[4].1 = 0.5.into();
        let err = SUMMARY.write(&dir, [flat]).unwrap_err().to_string();
        assert!(err.contains("`mean` is an estimate"), "{err}");
        let mut wide = good(true.into());
        wide[3].1 = e.into();
        let err = SUMMARY.write(&dir, [wide]).unwrap_err().to_string();
        assert!(err.contains("`unit` is not an estimate"), "{err}");
        let empty: [[(Column, Cell<'_>); 7]; 0] = [];
        let path = SUMMARY.write(&dir, empty).unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "");
    }
}
