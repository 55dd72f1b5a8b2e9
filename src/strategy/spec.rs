//! Strategies as written in scenario files (`[[strategies]]`): an entry's label and its
//! [`StrategySpec`], the kind's typed parameters behind the registry's
//! ([`super::registry`]) interface.

use std::fmt;
use std::sync::Arc;

use serde::de::Error as _;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Strategy;
use super::registry::{self, About, Erased, Kind, PickCost, Reads, STRATEGIES, Split, Typed};
use crate::rng::SimRng;

/// One `[[strategies]]` entry: a label and the strategy with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct StrategyEntry {
    /// Name used in reports; defaults to the kind.
    pub label: Option<String>,
    /// The strategy and its parameters.
    pub spec: StrategySpec,
    /// The client policy of every balancer running this entry (`[strategies.policy]`):
    /// timeouts, retries, budgets, hedging, ejection. Absent: none (one attempt, no
    /// timeout).
    pub policy: Option<crate::policy::PolicySpec>,
}

impl StrategyEntry {
    /// The label used in reports.
    pub fn label(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| self.spec.kind().to_string())
    }
}

/// Every kind, for error messages: "`round_robin`, `random`, ...".
fn kinds_list() -> String {
    STRATEGIES
        .iter()
        .map(|d| format!("`{}`", d.about().kind))
        .collect::<Vec<_>>()
        .join(", ")
}

impl<'de> Deserialize<'de> for StrategyEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StrategyEntry, D::Error> {
        // A visitor, so that every error is raised inside the entry's own deserializer and
        // points at the entry (or at the `label` / `kind` value), not at the whole array.
        d.deserialize_map(EntryVisitor)
    }
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = StrategyEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a strategy table with `kind` and its parameters")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrategyEntry, A::Error> {
        let (mut label, mut kind, mut policy) = (None, None, None);
        let mut params = toml::Table::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "label" => label = Some(map.next_value::<String>()?),
                "kind" => kind = Some(map.next_value::<String>()?),
                "policy" => policy = Some(map.next_value::<crate::policy::PolicySpec>()?),
                _ => {
                    params.insert(key, map.next_value::<toml::Value>()?);
                }
            }
        }
        let Some(kind) = kind else {
            return Err(A::Error::custom(format!(
                "missing field `kind`: give one of {}",
                kinds_list()
            )));
        };
        let Some(def) = registry::find(&kind) else {
            return Err(A::Error::custom(format!(
                "unknown variant `{kind}` (strategy kind), expected one of {}",
                kinds_list()
            )));
        };
        match def.parse(params.clone()) {
            Ok(spec) => Ok(StrategyEntry {
                label,
                spec,
                policy,
            }),
            Err(e) => {
                // Name the parameter: the first key whose value alone is refused.
                let key = params.iter().find(|(k, v)| {
                    let one = toml::Table::from_iter([((*k).clone(), (*v).clone())]);
                    def.parse(one).is_err()
                });
                let at = key.map_or_else(String::new, |(k, _)| format!(", parameter `{k}`"));
                Err(A::Error::custom(format!(
                    "strategy `{kind}`{at}: {}",
                    e.message()
                )))
            }
        }
    }
}

impl Serialize for StrategyEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = toml::Table::new();
        if let Some(l) = &self.label {
            t.insert("label".into(), toml::Value::String(l.clone()));
        }
        t.insert("kind".into(), toml::Value::String(self.spec.kind().into()));
        t.extend(self.spec.to_table());
        if let Some(p) = &self.policy {
            let p = toml::Value::try_from(p).map_err(serde::ser::Error::custom)?;
            t.insert("policy".into(), p);
        }
        t.serialize(s)
    }
}

/// A strategy kind with its parameters (`kind = "..."` and the kind's keys in a scenario
/// file): cheap to clone, compared by kind and parameters.
#[derive(Clone)]
pub struct StrategySpec(Arc<dyn Erased>);

impl StrategySpec {
    /// Kind `K` with these parameters.
    pub fn new<K: Kind>(params: K::Params) -> StrategySpec {
        StrategySpec(Arc::new(Typed::<K>(params)))
    }

    /// Kind `K` with every parameter at its default.
    pub fn default_of<K: Kind>() -> StrategySpec {
        StrategySpec::new::<K>(K::Params::default())
    }

    /// The strategy of kind `kind` with every parameter at its default, as a scenario file
    /// with only `kind = "..."` gives it; `None` for an unknown kind.
    pub fn with_defaults(kind: &str) -> Option<StrategySpec> {
        registry::find(kind).map(|d| d.defaults())
    }

    /// The parameters, if this is kind `K`.
    pub fn params<K: Kind>(&self) -> Option<&K::Params> {
        self.0.as_any().downcast_ref::<Typed<K>>().map(|t| &t.0)
    }

