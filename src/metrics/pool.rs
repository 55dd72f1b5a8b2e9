//! A strategy's distributions merged over its replications ([`Pooled`]): the response and
//! waiting times as latency histograms, and each server's response times as the sparse
//! bucket counts of one ([`ServerPool`]).
//!
//! Up to 2026-11-28 a pool held a whole [`latency_histogram`] per server (8-byte counts
//! over 1 ns to 2^42 ns: 264 kB, zeroed at allocation and page-faulted in as counts were
//! added), up to [`MAX_SERVER_HISTOGRAMS`] servers per strategy: 68 MB a strategy at 256
//! servers, and most of the fixed cost of a short `lbsim run` at 100 to 256 servers. A
//! server's pooled response times are read for one figure, its p99 in `servers.csv`
//! ([`ServerPool::value_at_quantile`]), and written to shard files; both need only the
//! buckets that hold a count, which are a few hundred in a short run and a few thousand
//! in a long one.

use hdrhistogram::Histogram;

use super::{
    BucketCounts, LATENCY_UNTRACKABLE_NS, MAX_SERVER_HISTOGRAMS, RunMetrics, RunSummary,
    SERVER_QUANTILE, SOURCE_LATENCY, SOURCE_SERVERS, bucket_index, bucket_value, latency_histogram,
    layout, server_histogram,
};
use crate::stats::quantile::{Cdf, Quantiles};

/// One server's response times merged over replications: the counts of the buckets of
/// a [`latency_histogram`], and their total. Read, it is the latency histogram that adding
/// the replications' server histograms into gives: the same length and quantiles
/// ([`ServerPool::value_at_quantile`] takes hdrhistogram's steps), and
/// [`ServerPool::histogram`] makes the histogram itself.
///
/// Sparse while few buckets hold a count (a short run: a few hundred), dense once the
/// dense form is no larger (a long run, or many replications):
/// - sparse, 10 bytes a bucket with a count: its index in 2 (a latency histogram has
///   34,816 buckets) and its count in 8, in two vectors (as pairs, padding made it 16),
///   in increasing index order, none with a count of 0. Adding a run costs a lookup per
///   bucket of the run and a move of the pool's tail per bucket it lacks: the pool's
///   length per run, so it turns dense before that dominates.
/// - dense, 4 bytes a bucket up to the largest (about 68 kB for a millisecond-scale
///   server, a quarter of the 264 kB histogram it replaces): a count per index below
///   2^32, what passed 2^32 at an index in `full` (empty but in very long runs). Adding a
///   run costs an add per bucket of the run.
///
/// It turns dense when 10 bytes × buckets with a count exceed 4 bytes × the dense length,
/// and stays dense; two pools holding the same counts are equal in either form.
#[derive(Clone, Debug, Default)]
pub struct ServerPool {
    /// Sparse: the indices with a count, increasing (empty when dense).
    indices: Vec<u16>,
    /// Sparse: their counts.
    counts: Vec<u64>,
    /// Dense: per index from 0, its count modulo 2^32 (empty while sparse).
    dense: Vec<u32>,
    /// Dense: per index whose count passed 2^32, what passed (a multiple of 2^32), by
    /// increasing index.
    full: Vec<(u16, u64)>,
    total: u64,
}

impl PartialEq for ServerPool {
    fn eq(&self, other: &ServerPool) -> bool {
        self.total == other.total && self.iter().eq(other.iter())
    }
}

impl Eq for ServerPool {}

/// The first position from `from` on whose index is not below `i`: what
/// `from + indices[from..].partition_point(|&k| k < i)` gives, found by galloping (steps
/// of 1, 2, 4, ... from `from`, then a binary search inside the last), so that a walk
/// through two pools of similar length (`lbsim merge` adding shards) costs a step or two
/// a bucket, not a binary search of the whole rest (merging two 256-server pools of
/// 5,000 buckets a server was a quarter of a merge's CPU time).
fn seek(indices: &[u16], from: usize, i: usize) -> usize {
    let rest = &indices[from..];
    let (mut lo, mut hi) = (0, 1);
    while hi <= rest.len() && usize::from(rest[hi - 1]) < i {
        lo = hi;
        hi *= 2;
    }
    let hi = hi.min(rest.len());
    from + lo + rest[lo..hi].partition_point(|&k| usize::from(k) < i)
}

/// Indices a dense pool grows by at once (an octave of a latency histogram's buckets).
const DENSE_STEP: usize = 1 << super::HALF_MAGNITUDE;

impl ServerPool {
    /// Buckets of a [`latency_histogram`]: indices `0..BUCKETS` (1 ns to just below
    /// 2^43 ns).
    pub const BUCKETS: usize = 34_816;

