//! The `Strategy` trait: how a balancer chooses a backend for each request.
//!
//! One implementation serves both the simulator and live mode. A strategy sees a read-only
//! view of the backends ([`Backends`]) and the current time passed in ([`PickContext`]), and
//! is told of every dispatch and completion. It does no I/O, reads no clock and starts no
//! thread; its randomness comes from a seeded generator handed to it at construction.

mod aperture;
mod bounded_load;
mod buckets;
mod c3;
mod edf;
mod edf_wrr;
mod first;
mod fwrr;
mod grpc_wrr;
mod haproxy_source;
pub mod hash;
mod ipvs_sh;
mod jiq;
mod jsq;
mod least_conn;
mod least_request;
mod least_response_time;
mod leastconn;
pub mod load;
mod maglev;
mod nginx_hash;
mod peak_ewma;
mod power_of_d;
mod prequal;
mod random;
mod ranges;
pub mod registry;
pub mod reports;
mod ring_hash;
mod round_robin;
mod run_heap;
pub mod sample;
pub mod slow_start;
mod smooth_wrr;
mod spec;
mod static_rr;
mod view;
mod weighted_random;

pub use aperture::{Aperture, ApertureConfig, ApertureParams};
pub use bounded_load::{BoundedLoadHash, BoundedLoadHashParams};
pub use c3::{C3, C3Config, C3Params};
pub use edf::EdfScheduler;
pub use edf_wrr::EdfWeightedRoundRobin;
pub use first::{First, FirstParams};
pub use fwrr::Fwrr;
pub use grpc_wrr::{GrpcWeightedRoundRobin, GrpcWrrConfig, GrpcWrrParams};
pub use haproxy_source::{HaproxySource, HaproxySourceParams};
pub use ipvs_sh::IpvsSh;
pub use jiq::JoinIdleQueue;
pub use jsq::{JsqParams, ShortestQueue};
pub use least_conn::{LeastConnections, LeastConnectionsParams};
pub use least_request::{LeastRequest, LeastRequestParams};
pub use least_response_time::{LeastResponseTime, LeastResponseTimeParams};
pub use leastconn::{Leastconn, LeastconnParams};
pub use load::{Load, PendingRequests};
pub use maglev::{Maglev, MaglevParams};
pub use nginx_hash::{NginxHash, NginxHashParams};
pub use peak_ewma::{PeakEwma, PeakEwmaP2c, PeakEwmaParams};
pub use power_of_d::{PowerOfD, PowerOfDParams};
pub use prequal::{Prequal, PrequalConfig, PrequalParams};
pub use random::RandomChoice;
pub use registry::{Kind, NoParams, Parameterless, STRATEGIES, StrategyDef};
pub use reports::LoadTable;
pub use ring_hash::{RingHash, RingHashParams};
pub use round_robin::RoundRobin;
pub use sample::Sampler;
pub use slow_start::{Ramp, RampKind, SlowStart};
pub use smooth_wrr::SmoothWeightedRoundRobin;
pub use spec::{SpecError, StrategyEntry, StrategySpec};
pub use static_rr::StaticRr;
pub use view::Backends;
pub(crate) use view::Entries;
pub use weighted_random::WeightedRandom;

use crate::rng::SimRng;
use crate::time::Nanos;

/// One backend as its balancer sees it: an entry of [`Backends`], read out by value
/// ([`Backends::at`], [`Backends::iter`]) and given to [`Strategy::on_view`]. What servers
/// report of their own load is not here but in one [`LoadTable`] that every balancer
/// reads ([`PickContext::load`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Requests this balancer has sent to the backend and not yet seen complete.
    pub in_flight: u32,
    /// Configured weight (0 means "never pick" for weighted strategies).
    pub weight: u32,
    /// Whether the backend is up (health-checked). A strategy must not pick a down backend.
    pub up: bool,
}

/// A server's report of its load, as a server-side load reporter (ORCA, HAProxy agent
/// check) would send it. Counters are cumulative so that a strategy can difference two
/// reports to get a rate over its own period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// When the report was taken.
    pub at: Nanos,
    /// Requests at the server (waiting + in service), from every balancer.
    pub in_system: u32,
    /// Workers.
    pub workers: u32,
    /// Requests completed since the start of the run.
    pub completed: u64,
    /// Busy worker-time since the start of the run (worker-nanoseconds).
    pub busy_time: u64,
}

impl Backend {
    /// A backend that is up, idle and has the given weight.
    pub fn new(weight: u32) -> Backend {
        Backend {
            in_flight: 0,
            weight,
            up: true,
        }
    }
}

/// What a strategy knows of the request it is placing.
#[derive(Clone, Copy, Debug)]
pub struct PickContext<'a> {
    /// Current time.
    pub now: Nanos,
    /// The request's key (for hashing strategies).
    pub key: u64,
    /// Servers' load reports as this balancer last refreshed them, if any.
    pub loads: Option<&'a LoadTable>,
}

