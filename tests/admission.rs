//! Server-side admission control (`[servers.admission]`, issue 11): a queue timeout drops
//! what the M/M/1+D queue predicts, CoDel holds the standing queue delay near its target
//! under overload, adaptive LIFO serves most requests fast where FIFO serves all late,
//! every request still ends exactly once, and the live backends apply the same code (shed
//! fractions live as simulated, and as M/M/1+D predicts).

mod common;

use common::{assert_agrees, run_default, scenario, values};
use lbsim::metrics::{Metric, RunMetrics};
use lbsim::scenario::Scenario;
use lbsim::sim::Run;

/// Runs replication `rep` of strategy entry `k` (with its policy, if any).
fn sim(s: &Scenario, k: usize, rep: u64) -> RunMetrics {
    Run::entry(s, &s.strategies[k], rep).metrics()
}

/// Every measured request ended exactly one way.
fn assert_ends_once(m: &RunMetrics) {
    let ended = m.latency.len() + m.rejected + m.unroutable + m.failed + m.client.timed_out;
    assert_eq!(m.arrived, ended, "arrived vs ended: {:?}", m.client);
}

/// One single-worker server (exponential service, mean 10 ms: μ = 100/s) at Poisson
/// arrival rate `rate`, its queue under `admission` (the body of `[servers.admission]`),
/// behind round robin followed by `policy`.
fn one_server(rate: f64, admission: &str, policy: &str) -> Scenario {
    server_of(0.01, rate, admission, policy)
}

/// [`one_server`] with a mean service time of `mean` seconds.
fn server_of(mean: f64, rate: f64, admission: &str, policy: &str) -> Scenario {
    scenario(&format!(
        r#"
name = "admission"
duration = 200
warmup = 5
replications = 8
[arrivals]
process = "poisson"
rate = {rate}
[[servers]]
name = "s"
service = {{ dist = "exponential", mean = {mean} }}
[servers.admission]
{admission}
[[strategies]]
kind = "round_robin"
{policy}
"#
    ))
}

/// M/M/1+D: one FIFO worker whose queued requests are dropped once they have waited `d`.
/// Dropped requests take no service, so a request is served exactly when the work ahead
/// of it at arrival (the virtual waiting time V) is at most `d`, as in the M/M/1 queue
/// with deterministic impatience (Baccelli, Boyer & Hébuterne, J. Appl. Prob. 21(1),
/// 1984); dropping when a worker would start it (as here) or at the deadline serves the
/// same requests. Level crossing gives V's density π0 λ e^{−(μ−λ)x} below `d` and
/// π0 λ e^{−(μ−λ)d} e^{−μ(x−d)} above, so by PASTA the dropped fraction is
/// P(V > d) = π0 (λ/μ) e^{−(μ−λ)d}, with π0 from the normalisation. Valid for any ρ.
fn mm1_plus_d_drop(lambda: f64, mu: f64, d: f64) -> f64 {
    let a = mu - lambda;
    let tail = (-a * d).exp();
    let body = if a.abs() < 1e-12 {
        lambda * d
    } else {
        lambda * (1.0 - tail) / a
    };
    let pi0 = 1.0 / (1.0 + body + lambda * tail / mu);
    pi0 * lambda / mu * tail
}

