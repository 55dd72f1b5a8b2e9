//! [`Backends`]: one balancer's compact view of its backends, what a strategy reads.
//!
//! Per balancer there is only what differs per balancer: its requests in flight to each
//! backend and which backends it sees down (its own health checks and ejections). Weights
//! never change during a run: one table, shared by every balancer of a run (an [`Arc`]).
//!
//! Requests in flight are held sparse while the balancer has them at few backends (up to
//! [`SPARSE`]: a list inside the view, no heap), dense beyond (4 bytes a backend, kept
//! from then on). With 1,000 balancers over 1,000 servers each balancer has a request or
//! two in flight, so a pick reads its balancer's own few cache lines instead of missing on
//! 4 MB of counts; one balancer at the same load has hundreds in flight and goes dense at
//! once. Down backends are a bit set, allocated on the first one down and not read while
//! none is.

use std::sync::Arc;

use super::Backend;

/// Backends with requests in flight that a sparse view holds before it goes dense.
const SPARSE: usize = 16;

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
    /// Per backend: its configured weight, shared by every balancer of a run.
    weights: Arc<[u32]>,
    /// Whether requests in flight are counted in `dense` (else in `keys` and `counts`).
    is_dense: bool,
    /// Backends with requests in flight, while sparse: `keys[..len]`, in no order.
    keys: [u32; SPARSE],
    /// Requests in flight to `keys[k]` (never 0), while sparse.
    counts: [u32; SPARSE],
    /// Entries of `keys` and `counts` in use.
    len: u8,
    /// How many backends are down.
    down_count: u32,
    /// Requests in flight per backend, once dense.
    dense: Vec<u32>,
    /// Down backends, one bit each (empty until the first one goes down).
    down: Vec<u64>,
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
            weights,
            is_dense: false,
            keys: [0; SPARSE],
            counts: [0; SPARSE],
            len: 0,
            down_count: 0,
            dense: Vec::new(),
            down: Vec::new(),
        }
    }

    /// How many backends.
    #[inline]
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Whether there is no backend.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Requests this balancer has sent to backend `i` and not yet seen complete. Panics
    /// if there is no backend `i`.
    #[inline]
    pub fn in_flight(&self, i: usize) -> u32 {
        if self.is_dense {
            return self.dense[i];
        }
        assert!(i < self.len(), "backend {i} of {}", self.len());
        match self.slot(i) {
            Some(k) => self.counts[k],
            None => 0,
        }
    }

    /// Whether backend `i` is up (health-checked). A strategy must not pick a down backend.
    /// Panics if there is no backend `i`.
    #[inline]
    pub fn up(&self, i: usize) -> bool {
        assert!(i < self.len(), "backend {i} of {}", self.len());
        self.down_count == 0 || self.down[i / 64] & (1 << (i % 64)) == 0
    }

    /// Backend `i`'s configured weight (0 means "never pick" for weighted strategies).
    #[inline]
    pub fn weight(&self, i: usize) -> u32 {
        self.weights[i]
    }

    /// Backend `i`, read out whole. Panics if there is no backend `i`.
    #[inline]
    pub fn at(&self, i: usize) -> Backend {
        Backend {
            in_flight: self.in_flight(i),
            weight: self.weights[i],
            up: self.up(i),
        }
    }

    /// Backend `i`, or `None` if there is none.
    #[inline]
    pub fn get(&self, i: usize) -> Option<Backend> {
        (i < self.len()).then(|| self.at(i))
    }

    /// Every backend in order, read out whole.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Backend> + Clone + '_ {
        let len = usize::from(self.len);
        let mut sparse = [(u32::MAX, 0); SPARSE];
        for (entry, (&key, &count)) in sparse
            .iter_mut()
            .zip(self.keys.iter().zip(&self.counts))
            .take(len)
        {
            *entry = (key, count);
        }
        sparse[..len].sort_unstable();
        Iter {
            weights: self.weights.iter(),
            i: 0,
            dense: if self.is_dense { &self.dense[..] } else { &[] }.iter(),
            sparse,
            next: 0,
            down: (self.down_count > 0).then_some(&self.down[..]),
        }
    }

    /// Every backend read out, as a vector (a strategy's own copy, tests).
    pub fn to_vec(&self) -> Vec<Backend> {
        self.iter().collect()
    }

    /// Marks backend `i` up or down.
    pub fn set_up(&mut self, i: usize, up: bool) {
        assert!(i < self.len(), "backend {i} of {}", self.len());
        if self.down.is_empty() {
            if up {
                return;
            }
            self.down = vec![0; self.len().div_ceil(64)];
        }
        let (word, bit) = (&mut self.down[i / 64], 1u64 << (i % 64));
        let was_up = *word & bit == 0;
        if up {
            *word &= !bit;
        } else {
            *word |= bit;
        }
        match (was_up, up) {
            (true, false) => self.down_count += 1,
            (false, true) => self.down_count -= 1,
            _ => {}
        }
    }

    /// Sets the requests in flight to backend `i`.
    pub fn set_in_flight(&mut self, i: usize, n: u32) {
        assert!(i < self.len(), "backend {i} of {}", self.len());
        if self.is_dense {
            self.dense[i] = n;
            return;
        }
        match self.slot(i) {
            Some(k) if n == 0 => self.vacate(k),
            Some(k) => self.counts[k] = n,
            None if n == 0 => {}
            None if usize::from(self.len) < SPARSE => self.occupy(i, n),
            None => {
                self.go_dense();
                self.dense[i] = n;
            }
        }
    }

    /// One more request in flight to backend `i`.
    #[inline]
    pub(crate) fn add(&mut self, i: usize) {
        if self.is_dense {
            self.dense[i] += 1;
            return;
        }
        assert!(i < self.len(), "backend {i} of {}", self.len());
        match self.slot(i) {
            Some(k) => self.counts[k] += 1,
            None if usize::from(self.len) < SPARSE => self.occupy(i, 1),
            None => {
                self.go_dense();
                self.dense[i] += 1;
            }
        }
    }

    /// One request fewer in flight to backend `i` (none below zero).
    #[inline]
    pub(crate) fn remove(&mut self, i: usize) {
        if self.is_dense {
            let c = &mut self.dense[i];
            *c = c.saturating_sub(1);
            return;
        }
        assert!(i < self.len(), "backend {i} of {}", self.len());
        if let Some(k) = self.slot(i) {
            if self.counts[k] == 1 {
                self.vacate(k);
            } else {
                self.counts[k] -= 1;
            }
        }
    }

    /// Whether the counts are dense (tests, benches).
    pub fn is_dense(&self) -> bool {
        self.is_dense
    }

    /// Where backend `i` is in the sparse list, if it has requests in flight.
    #[inline]
    fn slot(&self, i: usize) -> Option<usize> {
        let len = usize::from(self.len);
        self.keys[..len].iter().position(|&k| k as usize == i)
    }

    /// Adds backend `i` with `n` requests in flight to the sparse list (not full).
    fn occupy(&mut self, i: usize, n: u32) {
        let k = usize::from(self.len);
        self.keys[k] = i as u32;
        self.counts[k] = n;
        self.len += 1;
    }

    /// Removes entry `k` of the sparse list.
    fn vacate(&mut self, k: usize) {
        let last = usize::from(self.len) - 1;
        self.keys[k] = self.keys[last];
        self.counts[k] = self.counts[last];
        self.len -= 1;
    }

    /// Moves the counts from the sparse list to a dense table, for good.
    #[cold]
    fn go_dense(&mut self) {
        let mut dense = vec![0; self.len()];
        for k in 0..usize::from(self.len) {
            dense[self.keys[k] as usize] = self.counts[k];
        }
        self.dense = dense;
        self.len = 0;
        self.is_dense = true;
    }
}

