//! Calibration: what a real backend adds to the simulator's model, measured before a
//! replay so that the simulated side of the comparison includes it.
//!
//! Two constants, both medians over every backend's calibration calls:
//! - **service overhead**: how much longer than `work / speed` a call is in service
//!   (`served_ns` reported by the backend minus the asked service time). On the Rust
//!   backend this is the sleep's overshoot, ~35 µs. It occupies a worker, so the simulator
//!   adds it to every service time ([`Overheads::service`]).
//! - **extra latency**: the rest of the response time, which no server queue sees —
//!   schedule lag, encoding, the reader thread's wake-up, the loopback round trip
//!   both ways and the server's decoding and admission: latency from the scheduled time
//!   minus `queued_ns + served_ns`. The simulator adds it to every response time
//!   ([`Overheads::extra_latency`]). Both are passed to the engine with the run
//!   ([`Calibration::overheads`]), never stored on the scenario.
//!
//! Calls go through the same pool and the same wait-until-due path as the replay, one at
//! a time on an idle backend (so nothing queues), with a service time close to the
//! scenario's. Pings (`ping` in the IDL) are also timed per backend, for the report.
//! Medians, not means: a calibration call that a descheduled thread delays by a
//! millisecond would otherwise move the constant by tens of microseconds.

use std::time::{Duration, Instant};

use super::client::{CallOutcome, ClientConfig, ClientError, Connection};
use super::driver::{LiveError, LiveOptions, wait_until};
use super::pool::{Job, Pool};
use crate::scenario::Scenario;
use crate::sim::Overheads;

/// Calibration of one backend (wall-clock nanoseconds).
#[derive(Clone, Debug, PartialEq)]
pub struct BackendCalibration {
    /// Scenario server name.
    pub server: String,
    /// Median ping round trip.
    pub ping_rtt_ns: f64,
    /// Median of latency − (queued + served) over calibration calls.
    pub extra_latency_ns: f64,
    /// Median of served − asked service time.
    pub service_overhead_ns: f64,
    /// Service time asked of each calibration call.
    pub probe_ns: f64,
}

/// What the calibration measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calibration {
    /// Per backend, in scenario server order.
    pub backends: Vec<BackendCalibration>,
    /// Median over all calls of the extra latency (wall-clock ns).
    pub extra_latency_ns: f64,
    /// Median over all calls of the service overhead (wall-clock ns).
    pub service_overhead_ns: f64,
}

impl Calibration {
    /// The calibrated overheads for the simulator, in scenario units (wall-clock divided
    /// by `time_scale`).
    pub fn overheads(&self, time_scale: f64) -> Overheads {
        Overheads {
            service: self.service_overhead_ns * 1e-9 / time_scale,
            extra_latency: self.extra_latency_ns * 1e-9 / time_scale,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Measures every backend of the pool with `opts.calibration_calls` calls and as many pings.
pub(crate) fn calibrate(
    scenario: &Scenario,
    pool: &mut Pool,
    cfg: &ClientConfig,
    opts: &LiveOptions,
) -> Result<Calibration, LiveError> {
    let servers = scenario.servers();
    let calls = opts.calibration_calls;
    let mut out = Calibration::default();
    if calls == 0 {
        return Ok(out);
    }
    super::server::precise_sleeps();
    let (mut all_extra, mut all_over) = (Vec::new(), Vec::new());
    for (i, info) in servers.iter().enumerate() {
        let addr = pool.addrs()[i];
        let unreachable = |source: ClientError| LiveError::Unreachable {
            addr,
            server: info.name.clone(),
            source,
        };
        let mut conn = Connection::connect(addr, cfg).map_err(unreachable)?;
        let mut rtts = Vec::with_capacity(calls);
        for _ in 0..calls {
            rtts.push(conn.ping().map_err(unreachable)?.rtt.as_nanos() as f64);
        }
        drop(conn);
        // A service time like the scenario's (the overshoot of a sleep barely depends on
        // its length past a few µs), capped so calibration stays short.
        let probe_ns = (info.service.mean() * 1e9 * opts.time_scale).clamp(100e3, 2e6);
        let (mut extra, mut over) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
        for k in 0..calls {
            let due = Instant::now() + Duration::from_micros(300);
            wait_until(pool, due, opts.spin, None, |_, _| {});
            pool.send(Job {
                id: k as u64,
                backend: i,
                scheduled: due,
                work_ns: (probe_ns * info.speed).round() as i64,
                key: None,
                tag: 0,
            });
            let done = pool
                .recv_timeout(opts.io_timeout + Duration::from_secs(1))
                .ok_or_else(|| {
                    unreachable(ClientError::Timeout {
                        addr,
                        timeout: opts.io_timeout,
                    })
                })?;
            match done.result {
                Ok(CallOutcome::Served {
                    queued_ns,
                    served_ns,
                    ..
                }) => {
                    let latency = done.finished.saturating_duration_since(due).as_nanos() as f64;
                    extra.push(latency - (queued_ns + served_ns) as f64);
                    over.push(served_ns as f64 - probe_ns);
                }
                // An idle backend with a full queue: queue_capacity 0 and a straggler.
                Ok(CallOutcome::Rejected { .. }) => {}
                Err(e) => return Err(unreachable(e)),
            }
        }
        all_extra.extend_from_slice(&extra);
        all_over.extend_from_slice(&over);
        out.backends.push(BackendCalibration {
            server: info.name.clone(),
            ping_rtt_ns: median(rtts),
            extra_latency_ns: median(extra),
            service_overhead_ns: median(over),
            probe_ns,
        });
    }
    out.extra_latency_ns = median(all_extra).max(0.0);
    out.service_overhead_ns = median(all_over).max(0.0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
