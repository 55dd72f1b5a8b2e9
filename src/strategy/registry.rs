//! The strategy registry: every strategy kind lbsim knows, one line each in [`STRATEGIES`].
//!
//! A strategy is one file: its running type implements [`Kind`], which declares the
//! parameters a scenario file gives it (a typed struct whose `Default` holds the defaults),
//! a description ([`About`]: kind name, the system whose semantics it follows, each knob
//! with its unit), what it reads (weights, load reports, probes), its validation, its cost
//! and its constructor. Scenario parsing, `lbsim strategies`, the READMEs' strategy tables,
//! sweeps and the cost estimate all read the registry, so nothing else lists strategies.
//!
//! Construction stays static: [`Kind::build`] returns the concrete strategy type; the
//! registry boxes it once, exactly as a hand-written `match` did, so a pick costs the same.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::spec::{SpecError, StrategySpec};
use super::{
    Aperture, BoundedLoadHash, C3, EdfWeightedRoundRobin, First, Fwrr, GrpcWeightedRoundRobin,
    HaproxySource, JoinIdleQueue, LeastConnections, LeastRequest, LeastResponseTime, Leastconn,
    Maglev, NginxHash, PeakEwmaP2c, PowerOfD, Prequal, RandomChoice, RingHash, RoundRobin,
    ShortestQueue, SmoothWeightedRoundRobin, StaticRr, Strategy, WeightedRandom,
};
use crate::rng::SimRng;

/// Every strategy kind, in the order `lbsim strategies` and the READMEs list them. Adding a
/// strategy: implement [`Kind`] in its file and add its line here.
pub static STRATEGIES: &[&dyn StrategyDef] = &[
    &RoundRobin::DEF,
    &SmoothWeightedRoundRobin::DEF,
    &LeastConnections::DEF,
    &RandomChoice::DEF,
    &WeightedRandom::DEF,
    &<PowerOfD>::DEF,
    &LeastRequest::DEF,
    &PeakEwmaP2c::DEF,
    &ShortestQueue::DEF,
    &LeastResponseTime::DEF,
    &JoinIdleQueue::DEF,
    &RingHash::DEF,
    &Maglev::DEF,
    &BoundedLoadHash::DEF,
    &First::DEF,
    &EdfWeightedRoundRobin::DEF,
    &GrpcWeightedRoundRobin::DEF,
    &Aperture::DEF,
    &Leastconn::DEF,
    &StaticRr::DEF,
    &Fwrr::DEF,
    &NginxHash::DEF,
    &HaproxySource::DEF,
    &Prequal::DEF,
    &C3::DEF,
];

/// The registered kind named `kind` (or one of its aliases).
///
/// ```
/// use lbsim::strategy::registry;
/// let def = registry::find("prequal").expect("registered");
/// assert!(def.about().reads.probes);
/// let spec = def.defaults();
/// assert_eq!((spec.kind(), spec.validate(4)), ("prequal", Ok(())));
/// assert!(registry::find("no_such_kind").is_none());
/// ```
pub fn find(kind: &str) -> Option<&'static dyn StrategyDef> {
    STRATEGIES
        .iter()
        .copied()
        .find(|d| d.about().kind == kind || d.about().aliases.contains(&kind))
}

/// A strategy kind: implemented by the strategy's running type, in its own file.
pub trait Kind: Strategy + Sized + 'static {
    /// The parameters a scenario file gives (`#[serde(default, deny_unknown_fields)]`;
    /// `Default` holds the defaults, once).
    type Params: Params;

    /// Name, followed system, knobs with units, what it reads.
    const ABOUT: About;

    /// This kind's entry in [`STRATEGIES`].
    const DEF: Def<Self> = Def(PhantomData);

    /// Checks the parameters for a cluster of `n` backends. Every kind says so itself:
    /// there is no default that would let a missing check pass.
    fn validate(params: &Self::Params, n: usize) -> Result<(), SpecError>;

    /// A running instance over `n` backends, with its own random stream.
    fn build(params: &Self::Params, n: usize, rng: SimRng) -> Self;

    /// The work of one pick and the lookup table a balancer holds, for the cost estimate
    /// (`lbsim validate`).
    fn cost(params: &Self::Params) -> PickCost;

    /// What the strategy reads with these parameters; [`About::reads`] unless a parameter
    /// changes it (e.g. `weighted = true`).
    fn reads(_params: &Self::Params) -> Reads {
        Self::ABOUT.reads
    }
}

