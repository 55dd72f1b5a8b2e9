//! The driver's balancers: `balancers = N` independent views, and the servers' load
//! reports they read, kept as the simulator keeps them.
//!
//! The simulator gives each of a scenario's `balancers` its own [`Balancer`] (its own
//! strategy instance, random stream and counts of requests in flight) and sends each
//! arriving request through one drawn uniformly from `Stream::Routing` 0. The live driver
//! is one process, but it routes exactly so: [`Views`] holds the N balancers, draws the
//! balancer of every request from the same stream, and tells only that balancer of the
//! request's end. Herding of many balancers on stale reports therefore shows live as in
//! the simulation.
//!
//! Load reports ([`crate::strategy::LoadReport`], read by `jsq`, `first`, `grpc_wrr`):
//! the simulator publishes every server's exact state into one table that every balancer
//! reads, after every change, or every `load_report_interval` when the scenario sets one.
//! Live, the report of server `i` is assembled from what its replies carry and what the
//! driver knows: calls at the server = calls sent to it and not yet answered (by any
//! balancer: the server's own count, plus the calls on the wire), `completed` = its
//! replies, `busy_time` = the sum of the service times its replies report (calls still in
//! service count once answered), `workers` = the declared workers. It is published into
//! one shared table on the same schedule as the simulator's: after every change, or at
//! every multiple of the interval (scenario time), so a strategy reading reports sees them
//! exactly as stale live as simulated.

use crate::rng::{SimRng, Stream, stream_rng};
use crate::scenario::Scenario;
use crate::strategy::{Balancer, LoadReport, LoadTable, Outcome, Signals, StrategyEntry};
use crate::time::Nanos;
use rand::RngExt;

/// What the driver counts of one server, for its load reports.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    in_system: u32,
    completed: u64,
    /// Worker-nanoseconds (scenario time) of the calls it answered.
    busy: u64,
}

/// The N balancers of a replay and the load reports they read.
pub(crate) struct Views {
    balancers: Vec<Balancer>,
    /// Draws the balancer of each request when there are several (the simulator's
    /// `Stream::Routing` 0, which at request level draws nothing else).
    routing: SimRng,
    /// The shared report table, when the strategy reads reports.
    loads: Option<LoadTable>,
    counts: Vec<Counts>,
    workers: Vec<u32>,
    /// `load_report_interval` (scenario time); `None`: exact reports.
    every: Option<Nanos>,
    /// When the next periodic report is due.
    next: Nanos,
    /// Per server, whether health checks see it up.
    healthy: Vec<bool>,
    /// Per balancer, per server, whether its outlier detection ejected it (empty without
    /// outlier ejection): a health change keeps an ejected server out of that view.
    ejected: Vec<Vec<bool>>,
    /// Servers that health checks saw come back since the last [`Views::take_back`].
    back: Vec<usize>,
}

impl Views {
    /// The balancers of `entry` for replication `replication` of `scenario` under `seed`,
    /// built as the simulator builds them (balancer `b` on `Stream::Strategy` `b`).
    pub(crate) fn new(
        scenario: &Scenario,
        entry: &StrategyEntry,
        seed: u64,
        replication: u64,
    ) -> Views {
        let servers = scenario.servers();
        let n = servers.len();
        let weights: std::sync::Arc<[u32]> = scenario.weights().into();
        let balancers = (0..scenario.balancers.max(1))
            .map(|b| {
                let rng = stream_rng(seed, replication, Stream::Strategy, u64::from(b));
                Balancer::sharing(
                    entry.spec.build(n, rng),
                    weights.clone(),
                    scenario.balancers.max(1) as usize,
                )
            })
            .collect();
        let reads = entry.spec.reads_load_reports();
        let every = scenario
            .load_report_interval
            .map(Nanos::from_secs_f64)
            .filter(|_| reads);
        Views {
            balancers,
            routing: stream_rng(seed, replication, Stream::Routing, 0),
            loads: reads.then(|| {
                if entry.spec.indexes_load_reports() {
                    LoadTable::with_queue_index(n)
                } else {
                    LoadTable::new(n)
                }
            }),
            counts: vec![Counts::default(); n],
            workers: servers.iter().map(|s| s.workers).collect(),
            next: every.unwrap_or(Nanos::MAX),
            every,
            healthy: vec![true; n],
            ejected: Vec::new(),
            back: Vec::new(),
        }
    }

