//! Outlier ejection: a balancer stops sending to a backend that keeps failing, for a
//! while, as passive health checking.
//!
//! - **Envoy outlier detection** (`outlier_detection`, consecutive 5xx): a host whose
//!   `consecutive_5xx` (default 5) last answers were all errors is ejected at once, unless
//!   that would take the ejected share above `max_ejection_percent` (default 10 %; Envoy
//!   ejects one host whatever the percentage). It stays out `base_ejection_time` (30 s) ×
//!   the number of times it was ejected, capped at `max_ejection_time` (300 s), and comes
//!   back at the first `interval` sweep (10 s) after that; each sweep in which a host is
//!   not ejected lowers its count of ejections by one. Locally originated failures
//!   (timeouts, connection failures) count as 5xx, as Envoy does unless
//!   `split_external_local_origin_errors` is set; refusals ("429") do not.
//! - **nginx passive checks** (`max_fails` default 1, `fail_timeout` default 10 s): after
//!   `max_fails` failures within `fail_timeout` the server is unavailable for
//!   `fail_timeout`; a success resets the count. When every server would be unavailable
//!   nginx tries them all again, so the last one is never ejected.
//!
//! Success-rate and failure-percentage ejection (Envoy), Finagle failure accrual and
//! Linkerd's are not modelled.

use serde::{Deserialize, Serialize};

use crate::time::Nanos;

/// `[strategies.policy.outlier]` as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutlierSpec {
    /// Envoy's consecutive-5xx outlier detection.
    Envoy {
        /// Consecutive errors that eject a host. Default 5.
        #[serde(default = "five")]
        consecutive_5xx: u32,
        /// Seconds between sweeps that bring hosts back. Default 10.
        #[serde(default = "ten")]
        interval: f64,
        /// Seconds of the first ejection (multiplied by the times ejected). Default 30.
        #[serde(default = "thirty")]
        base_ejection_time: f64,
        /// Most hosts ejected at once, in percent of the hosts (one always may be).
        /// Default 10.
        #[serde(default = "ten")]
        max_ejection_percent: f64,
        /// Longest ejection (seconds). Default 300.
        #[serde(default = "three_hundred")]
        max_ejection_time: f64,
    },
    /// nginx's passive health checks.
    Nginx {
        /// Failures within `fail_timeout` that make a server unavailable. Default 1.
        #[serde(default = "one")]
        max_fails: u32,
        /// Window for counting failures and time unavailable (seconds). Default 10.
        #[serde(default = "ten")]
        fail_timeout: f64,
    },
}

fn one() -> u32 {
    1
}
fn five() -> u32 {
    5
}
fn ten() -> f64 {
    10.0
}
fn thirty() -> f64 {
    30.0
}
fn three_hundred() -> f64 {
    300.0
}

/// What happened to a host in [`Detector::on_result`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ejection {
    /// Ejected until the given time (nginx), or until a sweep after it (Envoy).
    Until(Nanos),
}

#[derive(Clone, Copy, Debug, Default)]
struct Host {
    /// Consecutive errors (Envoy), or errors in the current window (nginx).
    errors: u32,
    /// Start of nginx's failure window.
    window: Nanos,
    /// Ejected until (Envoy: eligible to return at a sweep from then on).
    ejected_until: Option<Nanos>,
    /// Times ejected (Envoy's multiplier).
    times: u32,
}

/// One balancer's outlier detector over `n` hosts.
#[derive(Clone, Debug)]
pub struct Detector {
    spec: OutlierSpec,
    hosts: Vec<Host>,
    ejected: u32,
}

impl Detector {
    /// A detector following a checked `spec`, over `n` hosts, none ejected.
    pub fn new(spec: &OutlierSpec, n: usize) -> Detector {
        Detector {
            spec: spec.clone(),
            hosts: vec![Host::default(); n],
            ejected: 0,
        }
    }

    /// Hosts ejected now.
    pub fn ejected(&self) -> u32 {
        self.ejected
    }

    /// Whether host `i` is ejected.
    pub fn is_ejected(&self, i: usize) -> bool {
        self.hosts[i].ejected_until.is_some()
    }

    /// Envoy's sweep interval (`None` for nginx, whose hosts come back on their own timer).
    pub fn interval(&self) -> Option<Nanos> {
        match self.spec {
            OutlierSpec::Envoy { interval, .. } => Some(Nanos::from_secs_f64(interval)),
            OutlierSpec::Nginx { .. } => None,
        }
    }

    /// Whether one more host may be ejected now.
    fn room(&self) -> bool {
        let n = self.hosts.len() as f64;
        match self.spec {
            OutlierSpec::Envoy {
                max_ejection_percent,
                ..
            } => {
                self.ejected == 0 || 100.0 * f64::from(self.ejected + 1) / n <= max_ejection_percent
            }
            OutlierSpec::Nginx { .. } => f64::from(self.ejected + 1) < n,
        }
    }

