//! How to replay a scenario live ([`LiveOptions`]) and why a replay could not run
//! ([`LiveError`]): shared by the request-level driver, the connection-level replay
//! ([`super::l4`]) and calibration, which is why they live apart from all three.

use std::net::SocketAddr;
use std::time::Duration;

use super::client::ClientError;
use super::cluster::ClusterError;
use super::pool::DEFAULT_MAX_PER_BACKEND;
use super::transport::{Protocol, Transport};
use crate::cancel::Cancel;
use crate::report::live::DEFAULT_CALIBRATION_BOUND;

/// How to replay a scenario.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Running backends, mapped in order to the scenario's servers; `None` starts the
    /// scenario's servers in this process on loopback.
    pub backends: Option<Vec<SocketAddr>>,
    /// Factor applied to every scenario time on the wire (≥ 1 makes timer jitter smaller
    /// relative to service times).
    pub time_scale: f64,
    /// Which replication's request stream to replay.
    pub replication: u64,
    /// Master seed (default: the scenario's).
    pub seed: Option<u64>,
    /// Thrift protocol.
    pub protocol: Protocol,
    /// Thrift transport.
    pub transport: Transport,
    /// Longest wait for one answer; a backend silent for longer counts as failed.
    pub io_timeout: Duration,
    /// Calibration calls per backend (0 skips calibration: no overhead modelled).
    pub calibration_calls: usize,
    /// Strategies to replay (labels); empty means all.
    pub only: Vec<String>,
    /// The dispatcher sleeps until this long before a request is due and spins (draining
    /// completions) for the rest, because a timed sleep wakes late by tens of µs. Capped
    /// at a quarter of the mean gap between requests, so spinning never costs more than a
    /// quarter of a core. Zero disables spinning.
    pub spin: Duration,
    /// Set (by Ctrl-C or SIGTERM) to stop: the strategy being replayed stops within
    /// [`CANCEL_POLL`](super::pool::CANCEL_POLL) and is dropped (its calls in flight are abandoned), no other
    /// starts, and the strategies already replayed are returned, so what finished is
    /// still written.
    pub cancel: Cancel,
    /// Most connections (open or being opened) to one backend; requests beyond wait for
    /// one of them. Bounds the sockets and threads a frozen backend can cost.
    pub max_connections_per_backend: usize,
    /// Pick the time scale from a first calibration instead of using `time_scale`: the
    /// smallest whole scale (≥ `time_scale`) at which every backend's calibrated overhead
    /// is at most half of `calibration_bound` of its declared service time
    /// ([`super::calibrate::auto_time_scale`]). The scale used is [`LiveRun::time_scale`](super::run::LiveRun::time_scale).
    pub auto_time_scale: bool,
    /// Largest fraction of a backend's declared mean service time that calibration may
    /// absorb ([`super::calibrate::DEFAULT_BOUND`]); used here by `auto_time_scale`, and by
    /// the verdict.
    pub calibration_bound: f64,
    /// Run the dispatcher at real-time priority (`SCHED_FIFO` 10) where the system
    /// permits (`Realtime`, in `run.rs`): on a loaded machine an ordinary thread is descheduled for
    /// milliseconds now and then, and every request due meanwhile is sent late.
    pub realtime: bool,
    /// Apply every fault this many seconds of scenario time late (0 by default): a
    /// backend that crashes (or slows, errs, pauses) later than the scenario says, to
    /// check that the verdict catches it, as `lbsim serve --extra-delay` makes a backend
    /// slower than declared. Health checks are not shifted: they see what happens.
    pub fault_delay: f64,
    /// Fault-control channels of the `lbsim serve` processes running `backends`
    /// (`lbsim serve --fault-control PORT`, loopback only; see [`super::control`]): how a
    /// scenario's `[[faults]]` reach backends this process did not start. Empty: faults
    /// need the backends started here.
    pub fault_control: Vec<SocketAddr>,
    /// The `backends` apply the scenario's `[servers.admission]` at this replay's time
    /// scale (`lbsim serve SCENARIO --time-scale K`): the operator says so, since nothing
    /// on the wire shows it. Without it, a scenario with admission control is refused on
    /// backends this process did not start.
    pub backends_apply_admission: bool,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            backends: None,
            time_scale: 1.0,
            replication: 0,
            seed: None,
            protocol: Protocol::Binary,
            transport: Transport::Framed,
            io_timeout: Duration::from_secs(10),
            calibration_calls: 40,
            only: Vec::new(),
            spin: Duration::from_micros(50),
            cancel: Cancel::default(),
            max_connections_per_backend: DEFAULT_MAX_PER_BACKEND,
            auto_time_scale: false,
            calibration_bound: DEFAULT_CALIBRATION_BOUND,
            realtime: true,
            fault_delay: 0.0,
            fault_control: Vec::new(),
            backends_apply_admission: false,
        }
    }
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// A backend refused the connection (or did not answer) before the run.
    #[error(
        "backend {addr} (scenario server {server}) is unreachable: {source}\n  fix: start it (e.g. `lbsim serve SCENARIO`) or correct --backends"
    )]
    Unreachable {
        /// Its address.
        addr: SocketAddr,
        /// The scenario server it stands for.
        server: String,
        /// The connection error.
        source: ClientError,
    },
    /// `--backends` does not list one address per scenario server.
    #[error(
        "--backends lists {given} addresses but the scenario has {expected} servers ({names})\n  fix: give one HOST:PORT per server, in the scenario's order"
    )]
    BackendCount {
        /// Addresses given.
        given: usize,
        /// Servers in the scenario.
        expected: usize,
        /// Their names.
        names: String,
    },
    /// `time_scale` is not a finite number above 0.
    #[error(
        "--time-scale must be a finite number above 0, got {0}\n  fix: use e.g. --time-scale 1 or 10"
    )]
    TimeScale(f64),
    /// The scenario uses something live mode cannot reproduce.
    #[error("live mode cannot replay this scenario: {0}")]
    Unsupported(String),
    /// No strategy left to replay.
    #[error(
        "no strategy of the scenario is labelled {0:?}\n  fix: use labels that `lbsim run` prints"
    )]
    NoStrategy(Vec<String>),
    /// The scenario's servers could not be started.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The fault-control channels cannot drive the backends' faults.
    #[error(transparent)]
    Control(#[from] super::control::ControlError),
    /// A proxy (`--via`) cannot be used for this replay.
    #[error(transparent)]
    Proxy(#[from] super::proxy::ProxyError),
    /// Calls neither answered nor failed within the I/O timeout (a bug: sockets time out).
    #[error("{in_flight} calls still unanswered {waited:?} after the last request was sent")]
    Stuck {
        /// Calls outstanding.
        in_flight: usize,
        /// How long the driver waited.
        waited: Duration,
    },
}
