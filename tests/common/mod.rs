//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod peer;
pub mod process;

use std::path::Path;

use lbsim::metrics::Metric;
use lbsim::runner::{RunOptions, RunResults, run};
use lbsim::scenario::Scenario;
use lbsim::stats::{estimate, t_quantile};

/// A scenario from TOML text (named `test.toml` in errors).
pub fn scenario(src: &str) -> Scenario {
    Scenario::from_source(Path::new("test.toml"), src).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a scenario with default options.
pub fn run_default(s: &Scenario) -> RunResults {
    run(s, &RunOptions::default()).expect("run")
}

/// Values of `metric` across replications for strategy `k`.
pub fn values(r: &RunResults, k: usize, metric: Metric) -> Vec<f64> {
    r.strategies[k].metric(metric)
}

/// Asserts that `theory` lies within the two-sided 99.9% Student-t confidence interval of the
/// mean of `values` (independent replications). With fixed seeds the test is deterministic;
/// the 99.9% level means a correct simulator fails such a check for one seed in a thousand,
/// while a modelling error of a few CI half-widths fails it.
pub fn assert_agrees(what: &str, values: &[f64], theory: f64) {
    let e = estimate(values);
    let hw999 = t_quantile(0.9995, e.n - 1) * (e.half_width() / t_quantile(0.975, e.n - 1));
    let dev = (e.mean - theory).abs();
    println!(
        "{what}: simulated {:.6} ±{:.6} (95%) ±{:.6} (99.9%), theory {theory:.6}, deviation {:.2}%",
        e.mean,
        e.half_width(),
        hw999,
        100.0 * dev / theory
    );
    assert!(
        dev <= hw999,
        "{what}: theory {theory} outside the 99.9% CI {} ± {hw999}",
        e.mean
    );
}

/// Asserts that `theory` lies within an estimate's own interval widened from 95% to 99.9%
/// (each side scaled by t(0.9995)/t(0.975), so asymmetric intervals stay asymmetric). For
/// figures whose interval is not a mean's, such as pooled percentiles.
pub fn assert_covers(what: &str, e: &lbsim::stats::Estimate, theory: f64) {
    let k = t_quantile(0.9995, e.n - 1) / t_quantile(0.975, e.n - 1);
    let (low, high) = (
        e.mean - k * (e.mean - e.low),
        e.mean + k * (e.high - e.mean),
    );
    println!(
        "{what}: simulated {:.6} [{:.6}, {:.6}] (95%) [{low:.6}, {high:.6}] (99.9%), theory {theory:.6}, deviation {:.2}%",
        e.mean,
        e.low,
        e.high,
        100.0 * (e.mean - theory) / theory
    );
    assert!(
        low <= theory && theory <= high,
        "{what}: theory {theory} outside the 99.9% interval [{low}, {high}] of {}",
        e.mean
    );
}

/// The reported estimate (pooled for percentiles) of `metric` for strategy `k`.
pub fn reported(r: &RunResults, k: usize, metric: Metric) -> lbsim::stats::Estimate {
    r.strategies[k].estimate(metric)
}

/// TOML of M/M/1 under round robin: Poisson arrivals at `rate` a second to one
/// single-worker server with exponential service of mean 1 ms (μ = 1000/s). `warmup` is
/// TOML (seconds, or `"\"auto\""`); tables such as `[[faults]]` may be appended, and
/// top-level keys (`seed = …`) prepended.
pub fn mm1_toml(name: &str, rate: f64, replications: u32, duration: f64, warmup: &str) -> String {
    format!(
        r#"
name = "{name}"
replications = {replications}
duration = {duration}
warmup = {warmup}
[arrivals]
process = "poisson"
rate = {rate}
[[servers]]
name = "s"
service = {{ dist = "exponential", mean = 0.001 }}
[[strategies]]
kind = "round_robin"
"#
    )
}

/// TOML of ten single-worker servers (exponential service of mean 5 ms) under 500 requests
/// a second, every one failing `fraction` of its requests from the start (`None`: every
/// request), with no warm-up, 2 replications and one round-robin strategy followed by
/// `policy` (its `[strategies.policy.*]` tables): only an outlier detector's cap stops it
/// from ejecting every server.
pub fn all_fail_toml(duration: f64, fraction: Option<f64>, policy: &str) -> String {
    let fraction = fraction.map_or(String::new(), |f| format!("fraction = {f}\n"));
    format!(
        r#"
name = "all-fail"
duration = {duration}
warmup = 0
replications = 2
[arrivals]
process = "poisson"
rate = 500
[[servers]]
name = "s"
count = 10
service = {{ dist = "exponential", mean = 0.005 }}
[[faults]]
server = "s"
kind = "error"
at = 0
{fraction}[[strategies]]
kind = "round_robin"
{policy}"#
    )
}

/// Runs `s` once for each seed `first`, `first + 1`, … (`runs` independent runs, in order).
pub fn seeded_runs(s: &Scenario, first: u64, runs: u64) -> impl Iterator<Item = RunResults> + '_ {
    (0..runs).map(move |k| {
        run(
            s,
            &RunOptions {
                seed: Some(first + k),
                ..Default::default()
            },
        )
        .expect("run")
    })
}

