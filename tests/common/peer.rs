//! The thriftpy2 peer: an independent Python implementation of the backend IDL, started as a
//! child process for interoperability tests.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A thriftpy2 server process, killed on drop.
pub struct PythonPeer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for PythonPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn thriftpy2_imports() -> bool {
    Command::new("python3")
        .args(["-c", "import thriftpy2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Panics unless the thriftpy2 peer can run. The tests that call it are compiled only
/// when `build.rs` found thriftpy2 (or `CI` is set), and are marked ignored otherwise: a
/// missing peer then shows as a skip, and under CI as a failure.
pub fn require_thriftpy2() {
    assert!(
        thriftpy2_imports(),
        "python3 cannot import thriftpy2 (it could at build time, or CI is set): run `sh scripts/setup-python.sh`"
    );
}

/// Starts `tests/peers/thriftpy2_server.py` with `args` on a free loopback port and waits
/// (at most 10 s) for it to say `READY <port>`.
pub fn python_peer(args: &[&str]) -> PythonPeer {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/thriftpy2_server.py");
    let child = Command::new("python3")
        .arg(script)
        .args(["--port", "0", "--exit-on-stdin-eof"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3");
    // Owned by the peer first, so that it is killed if it never says READY.
    let mut peer = PythonPeer {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let line = super::process::first_line(&mut peer.child, Duration::from_secs(10))
        .expect("thriftpy2 peer did not print READY within 10 s");
    let port: u16 = line
        .strip_prefix("READY ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line from peer: {line:?}"));
    peer.addr.set_port(port);
    peer
}
