//! What live mode can replay comparably, checked before anything is sent: every refusal
//! names the reason and the way out, never a silent fallback that would compare unlike
//! with unlike.
//!
//! - More than [`MAX_SERVERS`] servers: each is a real backend with its own threads.
//! - An `[autoscaler]`: its decisions run in the simulator only, so far.
//! - A scenario with `[sweep]` is one scenario per point: the library replays one
//!   ([`crate::scenario::Scenario::at_sweep_point`]); `lbsim live` replays every point.
//! - At connection level (`[connections]`) the driver's balancer picks per connection and
//!   sees no load reports, probes or reply loads, and holds one balancer's view: strategies
//!   reading those, and `balancers > 1`, are refused there (a proxy's own algorithm is
//!   judged by [`super::proxy`]).
//! - Strategies that probe servers (prequal) need backends that answer the `probe` call;
//!   strategies that read the load carried on replies (c3) need replies that carry it.
//!   The thriftpy2 peer and pipelined `lbsim serve` backends do neither: each backend is
//!   asked once before the replay, and a backend without the signal refuses the replay.

use std::net::SocketAddr;

use super::client::{CallOutcome, ClientConfig, Connection};
use super::driver::LiveError;
use super::proxy::ProxyKind;
use crate::scenario::Scenario;
use crate::strategy::StrategyEntry;

/// Most servers a scenario replayed live may have.
pub(crate) const MAX_SERVERS: usize = 512;

/// Refuses what no strategy of `scenario` can replay comparably.
pub(crate) fn check_scenario(scenario: &Scenario) -> Result<(), LiveError> {
    if let Some(sweep) = &scenario.sweep {
        return Err(LiveError::Unsupported(format!(
            "it has a [sweep] of {} points, each a scenario of its own\n  fix: replay each point (`lbsim live` does; in the library, `Scenario::at_sweep_point`)",
            sweep.len()
        )));
    }
    if let Some(a) = &scenario.autoscaler {
        return Err(LiveError::Unsupported(format!(
            "it has an [autoscaler] over {} servers, which live mode does not run (it would replay every server present from the start, unlike the simulation)\n  fix: replay a copy without [autoscaler] (scale out and in with `join` and `leave` faults, which live mode injects)",
            a.servers.len()
        )));
    }
    let n = scenario.servers().len();
    if n > MAX_SERVERS {
        return Err(LiveError::Unsupported(format!(
            "it has {n} servers; live, each is a backend with its own port, workers and connections, and the driver holds a connection and a reader thread per call in flight, so more than {MAX_SERVERS} servers exceed what one machine replays faithfully\n  fix: replay a copy with fewer servers (the same per-server load), e.g. `count = {MAX_SERVERS}` or less"
        )));
    }
    if scenario.connections.is_some() && scenario.balancers > 1 {
        return Err(LiveError::Unsupported(format!(
            "it has {} balancers at connection level ([connections]); the connection-level driver holds one balancer's view\n  fix: set `balancers = 1`, or replay it at request level (without [connections])",
            scenario.balancers
        )));
    }
    Ok(())
}

/// Refuses a strategy whose live replay would not be the simulated one; `via`: replayed
/// through that proxy (the proxy's algorithm, not the strategy, picks; see
/// [`super::proxy`]).
pub(crate) fn check_strategy(
    scenario: &Scenario,
    entry: &StrategyEntry,
    via: Option<ProxyKind>,
) -> Result<(), LiveError> {
    if scenario.connections.is_none() || via.is_some() {
        return Ok(());
    }
    let reads = entry.spec.about().reads;
    let what = [
        (reads.load_reports, "servers' load reports"),
        (reads.probes, "answers to probes"),
        (reads.reply_loads, "the load carried on replies"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, w)| *w)
    .collect::<Vec<_>>();
    if what.is_empty() {
        return Ok(());
    }
    Err(LiveError::Unsupported(format!(
        "strategy `{}` ({}) reads {}, which the connection-level driver does not give it (it picks per connection on its own counts); live it would silently run on other information than simulated\n  fix: replay it at request level (without [connections]), or leave it out with --strategy",
        entry.label(),
        entry.spec.kind(),
        what.join(" and ")
    )))
}