/// Replays `s` with `opts` on a thread of its own; panics if it has not finished within
/// `limit` (a hung replay fails its test instead of hanging the suite).
pub fn replay_within(
    s: &Scenario,
    opts: &lbsim::live::LiveOptions,
    limit: std::time::Duration,
) -> Result<lbsim::live::LiveRun, lbsim::live::LiveError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (s, opts) = (s.clone(), opts.clone());
    std::thread::spawn(move || {
        let _ = tx.send(lbsim::live::replay(&s, &opts));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("the replay did not finish within {limit:?}"))
}

/// The verdict on `run` against `replications` simulated replications, printed (outcome
/// and table) for the test's output.
pub fn verdict_of(
    s: &Scenario,
    run: &lbsim::live::LiveRun,
    replications: u32,
) -> lbsim::live::verdict::Verdict {
    use lbsim::live::verdict::{self, CompareOptions};
    let v = verdict::compare(
        s,
        run,
        &CompareOptions {
            replications: Some(replications),
            ..CompareOptions::default()
        },
    )
    .expect("compare");
    print!("{:?}\n{}", v.outcome(), verdict::table(&v));
    print_overruns(run);
    v
}

/// Prints, per strategy of `run`, how late the machine woke threads: the sends and the
/// dispatcher (schedule lag, up to the largest: a stall), the probe beside the backends per
/// server group, and per backend its calls' service overrun, round trip beyond queue and
/// service, and how late its workers said they woke (µs); then the stalls recorded (how
/// many, the longest, in all): what a failure of a matched replay on a busy machine is
/// read against.
pub fn print_overruns(run: &lbsim::live::LiveRun) {
    let us = |v: f64| v * 1e-3;
    // n, mean and the tail of a histogram of nanoseconds, in µs.
    let spread = |h: &hdrhistogram::Histogram<u64>| {
        let q = |p: f64| us(h.value_at_quantile(p) as f64);
        format!(
            "n {} mean {:.0} p50 {:.0} p90 {:.0} p99 {:.0} max {:.0} µs",
            h.len(),
            us(h.mean()),
            q(0.5),
            q(0.9),
            q(0.99),
            us(h.max() as f64)
        )
    };
    for s in &run.strategies {
        println!(
            "lateness {} sends: lag {}; dispatcher {}",
            s.label,
            spread(&s.lag),
            spread(&s.dispatch_lag)
        );
        for (g, h) in s.machine.iter().enumerate() {
            println!("lateness {} probe group {g}: {}", s.label, spread(h));
        }
        for (i, l) in s.under_load.iter().enumerate() {
            println!(
                "lateness {} backend {i}: overrun {}; extra p50 {:.0} mean {:.0} p99 {:.0}; woke late {}",
                s.label,
                spread(&l.overhead),
                us(l.extra.value_at_quantile(0.5) as f64),
                us(l.extra.mean()),
                us(l.extra.value_at_quantile(0.99) as f64),
                spread(&l.woke_late)
            );
        }
        let longest = s.stalls.longest().map_or(0.0, |x| x.length);
        let (total, dispatcher) = (s.stalls.total, s.stalls.dispatcher);
        println!(
            "stalls {}: {} ({} of the dispatcher), longest {:.1} ms, {:.1} ms in all (scenario time)",
            s.label,
            s.stalls.count,
            dispatcher,
            longest * 1e3,
            total * 1e3
        );
    }
}

/// Replays with `replay`, checks each run with `check` and judges it with `judge`, again
/// (three attempts at most) while the verdict refuses to judge because the driver lagged
/// (a loaded machine); returns the last verdict.
pub fn judged_retrying(
    replay: impl FnMut() -> lbsim::live::LiveRun,
    check: impl Fn(&lbsim::live::LiveRun),
    judge: impl Fn(&lbsim::live::LiveRun) -> lbsim::live::verdict::Verdict,
) -> lbsim::live::verdict::Verdict {
    judged_until(replay, check, judge, |v| v.refusal().is_none())
}

