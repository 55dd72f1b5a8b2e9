//! The `[sweep]` section of a scenario file: one parameter, or a grid of two, varied over
//! lists of values (offered load, servers in a group, balancers, load-report interval, a
//! strategy knob), and the scenario at each point.
//!
//! ```toml
//! [sweep]
//! load = [0.1, 0.3, 0.5, 0.7, 0.9]   # offered load, as a fraction of capacity
//! # or: group = "slow", count = [2, 4, 6]
//! # or: balancers = [1, 2, 4, 8]
//! # or: load_report_interval = [0.01, 0.1, 1.0]
//! # or a strategy knob: parameter = "d", values = [1, 2, 4, 8]
//! #   (every strategy that has the parameter, or only `strategy = "<label>"`)
//!
//! [sweep.by]                          # optional: a second, different parameter
//! balancers = [1, 4, 16]              # same kinds as above
//! ```
//!
//! With `[sweep.by]` the points are the cartesian product, the first parameter varying
//! fastest: (0.1, 1), (0.3, 1), ..., (0.9, 1), (0.1, 4), ... So the points for one value of
//! the second parameter are contiguous, one curve of the 1-D sweep each.

use serde::{Deserialize, Serialize};

use super::{Scenario, ScenarioError, ScenarioFile, Validator};
use crate::strategy::StrategyEntry;
use crate::workload::arrival::ArrivalSpec;

/// `[sweep]` (or `[sweep.by]`) as written: exactly one list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// Offered load as a fraction of capacity (arrival rates scaled to match).
    #[serde(default)]
    pub load: Option<Vec<f64>>,
    /// Server group whose `count` is swept.
    #[serde(default)]
    pub group: Option<String>,
    /// Numbers of servers in `group`.
    #[serde(default)]
    pub count: Option<Vec<u32>>,
    /// Numbers of client-side balancers.
    #[serde(default)]
    pub balancers: Option<Vec<u32>>,
    /// Seconds between load reports (staleness of the balancers' view).
    #[serde(default)]
    pub load_report_interval: Option<Vec<f64>>,
    /// A strategy parameter (e.g. `d`, `decay_time`), swept over `values`.
    #[serde(default)]
    pub parameter: Option<String>,
    /// Values of `parameter`.
    #[serde(default)]
    pub values: Option<Vec<f64>>,
    /// Label of the one strategy whose `parameter` is swept (default: every strategy
    /// that has it).
    #[serde(default)]
    pub strategy: Option<String>,
    /// `[sweep.by]`: a second parameter, crossed with the first.
    #[serde(default)]
    pub by: Option<Box<SweepFile>>,
}

/// The swept parameter.
#[derive(Clone, Debug, PartialEq)]
pub enum SweepParameter {
    /// Offered load (fraction of capacity).
    Load,
    /// Server count of group `index` (named `name`).
    Count {
        /// Group index.
        index: usize,
        /// Group name.
        name: String,
    },
    /// Balancers.
    Balancers,
    /// Load-report interval (seconds).
    LoadReportInterval,
    /// A strategy parameter.
    Strategy {
        /// Parameter name.
        name: String,
        /// Labels of the strategies it applies to.
        labels: Vec<String>,
        /// Per point: (strategy index, entry with the parameter set).
        points: Vec<Vec<(usize, StrategyEntry)>>,
    },
}

/// One swept parameter and its values.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepAxis {
    /// What varies.
    pub parameter: SweepParameter,
    /// Its values, in file order.
    pub values: Vec<f64>,
}

/// A validated sweep: one parameter, or two crossed.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    /// The first parameter (`[sweep]`), varying fastest.
    pub first: SweepAxis,
    /// The second parameter (`[sweep.by]`), if any.
    pub by: Option<SweepAxis>,
}

impl Sweep {
    /// Number of points (the product of the lists' lengths).
    pub fn len(&self) -> usize {
        self.first.values.len() * self.by.as_ref().map_or(1, |b| b.values.len())
    }

    /// Whether the sweep has no point (never true once validated).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Indices into the first and second lists of point `p` (first varies fastest).
    pub fn coords(&self, p: usize) -> (usize, Option<usize>) {
        let n = self.first.values.len().max(1);
        (p % n, self.by.as_ref().map(|_| p / n))
    }

