//! gRPC `weighted_round_robin` (gRFC A58, "client-side weighted round robin LB policy"):
//! backend weights come from server-reported load, `weight = qps / utilization`, and an
//! EDF schedule ([`super::edf`]) spreads picks by weight.
//!
//! Exact semantics here:
//! - Load reports are [`Backend::load`]. Every `weight_update_period` (default 1 s; A58's
//!   minimum is 100 ms) the balancer differences each backend's newest report against the
//!   previous one it used: `qps = Δcompleted / Δt`, `utilization = Δbusy_time / (Δt ×
//!   workers)`. A report with `qps > 0` and `utilization > 0` sets the weight; the first
//!   such report starts `non_empty_since`.
//! - A weight is used only once it has been non-empty for `blackout_period` (default
//!   10 s) and while its last update is younger than `weight_expiration_period` (default
//!   3 min); an expired weight also restarts the blackout (A58's `non_empty_since` reset).
//! - Backends without a usable weight get the mean of the usable ones; with none at all,
//!   every backend gets weight 1 (round robin). A58's `error_utilization_penalty` does
//!   not apply (reports carry no error rate). Configured weights are ignored, as in gRPC.
//!
//! The schedule is rebuilt at each update (A58 rebuilds its scheduler on every weight
//! update timer). Time comes only from `PickContext::now`.

use super::SpecError;
use super::edf::EdfScheduler;
use super::registry::{About, Kind, Knob, PickCost, Reads, Split};
use super::{Backends, LoadReport, PickContext, Strategy};
use crate::time::Nanos;

/// gRPC weighted round robin knobs (gRFC A58 defaults in [`GrpcWrrConfig::default`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrpcWrrConfig {
    /// How often weights are recomputed.
    pub weight_update_period: Nanos,
    /// How long a backend must report load before its weight is used.
    pub blackout_period: Nanos,
    /// How long a weight stays valid without a new report.
    pub weight_expiration_period: Nanos,
}

impl Default for GrpcWrrConfig {
    fn default() -> GrpcWrrConfig {
        GrpcWrrConfig {
            weight_update_period: Nanos(1_000_000_000),
            blackout_period: Nanos(10_000_000_000),
            weight_expiration_period: Nanos(180_000_000_000),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct HostWeight {
    /// The report the last difference was taken from.
    last_report: Option<LoadReport>,
    /// qps / utilization from the newest valid difference (0: none yet).
    weight: f64,
    /// When the current run of valid reports began (`None`: infinite past).
    non_empty_since: Option<Nanos>,
    /// When `weight` was last set.
    last_updated: Nanos,
}

/// gRPC weighted round robin over server-reported load.
#[derive(Debug)]
pub struct GrpcWeightedRoundRobin {
    config: GrpcWrrConfig,
    hosts: Vec<HostWeight>,
    weights: Vec<f64>,
    next_update: Option<Nanos>,
    edf: EdfScheduler,
}

impl GrpcWeightedRoundRobin {
    /// gRPC WRR with the given knobs.
    pub fn new(config: GrpcWrrConfig) -> GrpcWeightedRoundRobin {
        GrpcWeightedRoundRobin {
            config,
            hosts: Vec::new(),
            weights: Vec::new(),
            next_update: None,
            edf: EdfScheduler::default(),
        }
    }

    /// The weights the current schedule uses.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    fn update(&mut self, backends: &Backends, ctx: &PickContext<'_>) {
        let now = ctx.now;
        let c = self.config;
        self.hosts.resize(backends.len(), HostWeight::default());
        for (i, h) in self.hosts.iter_mut().enumerate() {
            let Some(r) = ctx.load(i) else { continue };
            match h.last_report {
                Some(prev) if r.at > prev.at => {
                    let dt = (r.at - prev.at).0 as f64;
                    let done = r.completed.saturating_sub(prev.completed) as f64;
                    let busy = r.busy_time.saturating_sub(prev.busy_time) as f64;
                    let qps = done / (dt * 1e-9);
                    let util = busy / (dt * f64::from(r.workers.max(1)));
                    if qps > 0.0 && util > 0.0 {
                        if h.non_empty_since.is_none() {
                            h.non_empty_since = Some(now);
                        }
                        h.last_updated = now;
                        h.weight = qps / util;
                    }
                    h.last_report = Some(r);
                }
                Some(_) => {}
                None => h.last_report = Some(r),
            }
        }
        self.weights.clear();
        for h in &mut self.hosts {
            let mut w = h.weight;
            if w > 0.0 && now - h.last_updated >= c.weight_expiration_period {
                h.non_empty_since = None;
                h.weight = 0.0;
                w = 0.0;
            }
            if h.non_empty_since
                .is_none_or(|since| now - since < c.blackout_period)
            {
                w = 0.0;
            }
            self.weights.push(w);
        }
        // Hosts without a valid weight get the mean of the valid ones (1 if none is valid).
        let (sum, valid) = self
            .weights
            .iter()
            .filter(|&&w| w > 0.0)
            .fold((0.0, 0usize), |(s, n), &w| (s + w, n + 1));
        let fill = if valid == 0 { 1.0 } else { sum / valid as f64 };
        for w in &mut self.weights {
            if *w <= 0.0 {
                *w = fill;
            }
        }
        self.edf.clear();
        for (i, &w) in self.weights.iter().enumerate() {
            self.edf.add(i, w);
        }
        self.next_update = Some(now + c.weight_update_period);
    }
}

impl Strategy for GrpcWeightedRoundRobin {
    fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
        if self.next_update.is_none_or(|t| ctx.now >= t) || self.weights.len() != backends.len() {
            self.update(backends, ctx);
        }
        let weights = &self.weights;
        self.edf.pick_and_add(backends, |j| weights[j])
    }
}

/// Parameters of `kind = "grpc_wrr"` (seconds).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcWrrParams {
    /// Seconds between weight recomputations (≥ 0.1). Default 1.
    pub weight_update_period: f64,
    /// Seconds a backend must report load before its weight counts. Default 10.
    pub blackout_period: f64,
    /// Seconds a weight stays valid without a new report. Default 180.
    pub weight_expiration_period: f64,
}

