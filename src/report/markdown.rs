//! `report.md`: what a person reads in a minute — the scenario in one paragraph, the
//! headline in one sentence, a ranking table per key metric with 95% CIs and ties, the
//! plots, and the exact command that reproduces the run.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::comparisons::{Ranking, compare, rank};
use super::output::Folder;
use super::plots::plot_files;
use super::{Report, ReportError, ReportInput, human, sig};
use crate::metrics::{Better, Metric};
use crate::runner::RunResults;
use crate::scenario::Scenario;

/// Metrics that get a ranking table, with their titles.
pub const KEY_METRICS: &[(Metric, &str)] = &[
    (Metric::LatencyP99, "p99 response time"),
    (Metric::LatencyMean, "Mean response time"),
    (Metric::LatencyP999, "p99.9 response time"),
    (Metric::UtilizationCv, "Imbalance: CV of server utilisation"),
    (
        Metric::JainIndex,
        "Fairness: Jain's index of server utilisation",
    ),
    (Metric::RejectedFraction, "Rejected requests (fraction)"),
    (Metric::ErrorFraction, "Failed requests (fraction)"),
];

/// `report.md` as a [`Report`].
pub struct MarkdownReport;

impl Report for MarkdownReport {
    fn name(&self) -> &'static str {
        "report.md"
    }

    fn write(
        &self,
        dir: &Folder<'_>,
        input: &ReportInput<'_>,
    ) -> Result<Vec<PathBuf>, ReportError> {
        // Written after the plots: link only those written (the queue-over-time plot
        // needs a recorded time series).
        let text = render_linking(input, |f| dir.join(f).exists());
        Ok(vec![dir.write("report.md", text.as_bytes())?])
    }

    fn reads_others(&self) -> bool {
        true
    }
}

/// Fields that hold seconds, in distributions and arrival processes.
const SECONDS: &[&str] = &[
    "mean",
    "value",
    "min",
    "max",
    "scale",
    "p50",
    "p90",
    "p99",
    "p999",
    "at",
    "mean_on",
    "mean_off",
    "mean_sojourn",
];

/// One parameter of a distribution or arrival process in words: seconds in human units,
/// rates in req/s, nested distributions described in turn (never raw JSON).
fn describe_param(key: &str, v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if SECONDS.contains(&key) {
                human(x, "s")
            } else if key.starts_with("rate") {
                format!("{} req/s", sig(x))
            } else {
                sig(x)
            }
        }
        Value::Array(items) => items
            .iter()
            .map(|item| describe_param(key, item))
            .collect::<Vec<_>>()
            .join(" / "),
        Value::Object(map) if map.contains_key("dist") => describe_map(map, "dist"),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A serde-tagged map (`{ dist = "lognormal", mean = 0.02, cv = 1.5 }`) in words. A
/// mixture lists its components with their shares; a piecewise rate its points in order.
fn describe_map(map: &serde_json::Map<String, serde_json::Value>, tag: &str) -> String {
    let kind = map.get(tag).and_then(|k| k.as_str()).unwrap_or("?");
    match kind {
        "mixture" => {
            let parts: Vec<(f64, String)> = map
                .get("components")
                .and_then(|c| c.as_array())
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    let w = c.get("weight")?.as_f64()?;
                    let d = c.get("dist")?.as_object()?;
                    Some((w, describe_map(d, "dist")))
                })
                .collect();
            let total: f64 = parts.iter().map(|p| p.0).sum();
            let listed: Vec<String> = parts
                .iter()
                .map(|(w, d)| format!("{} {d}", super::percent(w / total)))
                .collect();
            format!("mixture of {}", listed.join(" + "))
        }
        "piecewise" => {
            let points: Vec<String> = map
                .get("points")
                .and_then(|p| p.as_array())
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    Some(format!(
                        "{} req/s at {} s",
                        sig(p.get("rate")?.as_f64()?),
                        super::plots::tick(p.get("at")?.as_f64()?)
                    ))
                })
                .collect();
            let how = map
                .get("interpolation")
                .and_then(|i| i.as_str())
                .unwrap_or("linear");
            format!("piecewise rate ({how}): {}", points.join(" → "))
        }
        _ => {
            let params: Vec<String> = map
                .iter()
                .filter(|(k, _)| k.as_str() != tag)
                .map(|(k, v)| format!("{k} {}", describe_param(k, v)))
                .collect();
            if params.is_empty() {
                kind.to_string()
            } else {
                format!("{kind} ({})", params.join(", "))
            }
        }
    }
}

/// A serde-tagged value in words (see [`describe_map`]).
fn describe_tagged(v: &impl serde::Serialize, tag: &str) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(map)) => describe_map(&map, tag),
        _ => String::new(),
    }
}

