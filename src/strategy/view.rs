//! [`Backends`]: one balancer's compact view of its backends, what a strategy reads.
//!
//! Per balancer there is only what differs per balancer: its requests in flight to each
//! backend and which backends it sees down (its own health checks and ejections). Weights
//! never change during a run: one table, shared by every balancer of a run (an [`Arc`]).
//!
//! Requests in flight are held sparse while the balancer has them at few backends (up to
//! [`SPARSE`]: a small hash table inside the view, no heap), dense beyond (4 bytes a
//! backend, the down bit packed in each count, kept from then on), and dense from the
//! start over at most 128 backends (no larger than the sparse table). With 1,000
//! balancers over 1,000 servers each balancer has a request or two in flight, so a pick
//! reads its balancer's own few cache lines instead of missing on 4 MB of counts; one
//! balancer at the same load has hundreds in flight and goes dense at once. While sparse,
//! down backends are a bit set, allocated on the first one down and not read while none
//! is.

use std::sync::Arc;

use super::Backend;

/// Slots of the sparse table (a power of two).
const SLOTS: usize = 64;

/// Backends with requests in flight that a sparse view holds before it goes dense: three
/// quarters of [`SLOTS`], so that probes stay short and always meet an empty slot.
const SPARSE: usize = SLOTS / 4 * 3;

/// Counts that a run's views may hold dense from the start, all balancers together
/// ([`Backends::for_balancers`]): 1 MB. One balancer over 10,000 backends is dense (40 kB);
/// 1,000 balancers over 1,000 backends are sparse (dense, their 4 MB of counts miss the
/// cache on every pick).
pub const DENSE_ENTRIES: usize = 1 << 18;

/// The top bit of a dense word: set when the balancer sees the backend down.
const DOWN: u32 = 1 << 31;

/// The low bits of a dense word: requests in flight.
const IN_FLIGHT: u32 = DOWN - 1;

/// An empty slot of the sparse table.
const EMPTY: u32 = u32::MAX;

