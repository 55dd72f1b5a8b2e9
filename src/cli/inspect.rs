//! `lbsim validate` and `lbsim strategies`: look at a scenario or the catalogue without
//! running anything.

use std::path::Path;
use std::process::ExitCode;

use lbsim::strategy::CATALOGUE;

use super::load;

pub fn cmd_validate(path: &Path, strict: bool) -> anyhow::Result<ExitCode> {
    let scenario = load(path)?;
    let rate = scenario.mean_rate();
    let capacity = scenario.capacity();
    let unstable: Vec<String> = (0..scenario.strategies.len())
        .filter_map(|k| {
            lbsim::stability::static_overload(&scenario, k)
                .map(|why| format!("`{}` {why}", scenario.strategies[k].label()))
        })
        .collect();
    let warnings = scenario.warnings().len();
    println!(
        "{}: valid{}",
        path.display(),
        match (unstable.is_empty(), warnings) {
            (false, _) => format!(", but unstable: {}", unstable.join("; ")),
            (true, 0) => String::new(),
            (true, 1) => " (1 warning)".to_string(),
            (true, n) => format!(" ({n} warnings)"),
        }
    );
    println!(
        "  {} servers in {} groups, mean arrival rate {:.1} req/s, capacity {:.1} req/s (overall load {:.0}%)",
        scenario.servers().len(),
        scenario.groups.len(),
        rate,
        capacity,
        100.0 * rate / capacity
    );
    for entry in &scenario.strategies {
        match scenario.group_loads(entry) {
            Some(loads) => {
                let parts: Vec<String> = loads
                    .iter()
                    .map(|l| {
                        format!(
                            "{} {:.1} req/s each ({:.0}% busy)",
                            l.group,
                            l.rate_per_server,
                            100.0 * l.utilization
                        )
                    })
                    .collect();
                println!("  {:<28} {}", entry.label(), parts.join(", "));
            }
            None => println!(
                "  {:<28} adaptive: the split depends on the servers' state",
                entry.label()
            ),
        }
    }
    if strict && warnings > 0 {
        eprintln!("--strict: {warnings} warning(s) above; exit status 1");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn cmd_strategies() {
    for s in CATALOGUE {
        println!("{}", s.kind);
        println!("    follows:    {}", s.follows);
        if !s.params.is_empty() {
            println!("    parameters: {}", s.params);
        }
    }
    println!(
        "\nUse in a scenario: [[strategies]] kind = \"<kind>\" plus parameters (see scenarios/README.md)."
    );
}
