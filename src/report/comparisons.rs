//! Paired comparisons of strategies: differences with 95% CIs over common-random-number
//! replications, rankings with ties for statistically indistinguishable strategies, and
//! `comparisons.csv` (one row per metric and pair of strategies).
//!
//! Every strategy of a replication sees the same requests, so the per-replication
//! difference `b − a` removes the noise both share; its Student-t interval is valid (the
//! differences are i.i.d. across replications) and much narrower than comparing two
//! independent intervals. The unpaired (Welch) half-width is written beside it to show
//! what pairing buys. Percentiles compare pooled quantiles, with the paired interval of
//! their Bahadur representation ([`crate::stats::quantile`]).

use std::path::PathBuf;

use super::columns::*;
use super::output::Folder;
use super::{Report, ReportError, ReportInput};
use crate::metrics::{Better, Estimator, Metric};
use crate::runner::{RunResults, StrategyResult};
use crate::stats::quantile::{fitted_difference, quantile_difference};
use crate::stats::{Estimate, paired_difference, unpaired_difference};
use rayon::prelude::*;

/// The difference of one metric between two strategies.
#[derive(Clone, Copy, Debug)]
pub struct PairComparison {
    /// The metric compared.
    pub metric: Metric,
    /// First strategy (index in the results).
    pub a: usize,
    /// Second strategy.
    pub b: usize,
    /// Reported figure of `a` (mean over replications, or pooled percentile).
    pub mean_a: f64,
    /// Reported figure of `b`.
    pub mean_b: f64,
    /// Paired difference `b − a` with its 95% CI.
    pub diff: Estimate,
    /// The 95% half-width an unpaired (Welch) comparison would give.
    pub unpaired_half_width: f64,
}

impl PairComparison {
    /// `(b − a) / a`, NaN when `a` is 0 or undefined.
    pub fn relative(&self) -> f64 {
        if self.mean_a == 0.0 || !self.mean_a.is_finite() {
            f64::NAN
        } else {
            self.diff.mean / self.mean_a.abs()
        }
    }

    /// Whether the paired 95% CI contains 0 (or cannot be computed), so the data do not
    /// tell the two apart.
    pub fn indistinguishable(&self) -> bool {
        self.diff.low.is_nan() || self.diff.contains(0.0)
    }

    /// Which of the two is better, by the metric's direction: `Some(true)` when `b` is,
    /// `Some(false)` when `a` is, `None` when indistinguishable or the metric has no
    /// better direction.
    pub fn b_is_better(&self) -> Option<bool> {
        if self.indistinguishable() {
            return None;
        }
        match self.metric.better() {
            Better::Lower => Some(self.diff.mean < 0.0),
            Better::Higher => Some(self.diff.mean > 0.0),
            Better::Neither => None,
        }
    }
}

/// The pooled histogram of a metric's source (response or waiting times).
fn pooled_histogram(s: &StrategyResult, source: usize) -> &hdrhistogram::Histogram<u64> {
    s.pooled
        .histogram(source)
        .expect("a metric's pooled source is a histogram")
}

/// Compares strategies `a` and `b` of `results` on metric `metric`.
pub fn compare(results: &RunResults, metric: Metric, a: usize, b: usize) -> PairComparison {
    if let Estimator::Pooled { source, p } = metric.estimator() {
        let (sa, sb) = (&results.strategies[a], &results.strategies[b]);
        let (ca, cb) = (sa.cdfs(source), sb.cdfs(source));
        let (diff, unpaired_half_width) = match (sa.fit(source, p), sb.fit(source, p)) {
            (Some(fa), Some(fb)) => fitted_difference((&fa, &ca), (&fb, &cb), p, 1e-9),
            _ => quantile_difference(
                (pooled_histogram(sa, source), &ca),
                (pooled_histogram(sb, source), &cb),
                p,
                1e-9,
            ),
        };
        return PairComparison {
            metric,
            a,
            b,
            mean_a: sa.estimate(metric).mean,
            mean_b: sb.estimate(metric).mean,
            diff,
            unpaired_half_width,
        };
    }
    let (xa, xb) = (
        results.strategies[a].metric(metric),
        results.strategies[b].metric(metric),
    );
    let (ea, eb) = (crate::stats::estimate(&xa), crate::stats::estimate(&xb));
    PairComparison {
        metric,
        a,
        b,
        mean_a: ea.mean,
        mean_b: eb.mean,
        diff: paired_difference(&xa, &xb),
        unpaired_half_width: unpaired_difference(&xa, &xb).half_width(),
    }
}

