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

pub mod calibrate;
pub mod client;
pub mod cluster;
pub mod control;
pub mod driver;
pub mod faults;
pub mod l4;
mod machine;
mod options;
mod policy;
mod pool;
mod probe;
pub mod proto;
pub mod proxy;
mod run;
pub mod server;
pub mod stall;
mod support;
pub mod transport;
pub mod verdict;
mod views;
mod wire;

pub use calibrate::Calibration;
pub use client::{CallOutcome, ClientConfig, ClientError, Connection, PingReply};
pub use cluster::{Cluster, ClusterError};
pub use driver::{LiveError, LiveOptions, LiveRun, StrategyReplay, replay, replay_via};
pub use proxy::{ProxyError, ProxyKind};
pub use server::{ServerConfig, ServerError, ServerHandle, ServerLimits, ServerStats};
pub use transport::{ParseWireError, Protocol, Transport};
pub use verdict::{CompareOptions, Reference, Tolerances, Verdict, VerdictError, compare};