impl PickContext<'_> {
    /// A context without load reports.
    pub fn new(now: Nanos, key: u64) -> PickContext<'static> {
        PickContext {
            now,
            key,
            loads: None,
        }
    }

    /// Backend `i`'s own report of its load (all balancers' requests), as of `load.at`.
    /// Exact when the scenario has no `load_report_interval`, otherwise refreshed every
    /// interval (stale in between). `None` until the first report, in live mode, and for
    /// strategies that do not read reports ([`registry::Reads::load_reports`]).
    #[inline]
    pub fn load(&self, i: usize) -> Option<LoadReport> {
        self.loads.and_then(|t| t.get(i))
    }
}

/// What a server says of its own load out of band: in answer to a probe
/// ([`Strategy::probes`], Prequal), or carried on the reply to a request (a per-request
/// load report, as gRPC's ORCA or C3's piggybacked feedback). The same value in the
/// simulator and in live mode (the Thrift `probe` call and the reply's optional fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerLoad {
    /// Requests at the server (waiting + in service, from every balancer): requests in
    /// flight (RIF) as the server counts them.
    pub in_flight: u32,
    /// Of those, waiting for a worker.
    pub queued: u32,
    /// Service time: on a reply, the time the server spent serving that request; in a
    /// probe answer, the server's recent mean service time (an EWMA).
    pub service_time: Nanos,
    /// The server's estimate of the response time of a request arriving now (waiting
    /// plus service), from its recent mean service time and its queue.
    pub latency: Nanos,
}

/// The out-of-band signals a strategy wants ([`Strategy::signals`]); the simulator and the
/// live driver produce only those asked for, so other strategies pay nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signals {
    /// It sends probes ([`Strategy::probes`]) and wants their answers
    /// ([`Strategy::on_probe`]).
    pub probes: bool,
    /// It wants the load report carried on each reply ([`Strategy::on_reply_load`]).
    pub reply_loads: bool,
    /// It reads the estimated latency ([`ServerLoad::latency`]) of those reports. The
    /// simulator estimates it from each server's mean service time, which it keeps only
    /// when asked (here or by [`Signals::probes`]); unasked, the field is 0. Live servers
    /// send it always.
    pub reply_latency: bool,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Served.
    Ok,
    /// Refused by the backend because its queue was full.
    Rejected,
    /// Failed (connection error, backend crashed).
    Failed,
}