/// The scenario in one paragraph.
pub fn scenario_paragraph(s: &Scenario, replications: usize) -> String {
    let servers = s.servers().len();
    let groups: Vec<String> = s
        .groups
        .iter()
        .map(|g| {
            format!(
                "{} × `{}` ({} worker{}, speed {}, weight {}, service {}{})",
                g.count,
                g.name,
                g.workers,
                if g.workers == 1 { "" } else { "s" },
                sig(g.speed),
                g.weight,
                describe_tagged(&g.service, "dist"),
                g.queue_capacity
                    .map_or(String::new(), |q| format!(", queue capacity {q}"))
            )
        })
        .collect();
    let (rate, cap) = (s.mean_rate(), s.capacity());
    let mut p = String::new();
    if !s.description.is_empty() {
        let _ = write!(p, "{} ", s.description.trim());
    }
    let _ = write!(
        p,
        "{servers} server{} in {} group{}: {}. Arrivals: {}, {} req/s on average, {:.0}% of the cluster's capacity of {} req/s. {} balancer{}, {}. Each replication measures {} s of simulated time after a {} s warm-up{}; {replications} replications with seed {}; every strategy sees the same requests in a replication (common random numbers), so differences are paired.",
        if servers == 1 { "" } else { "s" },
        s.groups.len(),
        if s.groups.len() == 1 { "" } else { "s" },
        groups.join(", "),
        describe_tagged(&s.workload.arrivals, "process"),
        sig(rate),
        100.0 * rate / cap,
        sig(cap),
        s.balancers,
        if s.balancers == 1 { "" } else { "s" },
        match s.load_report_interval {
            Some(dt) => format!("server load reported every {} s", sig(dt)),
            None => "exact, continuous server load information".into(),
        },
        sig(s.duration),
        sig(s.warmup),
        match &s.auto_warmup {
            Some(a) => format!(
                " (`warmup = \"auto\"`: the largest MSER truncation of the mean response time over {} pilot replications per strategy, from an empty system; per strategy: {})",
                crate::steady::PILOTS,
                a.strategies
                    .iter()
                    .map(|c| match c.truncation {
                        Some(t) => format!("{} {} s", c.label, sig(t)),
                        None =>
                            format!("{} no end to its transient in {} s", c.label, sig(c.pilot)),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => String::new(),
        },
        s.seed,
    );
    p
}

/// Scale and suffix for values of `unit` around `v`: seconds in µs, ms or s by magnitude.
fn scale_for(v: f64, unit: &str) -> (f64, String) {
    if unit == "s" {
        let (scale, u) = super::plots::time_axis(v);
        (scale, format!(" {u}"))
    } else {
        (1.0, String::new())
    }
}

/// `mean [low, high]` in human units, the three in the unit that suits the mean.
fn with_ci(mean: f64, low: f64, high: f64, unit: &str) -> String {
    if low.is_nan() {
        return human(mean, unit);
    }
    let (scale, suffix) = scale_for(mean, unit);
    format!(
        "{}{suffix} [{}, {}]",
        sig(mean * scale),
        sig(low * scale),
        sig(high * scale)
    )
}

/// A signed difference, in the unit that suits `like` (so that a difference and its CI
/// share one unit).
fn signed(v: f64, like: f64, unit: &str) -> String {
    let (scale, suffix) = scale_for(like, unit);
    if v.is_nan() {
        return "-".into();
    }
    format!(
        "{}{}{suffix}",
        if v >= 0.0 { "+" } else { "−" },
        sig((v * scale).abs())
    )
}

/// The headline sentence on `metric` (`latency_p99` in `report.md`).
pub fn headline(results: &RunResults, metric: Metric) -> Option<String> {
    let r = rank(results, metric)?;
    let title = KEY_METRICS
        .iter()
        .find(|m| m.0 == metric)
        .map_or(metric.name().to_string(), |m| m.1.to_lowercase());
    let best = r.entries.first()?;
    if best.rank == 0 {
        return Some(
            "**No strategy reached a steady state**: every one is unstable (see above), so none is ranked."
                .to_string(),
        );
    }
    let def = metric.def();
    let word = match def.better {
        Better::Higher => "highest",
        _ => "lowest",
    };
    let label = |s: usize| results.strategies[s].label.as_str();
    let e = best.estimate;
    let ties: Vec<&str> = r
        .entries
        .iter()
        .skip(1)
        .filter(|x| x.rank == 1)
        .map(|x| label(x.strategy))
        .collect();
    let mut out = format!(
        "**{}** has the {word} {title}: {}",
        label(best.strategy),
        with_ci(e.mean, e.low, e.high, def.unit)
    );
    // Against the first strategy of the scenario (usually the status quo), or the worst.
    let other = if best.strategy != 0 {
        0
    } else {
        r.entries.last()?.strategy
    };
    if other != best.strategy {
        let c = compare(results, metric, other, best.strategy);
        let rel = c.relative();
        let dir = if c.diff.mean < 0.0 { "lower" } else { "higher" };
        let d = c.diff.mean;
        let _ = write!(
            out,
            ", {} {dir} than {} (paired difference {} [{}, {}])",
            super::percent(rel.abs()),
            label(other),
            signed(d, d, def.unit),
            signed(c.diff.low, d, def.unit),
            signed(c.diff.high, d, def.unit),
        );
    }
    if !ties.is_empty() {
        let _ = write!(
            out,
            "; statistically indistinguishable from it: {}",
            ties.iter()
                .map(|t| format!("**{t}**"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out.push('.');
    Some(out)
}

fn ranking_table(out: &mut String, results: &RunResults, r: &Ranking) {
    let def = r.metric.def();
    out.push_str("| rank | strategy | estimate [95% CI] | vs best, paired [95% CI] |\n");
    out.push_str("|---:|---|---:|---:|\n");
    for (pos, e) in r.entries.iter().enumerate() {
        let tie = if e.rank == 1 && pos > 0 { " ≈" } else { "" };
        let vs = if pos == 0 {
            "best".to_string()
        } else {
            let d = e.vs_best.diff;
            let rel = e.vs_best.relative();
            format!(
                "{} [{}, {}]{}",
                signed(d.mean, d.mean, def.unit),
                signed(d.low, d.mean, def.unit),
                signed(d.high, d.mean, def.unit),
                if rel.is_finite() {
                    format!(" ({:+.1}%)", 100.0 * rel)
                } else {
                    String::new()
                }
            )
        };
        let rank = if e.rank == 0 {
            "unstable".to_string()
        } else {
            e.rank.to_string()
        };
        let _ = writeln!(
            out,
            "| {rank}{tie} | {} | {} | {vs} |",
            results.strategies[e.strategy].label,
            with_ci(e.estimate.mean, e.estimate.low, e.estimate.high, def.unit),
        );
    }
}

/// The whole of `report.md`, linking every plot of [`plot_files`].
pub fn render(input: &ReportInput<'_>) -> String {
    render_linking(input, |_| true)
}

/// The whole of `report.md`, linking the plots of [`plot_files`] for which `written` holds.
pub fn render_linking(input: &ReportInput<'_>, written: impl Fn(&str) -> bool) -> String {
    let (s, results) = (input.scenario, input.results);
    let mut out = String::new();
    let _ = writeln!(out, "# {}: load-balancing strategies compared\n", s.name);
    let _ = writeln!(out, "{}\n", scenario_paragraph(s, results.finished.len()));
    if results.is_partial() {
        let _ = writeln!(
            out,
            "> **Interrupted:** {} of {} replications finished; the figures below use those.\n",
            results.finished.len(),
            results.requested
        );
    }
    for st in &results.strategies {
        if let Some(why) = &st.unstable {
            let _ = writeln!(
                out,
                "> **Unstable: {}** {why}. Its backlog grows with the run, so its figures describe this run length only; it is listed last and not ranked.\n",
                st.label
            );
        }
    }
    for w in crate::steady::warnings(s, results) {
        let _ = writeln!(out, "> **Steady state:** {w}.\n");
    }
    if results.finished.len() == 1 {
        out.push_str(
            "> **One replication:** the figures below have no confidence intervals and strategies are not told apart; run 2 or more replications for intervals and ranks.\n\n",
        );
    }
    if let Some(h) = headline(results, Metric::LatencyP99) {
        let _ = writeln!(out, "{h}\n");
    }
    out.push_str("## Rankings\n\n");
    out.push_str(
        "Rank 1 is the best. A strategy shares the rank of a better one when the paired 95% CI \
         of their difference contains 0 (marked ≈: the replications cannot tell them apart). \
         Differences are *this − best* over the same replications.\n\n",
    );
    let mut all_zero = Vec::new();
    for &(k, title) in KEY_METRICS {
        // A table of zeros says nothing: one line below instead.
        if matches!(k, Metric::RejectedFraction | Metric::ErrorFraction)
            && results
                .strategies
                .iter()
                .all(|st| st.metric(k).iter().all(|&v| v == 0.0))
        {
            all_zero.push(k);
            continue;
        }
        let Some(r) = rank(results, k) else { continue };
        let def = k.def();
        let _ = writeln!(
            out,
            "### {title}\n\n`{}`, {} is better: {}.\n",
            def.name,
            def.better.word(),
            def.doc
        );
        ranking_table(&mut out, results, &r);
        out.push('\n');
    }
    if !all_zero.is_empty() {
        let names: Vec<&str> = all_zero.iter().map(|m| m.name()).collect();
        let what = match all_zero.as_slice() {
            [_, _] => "was rejected or failed",
            [Metric::RejectedFraction] => "was rejected",
            _ => "failed",
        };
        let _ = writeln!(
            out,
            "No request {what} under any strategy in any replication (`{}` {} 0: {} omitted).\n",
            names.join("` and `"),
            if names.len() == 2 { "are" } else { "is" },
            if names.len() == 2 { "tables" } else { "table" },
        );
    }
    if let Some(sweep) = input.sweep {
        let k = Metric::LatencyP99;
        {
            let by = sweep
                .by
                .as_ref()
                .map_or(String::new(), |b| format!(" by `{}`", b.parameter));
            let _ = writeln!(
                out,
                "## Sweep over `{}`{by}\n\np99 response time per point (95% CI); **bold**: rank 1 at that point (best or indistinguishable from it).\n",
                sweep.parameter
            );
            // A 2-D sweep leads with the second parameter: rows come grouped by it.
            let (by_head, by_rule) = sweep.by.as_ref().map_or((String::new(), ""), |b| {
                (format!(" {} |", b.parameter), "---:|")
            });
            let labels: Vec<&str> = results
                .strategies
                .iter()
                .map(|x| x.label.as_str())
                .collect();
            let _ = writeln!(
                out,
                "|{by_head} {} | offered load | {} |",
                sweep.parameter,
                labels.join(" | ")
            );
            let _ = writeln!(out, "|{by_rule}---:|---:|{}", "---:|".repeat(labels.len()));
            for p in &sweep.points {
                let r = rank(&p.results, k);
                let cells: Vec<String> = p
                    .results
                    .strategies
                    .iter()
                    .enumerate()
                    .map(|(i, st)| {
                        let e = st.estimate(k);
                        let c = with_ci(e.mean, e.low, e.high, "s");
                        if r.as_ref().is_some_and(|r| r.rank_of(i) == 1) {
                            format!("**{c}**")
                        } else {
                            c
                        }
                    })
                    .collect();
                let by_cell =
                    p.by.map_or(String::new(), |y| format!(" {} |", super::plots::tick(y)));
                let _ = writeln!(
                    out,
                    "|{by_cell} {} | {:.0}% | {} |",
                    super::plots::tick(p.x),
                    100.0 * p.offered_load,
                    cells.join(" | ")
                );
            }
            out.push('\n');
        }
    }
    out.push_str("## Plots\n\n");
    for (title, file) in plot_files(input).into_iter().filter(|p| written(&p.1)) {
        let _ = writeln!(out, "- [{title}]({file})\n\n  ![{title}]({file})\n");
    }
    out.push_str("## Data\n\n`summary.csv` (every metric with its 95% CI), `servers.csv` (per server), `comparisons.csv` (every pair of strategies, paired differences)");
    if input.sweep.is_some() {
        out.push_str(", `sweep.csv` (every sweep point)");
    }
    out.push_str(".\n\n## Reproduce\n\n```sh\n");
    let _ = writeln!(out, "{}", input.command);
    out.push_str("```\n\nResults are bit-identical for any `--threads`.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::arrival::ArrivalSpec;
    use crate::workload::dist::Dist;

    #[test]
    fn mixtures_and_piecewise_rates_are_described_in_words() {
        let mix: Dist = toml::from_str(
            r#"dist = "mixture"
components = [
  { weight = 9, dist = { dist = "exponential", mean = 0.005 } },
  { weight = 1, dist = { dist = "lognormal", mean = 0.2, cv = 1.5 } },
]"#,
        )
        .unwrap();
        let text = describe_tagged(&mix, "dist");
        assert_eq!(
            text,
            "mixture of 90% exponential (mean 5.00 ms) + 10% lognormal (cv 1.50, mean 200 ms)"
        );
        let spike: ArrivalSpec = toml::from_str(
            r#"process = "piecewise"
points = [{ at = 0, rate = 100 }, { at = 15, rate = 300 }]"#,
        )
        .unwrap();
        let text = describe_tagged(&spike, "process");
        assert_eq!(
            text,
            "piecewise rate (linear): 100 req/s at 0 s → 300 req/s at 15 s"
        );
        assert!(!text.contains('{') && !text.contains('"'), "{text}");
        let mmpp: ArrivalSpec =
            toml::from_str("process = \"mmpp\"\nrates = [5, 25]\nmean_sojourn = [2, 1]").unwrap();
        assert_eq!(
            describe_tagged(&mmpp, "process"),
            "mmpp (mean_sojourn 2.00 s / 1.00 s, rates 5.00 req/s / 25.0 req/s)"
        );
    }
}
