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
use crate::sim::{simulate, simulate_cancellable};
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
    pub cancel: Option<Arc<AtomicBool>>,
    /// Progress bar, advanced once per finished replication.
    pub progress: Option<indicatif::ProgressBar>,
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
    let work = || {
        indices
            .par_iter()
            .map(|&rep| {
                if opts
                    .cancel
                    .as_ref()
                    .is_some_and(|c| c.load(Ordering::Relaxed))
                {
                    return None;
                }
                let mut summaries = Vec::with_capacity(n_strategies);
                let mut latencies = Vec::with_capacity(n_strategies);
                for entry in &scenario.strategies {
                    // A cancelled replication is dropped whole: every strategy or none.
                    let m = match &opts.cancel {
                        Some(c) => simulate_cancellable(scenario, &entry.spec, rep, seed, c)?,
                        None => simulate(scenario, &entry.spec, rep, seed),
                    };
                    summaries.push(m.summarize());
                    latencies.push(m.latency);
                }
                let mut all = merged.lock().unwrap_or_else(|e| e.into_inner());
                for (k, latency) in latencies.iter().enumerate() {
                    // Same bounds on both sides: addition cannot fail.
                    let _ = all[k].add(latency);
                }
                drop(all);
                if let Some(p) = &opts.progress {
                    p.inc(1);
                }
                Some((rep, summaries))
            })
            .collect::<Vec<_>>()
    };
    let per_rep = match opts.threads {
        Some(threads) => rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|source| RunError::Threads { threads, source })?
            .install(work),
        None => work(),
    };
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
    for (rep, summaries) in per_rep.into_iter().flatten() {
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