#[test]
fn queue_timeout_on_mm1_drops_what_mm1_plus_d_predicts() {
    // Below, near and above capacity: the formula holds at any load.
    for (rate, d) in [(80.0, 0.02), (100.0, 0.01), (150.0, 0.03)] {
        let theory = mm1_plus_d_drop(rate, 100.0, d);
        let s = one_server(rate, &format!("queue_timeout = {d}"), "");
        let r = run_default(&s);
        assert_agrees(
            &format!("dropped at rho {} d {d}", rate / 100.0),
            &values(&r, 0, Metric::ShedFraction),
            theory,
        );
        // Conservation: every request arrived is served or dropped, and dropped ones are
        // the only refusals.
        let m = sim(&s, 0, 0);
        assert_ends_once(&m);
        assert_eq!(m.rejected, m.shed);
        assert_eq!(m.arrived, m.latency.len() + m.shed);
        // Served requests waited at most d (the wait histogram is exact to 3 digits).
        assert!(m.wait.max() as f64 * 1e-9 <= d * 1.001, "{}", m.wait.max());
        if rate < 100.0 {
            // Fewer than M/M/1's share of waits beyond d, ρ e^{−(μ−λ)d}: dropping
            // shortens the queue behind.
            assert!(theory < rate / 100.0 * (-(100.0 - rate) * d).exp());
        }
        // Under a policy that adds nothing the same requests are dropped.
        let p = one_server(
            rate,
            &format!("queue_timeout = {d}"),
            "[strategies.policy]\ncancel = false\n",
        );
        let b = sim(&p, 0, 0);
        assert_ends_once(&b);
        assert_eq!((m.shed, m.latency_sum), (b.shed, b.latency_sum));
    }
}

#[test]
fn a_dropped_attempt_is_refused_and_may_be_retried() {
    let s = one_server(
        150.0,
        "queue_timeout = 0.02",
        "[strategies.policy.retry]\nmax_attempts = 2\nretry_on = [\"rejected\"]\nbase_interval = 0.001\n",
    );
    let m = sim(&s, 0, 0);
    assert_ends_once(&m);
    assert!(m.shed > 0 && m.client.retries > 0, "{:?}", m.client);
    // Each request is dropped at most twice (two attempts), and only a request whose
    // retry was dropped too ends refused.
    assert!(m.rejected < m.shed && m.shed <= 2 * m.arrived);
    assert_eq!(m.client.attempts, m.arrived + m.client.retries);
}

/// M/M/1 with μ = 10 000/s (service mean 0.1 ms) at ρ = 1.5, 4 replications of 20 s,
/// its queue under `admission`.
fn fast_overloaded(admission: &str) -> Scenario {
    scenario(&format!(
        r#"
name = "codel"
duration = 20
warmup = 1
replications = 4
[arrivals]
process = "poisson"
rate = 15000
[[servers]]
name = "s"
service = {{ dist = "exponential", mean = 0.0001 }}
[servers.admission]
{admission}
[[strategies]]
kind = "round_robin"
"#
    ))
}

#[test]
fn codel_holds_the_standing_queue_delay_near_its_target_under_overload() {
    // A queue timeout of 1 s alone lets every served request wait about 1 s. CoDel
    // (folly's defaults: target 5 ms, interval 100 ms, here 50 service times) finds an
    // interval's shortest wait above the target and sheds from the next on: a request
    // that waited more than twice the target is dropped, so the head of the queue stays
    // just under 10 ms old and every served request waited between the target (the
    // standing queue) and twice it. The head's age is a random walk pushed back at
    // 2 × target; CoDel keeps shedding only while its dips within an interval stay above
    // the target, which needs a target of many service times: with 1 ms services and
    // the same target the dips reach under 5 ms most intervals, shedding pauses every
    // other interval, and served requests wait 18 ms on average (measured).
    let t = run_default(&fast_overloaded("queue_timeout = 1"));
    let codel = fast_overloaded("queue_timeout = 1\ncodel = { target = 0.005, interval = 0.1 }");
    let c = run_default(&codel);
    let est = |r, m| common::reported(r, 0, m);
    let (tw, cw, c99) = (
        est(&t, Metric::WaitMean),
        est(&c, Metric::WaitMean),
        est(&c, Metric::WaitP99),
    );
    println!("mean wait: timeout only {tw:?}, codel {cw:?}; codel p99 {c99:?}");
    // (Less the first second after the warm-up, while the queue builds up.)
    assert!(tw.low > 0.9, "{tw:?}");
    assert!(cw.low > 0.005 && cw.high <= 0.010, "{cw:?}");
    // Only the first request of each interval (1 in about 1000) may have waited longer.
    assert!(c99.high <= 0.0101, "{c99:?}");
    // The worker never idles: goodput is the capacity, 10 000/s (to 1%: requests of the
    // window served in the drain after it add at most 10 ms of work).
    let ct = est(&c, Metric::Throughput);
    assert!((ct.mean / 10_000.0 - 1.0).abs() < 0.01, "{ct:?}");
    let m = sim(&codel, 0, 0);
    assert_ends_once(&m);
    assert_eq!(m.rejected, m.shed);
}

