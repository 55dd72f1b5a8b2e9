//! The process's heap: glibc's malloc told, in safe code, to keep the memory a run frees.
//!
//! glibc serves a request of at least its mapping threshold (128 KiB at start) by `mmap`,
//! and gives the top of its heap back to the kernel once more than its trim threshold
//! (128 KiB) is free there. Both rise only when a mapped block larger than the mapping
//! threshold is freed: to that block's size and twice it, up to 32 MiB. A run's largest
//! buffers are 128–640 KiB (its latency histograms, 264 KiB each, the servers'
//! accumulators, the engine's vectors), so in a process that frees nothing larger the
//! thresholds stay about there, and every run maps, faults in, zeroes and gives back
//! megabytes the run before had: `benches/cost.rs`, round robin at 100 servers, 20 runs,
//! made 12,500 page faults and spent a sixth of its CPU time on them (sys 26 of 149 ms).
//!
//! [`keep_freed_memory`] frees one mapped block of [`KEEP`] bytes, never touched, at a
//! process's start: from then on glibc serves every request below 4 MiB from its heaps and
//! keeps up to 8 MiB free at each heap's top, so a run reuses the pages of the run before
//! (1,600 page faults in that process, 0.87× the CPU time; `lbsim run` of short runs at 100
//! servers 0.95×; peak memory up to 4 MB more; nothing changes at 10,000 servers, where a
//! run frees blocks of several MiB and raises the thresholds itself). It is what
//! `mallopt(M_MMAP_THRESHOLD)` and `M_TRIM_THRESHOLD` would do, which the library's
//! `#![forbid(unsafe_code)]` rules out, and what `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…`
//! does from outside. Another allocator (mimalloc, measured: `benches/README.md`) gave the
//! same gain in `benches/cost.rs` but none in whole runs, and with its transparent huge
//! pages (its default) cost some whole runs 1.07–1.27× the CPU time.
//!
//! The binary calls it first thing, and so does every bench (each includes this file), so
//! that they measure what users run; `tests/heap.rs` checks it in a process of its own.
//! It is the binary's, not the library's: a process-wide setting is the program's to make
//! (and a new module in the library reshuffles its codegen units: a trial with this
//! function there ran P2C at 1,000 servers 1.16–1.18× slower, its pick no longer inlined,
//! for no reason of its own). A threshold set by the user (`GLIBC_TUNABLES`,
//! `MALLOC_MMAP_THRESHOLD_`) is kept: glibc then no longer moves it. Elsewhere than glibc
//! it does nothing.

/// The block freed at start, in bytes: the mapping threshold it sets (the trim threshold
/// is twice it). Below glibc's 32 MiB ceiling on the thresholds' rise (a block of 32 MiB,
/// with its header past the ceiling, would raise nothing).
pub const KEEP: usize = 4 << 20;

/// Raises glibc's mapping threshold to [`KEEP`] bytes and its trim threshold to twice that
/// (see the module's doc). Call it once, at the start of a process; it costs one `mmap`
/// and one `munmap`.
pub fn keep_freed_memory() {
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        // Reserved (mapped, as at least the mapping threshold) and freed untouched: no
        // page is faulted in. `black_box` keeps the pair from being optimized away.
        drop(std::hint::black_box(Vec::<u8>::with_capacity(KEEP)));
    }
}
