//! The live driver: replays one replication of a scenario, open loop, against real
//! Thrift backends, through the same [`Balancer`](crate::strategy::Balancer) code as the simulator.
//!
//! ```text
//!  RequestStream ──► dispatcher thread ──────────────► connection (idle one reused, new one
//!  (same seed as     sleeps until due (spins the last     opened when all are busy) ──► backend
//!   the simulator)   µs), routes with the Balancer,                                     │
//!                    writes the call itself        ◄── Done ◄── reader thread per connection
//!                    completion → Balancer, latency and lag histograms (one channel)
//! ```
//!
//! One dispatcher thread owns the balancer, the metrics and the write half of every
//! connection, so no lock is taken per request and no thread wake-up sits between the
//! schedule and the send. It sleeps until the next request is due *on the completion
//! channel*, so a completion that arrives meanwhile reaches the balancer at once, as in the
//! simulator. Requests are sent at their scheduled time whatever happened to earlier ones
//! (open loop), and latency is measured from the scheduled time, so a late send counts
//! against the measurement instead of hiding it (no coordinated omission). The schedule
//! lag (send time − scheduled time) goes into its own histogram.
//!
//! Times: the scenario's times are multiplied by `time_scale` on the wire (arrival gaps
//! and work), and everything measured is divided by it again, so reports are in scenario
//! units. The balancer, too, sees scenario time.

use std::net::{IpAddr, Ipv4Addr};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::calibrate::{LoadedCost, calibrate};
use super::client::{CallOutcome, ClientConfig, ReplyLoad};
use super::cluster::Cluster;
use super::control::{Injector, RemoteControl};
use super::machine::MachineProbe;
pub use super::options::{LiveError, LiveOptions};
pub use super::pool::CANCEL_POLL;
use super::pool::{Done, Job, Pool, wait_until};
use super::run::{Clock, ReplayStart, add_service, add_shed_wait, record_served};
pub use super::run::{LiveRun, StrategyReplay};
use super::server::ServerHandle;
use super::views::Views;
use crate::metrics::{RunMetrics, latency_histogram};
use crate::scenario::Scenario;
use crate::strategy::{Outcome, ServerLoad, StrategyEntry};
use crate::workload::RequestStream;

/// Connections opened to server `i` before the replay (and again when it restarts): its
/// workers plus 16, at most 48, and at most 2,048 in all (at least 2 per server). A call
/// that finds none idle waits while one is opened (a thread and a TCP handshake, 0.1–2 ms
/// on a loaded machine), which counts as schedule lag. With a server's workers plus one,
/// 1.5% of the calls of a 4-server replay at half load waited, enough to push the lag p99
/// past the gate (1.2–1.8 ms against 1.06 ms); with 8 spare, 11 calls still waited under
/// a 2.5× slow-down (p99 0.9 ms). A queue of 16 beyond the workers has probability
/// 0.5^16 at utilisation 0.5 (M/M/1). More still open on demand.
pub(crate) fn warm_connections(scenario: &Scenario, i: usize) -> usize {
    let servers = scenario.servers();
    let per = (servers[i].workers as usize).clamp(1, 32) + 16;
    per.min((2048 / servers.len().max(1)).max(2))
}

/// Most connections [`simulated_connections`] opens before a replay, over all backends:
/// each holds a reader thread here and a connection thread in the backend.
const MOST_SIMULATED_CONNECTIONS: usize = 4096;

/// Most connections [`simulated_connections`] opens to one backend: below the servers'
/// own limit (1,024, `lbsim serve --max-connections`), which a backend started elsewhere
/// may have lowered.
const MOST_PER_BACKEND: usize = 512;

/// Connections to open to each backend before replaying `entry`: the most calls the
/// simulated replayed replication holds at it (its workers plus the longest queue of the
/// measured window), half as many again and 8 more, and at least
/// [`warm_connections`]; at most [`MOST_SIMULATED_CONNECTIONS`] in all (shared in
/// proportion).
///
/// A call holds its connection until answered, so a backend holding more calls than it
/// has connections makes the driver open one per call. Opening one costs the dispatcher a
/// thread (0.1–0.5 ms with a thousand threads in the process), so a slow-down that doubles
/// a backend's calls in flight while the dispatcher is behind turned, in `antagonists`
/// (4 balancers, 12 backends), into 1,500–2,300 connections opened within a second, the
/// dispatcher on the CPU throughout and every send late by up to 1 s. Opened before the
/// clock starts, they cost nothing in the replay.
pub(crate) fn simulated_connections(
    scenario: &Scenario,
    entry: &crate::strategy::StrategyEntry,
    seed: u64,
    replication: u64,
) -> Vec<usize> {
    let m = crate::sim::Run::entry(scenario, entry, replication)
        .seed(seed)
        .metrics();
    let want: Vec<usize> = m
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let held = (s.workers + s.queue_max) as usize;
            (held + (held / 2).max(8))
                .max(warm_connections(scenario, i))
                .min(MOST_PER_BACKEND)
        })
        .collect();
    let total: usize = want.iter().sum();
    if total <= MOST_SIMULATED_CONNECTIONS {
        return want;
    }
    want.iter()
        .map(|&w| (w * MOST_SIMULATED_CONNECTIONS / total).max(2))
        .collect()
}

