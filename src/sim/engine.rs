//! The discrete-event engine: one replication of one strategy.
//!
//! Events are arrivals (one pending at a time, generated lazily from the request stream,
//! a few more drawn ahead, see [`LOOKAHEAD`]), completions, periodic load reports,
//! connection expiries and faults. Two topologies:
//!
//! - **Request level** (default): on arrival a balancer (chosen uniformly when there are
//!   several, each with its own view) routes the request; the server starts it, queues it or
//!   refuses it. The balancer is told of the dispatch and of the completion.
//! - **Connection level** (`[connections]`, an L4 proxy): each client holds a pool of
//!   persistent connections; the strategy picks a server when a connection opens (its
//!   "in flight" is then the number of open connections) and each request goes over the next
//!   connection of its client, to that connection's server.
//!
//! Arrivals stop at the end of the measured window and the system then drains, so every
//! measured request completes. Events at the same nanosecond run in scheduling order.

use std::collections::VecDeque;

use rand::RngExt;

use super::Overheads;
mod autoscaler;
mod client;
mod membership;
mod network;
mod tally;

pub use tally::Counts;

use super::event_queue::EventQueue;
use super::probe::{NO_SLOT, PROBE_JOB_BASE, Send, Signals};
use super::server::{Admission, Job, QueueControl, Server, Warmup};
use crate::cancel::Cancel;
use crate::metrics::RunMetrics;
use crate::policy::{PolicySpec, SlowStartSpec};
use crate::rng::{SimRng, Stream, stream_rng};
use crate::scenario::{ErrorStatus, FaultKind, Scenario};
use crate::strategy::{
    Balancer, LOOKAHEAD, LoadTable, Outcome, Ramp, ServerLoad, StrategyEntry, StrategyFactory,
    StrategySpec,
};
use crate::time::Nanos;
use crate::workload::dist::open_unit;
use crate::workload::{Dist, Request, RequestStream};

/// A scheduled event. Arrivals are not among them: the one pending arrival is kept beside
/// the heap with its own sequence number (see [`Sim::next_event`]), which keeps heap
/// entries small — the heap is the hottest structure of the engine.
///
/// `repr(u32)`: the tag takes the first 4 bytes and every variant's fields follow at
/// fixed places. With the default layout (a 1-byte tag, fields from byte 1) the compiler
/// copied a popped event's fields as two overlapping 8-byte words, and reading them back
/// straddled both stores: the store-to-load forwarding failed on every event (a stall of
/// about 12 cycles; whole process 3% faster without it).
#[derive(Clone, Copy)]
#[repr(u32)]
enum Event {
    Done {
        server: u32,
        job: u64,
    },
    /// Periodic load reports to every balancer (stale-information topology).
    Report,
    /// A persistent connection reaches the end of its life.
    ConnExpire {
        slot: u32,
        generation: u32,
    },
    /// Fault `index` starts (`true`) or ends (`false`).
    Fault {
        index: u32,
        start: bool,
    },
    /// Balancers' health checks see `server` as up or down.
    Health {
        server: u32,
        up: bool,
    },
    /// Probe `slot`, and the probes sent with it (its chain), reach their servers (see
    /// [`super::probe`]).
    ProbeAtServer {
        slot: u32,
    },
    /// The answer to probe `slot` reaches its balancer: only when answers are events of
    /// their own ([`Signals::eager`]); otherwise they wait in [`Signals`].
    ProbeBack {
        slot: u32,
    },
    /// A client-policy timer (see [`client`]): an attempt's timeout (`slot` is the
    /// attempt's), a retry's back-off or a hedge's delay (`slot` is the request's).
    /// `generation` tells a timer of a slot since reused.
    Policy {
        timer: client::Timer,
        slot: u32,
        generation: u32,
    },
    /// An error answer (an `error` fault) reaches its client: entry `slot` of
    /// [`Sim::errors`].
    ErrorReply {
        slot: u32,
    },
    /// Server `server` starts a pause of fault `fault`.
    Pause {
        server: u32,
        fault: u32,
    },
    /// A membership step of server `server` (joins, leaves, deploys: see [`membership`]).
    Member {
        server: u32,
        step: membership::Step,
        arg: u32,
    },
    /// An answer delayed by the network reaches its client (see [`network`]).
    Reply {
        slot: u32,
    },
}

// A heap entry is a 16-byte key and an event: 32 bytes, two to a cache line.
const _: () = assert!(std::mem::size_of::<Event>() == 16);

/// An error answer on its way back to its client (`error` faults).
#[derive(Clone, Copy, Debug)]
struct PendingError {
    server: u32,
    balancer: u32,
    measured: bool,
    /// When the request (or attempt) was sent.
    sent: Nanos,
    /// A refusal ("429") rather than an error.
    rejected: bool,
    /// Under a client policy: the attempt answered, as (slot, generation).
    attempt: Option<(u32, u32)>,
}

/// How requests reach servers: the one place the two topologies differ.
enum Topology {
    /// Each request is routed by a balancer, which sees it dispatched and completed.
    Requests,
    /// Each request goes over a persistent connection, which the balancer routed when it
    /// opened: the balancer sees connections open and close, not requests.
    Connections(Connections),
}

/// Persistent connections of the connection-level topology.
struct Connections {
    pool: u32,
    /// Server of each connection slot (`client * pool + k`), `None` while disconnected.
    server: Vec<Option<usize>>,
    /// When each slot's connection opened.
    opened: Vec<Nanos>,
    /// Incremented at each open, so an expiry of an earlier connection is ignored.
    generation: Vec<u32>,
    /// Next connection each client uses.
    next: Vec<u32>,
    lifetime: Option<f64>,
    rng: SimRng,
}

struct Sim<'a> {
    scenario: &'a Scenario,
    servers: Vec<Server>,
    base_speed: Vec<f64>,
    dists: Vec<Dist>,
    balancers: Vec<Balancer>,
    routing: SimRng,
    events: EventQueue<Event>,
    /// Live mode's calibrated round trip per server, added to the response time of every
    /// request it serves (empty otherwise); converted once here rather than at every
    /// completion.
    extra_latency: Vec<Nanos>,
    /// The next arrival: (time, scheduling sequence, request).
    pending: Option<(Nanos, u64, Request)>,
    /// The arrivals after `pending` (up to `depth` of them), drawn early so that a key
    /// can be told to the strategy [`LOOKAHEAD`] arrivals before its pick
    /// ([`Sim::tell_upcoming`]). A scheduling sequence is taken when its arrival becomes
    /// `pending`, as it would be were it drawn then; the arrival, size and key draws are
    /// streams of their own, so drawing earlier changes no number.
    ahead: VecDeque<Request>,
    /// How many arrivals are drawn ahead: [`LOOKAHEAD`] − 1 at request level with one
    /// balancer whose strategy reads ahead ([`Balancer::reads_ahead`]), else none (the
    /// next arrival is drawn when the one before arrives).
    depth: usize,
    requests: RequestStream,
    /// Whether `requests` has ended (it is not asked again).
    drawn_all: bool,
    m: RunMetrics,
    /// Whether the run prefetches the next completions' servers (from [`PREFETCH_FROM`]
    /// servers).
    prefetch: bool,
    from: Nanos,
    to: Nanos,
    report_every: Option<Nanos>,
    /// Whether server load reports are kept exact after every change (the strategy reads
    /// them and no `load_report_interval` is set).
    exact_reports: bool,
    /// Servers' load reports, one table every balancer reads (when the strategy reads
    /// them): a publication costs O(1) whatever the number of balancers.
    loads: Option<LoadTable>,
    topology: Topology,
    /// Client policies' state; `None` without a policy, or with one that needs no client
    /// ([`PolicySpec::needs_client`]), so that the common path is the one-attempt path
    /// of before, at the cost of one branch per arrival and completion.
    client: Option<Box<client::Clients>>,
    /// The slow start of a policy that needs no client, which the engine applies itself
    /// (`start_policy`, `health`); `None` otherwise (a client's policy holds its own).
    slow_start: Option<Ramp>,
    /// Error answers in flight (`error` faults), with free slots to reuse.
    errors: Vec<PendingError>,
    free_errors: Vec<u32>,
    /// Draws of faults: which requests an `error` fault answers, pause lengths and
    /// intervals. Used only by those faults, so other runs draw exactly as before.
    fault_rng: SimRng,
    /// Probes and reply loads, when the strategy asks for them ([`super::probe`]).
    signals: Option<Signals>,
    /// Cluster membership, when faults change it ([`membership`]); `None` otherwise.
    members: Option<Box<membership::Members>>,
    /// Answers delayed by the network (`delay` faults).
    replies: network::Replies,
    /// Requests' rates over time, while a trace records them ([`Run::trace`]).
    tally: Option<Box<tally::Tally>>,
    /// Whether the run has none of the features a request's path otherwise asks about at
    /// every step (see [`Sim::is_plain`]): its events then run through the path
    /// specialised for that case (`PLAIN = true`), the same code with those checks
    /// removed at compile time.
    plain: bool,
}

/// One replication of one strategy on a scenario, configured by its options and run by
/// [`Run::simulate`]: the one entry point of the engine.
///
/// By default the run uses the scenario's seed, no client policy, no calibrated
/// overheads, records no trace and cannot be cancelled. Each option changes only what it
/// names: with none set, a run is [`simulate`]'s, bit for bit.
///
/// Any [`StrategyFactory`] runs, so a strategy written outside this crate (a closure
/// building it) runs on a scenario exactly as a catalogue one does:
///
/// ```
/// use lbsim::rng::SimRng;
/// use lbsim::scenario::Scenario;
/// use lbsim::sim::{Run, simulate};
/// use lbsim::strategy::{Backend, PickContext, RoundRobin, Strategy};
///
/// let s = Scenario::from_source(
///     "doc.toml".as_ref(),
///     r#"
///     duration = 5
///     [arrivals]
///     process = "poisson"
///     rate = 50
///     [[servers]]
///     name = "s"
///     count = 2
///     service = { dist = "exponential", mean = 0.01 }
///     [[strategies]]
///     kind = "round_robin"
///     "#,
/// )
/// .unwrap();
/// // The catalogue's round robin, built by hand, runs bit for bit as `kind = "round_robin"`.
/// let custom = |_n: usize, _rng: SimRng| Box::new(RoundRobin::default()) as Box<dyn Strategy>;
/// let a = Run::new(&s, &custom, 0).metrics();
/// let b = simulate(&s, &s.strategies[0].spec, 0, s.seed);
/// assert_eq!(a.latency_sum, b.latency_sum);
/// assert!(a.arrived > 150 && a.latency.len() == a.arrived);
/// ```
#[must_use = "a run does nothing until `simulate` or `metrics`"]
pub struct Run<'a> {
    scenario: &'a Scenario,
    strategy: &'a dyn StrategyFactory,
    policy: Option<&'a PolicySpec>,
    replication: u64,
    seed: u64,
    overheads: Option<&'a Overheads>,
    trace: Option<&'a TraceSpec>,
    cancel: Option<&'a Cancel>,
}

