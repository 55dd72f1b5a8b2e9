//! Real L4 proxies in front of the backends: `lbsim live SCENARIO --via nginx|haproxy`.
//!
//! The topology lbsim started from: Thrift servers behind nginx (`stream`) or HAProxy
//! (`mode tcp`), clients holding persistent connections. These proxies balance
//! *connections*: the algorithm picks a server when a connection opens and every call on
//! it goes there. So a scenario replayed through a proxy must be connection-level
//! (`[connections]`), and it is compared with the simulator's connection-level run of the
//! strategy whose semantics the proxy's algorithm follows:
//!
//! | lbsim strategy | nginx `stream` upstream | HAProxy `mode tcp` backend |
//! | --- | --- | --- |
//! | `round_robin` | round robin, weights 1 | `roundrobin`, weights 1 |
//! | `smooth_weighted_round_robin` | round robin with weights (the same algorithm) | none |
//! | `static_rr` | none | `static-rr` with weights (the same map) |
//! | `fwrr` | none | `roundrobin` with weights (the same order) |
//! | `least_connections` (`weighted`) | `least_conn` (weights 1, or the scenario's) | none |
//! | `leastconn` (`weighted`) | none | `leastconn` (weights 1, or the scenario's) |
//! | `random` / `weighted_random` | `random` (weights 1 / the scenario's) | `random(1)` (idem) |
//! | `power_of_d`, d = 2 (HAProxy: any d) | `random two least_conn` | `random(d)` |
//! | `first` | none | `first`, `maxconn` = the strategy's (or workers) |
//! | `nginx_hash` | `hash $remote_addr [consistent]` with weights (the same hash or ring; consistent: backends at `127.0.0.1:port_base + i`) | none |
//! | `haproxy_source` | none | `balance source`, `hash-type map-based` or `consistent` (`avalanche`, `hash-balance-factor`), with weights (the same map or tree) |
//!
//! "None" is refused with the lbsim strategy that does follow the proxy. Random
//! algorithms draw their own random numbers, so their runs are comparable with the
//! simulated mean (`--against mean`), not with the replayed replication.
//!
//! Source hashing: the driver opens each connection slot's connections from a loopback
//! address of its own ([`crate::strategy::hash::client_address`] of the slot), which the
//! simulated `nginx_hash` and `haproxy_source` hash as the proxies do, so every connection
//! lands on the same server on both sides. Envoy's hashing strategies (`ring_hash`,
//! `maglev`, `bounded_load_hash`) have no proxy equivalent and are refused.
//!
//! The proxy is a child process on loopback with its own folder (configuration, pid, logs)
//! under the output folder; nothing is installed here (`scripts/install-proxies.sh` does
//! that). It runs in the foreground (no daemon), with one nginx worker process and a
//! shared `zone` (so connection counts are those of one balancer, as simulated) or one
//! HAProxy thread; it is stopped when the replay ends, fails or is dropped, and on Linux
//! it is started under `setpriv --pdeathsig` so that it dies with the thread that
//! started it even if lbsim is killed.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::scenario::Scenario;
use crate::strategy::{
    BoundedLoadHash, EdfWeightedRoundRobin, First, Fwrr, HaproxySource, IpvsSh, LeastConnections,
    Leastconn, Maglev, NginxHash, NginxHashParams, PowerOfD, RandomChoice, RingHash, RoundRobin,
    SmoothWeightedRoundRobin, StaticRr, StrategyEntry, StrategySpec, WeightedRandom,
};

/// Which proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    /// nginx with the `stream` module.
    Nginx,
    /// HAProxy in `mode tcp`.
    Haproxy,
}

impl ProxyKind {
    /// Both, in the order of the README's table.
    pub const ALL: [ProxyKind; 2] = [ProxyKind::Nginx, ProxyKind::Haproxy];

    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::Nginx => "nginx",
            ProxyKind::Haproxy => "haproxy",
        }
    }

    /// Name of the generated configuration file.
    pub fn config_file(self) -> &'static str {
        match self {
            ProxyKind::Nginx => "nginx.conf",
            ProxyKind::Haproxy => "haproxy.cfg",
        }
    }
}

impl fmt::Display for ProxyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProxyKind {
    type Err = ProxyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nginx" => Ok(ProxyKind::Nginx),
            "haproxy" => Ok(ProxyKind::Haproxy),
            _ => Err(ProxyError::UnknownProxy(s.to_string())),
        }
    }
}

