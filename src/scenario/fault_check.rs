//! Validation of the fields of `[[faults]]` that belong to some kinds only (cold starts,
//! membership changes, network delay, unreachable servers): which kind may carry which
//! field, and the ranges and defaults of the fields of the newer kinds.

use super::cost;
use super::file::{FaultKind, FaultSpec};
use super::validate::Validator;
use super::{ColdStart, ScenarioError};

/// Default fraction of its speed a cold server starts at.
pub const DEFAULT_COLD_FRACTION: f64 = 0.1;
/// Default longest drain: Kubernetes' `terminationGracePeriodSeconds` (30 s), after which
/// the kubelet kills the container and what it still holds is lost.
pub const DEFAULT_DRAIN_TIMEOUT: f64 = 30.0;
/// Default time a server of a rolling deploy is down between its drain and its return.
pub const DEFAULT_RESTART: f64 = 5.0;
/// Default connect timeout to an unreachable server: Envoy's cluster `connect_timeout`
/// (5 s).
pub const DEFAULT_CONNECT_TIMEOUT: f64 = 5.0;

/// The kinds that bring servers back (and so may bring them back cold).
const RETURNING: &[FaultKind] = &[
    FaultKind::Cold,
    FaultKind::Join,
    FaultKind::Leave,
    FaultKind::Deploy,
    FaultKind::Crash,
];
/// The kinds that make servers leave (and so drain them).
const LEAVING: &[FaultKind] = &[FaultKind::Join, FaultKind::Leave, FaultKind::Deploy];

/// The fields of a fault resolved by [`Validator::fault_extras`].
pub(super) struct FaultExtras {
    pub cold: Option<ColdStart>,
    pub drain_timeout: f64,
    pub restart: f64,
    pub delay: f64,
    pub connect_timeout: f64,
}

fn names(kinds: &[FaultKind]) -> String {
    let n: Vec<&str> = kinds.iter().map(|&k| k.name()).collect();
    match n.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => n.concat(),
    }
}

