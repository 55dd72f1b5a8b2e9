//! The one cancel flag: set once (by Ctrl-C, SIGTERM or a caller) and polled by whatever
//! runs long — the simulator every few thousand events, the runner before each task, the
//! live driver before each request — so that work under way stops within a bounded time
//! and what finished is kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A shared stop request. Clones share the flag; [`Cancel::default`] is a flag nobody
/// has set yet (and that nothing else holds, so it is never set).
///
/// ```
/// use lbsim::cancel::Cancel;
///
/// let cancel = Cancel::default();
/// let seen_by_a_worker = cancel.clone();
/// assert!(!seen_by_a_worker.is_cancelled());
/// cancel.cancel();
/// assert!(seen_by_a_worker.is_cancelled());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Asks everything holding a clone to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked. A relaxed load: polled in hot loops, and a stop seen
    /// one poll later is still within the bound.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
