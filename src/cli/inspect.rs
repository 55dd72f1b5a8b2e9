//! `lbsim validate` and `lbsim strategies`: look at a scenario or the catalogue without
//! running anything.

use std::path::Path;
use std::process::ExitCode;

use lbsim::strategy::CATALOGUE;

use super::{CostFlags, bad_flag, check_cost, load};

pub fn cmd_validate(
    path: &Path,
    replications: Option<u32>,
    cost: &CostFlags,
) -> anyhow::Result<ExitCode> {
    let scenario = load(path)?;
    if replications == Some(0) {
        return Err(bad_flag(
            path,
            "--replications",
            "is 0",
            "use 2 or more replications",
        ));
    }
    let estimate = check_cost(
        &scenario,
        replications.unwrap_or(scenario.replications),
        None,
        cost,
        false,
    )?;
    let rate = scenario.mean_rate();
    let capacity = scenario.capacity();
    println!("{}: valid", path.display());
    println!("  estimated cost: {}", estimate.describe());
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
