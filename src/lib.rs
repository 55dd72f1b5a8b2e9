//! # lbsim
//!
//! Tells a team which load-balancing strategy to put in front of its Apache Thrift
//! services, before rollout, with numbers it can trust.
//!
//! ```text
//!  scenario.toml ─► Scenario ─► sim::simulate ─► metrics ─► runner/stats ─► report
//!    (serde)        (validated)  (one replication,  (HDR,       (replications   (table, CSV,
//!                        │        one strategy)      integrals)  in parallel,    plots,
//!                        │                                       95% CIs)        report.md)
//!                        └─────► live::replay (the same requests, real Thrift servers)
//!
//!            strategy::Strategy + Balancer: one code path for sim and live
//! ```
//!
//! - [`scenario`]: scenario files, parsed and validated.
//! - [`workload`]: arrival processes, request sizes and keys (common random numbers).
//! - [`strategy`]: the `Strategy` trait and one file per strategy.
//! - [`sim`]: the discrete-event engine.
//! - [`policy`]: client policies (timeouts, retries, budgets, hedging, outlier ejection, slow
//!   start), pure state machines.
//! - [`metrics`]: streaming per-run metrics (HDR histograms).
//! - [`stats`]: confidence intervals over replications.
//! - [`runner`]: Monte Carlo replications in parallel, deterministic.
//! - [`sequential`]: adding replications until a CI is narrow enough.
//! - [`steady`]: is the warm-up long enough, the window long enough (MSER, batch means).
//! - [`stability`]: strategies whose backlog grows, marked `unstable` everywhere.
//! - [`shard`]: slices of the replications on many machines, merged bit for bit.
//! - [`sweep`]: running a scenario's `[sweep]`, point by point.
//! - [`report`]: terminal table, CSV files, plots, `report.md`, regression checks.
//! - [`live`]: real Thrift backends and clients over TCP, for replaying a scenario.
//! - [`cancel`]: the one cancel flag that Ctrl-C sets and long runs poll.
//! - [`rng`], [`time`]: seeded random streams per (seed, replication, purpose), and
//!   integer-nanosecond time passed explicitly (no clock in a strategy).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cancel;
pub mod live;
pub mod metrics;
pub mod policy;
pub mod report;
pub mod rng;
pub mod runner;
pub mod scenario;
pub mod sequential;
pub mod shard;
pub mod sim;
pub mod stability;
pub mod stats;
pub mod steady;
pub mod strategy;
pub mod sweep;
#[cfg(test)]
pub(crate) mod testing;
pub mod time;
pub mod workload;