/// What a strategy's parameter struct must be.
pub trait Params:
    Clone + fmt::Debug + PartialEq + Default + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

impl<T> Params for T where
    T: Clone
        + fmt::Debug
        + PartialEq
        + Default
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// The parameters of a kind that has none: any key is refused.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// What `lbsim strategies` and the READMEs say about a kind.
#[derive(Clone, Copy, Debug)]
pub struct About {
    /// The `kind` to write in a scenario file.
    pub kind: &'static str,
    /// Other names accepted for `kind`.
    pub aliases: &'static [&'static str],
    /// The system whose published semantics it follows.
    pub follows: &'static str,
    /// Its parameters, in the order they are documented.
    pub knobs: &'static [Knob],
    /// What it reads with its default parameters.
    pub reads: Reads,
    /// Its long-run traffic split, when weights alone fix it.
    pub split: Split,
}

/// One parameter of a kind: its name, type and unit (its default is in the kind's
/// `Params::default()`).
#[derive(Clone, Copy, Debug)]
pub struct Knob {
    /// The key in a scenario file (a field of the kind's `Params`).
    pub name: &'static str,
    /// The type of its values (a sweep converts its numbers to it).
    pub ty: Ty,
    /// Unit written after the value (`s` for seconds, `points`), or empty.
    pub unit: &'static str,
    /// What the value means, written in parentheses, or empty.
    pub meaning: &'static str,
    /// What leaving an optional knob unset means (its default is `None`), or empty.
    pub unset: &'static str,
}

impl Knob {
    /// A knob without unit or comment.
    pub const fn new(name: &'static str, ty: Ty) -> Knob {
        Knob {
            name,
            ty,
            unit: "",
            meaning: "",
            unset: "",
        }
    }

    /// A time in seconds (a float written `s`).
    pub const fn seconds(name: &'static str) -> Knob {
        Knob::new(name, Ty::Float).unit("s")
    }

    /// With a unit.
    pub const fn unit(self, unit: &'static str) -> Knob {
        Knob { unit, ..self }
    }

    /// With a meaning.
    pub const fn meaning(self, meaning: &'static str) -> Knob {
        Knob { meaning, ..self }
    }

    /// With what leaving it unset means.
    pub const fn unset(self, unset: &'static str) -> Knob {
        Knob { unset, ..self }
    }
}

/// The type of a knob's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    /// `true` or `false` (a sweep gives 0 or 1).
    Bool,
    /// A whole number of 0 or more.
    Int,
    /// A number.
    Float,
}

/// What a strategy reads besides its own count of requests in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    /// Backend weights.
    pub weights: bool,
    /// Servers' load reports ([`super::PickContext::load`]); the simulator maintains
    /// them only for strategies that read them.
    pub load_reports: bool,
    /// Load reports indexed by queue length ([`super::LoadTable::with_queue_index`]).
    pub indexed_reports: bool,
    /// Answers to probes it sends to servers ([`super::Strategy::probes`]).
    pub probes: bool,
    /// Load reports carried on replies ([`super::Strategy::on_reply_load`]).
    pub reply_loads: bool,
    /// The slow start it applies to its weights ([`super::Strategy::set_slow_start`]),
    /// if any: a policy's `slow_start` must be of this system.
    pub slow_start: Option<super::RampKind>,
}

impl Reads {
    /// Nothing but its own view.
    pub const NOTHING: Reads = Reads {
        weights: false,
        load_reports: false,
        indexed_reports: false,
        probes: false,
        reply_loads: false,
        slow_start: None,
    };
    /// Backend weights.
    pub const WEIGHTS: Reads = Reads {
        weights: true,
        ..Reads::NOTHING
    };
    /// Servers' load reports.
    pub const LOAD_REPORTS: Reads = Reads {
        load_reports: true,
        ..Reads::NOTHING
    };
}

/// A strategy's long-run traffic split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Every backend gets the same share.
    Equal,
    /// Each backend gets its weight's share.
    Weights,
    /// Decided by load or by request keys.
    Dynamic,
}

