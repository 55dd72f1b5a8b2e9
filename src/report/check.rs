//! Regression checks for CI: a run compared metric by metric with a baseline `summary.csv`.
//!
//! A metric of a strategy *regresses* when it is worse (by the metric's [`Better`]
//! direction) than the baseline by more than its relative tolerance **and** the new 95% CI
//! lies entirely on the worse side of the baseline's 95% CI. Both are needed: the
//! tolerance ignores changes too small to matter, the CIs ignore changes the replications
//! cannot tell from noise (with the pinned seed, an unchanged engine reproduces the
//! baseline exactly, so any change is a real change of behaviour or of the random
//! streams). Non-overlapping 95% CIs are a conservative test (about a 0.6% false alarm
//! rate for equal variances), which suits a gate that blocks merges.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::metrics::{Better, Metric, PerMetric};
use crate::runner::RunResults;
use crate::scenario::Scenario;

/// An error of `lbsim check`.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No baseline for a scenario.
    #[error("no baseline `{}`\n  fix: create it with `lbsim check <scenario> --baseline <dir> --update` and commit it", .path.display())]
    NoBaseline {
        /// Missing file.
        path: PathBuf,
    },
    /// The baseline file is not a `summary.csv`.
    #[error("cannot read baseline `{}`: {cause}\n  fix: regenerate it with --update", .path.display())]
    BadBaseline {
        /// The file.
        path: PathBuf,
        /// Cause.
        cause: csv::Error,
    },
    /// The baseline lacks figures the run has (new strategies or metrics), or holds rows
    /// of another scenario or of unknown metrics: comparing would pass without checking.
    #[error("baseline `{}` is incomplete: {problem}\n  fix: {fix}", .path.display())]
    Incomplete {
        /// The baseline file.
        path: PathBuf,
        /// What is missing or wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// A `--tolerance` entry cannot be used.
    #[error(
        "--tolerance `{entry}`: {problem}\n  fix: write metric=fraction pairs separated by commas, e.g. latency_p99=0.1,throughput=0.02 (metrics: {names})", names = Metric::names()
    )]
    BadTolerance {
        /// The entry as written.
        entry: String,
        /// What is wrong.
        problem: String,
    },
}

/// A row of a baseline `summary.csv` (the columns of [`super::columns::SUMMARY`]).
#[derive(Clone, Debug, Deserialize)]
pub struct BaselineRow {
    /// Scenario name.
    pub scenario: String,
    /// Strategy label.
    pub strategy: String,
    /// Metric name.
    pub metric: String,
    /// Unit.
    pub unit: String,
    /// Mean.
    pub mean: f64,
    /// Lower end of the 95% CI.
    pub ci95_low: f64,
    /// Upper end of the 95% CI.
    pub ci95_high: f64,
    /// Replications.
    pub replications: usize,
}

/// Reads `<dir>/<scenario name>/summary.csv`: a regular file with at least one row, every
/// row of this scenario and of a known metric.
pub fn read_baseline(dir: &Path, scenario: &str) -> Result<Vec<BaselineRow>, CheckError> {
    let path = baseline_path(dir, scenario);
    if !path.exists() {
        return Err(CheckError::NoBaseline { path });
    }
    let incomplete = |problem: String| CheckError::Incomplete {
        path: path.clone(),
        problem,
        fix: "regenerate it with `lbsim check <scenario> --baseline <dir> --update` and commit it"
            .into(),
    };
    if !path.is_file() {
        return Err(incomplete("it is not a regular file".into()));
    }
    let bad = |cause| CheckError::BadBaseline {
        path: path.clone(),
        cause,
    };
    let mut r = csv::Reader::from_path(&path).map_err(bad)?;
    let rows: Vec<BaselineRow> = r
        .deserialize()
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    if rows.is_empty() {
        return Err(incomplete("it has no rows".into()));
    }
    if let Some(row) = rows.iter().find(|b| b.scenario != scenario) {
        return Err(incomplete(format!(
            "it holds rows of scenario `{}`, not `{scenario}`",
            row.scenario
        )));
    }
    if let Some((row, e)) = rows
        .iter()
        .find_map(|b| Metric::from_name(&b.metric).err().map(|e| (b, e)))
    {
        return Err(incomplete(format!("strategy `{}`: {e}", row.strategy)));
    }
    Ok(rows)
}

