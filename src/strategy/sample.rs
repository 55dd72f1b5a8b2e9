//! Drawing `d` candidate backends among those that are up, with or without replacement —
//! the sampling half of "power of d choices" (the other half is the load measure, see
//! [`super::load`]).
//!
//! Finagle, tower and Linkerd draw distinct candidates (without replacement); Envoy's
//! least request and gRPC's `pick_first`-free P2C draw each candidate independently (with
//! replacement), so at small N the two may offer the same backend twice.

use rand::RngExt;

use super::Backends;
use crate::rng::SimRng;

/// Above this `d`, candidates are drawn by a partial shuffle of the up backends rather
/// than by rejection (whose duplicate check costs O(d) per draw).
const REJECTION_MAX_D: usize = 16;

/// Up to this many candidates are kept inside the sampler rather than in a heap buffer:
/// with 1,000 balancers, each pick would otherwise touch one more cache line.
const INLINE: usize = 8;

/// The candidates of one pick: inline up to [`INLINE`], on the heap beyond.
#[derive(Clone, Debug)]
struct Candidates {
    inline: [usize; INLINE],
    len: usize,
    heap: Vec<usize>,
}

impl Candidates {
    fn new() -> Candidates {
        Candidates {
            inline: [0; INLINE],
            len: 0,
            heap: Vec::new(),
        }
    }

    fn clear(&mut self) {
        self.len = 0;
        self.heap.clear();
    }

    fn push(&mut self, i: usize) {
        if self.len < INLINE {
            self.inline[self.len] = i;
        } else {
            if self.len == INLINE {
                self.heap.extend_from_slice(&self.inline);
            }
            self.heap.push(i);
        }
        self.len += 1;
    }

    fn as_slice(&self) -> &[usize] {
        if self.len <= INLINE {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }
}

/// Draws `d` candidates uniformly among the backends that are up.
#[derive(Clone, Debug)]
pub struct Sampler {
    d: usize,
    replacement: bool,
    candidates: Candidates,
    /// The backends up, in index order (for the partial shuffle, which leaves it so).
    up: Vec<usize>,
    /// The view length `up` was listed for, while it still lists the backends up: kept
    /// between draws when `d` is above [`REJECTION_MAX_D`] (the balancer then tells of
    /// every backend going up or down, [`Sampler::told`]), so that a draw costs O(d), not
    /// O(n); `None` otherwise, the list made anew at each draw that needs it.
    listed: Option<usize>,
    /// The positions the partial shuffle swapped, to undo.
    swaps: Vec<usize>,
}

impl Sampler {
    /// A sampler of `d` candidates (`d ≥ 1`), with or without replacement.
    pub fn new(d: usize, replacement: bool) -> Sampler {
        Sampler {
            d: d.max(1),
            replacement,
            candidates: Candidates::new(),
            up: Vec::new(),
            listed: None,
            swaps: Vec::new(),
        }
    }

    /// Candidates for one pick, in draw order: `d` of them, or, without replacement, every
    /// backend up when fewer than `d` are. Empty when no backend is up.
    ///
    /// Exact distribution: each candidate is uniform over the up backends (with
    /// replacement), or the candidates are a uniform random `d`-subset in random order
    /// (without). The fast path draws indices in `0..n` and rejects down backends and
    /// duplicates; rejections depend only on how many candidates are already accepted,
    /// not on which, so giving up after a bounded number of tries and redrawing from the
    /// explicit list of up backends leaves the distribution unchanged.
    pub fn draw(&mut self, backends: &Backends, rng: &mut SimRng) -> &[usize] {
        let n = backends.len();
        self.candidates.clear();
        if n == 0 {
            return self.candidates.as_slice();
        }
        if self.d <= REJECTION_MAX_D {
            let limit = 8 * self.d + 16;
            let mut tries = 0;
            while self.candidates.len < self.d && tries < limit {
                tries += 1;
                let i = rng.random_range(0..n);
                if backends.up(i) && (self.replacement || !self.candidates.as_slice().contains(&i))
                {
                    self.candidates.push(i);
                }
            }
            if self.candidates.len == self.d {
                return self.candidates.as_slice();
            }
            self.candidates.clear();
        }
        // Slow path: many backends down, d close to the number up, or large d.
        if self.listed != Some(n) {
            self.up.clear();
            self.up.extend((0..n).filter(|&i| backends.up(i)));
            self.listed = self.keeps_list().then_some(n);
        }
        let m = self.up.len();
        if m == 0 {
            return self.candidates.as_slice();
        }
        if self.replacement {
            for _ in 0..self.d {
                self.candidates.push(self.up[rng.random_range(0..m)]);
            }
        } else {
            for k in 0..self.d.min(m) {
                let j = rng.random_range(k..m);
                self.up.swap(k, j);
                self.candidates.push(self.up[k]);
                self.swaps.push(j);
            }
            // Undone last first, the swaps leave `up` in index order again: the next draw
            // shuffles the list a fresh one would be, so draws stay what they were.
            for (k, j) in self.swaps.drain(..).enumerate().rev() {
                self.up.swap(k, j);
            }
        }
        self.candidates.as_slice()
    }

