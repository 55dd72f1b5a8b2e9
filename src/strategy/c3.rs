//! C3: Suresh, Canini, Schmid, Feldmann, "C3: Cutting Tail Latency in Cloud Data Stores
//! via Adaptive Replica Selection", NSDI 2015 (Cassandra's replica selection).
//!
//! **Replica ranking.** Servers piggyback on every reply their queue size `q` and the
//! request's service time `1/μ` (here: the reply's [`ServerLoad`]); the client keeps
//! exponentially weighted moving averages of them and of the response times `R` it sees,
//! and counts its own outstanding requests `os` per server. It sends each request to the
//! server of lowest
//!
//! ```text
//!   Ψ = R̄ − 1/μ̄ + q̂³ / μ̄,   with   q̂ = 1 + os · n + q̄,
//! ```
//!
//! where `n` (`clients`) compensates for the other clients' requests in flight. The cube
//! penalises long queues far more than slow service, which is what keeps clients from
//! herding onto the fastest server. A server without feedback yet ranks first (Ψ = 0,
//! explored); ties go to a random one of the tied.
//!
//! **Rate control.** Each client limits its sending rate to each server with a cubic
//! controller (as TCP CUBIC): per interval `δ` (`rate_interval`) it may send `srate`
//! requests to a server; on each reply it compares `srate` with the server's receive
//! rate `rrate` (replies in the last interval): below it, `srate` grows along
//! `γ (Δt − ∛(β R₀ / γ))³ + R₀` (`Δt` in ms since the last decrease, `R₀` the rate
//! before it), by at most `s_max` per step; above it, and at least `hysteresis` after the
//! last decrease, `srate` falls to `(1 − β) srate`. Ranking skips servers over their rate.
//!
//! Defaults: `alpha` = 0.9 (weight of the history in each EWMA), `δ` = 20 ms, `β` = 0.2
//! and `s_max` = 10 follow the paper; `γ` = 4·10⁻⁶ (the rate regains `R₀` = 20 about
//! 100 ms after a decrease), `hysteresis` = 2δ and `clients` = 1 are lbsim's. Left out:
//! the backpressure queue — when every server is over its rate, C3 holds the request
//! until a limiter admits it; here it goes to the best-ranked server at once (the
//! simulator's balancers have no client-side queue).

use rand::RngExt;

use super::registry::{About, Kind, Knob, PickCost, Reads, Split, Ty};
use super::spec::SpecError;
use super::{Backend, Outcome, PickContext, ServerLoad, Signals, Strategy};
use crate::rng::SimRng;
use crate::time::Nanos;

/// C3's knobs (see the module documentation for their sources).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct C3Config {
    /// Weight of the history in each EWMA (the new sample gets `1 − alpha`).
    pub alpha: f64,
    /// Clients sharing the servers (`n` in `q̂ = 1 + os·n + q̄`).
    pub clients: u32,
    /// Whether the cubic rate control is on.
    pub rate_control: bool,
    /// Rate interval `δ`.
    pub rate_interval: Nanos,
    /// Multiplicative decrease `β`.
    pub beta: f64,
    /// Cubic growth `γ`, in requests per interval per ms³.
    pub gamma: f64,
    /// Largest increase of `srate` per step (requests per interval).
    pub s_max: f64,
    /// Least time between two decreases.
    pub hysteresis: Nanos,
}

impl Default for C3Config {
    fn default() -> Self {
        C3Config {
            alpha: 0.9,
            clients: 1,
            rate_control: true,
            rate_interval: Nanos::from_secs_f64(0.020),
            beta: 0.2,
            gamma: 4e-6,
            s_max: 10.0,
            hysteresis: Nanos::from_secs_f64(0.040),
        }
    }
}

/// What one client knows of one server.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Feedback {
    /// Whether any reply came back yet.
    seen: bool,
    /// EWMA of response times (ns).
    response: f64,
    /// EWMA of service times (ns), `1/μ̄`.
    service: f64,
    /// EWMA of queue sizes.
    queue: f64,
}

