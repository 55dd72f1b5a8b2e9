//! Monte Carlo: every strategy of a scenario through many independent replications, in
//! parallel with rayon, with results that do not depend on the thread count.
//!
//! A replication runs every strategy on the same request stream (common random numbers).
//! Replications are collected in index order; the pooled histograms (response time, waiting
//! time, per server) merge by adding counts, which is order-independent, so output is
//! bit-identical for any `--threads`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::metrics::{
    Estimator, Metric, RunMetrics, RunSummary, SERVER_QUANTILE, SOURCE_SERVERS, latency_histogram,
};
use crate::scenario::{Scenario, ScenarioError};
use crate::sim::{Overheads, Run, Simulated, Trace, TraceSpec};
use crate::stats::quantile::{Cdf, Fit, fit, fitted_estimate};
use crate::stats::{Estimate, estimate};

/// How to run a scenario.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Replications per strategy (default: the scenario's).
    pub replications: Option<u32>,
    /// Master seed (default: the scenario's).
    pub seed: Option<u64>,
    /// Worker threads (default: rayon's, one per core).
    pub threads: Option<usize>,
    /// Set (Ctrl-C, SIGTERM) to stop: replications under way stop within about a
    /// millisecond and are dropped; finished ones are kept.
    pub cancel: Cancel,
    /// Progress bar, advanced once per finished replication.
    pub progress: Option<indicatif::ProgressBar>,
    /// Where to record replication 0's state over time, while it runs (the time series
    /// of the reports), so that no replication is simulated twice.
    pub trace: Option<TraceSink>,
    /// Live mode's calibrated overheads, passed to the engine (none by default).
    pub overheads: Overheads,
}

/// Collects replication 0's [`Trace`] of every strategy during a run: the replication is
/// recorded as it runs (recording only reads), so the time-series report costs no second
/// simulation.
#[derive(Clone, Debug)]
pub struct TraceSink {
    spec: TraceSpec,
    traces: Arc<Mutex<Vec<Option<Trace>>>>,
}

impl TraceSink {
    /// A sink recording what `spec` says.
    pub fn new(spec: TraceSpec) -> TraceSink {
        TraceSink {
            spec,
            traces: Arc::default(),
        }
    }

    /// What is recorded.
    pub fn spec(&self) -> &TraceSpec {
        &self.spec
    }