/// Why a replay through a proxy cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `--via` names no supported proxy.
    #[error("unknown proxy {0:?}\n  fix: use --via nginx or --via haproxy")]
    UnknownProxy(String),
    /// The proxy's binary (or nginx's stream module) is missing.
    #[error(
        "{proxy} is not installed: {detail}\n  fix: run scripts/install-proxies.sh (Debian's nginx with the stream module, and haproxy)"
    )]
    NotInstalled {
        /// The proxy.
        proxy: ProxyKind,
        /// What is missing.
        detail: String,
    },
    /// The scenario is request-level.
    #[error(
        "--via {proxy}: the scenario balances requests, but {proxy} balances TCP connections\n  fix: add a [connections] table (clients, pool_size, lifetime) to the scenario, e.g. scenarios/l4-persistent-connections.toml"
    )]
    NotConnectionLevel {
        /// The proxy.
        proxy: ProxyKind,
    },
    /// A fault whose effect goes through the proxy's own health checking or membership,
    /// which the generated configuration cannot make behave as simulated.
    #[error(
        "it has a `{kind}` fault (on {server}), which --via {proxy} does not replay: {why}\n  fix: replay it without --via (the driver's own balancer applies the simulator's health checks), or replay a copy through {proxy} keeping only `slow`, `pause`, `cold`, `delay` and `error` faults (the proxy forwards them unchanged)"
    )]
    Faults {
        /// The proxy.
        proxy: ProxyKind,
        /// The fault's kind.
        kind: &'static str,
        /// The server (or group) it strikes.
        server: String,
        /// What the proxy does differently, knob by knob.
        why: &'static str,
    },
    /// A strategy has no equivalent algorithm in the proxy.
    #[error(
        "strategy {label:?} has no {proxy} equivalent: {why}\n  fix: replay it without --via, or choose strategies with --strategy (the README's proxy table lists what each proxy can replay)"
    )]
    NoEquivalent {
        /// The proxy.
        proxy: ProxyKind,
        /// Strategy label.
        label: String,
        /// Why.
        why: String,
    },
    /// nginx's consistent ring would hash other addresses than the simulated one.
    #[error(
        "strategy {label:?} (nginx_hash, consistent) hashes server {index} as {wanted:?} (port_base {base}), but it is at {addr}: nginx's ring hashes the text of each `server` line, so the rings would differ\n  fix: replay without --backends (live mode then serves server i at 127.0.0.1:port_base+i), or start the backends with `lbsim serve SCENARIO --port-base {base}`"
    )]
    Addresses {
        /// Strategy label.
        label: String,
        /// The server's index.
        index: usize,
        /// Where it is.
        addr: SocketAddr,
        /// Where the ring says it is.
        wanted: String,
        /// The strategy's `port_base`.
        base: u32,
    },
    /// A server's weight is beyond what the proxy accepts.
    #[error(
        "{proxy} accepts server weights from 0 to {max}, and server {server:?} has weight {weight} (strategy {label:?} uses weights)\n  fix: scale the scenario's weights down to at most {max} (the same ratios give the same shares)"
    )]
    Weight {
        /// The proxy.
        proxy: ProxyKind,
        /// Strategy label.
        label: String,
        /// The server.
        server: String,
        /// Its weight.
        weight: u32,
        /// The largest weight the proxy accepts.
        max: u32,
    },
    /// A file of the proxy's folder could not be written.
    #[error("cannot write `{}`: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The proxy did not start, or did not listen in time.
    #[error("{proxy} did not start: {detail}\n  its configuration and log: {}", .dir.display())]
    Start {
        /// The proxy.
        proxy: ProxyKind,
        /// What happened (with the end of its log).
        detail: String,
        /// Its folder.
        dir: PathBuf,
    },
}

/// The balancing directives for one strategy: the algorithm line(s) and whether server
/// weights are written (`false`: every server has weight 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Algorithm {
    /// nginx: lines inside `upstream`; HAProxy: the `balance` line.
    pub directive: String,
    /// Whether the scenario's weights are used.
    pub weighted: bool,
    /// HAProxy `first`: `maxconn` of each server.
    pub maxconn: Option<Vec<u32>>,
    /// nginx `hash … consistent`: the ring hashes each `server` line's text, so server `i`
    /// must be at [`NginxHashParams::server_line`]`(i)`.
    pub ring: Option<NginxHashParams>,
}

/// HAProxy's largest server weight (`SRV_UWGHT_MAX`, `include/haproxy/server-t.h`).
pub const HAPROXY_MAX_WEIGHT: u32 = 256;

