//! Retry budgets: what bounds retries (and hedges) across all the requests of one client,
//! so that a failing backend sees a bounded multiple of the offered load instead of a
//! retry storm.
//!
//! - **Finagle `RetryBudget`** (`com.twitter.finagle.service.RetryBudget`, defaults
//!   `ttl` 10 s, `minRetriesPerSec` 10, `percentCanRetry` 0.2): every request deposits
//!   1000 units in a window of `ttl` (ten slices, like Finagle's `WindowedAdder`), a retry
//!   withdraws `1000 / percent` units, and a reserve of `minRetriesPerSec × ttl` retries
//!   is always there. So over any `ttl`, retries ≤ percent × requests + min × ttl.
//! - **Envoy retry budget** (`circuit_breakers.thresholds.retry_budget`, defaults
//!   `budget_percent` 20 %, `min_retry_concurrency` 3): retries in flight may not reach
//!   `max(min_retry_concurrency, budget_percent × requests in flight)`.
//! - **gRPC retry throttling** (gRFC A6, `retryThrottling`: `maxTokens`, `tokenRatio`):
//!   a token count starts at `max_tokens`; a failed attempt takes 1 token, a successful
//!   one gives back `token_ratio` (up to `max_tokens`); retries and hedges are sent only
//!   while the count is above `max_tokens / 2`.
//!
//! Each balancer (client) has its own budget, as each Finagle client, Envoy cluster and
//! gRPC channel has.

use serde::{Deserialize, Serialize};

use crate::time::Nanos;

/// `[strategies.policy.budget]` as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BudgetSpec {
    /// Finagle's `RetryBudget`.
    Finagle {
        /// Seconds a deposit lasts (Finagle: 1 to 60). Default 10.
        #[serde(default = "ten")]
        ttl: f64,
        /// Retries always allowed per second. Default 10.
        #[serde(default = "ten_u")]
        min_retries_per_sec: u32,
        /// Retries allowed per request, on top of the minimum (0 to 1000). Default 0.2.
        #[serde(default = "fifth")]
        percent_can_retry: f64,
    },
    /// Envoy's retry budget.
    Envoy {
        /// Retries in flight as a percentage of requests in flight (0 to 100). Default 20.
        #[serde(default = "twenty")]
        budget_percent: f64,
        /// Retries in flight always allowed. Default 3.
        #[serde(default = "three")]
        min_retry_concurrency: u32,
    },
    /// gRPC's retry throttling.
    Grpc {
        /// Token count at start and most tokens (gRPC: 1 to 1000). Default 10.
        #[serde(default = "ten")]
        max_tokens: f64,
        /// Tokens a successful attempt gives back (gRPC: above 0). Default 0.1.
        #[serde(default = "tenth")]
        token_ratio: f64,
    },
}

fn ten() -> f64 {
    10.0
}
fn ten_u() -> u32 {
    10
}
fn fifth() -> f64 {
    0.2
}
fn twenty() -> f64 {
    20.0
}
fn three() -> u32 {
    3
}
fn tenth() -> f64 {
    0.1
}

/// Sums values added over a sliding window of ten slices (Finagle's `WindowedAdder`).
#[derive(Clone, Debug)]
pub struct Windowed {
    slice: u64,
    slots: [i64; 10],
    /// Number of the current slice (time / slice).
    head: u64,
}

impl Windowed {
    fn new(window: Nanos) -> Windowed {
        Windowed {
            slice: (window.0 / 10).max(1),
            slots: [0; 10],
            head: 0,
        }
    }

    fn advance(&mut self, now: Nanos) {
        let idx = now.0 / self.slice;
        if idx > self.head {
            // Expire every slice between the old head and the new one (at most all ten).
            let stale = (idx - self.head).min(10);
            for k in 1..=stale {
                self.slots[((self.head + k) % 10) as usize] = 0;
            }
            self.head = idx;
        }
    }

    fn add(&mut self, now: Nanos, v: i64) {
        self.advance(now);
        self.slots[(self.head % 10) as usize] += v;
    }

    fn sum(&mut self, now: Nanos) -> i64 {
        self.advance(now);
        self.slots.iter().sum()
    }
}

/// One client's budget state.
#[derive(Clone, Debug)]
pub enum Budget {
    /// No budget: every retry the retry policy allows goes.
    Unlimited,
    /// Finagle's token budget.
    Finagle {
        /// Deposits and withdrawals over the last `ttl`.
        window: Windowed,
        /// Units a request deposits (1000, or 0 when percent is 0).
        deposit: i64,
        /// Units a retry withdraws (1000 / percent, or 1 when percent is 0).
        withdrawal: i64,
        /// Units always available (min retries/s × ttl × withdrawal).
        reserve: i64,
    },
    /// Envoy's concurrency budget.
    Envoy {
        /// Fraction (0–1) of requests in flight.
        fraction: f64,
        /// Floor.
        min: u32,
    },
    /// gRPC's token bucket.
    Grpc {
        /// Current tokens.
        tokens: f64,
        /// Most tokens.
        max: f64,
        /// Tokens per success.
        ratio: f64,
    },
}