    /// The traces recorded so far, by strategy index (`None` where replication 0 of that
    /// strategy did not run, e.g. an interrupted run), leaving the sink empty.
    pub fn take(&self) -> Vec<Option<Trace>> {
        std::mem::take(&mut *self.traces.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn put(&self, strategy: usize, trace: Trace) {
        let mut traces = self.traces.lock().unwrap_or_else(|e| e.into_inner());
        if traces.len() <= strategy {
            traces.resize(strategy + 1, None);
        }
        traces[strategy] = Some(trace);
    }
}

/// Everything measured for one strategy.
#[derive(Clone, Debug)]
pub struct StrategyResult {
    /// Label from the scenario.
    pub label: String,
    /// Per finished replication, in replication order.
    pub runs: Vec<RunSummary>,
    /// The distributions of [`RunMetrics::sources`] (nanoseconds), merged over all
    /// finished replications.
    pub pooled: Vec<Histogram<u64>>,
    /// Why the strategy has no steady state, when it has none ([`crate::stability`]):
    /// it is then left out of "best" and ranks.
    pub unstable: Option<String>,
    /// The pooled quantile fits read so far (`FitCache::default()` when building one).
    pub fits: FitCache,
}

/// The pooled quantile fits of one strategy, made once each and read by every report,
/// ranking and comparison (a pair of strategies compared on a percentile reads both
/// fits; a run's reports read each one a dozen times or more, and the fit's Student-t
/// quantile is what the report writing spent most of its time on).
///
/// A fit depends only on the strategy's `pooled` and `runs`, which do not change once
/// its figures are read: results are combined into new [`StrategyResult`]s, and a clone
/// starts with an empty cache.
#[derive(Debug, Default)]
pub struct FitCache(Mutex<HashMap<(usize, u64), Fit>>);

impl Clone for FitCache {
    fn clone(&self) -> FitCache {
        FitCache::default()
    }
}

/// Empty pooled histograms for `servers` servers.
pub fn empty_pooled(servers: usize) -> Vec<Histogram<u64>> {
    let per_server = if servers <= crate::metrics::MAX_SERVER_HISTOGRAMS {
        servers
    } else {
        0
    };
    (0..crate::metrics::SOURCE_SERVERS + per_server)
        .map(|_| latency_histogram())
        .collect()
}

/// Adds a run's distributions to pooled histograms.
pub fn pool(pooled: &mut [Histogram<u64>], m: &RunMetrics) {
    for (p, h) in pooled.iter_mut().zip(m.sources()) {
        // Same bounds on both sides: addition cannot fail.
        let _ = p.add(h);
    }
}

impl StrategyResult {
    /// The result of the given runs (in replication order).
    pub fn from_runs(label: String, runs: &[RunMetrics]) -> StrategyResult {
        let mut pooled = empty_pooled(runs.first().map_or(0, |m| m.servers.len()));
        for m in runs {
            pool(&mut pooled, m);
        }
        StrategyResult {
            label,
            runs: runs.iter().map(RunMetrics::summarize).collect(),
            pooled,
            unstable: None,
            fits: FitCache::default(),
        }
    }

    /// Response times of every finished replication (nanoseconds), merged.
    pub fn latency(&self) -> &Histogram<u64> {
        &self.pooled[crate::metrics::SOURCE_LATENCY]
    }

    /// The values of `metric` across replications (each replication's own value, also for
    /// percentiles).
    pub fn metric(&self, metric: Metric) -> Vec<f64> {
        self.runs.iter().map(|r| r.values[metric]).collect()
    }

    /// Every replication's compact distribution of pooled source `source`.
    pub fn cdfs(&self, source: usize) -> Vec<&Cdf> {
        self.runs
            .iter()
            .filter_map(|r| r.cdfs.get(source))
            .collect()
    }

    /// The reported figure of `metric` with its 95% CI: the mean over replications, or for
    /// percentiles the pooled quantile with its interval.
    pub fn estimate(&self, metric: Metric) -> Estimate {
        match metric.estimator() {
            Estimator::Mean => estimate(&self.metric(metric)),
            Estimator::Pooled { source, p } => self.pooled_estimate(source, p),
        }
    }

    /// The `p` quantile of pooled source `source`, in seconds, with its 95% CI.
    pub fn pooled_estimate(&self, source: usize, p: f64) -> Estimate {
        match self.fit(source, p) {
            Some(f) => fitted_estimate(&f, 1e-9),
            None => estimate(&[]),
        }
    }

    /// The fit of the `p` quantile of pooled source `source` (none when there is no such
    /// source), made at its first read.
    pub(crate) fn fit(&self, source: usize, p: f64) -> Option<Fit> {
        let h = self.pooled.get(source)?;
        let key = (source, p.to_bits());
        let cached = |fits: &FitCache| {
            let fits = fits.0.lock().unwrap_or_else(|e| e.into_inner());
            fits.get(&key).copied()
        };
        if let Some(f) = cached(&self.fits) {
            return Some(f);
        }
        // Made outside the lock, so that fits of other sources are made in parallel; two
        // threads making the same one make the same value.
        let f = fit(h, &self.cdfs(source), p);
        let mut fits = self.fits.0.lock().unwrap_or_else(|e| e.into_inner());
        Some(*fits.entry(key).or_insert(f))
    }
}

/// The results of a scenario run.
#[derive(Clone, Debug)]
pub struct RunResults {
    /// Seed used.
    pub seed: u64,
    /// Replications asked for.
    pub requested: u32,
    /// Indices of the replications that finished, ascending.
    pub finished: Vec<u64>,
    /// One per strategy, in scenario order.
    pub strategies: Vec<StrategyResult>,
}

impl RunResults {
    /// Whether fewer replications finished than were asked for (interrupted run).
    pub fn is_partial(&self) -> bool {
        self.finished.len() < self.requested as usize
    }

    /// Makes every strategy's pooled quantile fits ([`FitCache`]), in parallel on the
    /// current rayon pool, so that the reports written next, in parallel themselves, read
    /// them instead of each making the same ones (and none waits on the longest).
    pub fn fit_percentiles(&self) {
        let tasks: Vec<(&StrategyResult, usize, f64)> = self
            .strategies
            .iter()
            .flat_map(|s| {
                let metrics = Metric::ALL.iter().filter_map(move |m| match m.estimator() {
                    Estimator::Pooled { source, p } => Some((s, source, p)),
                    Estimator::Mean => None,
                });
                let servers =
                    (SOURCE_SERVERS..s.pooled.len()).map(move |i| (s, i, SERVER_QUANTILE));
                metrics.chain(servers)
            })
            .collect();
        tasks
            .into_par_iter()
            .with_max_len(1)
            .for_each(|(s, source, p)| {
                s.fit(source, p);
            });
    }
}

/// Error starting a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The thread pool could not be built.
    #[error("cannot start {threads} worker threads: {source}")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// Cause.
        source: rayon::ThreadPoolBuildError,
    },
    /// The scenario cannot be run as written (e.g. `warmup = "auto"` found no steady state).
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
}

