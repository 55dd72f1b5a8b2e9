//! Faults injected into a running backend, as the simulator's servers undergo them
//! (`[[faults]]`): crash and recovery, slow-down, fail-fast errors, stop-the-world
//! pauses, cold starts, network delay and unreachability.
//!
//! The control is in-process only: a [`FaultControl`] is taken from the
//! [`super::ServerHandle`] by whoever started the server (the live driver, which starts
//! the scenario's servers itself when it replays faults), so no client on the network can
//! crash, slow or pause a backend, and each change takes effect at the instant the driver
//! applies it, on the driver's own clock (no message in between).
//!
//! Each fault follows the simulated server's rule (`src/sim/server.rs`):
//! - **crash**: every open connection is closed at once (clients see end of stream or a
//!   reset), the calls in service or waiting are abandoned (they answer nothing and free
//!   their workers), and until [`FaultControl::recover`] each new connection is closed as
//!   soon as it is accepted: a crashed server answers nothing.
//! - **slow**: a call *starting* service while the factor is set takes `factor` times its
//!   service (the simulator sets the speed a service starts with).
//! - **error**: a `fraction` of calls arriving meanwhile get an error (or, with
//!   `rejected`, the `Rejected` exception, a "429") after `latency`, without a worker.
//!   Which calls: the `n`-th call errs when `frac(n × φ) < fraction` (φ the golden
//!   ratio), an equidistributed sequence, so the fraction holds over any stretch of calls
//!   without a random stream.
//! - **pause**: for `length`, no work progresses: calls in service end `length` later
//!   (less what overlaps an earlier pause), and calls starting meanwhile start their
//!   service when it ends, holding their worker through it.
//! - **cold**: from [`FaultControl::cold`] the server's speed is `fraction` of its own,
//!   rising linearly to it over `warmup`; a call runs at the speed of the instant its
//!   service starts (the simulator's `Warmup`).
//! - **delay**: each answer is held back by the delay after the service ended, its worker
//!   already free (the delay is on the wire, not in the server); an error answer too.
//! - **unreachable**: `ping` fails at once (a health check sees the server gone), and the
//!   driver sets an error fault answering every call after the connect timeout, as the
//!   simulator models an unreachable server.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How a server in an `error` fault answers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorMode {
    /// Fraction of calls answered with an error, in `[0, 1]`.
    pub fraction: f64,
    /// Time until the error answer.
    pub latency: Duration,
    /// Answer `Rejected` (a refusal) rather than an application error.
    pub rejected: bool,
}

/// Pauses so far: until when work is stopped, and the total by which calls in service
/// have been pushed back.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Pauses {
    pub until: Option<Instant>,
    pub pushed: Duration,
}

/// A server's fault state, shared by its connection threads.
#[derive(Debug)]
pub(super) struct FaultState {
    crashed: AtomicBool,
    /// Slow-down factor (an `f64`'s bits), 1 without a slow fault.
    slow: AtomicU64,
    error: Mutex<Option<ErrorMode>>,
    /// Calls offered to the error fault so far (for which ones err).
    offered: AtomicU64,
    pauses: Mutex<Pauses>,
    /// Answers are held back this long (ns), 0 without a delay fault.
    delay: AtomicU64,
    /// Pings fail: the server cannot be reached by health checks.
    unreachable: AtomicBool,
    /// A cold start under way: since when, over how long, from which speed fraction.
    warm: Mutex<Option<(Instant, Duration, f64)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code panics while holding these locks.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for FaultState {
    fn default() -> Self {
        FaultState {
            crashed: AtomicBool::new(false),
            slow: AtomicU64::new(1f64.to_bits()),
            error: Mutex::new(None),
            offered: AtomicU64::new(0),
            pauses: Mutex::new(Pauses::default()),
            delay: AtomicU64::new(0),
            unreachable: AtomicBool::new(false),
            warm: Mutex::new(None),
        }
    }
}

/// φ − 1: the equidistributed sequence `frac(n × φ)` picks which calls err.
const GOLDEN: f64 = 0.618_033_988_749_894_9;

impl FaultState {
    pub(super) fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    pub(super) fn set_crashed(&self, crashed: bool) {
        self.crashed.store(crashed, Ordering::SeqCst);
    }