/// The work of one pick, for the cost estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PickCost {
    /// Backends a pick examines beyond a constant.
    pub scanned: Scanned,
    /// The lookup table each balancer holds, if any.
    pub table: Option<Table>,
}

impl PickCost {
    /// Constant work, no table.
    pub const CONSTANT: PickCost = PickCost {
        scanned: Scanned::Few(0),
        table: None,
    };
    /// Examines every backend.
    pub const SCAN: PickCost = PickCost {
        scanned: Scanned::All,
        table: None,
    };
}

/// Backends a pick examines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scanned {
    /// This many, whatever the cluster's size.
    Few(usize),
    /// All of them.
    All,
}

/// A lookup table held by each balancer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// A hash ring sized as Envoy sizes it (16 bytes a point).
    Ring {
        /// Fewest points.
        min_points: u64,
        /// Most points.
        max_points: u64,
    },
    /// A table of this many 8-byte slots.
    Slots(u64),
}

/// A registered kind, as [`STRATEGIES`] holds it.
pub trait StrategyDef: Sync {
    /// Its description.
    fn about(&self) -> &'static About;

    /// Its parameters from a scenario file's table (without `kind` and `label`).
    fn parse(&self, params: toml::Table) -> Result<StrategySpec, toml::de::Error>;

    /// The kind with every parameter at its default.
    fn defaults(&self) -> StrategySpec;
}

/// [`Kind::DEF`]: a kind's entry in [`STRATEGIES`].
pub struct Def<K>(PhantomData<fn() -> K>);

impl<K: Kind> StrategyDef for Def<K> {
    fn about(&self) -> &'static About {
        &K::ABOUT
    }

    fn parse(&self, params: toml::Table) -> Result<StrategySpec, toml::de::Error> {
        params.try_into::<K::Params>().map(StrategySpec::new::<K>)
    }

    fn defaults(&self) -> StrategySpec {
        StrategySpec::new::<K>(K::Params::default())
    }
}

/// A kind's parameters with the kind's behaviour, type-erased: what a [`StrategySpec`]
/// holds.
pub(super) trait Erased: Send + Sync {
    fn about(&self) -> &'static About;
    fn validate(&self, n: usize) -> Result<(), SpecError>;
    fn build(&self, n: usize, rng: SimRng) -> Box<dyn Strategy>;
    fn cost(&self) -> PickCost;
    fn reads(&self) -> Reads;
    fn table(&self) -> toml::Table;
    fn same(&self, other: &dyn Erased) -> bool;
    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
    fn as_any(&self) -> &dyn Any;
}

/// A kind's parameters.
pub(super) struct Typed<K: Kind>(pub K::Params);

impl<K: Kind> Erased for Typed<K> {
    fn about(&self) -> &'static About {
        &K::ABOUT
    }
    fn validate(&self, n: usize) -> Result<(), SpecError> {
        K::validate(&self.0, n)
    }
    fn build(&self, n: usize, rng: SimRng) -> Box<dyn Strategy> {
        Box::new(K::build(&self.0, n, rng))
    }
    fn cost(&self) -> PickCost {
        K::cost(&self.0)
    }
    fn reads(&self) -> Reads {
        K::reads(&self.0)
    }
    fn table(&self) -> toml::Table {
        toml::Table::try_from(&self.0).unwrap_or_default()
    }
    fn same(&self, other: &dyn Erased) -> bool {
        other
            .as_any()
            .downcast_ref::<Typed<K>>()
            .is_some_and(|o| o.0 == self.0)
    }
    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", K::ABOUT.kind, self.0)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A value as a scenario file writes it, for the documentation: whole floats without
/// their `.0` (`10`, not `10.0`).
fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::Float(x) => format!("{x}"),
        other => other.to_string(),
    }
}

/// One knob with its default, unit and meaning: `decay_time = 10 s`,
/// `maxconn = workers (requests in flight per server)`.
fn knob_text(knob: &Knob, defaults: &toml::Table) -> String {
    let value = defaults
        .get(knob.name)
        .map_or_else(|| knob.unset.to_string(), value_text);
    let mut s = format!("{} = {value}", knob.name);
    if !knob.unit.is_empty() {
        s += &format!(" {}", knob.unit);
    }
    if !knob.meaning.is_empty() {
        s += &format!(" ({})", knob.meaning);
    }
    s
}

