//! Weight ranges: backends' weights laid end to end over `0..Σ weights`, and which
//! backend's range holds a value. nginx `hash` walks its peers' weights to a point of
//! that line (`ngx_http_upstream_get_hash_peer`), and a weighted random choice draws a
//! point of it (rand's `WeightedIndex`, a binary search of the running sums): both are
//! this lookup, here through an index so that it reads about one backend's end rather
//! than binary-searching all of them.

/// Backends from which [`Ranges`] indexes unequal weights: below, a binary search of
/// every end is a few steps in the cache, and the index's two reads and narrower search
/// cost more (a weighted random choice among 10 backends of weights 1–4 took 1.06× the
/// CPU time a request with it, 7 pairs).
const INDEX_FROM: usize = 64;

/// Backends' weight ranges, and an index over them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ranges {
    /// The end of each backend's range (running sum of the weights, so the last is
    /// `Σ weights`): the first backend whose range ends beyond `w` holds `w` (one of
    /// weight 0 ends where the one before does, so it never holds any).
    pub(crate) ends: Vec<u64>,
    /// Every backend's weight when they are all equal and positive, else 0: then the
    /// backend holding `w` is `w / weight` (backend `k`'s range ends at `(k + 1) ×
    /// weight`), without a search.
    equal: u64,
    /// With unequal weights, for each value `b` of `w >> shift` the backend holding
    /// `b << shift` (or the number of backends past `Σ weights`), one more for `b + 1`:
    /// the backend holding `w` is between `starts[b]` and `starts[b + 1]`, about one
    /// backend apart (2^⌈log2 backends⌉ ranges of `Σ weights`), so a lookup
    /// binary-searches those alone rather than every backend's end (at 10,000 backends of
    /// weights 1–4, for nginx `hash`, that search was 70% of a pick, its last steps
    /// missing the cache).
    starts: Vec<u32>,
    shift: u32,
}

impl Ranges {
    /// The ranges of `weights`, in backend order.
    pub(crate) fn new(weights: impl IntoIterator<Item = u64>) -> Ranges {
        let ends: Vec<u64> = weights
            .into_iter()
            .scan(0u64, |sum, w| {
                *sum += w;
                Some(*sum)
            })
            .collect();
        let first = ends.first().copied().unwrap_or(0);
        let equal = if ends.iter().zip(1..).all(|(&end, k)| end == k * first) {
            first
        } else {
            0
        };
        let mut r = Ranges {
            ends,
            equal,
            starts: Vec::new(),
            shift: 0,
        };
        if equal == 0 && r.total() > 0 && r.ends.len() >= INDEX_FROM {
            r.index();
        }
        r
    }

    /// Fills [`Ranges::starts`] (from [`INDEX_FROM`] backends): 2^⌈log2 backends⌉ ranges (at least 2, at most 2^20),
    /// each `2^shift` weights wide, the least width that covers `Σ weights`.
    fn index(&mut self) {
        let bits = self.ends.len().max(2).next_power_of_two().ilog2().min(20);
        let total = self.total();
        // The least shift with `(Σ weights − 1) >> shift` below 2^bits.
        let span = u64::BITS - (total - 1).leading_zeros();
        self.shift = span.saturating_sub(bits);
        let ranges = ((total - 1) >> self.shift) + 2;
        self.starts = (0..ranges)
            .map(|b| {
                let from = b << self.shift;
                self.ends.partition_point(|&end| end <= from) as u32
            })
            .collect();
    }

    /// `Σ weights`.
    pub(crate) fn total(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// The backend whose range holds `w` (`w` < `Σ weights`): the first whose range ends
    /// beyond `w`, `ends.partition_point(|&end| end <= w)`.
    #[inline]
    pub(crate) fn holding(&self, w: u64) -> usize {
        match w.checked_div(self.equal) {
            Some(k) => k as usize,
            None if self.starts.is_empty() => self.ends.partition_point(|&end| end <= w),
            None => {
                let b = (w >> self.shift) as usize;
                // The backend holding `w` is at least `lo` and at most `hi`: the first
                // end beyond `w` among `lo..hi`, else `hi`.
                let (lo, hi) = (self.starts[b] as usize, self.starts[b + 1] as usize);
                lo + self.ends[lo..hi].partition_point(|&end| end <= w)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::Just;

    proptest::proptest! {
        /// Every value's backend, through the index or the division, is the binary
        /// search's over every end: weights of 0, equal weights, one large beside small
        /// ones, values at range ends and beside them.
        #[test]
        fn holding_is_the_binary_search(
            weights in proptest::collection::vec(
                proptest::prop_oneof![Just(0u64), 1u64..5, 200u64..300, Just(3u64)],
                1..600,
            ),
            draws in proptest::collection::vec(proptest::num::u64::ANY, 50),
        ) {
            let r = Ranges::new(weights.iter().copied());
            let total = r.total();
            proptest::prop_assume!(total > 0);
            let mut values: Vec<u64> = draws.iter().map(|d| d % total).collect();
            for &end in &r.ends {
                values.extend([end.saturating_sub(1), end].into_iter().filter(|&v| v < total));
            }
            for w in values {
                let want = r.ends.partition_point(|&end| end <= w);
                proptest::prop_assert_eq!(r.holding(w), want, "at {}", w);
            }
        }
    }

    /// All weights equal: the division, not the index.
    #[test]
    fn equal_weights_divide() {
        let r = Ranges::new([3, 3, 3]);
        assert!(r.starts.is_empty());
        assert_eq!(
            (0..9).map(|w| r.holding(w)).collect::<Vec<_>>(),
            [0, 0, 0, 1, 1, 1, 2, 2, 2]
        );
        let r = Ranges::new([3, 0, 3]);
        assert!(r.starts.is_empty(), "a binary search of few backends");
        assert_eq!(
            (0..6).map(|w| r.holding(w)).collect::<Vec<_>>(),
            [0, 0, 0, 2, 2, 2]
        );
    }
}