/// One strategy's place in a [`Ranking`].
#[derive(Clone, Copy, Debug)]
pub struct Ranked {
    /// Strategy index in the results.
    pub strategy: usize,
    /// Its estimate of the metric.
    pub estimate: Estimate,
    /// Competition rank (1 = best); strategies the data cannot tell apart share a rank.
    /// 0 for an unstable strategy ([`crate::stability`]): it is listed last, unranked.
    pub rank: usize,
    /// This strategy against the best one (`this − best`), paired.
    pub vs_best: PairComparison,
}

/// Strategies ordered from best to worst on one metric, with ties.
#[derive(Clone, Debug)]
pub struct Ranking {
    /// The metric ranked.
    pub metric: Metric,
    /// Best first.
    pub entries: Vec<Ranked>,
}

impl Ranking {
    /// The rank of strategy `s`.
    pub fn rank_of(&self, s: usize) -> usize {
        self.entries
            .iter()
            .find(|e| e.strategy == s)
            .map_or(usize::MAX, |e| e.rank)
    }

    /// How many strategies share rank 1.
    pub fn tied_best(&self) -> usize {
        self.entries.iter().filter(|e| e.rank == 1).count()
    }
}

/// Ranks the strategies on `metric` (`None` when the metric has no better direction).
///
/// Strategies are sorted by mean; walking down the list, a strategy shares the rank of
/// the current group's leader when their paired 95% CI contains 0, and starts a new group
/// (rank = its position) otherwise. In particular every strategy indistinguishable from
/// the best has rank 1. Unstable strategies come last with rank 0: they can be neither
/// best nor ranked, their figures depending on the run length.
pub fn rank(results: &RunResults, metric: Metric) -> Option<Ranking> {
    let sign = match metric.better() {
        Better::Lower => 1.0,
        Better::Higher => -1.0,
        Better::Neither => return None,
    };
    let means: Vec<f64> = (0..results.strategies.len())
        .map(|s| results.strategies[s].estimate(metric).mean)
        .collect();
    let unstable = |s: usize| results.strategies[s].unstable.is_some();
    let mut order: Vec<usize> = (0..means.len()).collect();
    // Unstable strategies, then undefined means go last; ties keep scenario order (stable
    // sort).
    order.sort_by(|&x, &y| {
        let (a, b) = (sign * means[x], sign * means[y]);
        unstable(x)
            .cmp(&unstable(y))
            .then(match (a.is_nan(), b.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                (false, false) => a.total_cmp(&b),
            })
    });
    let best = *order.first()?;
    let mut entries = Vec::with_capacity(order.len());
    let (mut leader, mut leader_rank) = (best, 1);
    for (pos, &s) in order.iter().enumerate() {
        let rank = if unstable(s) {
            0
        } else if s == leader || compare(results, metric, leader, s).indistinguishable() {
            leader_rank
        } else {
            leader = s;
            leader_rank = pos + 1;
            leader_rank
        };
        entries.push(Ranked {
            strategy: s,
            estimate: results.strategies[s].estimate(metric),
            rank,
            vs_best: compare(results, metric, best, s),
        });
    }
    Some(Ranking { metric, entries })
}

/// Writes `comparisons.csv`: every metric, every unordered pair of strategies (in
/// scenario order: `a` before `b`).
pub struct ComparisonsCsv;