/// [`judged_retrying`], replaying again while the verdict is not `settled` (e.g. until the
/// row a test asserts on is judged: a test of one figure need not wait for every row).
pub fn judged_until(
    mut replay: impl FnMut() -> lbsim::live::LiveRun,
    check: impl Fn(&lbsim::live::LiveRun),
    judge: impl Fn(&lbsim::live::LiveRun) -> lbsim::live::verdict::Verdict,
    settled: impl Fn(&lbsim::live::verdict::Verdict) -> bool,
) -> lbsim::live::verdict::Verdict {
    let mut v = None;
    for _ in 0..3 {
        let run = replay();
        check(&run);
        let verdict = judge(&run);
        let retry = !settled(&verdict);
        v = Some(verdict);
        if !retry {
            break;
        }
    }
    v.expect("one attempt ran")
}

/// The cluster most live tests replay, as scenario TOML: `count` backends `node-0`,
/// `node-1`, … of `workers` workers each, with lognormal work of mean 10 ms and
/// coefficient of variation `cv`, under Poisson arrivals at `rate` a second; 10 simulated
/// replications of `duration` seconds after `warmup`. A test appends its own tables
/// (`[[faults]]`, `[[strategies]]`) with [`LiveCluster::toml`].
#[derive(Clone, Copy, Debug)]
pub struct LiveCluster<'a> {
    pub name: &'a str,
    pub seed: u64,
    pub rate: f64,
    pub count: u32,
    pub workers: u32,
    pub cv: f64,
    pub duration: f64,
    pub warmup: f64,
}

impl LiveCluster<'_> {
    /// Four backends of two workers, work of cv 1, 5 measured seconds after 1 s.
    pub fn new(name: &str, seed: u64, rate: f64) -> LiveCluster<'_> {
        LiveCluster {
            name,
            seed,
            rate,
            count: 4,
            workers: 2,
            cv: 1.0,
            duration: 5.0,
            warmup: 1.0,
        }
    }

    /// The scenario's TOML, followed by `rest`.
    pub fn toml(&self, rest: &str) -> String {
        let LiveCluster {
            name,
            seed,
            rate,
            count,
            workers,
            cv,
            duration,
            warmup,
        } = self;
        format!(
            r#"
name = "{name}"
seed = {seed}
replications = 10
duration = {duration:?}
warmup = {warmup:?}

[arrivals]
process = "poisson"
rate = {rate:?}

[[servers]]
name = "node"
count = {count}
workers = {workers}
service = {{ dist = "lognormal", mean = 0.010, cv = {cv:?} }}
{rest}"#
        )
    }

    /// The scenario, followed by `rest`, named `<name>.toml` in errors.
    pub fn scenario(&self, rest: &str) -> Scenario {
        let src = self.toml(rest);
        Scenario::from_source(Path::new(&format!("{}.toml", self.name)), &src)
            .unwrap_or_else(|e| panic!("{e}\n{src}"))
    }
}

/// Replays `s` at `time_scale` with every fault `fault_delay` seconds late (an I/O timeout
/// of 5 s), within `limit` ([`replay_within`]).
pub fn replay_scaled(
    s: &Scenario,
    time_scale: f64,
    fault_delay: f64,
    limit: std::time::Duration,
) -> Result<lbsim::live::LiveRun, lbsim::live::LiveError> {
    let opts = lbsim::live::LiveOptions {
        time_scale,
        io_timeout: std::time::Duration::from_secs(5),
        fault_delay,
        ..lbsim::live::LiveOptions::default()
    };
    replay_within(s, &opts, limit)
}

/// Prints the fault log of `run`'s first strategy (when, what, how late).
pub fn print_faults(run: &lbsim::live::LiveRun) {
    for e in &run.strategies[0].faults {
        println!("{:.3} s {} (late {:.0} µs)", e.at, e.what, e.late * 1e6);
    }
}