#[test]
fn adaptive_lifo_lowers_the_median_under_overload() {
    // ρ = 1.2 with a 200 ms queue timeout: first in, first out, a served request has
    // waited close to the timeout; newest first (once the queue has held someone for
    // 50 ms), most are served at once and the oldest are the ones that expire.
    let fifo = one_server(120.0, "queue_timeout = 0.2", "");
    let lifo = one_server(
        120.0,
        "queue_timeout = 0.2\nadaptive_lifo = { after = 0.05 }",
        "",
    );
    let (f, l) = (run_default(&fifo), run_default(&lifo));
    let p50 = |r| common::reported(r, 0, Metric::LatencyP50);
    let (fp, lp) = (p50(&f), p50(&l));
    println!("p50 fifo {fp:?} lifo {lp:?}");
    assert!(lp.high < fp.low / 4.0, "{lp:?} vs {fp:?}");
    // The cost: what LIFO leaves behind all expires, so the queue runs empty now and
    // then and the worker idles — a few percent of goodput here.
    let tp = |r| common::reported(r, 0, Metric::Throughput);
    let (ft, lt) = (tp(&f), tp(&l));
    println!("throughput fifo {ft:?} lifo {lt:?}");
    assert!(
        lt.mean < ft.mean && lt.mean > 0.9 * ft.mean,
        "{lt:?} vs {ft:?}"
    );
    for k in 0..2 {
        assert_ends_once(&sim(&lifo, 0, k));
    }
}

#[test]
fn bad_admission_is_refused_naming_the_file_and_field() {
    let src = |admission: &str| {
        format!(
            "duration = 5\n[arrivals]\nprocess = \"poisson\"\nrate = 10\n[[servers]]\nname = \"s\"\nservice = {{ dist = \"exponential\", mean = 0.01 }}\n[servers.admission]\n{admission}\n[[strategies]]\nkind = \"round_robin\"\n"
        )
    };
    for (admission, field) in [
        ("queue_timeout = -1", "servers[0].admission.queue_timeout"),
        (
            "queue_timeout = 1e-12",
            "servers[0].admission.queue_timeout",
        ),
        ("", "servers[0].admission"),
        (
            "codel = { target = 0 }",
            "servers[0].admission.codel.target",
        ),
        (
            "codel = { interval = inf }",
            "servers[0].admission.codel.interval",
        ),
        (
            "adaptive_lifo = { after = -0.1 }",
            "servers[0].admission.adaptive_lifo.after",
        ),
        ("lifo = true", "lifo"),
    ] {
        let e = Scenario::from_source(std::path::Path::new("adm.toml"), &src(admission))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("adm.toml") && e.contains(field),
            "{admission}: {e}"
        );
    }
    // Adaptive LIFO alone drops nothing: it does not make an overloaded queue stable.
    let overloaded = src("adaptive_lifo = {}").replace("rate = 10", "rate = 150");
    let e = Scenario::from_source(std::path::Path::new("adm.toml"), &overloaded)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unstable"), "{e}");
    assert!(
        Scenario::from_source(
            std::path::Path::new("adm.toml"),
            &src("queue_timeout = 0.1").replace("rate = 10", "rate = 150")
        )
        .is_ok()
    );
    // So with load sweeps beyond capacity.
    let swept = |admission: &str| {
        Scenario::from_source(
            std::path::Path::new("adm.toml"),
            &format!("{}[sweep]\nload = [0.5, 1.5]\n", src(admission)),
        )
    };
    assert!(swept("codel = {}").is_ok());
    let e = swept("adaptive_lifo = {}").unwrap_err().to_string();
    assert!(e.contains("sweep.load"), "{e}");
}