/// Runs `f` on `threads` worker threads (rayon's global pool when `None`).
pub fn in_pool<R: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> R + Send,
) -> Result<R, RunError> {
    match threads {
        Some(threads) => Ok(rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|source| RunError::Threads { threads, source })?
            .install(f)),
        None => Ok(f()),
    }
}

/// One replication's results while its strategies run: staged from its first finished
/// strategy until its last, then pooled and kept (or dropped whole after a cancel).
struct Staged {
    /// Strategies finished.
    done: usize,
    summaries: Vec<Option<RunSummary>>,
    metrics: Vec<Option<RunMetrics>>,
}

impl Staged {
    fn new(strategies: usize) -> Staged {
        Staged {
            done: 0,
            summaries: vec![None; strategies],
            metrics: vec![None; strategies],
        }
    }
}

/// The replications of a run that are under way: only those with some but not all of
/// their strategies finished are held, so staging costs memory in proportion to the tasks
/// in flight (a few per thread), whatever the number of replications.
struct InFlight {
    strategies: usize,
    staged: Mutex<HashMap<usize, Staged>>,
}

impl InFlight {
    fn new(strategies: usize) -> InFlight {
        InFlight {
            strategies,
            staged: Mutex::default(),
        }
    }

    /// Stages strategy `k` of the replication at position `pos`; returns the replication's
    /// summaries and metrics (in strategy order) once this was its last strategy.
    fn put(
        &self,
        pos: usize,
        k: usize,
        summary: RunSummary,
        metrics: RunMetrics,
    ) -> Option<(Vec<RunSummary>, Vec<RunMetrics>)> {
        let mut staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        let st = staged
            .entry(pos)
            .or_insert_with(|| Staged::new(self.strategies));
        st.summaries[k] = Some(summary);
        st.metrics[k] = Some(metrics);
        st.done += 1;
        if st.done < self.strategies {
            return None;
        }
        let st = staged.remove(&pos)?;
        drop(staged);
        Some((
            st.summaries.into_iter().flatten().collect(),
            st.metrics.into_iter().flatten().collect(),
        ))
    }
}

/// What one worker thread of a run accumulates: the pooled histograms of the replications
/// it completed (allocated at its first), merged with the other threads' at the end.
/// Pooling adds integer counts, which is exact and order-independent, so the merged
/// histograms do not depend on which thread completed which replication, and no lock
/// shared by the threads serialises the pooling.
#[derive(Default)]
struct Pooled(Option<Vec<Vec<Histogram<u64>>>>);

impl Pooled {
    fn add_run(&mut self, servers: usize, runs: &[RunMetrics]) {
        let acc = self
            .0
            .get_or_insert_with(|| runs.iter().map(|_| empty_pooled(servers)).collect());
        for (acc, m) in acc.iter_mut().zip(runs) {
            pool(acc, m);
        }
    }

    fn merge(mut self, other: Pooled) -> Pooled {
        match (&mut self.0, other.0) {
            (Some(a), Some(b)) => {
                for (a, b) in a.iter_mut().zip(&b) {
                    for (a, b) in a.iter_mut().zip(b) {
                        // Same bounds on both sides: addition cannot fail.
                        let _ = a.add(b);
                    }
                }
                self
            }
            (None, b) => Pooled(b),
            (Some(_), None) => self,
        }
    }
}

/// The order in which a run's (replication, strategy) tasks start: replications in
/// order, and within a replication its strategies longest first, by the mean time each
/// strategy's simulations took so far in this run (those not timed yet first, in
/// scenario order). A replication's tasks all start before the next replication's, so
/// at most about one replication per thread is staged ([`InFlight`]), whatever the
/// number of replications; and the last tasks of a run are its shortest, so the threads
/// finish close together (longest processing time first): the last wave is not one
/// long simulation on one thread while the others idle.
///
/// The order depends on timings, the results do not: every task's figures depend only on
/// its replication and strategy, and they are pooled and kept by position.
struct Queue {
    strategies: usize,
    replications: usize,
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    /// The replication (position) whose tasks are starting.
    pos: usize,
    /// Its strategies that have not started.
    pending: Vec<usize>,
    /// The replications opened so far.
    opened: usize,
    /// Per strategy, the time its simulations took so far and how many there were.
    took: Vec<(Duration, u32)>,
}

