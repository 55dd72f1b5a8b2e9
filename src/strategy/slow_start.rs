//! Slow start: the time-varying weight of a backend that has just become available (its
//! health check passed again, it joined, or — nginx — its time out of the rotation is over),
//! so that a cold server is not handed its full share at once.
//!
//! - **Envoy** `slow_start_config` (`source/extensions/load_balancing_policies/common/
//!   load_balancer_impl.cc`, `applySlowStartFactor`), for `ROUND_ROBIN` and
//!   `LEAST_REQUEST`: for `t` milliseconds (truncated, at least 1) since the host's last
//!   health-check pass and while `t < slow_start_window`, its weight is multiplied by
//!   `max(time_factor^(1 / aggression), min_weight_percent / 100)` with
//!   `time_factor = max(1 ms, t) / slow_start_window` (aggression default 1.0, minimum
//!   weight default 10 %). While any host is in its window, Envoy balances with its EDF
//!   scheduler even when all weights are equal, and a host re-enters the schedule with the
//!   weight of the moment it is picked.
//! - **nginx** `server … slow_start=time` (NGINX Plus, `ngx_http_upstream_module`): "the
//!   time during which the server will recover its weight from zero to a nominal value,
//!   when unhealthy server becomes healthy, or when the server becomes available after a
//!   period of time it was considered unavailable" — a linear ramp, for the weighted
//!   round robin of `upstream`.
//!
//! Servers present when the run starts are warm: only a server that *becomes* available
//! during the run ramps (Envoy would also ramp the hosts of its first membership update,
//! which only delays every host equally).

use crate::time::Nanos;

/// How a slow-starting backend's weight ramps up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ramp {
    /// Envoy `slow_start_config`.
    Envoy {
        /// `slow_start_window`, in whole milliseconds (Envoy's granularity), at least 1.
        window_ms: u64,
        /// `aggression` (> 0).
        aggression: f64,
        /// `min_weight_percent / 100`, in `[0, 1]`.
        min_weight: f64,
    },
    /// nginx `slow_start`: weight from 0 to nominal, linearly over `window`.
    Nginx {
        /// The ramp's length (> 0).
        window: Nanos,
    },
}

/// The system a kind's slow start follows: what a strategy declares in its registry entry
/// ([`super::registry::Reads::slow_start`]) and a policy must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RampKind {
    /// Envoy `slow_start_config`.
    Envoy,
    /// nginx `slow_start`.
    Nginx,
}

impl Ramp {
    /// Its system.
    pub fn kind(&self) -> RampKind {
        match self {
            Ramp::Envoy { .. } => RampKind::Envoy,
            Ramp::Nginx { .. } => RampKind::Nginx,
        }
    }

    /// The ramp's length.
    pub fn window(&self) -> Nanos {
        match *self {
            Ramp::Envoy { window_ms, .. } => Nanos(window_ms.saturating_mul(1_000_000)),
            Ramp::Nginx { window } => window,
        }
    }

    /// The factor of the nominal weight `elapsed` after the backend became available: in
    /// `(0, 1]` for Envoy, `[0, 1]` for nginx, and exactly 1 once the window is over.
    pub fn factor(&self, elapsed: Nanos) -> f64 {
        match *self {
            Ramp::Envoy {
                window_ms,
                aggression,
                min_weight,
            } => {
                let ms = elapsed.0 / 1_000_000;
                if ms >= window_ms {
                    return 1.0;
                }
                let time_factor = ms.max(1) as f64 / window_ms as f64;
                let ramped = if aggression == 1.0 {
                    time_factor
                } else {
                    time_factor.powf(1.0 / aggression)
                };
                ramped.max(min_weight)
            }
            Ramp::Nginx { window } => {
                if elapsed >= window {
                    1.0
                } else {
                    elapsed.0 as f64 / window.0 as f64
                }
            }
        }
    }
}

/// One balancer's slow-start state: when each backend became available.
#[derive(Clone, Debug)]
pub struct SlowStart {
    ramp: Ramp,
    /// Per backend, when its current ramp began (`None`: warm).
    since: Vec<Option<Nanos>>,
    /// When the latest ramp ends: no backend ramps from then on.
    until: Nanos,
}