/// After fault actions: closes the idle connections of servers that stopped (dead now)
/// and opens connections to those that started again.
fn membership_changed(f: &mut super::faults::FaultPlayer, pool: &mut Pool, scenario: &Scenario) {
    for i in f.take_stopped() {
        pool.close_idle(i);
    }
    for i in f.take_started() {
        pool.prewarm(i, warm_connections(scenario, i));
    }
}

/// Replays every strategy of `scenario` (or those in `opts.only`).
pub fn replay(scenario: &Scenario, opts: &LiveOptions) -> Result<LiveRun, LiveError> {
    replay_via(scenario, opts, None)
}

/// Like [`replay`]; with `via`, every connection goes through that proxy, whose
/// configuration, pid and logs are kept in the folder given (see [`super::proxy`]).
/// Connection-level scenarios (`[connections]`) are replayed by [`super::l4`].
pub fn replay_via(
    scenario: &Scenario,
    opts: &LiveOptions,
    via: Option<(super::proxy::ProxyKind, &std::path::Path)>,
) -> Result<LiveRun, LiveError> {
    if !(opts.time_scale.is_finite() && opts.time_scale > 0.0) {
        return Err(LiveError::TimeScale(opts.time_scale));
    }
    if !scenario.faults.is_empty() {
        // Faults are injected through in-process controls (see `super::faults`), for the
        // kinds those controls implement; the others run in the simulator only.
        if let Some((f, why)) = scenario
            .faults
            .iter()
            .find_map(|f| Some((f, f.kind.live_refusal()?)))
        {
            return Err(LiveError::Unsupported(format!(
                "it has a `{}` fault, which live mode does not inject: {why}\n  fix: replay a copy without that [[faults]] entry",
                f.kind.name()
            )));
        }
        if opts.backends.is_some() && opts.fault_control.is_empty() {
            return Err(LiveError::Unsupported(
                "it has [[faults]], which live mode injects into backends it did not start only through their fault-control channel: nothing on the network can crash or slow a backend unless its operator enabled it\n  fix: start the backends with `lbsim serve … --fault-control PORT` and add `--fault-control 127.0.0.1:PORT,…`, or replay without --backends".into(),
            ));
        }
        // Through a proxy, faults that its own health checks would have to see are
        // refused with the knob that differs (`[connections]` direct replays them all).
        if let Some((kind, _)) = via {
            super::proxy::check_faults(kind, scenario)?;
        }
    }
    if let Some((k, g)) = scenario
        .groups
        .iter()
        .enumerate()
        .find(|(_, g)| g.admission.is_some())
        .filter(|_| {
            // Backends started apart apply it at a fixed time scale the operator vouches for.
            let vouched = opts.backends_apply_admission && !opts.auto_time_scale;
            let given = opts.backends.is_some() && !vouched;
            given || scenario.connections.is_some() || via.is_some()
        })
    {
        // The backends started here apply it (see `super::cluster`); others may not (the
        // operator says they do, at a fixed time scale), and the connection-level driver
        // does not count what they shed.
        return Err(LiveError::Unsupported(format!(
            "server group `{}` has [servers.admission] (servers[{k}].admission), which live mode applies in the backends it starts, at request level: backends given with --backends apply it only when started with `lbsim serve SCENARIO --time-scale K` and replayed with --backends-apply-admission at that fixed --time-scale K, and the connection-level driver does not count shed calls\n  fix: replay without --backends (or as just said), [connections] and --via, or a copy without [servers.admission]",
            g.name
        )));
    }
    // Client policies run live through the driver ([`super::policy`]), except what real
    // Thrift cannot do (withdrawing a call from its server).
    if let Some(reason) = scenario
        .strategies
        .iter()
        .filter(|e| opts.only.is_empty() || opts.only.contains(&e.label()))
        .find_map(super::policy::refusal)
    {
        return Err(LiveError::Unsupported(reason));
    }
    if let (Some((proxy, _)), None) = (via, &scenario.connections) {
        return Err(super::proxy::ProxyError::NotConnectionLevel { proxy }.into());
    }
    super::support::check_scenario(scenario)?;
    let names: Vec<String> = scenario.servers().iter().map(|s| s.name.clone()).collect();
    let strategies: Vec<_> = scenario
        .strategies
        .iter()
        .filter(|e| opts.only.is_empty() || opts.only.contains(&e.label()))
        .collect();
    if strategies.is_empty() {
        return Err(LiveError::NoStrategy(opts.only.clone()));
    }
    for entry in &strategies {
        super::support::check_strategy(scenario, entry, via.map(|(kind, _)| kind))?;
    }
    let mut cluster = None;
    let addrs = match &opts.backends {
        Some(list) => {
            if list.len() != names.len() {
                return Err(LiveError::BackendCount {
                    given: list.len(),
                    expected: names.len(),
                    names: names.join(", "),
                });
            }
            list.clone()
        }
        None => {
            let started = Cluster::start(
                scenario,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                fixed_ports(&strategies, via.map(|(kind, _)| kind))?,
                opts.protocol,
                opts.transport,
            )?;
            cluster.insert(started).addrs()
        }
    };
    let cfg = ClientConfig {
        io_timeout: Some(opts.io_timeout),
        ..ClientConfig::new(opts.protocol, opts.transport)
    };
    if via.is_none() {
        let costed = scenario.probes.cost > 0.0;
        super::support::check_backends(&strategies, &addrs, &names, &cfg, costed)?;
    }
    let chosen;
    let opts = if opts.auto_time_scale {
        // Two first calibrations, direct to each backend, with probes of different sizes
        // (time scales 1/4 and 1 of the given one), to tell fixed costs from
        // proportional ones.
        let at = |k: f64| LiveOptions {
            time_scale: k,
            ..opts.clone()
        };
        let (k_small, k) = (opts.time_scale / 4.0, opts.time_scale);
        let small = super::l4::calibrate(scenario, cfg, &addrs, None, &at(k_small))?;
        let large = super::l4::calibrate(scenario, cfg, &addrs, None, &at(k))?;
        let scale =
            super::calibrate::auto_time_scale(&large, k, &small, k_small, opts.calibration_bound)
                .map_or(opts.time_scale, |s| s.max(opts.time_scale));
        chosen = LiveOptions {
            time_scale: scale,
            auto_time_scale: false,
            ..opts.clone()
        };
        &chosen
    } else {
        opts
    };
    if let Some(c) = &cluster {
        // `[servers.admission]`, in wall-clock time at the replay's time scale.
        c.set_admission(scenario, opts.time_scale);
    }
    // A call may legitimately wait for a full bounded queue to drain (slow-server's slow
    // host: 104 calls of 200 ms on 4 workers, 5 s of scenario time): the I/O timeout is
    // raised to 4 times that, wall-clock at the scale, so that such a call is not counted
    // failed (and its backend marked down) where the simulation serves it.
    let longer;
    let opts = match super::support::longest_wait(scenario, opts.time_scale) {
        Some(wait) if 4 * wait > opts.io_timeout => {
            longer = LiveOptions {
                io_timeout: 4 * wait,
                ..opts.clone()
            };
            &longer
        }
        _ => opts,
    };
    let cfg = ClientConfig {
        io_timeout: Some(opts.io_timeout),
        ..cfg
    };
    // The fault controls: of the backends started here, or through the fault-control
    // channels of those given (faults need one or the other: checked above).
    let controls: Vec<Injector> = match &cluster {
        _ if scenario.faults.is_empty() => Vec::new(),
        Some(c) => c
            .servers
            .iter()
            .map(|h| Injector::Local(h.faults()))
            .collect(),
        None => {
            let needed: Vec<bool> = (0..names.len())
                .map(|i| scenario.faults.iter().any(|f| f.servers.contains(&i)))
                .collect();
            RemoteControl::connect_all(&opts.fault_control, &names, &needed)?
                .into_iter()
                .map(|r| r.map_or(Injector::None, Injector::Remote))
                .collect()
        }
    };
    if scenario.connections.is_some() {
        return super::l4::replay(scenario, opts, addrs, &strategies, via, &controls);
    }
    // A call occupies its connection until answered, so a server holding W + Q calls
    // (workers and a bounded queue, full under a hashing strategy's hot key) needs that
    // many connections, or calls wait for one in the driver instead of in its queue.
    let held = scenario
        .servers()
        .iter()
        .filter_map(|s| Some((s.workers + s.queue_capacity?) as usize + 1))
        .max()
        .unwrap_or(0);
    let seed = opts.seed.unwrap_or(scenario.seed);
    // What each strategy's replayed replication holds at each backend at most, simulated
    // before the replay, so its connections are open before its clock starts.
    let needed: Vec<Vec<usize>> = strategies
        .iter()
        .map(|e| simulated_connections(scenario, e, seed, opts.replication))
        .collect();
    let most = needed.iter().flatten().copied().max().unwrap_or(0);
    let mut pool = Pool::new(
        addrs.clone(),
        cfg,
        opts.max_connections_per_backend.max(held).max(most),
    );
    for i in 0..scenario.servers().len() {
        pool.warm(i, warm_connections(scenario, i))
            .map_err(|source| LiveError::Unreachable {
                addr: addrs[i],
                server: names[i].clone(),
                source,
            })?;
    }
    let calibration = calibrate(scenario, &mut pool, &cfg, opts)?;
    let mut out = Vec::new();
    for (entry, needed) in strategies.into_iter().zip(&needed) {
        if opts.cancel.is_cancelled() {
            break;
        }
        for (i, &n) in needed.iter().enumerate() {
            // Best effort: a backend that cannot be connected to now fails its calls in
            // the replay, where the verdict counts them.
            let _ = pool.warm(i, n);
        }
        if let Some(c) = &cluster {
            // Each strategy meets servers that know no service time yet, as in the
            // simulator: an estimate left by the previous strategy's slowed calls would
            // keep prequal off that server for the whole replay.
            c.servers
                .iter()
                .for_each(ServerHandle::forget_service_times);
        }
        let run = thread::scope(|s| {
            let (pool, controls) = (&mut pool, &controls);
            thread::Builder::new()
                .name("lbsim-dispatch".into())
                .spawn_scoped(s, move || {
                    dispatch(scenario, entry, pool, seed, opts, controls)
                })
                .map(|h| h.join())
        });
        let replayed = match run {
            Ok(Ok(result)) => result?,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // No thread for the dispatcher: run it on this one (less precise sleeps).
            Err(_) => dispatch(scenario, entry, &mut pool, seed, opts, &controls)?,
        };
        // `None`: interrupted; the strategy is dropped and the pool closes its calls.
        let Some(replayed) = replayed else { break };
        out.push(replayed);
        // Backends that failed stay failed for this run; their idle connections are dead.
        for &i in &out
            .last()
            .map(|r| r.marked_down.clone())
            .unwrap_or_default()
        {
            pool.close_idle(i);
        }
    }
    Ok(LiveRun {
        seed,
        replication: opts.replication,
        time_scale: opts.time_scale,
        backends: addrs,
        calibration,
        strategies: out,
    })
}