#[test]
fn live_mode_refuses_admission_control_on_backends_it_did_not_start() {
    // Backends given with --backends may not apply it: refused with the reason.
    let s = one_server(50.0, "queue_timeout = 0.1", "");
    let opts = lbsim::live::LiveOptions {
        backends: Some(vec!["127.0.0.1:9".parse().unwrap()]),
        ..Default::default()
    };
    let Err(e) = lbsim::live::replay(&s, &opts) else {
        panic!("live mode replayed [servers.admission] on backends it did not start");
    };
    let e = e.to_string();
    assert!(
        e.contains("[servers.admission]") && e.contains("--backends") && e.contains("fix"),
        "{e}"
    );
}

/// Replays `s` live (backends started in-process apply its admission control) at time
/// scale 2 within 90 s, and judges it against 10 simulated replications; replayed again
/// (twice at most) while the verdict refuses for lag: a replay lagged far beyond the gate
/// sends in bunches, which shed more, so its shed fraction is not judged.
fn live(s: &Scenario) -> (lbsim::live::LiveRun, lbsim::live::verdict::Verdict) {
    let opts = lbsim::live::LiveOptions {
        time_scale: 2.0,
        io_timeout: std::time::Duration::from_secs(5),
        ..Default::default()
    };
    let mut last = None;
    for _ in 0..3 {
        let run =
            common::replay_within(s, &opts, std::time::Duration::from_secs(90)).expect("replay");
        let v = common::verdict_of(s, &run, 10);
        let refused = v.refusal().is_some();
        last = Some((run, v));
        if !refused {
            break;
        }
    }
    last.expect("one attempt ran")
}

/// The verdict's row of `metric` for the only strategy.
fn row<'a>(
    v: &'a lbsim::live::verdict::Verdict,
    metric: &str,
) -> &'a lbsim::live::verdict::Comparison {
    v.row("round_robin", metric)
        .unwrap_or_else(|| panic!("no row {metric}"))
}

/// M/M/1 at ρ = 0.8 (mean service 5 ms), queued requests dropped after 10 ms.
const QUEUE_TIMEOUT_LIVE: &str = r#"
name = "admission-live"
seed = 4
duration = 6
warmup = 1
replications = 10
[arrivals]
process = "poisson"
rate = 160
[[servers]]
name = "s"
service = { dist = "exponential", mean = 0.005 }
[servers.admission]
queue_timeout = 0.01
[[strategies]]
kind = "round_robin"
"#;

#[test]
fn queue_timeout_sheds_live_what_the_simulator_and_mm1_plus_d_say() {
    // M/M/1 at ρ = 0.8 (mean service 5 ms), queued requests dropped after 10 ms: the
    // live backend applies the simulator's QueueControl, its durations at the time scale
    // (20 ms wall-clock at scale 2), and answers a dropped call `Rejected` with `shed`.
    // Planted checks: a backend that ignores the control sheds nothing, and one that
    // applies it unscaled (10 ms wall-clock) sheds 0.28 (measured); both fail below.
    let s = scenario(QUEUE_TIMEOUT_LIVE);
    let theory = mm1_plus_d_drop(160.0, 200.0, 0.01);
    let (run, v) = live(&s);
    let m = &run.strategies[0].metrics;
    println!(
        "live: {} shed, {} rejected of {} requests; M/M/1+D {theory:.4}",
        m.shed, m.rejected, m.arrived
    );
    assert!(m.shed > 0, "shed live");
    // Without a client policy a shed request is a refusal, and the only one.
    assert_eq!(m.shed, m.rejected);
    let r = row(&v, "shed_fraction");
    assert!(v.judged(r) && r.passed(), "{r:?}");
    // The closed form, within the verdict's tolerance (3 standard deviations of the
    // simulated replications), on both sides.
    let allowed = r.tolerance.allowed(theory);
    println!("shed_fraction allowed ±{allowed:.4}: {r:?}");
    assert!(
        (r.live - theory).abs() <= allowed,
        "live {} vs {theory}",
        r.live
    );
    assert!(
        (r.sim.mean - theory).abs() <= allowed,
        "sim {} vs {theory}",
        r.sim.mean
    );
    for metric in ["latency_mean", "error_fraction"] {
        let r = row(&v, metric);
        assert!(!v.judged(r) || r.passed(), "{r:?}");
    }
}

