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
//! - **Envoy success-rate and failure-percentage ejection**
//!   (`source/common/upstream/outlier_detection_impl.cc`, `processSuccessRateEjections`): at
//!   each `interval` sweep, every host not ejected that answered at least
//!   `success_rate_request_volume` (100) requests in the last interval has a success rate;
//!   when at least `success_rate_minimum_hosts` (5) have one, a host below
//!   `mean − success_rate_stdev_factor / 1000 × stdev` (1900, population deviation) is
//!   ejected. Likewise a host with at least `failure_percentage_request_volume` (50)
//!   requests, among at least `failure_percentage_minimum_hosts` (5) such hosts, whose
//!   failure percentage is at least `failure_percentage_threshold` (85). Each kind of
//!   ejection is enforced with its probability `enforcing_*` (percent): Envoy's defaults are
//!   100 for consecutive 5xx and success rate, 0 for failure percentage — lbsim's default
//!   for `enforcing_success_rate` is 0, so that a policy naming only the consecutive-5xx
//!   fields keeps its meaning. All share `max_ejection_percent` and the ejection times.
//! - **Finagle failure accrual** (`FailureAccrualFactory`, `FailureAccrualPolicy.
//!   consecutiveFailures`): after `consecutive_failures` (5) failures in a row the host is
//!   marked dead for the next duration of `Backoff.equalJittered(mark_dead_for,
//!   max_mark_dead_for)` (5 s, 300 s: the first is 5 s, the k-th a uniform draw in
//!   [5 s × 2^(k−2), 5 s × 2^(k−1)), capped); then it is *probe open*: one request goes
//!   through and the host is unavailable until it answers; a success revives it (the
//!   backoff starts over), a failure marks it dead for the next duration. Finagle's
//!   balancers fail open when every node is unavailable: here the last available host is
//!   never marked dead. Finagle's default policy also ORs a success rate within 30 s,
//!   which is not modelled.
//!
//! Linkerd's (Finagle's) success-rate accrual and Envoy's gateway-failure and local-origin
//! split detectors are not modelled.

use serde::{Deserialize, Serialize};

use crate::time::Nanos;

/// `[strategies.policy.outlier]` as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutlierSpec {
    /// Envoy's outlier detection: consecutive 5xx, success rate, failure percentage.
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
        /// Chance (percent) that a consecutive-5xx ejection is carried out. Default 100.
        #[serde(default = "hundred")]
        enforcing_consecutive_5xx: f64,
        /// Chance (percent) that a success-rate ejection is carried out. Default 0 here
        /// (Envoy: 100), so that success-rate ejection is asked for explicitly.
        #[serde(default)]
        enforcing_success_rate: f64,
        /// Hosts with enough requests for success-rate ejection to run. Default 5.
        #[serde(default = "five")]
        success_rate_minimum_hosts: u32,
        /// Requests in the last interval for a host's success rate to count. Default 100.
        #[serde(default = "hundred_u32")]
        success_rate_request_volume: u32,
        /// The threshold is `mean − factor / 1000 × stdev`. Default 1900.
        #[serde(default = "nineteen_hundred")]
        success_rate_stdev_factor: u32,
        /// Chance (percent) that a failure-percentage ejection is carried out. Default 0.
        #[serde(default)]
        enforcing_failure_percentage: f64,
        /// Failure percentage that ejects a host. Default 85.
        #[serde(default = "eighty_five")]
        failure_percentage_threshold: f64,
        /// Hosts with enough requests for failure-percentage ejection to run. Default 5.
        #[serde(default = "five")]
        failure_percentage_minimum_hosts: u32,
        /// Requests in the last interval for a host's failure percentage to count.
        /// Default 50.
        #[serde(default = "fifty")]
        failure_percentage_request_volume: u32,
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
    /// Finagle's failure accrual (consecutive failures).
    Finagle {
        /// Consecutive failures that mark a host dead. Default 5.
        #[serde(default = "five")]
        consecutive_failures: u32,
        /// First time marked dead (seconds): `Backoff.equalJittered`'s start. Default 5.
        #[serde(default = "five_f")]
        mark_dead_for: f64,
        /// Longest time marked dead (seconds). Default 300.
        #[serde(default = "three_hundred")]
        max_mark_dead_for: f64,
    },
}

