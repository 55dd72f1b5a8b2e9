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

use serde::{Deserialize, Serialize};

use crate::time::Nanos;

/// `[strategies.policy.hedge]` as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeSpec {
    /// Seconds between copies (gRPC `hedgingDelay`; Dean & Barroso suggest the 95th
    /// percentile of the expected latency). Required.
    pub delay: f64,
    /// Copies per request, the original included (gRPC `maxAttempts`, 2 to 10). Default 2.
    #[serde(default = "two")]
    pub max_attempts: u32,
    /// Cancel the other copies at their servers when one succeeds (queued copies are
    /// dropped, copies in service stop). Default true, as gRPC does.
    #[serde(default = "yes")]
    pub cancel_losers: bool,
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
    /// Delay between copies.
    pub delay: Nanos,
    /// Copies per request (at least 2).
    pub max_attempts: u32,
    /// Cancel losers at the server.
    pub cancel_losers: bool,
}

impl Hedge {
    /// Resolves a checked spec.
    pub fn from_spec(s: &HedgeSpec) -> Hedge {
        Hedge {
            delay: Nanos::from_secs_f64(s.delay),
            max_attempts: s.max_attempts,
            cancel_losers: s.cancel_losers,
        }
    }
}