/// What a [`Run`] produced.
#[derive(Clone, Debug)]
pub struct Simulated {
    /// What was measured.
    pub metrics: RunMetrics,
    /// The servers' state over time, when [`Run::trace`] asked for it.
    pub trace: Option<Trace>,
}

impl<'a> Run<'a> {
    /// Replication `replication` of `scenario` under `strategy` (a [`StrategySpec`] or any
    /// other [`StrategyFactory`]), with the scenario's seed and no client policy.
    pub fn new(
        scenario: &'a Scenario,
        strategy: &'a dyn StrategyFactory,
        replication: u64,
    ) -> Run<'a> {
        Run {
            scenario,
            strategy,
            policy: None,
            replication,
            seed: scenario.seed,
            overheads: None,
            trace: None,
            cancel: None,
        }
    }

    /// Replication `replication` of a strategy entry of the scenario: its strategy under
    /// its client policy, if any.
    pub fn entry(scenario: &'a Scenario, entry: &'a StrategyEntry, replication: u64) -> Run<'a> {
        Run::new(scenario, &entry.spec, replication).policy(entry.policy.as_ref())
    }

    /// Master seed `seed` instead of the scenario's.
    pub fn seed(mut self, seed: u64) -> Run<'a> {
        self.seed = seed;
        self
    }

    /// The client policy `policy` (timeouts, retries, budgets, hedging) in every
    /// balancer; `None` is none. A policy of slow start alone runs without a client
    /// ([`PolicySpec::needs_client`]), at its strategy's cost.
    pub fn policy(mut self, policy: Option<&'a PolicySpec>) -> Run<'a> {
        self.policy = policy;
        self
    }

    /// Live mode's calibrated `overheads`, modelled by the engine.
    pub fn overheads(mut self, overheads: &'a Overheads) -> Run<'a> {
        self.overheads = Some(overheads);
        self
    }

    /// Also samples the state of the servers of `spec` every `spec.every` over the whole
    /// run (warm-up included), up to the end of the measured window ([`Simulated::trace`]).
    /// The run itself is the same, bit for bit: recording only reads. Memory grows with
    /// samples × recorded servers, not with the run: pick `every` from the run length.
    pub fn trace(mut self, spec: Option<&'a TraceSpec>) -> Run<'a> {
        self.trace = spec;
        self
    }

    /// Gives up soon after `cancel` is set (it is looked at every few thousand events, so
    /// a cancelled replication stops within about a millisecond).
    pub fn cancel(mut self, cancel: &'a Cancel) -> Run<'a> {
        self.cancel = Some(cancel);
        self
    }

    /// Runs it: `None` if cancelled first.
    pub fn simulate(self) -> Option<Simulated> {
        let mut sim = Sim::new(
            self.scenario,
            self.strategy,
            self.policy,
            self.replication,
            self.seed,
        );
        if let Some(o) = self.overheads {
            sim.calibrate(o);
        }
        // Without a flag, the loop of a cancellable run with a flag never set, so that the
        // engine bench measures what the cancel check costs.
        let never = Cancel::default();
        let cancel = self.cancel.unwrap_or(&never);
        let trace = match self.trace {
            Some(spec) => Some(record(&mut sim, spec, cancel)?),
            None => {
                if !sim.run(cancel) {
                    return None;
                }
                None
            }
        };
        Some(Simulated {
            metrics: sim.finish(),
            trace,
        })
    }

    /// Runs it to the end and returns what was measured.
    ///
    /// # Panics
    ///
    /// If a [`Run::cancel`] flag was set: a run that may be cancelled uses
    /// [`Run::simulate`].
    pub fn metrics(self) -> RunMetrics {
        self.simulate()
            .expect("a run without a cancel flag set runs to the end")
            .metrics
    }
}

/// Simulates replication `replication` of `scenario` under `strategy`, with master seed
/// `seed`, and returns what was measured: [`Run`] with only a seed, for the many tests
/// and benches that need no more.
pub fn simulate(
    scenario: &Scenario,
    strategy: &StrategySpec,
    replication: u64,
    seed: u64,
) -> RunMetrics {
    Run::new(scenario, strategy, replication)
        .seed(seed)
        .metrics()
}

/// Servers from which a run prefetches the state of the next completions' servers
/// ([`Sim::prefetch_next`]): below it, the servers' state stays in the cache and the
/// prefetches are pure cost (round robin at 10 servers 1.06× the CPU time with them; at
/// 1,000 and 3,000 servers 1.01× and 0.99×, at 5,000 0.96×).
const PREFETCH_FROM: usize = 4096;

/// Events run between two looks at the cancel flag: at about 100 ns an event, a
/// cancelled replication stops within a millisecond, and one relaxed load per 4096
/// events costs nothing measurable.
const CANCEL_CHECK_EVERY: u32 = 4096;

/// What to record of a run over time (see [`Run::trace`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TraceSpec {
    /// Sampling period (at least 1 ns).
    pub every: Nanos,
    /// The servers recorded, by index, ascending: all of them, or a bounded selection
    /// when the cluster is large (the report decides).
    pub servers: Vec<usize>,
}

/// The sampled state of the recorded servers at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// When.
    pub time: Nanos,
    /// Requests waiting, per recorded server (in the order of [`Trace::servers`]).
    pub queued: Vec<u32>,
    /// Requests in service, per recorded server.
    pub in_service: Vec<u32>,
    /// Requests in flight to each recorded server as the first balancer sees them (for
    /// connection level: connections open to it).
    pub in_flight: Vec<u32>,
}

/// A run's state over time: [`Sample`]s of the servers of a [`TraceSpec`].
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// The servers recorded, by index; the samples' vectors follow this order.
    pub servers: Vec<usize>,
    /// One per grid point `0, every, 2·every, …` up to the end of the measured window.
    pub samples: Vec<Sample>,
    /// The sampling period: the length of each interval of [`Trace::counts`].
    pub every: Nanos,
    /// What happened to requests in each interval `[k·every, (k+1)·every)`, for `k` from
    /// 0 until the intervals cover the measured window; every request of the run (warm-up
    /// included, measured or not) counts in the interval of its event.
    pub counts: Vec<Counts>,
    /// The same counts for events after the last interval (the drain of the requests
    /// still out when arrivals stop): with [`Trace::counts`], every request once.
    pub after: Counts,
}

/// Samples the servers `ids` of `sim` at every grid point from `next` (advanced by
/// `every`) before `t`, up to the end of the measured window: the state between events
/// holds until the next one. Out of line: most events fall between two grid points, and
/// the caller only compares with `next`.
#[inline(never)]
fn sample_until(
    sim: &Sim<'_>,
    ids: &[usize],
    every: Nanos,
    next: &mut Nanos,
    t: Nanos,
    samples: &mut Vec<Sample>,
) {
    while *next < t && *next <= sim.to {
        let view = sim.balancers[0].backends();
        samples.push(Sample {
            time: *next,
            queued: ids.iter().map(|&i| sim.servers[i].queued()).collect(),
            in_service: ids.iter().map(|&i| sim.servers[i].busy()).collect(),
            in_flight: ids.iter().map(|&i| view.in_flight(i)).collect(),
        });
        *next += every;
    }
}

/// Runs every event of `sim`, sampling the servers of `spec`; `None` if `cancel` was set
/// first (checked every [`CANCEL_CHECK_EVERY`] events).
fn record(sim: &mut Sim<'_>, spec: &TraceSpec, cancel: &Cancel) -> Option<Trace> {
    if sim.plain {
        record_as::<true>(sim, spec, cancel)
    } else {
        record_as::<false>(sim, spec, cancel)
    }
}

/// [`record`] on the path for plain runs or the general one (see [`Sim::plain`]).
fn record_as<const PLAIN: bool>(
    sim: &mut Sim<'_>,
    spec: &TraceSpec,
    cancel: &Cancel,
) -> Option<Trace> {
    let every = spec.every.max(Nanos(1));
    let ids = &spec.servers;
    sim.tally = Some(Box::new(tally::Tally::new(every, sim.to)));
    let mut samples = Vec::new();
    let mut next = Nanos::ZERO;
    let mut countdown = CANCEL_CHECK_EVERY;
    while let Some((arrival, now)) = sim.next_event::<PLAIN>() {
        if next < now && next <= sim.to {
            sample_until(sim, ids, every, &mut next, now, &mut samples);
        }
        sim.step_known::<PLAIN>(arrival);
        countdown -= 1;
        if countdown == 0 {
            if cancel.is_cancelled() {
                return None;
            }
            countdown = CANCEL_CHECK_EVERY;
        }
    }
    sample_until(sim, ids, every, &mut next, Nanos::MAX, &mut samples);
    let (every, counts, after) = sim.tally.take().map(|t| t.finish())?;
    Some(Trace {
        servers: ids.clone(),
        samples,
        every,
        counts,
        after,
    })
}