/// The home slot of backend `i` in the sparse table (Fibonacci hashing).
#[inline]
fn home(i: u32) -> usize {
    (i.wrapping_mul(0x9E37_79B9) >> (32 - SLOTS.trailing_zeros())) as usize
}

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
    /// While sparse, the backends with requests in flight: an open-addressing table
    /// (linear probing, [`EMPTY`] slots).
    keys: [u32; SLOTS],
    /// Requests in flight to `keys[k]` (never 0), while sparse.
    counts: [u32; SLOTS],
    /// Entries of `keys` in use.
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

    /// One of `balancers` views over the same backends, all up and idle, sharing the
    /// weight table: dense from the start when the run's views together hold at most
    /// `DENSE_ENTRIES` counts (a few balancers: a pick then reads a plain array and
    /// never the sparse table), else as [`Backends::sharing`]. The layout changes no
    /// value a strategy reads, only what reading it costs.
    pub fn for_balancers(weights: Arc<[u32]>, balancers: usize) -> Backends {
        let mut view = Backends::sharing(weights);
        if !view.is_dense && view.len().saturating_mul(balancers) <= DENSE_ENTRIES {
            view.dense = vec![0; view.len()];
            view.is_dense = true;
        }
        view
    }

    /// Backends with the given weights, all up and idle, sharing the weight table (every
    /// balancer of a run shares one); sparse while few have requests in flight, over more
    /// than 128 backends.
    pub fn sharing(weights: Arc<[u32]>) -> Backends {
        // Dense from the start when a dense table is no larger than the sparse one.
        let is_dense = weights.len() <= 2 * SLOTS;
        Backends {
            dense: if is_dense {
                vec![0; weights.len()]
            } else {
                Vec::new()
            },
            weights,
            is_dense,
            keys: [EMPTY; SLOTS],
            counts: [0; SLOTS],
            len: 0,
            down_count: 0,
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
            return self.dense[i] & IN_FLIGHT;
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
        if self.is_dense {
            return self.dense[i] & DOWN == 0;
        }
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
        if self.is_dense {
            return Dense::entry(self.dense[i], self.weights[i]);
        }
        self.at_sparse(i)
    }

    /// [`Backends::at`] of a sparse view (out of line: the dense path stays small enough
    /// to inline into every pick).
    fn at_sparse(&self, i: usize) -> Backend {
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
        if self.is_dense {
            return Either::Dense(self.dense.iter().zip(self.weights.iter()));
        }
        Either::Sparse(Iter {
            weights: self.weights.iter(),
            i: 0,
            sparse: (self.len > 0).then_some(self),
            down: (self.down_count > 0).then_some(&self.down[..]),
        })
    }

    /// The view's entries as plain slices when its counts are dense, else `None`: a scan
    /// written once over [`Entries`] and run on this reads each backend without asking for
    /// the layout (see [`Entries`]).
    #[inline]
    pub(crate) fn dense(&self) -> Option<Dense<'_>> {
        self.is_dense
            .then(|| Dense::new(&self.dense, &self.weights))
    }

    /// Every backend read out, as a vector (a strategy's own copy, tests).
    pub fn to_vec(&self) -> Vec<Backend> {
        self.iter().collect()
    }

    /// Marks backend `i` up or down.
    pub fn set_up(&mut self, i: usize, up: bool) {
        assert!(i < self.len(), "backend {i} of {}", self.len());
        if self.is_dense {
            let w = &mut self.dense[i];
            *w = if up { *w & IN_FLIGHT } else { *w | DOWN };
            return;
        }
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
            let w = &mut self.dense[i];
            *w = (*w & DOWN) | n.min(IN_FLIGHT);
            return;
        }
        match self.slot(i) {
            Some(k) if n == 0 => self.vacate(k),
            Some(k) => self.counts[k] = n,
            None if n == 0 => {}
            None if usize::from(self.len) < SPARSE => self.occupy(i, n),
            None => {
                self.go_dense();
                self.set_in_flight(i, n);
            }
        }
    }

    /// One more request in flight to backend `i`.
    #[inline]
    pub(crate) fn add(&mut self, i: usize) {
        if self.is_dense {
            Backends::add_dense(&mut self.dense[i]);
            return;
        }
        self.add_sparse(i);
    }

    /// One more request in flight in a dense word.
    #[inline]
    fn add_dense(w: &mut u32) {
        debug_assert!(*w & IN_FLIGHT < IN_FLIGHT, "in-flight count overflows");
        *w += 1;
    }

    /// [`Backends::add`] to a sparse view (out of line: it may go dense, and the dense
    /// path stays small enough to inline into every dispatch).
    fn add_sparse(&mut self, i: usize) {
        assert!(i < self.len(), "backend {i} of {}", self.len());
        match self.slot(i) {
            Some(k) => self.counts[k] += 1,
            None if usize::from(self.len) < SPARSE => self.occupy(i, 1),
            None => {
                self.go_dense();
                Backends::add_dense(&mut self.dense[i]);
            }
        }
    }

    /// One request fewer in flight to backend `i` (none below zero).
    #[inline]
    pub(crate) fn remove(&mut self, i: usize) {
        if self.is_dense {
            let w = &mut self.dense[i];
            if *w & IN_FLIGHT > 0 {
                *w -= 1;
            }
            return;
        }
        self.remove_sparse(i);
    }

    /// [`Backends::remove`] from a sparse view (out of line, as [`Backends::add_sparse`]).
    fn remove_sparse(&mut self, i: usize) {
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

    /// Backend `i`'s slot in the sparse table, if it has requests in flight.
    #[inline]
    fn slot(&self, i: usize) -> Option<usize> {
        let key = i as u32;
        let mut h = home(key);
        loop {
            match self.keys[h] {
                k if k == key => return Some(h),
                EMPTY => return None,
                _ => h = (h + 1) % SLOTS,
            }
        }
    }

    /// Adds backend `i` with `n` requests in flight to the sparse table (which has room
    /// and does not hold it).
    fn occupy(&mut self, i: usize, n: u32) {
        let mut h = home(i as u32);
        while self.keys[h] != EMPTY {
            h = (h + 1) % SLOTS;
        }
        self.keys[h] = i as u32;
        self.counts[h] = n;
        self.len += 1;
    }

    /// Empties slot `hole` of the sparse table, shifting back the entries after it that
    /// probed past it, so that every entry stays reachable from its home slot.
    fn vacate(&mut self, mut hole: usize) {
        let mut j = hole;
        loop {
            j = (j + 1) % SLOTS;
            let k = self.keys[j];
            if k == EMPTY {
                break;
            }
            // The entry at `j` may fill the hole when the hole lies between its home and
            // `j` (cyclically).
            let from_home = (j + SLOTS - home(k)) % SLOTS;
            let from_hole = (j + SLOTS - hole) % SLOTS;
            if from_home >= from_hole {
                self.keys[hole] = k;
                self.counts[hole] = self.counts[j];
                hole = j;
            }
        }
        self.keys[hole] = EMPTY;
        self.len -= 1;
    }

    /// Moves the counts from the sparse list to a dense table, for good.
    #[cold]
    fn go_dense(&mut self) {
        let mut dense = vec![0; self.len()];
        for (&k, &c) in self.keys.iter().zip(&self.counts) {
            if k != EMPTY {
                dense[k as usize] = c;
            }
        }
        if self.down_count > 0 {
            for (i, w) in dense.iter_mut().enumerate() {
                if self.down[i / 64] & (1 << (i % 64)) != 0 {
                    *w |= DOWN;
                }
            }
        }
        self.down = Vec::new();
        self.down_count = 0;
        self.dense = dense;
        self.keys = [EMPTY; SLOTS];
        self.len = 0;
        self.is_dense = true;
    }
}

