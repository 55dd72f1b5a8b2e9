//! Slow start as a scenario writes it (`[strategies.policy.slow_start]`): Envoy's
//! `slow_start_config` or nginx's `slow_start`. The ramp itself is the strategy's
//! ([`crate::strategy::slow_start`]): only weighted kinds that declare it apply one.
//!
//! - **Envoy** (`envoy.config.cluster.v3.Cluster.SlowStartConfig`, for `ROUND_ROBIN` and
//!   `LEAST_REQUEST`): `slow_start_window` (required; Envoy keeps milliseconds),
//!   `aggression` (default 1.0), `min_weight_percent` (default 10).
//! - **nginx** (`server … slow_start=time`, NGINX Plus): `window`, the time over which the
//!   weight grows from zero to nominal.

use serde::{Deserialize, Serialize};

use crate::strategy::{Ramp, RampKind};
use crate::time::Nanos;

/// `[strategies.policy.slow_start]` as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SlowStartSpec {
    /// Envoy `slow_start_config`.
    Envoy {
        /// Seconds a host ramps after it becomes available (whole milliseconds). Required.
        slow_start_window: f64,
        /// The ramp's curve: weight × (time / window)^(1 / aggression). Default 1.0
        /// (linear).
        #[serde(default = "one")]
        aggression: f64,
        /// Least share of its weight a ramping host gets, in percent. Default 10.
        #[serde(default = "ten")]
        min_weight_percent: f64,
    },
    /// nginx `slow_start`.
    Nginx {
        /// Seconds over which the weight grows from zero to nominal. Required.
        window: f64,
    },
}

fn one() -> f64 {
    1.0
}
fn ten() -> f64 {
    10.0
}

impl SlowStartSpec {
    /// Its system.
    pub fn kind(&self) -> RampKind {
        match self {
            SlowStartSpec::Envoy { .. } => RampKind::Envoy,
            SlowStartSpec::Nginx { .. } => RampKind::Nginx,
        }
    }

    /// The ramp of a checked spec.
    pub fn ramp(&self) -> Ramp {
        match *self {
            SlowStartSpec::Envoy {
                slow_start_window,
                aggression,
                min_weight_percent,
            } => Ramp::Envoy {
                // Envoy converts the window to whole milliseconds.
                window_ms: (slow_start_window * 1000.0).round().max(1.0) as u64,
                aggression,
                min_weight: min_weight_percent / 100.0,
            },
            SlowStartSpec::Nginx { window } => Ramp::Nginx {
                window: Nanos::from_secs_f64(window).max(Nanos(1)),
            },
        }
    }
}
