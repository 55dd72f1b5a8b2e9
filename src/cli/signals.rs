//! SIGINT (Ctrl-C), SIGTERM (what Slurm and Kubernetes send) and SIGHUP: stop soon and
//! keep what finished.
//!
//! The first signal sets a flag that the simulator polls every few thousand events and
//! the live driver before every request, so work under way stops within a bounded time;
//! the command then writes what finished and exits with 128 + the signal number (130 for
//! SIGINT, 143 for SIGTERM, 129 for SIGHUP). A second signal only says that the files are
//! being written: it must not lose what finished. A third exits at once with the same
//! status, for when writing itself hangs (a dead network file system).

use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use lbsim::cancel::Cancel;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The signals that stop a command.
const STOPPING: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// A handle on the stop signals, installed once per command.
pub struct Interrupt {
    flag: Cancel,
    signal: Arc<AtomicI32>,
    first: Mutex<Receiver<()>>,
}

fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "interrupt (SIGINT)",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

impl Interrupt {
    /// Handles SIGINT, SIGTERM and SIGHUP from now on. `stopping` says what the first
    /// signal does, e.g. "stopping; writing the replications that finished".
    pub fn install(stopping: &'static str) -> anyhow::Result<Interrupt> {
        let flag = Cancel::default();
        let signal = Arc::new(AtomicI32::new(0));
        let (tx, rx) = mpsc::channel();
        let mut signals = Signals::new(STOPPING).context("cannot install signal handlers")?;
        let (f, s) = (flag.clone(), Arc::clone(&signal));
        std::thread::Builder::new()
            .name("lbsim-signals".into())
            .spawn(move || {
                let mut seen = 0u32;
                for sig in signals.forever() {
                    seen += 1;
                    match seen {
                        1 => {
                            s.store(sig, Ordering::SeqCst);
                            f.cancel();
                            let _ = tx.send(());
                            eprintln!("\n{}: {stopping}", name(sig));
                        }
                        2 => eprintln!(
                            "{}: still stopping and writing what finished; once more quits at once, losing it",
                            name(sig)
                        ),
                        _ => std::process::exit(128 + s.load(Ordering::SeqCst)),
                    }
                }
            })
            .context("cannot start the signal thread")?;
        Ok(Interrupt {
            flag,
            signal,
            first: Mutex::new(rx),
        })
    }

    /// The flag the first signal sets, for `RunOptions::cancel` and `LiveOptions::cancel`.
    pub fn flag(&self) -> Cancel {
        self.flag.clone()
    }

    /// Whether a stop signal has come.
    pub fn is_set(&self) -> bool {
        self.flag.is_cancelled()
    }

    /// Blocks until the first stop signal.
    pub fn wait(&self) {
        let rx = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = rx.recv();
    }

    /// 128 + the first signal's number (130 for SIGINT, 143 for SIGTERM), as a shell
    /// reports a process killed by it.
    pub fn exit_code(&self) -> ExitCode {
        let sig = self.signal.load(Ordering::SeqCst);
        ExitCode::from(u8::try_from(128 + sig).unwrap_or(130))
    }
}