    /// Whether this is kind `K`.
    pub fn is<K: Kind>(&self) -> bool {
        self.params::<K>().is_some()
    }

    /// The kind's description.
    pub fn about(&self) -> &'static About {
        self.0.about()
    }

    /// The `kind` string of this strategy.
    pub fn kind(&self) -> &'static str {
        self.about().kind
    }

    /// The parameters as a scenario file writes them (without `kind`). A parameter that
    /// is unset (`None`) is absent.
    pub fn to_table(&self) -> toml::Table {
        self.0.table()
    }

    /// This strategy with parameter `name` set to `value`; an error when the kind has no
    /// such parameter or the value has the wrong type.
    pub fn with_param(&self, name: &str, value: toml::Value) -> Result<StrategySpec, String> {
        let def = registry::find(self.kind()).ok_or("unregistered kind")?;
        if !self.about().knobs.iter().any(|k| k.name == name) {
            return Err(format!("`{}` has no parameter `{name}`", self.kind()));
        }
        let mut t = self.to_table();
        t.insert(name.to_string(), value);
        def.parse(t).map_err(|e| e.message().to_string())
    }

    /// What the strategy reads with these parameters.
    pub fn reads(&self) -> Reads {
        self.0.reads()
    }

    /// The work of one pick and the table each balancer holds.
    pub fn cost(&self) -> PickCost {
        self.0.cost()
    }

    /// Whether the strategy's long-run traffic split is fixed by weights alone: then
    /// returns each backend's expected share, used to warn about overloaded groups.
    /// Adaptive strategies (least connections, ...) return `None`.
    pub fn static_shares(&self, weights: &[u32]) -> Option<Vec<f64>> {
        let n = weights.len() as f64;
        match self.about().split {
            Split::Equal => Some(vec![1.0 / n; weights.len()]),
            Split::Weights => {
                let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
                Some(weights.iter().map(|&w| f64::from(w) / total).collect())
            }
            // Adaptive, or (hashing) decided by the keys.
            Split::Dynamic => None,
        }
    }

    /// Whether the strategy reads servers' load reports ([`super::PickContext::load`]).
    /// The simulator maintains reports only for those that do.
    pub fn reads_load_reports(&self) -> bool {
        self.reads().load_reports
    }

    /// Whether the strategy wants the simulator's table of load reports indexed by queue
    /// length ([`super::LoadTable::with_queue_index`]): indexed JSQ.
    pub fn indexes_load_reports(&self) -> bool {
        self.reads().indexed_reports
    }

    /// Whether the strategy reads backend weights.
    pub fn uses_weights(&self) -> bool {
        self.reads().weights
    }

    /// Checks the parameters for a cluster of `n` backends.
    pub fn validate(&self, n: usize) -> Result<(), SpecError> {
        self.0.validate(n)
    }

    /// A running instance of this strategy over `n` backends, with its own random stream.
    pub fn build(&self, n: usize, rng: SimRng) -> Box<dyn Strategy> {
        self.0.build(n, rng)
    }
}

impl PartialEq for StrategySpec {
    fn eq(&self, other: &StrategySpec) -> bool {
        self.0.same(other.0.as_ref())
    }
}

impl fmt::Debug for StrategySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.debug(f)
    }
}

