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
/// written in a TOML source, from the spans the `toml` parser gives every key and value;
/// for a key that is not written (a missing or defaulted field), the line of the deepest
/// enclosing table that is (e.g. its `[[servers]]` header). `None` if the source does not
/// parse or the first key is absent.
pub fn locate(source: &str, field: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(source).ok()?;
    let mut table: &DeTable<'_> = doc.get_ref();
    let mut at: Option<usize> = None;
    for part in field.split('.') {
        // "servers[1]": key `servers`, element 1 of its array.
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (
                name,
                Some(rest.trim_end_matches(']').parse::<usize>().ok()?),
            ),
            None => (part, None),
        };
        let Some((key, mut value)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name)
        else {
            break;
        };
        at = Some(key.span().start);
        if let Some(i) = index {
            let DeValue::Array(items) = value.get_ref() else {
                break;
            };
            let Some(item) = items.get(i) else {
                break;
            };
            at = Some(item.span().start);
            value = item;
        }
        let DeValue::Table(inner) = value.get_ref() else {
            break;
        };
        table = inner;
    }
    let bytes = source.as_bytes();
    at.map(|offset| {
        bytes[..offset.min(bytes.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    })
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

    /// What a line scanner missed: quoted and dotted keys, a header inside a string, and
    /// keys after a multi-line array are located by the parser's spans.
    #[test]
    fn quoted_dotted_and_multiline_keys_are_located() {
        let src = "name = \"[[servers]]\"\n[[servers]]\nname = \"a\"\nx = [\n  1,\n  2,\n]\n\"workers\" = 0\nservice.mean = 0\n";
        assert_eq!(locate(src, "servers[0].workers"), Some(8));
        assert_eq!(locate(src, "servers[0].service.mean"), Some(9));
        assert_eq!(locate(src, "servers[0].speed"), Some(2));
        assert_eq!(locate(src, "name"), Some(1));
        assert_eq!(locate("not = [toml", "not"), None);
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
