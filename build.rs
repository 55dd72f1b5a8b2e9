//! Build script: decides whether the tests that need the thriftpy2 peer (python3 with the
//! `thriftpy2` package, installed by `scripts/setup-python.sh`) run or show as *ignored*.
//!
//! It sets `cfg(python_peer)` when `python3 -c "import thriftpy2"` succeeds, or when `CI`
//! is set: under CI a missing peer must fail the tests, never skip them. Without the peer
//! the tests are compiled with `#[ignore = "..."]`, so `cargo test` reports them as
//! ignored, with the reason, instead of as passed.
//!
//! `scripts/setup-python.sh` touches itself after installing thriftpy2, so that cargo runs
//! this script again and the tests are enabled on the next build.
//!
//! `LBSIM_PYTHON_PEER=0` turns the peer off whatever is installed: CI builds the tests once
//! that way, so that the README's test command compiles on a machine without thriftpy2.

use std::process::{Command, Stdio};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(python_peer)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=scripts/setup-python.sh");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=LBSIM_PYTHON_PEER");
    if std::env::var_os("LBSIM_PYTHON_PEER").is_some_and(|v| v == "0") {
        return;
    }
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    let imports = Command::new("python3")
        .args(["-c", "import thriftpy2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ci || imports {
        println!("cargo::rustc-cfg=python_peer");
    }
}