#[test]
fn backends_started_apart_apply_admission_when_the_operator_says_so() {
    // As `lbsim serve SCENARIO --time-scale 2` and `lbsim live --backends …
    // --backends-apply-admission --time-scale 2` do.
    let s = scenario(QUEUE_TIMEOUT_LIVE);
    let cluster = lbsim::live::Cluster::start(
        &s,
        std::net::Ipv4Addr::LOCALHOST.into(),
        None,
        lbsim::live::Protocol::Binary,
        lbsim::live::Transport::Framed,
    )
    .expect("backends");
    cluster.set_admission(&s, 2.0);
    let opts = lbsim::live::LiveOptions {
        time_scale: 2.0,
        io_timeout: std::time::Duration::from_secs(5),
        backends: Some(cluster.addrs()),
        backends_apply_admission: true,
        ..Default::default()
    };
    // A lagged replay sends in bunches, which sheds more than the schedule would (CI at
    // load: lag p99 3.9 ms, shed 0.27 live against 0.19): replayed again, as other live
    // tests are, while the verdict refuses to judge for lag.
    let v = common::judged_retrying(
        || common::replay_within(&s, &opts, std::time::Duration::from_secs(90)).expect("replay"),
        |_| {},
        |run| common::verdict_of(&s, run, 10),
    );
    let r = row(&v, "shed_fraction");
    assert!(r.live > 0.1 && v.judged(r) && r.passed(), "{r:?}");
}

#[test]
fn codel_under_overload_sheds_live_as_simulated() {
    // Offered 1.2 times the capacity: folly's CoDel (target 5 ms, interval 50 ms) keeps
    // the standing queue short by shedding what waited over 10 ms once no request of an
    // interval got through within the target; at least 1/6 of the requests must go.
    let s = scenario(
        r#"
name = "codel-live"
seed = 6
duration = 6
warmup = 1
replications = 10
[arrivals]
process = "poisson"
rate = 240
[[servers]]
name = "s"
service = { dist = "exponential", mean = 0.005 }
[servers.admission]
codel = { target = 0.005, interval = 0.05 }
[[strategies]]
kind = "round_robin"
"#,
    );
    let (run, v) = live(&s);
    let m = &run.strategies[0].metrics;
    println!("live: {} shed of {} requests", m.shed, m.arrived);
    let r = row(&v, "shed_fraction");
    assert!(
        r.live > 1.0 / 6.0 - 0.02 && r.sim_replayed > 1.0 / 6.0 - 0.02,
        "{r:?}"
    );
    assert!(v.judged(r) && r.passed(), "{r:?}");
    // The queue stays short on both sides: the mean response time agrees.
    let l = row(&v, "latency_mean");
    assert!(!v.judged(l) || l.passed(), "{l:?}");
}

#[test]
fn admission_control_runs_are_the_same_whatever_the_thread_count() {
    let s = one_server(
        130.0,
        "queue_timeout = 0.05\ncodel = { target = 0.005, interval = 0.05 }\nadaptive_lifo = { after = 0.02 }",
        "",
    );
    let runs: Vec<_> = [1, 3]
        .into_iter()
        .map(|threads| {
            let r = lbsim::runner::run(
                &s,
                &lbsim::runner::RunOptions {
                    threads: Some(threads),
                    ..Default::default()
                },
            )
            .expect("run");
            let bits = |m| {
                values(&r, 0, m)
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            (bits(Metric::ShedFraction), bits(Metric::LatencyMean))
        })
        .collect();
    assert!(runs[0].0.iter().all(|&v| f64::from_bits(v) > 0.0));
    assert_eq!(runs[0], runs[1]);
}