    /// The pool of counts given as `(index, count)`, indices increasing and below
    /// [`ServerPool::BUCKETS`] (what [`ServerPool::iter`] yields; a shard file's reader
    /// checks them first). Sparse or dense as adding them would make it.
    pub fn from_counts(counts: &[(usize, u64)]) -> ServerPool {
        debug_assert!(counts.windows(2).all(|w| w[0].0 < w[1].0));
        debug_assert!(counts.iter().all(|&(i, _)| i < ServerPool::BUCKETS));
        let kept = || counts.iter().filter(|&&(_, n)| n != 0);
        let mut pool = ServerPool {
            indices: kept()
                .map(|&(i, _)| u16::try_from(i).expect("a latency histogram's index"))
                .collect(),
            counts: kept().map(|&(_, n)| n).collect(),
            total: (counts.iter()).fold(0u64, |t, &(_, n)| t.saturating_add(n)),
            ..ServerPool::default()
        };
        pool.densify_if_smaller();
        pool
    }

    fn is_dense(&self) -> bool {
        !self.dense.is_empty()
    }

    /// Turns dense when that is no larger (see [`ServerPool`]).
    fn densify_if_smaller(&mut self) {
        let Some(&last) = self.indices.last() else {
            return;
        };
        let len = (usize::from(last) | (DENSE_STEP - 1)) + 1;
        if self.indices.len() * 10 <= len * 4 {
            return;
        }
        self.make_dense(len);
    }

    /// Turns dense, `len` indices long at first (growing to hold every count).
    fn make_dense(&mut self, len: usize) {
        let (indices, counts) = (
            std::mem::take(&mut self.indices),
            std::mem::take(&mut self.counts),
        );
        self.dense = vec![0; len];
        for (i, n) in indices.into_iter().zip(counts) {
            self.add_dense(usize::from(i), n);
        }
    }

    /// Dense: the count at `i`.
    fn dense_at(&self, i: usize) -> u64 {
        let low = self.dense.get(i).map_or(0, |&c| u64::from(c));
        if self.full.is_empty() {
            return low;
        }
        low + match self.full.binary_search_by_key(&i, |&(k, _)| usize::from(k)) {
            Ok(at) => self.full[at].1,
            Err(_) => 0,
        }
    }

    /// Dense: sets the count at `i` (within the dense length).
    fn set_dense(&mut self, i: usize, n: u64) {
        self.dense[i] = n as u32;
        let high = n & !u64::from(u32::MAX);
        if high == 0 && self.full.is_empty() {
            return;
        }
        let k = u16::try_from(i).expect("a latency histogram's index");
        match (self.full.binary_search_by_key(&k, |&(k, _)| k), high) {
            (Ok(at), 0) => {
                self.full.remove(at);
            }
            (Ok(at), _) => self.full[at].1 = high,
            (Err(_), 0) => {}
            (Err(at), _) => self.full.insert(at, (k, high)),
        }
    }

    /// Dense: adds `n` at `i`, growing to hold it.
    fn add_dense(&mut self, i: usize, n: u64) {
        if i >= self.dense.len() {
            let len = (i | (DENSE_STEP - 1)) + 1;
            self.dense.reserve_exact(len - self.dense.len());
            self.dense.resize(len, 0);
        }
        match self.dense[i].checked_add(n as u32) {
            // The low 32 bits alone: what passed 2^32 before stays in `full`.
            Some(c) if n <= u64::from(u32::MAX) => self.dense[i] = c,
            _ => {
                let c = self.dense_at(i).saturating_add(n);
                self.set_dense(i, c);
            }
        }
    }

    /// Adds counts given as `(index, count)` in increasing index order (what
    /// [`super::BucketCounts::iter`] yields): a merge of two sorted lists when sparse.
    fn add_sorted(&mut self, other: impl Iterator<Item = (usize, u64)>) {
        if self.is_dense() {
            for (i, n) in other {
                self.total = self.total.saturating_add(n);
                self.add_dense(i, n);
            }
            return;
        }
        let mut other = other
            .map(|(i, n)| (u16::try_from(i).expect("a latency histogram's index"), n))
            .peekable();
        if other.peek().is_none() {
            return;
        }
        let (indices, counts) = (
            std::mem::take(&mut self.indices),
            std::mem::take(&mut self.counts),
        );
        // Exact when `other` reads a pool (a slice); at least the old length otherwise.
        let capacity = indices.len() + other.size_hint().0;
        let (mut into_i, mut into_c) = (Vec::with_capacity(capacity), Vec::with_capacity(capacity));
        let mut old = indices.into_iter().zip(counts).peekable();
        loop {
            let (i, n) = match (old.peek(), other.peek()) {
                (Some(&(i, a)), Some(&(j, b))) if i == j => {
                    old.next();
                    other.next();
                    self.total = self.total.saturating_add(b);
                    (i, a.saturating_add(b))
                }
                (Some(&(i, _)), Some(&(j, _))) if i < j => old.next().expect("peeked"),
                (_, Some(_)) => {
                    let (j, b) = other.next().expect("peeked");
                    self.total = self.total.saturating_add(b);
                    (j, b)
                }
                (Some(_), None) => old.next().expect("peeked"),
                (None, None) => break,
            };
            if n != 0 {
                into_i.push(i);
                into_c.push(n);
            }
        }
        // Exactly what it holds: a strategy keeps one per server until the reports.
        into_i.shrink_to_fit();
        into_c.shrink_to_fit();
        (self.indices, self.counts) = (into_i, into_c);
        self.densify_if_smaller();
    }