/// A load-balancing strategy.
pub trait Strategy: Send {
    /// Chooses the backend for a request, or `None` when no backend is eligible (all down).
    fn pick(&mut self, backends: &Backends, ctx: &PickContext<'_>) -> Option<usize>;

    /// Told after the request has been sent to `backend`.
    fn on_dispatch(&mut self, _backend: usize, _now: Nanos) {}

    /// Told when a request sent to `backend` ends after `latency`.
    fn on_complete(&mut self, _backend: usize, _latency: Nanos, _outcome: Outcome, _now: Nanos) {}

    /// Whether the strategy keeps an index of the view and wants [`Strategy::on_view`]
    /// (asked once, when its balancer is built). Default false.
    fn indexes_view(&self) -> bool {
        false
    }

    /// Whether an indexing strategy ([`Strategy::indexes_view`]) wants
    /// [`Strategy::on_view`] when only a backend's requests in flight changed, or only when
    /// it goes up or down. Default true; a strategy that reads no count (HAProxy's FWRR)
    /// says false and is spared two calls a request.
    fn indexes_in_flight(&self) -> bool {
        true
    }

    /// Told after entry `backend` of the view changed (in flight or up), before `on_dispatch` / `on_complete`: lets a strategy keep an ordered index
    /// of the view and pick in O(log n) instead of scanning it. Called only when
    /// [`Strategy::indexes_view`] says so.
    fn on_view(&mut self, _backend: usize, _view: &Backend) {}

    /// The out-of-band signals this strategy wants (asked once, when its balancer is
    /// built). Default: none.
    fn signals(&self) -> Signals {
        Signals::default()
    }

    /// Probes to send now: pushes the backends to probe onto `out` (a backend may appear
    /// more than once). Asked once after each request [`Balancer::route_with`] dispatched,
    /// when [`Signals::probes`] is set, as the engine or live driver sends that request's
    /// probes ([`Balancer::take_probes`]); not after a [`Balancer::route_avoiding`] repick.
    /// The answers come later, after the network delay, through [`Strategy::on_probe`]; a
    /// probe of a down server is never answered.
    fn probes(&mut self, _now: Nanos, _out: &mut Vec<usize>) {}

    /// The answer of `backend` to a probe sent at `sent`, received at `now`.
    fn on_probe(&mut self, _backend: usize, _load: &ServerLoad, _sent: Nanos, _now: Nanos) {}

    /// The answers to probes sent together at `sent`, all received at `now`, as
    /// (backend, load) in the order sent: the same as [`Strategy::on_probe`] for each in
    /// turn, which the default calls, in one call for a strategy that can take them
    /// together (Prequal). The simulator makes it when a send is answered at once.
    fn on_probes(&mut self, answers: &[(usize, ServerLoad)], sent: Nanos, now: Nanos) {
        for (backend, load) in answers {
            self.on_probe(*backend, load, sent, now);
        }
    }

    /// The load report carried on the reply of a request to `backend`, told just before
    /// that request's [`Strategy::on_complete`]. Only when [`Signals::reply_loads`] is set.
    fn on_reply_load(&mut self, _backend: usize, _load: &ServerLoad, _now: Nanos) {}

    /// A reply from `backend` with its load report, ending its request after `latency`:
    /// the same as [`Strategy::on_reply_load`] then [`Strategy::on_complete`], which the
    /// default calls, in one call for a strategy that reads and writes the same state in
    /// both (C3). Made by [`Balancer::complete_with_load`], only when
    /// [`Signals::reply_loads`] is set.
    fn on_reply(
        &mut self,
        backend: usize,
        load: &ServerLoad,
        latency: Nanos,
        outcome: Outcome,
        now: Nanos,
    ) {
        self.on_reply_load(backend, load, now);
        self.on_complete(backend, latency, outcome, now);
    }

    /// Ramps the weight of every backend that becomes available from now on ([`Ramp`]:
    /// Envoy's or nginx's slow start). Returns whether the strategy applies it: only kinds
    /// whose registry entry declares it ([`registry::Reads::slow_start`]) do, and a
    /// scenario asking another kind for slow start is refused at validation. Asked once,
    /// when its balancer is built. Default: not applied.
    fn set_slow_start(&mut self, _ramp: Ramp) -> bool {
        false
    }

    /// Backend `backend` became available at `now` (its health check passed again, it
    /// joined, or — nginx — its time out of the rotation is over): under slow start its
    /// weight ramps up from now. Told after the view shows it up.
    fn on_available(&mut self, _backend: usize, _now: Nanos) {}

    /// Whether the strategy wants [`Strategy::upcoming`] (asked once, when its balancer
    /// is built). The simulator then draws arrivals [`LOOKAHEAD`] ahead, which costs
    /// every request a little: say so only where the reads ahead pay (nginx `hash …
    /// consistent` from 1,000 servers). Default false.
    fn reads_ahead(&self) -> bool {
        false
    }

    /// Told the key of the request that arrives [`LOOKAHEAD`] requests after the one at
    /// hand, when the simulator draws it: just before it picks for the request at hand,
    /// so [`LOOKAHEAD`] arrivals (and the completions between them, as many at load 0.8)
    /// before that key's own pick. A strategy may read ahead what that pick will read
    /// (nginx `hash … consistent` prefetches the ring's entries its pick will search), so
    /// that the cache misses overlap with each other and with that work instead of coming
    /// one after the other in the picks. A hint only: every pick must be what it would be
    /// without it (the next pick may be of another key, a retry, or come after the view
    /// changed). Called only when [`Strategy::reads_ahead`]
    /// says so, by the simulator at request level with one balancer; never in live mode.
    fn upcoming(&mut self, _key: u64) {}
}

/// How the simulator gets a strategy: one instance per balancer, and what the strategy
/// reads of servers' load reports. Implemented by [`StrategySpec`] (the catalogue, as
/// written in scenario files) and by any closure `Fn(usize, SimRng) -> Box<dyn Strategy>`,
/// which is how a strategy written outside this crate runs on a scenario
/// ([`crate::sim::Run::new`]).
///
/// ```
/// use lbsim::rng::SimRng;
/// use lbsim::strategy::{Backends, PickContext, Strategy, StrategyFactory};
///
/// /// Always the first backend that is up.
/// struct FirstUp;
/// impl Strategy for FirstUp {
///     fn pick(&mut self, backends: &Backends, _ctx: &PickContext<'_>) -> Option<usize> {
///         (0..backends.len()).find(|&i| backends.up(i))
///     }
/// }
///
/// let factory = |_n: usize, _rng: SimRng| Box::new(FirstUp) as Box<dyn Strategy>;
/// assert!(!factory.reads_load_reports());
/// let mut one = factory.build(3, lbsim::rng::stream_rng(1, 0, lbsim::rng::Stream::Strategy, 0));
/// let mut view = Backends::new(&[1; 3]);
/// view.set_up(0, false);
/// assert_eq!(one.pick(&view, &PickContext::new(lbsim::time::Nanos(0), 0)), Some(1));
/// ```
pub trait StrategyFactory: Sync {
    /// A running instance over `n` backends with its own random stream.
    fn build(&self, n: usize, rng: SimRng) -> Box<dyn Strategy>;

    /// Whether it reads servers' load reports ([`PickContext::load`]): the simulator
    /// maintains them only then. Default false.
    fn reads_load_reports(&self) -> bool {
        false
    }

