//! How late the machine wakes a sleeping thread during a replay, measured apart from the
//! backends: a thread that sleeps beside them, as an emulated backend's worker sleeps out
//! its service, and records by how much each sleep overran.
//!
//! Why: on a machine whose cores are taken by other work, every thread that sleeps wakes
//! late, and an emulated backend's service *is* a sleep, so its calls are served late too
//! — not because the backend differs from the scenario, but because the machine did not
//! give it a core. Measured on `live-smoke` at time scale 2 beside two `yes > /dev/null`
//! loops on 2 cores: the backends' services overran by a mean of 150–1,600 µs (4–40% of
//! the declared 4 and 8 ms) with a median of 30 µs, and this thread's 4 ms sleeps by a mean
//! of 190–1,080 µs at the same time; at time scales 6 and 8 both were 1–3 ms (the overrun
//! grew with the sleeps, so a larger scale did not help). Without the loops, both stayed
//! near the sleep's own overshoot (~30 µs). A backend's own cost (a slower server, a
//! costlier one) does not make this thread late.
//!
//! The verdict uses it only to *refuse* ([`crate::report::live::Comparison::machine`]): a
//! figure that disagrees with the simulation, but agrees with a simulation whose backends
//! also take as long as this thread's sleeps overran, is not judged (no verdict, "the
//! machine was too busy"), never passed. Where a backend says how late its own workers
//! woke (`Reply.woke_late_ns`: emulated backends), that comes first: the machine does not
//! wake every thread alike (beside the same two loops, one backend's workers woke 3–6×
//! later than this thread in some replays, and this thread 2–3× later than every backend
//! in others); this thread stands in for backends that do not say.
//!
//! One sleep length per server group (the group's declared mean service time, wall-clock
//! at the replay's scale), in turn: servers of a group sleep alike, and a per-server probe
//! of a large cluster would gather too few sleeps to mean anything.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::metrics::latency_histogram;
use crate::scenario::Scenario;

/// Fewest sleeps of a group for its mean overrun to count ([`MachineProbe::share`]): one
/// stall of a few milliseconds among fewer would move the mean by a large part of a
/// declared service time.
pub const MIN_SLEEPS: u64 = 30;

/// A thread sleeping beside a replay (see the module's documentation); dropped, it stops
/// too (a replay that ends early leaves no thread behind).
#[derive(Debug)]
pub(crate) struct MachineProbe {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<Vec<Histogram<u64>>>>,
}

impl MachineProbe {
    /// Starts sleeping `sleeps[0]`, `sleeps[1]`, … in turn (zero lengths are skipped).
    pub(crate) fn start(sleeps: Vec<Duration>) -> MachineProbe {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stop);
        // A thread that cannot be spawned measures nothing: nothing to refuse on.
        let thread = std::thread::Builder::new()
            .name("lbsim-machine-probe".into())
            .spawn(move || sleep_in_turn(&sleeps, &flag))
            .ok();
        MachineProbe { stop, thread }
    }

    /// The sleep lengths of `scenario`'s server groups, wall-clock at `time_scale`.
    pub(crate) fn sleeps_for(scenario: &Scenario, time_scale: f64) -> Vec<Duration> {
        scenario
            .groups
            .iter()
            .map(|g| {
                let s = g.service.mean() / g.speed * time_scale;
                Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
            })
            .collect()
    }

    /// Stops at once (a sleep under way is cut short and not counted) and returns, per
    /// entry of the sleeps, by how much each sleep overran (wall-clock ns, at least 1);
    /// none when the thread could not be spawned or did not end well (then
    /// [`MachineProbe::share`] is 0 for every group: nothing to refuse on).
    pub(crate) fn stop(mut self) -> Vec<Histogram<u64>> {
        self.signal_stop();
        self.thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default()
    }

    fn signal_stop(&self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
    }

    /// Group `group`'s mean overrun in `overruns` as a fraction of `declared_ns`, or 0
    /// when fewer than [`MIN_SLEEPS`] were measured (nothing to refuse on).
    pub(crate) fn share(overruns: &[Histogram<u64>], group: usize, declared_ns: f64) -> f64 {
        match overruns.get(group) {
            Some(h) if h.len() >= MIN_SLEEPS && declared_ns > 0.0 => h.mean() / declared_ns,
            _ => 0.0,
        }
    }
}

impl Drop for MachineProbe {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.signal_stop();
            let _ = thread.join();
        }
    }
}

/// The probe's loop: sleeps as an emulated backend's worker does (a timed wait on a
/// condition variable, with the timer slack at 1 ns: [`super::server::precise_sleeps`]),
/// and times from the deadline to having the lock back, as the worker's service ends.
fn sleep_in_turn(sleeps: &[Duration], stop: &(Mutex<bool>, Condvar)) -> Vec<Histogram<u64>> {
    super::server::precise_sleeps();
    let mut overruns = vec![latency_histogram(); sleeps.len()];
    let (lock, wake) = stop;
    let mut stopped = lock.lock().unwrap_or_else(PoisonError::into_inner);
    if sleeps.iter().all(Duration::is_zero) {
        while !*stopped {
            stopped = wake.wait(stopped).unwrap_or_else(PoisonError::into_inner);
        }
        return overruns;
    }
    for (i, &sleep) in sleeps.iter().enumerate().cycle() {
        if sleep.is_zero() {
            continue;
        }
        let deadline = Instant::now() + sleep;
        loop {
            if *stopped {
                return overruns;
            }
            let now = Instant::now();
            if now >= deadline {
                let late = now.duration_since(deadline).as_nanos().max(1);
                overruns[i].saturating_record(u64::try_from(late).unwrap_or(u64::MAX));
                break;
            }
            stopped = wake
                .wait_timeout(stopped, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
    unreachable!("the sleeps cycle until stopped")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_each_length_in_turn_and_records_overruns() {
        let probe = MachineProbe::start(vec![
            Duration::from_micros(200),
            Duration::ZERO,
            Duration::from_micros(300),
        ]);
        std::thread::sleep(Duration::from_millis(30));
        let overruns = probe.stop();
        assert_eq!(overruns.len(), 3);
        // Both lengths slept (in turn, so about as often), the zero one never.
        assert!(
            !overruns[0].is_empty() && !overruns[2].is_empty(),
            "{overruns:?}"
        );
        assert!(overruns[0].len().abs_diff(overruns[2].len()) <= 1);
        assert!(overruns[1].is_empty());
        assert!(overruns[0].min() >= 1);
    }

    #[test]
    fn stops_without_anything_to_sleep_or_when_dropped() {
        let probe = MachineProbe::start(vec![Duration::ZERO]);
        assert!(probe.stop()[0].is_empty());
        assert!(MachineProbe::start(Vec::new()).stop().is_empty());
        // Dropped in the middle of a long sleep: the thread ends (the drop joins it).
        drop(MachineProbe::start(vec![Duration::from_secs(3600)]));
    }

    #[test]
    fn a_share_needs_enough_sleeps() {
        let mut h = latency_histogram();
        for _ in 0..MIN_SLEEPS - 1 {
            h.record(400_000).unwrap();
        }
        let few = vec![h.clone()];
        assert_eq!(MachineProbe::share(&few, 0, 4e6), 0.0);
        h.record(400_000).unwrap();
        let enough = vec![h];
        assert!((MachineProbe::share(&enough, 0, 4e6) - 0.1).abs() < 1e-3);
        // Unknown group, nothing declared: no share.
        assert_eq!(MachineProbe::share(&enough, 1, 4e6), 0.0);
        assert_eq!(MachineProbe::share(&enough, 0, 0.0), 0.0);
    }
}