    /// Takes out counts given as `(index, count)` in increasing index order, each at most
    /// what the pool holds at its index ([`ServerPool::add_sorted`] undone: integers, so
    /// exact). Panics otherwise, as `Histogram::subtract` fails.
    fn subtract_sorted(&mut self, other: impl Iterator<Item = (usize, u64)>) {
        const MISSING: &str = "a run's counts are in the pool it was added to";
        if self.is_dense() {
            for (i, n) in other {
                let c = self.dense_at(i).checked_sub(n).expect(MISSING);
                self.set_dense(i, c);
                self.total -= n;
            }
            return;
        }
        let mut at = 0;
        for (i, n) in other {
            at = seek(&self.indices, at, i);
            match (self.indices.get(at), self.counts.get_mut(at)) {
                (Some(&k), Some(c)) if usize::from(k) == i && *c >= n => *c -= n,
                _ => panic!("{MISSING}"),
            }
            self.total -= n;
        }
        let mut kept = 0;
        for k in 0..self.counts.len() {
            if self.counts[k] != 0 {
                self.indices[kept] = self.indices[k];
                self.counts[kept] = self.counts[k];
                kept += 1;
            }
        }
        self.indices.truncate(kept);
        self.counts.truncate(kept);
    }

    /// Adds another pool's counts (`Histogram::add` of its histogram). Sparse into
    /// sparse, each of its buckets is looked up (a binary search in what is left after
    /// the one before) and added in place, and those this pool lacks are then inserted in
    /// one backward pass of block moves; into a dense pool, each is added at its index.
    pub fn add(&mut self, other: &ServerPool) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() && !self.is_dense() {
            self.clone_from(other);
            return;
        }
        if self.is_dense() || other.is_dense() {
            if !self.is_dense() {
                // Dense from its first bucket on: every count set below.
                self.make_dense(DENSE_STEP);
            }
            self.add_sorted(other.iter());
            return;
        }
        // The buckets to insert: (position among the old ones, index, count), in order.
        let mut new: Vec<(usize, u16, u64)> = Vec::new();
        let mut at = 0;
        for (&i, &n) in other.indices.iter().zip(&other.counts) {
            at = seek(&self.indices, at, usize::from(i));
            if self.indices.get(at) == Some(&i) {
                self.counts[at] = self.counts[at].saturating_add(n);
            } else {
                new.push((at, i, n));
            }
        }
        self.total = self.total.saturating_add(other.total);
        if new.is_empty() {
            return;
        }
        let old = self.indices.len();
        self.indices.reserve_exact(new.len());
        self.counts.reserve_exact(new.len());
        self.indices.resize(old + new.len(), 0);
        self.counts.resize(old + new.len(), 0);
        // From the end: the old buckets from the k-th new one's position on move up by
        // k + 1, and it goes just below them.
        let mut end = old;
        for (k, &(pos, i, n)) in new.iter().enumerate().rev() {
            self.indices.copy_within(pos..end, pos + k + 1);
            self.counts.copy_within(pos..end, pos + k + 1);
            self.indices[pos + k] = i;
            self.counts[pos + k] = n;
            end = pos;
        }
        self.densify_if_smaller();
    }

    /// Every index with a count, as `(index, count)`, in increasing order (what a shard
    /// file stores).
    pub fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let sparse = (self.indices.iter().zip(&self.counts)).map(|(&i, &n)| (usize::from(i), n));
        let dense = (self.dense.iter().enumerate()).filter_map(move |(i, &c)| {
            let n = if self.full.is_empty() {
                u64::from(c)
            } else {
                self.dense_at(i)
            };
            (n != 0).then_some((i, n))
        });
        sparse.chain(dense)
    }

    /// How many values it holds (`Histogram::len`).
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// `Histogram::value_at_quantile` of the latency histogram it stands for, step for
    /// step: `quantile` capped at 1, the target count `ceil(quantile × len)` (at least
    /// 1), the first index whose running count reaches it, read as its bucket's highest
    /// equivalent value (its lowest for a quantile of 0); 0 when empty.
    pub fn value_at_quantile(&self, quantile: f64) -> u64 {
        let quantile = if quantile > 1.0 { 1.0 } else { quantile };
        let target = ((quantile * self.total as f64).ceil() as u64).max(1);
        let mut below = 0u64;
        for (i, n) in self.iter() {
            below += n;
            if below >= target {
                let v = bucket_value(i);
                return if quantile == 0.0 {
                    layout().lowest_equivalent(v)
                } else {
                    layout().highest_equivalent(v)
                };
            }
        }
        0
    }

    /// `Cdf::from_histogram(&histogram())` without making the histogram (as
    /// `BucketCounts::cdf`): every index with a count, at the median equivalent value of
    /// its bucket's highest equivalent value (what hdrhistogram's recorded iteration
    /// yields).
    pub fn cdf(&self) -> Cdf {
        let h = layout();
        Cdf::from_medians(self.iter().map(|(i, n)| {
            (
                h.median_equivalent(h.highest_equivalent(bucket_value(i))),
                n,
            )
        }))
    }

    /// The counts as a [`server_histogram`] (sized once, to the largest value): what
    /// recording each bucket's lowest value its count of times gives. Its counts, length
    /// and quantiles are those of the latency histogram the pool stands for.
    pub fn histogram(&self) -> Histogram<u64> {
        let mut h = server_histogram();
        if let Some((last, _)) = self.iter().last() {
            // Resize once, for the largest value (a count of 0 adds nothing).
            let _ = h.record_n(bucket_value(last), 0);
        }
        for (i, n) in self.iter() {
            // Cannot fail: the histogram holds the largest value.
            let _ = h.record_n(bucket_value(i), n);
        }
        h
    }

    /// The pool of a histogram's counts: what `latency_histogram().add(h)` holds, read
    /// as counts per bucket (each of `h`'s buckets counts where its lowest value does in
    /// a latency histogram); an error, as `add` gives, when `h` holds values beyond a
    /// latency histogram's range.
    pub fn from_histogram(h: &Histogram<u64>) -> Result<ServerPool, String> {
        if h.is_empty() {
            return Ok(ServerPool::default());
        }
        // `Histogram::add`'s test: the largest value must fit the latency histogram's
        // last bucket, which ends just below `LATENCY_UNTRACKABLE_NS`.
        if h.max() >= LATENCY_UNTRACKABLE_NS {
            return Err("a server's histogram holds values beyond 2^43 ns".into());
        }
        let mut counts: Vec<(u32, u64)> = Vec::new();
        for v in h.iter_recorded() {
            let i = bucket_index(h.lowest_equivalent(v.value_iterated_to())) as u32;
            let n = v.count_at_value();
            // Of another precision, two of `h`'s buckets may count in one of ours.
            match counts.last_mut() {
                Some((k, c)) if *k == i => *c = c.saturating_add(n),
                _ => counts.push((i, n)),
            }
        }
        let mut pool = ServerPool::default();
        pool.add_sorted(counts.into_iter().map(|(i, n)| (i as usize, n)));
        Ok(pool)
    }
}

