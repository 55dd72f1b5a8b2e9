//! The simulator: a deterministic discrete-event model of clients, balancers and servers.

pub mod engine;
pub mod event_queue;
pub mod overheads;
pub mod probe;
pub mod server;

pub use overheads::Overheads;

pub use engine::{
    Sample, Trace, TraceSpec, simulate, simulate_calibrated, simulate_cancellable, simulate_run,
    simulate_traced, simulate_traced_cancellable, simulate_with, simulate_with_policy,
};
