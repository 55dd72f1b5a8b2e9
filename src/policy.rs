//! Client policies: what a client does around each request besides picking a server —
//! timeouts, retries and their budgets, hedging.
//!
//! Pure state machines with no clock and no I/O, like strategies: the simulator drives
//! them (and the live driver can, through the same calls). A request's life under a
//! policy:
//!
//! ```text
//!  arrival ─► attempt 1 ─► ok ─────────────────────────────► served (once)
//!                │  └─► timeout / rejected / failed
//!                │         └─► retry allowed? (retry_on, max_attempts, budget, deadline)
//!                │               ├─ yes: back-off, attempt n+1 (maybe to another host)
//!                │               └─ no: failed / timed out (once)
//!                └─ hedge: after `delay`, another copy; the first answer wins
//! ```
//!
//! Every system followed is cited in its file: [`retry`] (Envoy `retry_policy`, gRPC
//! `retryPolicy`), [`budget`] (Finagle `RetryBudget`, Envoy retry budget, gRPC retry
//! throttling), [`hedge`] (Dean & Barroso, gRPC `hedgingPolicy`), [`timeout`] (Envoy
//! route and per-try timeouts, gRPC deadlines), [`outlier`] (Envoy outlier detection,
//! nginx passive checks), [`slow_start`] (Envoy `slow_start_config`, nginx `slow_start`),
//! [`circuit`] (Envoy `circuit_breakers`). Server-side, [`admission`] (queue timeout,
//! folly's CoDel, adaptive LIFO) is shared by the simulated servers and the live backends.

pub mod admission;
pub mod budget;
pub mod circuit;
pub mod client;
pub mod hedge;
pub mod outlier;
pub mod retry;
pub mod slow_start;
pub mod timeout;

use serde::{Deserialize, Serialize};

pub use budget::{Budget, BudgetSpec};
pub use circuit::{CircuitSpec, Outstanding};
pub use hedge::{Hedge, HedgeDelay, HedgeSpec, LatencyWindow, PercentileDelay};
pub use outlier::{Detector, Ejection, OutlierSpec};
pub use retry::{Cause, MAX_ATTEMPTS, Retry, RetrySpec};
pub use slow_start::SlowStartSpec;
pub use timeout::Timeouts;

use crate::time::Nanos;

/// `[strategies.policy]` as written in a scenario file: a client policy for every
/// balancer running that strategy entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Whole-request deadline (seconds from arrival, retries included): Envoy route
    /// `timeout`, gRPC deadline. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Per-attempt timeout (seconds): Envoy `per_try_timeout`. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<f64>,
    /// Withdraw abandoned attempts (timed out, or hedges that lost) from their server.
    /// Default false: the server finishes them and their time is wasted work.
    #[serde(default)]
    pub cancel: bool,
    /// Retries (`[strategies.policy.retry]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// What bounds retries and hedges (`[strategies.policy.budget]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSpec>,
    /// Hedged requests (`[strategies.policy.hedge]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge: Option<HedgeSpec>,
    /// Outlier ejection (`[strategies.policy.outlier]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<OutlierSpec>,
    /// Slow start of servers that become available (`[strategies.policy.slow_start]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<SlowStartSpec>,
    /// Circuit breakers (`[strategies.policy.circuit_breakers]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breakers: Option<CircuitSpec>,
}

/// A policy field that cannot be used: the field (relative to `policy`), what is wrong
/// and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// Dotted field under `policy`, e.g. `retry.max_attempts`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

