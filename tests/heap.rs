//! `src/heap.rs` (the binary's first step): after it, a run's buffers are faulted in by the
//! first run and reused by every run after it. glibc's thresholds are the process's, and
//! any test that frees a large block raises them, so this file holds one test, in a process
//! of its own; the runs are on one thread, whose page faults are counted alone. Linux and
//! glibc only: elsewhere `keep_freed_memory` does nothing.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

#[path = "../src/heap.rs"]
mod heap;

use std::hint::black_box;

/// This thread's minor page faults so far (`/proc/thread-self/stat`, field 10).
fn faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("procfs");
    let after_name = &stat[stat.rfind(')').expect("stat has a name") + 1..];
    after_name
        .split_whitespace()
        .nth(7)
        .expect("minflt")
        .parse()
        .expect("a count")
}

/// One "run": eight 300 KiB buffers (each past glibc's initial mapping threshold, 2.4 MB
/// in all: more than twice the largest), written through and freed. Returns the page
/// faults it made on this thread.
fn run() -> u64 {
    let before = faults();
    let buffers: Vec<Vec<u8>> = (0..8).map(|i| vec![i as u8 + 1; 300 << 10]).collect();
    black_box(&buffers);
    drop(buffers);
    faults() - before
}

#[test]
fn runs_reuse_the_pages_of_the_run_before() {
    // A threshold set from outside would decide instead of the code under test.
    for var in [
        "GLIBC_TUNABLES",
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
    ] {
        if std::env::var_os(var).is_some() {
            eprintln!("{var} is set: glibc's thresholds are the user's, nothing to check");
            return;
        }
    }
    heap::keep_freed_memory();
    let pages = 8 * (300 << 10) / 4096;
    let first = run();
    let later: Vec<u64> = (0..6).map(|_| run()).collect();
    println!("page faults: first run {first}, later runs {later:?} ({pages} pages a run)");
    // Counted in faults, not pages: where transparent huge pages back the heap, a fault
    // brings in 2 MiB.
    assert!(first > 0, "the first run faults its buffers in");
    let most = *later.iter().max().expect("runs");
    assert!(
        most * 10 < first,
        "a later run faulted {most} times, the first {first}: its pages were given back"
    );
}