/// The figures of a comparison that the baseline does not have, as an error unless
/// `allow_new`: a check that compares nothing must not pass.
pub fn require_complete(
    dir: &Path,
    scenario: &str,
    findings: &[Finding],
    allow_new: bool,
) -> Result<(), CheckError> {
    let new: Vec<String> = findings
        .iter()
        .filter(|f| f.scenario == scenario && f.status == Status::New)
        .map(|f| format!("{}/{}", f.strategy, f.metric))
        .collect();
    if new.is_empty() || allow_new {
        return Ok(());
    }
    let shown: Vec<&str> = new.iter().take(12).map(String::as_str).collect();
    Err(CheckError::Incomplete {
        path: baseline_path(dir, scenario),
        problem: format!(
            "{} figure{} of this run {} no baseline row: {}{}",
            new.len(),
            if new.len() == 1 { "" } else { "s" },
            if new.len() == 1 { "has" } else { "have" },
            shown.join(", "),
            if new.len() > shown.len() { ", ..." } else { "" }
        ),
        fix: "if the strategies or metrics are new on purpose, rerun with --update and commit the baseline (or pass --allow-new to check the rest and list them as new)".into(),
    })
}

/// Where a scenario's baseline lives.
pub fn baseline_path(dir: &Path, scenario: &str) -> PathBuf {
    dir.join(scenario).join("summary.csv")
}

/// The defaults of [`Metric::tolerance`] in words, for `check --help` and the README (a
/// test keeps the three in step).
pub const DEFAULT_TOLERANCES: &str = "latency_max 25%, latency_p999 10%, other latencies 5%; throughput and accepted_rate 2%; rejected_fraction and error_fraction 10%; shed_fraction 10%; jain_index 1%; queue_mean and queue_max 10%; ejections and recovered_fraction 10%; time_to_recover 25%; every other metric 5%";

/// Relative tolerances per metric: the defaults ([`Metric::tolerance`]) overridden by
/// `spec` (`metric=fraction,...`; `*=fraction` sets every metric).
pub fn tolerances(spec: &[String]) -> Result<PerMetric<f64>, CheckError> {
    let mut t = PerMetric::from_fn(Metric::tolerance);
    let entries = super::tolerance::parse_entries(spec).map_err(|e| CheckError::BadTolerance {
        entry: e.entry,
        problem: e.problem,
    })?;
    for e in entries {
        match e.name.as_str() {
            "*" => t = PerMetric([e.value; Metric::COUNT]),
            n => {
                let m = Metric::from_name(n).map_err(|why| {
                    let bad = e.bad(why.to_string());
                    CheckError::BadTolerance {
                        entry: bad.entry,
                        problem: bad.problem,
                    }
                })?;
                t[m] = e.value;
            }
        }
    }
    Ok(t)
}

/// Verdict on one metric of one strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Within tolerance or within noise.
    Pass,
    /// Better beyond tolerance and CIs.
    Improved,
    /// Worse beyond tolerance and CIs: fails the check.
    Regressed,
    /// In the baseline, not in the run (strategy removed or renamed): fails the check.
    Missing,
    /// In the run, not in the baseline (new strategy): informational.
    New,
    /// No better direction (descriptive metric): informational.
    Info,
}