    /// An answer from host `i` at `now`: `ok`, or an error that counts. Returns the
    /// ejection it causes, if any.
    pub fn on_result(&mut self, i: usize, ok: bool, now: Nanos) -> Option<Ejection> {
        let room = self.room();
        let h = &mut self.hosts[i];
        if h.ejected_until.is_some() {
            // Answers to requests sent before the ejection change nothing.
            return None;
        }
        if ok {
            h.errors = 0;
            return None;
        }
        let until = match self.spec {
            OutlierSpec::Envoy {
                consecutive_5xx,
                base_ejection_time,
                max_ejection_time,
                ..
            } => {
                h.errors += 1;
                if h.errors < consecutive_5xx || !room {
                    return None;
                }
                h.times += 1;
                let t = (base_ejection_time * f64::from(h.times))
                    .min(max_ejection_time.max(base_ejection_time));
                now + Nanos::from_secs_f64(t)
            }
            OutlierSpec::Nginx {
                max_fails,
                fail_timeout,
            } => {
                let timeout = Nanos::from_secs_f64(fail_timeout);
                if h.errors == 0 || now >= h.window + timeout {
                    h.errors = 0;
                    h.window = now;
                }
                h.errors += 1;
                if h.errors < max_fails || !room {
                    return None;
                }
                now + timeout
            }
        };
        h.errors = 0;
        h.ejected_until = Some(until);
        self.ejected += 1;
        Some(Ejection::Until(until))
    }

    /// nginx: host `i`'s time out is over at `now` (its timer fired). Returns whether it
    /// came back.
    pub fn on_timer(&mut self, i: usize, now: Nanos) -> bool {
        let h = &mut self.hosts[i];
        if h.ejected_until.is_some_and(|t| t <= now) {
            h.ejected_until = None;
            self.ejected -= 1;
            true
        } else {
            false
        }
    }

    /// Envoy's sweep at `now`: returns the hosts that come back (ejection time over), and
    /// lowers the ejection count of hosts that are in.
    pub fn sweep(&mut self, now: Nanos) -> Vec<usize> {
        let mut back = Vec::new();
        for (i, h) in self.hosts.iter_mut().enumerate() {
            match h.ejected_until {
                Some(t) if t <= now => {
                    h.ejected_until = None;
                    self.ejected -= 1;
                    back.push(i);
                }
                Some(_) => {}
                None => h.times = h.times.saturating_sub(1),
            }
        }
        back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn envoy(n: usize, percent: f64) -> Detector {
        Detector::new(
            &OutlierSpec::Envoy {
                consecutive_5xx: 5,
                interval: 10.0,
                base_ejection_time: 30.0,
                max_ejection_percent: percent,
                max_ejection_time: 300.0,
            },
            n,
        )
    }

    #[test]
    fn envoy_ejects_after_consecutive_errors_for_base_times_count() {
        let mut d = envoy(10, 10.0);
        for _ in 0..4 {
            assert_eq!(d.on_result(3, false, Nanos(S)), None);
        }
        // A success in between resets the count.
        assert_eq!(d.on_result(3, true, Nanos(S)), None);
        for _ in 0..4 {
            assert_eq!(d.on_result(3, false, Nanos(S)), None);
        }
        assert_eq!(
            d.on_result(3, false, Nanos(S)),
            Some(Ejection::Until(Nanos(31 * S)))
        );
        assert!(d.is_ejected(3));
        // Back at the first sweep at or after 31 s.
        assert!(d.sweep(Nanos(30 * S)).is_empty());
        assert_eq!(d.sweep(Nanos(40 * S)), vec![3]);
        // Ejected again right away: twice the base time.
        for _ in 0..5 {
            d.on_result(3, false, Nanos(41 * S));
        }
        assert!(d.is_ejected(3));
        // 41 s + 2 × 30 s = 101 s: still out at the 100 s sweep, back at 110 s.
        assert!(d.sweep(Nanos(100 * S)).is_empty());
        assert_eq!(d.sweep(Nanos(110 * S)), vec![3]);
        // Each sweep with the host in lowers its count: after two, it is back to 30 s.
        d.sweep(Nanos(120 * S));
        d.sweep(Nanos(130 * S));
        let e = (0..5)
            .filter_map(|_| d.on_result(3, false, Nanos(131 * S)))
            .last();
        assert_eq!(e, Some(Ejection::Until(Nanos(161 * S))));
    }

    #[test]
    fn envoy_never_ejects_beyond_max_percent_but_always_one() {
        // 10 % of 10 hosts: one. 10 % of 5 hosts: still one (Envoy ejects at least one).
        for n in [5, 10, 30] {
            let mut d = envoy(n, 10.0);
            for i in 0..n {
                for _ in 0..5 {
                    d.on_result(i, false, Nanos(S));
                }
            }
            let cap = ((n as f64 * 0.1).floor() as u32).max(1);
            assert_eq!(d.ejected(), cap, "{n} hosts");
        }
    }

    #[test]
    fn nginx_counts_failures_within_fail_timeout() {
        let spec = OutlierSpec::Nginx {
            max_fails: 2,
            fail_timeout: 10.0,
        };
        let mut d = Detector::new(&spec, 3);
        assert_eq!(d.on_result(0, false, Nanos(0)), None);
        // The second failure comes after the window: it starts a new count.
        assert_eq!(d.on_result(0, false, Nanos(11 * S)), None);
        assert_eq!(
            d.on_result(0, false, Nanos(12 * S)),
            Some(Ejection::Until(Nanos(22 * S)))
        );
        assert!(!d.on_timer(0, Nanos(21 * S)));
        assert!(d.on_timer(0, Nanos(22 * S)));
        // The last server up is never ejected.
        for i in 0..3 {
            d.on_result(i, false, Nanos(30 * S));
            d.on_result(i, false, Nanos(30 * S));
        }
        assert_eq!(d.ejected(), 2);
    }
}