impl<'a> Sim<'a> {
    fn new(
        scenario: &'a Scenario,
        strategy: &dyn StrategyFactory,
        policy: Option<&PolicySpec>,
        replication: u64,
        seed: u64,
    ) -> Sim<'a> {
        let servers: Vec<Server> = scenario
            .servers()
            .iter()
            .map(|s| Server::new(s.workers, s.speed, s.queue_capacity, s.group))
            .collect();
        // One weight table, shared by every balancer's view.
        let weights: std::sync::Arc<[u32]> = scenario.weights().into();
        let balancers: Vec<Balancer> = (0..scenario.balancers)
            .map(|b| {
                let rng = stream_rng(seed, replication, Stream::Strategy, u64::from(b));
                Balancer::sharing(
                    strategy.build(servers.len(), rng),
                    weights.clone(),
                    scenario.balancers as usize,
                )
            })
            .collect();
        let wanted = balancers[0].signals();
        let signals = (wanted.probes || wanted.reply_loads).then(|| {
            Signals::new(
                servers.len(),
                scenario.probes.delay,
                scenario.probes.cost,
                wanted,
            )
        });
        let from = Nanos::from_secs_f64(scenario.warmup);
        let to = Nanos::from_secs_f64(scenario.end());
        let workers: Vec<u32> = servers.iter().map(|s| s.workers).collect();
        let servers_count = servers.len();
        let mut sim = Sim {
            scenario,
            base_speed: servers.iter().map(|s| s.speed).collect(),
            servers,
            dists: scenario.groups.iter().map(|g| g.service.clone()).collect(),
            balancers,
            routing: stream_rng(seed, replication, Stream::Routing, 0),
            events: EventQueue::default(),
            pending: None,
            ahead: VecDeque::new(),
            depth: 0,
            extra_latency: Vec::new(),
            requests: RequestStream::new(&scenario.workload, seed, replication),
            drawn_all: false,
            prefetch: servers_count >= PREFETCH_FROM,
            m: RunMetrics::new(&workers, from, to)
                .with_phases(&crate::metrics::phase_edges(scenario))
                .with_recovery(crate::metrics::recovery_spec(scenario)),
            from,
            to,
            report_every: scenario
                .load_report_interval
                .map(Nanos::from_secs_f64)
                .filter(|_| strategy.reads_load_reports()),
            exact_reports: scenario.load_report_interval.is_none() && strategy.reads_load_reports(),
            loads: strategy.reads_load_reports().then(|| {
                let n = scenario.servers().len();
                if strategy.indexes_load_reports() {
                    LoadTable::with_queue_index(n)
                } else {
                    LoadTable::new(n)
                }
            }),
            topology: Topology::Requests,
            errors: Vec::new(),
            free_errors: Vec::new(),
            fault_rng: stream_rng(seed, replication, Stream::Faults, 0),
            client: None,
            slow_start: None,
            signals,
            members: membership::Members::new(scenario),
            replies: network::Replies::default(),
            tally: None,
            plain: false,
        };
        // Before membership marks absent servers down: under a client, through it.
        match policy {
            Some(p) if p.needs_client() => {
                sim.client = Some(Box::new(client::Clients::new(
                    p,
                    scenario.balancers as usize,
                    servers_count,
                    stream_rng(seed, replication, Stream::Policy, 0),
                )));
            }
            Some(p) => sim.slow_start = p.slow_start.as_ref().map(SlowStartSpec::ramp),
            None => {}
        }
        for s in &mut sim.servers {
            if let Some(a) = &scenario.groups[s.group].admission {
                s.control = Some(Box::new(QueueControl::new(a)));
            }
        }
        sim.initial_membership();
        if scenario.connections.is_none()
            && let [balancer] = sim.balancers.as_slice()
            && balancer.reads_ahead()
        {
            sim.depth = LOOKAHEAD - 1;
            sim.ahead.reserve(sim.depth);
        }
        match sim.requests.next() {
            Some(r) => {
                let seq = sim.events.reserve_seq();
                sim.pending = Some((r.arrival, seq, r));
                while sim.ahead.len() < sim.depth && !sim.drawn_all {
                    match sim.requests.next() {
                        Some(r) => sim.ahead.push_back(r),
                        None => sim.drawn_all = true,
                    }
                }
            }
            None => sim.drawn_all = true,
        }
        if let Some(dt) = sim.report_every {
            sim.events.push(dt, Event::Report);
        }
        sim.start_policy();
        for (index, fault) in scenario.faults.iter().enumerate() {
            let index = index as u32;
            sim.events.push(
                Nanos::from_secs_f64(fault.at),
                Event::Fault { index, start: true },
            );
            if let Some(until) = fault.until {
                sim.events.push(
                    Nanos::from_secs_f64(until),
                    Event::Fault {
                        index,
                        start: false,
                    },
                );
            }
        }
        if let Some(spec) = &scenario.connections {
            let slots = (spec.clients * spec.pool_size) as usize;
            sim.topology = Topology::Connections(Connections {
                pool: spec.pool_size,
                server: vec![None; slots],
                opened: vec![Nanos::ZERO; slots],
                generation: vec![0; slots],
                next: vec![0; spec.clients as usize],
                lifetime: spec.lifetime,
                rng: stream_rng(seed, replication, Stream::Routing, 1),
            });
            for slot in 0..slots as u32 {
                sim.open_connection(slot, Nanos::ZERO);
            }
        }
        sim.plain = sim.is_plain();
        sim
    }

    /// Whether a request's path can skip every check for an absent feature: no client
    /// policy, no probes, no faults (so no server errs, delays answers, pauses, crashes or
    /// changes membership), no admission control, request-level topology, no load reports
    /// kept exact after every change, no calibrated overheads. A trace (tally) is still
    /// checked for: it reads only; so are reply loads (C3's), three checks of an `Option`
    /// a request, which on the general path cost C3 its checks for everything else (the
    /// general path took round robin 1.07-1.09x the plain one's CPU time a request).
    fn is_plain(&self) -> bool {
        // A policy of slow start alone has no client: it is plain if the rest is.
        self.client.is_none()
            && self.signals.as_ref().is_none_or(|s| !s.probes)
            && self.members.is_none()
            && self.scenario.faults.is_empty()
            && matches!(self.topology, Topology::Requests)
            && !self.exact_reports
            && self.extra_latency.is_empty()
            && self.servers.iter().all(|s| s.control.is_none())
    }

    /// The next event, if any: whether it is the pending arrival, which comes first when
    /// it is before the earliest scheduled event by (time, scheduling sequence) — the same
    /// order as if it were in the heap — and its time.
    ///
    /// A send of probes held aside ([`Signals::hold_send`]) is answered first, or becomes
    /// its event ([`Sim::send_held`]).
    #[inline(always)]
    fn next_event<const PLAIN: bool>(&mut self) -> Option<(bool, Nanos)> {
        if !PLAIN && self.signals.as_ref().is_some_and(Signals::has_send) {
            return self.send_held();
        }
        self.next_scheduled()
    }

    /// [`Sim::next_event`] among the events scheduled (a send held aside not counted).
    #[inline(always)]
    fn next_scheduled(&mut self) -> Option<(bool, Nanos)> {
        match (&self.pending, self.events.peek_key()) {
            (Some((t, seq, _)), Some(key)) if (*t, *seq) < key => Some((true, *t)),
            (Some((t, ..)), None) => Some((true, *t)),
            (_, Some(key)) => Some((false, key.0)),
            (None, None) => None,
        }
    }

    /// Runs every event; returns false if `cancel` was set first (checked every
    /// [`CANCEL_CHECK_EVERY`] events).
    fn run(&mut self, cancel: &Cancel) -> bool {
        if self.plain {
            self.run_as::<true>(cancel)
        } else {
            self.run_as::<false>(cancel)
        }
    }

    /// [`Sim::run`] on the path for plain runs (`PLAIN`, see [`Sim::plain`]) or the
    /// general one.
    #[inline]
    fn run_as<const PLAIN: bool>(&mut self, cancel: &Cancel) -> bool {
        let mut countdown = CANCEL_CHECK_EVERY;
        while self.step_as::<PLAIN>().is_some() {
            countdown -= 1;
            if countdown == 0 {
                if cancel.is_cancelled() {
                    return false;
                }
                countdown = CANCEL_CHECK_EVERY;
            }
        }
        true
    }

    /// Runs the next event; returns its time, or `None` when nothing is left.
    #[cfg(test)]
    fn step(&mut self) -> Option<Nanos> {
        if self.plain {
            self.step_as::<true>()
        } else {
            self.step_as::<false>()
        }
    }

    /// [`Sim::step`] on the path for plain runs or the general one (see [`Sim::plain`]).
    #[inline(always)]
    fn step_as<const PLAIN: bool>(&mut self) -> Option<Nanos> {
        let (arrival, _) = self.next_event::<PLAIN>()?;
        self.step_known::<PLAIN>(arrival)
    }

    /// [`Sim::step_as`] once [`Sim::next_event`] said whether the next event is the
    /// pending arrival (there is one).
    #[inline(always)]
    fn step_known<const PLAIN: bool>(&mut self, arrival: bool) -> Option<Nanos> {
        debug_assert!(!PLAIN || self.plain);
        if !PLAIN && self.signals.as_ref().is_some_and(Signals::has_replies) {
            self.replies_before_next();
        }
        if arrival {
            let (now, _, req) = self.pending.take()?;
            if self.depth == 0 {
                if let Some(next) = self.requests.next() {
                    let seq = self.events.reserve_seq();
                    self.pending = Some((next.arrival, seq, next));
                }
            } else if let Some(next) = self.ahead.pop_front() {
                let seq = self.events.reserve_seq();
                self.pending = Some((next.arrival, seq, next));
                if !self.drawn_all {
                    match self.requests.next() {
                        Some(after) => {
                            self.ahead.push_back(after);
                            self.tell_upcoming(after.key);
                        }
                        None => self.drawn_all = true,
                    }
                }
            }
            self.arrival::<PLAIN>(now, req);
            self.prefetch_next();
            Some(now)
        } else {
            let (now, event) = self.events.pop()?;
            self.handle::<PLAIN>(now, event);
            self.prefetch_next();
            Some(now)
        }
    }

    /// In clusters of [`PREFETCH_FROM`] servers or more, prefetches what the next two
    /// completions will read of their servers, an event or two before they run: for the
    /// next, its in-service job and its time integrals ([`ServerAccumulator`]); for the
    /// one after, the [`Server`] itself (its lines read first: the next event's prefetch
    /// reads its in-service buffer's address there). At 10,000 one-worker servers most of
    /// that state is out of the 1 MiB cache a core has here, and a completion waited on
    /// it: round robin, least connections and C3 indexed take 0.94–0.96× the CPU time a
    /// request with it (long runs, paired), round robin 0.90× at 30,000 servers. Nothing
    /// is read that changes what runs: the next peek would have filled the heap's hole
    /// as [`EventQueue::hint`] does.
    ///
    /// [`ServerAccumulator`]: crate::metrics::ServerAccumulator
    #[inline(always)]
    fn prefetch_next(&mut self) {
        if !self.prefetch {
            return;
        }
        use prefetch_index::prefetch_index as pf;
        if let Some(&Event::Done { server, .. }) = self.events.hint() {
            let i = server as usize;
            if let (Some(s), Some(a)) = (self.servers.get(i), self.m.servers.get(i)) {
                pf(&s.in_service, 0);
                pf(std::slice::from_ref(a), 0);
                pf(std::slice::from_ref(&a.latency_sum), 0);
            }
        }
        if let Some(&Event::Done { server, .. }) = self.events.hint2() {
            let i = server as usize;
            if let Some(s) = self.servers.get(i) {
                pf(std::slice::from_ref(&s.in_service), 0);
                pf(std::slice::from_ref(&s.busy_time), 0);
            }
        }
    }

    /// Tells the balancer the key of the arrival [`LOOKAHEAD`] after the one at hand,
    /// drawn now, before the pick of the arrival at hand ([`Balancer::upcoming`]); only
    /// when arrivals are drawn ahead (`depth`): at request level with one balancer (with
    /// several, which one picks is drawn at the arrival).
    #[inline(always)]
    fn tell_upcoming(&mut self, key: u64) {
        if let [balancer] = self.balancers.as_mut_slice() {
            balancer.upcoming(key);
        }
    }

    /// Runs `event`, due at `now`. Inlined into the event loop: called, it took the event
    /// through memory, and reading a completion's fields back from the stack failed the
    /// store-to-load forwarding (a field straddled two stores); inlined, they stay in
    /// registers (whole process 2-4% faster).
    #[inline(always)]
    fn handle<const PLAIN: bool>(&mut self, now: Nanos, event: Event) {
        match event {
            Event::Done { server, job } => self.done::<PLAIN>(now, server as usize, job),
            Event::Report => {
                for i in 0..self.servers.len() {
                    self.publish_load(i, now);
                }
                if let Some(dt) = self.report_every.filter(|_| now < self.to) {
                    self.events.push(now + dt, Event::Report);
                }
            }
            Event::ConnExpire { slot, generation } => {
                if matches!(&self.topology, Topology::Connections(c) if c.generation[slot as usize] == generation)
                {
                    self.close_connection(slot, now, Outcome::Ok);
                    self.open_connection(slot, now);
                }
            }
            Event::Fault { index, start } => self.fault(now, index as usize, start),
            Event::ProbeAtServer { slot } => self.probe_at_server(now, slot),
            Event::ProbeBack { slot } => self.probe_back(now, slot),
            Event::Policy {
                timer,
                slot,
                generation,
            } => self.policy_timer(now, timer, slot, generation),
            Event::ErrorReply { slot } => self.error_reply(now, slot),
            Event::Pause { server, fault } => self.pause(now, server as usize, fault as usize),
            Event::Member { server, step, arg } => {
                self.member_step(now, server as usize, step, arg);
            }
            Event::Reply { slot } => self.reply(now, slot),
            Event::Health { server, up } => {
                // A late health check never brings back a server that left.
                if up
                    && self
                        .members
                        .as_ref()
                        .is_some_and(|m| m.absent(server as usize))
                {
                    return;
                }
                self.set_view(server as usize, up, now);
            }
        }
    }

    fn measured(&self, t: Nanos) -> bool {
        t >= self.from && t < self.to
    }

    /// Counts a request arriving at `now` (with or without a client policy): in the
    /// measured window's arrivals and its phase, and in the tally. Returns whether it
    /// arrived inside the measured window.
    #[inline]
    fn count_arrival(&mut self, now: Nanos) -> bool {
        let measured = self.measured(now);
        self.m.arrived += u64::from(measured);
        if measured {
            self.m.phase_arrived(now);
        }
        if let Some(t) = &mut self.tally {
            t.arrived(now);
        }
        measured
    }

    fn arrival<const PLAIN: bool>(&mut self, now: Nanos, req: Request) {
        if !PLAIN && self.client.is_some() {
            return self.arrival_with_policy(now, req);
        }
        let measured = self.count_arrival(now);
        if let Some(t) = &mut self.tally {
            // Without a policy a request is its one attempt.
            t.attempt(now);
        }
        let (b, target) = match self.topology {
            _ if PLAIN => {
                let b = self.pick_balancer();
                (
                    b,
                    self.balancers[b].route_with(now, req.key, self.loads.as_ref()),
                )
            }
            Topology::Requests => {
                let b = self.pick_balancer();
                let target = self.balancers[b].route_with(now, req.key, self.loads.as_ref());
                self.send_probes(b, now);
                (b, target)
            }
            Topology::Connections(_) => self.connection_for(now),
        };
        let Some(i) = target else {
            if let Some(t) = &mut self.tally {
                t.ended(now, tally::End::Failed);
            }
            self.m.unroutable += u64::from(measured);
            if measured {
                self.m.phase_unserved(now);
            }
            return;
        };
        if !PLAIN && let Some(rejected) = self.answers_error(i) {
            return self.send_error(now, i, b, measured, rejected, None);
        }
        let work = req.size.work(&self.dists[self.servers[i].group]);
        let job = Job::sent(req.id, req.arrival, work, b as u32, measured, now);
        match self.offer(now, i, job) {
            Admission::Started(service) => {
                if let Some(s) = &mut self.signals {
                    s.started(i, service);
                }
            }
            Admission::Queued => {}
            Admission::Rejected => {
                self.m.rejected += u64::from(measured);
                if measured {
                    self.m.phase_unserved(now);
                }
                self.request_ended(b, i, Nanos::ZERO, Outcome::Rejected, now);
            }
            Admission::Down => {
                self.m.failed += u64::from(measured);
                if measured {
                    self.m.phase_unserved(now);
                }
                self.request_ended(b, i, Nanos::ZERO, Outcome::Failed, now);
                // At connection level the connection is broken: the client reconnects.
                self.connections_broken(i, now);
            }
        }
        if !PLAIN && self.exact_reports {
            self.publish_load(i, now);
        }
    }

    /// Offers `job` to server `i` at `now`: the server's busy and queue integrals advance,
    /// a job that starts has its completion scheduled, and one the server takes (started or
    /// queued) counts as a request of that server if measured. Shared by the one-attempt
    /// path ([`Sim::arrival`]), the policy path (`send_attempt`) and costed probes.
    #[inline]
    fn offer(&mut self, now: Nanos, i: usize, job: Job) -> Admission {
        let server = &mut self.servers[i];
        self.m.servers[i].advance(now, server.busy(), server.queued(), self.from, self.to);
        let admission = server.admit(job, now);
        if let Admission::Started(service) = admission {
            self.events.push(
                now + service,
                Event::Done {
                    server: i as u32,
                    job: job.id,
                },
            );
        }
        if let Admission::Started(_) | Admission::Queued = admission {
            self.m.servers[i].requests += u64::from(job.measured);
        }
        admission
    }

    /// A job left server `i` at `now` (finished or withdrawn), which held `before` (busy,
    /// queued) until then, and `next`, if any, started in its place: the server's integrals
    /// advance and `next`'s completion is scheduled. Returns `next`.
    #[inline]
    pub(super) fn job_left(
        &mut self,
        now: Nanos,
        i: usize,
        (busy, queued): (u32, u32),
        next: Option<(Job, Nanos)>,
    ) -> Option<(Job, Nanos)> {
        self.m.servers[i].advance(now, busy, queued, self.from, self.to);
        if let Some((next, service)) = next {
            self.events.push(
                now + service,
                Event::Done {
                    server: i as u32,
                    job: next.id,
                },
            );
        }
        next
    }

    /// The load server `i` reports on its answer to `job` reaches balancer `b` at `now`,
    /// if strategies read loads carried on replies (before the completion, on both paths).
    pub(super) fn reply_load(&mut self, b: usize, i: usize, job: &Job, now: Nanos) {
        if let Some(load) = self.load_on_reply(i, job) {
            self.balancers[b].reply_load(i, &load, now);
        }
    }

    /// The load server `i` reports on its answer to `job`, if strategies read loads
    /// carried on replies.
    #[inline]
    fn load_on_reply(&self, i: usize, job: &Job) -> Option<ServerLoad> {
        let s = self.signals.as_ref().filter(|s| s.reply_loads)?;
        let server = &self.servers[i];
        Some(s.load(
            i,
            server.workers,
            server.busy(),
            server.queued(),
            Some(job.end - job.start),
        ))
    }

    /// Server `i` finished job `id`: its busy and queue integrals advance and its next job,
    /// if any, starts. Returns the finished job, or `None` when nothing ends: a completion
    /// scheduled before a crash or a cancellation finds nothing, and a probe cost only
    /// server time (its load is then published). Shared by the one-attempt path
    /// ([`Sim::done`]) and the policy path (`attempt_done`).
    #[inline]
    fn finish_job(&mut self, now: Nanos, i: usize, id: u64) -> Option<Job> {
        self.finish_job_as::<false>(now, i, id)
    }

    /// [`Sim::finish_job`] on the path for plain runs or the general one (see
    /// [`Sim::plain`]).
    #[inline(always)]
    fn finish_job_as<const PLAIN: bool>(&mut self, now: Nanos, i: usize, id: u64) -> Option<Job> {
        let server = &mut self.servers[i];
        let before = (server.busy(), server.queued());
        let (finished, next) = server.finish(id, now);
        let job = finished?;
        if let Some((next, service)) = self.job_left(now, i, before, next) {
            if !PLAIN
                && next.id < PROBE_JOB_BASE
                && let Some(c) = self.client.as_mut()
            {
                c.started_from_queue(next.id);
            }
            // Service times feed the signals' estimates (on every path: the policy path's
            // attempts are requests to their servers).
            if let Some(s) = &mut self.signals
                && next.id < PROBE_JOB_BASE
            {
                s.started(i, service);
            }
        }
        if PLAIN {
            return Some(job);
        }
        self.shed_jobs(now, i);
        if self.members.is_some() {
            self.drained_if_empty(now, i);
        }
        if job.id >= PROBE_JOB_BASE {
            if self.exact_reports {
                self.publish_load(i, now);
            }
            return None;
        }
        Some(job)
    }

    /// Answers the requests server `i` just dropped by admission control
    /// (`[servers.admission]`): each is refused at once, its wait counting in the latency
    /// its balancer sees (a shedding server answers "overloaded" when it dequeues the
    /// request); under a policy the attempt is refused and may be retried.
    #[inline]
    fn shed_jobs(&mut self, now: Nanos, i: usize) {
        if !self.servers[i].shed.is_empty() {
            self.answer_shed(now, i);
        }
    }

    /// [`Sim::shed_jobs`] once server `i` dropped some: kept out of line, as most runs
    /// have no admission control and every completion asks.
    #[inline(never)]
    fn answer_shed(&mut self, now: Nanos, i: usize) {
        let mut shed = std::mem::take(&mut self.servers[i].shed);
        for job in shed.drain(..) {
            // A probe's cost is nobody's request.
            if job.id >= PROBE_JOB_BASE {
                continue;
            }
            self.m.shed += u64::from(job.measured);
            if self.client.is_some() {
                self.attempt_shed(now, job.id);
                continue;
            }
            self.m.rejected += u64::from(job.measured);
            if job.measured {
                self.m.phase_unserved(job.arrival);
            }
            let latency = now - job.arrival;
            self.request_ended(job.balancer as usize, i, latency, Outcome::Rejected, now);
        }
        if self.servers[i].shed.is_empty() {
            // Keep the buffer's allocation for the next drops.
            self.servers[i].shed = shed;
        }
    }

    fn done<const PLAIN: bool>(&mut self, now: Nanos, i: usize, id: u64) {
        if !PLAIN && self.client.is_some() {
            return self.attempt_done(now, i, id);
        }
        let Some(job) = self.finish_job_as::<PLAIN>(now, i, id) else {
            return;
        };
        if PLAIN {
            return self.served_as::<true>(now, i, job);
        }
        let delay = self.servers[i].delay;
        if delay != Nanos::ZERO {
            self.delay_reply(now, i, job, delay);
            if self.exact_reports {
                self.publish_load(i, now);
            }
            return;
        }
        self.served(now, i, job);
    }

    /// The answer to `job`, served by server `i`, reaches its client (no client policy).
    fn served(&mut self, now: Nanos, i: usize, job: Job) {
        self.served_as::<false>(now, i, job);
    }

    /// [`Sim::served`] on the path for plain runs or the general one (see [`Sim::plain`]).
    #[inline(always)]
    fn served_as<const PLAIN: bool>(&mut self, now: Nanos, i: usize, job: Job) {
        let mut latency = now - job.arrival;
        if !PLAIN {
            // Plus live mode's calibrated round trip (0 for scenarios read from files).
            latency += self.extra_latency.get(i).copied().unwrap_or_default();
        }
        if job.measured {
            self.m
                .record_served(i, job.arrival, latency, job.start - job.arrival);
        }
        if PLAIN {
            if let Some(t) = &mut self.tally {
                t.ended(now, Outcome::Ok.into());
            }
            // The reply's load before the completion, as on the general path (a plain
            // run's topology is request-level), in one call.
            let load = self.load_on_reply(i, &job);
            let b = &mut self.balancers[job.balancer as usize];
            match load {
                Some(load) => b.complete_with_load(i, &load, latency, Outcome::Ok, now),
                None => b.complete(i, latency, Outcome::Ok, now),
            }
            return;
        }
        if let Topology::Requests = self.topology {
            // Two calls, not the plain path's one (`Balancer::complete_with_load`): one
            // measured slower here (9 alternating pairs: C3 indexed 1.02x with a slow
            // fault, round robin, which never takes it, 1.01–1.04x).
            self.reply_load(job.balancer as usize, i, &job, now);
        }
        self.request_ended(job.balancer as usize, i, latency, Outcome::Ok, now);
        if self.exact_reports {
            self.publish_load(i, now);
        }
    }

    /// Models live mode's calibrated overheads (before the run: no service has started).
    /// No extra latency anywhere (every run of a scenario file) leaves
    /// [`Sim::extra_latency`] empty, so the run stays plain.
    fn calibrate(&mut self, o: &Overheads) {
        for (i, s) in self.servers.iter_mut().enumerate() {
            s.set_overhead(o.service(i));
        }
        let extra: Vec<Nanos> = (0..self.servers.len())
            .map(|i| Nanos::from_secs_f64(o.extra_latency(i)))
            .collect();
        self.extra_latency = if extra.iter().all(|&e| e == Nanos::ZERO) {
            Vec::new()
        } else {
            extra
        };
        self.plain = self.is_plain();
    }

    /// Whether server `i`, in an `error` fault, answers the request it is offered with an
    /// error: `Some(refusal?)`, or `None` to serve it. A crashed server refuses first.
    #[inline]
    fn answers_error(&mut self, i: usize) -> Option<bool> {
        let server = &self.servers[i];
        let (fraction, _, rejected) = server.error.filter(|_| !server.down)?;
        (fraction >= 1.0 || open_unit(self.fault_rng.random::<u64>()) < fraction)
            .then_some(rejected)
    }

    /// Server `i` answers a request with an error, which reaches its client after the
    /// fault's `error_latency`.
    fn send_error(
        &mut self,
        now: Nanos,
        i: usize,
        balancer: usize,
        measured: bool,
        rejected: bool,
        attempt: Option<(u32, u32)>,
    ) {
        let latency = self.servers[i].error.map_or(Nanos::ZERO, |e| e.1) + self.servers[i].delay;
        let pending = PendingError {
            server: i as u32,
            balancer: balancer as u32,
            measured,
            sent: now,
            rejected,
            attempt,
        };
        let slot = match self.free_errors.pop() {
            Some(k) => {
                self.errors[k as usize] = pending;
                k
            }
            None => {
                self.errors.push(pending);
                (self.errors.len() - 1) as u32
            }
        };
        self.events.push(now + latency, Event::ErrorReply { slot });
    }

    /// An error answer reaches its client.
    fn error_reply(&mut self, now: Nanos, slot: u32) {
        let e = self.errors[slot as usize];
        self.free_errors.push(slot);
        let (i, b) = (e.server as usize, e.balancer as usize);
        if self.client.is_some() {
            return self.attempt_error(now, e.attempt, e.rejected);
        }
        let outcome = if e.rejected {
            self.m.rejected += u64::from(e.measured);
            Outcome::Rejected
        } else {
            self.m.failed += u64::from(e.measured);
            Outcome::Failed
        };
        if e.measured {
            // Without a policy the error is sent as the request arrives.
            self.m.phase_unserved(e.sent);
        }
        self.request_ended(b, i, now - e.sent, outcome, now);
    }

    /// Server `i` starts a pause of fault `index` (if the fault still lasts), and the
    /// next one is scheduled.
    fn pause(&mut self, now: Nanos, i: usize, index: usize) {
        let fault = &self.scenario.faults[index];
        let until = fault
            .until
            .map_or(self.to, |u| Nanos::from_secs_f64(u).min(self.to));
        let Some((interval, length)) = &fault.pauses else {
            return;
        };
        if now >= until {
            return;
        }
        let length =
            Nanos::from_secs_f64(length.quantile(open_unit(self.fault_rng.random::<u64>())));
        let server = &mut self.servers[i];
        // Busy time integrates up to the pause; the workers stay held through it.
        self.m.servers[i].advance(now, server.busy(), server.queued(), self.from, self.to);
        for (job, end) in server.pause(now, length) {
            self.events.push(
                end,
                Event::Done {
                    server: i as u32,
                    job,
                },
            );
        }
        let next = now
            + length
            + Nanos::from_secs_f64(interval.quantile(open_unit(self.fault_rng.random::<u64>())));
        if next < until {
            self.events.push(
                next,
                Event::Pause {
                    server: i as u32,
                    fault: index as u32,
                },
            );
        }
    }

    fn publish_load(&mut self, i: usize, now: Nanos) {
        if let Some(t) = &mut self.loads {
            t.publish(i, self.servers[i].report(now));
        }
    }

    fn fault(&mut self, now: Nanos, index: usize, start: bool) {
        let fault = &self.scenario.faults[index];
        let detection = Nanos::from_secs_f64(fault.detection);
        for &i in &fault.servers {
            let server = &mut self.servers[i];
            self.m.servers[i].advance(now, server.busy(), server.queued(), self.from, self.to);
            match (fault.kind, start) {
                (FaultKind::Slow, true) => server.speed = self.base_speed[i] / fault.factor,
                (FaultKind::Slow, false) => server.speed = self.base_speed[i],
                (FaultKind::Crash, true) => {
                    self.crash(now, i);
                    self.connections_broken(i, now);
                    self.events.push(
                        now + detection,
                        Event::Health {
                            server: i as u32,
                            up: false,
                        },
                    );
                }
                (FaultKind::Error | FaultKind::Unreachable, true) => {
                    server.error = fault.error.map(|e| {
                        (
                            e.fraction,
                            Nanos::from_secs_f64(e.latency),
                            e.status == ErrorStatus::Rejected,
                        )
                    });
                    if fault.kind == FaultKind::Unreachable {
                        // Health checks fail too: balancers see it down after `detection`.
                        self.events.push(
                            now + detection,
                            Event::Health {
                                server: i as u32,
                                up: false,
                            },
                        );
                    }
                }
                (FaultKind::Error, false) => server.error = None,
                (FaultKind::Unreachable, false) => {
                    server.error = None;
                    self.events.push(
                        now + detection,
                        Event::Health {
                            server: i as u32,
                            up: true,
                        },
                    );
                }
                (FaultKind::Pause, true) => {
                    if let Some((interval, _)) = &fault.pauses {
                        let first = Nanos::from_secs_f64(
                            interval.quantile(open_unit(self.fault_rng.random::<u64>())),
                        );
                        self.events.push(
                            now + first,
                            Event::Pause {
                                server: i as u32,
                                fault: index as u32,
                            },
                        );
                    }
                }
                (FaultKind::Pause, false) => {}
                (FaultKind::Crash, false) => {
                    server.recover(now);
                    if let Some(c) = fault.cold {
                        server.set_warm(Warmup::new(now, c.warmup, c.fraction));
                    }
                    // A server that left meanwhile stays out.
                    if self.members.as_ref().is_some_and(|m| m.absent(i)) {
                        server.down = true;
                    } else {
                        self.events.push(
                            now + detection,
                            Event::Health {
                                server: i as u32,
                                up: true,
                            },
                        );
                    }
                }
                (
                    FaultKind::Cold
                    | FaultKind::Join
                    | FaultKind::Leave
                    | FaultKind::Deploy
                    | FaultKind::Delay,
                    _,
                ) => {
                    self.membership_fault(now, index, i, start);
                }
            }
            if self.exact_reports {
                self.publish_load(i, now);
            }
        }
    }

    /// Server `i` crashes (or is killed) at `now`: every request it holds is lost, and probe
    /// work, nobody's request, is dropped with it.
    fn crash(&mut self, now: Nanos, i: usize) {
        let lost: Vec<Job> = self.servers[i]
            .crash(now)
            .into_iter()
            .filter(|j| j.id < PROBE_JOB_BASE)
            .collect();
        if self.client.is_some() {
            self.attempts_lost(now, i, lost);
        } else {
            self.requests_lost(now, i, lost);
        }
    }

    /// Requests held by server `i` when it crashed (no client policy): each fails.
    fn requests_lost(&mut self, now: Nanos, i: usize, lost: Vec<Job>) {
        for job in lost {
            self.m.failed += u64::from(job.measured);
            if job.measured {
                self.m.phase_unserved(job.arrival);
            }
            self.request_ended(
                job.balancer as usize,
                i,
                now - job.arrival,
                Outcome::Failed,
                now,
            );
        }
    }

    /// The balancer an arriving request goes through (request level): chosen uniformly
    /// when there are several.
    #[inline]
    fn pick_balancer(&mut self) -> usize {
        if self.balancers.len() == 1 {
            0
        } else {
            self.routing.random_range(0..self.balancers.len())
        }
    }

    /// Tells balancer `b` that a request it sent to server `i` ended — at request level
    /// only: at connection level balancers see connections, not requests.
    #[inline]
    fn request_ended(&mut self, b: usize, i: usize, latency: Nanos, outcome: Outcome, now: Nanos) {
        if let Some(t) = &mut self.tally {
            t.ended(now, outcome.into());
        }
        if let Topology::Requests = self.topology {
            self.balancers[b].complete(i, latency, outcome, now);
        }
    }

    /// The connection a client's next request uses: (balancer, server).
    fn connection_for(&mut self, now: Nanos) -> (usize, Option<usize>) {
        let Topology::Connections(conns) = &mut self.topology else {
            unreachable!("connection_for is called at connection level only")
        };
        let client = self.routing.random_range(0..conns.next.len());
        let k = conns.next[client];
        conns.next[client] = (k + 1) % conns.pool;
        let slot = client as u32 * conns.pool + k;
        if conns.server[slot as usize].is_none() {
            self.open_connection(slot, now);
        }
        let b = client % self.balancers.len();
        let server = match &self.topology {
            Topology::Connections(c) => c.server[slot as usize],
            Topology::Requests => None,
        };
        (b, server)
    }

    fn open_connection(&mut self, slot: u32, now: Nanos) {
        let Topology::Connections(conns) = &mut self.topology else {
            return;
        };
        let client = (slot / conns.pool) as usize;
        let b = client % self.balancers.len();
        // The key of a connection is its slot: hashing strategies pin clients to servers.
        let server = self.balancers[b].route_with(now, u64::from(slot), self.loads.as_ref());
        self.send_probes(b, now);
        let Topology::Connections(conns) = &mut self.topology else {
            return;
        };
        conns.server[slot as usize] = server;
        conns.opened[slot as usize] = now;
        conns.generation[slot as usize] += 1;
        let generation = conns.generation[slot as usize];
        if let (Some(_), Some(mean)) = (server, conns.lifetime) {
            let life =
                -mean * (-crate::workload::dist::open_unit(conns.rng.random::<u64>())).ln_1p();
            // Connections stop churning once arrivals have stopped, so the run drains.
            if now < self.to {
                self.events.push(
                    now + Nanos::from_secs_f64(life),
                    Event::ConnExpire { slot, generation },
                );
            }
        }
    }

    fn close_connection(&mut self, slot: u32, now: Nanos, outcome: Outcome) {
        let Topology::Connections(conns) = &mut self.topology else {
            return;
        };
        let client = (slot / conns.pool) as usize;
        let b = client % self.balancers.len();
        if let Some(i) = conns.server[slot as usize].take() {
            let age = now - conns.opened[slot as usize];
            self.balancers[b].complete(i, age, outcome, now);
        }
    }

    /// At connection level, closes every connection to server `i` (it crashed); they
    /// reopen on next use. Nothing at request level.
    fn connections_broken(&mut self, i: usize, now: Nanos) {
        let Topology::Connections(conns) = &self.topology else {
            return;
        };
        let broken: Vec<u32> = (0..conns.server.len() as u32)
            .filter(|&s| conns.server[s as usize] == Some(i))
            .collect();
        for slot in broken {
            self.close_connection(slot, now, Outcome::Failed);
        }
    }

    /// Sends the probes balancer `b`'s strategy asked for: each reaches its server after
    /// half the round trip.
    #[inline]
    fn send_probes(&mut self, b: usize, now: Nanos) {
        if self.signals.as_ref().is_some_and(|s| s.probes) {
            self.send_probes_now(b, now);
        }
    }

    /// [`Sim::send_probes`] for a strategy that probes: kept out of line, as most do not
    /// and every pick asks.
    #[inline(never)]
    fn send_probes_now(&mut self, b: usize, now: Nanos) {
        let Some(s) = self.signals.as_mut().filter(|s| s.probes) else {
            return;
        };
        let mut asked = std::mem::take(&mut s.asked);
        self.balancers[b].take_probes(now, &mut asked);
        let measured = now >= self.from && now < self.to;
        if s.at_once() {
            self.hold_send(b, now, &asked, measured);
            asked.clear();
            if let Some(s) = &mut self.signals {
                s.asked = asked;
            }
            return;
        }
        // One event for the chain of the probes sent (each its own event when eager).
        let eager = s.eager();
        let (mut first, mut last) = (NO_SLOT, NO_SLOT);
        for &i in &asked {
            if i < self.servers.len() {
                let slot = s.send(b, i, now, NO_SLOT);
                if eager {
                    self.events
                        .push_fifo(now + s.half_delay, Event::ProbeAtServer { slot });
                } else if last == NO_SLOT {
                    first = slot;
                } else {
                    s.get_mut(last).next = slot;
                }
                last = slot;
                self.m.probes += u64::from(measured);
            }
        }
        // Every probe leg takes the same half delay: the FIFO serves them.
        if first != NO_SLOT {
            self.events
                .push_fifo(now + s.half_delay, Event::ProbeAtServer { slot: first });
        }
        asked.clear();
        s.asked = asked;
    }

    /// Holds balancer `b`'s probes of the servers `asked` aside, keyed as their event
    /// would be ([`Signals::hold_send`]): a send held before becomes its event first.
    fn hold_send(&mut self, b: usize, now: Nanos, asked: &[usize], measured: bool) {
        self.send_to_events();
        let Some(s) = &mut self.signals else {
            return;
        };
        let n = self.servers.len();
        // One pass (an iterator filtered twice, then copied, cost as much again).
        let to = s.send_buffer();
        for &i in asked {
            if let Some(server) = self.servers.get(i) {
                // Read now what the servers will answer with, to have it in cache then:
                // at many servers, waiting for it was most of an answer.
                std::hint::black_box((server.down, server.busy(), server.queued()));
                to.push(i as u32);
            }
        }
        debug_assert!(to.iter().all(|&i| (i as usize) < n));
        let probes = to.len();
        self.m.probes += probes as u64 * u64::from(measured);
        if probes == 0 {
            return;
        }
        s.hold_filled(Send {
            balancer: b as u32,
            sent: now,
            seq: self.events.reserve_seq(),
        });
    }

    /// The send held aside, if any, becomes its event (a chain of slots), keyed as it
    /// would have been when sent.
    #[cold]
    fn send_to_events(&mut self) {
        let Some(s) = &mut self.signals else {
            return;
        };
        let Some((send, servers)) = s.take_send() else {
            return;
        };
        let mut first = NO_SLOT;
        // Slots chained from the last: the chain runs in the order sent.
        for &i in servers.iter().rev() {
            first = s.send(send.balancer as usize, i as usize, send.sent, first);
        }
        s.give_back(servers);
        let due = send.sent + s.half_delay;
        self.events
            .push_fifo_keyed(due, send.seq, Event::ProbeAtServer { slot: first });
    }

    /// [`Sim::next_event`] with a send held aside: if the next event scheduled is due
    /// later, the send's event would have run next and its answers have been handed
    /// over before that next event (after any answer held, due earlier): the servers
    /// answer and the balancer gets the answers now, taking the sequence numbers the
    /// answers would have taken. Otherwise the send becomes its event.
    #[inline(never)]
    fn send_held(&mut self) -> Option<(bool, Nanos)> {
        let next = self.next_scheduled();
        let sent = self
            .signals
            .as_ref()
            .and_then(Signals::held_send)
            .map(|x| x.sent);
        if next.zip(sent).is_some_and(|((_, t), sent)| t <= sent) {
            self.send_to_events();
            return self.next_scheduled();
        }
        if self.signals.as_ref().is_some_and(Signals::has_replies) {
            self.replies_before_next();
        }
        let Some(s) = &mut self.signals else {
            return next;
        };
        let Some((send, servers)) = s.take_send() else {
            return next;
        };
        // The answers, handed over in one call (a call per answer cost each probe its
        // dispatch and the strategy's checks again).
        s.answers.clear();
        for &i in &servers {
            let server = &self.servers[i as usize];
            if server.down {
                continue;
            }
            let load = s.load(
                i as usize,
                server.workers,
                server.busy(),
                server.queued(),
                None,
            );
            s.answers.push((i as usize, load));
        }
        self.balancers[send.balancer as usize].probe_answers(&s.answers, send.sent, send.sent);
        s.give_back(servers);
        self.events.skip_seqs(s.answers.len() as u64);
        next
    }

    /// Probe `slot` and the probes of its chain reach their servers, in the order sent:
    /// each server answers (unless it is down: then the answer never comes) and, if probes
    /// cost server time, queues that work.
    fn probe_at_server(&mut self, now: Nanos, mut slot: u32) {
        while slot != NO_SLOT {
            let Some(s) = self.signals.as_mut() else {
                return;
            };
            let next = s.get_mut(slot).next;
            self.probe_reaches_server(now, slot);
            slot = next;
        }
    }

    /// Probe `slot` reaches its server (see [`Sim::probe_at_server`]): its answer is held
    /// until due ([`Sim::replies_before_next`]), keyed by a sequence number taken now,
    /// where its event would have been scheduled.
    #[inline]
    fn probe_reaches_server(&mut self, now: Nanos, slot: u32) {
        let Some(s) = self.signals.as_mut() else {
            return;
        };
        let p = *s.get_mut(slot);
        let i = p.server as usize;
        let server = &mut self.servers[i];
        if server.down {
            s.release(slot);
            return;
        }
        s.get_mut(slot).answer = s.load(i, server.workers, server.busy(), server.queued(), None);
        let due = now + s.half_delay;
        if s.eager() {
            self.events.push_fifo(due, Event::ProbeBack { slot });
        } else {
            s.hold_reply((due, self.events.reserve_seq()), slot);
        }
        if s.cost > 0.0 {
            let job = Job {
                id: s.job_id(),
                arrival: now,
                work: s.cost,
                balancer: p.balancer,
                measured: false,
                start: now,
                end: now,
            };
            // A probe is never measured: it counts as no request of the server.
            self.offer(now, i, job);
            if self.exact_reports {
                self.publish_load(i, now);
            }
        }
    }

    /// The answer to probe `slot` reaches its balancer at `now`.
    fn probe_back(&mut self, now: Nanos, slot: u32) {
        if let Some(s) = &mut self.signals {
            let p = s.release(slot);
            self.balancers[p.balancer as usize].probe_answer(
                p.server as usize,
                &p.answer,
                p.sent,
                now,
            );
        }
    }

    /// Hands each balancer the answers due strictly before the next event (all of them
    /// when no event is left), in order: what the strategies see is as if each answer
    /// were an event of its own (see [`super::probe`]). Answers schedule nothing, so the
    /// next event stays the next one.
    #[inline(never)]
    fn replies_before_next(&mut self) {
        let next = match (&self.pending, self.events.peek_key()) {
            (Some((t, seq, _)), Some(key)) if (*t, *seq) < key => Some((*t, *seq)),
            (Some((t, seq, _)), None) => Some((*t, *seq)),
            (_, key) => key,
        };
        while let Some((at, slot)) = self.signals.as_mut().and_then(|s| s.reply_due(next)) {
            self.probe_back(at, slot);
        }
    }

    fn finish(mut self) -> RunMetrics {
        // Answers still on their way when the events ran out (a trace stops at the last
        // event): delivered as their events would have been.
        if self.signals.as_ref().is_some_and(Signals::has_replies) {
            self.replies_before_next();
        }
        if self.client.is_none() {
            // One attempt per request without a policy.
            self.m.client.attempts = self.m.arrived;
        }
        for (acc, s) in self.m.servers.iter_mut().zip(&self.servers) {
            acc.advance(self.to, s.busy(), s.queued(), self.from, self.to);
        }
        self.m.flush();
        self.m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{exponential, kinds, scenario, servers};

    /// Runs replication 0 of every strategy of `s` on the path `plain` says (a plain run
    /// may take either; any other must take the general one), with a trace when `every`
    /// is given: what was measured and the trace, as text.
    fn run_on_path(s: &Scenario, plain: bool, every: Option<Nanos>) -> Vec<String> {
        s.strategies
            .iter()
            .map(|entry| {
                let mut sim = Sim::new(s, &entry.spec, entry.policy.as_ref(), 0, 7);
                assert!(sim.plain || !plain, "{}: not a plain run", entry.label());
                sim.plain = plain;
                let trace = every.map(|every| {
                    let spec = TraceSpec {
                        every,
                        servers: (0..s.servers().len()).collect(),
                    };
                    record(&mut sim, &spec, &Cancel::default()).expect("not cancelled")
                });
                if every.is_none() {
                    assert!(sim.run(&Cancel::default()));
                }
                format!("{:?}\n{trace:?}", sim.finish())
            })
            .collect()
    }

    /// The path specialised for plain runs measures exactly what the general path does:
    /// every metric, histogram and trace sample, for strategies that read in-flight
    /// counts, load reports on an interval and latencies, with one and two balancers,
    /// queues full and not.
    #[test]
    fn the_plain_path_is_the_general_path() {
        let cluster = servers("fast", 3, "workers = 2\nspeed = 2", &exponential(0.004))
            + &servers("slow", 5, "queue_capacity = 3", &exponential(0.004));
        let strategies = [
            "round_robin",
            "random",
            "power_of_d",
            "least_connections",
            "peak_ewma",
            "c3",
        ];
        for (head, reports) in [
            ("duration = 3\nwarmup = 0.5", ""),
            // Load reports read on an interval (exact ones are not a plain run).
            (
                "duration = 3\nwarmup = 0.5\nbalancers = 2\nload_report_interval = 0.01",
                "jsq",
            ),
        ] {
            let mut kinds_here = strategies.to_vec();
            kinds_here.extend([reports].iter().filter(|k| !k.is_empty()));
            let s = scenario(head, 2_500.0, &(cluster.clone() + &kinds(&kinds_here)));
            for every in [None, Some(Nanos::from_secs_f64(0.1))] {
                let general = run_on_path(&s, false, every);
                let plain = run_on_path(&s, true, every);
                for ((g, p), entry) in general.iter().zip(&plain).zip(&s.strategies) {
                    assert!(g == p, "{head}, {}, trace {every:?}", entry.label());
                }
            }
        }
    }

    /// A strategy that writes down every call it gets (arguments, view and answer), in
    /// front of the strategy it wraps.
    struct Logged {
        inner: Box<dyn crate::strategy::Strategy>,
        log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
        id: usize,
    }

    impl Logged {
        fn note(&self, line: String) {
            self.log
                .lock()
                .expect("not poisoned")
                .push(format!("{} {line}", self.id));
        }
    }

    /// Runs `entry` of `s` with every balancer's strategy [`Logged`], after `setup` sets
    /// the run up: every call the strategies got, and the run's metrics.
    fn logged_run(
        s: &Scenario,
        entry: &crate::strategy::StrategyEntry,
        seed: u64,
        setup: impl FnOnce(&mut Sim),
    ) -> (Vec<String>, RunMetrics) {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let count = std::sync::atomic::AtomicUsize::new(0);
        let factory = |n: usize, rng: SimRng| {
            Box::new(Logged {
                inner: entry.spec.build(n, rng),
                log: log.clone(),
                id: count.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            }) as Box<dyn crate::strategy::Strategy>
        };
        let mut sim = Sim::new(s, &factory, entry.policy.as_ref(), 0, seed);
        setup(&mut sim);
        assert!(sim.run(&Cancel::default()));
        let metrics = sim.finish();
        let log = std::mem::take(&mut *log.lock().expect("not poisoned"));
        (log, metrics)
    }

    /// Whether two runs measured the same, every field.
    fn same_metrics(a: &RunMetrics, b: &RunMetrics) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    /// Picks by key, and writes down every key it is told ahead and every key it picks
    /// for; reads ahead when `reads` says so.
    struct Told {
        reads: bool,
        told: std::sync::Arc<std::sync::Mutex<(Vec<u64>, Vec<u64>)>>,
    }

    impl crate::strategy::Strategy for Told {
        fn pick(
            &mut self,
            backends: &crate::strategy::Backends,
            ctx: &crate::strategy::PickContext<'_>,
        ) -> Option<usize> {
            self.told.lock().expect("not poisoned").1.push(ctx.key);
            Some(ctx.key as usize % backends.len())
        }
        fn reads_ahead(&self) -> bool {
            self.reads
        }
        fn upcoming(&mut self, key: u64) {
            self.told.lock().expect("not poisoned").0.push(key);
        }
    }

    /// A strategy that reads ahead is told each request's key [`LOOKAHEAD`] arrivals
    /// before its pick, and every key once (but the first [`LOOKAHEAD`]); drawing the
    /// arrivals ahead changes nothing the run measures (evenly spaced arrivals and fixed
    /// service times, so that arrivals and completions fall at the same instants and
    /// their order is the events' scheduling order), with faults and without. With two
    /// balancers nothing is told.
    #[test]
    fn keys_are_told_lookahead_arrivals_ahead_and_change_nothing() {
        let service = "{ dist = \"deterministic\", value = 0.002 }";
        let cluster = servers("s", 4, "", service) + &servers("extra", 2, "", service);
        for (balancers, faults) in [(1, ""), (1, COMING_BACK), (2, "")] {
            let text = format!(
                "duration = 2\nwarmup = 0.5\nbalancers = {balancers}\n\
                 [arrivals]\nprocess = \"deterministic\"\nrate = 1000\n\
                 [keys]\ndist = \"uniform\"\ncount = 1000\n{cluster}{faults}\
                 [[strategies]]\nkind = \"round_robin\"\n"
            );
            let s = Scenario::from_source(std::path::Path::new("t.toml"), &text)
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            let run = |reads: bool| {
                let told = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), Vec::new())));
                let factory = |_n: usize, _rng: SimRng| {
                    Box::new(Told {
                        reads,
                        told: told.clone(),
                    }) as Box<dyn crate::strategy::Strategy>
                };
                let mut sim = Sim::new(&s, &factory, None, 0, 3);
                assert!(sim.run(&Cancel::default()));
                let metrics = sim.finish();
                let told = std::mem::take(&mut *told.lock().expect("not poisoned"));
                (metrics, told)
            };
            let (ahead, (told, picked)) = run(true);
            let (not, (never, picked_not)) = run(false);
            assert!(same_metrics(&ahead, &not), "{balancers} balancers {faults}");
            assert_eq!(picked, picked_not);
            assert!(never.is_empty());
            if balancers > 1 {
                assert!(told.is_empty());
                continue;
            }
            assert!(picked.len() > 1_000, "{}", picked.len());
            assert_eq!(told, picked[LOOKAHEAD..], "{faults}");
        }
    }

    impl crate::strategy::Strategy for Logged {
        fn pick(
            &mut self,
            backends: &crate::strategy::Backends,
            ctx: &crate::strategy::PickContext<'_>,
        ) -> Option<usize> {
            let got = self.inner.pick(backends, ctx);
            let view: Vec<_> = (0..backends.len())
                .map(|i| (backends.in_flight(i), backends.up(i)))
                .collect();
            self.note(format!("pick {:?} {view:?} -> {got:?}", ctx.now));
            got
        }
        fn on_dispatch(&mut self, backend: usize, now: Nanos) {
            self.note(format!("dispatch {backend} {now:?}"));
            self.inner.on_dispatch(backend, now);
        }
        fn on_complete(&mut self, backend: usize, latency: Nanos, outcome: Outcome, now: Nanos) {
            self.note(format!(
                "complete {backend} {latency:?} {outcome:?} {now:?}"
            ));
            self.inner.on_complete(backend, latency, outcome, now);
        }
        fn indexes_view(&self) -> bool {
            self.inner.indexes_view()
        }
        fn indexes_in_flight(&self) -> bool {
            self.inner.indexes_in_flight()
        }
        fn on_view(&mut self, backend: usize, view: &crate::strategy::Backend) {
            self.note(format!("view {backend} {view:?}"));
            self.inner.on_view(backend, view);
        }
        fn signals(&self) -> crate::strategy::Signals {
            self.inner.signals()
        }
        fn on_reply_load(
            &mut self,
            backend: usize,
            load: &crate::strategy::ServerLoad,
            now: Nanos,
        ) {
            self.note(format!("reply {backend} {load:?} {now:?}"));
            self.inner.on_reply_load(backend, load, now);
        }
        fn probes(&mut self, now: Nanos, out: &mut Vec<usize>) {
            let from = out.len();
            self.inner.probes(now, out);
            self.note(format!("probes {now:?} {:?}", &out[from..]));
        }
        fn on_probe(
            &mut self,
            backend: usize,
            load: &crate::strategy::ServerLoad,
            sent: Nanos,
            now: Nanos,
        ) {
            self.note(format!("answer {backend} {load:?} {sent:?} {now:?}"));
            self.inner.on_probe(backend, load, sent, now);
        }
        /// Written down as answers in turn, handed over together: the strategy's picks
        /// compare its batch (Prequal's) with its answers in turn (the eager engine's).
        fn on_probes(
            &mut self,
            answers: &[(usize, crate::strategy::ServerLoad)],
            sent: Nanos,
            now: Nanos,
        ) {
            for (backend, load) in answers {
                self.note(format!("answer {backend} {load:?} {sent:?} {now:?}"));
            }
            self.inner.on_probes(answers, sent, now);
        }
        fn set_slow_start(&mut self, ramp: Ramp) -> bool {
            let applied = self.inner.set_slow_start(ramp);
            self.note(format!("slow start {ramp:?} -> {applied}"));
            applied
        }
        fn on_available(&mut self, backend: usize, now: Nanos) {
            self.note(format!("available {backend} {now:?}"));
            self.inner.on_available(backend, now);
        }
    }

    /// Probe legs sent together run as one event and answers wait outside the event
    /// queue, yet every strategy gets exactly the calls it got when each leg and each
    /// answer was an event of its own: the same calls with the same arguments (answers'
    /// times and loads, picks' views and results) in the same order, and the run measures
    /// the same, on random clusters, balancers, probe delays and costs, crashes and
    /// client policies. Some runs are on a lattice (evenly spaced arrivals, services and
    /// probe legs whole multiples of the gap), where many legs, answers and events fall
    /// on the same nanosecond and only their sequence numbers order them. With no delay
    /// and no cost, sends are answered at once, their answers handed over together
    /// ([`crate::strategy::Strategy::on_probes`], Prequal's batch; [`Logged`] writes
    /// them down one by one).
    #[test]
    fn probes_batched_and_answers_held_change_nothing_a_strategy_sees() {
        use proptest::prelude::*;
        let config = ProptestConfig {
            cases: 48,
            ..ProptestConfig::default()
        };
        proptest!(config, |(
            n in 1u32..7,
            workers in 1u32..3,
            balancers in 1u32..4,
            delay in prop_oneof![Just(0.0), 0.0001f64..0.003],
            cost in prop_oneof![Just(0.0), 0.0001f64..0.002],
            load in 0.3f64..1.3,
            pool in 1usize..20,
            rate in prop_oneof![Just(3.0), 0.5f64..4.0],
            crash in any::<bool>(),
            policy in any::<bool>(),
            lattice in any::<bool>(),
            seed in 0u64..1000,
        )| {
            let (mut mean, mut service, mut delay) = (0.002, exponential(0.002), delay);
            if lattice {
                // Arrivals every 0.5 ms, services a multiple of it near the load asked.
                let gap = 0.0005;
                mean = gap * (load * f64::from(n * workers)).round().max(1.0);
                service = format!("{{ dist = \"deterministic\", value = {mean} }}");
                delay = if delay == 0.0 { 0.0 } else { 2.0 * gap };
            }
            let mut rest = servers("s", n, &format!("workers = {workers}\nqueue_capacity = 8"), &service);
            rest += &format!("[probes]\ndelay = {delay}\ncost = {cost}\n");
            rest += &format!("[[strategies]]\nkind = \"prequal\"\npool_size = {pool}\nprobe_rate = {rate}\n");
            if policy {
                rest += "[strategies.policy]\ntimeout = 0.02\nper_try_timeout = 0.004\n[strategies.policy.retry]\nmax_attempts = 2\n";
            }
            if crash {
                rest += "[[faults]]\nserver = \"s-0\"\nkind = \"crash\"\nat = 0.1\nduration = 0.1\ndetection = 0.01\n";
            }
            let rate = if lattice { 2000.0 } else { load * f64::from(n * workers) / mean };
            let head = format!("duration = 0.3\nwarmup = 0.05\nbalancers = {balancers}\nseed = {seed}");
            let mut text = crate::testing::scenario_text(&head, rate, &rest);
            if lattice {
                text = text.replace("process = \"poisson\"", "process = \"deterministic\"");
            }
            let s = Scenario::from_source(std::path::Path::new("t.toml"), &text).expect("valid");
            let entry = &s.strategies[0];
            let run = |eager: bool| {
                logged_run(&s, entry, seed, |sim| {
                    sim.signals.as_mut().expect("prequal probes").set_eager(eager);
                })
            };
            let (eager, lazy) = (run(true), run(false));
            prop_assert!(eager.0.iter().any(|l| l.contains("answer")), "no probe answered");
            prop_assert_eq!(eager.0.len(), lazy.0.len());
            for (k, (a, b)) in eager.0.iter().zip(&lazy.0).enumerate() {
                prop_assert_eq!(a, b, "call {}", k);
            }
            prop_assert!(same_metrics(&eager.1, &lazy.1), "metrics differ");
        });
    }

    /// Reply loads ride the plain path: C3, which reads them, gets the same calls with the
    /// same loads (the servers' latency estimates included) on either path, in the same
    /// order, and the run measures the same, with one and two balancers, queues full and
    /// not, default and indexed.
    #[test]
    fn reply_loads_are_the_same_on_the_plain_path() {
        let cluster = servers("fast", 3, "workers = 2\nspeed = 2", &exponential(0.004))
            + &servers("slow", 5, "queue_capacity = 3", &exponential(0.004));
        let c3 = "[[strategies]]\nkind = \"c3\"\n[[strategies]]\nkind = \"c3\"\nindexed = true\nlabel = \"c3_indexed\"\n";
        for head in ["duration = 2\nwarmup = 0.5", "duration = 2\nbalancers = 2"] {
            let s = scenario(head, 2_500.0, &format!("{cluster}{c3}"));
            for entry in &s.strategies {
                let run = |plain: bool| {
                    logged_run(&s, entry, 3, |sim| {
                        assert!(sim.plain, "{}: a plain run", entry.label());
                        sim.plain = plain;
                    })
                };
                let (general, plain) = (run(false), run(true));
                assert!(
                    general.0.iter().any(|l| l.contains("reply")),
                    "no reply load"
                );
                assert_eq!(general.0.len(), plain.0.len(), "{head}, {}", entry.label());
                for (k, (g, p)) in general.0.iter().zip(&plain.0).enumerate() {
                    assert_eq!(g, p, "{head}, {}, call {k}", entry.label());
                }
                assert!(
                    same_metrics(&general.1, &plain.1),
                    "{head}, {}",
                    entry.label()
                );
            }
        }
    }

    /// Faults that bring servers back: a crash (back cold), a join then a leave, a
    /// rolling deploy with warm-up, and a late join (not cold).
    const COMING_BACK: &str = r#"