/// One metric of one strategy, compared.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// Scenario name.
    pub scenario: String,
    /// Strategy label.
    pub strategy: String,
    /// Metric.
    pub metric: Metric,
    /// Unit.
    pub unit: &'static str,
    /// Baseline mean and 95% CI.
    pub baseline: Option<[f64; 3]>,
    /// New mean and 95% CI.
    pub new: Option<[f64; 3]>,
    /// `(new − baseline) / |baseline|`.
    pub relative_change: f64,
    /// Relative tolerance applied.
    pub tolerance: f64,
    /// Verdict.
    pub status: Status,
}

impl Finding {
    /// Whether this finding fails the check.
    pub fn fails(&self) -> bool {
        matches!(self.status, Status::Regressed | Status::Missing)
    }
}

/// Compares a run with its baseline rows.
pub fn compare_with_baseline(
    scenario: &Scenario,
    results: &RunResults,
    baseline: &[BaselineRow],
    tolerance: &PerMetric<f64>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in &results.strategies {
        for m in Metric::listed_in(crate::metrics::Applies::of(scenario)) {
            let e = s.estimate(m);
            if !m.reported(e.mean) {
                continue;
            }
            let new = [e.mean, e.low, e.high];
            let base = baseline
                .iter()
                .find(|b| b.strategy == s.label && b.metric == m.name());
            let mut f = Finding {
                scenario: scenario.name.clone(),
                strategy: s.label.clone(),
                metric: m,
                unit: m.unit(),
                baseline: base.map(|b| [b.mean, b.ci95_low, b.ci95_high]),
                new: Some(new),
                relative_change: f64::NAN,
                tolerance: tolerance[m],
                status: Status::New,
            };
            if let Some(b) = base {
                f.relative_change = relative(b.mean, e.mean);
                f.status = verdict(
                    m.better(),
                    [b.mean, b.ci95_low, b.ci95_high],
                    new,
                    tolerance[m],
                );
            }
            out.push(f);
        }
    }
    for b in baseline {
        let known = results.strategies.iter().any(|s| s.label == b.strategy);
        if let (false, Ok(m)) = (known, Metric::from_name(&b.metric)) {
            out.push(Finding {
                scenario: scenario.name.clone(),
                strategy: b.strategy.clone(),
                metric: m,
                unit: m.unit(),
                baseline: Some([b.mean, b.ci95_low, b.ci95_high]),
                new: None,
                relative_change: f64::NAN,
                tolerance: tolerance[m],
                status: Status::Missing,
            });
        }
    }
    out
}

fn relative(base: f64, new: f64) -> f64 {
    if base == new {
        0.0
    } else if base == 0.0 {
        f64::INFINITY.copysign(new)
    } else {
        (new - base) / base.abs()
    }
}

/// The verdict for one metric: `[mean, low, high]` of baseline and new.
pub fn verdict(better: Better, base: [f64; 3], new: [f64; 3], tolerance: f64) -> Status {
    let sign = match better {
        Better::Lower => 1.0,
        Better::Higher => -1.0,
        Better::Neither => return Status::Info,
    };
    if base[0].is_nan() || new[0].is_nan() {
        // Undefined both times (nothing served) is no change; defined only once is.
        return if base[0].is_nan() == new[0].is_nan() {
            Status::Pass
        } else {
            Status::Regressed
        };
    }
    let worse_by = sign * relative(base[0], new[0]);
    // CIs overlap unless the new interval lies wholly on one side; without CIs (fewer than
    // two replications) only the tolerance decides.
    let separated = |worse: bool| {
        if [base[1], base[2], new[1], new[2]]
            .iter()
            .any(|v| v.is_nan())
        {
            return true;
        }
        let (lo_new, hi_new, lo_base, hi_base) = (new[1], new[2], base[1], base[2]);
        match (worse, sign > 0.0) {
            (true, true) | (false, false) => lo_new > hi_base,
            _ => hi_new < lo_base,
        }
    };
    if worse_by > tolerance && separated(true) {
        Status::Regressed
    } else if -worse_by > tolerance && separated(false) {
        Status::Improved
    } else {
        Status::Pass
    }
}