/// State of one strategy's replay, owned by the dispatcher thread.
pub(super) struct Replay {
    pub(super) clock: Clock,
    /// The scenario's balancers and the load reports they read.
    pub(super) views: Views,
    pub(super) metrics: RunMetrics,
    lag: Histogram<u64>,
    /// When the arrival the dispatcher is handling was due: a client policy's first
    /// attempt is late from then, as a plain send is, not from when the dispatcher woke
    /// (else the lag would miss the dispatcher's own lateness; see `policy`).
    pub(super) due: Option<Instant>,
    pub(super) errors: u64,
    pub(super) errors_per_backend: Vec<u64>,
    pub(super) marked_down: Vec<usize>,
    workers: Vec<u32>,
    /// Declared speed per backend, for the declared service of a call.
    pub(super) speeds: Vec<f64>,
    pub(super) under_load: Vec<LoadedCost>,
    /// The stalls of the dispatcher and the backends' workers ([`super::stall`]).
    stalls: super::stall::StallRecorder,
    /// Per backend, when faults alter its service ([`super::faults::altered_windows`]):
    /// its cost under load is measured on the calls that overlap none of them (a call
    /// served slower, paused or delayed by a fault says nothing of the backend's own cost;
    /// otherwise `antagonists`' slowed servers showed a "cost" of 120–140%).
    altered: Vec<Vec<(crate::time::Nanos, crate::time::Nanos)>>,
    pub(super) first_error: Option<String>,
    /// Mark a backend down at its first failed call (scenarios without faults, where
    /// any failure is a backend gone); with faults, health checks do, as in the
    /// simulator ([`super::faults`]).
    pub(super) down_on_error: bool,
    /// Each backend's service-time distribution (a call's work).
    pub(super) dists: Vec<crate::workload::Dist>,
    /// Calls sent.
    pub(super) sent: u64,
    /// Sends the probes the strategy asks for, if it reads probe answers.
    prober: Option<super::probe::Prober>,
    asked: Vec<usize>,
    /// Probe answers that came back before their due time.
    held: super::probe::HeldAnswers,
    /// Per backend, the probe-cost totals its last answer carried (wall-clock ns waited,
    /// served): `None` until its first answer, which sets the baseline.
    cost_seen: Vec<Option<(u64, u64)>>,
    /// The strategy entry's client policy, if it needs a client
    /// ([`crate::policy::PolicySpec::needs_client`]; [`super::policy`]).
    client: Option<super::policy::LiveClient>,
    /// Whether a policy's slow start ramps a host that health checks see come back
    /// (under a client or without one: the simulator's one rule).
    ramps: bool,
}

