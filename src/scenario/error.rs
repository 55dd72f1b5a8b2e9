//! Errors in scenario files: each names the file, the line and field where known, and the fix.

use std::fmt;
use std::path::PathBuf;

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file (or a file it refers to) could not be read.
    #[error("{}: cannot read `{}`: {source}\n  fix: check that the path exists and is readable", .path.display(), .target.display())]
    Read {
        /// The scenario file.
        path: PathBuf,
        /// The file that could not be read (the scenario itself or a trace).
        target: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or does not match the scenario schema (unknown field,
    /// wrong type, unknown strategy or distribution).
    #[error("{}: {message}\n  fix: {fix}", .path.display())]
    Parse {
        /// The scenario file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
        /// How to fix it.
        fix: String,
    },
    /// A field has a value the simulator cannot use.
    #[error("{}{}: field `{field}`: {problem}\n  fix: {fix}", .path.display(), Line(*.line))]
    Invalid {
        /// The scenario file (or trace file).
        path: PathBuf,
        /// 1-based line of the field, when it could be located.
        line: Option<usize>,
        /// Dotted path of the field, e.g. `servers[1].workers`.
        field: String,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
}

struct Line(Option<usize>);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(l) => write!(f, ":{l}"),
            None => Ok(()),
        }
    }
}

/// Finds the 1-based line where a dotted field path such as `servers[1].service.mean` is
/// written in a TOML source, falling back to the enclosing table's header.
pub fn locate(source: &str, field: &str) -> Option<usize> {
    // Split "servers[1].service.mean" into table "servers", index 1, keys ["service", "mean"].
    let mut parts: Vec<&str> = field.split('.').collect();
    let (table, index) = match parts.first() {
        Some(first) if first.contains('[') => {
            let (name, rest) = first.split_once('[')?;
            let idx: usize = rest.trim_end_matches(']').parse().ok()?;
            (Some(name), idx)
        }
        _ => (None, 0),
    };
    if table.is_some() {
        parts.remove(0);
    }
    let mut section_start = 0usize;
    let mut in_section = table.is_none();
    let mut seen = 0usize;
    let mut current_table: Option<String> = None;
    let lines: Vec<&str> = source.lines().collect();
    let full = parts.join(".");
    // Keys may live in a [table] of their own (e.g. [arrivals]) when the path has no index.
    let head_table = if table.is_none() && parts.len() > 1 {
        Some(parts[0])
    } else {
        None
    };
    for (n, raw) in lines.iter().enumerate() {
        let line = raw.trim();
        if let Some(h) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            current_table = Some(h.trim().to_string());
            if Some(h.trim()) == table {
                if seen == index {
                    in_section = true;
                    section_start = n;
                } else if in_section {
                    break;
                }
                seen += 1;
            } else if in_section && table.is_some() {
                break;
            }
            continue;
        }
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            current_table = Some(h.trim().to_string());
            // A whole table (`arrivals`, e.g. an unstable rate): its header.
            if table.is_none() && parts.len() == 1 && h.trim() == parts[0] {
                return Some(n + 1);
            }
            // `[sweep]` and `[sweep.by]` both head `sweep.by.load`; the deeper one wins.
            if head_table
                .is_some_and(|t| h.trim() == t || full.starts_with(&format!("{}.", h.trim())))
            {
                section_start = n;
            }
            continue;
        }
        let key = line.split('=').next().unwrap_or("").trim();
        let wanted = match (table, head_table) {
            (Some(_), _) => in_section && parts.first() == Some(&key),
            (None, Some(t)) => {
                (current_table.as_deref() == Some(t) && parts.get(1) == Some(&key))
                    || (current_table.is_none() && key == t)
                    || current_table
                        .as_deref()
                        .is_some_and(|c| full == format!("{c}.{key}"))
            }
            (None, None) => current_table.is_none() && parts.first() == Some(&key),
        };
        if wanted && line.contains('=') {
            return Some(n + 1);
        }
    }
    (in_section || head_table.is_some()).then_some(section_start + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "name = \"x\"\nwarmup = 5\n\n[arrivals]\nprocess = \"poisson\"\nrate = -1\n\n[[servers]]\nname = \"a\"\nworkers = 1\n\n[[servers]]\nname = \"b\"\nworkers = 0\nservice = { dist = \"exponential\", mean = 0 }\n";

    #[test]
    fn finds_top_level_table_and_array_fields() {
        assert_eq!(locate(SRC, "warmup"), Some(2));
        assert_eq!(locate(SRC, "arrivals.rate"), Some(6));
        assert_eq!(locate(SRC, "servers[1].workers"), Some(14));
        assert_eq!(locate(SRC, "servers[0].workers"), Some(10));
        assert_eq!(locate(SRC, "servers[1].service.mean"), Some(15));
        // Missing key: the table header.
        assert_eq!(locate(SRC, "servers[1].speed"), Some(12));
    }

    #[test]
    fn finds_fields_of_nested_tables() {
        let src = "name = \"x\"\n[sweep]\nload = [0.5]\n[sweep.by]\nbalancers = [0]\n";
        assert_eq!(locate(src, "sweep.load"), Some(3));
        assert_eq!(locate(src, "sweep.by.balancers"), Some(5));
        // Missing key: the nested table's header.
        assert_eq!(locate(src, "sweep.by.count"), Some(4));
    }

    #[test]
    fn a_whole_table_is_located_at_its_header_not_line_1() {
        // The stability error names the field `arrivals`.
        assert_eq!(locate(SRC, "arrivals"), Some(4));
        assert_eq!(
            locate(
                "# comment\narrivals = { process = \"poisson\" }\n",
                "arrivals"
            ),
            Some(2)
        );
    }
}