    /// Number of balancers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.balancers.len()
    }

    /// Balancer `b`.
    pub(crate) fn get(&mut self, b: usize) -> &mut Balancer {
        &mut self.balancers[b]
    }

    /// Every balancer.
    pub(crate) fn all(&self) -> &[Balancer] {
        &self.balancers
    }

    /// The signals the strategy wants (the same for every balancer).
    pub(crate) fn signals(&self) -> Signals {
        self.balancers[0].signals()
    }

    /// Publishes the periodic reports due by `now` (call before anything changes at
    /// `now`: the state between events holds until the next one, so the report of a tick
    /// is the state as of the tick).
    pub(crate) fn tick(&mut self, now: Nanos) {
        let Some(dt) = self.every else { return };
        if now < self.next {
            return;
        }
        // Ticks passed without an event published the same state: the last one stands.
        let dt = dt.0.max(1);
        let at = Nanos(self.next.0 + (now.0 - self.next.0) / dt * dt);
        for i in 0..self.counts.len() {
            self.publish(i, at);
        }
        self.next = Nanos(at.0 + dt);
    }

    fn publish(&mut self, i: usize, at: Nanos) {
        if let Some(t) = &mut self.loads {
            let c = self.counts[i];
            t.publish(
                i,
                LoadReport {
                    at,
                    in_system: c.in_system,
                    workers: self.workers[i],
                    completed: c.completed,
                    busy_time: c.busy,
                },
            );
        }
    }

    /// After a change of server `i`'s counts: exact reports publish at once.
    fn changed(&mut self, i: usize, now: Nanos) {
        if self.every.is_none() {
            self.publish(i, now);
        }
    }

    /// Routes a request arriving at `now`: the balancer it goes through (drawn as the
    /// simulator draws it) and the server picked, if any.
    pub(crate) fn route(&mut self, now: Nanos, key: u64) -> (usize, Option<usize>) {
        let b = self.pick_balancer();
        (b, self.route_in(b, now, key, None))
    }

    /// The balancer of an arriving request, drawn as the simulator draws it.
    pub(crate) fn pick_balancer(&mut self) -> usize {
        if self.balancers.len() == 1 {
            0
        } else {
            self.routing.random_range(0..self.balancers.len())
        }
    }

    /// Routes one call through balancer `b` at `now`; with `avoid`, picks again (at most
    /// its count of times) while the pick is a server it rejects (Envoy's
    /// `previous_hosts`, [`Balancer::route_avoiding`]).
    pub(crate) fn route_in(
        &mut self,
        b: usize,
        now: Nanos,
        key: u64,
        avoid: Option<(&dyn Fn(usize) -> bool, u32)>,
    ) -> Option<usize> {
        self.tick(now);
        let loads = self.loads.as_ref();
        let picked = match avoid {
            Some((avoid, repicks)) => {
                self.balancers[b].route_avoiding(now, key, loads, avoid, repicks)
            }
            None => self.balancers[b].route_with(now, key, loads),
        };
        if let Some(i) = picked {
            self.counts[i].in_system += 1;
            self.changed(i, now);
        }
        picked
    }

    /// A call reached server `i` at `now` without a balancer's pick (connection level:
    /// the connection was picked when it opened): the server's count of calls in system,
    /// which a drain waits on, counts it.
    pub(crate) fn call_sent(&mut self, i: usize, now: Nanos) {
        self.tick(now);
        self.counts[i].in_system += 1;
        self.changed(i, now);
    }

    /// A call to server `i` through balancer `b` ended at `now` after `latency`; `served`
    /// is the service time its reply reports (`None`: not served).
    pub(crate) fn complete(
        &mut self,
        b: usize,
        i: usize,
        latency: Nanos,
        outcome: Outcome,
        served: Option<Nanos>,
        now: Nanos,
    ) {
        self.server_done(i, served, now);
        self.balancers[b].complete(i, latency, outcome, now);
    }

    /// Server `i` answered a call at `now` (`served`: the service time its reply reports;
    /// `None`: not served): its load report changes. The balancer is told apart, with
    /// [`Views::tell`], when its client stops waiting (a client policy may give up on a
    /// call before its server answers).
    pub(crate) fn server_done(&mut self, i: usize, served: Option<Nanos>, now: Nanos) {
        self.tick(now);
        let c = &mut self.counts[i];
        c.in_system = c.in_system.saturating_sub(1);
        if let Some(s) = served {
            c.completed += 1;
            c.busy += s.0;
        }
        self.changed(i, now);
    }

    /// Balancer `b`'s call to server `i` ended for its client at `now`, after `latency`.
    pub(crate) fn tell(
        &mut self,
        b: usize,
        i: usize,
        latency: Nanos,
        outcome: Outcome,
        now: Nanos,
    ) {
        self.tick(now);
        self.balancers[b].complete(i, latency, outcome, now);
    }

    /// Balancer `b`'s outlier detection ejects server `i` (`out`) or takes it back: the
    /// server is in that view when health checks see it up and it is not ejected.
    pub(crate) fn eject(&mut self, b: usize, i: usize, out: bool) {
        if self.ejected.is_empty() {
            self.ejected = vec![vec![false; self.counts.len()]; self.balancers.len()];
        }
        self.ejected[b][i] = out;
        let up = self.healthy[i] && !out;
        self.balancers[b].set_up(i, up);
    }

    /// Whether a call to server `i` already routed (so counted in its calls) would wait
    /// for a worker: the other calls the driver has at it, sent and not yet answered,
    /// occupy every worker (the simulator's `would_wait`, read by circuit breakers).
    pub(crate) fn would_wait(&self, i: usize) -> bool {
        self.healthy[i] && self.counts[i].in_system > self.workers[i]
    }

    /// Whether health checks see server `i` up.
    pub(crate) fn healthy(&self, i: usize) -> bool {
        self.healthy[i]
    }

    /// The servers health checks saw come back since the last call (for slow start).
    pub(crate) fn take_back(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.back)
    }

    /// Calls sent to server `i` and not yet answered, by every balancer.
    pub(crate) fn in_system(&self, i: usize) -> u32 {
        self.counts[i].in_system
    }

    /// Marks server `i` down in every balancer's view (and the reports' index); whether
    /// some balancer still had it up.
    pub(crate) fn set_down(&mut self, i: usize) -> bool {
        self.set_health(i, false)
    }

    /// Marks server `i` up or down in every balancer's view (and the reports' index), as
    /// health checks do; whether some balancer's view changed.
    pub(crate) fn set_health(&mut self, i: usize, up: bool) -> bool {
        if up && !self.healthy[i] {
            self.back.push(i);
        }
        // A change of health is a change even where ejection keeps the view as it was.
        let mut changed = self.healthy[i] != up;
        self.healthy[i] = up;
        for (k, b) in self.balancers.iter_mut().enumerate() {
            let ejected = self.ejected.get(k).is_some_and(|e| e[i]);
            let up = up && !ejected;
            if b.backends().up(i) != up {
                changed = true;
                b.set_up(i, up);
            }
        }
        if let Some(t) = &mut self.loads {
            t.set_up(i, up);
        }
        changed
    }

    /// The report of server `i` the balancers read now, if any (tests).
    #[cfg(test)]
    fn report(&self, i: usize) -> Option<LoadReport> {
        self.loads.as_ref().and_then(|t| t.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(extra: &str, kind: &str) -> Scenario {
        Scenario::from_source(
            "views.toml".as_ref(),
            &format!(
                r#"
                duration = 5
                {extra}
                [arrivals]
                process = "poisson"
                rate = 50
                [[servers]]
                name = "s"
                count = 3
                workers = 2
                service = {{ dist = "exponential", mean = 0.01 }}
                [[strategies]]
                kind = "{kind}"
                "#
            ),
        )
        .unwrap()
    }

    #[test]
    fn balancers_are_drawn_as_the_simulator_draws_them() {
        let s = scenario("balancers = 4", "round_robin");
        let mut v = Views::new(&s, &s.strategies[0], 7, 0);
        assert_eq!(v.len(), 4);
        let mut rng = stream_rng(7, 0, Stream::Routing, 0);
        for k in 0..50 {
            let (b, i) = v.route(Nanos(k), k);
            assert_eq!(b, rng.random_range(0..4usize));
            v.complete(
                b,
                i.unwrap(),
                Nanos(1),
                Outcome::Ok,
                Some(Nanos(1)),
                Nanos(k),
            );
        }
        // Each balancer's round robin turns on its own: its first pick is server 0.
        let firsts: Vec<u32> = v.all().iter().map(|b| b.backends().in_flight(0)).collect();
        assert_eq!(firsts, vec![0; 4]);
    }

    #[test]
    fn exact_reports_follow_every_change_and_stale_ones_the_interval() {
        let s = scenario("", "jsq");
        let mut v = Views::new(&s, &s.strategies[0], 1, 0);
        let (b, i) = v.route(Nanos(10), 0);
        let i = i.unwrap();
        assert_eq!(v.report(i).unwrap().in_system, 1);
        v.complete(b, i, Nanos(5), Outcome::Ok, Some(Nanos(4)), Nanos(15));
        let r = v.report(i).unwrap();
        assert_eq!(
            (r.in_system, r.completed, r.busy_time, r.workers),
            (0, 1, 4, 2)
        );

        let s = scenario("load_report_interval = 0.1", "jsq");
        let mut v = Views::new(&s, &s.strategies[0], 1, 0);
        let dt = Nanos::from_secs_f64(0.1);
        let (_, i) = v.route(Nanos(10), 0);
        let i = i.unwrap();
        // Nothing reported before the first tick; JSQ then reads in-flight counts.
        assert_eq!(v.report(i), None);
        // Stale until the tick: three more requests all go to the servers reported empty.
        v.route(Nanos(dt.0 + 1), 0);
        let r = v.report(i).unwrap();
        assert_eq!((r.at, r.in_system), (dt, 1));
        v.route(Nanos(dt.0 + 2), 0);
        assert_eq!(
            v.report(i).unwrap().in_system,
            1,
            "not refreshed before the next tick"
        );
        v.tick(Nanos(5 * dt.0 + 3));
        assert_eq!(v.report(i).unwrap().at, Nanos(5 * dt.0));
    }

    #[test]
    fn a_server_marked_down_is_down_in_every_view() {
        let s = scenario("balancers = 3", "least_connections");
        let mut v = Views::new(&s, &s.strategies[0], 1, 0);
        assert!(v.set_down(1));
        assert!(!v.set_down(1));
        for _ in 0..30 {
            let (_, i) = v.route(Nanos(1), 0);
            assert_ne!(i, Some(1));
        }
    }

    #[test]
    fn strategies_that_read_no_reports_keep_no_table() {
        let s = scenario("load_report_interval = 0.1", "round_robin");
        let mut v = Views::new(&s, &s.strategies[0], 1, 0);
        let (_, i) = v.route(Nanos(1), 0);
        v.tick(Nanos::from_secs_f64(1.0));
        assert_eq!(v.report(i.unwrap()), None);
    }
}