impl Quantiles for ServerPool {
    fn count(&self) -> u64 {
        self.len()
    }

    fn value_at_quantile(&self, q: f64) -> u64 {
        ServerPool::value_at_quantile(self, q)
    }
}

/// Every distribution of [`RunMetrics::source`] merged over a strategy's replications, in
/// the same order: response and waiting times as latency histograms, each server's (up
/// to [`MAX_SERVER_HISTOGRAMS`]) as a [`ServerPool`]. Counts add, so pooling is exact and
/// independent of order, and a run pooled can be taken out again.
#[derive(Clone, Debug, PartialEq)]
pub struct Pooled {
    /// [`SOURCE_LATENCY`] and [`SOURCE_WAIT`].
    histograms: [Histogram<u64>; SOURCE_SERVERS],
    servers: Vec<ServerPool>,
}

/// One of the distributions of a [`Pooled`].
#[derive(Clone, Copy, Debug)]
pub enum PooledSource<'a> {
    /// The response or waiting times.
    Histogram(&'a Histogram<u64>),
    /// A server's response times.
    Server(&'a ServerPool),
}

impl Quantiles for PooledSource<'_> {
    fn count(&self) -> u64 {
        match self {
            PooledSource::Histogram(h) => h.len(),
            PooledSource::Server(s) => s.len(),
        }
    }

    fn value_at_quantile(&self, q: f64) -> u64 {
        match self {
            PooledSource::Histogram(h) => h.value_at_quantile(q),
            PooledSource::Server(s) => s.value_at_quantile(q),
        }
    }
}

