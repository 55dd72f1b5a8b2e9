//! Parallel efficiency of Monte Carlo replications: the same 8 replications of the default
//! scenario with 1 and with 2 worker threads. Efficiency = t(1) / (2 · t(2)).
//!
//! Beside them, the serial tail: writing the reports of those 8 replications (every file
//! `lbsim run` writes, into a temporary folder) on 1 thread, what the run spends after its
//! last replication; its share of t(1) bounds the 2-thread speed-up (Amdahl).
//!
//! And the two together as `lbsim run` does them, on 1 and 2 threads (one pool): the time
//! series written by the first thread out of simulations while the others end their last
//! ones ([`run_with_idle`]), then the other reports (all but the process start and exit).
//!
//! `cargo bench --bench parallel`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use criterion::{Criterion, criterion_group};
use lbsim::report::output::Staging;
use lbsim::report::timeseries::{Timeseries, trace_spec};
use lbsim::report::{
    ImageFormat, ReportInput, standard_reports_with, write_reports, write_reports_into,
};
use lbsim::runner::{RunOptions, TraceSink, in_pool, run, run_with_idle};
use lbsim::scenario::Scenario;

// What the binary does first (`src/heap.rs`): each run reuses the pages the run before freed.
#[path = "../src/heap.rs"]
mod heap;

fn parallel(c: &mut Criterion) {
    let s = Scenario::load(Path::new("scenarios/heterogeneous.toml")).expect("shipped scenario");
    let mut group = c.benchmark_group("replications");
    group.sample_size(10);
    for threads in [1, 2] {
        let opts = RunOptions {
            replications: Some(8),
            threads: Some(threads),
            ..Default::default()
        };
        group.bench_function(format!("8 replications, {threads} thread(s)"), |b| {
            b.iter(|| black_box(run(&s, &opts).expect("run")))
        });
    }
    // The reports of one run, written again and again: the fits the reports share are
    // made afresh each time, as the results are cloned (a clone starts without them).
    let sink = TraceSink::new(trace_spec(&s, false));
    let opts = RunOptions {
        replications: Some(8),
        trace: Some(sink.clone()),
        ..Default::default()
    };
    let results = run(&s, &opts).expect("run");
    let traces = sink.take();
    let dir = tempfile::tempdir().expect("temporary folder");
    group.bench_function("reports of 8 replications, 1 thread", |b| {
        b.iter(|| {
            let results = results.clone();
            let input = ReportInput {
                scenario: &s,
                results: &results,
                command: "lbsim run scenarios/heterogeneous.toml",
                format: ImageFormat::Svg,
                sweep: None,
            };
            let reports = standard_reports_with(Timeseries::recorded(traces.clone()));
            in_pool(Some(1), || write_reports(dir.path(), &input, &reports))
                .expect("pool")
                .expect("reports")
        })
    });
    for threads in [1, 2] {
        group.bench_function(
            format!("8 replications and their reports, {threads} thread(s)"),
            |b| b.iter(|| in_pool(Some(threads), || run_and_report(&s, dir.path())).expect("pool")),
        );
    }
    group.finish();
}

/// 8 replications of `s` and their reports into `out`, as `lbsim run` makes them.
fn run_and_report(s: &Scenario, out: &Path) -> Vec<PathBuf> {
    let sink = TraceSink::new(trace_spec(s, false));
    let opts = RunOptions {
        replications: Some(8),
        trace: Some(sink.clone()),
        ..Default::default()
    };
    let staging = Staging::new(out).expect("staging folder");
    let early = Mutex::new(None);
    let write_timeseries = || {
        if let Some(traces) = sink.take_complete(s.strategies.len()) {
            let files =
                Timeseries::recorded(traces).write_files(&staging.folder(), s, ImageFormat::Svg);
            *early.lock().expect("lock") = Some(files);
        }
    };
    let results = run_with_idle(s, &opts, &write_timeseries).expect("run");
    let timeseries = match early.into_inner().expect("lock") {
        Some(files) => Timeseries::written(files),
        None => Timeseries::recorded(sink.take()),
    };
    let input = ReportInput {
        scenario: s,
        results: &results,
        command: "lbsim run scenarios/heterogeneous.toml",
        format: ImageFormat::Svg,
        sweep: None,
    };
    write_reports_into(staging, &input, &standard_reports_with(timeseries)).expect("reports")
}

criterion_group!(benches, parallel);
// `criterion_main!(benches)`, after what the binary does first: each run reuses the pages
// the run before freed (`src/heap.rs`).
fn main() {
    heap::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