/// The proxy algorithm that follows `entry`'s strategy, or why there is none (including
/// weights the proxy would refuse).
pub fn algorithm(
    kind: ProxyKind,
    scenario: &Scenario,
    entry: &StrategyEntry,
) -> Result<Algorithm, ProxyError> {
    let algo = matching(kind, scenario, entry)?;
    if kind == ProxyKind::Haproxy
        && algo.weighted
        && let Some(s) = scenario
            .servers()
            .iter()
            .find(|s| s.weight > HAPROXY_MAX_WEIGHT)
    {
        return Err(ProxyError::Weight {
            proxy: kind,
            label: entry.label(),
            server: s.name.clone(),
            weight: s.weight,
            max: HAPROXY_MAX_WEIGHT,
        });
    }
    Ok(algo)
}

/// The ring parameters of `entry`'s strategy if `kind` hashes the backends' addresses for
/// it (nginx `hash … consistent`): its backends must be where [`NginxHashParams::server_line`]
/// says.
pub fn algorithm_ring(kind: ProxyKind, entry: &StrategyEntry) -> Option<NginxHashParams> {
    entry
        .spec
        .params::<NginxHash>()
        .filter(|p| kind == ProxyKind::Nginx && p.consistent)
        .cloned()
}

/// The proxy algorithm whose semantics `entry`'s strategy follows.
fn matching(
    kind: ProxyKind,
    scenario: &Scenario,
    entry: &StrategyEntry,
) -> Result<Algorithm, ProxyError> {
    let none = |why: &str| ProxyError::NoEquivalent {
        proxy: kind,
        label: entry.label(),
        why: why.to_string(),
    };
    let plain = |directive: &str, weighted: bool| Algorithm {
        directive: directive.to_string(),
        weighted,
        maxconn: None,
        ring: None,
    };
    let nginx = kind == ProxyKind::Nginx;
    let hashing = if nginx {
        "this strategy follows Envoy's hashing, not nginx's: nginx's `hash $remote_addr` (with or without `consistent`) is lbsim's `nginx_hash`"
    } else {
        "this strategy follows Envoy's hashing, not HAProxy's: HAProxy's `balance source` (map-based or `hash-type consistent`) is lbsim's `haproxy_source`"
    };
    let weighted_rr = if nginx {
        "nginx's weighted round robin is smooth_weighted_round_robin"
    } else {
        "HAProxy's weighted `roundrobin` is lbsim's `fwrr`, and `static-rr` is lbsim's `static_rr`"
    };
    let spec = &entry.spec;
    let haproxy = !nginx;
    let random = if nginx { "random;" } else { "random(1)" };
    if spec.is::<RoundRobin>() {
        // Equal weights: both proxies take the servers in declaration order.
        return Ok(plain(if nginx { "" } else { "roundrobin" }, false));
    }
    if spec.is::<SmoothWeightedRoundRobin>() && nginx {
        return Ok(plain("", true));
    }
    if spec.is::<StaticRr>() && haproxy {
        return Ok(plain("static-rr", true));
    }
    if spec.is::<Fwrr>() && haproxy {
        return Ok(plain("roundrobin", true));
    }
    if spec.is::<SmoothWeightedRoundRobin>()
        || spec.is::<EdfWeightedRoundRobin>()
        || spec.is::<StaticRr>()
        || spec.is::<Fwrr>()
    {
        return Err(none(weighted_rr));
    }
    if let Some(p) = spec.params::<LeastConnections>() {
        return if nginx {
            Ok(plain("least_conn;", p.weighted))
        } else {
            Err(none(
                "HAProxy's leastconn breaks ties by the least recently used server and compares (conns + 1) / weight: its lbsim strategy is `leastconn`",
            ))
        };
    }
    if let Some(p) = spec.params::<Leastconn>() {
        return if haproxy {
            Ok(plain("leastconn", p.weighted))
        } else {
            Err(none(
                "nginx's least_conn breaks ties by weighted round robin: its lbsim strategy is `least_connections`",
            ))
        };
    }
    if spec.is::<RandomChoice>() {
        return Ok(plain(random, false));
    }
    if spec.is::<WeightedRandom>() {
        return Ok(plain(random, true));
    }
    if let Some(p) = spec.params::<PowerOfD>() {
        return match (p.d, nginx) {
            (2, true) => Ok(plain("random two least_conn;", false)),
            (d, false) => Ok(plain(&format!("random({d})"), false)),
            (_, true) => Err(none(
                "nginx draws two servers (`random two`); only d = 2 has an equivalent",
            )),
        };
    }
    if let Some(p) = spec.params::<First>() {
        if nginx {
            return Err(none("nginx has no `first` algorithm"));
        }
        let maxconn: Vec<u32> = scenario
            .servers()
            .iter()
            .map(|s| p.maxconn.unwrap_or(s.workers))
            .collect();
        let slots: u64 = maxconn.iter().map(|&m| u64::from(m)).sum();
        let conns = scenario
            .connections
            .as_ref()
            .map_or(0, |c| u64::from(c.clients) * u64::from(c.pool_size));
        if conns > slots {
            return Err(none(&format!(
                "HAProxy queues a connection when every server has maxconn connections, and {conns} connections exceed the {slots} slots, while the simulator sends it to the least loaded server"
            )));
        }
        return Ok(Algorithm {
            directive: "first".into(),
            weighted: false,
            maxconn: Some(maxconn),
            ring: None,
        });
    }
    if spec.is::<NginxHash>() {
        return if let Some(ring) = algorithm_ring(kind, entry) {
            Ok(Algorithm {
                ring: Some(ring),
                ..plain("hash $remote_addr consistent;", true)
            })
        } else if nginx {
            Ok(plain("hash $remote_addr;", true))
        } else {
            Err(none(
                "HAProxy's source hash (`balance source`) indexes its static map with the client address: its lbsim strategy is `haproxy_source`",
            ))
        };
    }
    if let Some(p) = spec.params::<HaproxySource>() {
        return if haproxy {
            let mut directive = String::from(if p.consistent {
                "source\n    hash-type consistent"
            } else {
                "source\n    hash-type map-based"
            });
            if p.avalanche {
                // The function (sdbm, the default) must precede the modifier; `balance
                // source` hashes no string with it.
                directive += " sdbm avalanche";
            }
            if p.hash_balance_factor > 0 {
                directive += &format!("\n    hash-balance-factor {}", p.hash_balance_factor);
            }
            Ok(plain(&directive, true))
        } else {
            Err(none(
                "nginx's `hash $remote_addr` hashes the address's text with crc32 over the weighted peers: its lbsim strategy is `nginx_hash`",
            ))
        };
    }
    if spec.is::<RingHash>() || spec.is::<Maglev>() || spec.is::<BoundedLoadHash>() {
        return Err(none(hashing));
    }
    if spec.is::<IpvsSh>() {
        return Err(none(
            "IPVS schedules in the Linux kernel (root and the ip_vs module), not in a proxy live mode starts; replay it without --via, where the driver's own balancer runs the same table",
        ));
    }
    Err(none(
        "it needs per-request information (latencies, load reports, requests in flight) that an L4 proxy does not have; see the README's proxy table",
    ))
}