impl Replay {
    /// Sends the probes balancer `b` asked for (counted when the request is measured).
    pub(super) fn send_probes(&mut self, b: usize, now: crate::time::Nanos, measured: bool) {
        let Some(p) = &self.prober else { return };
        self.views.get(b).take_probes(now, &mut self.asked);
        let at = Instant::now();
        for &i in &self.asked {
            p.send(i, b, at);
            self.metrics.probes += u64::from(measured);
        }
        self.asked.clear();
    }

    /// Records the calls at server `i` beyond its workers (a measured request was just
    /// sent to it), from every balancer.
    pub(super) fn note_queue(&mut self, i: usize) {
        let in_flight: u32 = self
            .views
            .all()
            .iter()
            .map(|v| v.backends().in_flight(i))
            .sum();
        let waiting = in_flight.saturating_sub(self.workers[i]);
        let q = &mut self.metrics.servers[i].queue_max;
        *q = (*q).max(waiting);
    }

    /// A call ended: to the client policy if there is one, else as one request.
    fn handle(&mut self, pool: &mut Pool, done: Done) {
        if let Some(sent) = done.sent {
            let lag = sent.saturating_duration_since(done.job.scheduled);
            self.lag
                .saturating_record(u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX).max(1));
        }
        match self.client.take() {
            Some(mut c) => {
                c.on_done(self, pool, done);
                self.client = Some(c);
            }
            None => self.on_done(done),
        }
    }

    /// Health checks saw servers come back: under a policy's slow start each ramps in
    /// every balancer (Envoy: from the health-check pass, even while ejected).
    fn health_changed(&mut self, now: crate::time::Nanos) {
        let back = self.views.take_back();
        if self.ramps {
            for i in back {
                for b in 0..self.views.all().len() {
                    self.views.get(b).available(i, now);
                }
            }
        }
    }

    /// Fires the policy timers due by `until`.
    fn timers(&mut self, pool: &mut Pool, until: crate::time::Nanos) {
        if let Some(mut c) = self.client.take() {
            let now = self.clock.now(Instant::now());
            c.fire_due(self, pool, until, now);
            self.client = Some(c);
        }
    }

    /// When the next policy timer is due.
    fn next_timer(&self) -> Option<crate::time::Nanos> {
        self.client.as_ref().and_then(|c| c.next_timer())
    }

    /// Takes the probe answers that have come back (and the probe-cost work they
    /// report into the servers' figures), and gives the strategy those due by now, each
    /// at its due time ([`super::probe`]).
    fn on_probes(&mut self) {
        let Some(p) = &self.prober else { return };
        while let Some(a) = p.try_recv() {
            if let Some(totals) = a.costs {
                let seen = self.cost_seen[a.backend].replace(totals);
                if let Some((q0, s0)) = seen {
                    let queued = self.clock.scenario_ns(totals.0.saturating_sub(q0));
                    let served = self.clock.scenario_ns(totals.1.saturating_sub(s0));
                    let end = self.clock.now(a.received);
                    add_service(&mut self.metrics, a.backend, end, queued, served);
                }
            }
            self.held.hold(a);
        }
        let wall = Instant::now();
        while let Some(a) = self.held.pop_due(wall) {
            let l = a.load;
            let load = ServerLoad {
                in_flight: l.in_flight,
                queued: l.queued,
                service_time: self.clock.scenario(Duration::from_nanos(l.service_ns)),
                latency: self.clock.scenario(Duration::from_nanos(l.latency_ns)),
            };
            let (sent, now) = (self.clock.now(a.asked), self.clock.now(a.due));
            self.views
                .get(a.balancer)
                .probe_answer(a.backend, &load, sent, now);
        }
    }

    /// Backend `job.backend`'s cost under load, from one served call: what its service
    /// took beyond the declared work, and what the round trip added beyond queue and
    /// service. Not from a call that a fault slowed, paused or delayed while it was out.
    pub(super) fn record_cost(
        &mut self,
        job: &Job,
        finished: Instant,
        queued_ns: u64,
        served_ns: u64,
        woke_late_ns: Option<u64>,
    ) {
        let i = job.backend;
        let (arrival, now) = (self.clock.now(job.scheduled), self.clock.now(finished));
        if self.altered[i]
            .iter()
            .any(|&(a, b)| a <= now && arrival < b)
        {
            return;
        }
        let wall = finished.saturating_duration_since(job.scheduled).as_nanos();
        let declared = job.work_ns as f64 / self.speeds[i];
        let (queued, served) = (queued_ns as f64, served_ns as f64);
        if let Some(late) = woke_late_ns {
            self.stalls.worker(i, now, self.clock.scenario_ns(late));
        }
        self.under_load[i].record(
            served - declared,
            wall as f64 - queued - served,
            woke_late_ns,
        );
    }

    fn on_done(&mut self, done: Done) {
        let job = done.job;
        let i = job.backend;
        let (measured, b) = (job.tag & 1 == 1, (job.tag >> 1) as usize);
        let latency = self
            .clock
            .scenario(done.finished.saturating_duration_since(job.scheduled));
        let now = self.clock.now(done.finished);
        match done.result {
            Ok(CallOutcome::Served {
                queued_ns,
                served_ns,
                load,
                woke_late_ns,
                ..
            }) => {
                self.record_cost(&job, done.finished, queued_ns, served_ns, woke_late_ns);
                let served = self.clock.scenario_ns(served_ns);
                self.reply_load(b, i, load, served, now);
                self.views
                    .complete(b, i, latency, Outcome::Ok, Some(served), now);
                if measured {
                    let arrival = self.clock.now(job.scheduled);
                    self.metrics.phase_served(arrival, latency);
                    record_served(&mut self.metrics, i, latency);
                }
                let queued = self.clock.scenario_ns(queued_ns);
                add_service(&mut self.metrics, i, now, queued, served);
            }
            Ok(CallOutcome::Rejected { shed, .. }) => {
                self.views
                    .complete(b, i, latency, Outcome::Rejected, None, now);
                self.metrics.rejected += u64::from(measured);
                if shed {
                    self.metrics.shed += u64::from(measured);
                    let sent = done.sent.unwrap_or(job.scheduled);
                    let waited = done.finished.saturating_duration_since(sent);
                    add_shed_wait(&mut self.metrics, i, now, self.clock.scenario(waited));
                }
                if measured {
                    self.metrics.phase_unserved(self.clock.now(job.scheduled));
                }
            }
            Err(e) => {
                self.first_error.get_or_insert_with(|| e.to_string());
                self.errors += 1;
                self.metrics.failed += u64::from(measured);
                if measured {
                    self.metrics.phase_unserved(self.clock.now(job.scheduled));
                }
                self.errors_per_backend[i] += 1;
                self.views
                    .complete(b, i, latency, Outcome::Failed, None, now);
                if self.down_on_error && self.views.set_down(i) {
                    self.marked_down.push(i);
                }
            }
        }
    }

    /// The load report a reply of server `i` carried (if any, and if balancer `b`'s
    /// strategy reads them) reaches the balancer at `now`; `served`: the call's service
    /// time.
    pub(super) fn reply_load(
        &mut self,
        b: usize,
        i: usize,
        load: Option<ReplyLoad>,
        served: crate::time::Nanos,
        now: crate::time::Nanos,
    ) {
        if let Some(l) = load.filter(|_| self.views.signals().reply_loads) {
            let load = ServerLoad {
                in_flight: l.in_flight,
                queued: l.queued,
                service_time: served,
                latency: self.clock.scenario_ns(l.latency_ns),
            };
            self.views.get(b).reply_load(i, &load, now);
        }
    }
}

