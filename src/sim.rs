//! The simulator: a deterministic discrete-event model of clients, balancers and servers.

pub mod engine;
pub mod event_queue;
pub mod overheads;
pub mod probe;
pub mod server;

pub use overheads::Overheads;

pub use engine::{Counts, Run, Sample, Simulated, Trace, TraceSpec, simulate};