impl dyn StrategyDef {
    /// Its parameters with their defaults and units, or empty: what `lbsim strategies`
    /// and the READMEs print.
    pub fn params_text(&self) -> String {
        let defaults = self.defaults().to_table();
        self.about()
            .knobs
            .iter()
            .map(|k| knob_text(k, &defaults))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What it reads, in words ("weights, load reports"), or "-".
    pub fn reads_text(&self) -> String {
        let r = self.about().reads;
        let words: Vec<&str> = [
            (r.weights, "weights"),
            (r.load_reports, "load reports"),
            (r.probes, "probes"),
            (r.reply_loads, "reply loads"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, w)| *w)
        .collect();
        if words.is_empty() {
            "-".to_string()
        } else {
            words.join(", ")
        }
    }
}

/// The Markdown table of every kind, as both READMEs hold it (`lbsim strategies
/// --markdown` prints it; `tests/docs.rs` checks the READMEs hold it verbatim).
pub fn markdown_table() -> String {
    let mut s = String::from(
        "| kind | parameters (defaults, with units) | reads | follows |\n| --- | --- | --- | --- |\n",
    );
    for def in STRATEGIES {
        let params = def.params_text();
        s += &format!(
            "| `{}` | {} | {} | {} |\n",
            def.about().kind,
            if params.is_empty() { "-" } else { &params },
            def.reads_text(),
            def.about().follows
        );
    }
    s
}

/// The text `lbsim strategies` prints.
pub fn listing() -> String {
    let mut s = String::new();
    for def in STRATEGIES {
        let a = def.about();
        s += &format!("{}\n    follows:    {}\n", a.kind, a.follows);
        let params = def.params_text();
        if !params.is_empty() {
            s += &format!("    parameters: {params}\n");
        }
        if def.reads_text() != "-" {
            s += &format!("    reads:      {}\n", def.reads_text());
        }
    }
    s += "\nUse in a scenario: [[strategies]] kind = \"<kind>\" plus parameters (see scenarios/README.md);\nwrite durations as bare numbers of seconds (decay_time = 10 means 10 s).\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_aliases_are_unique() {
        let mut names: Vec<&str> = STRATEGIES
            .iter()
            .flat_map(|d| std::iter::once(d.about().kind).chain(d.about().aliases.iter().copied()))
            .collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "a kind or alias is registered twice");
    }

    /// The knobs a kind documents are exactly the fields of its parameters, with the
    /// declared types: a value of the knob's type is accepted, a key that is no knob is not.
    #[test]
    fn knobs_are_the_parameters_with_their_types() {
        for def in STRATEGIES {
            let a = def.about();
            let defaults = def.defaults().to_table();
            for key in defaults.keys() {
                assert!(
                    a.knobs.iter().any(|k| k.name == key),
                    "{}: field `{key}` is not documented as a knob",
                    a.kind
                );
            }
            for k in a.knobs {
                let value = match k.ty {
                    Ty::Bool => toml::Value::Boolean(true),
                    Ty::Int => toml::Value::Integer(3),
                    Ty::Float => toml::Value::Float(0.5),
                };
                let mut t = toml::Table::new();
                t.insert(k.name.to_string(), value);
                assert!(
                    def.parse(t).is_ok(),
                    "{}: knob `{}` does not take a {:?}",
                    a.kind,
                    k.name,
                    k.ty
                );
                assert!(
                    defaults.contains_key(k.name) == k.unset.is_empty(),
                    "{}: knob `{}` must have a default or say what unset means, not both",
                    a.kind,
                    k.name
                );
            }
            let mut t = toml::Table::new();
            t.insert("no_such_knob".into(), toml::Value::Integer(1));
            assert!(def.parse(t).is_err(), "{}", a.kind);
        }
    }

    #[test]
    fn the_declared_reads_are_the_defaults_reads() {
        for def in STRATEGIES {
            let spec = def.defaults();
            assert_eq!(spec.reads(), def.about().reads, "{}", def.about().kind);
            assert_eq!(spec.validate(10), Ok(()), "{}", def.about().kind);
        }
    }

    #[test]
    fn finds_kinds_and_aliases() {
        assert_eq!(
            find("weighted_round_robin").map(|d| d.about().kind),
            Some("smooth_weighted_round_robin")
        );
        assert!(find("magic").is_none());
    }
}
