//! Scenario files for unit tests, written once: the Poisson arrivals, server groups and
//! strategy tables that test scenarios share, so a test states only what it is about.

use std::path::Path;

use crate::scenario::Scenario;

/// A scenario file's text: the top-level keys `head`, Poisson arrivals at `rate` requests
/// a second, then `rest` (`[[servers]]`, `[[strategies]]` and any other tables).
pub(crate) fn scenario_text(head: &str, rate: f64, rest: &str) -> String {
    format!("{head}\n[arrivals]\nprocess = \"poisson\"\nrate = {rate}\n{rest}")
}

/// [`scenario_text`], parsed and validated as `t.toml`; a test's own scenario must be
/// valid, so an error panics with its message.
pub(crate) fn scenario(head: &str, rate: f64, rest: &str) -> Scenario {
    let text = scenario_text(head, rate, rest);
    Scenario::from_source(Path::new("t.toml"), &text)
        .unwrap_or_else(|e| panic!("test scenario refused: {e}\n{text}"))
}

/// A `[[servers]]` group of `count` servers named `name`, with the extra `keys` lines
/// (`"workers = 4\nspeed = 0.1"`, or empty) and `service`, an inline distribution table
/// such as [`exponential`] gives.
pub(crate) fn servers(name: &str, count: u32, keys: &str, service: &str) -> String {
    let keys = if keys.is_empty() {
        String::new()
    } else {
        format!("{keys}\n")
    };
    format!("[[servers]]\nname = \"{name}\"\ncount = {count}\n{keys}service = {service}\n")
}

/// Exponential service times of mean `mean` seconds, as a scenario file writes them.
pub(crate) fn exponential(mean: f64) -> String {
    format!("{{ dist = \"exponential\", mean = {mean} }}")
}

/// One `[[strategies]]` table per kind, without parameters.
pub(crate) fn kinds(kinds: &[&str]) -> String {
    kinds
        .iter()
        .map(|k| format!("[[strategies]]\nkind = \"{k}\"\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_make_a_valid_scenario() {
        let rest = servers("s", 3, "workers = 2", &exponential(0.01)) + &kinds(&["round_robin"]);
        let s = scenario("duration = 2", 50.0, &rest);
        assert_eq!(s.servers().len(), 3);
        assert!(s.servers().iter().all(|v| v.workers == 2));
        assert_eq!(s.strategies.len(), 1);
        assert!(scenario_text("", 10.0, "").contains("rate = 10\n"));
    }
}
