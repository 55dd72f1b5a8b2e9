//! What reaches the balancer: arrival processes, request sizes and keys.

pub mod arrival;
pub mod dist;
pub mod request;

pub use arrival::{ArrivalSpec, Trace};
pub use dist::Dist;
pub use request::{KeySpec, Request, RequestStream, Size, Workload};