impl Default for GrpcWrrParams {
    fn default() -> GrpcWrrParams {
        GrpcWrrParams {
            weight_update_period: 1.0,
            blackout_period: 10.0,
            weight_expiration_period: 180.0,
        }
    }
}

impl Kind for GrpcWeightedRoundRobin {
    type Params = GrpcWrrParams;
    const ABOUT: About = About {
        kind: "grpc_wrr",
        aliases: &[],
        follows: "gRPC weighted_round_robin (gRFC A58): weight = qps / utilization from server reports",
        knobs: &[
            Knob::seconds("weight_update_period"),
            Knob::seconds("blackout_period"),
            Knob::seconds("weight_expiration_period"),
        ],
        reads: Reads::LOAD_REPORTS,
        split: Split::Dynamic,
    };
    fn validate(p: &GrpcWrrParams, _: usize) -> Result<(), SpecError> {
        let period = p.weight_update_period;
        if !(period.is_finite() && (0.1..=super::spec::MAX_SECONDS).contains(&period)) {
            return Err(SpecError::new(
                "weight_update_period",
                format!("is {period}"),
                "use 0.1 s or more (gRFC A58's minimum; default 1)",
            ));
        }
        SpecError::seconds("blackout_period", p.blackout_period, true)?;
        SpecError::seconds(
            "weight_expiration_period",
            p.weight_expiration_period,
            false,
        )
    }
    fn build(p: &GrpcWrrParams, _: usize, _: crate::rng::SimRng) -> GrpcWeightedRoundRobin {
        GrpcWeightedRoundRobin::new(GrpcWrrConfig {
            weight_update_period: Nanos::from_secs_f64(p.weight_update_period),
            blackout_period: Nanos::from_secs_f64(p.blackout_period),
            weight_expiration_period: Nanos::from_secs_f64(p.weight_expiration_period),
        })
    }
    fn cost(_: &GrpcWrrParams) -> PickCost {
        PickCost::CONSTANT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Balancer;

    const S: u64 = 1_000_000_000;

    /// Backend 0 serves 300 req/s at 50% utilisation (capacity 600/s), backend 1 serves
    /// 100 req/s at 50% (capacity 200/s): weights 600 and 200.
    fn report(i: usize, t: u64) -> LoadReport {
        let (qps, util) = if i == 0 { (300, 0.5) } else { (100, 0.5) };
        LoadReport {
            at: Nanos(t * S),
            in_system: 0,
            workers: 1,
            completed: qps * t,
            busy_time: (util * (t * S) as f64) as u64,
        }
    }

    fn share_of_0(b: &mut Balancer, t: u64, n: usize) -> f64 {
        let picks: Vec<usize> = (0..n)
            .map(|k| {
                let i = b.route(Nanos(t * S + k as u64), 0).unwrap();
                b.complete(i, Nanos(1), crate::strategy::Outcome::Ok, Nanos(t * S));
                i
            })
            .collect();
        picks.iter().filter(|&&i| i == 0).count() as f64 / n as f64
    }

    #[test]
    fn weights_follow_reports_after_the_blackout_and_expire() {
        let mut b = Balancer::new(
            Box::new(GrpcWeightedRoundRobin::new(GrpcWrrConfig::default())),
            &[1, 1],
        );
        // Reports every second from t = 0 to 30 s.
        for t in 0..=30u64 {
            for i in 0..2 {
                b.set_load(i, report(i, t));
            }
            let share = share_of_0(&mut b, t, 400);
            if t <= 10 {
                // No valid weight yet, or still in the 10 s blackout: round robin.
                assert_eq!(share, 0.5, "t={t}");
            } else {
                assert!((share - 0.75).abs() < 0.01, "t={t}: {share}");
            }
        }
        // No report after 30 s: weights expire 3 min after their last update.
        assert!((share_of_0(&mut b, 200, 400) - 0.75).abs() < 0.01);
        assert_eq!(share_of_0(&mut b, 212, 400), 0.5);
    }

    #[test]
    fn hosts_without_weight_get_the_mean() {
        let mut b = Balancer::new(
            Box::new(GrpcWeightedRoundRobin::new(GrpcWrrConfig {
                blackout_period: Nanos(0),
                ..GrpcWrrConfig::default()
            })),
            &[1, 1, 1],
        );
        for t in 0..=3u64 {
            for i in 0..2 {
                b.set_load(i, report(i, t));
            }
            if t < 3 {
                share_of_0(&mut b, t, 10);
            }
        }
        // Weights 600, 200 and the mean 400 for backend 2.
        let p: Vec<usize> = (0..1200)
            .map(|k| b.route(Nanos(3 * S + k), 0).unwrap())
            .collect();
        let c = crate::strategy::testing::counts(&p, 3);
        assert_eq!(c, vec![600, 200, 400]);
    }
}