    /// Values of the first and second parameters at point `p`.
    pub fn values_at(&self, p: usize) -> (f64, Option<f64>) {
        let (i, j) = self.coords(p);
        (
            self.first.values[i],
            j.zip(self.by.as_ref()).map(|(j, b)| b.values[j]),
        )
    }

    /// Point `p` for messages: `load = 0.5` or `load = 0.5, balancers = 4`.
    pub fn describe(&self, p: usize) -> String {
        let (x, y) = self.values_at(p);
        let mut s = format!("{} = {x}", self.first.name());
        if let (Some(b), Some(y)) = (&self.by, y) {
            s.push_str(&format!(", {} = {y}", b.name()));
        }
        s
    }
}

impl SweepAxis {
    /// Parameter name as in `sweep.csv`.
    pub fn name(&self) -> String {
        match &self.parameter {
            SweepParameter::Load => "load".into(),
            SweepParameter::Count { name, .. } => format!("servers.{name}.count"),
            SweepParameter::Balancers => "balancers".into(),
            SweepParameter::LoadReportInterval => "load_report_interval".into(),
            SweepParameter::Strategy { name, .. } => name.clone(),
        }
    }

    /// Axis label for plots.
    pub fn axis_label(&self) -> String {
        match &self.parameter {
            SweepParameter::Load => "offered load (fraction of cluster capacity)".into(),
            SweepParameter::Count { name, .. } => format!("servers in group `{name}`"),
            SweepParameter::Balancers => "client-side balancers".into(),
            SweepParameter::LoadReportInterval => "load report interval (s)".into(),
            SweepParameter::Strategy { name, labels, .. } => {
                format!("strategy parameter `{name}` of {}", labels.join(", "))
            }
        }
    }

    /// Sets this parameter to its `j`-th value in `s`.
    fn apply(&self, s: &mut Scenario, j: usize) {
        let v = self.values[j];
        match &self.parameter {
            SweepParameter::Load => {
                let factor = v * s.capacity() / s.mean_rate();
                s.workload.arrivals = s.workload.arrivals.scaled(factor);
            }
            SweepParameter::Count { index, .. } => {
                s.groups[*index].count = v as u32;
                s.expand_servers();
            }
            SweepParameter::Balancers => s.balancers = v as u32,
            SweepParameter::LoadReportInterval => s.load_report_interval = Some(v),
            SweepParameter::Strategy { points, .. } => {
                for (i, e) in &points[j] {
                    s.strategies[*i] = e.clone();
                }
            }
        }
    }
}

impl Scenario {
    /// The scenario at point `p` of its sweep (itself, without the sweep, if it has none).
    pub fn at_sweep_point(&self, p: usize) -> Scenario {
        let mut s = self.clone();
        s.sweep = None;
        if s.warmup_auto && self.sweep.is_some() {
            // Each point's transient is its own: the runner chooses its warm-up anew.
            s.auto_warmup = None;
            s.warmup = 0.0;
            s.workload.horizon = s.duration;
        }
        let Some(sweep) = &self.sweep else {
            return s;
        };
        let (i, j) = sweep.coords(p);
        let mut steps = vec![(&sweep.first, i)];
        if let (Some(b), Some(j)) = (&sweep.by, j) {
            steps.push((b, j));
        }
        // Load is a fraction of the capacity *at this point*: scale arrivals last, after a
        // count sweep has resized its group.
        steps.sort_by_key(|(a, _)| matches!(a.parameter, SweepParameter::Load));
        for (axis, k) in steps {
            axis.apply(&mut s, k);
        }
        s
    }