impl Queue {
    fn new(replications: usize, strategies: usize) -> Queue {
        Queue {
            strategies,
            replications,
            state: Mutex::new(QueueState {
                took: vec![(Duration::ZERO, 0); strategies],
                ..QueueState::default()
            }),
        }
    }

    /// The next task to start, as (replication position, strategy); `None` once every
    /// task has started.
    fn next(&self) -> Option<(usize, usize)> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.pending.is_empty() {
            if st.opened == self.replications {
                return None;
            }
            st.pos = st.opened;
            st.opened += 1;
            st.pending = (0..self.strategies).collect();
        }
        // Longest mean first; not timed yet counts as longest; ties in scenario order.
        let mean = |&(total, n): &(Duration, u32)| match n {
            0 => f64::INFINITY,
            n => total.as_secs_f64() / f64::from(n),
        };
        let (i, _) =
            st.pending
                .iter()
                .enumerate()
                .fold(None, |best: Option<(usize, f64)>, (i, &k)| {
                    let m = mean(&st.took[k]);
                    match best {
                        Some((_, b)) if b >= m => best,
                        _ => Some((i, m)),
                    }
                })?;
        let k = st.pending.remove(i);
        Some((st.pos, k))
    }

    /// Records that a simulation of strategy `k` took `time`.
    fn took(&self, k: usize, time: Duration) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (total, n) = &mut st.took[k];
        *total += time;
        *n += 1;
    }
}

/// Runs replications `indices` of every strategy in `scenario`.
pub fn run_replications(
    scenario: &Scenario,
    indices: &[u64],
    opts: &RunOptions,
) -> Result<RunResults, RunError> {
    let seed = opts.seed.unwrap_or(scenario.seed);
    // `warmup = "auto"` not chosen yet (callers that report it choose it first, see
    // `crate::steady::resolve_warmup`): choose it now, the same way.
    let resolved;
    let scenario = if scenario.warmup_auto && scenario.auto_warmup.is_none() {
        let mut s = scenario.clone();
        crate::steady::resolve_warmup(&mut s, seed, opts.threads, Some(&opts.cancel))?;
        resolved = s;
        &resolved
    } else {
        scenario
    };
    let n_strategies = scenario.strategies.len();
    let n_servers = scenario.servers().len();
    // One task per (replication, strategy), so that the last replications' strategies run
    // in parallel too and no thread idles at the end (the serial tail of one task per
    // replication). A replication counts once all its strategies ran: its results are
    // staged until then ([`InFlight`], memory bounded by the tasks in flight, not by the
    // run), then its histograms are pooled into its thread's [`Pooled`] and its compact
    // summaries kept; they are put back in replication order at the end.
    let in_flight = InFlight::new(n_strategies);
    // Per strategy, the kept summaries with their replication's position.
    let kept: Mutex<Vec<Vec<(usize, RunSummary)>>> =
        Mutex::new((0..n_strategies).map(|_| Vec::new()).collect());
    let work = || {
        let per_thread: Vec<Mutex<Pooled>> = (0..rayon::current_num_threads())
            .map(|_| Mutex::default())
            .collect();
        let queue = Queue::new(indices.len(), n_strategies);
        // One worker per thread, each taking the next task from the queue until it is
        // empty: a thread that runs out of work takes one simulation, never a batch of
        // them, so the run ends within one (short, see [`Queue`]) simulation on every
        // thread.
        rayon::broadcast(|ctx| {
            while let Some((pos, k)) = queue.next() {
                let rep = indices[pos];
                // After a cancel nothing starts, and a simulation under way stops within
                // a millisecond or so: its replication is then dropped whole (it counts
                // only once every strategy ran it).
                if opts.cancel.is_cancelled() {
                    return;
                }
                let entry = &scenario.strategies[k];
                let started = Instant::now();
                let sink = opts.trace.as_ref().filter(|_| rep == 0);
                let Some(Simulated { metrics: m, trace }) = Run::entry(scenario, entry, rep)
                    .seed(seed)
                    .overheads(&opts.overheads)
                    .trace(sink.map(TraceSink::spec))
                    .cancel(&opts.cancel)
                    .simulate()
                else {
                    continue;
                };
                queue.took(k, started.elapsed());
                if let (Some(sink), Some(trace)) = (sink, trace) {
                    sink.put(k, trace);
                }
                let summary = m.summarize();
                let Some((summaries, metrics)) = in_flight.put(pos, k, summary, m) else {
                    continue;
                };
                per_thread[ctx.index() % per_thread.len()]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .add_run(n_servers, &metrics);
                drop(metrics);
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                for (runs, summary) in kept.iter_mut().zip(summaries) {
                    runs.push((pos, summary));
                }
                drop(kept);
                if let Some(p) = &opts.progress {
                    p.inc(1);
                }
            }
        });
        per_thread
            .into_iter()
            .map(|p| p.into_inner().unwrap_or_else(|e| e.into_inner()))
            .fold(Pooled::default(), Pooled::merge)
    };
    let pooled = in_pool(opts.threads, work)?
        .0
        .unwrap_or_else(|| (0..n_strategies).map(|_| empty_pooled(n_servers)).collect());
    let kept = kept.into_inner().unwrap_or_else(|e| e.into_inner());
    let finished: Vec<u64> = {
        let mut positions: Vec<usize> = kept.first().map_or(Vec::new(), |runs| {
            runs.iter().map(|&(pos, _)| pos).collect()
        });
        positions.sort_unstable();
        positions.into_iter().map(|pos| indices[pos]).collect()
    };
    let strategies: Vec<StrategyResult> = scenario
        .strategies
        .iter()
        .zip(pooled)
        .zip(kept)
        .map(|((e, pooled), mut runs)| {
            runs.sort_unstable_by_key(|&(pos, _)| pos);
            StrategyResult {
                label: e.label(),
                // Moved in place: no second copy of every summary at the end of a run.
                runs: runs.into_iter().map(|(_, summary)| summary).collect(),
                pooled,
                unstable: None,
                fits: FitCache::default(),
            }
        })
        .collect();
    let mut results = RunResults {
        seed,
        requested: indices.len() as u32,
        finished,
        strategies,
    };
    crate::stability::assess(scenario, &mut results);
    Ok(results)
}