    /// Whether it wants the report table indexed by queue length. Default false.
    fn indexes_load_reports(&self) -> bool {
        false
    }
}

impl StrategyFactory for StrategySpec {
    fn build(&self, n: usize, rng: SimRng) -> Box<dyn Strategy> {
        StrategySpec::build(self, n, rng)
    }
    fn reads_load_reports(&self) -> bool {
        StrategySpec::reads_load_reports(self)
    }
    fn indexes_load_reports(&self) -> bool {
        StrategySpec::indexes_load_reports(self)
    }
}

impl<F> StrategyFactory for F
where
    F: Fn(usize, SimRng) -> Box<dyn Strategy> + Sync,
{
    fn build(&self, n: usize, rng: SimRng) -> Box<dyn Strategy> {
        self(n, rng)
    }
}

/// How many arrivals ahead the simulator tells a request's key ([`Strategy::upcoming`]):
/// told for request `k + LOOKAHEAD` just before the pick for request `k`.
pub const LOOKAHEAD: usize = 6;

/// A strategy with its view of the backends: what one client-side balancer holds.
///
/// The simulator and the live driver both route through this type, so the view a strategy
/// sees is maintained by one piece of code in both modes.
pub struct Balancer {
    strategy: Box<dyn Strategy>,
    backends: Backends,
    /// Reports given to this balancer alone ([`Balancer::set_load`]), if any.
    own_loads: Option<LoadTable>,
    /// Whether the strategy indexes the view ([`Strategy::indexes_view`]).
    indexed: bool,
    /// Whether it is told of changes of requests in flight too
    /// ([`Strategy::indexes_in_flight`]).
    indexed_counts: bool,
    /// The signals the strategy wants ([`Strategy::signals`]).
    signals: Signals,
    /// Whether [`Balancer::route_with`] dispatched a request whose probes
    /// [`Balancer::take_probes`] has not asked the strategy for yet. A plain store on the
    /// pick path: asking the strategy there cost every cheap pick 4–8 ns (issue 8).
    probe_owed: bool,
    /// Whether the strategy wants [`Strategy::upcoming`] ([`Strategy::reads_ahead`]).
    reads_ahead: bool,
}

impl Balancer {
    /// A balancer over backends with the given weights, all up and idle.
    pub fn new(strategy: Box<dyn Strategy>, weights: &[u32]) -> Balancer {
        Balancer::sharing(strategy, weights.into(), 1)
    }

    /// One of a run's `balancers` balancers over backends with the given weights, all up
    /// and idle, sharing the weight table with the others
    /// ([`Backends::for_balancers`]).
    pub fn sharing(
        strategy: Box<dyn Strategy>,
        weights: std::sync::Arc<[u32]>,
        balancers: usize,
    ) -> Balancer {
        Balancer {
            indexed: strategy.indexes_view(),
            indexed_counts: strategy.indexes_view() && strategy.indexes_in_flight(),
            signals: strategy.signals(),
            probe_owed: false,
            reads_ahead: strategy.reads_ahead(),
            own_loads: None,
            strategy,
            backends: Backends::for_balancers(weights, balancers),
        }
    }

    /// The balancer's view of its backends.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Picks a backend for a request and records the dispatch; the strategy sees the
    /// reports given with [`Balancer::set_load`], if any.
    pub fn route(&mut self, now: Nanos, key: u64) -> Option<usize> {
        // Borrowed in place: taking the table out and back copied it twice a pick.
        let Balancer {
            strategy,
            backends,
            own_loads,
            indexed_counts,
            probe_owed,
            ..
        } = self;
        let ctx = PickContext {
            now,
            key,
            loads: own_loads.as_ref(),
        };
        dispatch(
            strategy.as_mut(),
            backends,
            *indexed_counts,
            probe_owed,
            &ctx,
        )
    }

    /// Like [`Balancer::route`], with load reports read from `loads`, a table shared by
    /// every balancer (the simulator's).
    #[inline]
    pub fn route_with(&mut self, now: Nanos, key: u64, loads: Option<&LoadTable>) -> Option<usize> {
        let ctx = PickContext { now, key, loads };
        dispatch(
            self.strategy.as_mut(),
            &mut self.backends,
            self.indexed_counts,
            &mut self.probe_owed,
            &ctx,
        )
    }

    /// Whether the strategy wants the keys of requests that will arrive
    /// ([`Strategy::reads_ahead`]).
    pub fn reads_ahead(&self) -> bool {
        self.reads_ahead
    }

    /// Tells the strategy the key of a request that will arrive next, if it wants to know
    /// ([`Strategy::upcoming`]).
    #[inline]
    pub fn upcoming(&mut self, key: u64) {
        if self.reads_ahead {
            self.strategy.upcoming(key);
        }
    }

    /// The out-of-band signals the strategy wants.
    pub fn signals(&self) -> Signals {
        self.signals
    }

    /// Pushes onto `out` the probes the strategy wants for the request
    /// [`Balancer::route_with`] dispatched since the last call (backend indices, in the
    /// order asked; none when it dispatched none, or the strategy does not probe): the
    /// engine or live driver sends them. Call after each route, at `now`.
    pub fn take_probes(&mut self, now: Nanos, out: &mut Vec<usize>) {
        if std::mem::take(&mut self.probe_owed) && self.signals.probes {
            self.strategy.probes(now, out);
        }
    }