/// A server's rate limiter.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Limiter {
    /// Requests allowed per interval.
    srate: f64,
    /// Replies received in the last full interval.
    rrate: f64,
    /// Start of the current interval.
    window: Nanos,
    sent: u32,
    received: u32,
    /// Rate before the last decrease, and when it happened.
    r0: f64,
    decreased: Nanos,
}

/// The C3 balancer of one client.
#[derive(Debug)]
pub struct C3 {
    cfg: C3Config,
    feedback: Vec<Feedback>,
    limits: Vec<Limiter>,
    rng: SimRng,
}

impl C3 {
    /// C3 over `n` backends (grows on demand), ties drawn from `rng`.
    pub fn new(cfg: C3Config, n: usize, rng: SimRng) -> C3 {
        let mut c = C3 {
            cfg,
            feedback: Vec::new(),
            limits: Vec::new(),
            rng,
        };
        c.grow(n);
        c
    }

    fn grow(&mut self, n: usize) {
        if self.feedback.len() < n {
            let l = Limiter {
                srate: self.cfg.s_max,
                rrate: 0.0,
                window: Nanos::ZERO,
                sent: 0,
                received: 0,
                r0: self.cfg.s_max,
                decreased: Nanos::ZERO,
            };
            self.feedback.resize(n, Feedback::default());
            self.limits.resize(n, l);
        }
    }

    /// Server `i`'s score Ψ given `os` requests of this client outstanding there.
    pub fn score(&self, i: usize, os: u32) -> f64 {
        let f = self.feedback.get(i).copied().unwrap_or_default();
        if !f.seen {
            return 0.0;
        }
        let q = 1.0 + f64::from(os) * f64::from(self.cfg.clients) + f.queue;
        f.response - f.service + q * q * q * f.service
    }

    /// Moves server `i`'s limiter to the interval holding `now`.
    fn roll(&mut self, i: usize, now: Nanos) {
        let dt = self.cfg.rate_interval.0.max(1);
        let l = &mut self.limits[i];
        if now.0 >= l.window.0 + dt {
            let elapsed = (now.0 - l.window.0) / dt;
            l.rrate = if elapsed == 1 {
                f64::from(l.received)
            } else {
                0.0
            };
            l.window = Nanos(l.window.0 + elapsed * dt);
            l.sent = 0;
            l.received = 0;
        }
    }

    /// Whether server `i` may take one more request now.
    fn within_rate(&mut self, i: usize, now: Nanos) -> bool {
        if !self.cfg.rate_control {
            return true;
        }
        self.roll(i, now);
        let l = &self.limits[i];
        f64::from(l.sent) < l.srate
    }

    /// The cubic update on a reply from server `i`.
    fn adapt(&mut self, i: usize, now: Nanos) {
        self.roll(i, now);
        let cfg = self.cfg;
        let l = &mut self.limits[i];
        l.received += 1;
        if l.srate < l.rrate {
            let dt_ms = (now - l.decreased).as_secs_f64() * 1e3;
            let k = (cfg.beta * l.r0 / cfg.gamma).cbrt();
            let cubic = cfg.gamma * (dt_ms - k).powi(3) + l.r0;
            l.srate = cubic.clamp(l.srate, l.srate + cfg.s_max);
        } else if l.srate > l.rrate && now.saturating_sub(l.decreased) >= cfg.hysteresis {
            l.r0 = l.srate;
            l.srate = ((1.0 - cfg.beta) * l.srate).max(1.0);
            l.decreased = now;
        }
    }

    /// Server `i`'s sending rate (requests per interval), for tests and traces.
    pub fn send_rate(&self, i: usize) -> f64 {
        self.limits.get(i).map_or(0.0, |l| l.srate)
    }
}

fn ewma(old: f64, sample: f64, alpha: f64, first: bool) -> f64 {
    if first {
        sample
    } else {
        alpha * old + (1.0 - alpha) * sample
    }
}