    /// The slow-down factor now.
    pub(super) fn slow(&self) -> f64 {
        f64::from_bits(self.slow.load(Ordering::Relaxed))
    }

    pub(super) fn set_slow(&self, factor: f64) {
        self.slow.store(factor.to_bits(), Ordering::Relaxed);
    }

    pub(super) fn set_error(&self, mode: Option<ErrorMode>) {
        *lock(&self.error) = mode;
    }

    /// Whether the call arriving now gets an error answer, and how.
    pub(super) fn error_for_next(&self) -> Option<ErrorMode> {
        let mode = (*lock(&self.error))?;
        let n = self.offered.fetch_add(1, Ordering::Relaxed);
        ((n as f64 * GOLDEN).fract() < mode.fraction).then_some(mode)
    }

    /// Stops work for `length` from `now`.
    pub(super) fn pause(&self, now: Instant, length: Duration) {
        let mut p = lock(&self.pauses);
        let until = now + length;
        let from = p.until.map_or(now, |u| u.max(now));
        p.pushed += until.saturating_duration_since(from);
        p.until = Some(p.until.map_or(until, |u| u.max(until)));
    }

    pub(super) fn pauses(&self) -> Pauses {
        *lock(&self.pauses)
    }

    /// How long answers are held back now.
    pub(super) fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay.load(Ordering::Relaxed))
    }

    pub(super) fn unreachable(&self) -> bool {
        self.unreachable.load(Ordering::SeqCst)
    }

    /// The speed factor of a service starting at `now`: `fraction` at the cold start, 1
    /// once warm, linear between (the simulator's `Warmup::factor`).
    pub(super) fn warm_factor(&self, now: Instant) -> f64 {
        let Some((from, warmup, fraction)) = *lock(&self.warm) else {
            return 1.0;
        };
        let done = now.saturating_duration_since(from);
        if done >= warmup {
            return 1.0;
        }
        fraction + (1.0 - fraction) * done.as_secs_f64() / warmup.as_secs_f64()
    }
}

/// Applies faults to one running backend; taken from [`super::ServerHandle::faults`].
#[derive(Clone, Debug)]
pub struct FaultControl(pub(super) std::sync::Arc<super::Shared>);

impl FaultControl {
    /// The server crashes: connections close, work in progress is lost, new connections
    /// are closed on accept until [`FaultControl::recover`].
    pub fn crash(&self) {
        self.0.crash();
    }

    /// The server comes back, empty.
    pub fn recover(&self) {
        self.0.faults.set_crashed(false);
    }

    /// Services starting from now take `factor` times longer (1 ends a slow-down).
    pub fn set_slow(&self, factor: f64) {
        let factor = if factor.is_finite() && factor > 0.0 {
            factor
        } else {
            1.0
        };
        self.0.faults.set_slow(factor);
    }

    /// Calls arriving from now are answered as `mode` says (`None` ends the fault).
    pub fn set_error(&self, mode: Option<ErrorMode>) {
        self.0.faults.set_error(mode);
    }

    /// Stops all work for `length` from now.
    pub fn pause(&self, length: Duration) {
        self.0.faults.pause(Instant::now(), length);
    }

    /// The server starts cold now: its speed is `fraction` of its own, back to it
    /// linearly over `warmup` (a zero `warmup` or a `fraction` outside `(0, 1]` ends a
    /// cold start).
    pub fn cold(&self, warmup: Duration, fraction: f64) {
        let warm = (!warmup.is_zero() && fraction > 0.0 && fraction <= 1.0)
            .then(|| (Instant::now(), warmup, fraction));
        *lock(&self.0.faults.warm) = warm;
    }

    /// Answers (served or errors) from now are held back by `delay` after they are ready
    /// (zero ends a delay fault).
    pub fn set_delay(&self, delay: Duration) {
        let ns = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.0.faults.delay.store(ns, Ordering::Relaxed);
    }

    /// Health checks (`ping`) fail while `unreachable`; calls are answered as the error
    /// fault set beside it says ([`FaultControl::set_error`]).
    pub fn set_unreachable(&self, unreachable: bool) {
        self.0
            .faults
            .unreachable
            .store(unreachable, Ordering::SeqCst);
    }

    /// Whether the server is crashed now.
    pub fn is_crashed(&self) -> bool {
        self.0.faults.crashed()
    }
}