    /// Keeps only the strategies labelled `labels` (in the file's order), for the
    /// command line's `--strategy LABEL`; no label keeps them all. A strategy-parameter
    /// sweep keeps its points for the strategies that remain. A kept strategy's results do
    /// not change: its random stream derives from the seed, replication and balancer, not
    /// from its position. Returns the first label that names no strategy.
    pub fn keep_strategies(&mut self, labels: &[String]) -> Result<(), String> {
        if labels.is_empty() {
            return Ok(());
        }
        if let Some(l) = labels
            .iter()
            .find(|l| !self.strategies.iter().any(|e| &e.label() == *l))
        {
            return Err(l.clone());
        }
        let mut next = 0;
        let new_index: Vec<Option<usize>> = self
            .strategies
            .iter()
            .map(|e| {
                labels.contains(&e.label()).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        if let Some(sweep) = &mut self.sweep {
            for axis in std::iter::once(&mut sweep.first).chain(sweep.by.as_mut()) {
                if let SweepParameter::Strategy {
                    labels: l, points, ..
                } = &mut axis.parameter
                {
                    l.retain(|x| labels.contains(x));
                    for point in points {
                        *point = point
                            .drain(..)
                            .filter_map(|(i, e)| new_index[i].map(|n| (n, e)))
                            .collect();
                    }
                }
            }
        }
        self.strategies.retain(|e| labels.contains(&e.label()));
        Ok(())
    }
}

impl Validator<'_> {
    /// Checks `[sweep]` (and `[sweep.by]`) against the rest of the file.
    pub(super) fn sweep(&self, f: &ScenarioFile) -> Result<Option<Sweep>, ScenarioError> {
        let Some(sw) = &f.sweep else {
            return Ok(None);
        };
        let (first, _) = self.sweep_axis(f, sw, "sweep")?;
        let Some(by) = &sw.by else {
            return Ok(Some(Sweep { first, by: None }));
        };
        if by.by.is_some() {
            return Err(self.invalid(
                "sweep.by",
                "a sweep varies at most two parameters",
                "remove [sweep.by.by]; run a second scenario for a third parameter",
            ));
        }
        let (second, field) = self.sweep_axis(f, by, "sweep.by")?;
        let points = first.values.len() * second.values.len();
        if points > super::cost::MAX_SWEEP_POINTS {
            return Err(self.invalid(
                &field,
                format!(
                    "the grid has {points} points, above {}",
                    super::cost::MAX_SWEEP_POINTS
                ),
                "use shorter lists in [sweep] and [sweep.by]",
            ));
        }
        if second.name() == first.name() {
            return Err(self.invalid(
                &field,
                format!("`{}` is swept twice ([sweep] and [sweep.by])", first.name()),
                "sweep a different parameter in [sweep.by], or merge the two lists into [sweep]",
            ));
        }
        if let (
            SweepParameter::Strategy { labels: a, .. },
            SweepParameter::Strategy { labels: b, .. },
        ) = (&first.parameter, &second.parameter)
            && let Some(l) = a.iter().find(|l| b.contains(l))
        {
            return Err(self.invalid(
                &field,
                format!("both swept parameters change strategy `{l}`"),
                "cross a strategy parameter with load, count, balancers or load_report_interval, or give each `strategy = \"<label>\"` of a different strategy",
            ));
        }
        Ok(Some(Sweep {
            first,
            by: Some(second),
        }))
    }

    /// Checks one parameter's list: `[sweep]` or `[sweep.by]` (field prefix `at`). Returns
    /// it with the field of its values, for later messages.
    fn sweep_axis(
        &self,
        f: &ScenarioFile,
        sw: &SweepFile,
        at: &str,
    ) -> Result<(SweepAxis, String), ScenarioError> {
        let field_of = |k: &str| format!("{at}.{k}");
        let given = [
            sw.load.is_some(),
            sw.count.is_some(),
            sw.balancers.is_some(),
            sw.load_report_interval.is_some(),
            sw.parameter.is_some() || sw.values.is_some(),
        ]
        .iter()
        .filter(|&&b| b)
        .count();
        if given != 1 {
            return Err(self.invalid(
                at,
                format!("{given} parameters are swept in [{at}]"),
                "give exactly one list: load, count (with group), balancers, load_report_interval, or parameter with values",
            ));
        }
        let most = super::cost::MAX_SWEEP_POINTS;
        let listed = [
            sw.load.as_ref().map(Vec::len),
            sw.count.as_ref().map(Vec::len),
            sw.balancers.as_ref().map(Vec::len),
            sw.load_report_interval.as_ref().map(Vec::len),
            sw.values.as_ref().map(Vec::len),
        ]
        .into_iter()
        .flatten()
        .sum::<usize>();
        if listed > most {
            return Err(self.invalid(
                at,
                format!("{listed} values, above {most}"),
                format!("sweep at most {most} points"),
            ));
        }
        // Bounded queues, or admission control that drops what waited too long.
        let bounded = f
            .servers
            .iter()
            .any(|g| g.queue_capacity.is_some() || g.admission.is_some_and(|a| a.drops()));
        let (parameter, values, field): (SweepParameter, Vec<f64>, String) = if let Some(load) =
            &sw.load
        {
            if matches!(f.arrivals, ArrivalSpec::Trace { .. }) {
                return Err(self.invalid(
                    &field_of("load"),
                    "a trace cannot be scaled to another load",
                    "sweep a synthetic arrival process (e.g. poisson), or sweep count/balancers",
                ));
            }
            for &l in load {
                let max = if bounded { 10.0 } else { 1.0 };
                if !(l.is_finite() && l > 0.0 && (l < max || (bounded && l <= max))) {
                    return Err(self.invalid(
                            &field_of("load"),
                            format!("load {l} is outside (0, {max})"),
                            if bounded {
                                "use fractions of capacity greater than 0 (at most 10 with bounded queues)"
                            } else {
                                "use fractions of capacity between 0 and 1 (set queue_capacity, or a queue_timeout or codel under [servers.admission], to study overload)"
                            },
                        ));
                }
            }
            (SweepParameter::Load, load.clone(), field_of("load"))
        } else if let Some(count) = &sw.count {
            let Some(name) = &sw.group else {
                return Err(self.invalid(
                    &field_of("count"),
                    "no `group` says which server group to resize",
                    "add group = \"<name of a [[servers]] group>\"",
                ));
            };
            let Some(index) = f.servers.iter().position(|g| &g.name == name) else {
                return Err(self.invalid(
                    &field_of("group"),
                    format!("no server group is named `{name}`"),
                    "use the name of one of the [[servers]] groups",
                ));
            };
            if count.contains(&0) {
                return Err(self.invalid(
                    &field_of("count"),
                    "contains 0",
                    "use counts of 1 or more",
                ));
            }
            (
                SweepParameter::Count {
                    index,
                    name: name.clone(),
                },
                count.iter().map(|&c| f64::from(c)).collect(),
                field_of("count"),
            )
        } else if let Some(b) = &sw.balancers {
            if b.contains(&0) {
                return Err(self.invalid(
                    &field_of("balancers"),
                    "contains 0",
                    "use 1 or more balancers",
                ));
            }
            if let Some(&x) = b.iter().find(|&&x| x > super::cost::MAX_BALANCERS) {
                return Err(self.invalid(
                    &field_of("balancers"),
                    format!("contains {x}, above {}", super::cost::MAX_BALANCERS),
                    format!("use at most {} balancers", super::cost::MAX_BALANCERS),
                ));
            }
            (
                SweepParameter::Balancers,
                b.iter().map(|&c| f64::from(c)).collect(),
                field_of("balancers"),
            )
        } else if sw.parameter.is_some() || sw.values.is_some() {
            let (Some(name), Some(values)) = (&sw.parameter, &sw.values) else {
                return Err(self.invalid(
                    &field_of("parameter"),
                    "a strategy sweep needs both `parameter` and `values`",
                    "e.g. parameter = \"d\" and values = [1, 2, 4]",
                ));
            };
            let param = self.strategy_sweep(f, at, name, values, sw.strategy.as_deref())?;
            (param, values.clone(), field_of("values"))
        } else {
            let v = sw.load_report_interval.clone().unwrap_or_default();
            for &x in &v {
                self.interval(&field_of("load_report_interval"), x)?;
            }
            (
                SweepParameter::LoadReportInterval,
                v,
                field_of("load_report_interval"),
            )
        };
        if values.is_empty() {
            return Err(self.invalid(
                &field,
                "is empty",
                "list at least one value (two or more make a curve)",
            ));
        }
        Ok((SweepAxis { parameter, values }, field))
    }
}

impl Validator<'_> {
    /// Resolves a strategy-parameter sweep: the entries of every point, each checked the
    /// way a scenario file's strategies are.
    fn strategy_sweep(
        &self,
        f: &ScenarioFile,
        at: &str,
        name: &str,
        values: &[f64],
        only: Option<&str>,
    ) -> Result<SweepParameter, ScenarioError> {
        use crate::strategy::registry::Ty;
        // The knob `name` of each entry, with the type its values take.
        let knob = |e: &StrategyEntry| {
            e.spec
                .about()
                .knobs
                .iter()
                .find(|k| k.name == name)
                .map(|k| k.ty)
        };
        let targets: Vec<usize> = f
            .strategies
            .iter()
            .enumerate()
            .filter(|(_, e)| only.is_none_or(|l| e.label() == l))
            .filter(|(_, e)| knob(e).is_some())
            .map(|(i, _)| i)
            .collect();
        if targets.is_empty() {
            return Err(self.invalid(
                &format!("{at}.parameter"),
                match only {
                    Some(l) => format!("strategy `{l}` has no parameter `{name}` (or no strategy is labelled so)"),
                    None => format!("no strategy has a parameter `{name}`"),
                },
                "use a parameter that `lbsim strategies` lists for one of the scenario's strategies",
            ));
        }
        let mut points = Vec::with_capacity(values.len());
        for &v in values {
            let mut entries = Vec::with_capacity(targets.len());
            for &i in &targets {
                let entry = &f.strategies[i];
                // The value in the knob's own type: sweeps set typed fields.
                let value = match knob(entry) {
                    Some(Ty::Int) => {
                        if v.fract() != 0.0 || !(0.0..=i64::MAX as f64).contains(&v) {
                            return Err(self.invalid(
                                &format!("{at}.values"),
                                format!("`{name}` takes whole numbers, got {v}"),
                                "list whole numbers",
                            ));
                        }
                        toml::Value::Integer(v as i64)
                    }
                    Some(Ty::Bool) => toml::Value::Boolean(v != 0.0),
                    _ => toml::Value::Float(v),
                };
                let spec = entry.spec.with_param(name, value).map_err(|e| {
                    self.invalid(
                        &format!("{at}.values"),
                        format!("{name} = {v}: {e}"),
                        "use values the parameter accepts",
                    )
                })?;
                entries.push((
                    i,
                    StrategyEntry {
                        label: entry.label.clone(),
                        spec,
                        policy: entry.policy.clone(),
                    },
                ));
            }
            points.push(entries);
        }
        Ok(SweepParameter::Strategy {
            name: name.to_string(),
            labels: targets.iter().map(|&i| f.strategies[i].label()).collect(),
            points,
        })
    }
}