    /// Gives the strategy `backend`'s answer to a probe sent at `sent`.
    pub fn probe_answer(&mut self, backend: usize, load: &ServerLoad, sent: Nanos, now: Nanos) {
        self.strategy.on_probe(backend, load, sent, now);
    }

    /// Gives the strategy the answers to probes sent together at `sent`, received at
    /// `now`, in the order sent ([`Strategy::on_probes`]).
    #[inline]
    pub fn probe_answers(&mut self, answers: &[(usize, ServerLoad)], sent: Nanos, now: Nanos) {
        self.strategy.on_probes(answers, sent, now);
    }

    /// Gives the strategy the load report carried on a reply from `backend`; call before
    /// [`Balancer::complete`] of that request.
    pub fn reply_load(&mut self, backend: usize, load: &ServerLoad, now: Nanos) {
        self.strategy.on_reply_load(backend, load, now);
    }

    /// Like [`Balancer::route_with`], but while the pick is a backend that `avoid` rejects,
    /// picks again, at most `repicks` times; the last pick is used anyway. This is Envoy's
    /// retry host predicate (`previous_hosts`) with `host_selection_retry_max_attempts`.
    pub fn route_avoiding(
        &mut self,
        now: Nanos,
        key: u64,
        loads: Option<&LoadTable>,
        avoid: impl Fn(usize) -> bool,
        repicks: u32,
    ) -> Option<usize> {
        let ctx = PickContext { now, key, loads };
        let mut i = self.strategy.pick(&self.backends, &ctx)?;
        for _ in 0..repicks {
            if !avoid(i) {
                break;
            }
            i = self.strategy.pick(&self.backends, &ctx)?;
        }
        debug_assert!(self.backends.up(i), "strategy picked a down backend");
        self.backends.add(i);
        self.told_count(i);
        self.strategy.on_dispatch(i, now);
        Some(i)
    }

    /// [`Balancer::reply_load`] then [`Balancer::complete`]: the load report carried on
    /// the reply of a request to `backend`, and the end of that request. One call to the
    /// strategy ([`Strategy::on_reply`]) when it is not told of the count's change
    /// between the two ([`Strategy::indexes_in_flight`]); otherwise the two calls.
    pub fn complete_with_load(
        &mut self,
        backend: usize,
        load: &ServerLoad,
        latency: Nanos,
        outcome: Outcome,
        now: Nanos,
    ) {
        if self.indexed_counts {
            self.reply_load(backend, load, now);
            return self.complete(backend, latency, outcome, now);
        }
        // `on_reply_load` reads no view: that the count changed first is not seen.
        self.backends.remove(backend);
        self.strategy.on_reply(backend, load, latency, outcome, now);
    }

    /// Records the end of a request previously routed to `backend`.
    pub fn complete(&mut self, backend: usize, latency: Nanos, outcome: Outcome, now: Nanos) {
        self.backends.remove(backend);
        self.told_count(backend);
        self.strategy.on_complete(backend, latency, outcome, now);
    }

    /// Gives this balancer alone a server's report of its load (live mode, tests; the
    /// simulator shares one [`LoadTable`] among balancers, see [`Balancer::route_with`]).
    pub fn set_load(&mut self, backend: usize, report: LoadReport) {
        let n = self.backends.len();
        self.own_loads
            .get_or_insert_with(|| LoadTable::new(n))
            .publish(backend, report);
    }

    /// The reports given with [`Balancer::set_load`].
    pub fn own_loads(&self) -> Option<&LoadTable> {
        self.own_loads.as_ref()
    }

    /// Asks the strategy to apply slow start ([`Strategy::set_slow_start`]); returns
    /// whether it does.
    pub fn set_slow_start(&mut self, ramp: Ramp) -> bool {
        let applied = self.strategy.set_slow_start(ramp);
        // A strategy may stop indexing its view once weights vary with time.
        self.indexed = self.strategy.indexes_view();
        self.indexed_counts = self.indexed && self.strategy.indexes_in_flight();
        applied
    }

    /// Tells the strategy that `backend` became available at `now`
    /// ([`Strategy::on_available`]); call after marking it up.
    pub fn available(&mut self, backend: usize, now: Nanos) {
        self.strategy.on_available(backend, now);
    }

    /// Marks a backend up or down.
    pub fn set_up(&mut self, backend: usize, up: bool) {
        self.backends.set_up(backend, up);
        self.told(backend);
    }

    /// Tells an indexing strategy that the requests in flight of entry `i` changed, if
    /// it wants to know ([`Strategy::indexes_in_flight`]).
    #[inline]
    fn told_count(&mut self, i: usize) {
        if self.indexed_counts {
            self.strategy.on_view(i, &self.backends.at(i));
        }
    }