/// [`Backends::iter`] of a sparse view: in one pass over the weights and the down bits; a
/// lookup in the sparse table only while it holds some backend.
#[derive(Clone)]
struct Iter<'a> {
    weights: std::slice::Iter<'a, u32>,
    /// The next backend.
    i: usize,
    /// The view, while its sparse table holds some backend.
    sparse: Option<&'a Backends>,
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
        let in_flight = match self.sparse {
            Some(view) => view.slot(i).map_or(0, |k| view.counts[k]),
            None => 0,
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

/// [`Backends::iter`] of a dense view (the packed words beside the weights) or a sparse one.
#[derive(Clone)]
enum Either<'a> {
    Dense(std::iter::Zip<std::slice::Iter<'a, u32>, std::slice::Iter<'a, u32>>),
    Sparse(Iter<'a>),
}

impl Iterator for Either<'_> {
    type Item = Backend;

    #[inline]
    fn next(&mut self) -> Option<Backend> {
        match self {
            Either::Dense(it) => it.next().map(|(&w, &weight)| Dense::entry(w, weight)),
            Either::Sparse(it) => it.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Either::Dense(it) => it.size_hint(),
            Either::Sparse(it) => it.size_hint(),
        }
    }
}

impl ExactSizeIterator for Either<'_> {}

/// Read access to a view's entries: implemented by [`Backends`] (either layout, asked at
/// each read) and by [`Dense`] (a dense view's packed words beside the weights, two plain
/// slices). A strategy writes its scan once over `impl Entries` and runs it on
/// [`Backends::dense`] when there is one, on the view otherwise:
///
/// ```ignore
/// match backends.dense() {
///     Some(dense) => self.scan(&dense),
///     None => self.scan(backends),
/// }
/// ```
///
/// The dense loop then reads a slice, as strategies did before views had two layouts
/// (issue 8: the layout test in every read cost scanning picks 7-16 ns at 10 backends).
pub(crate) trait Entries {
    /// How many backends.
    fn len(&self) -> usize;
    /// Backend `i`'s requests in flight. Panics if there is no backend `i`.
    fn in_flight(&self, i: usize) -> u32;
    /// Backend `i`, read out whole. Panics if there is no backend `i`.
    fn at(&self, i: usize) -> Backend;
    /// Every backend in order, read out whole.
    fn iter(&self) -> impl Iterator<Item = Backend> + Clone + '_;
}

