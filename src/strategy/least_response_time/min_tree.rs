//! A tree of minima over integer keys, for [`super::LeastResponseTime`]'s index: the
//! first position holding the least key from a given position on, wrapping (the pick,
//! round robin among equals), and under it "the first position at or after `from` whose
//! key is at most `m`".
//!
//! Laid out as C3's score index (`c3.rs`, `ScoreIndex`): level 0 is the keys themselves,
//! each node of level `j + 1` the least of [`FANOUT`] consecutive nodes of level `j`, up
//! to a root alone. Each node above the keys also holds the first and the last position
//! under it that hold its key ([`Holders`]): when one position alone holds the least key,
//! which is the rule once backends' latencies differ, a pick reads the root and walks
//! nowhere. A walk is left for ties (as among backends not yet sampled); it scans each
//! group of keys branch-free (a compare per key into a bit mask, then
//! `trailing_zeros`).
//!
//! What a request costs is then mostly the two keys it changes (the picked backend's
//! goes up, which rescans its group at every level; a completion's mostly stops low), so
//! the fan-out is a trade between levels and keys per level: at 1,000 backends, with
//! `perf stat` CPU time per request of the whole simulation (7 alternating pairs each),
//! 8 children cost 0.96x what 16 did, 4 children 0.97x what 8 did, and 2 children 1.10x
//! what 4 did; at 100 and 10,000 backends 4 and 8 were alike (1.00x).

/// Children of each node (keys under each lowest node): a power of two up to 32 (the
/// bit masks are `u32`); see the module documentation for the choice.
pub(super) const FANOUT: usize = 4;

/// The key of an absent position (padding, or a backend that is down): above every key
/// a position holds.
pub(super) const ABSENT: u64 = u64::MAX;

/// A tree of minima over `len` keys (see the module documentation).
#[derive(Debug, Clone)]
pub(super) struct MinTree {
    /// Every level, from the keys (level 0) to the root, one after another; each level
    /// but the root is padded with [`ABSENT`] to a whole number of groups.
    nodes: Vec<u64>,
    /// Per node above the keys (`nodes[starts[1]..]`, in the same order), the first and
    /// last positions under it that hold its key.
    holders: Vec<Holders>,
    /// Where each level starts in `nodes`; the last is the root's.
    starts: Vec<usize>,
}

/// The first and the last position under a node that hold its key: a pick reads them at
/// the root, and when one position alone holds the least key (the rule once latencies
/// differ) they are the answer without a walk (see [`MinTree::first_least_from`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Holders {
    first: u32,
    last: u32,
}

impl Holders {
    /// Of an [`ABSENT`] node (one value, so that nodes compare equal when their keys do).
    const NONE: Holders = Holders {
        first: u32::MAX,
        last: 0,
    };

    /// Of key position `i` itself.
    fn at(i: usize) -> Holders {
        Holders {
            first: i as u32,
            last: i as u32,
        }
    }
}

/// The least of [`FANOUT`] keys, as a tournament (halves, then quarters, ...): each
/// conditional move waits on one round, not on every key before it.
fn least(keys: &[u64; FANOUT]) -> u64 {
    let mut m = *keys;
    let mut w = FANOUT;
    while w > 1 {
        w /= 2;
        for j in 0..w {
            m[j] = m[j].min(m[j + w]);
        }
    }
    m[0]
}

/// Which of [`FANOUT`] keys are at most `m`, as bits (bit `j` for `keys[j]`).
fn at_most(keys: &[u64; FANOUT], m: u64) -> u32 {
    keys.iter()
        .enumerate()
        .fold(0, |held, (j, &k)| held | u32::from(k <= m) << j)
}

impl MinTree {
    /// A tree over `len` keys, all [`ABSENT`].
    pub(super) fn new(len: usize) -> MinTree {
        // Nodes per level, from the keys to the root (above at least one group of keys,
        // so that the keys are never the root).
        let mut widths = vec![len.max(1)];
        loop {
            let w = widths[widths.len() - 1].div_ceil(FANOUT);
            widths.push(w);
            if w == 1 {
                break;
            }
        }
        let mut starts = Vec::with_capacity(widths.len());
        let mut end = 0;
        for (j, &w) in widths.iter().enumerate() {
            starts.push(end);
            // Whole groups below the root.
            end += if j + 1 < widths.len() {
                w.next_multiple_of(FANOUT)
            } else {
                w
            };
        }
        MinTree {
            nodes: vec![ABSENT; end],
            holders: vec![Holders::NONE; end - starts[1]],
            starts,
        }
    }