impl Pooled {
    /// Empty pools for runs of `servers` servers (per server beyond
    /// [`MAX_SERVER_HISTOGRAMS`]: none).
    pub fn new(servers: usize) -> Pooled {
        let per_server = if servers <= MAX_SERVER_HISTOGRAMS {
            servers
        } else {
            0
        };
        Pooled {
            histograms: [latency_histogram(), latency_histogram()],
            servers: vec![ServerPool::default(); per_server],
        }
    }

    /// Pools of the given distributions: response and waiting times, then the servers';
    /// `None` unless there are two histograms.
    pub fn from_parts(histograms: Vec<Histogram<u64>>, servers: Vec<ServerPool>) -> Option<Pooled> {
        Some(Pooled {
            histograms: histograms.try_into().ok()?,
            servers,
        })
    }

    /// How many distributions it holds ([`RunMetrics::source_count`] of its runs).
    pub fn len(&self) -> usize {
        SOURCE_SERVERS + self.servers.len()
    }

    /// Whether every distribution is empty.
    pub fn is_empty(&self) -> bool {
        self.histograms.iter().all(Histogram::is_empty)
            && self.servers.iter().all(ServerPool::is_empty)
    }

    /// Response times of every pooled run (nanoseconds).
    pub fn latency(&self) -> &Histogram<u64> {
        &self.histograms[SOURCE_LATENCY]
    }

    /// Distribution `source` ([`SOURCE_LATENCY`], `SOURCE_WAIT`, or [`SOURCE_SERVERS`] +
    /// server), if there is one.
    pub fn source(&self, source: usize) -> Option<PooledSource<'_>> {
        match source.checked_sub(SOURCE_SERVERS) {
            None => Some(PooledSource::Histogram(&self.histograms[source])),
            Some(server) => self.servers.get(server).map(PooledSource::Server),
        }
    }

    /// Distribution `source` if it is a histogram ([`SOURCE_LATENCY`] or `SOURCE_WAIT`).
    pub fn histogram(&self, source: usize) -> Option<&Histogram<u64>> {
        self.histograms.get(source)
    }

    /// Server `server`'s pooled response times, if measured (the tests' reading; reports
    /// read [`Pooled::source`]).
    #[cfg(test)]
    pub fn server(&self, server: usize) -> Option<&ServerPool> {
        self.servers.get(server)
    }

    /// Adds a run's distributions: what `Histogram::add` of each of its sources gives,
    /// the servers' read from their bucket counts.
    pub fn add_run(&mut self, m: &RunMetrics) {
        let [latency, wait] = &mut self.histograms;
        latency
            .add(&m.latency)
            .expect("a pool has the range of a latency histogram");
        wait.add(&m.wait)
            .expect("a pool has the range of a latency histogram");
        for (p, c) in self.servers.iter_mut().zip(&m.server_counts) {
            p.add_sorted(c.iter());
        }
    }

    /// Takes a run's distributions out of pools that hold them ([`Pooled::add_run`]
    /// undone: counts are integers, so what is left is exactly the other runs' sum). The
    /// runner takes out a run's own pool instead ([`Pooled::subtract`]); the tests check
    /// both ways agree.
    #[cfg(test)]
    pub fn subtract_run(&mut self, m: &RunMetrics) {
        let [latency, wait] = &mut self.histograms;
        for (p, h) in [(latency, &m.latency), (wait, &m.wait)] {
            p.subtract(h)
                .expect("a run's counts are in the pool it was added to");
        }
        for (p, c) in self.servers.iter_mut().zip(&m.server_counts) {
            p.subtract_sorted(c.iter());
        }
    }

    /// Adds other pools of the same runs' layout (`Histogram::add` of each).
    pub fn add(&mut self, other: &Pooled) {
        for (p, h) in self.histograms.iter_mut().zip(&other.histograms) {
            // Same bounds on both sides: addition cannot fail.
            let _ = p.add(h);
        }
        for (p, s) in self.servers.iter_mut().zip(&other.servers) {
            p.add(s);
        }
    }

    /// Takes out other pools that these hold ([`Pooled::add`] undone: counts are integers,
    /// so what is left is exactly the rest's sum).
    pub fn subtract(&mut self, other: &Pooled) {
        for (p, h) in self.histograms.iter_mut().zip(&other.histograms) {
            p.subtract(h)
                .expect("the counts taken out are in the pool they were added to");
        }
        for (p, s) in self.servers.iter_mut().zip(&other.servers) {
            p.subtract_sorted(s.iter());
        }
    }
}

