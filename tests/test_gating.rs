//! The tests that need the thriftpy2 peer are ignored, not failed and not left out, where
//! thriftpy2 is missing: the README's test command must pass on a fresh machine, and show
//! those tests as ignored with the reason (see `build.rs`).
//!
//! Reads every integration test file: a `#[test]` function whose body mentions `thriftpy2`
//! or calls `python_peer(` must carry `#[cfg_attr(not(python_peer), ignore = "...")]`, and
//! must not be compiled out with `#[cfg(python_peer)]` (it would vanish from the count).

use std::fs;
use std::path::Path;

/// The test functions of `src`: (name, attributes and doc comment before `fn`, body).
fn test_functions(src: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(at) = rest.find("#[test]") {
        // Attributes start after the previous item's closing brace (or the file's start).
        let head_start = rest[..at].rfind("\n}\n").map_or(0, |p| p + 3);
        let fn_at = at
            + rest[at..]
                .find("fn ")
                .expect("a #[test] attribute precedes a fn");
        let name_end = fn_at + rest[fn_at..].find('(').expect("fn name(");
        let body_end = fn_at
            + rest[fn_at..]
                .find("\n}\n")
                .map_or(rest.len() - fn_at, |p| p + 3);
        out.push((
            rest[fn_at + 3..name_end].trim().to_string(),
            rest[head_start..fn_at].to_string(),
            rest[fn_at..body_end].to_string(),
        ));
        rest = &rest[body_end..];
    }
    out
}

#[test]
fn tests_needing_thriftpy2_are_ignored_without_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for entry in fs::read_dir(&dir).expect("tests/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("test_gating.rs") {
            continue;
        }
        let src = fs::read_to_string(&path).expect("read test file");
        for (name, attrs, body) in test_functions(&src) {
            if !(body.contains("thriftpy2") || body.contains("python_peer(")) {
                continue;
            }
            checked += 1;
            if !attrs.contains("not(python_peer)") || attrs.contains("#[cfg(python_peer)]") {
                wrong.push(format!("{}: {name}", path.display()));
            }
        }
    }
    assert!(
        checked >= 5,
        "found only {checked} thriftpy2 tests: the scan is broken"
    );
    assert!(
        wrong.is_empty(),
        "tests that need thriftpy2 without `#[cfg_attr(not(python_peer), ignore = \"...\")]` \
         (they fail, or vanish, where thriftpy2 is missing):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scan_finds_a_test_and_its_attributes() {
    let src = "use x;\n\n/// Doc.\n#[test]\n#[cfg_attr(not(python_peer), ignore = \"r\")]\nfn a() {\n    python_peer(&[]);\n}\n\n#[test]\nfn b() {\n    thriftpy2();\n}\n";
    let found = test_functions(src);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].0, "a");
    assert!(found[0].1.contains("not(python_peer)") && found[0].2.contains("python_peer("));
    assert_eq!(found[1].0, "b");
    assert!(!found[1].1.contains("not(python_peer)"));
}