/// Asks every backend once for the signals the strategies read (the `probe` call, the
/// load carried on a reply) and refuses the replay if one does not give them; with
/// `costed` (the scenario's `[probes] cost` is set), probe answers must also say that the
/// backend runs probes' cost jobs.
pub(crate) fn check_backends(
    strategies: &[&StrategyEntry],
    addrs: &[SocketAddr],
    names: &[String],
    cfg: &ClientConfig,
    costed: bool,
) -> Result<(), LiveError> {
    let about = |want: fn(&crate::strategy::registry::Reads) -> bool| {
        strategies
            .iter()
            .find(|e| want(&e.spec.about().reads))
            .map(|e| (e.label(), e.spec.kind().to_string()))
    };
    let probes = about(|r| r.probes);
    let replies = about(|r| r.reply_loads);
    if probes.is_none() && replies.is_none() {
        return Ok(());
    }
    for (i, &addr) in addrs.iter().enumerate() {
        let name = &names[i];
        let mut conn = Connection::connect(addr, cfg).map_err(|source| LiveError::Unreachable {
            addr,
            server: name.clone(),
            source,
        })?;
        if let Some((label, kind)) = &probes {
            match conn.probe_at_cost(None) {
                Err(e) => {
                    return Err(LiveError::Unsupported(format!(
                        "strategy `{label}` ({kind}) probes servers with the `probe` call of thrift/lbsim.thrift, which backend {addr} ({name}) does not answer ({e}); simulated probes are answered, so the runs would not be comparable\n  fix: use backends that answer `probe` (lbsim serve without --pipelined, or in-process), or leave the strategy out with --strategy"
                    )));
                }
                Ok((_, None)) if costed => {
                    return Err(LiveError::Unsupported(format!(
                        "strategy `{label}` ({kind}) probes servers, and the scenario's [probes] cost makes each probe cost its server work, which backend {addr} ({name}) does not run (its probe answers carry no `cost_served_ns`); simulated probes cost that work, so the runs would not be comparable\n  fix: use backends that run it (lbsim serve, or in-process), or replay a copy without `cost` in [probes]"
                    )));
                }
                Ok(_) => {}
            }
        }
        if let Some((label, kind)) = &replies {
            if conn.is_broken() {
                conn = Connection::connect(addr, cfg).map_err(|source| LiveError::Unreachable {
                    addr,
                    server: name.clone(),
                    source,
                })?;
            }
            let carried = match conn.call(0, 0, None) {
                Ok(CallOutcome::Served { load, .. }) => load.is_some(),
                // A full queue says nothing of the replies: judged on the run.
                Ok(CallOutcome::Rejected { .. }) => true,
                Err(_) => false,
            };
            if !carried {
                return Err(LiveError::Unsupported(format!(
                    "strategy `{label}` ({kind}) reads the load carried on replies (`in_flight`, `queued`, `latency_ns` of Reply in thrift/lbsim.thrift), which backend {addr} ({name}) does not send; in the simulation every reply carries it, so the runs would not be comparable\n  fix: use backends that send it (lbsim serve, or in-process), or leave the strategy out with --strategy"
                )));
            }
        }
    }
    Ok(())
}

/// The longest a served call can wait and be served at a server with a bounded queue: a
/// full queue drained by its workers, plus its own service, at the mean service time
/// (wall-clock at `time_scale`); `None` when no queue is bounded.
pub(crate) fn longest_wait(scenario: &Scenario, time_scale: f64) -> Option<std::time::Duration> {
    scenario
        .servers()
        .iter()
        .filter_map(|s| {
            let q = f64::from(s.queue_capacity?);
            let w = f64::from(s.workers.max(1));
            let service = s.service.mean() / s.speed;
            Some((q + w) / w * service * time_scale)
        })
        .filter(|secs| secs.is_finite())
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
        .and_then(|secs| std::time::Duration::try_from_secs_f64(secs).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn scenario(servers: &str) -> Scenario {
        testing::scenario(
            "duration = 5",
            10.0,
            &(servers.to_string() + &testing::kinds(&["round_robin"])),
        )
    }

    #[test]
    fn the_longest_wait_is_a_full_queue_drained_at_the_slowest_server() {
        // slow-server's slow host: (100 + 4) / 4 services of 20 ms at speed 0.1 = 5.2 s.
        let service = testing::exponential(0.020);
        let s = scenario(
            &(testing::servers("ok", 2, "workers = 4\nqueue_capacity = 100", &service)
                + &testing::servers(
                    "slow",
                    1,
                    "workers = 4\nspeed = 0.1\nqueue_capacity = 100",
                    &service,
                )),
        );
        let w = longest_wait(&s, 2.0).unwrap().as_secs_f64();
        assert!((w - 10.4).abs() < 1e-9, "{w}");
        // Unbounded queues: no bound to give.
        let s = scenario(&testing::servers("s", 1, "", &service));
        assert_eq!(longest_wait(&s, 1.0), None);
    }

    #[test]
    fn too_many_servers_are_refused_with_the_reason() {
        let service = testing::exponential(0.020);
        let s = scenario(&testing::servers("s", MAX_SERVERS as u32 + 1, "", &service));
        let Err(LiveError::Unsupported(why)) = check_scenario(&s) else {
            panic!("accepted {} servers", MAX_SERVERS + 1)
        };
        assert!(why.contains("513 servers") && why.contains("fix:"), "{why}");
        let s = scenario(&testing::servers("s", MAX_SERVERS as u32, "", &service));
        assert!(check_scenario(&s).is_ok());
    }
}
