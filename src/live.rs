//! Live mode: the same scenario replayed against real Thrift servers.
//!
//! The simulator predicts how a load-balancing strategy behaves; live mode
//! checks the prediction on real sockets. Each scenario server becomes a
//! [`server`] listening on loopback (or a remote host) that serves the
//! `Backend` service of `thrift/lbsim.thrift` with the same semantics as the
//! simulated one: a fixed number of workers, a FIFO waiting queue of bounded
//! or unbounded capacity, and service emulated by sleeping `work_ns / speed`.
//! A [`client::Connection`] sends one call at a time and reports what the
//! server saw (queueing and service time), so live and simulated runs can be
//! compared request by request.

pub mod client;
#[allow(
    missing_docs,
    unused_imports,
    unused_extern_crates,
    clippy::all,
    clippy::pedantic
)]
pub mod proto;
pub mod server;
pub mod transport;

pub use client::{CallOutcome, ClientConfig, ClientError, Connection, PingReply};
pub use server::{ServerConfig, ServerError, ServerHandle, ServerStats};
pub use transport::{ParseWireError, Protocol, Transport};