fn one() -> u32 {
    1
}
fn five() -> u32 {
    5
}
fn five_f() -> f64 {
    5.0
}
fn ten() -> f64 {
    10.0
}
fn thirty() -> f64 {
    30.0
}
fn fifty() -> u32 {
    50
}
fn eighty_five() -> f64 {
    85.0
}
fn hundred() -> f64 {
    100.0
}
fn hundred_u32() -> u32 {
    100
}
fn three_hundred() -> f64 {
    300.0
}
fn nineteen_hundred() -> u32 {
    1900
}

/// What happened to a host in [`Detector::on_result`] or a sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ejection {
    /// Ejected until the given time (nginx, Finagle), or until a sweep after it (Envoy).
    Until(Nanos),
    /// Back in the rotation (Finagle: its probe succeeded).
    Back,
}

/// Why Envoy ejected a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    /// Consecutive errors.
    Consecutive,
    /// Success rate below the cluster's threshold.
    SuccessRate,
    /// Failure percentage at or above the threshold.
    FailurePercentage,
}

/// Finagle's probe state of a host that came back from being marked dead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Probe {
    /// Alive (or dead: see `ejected_until`).
    #[default]
    None,
    /// The next request goes through as a probe.
    Open,
    /// The probe is out: unavailable until it answers.
    Closed,
}

#[derive(Clone, Copy, Debug, Default)]
struct Host {
    /// Consecutive errors (Envoy, Finagle), or errors in the current window (nginx).
    errors: u32,
    /// Start of nginx's failure window.
    window: Nanos,
    /// Ejected until (Envoy: eligible to return at a sweep from then on).
    ejected_until: Option<Nanos>,
    /// Times ejected (Envoy's multiplier).
    times: u32,
    /// Answers in Envoy's current interval: successes and all.
    ok: u32,
    total: u32,
    /// Finagle: probe state, and the next time marked dead (zero: the start).
    probe: Probe,
    next_dead: Nanos,
    /// Finagle: dead durations handed out since the last revival.
    dead_count: u32,
}

/// One balancer's outlier detector over `n` hosts.
#[derive(Clone, Debug)]
pub struct Detector {
    spec: OutlierSpec,
    hosts: Vec<Host>,
    ejected: u32,
}

