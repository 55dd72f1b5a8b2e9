//! Timeouts: how long a client waits for one attempt, and for the whole request.
//!
//! Follows Envoy's route `timeout` (the overall deadline, retries included; Envoy's
//! default is 15 s, here none unless set) and `retry_policy.per_try_timeout`, and gRPC
//! deadlines. When a client gives up, the server is not told unless `cancel` is set (a
//! Thrift server never hears of it: the work it then finishes is wasted); with `cancel`
//! the request leaves the server's queue, or its worker, at once (as with gRPC
//! cancellation or a closed HTTP/2 stream that the server honours).

use crate::time::Nanos;

/// Validated timeouts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timeouts {
    /// Whole-request deadline, from arrival.
    pub overall: Option<Nanos>,
    /// Per-attempt timeout, from the attempt's dispatch.
    pub per_try: Option<Nanos>,
    /// Whether an abandoned attempt is withdrawn from its server.
    pub cancel: bool,
}

impl Timeouts {
    /// When an attempt sent at `sent` of a request that arrived at `arrival` times out:
    /// the earlier of its per-try timeout and the request's deadline, if any.
    pub fn attempt_deadline(&self, arrival: Nanos, sent: Nanos) -> Option<Nanos> {
        let per_try = self.per_try.map(|t| sent + t);
        let overall = self.overall.map(|t| arrival + t);
        match (per_try, overall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earlier_deadline_wins() {
        let t = Timeouts {
            overall: Some(Nanos(100)),
            per_try: Some(Nanos(30)),
            cancel: false,
        };
        assert_eq!(t.attempt_deadline(Nanos(0), Nanos(10)), Some(Nanos(40)));
        assert_eq!(t.attempt_deadline(Nanos(0), Nanos(80)), Some(Nanos(100)));
        assert_eq!(
            Timeouts::default().attempt_deadline(Nanos(0), Nanos(0)),
            None
        );
    }
}
