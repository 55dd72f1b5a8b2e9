//! Finagle aperture load balancing (`Balancers.aperture`, "least loaded" within an
//! aperture): the balancer talks to a window of the backends — the aperture — whose size
//! follows load feedback, and picks within it by power of two choices (distinct, least
//! in flight).
//!
//! Exact semantics, after Finagle's `LoadBand`: on every dispatch and completion the
//! balancer's total in-flight count is folded into an exponential moving average with
//! time constant `smooth_win` (Finagle's `Ema`: weight `exp(-Δt / smooth_win)` on the old
//! value, default 5 s); if `ema / aperture ≥ high_load` (default 2.0) the aperture widens
//! by one, if `≤ low_load` (default 0.5) it narrows by one, within
//! `[min_aperture, backends]` (`min_aperture` default 1; it starts there).
//!
//! The window is deterministic aperture's contiguous slice of the backend ring: the
//! first `aperture` up backends from this balancer's coordinate, drawn once from its
//! random stream (with one balancer, a contiguous window; with several, windows spread
//! around the ring, as Finagle's deterministic aperture spreads clients).
//!
//! Cost: the window is kept between picks and grown or shrunk by one as the aperture
//! changes; it is rebuilt only after the balancer tells of a backend going up or down
//! ([`Strategy::on_view`]). A pick is O(1) amortised, not a walk over the aperture (which
//! follows the load: hundreds of backends on a large, busy cluster).

use rand::RngExt;

use super::SpecError;
use super::registry::{About, Kind, Knob, PickCost, Reads, Split, Ty};
use super::{Backend, Backends, Outcome, PickContext, Strategy};
use crate::rng::SimRng;
use crate::time::Nanos;

/// Finagle aperture knobs (defaults in [`ApertureConfig::default`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ApertureConfig {
    /// Narrow below this load per aperture member.
    pub low_load: f64,
    /// Widen at or above this load per aperture member.
    pub high_load: f64,
    /// Smallest aperture.
    pub min_aperture: usize,
    /// Time constant of the load average.
    pub smooth_win: Nanos,
}

impl Default for ApertureConfig {
    fn default() -> ApertureConfig {
        ApertureConfig {
            low_load: 0.5,
            high_load: 2.0,
            min_aperture: 1,
            smooth_win: Nanos(5_000_000_000),
        }
    }
}

/// Finagle aperture.
#[derive(Debug)]
pub struct Aperture {
    config: ApertureConfig,
    rng: SimRng,
    coordinate: Option<usize>,
    aperture: usize,
    n: usize,
    total: u64,
    ema: Option<(f64, Nanos)>,
    /// The first up backends from the coordinate, in ring order (the window of the last
    /// pick): at most `aperture` of them, fewer only when fewer are up.
    window: Vec<usize>,
    /// Ring positions (offsets from the coordinate) the window's walk has examined: where
    /// a wider aperture resumes it.
    walked: usize,
    /// A backend went up or down, or the backends changed, since the window was built.
    stale: bool,
}

impl Aperture {
    /// Aperture over `n` backends.
    pub fn new(config: ApertureConfig, n: usize, rng: SimRng) -> Aperture {
        Aperture {
            config,
            rng,
            coordinate: None,
            aperture: config.min_aperture.max(1).min(n.max(1)),
            n,
            total: 0,
            ema: None,
            window: Vec::new(),
            walked: 0,
            stale: true,
        }
    }

    /// Brings the window to the first `aperture` up backends from `start` in ring order
    /// (all of them if fewer are up), as a walk of the ring from `start` would find them:
    /// rebuilt when stale, else its last members dropped or the walk resumed.
    fn fit_window(&mut self, backends: &Backends, start: usize) {
        let n = backends.len();
        if self.stale {
            self.window.clear();
            self.walked = 0;
            self.stale = false;
        }
        if self.window.len() > self.aperture {
            self.window.truncate(self.aperture);
            // Resume after the new last member (its offset from `start`, plus one).
            self.walked = self
                .window
                .last()
                .map_or(0, |&i| (i + n - start % n) % n + 1);
        }
        while self.window.len() < self.aperture && self.walked < n {
            let i = (start + self.walked) % n;
            self.walked += 1;
            if backends.up(i) {
                self.window.push(i);
            }
        }
    }

