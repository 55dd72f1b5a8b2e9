//! Parallel efficiency of Monte Carlo replications: the same 8 replications of the default
//! scenario with 1 and with 2 worker threads. Efficiency = t(1) / (2 · t(2)).
//!
//! Beside them, the serial tail: writing the reports of those 8 replications (every file
//! `lbsim run` writes, into a temporary folder) on 1 thread, what the run spends after its
//! last replication; its share of t(1) bounds the 2-thread speed-up (Amdahl).
//!
//! `cargo bench --bench parallel`

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use lbsim::report::timeseries::{Timeseries, trace_spec};
use lbsim::report::{ImageFormat, ReportInput, standard_reports_with, write_reports};
use lbsim::runner::{RunOptions, TraceSink, in_pool, run};
use lbsim::scenario::Scenario;

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
    group.finish();
}

criterion_group!(benches, parallel);
criterion_main!(benches);