/// Replays one strategy; `None` if interrupted.
fn dispatch(
    scenario: &Scenario,
    entry: &StrategyEntry,
    pool: &mut Pool,
    seed: u64,
    opts: &LiveOptions,
    controls: &[Injector],
) -> Result<Option<StrategyReplay>, LiveError> {
    let start = ReplayStart::begin(scenario, opts.realtime);
    let (from, to) = (start.from, start.to);
    // A short lead so the first request is not late because of the set-up.
    let clock = Clock {
        start: Instant::now() + Duration::from_millis(20),
        scale: opts.time_scale,
    };
    let views = Views::new(scenario, entry, seed, opts.replication);
    let prober = views.signals().probes.then(|| {
        let cfg = ClientConfig {
            io_timeout: Some(opts.io_timeout),
            ..ClientConfig::new(opts.protocol, opts.transport)
        };
        let timing = super::probe::ProbeTiming::new(&scenario.probes, opts.time_scale);
        super::probe::Prober::new(pool.addrs(), &cfg, timing)
    });
    // A policy of slow start alone runs without a client, as in the simulator: each
    // request is its one attempt, and the ramp is set in the balancers below.
    let client = entry.policy.as_ref().filter(|p| p.needs_client()).map(|p| {
        super::policy::LiveClient::new(
            p,
            views.all().len(),
            start.workers.len(),
            seed,
            opts.replication,
            to,
        )
    });
    let backends = start.workers.len();
    let slow_start = entry
        .policy
        .as_ref()
        .and_then(|p| p.slow_start.as_ref())
        .map(crate::policy::SlowStartSpec::ramp);
    let mut r = Replay {
        clock,
        views,
        metrics: start.metrics(scenario),
        lag: latency_histogram(),
        due: None,
        errors: 0,
        errors_per_backend: vec![0; backends],
        marked_down: Vec::new(),
        under_load: vec![LoadedCost::default(); backends],
        stalls: super::stall::StallRecorder::new(scenario),
        speeds: scenario
            .servers()
            .iter()
            .map(|s| scenario.groups[s.group].speed)
            .collect(),
        altered: super::faults::altered_windows(scenario, opts.fault_delay),
        workers: start.workers,
        first_error: None,
        down_on_error: scenario.faults.is_empty(),
        dists: start.dists,
        sent: 0,
        prober,
        asked: Vec::new(),
        held: super::probe::HeldAnswers::default(),
        cost_seen: vec![None; backends],
        client,
        ramps: slow_start.is_some(),
    };
    if let Some(mut c) = r.client.take() {
        c.start(&mut r, pool);
        r.client = Some(c);
    } else if let Some(ramp) = slow_start {
        for b in 0..r.views.all().len() {
            r.views.get(b).set_slow_start(ramp);
        }
    }
    let mut faults = (!controls.is_empty()).then(|| {
        let cfg = ClientConfig {
            io_timeout: Some(opts.io_timeout),
            ..ClientConfig::new(opts.protocol, opts.transport)
        };
        super::faults::FaultPlayer::new(
            scenario,
            controls.to_vec(),
            pool.addrs(),
            cfg,
            seed,
            opts.replication,
            opts.time_scale,
            opts.fault_delay,
        )
    });
    let mut dispatch_lag = latency_histogram();
    let mean_gap = Duration::from_secs_f64(opts.time_scale / scenario.mean_rate().max(1e-9));
    let spin = opts.spin.min(mean_gap / 4);
    let waits_before = pool.waited();
    let machine = MachineProbe::start(MachineProbe::sleeps_for(scenario, opts.time_scale));
    for req in RequestStream::new(&scenario.workload, seed, opts.replication) {
        // Fault actions and policy timers due first, each at its own time.
        loop {
            if let Some(f) = &mut faults {
                f.poll_health(&clock);
            }
            let fault = faults.as_ref().and_then(|f| f.next_due());
            let timer = r.next_timer();
            let Some(t) = fault
                .into_iter()
                .chain(timer)
                .min()
                .filter(|&t| t <= req.arrival)
            else {
                break;
            };
            if !wait_until(pool, clock.at(t), spin, Some(&opts.cancel), |pool, done| {
                r.handle(pool, done);
            }) {
                return Ok(None);
            }
            if let Some(f) = faults.as_mut().filter(|_| fault == Some(t)) {
                f.poll_health(&clock);
                f.apply_due(t, &clock, &mut r.views, &mut r.marked_down);
                r.health_changed(t);
                membership_changed(f, pool, scenario);
            }
            r.timers(pool, t);
        }
        let due = clock.at(req.arrival);
        if !wait_until(pool, due, spin, Some(&opts.cancel), |pool, done| {
            r.handle(pool, done);
            r.on_probes();
        }) {
            return Ok(None);
        }
        r.on_probes();
        let woke = Instant::now();
        let late = woke.saturating_duration_since(due);
        r.stalls.dispatcher(req.arrival, clock.scenario(late));
        let late = late.as_nanos();
        dispatch_lag.saturating_record(u64::try_from(late).unwrap_or(u64::MAX).max(1));
        let now = clock.now(woke);
        let measured = req.arrival >= from && req.arrival < to;
        r.metrics.arrived += u64::from(measured);
        if measured {
            r.metrics.phase_arrived(req.arrival);
        }
        if let Some(mut c) = r.client.take() {
            r.due = Some(due);
            c.arrival(&mut r, pool, now, &req, measured);
            r.due = None;
            r.client = Some(c);
            continue;
        }
        let (b, routed) = r.views.route(now, req.key);
        r.send_probes(b, now, measured);
        let Some(i) = routed else {
            r.metrics.unroutable += u64::from(measured);
            if measured {
                r.metrics.phase_unserved(req.arrival);
            }
            continue;
        };
        if measured {
            r.note_queue(i);
        }
        let work = req.size.work(&r.dists[i]) * 1e9 * opts.time_scale;
        pool.send(Job {
            id: req.id,
            backend: i,
            scheduled: due,
            work_ns: work.round().min(i64::MAX as f64) as i64,
            key: Some(req.key as i64),
            tag: u64::from(measured) | (b as u64) << 1,
        });
        r.sent += 1;
    }
    // Drain: every call ends within the I/O timeout (sockets time out) of being sent, and
    // one waiting for a connection is sent within a connect timeout or fails with the
    // call it waits on; with a margin. Under a policy, requests waiting out a retry's
    // back-off have no call out: the drain goes on until every request has ended.
    let waited_from = Instant::now();
    let limit =
        2 * opts.io_timeout + ClientConfig::default().connect_timeout + Duration::from_secs(5);
    let open = |r: &Replay| r.client.as_ref().map_or(0, |c| c.open());
    while pool.in_flight() > 0 || open(&r) > 0 {
        if opts.cancel.is_cancelled() {
            return Ok(None);
        }
        let left = limit.saturating_sub(waited_from.elapsed());
        let mut wait = left.min(CANCEL_POLL);
        if let Some(f) = &mut faults {
            // Faults go on while calls drain (a recovery, a pause), as in the simulator.
            f.poll_health(&clock);
            let now = clock.now(Instant::now());
            f.apply_due(now, &clock, &mut r.views, &mut r.marked_down);
            r.health_changed(now);
            membership_changed(f, pool, scenario);
            if let Some(t) = f.next_due() {
                wait = wait.min(clock.at(t).saturating_duration_since(Instant::now()));
            }
        }
        if let Some(t) = r.next_timer() {
            wait = wait.min(clock.at(t).saturating_duration_since(Instant::now()));
        }
        match pool.recv_timeout(wait) {
            Some(done) => r.handle(pool, done),
            None if waited_from.elapsed() < limit => {}
            None => {
                return Err(LiveError::Stuck {
                    in_flight: pool.in_flight().max(open(&r)),
                    waited: waited_from.elapsed(),
                });
            }
        }
        let now = clock.now(Instant::now());
        r.timers(pool, now);
    }
    let wall = Instant::now().saturating_duration_since(clock.start);
    let machine = machine.stop();
    let fault_log = faults
        .map(|mut f| std::mem::take(&mut f.log))
        .unwrap_or_default();
    Ok(Some(StrategyReplay {
        label: entry.label(),
        metrics: r.metrics,
        errors: r.errors,
        sent: r.sent,
        lag: r.lag,
        dispatch_lag,
        wall,
        marked_down: r.marked_down,
        errors_per_backend: r.errors_per_backend,
        connections: pool.opened(),
        connection_waits: pool.waited() - waits_before,
        first_error: r.first_error,
        probes_late: r.prober.as_ref().map_or(0, super::probe::Prober::late),
        realtime: start.realtime.active(),
        under_load: r.under_load,
        machine,
        faults: fault_log,
        stalls: r.stalls.finish(),
    }))
}
/// The port the backends started here must begin at, if a strategy replayed through a
/// proxy hashes their addresses (nginx `hash … consistent`: server `i` at
/// `127.0.0.1:{port_base + i}`, as the simulated ring hashes it); `None` for free ports.
fn fixed_ports(
    strategies: &[&StrategyEntry],
    via: Option<super::proxy::ProxyKind>,
) -> Result<Option<u16>, LiveError> {
    let Some(kind) = via else { return Ok(None) };
    let mut base: Option<(u32, String)> = None;
    for entry in strategies {
        let ring = super::proxy::algorithm_ring(kind, entry);
        let Some(p) = ring else { continue };
        match &base {
            Some((b, other)) if *b != p.port_base => {
                return Err(LiveError::Unsupported(format!(
                    "strategies {other:?} and {:?} hash the servers at port_base {b} and {}, and one set of backends cannot be at both\n  fix: give them the same port_base, or replay them one at a time with --strategy",
                    entry.label(),
                    p.port_base
                )));
            }
            Some(_) => {}
            None => base = Some((p.port_base, entry.label())),
        }
    }
    Ok(base.map(|(b, _)| u16::try_from(b).unwrap_or(u16::MAX)))
}