fn err(field: &str, problem: impl Into<String>, fix: impl Into<String>) -> PolicyError {
    PolicyError {
        field: field.to_string(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Longest time a policy may name (seconds): a day, far beyond any run worth simulating
/// request by request, and small enough that sums of them stay exact in nanoseconds.
const MAX_SECONDS: f64 = 86_400.0;

/// The shortest outlier-detection sweep interval (seconds): each sweep visits every host.
const MIN_SWEEP_INTERVAL: f64 = 1e-3;

fn seconds(field: &str, v: f64, zero_ok: bool) -> Result<(), PolicyError> {
    let ok = v.is_finite() && v <= MAX_SECONDS && (v > 0.0 || (zero_ok && v == 0.0));
    if ok && (v == 0.0 || v >= 1e-9) {
        Ok(())
    } else {
        Err(err(
            field,
            format!("is {v}"),
            format!(
                "use a number of seconds {} {MAX_SECONDS} (at least 1e-9 when not 0)",
                if zero_ok {
                    "from 0 to"
                } else {
                    "above 0 and at most"
                }
            ),
        ))
    }
}

impl PolicySpec {
    /// Whether requests under this policy need a client to drive them ([`client`]:
    /// attempts, timers, budgets, detectors). Every field but `slow_start` does (a
    /// timeout, retries, a budget, hedging, outlier ejection, circuit breakers, `cancel`).
    /// Slow start does not: it is set in the balancers once before the first request and
    /// a host ramps when health checks see it back, so under a policy of slow start alone
    /// (or of nothing) each request is its one attempt, as without a policy.
    ///
    /// The spec is compared whole with one that keeps only its slow start, so that a
    /// field added later needs a client unless this rule is changed to say otherwise.
    pub fn needs_client(&self) -> bool {
        let slow_start_only = PolicySpec {
            slow_start: self.slow_start.clone(),
            ..PolicySpec::default()
        };
        *self != slow_start_only
    }

    /// Checks every field; the error names the first bad one.
    pub fn check(&self) -> Result<(), PolicyError> {
        if let Some(t) = self.timeout {
            seconds("timeout", t, false)?;
        }
        if let Some(t) = self.per_try_timeout {
            seconds("per_try_timeout", t, false)?;
        }
        if self.retry.is_some() && self.hedge.is_some() {
            return Err(err(
                "hedge",
                "a policy has both `retry` and `hedge`",
                "keep one: as in gRPC, a method either retries or hedges (hedging already re-sends on failure)",
            ));
        }
        if let Some(r) = &self.retry {
            if !(1..=MAX_ATTEMPTS).contains(&r.max_attempts) {
                return Err(err(
                    "retry.max_attempts",
                    format!("is {}", r.max_attempts),
                    format!(
                        "use 1 to {MAX_ATTEMPTS} attempts (the first included; 1 means no retry)"
                    ),
                ));
            }
            if r.retry_on.is_empty() {
                return Err(err(
                    "retry.retry_on",
                    "is empty, so nothing is retried",
                    "list at least one of \"timeout\", \"rejected\", \"failed\", or remove [policy.retry]",
                ));
            }
            seconds("retry.base_interval", r.base_interval, false)?;
            if let Some(m) = r.max_interval {
                seconds("retry.max_interval", m, false)?;
                if m < r.base_interval {
                    return Err(err(
                        "retry.max_interval",
                        format!("{m} s is below base_interval ({} s)", r.base_interval),
                        "set max_interval to base_interval or more (Envoy's default is 10 × base_interval)",
                    ));
                }
            }
            if r.host_selection_retry_max_attempts > 100 {
                return Err(err(
                    "retry.host_selection_retry_max_attempts",
                    format!("is {}", r.host_selection_retry_max_attempts),
                    "use 0 to 100 (Envoy's default is 1)",
                ));
            }
        }
        if let Some(h) = &self.hedge {
            match h.delay {
                HedgeDelay::Fixed(d) => seconds("hedge.delay", d, true)?,
                HedgeDelay::Percentile(p) => {
                    if !(p.percentile > 0.0 && p.percentile < 1.0) {
                        return Err(err(
                            "hedge.delay.percentile",
                            format!("is {}", p.percentile),
                            "use a fraction strictly between 0 and 1, e.g. 0.95 for the 95th percentile",
                        ));
                    }
                    seconds("hedge.delay.window", p.window, false)?;
                    seconds("hedge.delay.refresh", p.refresh, false)?;
                    if p.window < 1e-3 || p.refresh < 1e-3 {
                        return Err(err(
                            if p.window < 1e-3 {
                                "hedge.delay.window"
                            } else {
                                "hedge.delay.refresh"
                            },
                            "is below 1 ms",
                            "use 0.001 s or more (Finagle: a window of 30 s refreshed every 3 s)",
                        ));
                    }
                }
            }
            if !(2..=MAX_ATTEMPTS).contains(&h.max_attempts) {
                return Err(err(
                    "hedge.max_attempts",
                    format!("is {}", h.max_attempts),
                    format!("use 2 to {MAX_ATTEMPTS} copies (the original included)"),
                ));
            }
        }
        match &self.outlier {
            Some(OutlierSpec::Envoy {
                consecutive_5xx,
                interval,
                base_ejection_time,
                max_ejection_percent,
                max_ejection_time,
                enforcing_consecutive_5xx,
                enforcing_success_rate,
                success_rate_minimum_hosts: _,
                success_rate_request_volume,
                success_rate_stdev_factor,
                enforcing_failure_percentage,
                failure_percentage_threshold,
                failure_percentage_minimum_hosts: _,
                failure_percentage_request_volume,
            }) => {
                for (field, v, default) in [
                    (
                        "enforcing_consecutive_5xx",
                        enforcing_consecutive_5xx,
                        "100",
                    ),
                    (
                        "enforcing_success_rate",
                        enforcing_success_rate,
                        "0 here, 100 in Envoy",
                    ),
                    (
                        "enforcing_failure_percentage",
                        enforcing_failure_percentage,
                        "0",
                    ),
                    (
                        "failure_percentage_threshold",
                        failure_percentage_threshold,
                        "85",
                    ),
                ] {
                    if !(v.is_finite() && (0.0..=100.0).contains(v)) {
                        return Err(err(
                            &format!("outlier.{field}"),
                            format!("is {v}"),
                            format!("use a percentage from 0 to 100 (default {default})"),
                        ));
                    }
                }
                if *success_rate_request_volume == 0 || *failure_percentage_request_volume == 0 {
                    let field = if *success_rate_request_volume == 0 {
                        "success_rate_request_volume"
                    } else {
                        "failure_percentage_request_volume"
                    };
                    return Err(err(
                        &format!("outlier.{field}"),
                        "is 0, so a host that answered nothing would have a rate",
                        "use 1 or more requests per interval (Envoy's defaults are 100 and 50)",
                    ));
                }
                if *success_rate_stdev_factor > 1_000_000 {
                    return Err(err(
                        "outlier.success_rate_stdev_factor",
                        format!("is {success_rate_stdev_factor}"),
                        "use 0 to 1000000 thousandths of a standard deviation (Envoy's default is 1900)",
                    ));
                }
                if *consecutive_5xx == 0 {
                    return Err(err(
                        "outlier.consecutive_5xx",
                        "is 0",
                        "use 1 or more errors (Envoy's default is 5)",
                    ));
                }
                seconds("outlier.interval", *interval, false)?;
                if *interval < MIN_SWEEP_INTERVAL {
                    // Every host is swept at each interval: a tiny one floods the run with
                    // sweeps (a hang in all but name).
                    return Err(err(
                        "outlier.interval",
                        format!("is {interval} s, shorter than {MIN_SWEEP_INTERVAL} s"),
                        format!(
                            "use {MIN_SWEEP_INTERVAL} s or more between sweeps (Envoy's default is 10 s)"
                        ),
                    ));
                }
                seconds("outlier.base_ejection_time", *base_ejection_time, false)?;
                seconds("outlier.max_ejection_time", *max_ejection_time, false)?;
                if !(max_ejection_percent.is_finite()
                    && (0.0..=100.0).contains(max_ejection_percent))
                {
                    return Err(err(
                        "outlier.max_ejection_percent",
                        format!("is {max_ejection_percent}"),
                        "use a percentage from 0 to 100 (Envoy's default is 10)",
                    ));
                }
            }
            Some(OutlierSpec::Nginx {
                max_fails,
                fail_timeout,
            }) => {
                if *max_fails == 0 {
                    return Err(err(
                        "outlier.max_fails",
                        "is 0, which nginx reads as \"never unavailable\"",
                        "use 1 or more (nginx's default is 1), or remove [policy.outlier]",
                    ));
                }
                seconds("outlier.fail_timeout", *fail_timeout, false)?;
            }
            Some(OutlierSpec::Finagle {
                consecutive_failures,
                mark_dead_for,
                max_mark_dead_for,
            }) => {
                if *consecutive_failures == 0 {
                    return Err(err(
                        "outlier.consecutive_failures",
                        "is 0",
                        "use 1 or more failures (Finagle's default is 5)",
                    ));
                }
                seconds("outlier.mark_dead_for", *mark_dead_for, false)?;
                seconds("outlier.max_mark_dead_for", *max_mark_dead_for, false)?;
                if max_mark_dead_for < mark_dead_for {
                    return Err(err(
                        "outlier.max_mark_dead_for",
                        format!("{max_mark_dead_for} s is below mark_dead_for ({mark_dead_for} s)"),
                        "set max_mark_dead_for to mark_dead_for or more (Finagle's defaults are 5 s and 300 s)",
                    ));
                }
            }
            None => {}
        }
        match &self.slow_start {
            Some(SlowStartSpec::Envoy {
                slow_start_window,
                aggression,
                min_weight_percent,
            }) => {
                if !(slow_start_window.is_finite()
                    && (0.001..=MAX_SECONDS).contains(slow_start_window))
                {
                    return Err(err(
                        "slow_start.slow_start_window",
                        format!("is {slow_start_window}"),
                        format!(
                            "use 0.001 to {MAX_SECONDS} seconds (Envoy counts whole milliseconds; no default)"
                        ),
                    ));
                }
                if !(aggression.is_finite() && *aggression > 0.0 && *aggression <= 1000.0) {
                    return Err(err(
                        "slow_start.aggression",
                        format!("is {aggression}"),
                        "use a number above 0 and at most 1000, as Envoy requires (default 1.0: linear)",
                    ));
                }
                if !(min_weight_percent.is_finite() && (0.0..=100.0).contains(min_weight_percent)) {
                    return Err(err(
                        "slow_start.min_weight_percent",
                        format!("is {min_weight_percent}"),
                        "use a percentage from 0 to 100 (Envoy's default is 10)",
                    ));
                }
            }
            Some(SlowStartSpec::Nginx { window }) => seconds("slow_start.window", *window, false)?,
            None => {}
        }
        if let Some(c) = &self.circuit_breakers
            && c.max_requests == 0
        {
            return Err(err(
                "circuit_breakers.max_requests",
                "is 0, so every attempt would overflow",
                "use 1 or more requests in flight (Envoy's default is 1024)",
            ));
        }
        match &self.budget {
            None => {}
            Some(_) if self.retry.is_none() && self.hedge.is_none() => {
                return Err(err(
                    "budget",
                    "a budget without `retry` or `hedge` bounds nothing",
                    "add [strategies.policy.retry] (or hedge), or remove the budget",
                ));
            }
            Some(BudgetSpec::Finagle {
                ttl,
                min_retries_per_sec,
                percent_can_retry,
            }) => {
                if !(ttl.is_finite() && (1.0..=60.0).contains(ttl)) {
                    return Err(err(
                        "budget.ttl",
                        format!("is {ttl}"),
                        "use 1 to 60 seconds, as Finagle requires (default 10)",
                    ));
                }
                if *min_retries_per_sec > 1_000_000 {
                    return Err(err(
                        "budget.min_retries_per_sec",
                        format!("is {min_retries_per_sec}"),
                        "use 0 to 1000000 (default 10)",
                    ));
                }
                if !(percent_can_retry.is_finite() && (0.0..=1000.0).contains(percent_can_retry)) {
                    return Err(err(
                        "budget.percent_can_retry",
                        format!("is {percent_can_retry}"),
                        "use 0 to 1000, as Finagle requires (default 0.2: one retry per five requests)",
                    ));
                }
            }
            Some(BudgetSpec::Envoy { budget_percent, .. })
                if !(budget_percent.is_finite() && (0.0..=100.0).contains(budget_percent)) =>
            {
                return Err(err(
                    "budget.budget_percent",
                    format!("is {budget_percent}"),
                    "use a percentage from 0 to 100 (Envoy's default is 20)",
                ));
            }
            Some(BudgetSpec::Envoy { .. }) => {}
            Some(BudgetSpec::Grpc {
                max_tokens,
                token_ratio,
            }) => {
                if !(max_tokens.is_finite() && *max_tokens > 0.0 && *max_tokens <= 1000.0) {
                    return Err(err(
                        "budget.max_tokens",
                        format!("is {max_tokens}"),
                        "use above 0 and at most 1000, as gRPC requires (default 10)",
                    ));
                }
                if !(token_ratio.is_finite() && *token_ratio > 0.0 && *token_ratio <= 1000.0) {
                    return Err(err(
                        "budget.token_ratio",
                        format!("is {token_ratio}"),
                        "use a number above 0, as gRPC requires (default 0.1)",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A validated policy, with times in nanoseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Retries, if any.
    pub retry: Option<Retry>,
    /// Hedging, if any.
    pub hedge: Option<Hedge>,
    /// The budget each client starts with.
    pub budget: Option<BudgetSpec>,
    /// Outlier ejection, if any.
    pub outlier: Option<OutlierSpec>,
    /// Slow start, if any.
    pub slow_start: Option<crate::strategy::Ramp>,
    /// Circuit breakers, if any.
    pub circuit: Option<CircuitSpec>,
}

/// What to do after an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Send another attempt after this wait (a retry's back-off; zero for a hedge sent
    /// at once after a failure).
    Send(Nanos),
    /// Other attempts are still out: wait for them.
    Wait,
    /// The request ends unserved, for this cause.
    Fail(Cause),
}

/// What of a client a decision reads: its budget and its attempts in flight.
#[derive(Debug)]
pub struct ClientState<'a> {
    /// The client's budget.
    pub budget: &'a mut Budget,
    /// Attempts the client has in flight.
    pub in_flight: u32,
    /// Of those, retries and hedges (attempts after the first).
    pub retries_in_flight: u32,
}

/// What a client tracks of one request under a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestState {
    /// When it arrived.
    pub arrival: Nanos,
    /// Attempts sent so far (the first included).
    pub sent: u32,
    /// Attempts sent and not yet ended (answered, failed or abandoned).
    pub outstanding: u32,
    /// Whether it has ended (served, failed or timed out): it ends exactly once.
    pub done: bool,
}

impl RequestState {
    /// A request that arrived at `arrival`, nothing sent yet.
    pub fn new(arrival: Nanos) -> RequestState {
        RequestState {
            arrival,
            sent: 0,
            outstanding: 0,
            done: false,
        }
    }
}

impl Policy {
    /// Resolves a checked spec.
    pub fn from_spec(s: &PolicySpec) -> Policy {
        Policy {
            timeouts: Timeouts {
                overall: s.timeout.map(Nanos::from_secs_f64),
                per_try: s.per_try_timeout.map(Nanos::from_secs_f64),
                cancel: s.cancel,
            },
            retry: s.retry.as_ref().map(Retry::from_spec),
            hedge: s.hedge.as_ref().map(Hedge::from_spec),
            budget: s.budget.clone(),
            outlier: s.outlier.clone(),
            slow_start: s.slow_start.as_ref().map(SlowStartSpec::ramp),
            circuit: s.circuit_breakers,
        }
    }

    /// Whether the circuit breakers let one more retry or hedge out while
    /// `retries_in_flight` are (Envoy `max_retries`, which a retry budget of kind
    /// `"envoy"` replaces).
    fn retry_circuit_closed(&self, retries_in_flight: u32) -> bool {
        match (&self.circuit, &self.budget) {
            (_, Some(BudgetSpec::Envoy { .. })) | (None, _) => true,
            (Some(c), _) => c.retry_allowed(retries_in_flight),
        }
    }

    /// Attempt of a request not yet ended overflowed a circuit breaker: it ends at once
    /// and is not retried (Envoy never retries an overflow); the request fails, refused,
    /// unless another copy is still out.
    pub fn on_overflow(&self, st: &mut RequestState) -> Next {
        debug_assert!(!st.done && st.outstanding > 0);
        st.outstanding -= 1;
        if st.outstanding == 0 {
            Next::Fail(Cause::Rejected)
        } else {
            Next::Wait
        }
    }

    /// Most attempts a request may make.
    pub fn max_attempts(&self) -> u32 {
        match (&self.retry, &self.hedge) {
            (Some(r), _) => r.max_attempts,
            (None, Some(h)) => h.max_attempts,
            (None, None) => 1,
        }
    }

    /// Whether the request's deadline has passed at `now`.
    pub fn expired(&self, st: &RequestState, now: Nanos) -> bool {
        self.timeouts.overall.is_some_and(|t| now >= st.arrival + t)
    }

    /// An attempt is sent: call before dispatching it.
    pub fn on_send(&self, st: &mut RequestState) {
        st.sent += 1;
        st.outstanding += 1;
    }

    /// An attempt of a request not yet ended failed at `now` by `cause`: decides what
    /// follows. `client` is the client's budget and attempts in flight (Envoy's budget
    /// reads them), `draw` a uniform draw in `[0, 1)` for the back-off's jitter (called
    /// only when a retry is sent).
    pub fn on_failure(
        &self,
        st: &mut RequestState,
        cause: Cause,
        now: Nanos,
        client: ClientState<'_>,
        draw: impl FnOnce() -> f64,
    ) -> Next {
        let ClientState {
            budget,
            in_flight,
            retries_in_flight,
        } = client;
        debug_assert!(!st.done && st.outstanding > 0);
        st.outstanding -= 1;
        if self.expired(st, now) {
            return if st.outstanding == 0 {
                Next::Fail(Cause::Timeout)
            } else {
                Next::Wait
            };
        }
        let more = st.sent < self.max_attempts();
        let send = match (&self.retry, &self.hedge) {
            (Some(r), _) => {
                more && r.retries(cause)
                    && self.retry_circuit_closed(retries_in_flight)
                    && budget.try_retry(now, in_flight, retries_in_flight)
            }
            // gRPC hedging: a non-fatal failure sends the next copy at once.
            (None, Some(_)) => {
                more && self.retry_circuit_closed(retries_in_flight)
                    && budget.try_retry(now, in_flight, retries_in_flight)
            }
            (None, None) => false,
        };
        match (send, &self.retry) {
            (true, Some(r)) => Next::Send(r.backoff(st.sent, draw())),
            (true, None) => Next::Send(Nanos::ZERO),
            (false, _) if st.outstanding == 0 => Next::Fail(cause),
            (false, _) => Next::Wait,
        }
    }

    /// The hedge timer of a request not yet ended fired: whether to send another copy
    /// now (then the next timer is due `hedge.delay` later).
    pub fn on_hedge_timer(&self, st: &RequestState, now: Nanos, client: ClientState<'_>) -> bool {
        let ClientState {
            budget,
            in_flight,
            retries_in_flight,
        } = client;
        self.hedge.is_some()
            && !st.done
            && st.sent < self.max_attempts()
            && !self.expired(st, now)
            && self.retry_circuit_closed(retries_in_flight)
            && budget.try_retry(now, in_flight, retries_in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(budget: &mut Budget, in_flight: u32, retries_in_flight: u32) -> ClientState<'_> {
        ClientState {
            budget,
            in_flight,
            retries_in_flight,
        }
    }

    fn policy(toml_text: &str) -> Policy {
        let spec: PolicySpec = toml::from_str(toml_text).unwrap();
        spec.check().unwrap();
        Policy::from_spec(&spec)
    }

    #[test]
    fn retries_stop_at_max_attempts_and_on_causes_not_listed() {
        let p = policy("[retry]\nmax_attempts = 3\nretry_on = [\"failed\"]\n");
        let mut b = Budget::new(None);
        let mut st = RequestState::new(Nanos::ZERO);
        p.on_send(&mut st);
        let n = p.on_failure(&mut st, Cause::Failed, Nanos(1), cs(&mut b, 0, 0), || 0.5);
        assert_eq!(n, Next::Send(Nanos(12_500_000)), "half of 25 ms");
        p.on_send(&mut st);
        assert!(matches!(
            p.on_failure(&mut st, Cause::Failed, Nanos(2), cs(&mut b, 0, 0), || 0.0),
            Next::Send(_)
        ));
        p.on_send(&mut st);
        assert_eq!(
            p.on_failure(&mut st, Cause::Failed, Nanos(3), cs(&mut b, 0, 0), || 0.0),
            Next::Fail(Cause::Failed),
            "three attempts made"
        );
        let mut st = RequestState::new(Nanos::ZERO);
        p.on_send(&mut st);
        assert_eq!(
            p.on_failure(&mut st, Cause::Timeout, Nanos(1), cs(&mut b, 0, 0), || 0.0),
            Next::Fail(Cause::Timeout),
            "timeouts are not retried"
        );
    }

    #[test]
    fn a_passed_deadline_ends_the_request_as_timed_out() {
        let p = policy("timeout = 1.0\n[retry]\nmax_attempts = 5\n");
        let mut b = Budget::new(None);
        let mut st = RequestState::new(Nanos::ZERO);
        p.on_send(&mut st);
        assert_eq!(
            p.on_failure(
                &mut st,
                Cause::Failed,
                Nanos(1_000_000_000),
                cs(&mut b, 0, 0),
                || 0.0
            ),
            Next::Fail(Cause::Timeout)
        );
    }

    #[test]
    fn hedges_wait_for_outstanding_copies() {
        let p = policy("[hedge]\ndelay = 0.01\nmax_attempts = 2\n");
        let mut b = Budget::new(None);
        let mut st = RequestState::new(Nanos::ZERO);
        p.on_send(&mut st);
        assert!(p.on_hedge_timer(&st, Nanos(10), cs(&mut b, 1, 0)));
        p.on_send(&mut st);
        assert!(
            !p.on_hedge_timer(&st, Nanos(20), cs(&mut b, 2, 1)),
            "two copies out"
        );
        assert_eq!(
            p.on_failure(&mut st, Cause::Failed, Nanos(30), cs(&mut b, 2, 1), || 0.0),
            Next::Wait
        );
        assert_eq!(
            p.on_failure(&mut st, Cause::Failed, Nanos(40), cs(&mut b, 1, 0), || 0.0),
            Next::Fail(Cause::Failed)
        );
    }

    /// Slow start alone (or nothing) needs no client; every other field does, alone and
    /// beside slow start.
    #[test]
    fn only_slow_start_needs_no_client() {
        let needs = |t: &str| {
            let spec: PolicySpec = toml::from_str(t).unwrap();
            spec.check().unwrap();
            spec.needs_client()
        };
        let envoy = "[slow_start]\nkind = \"envoy\"\nslow_start_window = 5\n";
        assert!(!needs(""));
        assert!(!needs(envoy));
        assert!(!needs("[slow_start]\nkind = \"nginx\"\nwindow = 5\n"));
        // One case per field below: a field added to `PolicySpec` fails to compile here
        // until it has its case.
        let PolicySpec {
            timeout: _,
            per_try_timeout: _,
            cancel: _,
            retry: _,
            budget: _,
            hedge: _,
            outlier: _,
            slow_start: _,
            circuit_breakers: _,
        } = PolicySpec::default();
        for other in [
            "timeout = 1.0\n",
            "per_try_timeout = 0.1\n",
            "cancel = true\n",
            "[retry]\nmax_attempts = 1\n",
            "[retry]\n[budget]\nkind = \"grpc\"\n",
            "[hedge]\ndelay = 0.01\n",
            "[outlier]\nkind = \"nginx\"\n",
            "[circuit_breakers]\nmax_requests = 1000\n",
        ] {
            assert!(needs(other), "{other}");
            assert!(needs(&format!("{other}{envoy}")), "{other} with slow start");
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let check = |t: &str| {
            toml::from_str::<PolicySpec>(t)
                .unwrap()
                .check()
                .unwrap_err()
                .field
        };
        assert_eq!(check("[retry]\nmax_attempts = 0\n"), "retry.max_attempts");
        assert_eq!(check("[retry]\nretry_on = []\n"), "retry.retry_on");
        assert_eq!(
            check("[retry]\nbase_interval = 0.1\nmax_interval = 0.01\n"),
            "retry.max_interval"
        );
        assert_eq!(check("timeout = -1\n"), "timeout");
        // A sweep every nanosecond would never let a run finish.
        assert_eq!(
            check("[outlier]\nkind = \"envoy\"\ninterval = 1e-9\n"),
            "outlier.interval"
        );
        assert_eq!(check("[hedge]\ndelay = 0.1\n[retry]\n"), "hedge");
        assert_eq!(
            check("[circuit_breakers]\nmax_requests = 0\n"),
            "circuit_breakers.max_requests"
        );
        assert!(toml::from_str::<PolicySpec>("[circuit_breakers]\nmax_requests = -1\n").is_err());
        assert_eq!(check("[budget]\nkind = \"grpc\"\n"), "budget");
        assert_eq!(
            check("[slow_start]\nkind = \"envoy\"\nslow_start_window = 0\n"),
            "slow_start.slow_start_window"
        );
        assert_eq!(
            check("[slow_start]\nkind = \"envoy\"\nslow_start_window = 5\naggression = 0\n"),
            "slow_start.aggression"
        );
        assert_eq!(
            check(
                "[slow_start]\nkind = \"envoy\"\nslow_start_window = 5\nmin_weight_percent = 101\n"
            ),
            "slow_start.min_weight_percent"
        );
        assert_eq!(
            check("[slow_start]\nkind = \"nginx\"\nwindow = -1\n"),
            "slow_start.window"
        );
        assert!(toml::from_str::<PolicySpec>("[slow_start]\nkind = \"envoy\"\n").is_err());
        assert!(
            toml::from_str::<PolicySpec>(
                "[slow_start]\nkind = \"nginx\"\nwindow = 1\naggression = 2\n"
            )
            .is_err()
        );
        assert_eq!(
            check("[retry]\n[budget]\nkind = \"finagle\"\nttl = 100\n"),
            "budget.ttl"
        );
        assert!(toml::from_str::<PolicySpec>("[retry]\nmax_atempts = 2\n").is_err());
        assert!(
            toml::from_str::<PolicySpec>("[budget]\nkind = \"envoy\"\nmax_tokens = 2\n").is_err()
        );
    }
}