    /// Whether the sampler keeps its list of the backends up between draws, and wants to
    /// be told when one goes up or down ([`Sampler::told`]): when `d` is above
    /// `REJECTION_MAX_D`, so that every draw takes the list.
    pub fn keeps_list(&self) -> bool {
        self.d > REJECTION_MAX_D
    }

    /// A backend went up or down: the list of those up is made anew at the next draw.
    pub fn told(&mut self) {
        self.listed = None;
    }
}

/// The candidate of lowest cost; ties go to the earliest drawn (so, at random).
pub(crate) fn least_cost(
    candidates: &[usize],
    mut cost: impl FnMut(usize) -> f64,
) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for &i in candidates {
        let c = cost(i);
        if best.is_none_or(|(_, b)| c < b) {
            best = Some((i, c));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Stream, stream_rng};
    use proptest::prelude::*;

    fn backends(n: usize, down: &[usize]) -> Backends {
        let mut v = Backends::new(&vec![1; n]);
        for &i in down {
            v.set_up(i, false);
        }
        v
    }

    #[test]
    fn without_replacement_never_offers_a_backend_twice() {
        let mut rng = stream_rng(1, 0, Stream::Strategy, 0);
        for (n, d) in [(2, 2), (3, 2), (5, 3), (10, 10), (40, 20), (100, 2)] {
            let b = backends(n, &[]);
            let mut s = Sampler::new(d, false);
            for _ in 0..2_000 {
                let mut c = s.draw(&b, &mut rng).to_vec();
                assert_eq!(c.len(), d);
                c.sort();
                c.dedup();
                assert_eq!(c.len(), d, "n={n} d={d}");
            }
        }
    }

    #[test]
    fn with_replacement_repeats_at_the_binomial_rate() {
        // P(both draws equal) = 1/n; over T picks the count is Binomial(T, 1/n).
        let mut rng = stream_rng(2, 0, Stream::Strategy, 0);
        for n in [2usize, 3, 5, 10] {
            let b = backends(n, &[]);
            let mut s = Sampler::new(2, true);
            let t = 20_000.0;
            let dup = (0..t as usize)
                .filter(|_| {
                    let c = s.draw(&b, &mut rng);
                    c[0] == c[1]
                })
                .count() as f64;
            let p = 1.0 / n as f64;
            let sd = (t * p * (1.0 - p)).sqrt();
            assert!((dup - t * p).abs() < 5.0 * sd, "n={n}: {dup} vs {}", t * p);
        }
    }

    #[test]
    fn candidates_are_uniform_over_up_backends() {
        let mut rng = stream_rng(3, 0, Stream::Strategy, 0);
        let b = backends(6, &[1, 4]);
        for replacement in [false, true] {
            let mut s = Sampler::new(2, replacement);
            let mut c = [0usize; 6];
            for _ in 0..40_000 {
                for &i in s.draw(&b, &mut rng) {
                    c[i] += 1;
                }
            }
            assert_eq!(c[1] + c[4], 0);
            // 80000 draws over 4 backends: 20000 each, sd ≈ 122.
            for i in [0, 2, 3, 5] {
                assert!((c[i] as f64 - 20_000.0).abs() < 700.0, "{c:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn never_offers_a_down_backend(
            up in prop::collection::vec(any::<bool>(), 1..30),
            d in 1usize..25,
            replacement: bool,
            seed: u64,
        ) {
            let mut b = Backends::new(&vec![1; up.len()]);
            for (i, &u) in up.iter().enumerate() {
                b.set_up(i, u);
            }
            let mut rng = stream_rng(seed, 0, Stream::Strategy, 0);
            let mut s = Sampler::new(d, replacement);
            let c = s.draw(&b, &mut rng).to_vec();
            let n_up = up.iter().filter(|&&u| u).count();
            prop_assert!(c.iter().all(|&i| b.up(i)));
            let expect = if n_up == 0 { 0 } else if replacement { d } else { d.min(n_up) };
            prop_assert_eq!(c.len(), expect);
        }
    }
}