impl Entries for Backends {
    #[inline]
    fn len(&self) -> usize {
        Backends::len(self)
    }
    #[inline]
    fn in_flight(&self, i: usize) -> u32 {
        Backends::in_flight(self, i)
    }
    #[inline]
    fn at(&self, i: usize) -> Backend {
        Backends::at(self, i)
    }
    #[inline]
    fn iter(&self) -> impl Iterator<Item = Backend> + Clone + '_ {
        Backends::iter(self)
    }
}

/// A dense view's entries ([`Backends::dense`]): each backend's packed word (requests in
/// flight, and the down bit) beside its weight, both plain slices of the same length.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dense<'a> {
    words: &'a [u32],
    weights: &'a [u32],
}

impl<'a> Dense<'a> {
    #[inline]
    fn new(words: &'a [u32], weights: &'a [u32]) -> Dense<'a> {
        // Cut to one length, so that one bounds check covers both.
        let n = words.len().min(weights.len());
        Dense {
            words: &words[..n],
            weights: &weights[..n],
        }
    }

    /// Backend `i`'s entry from its word and weight.
    #[inline]
    fn entry(word: u32, weight: u32) -> Backend {
        Backend {
            in_flight: word & IN_FLIGHT,
            weight,
            up: word & DOWN == 0,
        }
    }
}