impl RunMetrics {
    /// The run's distributions as pools of it alone: what [`Pooled::add_run`] adds, with
    /// the response- and waiting-time histograms moved, not copied, and each server's
    /// bucket counts (2 bytes a bucket up to its largest value, some 30 kB for a
    /// millisecond-scale server) made sparse. The runner gets it from
    /// [`RunMetrics::summarize_and_pool`], whose pool the tests compare with this.
    #[cfg(test)]
    pub fn into_pooled(self) -> Pooled {
        let servers = self.server_counts.iter().map(BucketCounts::pool).collect();
        Pooled {
            histograms: [self.latency, self.wait],
            servers,
        }
    }
}

impl RunMetrics {
    /// [`RunMetrics::summarize`] and the run's distributions as pools of it alone, at
    /// once: the response- and waiting-time histograms moved, not copied, and each
    /// server's bucket counts read once, into a sparse pool, its p99 and compact
    /// distribution read from that ([`ServerPool::value_at_quantile`],
    /// [`ServerPool::cdf`]: the same steps). The runner pools this, and keeps it until
    /// every strategy ran the replication (to take it out again if the run is cancelled
    /// before), instead of the whole run's metrics: at 256 servers those held 8 MB of
    /// bucket counts a run.
    pub fn summarize_and_pool(self) -> (RunSummary, Pooled) {
        let servers: Vec<ServerPool> = self.server_counts.iter().map(BucketCounts::pool).collect();
        let summary = self.summarize_with(
            |i| (!servers[i].is_empty()).then(|| servers[i].value_at_quantile(SERVER_QUANTILE)),
            servers.iter().map(ServerPool::cdf),
        );
        let pooled = Pooled {
            histograms: [self.latency, self.wait],
            servers,
        };
        (summary, pooled)
    }
}