    /// The least key of all ([`ABSENT`] when none is present).
    #[cfg(test)]
    pub(super) fn least(&self) -> u64 {
        self.nodes[self.nodes.len() - 1]
    }

    /// The key at position `i`.
    #[cfg(test)]
    pub(super) fn key(&self, i: usize) -> u64 {
        self.nodes[i]
    }

    /// Group `g` of level `j` (the children of node `g` of level `j + 1`).
    fn group(&self, j: usize, g: usize) -> &[u64; FANOUT] {
        let at = self.starts[j] + g * FANOUT;
        self.nodes[at..at + FANOUT]
            .try_into()
            .expect("levels below the root are whole groups")
    }

    /// Node `p` of level `j`'s key and holders.
    fn node(&self, j: usize, p: usize) -> (u64, Holders) {
        let k = self.starts[j] + p;
        if j == 0 {
            (self.nodes[k], Holders::at(p))
        } else {
            (self.nodes[k], self.holders[k - self.starts[1]])
        }
    }

    /// The least of group `g` of level `j`, and its holders.
    fn rescan(&self, j: usize, g: usize) -> (u64, Holders) {
        let keys = self.group(j, g);
        let m = least(keys);
        if m == ABSENT {
            return (ABSENT, Holders::NONE);
        }
        // The children holding `m`, as bits: at most `m` is equal to it.
        let held = at_most(keys, m);
        let first = g * FANOUT + held.trailing_zeros() as usize;
        let last = g * FANOUT + (31 - held.leading_zeros()) as usize;
        let holders = Holders {
            first: self.node(j, first).1.first,
            last: self.node(j, last).1.last,
        };
        (m, holders)
    }

    /// Sets the key at position `i`, then its ancestors up to the first that keeps its
    /// key and holders.
    pub(super) fn set(&mut self, i: usize, key: u64) {
        let was = std::mem::replace(&mut self.nodes[i], key);
        if was == key {
            return;
        }
        // A child's node before and after, going up.
        let (mut was, mut now) = ((was, Holders::at(i)), (key, Holders::at(i)));
        let mut p = i;
        for j in 0..self.starts.len() - 1 {
            let g = p / FANOUT;
            let parent = self.starts[j + 1] + g;
            let old = self.node(j + 1, g);
            let new = if now.0 < old.0 {
                // The child now holds the least alone: no need to read its siblings.
                now
            } else if was.0 > old.0 {
                if now.0 > old.0 {
                    // Neither then nor now among the holders.
                    return;
                }
                // Joins the holders.
                let holders = Holders {
                    first: old.1.first.min(now.1.first),
                    last: old.1.last.max(now.1.last),
                };
                (old.0, holders)
            } else {
                // Was among the holders: the least of the group again.
                self.rescan(j, g)
            };
            if new == old {
                return;
            }
            self.nodes[parent] = new.0;
            self.holders[parent - self.starts[1]] = new.1;
            (was, now, p) = (old, new, g);
        }
    }

    /// The first position holding the least key at `from` or after, else the first of
    /// all (round robin among the holders); `None` when every key is absent.
    pub(super) fn first_least_from(&self, from: usize) -> Option<usize> {
        let (m, h) = self.node(self.starts.len() - 1, 0);
        if m == ABSENT {
            return None;
        }
        let (first, last) = (h.first as usize, h.last as usize);
        if first >= from || last < from {
            // The first holder is the first from `from` on, or none is and it wraps.
            Some(first)
        } else {
            // Holders on both sides of `from` (ties): the walk finds the last one or one
            // before it.
            self.first_at_most(from, m)
        }
    }

