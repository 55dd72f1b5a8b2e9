//! The simulator: a deterministic discrete-event model of clients, balancers and servers.

pub mod engine;
pub mod event_queue;
pub mod server;

pub use engine::{
    Sample, Trace, TraceSpec, simulate, simulate_cancellable, simulate_traced,
    simulate_traced_cancellable, simulate_with,
};
