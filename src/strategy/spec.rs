//! Strategies as written in scenario files (`[[strategies]]`), the catalogue that
//! `lbsim strategies` prints, and construction of a running [`Strategy`].

use serde::{Deserialize, Serialize};

use super::{
    LeastConnections, RandomChoice, RoundRobin, SmoothWeightedRoundRobin, Strategy, WeightedRandom,
};
use crate::rng::SimRng;

/// One `[[strategies]]` entry: a label and the strategy with its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StrategyEntry {
    /// Name used in reports; defaults to the kind.
    #[serde(default)]
    pub label: Option<String>,
    /// The strategy and its parameters.
    #[serde(flatten)]
    pub spec: StrategySpec,
}

impl StrategyEntry {
    /// The label used in reports.
    pub fn label(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| self.spec.kind().to_string())
    }
}

/// A strategy and its parameters (`kind = "..."` in a scenario file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StrategySpec {
    /// See [`RoundRobin`].
    RoundRobin,
    /// See [`SmoothWeightedRoundRobin`].
    #[serde(alias = "weighted_round_robin")]
    SmoothWeightedRoundRobin,
    /// See [`LeastConnections`].
    LeastConnections {
        /// Compare `in_flight / weight` (nginx `least_conn` with weights). Default false.
        #[serde(default)]
        weighted: bool,
    },
    /// See [`RandomChoice`].
    Random,
    /// See [`WeightedRandom`].
    WeightedRandom,
}

/// What `lbsim strategies` prints about one strategy kind.
#[derive(Clone, Copy, Debug)]
pub struct StrategyInfo {
    /// The `kind` to write in a scenario file.
    pub kind: &'static str,
    /// Parameters with their defaults.
    pub params: &'static str,
    /// The system whose published semantics it follows.
    pub follows: &'static str,
    /// Whether it uses backend weights.
    pub weighted: bool,
}

/// Every strategy kind lbsim knows.
pub const CATALOGUE: &[StrategyInfo] = &[
    StrategyInfo {
        kind: "round_robin",
        params: "",
        follows: "nginx / HAProxy roundrobin with equal weights",
        weighted: false,
    },
    StrategyInfo {
        kind: "smooth_weighted_round_robin",
        params: "",
        follows: "nginx smooth weighted round robin (upstream default)",
        weighted: true,
    },
    StrategyInfo {
        kind: "least_connections",
        params: "weighted = false",
        follows: "nginx least_conn (ties by weighted round robin)",
        weighted: false,
    },
    StrategyInfo {
        kind: "random",
        params: "",
        follows: "Envoy RANDOM / HAProxy random, equal weights",
        weighted: false,
    },
    StrategyInfo {
        kind: "weighted_random",
        params: "",
        follows: "HAProxy random with weights",
        weighted: true,
    },
];

impl StrategySpec {
    /// The `kind` string of this strategy.
    pub fn kind(&self) -> &'static str {
        match self {
            StrategySpec::RoundRobin => "round_robin",
            StrategySpec::SmoothWeightedRoundRobin => "smooth_weighted_round_robin",
            StrategySpec::LeastConnections { .. } => "least_connections",
            StrategySpec::Random => "random",
            StrategySpec::WeightedRandom => "weighted_random",
        }
    }

    /// Whether the strategy's long-run traffic split is fixed by weights alone: then
    /// returns each backend's expected share, used to warn about overloaded groups.
    /// Adaptive strategies (least connections, ...) return `None`.
    pub fn static_shares(&self, weights: &[u32]) -> Option<Vec<f64>> {
        let n = weights.len() as f64;
        match self {
            StrategySpec::RoundRobin | StrategySpec::Random => Some(vec![1.0 / n; weights.len()]),
            StrategySpec::SmoothWeightedRoundRobin | StrategySpec::WeightedRandom => {
                let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
                Some(weights.iter().map(|&w| f64::from(w) / total).collect())
            }
            StrategySpec::LeastConnections { .. } => None,
        }
    }

    /// Whether the strategy reads backend weights.
    pub fn uses_weights(&self) -> bool {
        match self {
            StrategySpec::LeastConnections { weighted } => *weighted,
            other => CATALOGUE
                .iter()
                .any(|info| info.kind == other.kind() && info.weighted),
        }
    }

    /// A running instance of this strategy over `n` backends, with its own random stream.
    pub fn build(&self, _n: usize, rng: SimRng) -> Box<dyn Strategy> {
        match self {
            StrategySpec::RoundRobin => Box::new(RoundRobin::default()),
            StrategySpec::SmoothWeightedRoundRobin => Box::new(SmoothWeightedRoundRobin::default()),
            StrategySpec::LeastConnections { weighted } => {
                Box::new(LeastConnections::new(*weighted))
            }
            StrategySpec::Random => Box::new(RandomChoice::new(rng)),
            StrategySpec::WeightedRandom => Box::new(WeightedRandom::new(rng)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        strategies: Vec<StrategyEntry>,
    }

    #[test]
    fn parses_entries_with_labels_and_parameters() {
        let doc: Doc = toml::from_str(
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
        assert_eq!(
            doc.strategies[1].spec,
            StrategySpec::LeastConnections { weighted: true }
        );
    }

    #[test]
    fn unknown_fields_and_kinds_are_errors() {
        let e = toml::from_str::<Doc>(
            "[[strategies]]\nkind = \"least_connections\"\nweigthed = true\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("weigthed"), "{e}");
        let e = toml::from_str::<Doc>("[[strategies]]\nkind = \"magic\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("magic") && e.contains("round_robin"), "{e}");
    }

    #[test]
    fn catalogue_lists_every_kind() {
        for spec in [
            StrategySpec::RoundRobin,
            StrategySpec::SmoothWeightedRoundRobin,
            StrategySpec::LeastConnections { weighted: false },
            StrategySpec::Random,
            StrategySpec::WeightedRandom,
        ] {
            assert!(CATALOGUE.iter().any(|i| i.kind == spec.kind()));
        }
    }
}