    /// The current aperture size.
    pub fn size(&self) -> usize {
        self.aperture
    }

    fn adjust(&mut self, now: Nanos) {
        let x = self.total as f64;
        let ema = match self.ema {
            None => x,
            Some((old, at)) => {
                let w = (-((now - at).0 as f64) / (self.config.smooth_win.0 as f64).max(1.0)).exp();
                x * (1.0 - w) + old * w
            }
        };
        self.ema = Some((ema, now.max(self.ema.map_or(now, |e| e.1))));
        let per = ema / self.aperture as f64;
        if per >= self.config.high_load && self.aperture < self.n {
            self.aperture += 1;
        } else if per <= self.config.low_load && self.aperture > self.config.min_aperture.max(1) {
            self.aperture -= 1;
        }
    }
}

impl Strategy for Aperture {
    fn pick(&mut self, backends: &Backends, _ctx: &PickContext) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        if n != self.n {
            self.n = n;
            self.stale = true;
        }
        self.aperture = self.aperture.min(n);
        let start = *self
            .coordinate
            .get_or_insert_with(|| self.rng.random_range(0..n));
        self.fit_window(backends, start);
        let m = self.window.len();
        match m {
            0 => None,
            1 => Some(self.window[0]),
            _ => {
                let a = self.rng.random_range(0..m);
                let mut b = self.rng.random_range(0..m - 1);
                if b >= a {
                    b += 1;
                }
                let (x, y) = (self.window[a], self.window[b]);
                Some(if backends.in_flight(y) < backends.in_flight(x) {
                    y
                } else {
                    x
                })
            }
        }
    }

    fn indexes_view(&self) -> bool {
        true
    }

    /// Only a backend going up or down moves the window, not its requests in flight.
    fn indexes_in_flight(&self) -> bool {
        false
    }

    fn on_view(&mut self, _backend: usize, _view: &Backend) {
        self.stale = true;
    }

    fn on_dispatch(&mut self, _backend: usize, now: Nanos) {
        self.total += 1;
        self.adjust(now);
    }

    fn on_complete(&mut self, _backend: usize, _latency: Nanos, _outcome: Outcome, now: Nanos) {
        self.total = self.total.saturating_sub(1);
        self.adjust(now);
    }
}

/// Parameters of `kind = "aperture"`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApertureParams {
    /// Narrow the aperture at or below this load per member. Default 0.5.
    pub low_load: f64,
    /// Widen the aperture at or above this load per member. Default 2.0.
    pub high_load: f64,
    /// Smallest aperture. Default 1.
    pub min_aperture: usize,
    /// Time constant of the load average, seconds. Default 5 (Finagle).
    pub smooth_win: f64,
}

impl Default for ApertureParams {
    fn default() -> ApertureParams {
        ApertureParams {
            low_load: 0.5,
            high_load: 2.0,
            min_aperture: 1,
            smooth_win: 5.0,
        }
    }
}

