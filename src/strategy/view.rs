//! [`Backends`]: one balancer's compact view of its backends, what a strategy reads.
//!
//! Per balancer there is only what differs per balancer: its requests in flight to each
//! backend and whether it sees the backend up (its own health checks and ejections), packed
//! in one `u32` a backend, so that a pick reads one word, and 1,000 balancers over 10,000
//! servers hold 40 MB of views (12 bytes a backend held 120 MB). Weights never change
//! during a run: one table, shared by every balancer of a run (an [`Arc`]).

use std::sync::Arc;

use super::Backend;

/// The top bit of a state word: set when the balancer sees the backend down.
const DOWN: u32 = 1 << 31;

/// The low bits of a state word: requests in flight.
const IN_FLIGHT: u32 = DOWN - 1;

/// One balancer's view of its backends: for each, its requests in flight from this
/// balancer, whether it is up, and its weight. Strategies read it through accessors
/// ([`Backends::in_flight`], [`Backends::up`], [`Backends::weight`], or a whole entry with
/// [`Backends::at`] and [`Backends::iter`]); the [`super::Balancer`] owning it keeps it up
/// to date.
///
/// ```
/// use lbsim::strategy::Backends;
///
/// let mut view = Backends::new(&[1, 3]);
/// view.set_up(0, false);
/// view.set_in_flight(1, 2);
/// assert_eq!((view.len(), view.up(0), view.in_flight(1), view.weight(1)), (2, false, 2, 3));
/// assert_eq!(view.iter().filter(|b| b.up).count(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct Backends {
    /// Per backend: requests in flight in the low 31 bits, [`DOWN`] in the top bit.
    state: Vec<u32>,
    /// Per backend: its configured weight, shared by every balancer of a run.
    weights: Arc<[u32]>,
}

impl Backends {
    /// Backends with the given weights, all up and idle.
    pub fn new(weights: &[u32]) -> Backends {
        Backends::sharing(weights.into())
    }

    /// Backends with the given weights, all up and idle, sharing the weight table (every
    /// balancer of a run shares one).
    pub fn sharing(weights: Arc<[u32]>) -> Backends {
        Backends {
            state: vec![0; weights.len()],
            weights,
        }
    }

    /// How many backends.
    #[inline]
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// Whether there is no backend.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// Requests this balancer has sent to backend `i` and not yet seen complete.
    #[inline]
    pub fn in_flight(&self, i: usize) -> u32 {
        self.state[i] & IN_FLIGHT
    }

    /// Whether backend `i` is up (health-checked). A strategy must not pick a down backend.
    #[inline]
    pub fn up(&self, i: usize) -> bool {
        self.state[i] & DOWN == 0
    }

    /// Backend `i`'s configured weight (0 means "never pick" for weighted strategies).
    #[inline]
    pub fn weight(&self, i: usize) -> u32 {
        self.weights[i]
    }

    /// Backend `i`, read out whole. Panics if there is no backend `i`.
    #[inline]
    pub fn at(&self, i: usize) -> Backend {
        let s = self.state[i];
        Backend {
            in_flight: s & IN_FLIGHT,
            weight: self.weights[i],
            up: s & DOWN == 0,
        }
    }

    /// Backend `i`, or `None` if there is none.
    #[inline]
    pub fn get(&self, i: usize) -> Option<Backend> {
        (i < self.len()).then(|| self.at(i))
    }

    /// Every backend in order, read out whole.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Backend> + Clone + '_ {
        self.state
            .iter()
            .zip(self.weights.iter())
            .map(|(&s, &weight)| Backend {
                in_flight: s & IN_FLIGHT,
                weight,
                up: s & DOWN == 0,
            })
    }

    /// Every backend read out, as a vector (a strategy's own copy, tests).
    pub fn to_vec(&self) -> Vec<Backend> {
        self.iter().collect()
    }

    /// Marks backend `i` up or down.
    #[inline]
    pub fn set_up(&mut self, i: usize, up: bool) {
        let s = &mut self.state[i];
        *s = if up { *s & IN_FLIGHT } else { *s | DOWN };
    }

    /// Sets the requests in flight to backend `i` (at most 2³¹ − 1).
    pub fn set_in_flight(&mut self, i: usize, n: u32) {
        debug_assert!(n <= IN_FLIGHT, "{n} requests in flight");
        let s = &mut self.state[i];
        *s = (*s & DOWN) | n.min(IN_FLIGHT);
    }

    /// One more request in flight to backend `i`.
    #[inline]
    pub(crate) fn add(&mut self, i: usize) {
        let s = &mut self.state[i];
        debug_assert!(*s & IN_FLIGHT < IN_FLIGHT, "in-flight count overflows");
        *s += 1;
    }

    /// One request fewer in flight to backend `i` (none below zero).
    #[inline]
    pub(crate) fn remove(&mut self, i: usize) {
        let s = &mut self.state[i];
        if *s & IN_FLIGHT > 0 {
            *s -= 1;
        }
    }
}

/// Backends as listed, each with its own weight, in flight and up.
impl FromIterator<Backend> for Backends {
    fn from_iter<I: IntoIterator<Item = Backend>>(entries: I) -> Backends {
        let entries: Vec<Backend> = entries.into_iter().collect();
        let weights: Vec<u32> = entries.iter().map(|b| b.weight).collect();
        let mut view = Backends::new(&weights);
        for (i, b) in entries.iter().enumerate() {
            view.set_in_flight(i, b.in_flight);
            view.set_up(i, b.up);
        }
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever is written, each entry reads back as written, and changing one entry
        /// leaves every other as it was.
        #[test]
        fn entries_read_back_as_written(
            entries in proptest::collection::vec((0u32..5, 0u32..1000, any::<bool>()), 1..20),
            ops in proptest::collection::vec((any::<usize>(), 0u8..4, 0u32..1000), 0..50),
        ) {
            let mut model: Vec<Backend> = entries
                .iter()
                .map(|&(weight, in_flight, up)| Backend { in_flight, weight, up })
                .collect();
            let mut view: Backends = model.iter().copied().collect();
            for (i, op, n) in ops {
                let i = i % model.len();
                match op {
                    0 => { view.set_up(i, n % 2 == 0); model[i].up = n % 2 == 0; }
                    1 => { view.set_in_flight(i, n); model[i].in_flight = n; }
                    2 => { view.add(i); model[i].in_flight += 1; }
                    _ => { view.remove(i); model[i].in_flight = model[i].in_flight.saturating_sub(1); }
                }
                prop_assert_eq!(view.to_vec(), model.clone());
                for (k, b) in model.iter().enumerate() {
                    prop_assert_eq!(view.get(k), Some(*b));
                    prop_assert_eq!((view.in_flight(k), view.up(k), view.weight(k)), (b.in_flight, b.up, b.weight));
                }
            }
            prop_assert_eq!(view.get(model.len()), None);
        }
    }

    #[test]
    fn balancers_share_one_weight_table() {
        let weights: Arc<[u32]> = vec![1, 2, 3].into();
        let (a, b) = (
            Backends::sharing(Arc::clone(&weights)),
            Backends::sharing(Arc::clone(&weights)),
        );
        assert_eq!(Arc::strong_count(&weights), 3);
        assert_eq!((a.weight(2), b.weight(2)), (3, 3));
    }
}