impl BucketCounts {
    /// The counts as a pool of their own.
    fn pool(&self) -> ServerPool {
        let mut p = ServerPool::default();
        p.add_sorted(self.iter());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::super::{SOURCE_WAIT, clamped};
    use super::*;
    use crate::time::Nanos;

    fn latency_value() -> impl proptest::strategy::Strategy<Value = u64> {
        proptest::prop_oneof![
            0u64..3000,
            0u64..50_000_000,
            (super::super::LATENCY_HIGH_NS - 5)..(LATENCY_UNTRACKABLE_NS + 5),
            proptest::prelude::any::<u64>(),
        ]
    }

    /// Every reading of a pooled latency histogram against a server's pool: the length,
    /// quantiles (0 and past 1 included, and a NaN), the histogram it makes (every count;
    /// and, added into a latency histogram, that histogram whole), and the pool read back
    /// from that histogram.
    fn check_pool(
        pool: &ServerPool,
        full: &Histogram<u64>,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        proptest::prop_assert_eq!(pool.len(), full.len());
        proptest::prop_assert_eq!(pool.is_empty(), full.is_empty());
        for q in [
            0.0,
            1e-9,
            0.001,
            0.01,
            0.25,
            0.5,
            0.9,
            0.99,
            SERVER_QUANTILE_OF_TESTS,
            0.999,
            0.9999,
            1.0,
            1.5,
            -0.5,
            f64::NAN,
        ] {
            proptest::prop_assert_eq!(
                pool.value_at_quantile(q),
                full.value_at_quantile(q),
                "q {}",
                q
            );
        }
        let h = pool.histogram();
        let mut added = latency_histogram();
        added.add(&h).unwrap();
        // `PartialEq` compares the counts, total, and max and min as read (not the raw
        // values kept inside, which differ where a value was recorded exactly).
        proptest::prop_assert!(added == *full, "added into a latency histogram");
        proptest::prop_assert_eq!((added.max(), added.min_nz()), (full.max(), full.min_nz()));
        let nonzero = |h: &Histogram<u64>| -> Vec<(u64, u64)> {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        };
        proptest::prop_assert_eq!(nonzero(&h), nonzero(full));
        proptest::prop_assert_eq!(&ServerPool::from_histogram(&h).unwrap(), pool);
        proptest::prop_assert_eq!(&ServerPool::from_histogram(full).unwrap(), pool);
        // The canonical form: increasing indices, no zero count, the total their sum.
        proptest::prop_assert_eq!(pool.indices.len(), pool.counts.len());
        proptest::prop_assert!(pool.indices.is_empty() || pool.dense.is_empty());
        proptest::prop_assert!(pool.indices.windows(2).all(|w| w[0] < w[1]));
        proptest::prop_assert!(pool.counts.iter().all(|&n| n != 0));
        let read: Vec<(usize, u64)> = pool.iter().collect();
        proptest::prop_assert!(read.windows(2).all(|w| w[0].0 < w[1].0));
        proptest::prop_assert!(read.iter().all(|&(_, n)| n != 0));
        proptest::prop_assert_eq!(read.iter().map(|&(_, n)| n).sum::<u64>(), pool.total);
        // Dense: exactly the counts past 2^32 in `full`, by increasing index.
        proptest::prop_assert!(pool.full.windows(2).all(|w| w[0].0 < w[1].0));
        proptest::prop_assert!(
            pool.full
                .iter()
                .all(|&(_, n)| n != 0 && n & u64::from(u32::MAX) == 0)
        );
        Ok(())
    }

    const SERVER_QUANTILE_OF_TESTS: f64 = super::super::SERVER_QUANTILE;

    proptest::proptest! {
        /// A strategy's pools over several runs (servers that served nothing, values over
        /// the whole range and saturating, runs taken out again) read back every field as
        /// the full latency histograms they replace: each run's server histogram added
        /// into a latency histogram, as the pools did until 2026-11-28.
        #[test]
        fn server_pools_are_the_full_histograms(
            runs in proptest::collection::vec(
                proptest::collection::vec((0usize..4, latency_value(), 1u64..4), 0..200),
                1..5,
            ),
            undo in proptest::collection::vec(proptest::prelude::any::<bool>(), 5),
        ) {
            let mut pooled = Pooled::new(4);
            let mut full: Vec<Histogram<u64>> = (0..4).map(|_| latency_histogram()).collect();
            let mut metrics = Vec::new();
            for ops in &runs {
                let mut m = RunMetrics::new(&[1, 1, 1, 1], Nanos(0), Nanos(1_000_000));
                for &(i, v, times) in ops {
                    // Server 3 never serves: an empty pool, an undefined p99.
                    for _ in 0..times {
                        m.record_served(i % 3, Nanos(0), Nanos(v), Nanos(v / 2));
                    }
                }
                m.flush();
                // The runner's path: summarized and pooled at once, the run's own pool
                // added; the same figures, bit for bit, and the same pool.
                let (summary, own) = m.clone().summarize_and_pool();
                proptest::prop_assert_eq!(format!("{summary:?}"), format!("{:?}", m.summarize()));
                proptest::prop_assert_eq!(&own, &m.clone().into_pooled());
                let mut via_own = pooled.clone();
                via_own.add(&own);
                pooled.add_run(&m);
                proptest::prop_assert_eq!(&via_own, &pooled);
                for (i, f) in full.iter_mut().enumerate() {
                    f.add(m.server_latency(i).unwrap()).unwrap();
                }
                metrics.push(m);
            }
            for (i, f) in full.iter().enumerate() {
                check_pool(pooled.server(i).unwrap(), f)?;
            }
            // Pools of parts add up to the pool of the whole (as `lbsim merge` adds shards).
            let mut halves = [Pooled::new(4), Pooled::new(4)];
            for (k, m) in metrics.iter().enumerate() {
                halves[k % 2].add_run(m);
            }
            let [mut a, b] = halves;
            a.add(&b);
            proptest::prop_assert_eq!(&a, &pooled);
            // Runs taken out leave the pool of the others, zero counts dropped.
            let mut kept = Pooled::new(4);
            for (m, &undo) in metrics.iter().zip(&undo) {
                if undo {
                    pooled.subtract_run(m);
                } else {
                    kept.add_run(m);
                }
            }
            proptest::prop_assert_eq!(&pooled, &kept);
            for i in 0..4 {
                let mut f = latency_histogram();
                for (m, &undo) in metrics.iter().zip(&undo) {
                    if !undo {
                        f.add(m.server_latency(i).unwrap()).unwrap();
                    }
                }
                check_pool(pooled.server(i).unwrap(), &f)?;
            }
        }
    }

    /// A run's counts as `(index, count)` with increasing indices: most runs in the first
    /// two octaves (so that a pool turns dense), some anywhere; counts mostly small, some
    /// past 2^32.
    fn run_counts() -> impl proptest::strategy::Strategy<Value = Vec<(usize, u64)>> {
        use proptest::strategy::Strategy as _;
        let count = || proptest::prop_oneof![12 => 1u64..5, 1 => (1u64 << 31)..(1u64 << 33)];
        proptest::prop_oneof![
            3 => proptest::collection::btree_map(0usize..2048, count(), 0..1500),
            1 => proptest::collection::btree_map(0usize..34_816, count(), 0..300),
        ]
        .prop_map(|m| m.into_iter().collect())
    }

    proptest::proptest! {
        /// Pools sparse and dense, and turning dense as they grow, read back every field
        /// as the latency histogram of their counts: added run by run and as pools (either
        /// form into either), counts past 2^32 (dense: in `full`), runs taken out again.
        #[test]
        fn sparse_and_dense_pools_are_the_full_histograms(
            runs in proptest::collection::vec(run_counts(), 1..5),
            undo in proptest::collection::vec(proptest::prelude::any::<bool>(), 5),
        ) {
            let histogram_of = |runs: &mut dyn Iterator<Item = &Vec<(usize, u64)>>| {
                let mut h = latency_histogram();
                for r in runs {
                    for &(i, n) in r {
                        h.record_n(bucket_value(i), n).unwrap();
                    }
                }
                h
            };
            let own: Vec<ServerPool> = runs
                .iter()
                .map(|r| {
                    let mut p = ServerPool::default();
                    p.add_sorted(r.iter().copied());
                    p
                })
                .collect();
            for (p, r) in own.iter().zip(&runs) {
                check_pool(p, &histogram_of(&mut std::iter::once(r)))?;
            }
            let (mut by_runs, mut by_pools) = (ServerPool::default(), ServerPool::default());
            for (p, r) in own.iter().zip(&runs) {
                by_runs.add_sorted(r.iter().copied());
                by_pools.add(p);
            }
            let full = histogram_of(&mut runs.iter());
            check_pool(&by_runs, &full)?;
            check_pool(&by_pools, &full)?;
            for (p, &undo) in own.iter().zip(&undo) {
                if undo {
                    by_pools.subtract_sorted(p.iter());
                }
            }
            let kept = histogram_of(&mut runs.iter().zip(&undo).filter(|(_, u)| !**u).map(|(r, _)| r));
            check_pool(&by_pools, &kept)?;
        }
    }

    /// Counts past 2^16 and 2^32 in a bucket (a pool of many long runs), beside others.
    #[test]
    fn large_counts_pool_as_the_full_histograms() {
        let mut full = latency_histogram();
        let mut pool = ServerPool::default();
        for (v, n) in [
            (70_000u64, 3u64 << 33),
            (5, 1),
            (u64::MAX, 7),
            (70_001, 1 << 16),
            (1, 2),
        ] {
            let mut one = latency_histogram();
            one.record_n(clamped(v), n).unwrap();
            full.add(&one).unwrap();
            pool.add(&ServerPool::from_histogram(&one).unwrap());
        }
        check_pool(&pool, &full).unwrap();
    }

    /// A histogram of another precision reads as `Histogram::add` would count it into a
    /// latency histogram (two of its buckets may fall in one of ours); one beyond the
    /// range is refused, as `add` refuses it.
    #[test]
    fn histograms_of_other_layouts_read_as_added() {
        let mut coarse = Histogram::<u64>::new_with_bounds(1, 2, 2).unwrap();
        coarse.auto(true);
        let mut fine = Histogram::<u64>::new_with_bounds(1, 2, 4).unwrap();
        fine.auto(true);
        for k in 0..3000u64 {
            let v = 1 + k * 7_919 % 3_000_000;
            coarse.record(v).unwrap();
            fine.record(v).unwrap();
        }
        for h in [&coarse, &fine] {
            let mut full = latency_histogram();
            full.add(h).unwrap();
            check_pool(&ServerPool::from_histogram(h).unwrap(), &full).unwrap();
        }
        let mut wide = Histogram::<u64>::new_with_bounds(1, 1 << 50, 3).unwrap();
        wide.record(1 << 45).unwrap();
        assert!(latency_histogram().add(&wide).is_err());
        assert!(ServerPool::from_histogram(&wide).is_err());
    }

    proptest::proptest! {
        /// The galloping search finds what a binary search of the rest finds.
        #[test]
        fn seek_is_partition_point(
            set in proptest::collection::btree_set(0u16..3000, 0..400),
            from in proptest::prelude::any::<proptest::sample::Index>(),
            i in 0usize..3100,
        ) {
            let indices: Vec<u16> = set.into_iter().collect();
            let from = from.index(indices.len() + 1);
            proptest::prop_assert_eq!(
                seek(&indices, from, i),
                from + indices[from..].partition_point(|&k| usize::from(k) < i)
            );
        }
    }

    /// [`ServerPool::BUCKETS`] is a latency histogram's: its last index counts the largest
    /// value it tracks.
    #[test]
    fn buckets_are_a_latency_histogram_s() {
        assert_eq!(
            ServerPool::BUCKETS,
            bucket_index(LATENCY_UNTRACKABLE_NS - 1) + 1
        );
        assert_eq!(ServerPool::BUCKETS, latency_histogram().distinct_values());
    }

    /// Past [`MAX_SERVER_HISTOGRAMS`] servers a pool has the two histograms only.
    #[test]
    fn many_servers_pool_no_server() {
        let p = Pooled::new(MAX_SERVER_HISTOGRAMS + 1);
        assert_eq!(p.len(), SOURCE_SERVERS);
        assert!(p.source(SOURCE_SERVERS).is_none());
        assert!(matches!(
            p.source(SOURCE_WAIT),
            Some(PooledSource::Histogram(_))
        ));
        assert_eq!(Pooled::new(3).len(), SOURCE_SERVERS + 3);
    }
}