impl Budget {
    /// A fresh budget following `spec` (`None`: unlimited).
    pub fn new(spec: Option<&BudgetSpec>) -> Budget {
        match spec {
            None => Budget::Unlimited,
            Some(BudgetSpec::Finagle {
                ttl,
                min_retries_per_sec,
                percent_can_retry,
            }) => {
                // Finagle scales by 1000 so that percentages stay integers.
                let (deposit, withdrawal) = if *percent_can_retry == 0.0 {
                    (0, 1)
                } else {
                    (1000, (1000.0 / percent_can_retry) as i64)
                };
                Budget::Finagle {
                    window: Windowed::new(Nanos::from_secs_f64(*ttl)),
                    deposit,
                    withdrawal,
                    // Finagle uses whole seconds of ttl here (`ttl.inSeconds`).
                    reserve: i64::from(*min_retries_per_sec) * (*ttl as i64) * withdrawal,
                }
            }
            Some(BudgetSpec::Envoy {
                budget_percent,
                min_retry_concurrency,
            }) => Budget::Envoy {
                fraction: budget_percent / 100.0,
                min: *min_retry_concurrency,
            },
            Some(BudgetSpec::Grpc {
                max_tokens,
                token_ratio,
            }) => Budget::Grpc {
                tokens: *max_tokens,
                max: *max_tokens,
                ratio: *token_ratio,
            },
        }
    }

    /// A new request (not a retry) is sent at `now` (Finagle deposits).
    pub fn on_request(&mut self, now: Nanos) {
        if let Budget::Finagle {
            window, deposit, ..
        } = self
        {
            window.add(now, *deposit);
        }
    }

    /// An attempt ended: `ok`, or a failure that `retry_on` covers (gRPC counts those).
    pub fn on_attempt_end(&mut self, ok: bool) {
        if let Budget::Grpc { tokens, max, ratio } = self {
            *tokens = if ok {
                (*tokens + *ratio).min(*max)
            } else {
                (*tokens - 1.0).max(0.0)
            };
        }
    }

    /// Whether a retry (or hedge) may go now, with `in_flight` attempts of this client in
    /// flight, `retries_in_flight` of them retries; if so it is counted (Finagle
    /// withdraws).
    pub fn try_retry(&mut self, now: Nanos, in_flight: u32, retries_in_flight: u32) -> bool {
        match self {
            Budget::Unlimited => true,
            Budget::Finagle {
                window,
                withdrawal,
                reserve,
                ..
            } => {
                if window.sum(now) + *reserve >= *withdrawal {
                    window.add(now, -*withdrawal);
                    true
                } else {
                    false
                }
            }
            Budget::Envoy { fraction, min } => {
                let limit = (*fraction * f64::from(in_flight)).max(f64::from(*min));
                f64::from(retries_in_flight) < limit
            }
            Budget::Grpc { tokens, max, .. } => *tokens > *max / 2.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn finagle(min: u32, percent: f64) -> Budget {
        Budget::new(Some(&BudgetSpec::Finagle {
            ttl: 10.0,
            min_retries_per_sec: min,
            percent_can_retry: percent,
        }))
    }

    fn drain(b: &mut Budget, now: Nanos) -> u32 {
        let mut n = 0;
        while b.try_retry(now, 0, 0) {
            n += 1;
            assert!(n < 1_000_000, "budget never runs out");
        }
        n
    }

    #[test]
    fn finagle_allows_percent_of_requests_plus_the_reserve() {
        // 1000 requests with 20 %: 200 retries, plus 10/s × 10 s = 100 in reserve.
        let mut b = finagle(10, 0.2);
        for k in 0..1000 {
            b.on_request(Nanos(k * 1_000_000));
        }
        assert_eq!(drain(&mut b, Nanos(S)), 300);
        // Only the reserve without requests.
        assert_eq!(drain(&mut finagle(10, 0.2), Nanos(S)), 100);
        // No reserve, no percent: nothing.
        assert_eq!(drain(&mut finagle(0, 0.0), Nanos(S)), 0);
    }

    #[test]
    fn finagle_deposits_and_withdrawals_expire_after_ttl() {
        let mut b = finagle(0, 0.5);
        for _ in 0..10 {
            b.on_request(Nanos::ZERO);
        }
        assert_eq!(drain(&mut b, Nanos(S)), 5);
        // Eleven seconds later both the deposits and the withdrawals have expired.
        assert_eq!(drain(&mut b, Nanos(12 * S)), 0);
        b.on_request(Nanos(12 * S));
        b.on_request(Nanos(12 * S));
        assert_eq!(drain(&mut b, Nanos(12 * S)), 1);
    }

    #[test]
    fn envoy_bounds_retries_in_flight() {
        let mut b = Budget::new(Some(&BudgetSpec::Envoy {
            budget_percent: 20.0,
            min_retry_concurrency: 3,
        }));
        assert!(b.try_retry(Nanos::ZERO, 5, 2));
        assert!(!b.try_retry(Nanos::ZERO, 5, 3), "floor of 3");
        assert!(b.try_retry(Nanos::ZERO, 100, 19));
        assert!(!b.try_retry(Nanos::ZERO, 100, 20), "20 % of 100");
    }

    #[test]
    fn grpc_throttles_at_half_the_tokens() {
        let mut b = Budget::new(Some(&BudgetSpec::Grpc {
            max_tokens: 10.0,
            token_ratio: 0.1,
        }));
        for _ in 0..4 {
            b.on_attempt_end(false);
        }
        assert!(b.try_retry(Nanos::ZERO, 0, 0), "6 tokens > 5");
        b.on_attempt_end(false);
        assert!(!b.try_retry(Nanos::ZERO, 0, 0), "5 tokens is not above 5");
        // Eleven successes bring back 1.1 tokens (float sums: 10 would be borderline).
        for _ in 0..11 {
            b.on_attempt_end(true);
        }
        assert!(b.try_retry(Nanos::ZERO, 0, 0));
        // Never above max_tokens.
        for _ in 0..1000 {
            b.on_attempt_end(true);
        }
        assert!(matches!(b, Budget::Grpc { tokens, .. } if tokens == 10.0));
    }
}
