//! Load measures, kept apart from the selectors that compare them (as tower's
//! `tower::load`): one power-of-d selector serves "P2C over pending requests" and "P2C
//! over peak EWMA" alike.

use super::{Backends, Outcome};
use crate::time::Nanos;

/// A comparable load figure per backend, kept up to date from dispatches and completions.
pub trait Load: Send {
    /// The load of backend `i` of `backends` (lower is better) as seen at `now`.
    fn cost(&mut self, i: usize, backends: &Backends, now: Nanos) -> f64;

    /// Told after a request has been sent to backend `i`.
    fn on_dispatch(&mut self, _i: usize, _now: Nanos) {}

    /// Told when a request sent to backend `i` ends.
    fn on_complete(&mut self, _i: usize, _latency: Nanos, _outcome: Outcome, _now: Nanos) {}
}

/// Requests this balancer has in flight to the backend (tower `PendingRequests`, Finagle's
/// least loaded, Envoy's active requests).
#[derive(Clone, Copy, Debug, Default)]
pub struct PendingRequests;

impl Load for PendingRequests {
    #[inline]
    fn cost(&mut self, i: usize, backends: &Backends, _now: Nanos) -> f64 {
        f64::from(backends.in_flight(i))
    }
}
