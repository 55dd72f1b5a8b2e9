//! Retries: how many attempts, which outcomes are retried, the back-off between them, and
//! whether a retry avoids the hosts already tried.
//!
//! Follows Envoy's route `retry_policy` (`num_retries`, `retry_on`, `retry_back_off` with
//! `base_interval` 25 ms and `max_interval` 10 × base, the `previous_hosts` retry host
//! predicate with `host_selection_retry_max_attempts` 1) and gRPC's `retryPolicy`
//! (`maxAttempts` counts the original attempt). Back-off is Envoy's fully jittered
//! exponential one: before retry `n` (1-based) the client waits a uniform draw from
//! `[0, min((2^n − 1) × base_interval, max_interval))` — the "full jitter" of Brooker's
//! *Exponential Backoff and Jitter* (AWS Architecture Blog, 2015).

use serde::{Deserialize, Serialize};

use crate::time::Nanos;

/// Why an attempt did not succeed: what `retry_on` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The per-try timeout fired (Envoy `retry_on = "reset"`/per-try timeout, gRPC
    /// `DEADLINE_EXCEEDED` per attempt).
    Timeout,
    /// The server refused it: its queue was full (Envoy `retriable-status-codes` 503 /
    /// "429", gRPC `RESOURCE_EXHAUSTED`).
    Rejected,
    /// The connection failed or the server answered with an error (Envoy `5xx`,
    /// `connect-failure`; gRPC `UNAVAILABLE`).
    Failed,
}

/// `[strategies.policy.retry]` as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts per request, the original one included (gRPC `maxAttempts`; Envoy
    /// `num_retries` + 1). Default 2 (Envoy's `num_retries` default of 1).
    #[serde(default = "two")]
    pub max_attempts: u32,
    /// Outcomes that are retried. Default all three.
    #[serde(default = "all_causes")]
    pub retry_on: Vec<Cause>,
    /// Back-off base interval (seconds). Default 0.025 (Envoy).
    #[serde(default = "base_interval")]
    pub base_interval: f64,
    /// Back-off cap (seconds). Default 10 × `base_interval` (Envoy).
    #[serde(default)]
    pub max_interval: Option<f64>,
    /// Retry to a host not yet tried (Envoy's `previous_hosts` retry host predicate).
    /// Default false.
    #[serde(default)]
    pub previous_hosts: bool,
    /// With `previous_hosts`: how many times the balancer picks again when it picks a
    /// host already tried, before sending to the last pick anyway (Envoy
    /// `host_selection_retry_max_attempts`). Default 1.
    #[serde(default = "one")]
    pub host_selection_retry_max_attempts: u32,
}

fn two() -> u32 {
    2
}
fn one() -> u32 {
    1
}
fn base_interval() -> f64 {
    0.025
}
fn all_causes() -> Vec<Cause> {
    vec![Cause::Timeout, Cause::Rejected, Cause::Failed]
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            max_attempts: two(),
            retry_on: all_causes(),
            base_interval: base_interval(),
            max_interval: None,
            previous_hosts: false,
            host_selection_retry_max_attempts: one(),
        }
    }
}

/// A validated retry policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Retry {
    /// Attempts per request, the first included (at least 1).
    pub max_attempts: u32,
    /// Retry after a timeout.
    pub on_timeout: bool,
    /// Retry after a refusal.
    pub on_rejected: bool,
    /// Retry after a failure.
    pub on_failed: bool,
    /// Back-off base.
    pub base: Nanos,
    /// Back-off cap.
    pub cap: Nanos,
    /// Avoid hosts already tried.
    pub previous_hosts: bool,
    /// Re-picks allowed when a tried host comes up.
    pub reselect: u32,
}

/// Most attempts a request may make (gRPC treats more than 5 as 5; we allow a little more
/// for experiments, and no more, so that a request's state stays small).
pub const MAX_ATTEMPTS: u32 = 10;

impl Retry {
    /// Resolves a checked spec (see [`super::PolicySpec::check`]).
    pub fn from_spec(s: &RetrySpec) -> Retry {
        let base = Nanos::from_secs_f64(s.base_interval);
        Retry {
            max_attempts: s.max_attempts,
            on_timeout: s.retry_on.contains(&Cause::Timeout),
            on_rejected: s.retry_on.contains(&Cause::Rejected),
            on_failed: s.retry_on.contains(&Cause::Failed),
            base,
            cap: s
                .max_interval
                .map_or(Nanos(base.0.saturating_mul(10)), Nanos::from_secs_f64),
            previous_hosts: s.previous_hosts,
            reselect: s.host_selection_retry_max_attempts,
        }
    }

    /// Whether an attempt that ended by `cause` may be retried.
    pub fn retries(&self, cause: Cause) -> bool {
        match cause {
            Cause::Timeout => self.on_timeout,
            Cause::Rejected => self.on_rejected,
            Cause::Failed => self.on_failed,
        }
    }

    /// The wait before retry `n` (1 = the first retry), given `u` uniform in `[0, 1)`:
    /// `u × min((2^n − 1) × base, cap)` (Envoy's jittered exponential back-off).
    pub fn backoff(&self, n: u32, u: f64) -> Nanos {
        let factor = (1u64 << n.min(62)) - 1;
        let ceiling = self.base.0.saturating_mul(factor).min(self.cap.0);
        Nanos((u * ceiling as f64) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_as_2n_minus_1_and_is_capped() {
        let r = Retry::from_spec(&RetrySpec::default());
        assert_eq!(r.cap, Nanos(250_000_000));
        // u just below 1 gives the ceiling: 25, 75, 175 ms, then the 250 ms cap.
        let near = |n| r.backoff(n, 1.0 - 1e-12).0 as f64 / 1e6;
        for (n, want) in [(1, 25.0), (2, 75.0), (3, 175.0), (4, 250.0), (40, 250.0)] {
            assert!((near(n) - want).abs() < 1e-3, "retry {n}: {}", near(n));
        }
        assert_eq!(r.backoff(3, 0.0), Nanos::ZERO);
        assert_eq!(r.backoff(1, 0.5), Nanos(12_500_000));
    }

    #[test]
    fn retry_on_selects_causes() {
        let r = Retry::from_spec(&RetrySpec {
            retry_on: vec![Cause::Timeout],
            ..RetrySpec::default()
        });
        assert!(r.retries(Cause::Timeout));
        assert!(!r.retries(Cause::Failed) && !r.retries(Cause::Rejected));
    }
}