    /// The first position at `from` or after whose key is at most `m` (below [`ABSENT`]:
    /// the padding is absent).
    pub(super) fn first_at_most(&self, from: usize, m: u64) -> Option<usize> {
        debug_assert!(m < ABSENT);
        let top = self.starts.len() - 1;
        // Up: at level `j`, the first node at `p` or after in `p`'s group; if none, the
        // first in the parent's level after the parent.
        let (mut j, mut p) = (0, from);
        loop {
            if j == top {
                return None;
            }
            let g = p / FANOUT;
            if self.starts[j] + g * FANOUT >= self.starts[j + 1] {
                // Past the level's last group.
                return None;
            }
            let held = at_most(self.group(j, g), m) & (u32::MAX << (p % FANOUT));
            if held != 0 {
                p = g * FANOUT + held.trailing_zeros() as usize;
                break;
            }
            (j, p) = (j + 1, g + 1);
        }
        // Down: the first child of each node at most `m` (one is: the node is their least).
        while j > 0 {
            j -= 1;
            p = p * FANOUT + at_most(self.group(j, p), m).trailing_zeros() as usize;
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    /// The model: a plain array of keys.
    fn first_at_most(keys: &[u64], from: usize, m: u64) -> Option<usize> {
        (from..keys.len()).find(|&i| keys[i] <= m)
    }

    /// The model's first holder of the least key from `from` on, wrapping.
    fn first_least_from(keys: &[u64], from: usize) -> Option<usize> {
        let m = keys.iter().copied().min().filter(|&m| m != ABSENT)?;
        first_at_most(keys, from, m).or_else(|| first_at_most(keys, 0, m))
    }

    /// Keys drawn from a few values (ties) or from many, with some absent.
    fn key() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..4, Just(ABSENT), any::<u64>()]
    }

    proptest! {
        /// After any sequence of sets, the least, every pick (`first_least_from`) and every
        /// `first_at_most` are the plain array's, and every node its group's least, at
        /// sizes from one group to seven levels.
        #[test]
        fn agrees_with_a_plain_array(
            len in prop_oneof![1usize..40, 200usize..300, 4090usize..4200],
            sets in proptest::collection::vec((any::<Index>(), key(), any::<Index>()), 1..400),
            queries in proptest::collection::vec(
                (any::<Index>(), key().prop_map(|m| m.min(ABSENT - 1))),
                1..40,
            ),
        ) {
            let mut tree = MinTree::new(len);
            let mut model = vec![ABSENT; len];
            for (i, k, from) in sets {
                let i = i.index(len);
                tree.set(i, k);
                model[i] = k;
                prop_assert_eq!(tree.least(), model.iter().copied().min().unwrap());
                // Past the end too.
                let from = from.index(len + 2);
                prop_assert_eq!(tree.first_least_from(from), first_least_from(&model, from));
            }
            for (i, &k) in model.iter().enumerate() {
                prop_assert_eq!(tree.key(i), k);
            }
            // Every node as its group's rescan: the least of its children and their ends.
            for j in 1..tree.starts.len() {
                for p in 0..(tree.starts[j] - tree.starts[j - 1]) / FANOUT {
                    prop_assert_eq!(tree.node(j, p), tree.rescan(j - 1, p), "level {}", j);
                }
            }
            for (from, m) in queries {
                // Past the end too.
                let from = from.index(len + 2);
                prop_assert_eq!(tree.first_at_most(from, m), first_at_most(&model, from, m));
                let least = tree.least();
                if least != ABSENT {
                    let model = first_at_most(&model, from, least);
                    prop_assert_eq!(tree.first_at_most(from, least), model);
                }
            }
        }
    }

    #[test]
    fn levels_of_whole_groups() {
        // Groups of four: 1,000 keys, then nodes of 250, 63, 16 and 4 groups (each level
        // padded to whole groups), and the root.
        let widths = [1000, 252, 64, 16, 4, 1];
        let starts: Vec<usize> = widths
            .iter()
            .scan(0, |end, w| Some(std::mem::replace(end, *end + w)))
            .collect();
        assert_eq!(MinTree::new(1000).starts, starts);
        assert_eq!(MinTree::new(1).starts, vec![0, 4]);
        assert_eq!(MinTree::new(4).starts, vec![0, 4]);
        assert_eq!(MinTree::new(5).starts, vec![0, 8, 12]);
    }

    #[test]
    fn first_at_most_wraps_nothing_and_finds_ties_in_order() {
        let mut t = MinTree::new(40);
        assert_eq!(t.least(), ABSENT);
        assert_eq!(t.first_at_most(0, 5), None);
        for i in [3, 17, 39] {
            t.set(i, 5);
        }
        assert_eq!(t.first_at_most(0, 5), Some(3));
        assert_eq!(t.first_at_most(4, 5), Some(17));
        assert_eq!(t.first_at_most(18, 5), Some(39));
        assert_eq!(t.first_at_most(40, 5), None);
        assert_eq!(t.first_at_most(0, 4), None);
    }
}