impl Strategy for C3 {
    fn pick(&mut self, backends: &[Backend], ctx: &PickContext<'_>) -> Option<usize> {
        self.grow(backends.len());
        // Best within its rate, else best overall (no backpressure queue, see above).
        let mut best: [Option<(f64, usize)>; 2] = [None, None];
        let mut ties = [0u32; 2];
        for (i, b) in backends.iter().enumerate().filter(|(_, b)| b.up) {
            let s = self.score(i, b.in_flight);
            let within = self.within_rate(i, ctx.now);
            for (k, on) in [(0, within), (1, true)] {
                if !on {
                    continue;
                }
                match best[k] {
                    Some((v, _)) if s > v => {}
                    Some((v, _)) if s == v => {
                        ties[k] += 1;
                        if self.rng.random_range(0..ties[k]) == 0 {
                            best[k] = Some((s, i));
                        }
                    }
                    _ => {
                        best[k] = Some((s, i));
                        ties[k] = 1;
                    }
                }
            }
        }
        best[0].or(best[1]).map(|(_, i)| i)
    }

    fn on_dispatch(&mut self, backend: usize, now: Nanos) {
        self.grow(backend + 1);
        if self.cfg.rate_control {
            self.roll(backend, now);
            self.limits[backend].sent += 1;
        }
    }

    fn on_complete(&mut self, backend: usize, latency: Nanos, outcome: Outcome, now: Nanos) {
        self.grow(backend + 1);
        if outcome != Outcome::Ok {
            return;
        }
        let f = &mut self.feedback[backend];
        let first = !f.seen;
        f.response = ewma(f.response, latency.0 as f64, self.cfg.alpha, first);
        f.seen = true;
        if self.cfg.rate_control {
            self.adapt(backend, now);
        }
    }

    fn signals(&self) -> Signals {
        Signals {
            probes: false,
            reply_loads: true,
        }
    }

    fn on_reply_load(&mut self, backend: usize, load: &ServerLoad, _now: Nanos) {
        self.grow(backend + 1);
        let alpha = self.cfg.alpha;
        let f = &mut self.feedback[backend];
        let first = !f.seen;
        f.service = ewma(f.service, load.service_time.0 as f64, alpha, first);
        f.queue = ewma(f.queue, f64::from(load.queued), alpha, first);
    }
}

/// Parameters of `kind = "c3"` (see the module documentation for their sources).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct C3Params {
    /// Weight of the history in each EWMA. Default 0.9 (the paper's).
    pub alpha: f64,
    /// Clients sharing the servers (n in q̂ = 1 + os·n + q). Default 1.
    pub clients: u32,
    /// Cubic rate control on. Default true.
    pub rate_control: bool,
    /// Rate interval δ, seconds. Default 0.02 (the paper's).
    pub rate_interval: f64,
    /// Multiplicative decrease β, in (0, 1). Default 0.2 (the paper's).
    pub beta: f64,
    /// Cubic growth γ, requests per interval per ms³. Default 4e-6.
    pub gamma: f64,
    /// Largest rate increase per step, requests per interval. Default 10 (the paper's).
    pub s_max: f64,
    /// Least time between two decreases, seconds. Default 0.04.
    pub hysteresis: f64,
}

impl Default for C3Params {
    fn default() -> C3Params {
        let c = C3Config::default();
        C3Params {
            alpha: c.alpha,
            clients: c.clients,
            rate_control: c.rate_control,
            rate_interval: c.rate_interval.as_secs_f64(),
            beta: c.beta,
            gamma: c.gamma,
            s_max: c.s_max,
            hysteresis: c.hysteresis.as_secs_f64(),
        }
    }
}

