//! The documentation says what the code does: the strategy registry's table, with each
//! kind's parameters and units, is in README.md and scenarios/README.md; the default check
//! tolerances read the same in `check --help`, the README and the code; the README's metric
//! table is the one generated from the metric definitions, and its CSV column reference
//! the one generated from the CSV files' column tables.

use std::process::Command;

use lbsim::metrics::markdown_table;
use lbsim::report::check::DEFAULT_TOLERANCES;
use lbsim::strategy::{STRATEGIES, registry};

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The READMEs' strategy tables are the registry's, verbatim: a new strategy, knob,
/// default or description makes this fail until the tables are regenerated.
#[test]
fn both_readmes_hold_the_generated_strategy_table() {
    let table = registry::markdown_table();
    for doc in ["README.md", "scenarios/README.md"] {
        assert!(
            read(doc).contains(&table),
            "{doc}'s strategy table is stale: replace it with the output of \
             `lbsim strategies --markdown`:\n{table}"
        );
    }
}

/// The README's first screen says how many strategies there are; it is the registry's count.
#[test]
fn the_readme_counts_the_registry_s_strategies() {
    let claim = format!("... {} in all)", STRATEGIES.len());
    assert!(
        read("README.md").contains(&claim),
        "README.md's first paragraph must say `{claim}` (the registry's count)"
    );
}

#[test]
fn readme_metric_table_is_generated_from_the_definitions() {
    let table = markdown_table();
    assert!(
        read("README.md").contains(&table),
        "README.md's metric table is stale; replace it with\n{table}(from lbsim::metrics::markdown_table)"
    );
}

#[test]
fn readme_csv_columns_are_generated_from_the_tables() {
    let reference = lbsim::report::columns::markdown();
    assert!(
        read("README.md").contains(&reference),
        "README.md's CSV column reference is stale; replace it with\n{reference}(from lbsim::report::columns::markdown)"
    );
}

#[test]
fn default_tolerances_read_the_same_everywhere() {
    assert!(
        read("README.md").contains(DEFAULT_TOLERANCES),
        "README.md must state the defaults as check::DEFAULT_TOLERANCES does:\n{DEFAULT_TOLERANCES}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .args(["check", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains(DEFAULT_TOLERANCES), "{help}");
    assert!(help.contains("[default: reports/baseline]"), "{help}");
}

#[test]
fn strategies_lists_units() {
    let out = Command::new(env!("CARGO_BIN_EXE_lbsim"))
        .arg("strategies")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("decay_time = 10 s"), "{text}");
    assert!(text.contains("weight_update_period = 1 s"), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| !l.starts_with(' ') && !l.is_empty())
            .count(),
        STRATEGIES.len() + 2,
        "one line per kind, and the two closing lines: {text}"
    );
}
