//! The one `--tolerance` syntax, shared by `lbsim check` and `lbsim live`: `name=value`
//! pairs separated by commas (several flags add up), a value a fraction (`0.05`) or a
//! percentage (`5%`), 0 or more; `*=value` sets every name. Each command then maps the
//! names to its own figures ([`crate::report::check::tolerances`] to metrics, the live
//! verdict's [`crate::report::live::Tolerances`] to its comparisons).

/// A `--tolerance` entry that cannot be read: the entry as written and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadEntry {
    /// The entry as written.
    pub entry: String,
    /// What is wrong.
    pub problem: String,
}

/// One `name=value` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The name, trimmed (`*` for every name).
    pub name: String,
    /// The value as a fraction (`5%` is 0.05).
    pub value: f64,
    /// The entry as written, for messages.
    pub raw: String,
}

impl Entry {
    /// An error about this entry.
    pub fn bad(&self, problem: impl Into<String>) -> BadEntry {
        BadEntry {
            entry: self.raw.clone(),
            problem: problem.into(),
        }
    }
}

/// The entries of `spec`, in order.
pub fn parse_entries(spec: &[String]) -> Result<Vec<Entry>, BadEntry> {
    let mut out = Vec::new();
    for entry in spec.iter().flat_map(|s| s.split(',')).map(str::trim) {
        if entry.is_empty() {
            continue;
        }
        let bad = |problem: String| BadEntry {
            entry: entry.to_string(),
            problem,
        };
        let (name, value) = entry.split_once('=').ok_or_else(|| bad("no `=`".into()))?;
        let number = value.trim().trim_end_matches('%').trim();
        let v: f64 = number
            .parse()
            .map_err(|_| bad(format!("`{}` is not a number", value.trim())))?;
        let v = if value.trim().ends_with('%') {
            v / 100.0
        } else {
            v
        };
        if !(v.is_finite() && v >= 0.0) {
            return Err(bad("must be 0 or more".into()));
        }
        out.push(Entry {
            name: name.trim().to_string(),
            value: v,
            raw: entry.to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<(String, f64)>, BadEntry> {
        parse_entries(&[s.to_string()]).map(|v| v.into_iter().map(|e| (e.name, e.value)).collect())
    }

    #[test]
    fn fractions_and_percentages_read_alike() {
        let v = parse("latency_p99=0.2, share=2%,*=5 %").unwrap();
        assert_eq!(v[0], ("latency_p99".into(), 0.2));
        assert_eq!(v[1].0, "share");
        assert!((v[1].1 - 0.02).abs() < 1e-15);
        assert!((v[2].1 - 0.05).abs() < 1e-15);
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_entries_name_the_entry_and_the_problem() {
        for (s, problem) in [
            ("latency_p99", "no `=`"),
            ("share=x", "`x` is not a number"),
            ("share=-1", "must be 0 or more"),
            ("share=inf", "must be 0 or more"),
        ] {
            let e = parse(s).unwrap_err();
            assert_eq!((e.entry.as_str(), e.problem.as_str()), (s, problem));
        }
    }
}