impl Report for ComparisonsCsv {
    fn name(&self) -> &'static str {
        "comparisons.csv"
    }

    fn write(
        &self,
        dir: &Folder<'_>,
        input: &ReportInput<'_>,
    ) -> Result<Vec<PathBuf>, ReportError> {
        let r = input.results;
        let n = r.strategies.len();
        let pairs: Vec<(Metric, usize, usize)> =
            Metric::listed_in(crate::metrics::Applies::of(input.scenario))
                .flat_map(|m| (0..n).flat_map(move |a| (a + 1..n).map(move |b| (m, a, b))))
                .collect();
        // The comparisons (pooled percentiles' fits over every replication) are the cost of
        // this report: computed in parallel, written in order.
        let compared: Vec<PairComparison> = pairs
            .par_iter()
            .map(|&(m, a, b)| compare(r, m, a, b))
            .collect();
        let rows = pairs.iter().zip(compared).map(|(&(m, a, b), c)| {
            let (sa, sb) = (&r.strategies[a], &r.strategies[b]);
            let either_unstable = sa.unstable.is_some() || sb.unstable.is_some();
            let better_strategy = match (m.better(), c.b_is_better()) {
                (Better::Neither, _) => "",
                _ if either_unstable => "unstable",
                (_, None) => "tie",
                (_, Some(true)) => sb.label.as_str(),
                (_, Some(false)) => sa.label.as_str(),
            };
            [
                (SCENARIO, (&input.scenario.name).into()),
                (METRIC, m.into()),
                (UNIT, m.unit().into()),
                (BETTER, m.better().word().into()),
                (STRATEGY_A, (&sa.label).into()),
                (STRATEGY_B, (&sb.label).into()),
                (MEAN_A, c.mean_a.into()),
                (MEAN_B, c.mean_b.into()),
                (DIFF, c.diff.into()),
                (RELATIVE_DIFF, c.relative().into()),
                (UNPAIRED_HALF_WIDTH, c.unpaired_half_width.into()),
                (INDISTINGUISHABLE, c.indistinguishable().into()),
                (BETTER_STRATEGY, better_strategy.into()),
                (REPLICATIONS, c.diff.n.into()),
                (UNSTABLE_A, sa.unstable.is_some().into()),
                (UNSTABLE_B, sb.unstable.is_some().into()),
            ]
        });
        let path = COMPARISONS.write(dir, rows)?;
        Ok(vec![path])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{PerMetric, RunSummary};
    use crate::runner::{StrategyResult, empty_pooled};

    /// Results where every metric of strategy `s` in replication `r` is `f(s, r)`.
    pub(crate) fn synthetic(f: impl Fn(usize, usize) -> f64, strategies: usize) -> RunResults {
        RunResults {
            seed: 1,
            requested: 10,
            finished: (0..10).collect(),
            strategies: (0..strategies)
                .map(|s| StrategyResult {
                    label: format!("s{s}"),
                    runs: (0..10)
                        .map(|r| RunSummary {
                            values: PerMetric([f(s, r); Metric::COUNT]),
                            servers: vec![],
                            cdfs: vec![],
                            batches: vec![],
                            phases: vec![],
                        })
                        .collect(),
                    pooled: empty_pooled(0),
                    unstable: None,
                    fits: Default::default(),
                })
                .collect(),
        }
    }

    #[test]
    fn ties_share_rank_and_groups_start_new_ranks() {
        // Common noise (r²) dominates; s1 = s0 + tiny wobble around 0; s2 clearly worse.
        let noise = |r: usize| (r * r) as f64;
        let res = synthetic(
            |s, r| match s {
                0 => noise(r) + 10.0,
                1 => noise(r) + 10.0 + if r % 2 == 0 { 0.01 } else { -0.01 },
                _ => noise(r) + 12.0 + 0.001 * r as f64,
            },
            3,
        );
        let ranking = rank(&res, Metric::LatencyMean).unwrap();
        assert_eq!(ranking.rank_of(0), 1);
        assert_eq!(ranking.rank_of(1), 1);
        assert_eq!(ranking.rank_of(2), 3);
        assert_eq!(ranking.tied_best(), 2);
        // Higher-is-better metrics rank the other way round.
        assert_eq!(rank(&res, Metric::JainIndex).unwrap().rank_of(2), 1);
        assert!(rank(&res, Metric::InSystemMean).is_none());
    }

    #[test]
    fn unstable_strategies_are_neither_best_nor_ranked() {
        let mut res = synthetic(|s, r| (r * r) as f64 + s as f64, 3);
        res.strategies[0].unstable = Some("grows".into());
        let ranking = rank(&res, Metric::LatencyMean).unwrap();
        assert_eq!(ranking.rank_of(0), 0);
        assert_eq!(ranking.rank_of(1), 1);
        assert_eq!(ranking.entries.last().unwrap().strategy, 0);
    }

    #[test]
    fn pairing_is_narrower_than_unpaired() {
        let res = synthetic(|s, r| (r * r) as f64 + s as f64 + 0.01 * (r % 3) as f64, 2);
        let c = compare(&res, Metric::LatencyMean, 0, 1);
        assert!((c.diff.mean - 1.0).abs() < 0.02);
        assert!(!c.indistinguishable());
        assert!(c.unpaired_half_width > 100.0 * c.diff.half_width());
        assert_eq!(c.b_is_better(), Some(false));
    }
}
