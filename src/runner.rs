//! Monte Carlo: every strategy of a scenario through many independent replications, in
//! parallel with rayon, with results that do not depend on the thread count.
//!
//! A replication runs every strategy on the same request stream (common random numbers).
//! Replications are collected in index order; latency histograms merge by adding counts,
//! which is order-independent, so output is bit-identical for any `--threads`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use rayon::prelude::*;

use crate::metrics::{RunSummary, latency_histogram};
use crate::scenario::Scenario;
use crate::sim::{Trace, TraceSpec, simulate, simulate_traced};
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
    /// Set to stop starting new replications (Ctrl-C); finished ones are kept.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Progress bar, advanced once per finished replication.
    pub progress: Option<indicatif::ProgressBar>,
    /// Where to record replication 0's state over time, while it runs (the time series
    /// of the reports), so that no replication is simulated twice.
    pub trace: Option<TraceSink>,
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
    /// Latencies of all finished replications (nanoseconds), merged.
    pub latency: Histogram<u64>,
}

impl StrategyResult {
    /// The values of metric `index` (see [`crate::metrics::METRICS`]) across replications.
    pub fn metric(&self, index: usize) -> Vec<f64> {
        self.runs.iter().map(|r| r.values[index]).collect()
    }

    /// Mean and CI of metric `index`.
    pub fn estimate(&self, index: usize) -> Estimate {
        estimate(&self.metric(index))
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
}

/// One replication's results while its strategies run.
struct Staged {
    /// Whether one of its strategies has begun.
    started: bool,
    /// Strategies finished.
    done: usize,
    summaries: Vec<Option<RunSummary>>,
    latency: Vec<Option<Histogram<u64>>>,
}

impl Staged {
    fn new(strategies: usize) -> Staged {
        Staged {
            started: false,
            done: 0,
            summaries: vec![None; strategies],
            latency: vec![None; strategies],
        }
    }
}

/// Runs replications `indices` of every strategy in `scenario`.
pub fn run_replications(
    scenario: &Scenario,
    indices: &[u64],
    opts: &RunOptions,
) -> Result<RunResults, RunError> {
    let seed = opts.seed.unwrap_or(scenario.seed);
    let n_strategies = scenario.strategies.len();
    let merged: Mutex<Vec<Histogram<u64>>> =
        Mutex::new((0..n_strategies).map(|_| latency_histogram()).collect());
    // One task per (replication, strategy), so that the last replications' strategies run
    // in parallel too and no thread idles at the end (the serial tail of one task per
    // replication). A replication counts once all its strategies ran; its histograms are
    // merged into `merged` then, and staged until then (memory bounded by the tasks in
    // flight, not by the run).
    let staged: Vec<Mutex<Staged>> = indices
        .iter()
        .map(|_| Mutex::new(Staged::new(n_strategies)))
        .collect();
    let cancelled = || {
        opts.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    };
    let work = || {
        (0..indices.len() * n_strategies)
            .into_par_iter()
            .for_each(|task| {
                let (pos, k) = (task / n_strategies, task % n_strategies);
                let rep = indices[pos];
                {
                    // A replication started before a cancel is finished; others are not begun.
                    let mut st = staged[pos].lock().unwrap_or_else(|e| e.into_inner());
                    if !st.started && cancelled() {
                        return;
                    }
                    st.started = true;
                }
                let entry = &scenario.strategies[k];
                let m = match opts.trace.as_ref().filter(|_| rep == 0) {
                    Some(sink) => {
                        let (m, trace) =
                            simulate_traced(scenario, &entry.spec, rep, seed, sink.spec());
                        sink.put(k, trace);
                        m
                    }
                    None => simulate(scenario, &entry.spec, rep, seed),
                };
                let summary = m.summarize();
                let mut st = staged[pos].lock().unwrap_or_else(|e| e.into_inner());
                st.summaries[k] = Some(summary);
                st.latency[k] = Some(m.latency);
                st.done += 1;
                if st.done == n_strategies {
                    let mut all = merged.lock().unwrap_or_else(|e| e.into_inner());
                    for (acc, h) in all.iter_mut().zip(st.latency.iter_mut()) {
                        if let Some(h) = h.take() {
                            // Same bounds on both sides: addition cannot fail.
                            let _ = acc.add(&h);
                        }
                    }
                    drop(all);
                    if let Some(p) = &opts.progress {
                        p.inc(1);
                    }
                }
            })
    };
    match opts.threads {
        Some(threads) => rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|source| RunError::Threads { threads, source })?
            .install(work),
        None => work(),
    };
    let per_rep = indices.iter().zip(staged).map(|(&rep, st)| {
        let st = st.into_inner().unwrap_or_else(|e| e.into_inner());
        (st.done == n_strategies)
            .then(|| (rep, st.summaries.into_iter().flatten().collect::<Vec<_>>()))
    });
    let latency = merged.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut strategies: Vec<StrategyResult> = scenario
        .strategies
        .iter()
        .zip(latency)
        .map(|(e, latency)| StrategyResult {
            label: e.label(),
            runs: Vec::new(),
            latency,
        })
        .collect();
    let mut finished = Vec::new();
    for (rep, summaries) in per_rep.flatten() {
        finished.push(rep);
        for (s, summary) in strategies.iter_mut().zip(summaries) {
            s.runs.push(summary);
        }
    }
    Ok(RunResults {
        seed,
        requested: indices.len() as u32,
        finished,
        strategies,
    })
}

/// Runs every replication of every strategy in `scenario`.
pub fn run(scenario: &Scenario, opts: &RunOptions) -> Result<RunResults, RunError> {
    let n = opts.replications.unwrap_or(scenario.replications);
    let indices: Vec<u64> = (0..u64::from(n)).collect();
    run_replications(scenario, &indices, opts)
}