/// Whether the proxy algorithm that follows `spec` reads connection counts (nginx
/// `least_conn`, `random two least_conn`; HAProxy `leastconn`, `random(2)`, `first`).
/// A proxy counts a connection until it is closed, while the simulator stops counting an
/// expired connection at once: the driver then closes an expired connection at its next
/// idle moment, before opening its replacement (see [`super::l4`]).
pub fn counts_connections(spec: &StrategySpec) -> bool {
    spec.is::<LeastConnections>()
        || spec.is::<Leastconn>()
        || spec.is::<PowerOfD>()
        || spec.is::<First>()
}

/// Refuses faults that the proxy would handle otherwise than simulated.
///
/// `slow`, `pause`, `cold`, `delay` and `error` change only how a backend serves: an L4
/// proxy forwards the bytes unchanged, so they replay through it as directly. A `crash`
/// or `unreachable` is met by the proxy's health checking, and `join`, `leave` and
/// `deploy` change its server list: the simulator marks a server down exactly `detection`
/// after a crash (connections opened to it before then fail) and up `detection` after it
/// recovers, and takes a leaving server out at once; neither proxy's generated
/// configuration does that (the reason says which knob differs).
pub fn check_faults(kind: ProxyKind, scenario: &Scenario) -> Result<(), ProxyError> {
    use crate::scenario::FaultKind;
    let names: Vec<&str> = scenario.servers().iter().map(|s| s.name.as_str()).collect();
    for f in &scenario.faults {
        let health = matches!(f.kind, FaultKind::Crash | FaultKind::Unreachable);
        let membership = matches!(
            f.kind,
            FaultKind::Join | FaultKind::Leave | FaultKind::Deploy
        );
        let why = match (kind, health, membership) {
            (ProxyKind::Nginx, true, _) => {
                "open-source nginx `stream` has only passive health checks (`health_check` is NGINX Plus): a server is taken out after `max_fails` failed connects within `fail_timeout` and tried again after `fail_timeout` whether or not it recovered, and a failed connect is retried on the next server (`proxy_next_upstream on`), so the client never sees the failures the simulator counts until `detection`; and a crashed lbsim backend accepts, then closes, connections: the connect itself succeeds"
            }
            (ProxyKind::Haproxy, true, _) => {
                "HAProxy marks a server down after `fall` failed active checks every `inter` (a layer-4 `check` passes on a crashed lbsim backend, which accepts and closes connections; a Thrift `ping` would need `tcp-check send-binary` for the replay's protocol and transport), so the mark-down lands within one `inter` of `fall` x `inter` after the crash depending on the check's phase, and `rise` x `inter` after recovery: the simulator's exact `detection` is not generated yet"
            }
            (ProxyKind::Nginx, _, true) => {
                "nginx's upstream servers are fixed by the generated configuration; adding or draining one means a reload, which starts new workers with fresh connection counts, unlike the simulated balancer that keeps counting"
            }
            (ProxyKind::Haproxy, _, true) => {
                "HAProxy's servers are fixed by the generated configuration; joining or draining one at its time would need its runtime API (`set server ... state ready|drain|maint`), which lbsim does not drive yet"
            }
            _ => continue,
        };
        let server = f
            .servers
            .iter()
            .map(|&i| names.get(i).copied().unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ProxyError::Faults {
            proxy: kind,
            kind: f.kind.name(),
            server,
            why,
        });
    }
    Ok(())
}

