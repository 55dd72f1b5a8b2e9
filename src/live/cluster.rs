//! A scenario's servers as real Thrift backends: one [`super::server`] per scenario
//! server, each on its own port, as `lbsim serve SCENARIO` and the live driver start them,
//! with their group's admission control ([`Cluster::set_admission`]).

use std::io;
use std::net::{IpAddr, SocketAddr};

use super::server::{self, ServerConfig, ServerHandle, ServerLimits};
use super::transport::{Protocol, Transport};
use crate::policy::admission::QueueControl;
use crate::scenario::Scenario;

/// A server of the scenario could not be started.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot start backend {server} on {addr}: {source}\n  fix: pick a free port range (--port-base) or stop what listens there"
)]
pub struct ClusterError {
    /// Scenario server name.
    pub server: String,
    /// Address it was to listen on.
    pub addr: SocketAddr,
    /// Cause.
    pub source: io::Error,
}

/// The running servers of a scenario, in scenario server order. Dropping it stops them.
#[derive(Debug)]
pub struct Cluster {
    /// One handle per scenario server.
    pub servers: Vec<ServerHandle>,
    /// Scenario server names, in the same order.
    pub names: Vec<String>,
}

impl Cluster {
    /// Starts every server of `scenario` on `ip`: server `i` on port `port_base + i`, or
    /// on a free port each when `port_base` is `None`; default limits. Servers of a
    /// connection-level scenario (`[connections]`) serve each connection's calls
    /// concurrently ([`ServerConfig::pipelined`]).
    pub fn start(
        scenario: &Scenario,
        ip: IpAddr,
        port_base: Option<u16>,
        protocol: Protocol,
        transport: Transport,
    ) -> Result<Cluster, ClusterError> {
        Self::start_with_limits(
            scenario,
            ip,
            port_base,
            protocol,
            transport,
            ServerLimits::default(),
        )
    }

    /// Like [`Cluster::start`], every server with `limits`.
    pub fn start_with_limits(
        scenario: &Scenario,
        ip: IpAddr,
        port_base: Option<u16>,
        protocol: Protocol,
        transport: Transport,
        limits: ServerLimits,
    ) -> Result<Cluster, ClusterError> {
        let mut servers = Vec::new();
        let mut names = Vec::new();
        for (i, info) in scenario.servers().iter().enumerate() {
            let port = match port_base {
                Some(base) => u16::try_from(usize::from(base) + i).map_err(|_| ClusterError {
                    server: info.name.clone(),
                    addr: SocketAddr::new(ip, base),
                    source: io::Error::new(io::ErrorKind::InvalidInput, "port above 65535"),
                })?,
                None => 0,
            };
            let addr = SocketAddr::new(ip, port);
            let cfg = ServerConfig {
                id: info.name.clone(),
                workers: info.workers,
                speed: info.speed,
                queue_capacity: info.queue_capacity,
                protocol,
                transport,
                limits,
                // Clients pipeline calls on their persistent connections (L4 topology).
                pipelined: scenario.connections.is_some(),
                extra_delay: std::time::Duration::ZERO,
            };
            let handle = server::spawn(addr, cfg).map_err(|source| ClusterError {
                server: info.name.clone(),
                addr,
                source,
            })?;
            servers.push(handle);
            names.push(info.name.clone());
        }
        Ok(Cluster { servers, names })
    }

    /// Applies each server group's `[servers.admission]` (queue timeout, CoDel, adaptive
    /// LIFO: [`crate::policy::admission`], the simulator's code) to its backends, every
    /// duration in wall-clock time at `time_scale` (a backend serves a call in
    /// `time_scale` times its scenario service time); groups without it queue first in,
    /// first out.
    pub fn set_admission(&self, scenario: &Scenario, time_scale: f64) {
        for (h, info) in self.servers.iter().zip(scenario.servers()) {
            let spec = scenario.groups[info.group].admission.as_ref();
            h.set_admission(spec.map(|a| QueueControl::scaled(a, time_scale)));
        }
    }

    /// Listening addresses, in scenario server order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(ServerHandle::local_addr).collect()
    }

    /// Stops every server.
    pub fn shutdown(&self) {
        self.servers.iter().for_each(ServerHandle::shutdown);
    }
}