/// A strategy parameter the simulator cannot use.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("`{field}`: {problem} (fix: {fix})")]
pub struct SpecError {
    /// The parameter, as written in the scenario file.
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl SpecError {
    /// Parameter `field` is wrong: `problem`, fixed by `fix`.
    pub fn new(
        field: &'static str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> SpecError {
        SpecError {
            field,
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// Checks a time parameter in seconds: finite, at most the longest run
    /// ([`crate::scenario::cost::MAX_TIME`]), above 0 (or 0 when `zero_ok`).
    pub fn seconds(field: &'static str, v: f64, zero_ok: bool) -> Result<(), SpecError> {
        if v.is_finite() && v <= MAX_SECONDS && (v > 0.0 || (zero_ok && v == 0.0)) {
            Ok(())
        } else {
            Err(SpecError::new(
                field,
                format!("is {v}"),
                format!(
                    "give `{field}` in seconds, {} and at most {MAX_SECONDS:e}",
                    if zero_ok {
                        "0 or more"
                    } else {
                        "greater than 0"
                    }
                ),
            ))
        }
    }
}

/// Longest time a strategy parameter may be (seconds): the scenario's longest run.
pub const MAX_SECONDS: f64 = crate::scenario::cost::MAX_TIME;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{LeastConnections, Maglev, PeakEwmaP2c, PowerOfD};

    #[derive(Debug, Deserialize)]
    struct Doc {
        strategies: Vec<StrategyEntry>,
    }

    fn parse(src: &str) -> Result<Doc, String> {
        toml::from_str::<Doc>(src).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_entries_with_labels_and_parameters() {
        let doc = parse(
            r#"
            [[strategies]]
            kind = "round_robin"
            [[strategies]]
            label = "wlc"
            kind = "least_connections"
            weighted = true
            "#,
        )
        .unwrap();
        assert_eq!(doc.strategies[0].label(), "round_robin");
        assert_eq!(doc.strategies[1].label(), "wlc");
        assert!(
            doc.strategies[1]
                .spec
                .params::<LeastConnections>()
                .unwrap()
                .weighted
        );
        assert!(doc.strategies[1].spec.uses_weights());
        assert!(!doc.strategies[0].spec.uses_weights());
    }

    #[test]
    fn unknown_fields_kinds_and_types_are_errors_naming_them() {
        let e =
            parse("[[strategies]]\nkind = \"least_connections\"\nweigthed = true\n").unwrap_err();
        assert!(e.contains("weigthed") && e.contains("line 1"), "{e}");
        let e = parse("[[strategies]]\nkind = \"magic\"\n").unwrap_err();
        assert!(e.contains("magic") && e.contains("round_robin"), "{e}");
        let e = parse("[[strategies]]\nkind = \"power_of_d\"\nreplacement = true\nd = \"two\"\n")
            .unwrap_err();
        assert!(
            e.contains("parameter `d`") && e.contains("power_of_d") && e.contains("string"),
            "{e}"
        );
        let e = parse("[[strategies]]\nlabel = \"x\"\n").unwrap_err();
        assert!(e.contains("kind") && e.contains("round_robin"), "{e}");
    }

    #[test]
    fn defaults_are_the_followed_systems() {
        let d = StrategySpec::with_defaults("power_of_d").unwrap();
        let p = d.params::<PowerOfD>().unwrap();
        assert_eq!((p.d, p.replacement), (2, false));
        let p = StrategySpec::with_defaults("peak_ewma").unwrap();
        let p = p.params::<PeakEwmaP2c>().unwrap();
        assert_eq!((p.decay_time, p.default_rtt), (10.0, 0.030));
        let m = StrategySpec::with_defaults("maglev").unwrap();
        assert_eq!(m.params::<Maglev>().unwrap().table_size, 65537);
        assert_eq!(StrategySpec::with_defaults("magic"), None);
    }

    #[test]
    fn bad_parameters_name_the_field() {
        use toml::Value::{Float, Integer};
        let cases = [
            ("power_of_d", "d", Integer(0)),
            ("power_of_d", "d", Integer(11)),
            ("maglev", "table_size", Integer(65536)),
            ("maglev", "table_size", Integer(7)),
            ("bounded_load_hash", "hash_balance_factor", Integer(100)),
            ("least_request", "choice_count", Integer(1)),
            ("first", "maxconn", Integer(0)),
            ("least_response_time", "alpha", Float(0.0)),
            ("peak_ewma", "decay_time", Float(0.0)),
            ("grpc_wrr", "weight_update_period", Float(0.05)),
            ("aperture", "min_aperture", Integer(11)),
            ("ring_hash", "min_ring_size", Integer(0)),
        ];
        for (kind, field, value) in cases {
            let spec = StrategySpec::with_defaults(kind)
                .unwrap()
                .with_param(field, value.clone())
                .unwrap();
            let e = spec.validate(10).unwrap_err();
            assert_eq!(e.field, field, "{kind} {field} = {value}");
            assert!(!e.fix.is_empty());
        }
    }

    #[test]
    fn specs_compare_by_kind_and_parameters_and_round_trip() {
        let a = StrategySpec::with_defaults("power_of_d").unwrap();
        let b = a.with_param("d", toml::Value::Integer(3)).unwrap();
        assert_ne!(a, b);
        assert_eq!(b.params::<PowerOfD>().unwrap().d, 3);
        assert_ne!(a, StrategySpec::with_defaults("jsq").unwrap());
        let mut entry = StrategyEntry {
            label: Some("p3".into()),
            spec: b.clone(),
            policy: None,
        };
        let text = toml::to_string(&entry).unwrap();
        let back: StrategyEntry = toml::from_str(&text).unwrap();
        assert_eq!(back, entry, "{text}");
        // With a client policy too.
        entry.policy = Some(
            toml::from_str("timeout = 1.0\n[retry]\nmax_attempts = 3\n[budget]\nkind = \"grpc\"\n")
                .unwrap(),
        );
        let text = toml::to_string(&entry).unwrap();
        let back: StrategyEntry = toml::from_str(&text).unwrap();
        assert_eq!(back, entry, "{text}");
        assert!(a.with_param("nope", toml::Value::Integer(1)).is_err());
        assert!(a.with_param("d", toml::Value::Float(1.5)).is_err());
    }
}