/// Prints, per strategy of `run`, the connections its replay opened, the calls that
/// waited for one (a call that finds none idle waits while one opens, which counts as
/// schedule lag) and the dispatcher's own lag and the send lag (p99).
pub fn print_connections(run: &lbsim::live::LiveRun) {
    for s in &run.strategies {
        let p99 = |h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(0.99) as f64 * 1e-3;
        println!(
            "{}: {} connections, {} calls waited for one; lag p99 {:.0} µs (dispatcher {:.0} µs)",
            s.label,
            s.connections,
            s.connection_waits,
            p99(&s.lag),
            p99(&s.dispatch_lag)
        );
    }
}

/// Asserts that no judged row of `v` failed.
pub fn assert_no_failure(v: &lbsim::live::verdict::Verdict) {
    let failed: Vec<String> = v.failures().map(|r| r.metric()).collect();
    assert!(failed.is_empty(), "failed: {failed:?}");
}

/// Asserts what the crash tests' matched replay must show (a crash declared at 2.5 s,
/// recovered at 4 s, in a run measured from 1 to 6 s): round robin's
/// `phase_error_fraction` during the crash above `min` on both sides, and simulated 0
/// after the recovery.
pub fn assert_crash_phases(v: &lbsim::live::verdict::Verdict, min: f64) {
    let during = v
        .row("round_robin", "phase_error_fraction:during[2.5-4s]")
        .expect("row");
    assert!(
        during.sim_replayed > min && during.live > min,
        "the crash fails requests on both sides: {during:?}"
    );
    let after = v
        .row("round_robin", "phase_error_fraction:after[4-6s]")
        .expect("row");
    assert_eq!(after.sim_replayed, 0.0, "no failure after recovery");
}

/// Asserts what the planted mismatch of the crash tests must show when the crash (declared
/// at 2.5 s, recovered at 4 s, in a run measured from 1 to 6 s) is applied 2 s late: the
/// log has it at 4.5 s, and round robin's `phase_error_fraction:after[4-6s]`, simulated
/// 0, is above `min_live` live, judged whatever the lag, and fails the verdict.
pub fn assert_late_crash_fails(
    run: &lbsim::live::LiveRun,
    v: &lbsim::live::verdict::Verdict,
    min_live: f64,
) {
    use lbsim::live::verdict::Outcome;
    let at: Vec<f64> = run.strategies[0].faults.iter().map(|e| e.at).collect();
    assert_eq!(at[0], 4.5, "the crash is applied 2 s late");
    let metric = "phase_error_fraction:after[4-6s]";
    let after = v.row("round_robin", metric).expect("row");
    assert_eq!(after.sim_replayed, 0.0);
    assert!(
        after.live > min_live && !after.passed() && v.judged(after),
        "{after:?}"
    );
    match v.outcome() {
        Outcome::Fail { failed } => assert!(
            failed.iter().any(|f| *f == format!("round_robin {metric}")),
            "{failed:?}"
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Asserts that no judged row of `v` failed and that the verdict is a pass, or no verdict
/// because the driver lagged (printed: the judged rows all passed).
pub fn assert_passed_or_lagged(v: &lbsim::live::verdict::Verdict) {
    use lbsim::live::verdict::Outcome;
    assert_no_failure(v);
    match v.outcome() {
        Outcome::Pass => {}
        Outcome::NoVerdict { reason } => {
            println!("the driver lagged in 3 attempts; judged rows all passed: {reason}")
        }
        Outcome::Fail { failed } => panic!("{failed:?}"),
    }
}

/// In-process backends for `scenario`'s servers on loopback (ports chosen by the system),
/// each as declared (workers, speed, queue capacity), then changed by
/// `adjust(index, config)` (a mismatch planted on purpose, pipelining).
pub fn cluster_for(
    scenario: &Scenario,
    adjust: impl Fn(usize, &mut lbsim::live::server::ServerConfig),
) -> Vec<lbsim::live::server::ServerHandle> {
    use lbsim::live::server::ServerConfig;
    scenario
        .servers()
        .iter()
        .enumerate()
        .map(|(i, info)| {
            let g = &scenario.groups[info.group];
            let mut cfg = ServerConfig {
                workers: g.workers,
                speed: g.speed,
                queue_capacity: g.queue_capacity,
                ..ServerConfig::new(info.name.clone())
            };
            adjust(i, &mut cfg);
            backend(cfg)
        })
        .collect()
}

/// An in-process backend configured by `cfg`, on loopback at a port the system chooses.
pub fn backend(cfg: lbsim::live::server::ServerConfig) -> lbsim::live::server::ServerHandle {
    use std::net::{Ipv4Addr, SocketAddr};
    lbsim::live::server::spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), cfg)
        .expect("start a backend")
}