/// Checks every point of a validated scenario's sweep for stability.
pub(super) fn check_points(v: &Validator<'_>, scenario: &Scenario) -> Result<(), ScenarioError> {
    let Some(sweep) = &scenario.sweep else {
        return Ok(());
    };
    let bounded = scenario
        .groups
        .iter()
        .any(|g| g.queue_capacity.is_some() || g.admission.is_some_and(|a| a.drops()));
    for j in 0..sweep.len() {
        let p = scenario.at_sweep_point(j);
        // Strategy parameters may depend on the number of servers (e.g. d ≤ n).
        let n = p.server_count();
        if n > super::cost::MAX_SERVERS {
            return Err(v.invalid(
                "sweep",
                format!(
                    "at {}: {n} servers in all, above {}",
                    sweep.describe(j),
                    super::cost::MAX_SERVERS
                ),
                "use smaller counts",
            ));
        }
        let n = n as usize;
        for (i, e) in p.strategies.iter().enumerate() {
            e.spec.validate(n).map_err(|err| {
                v.invalid(
                    "sweep",
                    format!(
                        "at {}: strategies[{i}].{}: {}",
                        sweep.describe(j),
                        err.field,
                        err.problem
                    ),
                    err.fix,
                )
            })?;
        }
        let (rate, cap) = (p.mean_rate(), p.capacity());
        if !bounded && rate >= cap {
            return Err(v.invalid(
                "sweep",
                format!(
                    "unstable at {}: requests arrive at {rate:.1}/s but the servers serve at most {cap:.1}/s",
                    sweep.describe(j)
                ),
                "drop that point, or set `queue_capacity` (or [servers.admission] queue_timeout or codel) to study overload",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The same minimal scenario as the scenario module's tests.
    fn base() -> String {
        crate::scenario::tests::minimal()
    }

    fn load(extra: &str) -> Result<Scenario, ScenarioError> {
        Scenario::from_source(Path::new("t.toml"), &format!("{}{extra}", base()))
    }

    #[test]
    fn load_sweep_scales_arrivals_to_capacity_fractions() {
        let s = load("[sweep]\nload = [0.25, 0.5]\n").unwrap();
        let p = s.at_sweep_point(1);
        assert!((p.mean_rate() - 20.0).abs() < 1e-9, "{}", p.mean_rate());
        assert!(p.sweep.is_none());
        assert_eq!(s.sweep.as_ref().unwrap().first.name(), "load");
    }

    #[test]
    fn keeping_some_strategies_remaps_a_strategy_sweep() {
        let src = format!(
            "{}[[strategies]]\nkind = \"power_of_d\"\n[[strategies]]\nlabel = \"p1\"\nkind = \"power_of_d\"\nd = 1\n[sweep]\nparameter = \"d\"\nvalues = [2, 1]\n",
            base()
        );
        let mut s = Scenario::from_source(Path::new("t.toml"), &src).unwrap();
        assert_eq!(s.keep_strategies(&["nope".into()]), Err("nope".into()));
        assert_eq!(s.strategies.len(), 3, "nothing dropped on a bad label");
        s.keep_strategies(&["p1".into()]).unwrap();
        assert_eq!(s.strategies.len(), 1);
        // The sweep still sets `d` of the one strategy left, now at index 0.
        for (p, d) in [(0, 2), (1, 1)] {
            let at = s.at_sweep_point(p);
            assert_eq!(at.strategies.len(), 1);
            assert_eq!(at.strategies[0].label(), "p1");
            let p = at.strategies[0].spec.params::<crate::strategy::PowerOfD>();
            assert_eq!(p.map(|p| (p.d, p.replacement)), Some((d, false)));
        }
    }

    #[test]
    fn count_sweep_resizes_the_group_and_checks_stability() {
        let s = load("[sweep]\ngroup = \"s\"\ncount = [1, 3]\n").unwrap();
        assert_eq!(s.at_sweep_point(1).servers().len(), 3);
        let e = load("[sweep]\ngroup = \"s\"\ncount = [1, 3]\n")
            .map(|_| ())
            .and_then(|_| {
                load("[sweep]\nload = [0.5]\n")?;
                Ok(())
            });
        assert!(e.is_ok());
        // 10 req/s on 1 server of 20 req/s is fine; make it 30 req/s to overload 1 server.
        let src = base().replace("rate = 10", "rate = 30");
        let e = Scenario::from_source(
            Path::new("t.toml"),
            &format!("{src}[sweep]\ngroup = \"s\"\ncount = [1, 3]\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("unstable at servers.s.count = 1") && e.contains("fix:"),
            "{e}"
        );
    }

    #[test]
    fn strategy_knob_sweep_sets_the_parameter_per_point() {
        let src = base().replace(
            "kind = \"round_robin\"",
            "kind = \"round_robin\"\n[[strategies]]\nkind = \"power_of_d\"",
        );
        let s = Scenario::from_source(
            Path::new("t.toml"),
            &format!("{src}[sweep]\nparameter = \"d\"\nvalues = [1, 2]\n"),
        )
        .unwrap();
        let p = s.at_sweep_point(0);
        assert_eq!(
            p.strategies[1]
                .spec
                .params::<crate::strategy::PowerOfD>()
                .map(|p| p.d),
            Some(1)
        );
        assert_eq!(p.strategies[0], s.strategies[0]);
        assert!(
            s.sweep
                .as_ref()
                .unwrap()
                .first
                .axis_label()
                .contains("power_of_d")
        );
        // d = 3 > 2 servers is refused with the strategy's own message.
        let e = Scenario::from_source(
            Path::new("t.toml"),
            &format!("{src}[sweep]\nparameter = \"d\"\nvalues = [3]\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("at d = 3") && e.contains("fix:"), "{e}");
        let e = load("[sweep]\nparameter = \"d\"\nvalues = [1]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no strategy has a parameter `d`"), "{e}");
    }

    /// Sweeps set typed fields: `first`'s `maxconn` is an optional integer, unset in the
    /// file (it used to fail: "invalid type: floating point `1.0`, expected u32").
    #[test]
    fn sweeping_an_optional_integer_knob_sets_it() {
        use crate::strategy::{First, LeastResponseTime};
        let src = base().replace(
            "kind = \"round_robin\"",
            "kind = \"first\"\n[[strategies]]\nkind = \"least_response_time\"",
        );
        let s = Scenario::from_source(
            Path::new("t.toml"),
            &format!("{src}[sweep]\nparameter = \"maxconn\"\nvalues = [1, 4]\n"),
        )
        .unwrap();
        for (p, m) in [(0, 1), (1, 4)] {
            let at = s.at_sweep_point(p);
            let first = at.strategies[0].spec.params::<First>().unwrap();
            assert_eq!(first.maxconn, Some(m));
            assert!(at.strategies[1].spec.is::<LeastResponseTime>());
        }
        // A float knob takes whole numbers too; an integer knob refuses fractions.
        let s = Scenario::from_source(
            Path::new("t.toml"),
            &format!("{src}[sweep]\nparameter = \"alpha\"\nvalues = [1]\n"),
        )
        .unwrap();
        let at = s.at_sweep_point(0);
        let alpha = at.strategies[1]
            .spec
            .params::<LeastResponseTime>()
            .unwrap()
            .alpha;
        assert_eq!(alpha, 1.0);
        let e = Scenario::from_source(
            Path::new("t.toml"),
            &format!("{src}[sweep]\nparameter = \"maxconn\"\nvalues = [1.5]\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("whole numbers") && e.contains("sweep.values"),
            "{e}"
        );
        let e = Scenario::from_source(
            Path::new("t.toml"),
            &format!("{src}[sweep]\nparameter = \"maxconn\"\nvalues = [0]\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("maxconn") && e.contains("fix:"), "{e}");
    }

    #[test]
    fn bad_sweeps_name_field_and_fix() {
        let e = load("[sweep]\nload = [1.2]\n").unwrap_err().to_string();
        assert!(e.contains("sweep.load") && e.contains("fix:"), "{e}");
        let e = load("[sweep]\nload = [0.5]\nbalancers = [1]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 parameters"), "{e}");
        let e = load("[sweep]\ncount = [1]\n").unwrap_err().to_string();
        assert!(e.contains("group"), "{e}");
        let e = load("[sweep]\ngroup = \"x\"\ncount = [1]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no server group"), "{e}");
    }

    #[test]
    fn two_parameter_sweep_is_the_product_first_fastest() {
        let s = load("[sweep]\nload = [0.25, 0.5]\n[sweep.by]\ngroup = \"s\"\ncount = [2, 4, 8]\n")
            .unwrap();
        let sw = s.sweep.as_ref().unwrap();
        assert_eq!(sw.len(), 6);
        assert_eq!(sw.values_at(1), (0.5, Some(2.0)));
        assert_eq!(sw.values_at(2), (0.25, Some(4.0)));
        assert_eq!(sw.describe(5), "load = 0.5, servers.s.count = 8");
        // Load is a fraction of the capacity at the point, after the group is resized:
        // 8 servers of 20 req/s at 50% is 80 req/s.
        let p = s.at_sweep_point(5);
        assert_eq!(p.servers().len(), 8);
        assert!((p.mean_rate() - 80.0).abs() < 1e-9, "{}", p.mean_rate());
        // The same with the parameters the other way round.
        let s = load("[sweep]\ngroup = \"s\"\ncount = [2, 4, 8]\n[sweep.by]\nload = [0.25, 0.5]\n")
            .unwrap();
        let p = s.at_sweep_point(5);
        assert!((p.mean_rate() - 80.0).abs() < 1e-9, "{}", p.mean_rate());
    }

    #[test]
    fn bad_second_parameter_names_file_line_field_and_fix() {
        let src = "[sweep]\nload = [0.5]\n[sweep.by]\nload = [0.7]\n";
        let e = load(src).unwrap_err().to_string();
        assert!(
            e.contains("`load` is swept twice")
                && e.contains("sweep.by.load")
                && e.contains("fix:"),
            "{e}"
        );
        let line = base().lines().count() + 4;
        assert!(e.contains(&format!("t.toml:{line}")), "{e}");
        let e = load("[sweep]\nload = [0.5]\n[sweep.by]\nbalancers = [1, 0]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sweep.by.balancers") && e.contains("contains 0"),
            "{e}"
        );
        let e = load("[sweep]\nload = [0.5]\n[sweep.by]\nbalancers = []\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sweep.by.balancers") && e.contains("is empty"),
            "{e}"
        );
        let e = load(
            "[sweep]\nload = [0.5]\n[sweep.by]\nbalancers = [1]\nload_report_interval = [1]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("2 parameters are swept in [sweep.by]"), "{e}");
        let e = load("[sweep]\nload = [0.5]\n[sweep.by]\nbalancers = [1]\n[sweep.by.by]\nload_report_interval = [1]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most two"), "{e}");
        // Every point is checked: 1 server at 30 req/s is unstable only with count = 1.
        let src = base().replace("rate = 10", "rate = 30");
        let e = Scenario::from_source(
            Path::new("t.toml"),
            &format!(
                "{src}[sweep]\nbalancers = [1, 2]\n[sweep.by]\ngroup = \"s\"\ncount = [3, 1]\n"
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("unstable at balancers = 1, servers.s.count = 1"),
            "{e}"
        );
    }
}