impl Kind for C3 {
    type Params = C3Params;
    const ABOUT: About = About {
        kind: "c3",
        aliases: &[],
        follows: "C3 (Suresh et al., NSDI 2015): rank by R − 1/μ + (1 + os·n + q)³/μ from reply feedback, cubic rate control per server",
        knobs: &[
            Knob::new("alpha", Ty::Float).meaning("EWMA history weight"),
            Knob::new("clients", Ty::Int),
            Knob::new("rate_control", Ty::Bool),
            Knob::seconds("rate_interval"),
            Knob::new("beta", Ty::Float),
            Knob::new("gamma", Ty::Float).meaning("per ms³"),
            Knob::new("s_max", Ty::Float).meaning("requests per interval"),
            Knob::seconds("hysteresis"),
        ],
        reads: Reads {
            reply_loads: true,
            ..Reads::NOTHING
        },
        split: Split::Dynamic,
    };
    fn validate(p: &C3Params, _: usize) -> Result<(), SpecError> {
        if !(0.0..1.0).contains(&p.alpha) {
            return Err(SpecError::new(
                "alpha",
                format!("is {}", p.alpha),
                "use a weight in [0, 1), e.g. 0.9 (the paper's)",
            ));
        }
        if p.clients == 0 {
            return Err(SpecError::new("clients", "is 0", "use 1 or more clients"));
        }
        if !(p.beta > 0.0 && p.beta < 1.0) {
            return Err(SpecError::new(
                "beta",
                format!("is {}", p.beta),
                "use a decrease in (0, 1), e.g. 0.2 (the paper's)",
            ));
        }
        for (field, v) in [("gamma", p.gamma), ("s_max", p.s_max)] {
            if !(v.is_finite() && v > 0.0 && v <= 1e9) {
                return Err(SpecError::new(
                    field,
                    format!("is {v}"),
                    format!("use a positive `{field}` up to 1e9 (defaults: gamma 4e-6, s_max 10)"),
                ));
            }
        }
        SpecError::seconds("rate_interval", p.rate_interval, false)?;
        if p.rate_interval < crate::scenario::cost::MIN_INTERVAL {
            return Err(SpecError::new(
                "rate_interval",
                format!("is {}", p.rate_interval),
                "use 1e-6 s or more (the paper's is 0.02)",
            ));
        }
        SpecError::seconds("hysteresis", p.hysteresis, true)
    }
    fn build(p: &C3Params, n: usize, rng: SimRng) -> C3 {
        C3::new(
            C3Config {
                alpha: p.alpha,
                clients: p.clients,
                rate_control: p.rate_control,
                rate_interval: Nanos::from_secs_f64(p.rate_interval),
                beta: p.beta,
                gamma: p.gamma,
                s_max: p.s_max,
                hysteresis: Nanos::from_secs_f64(p.hysteresis),
            },
            n,
            rng,
        )
    }
    fn cost(_: &C3Params) -> PickCost {
        PickCost::SCAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Stream, stream_rng};

    fn c3(cfg: C3Config, n: usize) -> C3 {
        C3::new(cfg, n, stream_rng(1, 0, Stream::Strategy, 0))
    }

    fn reply(c: &mut C3, i: usize, queued: u32, service_us: u64, latency_us: u64, t: u64) {
        let load = ServerLoad {
            in_flight: queued + 1,
            queued,
            service_time: Nanos(service_us * 1000),
            latency: Nanos::ZERO,
        };
        c.on_reply_load(i, &load, Nanos(t));
        c.on_complete(i, Nanos(latency_us * 1000), Outcome::Ok, Nanos(t));
    }

    fn no_rate() -> C3Config {
        C3Config {
            rate_control: false,
            ..C3Config::default()
        }
    }

    #[test]
    fn score_is_the_cubic_queue_estimate() {
        let mut c = c3(
            C3Config {
                clients: 3,
                ..no_rate()
            },
            2,
        );
        reply(&mut c, 0, 2, 4, 30, 0);
        // R = 30 µs, 1/μ = 4 µs, q̂ = 1 + 2·3 + 2 = 9: Ψ = 30 − 4 + 729 · 4 µs.
        assert_eq!(c.score(0, 2), 30_000.0 - 4_000.0 + 729.0 * 4_000.0);
        // EWMAs: weight 0.9 on the history.
        reply(&mut c, 0, 0, 14, 130, 1);
        let (r, s, q) = (0.9 * 30e3 + 0.1 * 130e3, 0.9 * 4e3 + 0.1 * 14e3, 0.9 * 2.0);
        let qh: f64 = 1.0 + q;
        assert!((c.score(0, 0) - (r - s + qh.powi(3) * s)).abs() < 1e-6);
        assert_eq!(c.score(1, 5), 0.0, "no feedback yet");
    }

