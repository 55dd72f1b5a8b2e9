//! The compact terminal table: one row per strategy, key figures with 95% CI half-widths,
//! the p99 rank, and `*` on every figure that is the best or statistically
//! indistinguishable from the best (paired 95% CI of the difference contains 0).

use super::comparisons::rank;
use crate::metrics::Metric;
use crate::runner::RunResults;
use crate::stats::Estimate;

/// Columns of the table: (header, metric, scale, decimals).
const COLUMNS: &[(&str, Metric, f64, usize)] = &[
    ("mean ms", Metric::LatencyMean, 1e3, 2),
    ("p50 ms", Metric::LatencyP50, 1e3, 2),
    ("p99 ms", Metric::LatencyP99, 1e3, 2),
    ("p99.9 ms", Metric::LatencyP999, 1e3, 1),
    ("req/s", Metric::Throughput, 1.0, 0),
    ("rejected %", Metric::RejectedFraction, 100.0, 2),
    ("errors %", Metric::ErrorFraction, 100.0, 2),
    ("util max", Metric::UtilizationMax, 1.0, 3),
    ("util CV", Metric::UtilizationCv, 1.0, 3),
    ("Jain", Metric::JainIndex, 1.0, 3),
];

fn cell(e: &Estimate, scale: f64, decimals: usize) -> String {
    if e.mean.is_nan() {
        return "-".to_string();
    }
    if e.low.is_nan() {
        return format!("{:.*}", decimals, e.mean * scale);
    }
    format!(
        "{:.*} ±{:.*}",
        decimals,
        e.mean * scale,
        decimals,
        e.half_width() * scale
    )
}

/// The table as text: a header, one row per strategy, figures as `mean ±half-width`.
pub fn summary_table(results: &RunResults) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        ["strategy", "p99 rank"]
            .into_iter()
            .map(String::from)
            .chain(COLUMNS.iter().map(|c| c.0.to_string()))
            .collect(),
    ];
    let rankings: Vec<_> = COLUMNS.iter().map(|c| rank(results, c.1)).collect();
    let p99 = rank(results, Metric::LatencyP99);
    for (i, s) in results.strategies.iter().enumerate() {
        let mut row = vec![
            s.label.clone(),
            match p99.as_ref().map(|r| r.rank_of(i)) {
                _ if s.unstable.is_some() => "unstable".to_string(),
                Some(rank) => rank.to_string(),
                None => String::new(),
            },
        ];
        for (&(_, metric, scale, dec), ranking) in COLUMNS.iter().zip(&rankings) {
            let best = ranking
                .as_ref()
                .is_some_and(|r| r.rank_of(i) == 1 && r.tied_best() < results.strategies.len());
            let mut c = cell(&s.estimate(metric), scale, dec);
            c.push(if best { '*' } else { ' ' });
            row.push(c);
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, v)| {
                if c == 0 {
                    format!("{v:<w$}", w = widths[c])
                } else {
                    format!("{v:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out.push_str(
        "* best, or statistically indistinguishable from the best (paired 95% CI of the difference contains 0)\n",
    );
    for s in &results.strategies {
        if let Some(why) = &s.unstable {
            out.push_str(&format!(
                "unstable: {} {why}; its figures grow with the run length, so it is not ranked\n",
                s.label
            ));
        }
    }
    if results.finished.len() == 1 {
        out.push_str("one replication: figures without confidence intervals (run 2 or more for intervals and ranks)\n");
    }
    out
}