impl Entries for Dense<'_> {
    #[inline]
    fn len(&self) -> usize {
        self.words.len()
    }
    #[inline]
    fn in_flight(&self, i: usize) -> u32 {
        self.words[i] & IN_FLIGHT
    }
    #[inline]
    fn at(&self, i: usize) -> Backend {
        Dense::entry(self.words[i], self.weights[i])
    }
    #[inline]
    fn iter(&self) -> impl Iterator<Item = Backend> + Clone + '_ {
        (self.words.iter().zip(self.weights)).map(|(&w, &weight)| Dense::entry(w, weight))
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
            entries in proptest::collection::vec(
                (0u32..5, prop::sample::select(vec![0u32, 0, 0, 0, 0, 1, 2]), any::<bool>()),
                1..300,
            ),
            ops in proptest::collection::vec((any::<usize>(), 0u8..6, 0u32..4), 0..400),
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

        /// A view dense from the start and one sparse from the start (dense once more
        /// than [`SPARSE`] backends have requests in flight) read as a plain model after
        /// every add, remove and change of up, through the view and through [`Entries`]
        /// (a dense view's slices from [`Backends::dense`], which only a dense view has).
        #[test]
        fn dense_and_sparse_views_agree_with_a_plain_model(
            weights in proptest::collection::vec(0u32..5, 1..200),
            ops in proptest::collection::vec((any::<usize>(), 0u8..8), 0..600),
        ) {
            let shared: Arc<[u32]> = weights.clone().into();
            let mut views = [Backends::for_balancers(Arc::clone(&shared), 1), sparse(shared)];
            let mut model: Vec<Backend> = weights.iter().map(|&w| Backend::new(w)).collect();
            for (i, op) in ops {
                let i = i % model.len();
                for view in &mut views {
                    match op {
                        0 => view.set_up(i, false),
                        1 => view.set_up(i, true),
                        2..=5 => view.add(i),
                        _ => view.remove(i),
                    }
                }
                let b = &mut model[i];
                match op {
                    0 | 1 => b.up = op == 1,
                    2..=5 => b.in_flight += 1,
                    _ => b.in_flight = b.in_flight.saturating_sub(1),
                }
                for view in &views {
                    prop_assert_eq!(view.dense().is_some(), view.is_dense());
                    if let Some(dense) = view.dense() {
                        prop_assert!(agrees(&dense, &model));
                    }
                    prop_assert!(agrees(view, &model));
                }
            }
            prop_assert!(views[0].is_dense());
        }
    }

    /// A view over `weights` that starts sparse whatever their number.
    fn sparse(weights: Arc<[u32]>) -> Backends {
        let mut view = Backends::sharing(weights);
        view.is_dense = false;
        view.dense = Vec::new();
        view
    }

    /// Whether `entries` read as `model`, entry by entry and in one pass.
    fn agrees(entries: &impl Entries, model: &[Backend]) -> bool {
        entries.len() == model.len()
            && entries.iter().eq(model.iter().copied())
            && model
                .iter()
                .enumerate()
                .all(|(i, b)| entries.at(i) == *b && entries.in_flight(i) == b.in_flight)
    }

    /// A long workout of the sparse table over 10,000 backends, with up to [`SPARSE`] of
    /// them in flight at once (colliding, wrapping around the table, shifted back on
    /// removal): every count reads back as a plain table of counts says.
    #[test]
    fn the_sparse_table_agrees_with_a_plain_one() {
        use rand::{RngExt, SeedableRng};
        let n = 10_000;
        let mut rng = crate::rng::SimRng::seed_from_u64(14);
        let mut view = Backends::new(&vec![1; n]);
        let mut model = vec![0u32; n];
        let mut busy: Vec<usize> = Vec::new();
        for step in 0..200_000 {
            // Mostly backends among a few hundred, so that homes collide.
            let i = if rng.random_range(0..4) == 0 {
                rng.random_range(0..n)
            } else {
                rng.random_range(0..300)
            };
            if busy.len() < SPARSE && (busy.is_empty() || rng.random_range(0..2) == 0) {
                view.add(i);
                model[i] += 1;
                if model[i] == 1 {
                    busy.push(i);
                }
            } else {
                let k = busy[rng.random_range(0..busy.len())];
                view.remove(k);
                model[k] -= 1;
                if model[k] == 0 {
                    busy.retain(|&b| b != k);
                }
            }
            assert!(!view.is_dense(), "step {step}");
            assert_eq!(usize::from(view.len), busy.len());
            for &b in &busy {
                assert_eq!(view.in_flight(b), model[b], "step {step}, backend {b}");
            }
            assert_eq!(view.in_flight(i), model[i]);
            if step % 1000 == 0 {
                assert!(view.iter().map(|b| b.in_flight).eq(model.iter().copied()));
            }
        }
    }

    /// Sparse up to [`SPARSE`] backends with requests in flight, whatever their counts;
    /// dense from the next one on, and for good.
    #[test]
    fn sparse_until_too_many_backends_have_requests_in_flight() {
        let mut view = Backends::new(&[1; 200]);
        assert!(!view.is_dense());
        for i in 0..SPARSE {
            view.add(i * 3);
            view.add(i * 3);
        }
        view.remove(0);
        view.remove(0);
        view.add(199);
        assert!(!view.is_dense());
        view.add(198);
        assert!(view.is_dense());
        view.remove(198);
        view.remove(199);
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

    /// A few balancers' views are dense from the start whatever the backend count; many
    /// balancers' views over many backends start sparse; both read the same.
    #[test]
    fn few_balancers_are_dense_from_the_start_and_read_the_same() {
        let wide: Arc<[u32]> = vec![1; 10_000].into();
        assert!(Backends::for_balancers(Arc::clone(&wide), 1).is_dense());
        assert!(Backends::for_balancers(Arc::clone(&wide), 26).is_dense());
        assert!(!Backends::for_balancers(Arc::clone(&wide), 27).is_dense());
        let fleet: Arc<[u32]> = vec![1; 1_000].into();
        assert!(!Backends::for_balancers(Arc::clone(&fleet), 1_000).is_dense());
        let (mut dense, mut sparse) = (
            Backends::for_balancers(Arc::clone(&fleet), 1),
            Backends::sharing(Arc::clone(&fleet)),
        );
        for i in [3, 999, 3, 500] {
            dense.add(i);
            sparse.add(i);
        }
        dense.set_up(7, false);
        sparse.set_up(7, false);
        assert!(!sparse.is_dense());
        assert!(dense.iter().eq(sparse.iter()));
    }
}