/// Where the nginx `stream` module is when it is a loadable module (Debian).
const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// The configuration file of `kind` for one strategy: listening on `listen`, balancing
/// over `backends` (scenario server order), with pid and logs in `dir`.
pub fn config(
    kind: ProxyKind,
    scenario: &Scenario,
    entry: &StrategyEntry,
    backends: &[SocketAddr],
    listen: SocketAddr,
    dir: &Path,
) -> Result<String, ProxyError> {
    let algo = algorithm(kind, scenario, entry)?;
    if let Some(ring) = &algo.ring {
        check_addresses(entry, ring, backends)?;
    }
    let weights = scenario.weights();
    let servers = scenario.servers();
    let dir = dir.display();
    let mut out = format!(
        "# Generated by lbsim for scenario {:?}, strategy {:?}: the simulator's\n# connection-level {:?} is compared with this {kind} run.\n",
        scenario.name,
        entry.label(),
        entry.label()
    );
    let weight = |i: usize| if algo.weighted { weights[i] } else { 1 };
    match kind {
        ProxyKind::Nginx => {
            if Path::new(NGINX_STREAM_MODULE).exists() {
                out += &format!("load_module {NGINX_STREAM_MODULE};\n");
            }
            out += &format!(
                "# One worker: its connection counts are the whole proxy's, as one simulated balancer.\nworker_processes 1;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log notice;\n\nevents {{\n    worker_connections 4096;\n}}\n\nstream {{\n    upstream lbsim {{\n        # Shared by every worker, should there be several: counts are not per worker.\n        zone lbsim 64k;\n"
            );
            if !algo.directive.is_empty() {
                out += &format!("        {}\n", algo.directive);
            }
            for (i, (addr, info)) in backends.iter().zip(servers).enumerate() {
                out += &format!(
                    "        server {addr} weight={};  # {}\n",
                    weight(i),
                    info.name
                );
            }
            out += &format!(
                "    }}\n\n    server {{\n        listen {listen};\n        proxy_pass lbsim;\n        proxy_connect_timeout 5s;\n        proxy_timeout 1h;\n    }}\n}}\n"
            );
        }
        ProxyKind::Haproxy => {
            out += &format!(
                "global\n    # One thread: one balancer's view, as simulated.\n    nbthread 1\n    maxconn 8192\n    pidfile {dir}/haproxy.pid\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n\nfrontend lbsim\n    bind {listen}\n    default_backend lbsim\n\nbackend lbsim\n    balance {}\n",
                algo.directive
            );
            for (i, (addr, info)) in backends.iter().zip(servers).enumerate() {
                out += &format!("    server {} {addr} weight {}", info.name, weight(i));
                if let Some(m) = &algo.maxconn {
                    out += &format!(" maxconn {}", m[i]);
                }
                out += "\n";
            }
        }
    }
    Ok(out)
}

/// The backends nginx's consistent ring is built over must be at the addresses the
/// simulated ring hashes: server `i` at [`NginxHashParams::server_line`]`(i)`.
fn check_addresses(
    entry: &StrategyEntry,
    ring: &NginxHashParams,
    backends: &[SocketAddr],
) -> Result<(), ProxyError> {
    for (i, addr) in backends.iter().enumerate() {
        let wanted = ring.server_line(i);
        if addr.to_string() != wanted {
            return Err(ProxyError::Addresses {
                label: entry.label(),
                index: i,
                addr: *addr,
                wanted,
                base: ring.port_base,
            });
        }
    }
    Ok(())
}