[[faults]]
server = "s-1"
kind = "crash"
at = 0.8
duration = 0.5
detection = 0.1
warmup = 0.5
[[faults]]
server = "extra-0"
kind = "join"
at = 1
duration = 2
warmup = 1
[[faults]]
server = "s"
kind = "deploy"
at = 2
restart = 0.2
warmup = 0.5
[[faults]]
server = "extra-1"
kind = "join"
at = 5.5
"#;

    /// Every kind that applies slow start, under a policy of slow start alone.
    const SLOW_START_ALONE: &str = r#"
[[strategies]]
kind = "edf_wrr"
[strategies.policy.slow_start]
kind = "envoy"
slow_start_window = 1
[[strategies]]
kind = "least_request"
[strategies.policy.slow_start]
kind = "envoy"
slow_start_window = 1
aggression = 2
[[strategies]]
kind = "smooth_weighted_round_robin"
[strategies.policy.slow_start]
kind = "nginx"
window = 1
"#;

    /// Runs every entry of `s` (policies of slow start alone) without a client, and again
    /// with `cancel = true` added, which needs a client but changes nothing when each
    /// request is one attempt (no other attempt is ever out to withdraw): every strategy
    /// gets the same calls in the same order (slow start set, hosts ramping as they come
    /// back, picks with their views, completions) and the runs measure the same. Only
    /// the client counts `client.work`, which no report shows without wasted work.
    /// Returns the fewest ramps an entry saw.
    fn same_without_a_client(s: &Scenario, seed: u64) -> usize {
        let mut fewest = usize::MAX;
        for entry in &s.strategies {
            let label = entry.label();
            let mut with_client = entry.clone();
            with_client.policy.as_mut().expect("a policy").cancel = true;
            let run = |entry, client: bool| {
                logged_run(s, entry, seed, |sim| {
                    assert_eq!(sim.client.is_some(), client, "{label}");
                    assert_eq!(sim.slow_start.is_some(), !client, "{label}");
                })
            };
            let (alone, mut under) = (run(entry, false), run(&with_client, true));
            assert_eq!(alone.0.len(), under.0.len(), "{label}");
            for (k, (a, u)) in alone.0.iter().zip(&under.0).enumerate() {
                assert_eq!(a, u, "{label}, call {k}");
            }
            assert_eq!(alone.1.client.work, 0.0, "{label}");
            under.1.client.work = 0.0;
            assert!(same_metrics(&alone.1, &under.1), "{label}");
            let ramps = alone.0.iter().filter(|l| l.contains("available")).count();
            fewest = fewest.min(ramps);
        }
        fewest
    }

    /// [`same_without_a_client`] through a crash, a join and a leave and a rolling deploy
    /// with warm-up, with two balancers.
    #[test]
    fn slow_start_alone_runs_as_under_a_client() {
        let service = exponential(0.01);
        let rest = servers("s", 4, "workers = 2\nweight = 2", &service)
            + &servers("extra", 2, "workers = 2", &service)
            + COMING_BACK
            + SLOW_START_ALONE;
        let s = scenario("duration = 6\nwarmup = 0.5\nbalancers = 2", 1_000.0, &rest);
        // Both balancers see each of 7 returns (crash, 2 joins, 4 restarts).
        let ramps = same_without_a_client(&s, 5);
        assert!(ramps >= 14, "{ramps} ramps");
    }

    /// [`same_without_a_client`] on random clusters, balancers and times of crashes,
    /// joins and deploys, and with the other faults (errors and refusals, a network
    /// delay, an unreachable server, pauses), full queues and shedding.
    #[test]
    fn slow_start_alone_runs_as_under_a_client_whatever_the_faults() {
        use proptest::prelude::*;
        let config = ProptestConfig {
            cases: 24,
            ..ProptestConfig::default()
        };
        proptest!(config, |(
            balancers in 1u32..4,
            crash in 0.2f64..2.0,
            detection in prop_oneof![Just(0.0), 0.0f64..0.3],
            join in 0.2f64..2.5,
            deploy in 0.5f64..2.5,
            restart in 0.0f64..0.3,
            window in 0.05f64..2.0,
            others in any::<bool>(),
            seed in 0u64..1000,
        )| {
            let service = exponential(0.01);
            let mut rest = servers("s", 4, "workers = 2\nweight = 2\nqueue_capacity = 20", &service)
                + &servers("extra", 2, "workers = 2", &service);
            if others {
                rest += "[servers.admission]\nqueue_timeout = 0.02\n";
            }
            rest += &format!(
                "[[faults]]\nserver = \"s-1\"\nkind = \"crash\"\nat = {crash}\nduration = 0.4\ndetection = {detection}\n\
                 [[faults]]\nserver = \"extra-0\"\nkind = \"join\"\nat = {join}\nduration = 0.8\nwarmup = 0.5\n\
                 [[faults]]\nserver = \"s\"\nkind = \"deploy\"\nat = {deploy}\nrestart = {restart}\nwarmup = 0.3\n"
            );
            if others {
                rest += OTHER_FAULTS;
            }
            rest += &SLOW_START_ALONE
                .replace("slow_start_window = 1", &format!("slow_start_window = {window:.3}"))
                .replace("\nwindow = 1", &format!("\nwindow = {window}"));
            let head = format!("duration = 3\nwarmup = 0.5\nbalancers = {balancers}\nseed = {seed}");
            let s = scenario(&head, 700.0, &rest);
            prop_assert!(same_without_a_client(&s, seed) > 0, "no host ramped");
        });
    }

    /// Faults that bring no server back: errors (then refusals), a network delay, an
    /// unreachable server, pauses.
    const OTHER_FAULTS: &str = r#"