    #[test]
    fn ranks_by_queue_cubed_over_a_faster_server() {
        let mut c = c3(no_rate(), 3);
        // Server 0 serves in 1 ms but has 4 waiting; server 1 serves in 3 ms with none:
        // Ψ₀ = 5 − 1 + 125·1 = 129 ms, Ψ₁ = 3 − 3 + 1·3 = 3 ms. Server 2 is down.
        reply(&mut c, 0, 4, 1000, 5000, 0);
        reply(&mut c, 1, 0, 3000, 3000, 0);
        reply(&mut c, 2, 0, 1, 1, 0);
        let mut b = vec![Backend::new(1); 3];
        b[2].up = false;
        let ctx = PickContext::new(Nanos(1), 0);
        assert_eq!(c.pick(&b, &ctx), Some(1));
        // Three of our own requests outstanding at server 1: q̂ = 4, Ψ₁ = 192 ms > Ψ₀.
        b[1].in_flight = 3;
        assert_eq!(c.pick(&b, &ctx), Some(0));
        b[0].up = false;
        b[1].up = false;
        assert_eq!(c.pick(&b, &ctx), None);
    }

    #[test]
    fn unexplored_servers_first_ties_at_random() {
        let mut c = c3(no_rate(), 4);
        reply(&mut c, 0, 0, 1, 1, 0);
        let b = vec![Backend::new(1); 4];
        let mut seen = [0; 4];
        for t in 0..300 {
            seen[c.pick(&b, &PickContext::new(Nanos(t), 0)).unwrap()] += 1;
        }
        assert_eq!(seen[0], 0);
        assert!(seen[1..].iter().all(|&k| k > 50), "{seen:?}");
    }

    #[test]
    fn rate_control_decreases_then_grows_cubically() {
        let mut c = c3(C3Config::default(), 2);
        let ms = |x: f64| Nanos::from_secs_f64(x * 1e-3);
        // Interval 0: 10 sent (the initial rate), none back.
        for _ in 0..10 {
            c.on_dispatch(0, ms(1.0));
        }
        // Server 0 is at its rate: only server 1 may take the next request.
        assert!(!c.within_rate(0, ms(2.0)) && c.within_rate(1, ms(2.0)));
        // At 45 ms (two intervals on, so nothing received in the last one): rrate 0 <
        // srate 10, decrease to (1 − β) · 10 = 8.
        reply(&mut c, 0, 0, 1000, 1000, ms(45.0).0);
        assert_eq!(c.send_rate(0), 8.0);
        assert_eq!(c.limits[0].r0, 10.0);
        // Within the hysteresis: no second decrease.
        reply(&mut c, 0, 0, 1000, 1000, ms(50.0).0);
        assert_eq!(c.send_rate(0), 8.0);
        // Interval 60–80 ms: nine replies (rrate of 40–60 ms was 2 < 8, but the last
        // decrease is under 40 ms old: no change).
        for k in 0..9 {
            reply(&mut c, 0, 0, 1000, 1000, ms(61.0 + f64::from(k)).0);
        }
        assert_eq!(c.send_rate(0), 8.0);
        // At 85 ms rrate = 9 > srate = 8: cubic growth, 40 ms after the decrease, from
        // R₀ = 10, capped at s_max = 10 above the current rate.
        reply(&mut c, 0, 0, 1000, 1000, ms(85.0).0);
        let k = (0.2_f64 * 10.0 / 4e-6).cbrt();
        let cubic = 4e-6 * (40.0 - k).powi(3) + 10.0;
        assert!((cubic - 9.756).abs() < 1e-3, "{cubic}");
        assert!((c.send_rate(0) - cubic).abs() < 1e-9, "{}", c.send_rate(0));
    }
}