/// Finds `name` on `PATH` or in the usual system folders (`/usr/sbin` is not on every
/// user's `PATH`).
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The proxy's binary, or why it cannot be used.
pub fn binary(kind: ProxyKind) -> Result<PathBuf, ProxyError> {
    let bin = find_binary(kind.name()).ok_or_else(|| ProxyError::NotInstalled {
        proxy: kind,
        detail: format!("no `{}` on PATH or in /usr/sbin", kind.name()),
    })?;
    if kind == ProxyKind::Nginx && !Path::new(NGINX_STREAM_MODULE).exists() {
        // Not Debian's layout: the module must be built in.
        let v = Command::new(&bin)
            .arg("-V")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default();
        if !v.contains("--with-stream") || v.contains("--with-stream=dynamic") {
            return Err(ProxyError::NotInstalled {
                proxy: kind,
                detail: format!(
                    "nginx has no stream module ({NGINX_STREAM_MODULE} is missing and `nginx -V` does not list --with-stream)"
                ),
            });
        }
    }
    Ok(bin)
}

/// A free loopback port (bound then released: the proxy binds it right after).
fn free_port() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Whether something listens on `addr`. On Linux this reads `/proc/net/tcp` rather than
/// connecting: a test connection would be balanced like any other and move the proxy's
/// round-robin position or connection counts before the replay starts.
fn listening(addr: SocketAddr) -> bool {
    #[cfg(target_os = "linux")]
    if let (SocketAddr::V4(v4), Ok(table)) = (addr, fs::read_to_string("/proc/net/tcp")) {
        // `local_address` is the IPv4 address as a little-endian hex word, then the port;
        // state 0A is LISTEN.
        let want = format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        );
        return table.lines().skip(1).any(|line| {
            let mut f = line.split_whitespace();
            f.nth(1) == Some(want.as_str()) && f.nth(1) == Some("0A")
        });
    }
    TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
}

/// A running proxy; stopped when dropped.
#[derive(Debug)]
pub struct RunningProxy {
    kind: ProxyKind,
    child: Option<Child>,
    listen: SocketAddr,
    dir: PathBuf,
}

impl RunningProxy {
    /// Writes the configuration for `entry` into `dir` and starts the proxy; returns
    /// once it accepts connections, or fails within `wait`.
    pub fn start(
        kind: ProxyKind,
        scenario: &Scenario,
        entry: &StrategyEntry,
        backends: &[SocketAddr],
        dir: &Path,
        wait: Duration,
    ) -> Result<RunningProxy, ProxyError> {
        let bin = binary(kind)?;
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ProxyError::Write { path, source }
        };
        fs::create_dir_all(dir).map_err(write_err(dir))?;
        let dir = fs::canonicalize(dir).map_err(write_err(dir))?;
        // A port freed an instant before can be taken by someone else: retry then.
        let mut last = None;
        for _ in 0..3 {
            let listen = free_port().map_err(write_err(&dir))?;
            let text = config(kind, scenario, entry, backends, listen, &dir)?;
            let path = dir.join(kind.config_file());
            fs::write(&path, text).map_err(write_err(&path))?;
            match Self::spawn(kind, &bin, &path, listen, &dir, wait) {
                Ok(p) => return Ok(p),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("three attempts"))
    }