/// [`Backends::iter`]: in one pass over the weights, the dense counts or the sparse list
/// in backend order, and the down bits, with no lookup per backend.
#[derive(Clone)]
struct Iter<'a> {
    weights: std::slice::Iter<'a, u32>,
    /// The next backend.
    i: usize,
    /// The dense counts from the next backend on, or none while sparse.
    dense: std::slice::Iter<'a, u32>,
    /// While sparse: (backend, in flight), by backend, then `u32::MAX` past the last.
    sparse: [(u32, u32); SPARSE],
    /// The next entry of `sparse`.
    next: usize,
    /// The down bits, while some backend is down.
    down: Option<&'a [u64]>,
}

impl Iterator for Iter<'_> {
    type Item = Backend;

    #[inline]
    fn next(&mut self) -> Option<Backend> {
        let &weight = self.weights.next()?;
        let i = self.i;
        self.i += 1;
        let in_flight = match self.dense.next() {
            Some(&c) => c,
            None => match self.sparse.get(self.next) {
                Some(&(k, c)) if k as usize == i => {
                    self.next += 1;
                    c
                }
                _ => 0,
            },
        };
        let up = match self.down {
            None => true,
            Some(down) => down[i / 64] & (1 << (i % 64)) == 0,
        };
        Some(Backend {
            in_flight,
            weight,
            up,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.weights.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

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
            entries in proptest::collection::vec((0u32..5, 0u32..3, any::<bool>()), 1..70),
            ops in proptest::collection::vec((any::<usize>(), 0u8..6, 0u32..4), 0..200),
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
                    2..=4 => { view.add(i); model[i].in_flight += 1; }
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

    /// Sparse up to [`SPARSE`] backends with requests in flight, whatever their counts;
    /// dense from the next one on, and for good.
    #[test]
    fn sparse_until_too_many_backends_have_requests_in_flight() {
        let mut view = Backends::new(&[1; 100]);
        for i in 0..SPARSE {
            view.add(i * 3);
            view.add(i * 3);
        }
        view.remove(0);
        view.remove(0);
        view.add(99);
        assert!(!view.is_dense());
        view.add(98);
        assert!(view.is_dense());
        view.remove(98);
        view.remove(99);
        assert!(view.is_dense());
        let busy: Vec<u32> = view.iter().map(|b| b.in_flight).collect();
        assert_eq!(busy.iter().sum::<u32>(), 2 * (SPARSE as u32 - 1));
        assert!((1..SPARSE).all(|i| busy[i * 3] == 2));
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