impl Validator<'_> {
    /// Refuses a field set on a kind of fault it does not belong to.
    pub(super) fn fault_fields_belong(&self, k: usize, f: &FaultSpec) -> Result<(), ScenarioError> {
        let fraction_kinds: &[FaultKind] = &[
            FaultKind::Error,
            FaultKind::Cold,
            FaultKind::Join,
            FaultKind::Leave,
            FaultKind::Deploy,
            FaultKind::Crash,
        ];
        let fields: [(&str, bool, &[FaultKind]); 11] = [
            ("fraction", f.fraction.is_some(), fraction_kinds),
            (
                "error_latency",
                f.error_latency.is_some(),
                &[FaultKind::Error],
            ),
            ("status", f.status.is_some(), &[FaultKind::Error]),
            ("interval", f.interval.is_some(), &[FaultKind::Pause]),
            ("pause", f.pause.is_some(), &[FaultKind::Pause]),
            ("warmup", f.warmup.is_some(), RETURNING),
            ("drain_timeout", f.drain_timeout.is_some(), LEAVING),
            ("restart", f.restart.is_some(), &[FaultKind::Deploy]),
            ("delay", f.delay.is_some(), &[FaultKind::Delay]),
            (
                "connect_timeout",
                f.connect_timeout.is_some(),
                &[FaultKind::Unreachable],
            ),
            (
                "duration",
                f.duration.is_some(),
                &[
                    FaultKind::Crash,
                    FaultKind::Slow,
                    FaultKind::Error,
                    FaultKind::Pause,
                    FaultKind::Join,
                    FaultKind::Leave,
                    FaultKind::Delay,
                    FaultKind::Unreachable,
                ],
            ),
        ];
        for (name, set, kinds) in fields {
            if set && !kinds.contains(&f.kind) {
                return Err(self.invalid(
                    &format!("faults[{k}].{name}"),
                    format!(
                        "`{name}` belongs to {} faults, not {}",
                        names(kinds),
                        FaultKind::name(f.kind)
                    ),
                    if name == "duration" {
                        format!(
                            "remove `duration`: a {} fault has no end",
                            FaultKind::name(f.kind)
                        )
                    } else {
                        format!("remove `{name}`")
                    },
                ));
            }
        }
        if f.fraction.is_some()
            && f.warmup.is_none()
            && f.kind != FaultKind::Error
            && f.kind != FaultKind::Cold
        {
            return Err(self.invalid(
                &format!("faults[{k}].fraction"),
                format!(
                    "a {} fault's `fraction` is the speed it comes back at, but it has no `warmup`",
                    FaultKind::name(f.kind)
                ),
                "add `warmup` (seconds to warm up), or remove `fraction`",
            ));
        }
        Ok(())
    }

    /// The cold start, drain, restart, delay and connect timeout of fault `k`, with their
    /// defaults, checked.
    pub(super) fn fault_extras(
        &self,
        k: usize,
        f: &FaultSpec,
    ) -> Result<FaultExtras, ScenarioError> {
        let field = |x: &str| format!("faults[{k}].{x}");
        let cold = match f.warmup {
            Some(w) => {
                self.positive(&field("warmup"), w)?;
                self.at_most(&field("warmup"), w, cost::MAX_TIME)?;
                let fraction = f.fraction.unwrap_or(DEFAULT_COLD_FRACTION);
                if !(fraction > 0.0 && fraction <= 1.0) {
                    return Err(self.invalid(
                        &field("fraction"),
                        format!("is {fraction}"),
                        "use the fraction of its speed a cold server starts at: above 0 and at most 1",
                    ));
                }
                Some(ColdStart {
                    fraction,
                    warmup: w,
                })
            }
            None if f.kind == FaultKind::Cold => {
                return Err(self.invalid(
                    &field("warmup"),
                    "a cold fault needs `warmup`, the seconds its servers take to warm up",
                    "add e.g. warmup = 30 (and fraction = 0.1, the speed it starts at)",
                ));
            }
            None => None,
        };
        let seconds = |name: &str, v: Option<f64>, default: f64| -> Result<f64, ScenarioError> {
            let v = v.unwrap_or(default);
            if !(v.is_finite() && (0.0..=cost::MAX_TIME).contains(&v)) {
                return Err(self.invalid(
                    &field(name),
                    format!("is {v}"),
                    format!("use 0 to {:e} seconds", cost::MAX_TIME),
                ));
            }
            Ok(v)
        };
        let drain_timeout = seconds("drain_timeout", f.drain_timeout, DEFAULT_DRAIN_TIMEOUT)?;
        let restart = seconds("restart", f.restart, DEFAULT_RESTART)?;
        let connect_timeout = seconds(
            "connect_timeout",
            f.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
        )?;
        let delay = match (f.kind, f.delay) {
            (FaultKind::Delay, Some(d)) => {
                self.positive(&field("delay"), d)?;
                self.at_most(&field("delay"), d, cost::MAX_TIME)?;
                d
            }
            (FaultKind::Delay, None) => {
                return Err(self.invalid(
                    &field("delay"),
                    "a delay fault needs `delay`, the seconds added to each round trip",
                    "add e.g. delay = 0.05",
                ));
            }
            _ => 0.0,
        };
        Ok(FaultExtras {
            cold,
            drain_timeout,
            restart,
            delay,
            connect_timeout,
        })
    }
}

