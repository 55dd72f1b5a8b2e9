//! The scenario validator: checks every value of a parsed [`ScenarioFile`] and builds the
//! [`Scenario`] the engine trusts, or says which field is wrong, where, and how to fix it.

use std::path::Path;
use std::sync::Arc;

use super::file::{AdmissionSpec, FaultKind, ScenarioFile, ServerGroup, WarmupSetting};
use super::{ErrorFault, Fault, Scenario, ScenarioError, cost, error, expand_servers, sweep};
use crate::workload::arrival::{ArrivalSpec, Trace};
use crate::workload::{KeySpec, Workload};

pub(super) struct Validator<'a> {
    pub(super) path: &'a Path,
    pub(super) source: &'a str,
}

impl Validator<'_> {
    pub(super) fn invalid(
        &self,
        field: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> ScenarioError {
        ScenarioError::Invalid {
            path: self.path.to_path_buf(),
            line: error::locate(self.source, field),
            field: field.to_string(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub(super) fn positive(&self, field: &str, v: f64) -> Result<(), ScenarioError> {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(self.invalid(
                field,
                format!("must be a finite number greater than 0, got {v}"),
                format!("set `{field}` to a positive value"),
            ))
        }
    }

    pub(super) fn at_most(&self, field: &str, v: f64, max: f64) -> Result<(), ScenarioError> {
        if v <= max {
            Ok(())
        } else {
            Err(self.invalid(
                field,
                format!("is {v}, above the largest value that can be simulated, {max:e}"),
                format!("set `{field}` to at most {max:e}"),
            ))
        }
    }

    /// A positive time that drives a recurring event: between [`cost::MIN_INTERVAL`] and
    /// [`cost::MAX_TIME`] seconds.
    pub(super) fn interval(&self, field: &str, v: f64) -> Result<(), ScenarioError> {
        self.positive(field, v)?;
        if v < cost::MIN_INTERVAL {
            return Err(self.invalid(
                field,
                format!(
                    "is {v} s, shorter than {:e} s: a timer this short floods the run with events (or does not advance the nanosecond clock)",
                    cost::MIN_INTERVAL
                ),
                format!("set `{field}` to {:e} s or more", cost::MIN_INTERVAL),
            ));
        }
        self.at_most(field, v, cost::MAX_TIME)
    }

    /// `[servers.admission]` of a group (`at` names it, e.g. `servers[0].admission`).
    fn admission(&self, at: &str, a: &AdmissionSpec) -> Result<(), ScenarioError> {
        if *a
            == (AdmissionSpec {
                queue_timeout: None,
                codel: None,
                adaptive_lifo: None,
            })
        {
            return Err(self.invalid(
                at,
                "sets nothing",
                "set `queue_timeout`, `codel` or `adaptive_lifo`, or remove [servers.admission]",
            ));
        }
        if let Some(t) = a.queue_timeout {
            self.interval(&format!("{at}.queue_timeout"), t)?;
        }
        if let Some(c) = &a.codel {
            self.interval(&format!("{at}.codel.target"), c.target)?;
            self.interval(&format!("{at}.codel.interval"), c.interval)?;
        }
        if let Some(l) = &a.adaptive_lifo {
            let field = format!("{at}.adaptive_lifo.after");
            if !(l.after.is_finite() && l.after >= 0.0) {
                return Err(self.invalid(
                    &field,
                    format!("is {}", l.after),
                    "use a number of seconds ≥ 0 (0: newest first whenever a request waits)",
                ));
            }
            self.at_most(&field, l.after, cost::MAX_TIME)?;
        }
        Ok(())
    }

    pub(super) fn validate(&self, f: ScenarioFile) -> Result<Scenario, ScenarioError> {
        let name = match &f.name {
            Some(n) if n.trim().is_empty() => {
                return Err(self.invalid(
                    "name",
                    "is empty",
                    "give the scenario a name, e.g. name = \"my-cluster\"",
                ));
            }
            Some(n) => n.clone(),
            None => self.path.file_stem().map_or_else(
                || "scenario".to_string(),
                |s| s.to_string_lossy().into_owned(),
            ),
        };
        if name.contains(['/', '\\']) || name.chars().any(char::is_control) {
            return Err(self.invalid(
                "name",
                format!(
                    "`{}` contains a path separator or a control character",
                    name.escape_debug()
                ),
                "use letters, digits, `-` and `_`",
            ));
        }
        if name.starts_with('.') {
            // `..` would write reports into the parent folder, `.x` a hidden one.
            return Err(self.invalid(
                "name",
                format!(
                    "`{name}` starts with `.`: reports/{name}/ would not be a folder of its own"
                ),
                "start the name with a letter or digit",
            ));
        }
        if f.replications > cost::MAX_REPLICATIONS {
            return Err(self.invalid(
                "replications",
                format!("is {}, above {}", f.replications, cost::MAX_REPLICATIONS),
                format!("use at most {} replications (`lbsim run --precision` adds them only as needed)", cost::MAX_REPLICATIONS),
            ));
        }
        if f.replications == 0 {
            return Err(self.invalid(
                "replications",
                "is 0",
                "use at least 2 replications (confidence intervals need 2 or more)",
            ));
        }
        self.positive("duration", f.duration)?;
        let (warmup, warmup_auto) = match f.warmup {
            WarmupSetting::Seconds(w) => (w, false),
            WarmupSetting::Auto => (0.0, true),
        };
        if !(warmup.is_finite() && warmup >= 0.0) {
            return Err(self.invalid(
                "warmup",
                format!("must be 0 or more, got {warmup}"),
                "set warmup to 0 or a positive number of seconds, or to \"auto\"",
            ));
        }
        // `duration` is the measured time *after* the warm-up, so any warm-up goes: a long
        // warm-up before a short window is how slow-mixing queues are measured.
        self.at_most("duration", f.duration, cost::MAX_TIME)?;
        // An automatic warm-up is at most twice the window (half of the longest pilot).
        let longest = if warmup_auto {
            3.0 * f.duration
        } else {
            warmup + f.duration
        };
        if longest > cost::MAX_TIME {
            return Err(self.invalid(
                "warmup",
                format!("warmup + duration is {longest} s, above {:e} s", cost::MAX_TIME),
                "shorten the run: the simulated clock counts nanoseconds and must cover the run and its drain",
            ));
        }
        if f.balancers == 0 {
            return Err(self.invalid("balancers", "is 0", "use 1 (one balancer) or more"));
        }
        if f.balancers > cost::MAX_BALANCERS {
            return Err(self.invalid(
                "balancers",
                format!("is {}, above {}", f.balancers, cost::MAX_BALANCERS),
                format!("use at most {} balancers", cost::MAX_BALANCERS),
            ));
        }
        if let Some(dt) = f.load_report_interval {
            self.interval("load_report_interval", dt)?;
        }
        let probes = f.probes.clone().unwrap_or_default();
        if probes.delay != 0.0 {
            self.interval("probes.delay", probes.delay)?;
        }
        if probes.cost != 0.0 {
            self.interval("probes.cost", probes.cost)?;
        }
        let trace = self.arrivals(&f.arrivals)?;
        self.keys(&f.keys)?;
        self.servers(&f.servers)?;
        self.strategies(&f)?;
        let sweep = self.sweep(&f)?;
        let horizon = warmup + f.duration;
        let faults = self.faults(&f)?;
        let autoscaler = self.autoscaler(&f)?;
        if let Some(c) = &f.connections {
            if c.clients == 0 {
                return Err(self.invalid("connections.clients", "is 0", "use 1 or more clients"));
            }
            if c.pool_size == 0 {
                return Err(self.invalid(
                    "connections.pool_size",
                    "is 0",
                    "use 1 or more connections per client",
                ));
            }
            let slots = u64::from(c.clients) * u64::from(c.pool_size);
            if slots > cost::MAX_CONNECTIONS {
                return Err(self.invalid(
                    "connections.clients",
                    format!(
                        "clients × pool_size is {slots}, above {}",
                        cost::MAX_CONNECTIONS
                    ),
                    "use fewer clients or a smaller pool_size",
                ));
            }
            if let Some(l) = c.lifetime {
                self.interval("connections.lifetime", l)?;
            }
        }
        let scenario = Scenario {
            path: self.path.to_path_buf(),
            name,
            description: f.description,
            seed: f.seed,
            replications: f.replications,
            duration: f.duration,
            warmup,
            warmup_auto,
            auto_warmup: None,
            balancers: f.balancers,
            load_report_interval: f.load_report_interval,
            workload: Workload {
                arrivals: f.arrivals,
                trace: trace.map(Arc::new),
                keys: f.keys,
                horizon,
            },
            servers: expand_servers(&f.servers),
            groups: f.servers,
            strategies: f.strategies,
            connections: f.connections,
            faults,
            sweep,
            probes,
            autoscaler,
        };
        sweep::check_points(self, &scenario)?;
        let (rate, capacity) = (scenario.mean_rate(), scenario.capacity());
        if !(rate.is_finite() && capacity.is_finite()) {
            return Err(self.invalid(
                "arrivals",
                format!("the mean arrival rate ({rate}/s) or the capacity ({capacity}/s) is not a finite number"),
                "use rates, speeds and service times of everyday magnitudes",
            ));
        }
        if rate <= 0.0 {
            return Err(self.invalid(
                "arrivals",
                "no request arrives during the run",
                "raise the arrival rate or extend the trace",
            ));
        }
        if rate >= capacity
            && scenario
                .groups
                .iter()
                .all(|g| g.queue_capacity.is_none() && !g.admission.is_some_and(|a| a.drops()))
            && !scenario.strategies.iter().all(bounded_by_circuit_breakers)
        {
            return Err(self.invalid(
                "arrivals",
                format!(
                    "unstable: requests arrive at {rate:.1}/s but the servers together serve at most {capacity:.1}/s, so queues grow without bound"
                ),
                "lower the arrival rate, add servers or workers, raise `speed`, or set `queue_capacity` (or a `queue_timeout` or `codel` under [servers.admission]) to study overload",
            ));
        }
        Ok(scenario)
    }

    pub(super) fn arrivals(&self, a: &ArrivalSpec) -> Result<Option<Trace>, ScenarioError> {
        match a {
            ArrivalSpec::Poisson { rate } | ArrivalSpec::Deterministic { rate } => {
                self.positive("arrivals.rate", *rate)?
            }
            ArrivalSpec::Mmpp {
                rates,
                mean_sojourn,
            } => {
                for (i, r) in rates.iter().enumerate() {
                    if !(r.is_finite() && *r >= 0.0) {
                        return Err(self.invalid(
                            "arrivals.rates",
                            format!("rates[{i}] is {r}"),
                            "use rates of 0 or more",
                        ));
                    }
                }
                if rates.iter().all(|&r| r == 0.0) {
                    return Err(self.invalid(
                        "arrivals.rates",
                        "both rates are 0",
                        "give at least one state a positive rate",
                    ));
                }
                for s in mean_sojourn {
                    self.interval("arrivals.mean_sojourn", *s)?;
                }
            }
            ArrivalSpec::OnOff {
                rate,
                mean_on,
                mean_off,
            } => {
                self.positive("arrivals.rate", *rate)?;
                self.interval("arrivals.mean_on", *mean_on)?;
                self.interval("arrivals.mean_off", *mean_off)?;
            }
            ArrivalSpec::Renewal { interarrival } => interarrival
                .validate()
                .map_err(|e| self.invalid("arrivals.interarrival", e.problem, e.fix))?,
            ArrivalSpec::Piecewise { points, .. } => {
                if points.is_empty() {
                    return Err(self.invalid(
                        "arrivals.points",
                        "is empty",
                        "give at least one { at = 0, rate = ... } point",
                    ));
                }
                for (i, p) in points.iter().enumerate() {
                    if !(p.rate.is_finite()
                        && p.rate >= 0.0
                        && p.at.is_finite()
                        && p.at >= 0.0
                        && p.at <= cost::MAX_TIME)
                    {
                        return Err(self.invalid(
                            "arrivals.points",
                            format!("point {i} has at = {}, rate = {}", p.at, p.rate),
                            format!(
                                "use rates of 0 or more and times from 0 to {:e} s",
                                cost::MAX_TIME
                            ),
                        ));
                    }
                    if i > 0 && p.at <= points[i - 1].at {
                        return Err(self.invalid(
                            "arrivals.points",
                            format!("point {i} (at = {}) is not after point {}", p.at, i - 1),
                            "list points in increasing `at` order",
                        ));
                    }
                }
                if points.iter().all(|p| p.rate == 0.0) {
                    return Err(self.invalid(
                        "arrivals.points",
                        "every rate is 0",
                        "give at least one point a positive rate",
                    ));
                }
            }
            ArrivalSpec::Trace { path } => return self.trace(path).map(Some),
        }
        Ok(None)
    }

    pub(super) fn trace(&self, rel: &Path) -> Result<Trace, ScenarioError> {
        let full = self.path.parent().unwrap_or(Path::new(".")).join(rel);
        let read_err = |source| ScenarioError::Read {
            path: self.path.to_path_buf(),
            target: full.clone(),
            source,
        };
        // Only a regular file: a FIFO would block for ever, a device such as /dev/zero
        // never ends. Checked before opening, since opening a FIFO already blocks.
        let meta = std::fs::metadata(&full).map_err(read_err)?;
        if !meta.is_file() {
            return Err(self.trace_error(
                &full,
                None,
                "is not a regular file (a folder, FIFO or device)".to_string(),
            ));
        }
        if meta.len() > cost::MAX_TRACE_BYTES {
            return Err(self.trace_error(
                &full,
                None,
                format!(
                    "is {} bytes, above the limit of {} bytes",
                    meta.len(),
                    cost::MAX_TRACE_BYTES
                ),
            ));
        }
        let file = std::fs::File::open(&full).map_err(read_err)?;
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(std::io::Read::take(file, cost::MAX_TRACE_BYTES));
        let headers = reader
            .headers()
            .map_err(|e| self.trace_error(&full, None, format!("cannot read the header: {e}")))?
            .clone();
        let time_col = headers.iter().position(|h| h == "time").ok_or_else(|| {
            self.trace_error(
                &full,
                Some(1),
                format!(
                    "no `time` column (header is `{}`)",
                    headers.iter().collect::<Vec<_>>().join(",")
                ),
            )
        })?;
        let work_col = headers.iter().position(|h| h == "work");
        let mut trace = Trace {
            times: Vec::new(),
            work: work_col.map(|_| Vec::new()),
        };
        for (i, record) in reader.records().enumerate() {
            let line = i + 2;
            let record = record.map_err(|e| self.trace_error(&full, Some(line), e.to_string()))?;
            let num = |col: usize, what: &str| -> Result<f64, ScenarioError> {
                let s = record.get(col).unwrap_or("");
                s.parse::<f64>().map_err(|_| {
                    self.trace_error(
                        &full,
                        Some(line),
                        format!("`{what}` value `{s}` is not a number"),
                    )
                })
            };
            let t = num(time_col, "time")?;
            if !(t.is_finite() && t >= 0.0) || trace.times.last().is_some_and(|&prev| t < prev) {
                return Err(self.trace_error(
                    &full,
                    Some(line),
                    format!("time {t} is negative or earlier than the previous one"),
                ));
            }
            if t > cost::MAX_TIME {
                return Err(self.trace_error(
                    &full,
                    Some(line),
                    format!(
                        "time {t} s is above {:e} s, the longest run",
                        cost::MAX_TIME
                    ),
                ));
            }
            trace.times.push(t);
            if let (Some(c), Some(w)) = (work_col, trace.work.as_mut()) {
                let v = num(c, "work")?;
                if !(v.is_finite() && v > 0.0 && v <= cost::MAX_TIME) {
                    return Err(self.trace_error(
                        &full,
                        Some(line),
                        format!(
                            "work {v} is not between 0 and {:e} s (the simulated clock counts nanoseconds)",
                            cost::MAX_TIME
                        ),
                    ));
                }
                w.push(v);
            }
        }
        if trace.times.is_empty() {
            return Err(self.trace_error(&full, None, "the trace has no arrivals".to_string()));
        }
        Ok(trace)
    }

    pub(super) fn trace_error(
        &self,
        trace: &Path,
        line: Option<usize>,
        problem: String,
    ) -> ScenarioError {
        ScenarioError::Invalid {
            path: trace.to_path_buf(),
            line,
            field: "arrivals.path".to_string(),
            problem,
            fix: format!(
                "the trace named by {} must be CSV with a header `time[,work]`, times in seconds, non-decreasing",
                self.path.display()
            ),
        }
    }

    pub(super) fn faults(&self, f: &ScenarioFile) -> Result<Vec<Fault>, ScenarioError> {
        // First server index of each group; names are resolved without listing every
        // server, so a large group costs nothing here.
        let mut first = Vec::with_capacity(f.servers.len());
        let mut next = 0usize;
        for g in &f.servers {
            first.push(next);
            next += g.count as usize;
        }
        let server_named = |name: &str| -> Option<usize> {
            let (group, i) = name.rsplit_once('-')?;
            if i.is_empty()
                || !i.bytes().all(|b| b.is_ascii_digit())
                || (i.len() > 1 && i.starts_with('0'))
            {
                return None;
            }
            let i: u32 = i.parse().ok()?;
            let g = f
                .servers
                .iter()
                .position(|g| g.name == group && i < g.count)?;
            Some(first[g] + i as usize)
        };
        let mut out = Vec::new();
        for (k, fault) in f.faults.iter().enumerate() {
            let field = |x: &str| format!("faults[{k}].{x}");
            let servers: Vec<usize> = match server_named(&fault.server) {
                Some(i) => vec![i],
                None => match f.servers.iter().position(|g| g.name == fault.server) {
                    Some(g) => (first[g]..first[g] + f.servers[g].count as usize).collect(),
                    None => {
                        return Err(self.invalid(
                            &field("server"),
                            format!("no server or group is named `{}`", fault.server),
                            format!(
                                "use a group name or a server name such as `{}-0`",
                                f.servers.first().map_or("group", |g| g.name.as_str())
                            ),
                        ));
                    }
                },
            };
            if !(fault.at.is_finite() && fault.at >= 0.0) {
                return Err(self.invalid(
                    &field("at"),
                    format!("is {}", fault.at),
                    "use a time of 0 or more seconds from the start of the run",
                ));
            }
            self.at_most(&field("at"), fault.at, cost::MAX_TIME)?;
            if let Some(d) = fault.duration {
                self.positive(&field("duration"), d)?;
                self.at_most(&field("duration"), d, cost::MAX_TIME)?;
            }
            if !(fault.detection.is_finite()
                && fault.detection >= 0.0
                && fault.detection <= cost::MAX_TIME)
            {
                return Err(self.invalid(
                    &field("detection"),
                    format!("is {}", fault.detection),
                    format!("use a delay of 0 to {:e} seconds", cost::MAX_TIME),
                ));
            }
            let factor = match (fault.kind, fault.factor) {
                (FaultKind::Slow, Some(x)) if x.is_finite() && x > 0.0 && x <= 1e6 => x,
                (FaultKind::Slow, _) => {
                    return Err(self.invalid(
                        &field("factor"),
                        "a slow fault needs a `factor` greater than 0 and at most 1e6",
                        "add e.g. factor = 10.0 (service takes 10 times longer)",
                    ));
                }
                (_, None) => 1.0,
                (_, Some(_)) => {
                    return Err(self.invalid(
                        &field("factor"),
                        "only a slow fault has a slow-down factor",
                        "remove `factor`, or use kind = \"slow\"",
                    ));
                }
            };
            self.fault_fields_belong(k, fault)?;
            let extras = self.fault_extras(k, fault)?;
            if fault.detection != 0.0
                && !matches!(fault.kind, FaultKind::Crash | FaultKind::Unreachable)
            {
                return Err(self.invalid(
                    &field("detection"),
                    "only a crash is detected by health checks",
                    "remove `detection` (the server stays up for health checks)",
                ));
            }
            let error = match fault.kind {
                FaultKind::Unreachable => Some(ErrorFault {
                    fraction: 1.0,
                    latency: extras.connect_timeout,
                    status: super::ErrorStatus::Failed,
                }),
                FaultKind::Error => {
                    let fraction = fault.fraction.unwrap_or(1.0);
                    if !(fraction > 0.0 && fraction <= 1.0) {
                        return Err(self.invalid(
                            &field("fraction"),
                            format!("is {fraction}"),
                            "use a fraction above 0 and at most 1 (1: every request)",
                        ));
                    }
                    let latency = fault.error_latency.unwrap_or(0.001);
                    if !(latency.is_finite() && (0.0..=cost::MAX_TIME).contains(&latency)) {
                        return Err(self.invalid(
                            &field("error_latency"),
                            format!("is {latency}"),
                            format!("use 0 to {:e} seconds", cost::MAX_TIME),
                        ));
                    }
                    Some(ErrorFault {
                        fraction,
                        latency,
                        status: fault.status.unwrap_or_default(),
                    })
                }
                _ => None,
            };
            let pauses = match (fault.kind, &fault.interval, &fault.pause) {
                (FaultKind::Pause, Some(interval), Some(pause)) => {
                    for (name, d) in [("interval", interval), ("pause", pause)] {
                        d.validate()
                            .map_err(|e| self.invalid(&field(name), e.problem, e.fix))?;
                    }
                    if interval.mean() < 1e-6 {
                        return Err(self.invalid(
                            &field("interval"),
                            format!("has a mean of {} s", interval.mean()),
                            "use a mean interval of 1e-6 s or more (pauses follow each other, they do not overlap)",
                        ));
                    }
                    Some((interval.clone(), pause.clone()))
                }
                (FaultKind::Pause, _, _) => {
                    return Err(self.invalid(
                        &field(if fault.interval.is_none() { "interval" } else { "pause" }),
                        "a pause fault needs both `interval` and `pause` distributions",
                        "add e.g. interval = { dist = \"exponential\", mean = 5.0 } and pause = { dist = \"uniform\", min = 0.05, max = 0.2 }",
                    ));
                }
                _ => None,
            };
            out.push(Fault {
                servers,
                kind: fault.kind,
                at: fault.at,
                until: fault.duration.map(|d| fault.at + d),
                factor,
                detection: fault.detection,
                error,
                pauses,
                cold: extras.cold,
                drain_timeout: extras.drain_timeout,
                restart: extras.restart,
                delay: extras.delay,
            });
        }
        Ok(out)
    }

    pub(super) fn keys(&self, k: &KeySpec) -> Result<(), ScenarioError> {
        match k {
            KeySpec::Unique => Ok(()),
            KeySpec::Uniform { count } | KeySpec::Zipf { count, .. } if *count == 0 => {
                Err(self.invalid("keys.count", "is 0", "use 1 or more distinct keys"))
            }
            KeySpec::Zipf { exponent, .. } if !(exponent.is_finite() && *exponent >= 0.0) => {
                Err(self.invalid(
                    "keys.exponent",
                    format!("is {exponent}"),
                    "use an exponent of 0 or more (1.0 is classic Zipf)",
                ))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn servers(&self, groups: &[ServerGroup]) -> Result<(), ScenarioError> {
        if groups.is_empty() {
            return Err(self.invalid(
                "servers",
                "no server group",
                "add a [[servers]] table with name, count, workers and service",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, g) in groups.iter().enumerate() {
            let field = |k: &str| format!("servers[{i}].{k}");
            if g.name.trim().is_empty() {
                return Err(self.invalid(
                    &field("name"),
                    "is empty",
                    "name the group, e.g. name = \"fast\"",
                ));
            }
            if g.name.chars().any(char::is_control) {
                return Err(self.invalid(
                    &field("name"),
                    format!("`{}` has a control character", g.name.escape_debug()),
                    "use letters, digits, `-` and `_`",
                ));
            }
            if !names.insert(g.name.as_str()) {
                return Err(self.invalid(
                    &field("name"),
                    format!("group name `{}` is used twice", g.name),
                    "give each server group its own name",
                ));
            }
            if g.count == 0 {
                return Err(self.invalid(
                    &field("count"),
                    "is 0",
                    "use 1 or more servers (remove the group to have none)",
                ));
            }
            if let Some(a) = &g.admission {
                self.admission(&field("admission"), a)?;
            }
            if g.workers == 0 {
                return Err(self.invalid(
                    &field("workers"),
                    "is 0: such a server can never serve a request",
                    "use 1 or more workers",
                ));
            }
            if g.workers > cost::MAX_WORKERS {
                return Err(self.invalid(
                    &field("workers"),
                    format!("is {}, above {}", g.workers, cost::MAX_WORKERS),
                    format!("use at most {} workers per server", cost::MAX_WORKERS),
                ));
            }
            self.positive(&field("speed"), g.speed)?;
            g.service
                .validate()
                .map_err(|e| self.invalid(&field("service"), e.problem, e.fix))?;
            let mean = g.service.mean() / g.speed;
            if mean.is_nan() || mean > cost::MAX_TIME {
                return Err(self.invalid(
                    &field("speed"),
                    format!(
                        "at speed {} the mean service time is {mean} s, above {:e} s",
                        g.speed,
                        cost::MAX_TIME
                    ),
                    "raise `speed` or shorten the service time",
                ));
            }
        }
        let total: u64 = groups.iter().map(|g| u64::from(g.count)).sum();
        if total > cost::MAX_SERVERS {
            return Err(self.invalid(
                "servers",
                format!("{total} servers in all, above {}", cost::MAX_SERVERS),
                format!(
                    "use at most {} servers (a group of identical servers behaves the same at a smaller count and proportional load)",
                    cost::MAX_SERVERS
                ),
            ));
        }
        Ok(())
    }

    /// Rejects keys a strategy does not have, before parsing, so that the error names the
    /// line and the entry (`strategies[2].d`) and lists the keys the kind takes.
    pub(super) fn unknown_strategy_keys(&self, source: &str) -> Result<(), ScenarioError> {
        let Ok(table) = source.parse::<toml::Table>() else {
            return Ok(());
        };
        let Some(toml::Value::Array(entries)) = table.get("strategies") else {
            return Ok(());
        };
        for (i, entry) in entries.iter().enumerate() {
            let Some(entry) = entry.as_table() else {
                continue;
            };
            let Some(def) = entry
                .get("kind")
                .and_then(toml::Value::as_str)
                .and_then(crate::strategy::registry::find)
            else {
                continue;
            };
            let about = def.about();
            let kind = about.kind;
            for key in entry.keys() {
                if key == "label"
                    || key == "kind"
                    || key == "policy"
                    || about.knobs.iter().any(|k| k.name == key)
                {
                    continue;
                }
                let params: Vec<String> = about
                    .knobs
                    .iter()
                    .map(|k| format!("`{}`", k.name))
                    .collect();
                let expected = match params.as_slice() {
                    [] => String::new(),
                    [one] => format!(", expected {one}"),
                    [a, b] => format!(", expected {a} or {b}"),
                    more => format!(", expected one of {}", more.join(", ")),
                };
                return Err(self.invalid(
                    &format!("strategies[{i}].{key}"),
                    format!("`{kind}` has no parameter `{key}`{expected}"),
                    if params.is_empty() {
                        format!("remove `{key}`: `{kind}` takes no parameter (only `kind` and `label`)")
                    } else {
                        format!("remove `{key}` or correct its name (`lbsim strategies` lists each kind's parameters)")
                    },
                ));
            }
        }
        Ok(())
    }

    pub(super) fn strategies(&self, f: &ScenarioFile) -> Result<(), ScenarioError> {
        if f.strategies.is_empty() {
            return Err(self.invalid(
                "strategies",
                "no strategy",
                "add a [[strategies]] table, e.g. kind = \"round_robin\" (see `lbsim strategies`)",
            ));
        }
        if f.strategies.len() > cost::MAX_STRATEGIES {
            return Err(self.invalid(
                "strategies",
                format!(
                    "{} strategies, above {}",
                    f.strategies.len(),
                    cost::MAX_STRATEGIES
                ),
                format!(
                    "compare at most {} strategies in one scenario",
                    cost::MAX_STRATEGIES
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in f.strategies.iter().enumerate() {
            let label = s.label();
            if label.trim().is_empty() || label.chars().any(char::is_control) {
                return Err(self.invalid(
                    &format!("strategies[{i}].label"),
                    format!(
                        "label `{}` is empty or has a control character",
                        label.escape_debug()
                    ),
                    "give the strategy a visible label, or remove `label` to use its kind",
                ));
            }
            if !seen.insert(label.clone()) {
                return Err(self.invalid(
                    &format!("strategies[{i}].label"),
                    format!("label `{label}` is used twice"),
                    "give each strategy its own `label`",
                ));
            }
        }
        let n: usize = f.servers.iter().map(|g| g.count as usize).sum();
        for (i, s) in f.strategies.iter().enumerate() {
            s.spec.validate(n).map_err(|e| {
                self.invalid(&format!("strategies[{i}].{}", e.field), e.problem, e.fix)
            })?;
            if let Some(p) = &s.policy {
                p.check().map_err(|e| {
                    self.invalid(
                        &format!("strategies[{i}].policy.{}", e.field),
                        e.problem,
                        e.fix,
                    )
                })?;
                if p.outlier.is_some() && s.spec.indexes_load_reports() {
                    return Err(self.invalid(
                        &format!("strategies[{i}].policy.outlier"),
                        "this strategy picks from the servers' shared load index, which per-balancer ejection cannot hide servers from",
                        "set `indexed = false`, or remove [strategies.policy.outlier]",
                    ));
                }
                if let Some(ramp) = &p.slow_start
                    && s.spec.reads().slow_start != Some(ramp.kind())
                {
                    return Err(self.invalid(
                        &format!("strategies[{i}].policy.slow_start"),
                        format!(
                            "`{}` does not apply {} slow start",
                            s.spec.kind(),
                            slow_start_name(ramp.kind())
                        ),
                        slow_start_fix(),
                    ));
                }
                if f.connections.is_some() {
                    return Err(self.invalid(
                        &format!("strategies[{i}].policy"),
                        "client policies apply to request-level balancing, and this scenario has [connections]",
                        "remove [strategies.policy], or remove [connections] to balance each request",
                    ));
                }
            }
        }
        let any_weighted = f.strategies.iter().any(|s| s.spec.uses_weights());
        if any_weighted && f.servers.iter().all(|g| g.weight == 0) {
            return Err(self.invalid(
                "servers[0].weight",
                "every server weight is 0, so a weighted strategy can pick no server",
                "give at least one group a weight of 1 or more",
            ));
        }
        Ok(())
    }
}

/// Whether a strategy entry's circuit breakers bound what its balancers leave at the
/// servers, so that overload cannot grow queues without bound: each balancer holds at
/// most `max_requests` attempts, and every attempt it stops waiting for is withdrawn
/// (none time out, or timed-out ones are cancelled; hedges that lose are cancelled).
fn bounded_by_circuit_breakers(s: &crate::strategy::StrategyEntry) -> bool {
    s.policy.as_ref().is_some_and(|p| {
        p.circuit_breakers.is_some()
            && (p.cancel || (p.timeout.is_none() && p.per_try_timeout.is_none()))
            && p.hedge.as_ref().is_none_or(|h| h.cancel_losers)
    })
}

/// The system a slow start follows, as the `kind` of `[strategies.policy.slow_start]`.
fn slow_start_name(kind: crate::strategy::RampKind) -> &'static str {
    match kind {
        crate::strategy::RampKind::Envoy => "\"envoy\"",
        crate::strategy::RampKind::Nginx => "\"nginx\"",
    }
}

/// How to fix a slow start the strategy does not apply: the kinds that apply each, from
/// the registry.
fn slow_start_fix() -> String {
    let kinds: Vec<String> = crate::strategy::STRATEGIES
        .iter()
        .filter_map(|d| {
            let a = d.about();
            a.reads
                .slow_start
                .map(|k| format!("`{}` ({})", a.kind, slow_start_name(k)))
        })
        .collect();
    format!(
        "slow start ramps weights, and only these kinds apply it (with this `kind` of slow start): {}; use one of them, or remove [strategies.policy.slow_start]",
        kinds.join(", ")
    )
}
