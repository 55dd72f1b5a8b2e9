//! Hedged requests: a second (third, …) copy of a request sent when the first has not
//! answered after a delay; the first answer wins.
//!
//! Follows Dean & Barroso, "The Tail at Scale" (CACM 56(2), 2013: "defer sending a
//! secondary request until the first request has been outstanding for more than the
//! 95th-percentile expected latency") and gRPC's `hedgingPolicy` (gRFC A6:
//! `maxAttempts` counts the original, `hedgingDelay` between copies; a non-fatal failure
//! sends the next copy at once; the first success commits and the other copies are
//! cancelled). Whether the losers are cancelled at the server is an option here, since
//! Thrift has no cancellation on the wire: without it they run to the end and their
//! server time is wasted work.
//!
//! The delay is fixed (gRPC `hedgingDelay`) or a percentile of recent latencies, as Dean &
//! Barroso suggest and Finagle's `BackupRequestFilter` does ([`LatencyWindow`]).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::time::Nanos;

/// `[strategies.policy.hedge]` as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeSpec {
    /// Wait before each further copy: seconds (gRPC `hedgingDelay`), or
    /// `{ percentile = 0.95 }`, a percentile of recent latencies (Dean & Barroso's
    /// suggestion, Finagle's backup requests). Required.
    pub delay: HedgeDelay,
    /// Copies per request, the original included (gRPC `maxAttempts`, 2 to 10). Default 2.
    #[serde(default = "two")]
    pub max_attempts: u32,
    /// Cancel the other copies at their servers when one succeeds (queued copies are
    /// dropped, copies in service stop). Default true, as gRPC does.
    #[serde(default = "yes")]
    pub cancel_losers: bool,
}

/// `hedge.delay`: a number of seconds, or a table for a percentile of recent latencies.
#[derive(Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "hedge.delay: a number of seconds, or a table { percentile = 0.95 } with optional window and refresh (seconds); no other fields"
)]
pub enum HedgeDelay {
    /// A fixed wait (seconds).
    Fixed(f64),
    /// A percentile of recent latencies.
    Percentile(PercentileDelay),
}

// A fixed delay reads as the bare number it was before percentiles existed, so scenario
// fingerprints (which hash this text) stay as they were.
impl std::fmt::Debug for HedgeDelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HedgeDelay::Fixed(v) => v.fmt(f),
            HedgeDelay::Percentile(p) => p.fmt(f),
        }
    }
}

/// `hedge.delay = { percentile, window, refresh }`: the wait before a further copy is the
/// `percentile` of the latencies of the balancer's attempts answered in the last `window`
/// seconds, recomputed every `refresh` seconds — Finagle's `BackupRequestFilter`
/// (a `WindowedPercentileHistogram` of 3 buckets of 10 s, the cut-off refreshed every 3 s;
/// no backup before the first refresh that has latencies).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PercentileDelay {
    /// Which percentile, in (0, 1): e.g. 0.95 (Dean & Barroso's p95; Finagle's
    /// `1 − maxExtraLoad`). Required.
    pub percentile: f64,
    /// Seconds of history the percentile reads (in 3 buckets). Default 30 (Finagle).
    #[serde(default = "thirty")]
    pub window: f64,
    /// Seconds between recomputations of the delay. Default 3 (Finagle).
    #[serde(default = "three")]
    pub refresh: f64,
}

fn thirty() -> f64 {
    30.0
}
fn three() -> f64 {
    3.0
}

fn two() -> u32 {
    2
}
fn yes() -> bool {
    true
}

/// A validated hedging policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hedge {
    /// Delay between copies (a fixed `delay`; 0 under a percentile, which each client
    /// tracks in a [`LatencyWindow`]).
    pub delay: Nanos,
    /// The percentile delay, if the delay is one.
    pub percentile: Option<PercentileDelay>,
    /// Copies per request (at least 2).
    pub max_attempts: u32,
    /// Cancel losers at the server.
    pub cancel_losers: bool,
}

impl Hedge {
    /// Resolves a checked spec.
    pub fn from_spec(s: &HedgeSpec) -> Hedge {
        let (delay, percentile) = match s.delay {
            HedgeDelay::Fixed(d) => (Nanos::from_secs_f64(d), None),
            HedgeDelay::Percentile(p) => (Nanos::ZERO, Some(p)),
        };
        Hedge {
            delay,
            percentile,
            max_attempts: s.max_attempts,
            cancel_losers: s.cancel_losers,
        }
    }
}

/// Buckets of a [`LatencyWindow`] (Finagle's `numBuckets`).
const BUCKETS: usize = 3;