/// Fails closed when a run measured nothing its figures could describe: no request arrived
/// in the measured window, none was served, or no server was ever busy. Such runs would
/// otherwise publish NaN figures over zero replications. The error names the scenario
/// file, the field to change and how.
pub fn check_measured(scenario: &Scenario, results: &RunResults) -> Result<(), ScenarioError> {
    let runs = || results.strategies.iter().flat_map(|s| s.runs.iter());
    if runs().next().is_none() {
        return Ok(());
    }
    let value = |r: &RunSummary, m: Metric| r.values[m];
    let invalid = |field: &str, problem: String, fix: &str| ScenarioError::Invalid {
        path: scenario.path.clone(),
        line: None,
        field: field.into(),
        problem,
        fix: fix.into(),
    };
    let (from, to) = (scenario.warmup, scenario.end());
    let arrived = runs().any(|r| {
        value(r, Metric::AcceptedRate) > 0.0
            || value(r, Metric::RejectedFraction) > 0.0
            || value(r, Metric::ErrorFraction) > 0.0
    });
    if !arrived {
        let trace = matches!(
            scenario.workload.arrivals,
            crate::workload::ArrivalSpec::Trace { .. }
        );
        return Err(invalid(
            if trace { "warmup" } else { "duration" },
            format!(
                "nothing measured: no request arrived in the measured window [{from}, {to}) s in any replication"
            ),
            if trace {
                "the trace's arrivals all fall outside the window: shorten `warmup` (arrivals before it are not measured) or lengthen `duration` to cover the trace's times"
            } else {
                "lengthen `duration` or raise the arrival rate so that requests arrive after the warm-up"
            },
        ));
    }
    if !runs().any(|r| value(r, Metric::LatencyMean).is_finite()) {
        return Err(invalid(
            "servers",
            "nothing measured: every request that arrived in the window was refused or failed, for every strategy".into(),
            "check `queue_capacity` (0 refuses everything) and `[[faults]]` (servers down for the whole window)",
        ));
    }
    if !runs().any(|r| value(r, Metric::UtilizationMean) > 0.0) {
        return Err(invalid(
            "servers.service",
            "nothing measured: no server was ever busy (service times round to 0 ns), so nothing queues and utilisation figures are undefined".into(),
            "service times are in seconds: e.g. `mean = 0.001` for 1 ms",
        ));
    }
    Ok(())
}