    /// Tells an indexing strategy that entry `i` of the view changed.
    #[inline]
    fn told(&mut self, i: usize) {
        if self.indexed {
            self.strategy.on_view(i, &self.backends.at(i));
        }
    }
}

/// One pick and its dispatch ([`Balancer::route`], [`Balancer::route_with`]), on the
/// balancer's fields borrowed apart.
#[inline(always)]
fn dispatch(
    strategy: &mut dyn Strategy,
    backends: &mut Backends,
    indexed_counts: bool,
    probe_owed: &mut bool,
    ctx: &PickContext<'_>,
) -> Option<usize> {
    let i = strategy.pick(backends, ctx)?;
    debug_assert!(backends.up(i), "strategy picked a down backend");
    backends.add(i);
    if indexed_counts {
        strategy.on_view(i, &backends.at(i));
    }
    strategy.on_dispatch(i, ctx.now);
    *probe_owed = true;
    Some(i)
}

/// Whether `backends` still show the `(up, weight)` of each backend that a structure was
/// built for (a map or table rebuilt when they change).
pub(crate) fn same_view(built_for: &[(bool, u32)], backends: &Backends) -> bool {
    built_for.len() == backends.len()
        && built_for
            .iter()
            .zip(backends.iter())
            .all(|(&(up, w), b)| up == b.up && w == b.weight)
}

/// The `(up, weight)` view a table (a map, a bucket table) was built for, and whether the
/// balancer told of a change since ([`Strategy::on_view`]): the table is compared with the
/// view only then, not at every pick (an O(n) scan).
#[derive(Debug, Default)]
pub(crate) struct BuiltFor {
    view: Vec<(bool, u32)>,
    /// A backend's health or weight changed since the table was built.
    stale: bool,
}

impl BuiltFor {
    /// Whether the table must be rebuilt for `backends`: a change was told or the backends
    /// are new, and the view differs from the one it was built for. Forgets the told change.
    pub(crate) fn changed(&mut self, backends: &Backends) -> bool {
        let maybe = self.stale || self.view.len() != backends.len();
        self.stale = false;
        maybe && !same_view(&self.view, backends)
    }

    /// The table was just built for `backends`.
    pub(crate) fn built(&mut self, backends: &Backends) {
        self.view = backends.iter().map(|b| (b.up, b.weight)).collect();
    }

    /// The `(up, weight)` of each backend when the table was built.
    pub(crate) fn view(&self) -> &[(bool, u32)] {
        &self.view
    }

    /// The balancer told that entry `backend` of the view is now `view`.
    pub(crate) fn told(&mut self, backend: usize, view: &Backend) {
        if self
            .view
            .get(backend)
            .is_some_and(|&(up, w)| (up, w) != (view.up, view.weight))
        {
            self.stale = true;
        }
    }

    /// Marks the table as possibly stale (tests).
    #[cfg(test)]
    pub(crate) fn suspect(&mut self) {
        self.stale = true;
    }
}

/// Iterates over the indices of backends that are up, starting at `start` and wrapping.
pub(crate) fn up_from(backends: &Backends, start: usize) -> impl Iterator<Item = usize> + '_ {
    let n = backends.len();
    (0..n)
        .map(move |k| (start + k) % n)
        .filter(move |&i| backends.up(i))
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for strategy unit tests.
    use super::*;
    use proptest::prelude::{Just, any, prop_oneof};
    use proptest::strategy::Strategy as _;

    /// Routes `n` requests through `balancer`, completing each at once, and returns the picks.
    pub fn picks(balancer: &mut Balancer, n: usize) -> Vec<usize> {
        (0..n)
            .map(|k| {
                let i = balancer
                    .route(Nanos(k as u64), k as u64)
                    .expect("a backend is up");
                balancer.complete(i, Nanos(1), Outcome::Ok, Nanos(k as u64));
                i
            })
            .collect()
    }

    /// One step of a random workout of a balancer.
    #[derive(Clone, Debug)]
    pub enum Op {
        Route,
        /// Complete the outstanding request at this position (modulo their number), after
        /// this latency (ns), failed when the flag is set.
        Complete(usize, u16, bool),
        /// Mark a backend (modulo their number) down or up.
        SetUp(usize, bool),
    }