/// One client's recent attempt latencies, for a hedge delay that is a percentile of them:
/// Finagle's `WindowedPercentileHistogram` — the window is `BUCKETS` buckets of
/// `window / 3` each, each an HDR histogram (2 significant digits), so memory is bounded
/// whatever the run length. The delay in force is recomputed at most every `refresh`:
/// at the first hedge armed after each multiple of `refresh` (the simulator has no idle
/// timer); until a recomputation finds latencies, no copy is sent.
#[derive(Clone, Debug)]
pub struct LatencyWindow {
    percentile: f64,
    bucket: u64,
    refresh: u64,
    buckets: [Histogram<u64>; BUCKETS],
    /// Which bucket period (time / bucket length) each bucket holds.
    periods: [u64; BUCKETS],
    /// The delay in force: `None` until a recomputation found latencies.
    delay: Option<Nanos>,
    /// When the delay is next recomputed.
    next_refresh: Nanos,
}

impl LatencyWindow {
    /// An empty window for `spec`.
    pub fn new(spec: &PercentileDelay) -> LatencyWindow {
        let histogram = || {
            // 1 ns to about 4.6 days, to 2 significant digits.
            Histogram::new_with_bounds(1, 1 << 52, 2).expect("valid histogram bounds")
        };
        let bucket = Nanos::from_secs_f64(spec.window / BUCKETS as f64).0.max(1);
        let refresh = Nanos::from_secs_f64(spec.refresh).0.max(1);
        LatencyWindow {
            percentile: spec.percentile,
            bucket,
            refresh,
            buckets: [histogram(), histogram(), histogram()],
            periods: [u64::MAX; BUCKETS],
            delay: None,
            next_refresh: Nanos(refresh),
        }
    }

    /// An attempt answered at `now` after `latency`.
    pub fn record(&mut self, now: Nanos, latency: Nanos) {
        let period = now.0 / self.bucket;
        let k = (period % BUCKETS as u64) as usize;
        if self.periods[k] != period {
            self.buckets[k].reset();
            self.periods[k] = period;
        }
        self.buckets[k].saturating_record(latency.0.max(1));
    }

    /// The hedge delay in force at `now` (`None`: send no copy yet).
    pub fn delay(&mut self, now: Nanos) -> Option<Nanos> {
        if now >= self.next_refresh {
            self.next_refresh = Nanos((now.0 / self.refresh + 1) * self.refresh);
            let period = now.0 / self.bucket;
            let mut merged: Option<Histogram<u64>> = None;
            for (h, &p) in self.buckets.iter().zip(&self.periods) {
                // Only buckets of the last `BUCKETS` periods, the current one included.
                if p != u64::MAX && p <= period && period - p < BUCKETS as u64 && !h.is_empty() {
                    match &mut merged {
                        None => merged = Some(h.clone()),
                        Some(m) => m.add(h).expect("same bounds"),
                    }
                }
            }
            if let Some(m) = merged {
                self.delay = Some(Nanos(m.value_at_quantile(self.percentile)));
            }
        }
        self.delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_is_the_windowed_percentile_refreshed_on_schedule() {
        let spec = PercentileDelay {
            percentile: 0.9,
            window: 3.0,
            refresh: 1.0,
        };
        let mut w = LatencyWindow::new(&spec);
        let s = |x: f64| Nanos::from_secs_f64(x);
        // No latencies, no refresh yet: no copy.
        assert_eq!(w.delay(s(0.5)), None);
        for k in 1..=100u64 {
            w.record(s(0.6), Nanos(k * 1_000_000));
        }
        // Not refreshed before 1 s.
        assert_eq!(w.delay(s(0.9)), None);
        let d = w.delay(s(1.0)).unwrap();
        assert!((d.as_secs_f64() - 0.090).abs() < 0.001, "{d:?}");
        // Faster answers later: the delay follows at the next refresh only.
        for _ in 0..1000 {
            w.record(s(1.5), Nanos(1_000_000));
        }
        assert_eq!(w.delay(s(1.9)), Some(d));
        let d2 = w.delay(s(2.0)).unwrap();
        assert!(d2 < Nanos(2_000_000), "{d2:?}");
        // Once the slow bucket (0 to 1 s) left the window, only fast answers count; after
        // the whole window without answers the last delay stays in force.
        assert_eq!(w.delay(s(10.0)), Some(d2));
        for _ in 0..10 {
            w.record(s(10.2), Nanos(50_000_000));
        }
        let d3 = w.delay(s(11.0)).unwrap();
        assert!((d3.as_secs_f64() - 0.050).abs() < 0.001, "{d3:?}");
    }

    #[test]
    fn a_fixed_delay_reads_and_prints_as_a_number() {
        let h: HedgeSpec = toml::from_str("delay = 0.01\n").unwrap();
        assert_eq!(h.delay, HedgeDelay::Fixed(0.01));
        assert!(format!("{h:?}").contains("delay: 0.01,"));
        let h: HedgeSpec = toml::from_str("delay = { percentile = 0.95 }\n").unwrap();
        assert_eq!(
            h.delay,
            HedgeDelay::Percentile(PercentileDelay {
                percentile: 0.95,
                window: 30.0,
                refresh: 3.0
            })
        );
    }
}