[[faults]]
server = "extra-1"
kind = "error"
at = 0.3
duration = 1
fraction = 0.3
[[faults]]
server = "extra-1"
kind = "error"
at = 2
duration = 0.5
status = "rejected"
[[faults]]
server = "s-0"
kind = "delay"
at = 1
duration = 1
delay = 0.01
[[faults]]
server = "s-2"
kind = "unreachable"
at = 0.6
duration = 0.5
detection = 0.1
connect_timeout = 0.05
[[faults]]
server = "s-3"
kind = "pause"
at = 0
interval = { dist = "exponential", mean = 0.5 }
pause = { dist = "uniform", min = 0.01, max = 0.05 }
"#;

    /// A run with any of the features the plain path leaves out takes the general one.
    #[test]
    fn runs_with_features_are_not_plain() {
        let base = servers("s", 2, "", &exponential(0.01));
        let plain = |head: &str, rest: &str| {
            let s = scenario(head, 100.0, &format!("{base}{rest}"));
            let e = &s.strategies[0];
            Sim::new(&s, &e.spec, e.policy.as_ref(), 0, 1).plain
        };
        let rr = kinds(&["round_robin"]);
        assert!(plain("duration = 1", &rr));
        // `lbsim run` passes its (absent) overheads: the run stays plain.
        let calibrated = |o: &Overheads| {
            let s = scenario("duration = 1", 100.0, &format!("{base}{rr}"));
            let e = &s.strategies[0];
            let mut sim = Sim::new(&s, &e.spec, e.policy.as_ref(), 0, 1);
            sim.calibrate(o);
            sim.plain
        };
        assert!(calibrated(&Overheads::NONE));
        assert!(calibrated(&Overheads::uniform(2, 0.001, 0.0)));
        assert!(!calibrated(&Overheads::uniform(2, 0.0, 0.001)));
        let fault = "[[faults]]\nserver = \"s-0\"\nkind = \"slow\"\nat = 0.5\nfactor = 2\n";
        assert!(!plain("duration = 1", &format!("{rr}{fault}")));
        assert!(!plain("duration = 1", &kinds(&["prequal"])));
        // Reply loads alone keep the run plain.
        assert!(plain("duration = 1", &kinds(&["c3"])));
        assert!(!plain("duration = 1", &kinds(&["jsq"])));
        let policy = "[strategies.policy]\ntimeout = 1.0\n";
        assert!(!plain("duration = 1", &format!("{rr}{policy}")));
        // Slow start alone needs no client: the run stays plain; beside anything else
        // it takes the client's path.
        let edf = kinds(&["edf_wrr"]);
        let slow_start =
            "[strategies.policy.slow_start]\nkind = \"envoy\"\nslow_start_window = 5\n";
        assert!(plain("duration = 1", &format!("{edf}{slow_start}")));
        assert!(plain(
            "duration = 1",
            &format!("{edf}[strategies.policy]\n")
        ));
        assert!(!plain(
            "duration = 1",
            &format!("{edf}{policy}{slow_start}")
        ));
        let l4 = "[connections]\nclients = 4\npool_size = 2\n";
        assert!(!plain("duration = 1", &format!("{rr}{l4}")));
    }
}