    fn spawn(
        kind: ProxyKind,
        bin: &Path,
        config: &Path,
        listen: SocketAddr,
        dir: &Path,
        wait: Duration,
    ) -> Result<RunningProxy, ProxyError> {
        let log = dir.join("proxy.log");
        let start_err = |detail: String| ProxyError::Start {
            proxy: kind,
            detail,
            dir: dir.to_path_buf(),
        };
        let file = File::create(&log).map_err(|source| ProxyError::Write {
            path: log.clone(),
            source,
        })?;
        let err_file = file.try_clone().map_err(|source| ProxyError::Write {
            path: log.clone(),
            source,
        })?;
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        match kind {
            ProxyKind::Nginx => {
                args.extend(["-p".into(), dir.as_os_str().to_owned()]);
                args.extend(["-c".into(), config.as_os_str().to_owned()]);
                // Before the configuration is read, nginx logs here (not /var/log).
                args.extend(["-e".into(), dir.join("error.log").into_os_string()]);
            }
            ProxyKind::Haproxy => {
                args.extend(["-f".into(), config.as_os_str().to_owned()]);
                // Foreground, no daemon.
                args.push("-db".into());
            }
        }
        // Dies with the thread that started it, even if lbsim is killed (Linux).
        let mut cmd = match find_binary("setpriv") {
            Some(setpriv) if cfg!(target_os = "linux") => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "TERM", "--"]).arg(bin);
                c
            }
            _ => Command::new(bin),
        };
        cmd.args(&args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err_file);
        let child = cmd
            .spawn()
            .map_err(|e| start_err(format!("cannot run {}: {e}", bin.display())))?;
        let mut proxy = RunningProxy {
            kind,
            child: Some(child),
            listen,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + wait;
        loop {
            if let Some(Ok(Some(status))) = proxy.child.as_mut().map(Child::try_wait) {
                proxy.child = None;
                return Err(start_err(format!(
                    "it exited ({status}) before listening on {listen}; log: {}",
                    proxy.log_tail()
                )));
            }
            if listening(listen) {
                return Ok(proxy);
            }
            if Instant::now() >= deadline {
                let tail = proxy.log_tail();
                proxy.stop();
                return Err(start_err(format!(
                    "not listening on {listen} after {wait:?}; log: {tail}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Address the proxy listens on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Its folder (configuration, pid, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last lines of its logs.
    fn log_tail(&self) -> String {
        let mut text = String::new();
        for name in ["proxy.log", "error.log"] {
            if let Ok(mut f) = File::open(self.dir.join(name)) {
                let _ = f.read_to_string(&mut text);
            }
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// Stops the proxy: SIGTERM (nginx's master stops its worker), then SIGKILL after 3 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        #[cfg(target_os = "linux")]
        {
            if let Some(pid) = i32::try_from(child.id())
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = self.kind;
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn scenario() -> Scenario {
        let service = testing::exponential(0.01);
        let rest = "[connections]\nclients = 4\npool_size = 2\n".to_string()
            + &testing::servers("fast", 1, "workers = 4\nspeed = 2.0\nweight = 3", &service)
            + &testing::servers("slow", 2, "workers = 4\nweight = 1", &service)
            + STRATEGIES;
        testing::scenario("name = \"t\"\nduration = 1.0\nwarmup = 0.1", 100.0, &rest)
    }

    /// Every kind the proxies translate, with their weighted and `maxconn` variants.
    const STRATEGIES: &str = r#"
[[strategies]]
kind = "least_connections"
weighted = true
[[strategies]]
kind = "ring_hash"
[[strategies]]
kind = "peak_ewma"
[[strategies]]
kind = "first"
maxconn = 1
[[strategies]]
kind = "leastconn"
weighted = true
[[strategies]]
kind = "fwrr"
[[strategies]]
kind = "nginx_hash"
consistent = true
port_base = 9000
"#;

    fn addrs() -> Vec<SocketAddr> {
        (0..3)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
            .collect()
    }

    /// nginx's consistent ring hashes the `server` lines: the config is generated only
    /// over backends at `127.0.0.1:port_base + i`, and HAProxy refuses the strategy.
    #[test]
    fn nginx_consistent_hashing_needs_the_backends_at_its_port_base() {
        let s = scenario();
        let entry = s.strategies.last().unwrap();
        let listen = SocketAddr::from(([127, 0, 0, 1], 8000));
        let dir = Path::new("/tmp/x");
        let c = config(ProxyKind::Nginx, &s, entry, &addrs(), listen, dir).unwrap();
        assert!(c.contains("hash $remote_addr consistent;"), "{c}");
        assert!(
            c.contains("server 127.0.0.1:9001 weight=1;  # slow-0"),
            "{c}"
        );
        let moved: Vec<_> = addrs()
            .iter()
            .map(|a| SocketAddr::from(([127, 0, 0, 1], a.port() + 1)))
            .collect();
        let e = config(ProxyKind::Nginx, &s, entry, &moved, listen, dir)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("127.0.0.1:9000") && e.contains("--port-base 9000"),
            "{e}"
        );
        assert!(matches!(
            algorithm(ProxyKind::Haproxy, &s, entry),
            Err(ProxyError::NoEquivalent { .. })
        ));
        assert_eq!(
            algorithm_ring(ProxyKind::Nginx, entry).map(|p| p.port_base),
            Some(9000)
        );
        assert_eq!(algorithm_ring(ProxyKind::Haproxy, entry), None);
    }

    #[test]
    fn nginx_config_has_the_algorithm_weights_and_a_shared_zone() {
        let s = scenario();
        let listen = SocketAddr::from(([127, 0, 0, 1], 8000));
        let c = config(
            ProxyKind::Nginx,
            &s,
            &s.strategies[0],
            &addrs(),
            listen,
            Path::new("/tmp/x"),
        )
        .unwrap();
        for want in [
            "worker_processes 1;",
            "daemon off;",
            "zone lbsim 64k;",
            "least_conn;",
            "server 127.0.0.1:9000 weight=3;  # fast-0",
            "server 127.0.0.1:9002 weight=1;  # slow-1",
            "listen 127.0.0.1:8000;",
            "pid /tmp/x/nginx.pid;",
        ] {
            assert!(c.contains(want), "missing {want:?} in\n{c}");
        }
    }

    #[test]
    fn haproxy_config_has_the_algorithm_and_weights() {
        let s = scenario();
        let listen = SocketAddr::from(([127, 0, 0, 1], 8000));
        let c = config(
            ProxyKind::Haproxy,
            &s,
            &s.strategies[4],
            &addrs(),
            listen,
            Path::new("/tmp/x"),
        )
        .unwrap();
        for want in [
            "mode tcp",
            "nbthread 1",
            "balance leastconn",
            "server fast-0 127.0.0.1:9000 weight 3",
            "bind 127.0.0.1:8000",
        ] {
            assert!(c.contains(want), "missing {want:?} in\n{c}");
        }
    }

    #[test]
    fn strategies_without_an_equivalent_are_refused_with_a_reason() {
        let s = scenario();
        for kind in ProxyKind::ALL {
            for entry in &s.strategies[1..3] {
                let e = algorithm(kind, &s, entry).unwrap_err().to_string();
                assert!(e.contains("has no") && e.contains("fix:"), "{e}");
            }
        }
        // `first` with 3 slots for 8 connections: HAProxy would queue connections.
        let e = algorithm(ProxyKind::Haproxy, &s, &s.strategies[3])
            .unwrap_err()
            .to_string();
        assert!(e.contains("8 connections exceed the 3 slots"), "{e}");
        assert!(algorithm(ProxyKind::Nginx, &s, &s.strategies[3]).is_err());
        // Each proxy's least-connections has its own lbsim strategy; the other's is
        // refused, naming the right one.
        let e = algorithm(ProxyKind::Haproxy, &s, &s.strategies[0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`leastconn`"), "{e}");
        let e = algorithm(ProxyKind::Nginx, &s, &s.strategies[4])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`least_connections`"), "{e}");
    }

    #[test]
    fn haproxy_weighted_roundrobin_is_fwrr_with_the_weights() {
        let s = scenario();
        let listen = SocketAddr::from(([127, 0, 0, 1], 8000));
        let c = config(
            ProxyKind::Haproxy,
            &s,
            &s.strategies[5],
            &addrs(),
            listen,
            Path::new("/tmp/x"),
        )
        .unwrap();
        for want in [
            "balance roundrobin",
            "server fast-0 127.0.0.1:9000 weight 3",
            "server slow-1 127.0.0.1:9002 weight 1",
        ] {
            assert!(c.contains(want), "missing {want:?} in\n{c}");
        }
        // nginx's weighted round robin is another order: refused, naming lbsim's.
        let e = algorithm(ProxyKind::Nginx, &s, &s.strategies[5])
            .unwrap_err()
            .to_string();
        assert!(e.contains("smooth_weighted_round_robin"), "{e}");
    }

    #[test]
    fn haproxy_refuses_weights_above_256_for_weighted_algorithms() {
        let mut src = String::from(
            "name = \"w\"\nduration = 1.0\nwarmup = 0.1\n[arrivals]\nprocess = \"poisson\"\nrate = 10.0\n[connections]\nclients = 1\npool_size = 1\n",
        );
        for (name, w) in [("big", 300), ("small", 1)] {
            src += &format!(
                "[[servers]]\nname = \"{name}\"\ncount = 1\nworkers = 1\nweight = {w}\nservice = {{ dist = \"exponential\", mean = 0.01 }}\n"
            );
        }
        src += "[[strategies]]\nkind = \"fwrr\"\n[[strategies]]\nkind = \"round_robin\"\n";
        let s = Scenario::from_source(Path::new("w.toml"), &src).expect("valid scenario");
        let e = algorithm(ProxyKind::Haproxy, &s, &s.strategies[0])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("from 0 to 256")
                && e.contains("\"big-0\" has weight 300")
                && e.contains("fix:"),
            "{e}"
        );
        // Round robin writes weights 1: accepted.
        assert!(algorithm(ProxyKind::Haproxy, &s, &s.strategies[1]).is_ok());
    }

    #[test]
    fn proxy_names_parse() {
        assert_eq!("nginx".parse::<ProxyKind>().unwrap(), ProxyKind::Nginx);
        assert_eq!("haproxy".parse::<ProxyKind>().unwrap(), ProxyKind::Haproxy);
        assert!("envoy".parse::<ProxyKind>().is_err());
    }
}
