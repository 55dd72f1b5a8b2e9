//! Circuit breaking: a balancer fails an attempt at once ("overflow") rather than add it
//! to an upstream already holding too much of its traffic.
//!
//! Follows Envoy's cluster `circuit_breakers` thresholds (`config.cluster.v3.CircuitBreakers
//! .Thresholds`, "Circuit breaking" in Envoy's architecture overview), per balancer as
//! each Envoy instance keeps its own counts:
//! - `max_requests`: "the maximum number of parallel requests that Envoy will make to the
//!   upstream cluster" (default 1024); an attempt sent while that many are outstanding
//!   overflows;
//! - `max_pending_requests`: "the maximum number of pending requests that Envoy will
//!   allow" (default 1024). Envoy's pending requests wait for a connection of its pool;
//!   lbsim has no pool and a Thrift connection carries one call at a time, so an attempt
//!   is *pending* while it waits in its server's queue for a worker, and an attempt that
//!   would wait while this many already do overflows;
//! - `max_retries`: "the maximum number of parallel retries" (default 3): a retry or hedge
//!   decided while that many are out is not sent (Envoy's `upstream_rq_retry_overflow`),
//!   and the request ends with the answer it had. As in Envoy, a retry budget
//!   (`[policy.budget] kind = "envoy"`) replaces this limit.
//!
//! Envoy checks the request limits when the connection pool takes the request, after the
//! host is picked: so does lbsim (the balancer sees the pick and, at once, a refusal).
//! Envoy never retries an overflow (its retry state refuses resets of reason
//! `Overflow`): an overflowed attempt ends its request unless another copy is still out.

use serde::{Deserialize, Serialize};

/// `[strategies.policy.circuit_breakers]` as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitSpec {
    /// Attempts outstanding per balancer before the next overflows (Envoy `max_requests`,
    /// default 1024).
    #[serde(default = "envoy_default")]
    pub max_requests: u32,
    /// Attempts waiting in server queues per balancer before the next that would wait
    /// overflows (Envoy `max_pending_requests`, default 1024).
    #[serde(default = "envoy_default")]
    pub max_pending_requests: u32,
    /// Retries and hedges outstanding per balancer before the next is not sent (Envoy
    /// `max_retries`, default 3).
    #[serde(default = "three")]
    pub max_retries: u32,
}

fn envoy_default() -> u32 {
    1024
}
fn three() -> u32 {
    3
}

impl Default for CircuitSpec {
    fn default() -> CircuitSpec {
        CircuitSpec {
            max_requests: envoy_default(),
            max_pending_requests: envoy_default(),
            max_retries: three(),
        }
    }
}

/// What a balancer counts when an attempt is about to be handed to its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outstanding {
    /// Attempts of this balancer outstanding, not counting the one offered.
    pub requests: u32,
    /// Of those, waiting in a server queue.
    pub pending: u32,
    /// Whether the offered attempt would wait (its server has no free worker).
    pub would_wait: bool,
}

impl CircuitSpec {
    /// Whether the attempt offered with these counts overflows.
    pub fn overflows(&self, o: Outstanding) -> bool {
        o.requests >= self.max_requests || (o.would_wait && o.pending >= self.max_pending_requests)
    }

    /// Whether one more retry or hedge may go out while `retries` are out.
    pub fn retry_allowed(&self, retries: u32) -> bool {
        retries < self.max_retries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_defaults() {
        let s: CircuitSpec = toml::from_str("").unwrap();
        assert_eq!(s, CircuitSpec::default());
        assert_eq!(
            (s.max_requests, s.max_pending_requests, s.max_retries),
            (1024, 1024, 3)
        );
        assert!(toml::from_str::<CircuitSpec>("max_connections = 3\n").is_err());
    }

    #[test]
    fn limits_count_what_is_already_out() {
        let s = CircuitSpec {
            max_requests: 3,
            max_pending_requests: 1,
            max_retries: 0,
        };
        let o = |requests, pending, would_wait| Outstanding {
            requests,
            pending,
            would_wait,
        };
        assert!(!s.overflows(o(2, 0, true)), "the third fits");
        assert!(s.overflows(o(3, 0, false)), "a fourth overflows");
        assert!(
            !s.overflows(o(2, 1, false)),
            "it starts at once: not pending"
        );
        assert!(s.overflows(o(2, 1, true)), "a second would wait");
        assert!(!s.retry_allowed(0), "max_retries 0: no retry at all");
        let s = CircuitSpec::default();
        assert!(s.retry_allowed(2) && !s.retry_allowed(3));
    }
}