    pub fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        prop_oneof![
            5 => Just(Op::Route),
            4 => (any::<usize>(), any::<u16>(), proptest::bool::weighted(0.1))
                .prop_map(|(k, l, failed)| Op::Complete(k, l, failed)),
            1 => (any::<usize>(), any::<bool>()).prop_map(|(i, up)| Op::SetUp(i, up)),
        ]
    }

    /// A long random workout of 20,000 operations drawn from `rng`: `route_pct` % routes,
    /// one in a hundred a backend going down or up, the rest completions of a random
    /// outstanding request (after 1 ns and successful, or, `varied`, after a random
    /// latency and failed one time in ten).
    pub fn workout(rng: &mut crate::rng::SimRng, route_pct: u32, varied: bool) -> Vec<Op> {
        use rand::RngExt;
        (0..20_000)
            .map(|_| match rng.random_range(0..100) {
                r if r < route_pct => Op::Route,
                0..99 if varied => Op::Complete(
                    rng.random::<u32>() as usize,
                    rng.random(),
                    rng.random_range(0..10) == 0,
                ),
                0..99 => Op::Complete(rng.random::<u32>() as usize, 1, false),
                _ => Op::SetUp(rng.random::<u32>() as usize, rng.random_range(0..3) > 0),
            })
            .collect()
    }

    /// Two balancers driven in lockstep by one workout, with every pick of each. A request
    /// that both routed to the same backend is outstanding, to be completed in both; one
    /// they routed apart is not (the two have diverged, which the picks show).
    pub struct Lockstep {
        /// The first balancer (the fast one, in the index-versus-scan tests).
        pub a: Balancer,
        /// The second balancer (the oracle).
        pub b: Balancer,
        outstanding: Vec<usize>,
        picks: (Vec<Option<usize>>, Vec<Option<usize>>),
    }

    impl Lockstep {
        /// Both balancers, before any request.
        pub fn new(a: Balancer, b: Balancer) -> Lockstep {
            assert_eq!(a.backends().len(), b.backends().len());
            Lockstep {
                a,
                b,
                outstanding: Vec::new(),
                picks: (Vec::new(), Vec::new()),
            }
        }

        /// Routes a request in both at `now` and records both picks.
        pub fn route(&mut self, now: Nanos) {
            let (x, y) = (self.a.route(now, 0), self.b.route(now, 0));
            self.picks.0.push(x);
            self.picks.1.push(y);
            if let (Some(x), Some(y)) = (x, y)
                && x == y
            {
                self.outstanding.push(x);
            }
        }

        /// Takes the outstanding request at position `k` (modulo their number) and returns
        /// its backend, for the caller to complete in [`Lockstep::both`]; `None` when none
        /// is outstanding.
        pub fn take(&mut self, k: usize) -> Option<usize> {
            let n = self.outstanding.len();
            (n > 0).then(|| self.outstanding.swap_remove(k % n))
        }

        /// Both balancers, to be told the same thing.
        pub fn both(&mut self) -> [&mut Balancer; 2] {
            [&mut self.a, &mut self.b]
        }

        /// Marks backend `i` (modulo their number) down or up in both.
        pub fn set_up(&mut self, i: usize, up: bool) {
            let i = i % self.a.backends().len();
            self.a.set_up(i, up);
            self.b.set_up(i, up);
        }

        /// Every pick of `a`, then of `b`.
        pub fn picks(self) -> (Vec<Option<usize>>, Vec<Option<usize>>) {
            self.picks
        }
    }

    /// Runs `ops` on two balancers and returns every pick of each.
    pub fn both(
        fast: Box<dyn Strategy>,
        oracle: Box<dyn Strategy>,
        weights: &[u32],
        ops: &[Op],
    ) -> (Vec<Option<usize>>, Vec<Option<usize>>) {
        let mut run = Lockstep::new(Balancer::new(fast, weights), Balancer::new(oracle, weights));
        for (t, op) in ops.iter().enumerate() {
            let now = Nanos(t as u64);
            match *op {
                Op::Route => run.route(now),
                Op::Complete(k, latency, failed) => {
                    if let Some(i) = run.take(k) {
                        let outcome = if failed { Outcome::Failed } else { Outcome::Ok };
                        let latency = Nanos(u64::from(latency % 8));
                        for x in run.both() {
                            x.complete(i, latency, outcome, now);
                        }
                    }
                }
                Op::SetUp(i, up) => run.set_up(i, up),
            }
        }
        run.picks()
    }

    /// Picks as letters, `a` for backend 0.
    pub fn letters(picks: &[usize]) -> String {
        picks.iter().map(|&i| char::from(b'a' + i as u8)).collect()
    }

    /// The picks, as letters, of `strategy` over `weights` while backend 0 goes down
    /// after `before` picks and comes back after `during` more, then `after` more (as
    /// HAProxy's `disable server` and `enable server` between connections).
    pub fn down_and_up(
        strategy: Box<dyn Strategy>,
        weights: &[u32],
        (before, during, after): (usize, usize, usize),
    ) -> String {
        let mut b = Balancer::new(strategy, weights);
        let mut seq = picks(&mut b, before);
        b.set_up(0, false);
        seq.extend(picks(&mut b, during));
        b.set_up(0, true);
        seq.extend(picks(&mut b, after));
        letters(&seq)
    }

    /// A strategy with an index (`.0`) and the plain scan it must agree with (`.1`).
    pub type Pair = (Box<dyn Strategy>, Box<dyn Strategy>);

    /// Backend weights of 0 to 4, for 1 to 11 backends.
    pub fn weights() -> impl proptest::strategy::Strategy<Value = Vec<u32>> {
        proptest::collection::vec(0u32..5, 1..12)
    }

    /// The property every strategy with an index gets: on 200 random workouts of up to
    /// 300 operations, over the weights `weights` draws, the index picks what the scan
    /// picks, for every parameter `params` draws (`pair` builds both from it).
    pub fn index_agrees_with_scan<P: std::fmt::Debug>(
        params: impl proptest::strategy::Strategy<Value = P>,
        weights: impl proptest::strategy::Strategy<Value = Vec<u32>>,
        pair: impl Fn(&P) -> Pair,
    ) {
        use proptest::test_runner::{Config, TestCaseError, TestRunner};
        let config = Config {
            source_file: Some(file!()),
            ..Config::with_cases(200)
        };
        let ops = proptest::collection::vec(op(), 1..300);
        let result = TestRunner::new(config).run(&(params, weights, ops), |(p, w, ops)| {
            let (fast, oracle) = pair(&p);
            let (fast, oracle) = both(fast, oracle, &w, &ops);
            if fast == oracle {
                Ok(())
            } else {
                Err(TestCaseError::fail(format!("{fast:?} != {oracle:?}")))
            }
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    /// Long random workouts of larger clusters ([`workout`] of `route_pct` and `varied`,
    /// from a stream seeded with `seed`): for each case, over the weights `weights` draws
    /// for it, the index picks what the scan picks.
    pub fn long_runs_agree<P: std::fmt::Debug>(
        seed: u64,
        (route_pct, varied): (u32, bool),
        cases: &[P],
        weights: impl Fn(&P, &mut crate::rng::SimRng) -> Vec<u32>,
        pair: impl Fn(&P) -> Pair,
    ) {
        use rand::SeedableRng;
        let mut rng = crate::rng::SimRng::seed_from_u64(seed);
        for p in cases {
            let w = weights(p, &mut rng);
            let ops = workout(&mut rng, route_pct, varied);
            let (fast, oracle) = pair(p);
            let (fast, oracle) = both(fast, oracle, &w, &ops);
            assert_eq!(fast, oracle, "{p:?}, {} backends", w.len());
        }
    }

    /// Counts of each backend in `picks`.
    pub fn counts(picks: &[usize], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &p in picks {
            c[p] += 1;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the calls it gets; indexes the view's counts when `counts` is set.
    struct Recorder {
        counts: bool,
        calls: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl Strategy for Recorder {
        fn pick(&mut self, _: &Backends, _: &PickContext<'_>) -> Option<usize> {
            Some(0)
        }
        fn on_complete(&mut self, backend: usize, latency: Nanos, outcome: Outcome, _: Nanos) {
            let call = format!("complete {backend} {latency:?} {outcome:?}");
            self.calls.lock().unwrap().push(call);
        }
        fn indexes_view(&self) -> bool {
            self.counts
        }
        fn on_view(&mut self, backend: usize, view: &Backend) {
            let call = format!("view {backend} {}", view.in_flight);
            self.calls.lock().unwrap().push(call);
        }
        fn on_reply_load(&mut self, backend: usize, load: &ServerLoad, _: Nanos) {
            let call = format!("reply {backend} {}", load.queued);
            self.calls.lock().unwrap().push(call);
        }
        /// Reads ahead when it indexes counts (a second flag is not needed here).
        fn reads_ahead(&self) -> bool {
            self.counts
        }
        fn upcoming(&mut self, key: u64) {
            self.calls.lock().unwrap().push(format!("upcoming {key}"));
        }
    }

    /// A balancer passes on an upcoming key only to a strategy that reads ahead.
    #[test]
    fn upcoming_keys_reach_only_a_strategy_that_reads_ahead() {
        for ahead in [false, true] {
            let calls = std::sync::Arc::default();
            let strategy = Recorder {
                counts: ahead,
                calls: std::sync::Arc::clone(&calls),
            };
            let mut b = Balancer::new(Box::new(strategy), &[1, 1]);
            b.upcoming(42);
            let told = calls.lock().unwrap().contains(&"upcoming 42".to_string());
            assert_eq!(told, ahead);
        }
    }

    /// `complete_with_load` is `reply_load` then `complete`: the same calls in the same
    /// order (the count's change told between them to a strategy indexing counts) and
    /// the same view after.
    #[test]
    fn complete_with_load_is_the_reply_load_then_the_completion() {
        for counts in [false, true] {
            let run = |merged: bool| {
                let calls = std::sync::Arc::default();
                let strategy = Recorder {
                    counts,
                    calls: std::sync::Arc::clone(&calls),
                };
                let mut b = Balancer::new(Box::new(strategy), &[1, 1]);
                b.route(Nanos(1), 0);
                b.route(Nanos(2), 0);
                let load = ServerLoad {
                    queued: 3,
                    ..ServerLoad::default()
                };
                let (latency, now) = (Nanos(7), Nanos(9));
                if merged {
                    b.complete_with_load(0, &load, latency, Outcome::Ok, now);
                } else {
                    b.reply_load(0, &load, now);
                    b.complete(0, latency, Outcome::Ok, now);
                }
                let calls = calls.lock().unwrap().clone();
                (calls, b.backends().in_flight(0))
            };
            let (merged, split) = (run(true), run(false));
            assert_eq!(merged, split, "counts {counts}");
            assert_eq!(merged.1, 1);
            assert!(merged.0.iter().any(|c| c.starts_with("reply")));
        }
    }
}