/// Whether an enforcement of `percent` % happens: no draw at 0 or 100, so that the
/// defaults draw nothing.
fn enforced(percent: f64, draw: &mut dyn FnMut() -> f64) -> bool {
    if percent >= 100.0 {
        true
    } else if percent <= 0.0 {
        false
    } else {
        draw() * 100.0 < percent
    }
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

    /// Hosts ejected now (Finagle: marked dead or probing).
    pub fn ejected(&self) -> u32 {
        self.ejected
    }

    /// Whether host `i` is out of the rotation.
    pub fn is_ejected(&self, i: usize) -> bool {
        let h = &self.hosts[i];
        h.ejected_until.is_some() || h.probe == Probe::Closed
    }

    /// Envoy's sweep interval (`None` for nginx and Finagle, whose hosts come back on
    /// their own timer).
    pub fn interval(&self) -> Option<Nanos> {
        match self.spec {
            OutlierSpec::Envoy { interval, .. } => Some(Nanos::from_secs_f64(interval)),
            OutlierSpec::Nginx { .. } | OutlierSpec::Finagle { .. } => None,
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
            OutlierSpec::Nginx { .. } | OutlierSpec::Finagle { .. } => {
                f64::from(self.ejected + 1) < n
            }
        }
    }

    /// Envoy: ejects host `i` at `now` for `base_ejection_time` × times ejected.
    fn envoy_eject(&mut self, i: usize, now: Nanos) -> Ejection {
        let OutlierSpec::Envoy {
            base_ejection_time,
            max_ejection_time,
            ..
        } = self.spec
        else {
            unreachable!("Envoy only")
        };
        let h = &mut self.hosts[i];
        h.times += 1;
        let t = (base_ejection_time * f64::from(h.times))
            .min(max_ejection_time.max(base_ejection_time));
        let until = now + Nanos::from_secs_f64(t);
        h.errors = 0;
        h.ejected_until = Some(until);
        self.ejected += 1;
        Ejection::Until(until)
    }

    /// Finagle: the next time marked dead (`Backoff.equalJittered`), advancing the stream.
    fn finagle_dead_for(&mut self, i: usize, draw: &mut dyn FnMut() -> f64) -> Nanos {
        let OutlierSpec::Finagle {
            mark_dead_for,
            max_mark_dead_for,
            ..
        } = self.spec
        else {
            unreachable!("Finagle only")
        };
        let (start, max) = (
            Nanos::from_secs_f64(mark_dead_for),
            Nanos::from_secs_f64(max_mark_dead_for.max(mark_dead_for)),
        );
        let h = &mut self.hosts[i];
        let d = if h.dead_count == 0 {
            start
        } else {
            h.next_dead
        };
        h.dead_count += 1;
        // The one after: half = start × 2^(k−1), plus a uniform draw below half.
        let shift = h.dead_count.min(62) - 1;
        let half = start
            .0
            .checked_shl(shift)
            .filter(|&x| x < max.0)
            .unwrap_or(max.0);
        let jitter = (draw() * half as f64) as u64;
        h.next_dead = if half >= max.0 || half >= max.0 - jitter.min(max.0) {
            max
        } else {
            Nanos(half + jitter)
        };
        d
    }

    /// An answer from host `i` at `now`: `ok`, or an error that counts. Returns the
    /// ejection it causes (or Finagle's revival), if any. `draw` gives uniform draws in
    /// `[0, 1)`, taken only for an enforcement below 100 % and Finagle's jitter.
    pub fn on_result(
        &mut self,
        i: usize,
        ok: bool,
        now: Nanos,
        draw: &mut dyn FnMut() -> f64,
    ) -> Option<Ejection> {
        let room = self.room();
        let h = &mut self.hosts[i];
        if h.ejected_until.is_some() {
            // Answers to requests sent before the ejection change nothing.
            return None;
        }
        h.ok += u32::from(ok);
        h.total += 1;
        if let OutlierSpec::Finagle {
            consecutive_failures,
            ..
        } = self.spec
        {
            let probing = h.probe == Probe::Closed;
            if ok {
                h.errors = 0;
                if probing {
                    // Revived: the backoff starts over.
                    h.probe = Probe::None;
                    h.dead_count = 0;
                    self.ejected -= 1;
                    return Some(Ejection::Back);
                }
                return None;
            }
            h.errors += 1;
            if h.errors < consecutive_failures || !(room || probing) {
                if probing {
                    // Finagle probes again when its policy does not mark the host dead.
                    h.probe = Probe::Open;
                    self.ejected -= 1;
                    return Some(Ejection::Back);
                }
                return None;
            }
            h.probe = Probe::None;
            if !probing {
                self.ejected += 1;
            }
            let until = now + self.finagle_dead_for(i, draw);
            self.hosts[i].ejected_until = Some(until);
            return Some(Ejection::Until(until));
        }
        if ok {
            h.errors = 0;
            return None;
        }
        let until = match self.spec {
            OutlierSpec::Envoy {
                consecutive_5xx,
                enforcing_consecutive_5xx,
                ..
            } => {
                h.errors += 1;
                if h.errors < consecutive_5xx || !room {
                    return None;
                }
                if !enforced(enforcing_consecutive_5xx, draw) {
                    return None;
                }
                return Some(self.envoy_eject(i, now));
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
            OutlierSpec::Finagle { .. } => unreachable!("handled above"),
        };
        h.errors = 0;
        h.ejected_until = Some(until);
        self.ejected += 1;
        Some(Ejection::Until(until))
    }

    /// A request is sent to host `i`: Finagle's probe goes out, and the host is
    /// unavailable until it answers — unless it is the last one available (Finagle's
    /// balancers fail open). Returns whether the host leaves the rotation.
    pub fn on_dispatch(&mut self, i: usize) -> bool {
        let room = self.room();
        let h = &mut self.hosts[i];
        if h.probe == Probe::Open && room {
            h.probe = Probe::Closed;
            self.ejected += 1;
            true
        } else {
            false
        }
    }

    /// nginx and Finagle: host `i`'s time out is over at `now` (its timer fired). Returns
    /// whether it came back (Finagle: as a probe).
    pub fn on_timer(&mut self, i: usize, now: Nanos) -> bool {
        let finagle = matches!(self.spec, OutlierSpec::Finagle { .. });
        let h = &mut self.hosts[i];
        if h.ejected_until.is_some_and(|t| t <= now) {
            h.ejected_until = None;
            if finagle {
                h.probe = Probe::Open;
            }
            self.ejected -= 1;
            true
        } else {
            false
        }
    }

    /// Envoy's sweep at `now`: returns the hosts that come back (ejection time over),
    /// lowers the ejection count of hosts that are in, then runs success-rate and
    /// failure-percentage ejection over the interval's answers (pushed onto `ejected` with
    /// their ejection) and starts a new interval.
    pub fn sweep(
        &mut self,
        now: Nanos,
        draw: &mut dyn FnMut() -> f64,
        ejected: &mut Vec<(usize, Ejection, Detection)>,
    ) -> Vec<usize> {
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
        if let OutlierSpec::Envoy {
            enforcing_success_rate,
            success_rate_minimum_hosts,
            success_rate_request_volume,
            success_rate_stdev_factor,
            enforcing_failure_percentage,
            failure_percentage_threshold,
            failure_percentage_minimum_hosts,
            failure_percentage_request_volume,
            ..
        } = self.spec
            && (enforcing_success_rate > 0.0 || enforcing_failure_percentage > 0.0)
        {
            // Success rates (percent) of the hosts in, from the last interval's answers.
            let rates = |volume: u32| -> Vec<(usize, f64)> {
                self.hosts
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| h.ejected_until.is_none() && h.total > 0 && h.total >= volume)
                    .map(|(i, h)| (i, f64::from(h.ok) * 100.0 / f64::from(h.total)))
                    .collect()
            };
            let sr = rates(success_rate_request_volume);
            let fp = rates(failure_percentage_request_volume);
            if !sr.is_empty() && sr.len() >= success_rate_minimum_hosts as usize {
                let n = sr.len() as f64;
                let mean = sr.iter().map(|r| r.1).sum::<f64>() / n;
                let var = sr.iter().map(|r| (r.1 - mean).powi(2)).sum::<f64>() / n;
                let threshold = mean - f64::from(success_rate_stdev_factor) / 1000.0 * var.sqrt();
                for &(i, rate) in &sr {
                    if rate < threshold
                        && self.hosts[i].ejected_until.is_none()
                        && self.room()
                        && enforced(enforcing_success_rate, draw)
                    {
                        let e = self.envoy_eject(i, now);
                        ejected.push((i, e, Detection::SuccessRate));
                    }
                }
            }
            if !fp.is_empty() && fp.len() >= failure_percentage_minimum_hosts as usize {
                for &(i, rate) in &fp {
                    if 100.0 - rate >= failure_percentage_threshold
                        && self.hosts[i].ejected_until.is_none()
                        && self.room()
                        && enforced(enforcing_failure_percentage, draw)
                    {
                        let e = self.envoy_eject(i, now);
                        ejected.push((i, e, Detection::FailurePercentage));
                    }
                }
            }
        }
        for h in &mut self.hosts {
            h.ok = 0;
            h.total = 0;
        }
        back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn spec(toml_text: &str) -> OutlierSpec {
        toml::from_str(toml_text).unwrap()
    }

    fn envoy(n: usize, percent: f64) -> Detector {
        Detector::new(
            &spec(&format!(
                "kind = \"envoy\"\nmax_ejection_percent = {percent}\n"
            )),
            n,
        )
    }

    #[test]
    fn envoy_ejects_after_consecutive_errors_for_base_times_count() {
        let mut d = envoy(10, 10.0);
        for _ in 0..4 {
            assert_eq!(d.on_result(3, false, Nanos(S), &mut || 0.5), None);
        }
        // A success in between resets the count.
        assert_eq!(d.on_result(3, true, Nanos(S), &mut || 0.5), None);
        for _ in 0..4 {
            assert_eq!(d.on_result(3, false, Nanos(S), &mut || 0.5), None);
        }
        assert_eq!(
            d.on_result(3, false, Nanos(S), &mut || 0.5),
            Some(Ejection::Until(Nanos(31 * S)))
        );
        assert!(d.is_ejected(3));
        // Back at the first sweep at or after 31 s.
        assert!(
            d.sweep(Nanos(30 * S), &mut || 0.5, &mut Vec::new())
                .is_empty()
        );
        assert_eq!(
            d.sweep(Nanos(40 * S), &mut || 0.5, &mut Vec::new()),
            vec![3]
        );
        // Ejected again right away: twice the base time.
        for _ in 0..5 {
            d.on_result(3, false, Nanos(41 * S), &mut || 0.5);
        }
        assert!(d.is_ejected(3));
        // 41 s + 2 × 30 s = 101 s: still out at the 100 s sweep, back at 110 s.
        assert!(
            d.sweep(Nanos(100 * S), &mut || 0.5, &mut Vec::new())
                .is_empty()
        );
        assert_eq!(
            d.sweep(Nanos(110 * S), &mut || 0.5, &mut Vec::new()),
            vec![3]
        );
        // Each sweep with the host in lowers its count: after two, it is back to 30 s.
        d.sweep(Nanos(120 * S), &mut || 0.5, &mut Vec::new());
        d.sweep(Nanos(130 * S), &mut || 0.5, &mut Vec::new());
        let e = (0..5)
            .filter_map(|_| d.on_result(3, false, Nanos(131 * S), &mut || 0.5))
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
                    d.on_result(i, false, Nanos(S), &mut || 0.5);
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
        assert_eq!(d.on_result(0, false, Nanos(0), &mut || 0.5), None);
        // The second failure comes after the window: it starts a new count.
        assert_eq!(d.on_result(0, false, Nanos(11 * S), &mut || 0.5), None);
        assert_eq!(
            d.on_result(0, false, Nanos(12 * S), &mut || 0.5),
            Some(Ejection::Until(Nanos(22 * S)))
        );
        assert!(!d.on_timer(0, Nanos(21 * S)));
        assert!(d.on_timer(0, Nanos(22 * S)));
        // The last server up is never ejected.
        for i in 0..3 {
            d.on_result(i, false, Nanos(30 * S), &mut || 0.5);
            d.on_result(i, false, Nanos(30 * S), &mut || 0.5);
        }
        assert_eq!(d.ejected(), 2);
    }

    /// Feeds `ok` successes and `failed` failures from host `i` at `now`.
    fn answers(d: &mut Detector, i: usize, ok: u32, failed: u32, now: Nanos) {
        for k in 0..ok + failed {
            // Interleaved, so that no run of failures is long enough for consecutive 5xx.
            d.on_result(i, k % (ok + failed).max(1) < ok, now, &mut || 0.5);
        }
    }

    #[test]
    fn envoy_success_rate_ejects_hosts_below_mean_minus_factor_stdev() {
        let sr = |enforcing: f64| {
            spec(&format!(
                "kind = \"envoy\"\nconsecutive_5xx = 1000\nmax_ejection_percent = 50\nenforcing_success_rate = {enforcing}\n"
            ))
        };
        let mut d = Detector::new(&sr(100.0), 10);
        for i in 0..10 {
            // Hosts 0–7 at 99–100 %, host 8 at 60 %, host 9 with too few requests.
            let (ok, failed) = match i {
                8 => (120, 80),
                9 => (10, 40),
                _ => (200 - (i as u32 % 3), i as u32 % 3),
            };
            answers(&mut d, i, ok, failed, Nanos(S));
        }
        let mut out = Vec::new();
        assert!(d.sweep(Nanos(10 * S), &mut || 0.5, &mut out).is_empty());
        // Mean of the nine rates with volume ≥ 100 is about 95.5 %, the population
        // deviation about 12.6, so the threshold (1.9 σ) is about 71.5 %: host 8 only.
        assert_eq!(
            out,
            vec![(8, Ejection::Until(Nanos(40 * S)), Detection::SuccessRate)]
        );
        // The next interval has no answers: nothing more.
        out.clear();
        d.sweep(Nanos(20 * S), &mut || 0.5, &mut out);
        assert!(out.is_empty());
        // lbsim's default enforcement (0 %) computes the same and ejects nothing.
        let mut d = Detector::new(&sr(0.0), 10);
        for i in 0..9 {
            answers(
                &mut d,
                i,
                if i == 8 { 120 } else { 200 },
                if i == 8 { 80 } else { 0 },
                Nanos(S),
            );
        }
        d.sweep(Nanos(10 * S), &mut || 0.5, &mut out);
        assert!(out.is_empty());
        // Fewer than success_rate_minimum_hosts (5) hosts with enough volume: no ejection.
        let mut d = Detector::new(&sr(100.0), 10);
        for i in 0..4 {
            answers(
                &mut d,
                i,
                if i == 3 { 10 } else { 200 },
                if i == 3 { 190 } else { 0 },
                Nanos(S),
            );
        }
        d.sweep(Nanos(10 * S), &mut || 0.5, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn envoy_failure_percentage_shares_the_ejection_cap() {
        let fp = spec(
            "kind = \"envoy\"\nconsecutive_5xx = 1000\nmax_ejection_percent = 30\nenforcing_failure_percentage = 100\n",
        );
        let mut d = Detector::new(&fp, 10);
        // Every host fails 90 % of 60 requests: all are at or above 85 %, the cap (30 % of
        // 10) stops at 3.
        for i in 0..10 {
            answers(&mut d, i, 6, 54, Nanos(S));
        }
        let mut out = Vec::new();
        d.sweep(Nanos(10 * S), &mut || 0.5, &mut out);
        let ids: Vec<usize> = out.iter().map(|e| e.0).collect();
        assert_eq!(ids, vec![0, 1, 2]);
        assert!(out.iter().all(|e| e.2 == Detection::FailurePercentage));
        assert_eq!(d.ejected(), 3);
        // Below the request volume (50): not judged.
        let mut d = Detector::new(&fp, 10);
        for i in 0..10 {
            answers(&mut d, i, 4, 45, Nanos(S));
        }
        out.clear();
        d.sweep(Nanos(10 * S), &mut || 0.5, &mut out);
        assert!(out.is_empty());
        // Enforcement of 50 % draws: a draw of 0.7 spares, 0.2 ejects.
        let half =
            spec("kind = \"envoy\"\nconsecutive_5xx = 1000\nenforcing_failure_percentage = 50\n");
        for (draw, ejected) in [(0.7, false), (0.2, true)] {
            let mut d = Detector::new(&half, 5);
            for i in 0..5 {
                answers(
                    &mut d,
                    i,
                    if i == 0 { 0 } else { 60 },
                    if i == 0 { 60 } else { 0 },
                    Nanos(S),
                );
            }
            out.clear();
            d.sweep(Nanos(10 * S), &mut || draw, &mut out);
            assert_eq!(!out.is_empty(), ejected, "draw {draw}");
        }
    }

    #[test]
    fn finagle_marks_dead_then_probes_with_equal_jittered_backoff() {
        let mut d = Detector::new(&spec("kind = \"finagle\"\n"), 4);
        assert_eq!(d.interval(), None);
        for _ in 0..4 {
            assert_eq!(d.on_result(1, false, Nanos(S), &mut || 0.5), None);
        }
        // The fifth failure in a row: dead for 5 s.
        assert_eq!(
            d.on_result(1, false, Nanos(S), &mut || 0.5),
            Some(Ejection::Until(Nanos(6 * S)))
        );
        assert!(d.is_ejected(1));
        assert!(!d.on_timer(1, Nanos(5 * S)));
        assert!(d.on_timer(1, Nanos(6 * S)));
        // Probe open: in the rotation until one request goes out.
        assert!(!d.is_ejected(1));
        assert!(d.on_dispatch(1));
        assert!(d.is_ejected(1) && d.ejected() == 1);
        assert!(!d.on_dispatch(2), "only a probing host");
        // The probe fails: dead for the next duration, 5 s × (1 + draw) = 7.5 s.
        assert_eq!(
            d.on_result(1, false, Nanos(7 * S), &mut || 0.5),
            Some(Ejection::Until(Nanos(14 * S + S / 2)))
        );
        assert!(d.on_timer(1, Nanos(15 * S)));
        d.on_dispatch(1);
        // Then 10 s × (1 + draw), the draw taken when the previous duration was handed
        // out (as Finagle advances its backoff stream): 15 s.
        assert_eq!(
            d.on_result(1, false, Nanos(16 * S), &mut || 0.25),
            Some(Ejection::Until(Nanos(31 * S)))
        );
        assert!(d.on_timer(1, Nanos(31 * S)));
        d.on_dispatch(1);
        // A successful probe revives it, and the backoff starts over.
        assert_eq!(
            d.on_result(1, true, Nanos(31 * S), &mut || 0.5),
            Some(Ejection::Back)
        );
        assert!(!d.is_ejected(1) && d.ejected() == 0);
        for _ in 0..5 {
            d.on_result(1, false, Nanos(40 * S), &mut || 0.5);
        }
        assert!(d.is_ejected(1));
        assert!(!d.on_timer(1, Nanos(44 * S)));
        assert!(d.on_timer(1, Nanos(45 * S)), "5 s again");
        // The last host in the rotation is never marked dead (Finagle fails open).
        let mut d = Detector::new(&spec("kind = \"finagle\"\nconsecutive_failures = 1\n"), 3);
        for i in 0..3 {
            d.on_result(i, false, Nanos(S), &mut || 0.5);
        }
        assert_eq!(d.ejected(), 2);
    }

    #[test]
    fn finagle_backoff_is_capped() {
        let mut d = Detector::new(
            &spec(
                "kind = \"finagle\"\nconsecutive_failures = 1\nmark_dead_for = 5\nmax_mark_dead_for = 20\n",
            ),
            2,
        );
        let mut t = Nanos(0);
        let mut lengths = Vec::new();
        for _ in 0..6 {
            let Some(Ejection::Until(until)) = d.on_result(0, false, t, &mut || 0.99) else {
                panic!("marked dead");
            };
            lengths.push((until - t).as_secs_f64());
            assert!(d.on_timer(0, until));
            d.on_dispatch(0);
            t = until;
        }
        // 5, then 5 × 1.99, 10 × 1.99, then 20 × (1 + draw) ≥ 20: capped.
        assert_eq!(lengths[0], 5.0);
        assert!((lengths[1] - 9.95).abs() < 1e-6, "{lengths:?}");
        assert!((lengths[2] - 19.9).abs() < 1e-6, "{lengths:?}");
        assert!(lengths[3..].iter().all(|&l| l == 20.0), "{lengths:?}");
    }
}