/// A scenario that was checked, for the summary.
#[derive(Clone, Debug, Serialize)]
pub struct CheckedScenario {
    /// Scenario name.
    pub name: String,
    /// Replications run.
    pub replications: usize,
    /// Points of its `[sweep]` (0 without one). They are not checked: the baseline holds
    /// the scenario as written.
    pub sweep_points: usize,
}

/// Metrics named first in a strategy's summary line, in this order.
const LEAD_METRICS: &[Metric] = &[
    Metric::LatencyP99,
    Metric::LatencyMean,
    Metric::LatencyP999,
    Metric::Throughput,
    Metric::RejectedFraction,
    Metric::ErrorFraction,
];

/// How a passing metric moved: not at all, within its tolerance, or beyond it but within
/// noise (95% CIs overlapping).
fn movement(f: &Finding) -> Option<&'static str> {
    if f.status != Status::Pass || f.relative_change == 0.0 || f.relative_change.is_nan() {
        return None;
    }
    let sign = match f.metric.better() {
        Better::Higher => -1.0,
        _ => 1.0,
    };
    Some(if sign * f.relative_change > f.tolerance {
        "noise"
    } else {
        "tolerance"
    })
}

fn change_text(f: &Finding) -> String {
    let rel = if f.relative_change.is_finite() {
        format!("{:+.1}%", 100.0 * f.relative_change)
    } else {
        "from 0".to_string()
    };
    match (f.baseline, f.new) {
        (Some(b), Some(n)) => format!(
            "`{}` {rel} ({} → {})",
            f.metric,
            super::human(b[0], f.unit),
            super::human(n[0], f.unit)
        ),
        _ => format!("`{}`", f.metric),
    }
}