/// Runs every replication of every strategy in `scenario`.
pub fn run(scenario: &Scenario, opts: &RunOptions) -> Result<RunResults, RunError> {
    let n = opts.replications.unwrap_or(scenario.replications);
    let indices: Vec<u64> = (0..u64::from(n)).collect();
    run_replications(scenario, &indices, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every task of `queue`, in the order it gives them, timing strategy `k` as
    /// `cost[k]` ms.
    fn drain(queue: &Queue, cost: &[u64]) -> Vec<(usize, usize)> {
        std::iter::from_fn(|| {
            let (pos, k) = queue.next()?;
            queue.took(k, Duration::from_millis(cost[k]));
            Some((pos, k))
        })
        .collect()
    }

    #[test]
    fn queue_starts_replications_in_order_and_their_longest_strategies_first() {
        let queue = Queue::new(3, 4);
        let order = drain(&queue, &[20, 40, 10, 30]);
        assert_eq!(
            order,
            [
                // Nothing timed yet: scenario order.
                (0, 0),
                (0, 1),
                (0, 2),
                (0, 3),
                // Then longest first, replication by replication.
                (1, 1),
                (1, 3),
                (1, 0),
                (1, 2),
                (2, 1),
                (2, 3),
                (2, 0),
                (2, 2),
            ]
        );
        assert_eq!(queue.next(), None);
    }

    #[test]
    fn queue_orders_by_the_mean_time_and_keeps_scenario_order_on_ties() {
        let queue = Queue::new(2, 3);
        for _ in 0..3 {
            queue.next();
        }
        // Strategy 0 timed twice (mean 15 ms), 1 once (15 ms), 2 once (20 ms).
        queue.took(0, Duration::from_millis(10));
        queue.took(0, Duration::from_millis(20));
        queue.took(1, Duration::from_millis(15));
        queue.took(2, Duration::from_millis(20));
        assert_eq!(drain(&queue, &[0, 0, 0]), [(1, 2), (1, 0), (1, 1)]);
    }

    #[test]
    fn queue_gives_every_task_once_to_threads_that_share_it() {
        let queue = Queue::new(50, 6);
        let taken = Mutex::new(Vec::new());
        rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .expect("pool")
            .broadcast(|ctx| {
                while let Some((pos, k)) = queue.next() {
                    queue.took(k, Duration::from_micros((ctx.index() * 7 + k) as u64));
                    taken.lock().expect("lock").push((pos, k));
                }
            });
        let mut taken = taken.into_inner().expect("lock");
        taken.sort_unstable();
        let all: Vec<(usize, usize)> = (0..50)
            .flat_map(|pos| (0..6).map(move |k| (pos, k)))
            .collect();
        assert_eq!(taken, all);
    }

    #[test]
    fn cached_fits_give_the_figures_made_afresh_and_clones_start_empty() {
        use crate::metrics::{SOURCE_LATENCY, SOURCE_WAIT};
        use crate::stats::quantile::quantile_estimate;
        use crate::testing;
        let rest = testing::servers("s", 3, "", &testing::exponential(0.01))
            + &testing::kinds(&["round_robin", "random"]);
        let scenario = testing::scenario("duration = 5\nwarmup = 1", 200.0, &rest);
        let opts = RunOptions {
            replications: Some(4),
            threads: Some(2),
            ..Default::default()
        };
        let results = run(&scenario, &opts).expect("run");
        results.fit_percentiles();
        let bits = |e: Estimate| [e.mean, e.low, e.high].map(f64::to_bits);
        for s in &results.strategies {
            let fresh = |source: usize, p: f64| {
                quantile_estimate(&s.pooled[source], &s.cdfs(source), p, 1e-9)
            };
            for (source, p) in [
                (SOURCE_LATENCY, 0.99),
                (SOURCE_WAIT, 0.5),
                (SOURCE_SERVERS + 2, 0.99),
            ] {
                // Read twice: made, then from the cache.
                assert_eq!(bits(s.pooled_estimate(source, p)), bits(fresh(source, p)));
                assert_eq!(bits(s.pooled_estimate(source, p)), bits(fresh(source, p)));
            }
            assert!(!s.fits.0.lock().expect("lock").is_empty());
            assert!(s.clone().fits.0.lock().expect("lock").is_empty());
        }
    }

    #[test]
    fn an_empty_queue_gives_nothing() {
        assert_eq!(Queue::new(0, 3).next(), None);
        assert_eq!(Queue::new(3, 0).next(), None);
    }
}
