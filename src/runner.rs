//! Monte Carlo: every strategy of a scenario through many independent replications, in
//! parallel with rayon, with results that do not depend on the thread count.
//!
//! A replication runs every strategy on the same request stream (common random numbers).
//! Replications are collected in index order; the pooled histograms (response time, waiting
//! time, per server) merge by adding counts, which is order-independent, so output is
//! bit-identical for any `--threads`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::metrics::{
    Estimator, Metric, Pooled, RunMetrics, RunSummary, SERVER_QUANTILE, SOURCE_SERVERS,
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

    /// Every strategy's trace, by strategy index, leaving the sink empty, once each of
    /// the `strategies` has one; otherwise `None`, leaving the sink as it was.
    pub fn take_complete(&self, strategies: usize) -> Option<Vec<Option<Trace>>> {
        let mut traces = lock(&self.traces);
        let complete = traces.len() == strategies && traces.iter().all(Option::is_some);
        complete.then(|| std::mem::take(&mut *traces))
    }

    /// The traces recorded so far, by strategy index (`None` where replication 0 of that
    /// strategy did not run, e.g. an interrupted run), leaving the sink empty.
    pub fn take(&self) -> Vec<Option<Trace>> {
        std::mem::take(&mut *lock(&self.traces))
    }

    fn put(&self, strategy: usize, trace: Trace) {
        let mut traces = lock(&self.traces);
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
    /// The distributions of [`RunMetrics::source`] (nanoseconds), merged over all
    /// finished replications.
    pub pooled: Pooled,
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

/// Empty pools for `servers` servers ([`Pooled::new`]).
pub fn empty_pooled(servers: usize) -> Pooled {
    Pooled::new(servers)
}

/// Adds a run's distributions to pools.
pub fn pool(pooled: &mut Pooled, m: &RunMetrics) {
    m.pool_into(pooled);
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
        self.pooled.latency()
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

    /// The (source, quantile) of every pooled fit its reports read: the percentile
    /// metrics' and each server's [`SERVER_QUANTILE`].
    fn fit_sources(&self) -> impl Iterator<Item = (usize, f64)> + use<> {
        let metrics = Metric::ALL.iter().filter_map(|m| match m.estimator() {
            Estimator::Pooled { source, p } => Some((source, p)),
            Estimator::Mean => None,
        });
        let servers = (SOURCE_SERVERS..self.pooled.len()).map(|i| (i, SERVER_QUANTILE));
        metrics.chain(servers)
    }

    /// The fit of the `p` quantile of pooled source `source` (none when there is no such
    /// source), made at its first read.
    pub(crate) fn fit(&self, source: usize, p: f64) -> Option<Fit> {
        let h = self.pooled.source(source)?;
        let key = (source, p.to_bits());
        let cached = lock(&self.fits.0).get(&key).copied();
        if cached.is_some() {
            return cached;
        }
        // Made outside the lock, so that fits of other sources are made in parallel; two
        // threads making the same one make the same value.
        let f = fit(&h, &self.cdfs(source), p);
        Some(*lock(&self.fits.0).entry(key).or_insert(f))
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
            .flat_map(|s| s.fit_sources().map(move |(source, p)| (s, source, p)))
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

/// One strategy's results while its replications run: each (replication, strategy) task
/// is pooled as soon as it ends, and once the strategy's last replication has ended its
/// result is made ([`StrategyResult`], with its pooled quantile fits) while the other
/// strategies still run.
enum Strategy {
    /// Some replications still to end: the pooled histograms (from the first) and the
    /// summaries with their replication's position.
    Open {
        pooled: Option<Pooled>,
        runs: Vec<(usize, RunSummary)>,
    },
    /// Every replication ended; runs in replication order.
    Done(StrategyResult),
}

/// A replication with some but not all of its strategies ended: the pools of the runs of
/// those that did ([`RunMetrics::into_pooled`]: the servers' counts sparse), kept only to
/// take them out of their strategies' pools if the run is cancelled before the
/// replication ends. The queue starts a replication's tasks before
/// the next one's ([`Queue`]), so about one replication per thread is staged, whatever
/// the number of replications.
struct Staged {
    done: usize,
    runs: Vec<Option<Pooled>>,
}

/// The results of a run as its tasks end, pooled per (replication, strategy).
///
/// Pooling adds integer counts, which is exact and order-independent, and summaries are
/// put in replication order when a strategy is done, so the results do not depend on
/// which thread ran which task, nor in which order the tasks ended.
struct Pools {
    replications: usize,
    servers: usize,
    fit: Fits,
    strategies: Vec<(String, Mutex<Strategy>)>,
    staged: Mutex<HashMap<usize, Staged>>,
    /// Positions of the replications every strategy ran.
    complete: Mutex<Vec<usize>>,
}

impl Pools {
    fn new(labels: Vec<String>, replications: usize, servers: usize, fit: Fits) -> Pools {
        Pools {
            replications,
            servers,
            fit,
            strategies: labels
                .into_iter()
                .map(|label| {
                    let open = Strategy::Open {
                        pooled: None,
                        runs: Vec::new(),
                    };
                    (label, Mutex::new(open))
                })
                .collect(),
            staged: Mutex::default(),
            complete: Mutex::default(),
        }
    }

    /// Pools strategy `k`'s run of the replication at position `pos`. When it was the
    /// strategy's last replication, makes its result and its fits, here, while other
    /// tasks run. Returns whether the replication is now complete (every strategy ran it).
    fn put(&self, pos: usize, k: usize, metrics: RunMetrics) -> bool {
        let (label, strategy) = &self.strategies[k];
        let (summary, run) = metrics.summarize_and_pool();
        {
            let mut st = lock(strategy);
            let Strategy::Open { pooled, runs } = &mut *st else {
                unreachable!("a strategy runs each replication once");
            };
            pooled
                .get_or_insert_with(|| empty_pooled(self.servers))
                .add(&run);
            runs.push((pos, summary));
            if runs.len() == self.replications {
                let (pooled, mut runs) = (pooled.take(), std::mem::take(runs));
                runs.sort_unstable_by_key(|&(pos, _)| pos);
                let done = StrategyResult {
                    label: label.clone(),
                    runs: runs.into_iter().map(|(_, summary)| summary).collect(),
                    pooled: pooled.unwrap_or_else(|| empty_pooled(self.servers)),
                    unstable: None,
                    fits: FitCache::default(),
                };
                if self.fit == Fits::WhenDone {
                    for (source, p) in done.fit_sources() {
                        done.fit(source, p);
                    }
                }
                *st = Strategy::Done(done);
            }
        }
        let n = self.strategies.len();
        let mut staged = lock(&self.staged);
        let entry = staged.entry(pos).or_insert_with(|| Staged {
            done: 0,
            runs: (0..n).map(|_| None).collect(),
        });
        entry.done += 1;
        if entry.done < n {
            entry.runs[k] = Some(run);
            return false;
        }
        staged.remove(&pos);
        drop(staged);
        lock(&self.complete).push(pos);
        true
    }

    /// Every strategy's result, over the complete replications only: a replication that
    /// some strategy did not run (the run was cancelled) is taken out of the pools of the
    /// strategies that did, so that every strategy's figures come from the same
    /// replications (paired comparisons need them) and equal those of a run of just
    /// those replications. Returns the complete replications' positions, ascending, and
    /// the results.
    fn finish(self) -> (Vec<usize>, Vec<StrategyResult>) {
        let mut complete = self
            .complete
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        complete.sort_unstable();
        let staged = self.staged.into_inner().unwrap_or_else(|e| e.into_inner());
        let results = self
            .strategies
            .into_iter()
            .enumerate()
            .map(|(k, (label, st))| {
                let partial: Vec<(usize, &Pooled)> = staged
                    .iter()
                    .filter_map(|(&pos, st)| Some((pos, st.runs[k].as_ref()?)))
                    .collect();
                let (mut pooled, mut runs) =
                    match st.into_inner().unwrap_or_else(|e| e.into_inner()) {
                        Strategy::Done(done) if partial.is_empty() => return done,
                        // Every replication ran, in order: position = index.
                        Strategy::Done(done) => (
                            Some(done.pooled),
                            done.runs.into_iter().enumerate().collect(),
                        ),
                        Strategy::Open { pooled, runs } => (pooled, runs),
                    };
                for &(_, run) in &partial {
                    pooled.as_mut().expect("pooled before staged").subtract(run);
                }
                let undone: Vec<usize> = partial.iter().map(|&(pos, _)| pos).collect();
                runs.retain(|(pos, _)| !undone.contains(pos));
                runs.sort_unstable_by_key(|&(pos, _)| pos);
                StrategyResult {
                    label,
                    runs: runs.into_iter().map(|(_, summary)| summary).collect(),
                    pooled: pooled.unwrap_or_else(|| empty_pooled(self.servers)),
                    unstable: None,
                    // A strategy undone makes its fits again, from what is left.
                    fits: FitCache::default(),
                }
            })
            .collect();
        (complete, results)
    }
}

/// Locks `m`, whether or not another thread panicked holding it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The order in which a run's (replication, strategy) tasks start: replications in
/// order, and within a replication its strategies longest first, by the mean time each
/// strategy's simulations took so far in this run (those not timed yet first, in
/// scenario order). A replication's tasks all start before the next replication's, so
/// at most about one replication per thread is staged ([`Staged`]), whatever the
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
        let mut st = lock(&self.state);
        if st.pending.is_empty() {
            if st.opened == self.replications {
                return None;
            }
            st.pos = st.opened;
            st.opened += 1;
            st.pending = (0..self.strategies).collect();
        }
        // Longest mean first; not timed yet counts as longest; ties in scenario order
        // (`pending` is in scenario order, and only a strictly longer one displaces the
        // first found).
        let mean = |k: usize| match st.took[k] {
            (_, 0) => f64::INFINITY,
            (total, n) => total.as_secs_f64() / f64::from(n),
        };
        let mut longest = *st.pending.first()?;
        for &k in &st.pending {
            if mean(k) > mean(longest) {
                longest = k;
            }
        }
        st.pending.retain(|&k| k != longest);
        Some((st.pos, longest))
    }

    /// Records that a simulation of strategy `k` took `time`.
    fn took(&self, k: usize, time: Duration) {
        let mut st = lock(&self.state);
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
    run_pooled(scenario, indices, opts, Fits::WhenDone, None)
}

/// [`run`], and `idle` on the run's threads at its end: the first thread that finds no
/// simulation left to start calls it once, while the others end theirs, unless the run
/// was cancelled. The last simulations of a run end at different times (each thread's
/// last one), so a thread would otherwise wait for the others; work that does not need
/// the results (`lbsim run` writes the time series, which it recorded during the run)
/// fills that wait instead of following the run.
///
/// When `idle` is called, every simulation has started but not all have ended: it must
/// not expect them all to have (e.g. with one replication, the last ones to end are
/// replication 0's). The run returns once `idle` has returned.
pub fn run_with_idle(
    scenario: &Scenario,
    opts: &RunOptions,
    idle: &(dyn Fn() + Sync),
) -> Result<RunResults, RunError> {
    let n = opts.replications.unwrap_or(scenario.replications);
    let indices: Vec<u64> = (0..u64::from(n)).collect();
    run_pooled(scenario, &indices, opts, Fits::WhenDone, Some(idle))
}

/// [`run_replications`] for a batch whose results are combined with others' before any
/// report reads them (a shard, a step of `--precision`): the strategies' pooled quantile
/// fits are not made when they end, as the combined results make their own.
pub fn run_batch(
    scenario: &Scenario,
    indices: &[u64],
    opts: &RunOptions,
) -> Result<RunResults, RunError> {
    run_pooled(scenario, indices, opts, Fits::OnRead, None)
}

/// When a strategy's pooled quantile fits are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fits {
    /// As soon as its last replication ended, while other strategies still run.
    WhenDone,
    /// At their first read.
    OnRead,
}

fn run_pooled(
    scenario: &Scenario,
    indices: &[u64],
    opts: &RunOptions,
    fit: Fits,
    idle: Option<&(dyn Fn() + Sync)>,
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
    // in parallel too and no thread idles at the end. Each task is pooled into its
    // strategy as it ends, and a strategy whose last replication ended is merged and
    // fitted at once, on the thread that ran that task, while the others still simulate
    // ([`Pools`]): at the end only the last strategy's merge is left. A replication counts
    // once all its strategies ran it (after a cancel the others are taken out again).
    let labels = scenario.strategies.iter().map(|e| e.label()).collect();
    let pools = Pools::new(labels, indices.len(), n_servers, fit);
    let idle_taken = AtomicBool::new(false);
    let work = || {
        let queue = Queue::new(indices.len(), n_strategies);
        // One worker per thread, each taking the next task from the queue until it is
        // empty: a thread that runs out of work takes one simulation, never a batch of
        // them, so the run ends within one (short, see [`Queue`]) simulation on every
        // thread.
        rayon::broadcast(|_| {
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
                if pools.put(pos, k, m)
                    && let Some(p) = &opts.progress
                {
                    p.inc(1);
                }
            }
            // Every simulation has started: the first thread here does the idle work
            // while the others end theirs.
            if let Some(idle) = idle
                && !opts.cancel.is_cancelled()
                && !idle_taken.swap(true, Ordering::Relaxed)
            {
                idle();
            }
        });
    };
    in_pool(opts.threads, work)?;
    let (complete, strategies) = pools.finish();
    let finished: Vec<u64> = complete.into_iter().map(|pos| indices[pos]).collect();
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
                quantile_estimate(&s.pooled.source(source).unwrap(), &s.cdfs(source), p, 1e-9)
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

    /// Strategies `kinds` over 3 servers, and every (replication, strategy) run of
    /// replications 0..`reps`, by [position][strategy].
    fn runs_of(kinds: &[&str], reps: u64) -> (Scenario, Vec<Vec<RunMetrics>>) {
        use crate::testing;
        let rest =
            testing::servers("s", 3, "", &testing::exponential(0.01)) + &testing::kinds(kinds);
        let scenario = testing::scenario("duration = 3\nwarmup = 0.5", 200.0, &rest);
        let runs = (0..reps)
            .map(|rep| {
                (scenario.strategies.iter())
                    .map(|e| {
                        Run::entry(&scenario, e, rep)
                            .simulate()
                            .expect("run")
                            .metrics
                    })
                    .collect()
            })
            .collect();
        (scenario, runs)
    }

    fn assert_same(a: &StrategyResult, b: &StrategyResult) {
        assert_eq!(a.label, b.label);
        assert_eq!(a.pooled, b.pooled, "{}", a.label);
        let values = |s: &StrategyResult| -> Vec<u64> {
            s.runs
                .iter()
                .flat_map(|r| r.values.0.map(f64::to_bits))
                .collect()
        };
        assert_eq!(values(a), values(b), "{}", a.label);
        for m in Metric::ALL {
            let bits = |e: Estimate| [e.mean, e.low, e.high].map(f64::to_bits);
            assert_eq!(
                bits(a.estimate(m)),
                bits(b.estimate(m)),
                "{} {m:?}",
                a.label
            );
        }
    }

    #[test]
    fn pools_give_the_results_of_the_runs_in_any_order_and_fit_a_strategy_when_done() {
        let (scenario, runs) = runs_of(&["round_robin", "random", "least_connections"], 4);
        let labels: Vec<String> = scenario.strategies.iter().map(|e| e.label()).collect();
        let pools = Pools::new(labels.clone(), 4, 3, Fits::WhenDone);
        // Tasks ending out of order: strategy 2 first, replication 3 before 0.
        let mut order: Vec<(usize, usize)> = (0..4)
            .flat_map(|pos| (0..3).map(move |k| (pos, k)))
            .collect();
        order.sort_by_key(|&(pos, k)| ((2 - k), 3 - pos));
        let (mut completed, mut ran) = (0, [0; 3]);
        for &(pos, k) in &order {
            completed += usize::from(pools.put(pos, k, runs[pos][k].clone()));
            ran[k] += 1;
            let done = matches!(*lock(&pools.strategies[k].1), Strategy::Done(_));
            assert_eq!(done, ran[k] == 4, "{pos} {k}");
        }
        assert_eq!(completed, 4);
        // A batch (shard, `--precision` step) leaves its fits to whoever reads them.
        let batch = Pools::new(labels[..1].to_vec(), 4, 3, Fits::OnRead);
        for (pos, rep) in runs.iter().enumerate() {
            batch.put(pos, 0, rep[0].clone());
        }
        assert!(batch.finish().1[0].fits.0.lock().expect("lock").is_empty());
        let (complete, results) = pools.finish();
        assert_eq!(complete, [0, 1, 2, 3]);
        for (k, r) in results.iter().enumerate() {
            // Fitted when it was done, kept.
            assert!(!r.fits.0.lock().expect("lock").is_empty());
            let alone: Vec<RunMetrics> = runs.iter().map(|rep| rep[k].clone()).collect();
            assert_same(r, &StrategyResult::from_runs(labels[k].clone(), &alone));
        }
    }

    #[test]
    fn a_cancelled_replication_is_taken_out_of_every_strategy_that_ran_it() {
        let (scenario, runs) = runs_of(&["round_robin", "random", "least_connections"], 4);
        let labels: Vec<String> = scenario.strategies.iter().map(|e| e.label()).collect();
        let pools = Pools::new(labels.clone(), 4, 3, Fits::WhenDone);
        // Replications 0 and 2 complete; 3 ran by strategies 0 and 2 (strategy 0 is then
        // done, and fitted); 1 by strategy 0 alone; strategy 1 ran neither.
        for (pos, k) in [
            (0, 0),
            (0, 1),
            (0, 2),
            (2, 2),
            (2, 1),
            (2, 0),
            (3, 0),
            (3, 2),
            (1, 0),
        ] {
            pools.put(pos, k, runs[pos][k].clone());
        }
        assert!(matches!(*lock(&pools.strategies[0].1), Strategy::Done(_)));
        let (complete, results) = pools.finish();
        assert_eq!(complete, [0, 2]);
        for (k, r) in results.iter().enumerate() {
            let kept: Vec<RunMetrics> = [0, 2].map(|pos| runs[pos][k].clone()).to_vec();
            assert_same(r, &StrategyResult::from_runs(labels[k].clone(), &kept));
        }
    }

    #[test]
    fn a_run_cancelled_before_any_task_ended_has_empty_pools() {
        let pools = Pools::new(vec!["a".into(), "b".into()], 3, 2, Fits::OnRead);
        let (complete, results) = pools.finish();
        assert!(complete.is_empty());
        for r in results {
            assert!(r.runs.is_empty() && r.pooled.is_empty());
            assert_eq!(r.pooled.len(), SOURCE_SERVERS + 2);
        }
    }

    /// A run of `kinds` over 3 servers recording replication 0, its results, and what the
    /// idle work saw each time it was called: (simulations ended, traces recorded).
    fn run_idle(
        kinds: &[&str],
        replications: u32,
        threads: usize,
        cancel: bool,
    ) -> (RunResults, Vec<(usize, usize)>) {
        use crate::testing;
        let rest =
            testing::servers("s", 3, "", &testing::exponential(0.01)) + &testing::kinds(kinds);
        let scenario = testing::scenario("duration = 3\nwarmup = 0.5", 200.0, &rest);
        let sink = TraceSink::new(crate::report::timeseries::trace_spec(&scenario, false));
        let opts = RunOptions {
            replications: Some(replications),
            threads: Some(threads),
            trace: Some(sink.clone()),
            progress: Some(indicatif::ProgressBar::hidden()),
            ..Default::default()
        };
        if cancel {
            opts.cancel.cancel();
        }
        let seen = Mutex::new(Vec::new());
        let idle = || {
            let ended = opts.progress.as_ref().map_or(0, |p| p.position() as usize);
            let traces = sink.take().into_iter().flatten().count();
            lock(&seen).push((ended, traces));
        };
        let results = run_with_idle(&scenario, &opts, &idle).expect("run");
        (results, seen.into_inner().expect("lock"))
    }

    #[test]
    fn idle_work_is_done_once_at_the_end_of_the_run_and_changes_no_result() {
        let kinds = ["round_robin", "random", "least_connections"];
        let (alone, seen) = run_idle(&kinds, 4, 1, false);
        // One thread: after every simulation ended.
        assert_eq!(seen, [(4, 3)]);
        for threads in [2, 3] {
            let (results, seen) = run_idle(&kinds, 4, threads, false);
            // Once, after every simulation started: the other threads' last ones (one
            // each) may still run, each holding back at most one replication (which
            // counts once all its strategies ended).
            assert_eq!(seen.len(), 1, "{threads} threads: {seen:?}");
            assert!(seen[0].0 >= 4 + 1 - threads, "{threads} threads: {seen:?}");
            assert_eq!(results.finished, [0, 1, 2, 3]);
            for (a, b) in results.strategies.iter().zip(&alone.strategies) {
                assert_same(a, b);
            }
        }
    }

    #[test]
    fn a_cancelled_run_does_no_idle_work() {
        // Cancelled before it started (its threads stop at their first task), or with
        // no task at all (its threads find none left to start at once).
        for replications in [3, 0] {
            let (results, seen) = run_idle(&["round_robin", "random"], replications, 2, true);
            assert!(results.finished.is_empty());
            assert!(seen.is_empty(), "{replications} replications: {seen:?}");
        }
    }

    #[test]
    fn a_sink_gives_its_traces_once_every_strategy_has_one() {
        let (scenario, _) = runs_of(&["round_robin", "random"], 0);
        let spec = crate::report::timeseries::trace_spec(&scenario, false);
        let trace = |k: usize| {
            let entry = &scenario.strategies[k];
            let run = Run::entry(&scenario, entry, 0).trace(Some(&spec));
            run.simulate().expect("run").trace.expect("traced")
        };
        let sink = TraceSink::new(spec.clone());
        assert!(sink.take_complete(2).is_none());
        sink.put(1, trace(1));
        // Strategy 0 has none yet: the sink keeps what it has.
        assert!(sink.take_complete(2).is_none());
        sink.put(0, trace(0));
        let traces = sink.take_complete(2).expect("complete");
        assert!(traces.iter().all(Option::is_some) && traces.len() == 2);
        assert!(sink.take().is_empty(), "taken");
    }

    #[test]
    fn an_empty_queue_gives_nothing() {
        assert_eq!(Queue::new(0, 3).next(), None);
        assert_eq!(Queue::new(3, 0).next(), None);
    }
}