impl Validator<'_> {
    /// Checks `[autoscaler]` and resolves it against the server groups.
    pub(super) fn autoscaler(
        &self,
        f: &super::file::ScenarioFile,
    ) -> Result<Option<super::Autoscaler>, ScenarioError> {
        let Some(a) = &f.autoscaler else {
            return Ok(None);
        };
        let Some(g) = f.servers.iter().position(|g| g.name == a.group) else {
            return Err(self.invalid(
                "autoscaler.group",
                format!("no server group is named `{}`", a.group),
                format!(
                    "use the name of a `[[servers]]` group, e.g. `{}`",
                    f.servers.first().map_or("app", |g| g.name.as_str())
                ),
            ));
        };
        let first: usize = f.servers[..g].iter().map(|g| g.count as usize).sum();
        let count = f.servers[g].count;
        let servers: Vec<usize> = (first..first + count as usize).collect();
        if !(a.target > 0.0 && a.target <= 1.0) {
            return Err(self.invalid(
                "autoscaler.target",
                format!("is {}", a.target),
                "use a target utilisation above 0 and at most 1, e.g. target = 0.6",
            ));
        }
        let min_replicas = a.min_replicas.unwrap_or(1);
        if min_replicas == 0 || min_replicas > count {
            return Err(self.invalid(
                "autoscaler.min_replicas",
                format!(
                    "is {min_replicas}, with {count} servers in group `{}`",
                    a.group
                ),
                format!("use 1 to {count} (the group's `count` is the most replicas)"),
            ));
        }
        let initial = a.initial.unwrap_or(min_replicas);
        if initial < min_replicas || initial > count {
            return Err(self.invalid(
                "autoscaler.initial",
                format!("is {initial}"),
                format!("use {min_replicas} (min_replicas) to {count} (the group's count)"),
            ));
        }
        let sync_period = a.sync_period.unwrap_or(15.0);
        self.interval("autoscaler.sync_period", sync_period)?;
        let tolerance = a.tolerance.unwrap_or(0.1);
        if !(0.0..1.0).contains(&tolerance) {
            return Err(self.invalid(
                "autoscaler.tolerance",
                format!("is {tolerance}"),
                "use 0 or more and below 1 (Kubernetes: 0.1)",
            ));
        }
        let seconds = |name: &str, v: Option<f64>, default: f64| -> Result<f64, ScenarioError> {
            let v = v.unwrap_or(default);
            if !(v.is_finite() && (0.0..=cost::MAX_TIME).contains(&v)) {
                return Err(self.invalid(
                    &format!("autoscaler.{name}"),
                    format!("is {v}"),
                    format!("use 0 to {:e} seconds", cost::MAX_TIME),
                ));
            }
            Ok(v)
        };
        let stabilization = seconds("stabilization", a.stabilization, 300.0)?;
        let startup = seconds("startup", a.startup, 10.0)?;
        let drain_timeout = seconds("drain_timeout", a.drain_timeout, DEFAULT_DRAIN_TIMEOUT)?;
        let cold = match a.warmup {
            Some(w) => {
                self.positive("autoscaler.warmup", w)?;
                self.at_most("autoscaler.warmup", w, cost::MAX_TIME)?;
                let fraction = a.fraction.unwrap_or(DEFAULT_COLD_FRACTION);
                if !(fraction > 0.0 && fraction <= 1.0) {
                    return Err(self.invalid(
                        "autoscaler.fraction",
                        format!("is {fraction}"),
                        "use the fraction of its speed a new server starts at: above 0 and at most 1",
                    ));
                }
                Some(ColdStart {
                    fraction,
                    warmup: w,
                })
            }
            None if a.fraction.is_some() => {
                return Err(self.invalid(
                    "autoscaler.fraction",
                    "`fraction` is the speed new servers start at, but there is no `warmup`",
                    "add `warmup` (seconds to warm up), or remove `fraction`",
                ));
            }
            None => None,
        };
        for (k, fault) in f.faults.iter().enumerate() {
            let membership = matches!(
                fault.kind,
                FaultKind::Join | FaultKind::Leave | FaultKind::Deploy
            );
            let ours = fault.server == a.group
                || fault
                    .server
                    .rsplit_once('-')
                    .is_some_and(|(group, _)| group == a.group);
            if membership && ours {
                return Err(self.invalid(
                    &format!("faults[{k}].kind"),
                    format!(
                        "group `{}` is scaled by the autoscaler, which decides which of its servers are members",
                        a.group
                    ),
                    "remove this fault, or scale another group",
                ));
            }
        }
        let mut sweep = f.sweep.as_ref();
        while let Some(s) = sweep {
            if s.group.is_some() {
                return Err(self.invalid(
                    "sweep.group",
                    "a sweep of a group's count and an autoscaler do not mix",
                    "remove `[autoscaler]` or sweep another parameter",
                ));
            }
            sweep = s.by.as_deref();
        }
        Ok(Some(super::Autoscaler {
            servers,
            target: a.target,
            min_replicas,
            initial,
            sync_period,
            tolerance,
            stabilization,
            startup,
            cold,
            drain_timeout,
        }))
    }
}