impl Kind for Aperture {
    type Params = ApertureParams;
    const ABOUT: About = About {
        kind: "aperture",
        aliases: &[],
        follows: "Finagle aperture (deterministic window, P2C least loaded inside)",
        knobs: &[
            Knob::new("low_load", Ty::Float),
            Knob::new("high_load", Ty::Float)
                .meaning("requests in flight per backend in the aperture"),
            Knob::new("min_aperture", Ty::Int).unit("backends"),
            Knob::seconds("smooth_win"),
        ],
        reads: Reads::NOTHING,
        split: Split::Dynamic,
    };
    fn validate(p: &ApertureParams, n: usize) -> Result<(), SpecError> {
        let (low, high) = (p.low_load, p.high_load);
        if !(low.is_finite() && high.is_finite() && 0.0 <= low && low < high) {
            return Err(SpecError::new(
                "low_load",
                format!("low_load {low}, high_load {high}"),
                "use 0 ≤ low_load < high_load (Finagle: 0.5 and 2.0)",
            ));
        }
        if p.min_aperture == 0 || p.min_aperture > n {
            return Err(SpecError::new(
                "min_aperture",
                format!("is {} with {n} backends", p.min_aperture),
                format!("use 1 ≤ min_aperture ≤ {n}"),
            ));
        }
        SpecError::seconds("smooth_win", p.smooth_win, false)
    }
    fn build(p: &ApertureParams, n: usize, rng: SimRng) -> Aperture {
        Aperture::new(
            ApertureConfig {
                low_load: p.low_load,
                high_load: p.high_load,
                min_aperture: p.min_aperture,
                smooth_win: Nanos::from_secs_f64(p.smooth_win),
            },
            n,
            rng,
        )
    }
    fn cost(_: &ApertureParams) -> PickCost {
        PickCost::CONSTANT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Stream, stream_rng};
    use crate::strategy::Balancer;

    fn aperture(n: usize) -> Balancer {
        let rng = stream_rng(1, 0, Stream::Strategy, 0);
        let s = Aperture::new(ApertureConfig::default(), n, rng);
        Balancer::new(Box::new(s), &vec![1; n])
    }

    #[test]
    fn light_load_stays_on_one_backend_and_heavy_load_widens() {
        let mut b = aperture(10);
        // One request at a time: load 1 per member, between the bounds: aperture 1.
        let p = crate::strategy::testing::picks(&mut b, 100);
        assert!(p.iter().all(|&i| i == p[0]), "{p:?}");
        // 40 in flight, a second apart: the aperture widens until load ≤ 2 per member.
        for k in 0..40u64 {
            b.route(Nanos(1_000_000_000 * (k + 200)), 0).unwrap();
        }
        let used = b.backends().iter().filter(|x| x.in_flight > 0).count();
        assert!(used >= 9, "{used} backends used");
        // The window is contiguous from the coordinate.
        b.set_up(p[0], false);
        assert_ne!(b.route(Nanos(1_000_000_000 * 300), 0), Some(p[0]));
        for i in 0..10 {
            b.set_up(i, false);
        }
        assert_eq!(b.route(Nanos(1_000_000_000 * 301), 0), None);
    }

    /// The aperture as before the window was kept: rebuilt by a walk at every pick.
    struct Rewalk(Aperture);

    impl Strategy for Rewalk {
        fn pick(&mut self, backends: &Backends, ctx: &PickContext) -> Option<usize> {
            self.0.stale = true;
            self.0.pick(backends, ctx)
        }
        fn on_dispatch(&mut self, backend: usize, now: Nanos) {
            self.0.on_dispatch(backend, now);
        }
        fn on_complete(&mut self, backend: usize, latency: Nanos, outcome: Outcome, now: Nanos) {
            self.0.on_complete(backend, latency, outcome, now);
        }
    }

    /// The kept window picks what a walk at every pick picks, while the aperture widens
    /// and narrows (a load average of a few nanoseconds follows every dispatch and
    /// completion) and backends go down and up.
    #[test]
    fn the_kept_window_picks_as_a_walk_at_every_pick() {
        use crate::strategy::testing::{index_agrees_with_scan, weights};
        let params = (0u64..8, 1usize..4, 0u64..4);
        index_agrees_with_scan(params, weights(), |&(smooth, min, seed)| {
            let config = ApertureConfig {
                smooth_win: Nanos(smooth),
                min_aperture: min,
                ..ApertureConfig::default()
            };
            let rng = || stream_rng(seed, 0, Stream::Strategy, 0);
            (
                Box::new(Aperture::new(config, 1, rng())),
                Box::new(Rewalk(Aperture::new(config, 1, rng()))),
            )
        });
    }
}