/// The check's verdict as Markdown, fit for a pull-request comment: the verdict, then one
/// line per strategy that changed (what got worse or better, by how much, the largest
/// changes first), a line for metrics that moved but passed, which sweep points were not
/// checked, and the detail folded (`<details>`): every finding and a table per scenario.
pub fn markdown(findings: &[Finding], scenarios: &[CheckedScenario]) -> String {
    let failed = findings.iter().filter(|f| f.fails()).count();
    let improved = findings
        .iter()
        .filter(|f| f.status == Status::Improved)
        .count();
    let mut out = String::new();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let _ = writeln!(
        out,
        "## lbsim check: {}\n",
        if failed == 0 {
            format!(
                "✅ no regression ({} checked)",
                plural(scenarios.len(), "scenario")
            )
        } else {
            format!(
                "❌ {} in {}",
                plural(failed, "regression"),
                plural(
                    scenarios
                        .iter()
                        .filter(|s| findings.iter().any(|f| f.scenario == s.name && f.fails()))
                        .count(),
                    "scenario"
                )
            )
        }
    );
    // One line per (scenario, strategy) that changed, in the order they were run.
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for f in findings {
        let k = (f.scenario.as_str(), f.strategy.as_str());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (scenario, strategy) in &keys {
        let of = |st: &[Status]| -> Vec<&Finding> {
            let mut v: Vec<&Finding> = findings
                .iter()
                .filter(|f| {
                    f.scenario == *scenario && f.strategy == *strategy && st.contains(&f.status)
                })
                .collect();
            // What a reader of the PR looks for first (tail latency, mean latency, ...),
            // then the largest relative changes.
            let first = |f: &Finding| {
                LEAD_METRICS
                    .iter()
                    .position(|m| *m == f.metric)
                    .unwrap_or(LEAD_METRICS.len())
            };
            let size = |f: &Finding| {
                if f.relative_change.is_nan() {
                    0.0
                } else {
                    f.relative_change.abs()
                }
            };
            v.sort_by(|a, b| first(a).cmp(&first(b)).then(size(b).total_cmp(&size(a))));
            v
        };
        let who = format!("**{scenario} / {strategy}**");
        let list = |v: &[&Finding]| {
            let shown: Vec<String> = v.iter().take(3).map(|f| change_text(f)).collect();
            let more = v.len().saturating_sub(3);
            format!(
                "{}{}",
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            )
        };
        if !of(&[Status::Missing]).is_empty() {
            let _ = writeln!(
                out,
                "- ❌ {who}: in the baseline, not in this run (removed or renamed?)"
            );
            continue;
        }
        if !of(&[Status::New]).is_empty() {
            let _ = writeln!(
                out,
                "- 🆕 {who}: not in the baseline (new strategy; `--update` adds it)"
            );
            continue;
        }
        let (worse, better) = (of(&[Status::Regressed]), of(&[Status::Improved]));
        if !worse.is_empty() {
            let _ = writeln!(
                out,
                "- ❌ {who}: {} worse: {}{}",
                plural(worse.len(), "metric"),
                list(&worse),
                if better.is_empty() {
                    String::new()
                } else {
                    format!("; {} better", better.len())
                }
            );
        } else if !better.is_empty() {
            let _ = writeln!(
                out,
                "- 🟢 {who}: {} better: {}",
                plural(better.len(), "metric"),
                list(&better)
            );
        }
    }
    let moved: Vec<&Finding> = findings
        .iter()
        .filter(|f| movement(f) == Some("tolerance"))
        .collect();
    let noisy = findings
        .iter()
        .filter(|f| movement(f) == Some("noise"))
        .count();
    if moved.is_empty() && noisy == 0 {
        let any_line = findings
            .iter()
            .any(|f| f.status != Status::Pass && f.status != Status::Info);
        let _ = writeln!(
            out,
            "- ✅ every {}metric is unchanged",
            if any_line { "other " } else { "" }
        );
    } else {
        let largest = moved
            .iter()
            .max_by(|a, b| {
                (a.relative_change.abs() / a.tolerance.max(1e-12))
                    .total_cmp(&(b.relative_change.abs() / b.tolerance.max(1e-12)))
            })
            .map_or(String::new(), |f| {
                format!(
                    " (closest to its tolerance: {} / {} {}, tolerance {:.0}%)",
                    f.scenario,
                    f.strategy,
                    change_text(f),
                    100.0 * f.tolerance
                )
            });
        let _ = writeln!(
            out,
            "- ≈ {} moved but stayed within tolerance{largest}{}",
            plural(moved.len(), "metric"),
            if noisy > 0 {
                format!("; {noisy} more moved beyond tolerance but within noise (95% CIs overlap)")
            } else {
                String::new()
            }
        );
    }
    let sweeps: Vec<String> = scenarios
        .iter()
        .filter(|s| s.sweep_points > 0)
        .map(|s| format!("`{}` ({} points)", s.name, s.sweep_points))
        .collect();
    if !sweeps.is_empty() {
        let _ = writeln!(
            out,
            "- ⚠️ sweep points not checked: {}. The baseline holds each scenario as written (`summary.csv`), not its `[sweep]`; `lbsim run` shows the sweep.",
            sweeps.join(", ")
        );
    }
    let notable: Vec<&Finding> = findings
        .iter()
        .filter(|f| !matches!(f.status, Status::Pass | Status::Info))
        .collect();
    if !notable.is_empty() {
        let _ = writeln!(
            out,
            "\n<details><summary>Every change beyond tolerance ({} regressed or missing, {improved} improved, {} new)</summary>\n",
            failed,
            notable.iter().filter(|f| f.status == Status::New).count()
        );
        out.push_str("| | scenario | strategy | metric | baseline [95% CI] | new [95% CI] | change | tolerance |\n|---|---|---|---|---:|---:|---:|---:|\n");
        for f in notable {
            let icon = match f.status {
                Status::Regressed | Status::Missing => "❌",
                Status::Improved => "🟢",
                _ => "🆕",
            };
            let cell = |v: Option<[f64; 3]>| match v {
                None => "-".to_string(),
                Some([m, lo, hi]) => format!(
                    "{} [{}, {}]",
                    super::human(m, f.unit),
                    super::human(lo, f.unit),
                    super::human(hi, f.unit)
                ),
            };
            let change = if f.relative_change.is_finite() {
                format!("{:+.1}%", 100.0 * f.relative_change)
            } else {
                "-".into()
            };
            let _ = writeln!(
                out,
                "| {icon} | {} | {} | `{}` | {} | {} | {change} | {:.0}% |",
                f.scenario,
                f.strategy,
                f.metric,
                cell(f.baseline),
                cell(f.new),
                100.0 * f.tolerance
            );
        }
        out.push_str("\n</details>\n");
    }
    out.push_str("\n<details><summary>Per scenario</summary>\n\n| scenario | replications | strategies | regressed | improved | moved within tolerance | sweep points |\n|---|---:|---:|---:|---:|---:|---|\n");
    for s in scenarios {
        let of = |st: Status| {
            findings
                .iter()
                .filter(|f| f.scenario == s.name && f.status == st)
                .count()
        };
        let mut strategies: Vec<&str> = findings
            .iter()
            .filter(|f| f.scenario == s.name)
            .map(|f| f.strategy.as_str())
            .collect();
        strategies.dedup();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            s.name,
            s.replications,
            strategies.len(),
            of(Status::Regressed) + of(Status::Missing),
            of(Status::Improved),
            findings
                .iter()
                .filter(|f| f.scenario == s.name && movement(f) == Some("tolerance"))
                .count(),
            if s.sweep_points == 0 {
                "-".to_string()
            } else {
                format!("{} not checked", s.sweep_points)
            }
        );
    }
    out.push_str("\n</details>\n\nA metric regresses when it is worse than the baseline by more than its tolerance *and* the 95% CIs do not overlap.");
    if failed > 0 {
        out.push_str(
            " If the change is intended, rerun with `--update` and commit the new baseline.",
        );
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_needs_tolerance_and_separate_cis() {
        let base = [100.0, 98.0, 102.0];
        let worse = [80.0, 79.0, 81.0];
        // (which way is better, baseline, new [mean, ci low, ci high], tolerance, status)
        let cases = [
            // 10% worse, CIs apart: regressed.
            (
                Better::Lower,
                base,
                [110.0, 108.0, 112.0],
                0.05,
                Status::Regressed,
            ),
            // 10% worse but CIs overlap: noise.
            (
                Better::Lower,
                base,
                [110.0, 90.0, 130.0],
                0.05,
                Status::Pass,
            ),
            // 3% worse, CIs apart, within tolerance.
            (
                Better::Lower,
                base,
                [103.0, 102.5, 103.5],
                0.05,
                Status::Pass,
            ),
            // Higher is better: a drop regresses.
            (Better::Higher, base, worse, 0.05, Status::Regressed),
            (Better::Lower, base, worse, 0.05, Status::Improved),
            (Better::Neither, base, worse, 0.05, Status::Info),
            // From zero rejections to some.
            (
                Better::Lower,
                [0.0; 3],
                [0.01, 0.005, 0.015],
                0.1,
                Status::Regressed,
            ),
        ];
        for (better, base, new, tolerance, status) in cases {
            assert_eq!(
                verdict(better, base, new, tolerance),
                status,
                "{better:?} {base:?} -> {new:?}"
            );
        }
    }

    fn finding(strategy: &str, metric: &str, base: f64, new: f64) -> Finding {
        let k = Metric::from_name(metric).unwrap();
        let (b, n) = (
            [base, base * 0.99, base * 1.01],
            [new, new * 0.99, new * 1.01],
        );
        Finding {
            scenario: "het".into(),
            strategy: strategy.into(),
            metric: k,
            unit: k.unit(),
            baseline: Some(b),
            new: Some(n),
            relative_change: relative(base, new),
            tolerance: k.tolerance(),
            status: verdict(k.better(), b, n, k.tolerance()),
        }
    }

    #[test]
    fn markdown_leads_with_one_line_per_changed_strategy_and_folds_the_detail() {
        let findings = vec![
            finding("rr", "latency_p99", 0.100, 0.150),
            finding("rr", "latency_mean", 0.020, 0.032),
            finding("rr", "latency_max", 100.0, 141.0),
            finding("rr", "latency_p50", 0.010, 0.0102),
            finding("lc", "latency_p99", 0.100, 0.050),
            finding("lc", "latency_mean", 0.020, 0.020),
        ];
        assert_eq!(findings[3].status, Status::Pass);
        let scenarios = [
            CheckedScenario {
                name: "het".into(),
                replications: 20,
                sweep_points: 0,
            },
            CheckedScenario {
                name: "sweep".into(),
                replications: 20,
                sweep_points: 5,
            },
        ];
        let md = markdown(&findings, &scenarios);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines[0], "## lbsim check: ❌ 3 regressions in 1 scenario");
        // Tail and mean latency first, then the largest relative change; seconds rescaled
        // (141 s, not 141000 ms).
        assert_eq!(
            lines[2],
            "- ❌ **het / rr**: 3 metrics worse: `latency_p99` +50.0% (100 ms → 150 ms), `latency_mean` +60.0% (20.0 ms → 32.0 ms), `latency_max` +41.0% (100 s → 141 s)"
        );
        assert_eq!(
            lines[3],
            "- 🟢 **het / lc**: 1 metric better: `latency_p99` -50.0% (100 ms → 50.0 ms)"
        );
        assert!(
            lines[4].starts_with("- ≈ 1 metric moved but stayed within tolerance (closest to its tolerance: het / rr `latency_p50` +2.0%"),
            "{}",
            lines[4]
        );
        assert!(lines[5].contains("sweep points not checked: `sweep` (5 points)"));
        // The detail comes after, folded.
        let details = md.find("<details>").unwrap();
        assert!(md.find("| ❌ | het | rr | `latency_p99`").unwrap() > details);
        assert!(
            md.contains("| sweep | 20 | 0 | 0 | 0 | 0 | 5 not checked |"),
            "{md}"
        );
    }

    #[test]
    fn default_tolerances_text_matches_the_rules() {
        let mut named = std::collections::HashMap::new();
        let (mut other_latency, mut other) = (None, None);
        for clause in DEFAULT_TOLERANCES.split([';', ',']) {
            let (names, pct) = clause.trim().rsplit_once(' ').unwrap();
            let v = pct.trim_end_matches('%').parse::<f64>().unwrap() / 100.0;
            match names {
                "other latencies" => other_latency = Some(v),
                "every other metric" => other = Some(v),
                _ => {
                    for n in names.split(" and ") {
                        assert!(Metric::from_name(n).is_ok(), "no metric `{n}`");
                        named.insert(n, v);
                    }
                }
            }
        }
        for m in crate::metrics::METRICS {
            let expected = named
                .get(m.name)
                .copied()
                .or(other_latency.filter(|_| m.name.starts_with("latency_")))
                .or(other)
                .unwrap();
            assert!(
                (m.tolerance - expected).abs() < 1e-12,
                "{}: rule {} vs text {expected}",
                m.name,
                m.tolerance
            );
        }
    }

    #[test]
    fn tolerance_flags_override_defaults() {
        let t = tolerances(&["latency_p99=0.2, throughput=1%".into()]).unwrap();
        assert_eq!(t[Metric::LatencyP99], 0.2);
        assert!((t[Metric::Throughput] - 0.01).abs() < 1e-12);
        assert_eq!(t[Metric::LatencyMean], 0.05);
        let e = tolerances(&["nope=1".into()]).unwrap_err().to_string();
        assert!(
            e.contains("no metric `nope`") && e.contains("fix:") && e.contains("jain_index"),
            "{e}"
        );
        assert!(tolerances(&["latency_p99".into()]).is_err());
    }
}