impl SlowStart {
    /// Every backend warm.
    pub fn new(ramp: Ramp) -> SlowStart {
        SlowStart {
            ramp,
            since: Vec::new(),
            until: Nanos::ZERO,
        }
    }

    /// The ramp followed.
    pub fn ramp(&self) -> Ramp {
        self.ramp
    }

    /// Backend `i` became available at `now`: its ramp starts (again).
    pub fn start(&mut self, i: usize, now: Nanos) {
        if self.since.len() <= i {
            self.since.resize(i + 1, None);
        }
        self.since[i] = Some(now);
        self.until = self.until.max(now + self.ramp.window());
    }

    /// Whether some backend is still in its window at `now` (Envoy's
    /// `!noHostsAreInSlowStart()`).
    #[inline]
    pub fn active(&self, now: Nanos) -> bool {
        now < self.until
    }

    /// The factor of backend `i`'s nominal weight at `now` (1 when warm).
    #[inline]
    pub fn factor(&self, i: usize, now: Nanos) -> f64 {
        match self.since.get(i).copied().flatten() {
            Some(t) if self.active(now) => self.ramp.factor(now.saturating_sub(t)),
            _ => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn envoy(window_ms: u64, aggression: f64, min_percent: f64) -> Ramp {
        Ramp::Envoy {
            window_ms,
            aggression,
            min_weight: min_percent / 100.0,
        }
    }

    #[test]
    fn envoy_factor_is_the_published_formula() {
        // Window 10 s, aggression 1, minimum 10 %: linear from 10 % after 1 s.
        let r = envoy(10_000, 1.0, 10.0);
        assert_eq!(r.factor(Nanos(0)), 0.1, "1 ms / 10 s, floored at 10 %");
        assert_eq!(r.factor(Nanos(500 * MS)), 0.1);
        assert_eq!(r.factor(Nanos(5_000 * MS)), 0.5);
        // Milliseconds are truncated, as Envoy's duration_cast does.
        assert_eq!(r.factor(Nanos(5_000 * MS + 999_999)), 0.5);
        assert_eq!(r.factor(Nanos(9_999 * MS)), 0.9999);
        assert_eq!(r.factor(Nanos(10_000 * MS)), 1.0);
        // Aggression 2: time_factor^(1/2).
        let r = envoy(10_000, 2.0, 0.0);
        assert!((r.factor(Nanos(2_500 * MS)) - 0.5).abs() < 1e-15);
        assert!((r.factor(Nanos(0)) - (1e-4f64).sqrt()).abs() < 1e-15);
        // Aggression 0.5: time_factor².
        let r = envoy(10_000, 0.5, 0.0);
        assert!((r.factor(Nanos(5_000 * MS)) - 0.25).abs() < 1e-15);
    }

    #[test]
    fn nginx_ramps_linearly_from_zero() {
        let r = Ramp::Nginx {
            window: Nanos(20_000 * MS),
        };
        assert_eq!(r.factor(Nanos(0)), 0.0);
        assert_eq!(r.factor(Nanos(5_000 * MS)), 0.25);
        assert_eq!(r.factor(Nanos(20_000 * MS)), 1.0);
        assert_eq!(r.factor(Nanos(u64::MAX)), 1.0);
    }

    #[test]
    fn state_tracks_each_backend_and_the_latest_window() {
        let mut s = SlowStart::new(envoy(1_000, 1.0, 10.0));
        assert!(!s.active(Nanos(0)));
        assert_eq!(s.factor(3, Nanos(0)), 1.0);
        s.start(3, Nanos(100 * MS));
        s.start(1, Nanos(600 * MS));
        assert!(s.active(Nanos(1_599 * MS)));
        assert!(!s.active(Nanos(1_600 * MS)));
        assert_eq!(s.factor(3, Nanos(600 * MS)), 0.5);
        assert_eq!(s.factor(1, Nanos(600 * MS)), 0.1);
        assert_eq!(s.factor(0, Nanos(600 * MS)), 1.0, "never ramped");
        assert_eq!(s.factor(3, Nanos(1_100 * MS)), 1.0, "its window is over");
        // A backend that becomes available again ramps again.
        s.start(3, Nanos(2_000 * MS));
        assert_eq!(s.factor(3, Nanos(2_250 * MS)), 0.25);
    }

    /// Routes one request every millisecond for `secs` seconds after backend 0 of four
    /// (equal weights) becomes available, each completing at once, and returns the share
    /// of picks backend 0 got in each second, beside the share the ramp gives it:
    /// the mean over the second of `f / (3 + f)`.
    fn shares(kind: &str, ramp: Ramp, secs: u64) -> Vec<(f64, f64)> {
        use crate::rng::{Stream, stream_rng};
        use crate::strategy::{Balancer, Outcome, registry};
        let spec = registry::find(kind).unwrap().defaults();
        let mut b = Balancer::new(
            spec.build(4, stream_rng(1, 0, Stream::Strategy, 0)),
            &[3; 4],
        );
        assert!(b.set_slow_start(ramp));
        let t0 = Nanos(5_000 * MS);
        b.set_up(0, false);
        for k in 0..5_000 {
            let i = b.route(Nanos(k * MS), k).unwrap();
            assert_ne!(i, 0, "down");
            b.complete(i, Nanos(1), Outcome::Ok, Nanos(k * MS));
        }
        b.set_up(0, true);
        b.available(0, t0);
        (0..secs)
            .map(|s| {
                let (mut mine, mut expected) = (0, 0.0);
                for k in 0..1000 {
                    let now = t0 + Nanos((s * 1000 + k) * MS);
                    let i = b.route(now, k).unwrap();
                    b.complete(i, Nanos(1), Outcome::Ok, now);
                    mine += usize::from(i == 0);
                    let f = ramp.factor(now - t0);
                    expected += f / (3.0 + f) / 1000.0;
                }
                (mine as f64 / 1000.0, expected)
            })
            .collect()
    }

    #[test]
    fn the_share_of_picks_follows_the_ramp_in_each_kind_that_applies_it() {
        let envoy = envoy(10_000, 1.0, 10.0);
        let nginx = Ramp::Nginx {
            window: Nanos(10_000 * MS),
        };
        for (kind, ramp) in [
            ("edf_wrr", envoy),
            ("least_request", envoy),
            ("edf_wrr", self::envoy(8_000, 2.0, 5.0)),
            ("smooth_weighted_round_robin", nginx),
        ] {
            let got = shares(kind, ramp, 12);
            // After the window least request is back to two random choices.
            let exact = if kind == "least_request" { 10 } else { 12 };
            for (s, &(share, expected)) in got[..exact].iter().enumerate() {
                // 1000 picks a second, each rounded to a whole pick, and the schedule
                // re-reads a weight only when it picks that backend (a lag of one of its
                // own picks): within 3 picks of the ramp's mean (at most 1.3 measured).
                assert!(
                    (share - expected).abs() <= 0.003,
                    "{kind} {ramp:?}, second {s}: {share} vs {expected}"
                );
            }
            // Warm after the window: its quarter (exactly, but for random choices).
            if kind == "least_request" {
                assert!((got[11].0 - 0.25).abs() < 0.06, "{got:?}");
            } else {
                assert_eq!(got[11].0, 0.25, "{kind}");
            }
        }
        // Envoy's floor: the first second gets 10 % of the weight, not nothing.
        assert!(shares("edf_wrr", envoy, 1)[0].0 > 0.03);
        // nginx starts from zero.
        assert!(shares("smooth_weighted_round_robin", nginx, 1)[0].0 < 0.02);
    }

    #[test]
    fn kinds_that_do_not_declare_slow_start_refuse_it() {
        use crate::rng::{Stream, stream_rng};
        use crate::strategy::registry::STRATEGIES;
        let envoy = envoy(10_000, 1.0, 10.0);
        let nginx = Ramp::Nginx {
            window: Nanos(10_000 * MS),
        };
        for def in STRATEGIES {
            let declared = def.about().reads.slow_start;
            for ramp in [envoy, nginx] {
                let mut s = def
                    .defaults()
                    .build(4, stream_rng(1, 0, Stream::Strategy, 0));
                assert_eq!(
                    s.set_slow_start(ramp),
                    declared == Some(ramp.kind()),
                    "{}",
                    def.about().kind
                );
            }
            if declared.is_some() {
                assert!(def.about().reads.weights, "{}", def.about().kind);
            }
        }
    }
}
